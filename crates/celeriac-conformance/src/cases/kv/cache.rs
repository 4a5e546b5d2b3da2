//! The two-level cache over each backend's L2: loads once per key within a process and
//! across instances, serves stale values while refreshing and when the loader fails,
//! refreshes hot keys early, caches "not found", and invalidates by key, tag and version
//! across instances. Time-driven cases use a [`ManualClock`].

use crate::support::{wait_for, T0};
use celeriac_cache::{Cache, CacheStats};
use celeriac_core::backend::QueueAdmin;
use celeriac_core::backend::{KvEntry, KvStore};
use celeriac_core::{Clock, ManualClock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

type Products<B> = Cache<str, String, B>;

async fn products<B: KvStore>(
    backend: &Arc<B>,
    namespace: &str,
    clock: &ManualClock,
    configure: impl FnOnce(
        celeriac_cache::CacheBuilder<str, String>,
    ) -> celeriac_cache::CacheBuilder<str, String>,
) -> Products<B> {
    let builder = Cache::<str, String, ()>::builder(namespace)
        .ttl(Duration::from_secs(10))
        .early_refresh(0.0)
        .clock(Arc::new(clock.clone()));
    configure(builder)
        .build(backend.clone())
        .await
        .expect("the cache builds")
}

/// A loader that counts its calls and answers `value`.
fn counting(
    calls: &Arc<AtomicU64>,
    value: &str,
) -> impl FnOnce() -> std::future::Ready<String> + Send + 'static {
    let calls = calls.clone();
    let value = value.to_string();
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(value)
    }
}

/// A load of `p1` (with `tags`) running in `cache`: its loader counts its call, says it began,
/// and answers "read before the change" once `release` is sent.
struct HeldLoad {
    task: tokio::task::JoinHandle<Result<String, celeriac_cache::CacheError>>,
    release: tokio::sync::oneshot::Sender<()>,
}

/// Starts a [`HeldLoad`] and waits until its loader runs.
async fn held_load<B: KvStore>(
    cache: &Products<B>,
    calls: &Arc<AtomicU64>,
    tags: &[&str],
) -> HeldLoad {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (cache, calls) = (cache.clone(), calls.clone());
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    let task = tokio::spawn(async move {
        cache
            .entry("p1")
            .tags(tags)
            .get_with(move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = started_tx.send(());
                let _ = release_rx.await;
                "read before the change".to_string()
            })
            .await
    });
    started_rx.await.expect("the loader started");
    HeldLoad { task, release }
}

impl HeldLoad {
    /// Lets the loader answer; returns what the load's caller got.
    async fn finish(self) -> String {
        self.release.send(()).expect("the loader waits");
        self.task.await.expect("load task").expect("load")
    }
}

/// After a change that bars what a [`HeldLoad`] of `p1` read: `a` loads `p1` (with `tags`)
/// again instead of serving `stale` (the loader's second call), and `b` then reads the new
/// value.
async fn loads_again_after_the_change<B: KvStore>(
    a: &Products<B>,
    b: &Products<B>,
    calls: &Arc<AtomicU64>,
    tags: &[&str],
    stale: &str,
) {
    let again = a
        .entry("p1")
        .tags(tags.iter().map(|t| t.to_string()).collect::<Vec<_>>())
        .get_with(counting(calls, "after the change"))
        .await
        .expect("load");
    assert_eq!(again, "after the change");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "{stale} was not served");
    wait_for("b seeing the value loaded after the change", || async {
        b.get("p1").await.ok().flatten().as_deref() == Some("after the change")
    })
    .await;
}

/// 200 concurrent reads of a cold key in one process call the loader once; a second
/// instance (another process) then reads it from L2 without loading.
pub async fn cache_loads_a_cold_key_once<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let a = products(&backend, "cold", &clock, |b| b).await;
    let calls = Arc::new(AtomicU64::new(0));
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let a = a.clone();
        let calls = calls.clone();
        reads.spawn(async move {
            a.get_with("sku-1", move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                "Celeriac".to_string()
            })
            .await
        });
    }
    while let Some(r) = reads.join_next().await {
        assert_eq!(r.expect("task").expect("read"), "Celeriac");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one load for 200 readers");
    let stats = a.stats();
    assert_eq!(stats.loads, 1);

    let b = products(&backend, "cold", &clock, |b| b).await;
    let got = b
        .get_with("sku-1", counting(&calls, "other"))
        .await
        .expect("read");
    assert_eq!(got, "Celeriac", "the second instance reads L2");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        (b.stats().l2_hits, b.stats().loads),
        (1, 0),
        "{:?}",
        b.stats()
    );
    assert_eq!(b.get("sku-1").await.expect("read"), Some("Celeriac".into()));
    assert_eq!(b.stats().l1_hits, 1, "now from L1");
}

/// Two instances hit by a cold key at once: the L2 lease lock lets one load, the other
/// waits for its value.
pub async fn cache_instances_share_one_load<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let a = products(&backend, "stampede", &clock, |b| b).await;
    let b = products(&backend, "stampede", &clock, |b| b).await;
    let calls = Arc::new(AtomicU64::new(0));
    let slow = |calls: &Arc<AtomicU64>| {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            "loaded".to_string()
        }
    };
    let (x, y) = tokio::join!(
        a.get_with("hot", slow(&calls)),
        b.get_with("hot", slow(&calls))
    );
    assert_eq!(x.expect("a reads"), "loaded");
    assert_eq!(y.expect("b reads"), "loaded");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one load across instances");
    assert_eq!(
        a.stats().waiters + b.stats().waiters,
        1,
        "the other one waited"
    );
}

/// Past its freshness, a value within its stale window is served at once and refreshed
/// once in the background.
pub async fn cache_serves_stale_while_revalidating<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let c = products(&backend, "swr", &clock, |b| {
        b.stale_for(Duration::from_secs(60))
    })
    .await;
    let calls = Arc::new(AtomicU64::new(0));
    assert_eq!(
        c.get_with("k", counting(&calls, "v1")).await.expect("load"),
        "v1"
    );
    clock.advance(Duration::from_secs(15));
    assert_eq!(
        c.get_with("k", counting(&calls, "v2"))
            .await
            .expect("stale"),
        "v1",
        "the stale value comes back at once"
    );
    // Until the refresh has landed: a load that begins while it writes would join it.
    wait_for("the background refresh", || {
        let c = c.clone();
        async move {
            c.get("k").await.ok().flatten().as_deref() == Some("v2") && c.stats().loading == 0
        }
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one refresh");
    assert!(c.stats().stale_served >= 1);
    // Past the stale window, nothing stale is served: the loader runs in line.
    clock.advance(Duration::from_secs(100));
    assert_eq!(
        c.get_with("k", counting(&calls, "v3")).await.expect("load"),
        "v3"
    );
}

/// A loader that fails is covered by the stale value (fail-safe), and is not called again
/// for that key until the throttle ends; without a stale value, the error reaches the caller.
pub async fn cache_fail_safe_serves_stale_on_loader_errors<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let c = products(&backend, "failsafe", &clock, |b| {
        b.stale_for(Duration::from_secs(300))
            .stale_while_revalidate(false)
            .fail_safe(true, Duration::from_secs(30))
    })
    .await;
    let calls = Arc::new(AtomicU64::new(0));
    assert_eq!(
        c.get_with("k", counting(&calls, "good"))
            .await
            .expect("load"),
        "good"
    );
    clock.advance(Duration::from_secs(20));
    let failing = |calls: &Arc<AtomicU64>| {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<String, _>("database is down")
        }
    };
    assert_eq!(
        c.try_get_with("k", failing(&calls))
            .await
            .expect("fail-safe"),
        "good"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        c.try_get_with("k", failing(&calls))
            .await
            .expect("throttled"),
        "good"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "throttled: no call");
    let err = c
        .try_get_with("never-loaded", failing(&calls))
        .await
        .expect_err("nothing stale to serve")
        .to_string();
    assert!(
        err.contains("database is down") && err.contains("never-loaded"),
        "{err}"
    );
    let s: CacheStats = c.stats();
    assert!(s.load_errors >= 2 && s.stale_served >= 1, "{s:?}");
}

/// Hot keys are refreshed before they expire (XFetch).
pub async fn cache_refreshes_hot_keys_early<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let c = products(&backend, "early", &clock, |b| b.early_refresh(1_000_000.0)).await;
    let calls = Arc::new(AtomicU64::new(0));
    assert_eq!(
        c.get_with("k", counting(&calls, "v1")).await.expect("load"),
        "v1"
    );
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        c.get_with("k", counting(&calls, "v2"))
            .await
            .expect("fresh"),
        "v1",
        "still fresh: served at once"
    );
    wait_for("the early refresh", || {
        let c = c.clone();
        async move { c.get("k").await.ok().flatten().as_deref() == Some("v2") }
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A loader's "not found" is cached for the negative ttl only when one is set.
pub async fn cache_caches_not_found_when_asked<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let calls = Arc::new(AtomicU64::new(0));
    let none = |calls: &Arc<AtomicU64>| {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<Option<String>, String>(None)
        }
    };
    let plain = products(&backend, "neg-off", &clock, |b| b).await;
    for _ in 0..2 {
        assert_eq!(
            plain
                .entry("gone")
                .try_get_opt_with(none(&calls))
                .await
                .expect("read"),
            None
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "not cached without a negative ttl"
    );
    let neg = products(&backend, "neg-on", &clock, |b| {
        b.negative_ttl(Duration::from_secs(5))
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            neg.entry("gone")
                .try_get_opt_with(none(&calls))
                .await
                .expect("read"),
            None
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "cached after one load");
    clock.advance(Duration::from_secs(6));
    neg.entry("gone")
        .try_get_opt_with(none(&calls))
        .await
        .expect("read");
    assert_eq!(calls.load(Ordering::SeqCst), 4, "the negative ttl ran out");
}

/// Removing a key, invalidating a tag and bumping the version reach other instances: their
/// L1 copies go, and the next read loads again.
pub async fn cache_invalidation_reaches_other_instances<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let a = products(&backend, "inval", &clock, |b| b).await;
    let b = products(&backend, "inval", &clock, |b| b).await;
    // Subscribed once built: nothing published from here on can pass it by.
    assert!(a.listening() && b.listening(), "subscribed by `build`");
    let calls = Arc::new(AtomicU64::new(0));
    for key in ["p1", "p2", "p3"] {
        a.entry(key)
            .tags(["catalog"])
            .get_with(counting(&calls, "v1"))
            .await
            .expect("load");
        assert_eq!(b.get(key).await.expect("read"), Some("v1".into()));
    }
    let cached_in_b = |key: &'static str| {
        let b = b.clone();
        async move { b.get(key).await.ok().flatten().is_some() }
    };
    a.remove("p1").await.expect("remove");
    wait_for("b dropping p1", || async { !cached_in_b("p1").await }).await;
    assert!(cached_in_b("p2").await, "other keys stay");

    a.invalidate_tag("catalog").await.expect("invalidate");
    wait_for("b dropping the tagged keys", || async {
        !cached_in_b("p2").await && !cached_in_b("p3").await
    })
    .await;
    // Loaded after the barrier: visible again.
    clock.advance(Duration::from_millis(1));
    a.entry("p2")
        .tags(["catalog"])
        .get_with(counting(&calls, "v2"))
        .await
        .expect("load");
    assert_eq!(b.get("p2").await.expect("read"), Some("v2".into()));

    let before = a.storage_key("p2");
    let v = a.bump_version().await.expect("bump");
    assert!(a.storage_key("p2") != before && a.storage_key("p2").contains(&format!(":v{v}:")));
    wait_for("b moving to the new version", || async {
        !cached_in_b("p2").await
    })
    .await;
    assert_eq!(b.storage_key("p2"), a.storage_key("p2"));
    // A new instance starts at the bumped version.
    let c = products(&backend, "inval", &clock, |b| b).await;
    assert_eq!(c.storage_key("p2"), a.storage_key("p2"));
}

/// A tag invalidated while a load of a tagged key runs bars what that load stores, in the
/// loading instance and in another one: the loader may have read the data before the change
/// that caused the invalidation (a value stamped when it was stored, not when its loader
/// began, would be served until its ttl).
pub async fn cache_a_tag_invalidated_during_a_load_bars_its_value<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let a = products(&backend, "inflight", &clock, |b| b).await;
    let b = products(&backend, "inflight", &clock, |b| b).await;
    assert!(a.listening() && b.listening(), "subscribed by `build`");
    let calls = Arc::new(AtomicU64::new(0));
    let slow = held_load(&a, &calls, &["catalog"]).await;
    // The change and its invalidation happen while the loader runs.
    clock.advance(Duration::from_millis(5));
    a.invalidate_tag("catalog").await.expect("invalidate");
    clock.advance(Duration::from_millis(5));
    let first = slow.finish().await;
    assert_eq!(
        first, "read before the change",
        "the waiting read gets what was loaded"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The next read anywhere loads again rather than serving it.
    loads_again_after_the_change(&a, &b, &calls, &["catalog"], "the barred value").await;
}

/// A key removed (by another instance) while a load of it runs does not get that load's value
/// back, in L2 or in the loading instance's L1: the loader may have read the data before the
/// change the removal was for. The load's own callers get what it loaded; the next read
/// anywhere loads again.
pub async fn cache_a_key_removed_during_a_load_does_not_keep_its_value<B: KvStore>(
    backend: Arc<B>,
) {
    let clock = ManualClock::new(T0);
    let a = products(&backend, "removed", &clock, |b| b).await;
    let b = products(&backend, "removed", &clock, |b| b).await;
    assert!(a.listening() && b.listening(), "subscribed by `build`");
    let calls = Arc::new(AtomicU64::new(0));
    let slow = held_load(&a, &calls, &[]).await;
    assert_eq!(a.stats().loading, 1, "the load is counted while it runs");
    // The change and the removal happen while the loader runs.
    clock.advance(Duration::from_millis(5));
    b.remove("p1").await.expect("remove");
    clock.advance(Duration::from_millis(5));
    let first = slow.finish().await;
    assert_eq!(
        first, "read before the change",
        "the waiting read gets what was loaded"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(a.stats().loading, 0, "and no longer once it landed");

    // Neither the loading instance's L1 nor L2 serves it: the next reads load again.
    loads_again_after_the_change(&a, &b, &calls, &[], "the value loaded across the removal").await;
}

/// A stored value that no longer decodes is a miss that gets reloaded and counted, not an
/// error; a very long key is hashed; bad settings are refused when the cache is built.
pub async fn cache_bad_data_and_bad_settings<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let c = products(&backend, "bad", &clock, |b| b).await;
    let key = c.storage_key("k");
    backend
        .kv_set(
            vec![KvEntry {
                key,
                value: b"{\"an old\": \"shape\"}".to_vec(),
                ttl: Duration::from_secs(60),
            }],
            clock.now_ms(),
        )
        .await
        .expect("kv_set");
    let calls = Arc::new(AtomicU64::new(0));
    assert_eq!(
        c.get_with("k", counting(&calls, "new"))
            .await
            .expect("read"),
        "new"
    );
    assert_eq!(c.stats().decode_errors, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let long = "k".repeat(5_000);
    assert_eq!(
        c.get_with(long.as_str(), counting(&calls, "long"))
            .await
            .expect("read"),
        "long"
    );
    assert!(c.storage_key(long.as_str()).len() < 200);

    let zero = Cache::<str, String, ()>::builder("bad-ttl")
        .ttl(Duration::ZERO)
        .build(backend.clone())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(zero.contains("bad-ttl") && zero.contains("ttl"), "{zero}");
    let empty = Cache::<str, String, ()>::builder("")
        .build(backend.clone())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(empty.contains("namespace"), "{empty}");
}

/// Warming loads the keys ahead of use with bounded concurrency, reports progress, and
/// does not load keys that are already fresh.
pub async fn cache_warms_keys_ahead_of_use<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let c = products(&backend, "warm", &clock, |b| b).await;
    let keys: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
    let running = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let mut seen = Vec::new();
    let report = c
        .warm(
            keys.clone(),
            8,
            |k: &String| {
                let (running, peak, k) = (running.clone(), peak.clone(), k.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    if k == "p13" {
                        Err("no such product".to_string())
                    } else {
                        Ok(format!("value of {k}"))
                    }
                }
            },
            |done, total| seen.push((done, total)),
        )
        .await;
    assert_eq!(
        (report.ok, report.failed, report.loaded),
        (49, 1, 50),
        "{report:?}"
    );
    assert!(report
        .first_error
        .unwrap_or_default()
        .contains("no such product"));
    assert!(peak.load(Ordering::SeqCst) <= 8, "at most 8 loads at once");
    assert_eq!(seen.last(), Some(&(50, 50)));
    assert_eq!(c.get("p7").await.expect("read"), Some("value of p7".into()));
    let again = c
        .warm(
            keys,
            8,
            |_: &String| async { Ok::<_, String>("x".to_string()) },
            |_, _| {},
        )
        .await;
    assert_eq!(
        (again.ok, again.loaded),
        (50, 1),
        "only the failed key loads again"
    );
}

/// Each instance publishes its counters to the L2; reading them sums the live instances,
/// lists the namespace in the application's index, and drops an instance whose snapshot
/// expired.
pub async fn cache_stats_are_published_and_summed<B: KvStore>(backend: Arc<B>) {
    use celeriac_cache::stats;
    let clock = ManualClock::new(T0);
    let quiet = |b: celeriac_cache::CacheBuilder<str, String>| b.stats_interval(None);
    let a = products(&backend, "counted", &clock, quiet).await;
    let b = products(&backend, "counted", &clock, quiet).await;
    let calls = Arc::new(AtomicU64::new(0));
    for key in ["k1", "k2", "k3"] {
        a.get_with(key, counting(&calls, "v"))
            .await
            .expect("a loads");
    }
    a.get_with("k1", counting(&calls, "v"))
        .await
        .expect("a hits L1");
    b.get_with("k1", counting(&calls, "v"))
        .await
        .expect("b hits L2");
    assert_eq!(b.get("nothing").await.expect("b misses"), None);
    let now = clock.now_ms();
    let empty = stats::read_stats(&*backend, "celeriac", "counted", now)
        .await
        .expect("read");
    assert_eq!(empty.instances, 0, "nothing published yet: {empty:?}");

    a.publish_stats().await.expect("a publishes");
    b.publish_stats().await.expect("b publishes");
    assert_ne!(a.instance(), b.instance());
    let sum = stats::read_stats(&*backend, "celeriac", "counted", now)
        .await
        .expect("read");
    assert_eq!(sum.namespace, "counted");
    assert_eq!(sum.instances, 2, "{sum:?}");
    let s = sum.stats;
    assert_eq!(
        (s.loads, s.l1_hits, s.l2_hits, s.misses),
        (3, 1, 1, 4),
        "three loads and one L1 hit in a, one L2 hit and a miss in b: {s:?}"
    );
    assert_eq!(s.l1_entries, 4, "three in a, one in b: {s:?}");
    assert_eq!(sum.hit_ratio(), Some(2.0 / 6.0));
    let names = stats::namespaces(&*backend, "celeriac", now)
        .await
        .expect("index");
    assert!(names.contains(&"counted".to_string()), "{names:?}");
    assert!(stats::namespaces(&*backend, "another-app", now)
        .await
        .expect("index")
        .is_empty());

    // Publishing again replaces the snapshot rather than adding to it.
    a.get_with("k2", counting(&calls, "v"))
        .await
        .expect("a hits");
    a.publish_stats().await.expect("a publishes again");
    let again = stats::read_stats(&*backend, "celeriac", "counted", now)
        .await
        .expect("read");
    assert_eq!((again.instances, again.stats.l1_hits), (2, 2), "{again:?}");

    // An instance that stops publishing drops out after its snapshot's lifetime.
    clock.advance(
        celeriac_cache::DEFAULT_STATS_INTERVAL * stats::SNAPSHOT_LIFETIMES - Duration::from_secs(1),
    );
    b.publish_stats().await.expect("b publishes later");
    clock.advance(Duration::from_secs(2));
    let later = stats::read_stats(&*backend, "celeriac", "counted", clock.now_ms())
        .await
        .expect("read");
    assert_eq!(later.instances, 1, "only b is live: {later:?}");
    assert_eq!(later.stats.l2_hits, 1, "{later:?}");
}

/// Write-behind: each write is acknowledged once its flush job is stored, and updates the
/// cache at once. The writing instance then goes away without flushing; a worker elsewhere
/// runs the flush task, whose store writer fails once (the batch is retried with backoff)
/// and then receives every acknowledged write with increasing versions per key, a
/// `write_many` as one batch.
pub async fn cache_write_behind_flushes_every_acknowledged_write<B>(backend: Arc<B>)
where
    B: KvStore
        + celeriac_core::Broker
        + QueueAdmin
        + celeriac_core::ResultStore
        + celeriac_core::WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
{
    use crate::support::RunningWorker;
    use celeriac_cache::{write, PendingWrite, WriteBehind};
    use celeriac_core::{JobState, Registry};
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    const QUEUE: &str = "write-behind";
    let clock = ManualClock::new(T0);
    {
        let cache = products(&backend, "stock", &clock, |b| b).await;
        let wb = WriteBehind::new(cache.clone()).queue(QUEUE);
        assert_eq!(wb.write("sku-1", "10".into()).await.expect("ack"), 1);
        assert_eq!(wb.write("sku-1", "9".into()).await.expect("ack"), 2);
        let many = wb
            .write_many([("sku-2", "5".to_string()), ("sku-3", "7".to_string())])
            .await
            .expect("ack");
        assert_eq!(many, vec![1, 1], "versions count per key");
        assert_eq!(cache.get("sku-1").await.expect("read"), Some("9".into()));
        let other = products(&backend, "stock", &clock, |b| b).await;
        assert_eq!(
            other.get("sku-3").await.expect("read"),
            Some("7".into()),
            "the L2 has the written value"
        );
        assert_eq!(
            in_queue(&*backend, QUEUE, JobState::Pending).await,
            3,
            "one stored flush job per write call"
        );
    }

    let db: Arc<Mutex<BTreeMap<String, (u64, String)>>> = Arc::default();
    let batches: Arc<Mutex<Vec<usize>>> = Arc::default();
    let fail_first = Arc::new(AtomicU64::new(1));
    let task = {
        let (db, batches, fail_first) = (db.clone(), batches.clone(), fail_first.clone());
        celeriac_cache::write_behind_task(
            "stock",
            celeriac_core::TaskOptions {
                queue: QUEUE.into(),
                ..write::write_behind_options()
            },
            move |writes: Vec<PendingWrite<String>>| {
                let (db, batches, fail_first) = (db.clone(), batches.clone(), fail_first.clone());
                async move {
                    if fail_first
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        return Err("the database is down".to_string());
                    }
                    batches.lock().expect("lock").push(writes.len());
                    let mut db = db.lock().expect("lock");
                    for w in writes {
                        // Only a newer version replaces a stored value.
                        let row = db.entry(w.key).or_insert((0, String::new()));
                        if w.version > row.0 {
                            *row = (w.version, w.value);
                        }
                    }
                    Ok(())
                }
            },
        )
    };
    let mut registry = Registry::new();
    registry.insert(task);
    let worker = RunningWorker::start(backend.clone(), registry, QUEUE, &clock);
    wait_for("the failed batch to be scheduled for a retry", || {
        let (backend, fail_first) = (backend.clone(), fail_first.clone());
        async move {
            in_queue(&*backend, QUEUE, JobState::Succeeded).await == 2
                && fail_first.load(Ordering::SeqCst) == 0
        }
    })
    .await;
    clock.advance(Duration::from_secs(61));
    wait_for("every flush job to succeed", || {
        let backend = backend.clone();
        async move { in_queue(&*backend, QUEUE, JobState::Succeeded).await == 3 }
    })
    .await;
    worker.stop().await;
    let db = db.lock().expect("lock").clone();
    let want: BTreeMap<String, (u64, String)> = [
        ("sku-1", (2, "9")),
        ("sku-2", (1, "5")),
        ("sku-3", (1, "7")),
    ]
    .into_iter()
    .map(|(k, (v, s))| (k.to_string(), (v, s.to_string())))
    .collect();
    assert_eq!(db, want, "every acknowledged write reached the store");
    let mut sizes = batches.lock().expect("lock").clone();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![1, 1, 2], "write_many is one batch");
}

/// Write-behind buffers by group commit: writes that arrive while a flush job is being stored
/// go into the next job together (at most `max_batch` writes a job), and every one reaches
/// the store's writer.
pub async fn cache_write_behind_gathers_concurrent_writes<B>(backend: Arc<B>)
where
    B: KvStore
        + celeriac_core::Broker
        + QueueAdmin
        + celeriac_core::ResultStore
        + celeriac_core::WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
{
    use crate::support::RunningWorker;
    use celeriac_cache::{write, PendingWrite, WriteBehind};
    use celeriac_core::{JobState, Registry};
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    const QUEUE: &str = "write-behind-group";
    const WRITES: usize = 100;
    const MAX_BATCH: usize = 16;
    let clock = ManualClock::new(T0);
    let cache = products(&backend, "stock-group", &clock, |b| b).await;
    let wb = WriteBehind::new(cache).queue(QUEUE).max_batch(MAX_BATCH);
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..WRITES {
        let wb = wb.clone();
        writes.spawn(async move { wb.write(&format!("sku-{i}"), i.to_string()).await });
    }
    while let Some(r) = writes.join_next().await {
        assert_eq!(r.expect("the write task ran").expect("ack"), 1);
    }
    let jobs = in_queue(&*backend, QUEUE, JobState::Pending).await;
    assert!(
        jobs < WRITES as u64,
        "concurrent writes share flush jobs: {jobs} jobs for {WRITES} writes"
    );
    assert!(
        jobs >= WRITES.div_ceil(MAX_BATCH) as u64,
        "no job holds more than {MAX_BATCH} writes: {jobs} jobs for {WRITES} writes"
    );

    let db: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let batches: Arc<Mutex<Vec<usize>>> = Arc::default();
    let task = {
        let (db, batches) = (db.clone(), batches.clone());
        celeriac_cache::write_behind_task(
            "stock-group",
            celeriac_core::TaskOptions {
                queue: QUEUE.into(),
                ..write::write_behind_options()
            },
            move |writes: Vec<PendingWrite<String>>| {
                let (db, batches) = (db.clone(), batches.clone());
                async move {
                    batches.lock().expect("lock").push(writes.len());
                    let mut db = db.lock().expect("lock");
                    for w in writes {
                        db.insert(w.key, w.value);
                    }
                    Ok::<_, String>(())
                }
            },
        )
    };
    let mut registry = Registry::new();
    registry.insert(task);
    let worker = RunningWorker::start(backend.clone(), registry, QUEUE, &clock);
    wait_for("every flush job to succeed", || {
        let backend = backend.clone();
        async move { in_queue(&*backend, QUEUE, JobState::Succeeded).await == jobs }
    })
    .await;
    worker.stop().await;
    let db = db.lock().expect("lock").clone();
    assert_eq!(
        db.len(),
        WRITES,
        "every acknowledged write reached the store"
    );
    for i in 0..WRITES {
        assert_eq!(db.get(&format!("sku-{i}")), Some(&i.to_string()));
    }
    let batches = batches.lock().expect("lock").clone();
    assert_eq!(batches.len() as u64, jobs, "one writer call per flush job");
    assert!(
        batches.iter().all(|n| *n <= MAX_BATCH),
        "batches within max_batch: {batches:?}"
    );
}

/// L1 evictions are counted: what entered the L1 and left it without the cache taking it out
/// (capacity here); emptying the L1 on purpose is not an eviction.
pub async fn cache_counts_l1_evictions<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let cache = products(&backend, "evictions", &clock, |b| {
        b.l1(10, Duration::from_secs(3600))
    })
    .await;
    for i in 0..100 {
        cache
            .set(&format!("p{i}"), format!("v{i}"))
            .await
            .expect("set");
    }
    let s = cache.stats();
    assert!(
        s.l1_entries <= 10,
        "the L1 holds at most its capacity: {s:?}"
    );
    assert_eq!(
        s.evictions + s.l1_entries,
        100,
        "every key entered once: {s:?}"
    );
    cache.clear_local();
    let after = cache.stats();
    assert_eq!(after.l1_entries, 0, "{after:?}");
    assert_eq!(
        after.evictions, s.evictions,
        "clearing is not evicting: {after:?}"
    );
}

/// How many jobs of `queue` are in `state`.
async fn in_queue<B: celeriac_core::Broker + QueueAdmin>(
    backend: &B,
    queue: &str,
    state: celeriac_core::JobState,
) -> u64 {
    let stats = backend.stats().await.expect("stats");
    stats
        .iter()
        .filter(|q| q.queue == queue)
        .map(|q| q.count(state))
        .sum()
}

/// Write-through: the store's writer runs first; when it fails the cache is untouched and
/// the error names the key; when it succeeds every instance reads the new value.
pub async fn cache_write_through_writes_the_store_first<B: KvStore>(backend: Arc<B>) {
    use std::sync::Mutex;
    let clock = ManualClock::new(T0);
    let a = products(&backend, "through", &clock, |b| b).await;
    let b = products(&backend, "through", &clock, |b| b).await;
    a.set("k", "old".into()).await.expect("set");
    assert_eq!(
        b.get("k").await.expect("read"),
        Some("old".into()),
        "b holds a copy"
    );
    let store: Arc<Mutex<Vec<String>>> = Arc::default();
    let err = a
        .write_through("k", "new".into(), |_v: String| async {
            Err::<(), _>("constraint violated")
        })
        .await
        .expect_err("the writer failed");
    assert!(
        err.to_string().contains("celeriac:through:k") && err.to_string().contains("constraint"),
        "{err}"
    );
    assert_eq!(a.get("k").await.expect("read"), Some("old".into()));
    let s = store.clone();
    a.write_through("k", "new".into(), move |v: String| async move {
        s.lock().expect("lock").push(v);
        Ok::<(), String>(())
    })
    .await
    .expect("written");
    assert_eq!(*store.lock().expect("lock"), vec!["new".to_string()]);
    assert_eq!(a.get("k").await.expect("read"), Some("new".into()));
    wait_for("the other instance to drop its copy", || {
        let b = b.clone();
        async move { b.get("k").await.ok().flatten().as_deref() == Some("new") }
    })
    .await;
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_kv_cache {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            cache_loads_a_cold_key_once,
            cache_instances_share_one_load,
            cache_serves_stale_while_revalidating,
            cache_fail_safe_serves_stale_on_loader_errors,
            cache_refreshes_hot_keys_early,
            cache_caches_not_found_when_asked,
            cache_invalidation_reaches_other_instances,
            cache_a_tag_invalidated_during_a_load_bars_its_value,
            cache_a_key_removed_during_a_load_does_not_keep_its_value,
            cache_bad_data_and_bad_settings,
            cache_warms_keys_ahead_of_use,
            cache_stats_are_published_and_summed,
            cache_write_behind_flushes_every_acknowledged_write,
            cache_write_behind_gathers_concurrent_writes,
            cache_counts_l1_evictions,
            cache_write_through_writes_the_store_first,
        }
    };
}
