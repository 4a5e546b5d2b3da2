//! The closed path of a circuit breaker allocates nothing: measured with a counting global
//! allocator, in a test binary of its own so that nothing else allocates meanwhile.

use celeriac_core::breaker::{CircuitBreaker, Verdict, WindowKind};
use celeriac_core::SystemClock;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn guarded_calls(breaker: &CircuitBreaker, n: u32) {
    for i in 0..n {
        let permit = breaker
            .acquire()
            .expect("a closed breaker lets calls through");
        // One failure in ten: below the threshold, so the breaker judges and stays closed.
        permit.record(if i % 10 == 0 {
            Verdict::Failure
        } else {
            Verdict::Success
        });
    }
}

#[test]
fn the_closed_path_does_not_allocate() {
    // The counter sees allocations at all (or the test below could not fail).
    let region = Region::new(GLOBAL);
    let v: Vec<u64> = std::hint::black_box(vec![1, 2, 3]);
    assert!(
        region.change().allocations >= 1,
        "the counting allocator counts"
    );
    drop(v);

    let count = CircuitBreaker::builder("count")
        .window(WindowKind::Count(100))
        .min_calls(10)
        .build()
        .expect("valid settings");
    let timed = CircuitBreaker::builder("timed")
        .window(WindowKind::Time {
            size: Duration::from_secs(60),
            buckets: 60,
        })
        .slow_call_rate(90.0)
        .slow_call_duration(Duration::from_secs(5))
        .min_calls(10)
        .clock(Arc::new(SystemClock))
        .build()
        .expect("valid settings");
    // Warm up: fill the windows (past min_calls, so failures are judged).
    guarded_calls(&count, 200);
    guarded_calls(&timed, 200);

    let region = Region::new(GLOBAL);
    guarded_calls(&count, 100_000);
    guarded_calls(&timed, 100_000);
    let stats = region.change();
    assert_eq!(
        stats.allocations, 0,
        "200,000 guarded calls on the closed path allocated: {stats:?}"
    );
    assert_eq!(stats.reallocations, 0, "{stats:?}");
    assert_eq!(count.state(), celeriac_core::breaker::BreakerState::Closed);
    assert_eq!(timed.state(), celeriac_core::breaker::BreakerState::Closed);
}
