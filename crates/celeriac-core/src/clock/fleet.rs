//! The fleet's clock: one time line that every process of an application shares, whatever its
//! host's wall clock says.
//!
//! A [`FleetClock`] takes a reading of the store's time from a [`TimeSource`] (Redis `TIME`,
//! or the host's boot clock for SQLite) and carries it forward on this process's monotonic
//! clock until the next reading. Leases, reaping, delays, expiry, schedules and limiter
//! decisions all read it, so two processes whose wall clocks disagree by minutes still agree
//! on `now` to within the round trip of a reading, and a step of one host's wall clock (an
//! NTP correction, a VM resumed) moves nothing: it is logged, and the fleet clock goes on.

use super::{system_now_ms, Clock, UnixMs};
use crate::Result;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A jump of the store's time against the monotonic clock, or of the host's wall clock, past
/// which a reading is reported as a step (smaller ones are drift and round-trip noise).
pub const STEP_WARNING: Duration = Duration::from_secs(1);

/// How far the host's wall clock may be from the fleet clock before it is worth a warning.
pub const OFFSET_WARNING: Duration = Duration::from_secs(1);

/// How often the fleet clock takes a new reading of the store's time by default.
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);

/// Where the fleet's time comes from: the store's own clock.
pub trait TimeSource: Send + Sync + 'static {
    /// The store's time now, in milliseconds since the Unix epoch, as of the moment the store
    /// read it (the caller adds half the round trip, unless [`TimeSource::exact`]).
    fn store_now(&self) -> impl Future<Output = Result<UnixMs>> + Send;

    /// Whether [`TimeSource::store_now`] answers with the time as of its return, so no part of
    /// the round trip is to be added (a clock read on this host).
    fn exact(&self) -> bool {
        false
    }

    /// Names the source in log lines ("Redis TIME").
    fn name(&self) -> &'static str;
}

/// The time in a Redis `TIME` reply (seconds and microseconds), in milliseconds.
///
/// # Errors
/// [`crate::Error::Backend`] for a reply no clock gives (a non-positive second, microseconds
/// out of range).
pub fn time_reply_ms(secs: i64, micros: i64) -> Result<UnixMs> {
    if secs <= 0 || !(0..1_000_000).contains(&micros) {
        return Err(crate::Error::backend(
            crate::ErrorKind::GiveUp,
            format!("Redis TIME answered {secs} s {micros} µs"),
        ));
    }
    Ok(secs.saturating_mul(1000).saturating_add(micros / 1000))
}

/// One reading of the store's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The fleet's time when the reading was taken.
    pub fleet_ms: UnixMs,
    /// Fleet time minus this host's wall clock, in milliseconds.
    pub offset_ms: i64,
    /// The round trip of the reading; the fleet time is right to within half of it.
    pub round_trip: Duration,
    /// How far the fleet clock moved against the monotonic clock at this reading, in
    /// milliseconds (0 at the first).
    pub jump_ms: i64,
}

/// The fleet's clock (see the module documentation). Cheap to read: one atomic load and a
/// monotonic clock read.
#[derive(Debug)]
pub struct FleetClock {
    /// The monotonic instant the clock counts from.
    origin: Instant,
    /// The fleet's time at `origin`, in milliseconds: `now = base + origin.elapsed()`.
    base: AtomicI64,
    /// Fleet time minus the host's wall clock at the last reading.
    offset: AtomicI64,
    /// The last reading's round trip, in microseconds.
    round_trip_us: AtomicI64,
    /// The host's wall clock minus the monotonic clock, at the last check (for steps).
    wall_minus_mono: AtomicI64,
    /// Whether a reading of a store was ever taken.
    synced: AtomicBool,
    /// Reads the host's wall clock instead (a clock for a store that has none of its own).
    host: bool,
    /// The name of the source of the readings, once one was taken.
    source: std::sync::OnceLock<&'static str>,
}

impl Default for FleetClock {
    fn default() -> Self {
        Self::unsynced()
    }
}

impl FleetClock {
    /// A clock that starts at the host's wall clock and, until its first reading, carries it
    /// forward on the monotonic clock.
    pub fn unsynced() -> Self {
        let origin = Instant::now();
        let wall = system_now_ms();
        Self {
            origin,
            base: AtomicI64::new(wall),
            offset: AtomicI64::new(0),
            round_trip_us: AtomicI64::new(0),
            wall_minus_mono: AtomicI64::new(wall),
            synced: AtomicBool::new(false),
            host: false,
            source: std::sync::OnceLock::new(),
        }
    }

    /// The host's wall clock as a fleet clock: for stores that live in one process's memory
    /// (a local rate limiter), where no other process compares times.
    pub fn host() -> Self {
        Self {
            host: true,
            ..Self::unsynced()
        }
    }

    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Fleet time minus this host's wall clock at the last reading, in milliseconds
    /// (0 before the first).
    pub fn offset_ms(&self) -> i64 {
        self.offset.load(Ordering::Relaxed)
    }

    /// The round trip of the last reading (zero before the first).
    pub fn round_trip(&self) -> Duration {
        Duration::from_micros(self.round_trip_us.load(Ordering::Relaxed).max(0) as u64)
    }

    /// Whether a reading of the store's time was ever taken.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// What the readings come from ("Redis TIME"), once one was taken.
    pub fn source(&self) -> Option<&'static str> {
        self.source.get().copied()
    }

    /// Now by the fleet clock, from the coarse wall clock ([`super::coarse_now_ms`]) and the
    /// last offset: an atomic load or two, for hot paths that judge freshness to a
    /// millisecond. A step of the host's wall clock shows here until the next reading.
    pub fn coarse_now_ms(&self) -> UnixMs {
        if self.host {
            return super::coarse_now_ms();
        }
        super::coarse_now_ms().saturating_add(self.offset_ms())
    }

    /// Takes a reading: asks `source` `samples` times (at least once), keeps the answer with
    /// the shortest round trip, and sets the clock to it plus half that round trip. Logs a
    /// warning when the fleet time jumped against the monotonic clock, or when this host's
    /// wall clock stepped or is off the fleet's by more than [`OFFSET_WARNING`].
    ///
    /// # Errors
    /// The source's error when no sample could be taken.
    pub async fn sync<S: TimeSource>(&self, source: &S, samples: usize) -> Result<Reading> {
        let mut best: Option<(Duration, UnixMs, Instant)> = None;
        let mut last_err = None;
        for _ in 0..samples.max(1) {
            let sent = Instant::now();
            match source.store_now().await {
                Ok(at) => {
                    let received = Instant::now();
                    let rtt = received.duration_since(sent);
                    if best.is_none_or(|(b, _, _)| rtt < b) {
                        best = Some((rtt, at, received));
                    }
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some((rtt, at, received)) = best else {
            return Err(last_err.unwrap_or(crate::Error::Closed));
        };
        let half = if source.exact() {
            0
        } else {
            i64::try_from(rtt.as_millis() / 2).unwrap_or(0)
        };
        let fleet_then = at.saturating_add(half);
        let since_origin =
            i64::try_from(received.duration_since(self.origin).as_millis()).unwrap_or(i64::MAX);
        let elapsed_since = i64::try_from(received.elapsed().as_millis()).unwrap_or(0);
        let fleet_now = fleet_then.saturating_add(elapsed_since);
        let new_base = fleet_then.saturating_sub(since_origin);
        let _ = self.source.set(source.name());
        let was_synced = self.synced.swap(true, Ordering::Relaxed);
        let old_base = self.base.swap(new_base, Ordering::Relaxed);
        let jump_ms = if was_synced { new_base - old_base } else { 0 };
        let offset_ms = fleet_now - system_now_ms();
        let old_offset = self.offset.swap(offset_ms, Ordering::Relaxed);
        self.round_trip_us.store(
            i64::try_from(rtt.as_micros()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        let step = super::duration_ms(STEP_WARNING);
        if jump_ms.abs() > step {
            warn!(
                source = source.name(),
                jump_ms, "the store's clock moved against this process's monotonic clock; the fleet clock follows the store"
            );
        }
        let warn_offset = super::duration_ms(OFFSET_WARNING);
        if offset_ms.abs() > warn_offset && (!was_synced || (offset_ms - old_offset).abs() > step) {
            warn!(
                source = source.name(),
                offset_ms,
                "this host's wall clock is off the fleet's clock; Celeriac uses the fleet's, but check the host's time synchronisation"
            );
        } else if was_synced && offset_ms.abs() <= warn_offset && old_offset.abs() > warn_offset {
            info!(
                offset_ms,
                "this host's wall clock agrees with the fleet's clock again"
            );
        }
        metrics::gauge!("celeriac_clock_offset_seconds").set(offset_ms as f64 / 1000.0);
        metrics::gauge!("celeriac_clock_round_trip_seconds").set(rtt.as_secs_f64());
        debug!(
            source = source.name(),
            offset_ms,
            rtt_us = rtt.as_micros() as u64,
            "fleet clock reading"
        );
        Ok(Reading {
            fleet_ms: fleet_now,
            offset_ms,
            round_trip: rtt,
            jump_ms,
        })
    }

    /// Checks whether this host's wall clock stepped since the last check, against the
    /// monotonic clock; logs a warning and returns the step in milliseconds if it did by more
    /// than [`STEP_WARNING`]. The fleet clock itself is not moved by it.
    pub fn check_wall_step(&self) -> Option<i64> {
        let now = system_now_ms() - self.elapsed_ms();
        let before = self.wall_minus_mono.swap(now, Ordering::Relaxed);
        let step = now - before;
        if step.abs() > super::duration_ms(STEP_WARNING) {
            warn!(
                step_ms = step,
                "this host's wall clock stepped; the fleet clock runs on and is not moved by it"
            );
            metrics::counter!("celeriac_clock_wall_steps_total").increment(1);
            return Some(step);
        }
        None
    }

    /// Takes a new reading every `every` in a spawned task, and checks for steps of the host's
    /// wall clock each time, until `stop` is cancelled or the last `Arc` of this clock is
    /// dropped. A failed reading is logged; the clock then carries on, monotonic, from the
    /// last one.
    pub fn spawn_sync<S: TimeSource>(
        self: &Arc<Self>,
        source: S,
        every: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let Some(clock) = weak.upgrade() else { return };
                clock.check_wall_step();
                match clock.sync(&source, 3).await {
                    Ok(_) => {}
                    // The store is gone for good.
                    Err(crate::Error::Closed) => return,
                    Err(e) => {
                        debug!(source = source.name(), error = %e, "reading the store's clock failed; carrying on from the last reading")
                    }
                }
            }
        })
    }
}

impl Clock for FleetClock {
    fn now_ms(&self) -> UnixMs {
        if self.host {
            return system_now_ms();
        }
        self.base
            .load(Ordering::Relaxed)
            .saturating_add(self.elapsed_ms())
    }
}

/// A store that keeps the fleet's clock: every process reads its `now` from it, so their
/// times agree whatever their hosts' wall clocks say.
pub trait StoreClock: Send + Sync + 'static {
    /// The fleet's clock as this process reads it.
    fn fleet_clock(&self) -> Arc<FleetClock>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A store whose clock stands `offset` ms off the host's and answers after `delay`.
    struct Skewed {
        offset: AtomicI64,
        calls: AtomicUsize,
    }

    impl TimeSource for Skewed {
        async fn store_now(&self) -> Result<UnixMs> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Ok(system_now_ms() + self.offset.load(Ordering::Relaxed))
        }
        fn name(&self) -> &'static str {
            "test"
        }
    }

    #[tokio::test]
    async fn the_fleet_clock_follows_the_store_not_the_host() {
        let source = Skewed {
            offset: AtomicI64::new(-30_000),
            calls: AtomicUsize::new(0),
        };
        let clock = FleetClock::unsynced();
        assert!(!clock.is_synced());
        let r = clock.sync(&source, 3).await.expect("reading");
        assert_eq!(source.calls.load(Ordering::Relaxed), 3);
        assert!(clock.is_synced());
        assert_eq!(r.jump_ms, 0, "the first reading is no jump");
        let diff = clock.now_ms() - (system_now_ms() - 30_000);
        assert!(
            diff.abs() < 200,
            "fleet time is the store's: off by {diff} ms"
        );
        assert!((r.offset_ms + 30_000).abs() < 200, "offset {}", r.offset_ms);
        assert_eq!(clock.offset_ms(), r.offset_ms);
        let coarse = clock.coarse_now_ms() - clock.now_ms();
        assert!(coarse.abs() < 200, "coarse reading off by {coarse} ms");

        // The store's clock steps forward by a minute: the next reading follows it and says so.
        source.offset.store(30_000, Ordering::Relaxed);
        let r = clock.sync(&source, 1).await.expect("reading");
        assert!((r.jump_ms - 60_000).abs() < 200, "jump {}", r.jump_ms);
        let diff = clock.now_ms() - (system_now_ms() + 30_000);
        assert!(diff.abs() < 200, "off by {diff} ms after the jump");
    }

    #[test]
    fn the_host_clock_reads_the_wall_clock() {
        let clock = FleetClock::host();
        let diff = clock.now_ms() - system_now_ms();
        assert!(diff.abs() < 50, "{diff}");
        assert_eq!(clock.check_wall_step(), None);
    }
}
