//! Keeping leases: one heartbeat extends every held lease, retried quickly when it fails, and
//! self-fencing on the monotonic clock gives up a job whose lease could not be extended in
//! time, before the store can hand it to anyone else.

use super::{Inflight, Running, WorkerConfig, WorkerStats};
use crate::backend::{Broker, LeaseRef};
use crate::clock::{duration_ms, Clock};
use crate::job::JobId;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How many job ids a warning about given-up jobs lists (the count is always complete).
const LISTED_IDS: usize = 32;

/// The timings of lease keeping, derived from a worker's lease and heartbeat.
#[derive(Debug, Clone, Copy)]
pub(super) struct LeaseTiming {
    /// The lease each claim and heartbeat asks for.
    pub(super) lease: Duration,
    /// How often the held leases are extended while the store answers.
    pub(super) heartbeat: Duration,
    /// How long after its last grant or extension a lease is given up: `lease − margin`.
    pub(super) window: Duration,
    /// How soon a failed heartbeat is tried again.
    pub(super) retry: Duration,
    /// How long one heartbeat may take before it counts as failed.
    pub(super) call_timeout: Duration,
}

impl LeaseTiming {
    /// The timings for a validated configuration (`heartbeat < lease`).
    pub(super) fn new(config: &WorkerConfig) -> Self {
        let margin = fence_margin(config.lease, config.heartbeat);
        Self {
            lease: config.lease,
            heartbeat: config.heartbeat,
            window: config.lease.saturating_sub(margin),
            retry: (config.heartbeat / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
            // A heartbeat that has not answered when the next one is due has failed.
            call_timeout: config.heartbeat,
        }
    }
}

/// The part of a lease a worker keeps back when fencing itself: a job whose lease was last
/// granted or extended `lease − margin` ago is cancelled and given up.
///
/// A quarter of the lease: that is the time a cancelled task has to stop cooperatively
/// before the lease can run out at the store (its future is dropped when it does), and it
/// covers the fence check running late and clocks that tick at slightly different rates.
/// Never more than half of what the lease leaves after one heartbeat interval, so that a
/// healthy worker always has the first heartbeat and several quick retries before any job is
/// given up (with a 30 s lease and 10 s heartbeats: given up after 22.5 s; with 3 s and 1 s:
/// after 2.25 s).
pub(super) fn fence_margin(lease: Duration, heartbeat: Duration) -> Duration {
    (lease / 4).min(lease.saturating_sub(heartbeat) / 2)
}

/// Extends every held lease every `heartbeat`, and every `retry` while the store does not
/// answer. `extending` tells the claim loop whether leases can be extended; while they cannot
/// and nothing is held, a cheap read stands in for the heartbeat to find out when the store
/// answers again.
pub(super) async fn heartbeat_loop<B: Broker>(
    backend: Arc<B>,
    clock: Arc<dyn Clock>,
    config: Arc<WorkerConfig>,
    timing: LeaseTiming,
    inflight: Inflight,
    extending: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut next = Instant::now() + timing.heartbeat;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.cancelled() => return,
        }
        let leases = held_leases(&inflight, |_| true);
        let answer = if !leases.is_empty() {
            beat(&*backend, &*clock, timing, &inflight, leases).await
        } else if *extending.borrow() {
            next = Instant::now() + timing.heartbeat;
            continue;
        } else {
            match tokio::time::timeout(timing.call_timeout, backend.next_due(config.queues.clone()))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", timing.call_timeout)),
            }
        };
        let ok = answer.is_ok();
        match answer {
            Ok(()) => {
                if !*extending.borrow() {
                    info!("the store answers again; claiming resumes");
                }
            }
            Err(why) => warn!(
                error = %why,
                retry_in = ?timing.retry,
                "heartbeat failed; no new jobs are claimed until the store answers, and jobs \
                 whose leases cannot be extended in time are given up"
            ),
        }
        extending.send_if_modified(|v| std::mem::replace(v, ok) != ok);
        next = Instant::now() + if ok { timing.heartbeat } else { timing.retry };
    }
}

/// One heartbeat for `leases`, bounded by the timeout. On success, the grant of every lease
/// still held moves to the moment the heartbeat was sent (the store extended it no earlier),
/// and jobs whose leases were lost are cancelled.
async fn beat<B: Broker>(
    backend: &B,
    clock: &dyn Clock,
    timing: LeaseTiming,
    inflight: &Inflight,
    leases: Vec<LeaseRef>,
) -> Result<(), String> {
    let sent = Instant::now();
    let now = clock.now_ms();
    let until = now.saturating_add(duration_ms(timing.lease));
    let lost = match tokio::time::timeout(
        timing.call_timeout,
        backend.heartbeat(leases.clone(), until, now),
    )
    .await
    {
        Ok(Ok(lost)) => lost,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no answer within {:?}", timing.call_timeout)),
    };
    let gone: HashSet<&LeaseRef> = lost.iter().collect();
    if let Ok(mut map) = inflight.lock() {
        for l in leases.iter().filter(|l| !gone.contains(l)) {
            if let Some(r) = map.get_mut(&l.id).filter(|r| r.token == l.token) {
                r.granted = r.granted.max(sent);
            }
        }
    }
    if !lost.is_empty() {
        warn!(lost = lost.len(), "leases lost; cancelling those jobs");
        for_each_running(inflight, &lost, |r| r.cancel.cancel());
    }
    Ok(())
}

/// Gives up every held job whose lease was last granted or extended `timing.window` ago,
/// checking on the monotonic clock at each job's deadline, whatever the store does: a
/// heartbeat that hangs does not delay it. `held` is notified when jobs are claimed.
pub(super) async fn fence_loop(
    timing: LeaseTiming,
    inflight: Inflight,
    held: Arc<Notify>,
    stats: Arc<WorkerStats>,
    stop: CancellationToken,
) {
    loop {
        let now = Instant::now();
        let next = earliest_grant(&inflight)
            .map_or(now + timing.heartbeat, |g| g + timing.window)
            .min(now + timing.heartbeat);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => give_up_overdue(timing, &inflight, &stats),
            _ = held.notified() => {}
            _ = stop.cancelled() => return,
        }
    }
}

fn earliest_grant(inflight: &Inflight) -> Option<Instant> {
    inflight
        .lock()
        .ok()
        .and_then(|map| map.values().map(|r| r.granted).min())
}

/// Stops holding the overdue jobs: each one's token fires, and its run is told when its lease
/// ends (its future is dropped then if it has not stopped).
fn give_up_overdue(timing: LeaseTiming, inflight: &Inflight, stats: &WorkerStats) {
    let now = Instant::now();
    let mut gone: Vec<(JobId, Instant)> = Vec::new();
    if let Ok(mut map) = inflight.lock() {
        let overdue: Vec<JobId> = map
            .iter()
            .filter(|(_, r)| r.granted + timing.window <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            if let Some(mut r) = map.remove(&id) {
                r.cancel.cancel();
                if let Some(tell) = r.fence.take() {
                    let _ = tell.send(r.granted + timing.lease);
                }
                gone.push((id, r.granted));
            }
        }
    }
    let Some(oldest) = gone.iter().map(|(_, g)| *g).min() else {
        return;
    };
    let n = gone.len() as u64;
    stats.fenced.fetch_add(n, Ordering::Relaxed);
    metrics::counter!("celeriac_jobs_fenced_total").increment(n);
    let mut ids = String::new();
    for (id, _) in gone.iter().take(LISTED_IDS) {
        let _ = write!(ids, "{}{id}", if ids.is_empty() { "" } else { " " });
    }
    if gone.len() > LISTED_IDS {
        let _ = write!(ids, " and {} more", gone.len() - LISTED_IDS);
    }
    warn!(
        count = gone.len(),
        jobs = %ids,
        silent_for = ?now.saturating_duration_since(oldest),
        lease = ?timing.lease,
        "no heartbeat extended these leases within {:?} of their last grant, so they may run \
         out at the store; the jobs are given up and cancelled before anyone else can take them \
         (a task still running when its lease ends is dropped)",
        timing.window
    );
}

/// The leases of the running jobs that `keep` selects.
pub(super) fn held_leases(inflight: &Inflight, keep: impl Fn(&Running) -> bool) -> Vec<LeaseRef> {
    match inflight.lock() {
        Ok(map) => map
            .iter()
            .filter(|(_, r)| keep(r))
            .map(|(id, r)| LeaseRef {
                id: *id,
                token: r.token,
                queue: r.queue.clone(),
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Calls `f` for each job in `leases` still running under the same lease.
pub(super) fn for_each_running(inflight: &Inflight, leases: &[LeaseRef], f: impl Fn(&Running)) {
    if let Ok(map) = inflight.lock() {
        for l in leases {
            if let Some(r) = map.get(&l.id).filter(|r| r.token == l.token) {
                f(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_quarter_of_the_lease_but_leaves_room_for_heartbeats() {
        let s = Duration::from_secs;
        assert_eq!(fence_margin(s(30), s(10)), Duration::from_millis(7500));
        assert_eq!(fence_margin(s(3), s(1)), Duration::from_millis(750));
        // A heartbeat close to the lease: half of what is left after one interval.
        assert_eq!(fence_margin(s(4), s(3)), Duration::from_millis(500));
        for (lease, hb) in [
            (s(1), Duration::from_millis(999)),
            (s(30), s(10)),
            (s(3), s(1)),
        ] {
            let window = lease - fence_margin(lease, hb);
            assert!(
                window > hb,
                "{lease:?}/{hb:?}: given up before the first heartbeat"
            );
        }
    }
}
