//! [`EventLog`] on Redis: one stream (`<prefix>:events`), trimmed to about [`EVENTS_KEPT`]
//! entries on append (`MAXLEN ~`, which trims whole nodes: a few more may stay).

use crate::conn::map_err;
use crate::RedisBackend;
use celeriac_core::backend::{Event, EventLog, EVENTS_KEPT};
use celeriac_core::error::{Error, Result};
use redis::Value;

impl RedisBackend {
    fn events_key(&self) -> String {
        format!("{}:events", self.inner.config.prefix)
    }
}

/// The entries of an `XRANGE`/`XREVRANGE` reply: `(id, field "e")`.
pub(crate) fn entries(reply: Value) -> Vec<(String, Vec<u8>)> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            let fields = parts.pop()?;
            let id = crate::codec::text_of(&parts.pop()?);
            let Value::Array(fields) = fields else {
                return None;
            };
            let body = match fields.get(1)? {
                Value::BulkString(b) => b.clone(),
                _ => return None,
            };
            Some((id, body))
        })
        .collect()
}

impl EventLog for RedisBackend {
    async fn append(&self, events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let key = self.events_key();
        let mut pipe = redis::pipe();
        for e in &events {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(EVENTS_KEPT)
                .arg("*")
                .arg("e")
                .arg(e.encode()?)
                .ignore();
        }
        let _: () = pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
        Ok(())
    }

    async fn events(&self, after: Option<String>, limit: usize) -> Result<Vec<Event>> {
        let key = self.events_key();
        let reply: Value = match &after {
            Some(after) => {
                if after.is_empty() || !after.chars().all(|c| c.is_ascii_digit() || c == '-') {
                    return Err(Error::config(
                        "after",
                        format!("`{after}` is not an event id of this store"),
                    ));
                }
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(format!("({after}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(map_err)?
            }
            None => redis::cmd("XREVRANGE")
                .arg(&key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?,
        };
        let mut out: Vec<Event> = entries(reply)
            .into_iter()
            .filter_map(|(id, body)| Event::decode_or_skip(id, &body))
            .collect();
        if after.is_none() {
            out.reverse();
        }
        Ok(out)
    }
}
