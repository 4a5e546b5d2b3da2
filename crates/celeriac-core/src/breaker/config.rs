//! A breaker's settings and the builder that checks them.

use super::CircuitBreaker;
use crate::clock::{Clock, CoarseClock};
use crate::error::{Error, Result};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Which calls a closed breaker judges its rates by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `size`, kept in `buckets` equal slices of time (the window
    /// slides by one slice at a time).
    Time {
        /// How far back the window reaches.
        size: Duration,
        /// Into how many slices it is cut (at least 1, at most one per millisecond).
        buckets: u32,
    },
}

/// Decides whether an error counts as a failure (`true`) or is ignored (`false`).
pub type ErrorPredicate = Arc<dyn Fn(&(dyn std::error::Error + 'static)) -> bool + Send + Sync>;

/// A breaker's checked settings (see [`BreakerBuilder`] for what each means).
#[derive(Clone)]
pub struct BreakerConfig {
    pub(crate) name: Arc<str>,
    pub(crate) window: WindowKind,
    pub(crate) failure_rate: f64,
    pub(crate) slow_rate: Option<f64>,
    pub(crate) slow_call: Duration,
    pub(crate) min_calls: u32,
    pub(crate) half_open_probes: u32,
    pub(crate) open_for: Duration,
    pub(crate) backoff: f64,
    pub(crate) max_open_for: Duration,
    pub(crate) jitter: f64,
    pub(crate) max_half_open: Option<Duration>,
    pub(crate) is_failure: Option<ErrorPredicate>,
}

impl fmt::Debug for BreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerConfig")
            .field("name", &self.name)
            .field("window", &self.window)
            .field("failure_rate", &self.failure_rate)
            .field("slow_rate", &self.slow_rate)
            .field("slow_call", &self.slow_call)
            .field("min_calls", &self.min_calls)
            .field("half_open_probes", &self.half_open_probes)
            .field("open_for", &self.open_for)
            .field("backoff", &self.backoff)
            .field("max_open_for", &self.max_open_for)
            .field("jitter", &self.jitter)
            .field("max_half_open", &self.max_half_open)
            .field("is_failure", &self.is_failure.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl BreakerConfig {
    /// The breaker's name (its metrics label and its key in a shared store).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The window.
    pub fn window(&self) -> WindowKind {
        self.window
    }

    /// The failure rate (percent) at or above which the breaker opens.
    pub fn failure_rate(&self) -> f64 {
        self.failure_rate
    }

    /// The slow-call rate (percent) at or above which it opens, if slow calls count.
    pub fn slow_rate(&self) -> Option<f64> {
        self.slow_rate
    }

    /// Calls taking at least this long are slow.
    pub fn slow_call(&self) -> Duration {
        self.slow_call
    }

    /// The fewest calls in the window before rates are judged.
    pub fn min_calls(&self) -> u32 {
        self.min_calls
    }

    /// How many probes half-open lets through.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// How long the breaker stays open after the `n`-th trip in a row (1-based), before
    /// jitter: `open_for × backoff^(n-1)`, at most `max_open_for`.
    pub fn open_duration(&self, consecutive: u32) -> Duration {
        let exp = consecutive.saturating_sub(1).min(64) as i32;
        let secs = self.open_for.as_secs_f64() * self.backoff.powi(exp);
        let cap = self.max_open_for.as_secs_f64();
        if !secs.is_finite() || secs >= cap {
            self.max_open_for
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The jitter fraction: an open period is shortened by up to this share at random.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// How long half-open may last before the breaker opens again, if bounded.
    pub fn max_half_open(&self) -> Option<Duration> {
        self.max_half_open
    }
}

/// Builds a [`CircuitBreaker`]; every setting has a default and is checked by
/// [`BreakerBuilder::build`].
///
/// ```
/// use celeriac_core::breaker::{CircuitBreaker, WindowKind};
/// use std::time::Duration;
/// let breaker = CircuitBreaker::builder("partner-api")
///     .window(WindowKind::Count(50))
///     .failure_rate(50.0)
///     .min_calls(10)
///     .open_for(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// assert_eq!(breaker.name(), "partner-api");
/// ```
pub struct BreakerBuilder {
    name: String,
    window: WindowKind,
    failure_rate: f64,
    slow_rate: Option<f64>,
    slow_call: Duration,
    min_calls: u32,
    half_open_probes: u32,
    open_for: Duration,
    backoff: f64,
    max_open_for: Option<Duration>,
    jitter: f64,
    max_half_open: Option<Duration>,
    is_failure: Option<ErrorPredicate>,
    clock: Arc<dyn Clock>,
    /// Whether `clock` came from [`BreakerBuilder::clock`].
    custom_clock: bool,
}

impl fmt::Debug for BreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The longest breaker name (it becomes a store key and a metrics label).
pub const MAX_NAME_LEN: usize = 200;

impl BreakerBuilder {
    pub(crate) fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            window: WindowKind::Count(100),
            failure_rate: 50.0,
            slow_rate: None,
            slow_call: Duration::from_secs(60),
            min_calls: 10,
            half_open_probes: 3,
            open_for: Duration::from_secs(30),
            backoff: 2.0,
            max_open_for: None,
            jitter: 0.1,
            max_half_open: None,
            is_failure: None,
            clock: Arc::new(CoarseClock),
            custom_clock: false,
        }
    }

    /// The sliding window (default: the last 100 calls).
    pub fn window(mut self, window: WindowKind) -> Self {
        self.window = window;
        self
    }

    /// Opens when at least this percentage of the window's calls failed, in (0, 100]
    /// (default 50).
    pub fn failure_rate(mut self, percent: f64) -> Self {
        self.failure_rate = percent;
        self
    }

    /// Opens when at least this percentage of the window's calls were slow, in (0, 100]
    /// (default: slow calls do not open the breaker).
    pub fn slow_call_rate(mut self, percent: f64) -> Self {
        self.slow_rate = Some(percent);
        self
    }

    /// A call taking at least this long is slow (default 60 s; above zero).
    pub fn slow_call_duration(mut self, d: Duration) -> Self {
        self.slow_call = d;
        self
    }

    /// Rates are judged only once the window holds at least this many calls (default 10;
    /// at least 1, and for a count window at most its size).
    pub fn min_calls(mut self, n: u32) -> Self {
        self.min_calls = n;
        self
    }

    /// How many probe calls half-open lets through before deciding (default 3; at least 1).
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.half_open_probes = n;
        self
    }

    /// How long the breaker stays open after a first trip (default 30 s; above zero).
    pub fn open_for(mut self, d: Duration) -> Self {
        self.open_for = d;
        self
    }

    /// Each further trip in a row (half-open failing again) multiplies the open period by
    /// this (default 2; finite and at least 1, where 1 turns backoff off).
    pub fn backoff(mut self, multiplier: f64) -> Self {
        self.backoff = multiplier;
        self
    }

    /// The open period never exceeds this (default: 10 × `open_for`; at least `open_for`).
    pub fn max_open_for(mut self, d: Duration) -> Self {
        self.max_open_for = Some(d);
        self
    }

    /// Shortens each open period by a random share of up to `fraction`, in [0, 1]
    /// (default 0.1), so that breakers opened together do not probe together.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Opens again when half-open lasts longer than this without a verdict, for instance
    /// because probes never finish (default: no bound; above zero).
    pub fn max_wait_in_half_open(mut self, d: Duration) -> Self {
        self.max_half_open = Some(d);
        self
    }

    /// Which errors count as failures in [`CircuitBreaker::call`] (default: every error);
    /// the others are recorded as ignored.
    pub fn record_error<F>(mut self, is_failure: F) -> Self
    where
        F: Fn(&(dyn std::error::Error + 'static)) -> bool + Send + Sync + 'static,
    {
        self.is_failure = Some(Arc::new(is_failure));
        self
    }

    /// The clock that times calls and open periods (default: the system clock at millisecond
    /// resolution, [`CoarseClock`], one atomic load a read; tests pass a
    /// [`crate::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self.custom_clock = true;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad setting.
    pub fn config(&self) -> Result<BreakerConfig> {
        let bad = |setting: &str, msg: String| {
            Err(Error::config(
                format!("breaker `{}`: {setting}", self.name),
                msg,
            ))
        };
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return bad(
                "name",
                format!(
                    "a breaker name needs 1 to {MAX_NAME_LEN} bytes, this one has {}",
                    self.name.len()
                ),
            );
        }
        match self.window {
            WindowKind::Count(0) => {
                return bad("window", "a count window needs at least 1 call".into())
            }
            WindowKind::Count(n) if n > 1_000_000 => {
                return bad(
                    "window",
                    format!("a count window of {n} calls is more than 1,000,000"),
                )
            }
            WindowKind::Time { size, .. } if size.is_zero() => {
                return bad("window", "a time window needs a size above zero".into())
            }
            WindowKind::Time { buckets: 0, .. } => {
                return bad("window", "a time window needs at least 1 bucket".into())
            }
            WindowKind::Time { size, buckets } => {
                let ms = crate::clock::duration_ms(size);
                if i64::from(buckets) > ms || buckets > 10_000 {
                    return bad(
                        "window",
                        format!(
                            "{buckets} buckets do not fit a window of {ms} ms (at most one \
                             per millisecond and 10,000 in all)"
                        ),
                    );
                }
            }
            WindowKind::Count(_) => {}
        }
        let rate_ok = |r: f64| r.is_finite() && r > 0.0 && r <= 100.0;
        if !rate_ok(self.failure_rate) {
            return bad(
                "failure_rate",
                format!("{} is not a percentage in (0, 100]", self.failure_rate),
            );
        }
        if let Some(r) = self.slow_rate {
            if !rate_ok(r) {
                return bad(
                    "slow_call_rate",
                    format!("{r} is not a percentage in (0, 100]"),
                );
            }
        }
        if self.slow_call.is_zero() {
            return bad("slow_call_duration", "must be above zero".into());
        }
        if self.min_calls == 0 {
            return bad("min_calls", "must be at least 1".into());
        }
        if let WindowKind::Count(n) = self.window {
            if self.min_calls > n {
                return bad(
                    "min_calls",
                    format!(
                        "{} is more than the window's {n} calls: the breaker could never open",
                        self.min_calls
                    ),
                );
            }
        }
        if self.half_open_probes == 0 {
            return bad("half_open_probes", "must be at least 1".into());
        }
        if self.open_for.is_zero() {
            return bad("open_for", "must be above zero".into());
        }
        if !self.backoff.is_finite() || self.backoff < 1.0 {
            return bad(
                "backoff",
                format!("{} is not a finite multiplier of at least 1", self.backoff),
            );
        }
        let max_open_for = self
            .max_open_for
            .unwrap_or(self.open_for.saturating_mul(10));
        if max_open_for < self.open_for {
            return bad(
                "max_open_for",
                format!(
                    "{max_open_for:?} is shorter than open_for ({:?})",
                    self.open_for
                ),
            );
        }
        if !self.jitter.is_finite() || !(0.0..=1.0).contains(&self.jitter) {
            return bad(
                "jitter",
                format!("{} is not a fraction in [0, 1]", self.jitter),
            );
        }
        if self.max_half_open.is_some_and(|d| d.is_zero()) {
            return bad("max_wait_in_half_open", "must be above zero".into());
        }
        Ok(BreakerConfig {
            name: self.name.as_str().into(),
            window: self.window,
            failure_rate: self.failure_rate,
            slow_rate: self.slow_rate,
            slow_call: self.slow_call,
            min_calls: self.min_calls,
            half_open_probes: self.half_open_probes,
            open_for: self.open_for,
            backoff: self.backoff,
            max_open_for,
            jitter: self.jitter,
            max_half_open: self.max_half_open,
            is_failure: self.is_failure.clone(),
        })
    }

    /// Checks the settings and builds the breaker (closed).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad setting.
    pub fn build(self) -> Result<CircuitBreaker> {
        let config = self.config()?;
        Ok(CircuitBreaker::from_config(
            config,
            self.clock,
            self.custom_clock,
        ))
    }
}
