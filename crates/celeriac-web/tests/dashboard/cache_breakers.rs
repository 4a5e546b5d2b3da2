//! The cache and breakers pages: real caches over the SQLite file publishing their figures,
//! invalidations reaching a second instance over its own connection, warming through a
//! worker, shared breakers forced and reset in the store, the audit trail of each, and the
//! task limits (on the rate limits page).

use crate::common::{self, serve, serve_app, Served, VIEWER};
use celeriac::backend::{BreakerStore, EventLog};
use celeriac::breaker::{BreakerState, CircuitBreaker, SharedOptions};
use celeriac::cache::{Cache, CacheWarmer};
use celeriac::{AnyBackend, App};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Strings = Cache<str, String, AnyBackend>;

/// A cache of `namespace` (of application `app`) over `backend` that publishes only when told.
async fn cache(backend: &App, app: &str, namespace: &str) -> Strings {
    Cache::<str, String, ()>::builder(namespace)
        .app(app)
        .early_refresh(0.0)
        .ttl(Duration::from_secs(3600))
        .stats_interval(None)
        .build(backend.backend().clone())
        .await
        .expect("a cache")
}

/// The row of `namespace` in the cache twin.
fn namespace_row<'a>(v: &'a Value, namespace: &str) -> Option<&'a Value> {
    v["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .find(|n| n["namespace"] == namespace)
}

/// The kinds of the newest events.
async fn event_kinds(d: &Served) -> Vec<(String, String)> {
    d.app
        .backend()
        .events(None, 200)
        .await
        .expect("events")
        .into_iter()
        .map(|e| (e.kind, e.message))
        .collect()
}

/// Polls `check` until it holds, for at most 15 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn published_cache_figures_show_on_the_page_the_twin_and_the_overview() {
    let d = serve().await;
    let products = cache(&d.app, "celeriac", "products").await;
    for _ in 0..4 {
        let v = products
            .get_with("1", || async { "one".to_string() })
            .await
            .expect("a read");
        assert_eq!(v, "one");
    }
    let s = products.stats();
    assert_eq!(
        (s.l1_hits + s.l2_hits, s.misses, s.loads),
        (3, 1, 1),
        "{s:?}"
    );

    let before = d.json("/api/v1/cache").await;
    assert!(
        namespace_row(&before, "products").is_none(),
        "nothing published yet: {before}"
    );
    assert!(before["hit_ratio"].is_null());
    assert_eq!(before["app"], "celeriac", "the default application name");

    products.publish_stats().await.expect("published");
    let v = d.json("/api/v1/cache").await;
    let row = namespace_row(&v, "products").expect("products published");
    assert_eq!(row["instances"], 1);
    assert_eq!(row["l1_hits"], 3);
    assert_eq!(row["misses"], 1);
    assert_eq!(row["loads"], 1);
    assert_eq!(row["hit_ratio"], 0.75);
    assert_eq!(row["l1_entries"], 1, "the L1 size is published");
    assert_eq!(row["l1_added"], 1, "{row}");
    for unbounded in [
        "l1_evicted_size",
        "l1_expired",
        "l1_removed",
        "l1_weighted_bytes",
    ] {
        assert_eq!(row[unbounded], 0, "{unbounded}: {row}");
    }
    assert_eq!(row["l1_max_bytes"], 0, "bounded in entries only: {row}");
    assert!(row["l1_bytes_ratio"].is_null(), "{row}");
    assert!(row["mean_load_ms"].is_number());
    assert_eq!(v["hit_ratio"], 0.75);
    assert_eq!(v["hit_ratio_history"]["available"], false);
    assert!(v["store"].is_object(), "{v}");
    assert!(
        v["store"]["file_bytes"].as_u64().is_some_and(|b| b > 0),
        "SQLite tells its file size: {v}"
    );
    let l2 = &v["l2"];
    assert_eq!(l2["reported"], true, "SQLite tells its L2's memory: {v}");
    assert!(
        l2["used_bytes"].as_u64().is_some_and(|b| b > 0),
        "the cached value and the snapshot take room: {v}"
    );
    assert!(l2["policy"].is_string(), "{v}");

    let (status, html) = d.get("/cache").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"data-namespace="products""#), "{html}");
    assert!(html.contains("75.0 %"), "{html}");
    for column in [
        "L1 added",
        "Evicted (size)",
        "Expired",
        "Removed",
        "L1 bytes",
    ] {
        assert!(html.contains(column), "no {column} column: {html}");
    }
    assert!(
        html.contains(r#"<td class="num l1-added">1</td>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"id="cache-l2""#) && html.contains(r#"id="cache-l2-policy""#),
        "the L2 panel: {html}"
    );
    assert!(
        html.contains("No series"),
        "says plainly there is no history: {html}"
    );

    let overview = d.json("/api/v1/overview").await;
    assert_eq!(
        overview["cache_hit_ratio"], 0.75,
        "overall_hit_ratio agrees"
    );

    // Another application name: its caches show under ?name=, not under the default.
    let orders = cache(&d.app, "shop", "orders").await;
    assert_eq!(orders.get("absent").await.expect("a read"), None, "a miss");
    orders.publish_stats().await.expect("published");
    let shop = d.json("/api/v1/cache?name=shop").await;
    let row = namespace_row(&shop, "orders").expect("orders under shop");
    assert_eq!(row["misses"], 1);
    assert_eq!(row["hit_ratio"], 0.0);
    assert!(namespace_row(&shop, "products").is_none());
    let default = d.json("/api/v1/cache").await;
    assert!(namespace_row(&default, "orders").is_none(), "{default}");
    let overview = d.json("/api/v1/overview?name=shop").await;
    assert_eq!(overview["cache_hit_ratio"], 0.0);
    let (status, _) = d.get("/api/v1/cache?name=a:b").await;
    assert_eq!(status, 400, "a name with `:` is refused");

    // A load under way when the figures are published shows as loading.
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let load = {
        let products = products.clone();
        tokio::spawn(async move {
            products
                .get_with("2", || async move {
                    let _ = held.await;
                    "two".to_string()
                })
                .await
        })
    };
    eventually("the load to be under way", || async {
        products.stats().loading == 1
    })
    .await;
    products.publish_stats().await.expect("published");
    let v = d.json("/api/v1/cache").await;
    let row = namespace_row(&v, "products").expect("products published");
    assert_eq!(row["loading"], 1, "{row}");
    let (_, html) = d.get("/cache").await;
    assert!(html.contains(r#"<td class="num loading">1</td>"#), "{html}");
    release.send(()).expect("the loader waits");
    assert_eq!(load.await.expect("load task").expect("loads"), "two");
    products.publish_stats().await.expect("published");
    let v = d.json("/api/v1/cache").await;
    let row = namespace_row(&v, "products").expect("products published");
    assert_eq!(row["loading"], 0, "landed: {row}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalidating_through_the_api_reaches_another_instance() {
    let d = serve().await;
    // A second instance in its own application, over its own connection to the same file.
    let other = App::builder()
        .url(d.app.url())
        .build()
        .await
        .expect("a second app");
    let remote = cache(&other, "celeriac", "products").await;
    eventually("the second instance listens", || async {
        remote.listening()
    })
    .await;
    let loaded = remote
        .entry("7")
        .get_with(|| async { "seven".to_string() })
        .await
        .expect("loads");
    assert_eq!(loaded, "seven");
    remote
        .entry("8")
        .tags(["catalog"])
        .get_with(|| async { "eight".to_string() })
        .await
        .expect("loads");
    // Preconditions: both in the second instance's L1 and in the store.
    assert_eq!(remote.get("7").await.expect("read"), Some("seven".into()));
    let fresh = cache(&d.app, "celeriac", "products").await;
    assert_eq!(fresh.get("7").await.expect("read"), Some("seven".into()));
    assert_eq!(fresh.get("8").await.expect("read"), Some("eight".into()));
    drop(fresh);

    let done = d
        .post(
            "/api/v1/cache/invalidate-key",
            json!({"namespace": "products", "key": "7"}),
        )
        .await;
    assert!(
        done["message"].as_str().is_some_and(|m| m.contains("`7`")),
        "{done}"
    );
    let misses = remote.stats().misses;
    eventually("the second instance misses key 7", || async {
        remote.get("7").await.expect("read").is_none()
    })
    .await;
    assert!(remote.stats().misses > misses, "counted as a miss");
    let fresh = cache(&d.app, "celeriac", "products").await;
    assert_eq!(
        fresh.get("7").await.expect("read"),
        None,
        "gone from the store"
    );
    assert_eq!(
        remote.get("8").await.expect("read"),
        Some("eight".into()),
        "other keys stay"
    );

    // A tag: refused without confirmation, then dropped everywhere.
    let (status, v) = d
        .post_as(
            common::OPERATOR,
            "/api/v1/cache/invalidate-tag",
            json!({"namespace": "products", "tag": "catalog"}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("confirm")));
    assert_eq!(remote.get("8").await.expect("read"), Some("eight".into()));
    d.post(
        "/api/v1/cache/invalidate-tag",
        json!({"namespace": "products", "tag": "catalog", "confirm": "yes"}),
    )
    .await;
    eventually("the second instance misses the tagged key", || async {
        remote.get("8").await.expect("read").is_none()
    })
    .await;
    assert_eq!(fresh.get("8").await.expect("read"), None);

    let kinds = event_kinds(&d).await;
    for kind in ["admin.cache_invalidate_key", "admin.cache_invalidate_tag"] {
        assert!(kinds.iter().any(|(k, _)| k == kind), "{kind} in {kinds:?}");
    }
    let (status, v) = d
        .post_as(
            VIEWER,
            "/api/v1/cache/invalidate-key",
            json!({"namespace": "products", "key": "8"}),
        )
        .await;
    assert_eq!(status, 403, "a viewer may not invalidate: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_is_a_job_that_a_worker_with_the_warmer_runs() {
    let (app, dir) = common::app().await;
    let url = app.url().to_string();
    drop(app);
    let warmer = CacheWarmer::new(
        Cache::<str, String, ()>::builder("warmed"),
        || async { Ok::<_, std::io::Error>(vec!["a".to_string(), "b".to_string()]) },
        |key: String| async move { Ok::<_, std::io::Error>(format!("value {key}")) },
    );
    let app = App::builder()
        .url(url.as_str())
        .cache_warmer(warmer)
        .build()
        .await
        .expect("app");
    let d = serve_app(app, dir, |d| d).await;

    let (status, html) = d.get("/cache").await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"data-namespace="warmed""#), "{html}");
    let (status, v) = d
        .post_as(
            common::OPERATOR,
            "/api/v1/cache/warm",
            json!({"namespace": "nowarmer"}),
        )
        .await;
    assert_eq!(status, 400, "no warmer, no warm: {v}");

    let done = d
        .post("/api/v1/cache/warm", json!({"namespace": "warmed"}))
        .await;
    let message = done["message"].as_str().expect("a message");
    let id: celeriac::JobId = message
        .split("job ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("a job id in {message}"));
    let handle = d.app.client().handle(id);
    assert_eq!(
        handle.state().await.expect("state"),
        celeriac::JobState::Pending,
        "waits for a worker"
    );

    let worker = d.app.worker();
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    let info = handle.wait(Duration::from_secs(20)).await.expect("warmed");
    assert_eq!(info.state, celeriac::JobState::Succeeded, "{info:?}");
    stop.graceful();
    running.await.expect("joins").expect("the worker stops");

    let reader = cache(&d.app, "celeriac", "warmed").await;
    assert_eq!(
        reader.get("b").await.expect("read"),
        Some("value b".to_string()),
        "the warm loaded the keys into the store"
    );
    let v = d.json("/api/v1/cache").await;
    let row = namespace_row(&v, "warmed").expect("the warm published its figures");
    assert_eq!(row["loads"], 2, "{row}");
    assert_eq!(row["warmer"], true);
    let kinds = event_kinds(&d).await;
    assert!(
        kinds.iter().any(|(k, _)| k == "admin.cache_warm"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_breaker_forced_open_through_the_api_shows_open_and_reset_closes_it() {
    let (app, dir) = common::app().await;
    let url = app.url().to_string();
    drop(app);
    let app = App::builder()
        .url(url.as_str())
        .shared_breaker(
            CircuitBreaker::builder("partner")
                .build()
                .expect("a breaker"),
            SharedOptions {
                sync_interval: Duration::from_millis(100),
                ..SharedOptions::default()
            },
        )
        .breaker(
            CircuitBreaker::builder("local-dep")
                .build()
                .expect("a breaker"),
        )
        .build()
        .await
        .expect("app");
    let d = serve_app(app, dir, |d| d).await;
    let store = d.app.backend().clone();
    let now = || d.app.client().now();
    let state = |v: &Value, name: &str| {
        v["breakers"]
            .as_array()
            .expect("breakers")
            .iter()
            .find(|b| b["name"] == name)
            .map(|b| b["state"].clone())
    };

    let v = d.json("/api/v1/breakers").await;
    assert_eq!(state(&v, "partner"), Some(json!("closed")), "{v}");
    assert_eq!(state(&v, "local-dep"), Some(json!("closed")));
    assert_eq!(v["transitions_recorded"], false);
    assert!(store
        .breaker_status("partner", now())
        .await
        .expect("status")
        .is_none_or(|s| s.state == BreakerState::Closed));
    assert_eq!(d.json("/api/v1/overview").await["breakers_open"], json!([]));

    // A viewer is refused and nothing changes.
    let (status, v) = d
        .post_as(VIEWER, "/api/v1/breakers/partner/force-open", json!({}))
        .await;
    assert_eq!(status, 403, "{v}");
    assert!(store
        .breaker_status("partner", now())
        .await
        .expect("status")
        .is_none_or(|s| s.state == BreakerState::Closed));

    let done = d
        .post("/api/v1/breakers/partner/force-open", json!({}))
        .await;
    assert!(done["message"]
        .as_str()
        .is_some_and(|m| m.contains("forced_open")));
    let s = store
        .breaker_status("partner", now())
        .await
        .expect("status")
        .expect("a record");
    assert_eq!(s.state, BreakerState::ForcedOpen);
    let v = d.json("/api/v1/breakers").await;
    assert_eq!(state(&v, "partner"), Some(json!("forced_open")), "{v}");
    let (status, html) = d.get("/breakers").await;
    assert_eq!(status, 200);
    let row = html
        .split(r#"data-breaker="partner""#)
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("partner's row");
    assert!(row.contains("forced_open"), "{row}");
    assert_eq!(
        d.json("/api/v1/overview").await["breakers_open"],
        json!(["partner"])
    );

    d.post("/api/v1/breakers/partner/reset", json!({})).await;
    let s = store
        .breaker_status("partner", now())
        .await
        .expect("status")
        .expect("a record");
    assert_eq!(s.state, BreakerState::Closed);
    let v = d.json("/api/v1/breakers").await;
    assert_eq!(state(&v, "partner"), Some(json!("closed")));
    let log: Vec<&str> = v["log"]
        .as_array()
        .expect("a log")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        log,
        ["admin.breaker_reset", "admin.breaker_force_open"],
        "newest first"
    );
    let kinds = event_kinds(&d).await;
    for kind in ["admin.breaker_force_open", "admin.breaker_reset"] {
        assert!(
            kinds
                .iter()
                .any(|(k, m)| k == kind && m.starts_with("breaker partner:")),
            "{kind} in {kinds:?}"
        );
    }

    // A local breaker cannot be forced through the store; any other name can be looked up.
    let (status, v) = d
        .post_as(
            common::OPERATOR,
            "/api/v1/breakers/local-dep/force-open",
            json!({}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let v = d.json("/api/v1/breakers?name=elsewhere").await;
    let asked = v["breakers"]
        .as_array()
        .expect("breakers")
        .iter()
        .find(|b| b["name"] == "elsewhere")
        .expect("the asked breaker");
    assert_eq!(asked["source"], "asked");
    assert!(asked["store"].is_null(), "no record: {asked}");
    assert_eq!(asked["state"], "closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_task_limits_show_on_the_rate_limits_page_with_running_jobs() {
    let (app, dir) = common::app().await;
    let url = app.url().to_string();
    drop(app);
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let options = celeriac::TaskOptions {
        queue: "payments".to_string(),
        limits: celeriac::TaskLimits {
            concurrency: Some(2),
            rate: Some(celeriac::Rate {
                count: 10,
                per: Duration::from_secs(60),
            }),
        },
        ..celeriac::TaskOptions::default()
    };
    let charge = celeriac::TaskDef::from_fn("charge", options, move |_ctx, _args: Value| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Ok::<_, celeriac::TaskError>(())
        }
    });
    let app = App::builder()
        .url(url.as_str())
        .register(charge)
        .build()
        .await
        .expect("app");
    let d = serve_app(app, dir, |d| d).await;
    let limits = |v: &Value| v["task_limits"].as_array().expect("task limits").clone();

    let v = d.json("/api/v1/breakers").await;
    assert!(
        v.get("limits").is_none(),
        "moved off the breakers page: {v}"
    );
    let v = d.json("/api/v1/limits").await;
    let rows = limits(&v);
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["task"], "charge");
    assert_eq!(rows[0]["queue"], "payments");
    assert_eq!(rows[0]["concurrency"], 2);
    assert_eq!(rows[0]["rate_count"], 10);
    assert_eq!(rows[0]["rate_per_ms"], 60_000);
    assert_eq!(rows[0]["running"], 0, "nothing runs yet");

    let ids = common::enqueue(&d.app, "payments", "charge", json!({}), 1).await;
    let worker = d.app.worker().config(celeriac::WorkerConfig {
        queues: vec!["payments".to_string()],
        ..celeriac::WorkerConfig::default()
    });
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    eventually("the job runs and shows as running", || async {
        limits(&d.json("/api/v1/limits").await)[0]["running"] == 1
    })
    .await;
    let (status, html) = d.get("/limits").await;
    assert_eq!(status, 200);
    let row = html
        .split(r#"data-task="charge""#)
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("charge's row");
    assert!(row.contains("10 per 1m 0s"), "{row}");
    release.notify_one();
    let info = d
        .app
        .client()
        .handle(ids[0])
        .wait(Duration::from_secs(20))
        .await
        .expect("ends");
    assert_eq!(info.state, celeriac::JobState::Succeeded);
    stop.graceful();
    running.await.expect("joins").expect("the worker stops");
}

/// On a Redis bounded to 5 MiB that evicts (`allkeys-lfu`) and already evicted keys, a
/// namespace with an L1 bounded in bytes: the page and its twin show the L1's departures by
/// cause and its weight out of the bound, the L2 panel the store's memory, policy and
/// evictions, and `/metrics` the L2 gauges.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread")]
async fn a_bounded_redis_l2_and_a_byte_bounded_l1_show_on_the_page_twin_and_metrics() {
    use celeriac_testkit::RedisServer;
    // 10 MiB into 5 MiB, then emptied for the application.
    let (server, evicted) = RedisServer::evicting_after_overfill(5 << 20)
        .await
        .expect("a bounded server evicts");
    assert!(evicted > 0, "the bound was reached and keys evicted");

    // An evicting Redis is refused for jobs unless the URL accepts it.
    let app = App::builder()
        .url(format!("{}?allow_eviction=true", server.url()))
        .build()
        .await
        .expect("an app on Redis");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = serve_app(app, dir, |d| d).await;
    // Four entries at most, 64 KiB in all: ten values of 10 KiB cannot all stay.
    let pages: Strings = Cache::<str, String, ()>::builder("pages")
        .early_refresh(0.0)
        .ttl(Duration::from_secs(3600))
        .l1(4, Duration::from_secs(3600))
        .l1_max_bytes(64 * 1024)
        .stats_interval(None)
        .build(d.app.backend().clone())
        .await
        .expect("a cache");
    let value = "v".repeat(10 * 1024);
    for i in 0..10 {
        pages
            .set(&format!("p{i}"), value.clone())
            .await
            .expect("set");
    }
    let s = pages.stats();
    assert!(s.l1_evicted_size > 0, "the byte bound evicted: {s:?}");
    assert!(
        s.l1_weighted_bytes > 0 && s.l1_max_bytes == 64 * 1024,
        "{s:?}"
    );
    pages.publish_stats().await.expect("published");

    let v = d.json("/api/v1/cache").await;
    let row = namespace_row(&v, "pages").expect("pages published");
    assert_eq!(row["l1_added"], s.l1_added, "{row}");
    assert_eq!(row["l1_evicted_size"], s.l1_evicted_size, "{row}");
    assert_eq!(row["l1_expired"], s.l1_expired, "{row}");
    assert_eq!(row["l1_removed"], s.l1_removed, "{row}");
    assert_eq!(row["l1_weighted_bytes"], s.l1_weighted_bytes, "{row}");
    assert_eq!(row["l1_max_bytes"], 64 * 1024, "{row}");
    let ratio = row["l1_bytes_ratio"]
        .as_f64()
        .expect("a bounded L1's ratio");
    assert!(ratio > 0.0 && ratio <= 1.0, "{row}");
    let l2 = &v["l2"];
    assert_eq!(l2["reported"], true, "{v}");
    assert_eq!(l2["max_bytes"], 5 << 20, "{v}");
    assert_eq!(l2["policy"], "allkeys-lfu", "{v}");
    assert_eq!(l2["evicted_keys"], evicted, "Redis's own count: {v}");
    assert_eq!(l2["refuses_when_full"], false, "{v}");
    let used = l2["used_bytes"].as_u64().expect("used bytes");
    assert!(used > 100 * 1024, "the ten values are in the store: {v}");
    let used_ratio = l2["used_ratio"].as_f64().expect("a bounded store's ratio");
    assert!(
        (used_ratio - used as f64 / f64::from(5u32 << 20)).abs() < 1e-9,
        "{v}"
    );

    let (status, html) = d.get("/cache").await;
    assert_eq!(status, 200, "{html}");
    for cell in [
        format!(r#"<td class="num l1-added">{}</td>"#, s.l1_added),
        format!(
            r#"<td class="num l1-evicted-size">{}</td>"#,
            s.l1_evicted_size
        ),
        format!(r#"<td class="num l1-expired">{}</td>"#, s.l1_expired),
        format!(r#"<td class="num l1-removed">{}</td>"#, s.l1_removed),
        r#"<td id="cache-l2-max">5.0 MiB</td>"#.to_string(),
        r#"<td id="cache-l2-policy">allkeys-lfu</td>"#.to_string(),
        format!(r#"<td id="cache-l2-evicted">{evicted}</td>"#),
    ] {
        assert!(html.contains(&cell), "no {cell}: {html}");
    }
    assert!(
        html.contains(" / 64.0 KiB ("),
        "the L1's weight out of its bound: {html}"
    );
    assert!(
        html.contains(" of 5.0 MiB ("),
        "the L2's use out of its bound: {html}"
    );
    assert!(
        !html.contains(r#"id="cache-l2-refuses""#),
        "this policy evicts: {html}"
    );

    let http = celeriac_web::Http::new(d.app.clone()).expect("the Prometheus recorder");
    http.publish_fleet_gauges().await.expect("gauges published");
    let metrics = http.render_metrics();
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
    };
    assert_eq!(gauge("celeriac_cache_l2_max_bytes"), f64::from(5u32 << 20));
    assert_eq!(gauge("celeriac_cache_l2_evicted_keys"), evicted as f64);
    assert!(
        gauge("celeriac_cache_l2_used_bytes") > 100.0 * 1024.0,
        "{metrics}"
    );
}
