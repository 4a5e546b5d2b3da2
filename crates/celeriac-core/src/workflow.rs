//! Workflows: chains, groups, chords and maps of task steps, nested freely.
//!
//! ```
//! use celeriac_core::workflow::{chain, chord, group, map, Step};
//! # use celeriac_core::task::{Task, TaskContext, TaskError};
//! # macro_rules! t { ($n:ident, $a:ty, $o:ty) => {
//! #   struct $n; impl Task for $n { const NAME: &'static str = stringify!($n);
//! #   type Args = $a; type Output = $o;
//! #   async fn run(_: TaskContext, _: $a) -> Result<$o, TaskError> { unimplemented!() } } } }
//! # t!(Fetch, String, Vec<u32>); t!(Resize, u32, u32); t!(Report, Vec<u32>, String);
//! # t!(Notify, String, ()); t!(Alert, serde_json::Value, ());
//! // Fetch a list, resize every item in parallel, then report on all of them, then notify.
//! let flow = chain([
//!     Step::of::<Fetch>("album-7".to_string()).into(),
//!     chord([map(Step::piped::<Resize>())], Step::piped::<Report>()),
//!     Step::piped::<Notify>().into(),
//! ])
//! .on_error(Step::piped::<Alert>());
//! assert_eq!(
//!     flow.describe(),
//!     "chain(Fetch, chord(group(map(Resize)), Report), Notify).on_error(Alert)"
//! );
//! # let _ = group([Step::of::<Resize>(1).into()]);
//! ```
//!
//! How a workflow runs: starting it stores a [`WorkflowRecord`] (state running) and enqueues
//! its first jobs. Each job carries its continuation (what to do with its output) in the
//! `celeriac-flow` header. When a worker finishes such a job, it enqueues the next steps with
//! the output as their arguments *before* acknowledging the job, under ids derived from the
//! finished job's id ([`JobId::derive`]): a job delivered twice enqueues the same ids twice,
//! and enqueueing is idempotent by id, so every step runs once per workflow. A group's members
//! meet at a join in the store ([`WorkflowStore::join_arrive`]), idempotent per member; the
//! steps after it get ids derived from the join's id, so however many members see the join
//! complete (a member delivered twice sees it again), the callback is enqueued once.
//!
//! Failure: a step that ends failed, dead or cancelled stops the workflow. The error
//! handlers ([`Flow::on_error`]) around it are enqueued with a description of the failure
//! as their arguments, and the workflow ends failed with an error naming the step (and, in a
//! group, the member). A group member's failure fails the join, so the chord's callback
//! never runs.
//!
//! Definitions are trees built by value, so they cannot contain cycles; [`Flow::validate`]
//! refuses empty chains and groups, steps that take the previous output where there is none,
//! arguments that do not serialize, and nesting deeper than [`MAX_DEPTH`].

use crate::backend::{Broker, JoinArrival, JoinInput, JoinStatus, ResultStore, WorkflowEnd};
use crate::backend::{WorkflowRecord, WorkflowState, WorkflowStore};
use crate::client::AsClient;
use crate::clock::{duration_ms, Clock, UnixMs};
use crate::error::{Error, Result};
use crate::job::{Encoding, Job, JobId, Priority, DEFAULT_RESULT_TTL};
use crate::task::{Task, TaskOptions};
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// The header that carries a job's place in its workflow.
pub const FLOW_HEADER: &str = "celeriac-flow";

/// The deepest nesting a workflow definition may have.
pub const MAX_DEPTH: usize = 64;

/// How long workflow records and joins are kept after their last change, by default.
pub const DEFAULT_WORKFLOW_TTL: Duration = DEFAULT_RESULT_TTL;

/// Where a step's arguments come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StepArgs {
    /// Fixed when the workflow was defined.
    Fixed(Value),
    /// The previous step's output (a group's outputs as a list).
    Input,
    /// The arguments did not serialize; reported when the workflow starts.
    Invalid(String),
}

/// The options a step's job is built with, taken from its task when the step is defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StepOptions {
    queue: String,
    priority: u8,
    max_attempts: u32,
    encoding: Encoding,
    soft_ms: Option<i64>,
    hard_ms: Option<i64>,
    result_ttl_ms: Option<i64>,
    expires_ms: Option<i64>,
}

impl From<&TaskOptions> for StepOptions {
    fn from(o: &TaskOptions) -> Self {
        StepOptions {
            queue: o.queue.clone(),
            priority: o.priority.get(),
            max_attempts: o.max_attempts,
            encoding: o.encoding,
            soft_ms: o.soft_time_limit.map(duration_ms),
            hard_ms: o.hard_time_limit.map(duration_ms),
            result_ttl_ms: (!o.ignore_result).then(|| duration_ms(o.result_ttl)),
            expires_ms: o.expires.map(duration_ms),
        }
    }
}

/// One task call in a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    task: String,
    args: StepArgs,
    opts: StepOptions,
}

impl Step {
    /// A step of task `T` with fixed arguments (the previous step's output is not passed).
    pub fn of<T: Task>(args: T::Args) -> Step {
        let args = match serde_json::to_value(&args) {
            Ok(v) => StepArgs::Fixed(v),
            Err(e) => StepArgs::Invalid(e.to_string()),
        };
        Step {
            task: T::NAME.to_string(),
            args,
            opts: StepOptions::from(&T::options()),
        }
    }

    /// A step of task `T` whose arguments are the previous step's output (after a group or
    /// a map: the list of the members' outputs, in order).
    pub fn piped<T: Task>() -> Step {
        Step {
            task: T::NAME.to_string(),
            args: StepArgs::Input,
            opts: StepOptions::from(&T::options()),
        }
    }

    /// A step of a task known by name only (it may run in another service), with JSON
    /// arguments, or `None` to take the previous step's output.
    pub fn named(task: impl Into<String>, args: Option<Value>, options: &TaskOptions) -> Step {
        Step {
            task: task.into(),
            args: args.map_or(StepArgs::Input, StepArgs::Fixed),
            opts: StepOptions::from(options),
        }
    }

    /// Runs this step in another queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.opts.queue = queue.into();
        self
    }

    /// Another priority for this step.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.opts.priority = priority.get();
        self
    }

    /// Total attempts for this step.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.opts.max_attempts = attempts;
        self
    }

    /// The task's name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The job for this step, with `input` as its arguments where it takes them.
    fn job(
        &self,
        id: JobId,
        input: Option<&Value>,
        link: &Link,
        parent: Option<JobId>,
        now: UnixMs,
    ) -> Result<Job> {
        let args = match (&self.args, input) {
            (StepArgs::Fixed(v), _) => v,
            (StepArgs::Input, Some(v)) => v,
            (StepArgs::Input, None) => {
                return Err(Error::config(
                    "workflow",
                    format!(
                        "step `{}` takes the previous output, but none comes before it",
                        self.task
                    ),
                ))
            }
            (StepArgs::Invalid(e), _) => return Err(invalid_args(&self.task, e)),
        };
        let payload = self.opts.encoding.encode(args)?;
        let mut job = Job::new(self.task.clone(), payload, now);
        job.id = id;
        job.queue = self.opts.queue.clone();
        job.encoding = self.opts.encoding;
        job.priority = Priority::clamped(self.opts.priority);
        job.max_attempts = self.opts.max_attempts;
        job.soft_time_limit = self.opts.soft_ms.map(ms_duration);
        job.hard_time_limit = self.opts.hard_ms.map(ms_duration);
        job.result_ttl = self.opts.result_ttl_ms.map(ms_duration);
        job.expires_at = self.opts.expires_ms.map(|ms| now.saturating_add(ms));
        job.root_id = Some(link.workflow);
        job.parent_id = parent;
        let text = serde_json::to_string(link).map_err(|e| Error::Codec(e.to_string()))?;
        job.headers.insert(FLOW_HEADER.to_string(), text);
        job.validate()?;
        Ok(job)
    }
}

fn ms_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn invalid_args(task: &str, e: &str) -> Error {
    Error::config(
        "workflow",
        format!("the arguments of step `{task}` do not serialize: {e}"),
    )
}

/// A workflow definition: a step, or steps combined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// One task call.
    Task(Step),
    /// Each part runs after the previous one, with its output as input.
    Chain(Vec<Flow>),
    /// The parts run in parallel on the same input; the output is the list of their outputs.
    Group(Vec<Flow>),
    /// A group, then `body` once with the list of the group's outputs.
    Chord {
        /// The parallel part.
        header: Vec<Flow>,
        /// What runs once after all of them.
        body: Box<Flow>,
    },
    /// The step once per element of the input list, in parallel; the output is the list of
    /// their outputs.
    Map(Step),
    /// `body`, with `handler` enqueued if a step inside it fails.
    OnError {
        /// What is guarded.
        body: Box<Flow>,
        /// Runs with a description of the failure (`workflow`, `job`, `task`, `error`).
        handler: Step,
    },
}

impl From<Step> for Flow {
    fn from(step: Step) -> Self {
        Flow::Task(step)
    }
}

/// Parts that run one after the other, each taking the previous one's output.
pub fn chain(parts: impl IntoIterator<Item = Flow>) -> Flow {
    Flow::Chain(parts.into_iter().collect())
}

/// Parts that run in parallel on the same input; the output is the list of their outputs, in
/// order.
pub fn group(parts: impl IntoIterator<Item = Flow>) -> Flow {
    Flow::Group(parts.into_iter().collect())
}

/// A group, then `body` exactly once with the list of the group's outputs.
pub fn chord(header: impl IntoIterator<Item = Flow>, body: impl Into<Flow>) -> Flow {
    Flow::Chord {
        header: header.into_iter().collect(),
        body: Box::new(body.into()),
    }
}

/// `step` once per element of the input list, in parallel.
pub fn map(step: Step) -> Flow {
    Flow::Map(step)
}

impl Flow {
    /// Enqueues `handler` if a step inside this part fails (Celery's `link_error`).
    pub fn on_error(self, handler: Step) -> Flow {
        Flow::OnError {
            body: Box::new(self),
            handler,
        }
    }

    /// A short description of the shape: `chain(fetch, group(resize, resize), report)`.
    pub fn describe(&self) -> String {
        let list = |parts: &[Flow]| {
            parts
                .iter()
                .map(Flow::describe)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Flow::Task(s) => s.task.clone(),
            Flow::Chain(p) => format!("chain({})", list(p)),
            Flow::Group(p) => format!("group({})", list(p)),
            Flow::Chord { header, body } => {
                format!("chord(group({}), {})", list(header), body.describe())
            }
            Flow::Map(s) => format!("map({})", s.task),
            Flow::OnError { body, handler } => {
                format!("{}.on_error({})", body.describe(), handler.task)
            }
        }
    }

    /// Checks the definition, naming the first problem: an empty chain or group, a step that
    /// takes the previous output where there is none, arguments that do not serialize, an
    /// invalid step option, nesting deeper than [`MAX_DEPTH`].
    pub fn validate(&self) -> Result<()> {
        self.check(false, 0, "workflow")
    }

    fn check(&self, has_input: bool, depth: usize, at: &str) -> Result<()> {
        let bad = |msg: String| Err(Error::config("workflow", format!("{at}: {msg}")));
        if depth > MAX_DEPTH {
            return bad(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let step = |s: &Step, has_input: bool| -> Result<()> {
            match &s.args {
                StepArgs::Invalid(e) => return Err(invalid_args(&s.task, e)),
                StepArgs::Input if !has_input => {
                    return bad(format!(
                        "step `{}` takes the previous step's output, but nothing comes before \
                         it; give it arguments with `Step::of`",
                        s.task
                    ))
                }
                _ => {}
            }
            if s.task.is_empty() || s.task.len() > 200 {
                return bad(format!("task name `{}` must be 1 to 200 bytes", s.task));
            }
            if s.opts.max_attempts == 0 {
                return bad(format!("step `{}` needs at least one attempt", s.task));
            }
            Ok(())
        };
        match self {
            Flow::Task(s) => step(s, has_input),
            Flow::Chain(parts) => {
                if parts.is_empty() {
                    return bad("a chain needs at least one part".into());
                }
                let mut input = has_input;
                for (i, p) in parts.iter().enumerate() {
                    p.check(input, depth + 1, &format!("{at} > chain part {i}"))?;
                    input = true;
                }
                Ok(())
            }
            Flow::Group(parts) => {
                if parts.is_empty() {
                    return bad("a group needs at least one part".into());
                }
                for (i, p) in parts.iter().enumerate() {
                    p.check(has_input, depth + 1, &format!("{at} > group member {i}"))?;
                }
                Ok(())
            }
            Flow::Chord { header, body } => {
                if header.is_empty() {
                    return bad("a chord needs at least one member".into());
                }
                for (i, p) in header.iter().enumerate() {
                    p.check(has_input, depth + 1, &format!("{at} > chord member {i}"))?;
                }
                body.check(true, depth + 1, &format!("{at} > chord body"))
            }
            Flow::Map(s) => {
                if !has_input {
                    return bad(format!(
                        "map({}) maps over the previous step's output, but nothing comes \
                         before it",
                        s.task
                    ));
                }
                step(s, true)
            }
            Flow::OnError { body, handler } => {
                step(handler, true)?;
                body.check(has_input, depth + 1, at)
            }
        }
    }

    /// Starts the workflow: stores its record and enqueues its first jobs.
    ///
    /// # Errors
    /// An invalid definition (nothing is enqueued), or the store's error.
    pub async fn start<C>(self, to: &C) -> Result<WorkflowHandle<C::Backend>>
    where
        C: AsClient,
        C::Backend: WorkflowStore,
    {
        self.start_with_id(to, JobId::new()).await
    }

    /// Starts the workflow under a chosen id; starting the same id again does nothing more
    /// (idempotent), so a caller that retries after an error does not run it twice.
    ///
    /// # Errors
    /// As [`Flow::start`].
    pub async fn start_with_id<C>(self, to: &C, id: JobId) -> Result<WorkflowHandle<C::Backend>>
    where
        C: AsClient,
        C::Backend: WorkflowStore,
    {
        self.validate()?;
        let client = to.client();
        let backend = client.backend().clone();
        let now = client.now();
        backend
            .workflow_start(WorkflowRecord {
                id,
                name: self.describe(),
                state: WorkflowState::Running,
                result: None,
                error: None,
                created_at: now,
                finished_at: None,
                ttl: DEFAULT_WORKFLOW_TTL,
            })
            .await?;
        let mut run = Run::new(&*backend, id, now);
        run.start(&self, None, Vec::new(), id, "r".to_string(), None)
            .await?;
        run.flush().await?;
        Ok(WorkflowHandle {
            id,
            backend,
            clock: client.clock().clone(),
        })
    }
}

/// A handle on a started workflow: its state, result and error.
pub struct WorkflowHandle<B> {
    id: JobId,
    backend: Arc<B>,
    clock: Arc<dyn Clock>,
}

impl<B> Clone for WorkflowHandle<B> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            backend: self.backend.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<B> std::fmt::Debug for WorkflowHandle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkflowHandle({})", self.id)
    }
}

impl<B: WorkflowStore> WorkflowHandle<B> {
    /// A handle on a workflow by id.
    pub fn new(id: JobId, backend: Arc<B>, clock: Arc<dyn Clock>) -> Self {
        Self { id, backend, clock }
    }

    /// The workflow's id: the `root_id` of each of its jobs.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The job id of member `index` (from 0) of the workflow when it is a group, a map, or a
    /// chord (a member of its header); at 0, also the first step of a chain. Ids derive from
    /// the workflow's, so they are known before the jobs exist.
    pub fn member_id(&self, index: usize) -> JobId {
        self.id.derive(&format!("r.{index}"))
    }

    /// The job id of the callback of the workflow when it is a chord whose body is one task:
    /// it derives from the chord's join, which derives from the workflow.
    pub fn callback_id(&self) -> JobId {
        self.id.derive("r.j").derive("n")
    }

    /// The workflow's record now.
    ///
    /// # Errors
    /// [`Error::NotFound`] if unknown or expired.
    pub async fn info(&self) -> Result<WorkflowRecord> {
        self.backend
            .workflow_get(self.id)
            .await?
            .ok_or_else(|| Error::NotFound(self.id.to_string()))
    }

    /// Waits until the workflow ends, for at most `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Result<WorkflowRecord> {
        self.backend.workflow_wait(self.id, timeout).await
    }

    /// Waits for the workflow and decodes its output; a failed workflow is an error naming the
    /// step that failed.
    pub async fn result<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        let rec = self.wait(timeout).await?;
        record_result(&rec)
    }

    /// When the handle's clock says it is now.
    pub fn now(&self) -> UnixMs {
        self.clock.now_ms()
    }
}

/// The output of a finished record, decoded; a failed record's error as an error.
pub fn record_result<T: DeserializeOwned>(rec: &WorkflowRecord) -> Result<T> {
    match rec.state {
        WorkflowState::Succeeded => {
            let bytes = rec.result.as_deref().unwrap_or(b"null");
            serde_json::from_slice(bytes).map_err(|e| Error::Codec(e.to_string()))
        }
        WorkflowState::Failed => Err(Error::backend(
            crate::error::ErrorKind::GiveUp,
            format!(
                "workflow {} failed: {}",
                rec.id,
                rec.error.as_deref().unwrap_or("no error recorded")
            ),
        )),
        WorkflowState::Running => Err(Error::Timeout(rec.id.to_string())),
    }
}

/// What runs after a job, carried in its [`FLOW_HEADER`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Link {
    /// The workflow's id.
    workflow: JobId,
    /// What follows, innermost last.
    stack: Vec<Frame>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Frame {
    /// Start this part with the output.
    Then(Flow),
    /// Arrive at a join as member `index` of `total`.
    Join { id: JobId, index: u32, total: u32 },
    /// On failure, enqueue this handler.
    Catch(Step),
}

/// How a workflow step ended, for its continuation.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEnd {
    /// With this output.
    Output(Value),
    /// With this failure, described for people.
    Failed(String),
}

/// Runs the continuation of a finished job: enqueues what follows it, arrives at its join,
/// or ends its workflow. Does nothing for jobs outside workflows.
///
/// # Errors
/// The store's errors; the caller retries (every part is idempotent).
pub async fn continue_after<B: Broker + WorkflowStore>(
    backend: &B,
    job: &Job,
    end: StepEnd,
    now: UnixMs,
) -> Result<()> {
    let Some(text) = job.headers.get(FLOW_HEADER) else {
        return Ok(());
    };
    let link: Link = serde_json::from_str(text)
        .map_err(|e| Error::Codec(format!("bad `{FLOW_HEADER}` header: {e}")))?;
    let mut run = Run::new(backend, link.workflow, now);
    match end {
        StepEnd::Output(out) => {
            if let Err(e) = run
                .advance(out, link.stack.clone(), job.id, "n".to_string())
                .await
            {
                // A problem of the definition met at run time (a map over something that is
                // not a list, arguments that do not encode): the workflow fails, naming it.
                if matches!(e, Error::Config { .. } | Error::Codec(_)) {
                    let mut run = Run::new(backend, link.workflow, now);
                    let msg = format!("after step `{}` (job {}): {e}", job.task, job.id);
                    run.fail(msg, job, link.stack, job.id).await?;
                    return run.flush().await;
                }
                return Err(e);
            }
        }
        StepEnd::Failed(msg) => run.fail(msg, job, link.stack, job.id).await?,
    }
    run.flush().await
}

/// One pass over a workflow: the jobs it will enqueue, and the store.
struct Run<'a, B> {
    backend: &'a B,
    workflow: JobId,
    now: UnixMs,
    jobs: Vec<Job>,
}

impl<'a, B: Broker + WorkflowStore> Run<'a, B> {
    fn new(backend: &'a B, workflow: JobId, now: UnixMs) -> Self {
        Self {
            backend,
            workflow,
            now,
            jobs: Vec::new(),
        }
    }

    async fn flush(self) -> Result<()> {
        if !self.jobs.is_empty() {
            self.backend.enqueue(self.jobs, self.now).await?;
        }
        Ok(())
    }

    /// Starts `flow` with `input`, followed by `stack`; ids derive from `seed` and `path`.
    fn start<'b>(
        &'b mut self,
        flow: &'b Flow,
        input: Option<&'b Value>,
        mut stack: Vec<Frame>,
        seed: JobId,
        path: String,
        parent: Option<JobId>,
    ) -> BoxFuture<'b, Result<()>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            match flow {
                Flow::Task(step) => {
                    let link = Link {
                        workflow: self.workflow,
                        stack,
                    };
                    let job = step.job(seed.derive(&path), input, &link, parent, self.now)?;
                    self.jobs.push(job);
                    Ok(())
                }
                Flow::Chain(parts) => {
                    let Some((first, rest)) = parts.split_first() else {
                        return self.advance_opt(input, stack, seed, path).await;
                    };
                    match rest.len() {
                        0 => {}
                        1 => stack.push(Frame::Then(rest[0].clone())),
                        _ => stack.push(Frame::Then(Flow::Chain(rest.to_vec()))),
                    }
                    self.start(first, input, stack, seed, format!("{path}.0"), parent)
                        .await
                }
                Flow::Group(parts) => {
                    self.fan_out(
                        parts.len(),
                        stack,
                        seed,
                        &path,
                        |i| (parts[i].clone(), input.cloned()),
                        parent,
                    )
                    .await
                }
                Flow::Chord { header, body } => {
                    stack.push(Frame::Then((**body).clone()));
                    self.fan_out(
                        header.len(),
                        stack,
                        seed,
                        &path,
                        |i| (header[i].clone(), input.cloned()),
                        parent,
                    )
                    .await
                }
                Flow::Map(step) => {
                    let items = match input {
                        Some(Value::Array(items)) => items.clone(),
                        other => {
                            return Err(Error::config(
                                "workflow",
                                format!(
                                    "map({}) needs a list as input, got {}",
                                    step.task,
                                    describe_value(other)
                                ),
                            ))
                        }
                    };
                    self.fan_out(
                        items.len(),
                        stack,
                        seed,
                        &path,
                        |i| (Flow::Task(step.clone()), Some(items[i].clone())),
                        parent,
                    )
                    .await
                }
                Flow::OnError { body, handler } => {
                    stack.push(Frame::Catch(handler.clone()));
                    self.start(body, input, stack, seed, path, parent).await
                }
            }
        })
    }

    /// Starts `total` members, each followed by a join and then `stack`.
    async fn fan_out(
        &mut self,
        total: usize,
        stack: Vec<Frame>,
        seed: JobId,
        path: &str,
        member: impl Fn(usize) -> (Flow, Option<Value>),
        parent: Option<JobId>,
    ) -> Result<()> {
        if total == 0 {
            return self
                .advance(Value::Array(Vec::new()), stack, seed, format!("{path}.e"))
                .await;
        }
        let total32 = u32::try_from(total)
            .map_err(|_| Error::config("workflow", "a group has too many members"))?;
        let join = seed.derive(&format!("{path}.j"));
        for i in 0..total {
            let (flow, input) = member(i);
            let mut s = stack.clone();
            s.push(Frame::Join {
                id: join,
                index: i as u32,
                total: total32,
            });
            self.start(
                &flow,
                input.as_ref(),
                s,
                seed,
                format!("{path}.{i}"),
                parent,
            )
            .await?;
        }
        Ok(())
    }

    async fn advance_opt(
        &mut self,
        input: Option<&Value>,
        stack: Vec<Frame>,
        seed: JobId,
        path: String,
    ) -> Result<()> {
        self.advance(input.cloned().unwrap_or(Value::Null), stack, seed, path)
            .await
    }

    /// Continues with `output` at the top of `stack`.
    fn advance<'b>(
        &'b mut self,
        mut output: Value,
        mut stack: Vec<Frame>,
        mut seed: JobId,
        mut path: String,
    ) -> BoxFuture<'b, Result<()>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            loop {
                match stack.pop() {
                    None => {
                        let bytes =
                            serde_json::to_vec(&output).map_err(|e| Error::Codec(e.to_string()))?;
                        self.backend
                            .workflow_finish(self.workflow, WorkflowEnd::Succeeded(bytes), self.now)
                            .await?;
                        return Ok(());
                    }
                    Some(Frame::Catch(_)) => {}
                    Some(Frame::Then(next)) => {
                        let parent = Some(seed);
                        return self
                            .start(&next, Some(&output), stack, seed, path, parent)
                            .await;
                    }
                    Some(Frame::Join { id, index, total }) => {
                        let bytes =
                            serde_json::to_vec(&output).map_err(|e| Error::Codec(e.to_string()))?;
                        let arrival = JoinArrival {
                            join: id,
                            index,
                            total,
                            input: JoinInput::Output(bytes),
                            ttl: DEFAULT_WORKFLOW_TTL,
                        };
                        match self.backend.join_arrive(arrival, self.now).await? {
                            JoinStatus::Waiting { .. } | JoinStatus::Failed(_) => return Ok(()),
                            JoinStatus::Complete(outputs) => {
                                let items = outputs
                                    .iter()
                                    .map(|o| serde_json::from_slice(o))
                                    .collect::<std::result::Result<Vec<Value>, _>>()
                                    .map_err(|e| Error::Codec(e.to_string()))?;
                                output = Value::Array(items);
                                seed = id;
                                path = "n".to_string();
                            }
                        }
                    }
                }
            }
        })
    }

    /// Unwinds after `job` failed: error handlers are enqueued, joins fail, and the workflow
    /// ends failed.
    async fn fail(
        &mut self,
        mut message: String,
        job: &Job,
        mut stack: Vec<Frame>,
        mut seed: JobId,
    ) -> Result<()> {
        let mut depth = 0usize;
        while let Some(frame) = stack.pop() {
            depth += 1;
            match frame {
                Frame::Then(_) => {}
                Frame::Catch(handler) => {
                    let about = serde_json::json!({
                        "workflow": self.workflow.to_string(),
                        "job": job.id.to_string(),
                        "task": job.task,
                        "error": message,
                    });
                    let link = Link {
                        workflow: self.workflow,
                        stack: Vec::new(),
                    };
                    let id = seed.derive(&format!("e{depth}"));
                    let mut handler_job =
                        handler.job(id, Some(&about), &link, Some(seed), self.now)?;
                    // The handler is not a step of the workflow: its end changes nothing.
                    handler_job.headers.remove(FLOW_HEADER);
                    self.jobs.push(handler_job);
                }
                Frame::Join { id, index, total } => {
                    let named = format!("member {index} of {total} failed: {message}");
                    let arrival = JoinArrival {
                        join: id,
                        index,
                        total,
                        input: JoinInput::Failed(named.clone()),
                        ttl: DEFAULT_WORKFLOW_TTL,
                    };
                    message = match self.backend.join_arrive(arrival, self.now).await? {
                        JoinStatus::Failed(first) => first,
                        _ => named,
                    };
                    seed = id;
                    depth = 0;
                }
            }
        }
        self.backend
            .workflow_finish(self.workflow, WorkflowEnd::Failed(message), self.now)
            .await?;
        Ok(())
    }
}

fn describe_value(v: Option<&Value>) -> String {
    match v {
        None => "nothing".to_string(),
        Some(Value::Null) => "null".to_string(),
        Some(Value::Bool(_)) => "a boolean".to_string(),
        Some(Value::Number(_)) => "a number".to_string(),
        Some(Value::String(_)) => "a string".to_string(),
        Some(Value::Array(_)) => "a list".to_string(),
        Some(Value::Object(_)) => "an object".to_string(),
    }
}

/// Describes how a workflow job ended, for the workflow's error.
pub fn describe_failure(job: &Job, state: &str, error: Option<&crate::job::ErrorInfo>) -> String {
    match error {
        Some(e) => format!("step `{}` (job {}) ended {state}: {e}", job.task, job.id),
        None => format!("step `{}` (job {}) ended {state}", job.task, job.id),
    }
}

/// Reads a job's output for its continuation: the result bytes in the job's encoding.
pub fn output_value(job: &Job, result: Option<&[u8]>) -> Result<Value> {
    match result {
        Some(bytes) => job.encoding.decode(bytes),
        None => Ok(Value::Null),
    }
}

/// Workflows a worker continues: implemented for every store with the workflow capability.
pub(crate) trait FlowSink: Send + Sync + 'static {
    fn after<'a>(&'a self, job: &'a Job, end: StepEnd, now: UnixMs) -> BoxFuture<'a, Result<()>>;
}

/// The [`FlowSink`] over a store.
pub(crate) struct FlowOver<B>(pub(crate) Arc<B>);

impl<B: Broker + ResultStore + WorkflowStore> FlowSink for FlowOver<B> {
    fn after<'a>(&'a self, job: &'a Job, end: StepEnd, now: UnixMs) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut delay = Duration::from_millis(50);
            let mut tries = 0;
            loop {
                match continue_after(&*self.0, job, end.clone(), now).await {
                    Ok(()) => return Ok(()),
                    Err(e) if tries < 5 && !matches!(e, Error::Config { .. } | Error::Codec(_)) => {
                        warn!(error = %e, "continuing the workflow failed; retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                        tries += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{TaskContext, TaskError};

    struct Fetch;
    impl Task for Fetch {
        const NAME: &'static str = "fetch";
        type Args = String;
        type Output = Vec<u32>;
        async fn run(_: TaskContext, _: String) -> std::result::Result<Vec<u32>, TaskError> {
            Ok(vec![1, 2])
        }
    }
    struct Double;
    impl Task for Double {
        const NAME: &'static str = "double";
        type Args = u32;
        type Output = u32;
        async fn run(_: TaskContext, x: u32) -> std::result::Result<u32, TaskError> {
            Ok(x * 2)
        }
    }

    #[test]
    fn definitions_are_checked_naming_the_place() {
        let err = |f: Flow| f.validate().expect_err("invalid").to_string();
        assert!(err(chain([])).contains("a chain needs at least one part"));
        let e = err(chain([Step::piped::<Double>().into()]));
        assert!(e.contains("chain part 0") && e.contains("`double`"), "{e}");
        let e = err(chain([
            Step::of::<Fetch>("a".into()).into(),
            group([Step::of::<Double>(1).into(), group([])]),
        ]));
        assert!(e.contains("chain part 1 > group member 1"), "{e}");
        assert!(err(map(Step::piped::<Double>())).contains("map(double)"));
        let mut deep = Flow::from(Step::of::<Double>(1));
        for _ in 0..=MAX_DEPTH {
            deep = chain([deep]);
        }
        assert!(err(deep).contains("nested deeper"));
        let ok = chain([
            Step::of::<Fetch>("a".into()).into(),
            chord([map(Step::piped::<Double>())], Step::piped::<Fetch>()),
        ]);
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn unserializable_arguments_are_reported_at_start() {
        struct Keys;
        impl Task for Keys {
            const NAME: &'static str = "keys";
            type Args = std::collections::HashMap<(u8, u8), u8>;
            type Output = ();
            async fn run(_: TaskContext, _: Self::Args) -> std::result::Result<(), TaskError> {
                Ok(())
            }
        }
        let args = std::collections::HashMap::from([((1, 2), 3)]);
        let e = Flow::from(Step::of::<Keys>(args))
            .validate()
            .expect_err("tuple keys are not JSON")
            .to_string();
        assert!(e.contains("`keys`") && e.contains("serialize"), "{e}");
    }

    #[test]
    fn steps_take_their_input_or_their_own_arguments() {
        let link = Link {
            workflow: JobId::new(),
            stack: vec![],
        };
        let id = JobId::new();
        let input = serde_json::json!(21);
        let job = Step::piped::<Double>()
            .job(id, Some(&input), &link, None, 0)
            .expect("a job");
        assert_eq!(job.payload, b"21");
        assert_eq!(job.root_id, Some(link.workflow));
        assert!(job.headers.contains_key(FLOW_HEADER));
        let job = Step::of::<Double>(4)
            .job(id, Some(&input), &link, None, 0)
            .expect("a job");
        assert_eq!(job.payload, b"4", "fixed arguments ignore the input");
    }
}
