//! Reading rows that may not hold what this version wrote: another process, an older version,
//! a hand edit or a damaged file may have put anything in them. The tables are not `STRICT`,
//! so SQLite keeps whatever type a statement stored in a column: every read may find another
//! type, an integer out of range, text that is not UTF-8 or JSON that does not parse.
//!
//! - [`column`] reads a value and, when it is not what it should be, says which column and
//!   what it holds ([`BadColumn`]).
//! - A job row that cannot be read is never an error that stops the queue: a claim or a reap
//!   that meets one moves the job to the dead letters with the reason ([`UNDECODABLE`]) and
//!   goes on with the others; a listing shows it with the task [`UNREADABLE_TASK`] and the
//!   reason in the header [`UNREADABLE_HEADER`].
//! - Values that only summarize or cache something (counts, limiter and breaker state,
//!   sketches, rates) are read leniently: one that does not read as its type counts as
//!   absent ([`int`]), and text or bytes are taken as they are ([`bytes`], [`text`]).

use rusqlite::types::{FromSql, Type, ValueRef};
use rusqlite::Row;
use std::fmt;

/// The error kind of a job dead-lettered because its row cannot be read.
pub(crate) const UNDECODABLE: &str = "undecodable_job";

/// The task a job whose row cannot be read is listed with.
pub(crate) const UNREADABLE_TASK: &str = "<unreadable>";

/// The header that carries why such a job's row cannot be read.
pub(crate) const UNREADABLE_HEADER: &str = "celeriac-unreadable";

/// A column whose stored value is not what it should be.
#[derive(Debug)]
pub(crate) struct BadColumn {
    column: &'static str,
    why: String,
}

impl fmt::Display for BadColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column `{}` {}", self.column, self.why)
    }
}

impl std::error::Error for BadColumn {}

/// The error for column `column`, which holds something it should not.
pub(crate) fn bad(column: &'static str, why: impl fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(BadColumn {
        column,
        why: why.to_string(),
    }))
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Null => "NULL",
        Type::Integer => "an integer",
        Type::Real => "a real number",
        Type::Text => "text",
        Type::Blob => "a blob",
    }
}

/// Column `idx` (called `name`) as a `T`, or an error that names the column and says what it
/// holds instead.
pub(crate) fn column<T: FromSql>(
    row: &Row<'_>,
    idx: usize,
    name: &'static str,
) -> rusqlite::Result<T> {
    row.get(idx).map_err(|e| match e {
        rusqlite::Error::InvalidColumnType(_, _, t) => bad(name, format!("holds {}", type_name(t))),
        rusqlite::Error::IntegralValueOutOfRange(_, v) => {
            bad(name, format!("holds {v}, out of range"))
        }
        rusqlite::Error::FromSqlConversionFailure(_, t, err) => bad(
            name,
            format!("holds {} that does not read: {err}", type_name(t)),
        ),
        other => other,
    })
}

/// Column `idx` as an integer, or `None` when it holds anything else (or cannot be read).
pub(crate) fn int(row: &Row<'_>, idx: usize) -> Option<i64> {
    match row.get_ref(idx).ok()? {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

/// Column `idx` as bytes: a blob or text as it is, a number as its decimal text; `None` for
/// NULL (or a column that cannot be read).
pub(crate) fn bytes(row: &Row<'_>, idx: usize) -> Option<Vec<u8>> {
    Some(match row.get_ref(idx).ok()? {
        ValueRef::Null => return None,
        ValueRef::Integer(i) => i.to_string().into_bytes(),
        ValueRef::Real(f) => f.to_string().into_bytes(),
        ValueRef::Text(t) | ValueRef::Blob(t) => t.to_vec(),
    })
}

/// Column `idx` as text, with bytes that are not UTF-8 replaced; `None` for NULL.
pub(crate) fn text(row: &Row<'_>, idx: usize) -> Option<String> {
    bytes(row, idx).map(|b| String::from_utf8_lossy(&b).into_owned())
}
