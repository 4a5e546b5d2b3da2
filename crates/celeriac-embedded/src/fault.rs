//! What SQLite's errors mean for a caller: the portable kind, and the storage condition behind
//! them (full disk, read-only or failing file, lack of memory, malformed file) in plain words.

use celeriac_core::error::{Error, ErrorKind};
use rusqlite::ffi::ErrorCode;

/// The storage condition behind an error, if it is one, and what to do about it.
fn condition(e: &rusqlite::Error) -> Option<(ErrorKind, &'static str)> {
    Some(match e.sqlite_error_code()? {
        // Conditions that may clear (space freed, file made writable again, memory back):
        // nothing of the failed write was stored, so the same call may succeed later.
        ErrorCode::DiskFull => (
            ErrorKind::Retry,
            "the disk is full (or the database reached its size limit)",
        ),
        ErrorCode::ReadOnly => (ErrorKind::Retry, "the database is read-only"),
        ErrorCode::SystemIoFailure => (
            ErrorKind::Retry,
            "an I/O error on the database (the file may have been made read-only, or the disk \
             failed)",
        ),
        ErrorCode::CannotOpen => (ErrorKind::Retry, "a file of the database cannot be opened"),
        ErrorCode::OutOfMemory => (ErrorKind::Retry, "SQLite ran out of memory"),
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
            (ErrorKind::GiveUp, "the database file is malformed")
        }
        _ => return None,
    })
}

/// Maps an SQLite error to the portable kinds, naming the storage condition behind it.
pub(crate) fn map_err(e: rusqlite::Error) -> Error {
    map_ref(&e)
}

/// [`map_err`] on a borrowed error.
pub(crate) fn map_ref(e: &rusqlite::Error) -> Error {
    if let Some((kind, what)) = condition(e) {
        return Error::backend(kind, format!("{what}: {e}"));
    }
    let kind = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ErrorKind::Retry,
        _ => ErrorKind::GiveUp,
    };
    Error::backend(kind, e)
}

/// The error of every operation of a transaction SQLite rolled back as a whole (or that could
/// not be committed), given the error that caused it, if one is known.
pub(crate) fn rolled_back(cause: Option<&rusqlite::Error>) -> Error {
    const LOST: &str = "SQLite rolled back the whole transaction, so nothing of this write \
                        was stored";
    match cause {
        Some(e) => match condition(e) {
            Some((kind, what)) => Error::backend(kind, format!("{what}: {e}; {LOST}")),
            // Not a storage condition (lock contention, a rule of the schema): the other writes
            // of the transaction were sound and may be tried again.
            None => Error::backend(ErrorKind::Retry, format!("{e}; {LOST}")),
        },
        None => Error::backend(
            ErrorKind::Retry,
            format!(
                "SQLite ended the transaction on its own (after an I/O error, a full disk or a \
                 lack of memory); {LOST}"
            ),
        ),
    }
}
