//! A SQLite cache file with a size cap (`?role=cache&max_bytes=...`): the key-value store's
//! bytes stay within the cap after every write by evicting the least recently written values,
//! the running total matches the file, counters are never dropped, every backend on the file
//! sees the same figures, old files gain the ordering column, and a cache file refuses queues.

use celeriac_core::backend::{
    ClaimRequest, JoinArrival, JoinInput, KvEntry, KvMemory, WorkflowRecord, WorkflowState,
};
use celeriac_core::{
    Broker, Coordinator, Job, JobId, KvStore, QueueAdmin, Registry, StoreHealth, Worker,
    WorkflowStore,
};
use celeriac_embedded::{SqliteBackend, KV_EVICT_MAX};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const NOW: i64 = 1_700_000_000_000;
const HOUR: Duration = Duration::from_secs(3600);
const MIB: u64 = 1 << 20;

fn url(path: &Path, query: &str) -> String {
    format!("sqlite://{}?synchronous=normal&{query}", path.display())
}

async fn open(path: &Path, query: &str) -> SqliteBackend {
    SqliteBackend::connect(&url(path, query))
        .await
        .expect("the cache file opens")
}

async fn memory(b: &SqliteBackend) -> KvMemory {
    b.kv_memory()
        .await
        .expect("kv_memory succeeds")
        .expect("SQLite reports its figures")
}

/// The bytes of keys and values in the file, computed by SQLite itself on its own connection.
fn bytes_in_file(path: &Path) -> u64 {
    let conn = rusqlite::Connection::open(path).expect("a connection of its own");
    let sum: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(LENGTH(key) + LENGTH(value)), 0) FROM celeriac_kv",
            [],
            |r| r.get(0),
        )
        .expect("the sum");
    u64::try_from(sum).expect("a positive sum")
}

/// A value of `n` bytes whose content says which key it belongs to.
fn value(i: usize, n: usize) -> Vec<u8> {
    let mut v = format!("value {i} ").into_bytes();
    v.resize(n, b'0' + (i % 10) as u8);
    v
}

fn entry(key: &str, value: Vec<u8>, ttl: Duration) -> KvEntry {
    KvEntry {
        key: key.to_string(),
        value,
        ttl,
    }
}

async fn read(b: &SqliteBackend, key: &str, now: i64) -> Option<Vec<u8>> {
    b.kv_get(vec![key.to_string()], now)
        .await
        .expect("kv_get succeeds")
        .pop()
        .flatten()
}

/// Sizes from 1 KiB to 64 KiB, from a fixed linear congruential sequence.
struct Sizes(u64);

impl Sizes {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        1024 + ((self.0 >> 33) % (63 * 1024 + 1)) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_file_stays_within_its_cap_and_evicts_the_least_recently_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app-cache.db");
    let cap = MIB;
    let b = open(&path, "role=cache&max_bytes=1MiB").await;
    let m = memory(&b).await;
    assert_eq!(
        (m.used_bytes, m.max_bytes, m.policy.as_str(), m.evicted_keys),
        (0, cap, "oldest-written", 0),
        "a new cache file"
    );

    // Counters: counted, never evicted.
    let counters: Vec<String> = (0..20).map(|i| format!("hits:{i}")).collect();
    for c in &counters {
        assert_eq!(b.kv_incr(c, NOW).await.expect("incr"), 1);
    }
    let mut counts = vec![1u64; counters.len()];

    // 20 MB of values of 1 to 64 KiB, through every kind of write, each checked against the cap.
    let mut sizes = Sizes(7);
    let mut keys: Vec<(String, usize)> = Vec::new();
    let (mut written, mut highest) = (0usize, 0u64);
    let mut now = NOW;
    let mut step = 0usize;
    while written < 20_000_000 {
        step += 1;
        let i = keys.len();
        now += 1;
        let n = sizes.next();
        let key = format!("page:{i}");
        if step.is_multiple_of(10) {
            // A counter write may evict too, and stays within the cap.
            let c = (step / 10) % counters.len();
            counts[c] += 1;
            assert_eq!(
                b.kv_incr(&counters[c], now).await.expect("incr"),
                counts[c] as i64
            );
            let m = memory(&b).await;
            assert!(m.used_bytes <= cap, "{} bytes after an incr", m.used_bytes);
        }
        match step % 5 {
            // A new key through kv_ensure: absent, so written.
            3 => b
                .kv_ensure(vec![entry(&key, value(i, n), HOUR)], now)
                .await
                .expect("kv_ensure"),
            // Two values in one call.
            4 => {
                let n2 = sizes.next();
                let key2 = format!("page:{}", i + 1);
                b.kv_set(
                    vec![
                        entry(&key, value(i, n), HOUR),
                        entry(&key2, value(i + 1, n2), HOUR),
                    ],
                    now,
                )
                .await
                .expect("kv_set of two");
                keys.push((key.clone(), n));
                written += n;
                let m = memory(&b).await;
                assert!(m.used_bytes <= cap, "{} bytes after {key2}", m.used_bytes);
                highest = highest.max(m.used_bytes);
                keys.push((key2, n2));
                written += n2;
                continue;
            }
            _ => b
                .kv_set(vec![entry(&key, value(i, n), HOUR)], now)
                .await
                .expect("kv_set"),
        }
        keys.push((key.clone(), n));
        written += n;
        let m = memory(&b).await;
        assert!(m.used_bytes <= cap, "{} bytes after {key}", m.used_bytes);
        highest = highest.max(m.used_bytes);
    }

    let m = memory(&b).await;
    assert!(m.evicted_keys > 0, "eviction happened: {m:?}");
    assert!(
        highest > cap - 128 * 1024,
        "the total reached the cap before values were evicted: at most {highest} of {cap}"
    );
    assert_eq!(
        m.used_bytes,
        bytes_in_file(&path),
        "the running total is the file's"
    );

    // The values present are exactly the most recently written ones, and they read back.
    let mut present = Vec::new();
    for (i, (key, n)) in keys.iter().enumerate() {
        if let Some(v) = read(&b, key, now).await {
            assert_eq!(v, value(i, *n), "{key} reads back as written");
            present.push(i);
        }
    }
    let first = *present.first().expect("recent values are kept");
    assert_eq!(
        present,
        (first..keys.len()).collect::<Vec<_>>(),
        "the values kept are the most recently written, without a gap"
    );
    assert!(first > 0, "the oldest values are gone");
    assert_eq!(
        read(&b, "page:0", now).await,
        None,
        "the first value is gone"
    );
    let kept: usize = keys[first..].iter().map(|(k, n)| k.len() + n).sum();
    assert!(
        kept as u64 > cap / 2,
        "the values kept fill the cap ({kept} bytes)"
    );
    assert_eq!(
        m.evicted_keys,
        (keys.len() - present.len()) as u64,
        "every value that is gone was evicted, and counted"
    );

    // Counters are all there, with their counts.
    assert!(
        counts.iter().all(|n| *n > 1),
        "every counter was written among the values"
    );
    for (c, n) in counters.iter().zip(&counts) {
        let got = read(&b, c, now).await.expect("a counter is never evicted");
        assert_eq!(got, n.to_string().into_bytes(), "{c}");
    }

    // A second backend on the file (as another process) sees the same figures.
    let other = open(&path, "role=cache&max_bytes=1MiB").await;
    let seen = memory(&other).await;
    assert_eq!(seen, m, "the same figures from another backend");
    // Its writes evict too, and the first backend sees the count move.
    now += 1;
    other
        .kv_set(vec![entry("big", value(0, 200 * 1024), HOUR)], now)
        .await
        .expect("kv_set from the other backend");
    let after = memory(&b).await;
    assert!(after.evicted_keys > m.evicted_keys, "{after:?} after {m:?}");
    assert!(after.used_bytes <= cap);
    assert_eq!(after, memory(&other).await);
    assert_eq!(after.used_bytes, bytes_in_file(&path));
    assert_eq!(
        read(&b, "big", now).await.map(|v| v.len()),
        Some(200 * 1024)
    );

    // The figures survive a restart.
    drop(other);
    drop(b);
    let reopened = open(&path, "role=cache&max_bytes=1MiB").await;
    assert_eq!(memory(&reopened).await, after, "kept in the file");
    // Without a cap, the same file reports no policy and evicts nothing.
    let uncapped = open(&path, "role=cache").await;
    let m = memory(&uncapped).await;
    assert_eq!(
        (m.max_bytes, m.policy.as_str(), m.evicted_keys),
        (0, "none", after.evicted_keys)
    );
    uncapped
        .kv_set(vec![entry("more", value(1, 2 * MIB as usize), HOUR)], now)
        .await
        .expect("kv_set");
    let m = memory(&uncapped).await;
    assert!(m.used_bytes > cap, "no cap, no eviction: {m:?}");
    assert_eq!(m.evicted_keys, after.evicted_keys);
    assert_eq!(m.used_bytes, bytes_in_file(&path));
}

/// The total follows every way rows change: inserts, overwrites with other sizes, ensures,
/// deletes, expired values swept by writes and by `reap`, counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_total_stays_exact_under_every_kind_of_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("total.db");
    let b = open(&path, "max_bytes=64MiB").await;
    let check = |what: &'static str| {
        let b = b.clone();
        let path = path.clone();
        async move {
            let m = memory(&b).await;
            assert_eq!(m.used_bytes, bytes_in_file(&path), "after {what}");
            m.used_bytes
        }
    };
    let short = Duration::from_secs(10);
    let entries: Vec<KvEntry> = (0..300)
        .map(|i| entry(&format!("k{i}"), value(i, 100 + i * 7), short))
        .collect();
    b.kv_set(entries, NOW).await.expect("set");
    assert!(check("inserts").await > 0);
    b.kv_set(
        (0..100)
            .map(|i| entry(&format!("k{i}"), value(i, 5000 - i * 3), HOUR))
            .collect(),
        NOW + 1,
    )
    .await
    .expect("overwrite");
    check("overwrites").await;
    b.kv_ensure(
        (50..150)
            .map(|i| entry(&format!("k{i}"), value(i, 9), HOUR))
            .collect(),
        NOW + 2,
    )
    .await
    .expect("ensure");
    check("ensures of live keys").await;
    assert_eq!(
        b.kv_delete((0..20).map(|i| format!("k{i}")).collect(), NOW + 3)
            .await
            .expect("delete"),
        20
    );
    check("deletes").await;
    for _ in 0..3 {
        b.kv_incr("n", NOW + 4).await.expect("incr");
    }
    b.kv_incr("m", NOW + 4).await.expect("incr");
    check("counters").await;
    // k150..k299 expire at NOW + 10 s: an ensure after replaces some, a write sweeps others,
    // reap sweeps the rest.
    let later = NOW + 20_000;
    b.kv_ensure(
        (150..160)
            .map(|i| entry(&format!("k{i}"), value(i, 3), HOUR))
            .collect(),
        later,
    )
    .await
    .expect("ensure");
    check("ensures of expired keys").await;
    b.kv_set(vec![entry("fresh", value(1, 10), HOUR)], later)
        .await
        .expect("set");
    check("the sweep of a write").await;
    let conn = rusqlite::Connection::open(&path).expect("connection");
    let expired = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM celeriac_kv WHERE expires_at <= ?1",
            [later],
            |r| r.get(0),
        )
        .expect("count")
    };
    assert!(expired(&conn) > 0, "expired rows are left for reap");
    b.reap(later).await.expect("reap");
    assert_eq!(expired(&conn), 0, "reap swept the expired values");
    check("reap").await;
    // Rows changed behind the backend's back are counted as well.
    conn.execute_batch(
        "UPDATE celeriac_kv SET value = X'0102' WHERE key = 'fresh';
         INSERT INTO celeriac_kv (key, value, expires_at) VALUES ('by hand', 'some text', NULL);
         DELETE FROM celeriac_kv WHERE key = 'k100';",
    )
    .expect("hand edits");
    check("hand edits").await;
    let m = memory(&b).await;
    assert_eq!((m.max_bytes, m.evicted_keys), (64 * MIB, 0), "{m:?}");
}

/// A file written before the ordering column existed opens, gains it, and is evicted oldest
/// first: its own values before anything written after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_file_opens_and_gains_the_written_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        // celeriac_kv and celeriac_meta as version 8 created them.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS celeriac_meta (
                 key   TEXT PRIMARY KEY,
                 value INTEGER NOT NULL
             );
             INSERT OR IGNORE INTO celeriac_meta (key, value) VALUES ('fence', 0);
             CREATE TABLE IF NOT EXISTS celeriac_kv (
                 key        TEXT PRIMARY KEY,
                 value      BLOB NOT NULL,
                 expires_at INTEGER
             );
             CREATE INDEX IF NOT EXISTS celeriac_kv_expiry
                 ON celeriac_kv (expires_at) WHERE expires_at IS NOT NULL;
             PRAGMA user_version = 8;",
        )
        .expect("the version 8 tables");
        for i in 0..10 {
            conn.execute(
                "INSERT INTO celeriac_kv (key, value, expires_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![format!("old:{i}"), value(i, 50_000), NOW + 3_600_000],
            )
            .expect("an old value");
        }
        conn.execute(
            "INSERT INTO celeriac_kv (key, value, expires_at) VALUES ('old:count', '41', NULL)",
            [],
        )
        .expect("an old counter");
    }
    let before = bytes_in_file(&path);
    let b = open(&path, "role=cache&max_bytes=1MiB").await;
    let conn = rusqlite::Connection::open(&path).expect("connection");
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('celeriac_kv')")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("columns");
    assert!(columns.iter().any(|c| c == "written"), "{columns:?}");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 9);
    let m = memory(&b).await;
    assert_eq!(m.used_bytes, before, "the total counts the old rows");
    assert_eq!(read(&b, "old:3", NOW).await, Some(value(3, 50_000)));

    // 600 KB more: over the cap, the old values go first.
    for i in 0..12 {
        b.kv_set(
            vec![entry(&format!("new:{i}"), value(100 + i, 50_000), HOUR)],
            NOW + 1 + i as i64,
        )
        .await
        .expect("set");
        assert!(memory(&b).await.used_bytes <= MIB);
    }
    let m = memory(&b).await;
    assert!(m.evicted_keys > 0, "{m:?}");
    assert_eq!(m.used_bytes, bytes_in_file(&path));
    assert_eq!(
        read(&b, "old:0", NOW + 20).await,
        None,
        "the oldest is evicted"
    );
    for i in 0..12 {
        assert!(
            read(&b, &format!("new:{i}"), NOW + 20).await.is_some(),
            "new:{i} is newer than every old value"
        );
    }
    assert_eq!(
        b.kv_incr("old:count", NOW + 30).await.expect("incr"),
        42,
        "the old counter is kept"
    );
    // Opening it again changes nothing.
    drop(b);
    let again = open(&path, "role=cache&max_bytes=1MiB").await;
    assert_eq!(memory(&again).await.used_bytes, bytes_in_file(&path));
}

/// One write evicts at most [`KV_EVICT_MAX`] values; the writes after it go on until the
/// total is under the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_is_bounded_per_write_and_the_next_writes_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bounded.db");
    let total = 2 * KV_EVICT_MAX + 500;
    let uncapped = open(&path, "").await;
    uncapped
        .kv_set(
            (0..total)
                .map(|i| entry(&format!("v:{i:05}"), value(i, 100), HOUR))
                .collect(),
            NOW,
        )
        .await
        .expect("many small values");
    let capped = open(&path, "max_bytes=4KiB").await;
    let cap = 4 * 1024;
    let present = |b: SqliteBackend| async move {
        let got = b
            .kv_get((0..total).map(|i| format!("v:{i:05}")).collect(), NOW + 10)
            .await
            .expect("kv_get");
        got.iter().position(Option::is_some)
    };
    for round in 1..=2u64 {
        capped
            .kv_set(
                vec![entry(&format!("w:{round}"), b"x".to_vec(), HOUR)],
                NOW + round as i64,
            )
            .await
            .expect("a write over the cap");
        let m = memory(&capped).await;
        assert_eq!(
            m.evicted_keys,
            round * KV_EVICT_MAX as u64,
            "write {round} evicts the most one write may"
        );
        assert!(m.used_bytes > cap, "still over the cap: {m:?}");
        assert_eq!(m.used_bytes, bytes_in_file(&path));
        assert_eq!(
            present(capped.clone()).await,
            Some(round as usize * KV_EVICT_MAX),
            "the oldest went first"
        );
    }
    capped
        .kv_set(vec![entry("w:3", b"x".to_vec(), HOUR)], NOW + 3)
        .await
        .expect("the third write");
    let m = memory(&capped).await;
    assert!(m.used_bytes <= cap, "under the cap again: {m:?}");
    assert_eq!(m.used_bytes, bytes_in_file(&path));
    assert!(m.evicted_keys > 2 * KV_EVICT_MAX as u64, "{m:?}");
    assert_eq!(read(&capped, "w:3", NOW + 3).await, Some(b"x".to_vec()));
}

fn refused(what: &str, r: celeriac_core::Result<impl std::fmt::Debug>) {
    let err = r.expect_err(what).to_string();
    assert!(
        err.contains("role=cache") && err.contains("url: role"),
        "{what}: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_file_refuses_queues_and_keeps_caching() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cache.db");
    let b = Arc::new(open(&path, "role=cache").await);
    refused("queues_allowed", b.queues_allowed());
    refused(
        "enqueue",
        b.enqueue(vec![Job::new("t", b"1".to_vec(), NOW)], NOW)
            .await,
    );
    refused(
        "claim",
        b.claim(ClaimRequest {
            queues: vec!["default".into()],
            limit: 1,
            lease: Duration::from_secs(30),
            worker: "w".into(),
            now: NOW,
            limits: Default::default(),
        })
        .await,
    );
    refused("retry_dead", b.retry_dead(None, NOW).await);
    refused(
        "record_tick",
        b.record_tick("beat", 1, "nightly", NOW, NOW).await,
    );
    refused(
        "workflow_start",
        b.workflow_start(WorkflowRecord {
            id: JobId::new(),
            name: "chain(t)".into(),
            state: WorkflowState::Running,
            result: None,
            error: None,
            created_at: NOW,
            finished_at: None,
            ttl: Duration::from_secs(60),
        })
        .await,
    );
    refused(
        "join_arrive",
        b.join_arrive(
            JoinArrival {
                join: JobId::new(),
                index: 0,
                total: 1,
                input: JoinInput::Output(b"1".to_vec()),
                ttl: Duration::from_secs(60),
            },
            NOW,
        )
        .await,
    );
    // A worker on it stops at once with the same error.
    let worker = Worker::new(b.clone(), Arc::new(Registry::new()));
    let run = tokio::time::timeout(Duration::from_secs(30), worker.run())
        .await
        .expect("the worker stops at once");
    refused("a worker", run);
    // Nothing was written to the queues, and caching works.
    let conn = rusqlite::Connection::open(&path).expect("connection");
    let jobs: i64 = conn
        .query_row("SELECT COUNT(*) FROM celeriac_jobs", [], |r| r.get(0))
        .expect("count");
    assert_eq!(jobs, 0);
    b.kv_set(vec![entry("k", b"v".to_vec(), HOUR)], NOW)
        .await
        .expect("a cache file caches");
    assert_eq!(read(&b, "k", NOW).await, Some(b"v".to_vec()));
    b.reap(NOW).await.expect("reap sweeps a cache file");

    // The same file opened for everything takes jobs.
    let all = open(&path, "role=all").await;
    all.queues_allowed().expect("role=all holds queues");
    all.enqueue(vec![Job::new("t", b"1".to_vec(), NOW)], NOW)
        .await
        .expect("enqueue on role=all");
}

#[tokio::test]
async fn bad_cache_settings_fail_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.db");
    for (query, setting) in [
        ("max_bytes=lots", "url: max_bytes"),
        ("max_bytes=-5", "url: max_bytes"),
        ("max_bytes=1TiB", "url: max_bytes"),
        ("max_bytes=", "url: max_bytes"),
        ("role=queue", "url: role"),
        ("role=", "url: role"),
    ] {
        let err = SqliteBackend::connect(&url(&path, query))
            .await
            .expect_err(query)
            .to_string();
        assert!(err.contains(setting), "{query}: {err}");
    }
    assert!(!path.exists(), "a bad URL creates no file");
}

/// The health page's store figures of a capped cache file say how full it is, as `kv_memory`
/// does; a file without a cap shows none of them.
#[tokio::test]
async fn the_store_figures_of_a_capped_file_tell_its_bytes_cap_and_evictions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app-cache.db");
    let b = open(&path, "role=cache&max_bytes=1MiB").await;
    // 2 MiB through a 1 MiB file.
    for i in 0..64 {
        b.kv_set(
            vec![entry(&format!("v:{i}"), vec![7; 32 << 10], HOUR)],
            NOW + i,
        )
        .await
        .expect("set");
    }
    let m = memory(&b).await;
    assert!(m.evicted_keys > 0, "the file evicted: {m:?}");
    let f = b.store_figures().await.expect("store figures");
    assert_eq!(
        (
            f.memory_used_bytes,
            f.memory_max_bytes,
            f.eviction_policy.as_deref(),
            f.evicted_keys
        ),
        (
            Some(m.used_bytes),
            Some(MIB),
            Some("oldest-written"),
            Some(m.evicted_keys)
        )
    );
    assert!(f.file_bytes.is_some_and(|n| n > 0), "{f:?}");

    let plain = open(&dir.path().join("plain.db"), "").await;
    let f = plain.store_figures().await.expect("store figures");
    assert_eq!(
        (f.memory_used_bytes, f.memory_max_bytes, f.evicted_keys),
        (None, None, None),
        "{f:?}"
    );
}
