//! The limiter maths against exact references under simulated time: a brute-force log of
//! granted calls, replayed for every decision.

use celeriac_core::limit::maths::{decide, LimitState};
use celeriac_core::limit::{Algorithm, LocalLimiter, Quota};
use proptest::prelude::*;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;

/// The granted calls so far: (time ms, cost).
type Log = Vec<(i64, u32)>;

/// GCRA without a TAT: a call of cost `c` at `now` conforms iff for every granted call `i`,
/// `T·(costs from i on + c) − τ ≤ now − t_i`, and `T·c ≤ τ` (the max-plus unrolling of
/// `tat = max(tat, t) + T·c`).
fn gcra_reference(q: &Quota, log: &Log, now: i64, cost: u32) -> bool {
    let t = i128::from(q.interval_us());
    let tau = i128::from(q.tolerance_us());
    if t * i128::from(cost) > tau {
        return false;
    }
    let mut suffix = i128::from(cost);
    for &(at, c) in log.iter().rev() {
        suffix += i128::from(c);
        if t * suffix - tau > i128::from(now - at) * 1000 {
            return false;
        }
    }
    true
}

fn in_range(log: &Log, from: i64, to: i64) -> i64 {
    log.iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, c)| i64::from(*c))
        .sum()
}

fn start_of(now: i64, w: i64) -> i64 {
    now - now.rem_euclid(w)
}

fn fixed_reference(q: &Quota, log: &Log, now: i64, cost: u32) -> bool {
    let w = q.window_ms();
    let s = start_of(now, w);
    in_range(log, s, s + w) + i64::from(cost) <= i64::from(q.limit())
}

fn sliding_reference(q: &Quota, log: &Log, now: i64, cost: u32) -> bool {
    let w = q.window_ms();
    let s = start_of(now, w);
    let prev = i128::from(in_range(log, s - w, s));
    let cur = i128::from(in_range(log, s, s + w));
    let (w, e) = (i128::from(w), i128::from(now - s));
    prev * (w - e) + (cur + i128::from(cost)) * w <= i128::from(q.limit()) * w
}

fn reference(q: &Quota, log: &Log, now: i64, cost: u32) -> bool {
    match q.algorithm() {
        Algorithm::Gcra => gcra_reference(q, log, now, cost),
        Algorithm::FixedWindow => fixed_reference(q, log, now, cost),
        Algorithm::SlidingWindow => sliding_reference(q, log, now, cost),
    }
}

/// The most cost granted in any window `[t, t + w)` starting at a granted call.
fn max_in_any_window(log: &Log, w: i64) -> i64 {
    log.iter()
        .map(|(t, _)| in_range(log, *t, t + w))
        .max()
        .unwrap_or(0)
}

fn quota_strategy(algorithm: Algorithm) -> impl Strategy<Value = Quota> {
    (1u32..12, 1i64..5_000, 0u32..4).prop_map(move |(limit, window, burst)| {
        Quota::new(limit, Duration::from_millis(window as u64))
            .burst(burst)
            .with_algorithm(algorithm)
    })
}

/// Calls: (ms after the previous call, cost up to the quota's capacity).
fn calls() -> impl Strategy<Value = Vec<(i64, u32)>> {
    prop::collection::vec((0i64..700, 0u32..4), 1..120)
}

/// Runs `calls` through the limiter and the reference; checks they agree on every call, that
/// a denied call's retry-after is exact, and returns the granted log.
fn run(q: &Quota, calls: &[(i64, u32)]) -> Result<Log, TestCaseError> {
    let limiter = LocalLimiter::new();
    let quotas = [q.clone()];
    let mut log = Log::new();
    let mut now = T0;
    for &(gap, cost) in calls {
        now += gap;
        let cost = cost.min(q.capacity() as u32);
        let expected = reference(q, &log, now, cost);
        let d = limiter
            .check("k", &quotas, cost, now)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(d.allowed, expected, "{} at +{} cost {}", q, now - T0, cost);
        if d.allowed {
            prop_assert!(d.retry_after.is_none());
            if cost > 0 {
                log.push((now, cost));
            }
        } else {
            let retry = d
                .retry_after
                .expect("a denial says when to retry")
                .as_millis() as i64;
            prop_assert!(retry > 0);
            prop_assert!(
                reference(q, &log, now + retry, cost),
                "{} denied at +{}: not allowed at its retry-after {} ms",
                q,
                now - T0,
                retry
            );
            prop_assert!(
                !reference(q, &log, now + retry - 1, cost),
                "{} denied at +{}: already allowed 1 ms before its retry-after {} ms",
                q,
                now - T0,
                retry
            );
        }
    }
    Ok(log)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// GCRA allows exactly what the reference allows, never more than `limit + burst` in any
    /// window of the quota's length, and its retry-after is exact.
    #[test]
    fn gcra_matches_the_reference_and_its_bound(q in quota_strategy(Algorithm::Gcra), calls in calls()) {
        let log = run(&q, &calls)?;
        let most = max_in_any_window(&log, q.window_ms());
        prop_assert!(most <= i64::from(q.limit() + q.burst_size()), "{q}: {most} in one window");
    }

    /// The fixed window allows exactly `limit` per aligned window.
    #[test]
    fn fixed_window_is_exact(q in quota_strategy(Algorithm::FixedWindow), calls in calls()) {
        let log = run(&q, &calls)?;
        for (t, _) in &log {
            let s = t - t.rem_euclid(q.window_ms());
            prop_assert!(in_range(&log, s, s + q.window_ms()) <= i64::from(q.limit()));
        }
    }

    /// The sliding window follows its weighted count exactly, keeps every fixed window within
    /// `limit` and every sliding window within its documented `2 × limit`.
    #[test]
    fn sliding_window_stays_within_its_bound(q in quota_strategy(Algorithm::SlidingWindow), calls in calls()) {
        let log = run(&q, &calls)?;
        let w = q.window_ms();
        for (t, _) in &log {
            let s = t - t.rem_euclid(w);
            prop_assert!(in_range(&log, s, s + w) <= i64::from(q.limit()));
        }
        prop_assert!(max_in_any_window(&log, w) <= 2 * i64::from(q.limit()));
    }

    /// Several quotas: allowed exactly when every reference allows, and a denied call charges
    /// none of them.
    #[test]
    fn several_quotas_are_all_or_nothing(
        a in quota_strategy(Algorithm::Gcra),
        b in quota_strategy(Algorithm::FixedWindow),
        c in quota_strategy(Algorithm::SlidingWindow),
        calls in calls(),
    ) {
        let quotas = [a, b.name("b"), c.name("c")];
        let limiter = LocalLimiter::new();
        let mut states = [LimitState::default(); 3];
        let mut log = Log::new();
        let mut now = T0;
        for &(gap, cost) in &calls {
            now += gap;
            let cost = quotas.iter().map(|q| q.capacity() as u32).fold(cost, u32::min);
            let expected = quotas.iter().all(|q| reference(q, &log, now, cost));
            let before = states;
            let pure = decide(&quotas, &mut states, cost, now, |_, _| {});
            let local = limiter.check("k", &quotas, cost, now).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(pure.allowed, expected);
            prop_assert_eq!(pure, local, "the local limiter decides as the maths");
            if pure.allowed {
                if cost > 0 { log.push((now, cost)); }
            } else {
                prop_assert_eq!(states, before, "a denied call changes no state");
                let worst = pure.retry_after.expect("denied");
                prop_assert!(!reference(&quotas[pure.quota], &log, now, cost), "the reported quota is one that denies");
                prop_assert!(worst > Duration::ZERO);
            }
        }
    }
}

/// Remaining and reset-after of GCRA on a worked example: 10/s (100 ms apart), burst 2.
#[test]
fn gcra_remaining_and_reset_are_exact() {
    let l = LocalLimiter::new();
    let q = [Quota::per_second(10).burst(2)];
    let d = l.check("k", &q, 1, T0).expect("ok");
    assert_eq!(
        (d.allowed, d.limit, d.remaining, d.reset_after),
        (true, 10, 2, Duration::from_millis(100))
    );
    let d = l.check("k", &q, 2, T0).expect("ok");
    assert_eq!(
        (d.allowed, d.remaining, d.reset_after),
        (true, 0, Duration::from_millis(300))
    );
    let d = l.check("k", &q, 1, T0 + 50).expect("ok");
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(Duration::from_millis(50)));
    assert_eq!(d.reset_after, Duration::from_millis(250));
    assert!(l.check("k", &q, 1, T0 + 100).expect("ok").allowed);
    let e = l
        .check("k", &q, 4, T0 + 100)
        .expect_err("cost above capacity");
    assert!(e.to_string().contains("rate limit cost"), "{e}");
}

/// A sliding window's retry-after on a worked example: 10 per 1000 ms.
#[test]
fn sliding_window_worked_example() {
    let l = LocalLimiter::new();
    let q = [Quota::per_second(10).with_algorithm(Algorithm::SlidingWindow)];
    // All ten in the last 100 ms of a window.
    let start = T0 - T0.rem_euclid(1000);
    assert!(l.check("k", &q, 10, start + 900).expect("ok").allowed);
    // At +200 ms into the next window, the weight of those ten is 0.8 → 8: two more fit.
    let d = l.check("k", &q, 2, start + 1200).expect("ok");
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.remaining, 0);
    // A third: 10·800 + 3·1000 > 10·1000, denied until 10·(1000 − e) + 3000 ≤ 10000, that
    // is e ≥ 300: 100 ms from now.
    let d = l.check("k", &q, 1, start + 1200).expect("ok");
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
    assert!(l
        .check("k", &q, 1, start + 1299)
        .expect("ok")
        .retry_after
        .is_some());
    assert!(l.check("k", &q, 1, start + 1300).expect("ok").allowed);
}
