//! Rust tasks registered under Celery names: [`CeleryTask`] and its [`CeleryTaskOptions`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use celeriac_core::retry::Backoff;
use celeriac_core::task::{Task, TaskContext, TaskError, TaskOptions};
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::args::CallArgs;

/// How a Celery task of this worker behaves, with Celery's defaults where Celery has them.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct CeleryTaskOptions {
    /// `max_retries`: retries allowed after the first run (`None`: unlimited). Celery's
    /// default is 3.
    pub max_retries: Option<u32>,
    /// `default_retry_delay` of Celery: the countdown of a retry the error does not time
    /// ([`TaskError::msg`] with `autoretry`). Used as the base of `backoff`.
    pub backoff: Backoff,
    /// Retry on a plain retryable [`TaskError::msg`] (Celery's `autoretry_for`); off by default:
    /// as in Celery, only an error that asks for it ([`TaskError::retry_after`]) retries.
    pub autoretry: bool,
    /// `soft_time_limit`, when the message gives none: the task's cancellation token fires.
    pub soft_time_limit: Option<Duration>,
    /// `time_limit`, when the message gives none: the task is dropped, FAILURE
    /// `TimeLimitExceeded`.
    pub hard_time_limit: Option<Duration>,
    /// `ignore_result`, when the message does not say.
    pub ignore_result: bool,
    /// `acks_late` for this task (`None`: the worker's setting).
    pub acks_late: Option<bool>,
}

impl Default for CeleryTaskOptions {
    fn default() -> Self {
        CeleryTaskOptions {
            max_retries: Some(3),
            backoff: Backoff {
                base: Duration::from_secs(180),
                cap: Duration::from_secs(180),
                jitter: false,
            },
            autoretry: false,
            soft_time_limit: None,
            hard_time_limit: None,
            ignore_result: false,
            acks_late: None,
        }
    }
}

impl CeleryTaskOptions {
    /// The options a Celeriac task declares: `max_attempts - 1` retries, its backoff, time
    /// limits and `ignore_result`.
    pub fn from_task_options(o: &TaskOptions) -> Self {
        CeleryTaskOptions {
            max_retries: Some(o.max_attempts.saturating_sub(1)),
            backoff: o.backoff,
            soft_time_limit: o.soft_time_limit,
            hard_time_limit: o.hard_time_limit,
            ignore_result: o.ignore_result,
            ..CeleryTaskOptions::default()
        }
    }

    /// Sets `max_retries` (`None`: unlimited).
    pub fn max_retries(mut self, n: Option<u32>) -> Self {
        self.max_retries = n;
        self
    }

    /// Retries plain retryable errors with `backoff`.
    pub fn autoretry(mut self, on: bool) -> Self {
        self.autoretry = on;
        self
    }

    /// Sets the default time limits.
    pub fn time_limits(mut self, hard: Option<Duration>, soft: Option<Duration>) -> Self {
        self.hard_time_limit = hard;
        self.soft_time_limit = soft;
        self
    }

    /// Sets the default `ignore_result`.
    pub fn ignore_result(mut self, on: bool) -> Self {
        self.ignore_result = on;
        self
    }

    /// Sets `acks_late` for this task.
    pub fn acks_late(mut self, on: bool) -> Self {
        self.acks_late = Some(on);
        self
    }
}

/// Why running a task gave no value.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The message's arguments do not fit the task's `Args` (Python: `TypeError`).
    Args(String),
    /// The task failed.
    Task(TaskError),
    /// The output does not serialize to JSON.
    Output(String),
}

type Handler =
    dyn Fn(TaskContext, CallArgs) -> BoxFuture<'static, Result<Value, CallError>> + Send + Sync;

/// A Rust task served under a Celery task name (`tasks.add`).
#[derive(Clone)]
pub struct CeleryTask {
    name: String,
    options: CeleryTaskOptions,
    handler: Arc<Handler>,
}

impl fmt::Debug for CeleryTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CeleryTask")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl CeleryTask {
    /// A Celeriac [`Task`] under the Celery name `name`, with options from
    /// [`Task::options`]. Its `Args` are bound from the message's `(args, kwargs)` (see
    /// [`CallArgs`]); its output is stored as JSON.
    pub fn of<T: Task>(name: impl Into<String>) -> CeleryTask {
        let options = CeleryTaskOptions::from_task_options(&T::options());
        CeleryTask::from_fn(name, options, T::run)
    }

    /// A task from a function (a closure may carry state).
    pub fn from_fn<A, O, F, Fut>(
        name: impl Into<String>,
        options: CeleryTaskOptions,
        f: F,
    ) -> CeleryTask
    where
        A: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(TaskContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, TaskError>> + Send + 'static,
    {
        let f = Arc::new(f);
        CeleryTask {
            name: name.into(),
            options,
            handler: Arc::new(move |ctx, args: CallArgs| {
                let f = f.clone();
                Box::pin(async move {
                    let args: A = args.bind().map_err(|e| CallError::Args(e.to_string()))?;
                    let out = f(ctx, args).await.map_err(CallError::Task)?;
                    serde_json::to_value(&out).map_err(|e| CallError::Output(e.to_string()))
                })
            }),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: CeleryTaskOptions) -> CeleryTask {
        self.options = options;
        self
    }

    /// The Celery task name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The options.
    pub fn options(&self) -> &CeleryTaskOptions {
        &self.options
    }

    pub(crate) fn call(
        &self,
        ctx: TaskContext,
        args: CallArgs,
    ) -> BoxFuture<'static, Result<Value, CallError>> {
        (self.handler)(ctx, args)
    }
}
