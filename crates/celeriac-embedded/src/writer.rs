//! One writer thread per backend that owns the SQLite connection and runs operations in
//! group-committed transactions: whatever operations are waiting when a transaction starts
//! share it (and its fsync), each inside its own savepoint so one failure spoils no other.
//!
//! SQLite may roll the whole transaction back on its own (a full disk, an I/O error, a lack of
//! memory). The writer checks after every statement it runs that the transaction is still
//! open; once it is not, every operation of the transaction fails with the cause, none runs
//! any more, and the next transaction starts afresh. A commit hook refuses every commit but
//! the writer's own `COMMIT`, so no statement of a failed transaction is ever committed alone.

use crate::fault::{map_err, rolled_back};
use celeriac_core::error::{Error, ErrorKind, Result};
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// Most operations one transaction takes.
const MAX_GROUP: usize = 512;

/// One operation sent to a connection's thread.
pub(crate) trait Op: Send {
    /// Runs inside the transaction; true on success.
    fn run(&mut self, conn: &Connection) -> bool;
    /// The error the operation failed with, once run.
    fn failure(&self) -> Option<&rusqlite::Error>;
    /// Called after the commit (with the commit's error, if it failed).
    fn finish(self: Box<Self>, commit: Option<Error>);
}

struct TypedOp<T, F> {
    f: Option<F>,
    out: Option<rusqlite::Result<T>>,
    tx: oneshot::Sender<Result<T>>,
}

impl<T, F> Op for TypedOp<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        match self.f.take() {
            Some(f) => {
                let r = f(conn);
                let ok = r.is_ok();
                self.out = Some(r);
                ok
            }
            None => false,
        }
    }

    fn failure(&self) -> Option<&rusqlite::Error> {
        self.out.as_ref().and_then(|r| r.as_ref().err())
    }

    fn finish(self: Box<Self>, commit: Option<Error>) {
        let result = match (commit, self.out) {
            (Some(e), _) => Err(e),
            (None, Some(Ok(v))) => Ok(v),
            (None, Some(Err(e))) => Err(map_err(e)),
            (None, None) => Err(Error::Closed),
        };
        let _ = self.tx.send(result);
    }
}

/// The handle to a thread that owns one connection and runs the operations sent to it: the
/// writer (see [`Conn::writer`]) or a reader (see `reader.rs`).
pub(crate) struct Conn {
    tx: mpsc::Sender<Box<dyn Op>>,
}

/// What a connection's thread runs: its connection and the operations sent to it.
pub(crate) type Loop = fn(Connection, mpsc::Receiver<Box<dyn Op>>);

impl Conn {
    /// Starts the writer thread, which owns `conn`.
    pub(crate) fn writer(conn: Connection, name: String) -> Result<Self> {
        Self::spawn(conn, name, run)
    }

    /// Starts a thread that owns `conn` and runs `each` on it.
    pub(crate) fn spawn(conn: Connection, name: String, each: Loop) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Box<dyn Op>>();
        let what = name.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || each(conn, rx))
            .map_err(|e| {
                Error::backend(
                    ErrorKind::GiveUp,
                    format!("cannot start the thread {what}: {e}"),
                )
            })?;
        Ok(Self { tx })
    }

    /// Runs `f` in a transaction on the thread and returns its result once that ended
    /// (committed, for the writer).
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Box<dyn Op> = Box::new(TypedOp {
            f: Some(f),
            out: None,
            tx,
        });
        self.tx.send(op).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<Box<dyn Op>>) {
    let committing = Arc::new(AtomicBool::new(false));
    let allowed = committing.clone();
    // Returning true turns the commit into a rollback.
    conn.commit_hook(Some(move || !allowed.load(Ordering::SeqCst)));
    while let Some(mut ops) = next_group(&rx) {
        if !begin(&conn, "BEGIN IMMEDIATE", &mut ops) {
            continue;
        }
        let outcome = match run_all(&conn, &mut ops).and_then(|any| {
            // The counts the successful operations moved go in with them.
            match any {
                true => crate::counts::write_transaction(&conn)
                    .map(|()| true)
                    .map_err(|e| rolled_back(Some(&e))),
                false => Ok(false),
            }
        }) {
            Ok(true) => {
                committing.store(true, Ordering::SeqCst);
                let commit = conn.execute_batch("COMMIT");
                committing.store(false, Ordering::SeqCst);
                commit.map_err(|e| rolled_back(Some(&e)))
            }
            Ok(false) => conn.execute_batch("ROLLBACK").map_err(map_err),
            Err(e) => Err(e),
        };
        if outcome.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        crate::counts::forget_transaction();
        let failed = outcome.err();
        for op in ops {
            op.finish(failed.clone());
        }
    }
}

/// The operations to run next: the first to arrive (waiting for it), and those waiting behind
/// it, at most [`MAX_GROUP`]; `None` once every handle is gone.
pub(crate) fn next_group(rx: &mpsc::Receiver<Box<dyn Op>>) -> Option<Vec<Box<dyn Op>>> {
    let mut ops = vec![rx.recv().ok()?];
    while ops.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    Some(ops)
}

/// Begins the group's transaction with `statement`; if it cannot begin, every operation of
/// the group fails with the cause (and is taken out of `ops`), and the answer is false.
pub(crate) fn begin(conn: &Connection, statement: &str, ops: &mut Vec<Box<dyn Op>>) -> bool {
    match conn.execute_batch(statement) {
        Ok(()) => true,
        Err(e) => {
            let e = map_err(e);
            for op in ops.drain(..) {
                op.finish(Some(e.clone()));
            }
            false
        }
    }
}

/// Runs the operations of one transaction, each in its own savepoint (unless it is alone);
/// true if any succeeded. An error means SQLite ended the transaction, or a savepoint could
/// not be kept: nothing of it may be committed, and no operation runs any more.
fn run_all(conn: &Connection, ops: &mut [Box<dyn Op>]) -> Result<bool> {
    if let [op] = ops {
        let ok = op.run(conn);
        crate::counts::operation_ended(ok);
        still_open(conn, op.failure())?;
        return Ok(ok);
    }
    let mut any_ok = false;
    for op in ops.iter_mut() {
        conn.execute_batch("SAVEPOINT op")
            .map_err(|e| rolled_back(Some(&e)))?;
        let ok = op.run(conn);
        crate::counts::operation_ended(ok);
        still_open(conn, op.failure())?;
        let end = if ok {
            "RELEASE op"
        } else {
            "ROLLBACK TO op; RELEASE op"
        };
        conn.execute_batch(end).map_err(|e| rolled_back(Some(&e)))?;
        still_open(conn, None)?;
        any_ok |= ok;
    }
    Ok(any_ok)
}

/// An error if SQLite ended the transaction (`cause`: the error it ended with, if known).
fn still_open(conn: &Connection, cause: Option<&rusqlite::Error>) -> Result<()> {
    if conn.is_autocommit() {
        return Err(rolled_back(cause));
    }
    Ok(())
}
