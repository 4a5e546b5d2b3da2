//! How a workflow runs: each job carries its continuation (a [`Link`] in its
//! [`FLOW_HEADER`]), and when a step ends, [`end_step`] enqueues what follows it, arrives at
//! its join, or fails the workflow.

use super::build::{invalid_args, StepArgs};
use super::{Flow, Step, DEFAULT_WORKFLOW_TTL, FLOW_HEADER};
use crate::backend::{Broker, EndedJob, JoinArrival, JoinInput, JoinStatus, Outcome};
use crate::backend::{WorkflowEnd, WorkflowStore};
use crate::bounds::Bounds;
use crate::clock::UnixMs;
use crate::error::{Error, Result};
use crate::job::{ErrorInfo, Job, JobId, JobState, Priority};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// What runs after a job, carried in its [`FLOW_HEADER`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Link {
    /// The workflow's id.
    workflow: JobId,
    /// What follows, innermost last.
    stack: Vec<Frame>,
}

/// One step of a continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Frame {
    /// Start this part with the output.
    Then(Flow),
    /// Arrive at a join as member `index` of `total`.
    Join { id: JobId, index: u32, total: u32 },
    /// On failure, enqueue this handler.
    Catch(Step),
}

impl Step {
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

/// A job as its workflow sees it: what [`end_step`] needs to know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepJob<'a> {
    /// The job's id.
    pub id: JobId,
    /// Its task.
    pub task: &'a str,
    /// Its [`FLOW_HEADER`]: `None` outside workflows.
    pub flow: Option<&'a str>,
}

impl<'a> From<&'a Job> for StepJob<'a> {
    fn from(job: &'a Job) -> Self {
        StepJob {
            id: job.id,
            task: &job.task,
            flow: job.headers.get(FLOW_HEADER).map(String::as_str),
        }
    }
}

impl<'a> From<&'a EndedJob> for StepJob<'a> {
    fn from(job: &'a EndedJob) -> Self {
        StepJob {
            id: job.id,
            task: &job.task,
            flow: job.flow.as_deref(),
        }
    }
}

/// How a workflow step ended, for its continuation.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEnd {
    /// With this output.
    Output(Value),
    /// With this failure, described for people.
    Failed(String),
}

impl StepEnd {
    /// A step whose job ended `state` (failed, dead or cancelled), with the error recorded
    /// for it if any: a failure naming the step and its job.
    pub fn ended(job: StepJob<'_>, state: JobState, error: Option<&ErrorInfo>) -> StepEnd {
        let (task, id, state) = (job.task, job.id, state.as_str());
        StepEnd::Failed(match error {
            Some(e) => format!("step `{task}` (job {id}) ended {state}: {e}"),
            None => format!("step `{task}` (job {id}) ended {state}"),
        })
    }

    /// A step a store ended by itself: reaped, or cancelled while it waited.
    pub fn by_store(job: &EndedJob) -> StepEnd {
        StepEnd::ended(job.into(), job.state, job.error.as_ref())
    }

    /// How an attempt ended its step, from the attempt's `outcome` and `output` (the task's
    /// return value in the job's encoding, kept even when the job keeps no result): the
    /// output of a success, a failure for a job that failed, went dead or was cancelled, and
    /// `None` while the job goes on (a retry, a deferral).
    pub fn after_attempt(job: &Job, outcome: &Outcome, output: Option<&[u8]>) -> Option<StepEnd> {
        let (state, error) = match outcome {
            Outcome::Succeeded { .. } => {
                let value = match output {
                    Some(bytes) => job.encoding.decode(bytes),
                    None => Ok(Value::Null),
                };
                return Some(match value {
                    Ok(v) => StepEnd::Output(v),
                    Err(e) => StepEnd::Failed(format!(
                        "the output of step `{}` (job {}) does not decode: {e}",
                        job.task, job.id
                    )),
                });
            }
            Outcome::Failed { error } => (JobState::Failed, Some(error)),
            Outcome::Dead { error } => (JobState::Dead, Some(error)),
            Outcome::Cancelled => (JobState::Cancelled, None),
            Outcome::Retry { .. } | Outcome::Deferred { .. } => return None,
        };
        Some(StepEnd::ended(job.into(), state, error))
    }
}

/// The end of a workflow step: a job that ended (succeeded, failed for good, went dead,
/// was cancelled) continues its workflow or fails it. On an output, what follows the step is
/// enqueued (or its join arrived at, or the workflow finished); on a failure, the error
/// handlers around the step are enqueued, its joins fail, and the workflow ends failed. Does
/// nothing for a job outside workflows.
///
/// Whoever ends a step calls this once: the worker after an attempt (and for a task it does
/// not know), the reaper for the jobs a reap ended, and a cancel for the job it ended.
///
/// The jobs it enqueues are checked against the default [`Bounds`]; see [`end_step_within`].
///
/// # Errors
/// A bad [`FLOW_HEADER`] ([`Error::Codec`]), or the store's errors: every part is idempotent,
/// so the caller may call again.
pub async fn end_step<'a, B: Broker + WorkflowStore>(
    store: &B,
    job: impl Into<StepJob<'a>>,
    end: StepEnd,
    now: UnixMs,
) -> Result<()> {
    end_step_within(store, &Bounds::default(), job, end, now).await
}

/// [`end_step`], checking the jobs it enqueues against `bounds`: a step whose output would
/// make the next job too large fails the workflow, naming the bound.
///
/// # Errors
/// As [`end_step`].
pub async fn end_step_within<'a, B: Broker + WorkflowStore>(
    store: &B,
    bounds: &Bounds,
    job: impl Into<StepJob<'a>>,
    end: StepEnd,
    now: UnixMs,
) -> Result<()> {
    let job = job.into();
    let Some(text) = job.flow else {
        return Ok(());
    };
    let link: Link = serde_json::from_str(text)
        .map_err(|e| Error::Codec(format!("bad `{FLOW_HEADER}` header: {e}")))?;
    let mut run = Run::new(store, link.workflow, now).within(*bounds);
    match end {
        StepEnd::Output(out) => {
            if let Err(e) = run
                .advance(out, link.stack.clone(), job.id, "n".to_string())
                .await
            {
                // A problem of the definition met at run time (a map over something that is
                // not a list, arguments that do not encode): the workflow fails, naming it.
                if matches!(e, Error::Config { .. } | Error::Codec(_)) {
                    let mut run = Run::new(store, link.workflow, now).within(*bounds);
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
pub(super) struct Run<'a, B> {
    backend: &'a B,
    workflow: JobId,
    now: UnixMs,
    jobs: Vec<Job>,
    bounds: Bounds,
}

impl<'a, B: Broker + WorkflowStore> Run<'a, B> {
    pub(super) fn new(backend: &'a B, workflow: JobId, now: UnixMs) -> Self {
        Self {
            backend,
            workflow,
            now,
            jobs: Vec::new(),
            bounds: Bounds::default(),
        }
    }

    /// Checks the jobs it enqueues against `bounds`.
    pub(super) fn within(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// Adds a job to enqueue, once it is within the bounds: a job over them is an
    /// [`Error::Config`], which fails the workflow naming the bound.
    fn push(&mut self, job: Job) -> Result<()> {
        self.bounds.check(&job)?;
        self.jobs.push(job);
        Ok(())
    }

    pub(super) async fn flush(mut self) -> Result<()> {
        if !self.jobs.is_empty() {
            // The steps that follow continue the trace of the one that ended (or of the
            // workflow's start).
            self.bounds.admit(&mut self.jobs)?;
            self.backend.enqueue(self.jobs, self.now).await?;
        }
        Ok(())
    }

    /// Starts `flow` with `input`, followed by `stack`; ids derive from `seed` and `path`.
    pub(super) fn start<'b>(
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
                    self.push(job)
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
        job: StepJob<'_>,
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
                    self.push(handler_job)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::test_tasks::Double;

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
