//! The arithmetic of the reports: percentiles, per-second series, and a GCRA replay that says
//! how many requests of a key the shop should have allowed given when they were sent.

use super::oha::Rec;
use serde::Serialize;
use std::collections::BTreeMap;

/// The `q` quantile (0..=1) of sorted values (nearest rank).
pub(crate) fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latency and throughput of one route over a measured window.
#[derive(Clone, Debug, Serialize, Default)]
pub(crate) struct RouteStats {
    pub(crate) route: String,
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    pub(crate) limited_429: u64,
    pub(crate) other: u64,
    /// oha errors (no HTTP answer), over the whole run.
    pub(crate) errors: u64,
    /// Answered requests per second over the window.
    pub(crate) rps: f64,
    /// Successful (2xx) requests per second over the window.
    pub(crate) ok_rps: f64,
    /// Latency of 2xx answers, ms.
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) p999_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
}

/// Statistics of the records of `route` sent within `[from, to)` (Unix ms).
pub(crate) fn route_stats(
    route: &str,
    recs: &[&Rec],
    from: f64,
    to: f64,
    errors: u64,
) -> RouteStats {
    let mut s = RouteStats {
        route: route.to_string(),
        errors,
        ..RouteStats::default()
    };
    let mut lat = Vec::new();
    for r in recs.iter().filter(|r| r.sent_ms >= from && r.sent_ms < to) {
        s.requests += 1;
        match r.status {
            200..=299 => {
                s.ok += 1;
                lat.push(r.lat_ms);
            }
            429 => s.limited_429 += 1,
            _ => s.other += 1,
        }
    }
    let secs = ((to - from) / 1000.0).max(1e-9);
    s.rps = s.requests as f64 / secs;
    s.ok_rps = s.ok as f64 / secs;
    lat.sort_by(f64::total_cmp);
    s.p50_ms = quantile(&lat, 0.5);
    s.p99_ms = quantile(&lat, 0.99);
    s.p999_ms = quantile(&lat, 0.999);
    s.max_ms = lat.last().copied();
    s
}

/// Per-second p50 and p99 (ms) of 2xx answers and the count of non-2xx answers, by the second
/// of sending, relative to `t0`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Second {
    pub(crate) t: u64,
    pub(crate) n: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) non_2xx: u64,
}

pub(crate) fn per_second(recs: &[&Rec], t0: f64) -> Vec<Second> {
    let mut by: BTreeMap<u64, (Vec<f64>, u64)> = BTreeMap::new();
    for r in recs {
        if r.sent_ms < t0 {
            continue;
        }
        let sec = ((r.sent_ms - t0) / 1000.0) as u64;
        let e = by.entry(sec).or_default();
        if (200..300).contains(&r.status) {
            e.0.push(r.lat_ms);
        } else if r.status != 429 {
            e.1 += 1;
        }
    }
    by.into_iter()
        .map(|(t, (mut v, bad))| {
            v.sort_by(f64::total_cmp);
            Second {
                t,
                n: v.len() as u64,
                p50_ms: quantile(&v, 0.5),
                p99_ms: quantile(&v, 0.99),
                non_2xx: bad,
            }
        })
        .collect()
}

/// What a GCRA limit of `limit` per `window_ms` with `burst` should have done to one key.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct KeyCheck {
    pub(crate) key: String,
    pub(crate) requests: u64,
    pub(crate) allowed: u64,
    pub(crate) limited_429: u64,
    /// Allowed by a replay of the limit over the send times.
    pub(crate) expected_allowed: u64,
    /// Decisions the replay could not place for sure: sent within `slack_ms` of the instant
    /// the key became allowed again (the server decides between sending and answering, and
    /// its clock and the runner's differ by a few ms).
    pub(crate) ambiguous: u64,
    /// The most any arrival pattern can get in the key's span: `1 + burst + span / interval`.
    pub(crate) hard_max: u64,
    /// Extra allowance (local fallback while the store was down), added to `hard_max`.
    pub(crate) fallback_allowance: u64,
    /// How far `allowed` may be from `expected_allowed`: `min(ambiguous, 2)` plus the
    /// fallback allowance. A saturated key's allowed calls sit on a fixed grid (one per
    /// interval from its first call) that arrival jitter cannot move, so only the first and
    /// the last boundary can go either way.
    pub(crate) tolerance: u64,
    pub(crate) ok: bool,
}

/// Replays GCRA (the shop's `Quota::per_minute(limit).burst(burst)`) over the requests of
/// one key, in send order. `other` is every non-2xx, non-429 status: those requests were
/// allowed by the limiter (handler errors), so they count as allowed.
pub(crate) fn gcra_check(
    key: &str,
    recs: &[&Rec],
    limit: u32,
    window_ms: f64,
    burst: u32,
    slack_ms: f64,
    fallback_allowance: u64,
) -> KeyCheck {
    let t = (window_ms / f64::from(limit.max(1))).max(1e-9);
    let tol = t * f64::from(burst);
    let mut stored = f64::NEG_INFINITY;
    let (mut exp, mut amb, mut allowed, mut limited) = (0u64, 0u64, 0u64, 0u64);
    let mut times: Vec<(f64, u16, f64)> = recs
        .iter()
        .map(|r| (r.sent_ms, r.status, r.end_ms))
        .collect();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    for &(sent, status, end) in &times {
        if status == 429 {
            limited += 1;
        } else {
            allowed += 1;
        }
        let free_at = stored - tol;
        let near = (sent - free_at).abs() <= slack_ms + (end - sent).max(0.0);
        if near {
            amb += 1;
        }
        if free_at <= sent {
            exp += 1;
            stored = stored.max(sent) + t;
        }
    }
    let span = match (times.first(), times.last()) {
        (Some(a), Some(b)) => b.2.max(b.0) - a.0,
        _ => 0.0,
    };
    let hard_max = 1 + u64::from(burst) + (span / t).floor() as u64 + fallback_allowance;
    let tolerance = amb.min(2) + fallback_allowance;
    let ok = allowed <= hard_max && allowed.abs_diff(exp) <= tolerance;
    KeyCheck {
        key: key.to_string(),
        requests: times.len() as u64,
        allowed,
        limited_429: limited,
        expected_allowed: exp,
        ambiguous: amb,
        hard_max,
        fallback_allowance,
        tolerance,
        ok,
    }
}

/// Groups records by key.
pub(crate) fn by_key<'a>(recs: impl Iterator<Item = &'a Rec>) -> BTreeMap<String, Vec<&'a Rec>> {
    let mut m: BTreeMap<String, Vec<&Rec>> = BTreeMap::new();
    for r in recs {
        m.entry(r.key.clone()).or_default().push(r);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sent: f64, status: u16) -> Rec {
        Rec {
            route: "overlimit",
            sent_ms: sent,
            end_ms: sent + 1.0,
            lat_ms: 1.0,
            status,
            key: "k".into(),
        }
    }

    #[test]
    fn gcra_replay_allows_one_call_per_interval() {
        // 10 calls a second for 6 s against 100/minute (one call per 600 ms): 10 allowed.
        let recs: Vec<Rec> = (0..60)
            .map(|i| {
                let t = f64::from(i) * 100.0;
                let allowed = i % 6 == 0;
                rec(t, if allowed { 200 } else { 429 })
            })
            .collect();
        let refs: Vec<&Rec> = recs.iter().collect();
        let c = gcra_check("k", &refs, 100, 60_000.0, 0, 2.0, 0);
        assert_eq!(c.expected_allowed, 10);
        assert_eq!(c.allowed, 10);
        assert!(c.ok, "{c:?}");
        assert_eq!(c.hard_max, 1 + 9);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(500.0));
        assert_eq!(quantile(&v, 0.99), Some(990.0));
        assert_eq!(quantile(&v, 0.999), Some(999.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
