//! The counts of jobs per queue and state (`celeriac_queue_counts`), kept as jobs change: each
//! operation tallies what it moved ([`Tally::keep`]); the writer adds the tally of each
//! operation that succeeded to its transaction's and writes that once, just before the commit
//! (see `writer.rs`). Counting a queue costs one row per state however many jobs it holds, and
//! the hot path pays a few row updates per transaction, not per job.
//!
//! The jobs enqueued per queue and task are tallied the same way and added to the history
//! (`history.rs`) with the transaction.

use celeriac_core::backend::{Counts, Resolution};
use celeriac_core::sketch::Sketch;
use celeriac_core::UnixMs;
use rusqlite::{params, Connection};
use std::cell::RefCell;

thread_local! {
    /// What the operation running on this (writer) thread moved so far.
    static OPERATION: RefCell<Tally> = RefCell::new(Tally::default());
    /// What the operations of the open transaction that succeeded moved.
    static TRANSACTION: RefCell<Tally> = RefCell::new(Tally::default());
}

/// Changes to the counts made by one operation.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Queue, state, change.
    counts: Vec<(String, i64, i64)>,
    /// Minute, queue, task, jobs enqueued.
    enqueued: Vec<(UnixMs, String, String, u64)>,
}

impl Tally {
    /// `n` more (or fewer) jobs of `queue` in `state`.
    pub(crate) fn add(&mut self, queue: &str, state: i64, n: i64) {
        if n == 0 {
            return;
        }
        // A few entries per operation: a scan beats hashing, and allocates only the first time.
        match self
            .counts
            .iter_mut()
            .find(|(q, s, _)| *s == state && q == queue)
        {
            Some((_, _, total)) => *total += n,
            None => self.counts.push((queue.to_string(), state, n)),
        }
    }

    /// `n` jobs of `task` enqueued into `queue` at `now`, for the history.
    pub(crate) fn enqueued(&mut self, queue: &str, task: &str, now: UnixMs, n: u64) {
        let minute = Resolution::Minute.start_of(now);
        match self
            .enqueued
            .iter_mut()
            .find(|(m, q, t, _)| *m == minute && q == queue && t == task)
        {
            Some((_, _, _, total)) => *total += n,
            None => self
                .enqueued
                .push((minute, queue.to_string(), task.to_string(), n)),
        }
    }

    /// One job of `queue` moved from one state to another.
    pub(crate) fn moved(&mut self, queue: &str, from: i64, to: i64) {
        if from != to {
            self.add(queue, from, -1);
            self.add(queue, to, 1);
        }
    }

    fn merge(&mut self, other: Tally) {
        for (queue, state, n) in other.counts {
            self.add(&queue, state, n);
        }
        for (minute, queue, task, n) in other.enqueued {
            self.enqueued(&queue, &task, minute, n);
        }
    }

    /// Hands this operation's changes to the writer, which writes them with its transaction
    /// if the operation succeeds.
    pub(crate) fn keep(self) {
        OPERATION.with(|t| t.borrow_mut().merge(self));
    }

    /// Writes the changes.
    fn apply(self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO celeriac_queue_counts (queue, state, n) VALUES (?1, ?2, ?3) \
             ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n",
        )?;
        for (queue, state, n) in self.counts {
            if n != 0 {
                stmt.execute(params![queue, state, n])?;
            }
        }
        let none = Sketch::new();
        for (minute, queue, task, n) in self.enqueued {
            let counts = Counts {
                enqueued: n,
                ..Counts::default()
            };
            for res in [Resolution::Minute, Resolution::Hour] {
                crate::history::add(
                    conn, res, minute, minute, &queue, &task, &counts, &none, &none,
                )?;
            }
        }
        Ok(())
    }
}

/// The operation that just ran succeeded (its changes join the transaction's) or failed
/// (they are dropped with its savepoint).
pub(crate) fn operation_ended(ok: bool) {
    let done = OPERATION.with(|t| std::mem::take(&mut *t.borrow_mut()));
    if ok {
        TRANSACTION.with(|t| t.borrow_mut().merge(done));
    }
}

/// Writes the changes of the transaction's operations; called once before its commit.
pub(crate) fn write_transaction(conn: &Connection) -> rusqlite::Result<()> {
    TRANSACTION
        .with(|t| std::mem::take(&mut *t.borrow_mut()))
        .apply(conn)
}

/// Drops the changes of a transaction that was rolled back.
pub(crate) fn forget_transaction() {
    OPERATION.with(|t| *t.borrow_mut() = Tally::default());
    TRANSACTION.with(|t| *t.borrow_mut() = Tally::default());
}
