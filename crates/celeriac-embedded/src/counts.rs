//! The counts of jobs per queue and state (`celeriac_queue_counts`), kept as jobs change: each
//! operation tallies what it moved and applies the tally once at its end, in its own
//! transaction, so counting a queue costs one row per state however many jobs it holds and the
//! hot path pays a few row updates per call, not per job.

use rusqlite::{params, Connection};
use std::collections::HashMap;

/// Changes to the counts made by one operation.
#[derive(Debug, Default)]
pub(crate) struct Tally(HashMap<(String, i64), i64>);

impl Tally {
    /// `n` more (or fewer) jobs of `queue` in `state`.
    pub(crate) fn add(&mut self, queue: &str, state: i64, n: i64) {
        if n != 0 {
            *self.0.entry((queue.to_string(), state)).or_insert(0) += n;
        }
    }

    /// One job of `queue` moved from one state to another.
    pub(crate) fn moved(&mut self, queue: &str, from: i64, to: i64) {
        if from != to {
            self.add(queue, from, -1);
            self.add(queue, to, 1);
        }
    }

    /// Writes the changes.
    pub(crate) fn apply(self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO celeriac_queue_counts (queue, state, n) VALUES (?1, ?2, ?3) \
             ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((queue, state), n) in self.0 {
            if n != 0 {
                stmt.execute(params![queue, state, n])?;
            }
        }
        Ok(())
    }
}
