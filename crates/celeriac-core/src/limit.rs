//! Rate limiters: GCRA with a burst (the default), sliding-window and fixed-window counters,
//! a cost per call, several quotas checked at once, and concurrency permits with leases.
//!
//! ```
//! use celeriac_core::limit::{LocalLimiter, Quota};
//! let limiter = LocalLimiter::new();
//! let quotas = [Quota::per_minute(100), Quota::per_hour(1000).name("hourly")];
//! let now = 1_700_000_000_000;
//! let d = limiter.check("user:42", &quotas, 1, now)?;
//! assert!(d.allowed);
//! # Ok::<(), celeriac_core::Error>(())
//! ```
//!
//! - [`Quota`]: `limit` calls per `window` by an [`Algorithm`]; built in code
//!   (`Quota::per_minute(100).burst(10)`) or parsed (`"100/minute; burst=10"`).
//! - [`maths`]: the algorithms as pure functions over explicit state and `now`; every store
//!   runs them (the Redis scripts mirror them).
//! - [`Decision`]: allowed or not, and for the most restrictive quota its limit, remaining,
//!   reset-after and retry-after. Several quotas are all or nothing: when one denies, none is
//!   charged.
//! - Stores implement [`crate::backend::RateLimitStore`] (the embedded SQLite file, Redis);
//!   [`LocalLimiter`] is the same API in process memory (no sharing between processes).
//! - [`RateLimiter`] puts a store to work for a service: fail-open or fail-closed with a
//!   local fallback while the store is down, a short-circuit cache of keys over their limit,
//!   a pause of the store after consecutive failures, shadow mode and per-key overrides.
//! - [`stats`]: what a [`RateLimiter`] decided (allowed, denied, shadow-denied,
//!   short-circuited, store errors, decided during a store pause) and the keys it denied
//!   most, published to a [`KvStore`](crate::backend::KvStore) for the dashboard.
//!
//! Time is an argument: `now` is passed in, in ms since the epoch.

mod limiter;
mod local;
pub mod maths;
mod quota;
pub mod stats;

pub use limiter::{FailMode, RateLimiter, RateLimiterBuilder, Source, Verdict};
pub use local::LocalLimiter;
pub use maths::{Decision, LimitState};
pub use quota::{Algorithm, Quota, MAX_WINDOW};

use crate::error::{Error, Result};
use std::time::Duration;

/// The most quotas one call may check at once.
pub const MAX_QUOTAS: usize = 8;

/// The longest rate-limit key (and permit holder) a store accepts, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// Checks a rate-limit key: not empty, at most [`MAX_KEY_LEN`] bytes.
///
/// # Errors
/// [`Error::Config`] naming `rate limit key` (or `what`) with the key's length.
pub fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::config(
            what,
            "the key is empty; a rate limit key needs at least one byte",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        let head: String = key.chars().take(32).collect();
        return Err(Error::config(
            what,
            format!(
                "the key `{head}…` is {} bytes long, more than the {MAX_KEY_LEN} bytes a key may \
                 have; hash longer keys",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// Checks one call: the key, the quotas (valid, at most [`MAX_QUOTAS`], no two counting the
/// same state) and the cost (fits every quota).
///
/// # Errors
/// [`Error::Config`] naming the bad part.
pub fn check_request(key: &str, quotas: &[Quota], cost: u32) -> Result<()> {
    check_key("rate limit key", key)?;
    if quotas.len() > MAX_QUOTAS {
        return Err(Error::config(
            "rate limit",
            format!(
                "{} quotas in one call; at most {MAX_QUOTAS} may be checked at once",
                quotas.len()
            ),
        ));
    }
    for (i, q) in quotas.iter().enumerate() {
        q.validate()?;
        if quotas[..i].iter().any(|p| same_state(p, q)) {
            return Err(Error::config(
                "rate limit",
                format!("quota `{q}` is listed twice in one call"),
            ));
        }
    }
    maths::check_cost(quotas, cost)
}

fn same_state(a: &Quota, b: &Quota) -> bool {
    a.algorithm() == b.algorithm()
        && a.limit() == b.limit()
        && a.window_ms() == b.window_ms()
        && (a.algorithm() != Algorithm::Gcra || a.burst_size() == b.burst_size())
}

/// Checks a permit request: key and holder, a limit above zero, a lease above zero.
///
/// # Errors
/// [`Error::Config`] naming the bad part.
pub fn check_permit(key: &str, holder: &str, max: u32, lease: Duration) -> Result<()> {
    check_release(key, holder)?;
    if max == 0 {
        return Err(Error::config(
            "concurrency limit",
            format!("the concurrency limit of `{key}` is zero; allow at least one at a time"),
        ));
    }
    if lease.is_zero() {
        return Err(Error::config(
            "permit lease",
            format!("the permit lease of `{key}` is zero; a lease needs a length above zero"),
        ));
    }
    Ok(())
}

/// Checks a permit release: the key and the holder.
///
/// # Errors
/// [`Error::Config`] naming the bad part.
pub fn check_release(key: &str, holder: &str) -> Result<()> {
    check_key("rate limit key", key)?;
    check_key("permit holder", holder)
}

/// Concurrency permits of one key: `held` lists (holder, lease until); expired leases are
/// dropped, the holder renews its own lease or takes a free permit. Returns the decision
/// (`limit` = `max`, `remaining` = free permits, `reset_after` = until every lease ends,
/// `retry_after` = until the first other lease ends).
pub fn acquire_permit(
    held: &mut Vec<(String, i64)>,
    holder: &str,
    max: u32,
    until: i64,
    now: i64,
) -> Decision {
    held.retain(|(_, u)| *u > now);
    let allowed = if let Some(h) = held.iter_mut().find(|(h, _)| h == holder) {
        h.1 = until;
        true
    } else if held.len() < max as usize {
        held.push((holder.to_string(), until));
        true
    } else {
        false
    };
    permit_decision(held, max, allowed, now)
}

/// The decision for permits `held` (live leases) after an acquire.
pub fn permit_decision(held: &[(String, i64)], max: u32, allowed: bool, now: i64) -> Decision {
    let last = held.iter().map(|(_, u)| *u).max().unwrap_or(now);
    let first = held.iter().map(|(_, u)| *u).min().unwrap_or(now);
    let ms = |d: i64| Duration::from_millis(d.max(0) as u64);
    Decision {
        allowed,
        limit: max,
        remaining: max.saturating_sub(u32::try_from(held.len()).unwrap_or(u32::MAX)),
        reset_after: ms(last - now),
        retry_after: (!allowed).then(|| ms(first - now)),
        quota: 0,
    }
}
