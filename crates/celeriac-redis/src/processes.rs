//! [`ProcessRegistry`] on Redis: the live processes under one hash tag (`{<prefix>:procs}`),
//! see the key table in `keys.rs`.

use crate::conn::map_err;
use crate::keys::process_keys;
use crate::{num, RedisBackend};
use celeriac_core::backend::{Control, ProcessInfo, ProcessRegistry};
use celeriac_core::clock::UnixMs;
use celeriac_core::error::Result;
use redis::AsyncCommands;

impl ProcessRegistry for RedisBackend {
    async fn refresh(&self, info: &ProcessInfo) -> Result<Vec<Control>> {
        let [seen, entries, control] = process_keys(&self.inner.config.prefix);
        let waiting: String = self
            .inner
            .scripts
            .refresh_process
            .key(seen)
            .key(entries)
            .key(control)
            .arg(num(info.seen_at))
            .arg(&info.id)
            .arg(num(info.expires_at))
            .arg(info.encode()?)
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(Control::parse_list(&waiting))
    }

    async fn leave(&self, id: &str) -> Result<()> {
        let [seen, entries, control] = process_keys(&self.inner.config.prefix);
        let _: () = redis::pipe()
            .atomic()
            .zrem(seen, id)
            .hdel(entries, id)
            .hdel(control, id)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn processes(&self, now: UnixMs) -> Result<Vec<ProcessInfo>> {
        let [seen, entries, _] = process_keys(&self.inner.config.prefix);
        let ids: Vec<String> = self
            .conn()
            .zrangebyscore(&seen, now, "+inf")
            .await
            .map_err(map_err)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&entries)
            .arg(&ids)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let mut out: Vec<ProcessInfo> = ids
            .iter()
            .zip(stored)
            .filter_map(|(id, s)| s.and_then(|s| ProcessInfo::decode_or_skip(id, &s)))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn control(&self, id: &str, command: Control, now: UnixMs) -> Result<bool> {
        let [seen, entries, control] = process_keys(&self.inner.config.prefix);
        let sent: i64 = self
            .inner
            .scripts
            .control_process
            .key(seen)
            .key(entries)
            .key(control)
            .arg(num(now))
            .arg(id)
            .arg(command.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(sent == 1)
    }
}
