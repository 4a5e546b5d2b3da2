//! [`RateLimitStore`] on Redis: one `checkLimits-N` script call per decision (every quota of
//! the key in KEYS, under its one hash tag), one `acquirePermit-1` / `releasePermit-1` call
//! per permit operation. `now` travels in ARGV.

use crate::conn::map_err;
use crate::keys::{limit_key, permits_key};
use crate::{num, RedisBackend};
use celeriac_core::backend::RateLimitStore;
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::{Error, ErrorKind, Result};
use celeriac_core::limit::{self, Decision, Quota};
use std::time::Duration;

fn ms(n: i64) -> Duration {
    Duration::from_millis(n.max(0) as u64)
}

fn reply_error(what: &str, reply: &[i64]) -> Error {
    Error::backend(
        ErrorKind::GiveUp,
        format!("{what}: unexpected script reply {reply:?}"),
    )
}

impl RateLimitStore for RedisBackend {
    async fn check_limits(
        &self,
        key: &str,
        quotas: &[Quota],
        cost: u32,
        now: UnixMs,
    ) -> Result<Decision> {
        limit::check_request(key, quotas, cost)?;
        if quotas.is_empty() {
            return Ok(Decision::unlimited());
        }
        let prefix = &self.inner.config.prefix;
        let mut call = self.inner.scripts.check_limits.prepare_invoke();
        for q in quotas {
            call.key(limit_key(prefix, key, &q.state_id()));
        }
        call.arg(num(now)).arg(cost);
        for q in quotas {
            call.arg(q.algorithm().code())
                .arg(q.limit())
                .arg(num(q.window_ms()))
                .arg(num(q.interval_us()))
                .arg(num(q.tolerance_us()));
        }
        let reply: Vec<i64> = call.invoke_async(&mut self.conn()).await.map_err(map_err)?;
        let [allowed, index, remaining, reset, retry] = reply[..] else {
            return Err(reply_error("checkLimits", &reply));
        };
        let quota = usize::try_from(index)
            .ok()
            .filter(|i| *i < quotas.len())
            .ok_or_else(|| reply_error("checkLimits", &reply))?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: quotas[quota].limit(),
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            reset_after: ms(reset),
            retry_after: (allowed != 1).then(|| ms(retry)),
            quota,
        })
    }

    async fn acquire_permit(
        &self,
        key: &str,
        holder: &str,
        max: u32,
        lease: Duration,
        now: UnixMs,
    ) -> Result<Decision> {
        limit::check_permit(key, holder, max, lease)?;
        let until = now.saturating_add(duration_ms(lease));
        let reply: Vec<i64> = self
            .inner
            .scripts
            .acquire_permit
            .key(permits_key(&self.inner.config.prefix, key))
            .arg(holder)
            .arg(max)
            .arg(num(now))
            .arg(num(until))
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let [allowed, live, first, last] = reply[..] else {
            return Err(reply_error("acquirePermit", &reply));
        };
        Ok(Decision {
            allowed: allowed == 1,
            limit: max,
            remaining: max.saturating_sub(u32::try_from(live).unwrap_or(u32::MAX)),
            reset_after: ms(last - now),
            retry_after: (allowed != 1).then(|| ms(first - now)),
            quota: 0,
        })
    }

    async fn release_permit(&self, key: &str, holder: &str, now: UnixMs) -> Result<bool> {
        limit::check_release(key, holder)?;
        let released: i64 = self
            .inner
            .scripts
            .release_permit
            .key(permits_key(&self.inner.config.prefix, key))
            .arg(holder)
            .arg(num(now))
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(released == 1)
    }
}
