//! The consume loop, the keeper (fresh `unacked` scores, visibility sweeps) and the
//! graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::builder::CeleryWorker;
use super::message::Ctx;
use super::WorkerError;

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
    /// # Errors
    /// None once started: broker and backend failures are logged and retried (a message
    /// whose outcome cannot be recorded stays un-acknowledged, for a sweep). The `Result` is
    /// for future start-up checks.
    pub async fn run(self) -> Result<(), WorkerError> {
        let ctx = Arc::new(Ctx {
            broker: self.broker,
            backend: self.backend,
            config: self.config,
            tasks: self.tasks,
            dead: self.dead,
            shared: self.shared,
        });
        sweep(&ctx).await;
        let keeper = tokio::spawn(keep(ctx.clone()));
        let tracker = TaskTracker::new();
        let shared = ctx.shared.clone();
        tracing::info!(hostname = %ctx.config.hostname, queues = ?ctx.config.queues, "celery worker ready");
        loop {
            let permit = tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => break,
                p = shared.inflight.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let got = tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => break,
                got = ctx.broker.consume(&ctx.config.queues, CONSUME_WAIT) => got,
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
        let left = shared.tracked();
        if !left.is_empty() {
            match ctx.broker.restore_all(&left).await {
                Ok(n) => tracing::info!("restored {n} unacknowledged message(s)"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not restore unacknowledged messages; a sweep will")
                }
            }
        }
        Ok(())
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
