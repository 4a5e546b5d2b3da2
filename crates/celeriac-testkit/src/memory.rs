//! A server bounded by `maxmemory`: [`RedisServer::overfill`] fills it past its bound and
//! [`RedisServer::info_field`] reads what it reports (`evicted_keys`, `used_memory`, ...).

use crate::error::{Error, Result};
use crate::server::{info_field, RedisServer};

impl RedisServer {
    /// Writes `bytes` (rounded up to whole values) in values of `value_size` bytes, under the
    /// keys `filler:0`, `filler:1`, ...; returns how many writes the server refused for lack
    /// of memory (`-OOM`). Under an `allkeys-*` policy a server bounded by `maxmemory` evicts
    /// and refuses none; under `noeviction` it refuses every write once full.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when `value_size` is 0; any other error of a write, as
    /// [`command`](Self::command).
    pub async fn overfill(&self, bytes: usize, value_size: usize) -> Result<u64> {
        if value_size == 0 {
            return Err(Error::Unsupported(
                "overfill needs values of at least one byte".into(),
            ));
        }
        let value = "x".repeat(value_size);
        let mut refused = 0;
        for i in 0..bytes.div_ceil(value_size) {
            let key = format!("filler:{i}");
            match self.command(&["SET", &key, &value]).await {
                Ok(_) => {}
                Err(Error::Server(reply)) if reply.starts_with("OOM") => refused += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(refused)
    }

    /// The value of `field` in `INFO section` (e.g. `("stats", "evicted_keys")`), as text.
    ///
    /// # Errors
    ///
    /// As [`command`](Self::command); [`Error::Protocol`] when the reply is not text,
    /// [`Error::Unsupported`] when the section has no such field.
    pub async fn info_field(&self, section: &str, field: &str) -> Result<String> {
        let reply = self.command(&["INFO", section]).await?;
        let text = reply
            .as_text()
            .ok_or_else(|| Error::Protocol(format!("INFO {section} answered {reply:?}")))?;
        info_field(&text, field).map(str::to_owned).ok_or_else(|| {
            Error::Unsupported(format!(
                "INFO {section} of 127.0.0.1:{} has no field {field}:\n{text}",
                self.port()
            ))
        })
    }

    /// Starts a server bounded to `maxmemory` bytes that evicts (`allkeys-lfu`), writes twice
    /// its bound into it in 128 KiB values, and empties it again: a server that has been
    /// full, for a test of what a store reports about its memory. Returns the server and the
    /// keys it evicted (`INFO stats`), for the test to assert its precondition on.
    ///
    /// # Errors
    ///
    /// As [`start`](crate::RedisServerBuilder::start) and [`overfill`](Self::overfill);
    /// [`Error::Unsupported`] when the server refused a write instead of evicting.
    pub async fn evicting_after_overfill(maxmemory: usize) -> Result<(RedisServer, u64)> {
        let server = RedisServer::builder()
            .arg("--maxmemory", maxmemory.to_string())
            .maxmemory_policy("allkeys-lfu")
            .start()
            .await?;
        let refused = server.overfill(2 * maxmemory, 128 << 10).await?;
        if refused > 0 {
            return Err(Error::Unsupported(format!(
                "an allkeys-lfu server refused {refused} writes instead of evicting"
            )));
        }
        let evicted = server.info_field("stats", "evicted_keys").await?;
        let evicted = evicted
            .parse()
            .map_err(|_| Error::Protocol(format!("evicted_keys is not a count: {evicted}")))?;
        server.command(&["FLUSHALL"]).await?;
        Ok((server, evicted))
    }
}
