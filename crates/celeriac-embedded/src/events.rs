//! [`EventLog`] on SQLite: a table capped at [`EVENTS_KEPT`] rows, oldest dropped on append.

use crate::SqliteBackend;
use celeriac_core::backend::{Event, EventLog, EVENTS_KEPT};
use celeriac_core::error::{Error, Result};
use rusqlite::params;

impl EventLog for SqliteBackend {
    async fn append(&self, events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let bodies = events
            .iter()
            .map(Event::encode)
            .collect::<Result<Vec<String>>>()?;
        self.inner
            .writer
            .call(move |c| {
                let mut insert =
                    c.prepare_cached("INSERT INTO celeriac_events (body) VALUES (?1)")?;
                for body in &bodies {
                    insert.execute([body])?;
                }
                c.prepare_cached(
                    "DELETE FROM celeriac_events WHERE seq <= \
                     (SELECT MAX(seq) FROM celeriac_events) - ?1",
                )?
                .execute([EVENTS_KEPT as i64])?;
                Ok(())
            })
            .await
    }

    async fn events(&self, after: Option<String>, limit: usize) -> Result<Vec<Event>> {
        let after = match after {
            Some(a) => Some(a.parse::<i64>().map_err(|_| {
                Error::config("after", format!("`{a}` is not an event id of this store"))
            })?),
            None => None,
        };
        let limit = limit as i64;
        let rows: Vec<(i64, String)> = self
            .inner
            .reads()
            .call(move |c| match after {
                Some(after) => c
                    .prepare_cached(
                        "SELECT seq, body FROM celeriac_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    )?
                    .query_map(params![after, limit], |r| Ok((r.get(0)?, crate::decode::text(r, 1).unwrap_or_default())))?
                    .collect(),
                None => {
                    let mut rows: Vec<(i64, String)> = c
                        .prepare_cached(
                            "SELECT seq, body FROM celeriac_events ORDER BY seq DESC LIMIT ?1",
                        )?
                        .query_map([limit], |r| Ok((r.get(0)?, crate::decode::text(r, 1).unwrap_or_default())))?
                        .collect::<rusqlite::Result<_>>()?;
                    rows.reverse();
                    Ok(rows)
                }
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, body)| Event::decode_or_skip(seq.to_string(), body.as_bytes()))
            .collect())
    }
}
