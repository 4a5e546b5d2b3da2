//! Enqueueing jobs and following them: [`Client`], [`Enqueue`] and [`JobHandle`].

use crate::backend::{Broker, CancelOutcome, ResultStore, WorkflowStore};
use crate::bounds::Bounds;
use crate::clock::{duration_ms, Clock, UnixMs};
use crate::error::{Error, Result};
use crate::job::{Job, JobId, JobInfo, JobState, Priority, Unique, UniqueFor};
use crate::task::{Registry, Task, TaskOptions};
use crate::workflow::{end_step_within, Starter, StepEnd};
use serde::Serialize;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// Enqueues jobs into a backend and reads their results.
///
/// Every job it enqueues is checked against its [`Bounds`] first (see [`Client::bounds`]).
pub struct Client<B> {
    backend: Arc<B>,
    clock: Arc<dyn Clock>,
    bounds: Bounds,
}

impl<B> Clone for Client<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            clock: self.clock.clone(),
            bounds: self.bounds,
        }
    }
}

/// Anything that can hand out a [`Client`]: the client itself, or an application.
pub trait AsClient {
    /// The backend behind it.
    type Backend: Broker + ResultStore;
    /// The client.
    fn client(&self) -> &Client<Self::Backend>;
}

impl<B: Broker + ResultStore> AsClient for Client<B> {
    type Backend = B;
    fn client(&self) -> &Client<B> {
        self
    }
}

impl<B: Broker + ResultStore> Client<B> {
    /// A client over `backend` using the store's fleet clock.
    pub fn new(backend: Arc<B>) -> Self {
        let clock = backend.fleet_clock();
        Self::with_clock(backend, clock)
    }

    /// A client with an injected clock (tests).
    pub fn with_clock(backend: Arc<B>, clock: Arc<dyn Clock>) -> Self {
        Self {
            backend,
            clock,
            bounds: Bounds::default(),
        }
    }

    /// Uses these bounds on the jobs it enqueues (default [`Bounds::default`]).
    ///
    /// # Errors
    /// A bound of zero, named (see [`Bounds::validate`]).
    pub fn with_bounds(mut self, bounds: Bounds) -> Result<Self> {
        bounds.validate()?;
        self.bounds = bounds;
        Ok(self)
    }

    /// The largest job this client enqueues: a job over any bound is refused with an
    /// [`Error::Config`] naming the bound, before anything reaches the backend.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The current time by this client's clock.
    pub fn now(&self) -> UnixMs {
        self.clock.now_ms()
    }

    /// Enqueues one job of task `T` with its default options.
    pub async fn enqueue<T: Task>(&self, args: T::Args) -> Result<JobHandle<B>> {
        Enqueue::<T>::new(args).enqueue(self).await
    }

    /// Enqueues many jobs of task `T` in one atomic batch.
    pub async fn enqueue_many<T: Task>(
        &self,
        args: impl IntoIterator<Item = T::Args>,
    ) -> Result<Vec<JobHandle<B>>> {
        let options = T::options();
        let now = self.now();
        let jobs = args
            .into_iter()
            .map(|a| JobOptions::default().build(T::NAME, &options, &a, now))
            .collect::<Result<Vec<_>>>()?;
        self.push(jobs).await
    }

    /// Stores prepared jobs (all or none) and returns their handles.
    ///
    /// # Errors
    /// A job over the client's [`Bounds`] (nothing is stored), or the backend's error.
    pub async fn push(&self, mut jobs: Vec<Job>) -> Result<Vec<JobHandle<B>>> {
        self.bounds.admit(&mut jobs)?;
        let mut per_task: Vec<(String, String, u64)> = Vec::new();
        for job in &jobs {
            match per_task
                .iter_mut()
                .find(|(q, t, _)| *q == job.queue && *t == job.task)
            {
                Some((_, _, n)) => *n += 1,
                None => per_task.push((job.queue.clone(), job.task.clone(), 1)),
            }
        }
        let ids = self.backend.enqueue(jobs, self.now()).await?;
        for (queue, task, n) in per_task {
            metrics::counter!("celeriac_jobs_enqueued_total", "queue" => queue, "task" => task)
                .increment(n);
        }
        Ok(ids.into_iter().map(|id| self.handle(id)).collect())
    }

    /// Enqueues a job for a task by name with a JSON payload, checking the name against
    /// `registry` (pass `None` to skip the check, for tasks only other processes know).
    pub async fn enqueue_json(
        &self,
        registry: Option<&Registry>,
        task: &str,
        args: &serde_json::Value,
        opts: JobOptions,
    ) -> Result<JobHandle<B>> {
        let defaults = match registry {
            Some(reg) => reg
                .get(task)
                .map(|def| def.options().clone())
                .ok_or_else(|| {
                    Error::config(
                        "task",
                        format!(
                            "unknown task `{task}`; registered tasks: {}",
                            reg.names().join(", ")
                        ),
                    )
                })?,
            None => TaskOptions::default(),
        };
        let job = opts.build(task, &defaults, args, self.now())?;
        let mut handles = self.push(vec![job]).await?;
        handles.pop().ok_or(Error::Closed)
    }

    /// A handle on an existing job.
    pub fn handle(&self, id: JobId) -> JobHandle<B> {
        JobHandle {
            id,
            backend: self.backend.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<B: Broker + ResultStore + WorkflowStore> Client<B> {
    /// Cancels a job: a waiting one never runs; a running one is asked to stop (its context's
    /// cancellation token fires within about a second) and ends as cancelled. A cancelled
    /// step of a workflow stops the workflow.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        cancel_job(&*self.backend, &self.bounds, id, self.now()).await
    }
}

/// Cancels one job and, when it was a workflow's step, ends the step (the workflow stops).
pub(crate) async fn cancel_job<B: Broker + ResultStore + WorkflowStore>(
    backend: &B,
    bounds: &Bounds,
    id: JobId,
    now: UnixMs,
) -> Result<CancelOutcome> {
    let report = backend.cancel(id, now).await?;
    if let Some(job) = &report.ended {
        end_step_within(backend, bounds, job, StepEnd::by_store(job), now).await?;
    }
    Ok(report.outcome)
}

/// Workflows start through a client, or anything that hands one out.
impl<C: AsClient> Starter for C
where
    C::Backend: WorkflowStore,
{
    type Backend = C::Backend;
    fn store(&self) -> &Arc<C::Backend> {
        self.client().backend()
    }
    fn clock(&self) -> &Arc<dyn Clock> {
        self.client().clock()
    }
    fn bounds(&self) -> Bounds {
        *self.client().bounds()
    }
}

/// Per-job overrides of a task's options.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// Use this id (for idempotent enqueueing from outside).
    pub id: Option<JobId>,
    /// Another queue.
    pub queue: Option<String>,
    /// Another priority.
    pub priority: Option<Priority>,
    /// Run no sooner than this long from now.
    pub delay: Option<Duration>,
    /// Run no sooner than this moment (wins over `delay`).
    pub eta: Option<UnixMs>,
    /// End as expired if not started within this long.
    pub expires_in: Option<Duration>,
    /// Total attempts.
    pub max_attempts: Option<u32>,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// The parent job, in a workflow.
    pub parent_id: Option<JobId>,
    /// The workflow's root job.
    pub root_id: Option<JobId>,
    /// Keep duplicates out while the key is held.
    pub unique: Option<Unique>,
}

impl JobOptions {
    /// Builds the job for `task` with `defaults` under these overrides.
    pub fn build<A: Serialize + ?Sized>(
        self,
        task: &str,
        defaults: &TaskOptions,
        args: &A,
        now: UnixMs,
    ) -> Result<Job> {
        let payload = defaults.encoding.encode(args)?;
        let mut job = Job::new(task, payload, now);
        if let Some(id) = self.id {
            job.id = id;
        }
        job.queue = self.queue.unwrap_or_else(|| defaults.queue.clone());
        job.encoding = defaults.encoding;
        job.priority = self.priority.unwrap_or(defaults.priority);
        job.max_attempts = self.max_attempts.unwrap_or(defaults.max_attempts);
        // A debounced job waits out its quiet period unless told otherwise.
        let debounce = match &self.unique {
            Some(Unique {
                lifetime: UniqueFor::Debounce(d),
                ..
            }) => Some(*d),
            _ => None,
        };
        job.run_at = match (self.eta, self.delay.or(debounce)) {
            (Some(eta), _) => eta,
            (None, Some(d)) => now.saturating_add(duration_ms(d)),
            (None, None) => now,
        };
        let expires = self.expires_in.or(defaults.expires);
        job.expires_at = expires.map(|d| job.run_at.saturating_add(duration_ms(d)));
        job.soft_time_limit = defaults.soft_time_limit;
        job.hard_time_limit = defaults.hard_time_limit;
        job.headers = self.headers;
        job.parent_id = self.parent_id;
        job.root_id = self.root_id;
        job.unique = self.unique;
        job.result_ttl = (!defaults.ignore_result).then_some(defaults.result_ttl);
        job.validate()?;
        Ok(job)
    }
}

/// A job of task `T` being prepared: `send_email::with(args).delay(..).priority(..).enqueue(&app)`.
#[must_use = "nothing is enqueued until `.enqueue(..)` is awaited"]
pub struct Enqueue<T: Task> {
    args: T::Args,
    opts: JobOptions,
    _task: PhantomData<fn() -> T>,
}

impl<T: Task> Enqueue<T> {
    /// A job of `T` with these arguments and the task's defaults.
    pub fn new(args: T::Args) -> Self {
        Self {
            args,
            opts: JobOptions::default(),
            _task: PhantomData,
        }
    }
    /// Run no sooner than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.opts.delay = Some(delay);
        self
    }
    /// Run no sooner than `at` (milliseconds since the epoch).
    pub fn eta(mut self, at: UnixMs) -> Self {
        self.opts.eta = Some(at);
        self
    }
    /// Another priority (0..=9, 9 most urgent).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.opts.priority = Some(priority);
        self
    }
    /// Another queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.opts.queue = Some(queue.into());
        self
    }
    /// End as expired if not started within `within` of its run time.
    pub fn expires_in(mut self, within: Duration) -> Self {
        self.opts.expires_in = Some(within);
        self
    }
    /// Total attempts for this job.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.opts.max_attempts = Some(attempts);
        self
    }
    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.opts.headers.insert(key.into(), value.into());
        self
    }
    /// Makes the job unique within its queue under `key` for `lifetime`: while the key is
    /// held, enqueueing returns the holder's handle instead of adding a job.
    pub fn unique(mut self, key: impl Into<String>, lifetime: UniqueFor) -> Self {
        self.opts.unique = Some(Unique {
            key: key.into(),
            lifetime,
        });
        self
    }
    /// Uses a chosen id.
    pub fn id(mut self, id: JobId) -> Self {
        self.opts.id = Some(id);
        self
    }
    /// The job this would enqueue, at time `now`.
    pub fn build(self, now: UnixMs) -> Result<Job> {
        self.opts.build(T::NAME, &T::options(), &self.args, now)
    }
    /// Enqueues it.
    pub async fn enqueue<C: AsClient>(self, to: &C) -> Result<JobHandle<C::Backend>> {
        let client = to.client();
        let job = self.build(client.now())?;
        let mut handles = client.push(vec![job]).await?;
        handles.pop().ok_or(Error::Closed)
    }
}

/// A handle on an enqueued job: its id, state and result.
pub struct JobHandle<B> {
    id: JobId,
    backend: Arc<B>,
    clock: Arc<dyn Clock>,
}

impl<B> Clone for JobHandle<B> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            backend: self.backend.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<B> std::fmt::Debug for JobHandle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobHandle({})", self.id)
    }
}

impl<B: Broker + ResultStore + WorkflowStore> JobHandle<B> {
    /// Cancels the job (see [`Client::cancel`]).
    pub async fn cancel(&self) -> Result<CancelOutcome> {
        // The error handlers a cancel enqueues take a short description of the failure.
        cancel_job(
            &*self.backend,
            &Bounds::default(),
            self.id,
            self.clock.now_ms(),
        )
        .await
    }
}

impl<B: ResultStore> JobHandle<B> {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Everything known about the job now.
    pub async fn info(&self) -> Result<JobInfo> {
        self.backend
            .get(self.id)
            .await?
            .ok_or_else(|| Error::NotFound(self.id.to_string()))
    }

    /// The job's state now.
    pub async fn state(&self) -> Result<JobState> {
        Ok(self.info().await?.state)
    }

    /// Waits until the job finishes (any terminal state), for at most `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Result<JobInfo> {
        self.backend.wait(self.id, timeout).await
    }
}
