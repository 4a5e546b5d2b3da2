//! Every transition of the state machine, driven by a [`ManualClock`].

use super::*;
use crate::clock::ManualClock;
use crate::Error;

const T0: UnixMs = 1_700_000_000_000;

fn clock() -> ManualClock {
    ManualClock::new(T0)
}

/// Count window of 10, opens at 50% once 4 calls were seen, 2 probes, open 10 s doubling
/// up to 40 s, no jitter.
fn builder(clock: &ManualClock) -> BreakerBuilder {
    CircuitBreaker::builder("partner")
        .window(WindowKind::Count(10))
        .failure_rate(50.0)
        .min_calls(4)
        .half_open_probes(2)
        .open_for(Duration::from_secs(10))
        .backoff(2.0)
        .max_open_for(Duration::from_secs(40))
        .jitter(0.0)
        .clock(Arc::new(clock.clone()))
}

fn fail(b: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        b.acquire()
            .expect("the breaker lets the call through")
            .failure();
    }
}

fn succeed(b: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        b.acquire()
            .expect("the breaker lets the call through")
            .success();
    }
}

fn trip(b: &CircuitBreaker) {
    fail(b, 4);
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn stays_closed_below_min_calls_and_below_the_rate() {
    let c = clock();
    let b = builder(&c).build().expect("valid settings");
    fail(&b, 3);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "3 calls are fewer than min_calls"
    );
    succeed(&b, 4);
    // 3 failures in 7 calls = 43% < 50%.
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().window.calls, 7);
    assert_eq!(b.snapshot().window.failures, 3);
}

#[test]
fn opens_at_the_failure_rate_and_rejects_with_the_wait() {
    let c = clock();
    let b = builder(&c).build().expect("valid settings");
    succeed(&b, 2);
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b, 1); // 2 of 4 = 50%
    assert_eq!(b.state(), BreakerState::Open);
    let r = b.acquire().expect_err("an open breaker rejects");
    assert_eq!(r.state, BreakerState::Open);
    assert_eq!(r.retry_after, Duration::from_secs(10));
    c.advance(Duration::from_secs(4));
    let r = b.acquire().expect_err("still open");
    assert_eq!(r.retry_after, Duration::from_secs(6));
    assert_eq!(b.snapshot().open_until, Some(T0 + 10_000));
}

#[test]
fn the_count_window_slides() {
    let c = clock();
    let b = builder(&c).min_calls(10).build().expect("valid settings");
    fail(&b, 4);
    succeed(&b, 6); // 40% over 10
    assert_eq!(b.state(), BreakerState::Closed);
    succeed(&b, 4); // the four failures slid out
    assert_eq!(b.snapshot().window.failures, 0);
    fail(&b, 4); // 4 of 10
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b, 1); // 5 of 10
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn half_open_after_the_period_lets_a_bounded_number_of_probes_through() {
    let c = clock();
    let b = builder(&c).build().expect("valid settings");
    trip(&b);
    c.advance(Duration::from_secs(10));
    let p1 = b.acquire().expect("first probe");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let p2 = b.acquire().expect("second probe");
    let r = b.acquire().expect_err("only two probes");
    assert_eq!(r.state, BreakerState::HalfOpen);
    // A probe dropped without a verdict gives its place back.
    drop(p2);
    let p3 = b.acquire().expect("the place given back");
    p1.success();
    assert_eq!(b.state(), BreakerState::HalfOpen, "one probe in, one out");
    p3.success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(
        b.snapshot().window,
        Counts::default(),
        "closing empties the window"
    );
    assert_eq!(b.snapshot().trips_in_row, 0);
}

#[test]
fn failed_probes_open_again_with_backoff_up_to_the_cap() {
    let c = clock();
    let b = builder(&c).build().expect("valid settings");
    trip(&b);
    let mut expected = [10_000, 20_000, 40_000, 40_000].into_iter();
    let mut wait = expected.next().expect("a first period");
    for _ in 0..3 {
        assert_eq!(b.snapshot().open_until, Some(c.now_ms() + wait));
        c.advance(Duration::from_millis(wait as u64));
        b.acquire().expect("a probe").failure(); // 1 of 2 = 50%: opens at once
        assert_eq!(b.state(), BreakerState::Open);
        wait = expected.next().expect("a further period");
    }
    assert_eq!(b.snapshot().open_until, Some(c.now_ms() + 40_000));
    assert_eq!(b.snapshot().trips_in_row, 4);
    // Closing clears the backoff.
    c.advance(Duration::from_secs(40));
    succeed(&b, 2);
    assert_eq!(b.state(), BreakerState::Closed);
    trip(&b);
    assert_eq!(b.snapshot().open_until, Some(c.now_ms() + 10_000));
}

#[test]
fn jitter_shortens_the_period_within_its_share() {
    let c = clock();
    for _ in 0..50 {
        let b = builder(&c).jitter(0.5).build().expect("valid settings");
        trip(&b);
        let until = b.snapshot().open_until.expect("open") - c.now_ms();
        assert!(
            (5_000..=10_000).contains(&until),
            "a 10 s period with 50% jitter lasts 5 to 10 s, not {until} ms"
        );
    }
}

#[test]
fn slow_calls_open_the_breaker() {
    let c = clock();
    let b = builder(&c)
        .slow_call_rate(50.0)
        .slow_call_duration(Duration::from_millis(500))
        .build()
        .expect("valid settings");
    for _ in 0..2 {
        let p = b.acquire().expect("closed");
        c.advance(Duration::from_millis(499));
        p.success();
    }
    assert_eq!(b.snapshot().window.slow, 0, "499 ms is not slow");
    for _ in 0..2 {
        let p = b.acquire().expect("closed");
        c.advance(Duration::from_millis(500));
        p.success();
    }
    assert_eq!(b.state(), BreakerState::Open, "2 of 4 slow = 50%");
    // A slow probe opens it again.
    c.advance(Duration::from_secs(10));
    let p = b.acquire().expect("probe");
    c.advance(Duration::from_secs(1));
    p.success();
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn the_time_window_forgets_old_failures() {
    let c = clock();
    let b = builder(&c)
        .window(WindowKind::Time {
            size: Duration::from_secs(10),
            buckets: 10,
        })
        .build()
        .expect("valid settings");
    fail(&b, 3);
    succeed(&b, 3);
    c.advance(Duration::from_secs(10));
    // The old calls slid out: 1 failure of 1 call is below min_calls.
    fail(&b, 1);
    assert_eq!(b.snapshot().window.calls, 1);
    assert_eq!(b.state(), BreakerState::Closed);
    c.advance(Duration::from_secs(5));
    succeed(&b, 1);
    fail(&b, 1);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "2 of 3 calls are fewer than min_calls"
    );
    fail(&b, 1);
    // 3 of 4 within the last 10 s.
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn max_wait_in_half_open_opens_again() {
    let c = clock();
    let b = builder(&c)
        .max_wait_in_half_open(Duration::from_secs(5))
        .build()
        .expect("valid settings");
    trip(&b);
    c.advance(Duration::from_secs(10));
    let _p1 = b.acquire().expect("probe 1");
    let _p2 = b.acquire().expect("probe 2");
    c.advance(Duration::from_secs(5));
    b.acquire().expect_err("probes still out");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    c.advance(Duration::from_millis(1));
    let r = b.acquire().expect_err("no verdict in time");
    assert_eq!(r.state, BreakerState::Open);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(
        r.retry_after,
        Duration::from_secs(20),
        "the second trip in a row"
    );
}

#[test]
fn a_closed_call_ending_after_the_trip_counts_for_nothing() {
    let c = clock();
    let b = builder(&c).build().expect("valid settings");
    let late = b.acquire().expect("closed");
    trip(&b);
    c.advance(Duration::from_secs(10));
    let probe = b.acquire().expect("probe");
    late.failure();
    assert_eq!(
        b.state(),
        BreakerState::HalfOpen,
        "the late failure is no probe"
    );
    probe.success();
    succeed(&b, 1);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[derive(Debug)]
struct Bad(&'static str);
impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Bad {}

#[tokio::test]
async fn call_records_by_the_predicate() {
    let c = clock();
    let b = builder(&c)
        .record_error(|e| e.to_string() != "not found")
        .build()
        .expect("valid settings");
    for _ in 0..10 {
        let r = b.call(async { Err::<(), _>(Bad("not found")) }).await;
        assert!(matches!(r, Err(CallError::Inner(Bad("not found")))));
    }
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "ignored errors do not count"
    );
    assert_eq!(b.snapshot().window.calls, 0);
    for _ in 0..4 {
        let _ = b.call(async { Err::<(), _>(Bad("timeout")) }).await;
    }
    assert_eq!(b.state(), BreakerState::Open);
    let r = b.call(async { Ok::<_, Bad>(1) }).await;
    assert!(matches!(r, Err(CallError::Rejected(_))), "{r:?}");
    let r = b
        .call_with(async { Ok::<u8, Bad>(1) }, |_| Verdict::Success)
        .await;
    assert!(matches!(r, Err(CallError::Rejected(_))));
}

#[test]
fn forced_states_hold_until_reset() {
    let c = clock();
    let b = builder(&c).build().expect("valid settings");
    b.force_open();
    assert_eq!(b.state(), BreakerState::ForcedOpen);
    c.advance(Duration::from_secs(3600));
    let r = b.acquire().expect_err("forced open");
    assert_eq!(r.state, BreakerState::ForcedOpen);
    b.force_closed();
    fail(&b, 20);
    assert_eq!(b.state(), BreakerState::ForcedClosed, "nothing is judged");
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    trip(&b);
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().window, Counts::default());
    assert_eq!(b.snapshot().trips_in_row, 0);
}

#[tokio::test]
async fn state_changes_are_events() {
    let c = clock();
    let b = builder(&c).build().expect("valid settings");
    let mut rx = b.subscribe();
    trip(&b);
    c.advance(Duration::from_secs(10));
    succeed(&b, 2);
    b.force_open();
    b.reset();
    let mut seen = Vec::new();
    while let Ok(e) = rx.try_recv() {
        assert_eq!(&*e.breaker, "partner");
        seen.push((e.from, e.to, e.at, e.open_until));
    }
    use BreakerState::*;
    assert_eq!(
        seen,
        vec![
            (Closed, Open, T0, Some(T0 + 10_000)),
            (Open, HalfOpen, T0 + 10_000, None),
            (HalfOpen, Closed, T0 + 10_000, None),
            (Closed, ForcedOpen, T0 + 10_000, None),
            (ForcedOpen, Closed, T0 + 10_000, None),
        ]
    );
}

#[test]
fn shared_word_moves_the_breaker() {
    let c = clock();
    let b = builder(&c).build().expect("valid settings");
    assert!(b.apply_shared(BreakerState::Open, T0 + 5_000, "shared"));
    assert_eq!(
        b.acquire().expect_err("open").retry_after,
        Duration::from_secs(5)
    );
    assert!(!b.apply_shared(BreakerState::Open, T0 + 4_000, "shared"));
    assert!(b.apply_shared(BreakerState::Closed, 0, "shared"));
    assert_eq!(b.state(), BreakerState::Closed);
    b.force_closed();
    assert!(!b.apply_shared(BreakerState::Open, T0 + 5_000, "shared"));
    assert_eq!(b.state(), BreakerState::ForcedClosed);
}

fn setting_of(r: crate::Result<CircuitBreaker>) -> String {
    match r {
        Err(Error::Config { setting, .. }) => setting,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn bad_settings_name_the_setting() {
    let c = clock();
    let cases: Vec<(BreakerBuilder, &str)> = vec![
        (builder(&c).failure_rate(0.0), "failure_rate"),
        (builder(&c).failure_rate(100.5), "failure_rate"),
        (builder(&c).failure_rate(f64::NAN), "failure_rate"),
        (builder(&c).slow_call_rate(-1.0), "slow_call_rate"),
        (
            builder(&c).slow_call_duration(Duration::ZERO),
            "slow_call_duration",
        ),
        (builder(&c).window(WindowKind::Count(0)), "window"),
        (
            builder(&c).window(WindowKind::Time {
                size: Duration::ZERO,
                buckets: 1,
            }),
            "window",
        ),
        (
            builder(&c).window(WindowKind::Time {
                size: Duration::from_millis(5),
                buckets: 10,
            }),
            "window",
        ),
        (
            builder(&c).window(WindowKind::Time {
                size: Duration::from_secs(5),
                buckets: 0,
            }),
            "window",
        ),
        (builder(&c).min_calls(0), "min_calls"),
        (builder(&c).min_calls(11), "min_calls"),
        (builder(&c).half_open_probes(0), "half_open_probes"),
        (builder(&c).open_for(Duration::ZERO), "open_for"),
        (builder(&c).backoff(0.5), "backoff"),
        (builder(&c).backoff(f64::INFINITY), "backoff"),
        (
            builder(&c).max_open_for(Duration::from_secs(1)),
            "max_open_for",
        ),
        (builder(&c).jitter(1.5), "jitter"),
        (
            builder(&c).max_wait_in_half_open(Duration::ZERO),
            "max_wait_in_half_open",
        ),
        (
            CircuitBreaker::builder("").clock(Arc::new(c.clone())),
            "name",
        ),
        (
            CircuitBreaker::builder("x".repeat(MAX_NAME_LEN + 1)),
            "name",
        ),
    ];
    for (b, setting) in cases {
        let got = setting_of(b.build());
        assert!(
            got.ends_with(&format!(": {setting}")),
            "`{got}` should name `{setting}`"
        );
    }
}

#[test]
fn open_duration_grows_and_is_capped() {
    let c = clock();
    let cfg = builder(&c).config().expect("valid settings");
    let secs: Vec<u64> = (1..=5).map(|n| cfg.open_duration(n).as_secs()).collect();
    assert_eq!(secs, vec![10, 20, 40, 40, 40]);
    assert_eq!(cfg.open_duration(u32::MAX), Duration::from_secs(40));
}
