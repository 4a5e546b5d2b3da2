//! [`Broker`] for SQLite: each call runs its SQL (`ops.rs`) in one transaction on the
//! writer thread.

use crate::{ops, SqliteBackend, REAP_ROUNDS};
use celeriac_core::backend::{
    Broker, CancelOutcome, CancelReport, ClaimRequest, Claimed, Completion, LeaseRef, ReapReport,
};
use celeriac_core::clock::UnixMs;
use celeriac_core::error::Result;
use celeriac_core::job::JobId;
use std::time::Duration;

impl Broker for SqliteBackend {
    fn queues_allowed(&self) -> Result<()> {
        self.inner.config.role.allow_queues("run a worker")
    }

    async fn enqueue(&self, jobs: Vec<celeriac_core::Job>, now: UnixMs) -> Result<Vec<JobId>> {
        self.inner.config.role.allow_queues("enqueue jobs")?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self
            .inner
            .writer
            .call(move |c| ops::enqueue(c, &jobs, now))
            .await?;
        self.wake_workers();
        Ok(ids)
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        self.inner.config.role.allow_queues("claim jobs")?;
        let dead_ttl = self.inner.config.dead_ttl;
        self.inner
            .writer
            .call(move |c| ops::claim(c, &req, dead_ttl))
            .await
    }

    async fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        until: UnixMs,
        _now: UnixMs,
    ) -> Result<Vec<LeaseRef>> {
        self.inner
            .writer
            .call(move |c| ops::heartbeat(c, &leases, until))
            .await
    }

    async fn complete(&self, done: Vec<Completion>, now: UnixMs) -> Result<Vec<bool>> {
        let dead_ttl = self.inner.config.dead_ttl;
        let applied = self
            .inner
            .writer
            .call(move |c| ops::complete(c, &done, now, dead_ttl))
            .await?;
        self.wake_waiters();
        // Retries may be due at once.
        self.wake_workers();
        Ok(applied)
    }

    async fn release(&self, leases: Vec<LeaseRef>, _now: UnixMs) -> Result<u64> {
        let n = self
            .inner
            .writer
            .call(move |c| ops::release(c, &leases))
            .await?;
        self.wake_workers();
        Ok(n)
    }

    async fn reap(&self, now: UnixMs) -> Result<ReapReport> {
        let (dead_ttl, dead_max) = (self.inner.config.dead_ttl, self.inner.config.dead_max);
        let mut report = ReapReport::default();
        // One short transaction per round, so other writers (and processes) get their turn.
        for _ in 0..REAP_ROUNDS {
            let round = self
                .inner
                .writer
                .call(move |c| ops::reap(c, now, dead_ttl, dead_max))
                .await?;
            report.requeued += round.report.requeued;
            report.dead += round.report.dead;
            report.swept += round.report.swept;
            report.dead_dropped += round.report.dead_dropped;
            report.ended.extend(round.report.ended);
            for (queue, n) in &round.dropped {
                celeriac_core::retention::count_dead_letters_dropped(queue, *n);
            }
            if !round.more {
                break;
            }
        }
        if report.requeued > 0 {
            self.wake_workers();
        }
        if report.dead > 0 {
            self.wake_waiters();
        }
        Ok(report)
    }

    async fn next_due(&self, queues: Vec<String>) -> Result<Option<UnixMs>> {
        self.inner
            .writer
            .call(move |c| ops::next_due(c, &queues))
            .await
    }

    async fn wait_for_work(&self, _queues: &[String], since: u64, max: Duration) {
        let mut rx = self.inner.work.subscribe();
        if *rx.borrow_and_update() != since {
            return;
        }
        let _ = tokio::time::timeout(max, rx.changed()).await;
    }

    fn work_epoch(&self) -> u64 {
        *self.inner.work.borrow()
    }

    async fn cancel(&self, id: JobId, now: UnixMs) -> Result<CancelReport> {
        self.cancel_job(id, now).await
    }

    async fn cancel_requested(&self, leases: Vec<LeaseRef>) -> Result<Vec<LeaseRef>> {
        self.inner
            .writer
            .call(move |c| ops::cancel_requested(c, &leases))
            .await
    }
}

impl SqliteBackend {
    async fn cancel_job(&self, id: JobId, now: UnixMs) -> Result<CancelReport> {
        let report = self
            .inner
            .writer
            .call(move |c| ops::cancel(c, id, now))
            .await?;
        if report.outcome == CancelOutcome::Cancelled {
            self.wake_waiters();
        }
        Ok(report)
    }
}
