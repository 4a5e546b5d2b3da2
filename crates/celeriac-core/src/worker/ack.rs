//! Acknowledgements: finished attempts go to the store in batches. Transient errors are
//! retried with backoff; an outcome the store refuses for good ends its job as failed with the
//! store's reason, so the rest of the batch and the slot go on.

use super::{Inflight, WorkerStats};
use crate::backend::{Broker, Completion, Event, EventLog, Outcome};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind};
use crate::history::Recorder;
use crate::job::ErrorInfo;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The error kind of a job whose outcome the store refused to record.
pub(super) const REFUSED_KIND: &str = "outcome_refused";

/// A finished attempt on its way to the store, with its place in the acknowledgement backlog.
pub(super) struct Done {
    /// What to record.
    pub(super) completion: Completion,
    /// The attempt (1-based), for an error record that replaces a refused outcome.
    pub(super) attempt: u32,
    /// Freed once the completion is recorded (or given up on an immediate stop).
    pub(super) permit: OwnedSemaphorePermit,
    /// The job's task, for the history and the metrics.
    pub(super) task: String,
    /// How long the attempt ran; `None` for one that never ran (deferred).
    pub(super) ran: Option<Duration>,
}

/// Records finished attempts in batches until every sender is gone.
pub(super) async fn ack_loop<B: Broker + EventLog>(
    backend: Arc<B>,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::UnboundedReceiver<Done>,
    inflight: Inflight,
    stats: Arc<WorkerStats>,
    history: Recorder,
    kill: CancellationToken,
) {
    const MAX_BATCH: usize = 1024;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first.completion];
        let mut attempts = vec![first.attempt];
        let mut permits = vec![first.permit];
        let mut rans = vec![(first.task, first.ran)];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(d) => {
                    batch.push(d.completion);
                    attempts.push(d.attempt);
                    permits.push(d.permit);
                    rans.push((d.task, d.ran));
                }
                Err(_) => break,
            }
        }
        let applied = record(&*backend, &*clock, &mut batch, &attempts, &kill).await;
        drop(permits);
        if let Ok(mut map) = inflight.lock() {
            for (c, _) in batch.iter().zip(&applied).filter(|(_, a)| a.is_some()) {
                if map
                    .get(&c.lease.id)
                    .is_some_and(|r| r.token == c.lease.token)
                {
                    map.remove(&c.lease.id);
                }
            }
        }
        let mut events = Vec::new();
        let mut counts = Counts::default();
        let now = clock.now_ms();
        history.ended_all(
            now,
            batch
                .iter()
                .zip(&applied)
                .zip(&rans)
                .filter(|((_, ok), _)| **ok == Some(true))
                .filter_map(|((c, _), (task, ran))| {
                    ran.map(|r| (&c.lease.queue, task.as_str(), &c.outcome, r))
                }),
        );
        for ((c, ok), (task, ran)) in batch.iter().zip(applied).zip(&rans) {
            let Some(ok) = ok else { continue };
            if ok {
                if let Some(e) = job_event(c, now) {
                    events.push(e);
                }
            }
            let outcome = if !ok {
                stats.stale.fetch_add(1, Ordering::Relaxed);
                "stale"
            } else {
                let (counter, name) = match c.outcome {
                    Outcome::Succeeded { .. } => (&stats.succeeded, "succeeded"),
                    Outcome::Retry { .. } => (&stats.retried, "retried"),
                    Outcome::Failed { .. } => (&stats.failed, "failed"),
                    Outcome::Dead { .. } => (&stats.dead, "dead"),
                    Outcome::Cancelled => (&stats.cancelled, "cancelled"),
                    Outcome::Deferred { .. } => (&stats.deferred, "deferred"),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                name
            };
            counts.add(&c.lease.queue, task, outcome, *ran);
        }
        counts.emit();
        if !events.is_empty() {
            if let Err(e) = backend.append(events).await {
                debug!(error = %e, "could not record the events of failed jobs");
            }
        }
    }
}

/// The attempts of one batch per queue, task and outcome, and run times per queue and task, so
/// the metrics registry is reached once per distinct label set of a batch, not once per job.
#[derive(Default)]
struct Counts<'a> {
    attempts: HashMap<(&'a str, &'a str, &'static str), u64>,
    runs: HashMap<(&'a str, &'a str), Vec<f64>>,
}

impl<'a> Counts<'a> {
    fn add(&mut self, queue: &'a str, task: &'a str, outcome: &'static str, ran: Option<Duration>) {
        *self.attempts.entry((queue, task, outcome)).or_default() += 1;
        if let Some(ran) = ran {
            self.runs
                .entry((queue, task))
                .or_default()
                .push(ran.as_secs_f64());
        }
    }

    fn emit(self) {
        for ((queue, task, outcome), n) in self.attempts {
            metrics::counter!(
                "celeriac_job_attempts_total",
                "queue" => queue.to_string(),
                "task" => task.to_string(),
                "outcome" => outcome
            )
            .increment(n);
        }
        for ((queue, task), runs) in self.runs {
            let h = metrics::histogram!(
                "celeriac_job_run_seconds",
                "queue" => queue.to_string(),
                "task" => task.to_string()
            );
            for r in runs {
                h.record(r);
            }
        }
    }
}

/// The event of a job that ended badly (failed, dead, cancelled), if it did.
fn job_event(c: &Completion, now: crate::clock::UnixMs) -> Option<Event> {
    let (kind, error) = match &c.outcome {
        Outcome::Failed { error } => ("job.failed", Some(error)),
        Outcome::Dead { error } => ("job.dead", Some(error)),
        Outcome::Cancelled => ("job.cancelled", None),
        _ => return None,
    };
    let mut e = Event::job_ended(kind, now, c.lease.id, error, "cancelled while running");
    e.queue = Some(c.lease.queue.to_string());
    Some(e)
}

/// An error retrying cannot cure ([`ErrorKind::GiveUp`]).
fn is_permanent(e: &Error) -> bool {
    e.kind() == ErrorKind::GiveUp
}

/// Records `batch`: for each completion, whether the store applied it (`false`: its lease
/// had moved on), or `None` if an immediate stop came first.
///
/// Transient errors are retried with backoff (up to 5 s apart). A batch the store refuses
/// for good is split in halves until the refused completions stand alone; each of those is
/// replaced by a failure carrying the store's reason (which the caller then counts). If the
/// store refuses even that failure, the fault is the store's, not the outcome's: the original
/// goes back and is retried with backoff, with everything after it.
async fn record<B: Broker>(
    backend: &B,
    clock: &dyn Clock,
    batch: &mut [Completion],
    attempts: &[u32],
    kill: &CancellationToken,
) -> Vec<Option<bool>> {
    let mut applied = vec![None; batch.len()];
    let mut originals: Vec<Option<Outcome>> = vec![None; batch.len()];
    // Disjoint ranges, always taken from the left: what is left is one contiguous tail.
    let mut todo: Vec<Range<usize>> = Vec::new();
    todo.push(0..batch.len());
    let mut delay = Duration::from_millis(50);
    let mut splitting = false;
    while let Some(range) = todo.pop() {
        let part = batch[range.clone()].to_vec();
        let e = match backend.complete(part, clock.now_ms()).await {
            Ok(a) => {
                for (i, ok) in range.zip(a) {
                    applied[i] = Some(ok);
                }
                delay = Duration::from_millis(50);
                continue;
            }
            Err(e) => e,
        };
        let i = range.start;
        if is_permanent(&e) && range.len() > 1 {
            if !splitting {
                splitting = true;
                warn!(
                    error = %e,
                    jobs = range.len(),
                    "the store refused a batch of acknowledgements; recording it in parts to \
                     find the refused outcomes"
                );
            }
            let mid = i + range.len() / 2;
            todo.push(mid..range.end);
            todo.push(i..mid);
            continue;
        }
        if is_permanent(&e) && originals[i].is_none() {
            let c = &mut batch[i];
            warn!(
                error = %e,
                job = %c.lease.id,
                "the store refused to record this job's outcome; it ends failed with the reason"
            );
            let error = ErrorInfo::new(
                REFUSED_KIND,
                format!(
                    "the store refused to record the {} of this attempt: {e}",
                    describe(&c.outcome)
                ),
                attempts.get(i).copied().unwrap_or(0),
            );
            originals[i] = Some(std::mem::replace(&mut c.outcome, Outcome::Failed { error }));
            todo.push(range);
            continue;
        }
        if is_permanent(&e) {
            if let Some(original) = originals[i].take() {
                batch[i].outcome = original;
            }
        }
        warn!(
            error = %e,
            jobs = batch.len() - i,
            "acknowledging failed; retrying in {delay:?}"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = kill.cancelled() => return applied,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
        splitting = false;
        todo.clear();
        todo.push(i..batch.len());
    }
    applied
}

/// What an outcome records, for the reason of a refusal.
fn describe(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded { .. } => "result",
        Outcome::Retry { .. } => "failure (to retry)",
        Outcome::Failed { .. } => "failure",
        Outcome::Dead { .. } => "dead-lettering",
        Outcome::Cancelled => "cancellation",
        Outcome::Deferred { .. } => "deferral",
    }
}
