//! Celeriac's default backend: one SQLite file in WAL mode, no server.
//!
//! ```no_run
//! # async fn demo() -> celeriac_core::Result<()> {
//! use celeriac_embedded::SqliteBackend;
//! let backend = SqliteBackend::connect("sqlite://celeriac.db").await?;
//! # Ok(()) }
//! ```
//!
//! - **Durable**: WAL journal with `synchronous=FULL` by default (every acknowledged write
//!   survives power loss); `?synchronous=normal` trades the last commits on power loss for speed.
//! - **Group commit**: one writer thread per process owns the connection; operations waiting
//!   at the same moment share one transaction and one fsync, each in its own savepoint.
//! - **Reads take no lock**: operations that only read (a job, counts, listings, cache values)
//!   go to a second, read-only connection and read the last committed snapshot, so they never
//!   wait behind a writer of this process or another (see `reader.rs`).
//! - **Full disk, read-only file**: a write that finds the disk full, or the file read-only
//!   or failing (SQLite reports an I/O error when the file is made immutable under it), fails
//!   with an error that names the condition, of kind [`ErrorKind::Retry`]: the condition may
//!   clear, and nothing of the failed write was stored. When SQLite rolls a group-committed
//!   transaction back on its own, every operation of it fails, so nothing is half-committed:
//!   what each call reports is what the file holds. Once space is freed or the file is
//!   writable again, the same backend goes on, without a restart. A malformed file gives
//!   [`ErrorKind::GiveUp`]; a file that is read-only at open fails at open.
//! - **Local file system only**: in WAL mode the processes on one file share an index in
//!   memory mapped from the `-shm` file, which network file systems (NFS, SMB) do not support;
//!   the database, its `-wal` and its `-shm` must be on a local disk, and all three writable.
//! - **Atomic claims**: promotion of due jobs, selection, lease and fencing token happen in one
//!   `BEGIN IMMEDIATE` transaction, so several processes on one file never hold the same job
//!   at once.
//! - **Wake-ups**: a worker in the process that enqueues wakes at once. Workers in other
//!   processes notice new work within their poll interval (100 ms by default).
//! - **Workflows**: joins keep a header row that counts the distinct members that arrived, so
//!   an arrival detects completion with one comparison; joins and finished workflow records
//!   are deleted by `reap` once their ttl passed (an expired join also counts as gone when an
//!   arrival meets it). A finished workflow wakes waiters in this process at once; waiters in
//!   other processes poll, backing off to 250 ms.
//! - **Key-value store** (the cache's L2, see `kv.rs`): values expire by the caller's `now`;
//!   broadcast messages wake subscriptions in this process at once and reach other processes
//!   within the 100 ms they poll at; messages are kept 60 s, and a subscription that missed
//!   swept ones gets a `Reset`.
//! - **Rate limits** (see `limit.rs`): one transaction per decision runs the core maths over
//!   a row per key and quota; concurrency permits are rows with a lease.
//! - **Shared circuit breakers** (see `breaker.rs`): one record, the signals per instance and
//!   bucket, and the probe reservations per breaker, each call one transaction applying
//!   `SharedRecord`'s rules; rows expire by the caller's `now` and are swept by `reap`.
//!
//! URLs: `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, `sqlite::memory:`, with
//! optional `?synchronous=full|normal&busy_timeout_ms=10000&dead_ttl_s=604800&dead_max=100000`,
//! `&mode=0600`, `&role=all|cache` and `&max_bytes=64MiB`.
//!
//! - **Cache files**: `?max_bytes=` caps the bytes of the key-value store's keys and values
//!   (plain bytes, or with a `KiB`/`MiB`/`GiB` suffix, or `kb`/`mb`/`gb` as Redis reads them,
//!   also 1,024-based; 0, the default: no cap). A write that takes the total over the cap
//!   deletes the least recently written values in its own transaction until the total is under
//!   it again (at most [`KV_EVICT_MAX`] per write; the next write goes on); counters are
//!   counted but never deleted. The total and the count of evicted values are kept in the file,
//!   so every process on it reports the same figures (`kv_memory`). `?role=cache` opens the
//!   file for caches, rate limits and breakers only: queue operations are refused, as on a
//!   Redis opened with `role=cache`. A cache file of its own for the cache's L2:
//!   `sqlite:///var/cache/app-cache.db?role=cache&max_bytes=64MiB`.
//!
//! - **Private files**: a new database file is created readable and writable by its owner
//!   only (`0600`, whatever the umask), and SQLite gives its `-wal` and `-shm` the same mode;
//!   `?mode=0640` (octal, the owner keeping read and write) lets a group read it. An existing
//!   file keeps its mode.
//!
//! - **Retention**: `reap` deletes finished jobs past their retention, dead letters past
//!   `dead_ttl_s` and the oldest dead letters of a queue beyond `dead_max`, in transactions of
//!   at most 1,000 rows each, one after another until none is due; the WAL is truncated after
//!   checkpoints to [`WAL_SIZE_LIMIT`] bytes.
//! - **Damaged rows** (written by hand, by another program or a failing disk; see `decode.rs`):
//!   a job whose row does not read goes to the dead letters with the reason
//!   (`undecodable_job`, naming the column) when a claim or a reap meets it, and the other
//!   jobs go on; listings show it with the task `<unreadable>`. Limiter and breaker state,
//!   counts, sketches and cached values that do not read count as absent.

mod admin;
mod breakers;
mod broker;
mod browse;
mod clock;
mod coordinator;
mod counts;
mod decode;
mod events;
mod fault;
mod file_mode;
mod health;
mod history;
mod kv;
mod ops;
mod processes;
mod rate_limits;
mod reader;
mod results;
mod schema;
mod workflows;
mod writer;

use celeriac_core::backend::StoreRole;
use celeriac_core::clock::{FleetClock, StoreClock, RESYNC_EVERY};
use celeriac_core::error::{Error, ErrorKind, Result};
use celeriac_core::retention::DEFAULT_DEAD_MAX;
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use writer::Conn;

pub use file_mode::DEFAULT_FILE_MODE;
pub use kv::KV_EVICT_MAX;

/// How SQLite syncs commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync on every commit: nothing acknowledged is lost, even on power loss (the default).
    #[default]
    Full,
    /// Sync at checkpoints only: the last commits may be lost on power loss (not on a crash of
    /// the process).
    Normal,
}

/// Settings of the embedded backend.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file, or `None` for a private in-memory database.
    pub path: Option<PathBuf>,
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// How long to wait for another process's write lock.
    pub busy_timeout: Duration,
    /// How long dead letters are kept.
    pub dead_ttl: Duration,
    /// Most dead letters a queue keeps; a reap drops the oldest beyond it.
    pub dead_max: u64,
    /// The permissions a new database file is created with ([`DEFAULT_FILE_MODE`], owner
    /// only, unless `?mode=` says otherwise); its `-wal` and `-shm` get the same. An existing
    /// file keeps its own.
    pub file_mode: u32,
    /// What the file is for (`?role=`): everything (the default), or caches, rate limits and
    /// breakers alone (`?role=cache`), when queue operations are refused.
    pub role: StoreRole,
    /// The most bytes the key-value store's keys and values may take (`?max_bytes=`); a write
    /// beyond it deletes the least recently written values. 0 (the default): no cap.
    pub kv_max_bytes: u64,
}

/// Bytes the `-wal` file is truncated to after a checkpoint (`PRAGMA journal_size_limit`).
pub const WAL_SIZE_LIMIT: u64 = 16 * 1024 * 1024;

/// Most rounds one reap runs (each one bounded transaction); records that keep falling due at
/// the same `now` cannot hold the writer, and the next reap goes on.
const REAP_ROUNDS: usize = 10_000;

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: Some(PathBuf::from("celeriac.db")),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(10),
            dead_ttl: Duration::from_secs(7 * 24 * 3600),
            dead_max: DEFAULT_DEAD_MAX,
            file_mode: DEFAULT_FILE_MODE,
            role: StoreRole::All,
            kv_max_bytes: 0,
        }
    }
}

impl SqliteConfig {
    /// Parses a `sqlite://` URL (see the crate docs).
    pub fn from_url(url: &str) -> Result<Self> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let mut config = SqliteConfig::default();
        config.path = if base == "sqlite::memory:" || base == "sqlite://:memory:" {
            None
        } else if let Some(p) = base.strip_prefix("sqlite://") {
            if p.is_empty() {
                return Err(Error::config(
                    "url",
                    "`sqlite://` needs a file path, as in sqlite://celeriac.db",
                ));
            }
            Some(PathBuf::from(p))
        } else if let Some(p) = base.strip_prefix("sqlite:") {
            if p.is_empty() {
                return Err(Error::config("url", "`sqlite:` needs a file path"));
            }
            Some(PathBuf::from(p))
        } else {
            return Err(Error::config(
                "url",
                format!("`{url}` is not a sqlite URL (expected sqlite://path or sqlite::memory:)"),
            ));
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "synchronous" => {
                    config.synchronous = match v.to_ascii_lowercase().as_str() {
                        "full" => Synchronous::Full,
                        "normal" => Synchronous::Normal,
                        _ => {
                            return Err(Error::config(
                                "url: synchronous",
                                format!("`{v}` is not full or normal"),
                            ))
                        }
                    }
                }
                "busy_timeout_ms" => {
                    let ms: u64 = v.parse().map_err(|_| {
                        Error::config(
                            "url: busy_timeout_ms",
                            format!("`{v}` is not a number of milliseconds"),
                        )
                    })?;
                    config.busy_timeout = Duration::from_millis(ms);
                }
                "dead_ttl_s" => {
                    let s: u64 = v.parse().map_err(|_| {
                        Error::config(
                            "url: dead_ttl_s",
                            format!("`{v}` is not a number of seconds"),
                        )
                    })?;
                    if s == 0 {
                        return Err(Error::config("url: dead_ttl_s", "must be above zero"));
                    }
                    config.dead_ttl = Duration::from_secs(s);
                }
                "dead_max" => {
                    config.dead_max = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Error::config(
                            "url: dead_max",
                            format!("`{v}` is not a positive number of dead letters"),
                        )
                    })?;
                }
                "mode" => config.file_mode = file_mode::parse(v)?,
                "role" => config.role = StoreRole::parse(v)?,
                "max_bytes" => config.kv_max_bytes = parse_bytes(v)?,
                other => {
                    return Err(Error::config(
                        "url",
                        format!(
                            "unknown sqlite URL parameter `{other}` (known: synchronous, \
                             busy_timeout_ms, dead_ttl_s, dead_max, mode, role, max_bytes)"
                        ),
                    ))
                }
            }
        }
        Ok(config)
    }
}

/// Reads `?max_bytes=`: a number of bytes, or one followed by `KiB`, `MiB`, `GiB` or `kb`,
/// `mb`, `gb` (any case; all 1,024-based, as Redis reads `maxmemory`).
fn parse_bytes(v: &str) -> Result<u64> {
    let bad = |why: &str| {
        Error::config(
            "url: max_bytes",
            format!(
                "`{v}` {why}: give a number of bytes, optionally with a KiB, MiB or GiB suffix \
                 (kb, mb and gb mean the same), such as max_bytes=64MiB; 0 means no cap"
            ),
        )
    };
    let lower = v.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    if digits.is_empty() {
        return Err(bad("is not a size"));
    }
    let shift = match unit {
        "" => 0,
        "kib" | "kb" => 10,
        "mib" | "mb" => 20,
        "gib" | "gb" => 30,
        _ => return Err(bad("has an unknown unit")),
    };
    let n: u64 = digits.parse().map_err(|_| bad("is too large"))?;
    n.checked_mul(1u64 << shift)
        .filter(|b| i64::try_from(*b).is_ok())
        .ok_or_else(|| bad("is too large"))
}

/// The embedded backend: cheap to clone, all clones share one writer thread.
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Conn,
    /// The read-only connection of a file (`None` in memory: one connection holds it all).
    reader: Option<Conn>,
    config: SqliteConfig,
    work: watch::Sender<u64>,
    done: watch::Sender<u64>,
    /// Moves on every broadcast published in this process, to wake its subscriptions.
    kv_wake: watch::Sender<u64>,
    /// The fleet's clock: the file's anchor on the host's boot clock (see `clock.rs`).
    clock: Arc<FleetClock>,
}

impl Inner {
    /// Where operations that only read go: the reader of a file, else the writer.
    fn reads(&self) -> &Conn {
        self.reader.as_ref().unwrap_or(&self.writer)
    }
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.inner.config.path)
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the database a URL names.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::open(SqliteConfig::from_url(url)?).await
    }

    /// A private in-memory database (tests).
    pub async fn memory() -> Result<Self> {
        Self::open(SqliteConfig {
            path: None,
            ..SqliteConfig::default()
        })
        .await
    }

    /// Opens a database with these settings.
    ///
    /// # Errors
    /// A clear error naming the file when it cannot be opened, is not a database, or was
    /// written by a newer version. The file is never modified in those cases.
    pub async fn open(config: SqliteConfig) -> Result<Self> {
        let cfg = config.clone();
        let conn = tokio::task::spawn_blocking(move || open_connection(&cfg))
            .await
            .map_err(|e| Error::backend(ErrorKind::GiveUp, e))??;
        let name = match &config.path {
            Some(p) => format!("celeriac-sqlite:{}", p.display()),
            None => "celeriac-sqlite:memory".to_string(),
        };
        let writer = Conn::writer(conn, name)?;
        let reader = match &config.path {
            Some(path) => Some(reader::spawn(path, config.busy_timeout)?),
            None => None,
        };
        let inner = Arc::new(Inner {
            writer,
            reader,
            config,
            work: watch::Sender::new(0),
            done: watch::Sender::new(0),
            kv_wake: watch::Sender::new(0),
            clock: Arc::new(FleetClock::unsynced()),
        });
        let time = clock::HostTime {
            inner: Arc::downgrade(&inner),
            boot: clock::boot_id(),
        };
        inner.clock.sync(&time, 1).await?;
        inner.clock.spawn_sync(
            time,
            RESYNC_EVERY,
            tokio_util::sync::CancellationToken::new(),
        );
        Ok(Self { inner })
    }

    /// The settings in use.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    fn wake_workers(&self) {
        self.inner.work.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn wake_waiters(&self) {
        self.inner.done.send_modify(|v| *v = v.wrapping_add(1));
    }
}

fn open_connection(config: &SqliteConfig) -> Result<Connection> {
    let place = match &config.path {
        Some(p) => p.display().to_string(),
        None => ":memory:".to_string(),
    };
    let fail = |e: rusqlite::Error| {
        Error::backend(
            ErrorKind::GiveUp,
            format!("cannot use the SQLite database at {place}: {e}"),
        )
    };
    let conn = match &config.path {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.exists() {
                    return Err(Error::config(
                        "url",
                        format!(
                            "the directory {} of the database does not exist",
                            dir.display()
                        ),
                    ));
                }
            }
            file_mode::create(p, config.file_mode)?;
            Connection::open_with_flags(
                p,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        }
        None => Connection::open_in_memory(),
    }
    .map_err(fail)?;
    conn.busy_timeout(config.busy_timeout).map_err(fail)?;
    // The first real read: a file that is not a database fails here, before anything is written.
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(fail)?;
    if version > 0 && version < schema::SCHEMA_VERSION {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
        match schema::migrate(&conn, version) {
            Ok(()) => conn.execute_batch("COMMIT").map_err(fail)?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(fail(e));
            }
        }
    }
    if version > schema::SCHEMA_VERSION {
        return Err(Error::backend(
            ErrorKind::GiveUp,
            format!(
                "the database at {place} has schema version {version}, newer than this \
                 version of celeriac understands ({}); upgrade celeriac",
                schema::SCHEMA_VERSION
            ),
        ));
    }
    if config.path.is_some() {
        // Switching a new file to WAL needs it to itself, and SQLite does not wait for that
        // (no busy handler): when another process opens the same new file at this moment,
        // try again within the busy timeout.
        let started = std::time::Instant::now();
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < config.busy_timeout =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.map_err(fail)?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::backend(
                ErrorKind::GiveUp,
                format!("the database at {place} cannot use WAL mode (got {mode})"),
            ));
        }
    }
    let sync = match config.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF;"
    ))
    .map_err(fail)?;
    // A checkpoint copies the WAL back into the database (automatically once it holds 1,000
    // pages, SQLite's default, stated here so it stays so) but leaves the file at its largest
    // size: one big transaction, or a checkpoint held back by a reader, would keep the disk
    // space for good. The size limit truncates the file when the WAL next starts over.
    conn.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint = 1000; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
    ))
    .map_err(fail)?;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
    let setup = schema::before_setup(&conn)
        .and_then(|_| conn.execute_batch(include_str!("schema.sql")))
        .and_then(|_| schema::after_setup(&conn, version))
        .and_then(|_| {
            conn.execute_batch(&format!("PRAGMA user_version = {}", schema::SCHEMA_VERSION))
        });
    match setup {
        Ok(()) => conn.execute_batch("COMMIT").map_err(fail)?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(fail(e));
        }
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl StoreClock for SqliteBackend {
    fn fleet_clock(&self) -> Arc<FleetClock> {
        self.inner.clock.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_settings_parse_and_bad_ones_name_the_setting() {
        let c = SqliteConfig::from_url("sqlite://x.db").expect("parses");
        assert_eq!(c.dead_max, DEFAULT_DEAD_MAX);
        let c = SqliteConfig::from_url("sqlite://x.db?dead_max=250&dead_ttl_s=60").expect("parses");
        assert_eq!(c.dead_max, 250);
        assert_eq!(c.dead_ttl, Duration::from_secs(60));
        for bad in ["dead_max=0", "dead_max=-1", "dead_max=lots"] {
            let err = SqliteConfig::from_url(&format!("sqlite://x.db?{bad}"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("url: dead_max"), "{bad}: {err}");
        }
    }

    #[test]
    fn cache_file_settings_parse_and_bad_ones_name_the_setting() {
        let c = SqliteConfig::from_url("sqlite://x.db").expect("parses");
        assert_eq!((c.role, c.kv_max_bytes), (StoreRole::All, 0));
        let c = SqliteConfig::from_url("sqlite://x.db?role=cache&max_bytes=64MiB").expect("parses");
        assert_eq!((c.role, c.kv_max_bytes), (StoreRole::Cache, 64 << 20));
        for (v, n) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("512KiB", 512 << 10),
            ("512kb", 512 << 10),
            ("2GiB", 2 << 30),
            ("3gb", 3 << 30),
            ("10MB", 10 << 20),
        ] {
            let c = SqliteConfig::from_url(&format!("sqlite://x.db?role=all&max_bytes={v}"))
                .expect("parses");
            assert_eq!(c.kv_max_bytes, n, "{v}");
        }
        for bad in [
            "max_bytes=",
            "max_bytes=-1",
            "max_bytes=lots",
            "max_bytes=10 MiB",
            "max_bytes=1.5MiB",
            "max_bytes=10TiB",
            "max_bytes=MiB",
            "max_bytes=99999999999GiB",
        ] {
            let err = SqliteConfig::from_url(&format!("sqlite://x.db?{bad}"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("url: max_bytes"), "{bad}: {err}");
        }
        let err = SqliteConfig::from_url("sqlite://x.db?role=queues-only")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("url: role"), "{err}");
        let err = SqliteConfig::from_url("sqlite://x.db?maxbytes=1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("max_bytes"),
            "the list of known parameters: {err}"
        );
    }
}
