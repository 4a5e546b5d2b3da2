//! Shared circuit breakers: the store decides trips on a quorum of instances, hands out a
//! bounded number of half-open probes, and forgets everything after its ttl. Time is the
//! caller's `now` (and a [`ManualClock`] for the breakers built on the store).

use crate::support::{
    claim, complete, enqueue, eventually, gate, info, job, lease, RunningWorker, PATIENCE, T0,
};
use celeriac_core::backend::{
    BreakerCommand, BreakerPolicy, BreakerSignal, BreakerStore, SharedBreakerState,
};
use celeriac_core::backend::{CancelOutcome, Outcome};
use celeriac_core::breaker::{
    BreakerState, CallError, CircuitBreaker, SharedBreaker, SharedOptions, WindowKind,
};
use celeriac_core::{
    Backoff, Broker, Job, JobState, ManualClock, Registry, ResultStore, Task, TaskContext,
    TaskError, TaskOptions, UnixMs,
};
use std::sync::Arc;
use std::time::Duration;

/// Window 10 s in 1 s buckets, 10 calls, quorum 2, 50%, 2 probes leased 5 s, open 1 s
/// doubling up to 4 s, no jitter.
fn policy() -> BreakerPolicy {
    BreakerPolicy {
        window_ms: 10_000,
        bucket_ms: 1_000,
        min_calls: 10,
        quorum: 2,
        failure_rate: 50.0,
        slow_rate: None,
        probes: 2,
        probe_lease_ms: 5_000,
        open_ms: 1_000,
        backoff: 2.0,
        max_open_ms: 4_000,
        jitter_cut: 0.0,
    }
}

fn signal(instance: &str, calls: u64, failures: u64) -> BreakerSignal {
    BreakerSignal {
        instance: instance.to_string(),
        calls,
        failures,
        slow: 0,
    }
}

async fn report<B: BreakerStore>(
    b: &B,
    name: &str,
    s: BreakerSignal,
    p: &BreakerPolicy,
    now: UnixMs,
) -> SharedBreakerState {
    b.breaker_report(name, s, p, now)
        .await
        .expect("breaker_report should succeed")
}

async fn probe<B: BreakerStore>(b: &B, name: &str, token: &str, now: UnixMs) -> bool {
    b.breaker_probe(name, token, &policy(), now)
        .await
        .expect("breaker_probe should succeed")
        .0
}

async fn done<B: BreakerStore>(
    b: &B,
    name: &str,
    token: &str,
    failed: bool,
    now: UnixMs,
) -> SharedBreakerState {
    b.breaker_probe_done(name, token, failed, &policy(), now)
        .await
        .expect("breaker_probe_done should succeed")
}

async fn status<B: BreakerStore>(b: &B, name: &str, now: UnixMs) -> Option<SharedBreakerState> {
    b.breaker_status(name, now)
        .await
        .expect("breaker_status should succeed")
}

/// Opens `name` with two failing instances at `now`.
async fn trip<B: BreakerStore>(b: &B, name: &str, now: UnixMs) -> SharedBreakerState {
    report(b, name, signal("a", 10, 10), &policy(), now).await;
    let s = report(b, name, signal("b", 10, 10), &policy(), now).await;
    assert_eq!(s.state, BreakerState::Open, "two failing instances trip it");
    s
}

/// One instance failing every call does not trip the fleet; a second one reaching the rate
/// on its own calls does.
pub async fn breaker_opens_on_a_quorum_of_instances<B: BreakerStore>(backend: Arc<B>) {
    let b = &*backend;
    let p = policy();
    assert_eq!(status(b, "partner", T0).await, None, "unknown breaker");
    let s = report(b, "partner", signal("a", 20, 20), &p, T0).await;
    assert_eq!(
        s.state,
        BreakerState::Closed,
        "one bad instance is no quorum"
    );
    assert_eq!(
        (s.window.calls, s.window.failures, s.instances),
        (20, 20, 1)
    );
    let s = report(b, "partner", signal("b", 10, 2), &p, T0 + 10).await;
    assert_eq!(
        s.state,
        BreakerState::Closed,
        "b sees 20%: still one instance"
    );
    assert_eq!((s.window.calls, s.instances), (30, 2));
    let s = report(b, "partner", signal("b", 10, 8), &p, T0 + 20).await;
    assert_eq!(s.state, BreakerState::Open, "b at 50% makes the quorum");
    assert_eq!(s.open_until, T0 + 20 + 1_000);
    assert_eq!(s.trips, 1);
    let seen = status(b, "partner", T0 + 30).await.expect("a record");
    assert_eq!(seen.state, BreakerState::Open);
    assert_eq!(seen.open_until, T0 + 1_020);
    // Another breaker is untouched.
    assert_eq!(status(b, "other", T0 + 30).await, None);
    // With a quorum of one, one instance is enough.
    let solo = BreakerPolicy { quorum: 1, ..p };
    let s = report(b, "solo", signal("a", 10, 5), &solo, T0).await;
    assert_eq!(s.state, BreakerState::Open);
}

/// Signals older than the window no longer count; below min_calls nothing trips.
pub async fn breaker_signals_slide_out_of_the_window<B: BreakerStore>(backend: Arc<B>) {
    let b = &*backend;
    let p = BreakerPolicy {
        quorum: 1,
        ..policy()
    };
    let s = report(b, "slide", signal("a", 6, 6), &p, T0).await;
    assert_eq!(s.state, BreakerState::Closed, "6 calls are fewer than 10");
    let s = report(b, "slide", signal("a", 2, 0), &p, T0 + 9_000).await;
    assert_eq!(s.window.calls, 8, "both reports are in the 10 s window");
    // At T0 + 10 s the bucket of T0 has slid out.
    let s = report(b, "slide", signal("a", 6, 6), &p, T0 + 10_000).await;
    assert_eq!(s.state, BreakerState::Closed);
    assert_eq!((s.window.calls, s.window.failures), (8, 6));
    let s = report(b, "slide", signal("a", 2, 0), &p, T0 + 10_500).await;
    assert_eq!(s.state, BreakerState::Open, "6 of 10 within the window");
}

/// Half-open hands out at most `probes` reservations across every instance; a lapsed one
/// frees its place; nothing is handed out while closed or open.
pub async fn breaker_probes_are_bounded_across_instances<B: BreakerStore>(backend: Arc<B>) {
    let b = &*backend;
    assert!(
        !probe(b, "probe", "x", T0).await,
        "a closed breaker has no probes"
    );
    let s = trip(b, "probe", T0).await;
    assert!(!probe(b, "probe", "x", T0 + 999).await, "still open");
    let t = s.open_until;
    assert!(probe(b, "probe", "a", t).await);
    assert_eq!(
        status(b, "probe", t).await.expect("a record").state,
        BreakerState::HalfOpen
    );
    assert!(probe(b, "probe", "b", t + 1).await);
    assert!(!probe(b, "probe", "c", t + 2).await, "two probes at most");
    assert!(!probe(b, "probe", "c", t + 4_999).await);
    // The leases of a and b lapse at t + 5 s and t + 5.001 s.
    assert!(probe(b, "probe", "c", t + 5_000).await);
    assert!(!probe(b, "probe", "d", t + 5_000).await, "b is still live");
    assert!(probe(b, "probe", "d", t + 5_001).await);
    // A lapsed probe's result counts for nothing.
    let s = done(b, "probe", "a", true, t + 5_002).await;
    assert_eq!(s.state, BreakerState::HalfOpen);
}

/// A failing probe opens the breaker again for twice as long (capped); `probes` successes
/// close it and clear the backoff.
pub async fn breaker_probe_results_close_or_reopen_with_backoff<B: BreakerStore>(backend: Arc<B>) {
    let b = &*backend;
    let s = trip(b, "half", T0).await;
    let mut t = s.open_until;
    for (trips, period) in [(2, 2_000), (3, 4_000), (4, 4_000)] {
        assert!(probe(b, "half", "p", t).await);
        let s = done(b, "half", "p", true, t).await;
        assert_eq!(s.state, BreakerState::Open, "1 of 2 probes failed: 50%");
        assert_eq!((s.trips, s.open_until), (trips, t + period));
        t = s.open_until;
    }
    assert!(probe(b, "half", "p1", t).await);
    assert!(probe(b, "half", "p2", t).await);
    let s = done(b, "half", "p1", false, t + 1).await;
    assert_eq!(s.state, BreakerState::HalfOpen, "one of two in");
    // A token never reserved counts for nothing.
    let s = done(b, "half", "stranger", false, t + 1).await;
    assert_eq!(s.state, BreakerState::HalfOpen);
    let s = done(b, "half", "p2", false, t + 2).await;
    assert_eq!((s.state, s.trips), (BreakerState::Closed, 0));
    assert_eq!(s.window.calls, 0, "closing starts a fresh window");
    // The next trip starts the backoff again.
    let s = trip(b, "half", t + 3).await;
    assert_eq!(s.open_until, t + 3 + 1_000);
}

/// Forced states hold against every signal until reset, which clears the backoff.
pub async fn breaker_commands_override_and_reset<B: BreakerStore>(backend: Arc<B>) {
    let b = &*backend;
    let p = policy();
    let cmd = |c, now| async move {
        b.breaker_command("manual", c, &policy(), now)
            .await
            .expect("breaker_command should succeed")
    };
    let s = cmd(BreakerCommand::ForceOpen, T0).await;
    assert_eq!(s.state, BreakerState::ForcedOpen);
    assert!(!probe(b, "manual", "p", T0 + 3_600_000).await);
    let s = cmd(BreakerCommand::ForceClosed, T0).await;
    assert_eq!(s.state, BreakerState::ForcedClosed);
    report(b, "manual", signal("a", 10, 10), &p, T0).await;
    let s = report(b, "manual", signal("b", 10, 10), &p, T0).await;
    assert_eq!(s.state, BreakerState::ForcedClosed, "nothing is judged");
    let s = cmd(BreakerCommand::Reset, T0 + 1).await;
    assert_eq!(
        (s.state, s.trips, s.window.calls),
        (BreakerState::Closed, 0, 0)
    );
    let s = trip(b, "manual", T0 + 2).await;
    assert_eq!(s.trips, 1);
    let s = cmd(BreakerCommand::Reset, T0 + 3).await;
    assert_eq!((s.state, s.trips), (BreakerState::Closed, 0));
}

/// A breaker nobody writes to is forgotten after the policy's ttl (by the caller's now).
pub async fn breaker_keys_expire_after_the_ttl<B: BreakerStore>(backend: Arc<B>) {
    let b = &*backend;
    let p = policy();
    let ttl = p.ttl_ms();
    assert_eq!(
        ttl, 20_000,
        "twice the longest of window, open period and lease"
    );
    let s = trip(b, "fleeting", T0).await;
    assert!(status(b, "fleeting", T0 + ttl - 1).await.is_some());
    assert_eq!(status(b, "fleeting", T0 + ttl).await, None);
    // Forgotten: closed, no backoff history.
    let s2 = report(b, "fleeting", signal("a", 1, 1), &p, s.open_until + ttl).await;
    assert_eq!(
        (s2.state, s2.trips, s2.window.calls),
        (BreakerState::Closed, 0, 1)
    );
}

fn local(clock: &ManualClock) -> CircuitBreaker {
    CircuitBreaker::builder("shared-partner")
        .window(WindowKind::Time {
            size: Duration::from_secs(10),
            buckets: 10,
        })
        .min_calls(4)
        .failure_rate(50.0)
        .half_open_probes(2)
        .open_for(Duration::from_secs(5))
        .jitter(0.0)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("valid settings")
}

fn shared<B: BreakerStore>(
    backend: &Arc<B>,
    clock: &ManualClock,
    instance: &str,
) -> Arc<SharedBreaker<B>> {
    SharedBreaker::new(
        local(clock),
        backend.clone(),
        SharedOptions {
            instance: instance.to_string(),
            quorum: 2,
            ..SharedOptions::default()
        },
    )
    .expect("valid options")
}

async fn sync<B: BreakerStore>(b: &SharedBreaker<B>) -> SharedBreakerState {
    b.sync().await.expect("sync should succeed")
}

async fn ok_call<B: BreakerStore>(b: &SharedBreaker<B>) -> Result<u8, CallError<&'static str>> {
    b.call(async { Ok::<u8, &'static str>(1) }).await
}

async fn failing_call<B: BreakerStore>(b: &SharedBreaker<B>) {
    let r = b.call(async { Err::<u8, _>("partner down") }).await;
    assert!(matches!(r, Err(CallError::Inner(_))), "{r:?}");
}

/// Breakers in three processes share one store: two that see failures trip it for the
/// third (which saw none) at its next sync; half-open probes are bounded across all three;
/// successful probes close it everywhere.
pub async fn shared_breaker_trips_every_instance<B: BreakerStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let (a, b, c) = (
        shared(&backend, &clock, "a"),
        shared(&backend, &clock, "b"),
        shared(&backend, &clock, "c"),
    );
    assert_eq!(ok_call(&c).await.ok(), Some(1));
    for _ in 0..4 {
        failing_call(&a).await;
        failing_call(&b).await;
    }
    assert_eq!(sync(&c).await.state, BreakerState::Closed);
    assert_eq!(
        sync(&a).await.state,
        BreakerState::Closed,
        "a alone is no quorum"
    );
    let s = sync(&b).await;
    assert_eq!(s.state, BreakerState::Open, "a and b make the quorum");
    assert_eq!(s.open_until, T0 + 5_000);
    // c saw no failure, but stops calling once it syncs.
    assert!(ok_call(&c).await.is_ok(), "c has not synced yet");
    sync(&c).await;
    match ok_call(&c).await {
        Err(CallError::Rejected(r)) => assert_eq!(r.retry_after, Duration::from_secs(5)),
        other => panic!("c should reject after its sync, got {other:?}"),
    }
    // After the open period the store hands out two probes among all three instances.
    clock.advance(Duration::from_secs(5));
    for x in [&a, &b, &c] {
        assert_eq!(sync(x).await.state, BreakerState::HalfOpen);
    }
    let pa = a.acquire().await.expect("probe for a");
    let pb = b.acquire().await.expect("probe for b");
    assert!(pa.is_shared_probe() && pb.is_shared_probe());
    let r = c
        .acquire()
        .await
        .expect_err("the store's two probes are out");
    assert_eq!(r.state, BreakerState::HalfOpen);
    pa.record(celeriac_core::breaker::Verdict::Success).await;
    pb.record(celeriac_core::breaker::Verdict::Success).await;
    assert_eq!(sync(&c).await.state, BreakerState::Closed);
    assert_eq!(ok_call(&c).await.ok(), Some(1), "closed for c");
    assert_eq!(
        a.local().state(),
        BreakerState::HalfOpen,
        "a learns of the close at its next sync"
    );
    sync(&a).await;
    assert_eq!(a.local().state(), BreakerState::Closed);
}

/// A `Deferred` completion puts the job back to wait until `at` without counting its
/// attempt; a stale token cannot defer; a job asked to stop ends as cancelled instead.
pub async fn deferred_completion_keeps_the_attempt<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "deferred";
    let jobs = vec![job(q, T0), job(q, T0)];
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    enqueue(&*backend, jobs, T0).await;
    let claimed = claim(&*backend, &[q], 2, T0).await;
    assert_eq!(claimed.len(), 2);
    let first = claimed
        .iter()
        .find(|c| c.job.id == ids[0])
        .expect("the first job was claimed");
    assert_eq!(first.job.attempts, 1);
    let at = T0 + 5_000;
    let mut stale = lease(first);
    stale.token += 1_000;
    assert!(
        !complete(&*backend, stale, Outcome::Deferred { at }, T0).await,
        "a stale token cannot defer"
    );
    assert!(complete(&*backend, lease(first), Outcome::Deferred { at }, T0).await);
    let i = info(&*backend, ids[0]).await;
    assert_eq!(i.state, JobState::Scheduled);
    assert_eq!(
        (i.job.attempts, i.job.run_at),
        (0, at),
        "the attempt is not counted"
    );
    assert_eq!(i.lease_until, None);
    assert!(
        claim(&*backend, &[q], 5, at - 1).await.is_empty(),
        "not before `at`"
    );
    let again = claim(&*backend, &[q], 5, at).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].job.id, again[0].job.attempts), (ids[0], 1));

    // Asked to stop while running: deferring ends it.
    let second = claimed
        .iter()
        .find(|c| c.job.id == ids[1])
        .expect("the second job was claimed");
    assert_eq!(
        backend
            .cancel(ids[1], T0)
            .await
            .expect("cancel should succeed")
            .outcome,
        CancelOutcome::Requested
    );
    assert!(complete(&*backend, lease(second), Outcome::Deferred { at }, T0).await);
    assert_eq!(info(&*backend, ids[1]).await.state, JobState::Cancelled);
}

/// A breaker for the worker cases: opens when both of the last 2 calls failed, for 10 s,
/// with `probes` half-open probes.
fn task_breaker(name: &str, probes: u32, clock: &ManualClock) -> CircuitBreaker {
    CircuitBreaker::builder(name)
        .window(WindowKind::Count(2))
        .min_calls(2)
        .failure_rate(50.0)
        .half_open_probes(probes)
        .open_for(Duration::from_secs(10))
        .jitter(0.0)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("valid settings")
}

/// A task that calls a partner behind the breaker `conformance-partner`: fails when asked.
struct PartnerCall;

impl Task for PartnerCall {
    const NAME: &'static str = "conformance.partner_call";
    type Args = bool;
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 3,
            backoff: Backoff {
                base: Duration::from_secs(600),
                cap: Duration::from_secs(600),
                jitter: false,
            },
            breaker: Some("conformance-partner".to_string()),
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, fail: bool) -> Result<(), TaskError> {
        if fail {
            Err(TaskError::msg("partner down"))
        } else {
            Ok(())
        }
    }
}

/// A worker runs a task behind a breaker: its failures open the breaker; while it is open
/// the task's jobs go back to wait out the open period without using an attempt; the job
/// that runs after it is the probe that closes it.
pub async fn worker_defers_tasks_behind_an_open_breaker<B: celeriac_core::WorkerStore>(
    backend: Arc<B>,
) {
    let q = "breaker-tasks";
    let clock = ManualClock::new(T0);
    let breaker = task_breaker("conformance-partner", 1, &clock);
    let mut registry = Registry::new();
    registry.register::<PartnerCall>();
    registry.breaker(breaker.clone());
    let worker = RunningWorker::start(backend.clone(), registry, q, &clock);

    // One after the other: a count window may drop one of two samples recorded at once.
    for _ in 0..2 {
        let mut j = Job::new(PartnerCall::NAME, b"true".to_vec(), T0);
        j.queue = q.to_string();
        j.max_attempts = 3;
        let id = j.id;
        enqueue(&*backend, vec![j], T0).await;
        eventually(&*backend, id, "a failed attempt", |i| {
            i.state == JobState::Retrying
        })
        .await;
    }
    assert_eq!(breaker.state(), BreakerState::Open, "two failures of two");

    let mut ok = Job::new(PartnerCall::NAME, b"false".to_vec(), T0);
    ok.queue = q.to_string();
    let ok_id = ok.id;
    enqueue(&*backend, vec![ok], T0).await;
    let deferred = eventually(&*backend, ok_id, "the deferral", |i| {
        i.state == JobState::Scheduled
    })
    .await;
    assert_eq!(deferred.job.attempts, 0, "a deferral uses no attempt");
    assert_eq!(
        deferred.job.run_at,
        T0 + 10_000,
        "back at the end of the open period"
    );

    clock.advance(Duration::from_secs(10));
    let done = eventually(&*backend, ok_id, "the probe run", |i| {
        i.state == JobState::Succeeded
    })
    .await;
    assert_eq!(done.job.attempts, 1);
    assert_eq!(breaker.state(), BreakerState::Closed, "the probe closed it");
    worker.stop().await;
}

/// A worker refuses to start when a task names a breaker that is not registered.
pub async fn worker_refuses_an_unknown_breaker<B: celeriac_core::WorkerStore>(backend: Arc<B>) {
    let mut registry = Registry::new();
    registry.register::<PartnerCall>();
    let err = celeriac_core::Worker::new(backend, Arc::new(registry))
        .run()
        .await
        .expect_err("the breaker is missing");
    match err {
        celeriac_core::Error::Config { setting, message } => {
            assert_eq!(setting, "task `conformance.partner_call`: breaker");
            assert!(message.contains("conformance-partner"), "{message}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// A task behind the shared breaker `conformance-shared-partner`: waits at its gate (none
/// for an empty name), then fails when asked.
struct GatedPartnerCall;

impl Task for GatedPartnerCall {
    const NAME: &'static str = "conformance.gated_partner_call";
    type Args = (String, bool);
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            breaker: Some("conformance-shared-partner".to_string()),
            ..PartnerCall::options()
        }
    }

    async fn run(_ctx: TaskContext, (gate_name, fail): (String, bool)) -> Result<(), TaskError> {
        if !gate_name.is_empty() {
            gate(&gate_name).pass().await;
        }
        PartnerCall::run(_ctx, fail).await
    }
}

/// A worker instance: its shared breaker (quorum 1, 2 probes, open 10 s) and its worker on
/// its own queue.
fn instance<B: celeriac_core::WorkerStore + BreakerStore>(
    backend: &Arc<B>,
    clock: &ManualClock,
    name: &str,
) -> (Arc<SharedBreaker<B>>, RunningWorker) {
    let local = task_breaker("conformance-shared-partner", 2, clock);
    let shared = SharedBreaker::new(
        local,
        backend.clone(),
        SharedOptions {
            instance: name.to_string(),
            quorum: 1,
            ..SharedOptions::default()
        },
    )
    .expect("valid options");
    let mut registry = Registry::new();
    registry.register::<GatedPartnerCall>();
    registry.shared_breaker(shared.clone());
    let queue = format!("shared-breaker-{name}");
    let worker = RunningWorker::start_as(backend.clone(), registry, &queue, clock, name);
    (shared, worker)
}

fn gated_job(queue: &str, gate_name: &str, fail: bool, run_at: UnixMs) -> Job {
    let payload = serde_json::to_vec(&(gate_name, fail)).expect("arguments encode");
    let mut j = Job::new(GatedPartnerCall::NAME, payload, run_at);
    j.queue = queue.to_string();
    j
}

/// Two worker instances share a breaker through the store: A's failures trip it, and B,
/// which saw none, defers its jobs once it has synced; when the open period ends only the
/// breaker's two probes run across both instances, the other jobs waiting without using an
/// attempt; the probes' successes close it and every job then runs.
pub async fn workers_share_a_breaker_through_the_store<
    B: celeriac_core::WorkerStore + BreakerStore,
>(
    backend: Arc<B>,
) {
    let clock = ManualClock::new(T0);
    let (sa, wa) = instance(&backend, &clock, "a");
    let (sb, wb) = instance(&backend, &clock, "b");
    let (qa, qb) = ("shared-breaker-a", "shared-breaker-b");

    // One after the other: a count window may drop one of two samples recorded at once.
    for _ in 0..2 {
        let failing = gated_job(qa, "", true, T0);
        let id = failing.id;
        enqueue(&*backend, vec![failing], T0).await;
        eventually(&*backend, id, "a failed attempt on a", |i| {
            i.state == JobState::Retrying
        })
        .await;
    }
    assert_eq!(
        sa.local().state(),
        BreakerState::Open,
        "a tripped locally: {:?}",
        sa.local().snapshot()
    );
    assert_eq!(sb.local().state(), BreakerState::Closed, "b saw nothing");
    let s = sa.sync().await.expect("sync a");
    assert_eq!(
        (s.state, s.open_until),
        (BreakerState::Open, T0 + 10_000),
        "a's report trips the store (quorum 1)"
    );
    assert_eq!(sb.sync().await.expect("sync b").state, BreakerState::Open);
    assert_eq!(sb.local().state(), BreakerState::Open, "b adopts the trip");

    // b defers a job without running it or using an attempt.
    let gate_name = celeriac_core::JobId::new().to_string();
    let g = gate(&gate_name);
    let first = gated_job(qb, &gate_name, false, T0);
    let first_id = first.id;
    enqueue(&*backend, vec![first], T0).await;
    let deferred = eventually(&*backend, first_id, "b's deferral", |i| {
        i.state == JobState::Scheduled
    })
    .await;
    assert_eq!(
        (deferred.job.attempts, deferred.job.run_at),
        (0, T0 + 10_000)
    );
    assert_eq!(g.entered(), 0, "the task did not run");

    // Five more jobs due when the open period ends: six in all, three on each instance.
    let mut ids = vec![first_id];
    let more: Vec<Job> = [qa, qa, qa, qb, qb]
        .iter()
        .map(|q| gated_job(q, &gate_name, false, T0 + 10_000))
        .collect();
    ids.extend(more.iter().map(|j| j.id));
    enqueue(&*backend, more, T0).await;
    clock.advance(Duration::from_secs(10));
    // Each instance's local breaker would let two probes through; the store lets two in all.
    // Wait until every job either entered the gate or was put back.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let deferred = loop {
        let mut deferred = 0;
        for id in &ids {
            let i = info(&*backend, *id).await;
            if i.state == JobState::Scheduled && i.job.run_at > T0 + 10_000 {
                assert_eq!(i.job.attempts, 0, "a deferral uses no attempt");
                deferred += 1;
            }
        }
        if deferred + g.entered() >= ids.len() {
            break deferred;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {deferred} deferred, {} running",
            g.entered()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        (g.entered(), deferred),
        (2, 4),
        "two probes across both instances, the rest deferred"
    );
    let s = backend
        .breaker_status("conformance-shared-partner", T0 + 10_000)
        .await
        .expect("breaker_status should succeed")
        .expect("a record");
    assert_eq!(s.state, BreakerState::HalfOpen);

    let mut probes = Vec::new();
    for id in &ids {
        if info(&*backend, *id).await.state == JobState::Active {
            probes.push(*id);
        }
    }
    assert_eq!(probes.len(), 2, "the probes are the running jobs");

    // The probes succeed: the store closes, both instances adopt it, every job runs.
    g.release();
    for id in &probes {
        eventually(&*backend, *id, "a probe's success", |i| {
            i.state == JobState::Succeeded
        })
        .await;
    }
    assert_eq!(sa.sync().await.expect("sync a").state, BreakerState::Closed);
    assert_eq!(sb.sync().await.expect("sync b").state, BreakerState::Closed);
    assert_eq!(sa.local().state(), BreakerState::Closed);
    assert_eq!(sb.local().state(), BreakerState::Closed);
    clock.advance(Duration::from_secs(1));
    for id in &ids {
        let done = eventually(&*backend, *id, "every job's run", |i| {
            i.state == JobState::Succeeded
        })
        .await;
        assert_eq!(done.job.attempts, 1, "one attempt each");
    }
    assert_eq!(g.entered(), 6);
    wa.stop().await;
    wb.stop().await;
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_breakers {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            breaker_opens_on_a_quorum_of_instances,
            breaker_signals_slide_out_of_the_window,
            breaker_probes_are_bounded_across_instances,
            breaker_probe_results_close_or_reopen_with_backoff,
            breaker_commands_override_and_reset,
            breaker_keys_expire_after_the_ttl,
            shared_breaker_trips_every_instance,
            deferred_completion_keeps_the_attempt,
            worker_defers_tasks_behind_an_open_breaker,
            worker_refuses_an_unknown_breaker,
            workers_share_a_breaker_through_the_store,
        }
    };
}
