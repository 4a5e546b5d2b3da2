//! [`Coordinator`] on Redis: a leader lease with a fencing token and the state of periodic
//! schedules, under one hash tag (`{celeriac:beat}`) so it runs on Cluster too.

use crate::conn::map_err;
use crate::keys::CoordKeys;
use crate::{num, RedisBackend};
use celeriac_core::backend::{Coordinator, ScheduleState};
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::{Error, Result};
use redis::AsyncCommands;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

impl RedisBackend {
    fn coord_keys(&self) -> CoordKeys {
        CoordKeys::new(&self.inner.config.prefix)
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['{', '}']) {
        return Err(Error::config(
            what,
            format!("`{name}`: must be non-empty and cannot contain braces on Redis"),
        ));
    }
    Ok(())
}

impl Coordinator for RedisBackend {
    async fn acquire_leader(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: UnixMs,
    ) -> Result<Option<u64>> {
        check_name("leader", name)?;
        let until = now.saturating_add(duration_ms(ttl));
        self.inner
            .scripts
            .acquire_leader
            .key(self.coord_keys().leader(name))
            .arg(holder)
            .arg(num(now))
            .arg(num(until))
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)
    }

    async fn release_leader(&self, name: &str, token: u64) -> Result<bool> {
        check_name("leader", name)?;
        let released: i64 = self
            .inner
            .scripts
            .release_leader
            .key(self.coord_keys().leader(name))
            .arg(token.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(released == 1)
    }

    async fn schedule_states(&self) -> Result<Vec<ScheduleState>> {
        let k = self.coord_keys();
        let (ticks, paused): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .hgetall(k.ticks())
            .hgetall(k.paused())
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let mut states: BTreeMap<String, ScheduleState> = BTreeMap::new();
        for (name, tick) in ticks {
            let last_tick = tick.parse::<i64>().map_err(|_| {
                Error::Codec(format!(
                    "schedule `{name}`: stored tick `{tick}` is not a number"
                ))
            })?;
            states.insert(
                name.clone(),
                ScheduleState {
                    name,
                    last_tick: Some(last_tick),
                    paused: false,
                },
            );
        }
        for (name, flag) in paused {
            let entry = states.entry(name.clone()).or_insert(ScheduleState {
                name,
                last_tick: None,
                paused: false,
            });
            entry.paused = flag == "1";
        }
        Ok(states.into_values().collect())
    }

    async fn record_tick(
        &self,
        leader: &str,
        token: u64,
        schedule: &str,
        tick: UnixMs,
        now: UnixMs,
    ) -> Result<bool> {
        self.inner.config.role.allow_queues("run schedules")?;
        check_name("leader", leader)?;
        let k = self.coord_keys();
        let recorded: i64 = self
            .inner
            .scripts
            .record_tick
            .key(k.leader(leader))
            .key(k.ticks())
            .arg(token.to_string())
            .arg(schedule)
            .arg(num(tick))
            .arg(num(now))
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(recorded == 1)
    }

    async fn set_schedule_paused(&self, schedule: &str, paused: bool) -> Result<()> {
        let k = self.coord_keys();
        let mut conn = self.conn();
        if paused {
            let _: () = conn
                .hset(k.paused(), schedule, "1")
                .await
                .map_err(map_err)?;
        } else {
            let _: () = conn.hdel(k.paused(), schedule).await.map_err(map_err)?;
        }
        Ok(())
    }
}
