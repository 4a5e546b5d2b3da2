//! Rate limits ([`RateLimitStore`]): each algorithm with time from a
//! [`ManualClock`], several quotas all or nothing, cost, exact retry-after and reset-after,
//! agreement with the in-process limiter call for call, concurrency permits (a dead holder's
//! lease expires), and bad input.

use crate::support::T0;
use celeriac_core::limit::{Algorithm, Decision, LocalLimiter, Quota};
use celeriac_core::{Clock, Error, ManualClock, RateLimitStore};
use std::sync::Arc;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn check<B: RateLimitStore>(
    b: &B,
    key: &str,
    quotas: &[Quota],
    cost: u32,
    clock: &ManualClock,
) -> Decision {
    b.check_limits(key, quotas, cost, clock.now_ms())
        .await
        .unwrap_or_else(|e| panic!("check_limits({key}, cost {cost}) failed: {e}"))
}

/// GCRA, 60/minute with a burst of 2: three at once, then one a second; retry-after and
/// reset-after to the millisecond.
pub async fn limits_gcra_spaces_calls_with_a_burst<B: RateLimitStore>(backend: Arc<B>) {
    let b = &*backend;
    let clock = ManualClock::new(T0);
    let q = [Quota::per_minute(60).burst(2)];
    for (remaining, reset) in [(2, 1000), (1, 2000), (0, 3000)] {
        let d = check(b, "gcra", &q, 1, &clock).await;
        assert!(d.allowed, "{d:?}");
        assert_eq!((d.limit, d.remaining), (60, remaining));
        assert_eq!(d.reset_after, ms(reset));
        assert_eq!(d.retry_after, None);
    }
    let d = check(b, "gcra", &q, 1, &clock).await;
    assert!(!d.allowed, "the burst is spent");
    assert_eq!(d.retry_after, Some(ms(1000)));
    assert_eq!((d.remaining, d.reset_after), (0, ms(3000)));
    clock.advance(ms(999));
    let d = check(b, "gcra", &q, 1, &clock).await;
    assert_eq!(d.retry_after, Some(ms(1)), "1 ms early");
    clock.advance(ms(1));
    let d = check(b, "gcra", &q, 1, &clock).await;
    assert!(d.allowed, "exactly at the retry-after");
    clock.advance(ms(10_000));
    let d = check(b, "gcra", &q, 1, &clock).await;
    assert_eq!((d.allowed, d.remaining), (true, 2), "the burst refilled");
}

/// Fixed windows of 10 s aligned to the epoch: three per window, the fourth told to come
/// back when the window ends.
pub async fn limits_fixed_window_counts_per_window<B: RateLimitStore>(backend: Arc<B>) {
    let b = &*backend;
    let clock = ManualClock::new(T0 + 2_000);
    let q = [Quota::new(3, Duration::from_secs(10)).with_algorithm(Algorithm::FixedWindow)];
    for remaining in [2, 1, 0] {
        let d = check(b, "fixed", &q, 1, &clock).await;
        assert_eq!((d.allowed, d.remaining), (true, remaining));
        assert_eq!(d.reset_after, ms(8_000));
    }
    let d = check(b, "fixed", &q, 1, &clock).await;
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(ms(8_000)));
    clock.set(T0 + 9_999);
    assert!(!check(b, "fixed", &q, 1, &clock).await.allowed);
    clock.set(T0 + 10_000);
    let d = check(b, "fixed", &q, 1, &clock).await;
    assert_eq!((d.allowed, d.remaining), (true, 2), "a new window");
    assert_eq!(d.reset_after, ms(10_000));
}

/// The sliding window counts the previous window by how much of it still overlaps.
pub async fn limits_sliding_window_weighs_the_previous_window<B: RateLimitStore>(backend: Arc<B>) {
    let b = &*backend;
    let clock = ManualClock::new(T0 + 900);
    let q = [Quota::per_second(10).with_algorithm(Algorithm::SlidingWindow)];
    assert!(check(b, "sliding", &q, 10, &clock).await.allowed);
    assert!(!check(b, "sliding", &q, 1, &clock).await.allowed);
    // 200 ms into the next window those ten weigh 8: two more fit, a third does not.
    clock.set(T0 + 1_200);
    let d = check(b, "sliding", &q, 2, &clock).await;
    assert_eq!((d.allowed, d.remaining), (true, 0), "{d:?}");
    assert_eq!(
        d.reset_after,
        ms(1_800),
        "the current window's two weigh until its end + 1 s"
    );
    let d = check(b, "sliding", &q, 1, &clock).await;
    assert!(!d.allowed);
    assert_eq!(
        d.retry_after,
        Some(ms(100)),
        "10·(1000 − e) + 3000 ≤ 10000 from e = 300"
    );
    clock.set(T0 + 1_299);
    assert!(!check(b, "sliding", &q, 1, &clock).await.allowed);
    clock.set(T0 + 1_300);
    assert!(check(b, "sliding", &q, 1, &clock).await.allowed);
}

/// Two quotas in one call: the stricter one is reported, and a denied call charges neither.
pub async fn limits_several_quotas_are_all_or_nothing<B: RateLimitStore>(backend: Arc<B>) {
    let b = &*backend;
    let clock = ManualClock::new(T0);
    let gcra = Quota::per_minute(60).burst(4);
    let fixed = Quota::new(3, Duration::from_secs(10))
        .with_algorithm(Algorithm::FixedWindow)
        .name("b");
    let both = [gcra.clone(), fixed];
    let d = check(b, "multi", &both, 1, &clock).await;
    assert!(d.allowed);
    assert_eq!(
        (d.quota, d.limit, d.remaining),
        (1, 3, 2),
        "the fixed window has fewer left"
    );
    assert!(check(b, "multi", &both, 1, &clock).await.allowed);
    assert!(check(b, "multi", &both, 1, &clock).await.allowed);
    let d = check(b, "multi", &both, 1, &clock).await;
    assert!(!d.allowed);
    assert_eq!((d.quota, d.limit), (1, 3), "the fixed window denies");
    assert_eq!(d.retry_after, Some(ms(10_000)));
    // GCRA holds three calls (TAT now + 3 s of a 5 s tolerance): two more fit only if the
    // denied call charged nothing.
    let d = check(b, "multi", std::slice::from_ref(&gcra), 2, &clock).await;
    assert_eq!(
        (d.allowed, d.remaining),
        (true, 0),
        "the denied call was not charged: {d:?}"
    );
}

/// A cost charges several units at once; a cost that does not fit is denied without a charge.
pub async fn limits_cost_charges_several_units<B: RateLimitStore>(backend: Arc<B>) {
    let b = &*backend;
    let clock = ManualClock::new(T0);
    let q = [Quota::new(10, Duration::from_secs(10)).with_algorithm(Algorithm::FixedWindow)];
    assert_eq!(check(b, "cost", &q, 4, &clock).await.remaining, 6);
    assert_eq!(check(b, "cost", &q, 4, &clock).await.remaining, 2);
    let d = check(b, "cost", &q, 4, &clock).await;
    assert_eq!((d.allowed, d.remaining), (false, 2));
    let d = check(b, "cost", &q, 2, &clock).await;
    assert_eq!((d.allowed, d.remaining), (true, 0));
    let d = check(b, "cost", &q, 0, &clock).await;
    assert!(d.allowed, "a cost of zero asks without charging");
    let g = [Quota::per_second(100).burst(9)];
    let d = check(b, "cost-gcra", &g, 10, &clock).await;
    assert_eq!((d.allowed, d.remaining), (true, 0));
    assert_eq!(d.reset_after, ms(100));
}

/// A deterministic stream of calls over every algorithm, one and several quotas at a time:
/// the store decides exactly as the in-process limiter (the same maths, run in Lua on Redis).
pub async fn limits_match_the_local_limiter_call_for_call<B: RateLimitStore>(backend: Arc<B>) {
    let b = &*backend;
    let local = LocalLimiter::new();
    let sets = [
        vec![Quota::per_second(5).burst(2)],
        vec![Quota::new(7, Duration::from_millis(1_500)).with_algorithm(Algorithm::SlidingWindow)],
        vec![
            Quota::new(4, Duration::from_millis(700)).with_algorithm(Algorithm::FixedWindow),
            Quota::per_minute(90).burst(3).name("m"),
            Quota::new(9, Duration::from_secs(3))
                .with_algorithm(Algorithm::SlidingWindow)
                .name("s"),
        ],
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    let mut now = T0 + 123;
    for i in 0..300 {
        now += next(400) as i64;
        let set = &sets[i % sets.len()];
        let cap = set.iter().map(|q| q.capacity() as u32).min().unwrap_or(1);
        let cost = (next(3) as u32).min(cap);
        let key = format!("same:{}", i % sets.len());
        let want = local
            .check(&key, set, cost, now)
            .expect("the local limiter decides");
        let got = b
            .check_limits(&key, set, cost, now)
            .await
            .expect("the store decides");
        assert_eq!(
            got,
            want,
            "call {i} at +{} ms, cost {cost}, quotas {set:?}",
            now - T0
        );
    }
}

/// Keys are apart (odd bytes and braces included), and state no longer matters once its
/// reset-after has passed.
pub async fn limits_keys_are_apart_and_state_expires<B: RateLimitStore>(backend: Arc<B>) {
    let b = &*backend;
    let clock = ManualClock::new(T0);
    let q = [Quota::per_minute(1)];
    let keys = ["user:1", "user:2", "}x{", "{user:1}", "ключ"];
    for k in keys {
        assert!(check(b, k, &q, 1, &clock).await.allowed, "{k} starts fresh");
    }
    for k in keys {
        assert!(!check(b, k, &q, 1, &clock).await.allowed, "{k} is spent");
    }
    let long = "k".repeat(celeriac_core::limit::MAX_KEY_LEN);
    assert!(
        check(b, &long, &q, 1, &clock).await.allowed,
        "the longest key works"
    );
    clock.advance(Duration::from_secs(60));
    for k in keys {
        let d = check(b, k, &q, 1, &clock).await;
        assert!(d.allowed, "{k} is fresh a minute later");
    }
}

/// At most two permits at once; a holder renews its own; a released one frees a place; a
/// holder that died (never releases) frees it when its lease ends.
pub async fn limits_permits_cap_concurrency_and_expire<B: RateLimitStore>(backend: Arc<B>) {
    let b = &*backend;
    let clock = ManualClock::new(T0);
    let lease = Duration::from_secs(30);
    let acquire = |holder: &'static str| {
        let now = clock.now_ms();
        async move {
            b.acquire_permit("jobs", holder, 2, lease, now)
                .await
                .expect("acquire_permit")
        }
    };
    let d = acquire("a").await;
    assert_eq!((d.allowed, d.limit, d.remaining), (true, 2, 1));
    clock.advance(ms(1_000));
    assert!(acquire("b").await.allowed);
    let d = acquire("c").await;
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
    assert_eq!(d.retry_after, Some(ms(29_000)), "until a's lease ends");
    assert_eq!(d.reset_after, ms(30_000), "until b's lease ends");
    assert!(acquire("a").await.allowed, "a renews its own permit");
    let now = clock.now_ms();
    assert!(b.release_permit("jobs", "b", now).await.expect("release"));
    assert!(
        !b.release_permit("jobs", "b", now).await.expect("release"),
        "only once"
    );
    assert!(acquire("c").await.allowed, "b's place is free");
    // a and c now die without releasing: their leases run out.
    clock.advance(lease - ms(1));
    assert!(
        !acquire("d").await.allowed,
        "leases live until their very end"
    );
    clock.advance(ms(1));
    let d = acquire("d").await;
    assert_eq!(
        (d.allowed, d.remaining),
        (true, 1),
        "the dead holders' leases expired"
    );
    let now = clock.now_ms();
    assert!(
        !b.release_permit("jobs", "a", now).await.expect("release"),
        "an expired lease is not held"
    );
    let other = b
        .acquire_permit("other", "a", 1, lease, now)
        .await
        .expect("acquire");
    assert!(other.allowed, "permits of another key are apart");
}

fn config_error(e: Error, setting: &str, what: &str) {
    match e {
        Error::Config {
            setting: s,
            message,
        } => {
            assert_eq!(s, setting, "{what}: {message}");
        }
        other => panic!("{what}: expected a config error on `{setting}`, got {other}"),
    }
}

/// Concurrent decisions each count once, and keys stay apart: 200 callers at one instant on
/// three keys (a fixed window of 50, a GCRA burst of 50, and both together) get exactly 50
/// allowed per key, however the store groups them.
pub async fn limits_concurrent_calls_count_once<B: RateLimitStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let fixed = Quota::per_minute(50).with_algorithm(Algorithm::FixedWindow);
    let gcra = Quota::per_minute(50).burst(49);
    let cases: Vec<(&str, Vec<Quota>)> = vec![
        ("concurrent-fixed", vec![fixed.clone()]),
        ("concurrent-gcra", vec![gcra.clone()]),
        ("concurrent-both", vec![fixed, gcra]),
    ];
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200 {
        for (key, quotas) in &cases {
            let (b, key, quotas, now) = (backend.clone(), *key, quotas.clone(), clock.now_ms());
            calls.spawn(async move {
                let d = b
                    .check_limits(key, &quotas, 1, now)
                    .await
                    .unwrap_or_else(|e| panic!("call {i} on {key} failed: {e}"));
                (key, d.allowed)
            });
        }
    }
    let mut allowed = std::collections::BTreeMap::new();
    while let Some(done) = calls.join_next().await {
        let (key, ok) = done.expect("the call ran");
        *allowed.entry(key).or_insert(0) += u32::from(ok);
    }
    for (key, _) in &cases {
        assert_eq!(allowed.get(key), Some(&50), "{key}: {allowed:?}");
    }
}

/// Bad keys, quotas, costs and permit settings are clear errors naming the setting.
pub async fn limits_bad_input_is_a_clear_error<B: RateLimitStore>(backend: Arc<B>) {
    let b = &*backend;
    let ok = [Quota::per_minute(10)];
    let long = "k".repeat(celeriac_core::limit::MAX_KEY_LEN + 1);
    let cases: Vec<(&str, Vec<Quota>, u32, &str, &str)> = vec![
        ("", ok.to_vec(), 1, "rate limit key", "an empty key"),
        (
            &long,
            ok.to_vec(),
            1,
            "rate limit key",
            "a key that is too long",
        ),
        (
            "k",
            vec![Quota::per_minute(0)],
            1,
            "rate limit",
            "a zero limit",
        ),
        (
            "k",
            vec![Quota::new(5, Duration::ZERO)],
            1,
            "rate limit",
            "a zero window",
        ),
        (
            "k",
            ok.to_vec(),
            2,
            "rate limit cost",
            "a cost above the capacity",
        ),
        (
            "k",
            vec![ok[0].clone(), ok[0].clone().name("x")],
            1,
            "rate limit",
            "a quota twice",
        ),
        (
            "k",
            (1..=9).map(Quota::per_minute).collect(),
            1,
            "rate limit",
            "too many quotas",
        ),
    ];
    for (key, quotas, cost, setting, what) in cases {
        let e = b
            .check_limits(key, &quotas, cost, T0)
            .await
            .expect_err(what);
        config_error(e, setting, what);
    }
    let lease = Duration::from_secs(1);
    let e = b
        .acquire_permit("k", "h", 0, lease, T0)
        .await
        .expect_err("zero");
    config_error(e, "concurrency limit", "a concurrency limit of zero");
    let e = b
        .acquire_permit("k", "h", 1, Duration::ZERO, T0)
        .await
        .expect_err("zero lease");
    config_error(e, "permit lease", "a zero lease");
    let e = b
        .acquire_permit("k", "", 1, lease, T0)
        .await
        .expect_err("holder");
    config_error(e, "permit holder", "an empty holder");
    let e = b
        .release_permit(&long, "h", T0)
        .await
        .expect_err("long key");
    config_error(e, "rate limit key", "a long key on release");
    assert!(
        b.check_limits("k", &[], 1, T0)
            .await
            .expect("no quota")
            .allowed,
        "no quota allows"
    );
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_rate_limits {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            limits_gcra_spaces_calls_with_a_burst,
            limits_fixed_window_counts_per_window,
            limits_sliding_window_weighs_the_previous_window,
            limits_several_quotas_are_all_or_nothing,
            limits_cost_charges_several_units,
            limits_match_the_local_limiter_call_for_call,
            limits_keys_are_apart_and_state_expires,
            limits_permits_cap_concurrency_and_expire,
            limits_concurrent_calls_count_once,
            limits_bad_input_is_a_clear_error,
        }
    };
}
