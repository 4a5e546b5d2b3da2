//! The sliding windows a closed breaker judges its calls by: the last N calls, or the calls
//! of the last T split into buckets. Recording is a handful of atomic operations and never
//! allocates; a reader sums what the window holds.

use crate::clock::UnixMs;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// What one call was: a failure, slow, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sample {
    pub(crate) failed: bool,
    pub(crate) slow: bool,
}

impl Sample {
    const CALL: u8 = 1;
    const FAILED: u8 = 2;
    const SLOW: u8 = 4;

    fn bits(self) -> u8 {
        Self::CALL
            | if self.failed { Self::FAILED } else { 0 }
            | if self.slow { Self::SLOW } else { 0 }
    }
}

/// Sums over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Calls recorded.
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which took longer than the slow-call threshold.
    pub slow: u64,
}

impl Counts {
    /// Failures as a percentage of calls (0 without calls).
    pub fn failure_rate(&self) -> f64 {
        percent(self.failures, self.calls)
    }

    /// Slow calls as a percentage of calls (0 without calls).
    pub fn slow_rate(&self) -> f64 {
        percent(self.slow, self.calls)
    }

    /// Adds another window's counts (saturating: counts read back from a store may be
    /// anything).
    pub fn add(&mut self, other: Counts) {
        self.calls = self.calls.saturating_add(other.calls);
        self.failures = self.failures.saturating_add(other.failures);
        self.slow = self.slow.saturating_add(other.slow);
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part.min(whole) as f64) * 100.0 / whole as f64
    }
}

/// The last `size` calls in a ring of one byte per call, with running sums.
///
/// A call swaps its byte into the ring and adjusts the sums by the difference to the byte it
/// replaced, so a success replacing a success writes nothing but the position.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    head: AtomicU64,
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            slots: (0..size.max(1)).map(|_| AtomicU8::new(0)).collect(),
            head: AtomicU64::new(0),
            calls: AtomicI64::new(0),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    pub(crate) fn record(&self, sample: Sample) {
        // Each call takes its own slot (one compare-and-swap when uncontended), so calls
        // recorded at the same moment all count. The position stays below the ring's length
        // (no division on this path).
        let len = self.slots.len();
        let mut head = self.head.load(Ordering::Relaxed);
        let at = loop {
            let at = if (head as usize) < len {
                head as usize
            } else {
                0
            };
            let next = if at + 1 == len { 0 } else { at + 1 };
            match self.head.compare_exchange_weak(
                head,
                next as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break at,
                Err(seen) => head = seen,
            }
        };
        let slot = &self.slots[at];
        let new = sample.bits();
        // The common case, a success replacing a success, writes nothing at all.
        if slot.load(Ordering::Acquire) == new {
            return;
        }
        let old = slot.swap(new, Ordering::AcqRel);
        if old == new {
            return;
        }
        adjust(&self.calls, old, new, Sample::CALL);
        adjust(&self.failures, old, new, Sample::FAILED);
        adjust(&self.slow, old, new, Sample::SLOW);
    }

    pub(crate) fn counts(&self) -> Counts {
        // Under concurrent recording the sums may lag a swap for a moment (and dip below
        // zero): clamp, the next read is exact again.
        let read = |a: &AtomicI64| a.load(Ordering::Acquire).max(0) as u64;
        Counts {
            calls: read(&self.calls),
            failures: read(&self.failures),
            slow: read(&self.slow),
        }
    }

    pub(crate) fn reset(&self) {
        for s in self.slots.iter() {
            s.store(0, Ordering::Relaxed);
        }
        self.head.store(0, Ordering::Relaxed);
        self.calls.store(0, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.slow.store(0, Ordering::Release);
    }
}

fn adjust(sum: &AtomicI64, old: u8, new: u8, bit: u8) {
    let delta = i64::from(new & bit != 0) - i64::from(old & bit != 0);
    if delta != 0 {
        sum.fetch_add(delta, Ordering::AcqRel);
    }
}

/// One bucket of a time window: the counts of one `bucket_ms` slice of time.
#[derive(Debug)]
struct Bucket {
    /// Which slice (`now / bucket_ms`) the counts belong to.
    epoch: AtomicI64,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// The calls of the last `buckets × bucket_ms` milliseconds, in buckets.
///
/// A call adds to its bucket with one to three atomic adds. The first call of a new slice of
/// time clears the bucket it reuses under a lock taken only then (once per bucket period).
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    bucket_ms: i64,
    rotate: Mutex<()>,
    /// The newest epoch seen and its slot, packed (`epoch << 16 | slot`), so that calls within
    /// the same slice of time find their bucket without a division.
    last: AtomicU64,
}

const SLOT_BITS: u32 = 16;

impl TimeWindow {
    pub(crate) fn new(buckets: u32, bucket_ms: i64) -> Self {
        Self {
            buckets: (0..buckets.max(1))
                .map(|_| Bucket {
                    epoch: AtomicI64::new(i64::MIN),
                    calls: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    slow: AtomicU64::new(0),
                })
                .collect(),
            bucket_ms: bucket_ms.max(1),
            rotate: Mutex::new(()),
            last: AtomicU64::new(u64::MAX),
        }
    }

    /// The epoch of `now` and its bucket.
    #[inline]
    fn locate(&self, now: UnixMs) -> (i64, &Bucket) {
        let last = self.last.load(Ordering::Relaxed);
        if last != u64::MAX {
            let epoch = (last >> SLOT_BITS) as i64;
            let start = epoch.wrapping_mul(self.bucket_ms);
            if now >= start && now - start < self.bucket_ms {
                let slot = (last & ((1 << SLOT_BITS) - 1)) as usize;
                return (epoch, &self.buckets[slot.min(self.buckets.len() - 1)]);
            }
        }
        let epoch = now.div_euclid(self.bucket_ms);
        let slot = epoch.rem_euclid(self.buckets.len() as i64);
        // Epochs of times before 1970, or too large to pack, are not cached.
        if (0..1 << (63 - SLOT_BITS)).contains(&epoch) {
            self.last.store(
                ((epoch as u64) << SLOT_BITS) | slot as u64,
                Ordering::Relaxed,
            );
        }
        (epoch, &self.buckets[slot as usize])
    }

    pub(crate) fn record(&self, sample: Sample, now: UnixMs) {
        let (epoch, b) = self.locate(now);
        let seen = b.epoch.load(Ordering::Acquire);
        if seen != epoch {
            if seen > epoch {
                // A call that started before the bucket moved on: too old to count.
                return;
            }
            let _held = self.rotate.lock().unwrap_or_else(|p| p.into_inner());
            let seen = b.epoch.load(Ordering::Acquire);
            if seen > epoch {
                return;
            }
            if seen != epoch {
                b.calls.store(0, Ordering::Relaxed);
                b.failures.store(0, Ordering::Relaxed);
                b.slow.store(0, Ordering::Relaxed);
                b.epoch.store(epoch, Ordering::Release);
            }
        }
        b.calls.fetch_add(1, Ordering::AcqRel);
        if sample.failed {
            b.failures.fetch_add(1, Ordering::AcqRel);
        }
        if sample.slow {
            b.slow.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn counts(&self, now: UnixMs) -> Counts {
        let newest = now.div_euclid(self.bucket_ms);
        let oldest = newest - self.buckets.len() as i64 + 1;
        let mut c = Counts::default();
        for b in self.buckets.iter() {
            let e = b.epoch.load(Ordering::Acquire);
            if e >= oldest && e <= newest {
                c.calls += b.calls.load(Ordering::Acquire);
                c.failures += b.failures.load(Ordering::Acquire);
                c.slow += b.slow.load(Ordering::Acquire);
            }
        }
        c
    }

    pub(crate) fn reset(&self) {
        let _held = self.rotate.lock().unwrap_or_else(|p| p.into_inner());
        for b in self.buckets.iter() {
            b.epoch.store(i64::MIN, Ordering::Release);
            b.calls.store(0, Ordering::Relaxed);
            b.failures.store(0, Ordering::Relaxed);
            b.slow.store(0, Ordering::Relaxed);
        }
    }
}

/// The window a breaker was configured with.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn record(&self, sample: Sample, now: UnixMs) {
        match self {
            Window::Count(w) => w.record(sample),
            Window::Time(w) => w.record(sample, now),
        }
    }

    pub(crate) fn counts(&self, now: UnixMs) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }

    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, Window::Time(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Sample = Sample {
        failed: false,
        slow: false,
    };
    const FAIL: Sample = Sample {
        failed: true,
        slow: false,
    };
    const SLOW: Sample = Sample {
        failed: false,
        slow: true,
    };

    #[test]
    fn count_window_keeps_the_last_n_calls() {
        let w = CountWindow::new(4);
        for s in [FAIL, FAIL, OK, SLOW] {
            w.record(s);
        }
        assert_eq!(
            w.counts(),
            Counts {
                calls: 4,
                failures: 2,
                slow: 1
            }
        );
        // Two successes push both failures out.
        w.record(OK);
        w.record(OK);
        assert_eq!(
            w.counts(),
            Counts {
                calls: 4,
                failures: 0,
                slow: 1
            }
        );
        w.reset();
        assert_eq!(w.counts(), Counts::default());
    }

    #[test]
    fn time_window_forgets_buckets_that_slid_out() {
        let w = TimeWindow::new(3, 1_000);
        w.record(FAIL, 10_000);
        w.record(OK, 11_500);
        w.record(SLOW, 12_999);
        assert_eq!(
            w.counts(12_999),
            Counts {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        // At 13 s the bucket of second 10 has slid out.
        assert_eq!(w.counts(13_000).failures, 0);
        assert_eq!(w.counts(13_000).calls, 2);
        // A new call reusing the slot of second 10 starts it from zero.
        w.record(OK, 13_100);
        assert_eq!(
            w.counts(13_100),
            Counts {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        // Long after, nothing is left.
        assert_eq!(w.counts(100_000), Counts::default());
    }

    #[test]
    fn rates_are_percentages() {
        let c = Counts {
            calls: 8,
            failures: 2,
            slow: 4,
        };
        assert_eq!(c.failure_rate(), 25.0);
        assert_eq!(c.slow_rate(), 50.0);
        assert_eq!(Counts::default().failure_rate(), 0.0);
    }

    #[test]
    fn calls_recorded_at_the_same_moment_all_count() {
        const THREADS: u64 = 4;
        const EACH: u64 = 20_000;
        let w = std::sync::Arc::new(CountWindow::new((THREADS * EACH) as u32));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..EACH {
                        w.record(Sample {
                            failed: true,
                            slow: false,
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recording thread");
        }
        let c = w.counts();
        assert_eq!(c.calls, THREADS * EACH, "no call lost: {c:?}");
        assert_eq!(c.failures, THREADS * EACH, "no failure lost: {c:?}");
    }
}
