//! One message, from the moment it is taken until it is acknowledged: decoding (bad input to
//! the dead letters), revoked and expired checks, holding a future ETA, running the task
//! under its time limits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use celeriac_core::job::JobId;
use celeriac_core::task::{panic_message, TaskContext};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::args::CallArgs;
use super::builder::Config;
use super::dead_letter::{DeadLetter, DeadLetterSink};
use super::exception::{exception_of, exception_of_message, traceback};
use super::finish::Outcome;
use super::handle::{Shared, TaskInHand};
use super::task::{CallError, CeleryTask};
use super::KombuBroker;
use crate::broker::Delivery;
use crate::protocol::{Envelope, ProtocolError, TaskMessage};
use crate::results::{ExceptionInfo, ResultBackend, ResultMeta};

/// Everything a message's handling needs.
pub(crate) struct Ctx {
    pub broker: KombuBroker,
    pub backend: ResultBackend,
    pub config: Arc<Config>,
    pub tasks: Arc<HashMap<String, CeleryTask>>,
    pub dead: Arc<dyn DeadLetterSink>,
    pub shared: Arc<Shared>,
    /// Where task events go (`None`: events off).
    pub events: Option<crate::events::EventSender>,
}

/// A decoded message of a registered task.
pub(crate) struct Job {
    pub delivery: Delivery,
    pub envelope: Envelope,
    pub msg: TaskMessage,
    pub task: CeleryTask,
    /// Already acknowledged (`acks_late = false`).
    pub acked: bool,
    /// Fires when the task is revoked.
    pub revoke: CancellationToken,
    /// Keeps it listed in the handle while it lives.
    _held: HeldGuard,
}

/// Removes a job from the tasks in hand when it is done with, whatever the path.
struct HeldGuard {
    shared: Arc<Shared>,
    tag: String,
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.shared.release(&self.tag);
    }
}

impl Job {
    pub fn ignore_result(&self) -> bool {
        self.msg
            .headers
            .ignore_result
            .unwrap_or(self.task.options().ignore_result)
    }
}

/// Sleeps until `at` by the fleet's clock, looking again at least every 10 s (a new reading
/// of the broker's clock may move it).
async fn sleep_until_fleet(shared: &Shared, at: DateTime<Utc>) {
    loop {
        let Ok(left) = (at - shared.now()).to_std() else {
            return;
        };
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(Duration::from_secs(10))).await;
    }
}

fn header_text(map: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    map.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

impl Ctx {
    /// Handles one taken message to its end.
    pub async fn handle(self: Arc<Self>, delivery: Delivery, permit: OwnedSemaphorePermit) {
        let envelope = match Envelope::decode(&delivery.raw) {
            Ok(e) => e,
            Err(e) => {
                let reason = format!("undecodable envelope: {e}");
                self.bury(&delivery, None, None, "undecodable_envelope", reason)
                    .await;
                return;
            }
        };
        let text = |k: &str| {
            envelope
                .headers
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let msg = match TaskMessage::decode(&envelope) {
            Ok(m) => m,
            Err(e) => {
                let kind = if matches!(e, ProtocolError::RefusedContentType { .. }) {
                    "refused_content_type"
                } else {
                    "undecodable_message"
                };
                let (task, id) = (text("task"), text("id"));
                self.bury(&delivery, task, id, kind, e.to_string()).await;
                return;
            }
        };
        let Some(task) = self.tasks.get(&msg.headers.task).cloned() else {
            // As a Python worker does: FAILURE NotRegistered, so the client's get() raises.
            let h = &msg.headers;
            let exc = ExceptionInfo::not_registered(&h.task);
            let mut meta = ResultMeta::new(&h.id, crate::results::State::Failure, exc.to_json());
            meta.group_id = h.group.clone();
            meta.parent_id = h.parent_id.clone();
            if let Err(e) = self.backend.store(&meta).await {
                tracing::warn!(error = %e, task_id = %h.id, "could not store NotRegistered");
            }
            // As Python's mark_as_failure: the rest of the chain, the chord, the errbacks.
            self.fail_workflow(&msg, &meta).await;
            let mut known: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
            known.sort_unstable();
            let reason = format!(
                "unknown task {:?}: not registered in this worker (registered: {})",
                h.task,
                known.join(", ")
            );
            let (name, id) = (Some(h.task.clone()), Some(h.id.clone()));
            self.bury(&delivery, name, id, "unknown_task", reason).await;
            return;
        };
        let info = envelope
            .properties
            .delivery_info
            .clone()
            .unwrap_or_default();
        let revoke = self.shared.hold(TaskInHand {
            task_id: msg.headers.id.clone(),
            name: msg.headers.task.clone(),
            args: msg.args.clone(),
            kwargs: msg.kwargs.clone(),
            queue: delivery.queue.clone(),
            exchange: info.exchange,
            routing_key: info.routing_key,
            priority: delivery.priority,
            redelivered: delivery.redelivered,
            delivery_tag: delivery.delivery_tag.clone(),
            eta: msg.headers.eta.filter(|eta| *eta > self.shared.now()),
            started_at: None,
            acknowledged: false,
        });
        if let Some(ev) = &self.events {
            super::notify::received(ev, &msg);
        }
        let held = HeldGuard {
            shared: self.shared.clone(),
            tag: delivery.delivery_tag.clone(),
        };
        let job = Job {
            delivery,
            envelope,
            msg,
            task,
            acked: false,
            revoke,
            _held: held,
        };
        self.schedule(job, permit).await;
    }

    /// Records a message as a dead letter, then acknowledges it. If it cannot be recorded it
    /// stays un-acknowledged (no longer kept fresh): a sweep gives it back later.
    async fn bury(
        &self,
        delivery: &Delivery,
        task: Option<String>,
        task_id: Option<String>,
        kind: &'static str,
        reason: String,
    ) {
        tracing::error!(queue = %delivery.queue, ?task, ?task_id, kind, %reason, "dead letter");
        if let (Some(ev), Some(id)) = (&self.events, &task_id) {
            ev.task_rejected(id, false);
        }
        let letter = DeadLetter {
            queue: delivery.queue.clone(),
            task,
            task_id,
            kind,
            reason,
            raw: delivery.raw.clone(),
        };
        match self.dead.record(letter).await {
            Ok(()) => self.ack(&delivery.delivery_tag).await,
            Err(e) => {
                tracing::error!(error = %e, "could not record a dead letter; the message stays unacknowledged for a sweep");
                self.shared.untrack(&delivery.delivery_tag);
            }
        }
    }

    pub async fn ack(&self, tag: &str) {
        if let Err(e) = self.broker.ack(tag).await {
            tracing::warn!(error = %e, tag, "ack failed; the message may run again after a sweep");
        }
        self.shared.untrack(tag);
    }

    /// Gives a message back to the front of its queue (shutdown).
    async fn give_back(&self, tag: &str) {
        if let Err(e) = self.broker.requeue(tag).await {
            tracing::warn!(error = %e, tag, "could not give a message back; a sweep will");
        }
        self.shared.untrack(tag);
    }

    /// Revoked/expired checks, the ETA hold, a slot to run in.
    async fn schedule(self: Arc<Self>, job: Job, permit: OwnedSemaphorePermit) {
        if self.discard_if_revoked(&job).await {
            return;
        }
        let tag = job.delivery.delivery_tag.clone();
        let shared = self.shared.clone();
        let mut _prefetch = Some(permit);
        if let Some(eta) = job.msg.headers.eta.filter(|eta| *eta > shared.now()) {
            if !shared.hold_eta(self.config.eta_hold_limit) {
                tracing::warn!(task_id = %job.msg.headers.id, "ETA hold full; message goes to the back of its queue");
                if let Err(e) = self.broker.requeue_back(&tag).await {
                    tracing::warn!(error = %e, "could not give an ETA message back; a sweep will");
                }
                shared.untrack(&tag);
                // Keeps its prefetch slot a moment: no spinning on a queue of future ETAs.
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
            // Held ETA messages do not count against prefetch (as Celery raises its limit);
            // their unacked scores are kept fresh like running ones.
            _prefetch = None;
            let woke = tokio::select! {
                () = sleep_until_fleet(&shared, eta) => true,
                // Revoked while held: discarded below.
                () = job.revoke.cancelled() => true,
                () = shared.shutdown.cancelled() => false,
            };
            shared.release_eta();
            if !woke {
                self.give_back(&tag).await;
                return;
            }
            if self.discard_if_revoked(&job).await {
                return;
            }
        }
        let exec = tokio::select! {
            p = shared.exec.clone().acquire_owned() => p,
            () = shared.shutdown.cancelled() => {
                self.give_back(&tag).await;
                return;
            }
        };
        let Ok(_exec) = exec else {
            self.give_back(&tag).await;
            return;
        };
        // Revoked while it waited for a slot.
        if self.discard_if_revoked(&job).await {
            return;
        }
        self.execute(job).await;
    }

    /// Expired or revoked: REVOKED, acknowledged. Returns whether it was.
    async fn discard_if_revoked(&self, job: &Job) -> bool {
        let h = &job.msg.headers;
        let reason = if self.shared.is_revoked(&h.id) {
            "revoked"
        } else if h.expires.is_some_and(|x| x <= self.shared.now()) {
            "expired"
        } else {
            return false;
        };
        tracing::info!(task_id = %h.id, reason, "task discarded");
        let outcome = Outcome::Revoked(reason.to_owned());
        let note = super::notify::OutcomeEvent::of(&outcome, 0.0);
        self.conclude(job, outcome).await;
        if let Some(ev) = &self.events {
            note.send(ev, &h.id);
        }
        true
    }

    /// Runs the task under its time limits, then records the outcome.
    async fn execute(&self, mut job: Job) {
        let h = job.msg.headers.clone();
        let tag = job.delivery.delivery_tag.clone();
        let opts = job.task.options().clone();
        if !opts.acks_late.unwrap_or(self.config.acks_late) {
            self.ack(&tag).await;
            job.acked = true;
            self.shared.update(&tag, |t| t.acknowledged = true);
        }
        if self.config.track_started && !job.ignore_result() {
            let started = ResultMeta::started(&h.id, std::process::id(), &self.config.hostname);
            if let Err(e) = self.backend.store(&self.meta(&job, started)).await {
                tracing::warn!(error = %e, task_id = %h.id, "could not store STARTED");
            }
        }
        self.shared
            .update(&tag, |t| t.started_at = Some(self.shared.now()));
        self.shared.count_started(&h.task);
        if let Some(ev) = &self.events {
            ev.task_accepted();
            ev.task_started(&h.id);
        }
        let began = std::time::Instant::now();
        let revoke = job.revoke.clone();
        let cancel = CancellationToken::new();
        let max_attempts = opts.max_retries.map_or(u32::MAX, |m| m.saturating_add(1));
        let ctx = TaskContext::new(
            h.id.parse::<JobId>().unwrap_or_default(),
            0,
            &h.task,
            &job.delivery.queue,
            h.retries.saturating_add(1),
            max_attempts,
            header_text(&job.envelope.headers),
            cancel.clone(),
            None,
        );
        let args = CallArgs::new(job.msg.args.clone(), job.msg.kwargs.clone());
        let mut run = tokio::spawn(job.task.call(ctx, args));
        let soft = h.timelimit.soft_duration().or(opts.soft_time_limit);
        let hard = h.timelimit.hard_duration().or(opts.hard_time_limit);
        let far = Duration::from_secs(86_400 * 365);
        let soft_sleep = tokio::time::sleep(soft.unwrap_or(far));
        let hard_sleep = tokio::time::sleep(hard.unwrap_or(far));
        tokio::pin!(soft_sleep, hard_sleep);
        let mut soft_fired = false;
        let outcome = loop {
            tokio::select! {
                r = &mut run => break self.outcome_of(&job, r, soft_fired),
                () = &mut soft_sleep, if soft.is_some() && !soft_fired => {
                    soft_fired = true;
                    cancel.cancel();
                }
                () = &mut hard_sleep, if hard.is_some() => {
                    run.abort();
                    let secs = hard.map_or(0.0, |d| d.as_secs_f64());
                    let exc = ExceptionInfo::time_limit_exceeded(format!("{secs}"));
                    let tb = traceback(&h.task, &exc);
                    break Outcome::Failure { exc, traceback: tb };
                }
                () = revoke.cancelled() => {
                    run.abort();
                    break Outcome::Revoked("terminated".to_owned());
                }
                () = self.shared.hard_stop.cancelled() => {
                    run.abort();
                    cancel.cancel();
                    if !job.acked {
                        self.give_back(&tag).await;
                    }
                    if let Some(ev) = &self.events {
                        ev.task_ready();
                    }
                    return;
                }
            }
        };
        let note = super::notify::OutcomeEvent::of(&outcome, began.elapsed().as_secs_f64());
        self.conclude(&job, outcome).await;
        if let Some(ev) = &self.events {
            note.send(ev, &h.id);
            ev.task_ready();
        }
    }

    fn outcome_of(
        &self,
        job: &Job,
        ran: Result<Result<Value, CallError>, tokio::task::JoinError>,
        soft_fired: bool,
    ) -> Outcome {
        let name = &job.msg.headers.task;
        let failure = |exc: ExceptionInfo| {
            let tb = traceback(name, &exc);
            Outcome::Failure { exc, traceback: tb }
        };
        match ran {
            Ok(Ok(value)) => Outcome::Success(value),
            Ok(Err(CallError::Args(m))) => failure(
                ExceptionInfo::builtin("TypeError", vec![Value::String(format!("{name}(): {m}"))])
                    .unwrap_or_else(|_| ExceptionInfo::runtime_error(m)),
            ),
            Ok(Err(CallError::Output(m))) => failure(ExceptionInfo::runtime_error(format!(
                "the result of {name} does not serialize to JSON: {m}"
            ))),
            Ok(Err(CallError::Task(e))) => {
                let mut exc = exception_of(&e);
                if soft_fired && exc.exc_type == "RuntimeError" {
                    exc = exception_of_message(&format!("SoftTimeLimitExceeded: {}", e.message()));
                }
                self.after_error(job, &e, exc)
            }
            Err(e) if e.is_panic() => failure(
                ExceptionInfo::custom(
                    "PanicError",
                    vec![Value::String(panic_message(e.into_panic()))],
                )
                .unwrap_or_else(|_| ExceptionInfo::runtime_error("the task panicked")),
            ),
            Err(_) => failure(ExceptionInfo::runtime_error("the task was cancelled")),
        }
    }

    /// A task error: a retry when it asks for one (or the task autoretries) and retries are
    /// left, else FAILURE.
    fn after_error(
        &self,
        job: &Job,
        error: &celeriac_core::task::TaskError,
        exc: ExceptionInfo,
    ) -> Outcome {
        let opts = job.task.options();
        let retries = job.msg.headers.retries;
        let left = opts.max_retries.is_none_or(|max| retries < max);
        let countdown = match error.requested_delay() {
            Some(d) => Some(d),
            None if opts.autoretry && !error.is_fatal() => {
                Some(opts.backoff.delay(retries.saturating_add(1)))
            }
            None => None,
        };
        let tb = traceback(&job.msg.headers.task, &exc);
        match countdown {
            Some(countdown) if left => Outcome::Retry {
                countdown,
                exc,
                traceback: tb,
            },
            _ => Outcome::Failure { exc, traceback: tb },
        }
    }

    /// A record for this job: parent, group and the extended fields.
    pub fn meta(&self, job: &Job, mut meta: ResultMeta) -> ResultMeta {
        let h = &job.msg.headers;
        meta.parent_id = h.parent_id.clone();
        meta.group_id = h.group.clone();
        meta.extended = Some(crate::results::ExtendedMeta {
            name: Some(h.task.clone()),
            args: Some(Value::Array(job.msg.args.clone())),
            kwargs: Some(Value::Object(job.msg.kwargs.clone())),
            worker: Some(self.config.hostname.clone()),
            retries: Some(u64::from(h.retries)),
            queue: Some(job.delivery.queue.clone()),
        });
        meta
    }
}
