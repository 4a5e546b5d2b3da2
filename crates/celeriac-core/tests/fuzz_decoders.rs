//! Fuzzing the readers of text and state in the core: duration strings, cron expressions,
//! schedule files, rate-limit quotas, and the limiter and breaker state a store hands back
//! (which another process, or a damaged store, may have written). Random and mutated real
//! inputs: no panic, a typed error, and what parses behaves (a duration writes back to
//! itself, a schedule's next tick is after now).

use celeriac_core::backend::{BreakerCommand, BreakerPolicy};
use celeriac_core::breaker::shared::SharedRecord;
use celeriac_core::breaker::{BreakerState, Counts};
use celeriac_core::duration;
use celeriac_core::limit::maths::{check_one, decide, LimitState};
use celeriac_core::limit::Quota;
use celeriac_core::schedule::{parse_toml, Schedule, Spec};
use celeriac_core::sketch::{Sketch, MAX_BUCKETS};
use celeriac_core::Error;
use celeriac_testkit::fuzz::{mutated, mutated_text, run};
use proptest::prelude::*;
use std::time::Duration;

/// 2024-03-31T00:30:00Z, a night Europe springs forward, and other instants to look from.
const NOWS: [i64; 4] = [
    1_711_845_000_000,
    1_700_000_000_000,
    1_730_595_600_000,
    4_102_444_800_000,
];

/// Random text: mostly printable, with the characters the grammars care about.
fn text(max: usize) -> impl Strategy<Value = String> {
    let c = prop_oneof![
        4 => proptest::char::range(' ', '~'),
        1 => Just('\n'),
        1 => any::<char>(),
    ];
    proptest::collection::vec(c, 0..=max).prop_map(|v| v.into_iter().collect())
}

fn duration_corpus() -> Vec<String> {
    let cases: &[(&str, Result<u64, &str>)] = include!("../src/duration/cases.rs");
    cases.iter().map(|(t, _)| t.to_string()).collect()
}

/// A duration that parses writes back to text that parses to it again.
fn check_duration(t: &str) -> Result<(), TestCaseError> {
    match duration::parse_ms(t) {
        Ok(ms) => {
            let written = duration::format(Duration::from_millis(ms));
            let again = duration::parse_ms(&written)
                .map_err(|e| TestCaseError::fail(format!("{t:?} → {written:?}: {e}")))?;
            prop_assert_eq!(again, ms, "{:?} wrote as {:?}", t, written);
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

#[test]
fn fuzz_durations_random_text() {
    assert!(run("duration random text", text(40), |t| check_duration(&t)) > 0);
}

#[test]
fn fuzz_durations_mutated() {
    let n = run("duration mutated", mutated_text(duration_corpus()), |t| {
        check_duration(&t)
    });
    assert!(n > 0);
}

/// Every duration writes as text that reads back to it.
#[test]
fn fuzz_durations_written() {
    let n = run(
        "duration written",
        prop_oneof![Just(u64::MAX), any::<u64>(), 0u64..100_000_000],
        |ms| {
            let written = duration::format(Duration::from_millis(ms));
            let back = duration::parse_ms(&written)
                .map_err(|e| TestCaseError::fail(format!("{written:?}: {e}")))?;
            prop_assert_eq!(back, ms);
            Ok(())
        },
    );
    assert!(n > 0);
}

fn cron_corpus() -> Vec<String> {
    [
        "*/15 * * * *",
        "*/10 * * * * *",
        "0 9 * * *",
        "30 2 * * *",
        "0,30 * * * *",
        "0 0 1 1 *",
        "0 0 29 2 *",
        "5 4 * * sun",
        "0 22 * * 1-5",
        "23 0-20/2 * * *",
        "0 0 L * *",
        "0 0 * * 5L",
        "0 0 * * MON#2",
        "0 0 15W * *",
        "@daily",
        "@hourly",
        "59 59 23 31 12 *",
        "0 0 ? * MON-FRI",
        "0 0 29 2 1",
        "0-59/60 * * * *",
        "0 0 */4294967296 * *",
        "1-5,10-15/2 */3 1,15 */2 *",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A schedule that builds fires after now and not before its last tick; a cron expression
/// that does not parse is a configuration error naming `cron`.
fn check_cron(expr: &str, tz: &str) -> Result<(), TestCaseError> {
    match Spec::cron(expr) {
        Ok(_) => {}
        Err(Error::Config { setting, .. }) => {
            prop_assert_eq!(setting, "cron");
            return Ok(());
        }
        Err(e) => return Err(TestCaseError::fail(format!("{expr:?}: untyped {e:?}"))),
    }
    let s = Schedule::builder("fuzz")
        .cron(expr)
        .timezone(tz)
        .task("t")
        .build()
        .map_err(|e| TestCaseError::fail(format!("{expr:?} parsed but did not build: {e}")))?;
    check_schedule(&s)
}

fn check_schedule(s: &Schedule) -> Result<(), TestCaseError> {
    for now in NOWS {
        if let Some(next) = s.next_after(now) {
            prop_assert!(
                next > now,
                "{}: next {} is not after {}",
                s.spec(),
                next,
                now
            );
            prop_assert!(s.upcoming(now, 3).first() == Some(&next));
        }
        if let Some(last) = s.last_at_or_before(now) {
            prop_assert!(last <= now, "{}: last {} is after {}", s.spec(), last, now);
        }
        let due = s.due(now - 3_600_000, now, Duration::from_secs(60));
        prop_assert!(due.fire.iter().all(|t| *t <= now && *t > now - 3_600_000));
        prop_assert!(due.fire.windows(2).all(|w| w[0] < w[1]));
    }
    Ok(())
}

const ZONES: [&str; 4] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
];

#[test]
fn fuzz_cron_mutated() {
    let n = run(
        "cron mutated",
        (mutated_text(cron_corpus()), 0..ZONES.len()),
        |(expr, tz)| check_cron(&expr, ZONES[tz]),
    );
    assert!(n > 0);
}

#[test]
fn fuzz_cron_random_text() {
    let n = run(
        "cron random text",
        (text(30), 0..ZONES.len()),
        |(expr, tz)| check_cron(&expr, ZONES[tz]),
    );
    assert!(n > 0);
}

fn schedule_files() -> Vec<String> {
    vec![
        r#"
[[schedule]]
name = "nightly-report"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
task = "reports.nightly"
args = { day = "yesterday", ids = [1, 2, 3] }
queue = "reports"
priority = 7
missed = "run_once"

[[schedule]]
name = "heartbeat"
every = "30s"
task = "ops.ping"
paused = true
"#
        .to_string(),
        r#"
[[schedule]]
name = "catch"
every = "1h30m"
task = "t"
max_attempts = 3
expires_in = "10m"
missed = "catch_up:5"

[[schedule]]
name = "weekday"
cron = "0 0 9 * * MON-FRI"
timezone = "America/New_York"
task = "t"
missed = "skip"
"#
        .to_string(),
        "schedule = []\n".to_string(),
    ]
}

/// A schedule file that parses gives schedules that behave; one that does not is a
/// configuration error naming the file.
fn check_file(text: &str) -> Result<(), TestCaseError> {
    match parse_toml(text, "fuzz.toml") {
        Ok(schedules) => {
            for s in &schedules {
                check_schedule(s)?;
            }
        }
        Err(Error::Config { setting, .. }) => {
            prop_assert!(setting.starts_with("fuzz.toml"), "{}", setting)
        }
        Err(e) => return Err(TestCaseError::fail(format!("untyped {e:?}"))),
    }
    Ok(())
}

#[test]
fn fuzz_schedule_files_mutated() {
    for f in schedule_files() {
        parse_toml(&f, "fuzz.toml").expect("every corpus file parses");
    }
    let n = run(
        "schedule file mutated",
        mutated_text(schedule_files()),
        |t| check_file(&t),
    );
    assert!(n > 0);
}

#[test]
fn fuzz_schedule_files_random_text() {
    assert!(run("schedule file random text", text(200), |t| check_file(&t)) > 0);
}

fn quota_corpus() -> Vec<String> {
    [
        "100/minute",
        "10/s; burst=5",
        "5000/1h; algorithm=sliding_window",
        "3/2s, algorithm=fixed_window, name=tight",
        "1000/hour; algorithm=sliding_window; name=hourly",
        "1/366d",
        "1000000/1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Interesting integers for stored state: the edges, and values near the fuzzed `now`.
fn state_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(-1),
        Just(u32::MAX as i64),
        (0i64..4_200_000_000_000),
        (0i64..4_200_000_000_000).prop_map(|ms| ms * 1000),
        any::<i64>(),
    ]
}

fn quotas() -> Vec<Quota> {
    quota_corpus()
        .iter()
        .map(|q| q.parse().expect("every corpus quota parses"))
        .collect()
}

/// A quota that parses writes back to itself and decides on any stored state.
fn check_quota(text: &str) -> Result<(), TestCaseError> {
    let q = match text.parse::<Quota>() {
        Ok(q) => q,
        Err(Error::Config { setting, .. }) => {
            prop_assert!(setting.starts_with("rate limit"), "{}", setting);
            return Ok(());
        }
        Err(e) => return Err(TestCaseError::fail(format!("untyped {e:?}"))),
    };
    let again: Quota = q
        .to_string()
        .parse()
        .map_err(|e| TestCaseError::fail(format!("{q} does not read back: {e}")))?;
    prop_assert_eq!(&again, &q);
    let step = check_one(&q, LimitState::default(), 1, NOWS[0]);
    prop_assert!(step.decision.allowed, "{} denies a first call", q);
    Ok(())
}

#[test]
fn fuzz_quotas_mutated() {
    assert!(
        run("quota mutated", mutated_text(quota_corpus()), |t| {
            check_quota(&t)
        }) > 0
    );
}

#[test]
fn fuzz_quotas_random_text() {
    assert!(run("quota random text", text(40), |t| check_quota(&t)) > 0);
}

/// Any stored limiter state, with every algorithm: a verdict without a panic, a TTL of at
/// least 1 ms, and a retry-after exactly when denied.
#[test]
fn fuzz_limit_state() {
    let quotas = quotas();
    let n = run(
        "limiter state",
        (
            proptest::collection::vec(
                (0..quotas.len(), state_int(), state_int(), state_int()),
                1..4,
            ),
            1u32..5,
            prop_oneof![Just(NOWS[0]), 0i64..4_200_000_000_000],
        ),
        |(picked, cost, now)| {
            let qs: Vec<Quota> = picked.iter().map(|p| quotas[p.0].clone()).collect();
            let mut states: Vec<LimitState> = picked
                .iter()
                .map(|&(_, a, b, c)| LimitState { a, b, c })
                .collect();
            for (q, s) in qs.iter().zip(&states) {
                let step = check_one(q, *s, u64::from(cost).min(q.capacity()) as u32, now);
                prop_assert!(step.ttl_ms >= 1);
                prop_assert_eq!(step.decision.retry_after.is_some(), !step.decision.allowed);
            }
            let cost = qs
                .iter()
                .map(|q| q.capacity().min(u64::from(cost)) as u32)
                .min()
                .unwrap_or(1);
            let before = states.clone();
            let d = decide(&qs, &mut states, cost, now, |_, step| {
                assert!(step.ttl_ms >= 1);
            });
            if !d.allowed {
                prop_assert_eq!(&states, &before, "a denial changes nothing");
            }
            Ok(())
        },
    );
    assert!(n > 0);
}

fn policy() -> impl Strategy<Value = BreakerPolicy> {
    (
        1i64..600_000,
        1i64..10_000,
        0u64..100,
        1u32..5,
        0.0f64..=100.0,
        proptest::option::of(0.0f64..=100.0),
        1u32..10,
        1i64..60_000,
        (1i64..600_000, 1.0f64..4.0, 0.0f64..1.0),
    )
        .prop_map(
            |(window, bucket, min, quorum, rate, slow, probes, lease, (open, backoff, jitter))| {
                BreakerPolicy {
                    window_ms: window,
                    bucket_ms: bucket,
                    min_calls: min,
                    quorum,
                    failure_rate: rate,
                    slow_rate: slow,
                    probes,
                    probe_lease_ms: lease,
                    open_ms: open,
                    backoff,
                    max_open_ms: open * 10,
                    jitter_cut: jitter,
                }
            },
        )
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(i64::MAX as u64),
        0u64..1000,
        any::<u64>()
    ]
}

fn counts() -> impl Strategy<Value = Vec<Counts>> {
    proptest::collection::vec(
        (count(), count(), count()).prop_map(|(calls, failures, slow)| Counts {
            calls,
            failures,
            slow,
        }),
        0..5,
    )
}

fn u32_edge() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(u32::MAX), 0u32..10, any::<u32>()]
}

/// A breaker record as a store may hand it back: any state, times and counters.
fn record() -> impl Strategy<Value = SharedRecord> {
    (
        0usize..5,
        state_int(),
        u32_edge(),
        prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
        state_int(),
        u32_edge(),
        u32_edge(),
    )
        .prop_map(
            |(state, open_until, trips, generation, since, ok, fail)| SharedRecord {
                state: BreakerState::from_code(state as u8).unwrap_or(BreakerState::Closed),
                open_until,
                trips,
                generation,
                since,
                probe_ok: ok,
                probe_fail: fail,
            },
        )
}

/// Any stored breaker record and signals, through every rule the stores apply: no panic,
/// an open breaker whose period ended settles half-open, a reset closes it.
#[test]
fn fuzz_breaker_records() {
    let n = run(
        "breaker record",
        (
            record(),
            counts(),
            policy(),
            0i64..4_200_000_000_000,
            any::<bool>(),
            0usize..3,
        ),
        |(mut rec, per, policy, now, failed, command)| {
            let was = rec.clone();
            rec.settle(now);
            if was.state == BreakerState::Open && now >= was.open_until {
                prop_assert_eq!(rec.state, BreakerState::HalfOpen);
            }
            rec.judge(&per, &policy, now);
            if rec.state == BreakerState::Open {
                prop_assert!(rec.open_until > now || rec.open_until == i64::MAX);
            }
            rec.probe_result(failed, &policy, now);
            rec.settle(now);
            let mut window = Counts::default();
            for c in &per {
                window.add(*c);
            }
            // A percentage, to floating point's precision.
            let rate = window.failure_rate();
            prop_assert!((0.0..=100.0 + 1e-9).contains(&rate), "{}", rate);
            let command = [
                BreakerCommand::ForceOpen,
                BreakerCommand::ForceClosed,
                BreakerCommand::Reset,
            ][command];
            rec.command(command, now);
            if command == BreakerCommand::Reset {
                prop_assert_eq!(rec.state, BreakerState::Closed);
                prop_assert_eq!(rec.trips, 0);
            }
            Ok(())
        },
    );
    assert!(n > 0);
}

/// Found by `fuzz_limit_state`: a sliding or fixed window whose stored start is the largest
/// integer overflowed the window's end; an arrival time there held the key for ever.
#[test]
fn a_stored_limiter_state_at_the_largest_integer_is_read_as_none() {
    let now = NOWS[0];
    for q in [
        "5000/1h; algorithm=sliding_window",
        "3/2s, algorithm=fixed_window",
        "10/s; burst=5",
    ] {
        let q: Quota = q.parse().expect("parses");
        for s in [
            LimitState {
                a: i64::MAX,
                b: 0,
                c: 0,
            },
            LimitState {
                a: i64::MAX,
                b: i64::MAX,
                c: i64::MAX,
            },
            LimitState {
                a: now,
                b: i64::MAX,
                c: i64::MAX,
            },
            LimitState {
                a: now - now % 2000,
                b: i64::MIN,
                c: -1,
            },
        ] {
            let step = check_one(&q, s, 1, now);
            assert!(
                step.ttl_ms >= 1 && step.ttl_ms <= q.window_ms() * 2,
                "{q}: {s:?}: {step:?}"
            );
            if s.a == i64::MAX {
                assert!(step.decision.allowed, "{q}: {s:?} reads as no state");
            }
        }
    }
}

/// Found by `fuzz_breaker_records`: counts of several instances summed past `u64::MAX`, and
/// a probe counted past `u32::MAX`, overflowed.
#[test]
fn breaker_counts_and_records_at_their_largest_do_not_overflow() {
    let mut all = Counts::default();
    for _ in 0..3 {
        all.add(Counts {
            calls: u64::MAX,
            failures: u64::MAX,
            slow: 1,
        });
    }
    assert_eq!(all.calls, u64::MAX);
    let policy = BreakerPolicy {
        window_ms: 60_000,
        bucket_ms: 1_000,
        min_calls: 1,
        quorum: 1,
        failure_rate: 50.0,
        slow_rate: None,
        probes: 3,
        probe_lease_ms: 30_000,
        open_ms: 1_000,
        backoff: 2.0,
        max_open_ms: 60_000,
        jitter_cut: 0.0,
    };
    let mut rec = SharedRecord {
        state: BreakerState::HalfOpen,
        open_until: 0,
        trips: u32::MAX,
        generation: u64::MAX,
        since: 0,
        probe_ok: u32::MAX,
        probe_fail: u32::MAX,
    };
    rec.probe_result(false, &policy, NOWS[0]);
    assert_eq!(rec.state, BreakerState::Open, "the failed probes count");
    assert_eq!(rec.generation, 0, "the generation moved on");
    let mut closed = SharedRecord::default();
    closed.judge(&[all, all], &policy, NOWS[0]);
    assert_eq!(closed.state, BreakerState::Open);
}

fn sketch_corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for spread in [1.0f64, 1e3, 1e9] {
        let mut s = Sketch::new();
        for i in 0..50 {
            s.add(f64::from(i) * spread / 7.0);
        }
        out.push(serde_json::to_vec(&s).expect("encodes"));
    }
    out.push(serde_json::to_vec(&Sketch::new()).expect("encodes"));
    out
}

/// Everything a sketch answers, and a merge into a real one: no panic, and the bounds hold.
fn use_sketch(s: &Sketch) -> Result<(), TestCaseError> {
    prop_assert!(s.buckets().count() <= MAX_BUCKETS);
    for q in [0.0, 0.5, 0.99, 1.0] {
        let _ = s.quantile(q);
    }
    let mut real: Sketch = serde_json::from_slice(&sketch_corpus()[2]).expect("decodes");
    real.merge(s);
    prop_assert!(real.buckets().count() <= MAX_BUCKETS);
    let _ = real.quantile(0.5);
    Ok(())
}

/// Sketches of run and wait times as the SQLite history stores them (JSON): a mutated one
/// reads as a sketch that behaves, or not at all.
#[test]
fn fuzz_sketches_mutated() {
    let n = run(
        "history sketch mutated",
        mutated(sketch_corpus()),
        |bytes| match serde_json::from_slice::<Sketch>(&bytes) {
            Ok(s) => use_sketch(&s),
            Err(_) => Ok(()),
        },
    );
    assert!(n > 0);
}

/// Sketches rebuilt from any buckets (as the Redis history stores them) hold at most
/// [`MAX_BUCKETS`] of them and count every value.
#[test]
fn fuzz_sketches_from_parts() {
    let index = prop_oneof![Just(i32::MIN), Just(i32::MAX), -3000i32..3000, any::<i32>()];
    let n = run(
        "history sketch from parts",
        (
            proptest::collection::vec((index, count()), 0..20),
            count(),
            any::<f64>(),
        ),
        |(buckets, zeros, sum)| {
            let s = Sketch::from_parts(buckets.clone(), zeros, sum, None, None);
            let held = buckets
                .iter()
                .filter(|(_, n)| *n > 0)
                .fold(zeros, |a, (_, n)| a.saturating_add(*n));
            prop_assert_eq!(s.count(), held);
            use_sketch(&s)
        },
    );
    assert!(n > 0);
}

/// Found by `fuzz_sketches_from_parts`: buckets at both ends of the index range grew the
/// sketch by 2^32 buckets (and overflowed on the way) before it was trimmed.
#[test]
fn a_sketch_with_buckets_at_both_ends_of_the_range_stays_small() {
    let s = Sketch::from_parts([(i32::MAX, 1), (i32::MIN, 2), (0, 3)], 0, 6.0, None, None);
    assert_eq!(s.count(), 6);
    let buckets: Vec<(i32, u64)> = s.buckets().collect();
    assert!(buckets.len() <= 2, "{buckets:?}");
    assert_eq!(buckets.last(), Some(&(i32::MAX, 1)));
    assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 6);
    let stored =
        r#"{"offset":2147483647,"counts":[1,1],"zeros":0,"count":2,"sum":1.0,"min":1.0,"max":1.0}"#;
    assert!(
        serde_json::from_str::<Sketch>(stored).is_err(),
        "buckets past i32::MAX"
    );
    let stored = r#"{"offset":0,"counts":[1],"zeros":0,"count":5,"sum":1.0,"min":1.0,"max":1.0}"#;
    assert!(
        serde_json::from_str::<Sketch>(stored).is_err(),
        "a count its buckets do not hold"
    );
}

/// Found by `fuzz_sketches_mutated` (`scripts/fuzz`): a stored sketch whose smallest value is
/// above its largest made a quantile panic (`f64::clamp` with its bounds out of order).
#[test]
fn a_stored_sketch_with_its_extremes_out_of_order_is_refused() {
    let mut counts = vec![0u64; 40];
    counts[0] = 1;
    counts[39] = 48;
    let stored = serde_json::json!({
        "offset": -97, "counts": counts, "zeros": 1, "count": 50,
        "sum": 175.0, "min": 8.0, "max": 7.0,
    });
    let err = serde_json::from_value::<Sketch>(stored).expect_err("refused");
    assert!(err.to_string().contains("largest"), "{err}");
    let fine = serde_json::json!({
        "offset": -97, "counts": counts, "zeros": 1, "count": 50,
        "sum": 175.0, "min": 7.0, "max": 8.0,
    });
    let s: Sketch = serde_json::from_value(fine).expect("in order, it reads");
    assert!(s.quantile(0.5).is_some_and(|q| (7.0..=8.0).contains(&q)));
}
