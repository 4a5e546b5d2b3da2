//! The consume loop, the keeper (fresh `unacked` scores, visibility sweeps) and the
//! graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::builder::CeleryWorker;
use super::control::WorkerControl;
use super::message::Ctx;
use super::WorkerError;
use crate::control::PidboxResponder;
use crate::events::{EventSender, LamportClock};

/// How long one consume call waits before it looks at the shutdown signal again.
const CONSUME_WAIT: Duration = Duration::from_secs(1);
/// The pause after a failed consume (the broker is away).
const CONSUME_BACKOFF: Duration = Duration::from_secs(1);

impl CeleryWorker {
    /// Runs until [`WorkerHandle::shutdown`](super::WorkerHandle::shutdown): sweeps stale
    /// `unacked` entries once, then takes messages while fewer than `prefetch` are in hand
    /// and runs them. On shutdown it stops taking messages, gives back the held and waiting
    /// ones, lets running tasks finish within the shutdown grace, then drops the rest and
    /// gives their messages back too.
    ///
    /// With events on it sends `worker-online`, heartbeats, the task events and at the end
    /// `worker-offline`; with control on it answers `celery inspect` / `control` (a remote
    /// `shutdown` is this graceful shutdown).
    ///
    /// # Errors
    /// [`WorkerError::Control`] when the pidbox cannot be subscribed to at start. Once
    /// started none: broker and backend failures are logged and retried (a message whose
    /// outcome cannot be recorded stays un-acknowledged, for a sweep).
    pub async fn run(self) -> Result<(), WorkerError> {
        let config = self.config;
        let clock = Arc::new(LamportClock::default());
        let events = config.events.then(|| {
            EventSender::builder(config.hostname.clone())
                .heartbeat_interval(config.heartbeat)
                .task_events(config.task_events)
                .clock(clock.clone())
                .start(self.broker.clone())
        });
        let pidbox = if config.control {
            let handler = Arc::new(WorkerControl {
                shared: self.shared.clone(),
                config: config.clone(),
                tasks: self.tasks.clone(),
                backend: self.backend.clone(),
            });
            let mut b = PidboxResponder::builder(config.hostname.clone(), handler)
                .revoked(self.shared.revoked.clone())
                .clock(clock.clone());
            if let Some(ev) = &events {
                b = b.events(ev.clone());
            }
            Some(b.start(self.broker.clone()).await?)
        } else {
            None
        };
        let ctx = Arc::new(Ctx {
            broker: self.broker,
            backend: self.backend,
            config,
            tasks: self.tasks,
            dead: self.dead,
            shared: self.shared,
            events,
        });
        sweep(&ctx).await;
        let keeper = tokio::spawn(keep(ctx.clone()));
        let tracker = TaskTracker::new();
        let shared = ctx.shared.clone();
        tracing::info!(hostname = %ctx.config.hostname, queues = ?ctx.config.queues, "celery worker ready");
        let fetchers = ctx.config.concurrency.clamp(1, CLAIMS_IN_FLIGHT);
        futures_util::future::join_all((0..fetchers).map(|_| fetch(ctx.clone(), tracker.clone())))
            .await;
        tracker.close();
        let grace = ctx.config.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                running = ctx.shared.tracked().len(),
                "tasks still running after the shutdown grace; dropping them"
            );
            shared.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
        }
        keeper.abort();
        if let Some(pidbox) = pidbox {
            pidbox.stop().await;
        }
        let left = shared.tracked();
        if !left.is_empty() {
            match ctx.broker.restore_all(&left).await {
                Ok(n) => tracing::info!("restored {n} unacknowledged message(s)"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not restore unacknowledged messages; a sweep will")
                }
            }
        }
        if let Some(events) = &ctx.events {
            // worker-offline once what is queued is out.
            events.clone().stop().await;
        }
        Ok(())
    }
}

/// How many claims a worker keeps in flight at most (never more than its concurrency): with
/// one at a time a busy worker waits a full round trip to Redis for every message.
const CLAIMS_IN_FLIGHT: usize = 8;

/// One consume loop: takes a prefetch slot, claims a message into it, hands it to a task.
/// Several run side by side so that their claims overlap; each returns on shutdown.
async fn fetch(ctx: Arc<Ctx>, tracker: TaskTracker) {
    let shared = ctx.shared.clone();
    loop {
        let permit = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break,
            p = shared.inflight.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let queues = shared.queues();
        let got = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break,
            got = ctx.broker.consume(&queues, CONSUME_WAIT) => got,
        };
        match got {
            Ok(Some(delivery)) => {
                shared.track(&delivery.delivery_tag);
                tracker.spawn(ctx.clone().handle(delivery, permit));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "consume failed; trying again");
                tokio::select! {
                    () = shared.shutdown.cancelled() => break,
                    () = tokio::time::sleep(CONSUME_BACKOFF) => {}
                }
            }
        }
    }
}

async fn sweep(ctx: &Ctx) {
    match ctx.broker.restore_visible().await {
        Ok(report) if report.restored > 0 => {
            tracing::info!(
                restored = report.restored,
                "visibility sweep restored messages"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "visibility sweep failed"),
    }
}

/// Keeps the `unacked` scores of messages in hand fresh, and sweeps periodically.
async fn keep(ctx: Arc<Ctx>) {
    let mut extend = tokio::time::interval(ctx.config.extend_interval);
    let mut sweeps = tokio::time::interval(ctx.config.sweep_interval);
    extend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first ticks are immediate; the start-up sweep already ran.
    sweeps.tick().await;
    loop {
        tokio::select! {
            _ = extend.tick() => {
                let tags = ctx.shared.tracked();
                if let Err(e) = ctx.broker.extend(&tags).await {
                    tracing::warn!(error = %e, "could not refresh unacked scores");
                }
            }
            _ = sweeps.tick() => sweep(&ctx).await,
        }
    }
}
