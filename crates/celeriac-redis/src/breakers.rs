//! [`BreakerStore`] on Redis: one Lua script per atomic command (`lua/*Breaker-3.lua`,
//! `lua/*Probe-3.lua`, with `lua/includes/breaker.lua`), every key of a breaker under its hash
//! tag `{celeriac:breaker:<name>}` and expiring after the policy's ttl.

use crate::conn::map_err;
use crate::keys::breaker_keys;
use crate::{num, RedisBackend};
use celeriac_core::backend::{
    BreakerCommand, BreakerPolicy, BreakerSignal, BreakerStore, SharedBreakerState,
};
use celeriac_core::breaker::{BreakerState, Counts, MAX_NAME_LEN};
use celeriac_core::clock::UnixMs;
use celeriac_core::error::{Error, Result};
use redis::ScriptInvocation;

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains(['{', '}']) {
        return Err(Error::config(
            "breaker name",
            format!(
                "`{name}`: a breaker name needs 1 to {MAX_NAME_LEN} bytes and cannot contain \
                 braces on Redis"
            ),
        ));
    }
    Ok(())
}

/// Passes the keys of `name` and the policy (ARGV[1..14]) to a breaker script.
fn prepare<'a>(
    inv: &mut ScriptInvocation<'a>,
    prefix: &str,
    name: &str,
    p: &BreakerPolicy,
    now: UnixMs,
) {
    for k in breaker_keys(prefix, name) {
        inv.key(k);
    }
    inv.arg(num(now))
        .arg(num(p.window_ms))
        .arg(num(p.bucket_ms))
        .arg(p.min_calls.to_string())
        .arg(p.quorum.to_string())
        .arg(p.failure_rate.to_string())
        .arg(p.slow_rate.unwrap_or(0.0).to_string())
        .arg(p.probes.to_string())
        .arg(num(p.probe_lease_ms))
        .arg(num(p.open_ms))
        .arg(p.backoff.to_string())
        .arg(num(p.max_open_ms))
        .arg(p.jitter_cut.clamp(0.0, 1.0).to_string())
        .arg(num(p.ttl_ms()));
}

/// Reads a script's state reply: {st, until, trips, gen, calls, failures, slow, instances}.
pub(crate) fn state_of(v: &[i64]) -> Result<SharedBreakerState> {
    if v.len() < 8 {
        return Err(Error::Codec(format!(
            "a breaker script returned {} values, expected 8",
            v.len()
        )));
    }
    let u = |x: i64| u64::try_from(x).unwrap_or(0);
    Ok(SharedBreakerState {
        state: u8::try_from(v[0])
            .ok()
            .and_then(BreakerState::from_code)
            .ok_or_else(|| Error::Codec(format!("unknown breaker state code {}", v[0])))?,
        open_until: v[1],
        trips: u32::try_from(v[2]).unwrap_or(0),
        generation: u(v[3]),
        window: Counts {
            calls: u(v[4]),
            failures: u(v[5]),
            slow: u(v[6]),
        },
        instances: u32::try_from(v[7]).unwrap_or(0),
    })
}

/// A policy for reading: every live signal counts.
fn read_policy() -> BreakerPolicy {
    BreakerPolicy {
        window_ms: 1_000_000_000_000_000,
        bucket_ms: 1,
        min_calls: 1,
        quorum: 1,
        failure_rate: 100.0,
        slow_rate: None,
        probes: 1,
        probe_lease_ms: 1,
        open_ms: 1,
        backoff: 1.0,
        max_open_ms: 1,
        jitter_cut: 0.0,
    }
}

impl RedisBackend {
    async fn run_breaker(
        &self,
        script: &redis::Script,
        name: &str,
        policy: &BreakerPolicy,
        now: UnixMs,
        extra: &[&[u8]],
    ) -> Result<Option<Vec<i64>>> {
        check_name(name)?;
        let mut inv = script.prepare_invoke();
        prepare(&mut inv, &self.inner.config.prefix, name, policy, now);
        for a in extra {
            inv.arg(*a);
        }
        inv.invoke_async(&mut self.conn()).await.map_err(map_err)
    }
}

impl BreakerStore for RedisBackend {
    async fn breaker_report(
        &self,
        name: &str,
        signal: BreakerSignal,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<SharedBreakerState> {
        let (c, f, s) = (
            signal.calls.to_string(),
            signal.failures.to_string(),
            signal.slow.to_string(),
        );
        let v = self
            .run_breaker(
                &self.inner.scripts.report_breaker,
                name,
                policy,
                now,
                &[
                    signal.instance.as_bytes(),
                    c.as_bytes(),
                    f.as_bytes(),
                    s.as_bytes(),
                ],
            )
            .await?
            .unwrap_or_default();
        state_of(&v)
    }

    async fn breaker_probe(
        &self,
        name: &str,
        token: &str,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<(bool, SharedBreakerState)> {
        let v = self
            .run_breaker(
                &self.inner.scripts.reserve_probe,
                name,
                policy,
                now,
                &[token.as_bytes()],
            )
            .await?
            .unwrap_or_default();
        Ok((v.get(8) == Some(&1), state_of(&v)?))
    }

    async fn breaker_probe_done(
        &self,
        name: &str,
        token: &str,
        failed: bool,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<SharedBreakerState> {
        let flag: &[u8] = if failed { b"1" } else { b"0" };
        let v = self
            .run_breaker(
                &self.inner.scripts.finish_probe,
                name,
                policy,
                now,
                &[token.as_bytes(), flag],
            )
            .await?
            .unwrap_or_default();
        state_of(&v)
    }

    async fn breaker_command(
        &self,
        name: &str,
        command: BreakerCommand,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<SharedBreakerState> {
        let word: &[u8] = match command {
            BreakerCommand::ForceOpen => b"force_open",
            BreakerCommand::ForceClosed => b"force_closed",
            BreakerCommand::Reset => b"reset",
        };
        let v = self
            .run_breaker(
                &self.inner.scripts.command_breaker,
                name,
                policy,
                now,
                &[word],
            )
            .await?
            .unwrap_or_default();
        state_of(&v)
    }

    async fn breaker_status(&self, name: &str, now: UnixMs) -> Result<Option<SharedBreakerState>> {
        let v = self
            .run_breaker(
                &self.inner.scripts.status_breaker,
                name,
                &read_policy(),
                now,
                &[],
            )
            .await?;
        v.map(|v| state_of(&v)).transpose()
    }
}
