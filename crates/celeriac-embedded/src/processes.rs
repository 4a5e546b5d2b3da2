//! [`ProcessRegistry`] on SQLite: one row per live process (its entry as JSON, its expiry and
//! the commands waiting for it), each call one transaction on the writer thread.

use crate::SqliteBackend;
use celeriac_core::backend::{Control, ProcessInfo, ProcessRegistry};
use celeriac_core::clock::UnixMs;
use celeriac_core::error::Result;
use rusqlite::{params, OptionalExtension};

impl ProcessRegistry for SqliteBackend {
    async fn refresh(&self, info: &ProcessInfo) -> Result<Vec<Control>> {
        let json = info.encode()?;
        let (id, now, until) = (info.id.clone(), info.seen_at, info.expires_at);
        let waiting: String = self
            .inner
            .writer
            .call(move |c| {
                c.prepare_cached("DELETE FROM celeriac_processes WHERE expires_at < ?1")?
                    .execute([now])?;
                let waiting: Option<String> = c
                    .prepare_cached("SELECT commands FROM celeriac_processes WHERE id = ?1")?
                    .query_row([&id], |r| Ok(crate::decode::text(r, 0)))
                    .optional()?
                    .flatten();
                c.prepare_cached(
                    "INSERT INTO celeriac_processes (id, info, expires_at, commands)
                     VALUES (?1, ?2, ?3, '')
                     ON CONFLICT (id) DO UPDATE SET info = excluded.info,
                         expires_at = excluded.expires_at, commands = ''",
                )?
                .execute(params![id, json, until])?;
                Ok(waiting.unwrap_or_default())
            })
            .await?;
        Ok(Control::parse_list(&waiting))
    }

    async fn leave(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.inner
            .writer
            .call(move |c| {
                c.prepare_cached("DELETE FROM celeriac_processes WHERE id = ?1")?
                    .execute([id])?;
                Ok(())
            })
            .await
    }

    async fn processes(&self, now: UnixMs) -> Result<Vec<ProcessInfo>> {
        let rows: Vec<(String, String)> = self
            .inner
            .reads()
            .call(move |c| {
                c.prepare_cached(
                    "SELECT id, info FROM celeriac_processes WHERE expires_at >= ?1 ORDER BY id",
                )?
                .query_map([now], |r| {
                    Ok((
                        crate::decode::text(r, 0).unwrap_or_default(),
                        crate::decode::text(r, 1).unwrap_or_default(),
                    ))
                })?
                .collect()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, json)| ProcessInfo::decode_or_skip(&id, json.as_bytes()))
            .collect())
    }

    async fn control(&self, id: &str, command: Control, now: UnixMs) -> Result<bool> {
        let id = id.to_string();
        self.inner
            .writer
            .call(move |c| {
                let waiting: Option<String> = c
                    .prepare_cached(
                        "SELECT commands FROM celeriac_processes WHERE id = ?1 AND expires_at >= ?2",
                    )?
                    .query_row(params![id, now], |r| {
                        Ok(crate::decode::text(r, 0).unwrap_or_default())
                    })
                    .optional()?;
                let Some(waiting) = waiting else {
                    return Ok(false);
                };
                let mut all = Control::parse_list(&waiting);
                all.push(command);
                all.sort();
                all.dedup();
                c.prepare_cached("UPDATE celeriac_processes SET commands = ?2 WHERE id = ?1")?
                    .execute(params![id, Control::join_list(&all)])?;
                Ok(true)
            })
            .await
    }
}
