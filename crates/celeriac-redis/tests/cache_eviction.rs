//! A cache on a Redis of its own (`?role=cache`), against `redis-server`s the testkit starts
//! with a small `maxmemory`:
//!
//! - under `allkeys-lfu` and a write load ten times its memory, the cache answers every read
//!   with the right value and no error, its hit ratio, its evictions and the store's memory
//!   are reported, and the store refuses queues;
//! - a tagged entry whose tag barrier the store dropped is reloaded, never served (a barrier
//!   evicted after an invalidation would otherwise let the invalidated entry back in);
//! - a bumped key version whose key and counter the store dropped is written back by a running
//!   instance, so one that starts later does not read what the bump left behind;
//! - under `noeviction`, once full, writes refused for space are counted apart from errors,
//!   the values served from L1 and the loader, reads go on from L2, and a refused overwrite
//!   leaves no older value behind.

use celeriac::cache::Cache;
use celeriac_core::backend::{Broker, ClaimRequest, KvStore};
use celeriac_core::{Job, UnixMs};
use celeriac_redis::RedisBackend;
use celeriac_testkit::resp::Value;
use celeriac_testkit::RedisServer;
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// A private redis-server bounded at `maxmemory` with `policy`, and a cache backend on it.
async fn cache_redis(maxmemory: &str, policy: &str) -> (RedisServer, Arc<RedisBackend>) {
    let server = RedisServer::builder()
        .arg("--maxmemory", maxmemory)
        .arg("--maxmemory-policy", policy)
        .start()
        .await
        .expect("redis-server starts");
    let backend = RedisBackend::connect(&format!("{}?role=cache", server.url()))
        .await
        .expect("role=cache accepts any policy and no persistence");
    (server, Arc::new(backend))
}

/// `len` letters drawn at random (a value JSON stores as it is), different for each `seed`.
fn letters(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// The keys matching `pattern`, sorted.
async fn key_names(server: &RedisServer, pattern: &str) -> Vec<String> {
    let Value::Array(keys) = server.command(&["KEYS", pattern]).await.expect("KEYS") else {
        panic!("KEYS answers an array")
    };
    let mut names: Vec<String> = keys
        .into_iter()
        .map(|k| match k {
            Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("a key name: {other:?}"),
        })
        .collect();
    names.sort();
    names
}

fn now_ms() -> UnixMs {
    celeriac_core::clock::system_now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_cache_redis_answers_under_ten_times_its_memory_and_refuses_queues() {
    let (server, backend) = cache_redis("5mb", "allkeys-lfu").await;
    // Without the role, the same Redis is refused for what it would do to queues.
    let refused = RedisBackend::connect(&server.url())
        .await
        .expect_err("an evicting Redis without role=cache is refused");
    assert!(
        refused.to_string().contains("maxmemory-policy"),
        "{refused}"
    );

    let cache: Cache<str, String, RedisBackend> = Cache::builder("pressure")
        .ttl(Duration::from_secs(3600))
        .l1_off()
        // Stored as written: 50 MB of values reach the store.
        .compress_at(1 << 20)
        .stats_interval(None)
        .build(backend.clone())
        .await
        .expect("builds");
    // 5,000 values of 10 KiB (50 MB, ten times the bound), each written by a read that
    // misses; between writes, reads of 50 hot keys, which LFU should keep.
    let (keys, size, hot) = (5_000u64, 10 * 1024, 50u64);
    let (mut hot_reads, mut hot_hits) = (0u64, 0u64);
    for i in 0..keys {
        let key = format!("k{i}");
        let want = letters(i, size);
        let got = cache
            .get_with(&key, {
                let want = want.clone();
                move || async move { want }
            })
            .await
            .expect("no error under eviction");
        assert_eq!(got, want, "{key}");
        if i >= hot {
            let h = i % hot;
            let hot_key = format!("k{h}");
            let before = cache.stats().loads;
            let want = letters(h, size);
            let got = cache
                .get_with(&hot_key, {
                    let want = want.clone();
                    move || async move { want }
                })
                .await
                .expect("no error under eviction");
            assert_eq!(got, want, "{hot_key}");
            hot_reads += 1;
            if cache.stats().loads == before {
                hot_hits += 1;
            }
        }
    }
    let stats = cache.stats();
    let memory = backend
        .kv_memory()
        .await
        .expect("INFO readable")
        .expect("Redis reports its memory");
    let total = stats.l2_hits + stats.misses;
    eprintln!(
        "50 MB written through a 5 MiB allkeys-lfu Redis: {} reads, hit ratio {:.1} % \
         (hot keys {:.1} % of {hot_reads}), {} loads, {} keys evicted, used {:.2} MiB of {:.2} MiB, \
         l2_errors {}, l2_full {}",
        total,
        100.0 * stats.l2_hits as f64 / total as f64,
        100.0 * hot_hits as f64 / hot_reads as f64,
        stats.loads,
        memory.evicted_keys,
        memory.used_bytes as f64 / MIB as f64,
        memory.max_bytes as f64 / MIB as f64,
        stats.l2_errors,
        stats.l2_full,
    );
    assert_eq!(memory.policy, "allkeys-lfu");
    assert_eq!(memory.max_bytes, 5 * MIB);
    assert!(
        memory.evicted_keys > 1_000,
        "the store really evicted: {memory:?}"
    );
    assert!(
        memory.used_bytes <= memory.max_bytes + MIB,
        "within its bound: {memory:?}"
    );
    assert_eq!(stats.l2_errors, 0, "evictions are misses, not errors");
    assert_eq!(stats.l2_full, 0, "an evicting store never refuses");
    assert!(
        stats.l2_hits > 0,
        "hot keys are read back from L2: {stats:?}"
    );
    assert_eq!(stats.misses, stats.loads, "every miss loaded once");

    // Queues are refused, saying why.
    let job = Job::new("t", b"1".to_vec(), now_ms());
    let err = backend
        .enqueue(vec![job], now_ms())
        .await
        .expect_err("a cache store refuses jobs");
    assert!(err.to_string().contains("role=cache"), "{err}");
    let err = backend
        .claim(ClaimRequest {
            queues: vec!["default".into()],
            limits: Default::default(),
            limit: 1,
            lease: Duration::from_secs(30),
            worker: "w".into(),
            now: now_ms(),
        })
        .await
        .expect_err("and claims");
    assert!(err.to_string().contains("role=cache"), "{err}");
    assert!(backend.queues_allowed().is_err(), "a worker fails at start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_tag_barrier_was_evicted_is_reloaded_not_served() {
    let (server, backend) = cache_redis("64mb", "allkeys-lfu").await;
    let build = || {
        Cache::<str, String, ()>::builder("tags")
            .ttl(Duration::from_secs(3600))
            .l1_off()
            .stats_interval(None)
            .build(backend.clone())
    };
    let writer = build().await.expect("builds");
    let v = writer
        .entry("p1")
        .tags(["catalog"])
        .get_with(|| async { "v1".to_string() })
        .await
        .expect("loads");
    assert_eq!(v, "v1");
    assert_eq!(
        key_names(&server, "*:tags:tag:*").await,
        vec!["celeriac:kv:celeriac:tags:tag:catalog".to_string()],
        "writing a tagged entry keeps its barrier in L2"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    writer.invalidate_tag("catalog").await.expect("invalidates");
    // The invalidated entry is still in L2 (a barrier bars it, nothing deletes it)...
    let entries = key_names(&server, "*:tags:v*p1").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    // ...and the store evicts the barrier.
    server
        .command(&["DEL", "celeriac:kv:celeriac:tags:tag:catalog"])
        .await
        .expect("DEL");

    // An instance that did not see the invalidation reads the entry from L2.
    let reader = build().await.expect("builds");
    let v = reader
        .entry("p1")
        .tags(["catalog"])
        .get_with(|| async { "v2".to_string() })
        .await
        .expect("loads");
    assert_eq!(v, "v2", "the invalidated value is not served");
    let stats = reader.stats();
    assert_eq!(stats.l2_barriers_lost, 1, "{stats:?}");
    assert_eq!(stats.loads, 1, "{stats:?}");
    // The reload wrote the barrier back; the new value is an L2 hit for the next instance.
    let third = build().await.expect("builds");
    let v = third
        .entry("p1")
        .tags(["catalog"])
        .get_with(|| async { "v3".to_string() })
        .await
        .expect("reads");
    assert_eq!(v, "v2");
    let stats = third.stats();
    assert_eq!((stats.l2_hits, stats.l2_barriers_lost), (1, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_noeviction_redis_refuses_writes_which_are_counted_and_served() {
    let (server, backend) = cache_redis("4mb", "noeviction").await;
    let build = |l1: bool| {
        let b = Cache::<str, String, ()>::builder("full")
            .ttl(Duration::from_secs(3600))
            .stats_interval(None);
        let b = if l1 { b } else { b.l1_off() };
        b.build(backend.clone())
    };
    let cache = build(true).await.expect("builds");
    cache.set("old", "v1".to_string()).await.expect("room yet");

    // Fill it, then lower its bound under what it holds: full, and it does not evict.
    let mut conn = redis::Client::open(server.url())
        .expect("URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    assert_eq!(
        server
            .overfill(2 << 20, 16 << 10)
            .await
            .expect("every write taken or refused for space"),
        0,
        "room for 2 MiB of filler"
    );
    server
        .command(&["CONFIG", "SET", "maxmemory", "1mb"])
        .await
        .expect("CONFIG SET");
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("probe")
        .arg("x")
        .query_async(&mut conn)
        .await;
    let refused = refused.expect_err("the server is full");
    assert_eq!(refused.code(), Some("OOM"), "{refused}");

    // A read that misses loads and serves; the write is refused, counted apart.
    let v = cache
        .get_with("new", || async { "loaded".to_string() })
        .await
        .expect("served by the loader");
    assert_eq!(v, "loaded");
    let stats = cache.stats();
    assert!(stats.l2_full >= 1, "{stats:?}");
    assert_eq!(stats.l2_errors, 0, "{stats:?}");
    assert!(cache.l2_available(), "a full store still answers reads");
    // Served from L1 afterwards, without loading again.
    let v = cache
        .get_with("new", || async { "again".to_string() })
        .await
        .expect("L1");
    assert_eq!(v, "loaded");

    // An overwrite refused for space leaves no older value for other instances.
    cache
        .set("old", "v2".to_string())
        .await
        .expect("refused for space: kept in L1, the old L2 value deleted");
    let other = build(false).await.expect("builds");
    let v = other
        .get_with("old", || async { "reloaded".to_string() })
        .await
        .expect("loads");
    assert_eq!(v, "reloaded", "v1 is not served after v2 was written");
    assert_eq!(
        cache.get("old").await.expect("reads"),
        Some("v2".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bumped_version_survives_the_eviction_of_its_key() {
    let (server, backend) = cache_redis("64mb", "allkeys-lfu").await;
    let build = || {
        Cache::<str, String, ()>::builder("versions")
            .ttl(Duration::from_secs(3600))
            .l1_off()
            .stats_interval(Some(Duration::from_millis(100)))
            .build(backend.clone())
    };
    let first = build().await.expect("builds");
    first.set("k", "before".to_string()).await.expect("sets");
    let bumped = first.bump_version().await.expect("bumps");
    first.set("k", "after".to_string()).await.expect("sets");
    // Both versions' entries are in L2; the store evicts the version key and its counter.
    assert_eq!(key_names(&server, "*:versions:v*:k").await.len(), 2);
    let meta = key_names(&server, "*:versions:[vg]e[rn]*").await;
    assert_eq!(meta.len(), 2, "the version key and its counter: {meta:?}");
    for key in &meta {
        server.command(&["DEL", key]).await.expect("DEL");
    }
    // A running instance puts the version it uses back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while key_names(&server, "*:versions:version").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the version key was not written back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let later = build().await.expect("builds");
    let v = later
        .get_with("k", || async { "loaded".to_string() })
        .await
        .expect("reads");
    assert_eq!(v, "after", "not the entry the bump left behind");
    let again = later.bump_version().await.expect("bumps");
    assert!(
        again > bumped,
        "{again} > {bumped} though the counter was lost"
    );
}
