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
}
