//! The fleet's clock on the broker: the Redis server's `TIME`. Etas, expiry times and
//! countdowns are compared with it, not with this host's wall clock, so a worker or client
//! whose host clock is off neither runs a task early, holds it late, nor expires it wrongly.

use celeriac_core::clock::{Clock, FleetClock, TimeSource, UnixMs};
use celeriac_core::error::{Error, ErrorKind, Result};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

/// Reads the broker's clock.
pub(super) struct BrokerTime {
    pub(super) conn: ConnectionManager,
}

impl TimeSource for BrokerTime {
    async fn store_now(&self) -> Result<UnixMs> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| Error::backend(ErrorKind::Retry, format!("Redis TIME: {e}")))?;
        celeriac_core::clock::time_reply_ms(secs, micros)
    }

    fn name(&self) -> &'static str {
        "Redis TIME (broker)"
    }
}

/// `clock`'s time now as a date-time.
pub(crate) fn now_of(clock: &FleetClock) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(clock.now_ms()).unwrap_or_else(Utc::now)
}
