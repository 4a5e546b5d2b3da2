//! A second connection, opened read-only, for the operations that only read: a job, the
//! queues' counts, the listings, events, history, the processes, the schedules' states, a
//! breaker's status, cache values and the cache's memory. In WAL mode a reader reads the last
//! committed snapshot and never takes the write lock, so a read waits behind no writer, in
//! this process or another: a worker that holds the lock while the machine starves it of CPU
//! stalls no dashboard, no `wait` and no cache hit.
//!
//! The operations waiting when the thread takes the next ones (as many as the writer groups)
//! share one read transaction (one snapshot, so an operation of several statements reads one
//! state). It begins after they were sent, so each sees every write that was committed before
//! its call; it ends before the thread waits again, so no idle snapshot holds a checkpoint
//! back.

use crate::writer::{begin, next_group, Conn, Op};
use celeriac_core::error::{Error, ErrorKind, Result};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// Opens the file read-only and starts its reader thread. The file must already be set up
/// (schema, WAL mode) by the writer's connection.
pub(crate) fn spawn(path: &Path, busy_timeout: Duration) -> Result<Conn> {
    let fail = |e: rusqlite::Error| {
        Error::backend(
            ErrorKind::GiveUp,
            format!(
                "cannot open the SQLite database at {} for reading: {e}",
                path.display()
            ),
        )
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    // A reader waits only while another connection recovers the WAL after a crash.
    conn.busy_timeout(busy_timeout).map_err(fail)?;
    conn.set_prepared_statement_cache_capacity(64);
    Conn::spawn(
        conn,
        format!("celeriac-sqlite-reader:{}", path.display()),
        run,
    )
}

fn run(conn: Connection, rx: mpsc::Receiver<Box<dyn Op>>) {
    while let Some(mut ops) = next_group(&rx) {
        if !begin(&conn, "BEGIN", &mut ops) {
            continue;
        }
        for op in ops.iter_mut() {
            op.run(&conn);
        }
        // Ending a read transaction cannot lose anything; one SQLite ended by itself is over.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("COMMIT");
        }
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for op in ops {
            op.finish(None);
        }
    }
}
