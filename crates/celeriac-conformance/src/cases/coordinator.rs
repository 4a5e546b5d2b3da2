//! The coordinator (leader lease with fencing tokens, schedule state) and the beat loop on top
//! of it: several beats never enqueue a tick twice, missed ticks follow the policy, paused
//! schedules do not fire. Time is a [`ManualClock`] the cases move.

use crate::support::{exists, NOOP, T0};
use celeriac_core::backend::QueueAdmin;
use celeriac_core::backend::{Coordinator, ScheduleState};
use celeriac_core::schedule::tick_job_id;
use celeriac_core::{
    Beat, BeatConfig, Broker, Clock, JobState, ManualClock, Missed, ResultStore, Schedule, UnixMs,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(30);

async fn acquire<B: Coordinator>(b: &B, holder: &str, now: UnixMs) -> Option<u64> {
    b.acquire_leader("beat", holder, TTL, now)
        .await
        .expect("acquire_leader succeeds")
}

async fn record<B: Coordinator>(
    b: &B,
    token: u64,
    schedule: &str,
    tick: UnixMs,
    now: UnixMs,
) -> bool {
    b.record_tick("beat", token, schedule, tick, now)
        .await
        .expect("record_tick succeeds")
}

async fn state<B: Coordinator>(b: &B, schedule: &str) -> Option<ScheduleState> {
    b.schedule_states()
        .await
        .expect("schedule_states succeeds")
        .into_iter()
        .find(|s| s.name == schedule)
}

/// The lease is exclusive while it lasts, renewal keeps the token, expiry hands it over with
/// a larger token, and release frees it (for a still larger token).
pub async fn leader_lease_is_exclusive_and_fenced<
    B: Broker + ResultStore + Coordinator + celeriac_core::ProcessRegistry,
>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let t1 = acquire(b, "a", T0).await.expect("a free lease is taken");
    assert_eq!(acquire(b, "b", T0 + 1).await, None, "held by a");
    assert_eq!(
        acquire(b, "a", T0 + 10_000).await,
        Some(t1),
        "a renewal keeps the token"
    );
    // a's lease now runs to T0 + 40 s.
    assert_eq!(acquire(b, "b", T0 + 39_999).await, None, "still held");
    let t2 = acquire(b, "b", T0 + 40_000)
        .await
        .expect("an expired lease is taken over");
    assert!(t2 > t1, "a new holder gets a larger token ({t2} > {t1})");
    assert_eq!(acquire(b, "a", T0 + 40_001).await, None, "a lost it");
    assert!(
        !b.release_leader("beat", t1).await.expect("release"),
        "a stale token releases nothing"
    );
    assert_eq!(acquire(b, "a", T0 + 40_002).await, None, "still b's");
    assert!(b.release_leader("beat", t2).await.expect("release"));
    let t3 = acquire(b, "a", T0 + 40_003)
        .await
        .expect("a released lease is free before its expiry");
    assert!(t3 > t2, "tokens keep growing after a release ({t3} > {t2})");
    // Another lease name is independent.
    assert!(b
        .acquire_leader("other", "b", TTL, T0 + 40_004)
        .await
        .expect("acquire")
        .is_some());
}

/// A tick is recorded only by the current holder, only while its lease lasts, and only if it
/// is later than the one recorded.
pub async fn record_tick_is_fenced<
    B: Broker + ResultStore + Coordinator + celeriac_core::ProcessRegistry,
>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let t1 = acquire(b, "a", T0).await.expect("taken");
    assert!(record(b, t1, "s", 1_000, T0).await);
    assert!(!record(b, t1, "s", 1_000, T0).await, "the same tick again");
    assert!(!record(b, t1, "s", 500, T0).await, "an older tick");
    assert!(record(b, t1, "s", 2_000, T0 + 1).await);
    assert!(
        !record(b, t1 + 1, "s", 3_000, T0 + 2).await,
        "a token that never held the lease"
    );
    assert!(
        !record(b, t1, "s", 3_000, T0 + 30_000).await,
        "an expired lease records nothing"
    );
    let t2 = acquire(b, "b", T0 + 30_001).await.expect("taken over");
    assert!(!record(b, t1, "s", 3_000, T0 + 30_002).await, "stale token");
    assert!(record(b, t2, "s", 3_000, T0 + 30_002).await);
    let s = state(b, "s").await.expect("state kept");
    assert_eq!(s.last_tick, Some(3_000));
    assert!(!s.paused);
    assert!(state(b, "never").await.is_none());
}

/// Pausing is kept per schedule, alongside its last tick.
pub async fn schedules_pause_and_resume<
    B: Broker + ResultStore + Coordinator + celeriac_core::ProcessRegistry,
>(
    backend: Arc<B>,
) {
    let b = &*backend;
    b.set_schedule_paused("fresh", true).await.expect("pause");
    let s = state(b, "fresh")
        .await
        .expect("a paused schedule has a state");
    assert!(s.paused);
    assert_eq!(s.last_tick, None);
    let t = acquire(b, "a", T0).await.expect("taken");
    assert!(record(b, t, "ticked", 5_000, T0).await);
    b.set_schedule_paused("ticked", true).await.expect("pause");
    let s = state(b, "ticked").await.expect("state");
    assert!(s.paused);
    assert_eq!(s.last_tick, Some(5_000), "pausing keeps the last tick");
    b.set_schedule_paused("ticked", false)
        .await
        .expect("resume");
    let s = state(b, "ticked").await.expect("state");
    assert!(!s.paused);
    assert_eq!(s.last_tick, Some(5_000));
}

fn every(name: &str, secs: u64, queue: &str, missed: Missed) -> Schedule {
    Schedule::builder(name)
        .every(Duration::from_secs(secs))
        .task(NOOP)
        .queue(queue)
        .missed(missed)
        .build()
        .expect("a valid schedule")
}

fn beat<B: Broker + ResultStore + Coordinator + celeriac_core::ProcessRegistry>(
    backend: &Arc<B>,
    schedules: Vec<Schedule>,
    holder: &str,
    clock: &ManualClock,
) -> Beat<B> {
    Beat::new(backend.clone(), schedules)
        .expect("distinct names")
        .config(BeatConfig {
            holder: holder.to_string(),
            late_after: Duration::from_secs(30),
            max_sleep: Duration::from_millis(5),
            ..BeatConfig::default().with_lease(TTL)
        })
        .expect("valid config")
        .clock(Arc::new(clock.clone()))
}

async fn step<B: Broker + Coordinator + celeriac_core::ProcessRegistry>(
    beat: &mut Beat<B>,
) -> celeriac_core::beat::StepReport {
    beat.step().await.expect("a beat pass succeeds")
}

async fn jobs_in<B: Broker + QueueAdmin>(b: &B, queue: &str) -> u64 {
    b.stats()
        .await
        .expect("stats")
        .iter()
        .filter(|q| q.queue == queue)
        .map(|q| q.counts.values().sum::<u64>())
        .sum()
}

/// The first multiple of `period` ms after `t`.
fn next_multiple(t: UnixMs, period: UnixMs) -> UnixMs {
    (t.div_euclid(period) + 1) * period
}

/// Two beats on one store, stepped in turn as time passes, and a takeover when the leader
/// stops: every tick is enqueued exactly once, with its deterministic id, and only the leader
/// fires.
pub async fn two_beats_fire_each_tick_once<
    B: Broker + QueueAdmin + ResultStore + Coordinator + celeriac_core::ProcessRegistry,
>(
    backend: Arc<B>,
) {
    let q = "beat-two";
    let clock = ManualClock::new(T0);
    let sched = || vec![every("every-5s", 5, q, Missed::CatchUp(100))];
    let mut a = beat(&backend, sched(), "a", &clock);
    let mut b = beat(&backend, sched(), "b", &clock);
    let first = step(&mut a).await;
    assert!(first.leader, "the first beat takes the free lease");
    assert!(!step(&mut b).await.leader, "the second one follows");

    let mut fired: BTreeSet<UnixMs> = BTreeSet::new();
    let start = clock.now_ms();
    // Two minutes in one-second steps, both beats stepping.
    for _ in 0..120 {
        clock.advance(Duration::from_secs(1));
        let ra = step(&mut a).await;
        let rb = step(&mut b).await;
        assert!(!(ra.leader && rb.leader), "never two leaders");
        assert_eq!(rb.fired, 0, "a follower fires nothing");
    }
    let mid = clock.now_ms();
    // a dies (stops stepping); b takes over once a's lease runs out and catches up.
    for _ in 0..120 {
        clock.advance(Duration::from_secs(1));
        step(&mut b).await;
    }
    assert!(b.is_leader(), "b took over");
    let end = clock.now_ms();
    let mut t = next_multiple(start - 1, 5_000);
    while t <= end {
        fired.insert(t);
        t += 5_000;
    }
    for &tick in &fired {
        let id = tick_job_id("every-5s", tick);
        assert!(
            exists(&*backend, id).await,
            "tick {tick} ({}) was fired",
            if tick <= mid {
                "before the takeover"
            } else {
                "after it"
            }
        );
    }
    assert_eq!(
        jobs_in(&*backend, q).await,
        fired.len() as u64,
        "each tick enqueued once, no other job"
    );
    let total = a.stats().fired.load(std::sync::atomic::Ordering::Relaxed)
        + b.stats().fired.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(total, fired.len() as u64, "no tick fired twice");
    let info = backend
        .get(tick_job_id(
            "every-5s",
            *fired.iter().next().expect("ticks"),
        ))
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(info.state, JobState::Pending);
    // The tick's unique key is held: a job with another id but the same key adds nothing.
    let first_tick = *fired.iter().next().expect("ticks");
    let dup = a.job_for(&sched()[0], first_tick, end).expect("job");
    let mut dup2 = dup.clone();
    dup2.id = celeriac_core::JobId::new();
    let stood = backend.enqueue(vec![dup2], end).await.expect("enqueue");
    assert_eq!(stood, vec![dup.id], "the tick's job stands for a duplicate");
    assert_eq!(jobs_in(&*backend, q).await, fired.len() as u64);
    assert_eq!(
        info.job
            .headers
            .get("celeriac-schedule")
            .map(String::as_str),
        Some("every-5s")
    );
}

/// Two beat loops running at once (`Beat::run`), sharing a manual clock that moves in steps:
/// each tick is in the store exactly once.
pub async fn beat_loops_running_at_once_fire_each_tick_once<
    B: Broker + QueueAdmin + ResultStore + Coordinator + celeriac_core::ProcessRegistry,
>(
    backend: Arc<B>,
) {
    let q = "beat-loops";
    let clock = ManualClock::new(T0);
    let sched = || vec![every("loop-2s", 2, q, Missed::CatchUp(1000))];
    let loops: Vec<_> = ["x", "y"]
        .iter()
        .map(|h| {
            let beat = beat(&backend, sched(), h, &clock);
            let stop = beat.shutdown_handle();
            let stats = beat.stats();
            (tokio::spawn(beat.run()), stop, stats)
        })
        .collect();
    let start = clock.now_ms();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        clock.advance(Duration::from_millis(500));
    }
    // Let the last ticks be fired, then stop both.
    let end = clock.now_ms();
    let expected: Vec<UnixMs> = {
        let mut v = Vec::new();
        let mut t = next_multiple(start - 1, 2_000);
        while t <= end {
            v.push(t);
            t += 2_000;
        }
        v
    };
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while jobs_in(&*backend, q).await < expected.len() as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the beats did not fire {} ticks in time",
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut fired = 0;
    for (handle, stop, stats) in loops {
        stop.cancel();
        handle
            .await
            .expect("the beat task ends")
            .expect("the beat ran");
        fired += stats.fired.load(std::sync::atomic::Ordering::Relaxed);
    }
    for &tick in &expected {
        assert!(
            exists(&*backend, tick_job_id("loop-2s", tick)).await,
            "tick {tick}"
        );
    }
    assert_eq!(
        jobs_in(&*backend, q).await,
        expected.len() as u64,
        "each tick once in the store"
    );
    assert!(fired >= expected.len() as u64);
}

/// Ticks missed while no beat ran: skip fires none, run-once the latest, catch-up the
/// latest N; the next tick on time fires for all three.
pub async fn missed_ticks_follow_the_policy<
    B: Broker + QueueAdmin + ResultStore + Coordinator + celeriac_core::ProcessRegistry,
>(
    backend: Arc<B>,
) {
    let q = "beat-missed";
    let clock = ManualClock::new(T0);
    let schedules = vec![
        every("skip", 60, q, Missed::Skip),
        every("once", 60, q, Missed::RunOnce),
        every("catch3", 60, q, Missed::CatchUp(3)),
    ];
    let mut first = beat(&backend, schedules.clone(), "first", &clock);
    assert_eq!(
        step(&mut first).await.fired,
        0,
        "no back-fill on first sight"
    );
    // The beat goes away; ten ticks pass; a new one starts 45 s after the tenth.
    let tick0 = next_multiple(T0, 60_000);
    let tenth = tick0 + 9 * 60_000;
    clock.set(tenth + 45_000);
    let mut second = beat(&backend, schedules, "second", &clock);
    // It waits for the first one's lease to run out.
    let report = step(&mut second).await;
    assert!(report.leader, "the first lease expired long ago");
    let fired_ids = |name: &str, ticks: &[UnixMs]| {
        ticks
            .iter()
            .map(|&t| tick_job_id(name, t))
            .collect::<Vec<_>>()
    };
    for id in fired_ids(
        "skip",
        &(0..10).map(|i| tick0 + i * 60_000).collect::<Vec<_>>(),
    ) {
        assert!(!exists(&*backend, id).await, "skip fires no missed tick");
    }
    assert!(
        exists(&*backend, tick_job_id("once", tenth)).await,
        "run once: the latest"
    );
    for i in 0..9 {
        assert!(!exists(&*backend, tick_job_id("once", tick0 + i * 60_000)).await);
    }
    for i in 0..10 {
        let t = tick0 + i * 60_000;
        assert_eq!(
            exists(&*backend, tick_job_id("catch3", t)).await,
            i >= 7,
            "catch up: the latest three (tick {i})"
        );
    }
    assert_eq!(report.fired, 4);
    assert_eq!(report.skipped, 10 + 9 + 7);
    assert_eq!(jobs_in(&*backend, q).await, 4);
    // The next tick is on time for all of them.
    clock.set(tenth + 60_000 + 1);
    let report = step(&mut second).await;
    assert_eq!(report.fired, 3);
    for name in ["skip", "once", "catch3"] {
        assert!(
            exists(&*backend, tick_job_id(name, tenth + 60_000)).await,
            "{name}"
        );
    }
}

/// A paused schedule does not fire, and resuming it does not fire the ticks that passed while
/// it was paused; a schedule paused in its definition never fires.
pub async fn paused_schedules_do_not_fire<
    B: Broker + QueueAdmin + ResultStore + Coordinator + celeriac_core::ProcessRegistry,
>(
    backend: Arc<B>,
) {
    let q = "beat-paused";
    let clock = ManualClock::new(T0);
    let held = Schedule::builder("held")
        .every(Duration::from_secs(10))
        .task(NOOP)
        .queue(q)
        .paused(true)
        .build()
        .expect("valid");
    let mut b = beat(
        &backend,
        vec![every("toggled", 10, q, Missed::CatchUp(100)), held],
        "p",
        &clock,
    );
    backend
        .set_schedule_paused("toggled", true)
        .await
        .expect("pause");
    assert_eq!(step(&mut b).await.fired, 0);
    for _ in 0..6 {
        clock.advance(Duration::from_secs(10));
        let r = step(&mut b).await;
        assert_eq!(r.fired, 0, "paused schedules fire nothing");
    }
    assert_eq!(jobs_in(&*backend, q).await, 0);
    backend
        .set_schedule_paused("toggled", false)
        .await
        .expect("resume");
    step(&mut b).await;
    assert_eq!(
        jobs_in(&*backend, q).await,
        0,
        "ticks that passed while paused are not caught up on"
    );
    let next = next_multiple(clock.now_ms(), 10_000);
    clock.set(next);
    let r = step(&mut b).await;
    assert_eq!(
        r.fired, 1,
        "resumed: the next tick fires, the held one does not"
    );
    assert!(exists(&*backend, tick_job_id("toggled", next)).await);
    assert!(!exists(&*backend, tick_job_id("held", next)).await);
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_coordinator {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            leader_lease_is_exclusive_and_fenced,
            record_tick_is_fenced,
            schedules_pause_and_resume,
            two_beats_fire_each_tick_once,
            beat_loops_running_at_once_fire_each_tick_once,
            missed_ticks_follow_the_policy,
            paused_schedules_do_not_fire,
        }
    };
}
