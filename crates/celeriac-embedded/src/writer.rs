//! One writer thread per backend that owns the SQLite connection and runs operations in
//! group-committed transactions: whatever operations are waiting when a transaction starts
//! share it (and its fsync), each inside its own savepoint so one failure spoils no other.

use celeriac_core::error::{Error, ErrorKind, Result};
use rusqlite::Connection;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most operations one transaction takes.
const MAX_GROUP: usize = 512;

trait Op: Send {
    /// Runs inside the transaction; true on success.
    fn run(&mut self, conn: &Connection) -> bool;
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

/// Maps SQLite errors to the portable kinds.
pub(crate) fn map_err(e: rusqlite::Error) -> Error {
    use rusqlite::ffi::ErrorCode;
    let kind = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ErrorKind::Retry,
        _ => ErrorKind::GiveUp,
    };
    Error::backend(kind, e)
}

/// The handle to the writer thread.
pub(crate) struct Writer {
    tx: mpsc::Sender<Box<dyn Op>>,
}

impl Writer {
    /// Starts the thread that owns `conn`.
    pub(crate) fn spawn(conn: Connection, name: String) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Box<dyn Op>>();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || run(conn, rx))
            .map_err(|e| {
                Error::backend(
                    ErrorKind::GiveUp,
                    format!("cannot start the writer thread: {e}"),
                )
            })?;
        Ok(Self { tx })
    }

    /// Runs `f` in a transaction on the writer thread and returns its result once committed.
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
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let e = map_err(e);
            for op in ops {
                op.finish(Some(clone_err(&e)));
            }
            continue;
        }
        let single = ops.len() == 1;
        let mut any_ok = false;
        for op in ops.iter_mut() {
            if single {
                any_ok = op.run(&conn);
                continue;
            }
            if conn.execute_batch("SAVEPOINT op").is_err() {
                continue;
            }
            if op.run(&conn) {
                any_ok = true;
                let _ = conn.execute_batch("RELEASE op");
            } else {
                let _ = conn.execute_batch("ROLLBACK TO op; RELEASE op");
            }
        }
        let commit = if any_ok {
            conn.execute_batch("COMMIT").map_err(map_err).err()
        } else {
            conn.execute_batch("ROLLBACK").map_err(map_err).err()
        };
        if commit.is_some() && any_ok {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for op in ops {
            op.finish(commit.as_ref().map(clone_err));
        }
    }
}

fn clone_err(e: &Error) -> Error {
    Error::backend(e.kind(), e)
}
