//! Tasks: typed functions registered by name, their options, context and errors.

use crate::backend::{LeaseRef, TaskLimits};
use crate::error::Result;
use crate::job::{
    Encoding, JobId, Priority, DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, DEFAULT_RESULT_TTL,
};
use crate::retry::Backoff;
use futures_util::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A task: a named, typed unit of work. `#[celeriac::task]` implements this for an `async fn`;
/// implement it by hand to do without the macro.
///
/// ```
/// use celeriac_core::task::{Task, TaskContext, TaskError};
///
/// struct Add;
/// impl Task for Add {
///     const NAME: &'static str = "add";
///     type Args = (i64, i64);
///     type Output = i64;
///     async fn run(_ctx: TaskContext, (a, b): (i64, i64)) -> Result<i64, TaskError> {
///         Ok(a + b)
///     }
/// }
/// ```
pub trait Task: Send + Sync + 'static {
    /// The name jobs carry; unique within an application.
    const NAME: &'static str;
    /// The arguments, serialized into the job's payload.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The return value, serialized into the result.
    type Output: Serialize + Send + 'static;

    /// Defaults for jobs of this task (queue, retries, limits...).
    fn options() -> TaskOptions {
        TaskOptions::default()
    }

    /// Runs one attempt.
    fn run(
        ctx: TaskContext,
        args: Self::Args,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;
}

/// Per-task defaults; each job may override queue, priority and timing when enqueued.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// The queue its jobs go to.
    pub queue: String,
    /// Total attempts, the first run included.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// The context's cancellation token fires after this long.
    pub soft_time_limit: Option<Duration>,
    /// The attempt is abandoned (future dropped) after this long and counts as failed.
    pub hard_time_limit: Option<Duration>,
    /// Default priority.
    pub priority: Priority,
    /// Keep no result on success.
    pub ignore_result: bool,
    /// How long results are kept.
    pub result_ttl: Duration,
    /// Payload and result serialization.
    pub encoding: Encoding,
    /// Jobs not started within this long after enqueueing end as expired.
    pub expires: Option<Duration>,
    /// Global concurrency cap and rate for this task, across every worker.
    pub limits: TaskLimits,
    /// The name of a circuit breaker registered with [`Registry::breaker`] (or
    /// [`Registry::shared_breaker`]): while it is open, the task's jobs are put back to wait
    /// out the open period without using an attempt, and the outcomes of their runs feed it.
    pub breaker: Option<String>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            queue: DEFAULT_QUEUE.to_string(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            soft_time_limit: None,
            hard_time_limit: None,
            priority: Priority::NORMAL,
            ignore_result: false,
            result_ttl: DEFAULT_RESULT_TTL,
            encoding: Encoding::Json,
            expires: None,
            limits: TaskLimits::default(),
            breaker: None,
        }
    }
}

/// Why an attempt failed, and what to do next.
///
/// Any `std::error::Error` converts into a retryable `TaskError` with `?`.
pub struct TaskError {
    kind: TaskErrorKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskErrorKind {
    Retryable,
    RetryAfter(Duration),
    Fatal,
}

impl TaskError {
    /// A retryable error with this message (retried with the task's backoff).
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            kind: TaskErrorKind::Retryable,
            message: message.to_string(),
        }
    }

    /// Retry after exactly `after` (still counts an attempt).
    pub fn retry_after(after: Duration, message: impl fmt::Display) -> Self {
        Self {
            kind: TaskErrorKind::RetryAfter(after),
            message: message.to_string(),
        }
    }

    /// A permanent error: the job fails now, without further attempts.
    pub fn fatal(message: impl fmt::Display) -> Self {
        Self {
            kind: TaskErrorKind::Fatal,
            message: message.to_string(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True for a permanent error.
    pub fn is_fatal(&self) -> bool {
        self.kind == TaskErrorKind::Fatal
    }

    /// The delay the task asked for, if any.
    pub fn requested_delay(&self) -> Option<Duration> {
        match self.kind {
            TaskErrorKind::RetryAfter(d) => Some(d),
            _ => None,
        }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskError({:?}: {})", self.kind, self.message)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> Self {
        TaskError::msg(e)
    }
}

/// Records progress for the running attempt (implemented over a result store).
pub trait ProgressSink: Send + Sync + 'static {
    /// Stores the progress of the attempt holding `lease`.
    fn report(
        &self,
        lease: LeaseRef,
        fraction: f64,
        message: Option<String>,
    ) -> BoxFuture<'static, Result<bool>>;
}

/// What a running task knows about its job, and how it talks back.
#[derive(Clone)]
pub struct TaskContext {
    job_id: JobId,
    token: u64,
    task: Arc<str>,
    queue: Arc<str>,
    attempt: u32,
    max_attempts: u32,
    headers: Arc<BTreeMap<String, String>>,
    cancel: CancellationToken,
    progress: Option<Arc<dyn ProgressSink>>,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("job_id", &self.job_id)
            .field("task", &self.task)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    /// A context (the worker makes these; tests of task bodies may too).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job_id: JobId,
        token: u64,
        task: &str,
        queue: &str,
        attempt: u32,
        max_attempts: u32,
        headers: BTreeMap<String, String>,
        cancel: CancellationToken,
        progress: Option<Arc<dyn ProgressSink>>,
    ) -> Self {
        Self {
            job_id,
            token,
            task: task.into(),
            queue: queue.into(),
            attempt,
            max_attempts,
            headers: Arc::new(headers),
            cancel,
            progress,
        }
    }

    /// A context for calling a task body directly, outside any worker.
    pub fn detached(task: &str) -> Self {
        Self::new(
            JobId::new(),
            0,
            task,
            DEFAULT_QUEUE,
            1,
            1,
            BTreeMap::new(),
            CancellationToken::new(),
            None,
        )
    }

    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }
    /// The task's name.
    pub fn task(&self) -> &str {
        &self.task
    }
    /// The job's queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }
    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// Attempts the job may have in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// True on the last attempt the job will get.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
    /// The job's headers.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// True once the soft time limit passed, the worker is shutting down past its grace
    /// period, or the lease was lost. A well-behaved task stops soon after.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when [`TaskContext::is_cancelled`] becomes true.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The cancellation token itself, to hand to other code.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Reports progress (`fraction` from 0.0 to 1.0), visible through the job's handle and
    /// `celeriac inspect`.
    pub async fn progress(&self, fraction: f64, message: impl Into<Option<String>>) -> Result<()> {
        if let Some(sink) = &self.progress {
            let lease = LeaseRef {
                id: self.job_id,
                token: self.token,
                queue: self.queue.clone(),
            };
            sink.report(lease, fraction.clamp(0.0, 1.0), message.into())
                .await?;
        }
        Ok(())
    }

    /// Runs CPU-heavy or blocking work on the blocking pool, so the async executor (and the
    /// worker's heartbeats) keep running.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, TaskError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            if e.is_panic() {
                TaskError::msg(format!(
                    "blocking section panicked: {}",
                    panic_message(e.into_panic())
                ))
            } else {
                TaskError::msg("blocking section was cancelled")
            }
        })
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Why running a job's task failed before or inside the task.
#[derive(Debug)]
pub enum RunError {
    /// The payload did not decode into the task's arguments.
    Decode(String),
    /// The task returned an error.
    Task(TaskError),
}

type Handler = dyn Fn(TaskContext, Vec<u8>, Encoding) -> BoxFuture<'static, Result<Option<Vec<u8>>, RunError>>
    + Send
    + Sync;

/// A registered task, type-erased: its name, options and a handler over raw payloads.
#[derive(Clone)]
pub struct TaskDef {
    name: String,
    options: TaskOptions,
    handler: Arc<Handler>,
}

impl fmt::Debug for TaskDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskDef")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TaskDef {
    /// The definition of a typed task.
    pub fn of<T: Task>() -> Self {
        let options = T::options();
        TaskDef {
            name: T::NAME.to_string(),
            options,
            handler: Arc::new(move |ctx, payload, encoding| {
                Box::pin(async move {
                    let args: T::Args = encoding
                        .decode(&payload)
                        .map_err(|e| RunError::Decode(e.to_string()))?;
                    let out = T::run(ctx, args).await.map_err(RunError::Task)?;
                    encoding.encode(&out).map(Some).map_err(|e| {
                        RunError::Task(TaskError::fatal(format!("result does not serialize: {e}")))
                    })
                })
            }),
        }
    }

    /// A task from a function (a closure may carry state, which a [`Task`] type cannot):
    /// `f` runs each attempt with the decoded arguments.
    pub fn from_fn<A, O, F, Fut>(name: impl Into<String>, options: TaskOptions, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(TaskContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, TaskError>> + Send + 'static,
    {
        let f = Arc::new(f);
        TaskDef {
            name: name.into(),
            options,
            handler: Arc::new(move |ctx, payload, encoding| {
                let f = f.clone();
                Box::pin(async move {
                    let args: A = encoding
                        .decode(&payload)
                        .map_err(|e| RunError::Decode(e.to_string()))?;
                    let out = f(ctx, args).await.map_err(RunError::Task)?;
                    encoding.encode(&out).map(Some).map_err(|e| {
                        RunError::Task(TaskError::fatal(format!("result does not serialize: {e}")))
                    })
                })
            }),
        }
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The task's options.
    pub fn options(&self) -> &TaskOptions {
        &self.options
    }

    /// Runs one attempt over a raw payload.
    pub fn call(
        &self,
        ctx: TaskContext,
        payload: Vec<u8>,
        encoding: Encoding,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, RunError>> {
        (self.handler)(ctx, payload, encoding)
    }
}

/// Tasks by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    tasks: HashMap<String, TaskDef>,
    breakers: HashMap<String, crate::breaker::Guard>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a typed task; a later task of the same name replaces the earlier one.
    pub fn register<T: Task>(&mut self) -> &mut Self {
        self.insert(TaskDef::of::<T>())
    }

    /// Adds a task definition.
    pub fn insert(&mut self, def: TaskDef) -> &mut Self {
        self.tasks.insert(def.name.clone(), def);
        self
    }

    /// Adds a circuit breaker that tasks name in [`TaskOptions::breaker`]; a later breaker of
    /// the same name replaces the earlier one.
    pub fn breaker(&mut self, breaker: crate::breaker::CircuitBreaker) -> &mut Self {
        self.guard(breaker)
    }

    /// Adds a breaker shared through a store (see [`crate::breaker::SharedBreaker`]): while
    /// the store holds it open, every worker registering it defers its tasks' jobs, and in
    /// half-open only the store's probes run across the fleet. Its sync must run
    /// ([`crate::breaker::SharedBreaker::spawn_sync`]); a later breaker of the same name
    /// replaces the earlier one.
    pub fn shared_breaker<S: crate::backend::BreakerStore>(
        &mut self,
        breaker: Arc<crate::breaker::SharedBreaker<S>>,
    ) -> &mut Self {
        self.guard(breaker)
    }

    /// Adds a local or shared breaker.
    pub fn guard(&mut self, guard: impl Into<crate::breaker::Guard>) -> &mut Self {
        let guard = guard.into();
        self.breakers.insert(guard.name().to_string(), guard);
        self
    }

    /// The circuit breaker called `name` (for a shared one, its local breaker).
    pub fn get_breaker(&self, name: &str) -> Option<&crate::breaker::CircuitBreaker> {
        self.breakers.get(name).map(crate::breaker::Guard::local)
    }

    /// The local or shared breaker called `name`.
    pub fn get_guard(&self, name: &str) -> Option<&crate::breaker::Guard> {
        self.breakers.get(name)
    }

    /// Every registered circuit breaker (for shared ones, their local breakers), sorted by
    /// name.
    pub fn breakers(&self) -> Vec<&crate::breaker::CircuitBreaker> {
        let mut all: Vec<_> = self
            .breakers
            .values()
            .map(crate::breaker::Guard::local)
            .collect();
        all.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Checks that every breaker a task names is registered.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the task's `breaker` setting.
    pub fn check_breakers(&self) -> crate::Result<()> {
        let mut names: Vec<&TaskDef> = self.tasks.values().collect();
        names.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        for t in names {
            if let Some(b) = &t.options.breaker {
                if !self.breakers.contains_key(b) {
                    return Err(crate::Error::config(
                        format!("task `{}`: breaker", t.name),
                        format!(
                            "no circuit breaker named `{b}` is registered (register it with \
                             `breaker(CircuitBreaker::builder(\"{b}\")...)`)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The task called `name`.
    pub fn get(&self, name: &str) -> Option<&TaskDef> {
        self.tasks.get(name)
    }

    /// Names of all registered tasks, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The global limits of the tasks that have any, by task name.
    pub fn limits(&self) -> std::collections::BTreeMap<String, TaskLimits> {
        self.tasks
            .values()
            .filter(|t| !t.options.limits.is_empty())
            .map(|t| (t.name.clone(), t.options.limits))
            .collect()
    }

    /// The distinct queues the registered tasks use, sorted.
    pub fn queues(&self) -> Vec<String> {
        let mut q: Vec<String> = self
            .tasks
            .values()
            .map(|t| t.options.queue.clone())
            .collect();
        q.sort_unstable();
        q.dedup();
        q
    }
}
