//! `celeriac bench breaker`: what a circuit breaker costs a call on its closed path.
//!
//! Times a trivial call bare and guarded (`acquire()` + `success()`), on one thread, for a
//! count window (no clock read) and a time window (one clock read per call); each figure is
//! the best of several rounds. The closed path allocates nothing: the test
//! `crates/celeriac-core/tests/breaker_no_alloc.rs` counts allocations with a counting
//! global allocator.

use celeriac_core::breaker::{CircuitBreaker, WindowKind};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// What `celeriac bench breaker` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BreakerOverhead {
    /// Calls per round.
    pub calls: u64,
    /// Nanoseconds per bare call.
    pub unguarded_ns: f64,
    /// Nanoseconds per call guarded by a breaker with a count window.
    pub guarded_count_ns: f64,
    /// Nanoseconds per call guarded by a breaker with a time window.
    pub guarded_time_ns: f64,
}

impl BreakerOverhead {
    /// What the count-window breaker adds to a call (ns).
    pub fn overhead_count_ns(&self) -> f64 {
        (self.guarded_count_ns - self.unguarded_ns).max(0.0)
    }

    /// What the time-window breaker adds to a call (ns).
    pub fn overhead_time_ns(&self) -> f64 {
        (self.guarded_time_ns - self.unguarded_ns).max(0.0)
    }
}

const ROUNDS: usize = 5;

#[inline(never)]
fn work(x: u64) -> u64 {
    black_box(x).wrapping_mul(31).wrapping_add(7)
}

fn best_ns(calls: u64, mut round: impl FnMut(u64) -> u64) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        black_box(round(calls));
        best = best.min(t.elapsed());
    }
    best.as_nanos() as f64 / calls.max(1) as f64
}

fn guarded(breaker: &CircuitBreaker, calls: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..calls {
        if let Ok(permit) = breaker.acquire() {
            acc = acc.wrapping_add(work(i));
            permit.success();
        }
    }
    acc
}

/// Measures `calls` calls per round bare and behind closed breakers; returns ns per call.
///
/// # Errors
/// Only if the fixed breaker settings were refused (a bug).
pub fn bench_breaker_overhead(calls: u64) -> celeriac_core::Result<BreakerOverhead> {
    let count = CircuitBreaker::builder("bench-count")
        .window(WindowKind::Count(100))
        .build()?;
    let time = CircuitBreaker::builder("bench-time")
        .window(WindowKind::Time {
            size: Duration::from_secs(60),
            buckets: 60,
        })
        .build()?;
    let unguarded_ns = best_ns(calls, |n| {
        let mut acc = 0u64;
        for i in 0..n {
            acc = acc.wrapping_add(work(i));
        }
        acc
    });
    let guarded_count_ns = best_ns(calls, |n| guarded(&count, n));
    let guarded_time_ns = best_ns(calls, |n| guarded(&time, n));
    Ok(BreakerOverhead {
        calls,
        unguarded_ns,
        guarded_count_ns,
        guarded_time_ns,
    })
}
