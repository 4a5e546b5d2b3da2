//! The conformance suite against the embedded SQLite backend, in memory and on a file.

use celeriac_conformance::{suite, Guarded};
use celeriac_embedded::SqliteBackend;
use tempfile::TempDir;

/// A backend on a fresh file in a temporary directory, removed when the test ends.
async fn sqlite_in_tempdir() -> Result<Guarded<SqliteBackend, TempDir>, Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let backend = SqliteBackend::connect(&url).await?;
    Ok(Guarded {
        backend,
        guard: dir,
    })
}

suite!(sqlite_memory, SqliteBackend::memory());
suite!(sqlite_file, sqlite_in_tempdir());
