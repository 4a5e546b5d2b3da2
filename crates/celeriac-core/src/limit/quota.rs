//! [`Quota`]: how many calls per window, by which algorithm; parsed from `"100/minute"`.

use crate::duration;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The longest window a quota may have (a year): keeps every count exact in a double (Lua).
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// `limit × window in ms` a sliding window may reach: its weighted count stays exact in a
/// double, which is what Lua computes with.
const MAX_SLIDING_PRODUCT: i128 = 1 << 50;

/// How a [`Quota`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// The generic cell rate algorithm (the default): calls spaced evenly at `window / limit`,
    /// with `burst` extra calls allowed at once. One timestamp per key; exact retry-after.
    /// Any window of the quota's length sees at most `limit + burst` calls.
    #[default]
    Gcra,
    /// A sliding-window counter: the current fixed window's count plus the previous one's,
    /// weighted by how much of it still overlaps the sliding window. Never more than `limit`
    /// in a fixed window, and its weighted estimate never above `limit`; a sliding window of
    /// the quota's length can see up to `2 × limit` when the previous window's calls all came
    /// at its very end (the estimate assumes they were spread evenly).
    SlidingWindow,
    /// Fixed windows aligned to the epoch: at most `limit` per window, exactly; up to
    /// `2 × limit` across a window edge.
    FixedWindow,
}

impl Algorithm {
    /// The name used in configuration (`gcra`, `sliding_window`, `fixed_window`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Gcra => "gcra",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::FixedWindow => "fixed_window",
        }
    }

    /// A small stable number for stores (Lua receives it).
    pub fn code(self) -> u8 {
        match self {
            Algorithm::Gcra => 1,
            Algorithm::SlidingWindow => 2,
            Algorithm::FixedWindow => 3,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// # Errors
    /// [`Error::Config`] naming `rate limit algorithm` for an unknown name.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "gcra" => Ok(Algorithm::Gcra),
            "sliding_window" | "sliding" => Ok(Algorithm::SlidingWindow),
            "fixed_window" | "fixed" => Ok(Algorithm::FixedWindow),
            _ => Err(Error::config(
                "rate limit algorithm",
                format!("unknown algorithm `{s}`; expected gcra, sliding_window or fixed_window"),
            )),
        }
    }
}

/// One limit: at most `limit` calls per `window`, counted by an [`Algorithm`].
///
/// ```
/// use celeriac_core::limit::{Algorithm, Quota};
/// let api = Quota::per_minute(100).burst(20);
/// let hourly: Quota = "1000/hour; algorithm=sliding_window; name=hourly".parse()?;
/// assert_eq!(hourly.algorithm(), Algorithm::SlidingWindow);
/// # api.validate()?;
/// # Ok::<(), celeriac_core::Error>(())
/// ```
///
/// The constructors do not check; [`Quota::validate`] does, and every limiter and store calls
/// it, so a zero limit or window is an error where it is used, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u32,
    window_ms: i64,
    burst: u32,
    algorithm: Algorithm,
    name: Arc<str>,
}

impl Quota {
    /// `limit` calls per `window`, GCRA without burst, named `default`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Quota {
            limit,
            window_ms: crate::clock::duration_ms(window),
            burst: 0,
            algorithm: Algorithm::Gcra,
            name: Arc::from("default"),
        }
    }

    /// `limit` calls per second.
    pub fn per_second(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` calls per minute.
    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` calls per hour.
    pub fn per_hour(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(3600))
    }

    /// `limit` calls per day.
    pub fn per_day(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(86_400))
    }

    /// Extra calls GCRA allows at once on top of the steady rate (0 by default: calls are
    /// spaced at `window / limit`). Windowed algorithms ignore it.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// This quota counted by `algorithm`.
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Names the quota (the policy name in `RateLimit-Policy` headers; `default` unless set).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The policy name.
    pub fn policy_name(&self) -> &str {
        &self.name
    }

    /// How many calls per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms.max(0) as u64)
    }

    /// The window in milliseconds.
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// The GCRA burst (extra calls at once).
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// The largest cost one call may have: `burst + 1` for GCRA, `limit` for windows.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => u64::from(self.burst) + 1,
            _ => u64::from(self.limit),
        }
    }

    /// GCRA's emission interval in microseconds, rounded up so the rate is never exceeded.
    pub fn interval_us(&self) -> i64 {
        let window_us = self.window_ms.saturating_mul(1000);
        let limit = i64::from(self.limit.max(1));
        (window_us + limit - 1) / limit
    }

    /// GCRA's tolerance in microseconds: `interval × (burst + 1)`.
    pub fn tolerance_us(&self) -> i64 {
        self.interval_us()
            .saturating_mul(i64::from(self.burst).saturating_add(1))
    }

    /// A short id of what the stored state means (algorithm, limit, window, burst): state is
    /// kept per key and id, so changing a quota starts it afresh instead of misreading it.
    pub fn state_id(&self) -> String {
        match self.algorithm {
            Algorithm::Gcra => format!("g{}-{}-{}", self.limit, self.window_ms, self.burst),
            Algorithm::SlidingWindow => format!("s{}-{}", self.limit, self.window_ms),
            Algorithm::FixedWindow => format!("f{}-{}", self.limit, self.window_ms),
        }
    }

    /// Checks the quota.
    ///
    /// # Errors
    /// [`Error::Config`] naming `rate limit` for a zero limit, a zero or over-long window, a
    /// rate above one call per microsecond, a burst too large to count, or a sliding window
    /// whose `limit × window` is too large to count exactly.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::config("rate limit", m));
        if self.limit == 0 {
            return bad(format!(
                "quota `{}` has a limit of zero; a limit allows at least one call per window",
                self.name
            ));
        }
        if self.window_ms <= 0 {
            return bad(format!(
                "quota `{}` has a window of zero; a window is at least 1 ms",
                self.name
            ));
        }
        if self.window_ms > crate::clock::duration_ms(MAX_WINDOW) {
            return bad(format!(
                "quota `{}` has a window of {} ms, longer than the 366 days a window may have",
                self.name, self.window_ms
            ));
        }
        if self.algorithm == Algorithm::Gcra {
            if i64::from(self.limit) > self.window_ms.saturating_mul(1000) {
                return bad(format!(
                    "quota `{}` allows {} calls per {} ms, more than one per microsecond",
                    self.name, self.limit, self.window_ms
                ));
            }
            // The tolerance must stay well inside what a double holds exactly (Lua).
            let tau = i128::from(self.interval_us()) * (i128::from(self.burst) + 1);
            if tau > 1 << 50 {
                return bad(format!(
                    "quota `{}`: a burst of {} at this rate spans more than 35 years",
                    self.name, self.burst
                ));
            }
        }
        if self.algorithm == Algorithm::SlidingWindow
            && i128::from(self.limit) * i128::from(self.window_ms) > MAX_SLIDING_PRODUCT
        {
            return bad(format!(
                "quota `{}`: a sliding window of {} ms with a limit of {} is too large to \
                 count exactly; use a shorter window or gcra",
                self.name, self.window_ms, self.limit
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, duration::format(self.window()))?;
        if self.burst > 0 {
            write!(f, "; burst={}", self.burst)?;
        }
        if self.algorithm != Algorithm::Gcra {
            write!(f, "; algorithm={}", self.algorithm)?;
        }
        if &*self.name != "default" {
            write!(f, "; name={}", self.name)?;
        }
        Ok(())
    }
}

/// A quota's window: a duration (`30s`, `1h30m`, see [`crate::duration`]) or a bare unit
/// meaning one of it (`s`, `minute`, `hours`), as in `100/minute`.
fn parse_window(text: &str) -> Result<i64> {
    let t = text.trim();
    let bare_unit = t.starts_with(|c: char| c.is_ascii_alphabetic());
    let parsed = if bare_unit {
        duration::parse(&format!("1{t}")).map_err(|_| format!("`{t}` is not a unit"))
    } else {
        duration::parse(t).map_err(|e| e.to_string())
    };
    parsed.map(crate::clock::duration_ms).map_err(|why| {
        Error::config(
            "rate limit",
            format!(
                "`{text}` is not a window: {why} (try second, minute, hour, day, 30s or 1h30m)"
            ),
        )
    })
}

impl FromStr for Quota {
    type Err = Error;

    /// Reads `"<limit>/<window>"` with optional `; burst=N`, `; algorithm=NAME` and
    /// `; name=NAME` (separated by `;`, `,` or spaces): `"100/minute"`, `"10/s; burst=5"`,
    /// `"5000/1h; algorithm=sliding_window"`. The quota is validated.
    ///
    /// # Errors
    /// [`Error::Config`] naming `rate limit` (or `rate limit algorithm`) with what was wrong.
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s
            .split([';', ',', ' '])
            .map(str::trim)
            .filter(|p| !p.is_empty());
        let head = parts.next().unwrap_or("");
        let (count, window) = head.split_once('/').ok_or_else(|| {
            Error::config(
                "rate limit",
                format!("`{s}` is not a rate limit (expected <limit>/<window>, as in 100/minute)"),
            )
        })?;
        let limit: u32 = count.trim().parse().map_err(|_| {
            Error::config(
                "rate limit",
                format!("`{count}` in `{s}` is not a whole number of calls"),
            )
        })?;
        let mut quota = Quota {
            limit,
            window_ms: parse_window(window)?,
            burst: 0,
            algorithm: Algorithm::Gcra,
            name: Arc::from("default"),
        };
        for part in parts {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::config(
                    "rate limit",
                    format!("`{part}` in `{s}` is not a setting (expected key=value)"),
                )
            })?;
            match k.trim() {
                "burst" => {
                    quota.burst = v.trim().parse().map_err(|_| {
                        Error::config(
                            "rate limit",
                            format!("burst `{v}` in `{s}` is not a whole number"),
                        )
                    })?
                }
                "algorithm" | "algo" => quota.algorithm = v.parse()?,
                "name" => quota.name = Arc::from(v.trim()),
                other => {
                    return Err(Error::config(
                        "rate limit",
                        format!(
                            "unknown setting `{other}` in `{s}` (expected burst, algorithm, name)"
                        ),
                    ))
                }
            }
        }
        quota.validate()?;
        Ok(quota)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_and_settings() {
        let q: Quota = "100/minute".parse().expect("parses");
        assert_eq!((q.limit(), q.window_ms(), q.burst_size()), (100, 60_000, 0));
        assert_eq!(q.algorithm(), Algorithm::Gcra);
        let q: Quota = "10/30s; burst=5, algorithm=fixed name=api"
            .parse()
            .expect("parses");
        assert_eq!((q.limit(), q.window_ms(), q.burst_size()), (10, 30_000, 5));
        assert_eq!(q.algorithm(), Algorithm::FixedWindow);
        assert_eq!(q.policy_name(), "api");
        assert_eq!(
            q.to_string(),
            "10/30s; burst=5; algorithm=fixed_window; name=api"
        );
        let again: Quota = q.to_string().parse().expect("round trip");
        assert_eq!(again, q);
    }

    #[test]
    fn windows_read_the_duration_grammar_or_a_bare_unit() {
        let window = |s: &str| s.parse::<Quota>().expect(s).window_ms();
        assert_eq!(window("100/1h30m"), 5_400_000);
        assert_eq!(window("10/1.5s"), 1_500);
        assert_eq!(window("10/30"), 30_000, "a plain number is seconds");
        assert_eq!(window("100/minute"), 60_000);
        assert_eq!(window("100/Minute"), 60_000);
        assert_eq!(window("100/hours"), 3_600_000);
        assert_eq!(window("100/sec"), 1_000);
        assert_eq!(window("10/s"), 1_000);
        assert_eq!(window("10/.5m"), 30_000);
    }

    #[test]
    fn bad_quotas_are_clear_errors() {
        let msg = |s: &str| s.parse::<Quota>().expect_err(s).to_string();
        assert!(
            msg("0/minute").contains("limit of zero"),
            "{}",
            msg("0/minute")
        );
        assert!(msg("5/0s").contains("window of zero"));
        assert!(msg("5/fortnight").contains("not a window"));
        let e = msg("5/1m30");
        assert!(
            e.contains("rate limit") && e.contains("a number without a unit, `30`"),
            "{e}"
        );
        assert!(!e.contains("every"), "{e}");
        assert!(msg("many/minute").contains("not a whole number"));
        assert!(msg("100").contains("<limit>/<window>"));
        let e = msg("5/s; algorithm=leaky");
        assert!(e.contains("unknown algorithm `leaky`") && e.contains("rate limit algorithm"));
        assert!(msg("5/s; colour=red").contains("unknown setting"));
        assert!(msg("4000000000/1ms").contains("more than one per microsecond"));
        assert!(msg("4000000000/1d; algorithm=sliding").contains("too large"));
        assert!(Quota::per_minute(0).validate().is_err());
        assert!(Quota::new(1, Duration::ZERO).validate().is_err());
        assert!("x".parse::<Algorithm>().is_err());
    }

    #[test]
    fn gcra_interval_rounds_up() {
        let q = Quota::per_second(3);
        assert_eq!(q.interval_us(), 333_334);
        assert_eq!(Quota::per_minute(100).burst(4).tolerance_us(), 600_000 * 5);
    }
}
