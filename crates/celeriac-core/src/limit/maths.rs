//! The limiter maths as pure functions over explicit state and `now`: every store (SQLite, the
//! local limiter) runs these, and the Redis Lua script mirrors them line by line.
//!
//! State per key and quota is three integers, [`LimitState`]:
//! - **GCRA**: `a` = the theoretical arrival time (TAT) in µs since the epoch (0: none).
//!   With `T` = interval, `τ = T·(burst+1)`: `tat = max(a, now)`, `new = tat + T·cost`;
//!   denied while `new − τ > now`, else `a = new`.
//! - **Fixed window**: `a` = the window's start (ms, aligned to the epoch), `b` = its count.
//! - **Sliding window**: `a` = the current fixed window's start, `b` = the previous window's
//!   count, `c` = the current one's. Allowed when
//!   `b·(w − elapsed) + (c + cost)·w ≤ limit·w` (the weighted count, in integers).
//!
//! A store may hand back state no limiter wrote (a damaged row, a hand edit): a time more
//! than a window ahead of `now` reads as no state, and a count as at least 0 and at most
//! 2^40, so any three integers give a verdict without overflow, and none holds a key longer
//! than a window.

use super::quota::{Algorithm, Quota};
use std::time::Duration;

/// What a limiter answers for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call may go ahead (and was counted).
    pub allowed: bool,
    /// The limit of the quota reported (the most restrictive one).
    pub limit: u32,
    /// How many more unit-cost calls that quota allows right now.
    pub remaining: u32,
    /// How long until that quota is back to full (nothing counted against it).
    pub reset_after: Duration,
    /// When denied: how long until this call would be allowed (exact, rounded up to the ms).
    pub retry_after: Option<Duration>,
    /// The position of the reported quota in the list checked.
    pub quota: usize,
}

impl Decision {
    /// A decision that allows everything (no quota, or shadow mode standing in).
    pub fn unlimited() -> Self {
        Decision {
            allowed: true,
            limit: u32::MAX,
            remaining: u32::MAX,
            reset_after: Duration::ZERO,
            retry_after: None,
            quota: 0,
        }
    }

    /// True when `self` is more restrictive than `other`: denied before allowed, then the
    /// longer retry-after, then fewer remaining, then the longer reset.
    pub fn stricter_than(&self, other: &Decision) -> bool {
        match (self.allowed, other.allowed) {
            (false, true) => true,
            (true, false) => false,
            (false, false) => self.retry_after > other.retry_after,
            (true, true) => {
                (self.remaining, std::cmp::Reverse(self.reset_after))
                    < (other.remaining, std::cmp::Reverse(other.reset_after))
            }
        }
    }
}

/// The stored state of one quota for one key (meaning per algorithm: see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LimitState {
    /// GCRA: TAT (µs). Windows: the current window's start (ms).
    pub a: i64,
    /// Fixed: the count. Sliding: the previous window's count.
    pub b: i64,
    /// Sliding: the current window's count.
    pub c: i64,
}

/// One quota's verdict on one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The verdict as reported to callers.
    pub decision: Decision,
    /// The state to store if every quota of the call allows it.
    pub state: LimitState,
    /// How long the stored state matters, in ms (a store's TTL; at least 1).
    pub ttl_ms: i64,
}

fn ms(d: i64) -> Duration {
    Duration::from_millis(d.max(0) as u64)
}

/// µs rounded up to whole ms.
fn ceil_ms(us: i64) -> i64 {
    if us <= 0 {
        0
    } else {
        us.saturating_add(999) / 1000
    }
}

/// A stored count as the maths reads it: never below 0, and far above any limit at most.
fn count_of(n: i64) -> i64 {
    n.clamp(0, 1 << 40)
}

/// `s` unless its window starts more than a window after the one `now` is in (no limiter
/// wrote that; a process whose clock ran ahead is at most a window ahead).
fn plausible_window(s: LimitState, start: i64, w: i64) -> LimitState {
    if s.a > start.saturating_add(w) {
        LimitState::default()
    } else {
        s
    }
}

fn clamp_u32(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

/// One quota checked against `state` at `now` for `cost`. The quota must be valid and
/// `cost ≤ quota.capacity()` (see [`check_cost`]); the result is meaningless otherwise, but
/// never a panic.
pub fn check_one(quota: &Quota, state: LimitState, cost: u32, now: i64) -> Step {
    match quota.algorithm() {
        Algorithm::Gcra => gcra(quota, state, cost, now),
        Algorithm::FixedWindow => fixed(quota, state, cost, now),
        Algorithm::SlidingWindow => sliding(quota, state, cost, now),
    }
}

fn gcra(q: &Quota, s: LimitState, cost: u32, now: i64) -> Step {
    let t = q.interval_us().max(1);
    let tau = q.tolerance_us();
    let now_us = now.saturating_mul(1000);
    // No limiter leaves an arrival time more than the tolerance and a window ahead.
    let horizon = now_us
        .saturating_add(tau)
        .saturating_add(q.window_ms().saturating_mul(1000));
    let stored = if s.a > horizon { 0 } else { s.a };
    let tat = stored.max(now_us);
    let new_tat = tat.saturating_add(t.saturating_mul(i64::from(cost)));
    let allow_at = new_tat.saturating_sub(tau);
    let mut d = Decision {
        allowed: allow_at <= now_us,
        limit: q.limit(),
        remaining: 0,
        reset_after: Duration::ZERO,
        retry_after: None,
        quota: 0,
    };
    if d.allowed {
        d.remaining = clamp_u32(tau.saturating_sub(new_tat.saturating_sub(now_us)) / t);
        let reset = ceil_ms(new_tat.saturating_sub(now_us));
        d.reset_after = ms(reset);
        Step {
            decision: d,
            state: LimitState {
                a: new_tat,
                b: 0,
                c: 0,
            },
            ttl_ms: reset.max(1),
        }
    } else {
        d.remaining = clamp_u32(tau.saturating_sub(tat.saturating_sub(now_us)) / t);
        let reset = ceil_ms(tat.saturating_sub(now_us));
        d.reset_after = ms(reset);
        d.retry_after = Some(ms(ceil_ms(allow_at.saturating_sub(now_us))));
        Step {
            decision: d,
            state: s,
            ttl_ms: reset.max(1),
        }
    }
}

fn window_start(now: i64, w: i64) -> i64 {
    now - now.rem_euclid(w)
}

fn fixed(q: &Quota, s: LimitState, cost: u32, now: i64) -> Step {
    let w = q.window_ms().max(1);
    let limit = i64::from(q.limit());
    let cost = i64::from(cost);
    let mut start = window_start(now, w);
    let s = plausible_window(s, start, w);
    // A state from a later window (another process's clock ran ahead) still counts.
    let count = if s.a >= start {
        start = s.a;
        count_of(s.b)
    } else {
        0
    };
    let reset = (start + w - now).max(0);
    let allowed = count + cost <= limit;
    let after = if allowed { count + cost } else { count };
    Step {
        decision: Decision {
            allowed,
            limit: q.limit(),
            remaining: clamp_u32(limit - after),
            reset_after: ms(if after > 0 { reset } else { 0 }),
            retry_after: (!allowed).then(|| ms(reset)),
            quota: 0,
        },
        state: LimitState {
            a: start,
            b: after,
            c: 0,
        },
        ttl_ms: reset.max(1),
    }
}

fn sliding(q: &Quota, s: LimitState, cost: u32, now: i64) -> Step {
    let w = q.window_ms().max(1);
    let limit = i64::from(q.limit());
    let cost = i64::from(cost);
    let mut start = window_start(now, w);
    let s = plausible_window(s, start, w);
    let (prev, cur) = if s.a >= start {
        start = s.a;
        (count_of(s.b), count_of(s.c))
    } else if s.a == start - w {
        (count_of(s.c), 0)
    } else {
        (0, 0)
    };
    // `now` may sit before a later window another process opened: no elapsed time then.
    let elapsed = (now - start).clamp(0, w);
    let weighted = |prev: i64, cur: i64| {
        i128::from(prev) * i128::from(w - elapsed) + i128::from(cur) * i128::from(w)
    };
    let cap = i128::from(limit) * i128::from(w);
    let allowed = weighted(prev, cur + cost) <= cap;
    let cur_after = if allowed { cur + cost } else { cur };
    let remaining = ((cap - weighted(prev, cur_after)) / i128::from(w)).max(0) as i64;
    let reset = if cur_after > 0 {
        start + 2 * w - now
    } else if prev > 0 {
        start + w - now
    } else {
        0
    };
    let retry_after = (!allowed).then(|| {
        let need = cur + cost;
        if need <= limit {
            // Later in this window, once the previous window's weight has fallen enough.
            let room = i128::from(limit - need) * i128::from(w);
            let at = i128::from(w) - room / i128::from(prev.max(1));
            ms(at as i64 - elapsed)
        } else {
            // In the next window, where this window's count is the previous one.
            let at = if cur == 0 {
                0
            } else {
                let room = i128::from(limit - cost) * i128::from(w);
                (i128::from(w) - room / i128::from(cur)).max(0) as i64
            };
            ms(w - elapsed + at)
        }
    });
    Step {
        decision: Decision {
            allowed,
            limit: q.limit(),
            remaining: clamp_u32(remaining),
            reset_after: ms(reset),
            retry_after,
            quota: 0,
        },
        state: LimitState {
            a: start,
            b: prev,
            c: cur_after,
        },
        ttl_ms: (start + 2 * w - now).max(1),
    }
}

/// Checks that a call's `cost` fits every quota: a cost above a quota's capacity could never
/// be allowed.
///
/// # Errors
/// [`crate::Error::Config`] naming `rate limit cost`.
pub fn check_cost(quotas: &[Quota], cost: u32) -> crate::Result<()> {
    for q in quotas {
        if u64::from(cost) > q.capacity() {
            return Err(crate::Error::config(
                "rate limit cost",
                format!(
                    "a cost of {cost} can never fit quota `{}` ({q}), which allows at most {} at once",
                    q.policy_name(),
                    q.capacity()
                ),
            ));
        }
    }
    Ok(())
}

/// Several quotas checked at once, all or nothing: `states[i]` is quota `i`'s state. When
/// every quota allows the call, each state is updated and `commit(i, &step)` is called with
/// the state and TTL to store; when any denies, nothing changes. Returns the most restrictive
/// verdict (see [`Decision::stricter_than`]); with no quotas the call is allowed.
///
/// Quotas and `cost` must be valid ([`Quota::validate`], [`check_cost`]).
pub fn decide(
    quotas: &[Quota],
    states: &mut [LimitState],
    cost: u32,
    now: i64,
    mut commit: impl FnMut(usize, &Step),
) -> Decision {
    let mut worst: Option<Decision> = None;
    for (i, (q, s)) in quotas.iter().zip(states.iter()).enumerate() {
        let mut d = check_one(q, *s, cost, now).decision;
        d.quota = i;
        if worst.is_none_or(|w| d.stricter_than(&w)) {
            worst = Some(d);
        }
    }
    let Some(worst) = worst else {
        return Decision::unlimited();
    };
    if worst.allowed {
        for (i, (q, s)) in quotas.iter().zip(states.iter_mut()).enumerate() {
            let step = check_one(q, *s, cost, now);
            *s = step.state;
            commit(i, &step);
        }
    }
    worst
}
