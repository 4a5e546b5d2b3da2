//! One job's run, in four phases: admit it (its breaker may defer it), execute its task under
//! its time limits and stop signals, turn how it ended into the attempt's outcome, and end its
//! workflow step when the job is done; the outcome then goes to the acknowledgement loop.

use super::ack::Done;
use super::loops::Slot;
use super::WorkerStats;
use crate::backend::{Broker, Claimed, Completion, LeaseRef, Outcome, ResultStore, WorkflowStore};
use crate::bounds::{truncate_text, Bounds, MAX_ERROR_BYTES};
use crate::breaker::{Admission, GuardPermit, Rejected, Verdict};
use crate::clock::{duration_ms, Clock, UnixMs};
use crate::error::{Error, Result};
use crate::history::Recorder;
use crate::job::{ErrorInfo, Job};
use crate::retry::Backoff;
use crate::task::{panic_message, ProgressSink, Registry, RunError, TaskContext, TaskDef};
use crate::workflow::{end_step_within, StepEnd, StepJob, FLOW_HEADER};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a cancelled task may take to stop after its token fires before its future is
/// dropped.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Progress reports of running tasks, written to the store.
pub(super) struct ProgressOver<B>(pub(super) Arc<B>);

impl<B: ResultStore> ProgressSink for ProgressOver<B> {
    fn report(
        &self,
        lease: crate::backend::LeaseRef,
        fraction: f64,
        message: Option<String>,
    ) -> BoxFuture<'static, Result<bool>> {
        let backend = self.0.clone();
        // Kept with the job like an error text, and bounded like one.
        let message = message.map(|m| truncate_text(m, MAX_ERROR_BYTES));
        Box::pin(async move { backend.set_progress(lease, fraction, message).await })
    }
}

/// The workflows whose steps a worker ends: [`end_step_within`] over the worker's store and
/// bounds, tried again on a transient error.
pub(super) trait FlowSink: Send + Sync + 'static {
    /// Ends `job`'s step with `end` (nothing for a job outside workflows).
    fn end<'a>(&'a self, job: StepJob<'a>, end: StepEnd, now: UnixMs) -> BoxFuture<'a, Result<()>>;
}

/// The [`FlowSink`] over a store, checking the jobs it enqueues against the bounds.
pub(super) struct FlowOver<B>(pub(super) Arc<B>, pub(super) Bounds);

impl<B: Broker + WorkflowStore> FlowSink for FlowOver<B> {
    fn end<'a>(&'a self, job: StepJob<'a>, end: StepEnd, now: UnixMs) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut delay = Duration::from_millis(50);
            let mut tries = 0;
            loop {
                match end_step_within(&*self.0, &self.1, job, end.clone(), now).await {
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

/// Everything one job's run needs, moved into its task.
pub(super) struct RunOne {
    pub(super) registry: Arc<Registry>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) stats: Arc<WorkerStats>,
    pub(super) progress: Arc<dyn ProgressSink>,
    pub(super) flow: Arc<dyn FlowSink>,
    pub(super) kill: CancellationToken,
    pub(super) abandon: CancellationToken,
    pub(super) done: mpsc::UnboundedSender<Done>,
    pub(super) release: mpsc::UnboundedSender<LeaseRef>,
    /// Fired when the job was cancelled by a user (as opposed to a time limit or shutdown).
    pub(super) stop: CancellationToken,
    /// How long after its last extension a lease is given up (for the reason recorded).
    pub(super) fence_window: Duration,
    /// The tally of attempts for the store's history.
    pub(super) history: Recorder,
    /// The largest result stored ([`Bounds::max_result_bytes`]).
    pub(super) max_result_bytes: usize,
}

/// How a task's run ended.
enum Ended {
    Ran(std::thread::Result<Result<Option<Vec<u8>>, RunError>>),
    HardLimit(Duration),
    Stopped,
    Killed,
    Abandoned,
    /// Given up by self-fencing and still running when its lease ended.
    Fenced,
}

impl Ended {
    /// What the run says about the partner behind the task's breaker: the task's own errors,
    /// panics and time limits are failures; a payload that does not decode or a stopped run
    /// says nothing.
    fn verdict(&self) -> Verdict {
        match self {
            Ended::Ran(Ok(Ok(_))) => Verdict::Success,
            Ended::Ran(Ok(Err(RunError::Task(_)))) | Ended::Ran(Err(_)) | Ended::HardLimit(_) => {
                Verdict::Failure
            }
            _ => Verdict::Ignore,
        }
    }
}

/// A finished execution: how it ended, and whether the worker gave the job up meanwhile (its
/// lease may be someone else's by now).
struct Execution {
    ended: Ended,
    given_up: bool,
}

/// The outcome of a failed attempt: another attempt after `delay` (the task's backoff when
/// `None`) while attempts are left, the dead letters once they are used up.
fn retry_or_dead(
    job: &Job,
    backoff: &Backoff,
    now: UnixMs,
    kind: &str,
    message: String,
    delay: Option<Duration>,
) -> Outcome {
    let attempt = job.attempts;
    if attempt < job.max_attempts {
        let delay = delay.unwrap_or_else(|| backoff.delay(attempt));
        Outcome::Retry {
            at: now.saturating_add(duration_ms(delay)),
            error: ErrorInfo::new(kind, message, attempt),
        }
    } else {
        Outcome::Dead {
            error: ErrorInfo::new(
                "retries_exhausted",
                format!("gave up after {attempt} attempts; last error ({kind}): {message}"),
                attempt,
            ),
        }
    }
}

/// Waits for a timer if there is one, forever otherwise.
async fn until(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

impl RunOne {
    /// Runs one claimed job and hands its outcome to the acknowledgement loop.
    pub(super) async fn run(
        self,
        claimed: Claimed,
        cancel: CancellationToken,
        fenced: oneshot::Receiver<Instant>,
        slot: Slot,
    ) {
        let Slot {
            run,
            unacked: permit,
        } = slot;
        let lease = claimed.lease();
        let Claimed { job, token, .. } = claimed;
        let started = self.clock.now_ms();
        self.count_start(&job, started);
        let attempt = job.attempts;
        let Some(def) = self.registry.get(&job.task).cloned() else {
            self.history
                .started(&lease.queue, &job.task, started, started - job.run_at);
            let outcome = self.unknown_task(&job).await;
            self.send(
                lease,
                outcome,
                attempt,
                permit,
                job.task,
                Some(Duration::ZERO),
            );
            return;
        };
        let breaker = match self.admit(&def).await {
            Ok(breaker) => breaker,
            Err((name, rejected)) => {
                let at = self.defer_until(name, &rejected, started);
                self.send(
                    lease,
                    Outcome::Deferred { at },
                    attempt,
                    permit,
                    job.task,
                    None,
                );
                return;
            }
        };
        self.history
            .started(&lease.queue, &job.task, started, started - job.run_at);
        let began = Instant::now();
        let ctx = TaskContext::new(
            job.id,
            token,
            &job.task,
            &job.queue,
            attempt,
            job.max_attempts,
            job.headers.clone(),
            cancel.clone(),
            Some(self.progress.clone()),
        );
        let execution = self.execute(&def, ctx, &job, &cancel, fenced, run).await;
        let now = self.clock.now_ms();
        // A cancelled job ends as cancelled, whatever its task returned once asked to stop.
        let cancelled = self.stop.is_cancelled();
        let backoff = def.options().backoff;
        let verdict = execution.ended.verdict();
        let given_up = execution.given_up;
        let Some((mut outcome, output)) =
            self.record(execution, cancelled, &job, &lease, &backoff, now)
        else {
            return;
        };
        if let Some(permit) = breaker {
            let verdict = if cancelled || given_up {
                Verdict::Ignore
            } else {
                verdict
            };
            permit.record(verdict).await;
        }
        log_outcome(&outcome, now);
        // What follows a step is enqueued before the job is acknowledged: a crash in between
        // runs the job again, and the ids of what follows do not change.
        if let Err(e) = self.end_step(&job, &outcome, output.as_deref(), now).await {
            warn!(error = %e, "could not continue the workflow");
            if matches!(outcome, Outcome::Succeeded { .. }) {
                outcome = retry_or_dead(
                    &job,
                    &backoff,
                    now,
                    "workflow",
                    format!("could not continue the workflow: {e}"),
                    None,
                );
            }
        }
        self.send(
            lease,
            outcome,
            attempt,
            permit,
            job.task,
            Some(began.elapsed()),
        );
    }

    /// Counts the attempt, and the wait of a first one.
    fn count_start(&self, job: &Job, started: UnixMs) {
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        if job.attempts == 1 {
            let waited = (started - job.run_at).max(0);
            self.stats.record_latency(waited);
            metrics::histogram!("celeriac_job_wait_seconds", "queue" => job.queue.clone())
                .record(waited as f64 / 1000.0);
        }
    }

    /// A job of a task this worker does not know goes to the dead letters, ending its
    /// workflow step.
    async fn unknown_task(&self, job: &Job) -> Outcome {
        let error = ErrorInfo::new(
            "unknown_task",
            format!("no task named `{}` is registered in this worker", job.task),
            job.attempts,
        );
        warn!(%error, "job dead-lettered");
        let outcome = Outcome::Dead { error };
        if let Err(e) = self
            .end_step(job, &outcome, None, self.clock.now_ms())
            .await
        {
            warn!(error = %e, "could not record the failure in its workflow");
        }
        outcome
    }

    /// Admission: a task behind an open breaker waits out the open period without using an
    /// attempt. `Err` names the breaker that refused.
    async fn admit<'d>(
        &self,
        def: &'d TaskDef,
    ) -> std::result::Result<Option<GuardPermit>, (&'d str, Rejected)> {
        let Some(name) = def.options().breaker.as_deref() else {
            return Ok(None);
        };
        match self.registry.get_guard(name).map(|g| g.admit()) {
            Some(Ok(Admission::Ready(permit))) => Ok(Some(permit)),
            // A half-open shared breaker: one of the store's probes, or wait.
            Some(Ok(Admission::Reserve(reserve))) => match reserve.await {
                Ok(permit) => Ok(Some(permit)),
                Err(rejected) => Err((name, rejected)),
            },
            Some(Err(rejected)) => Err((name, rejected)),
            // Checked when the worker starts: a task's breaker is registered.
            None => Ok(None),
        }
    }

    /// When a job its breaker refused may run: it goes back unrun, its attempt not counted.
    fn defer_until(&self, breaker: &str, rejected: &Rejected, started: UnixMs) -> UnixMs {
        let at = self
            .clock
            .now_ms()
            .saturating_add(duration_ms(rejected.retry_after));
        debug!(
            breaker,
            state = %rejected.state,
            retry_in_ms = at - started,
            "breaker open; job deferred"
        );
        at
    }

    /// Execution: runs the task until it ends, a time limit or a stop ends it, or the worker
    /// gives the job up and its lease runs out. The running slot is freed as it ends.
    async fn execute(
        &self,
        def: &TaskDef,
        ctx: TaskContext,
        job: &Job,
        cancel: &CancellationToken,
        mut fenced: oneshot::Receiver<Instant>,
        run: OwnedSemaphorePermit,
    ) -> Execution {
        // Whether the worker gave the job up, and whether it may still do so.
        let mut given_up = false;
        let mut watch_fence = true;
        // The task's future lives in this block only: it is dropped as soon as it ends.
        let ended = {
            let fut =
                AssertUnwindSafe(def.call(ctx, job.payload.clone(), job.encoding)).catch_unwind();
            tokio::pin!(fut);
            let soft = job.soft_time_limit;
            let hard = job.hard_time_limit;
            // Timers only for the limits a job has: most have none, and a timer inline would
            // make every job's task larger (and cache-line aligned) for nothing.
            let mut soft_sleep = soft.map(|d| Box::pin(tokio::time::sleep(d)));
            let mut hard_sleep = hard.map(|d| Box::pin(tokio::time::sleep(d)));
            let mut soft_armed = soft.is_some();
            let mut stop_grace: Option<Pin<Box<Sleep>>> = None;
            // Set when the worker gives the job up: the task may run until its lease ends.
            let mut lease_end: Option<Pin<Box<Sleep>>> = None;
            loop {
                tokio::select! {
                    r = &mut fut => break Ended::Ran(r),
                    _ = self.stop.cancelled(), if stop_grace.is_none() => {
                        info!("job cancelled; asking the task to stop");
                        cancel.cancel();
                        stop_grace = Some(Box::pin(tokio::time::sleep(STOP_GRACE)));
                    }
                    _ = until(&mut stop_grace), if stop_grace.is_some() => break Ended::Stopped,
                    _ = until(&mut soft_sleep), if soft_armed => {
                        soft_armed = false;
                        debug!("soft time limit reached; cancelling the task's token");
                        cancel.cancel();
                    }
                    _ = until(&mut hard_sleep), if hard.is_some() => break Ended::HardLimit(hard.unwrap_or_default()),
                    end = &mut fenced, if watch_fence => {
                        watch_fence = false;
                        // An error only means the job was never given up.
                        if let Ok(end) = end {
                            debug!("lease not extended in time; asking the task to stop");
                            cancel.cancel();
                            given_up = true;
                            lease_end = Some(Box::pin(tokio::time::sleep_until(end)));
                        }
                    }
                    _ = until(&mut lease_end), if lease_end.is_some() => break Ended::Fenced,
                    // Either way the future is dropped; the token tells blocking sections and
                    // spawned helpers holding it to stop too.
                    _ = self.kill.cancelled() => {
                        cancel.cancel();
                        break Ended::Killed;
                    }
                    _ = self.abandon.cancelled() => {
                        cancel.cancel();
                        break Ended::Abandoned;
                    }
                }
            }
        };
        drop(run);
        // Given up while it ran (or as it ended): its lease may be someone else's by now.
        given_up = given_up || (watch_fence && fenced.try_recv().is_ok());
        Execution { ended, given_up }
    }

    /// The outcome: how the attempt ended as the store records it, with the task's output
    /// when the job is a workflow step (its continuation takes it, kept or not). `None` when
    /// nothing is recorded: the worker was killed, or handed the lease back on shutdown.
    fn record(
        &self,
        execution: Execution,
        cancelled: bool,
        job: &Job,
        lease: &LeaseRef,
        backoff: &Backoff,
        now: UnixMs,
    ) -> Option<(Outcome, Option<Vec<u8>>)> {
        let retry_or_dead = |kind: &str, message: String, delay: Option<Duration>| {
            retry_or_dead(job, backoff, now, kind, message, delay)
        };
        let attempt = job.attempts;
        let mut output = None;
        let outcome = match execution.ended {
            Ended::Killed => return None,
            Ended::Abandoned if !cancelled => {
                let _ = self.release.send(lease.clone());
                return None;
            }
            _ if cancelled => Outcome::Cancelled,
            // Whatever the task returned once asked to stop, the attempt did not finish.
            _ if execution.given_up => retry_or_dead(
                "lease_fenced",
                format!(
                    "the worker could not extend the lease within {:?} and stopped the attempt \
                     before the lease could run out",
                    self.fence_window
                ),
                Some(Duration::ZERO),
            ),
            Ended::Stopped | Ended::Abandoned | Ended::Fenced => Outcome::Cancelled,
            // The job's own retention decides whether a result is kept.
            Ended::Ran(Ok(Ok(result))) => {
                if job.headers.contains_key(FLOW_HEADER) {
                    output.clone_from(&result);
                }
                match job.result_ttl.and(result) {
                    Some(r) if r.len() > self.max_result_bytes => {
                        output = None;
                        Outcome::Failed {
                            error: ErrorInfo::new(
                                "result_too_large",
                                format!(
                                    "the result of task `{}` is {} bytes, over \
                                     max_result_bytes ({}); it was not stored",
                                    job.task,
                                    r.len(),
                                    self.max_result_bytes
                                ),
                                attempt,
                            ),
                        }
                    }
                    result => Outcome::Succeeded { result },
                }
            }
            Ended::Ran(Ok(Err(RunError::Decode(msg)))) => Outcome::Dead {
                error: ErrorInfo::new(
                    "undecodable_payload",
                    format!(
                        "payload does not decode into the arguments of `{}`: {msg}",
                        job.task
                    ),
                    attempt,
                ),
            },
            Ended::Ran(Ok(Err(RunError::Task(e)))) if e.is_fatal() => Outcome::Failed {
                error: ErrorInfo::new("error", e.message(), attempt),
            },
            Ended::Ran(Ok(Err(RunError::Task(e)))) => {
                retry_or_dead("error", e.message().to_string(), e.requested_delay())
            }
            Ended::Ran(Err(panic)) => retry_or_dead(
                "panic",
                format!("task panicked: {}", panic_message(panic)),
                None,
            ),
            Ended::HardLimit(limit) => retry_or_dead(
                "time_limit",
                format!("hard time limit of {limit:?} exceeded"),
                None,
            ),
        };
        Some((outcome, output))
    }

    /// Ends the job's workflow step when the attempt ended the job (nothing for a job outside
    /// workflows, or one that goes on).
    async fn end_step(
        &self,
        job: &Job,
        outcome: &Outcome,
        output: Option<&[u8]>,
        now: UnixMs,
    ) -> Result<()> {
        if !job.headers.contains_key(FLOW_HEADER) {
            return Ok(());
        }
        match StepEnd::after_attempt(job, outcome, output) {
            Some(end) => self.flow.end(job.into(), end, now).await,
            None => Ok(()),
        }
    }

    /// Hands the attempt's outcome to the acknowledgement loop.
    fn send(
        &self,
        lease: LeaseRef,
        outcome: Outcome,
        attempt: u32,
        permit: OwnedSemaphorePermit,
        task: String,
        ran: Option<Duration>,
    ) {
        let _ = self.done.send(Done {
            completion: Completion { lease, outcome },
            attempt,
            permit,
            task,
            ran,
        });
    }
}

fn log_outcome(outcome: &Outcome, now: UnixMs) {
    match outcome {
        Outcome::Succeeded { .. } => debug!("job succeeded"),
        Outcome::Retry { error, at } => {
            debug!(%error, retry_in_ms = at - now, "attempt failed; will retry")
        }
        Outcome::Failed { error } => warn!(%error, "job failed"),
        Outcome::Dead { error } => warn!(%error, "job dead-lettered"),
        Outcome::Cancelled => info!("job cancelled"),
        Outcome::Deferred { .. } => debug!("job deferred"),
    }
}
