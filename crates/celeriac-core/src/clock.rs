//! Time as an argument: the worker reads a [`Clock`], stores take `now` from their callers.
//! By default that clock is the store's [`FleetClock`], so processes on hosts whose wall
//! clocks disagree still agree on `now`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod fleet;
pub use fleet::{
    time_reply_ms, FleetClock, Reading, StoreClock, TimeSource, OFFSET_WARNING, RESYNC_EVERY,
    STEP_WARNING,
};

/// Milliseconds since the Unix epoch, the unit every store works in.
pub type UnixMs = i64;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> UnixMs;

    /// How long to really sleep for `d` of this clock's time to pass (the same, except for
    /// a [`WarpedClock`]).
    fn real_duration(&self, d: Duration) -> Duration {
        d
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMs {
        system_now_ms()
    }
}

/// The wall clock in milliseconds since the epoch.
pub fn system_now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The wall clock as last read by a background thread that reads it every millisecond: one
/// atomic load, for hot paths that judge freshness in milliseconds (a cache hit). It may lag
/// the wall clock by a millisecond, more on a machine too busy to run the thread on time.
/// Falls back to [`system_now_ms`] if the thread cannot be started.
pub fn coarse_now_ms() -> UnixMs {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        COARSE_NOW.store(system_now_ms(), Ordering::Relaxed);
        // The first reader waits until the thread runs, so its start-up (which allocates)
        // is over before anyone relies on the clock.
        let (ready, started) = std::sync::mpsc::sync_channel::<()>(1);
        let ticker = std::thread::Builder::new()
            .name("celeriac-clock".into())
            .spawn(move || {
                let _ = ready.send(());
                drop(ready);
                loop {
                    std::thread::sleep(Duration::from_millis(1));
                    COARSE_NOW.store(system_now_ms(), Ordering::Relaxed);
                }
            });
        if ticker.is_err() || started.recv().is_err() {
            COARSE_NOW.store(0, Ordering::Relaxed);
        }
    });
    match COARSE_NOW.load(Ordering::Relaxed) {
        0 => system_now_ms(),
        now => now,
    }
}

/// The wall clock from [`coarse_now_ms`]: an atomic load per read, at most about a
/// millisecond behind. For hot paths that count in milliseconds (breaker windows).
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    fn now_ms(&self) -> UnixMs {
        coarse_now_ms()
    }
}

/// The last wall-clock reading of the ticker thread behind [`coarse_now_ms`] (0: none).
static COARSE_NOW: AtomicI64 = AtomicI64::new(0);

/// A clock that only moves when told to: for tests of retry schedules, delays and leases.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: UnixMs) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(start)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, to: UnixMs) {
        self.now.store(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMs {
        self.now.load(Ordering::SeqCst)
    }
}

/// The system clock running `factor` times faster from `origin`:
/// `now = origin + (real_now - origin) * factor`.
///
/// **For tests**: it lets real processes (`celeriac beat` with `CELERIAC_BEAT_TIME_SCALE`)
/// live through minutes of schedule ticks in seconds. Processes given the same origin and
/// factor share one warped time line.
#[derive(Debug, Clone, Copy)]
pub struct WarpedClock {
    origin: UnixMs,
    factor: f64,
}

impl WarpedClock {
    /// A clock running `factor` times faster than the wall clock from `origin` (ms).
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming `time_scale` unless `factor` is finite and at least 1.
    pub fn new(origin: UnixMs, factor: f64) -> crate::Result<Self> {
        if !factor.is_finite() || factor < 1.0 {
            return Err(crate::Error::config(
                "time_scale",
                format!("{factor} must be a finite number of at least 1"),
            ));
        }
        Ok(Self { origin, factor })
    }
}

impl Clock for WarpedClock {
    fn now_ms(&self) -> UnixMs {
        let real = system_now_ms();
        self.origin + ((real - self.origin) as f64 * self.factor) as i64
    }

    fn real_duration(&self, d: Duration) -> Duration {
        d.div_f64(self.factor)
    }
}

/// Converts a duration to whole milliseconds, saturating.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_follows_the_wall_clock() {
        let before = system_now_ms();
        let coarse = coarse_now_ms();
        assert!(coarse >= before - 1_000, "{coarse} far behind {before}");
        std::thread::sleep(Duration::from_millis(50));
        let later = coarse_now_ms();
        assert!(
            later > coarse,
            "the ticker moved the coarse clock ({coarse} -> {later})"
        );
        assert!(later <= system_now_ms(), "never ahead of the wall clock");
    }
}
