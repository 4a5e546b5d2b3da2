//! The overview and its twin on a real SQLite file, and its live part over server-sent events.

use crate::common::{enqueue, serve, serve_app};
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_judges_queues_worst_first() {
    let d = serve().await;
    enqueue(
        &d.app,
        "emails",
        "mail.send",
        json!({"to": "a@example.com"}),
        3,
    )
    .await;
    enqueue(&d.app, "reports", "reports.build", json!({}), 1).await;
    let o = d.json("/api/v1/overview").await;
    let queues = o["queues"].as_array().expect("queues");
    assert_eq!(queues.len(), 2, "{o}");
    // Both wait with no worker: stalled, the one with more jobs waiting longer first.
    assert_eq!(queues[0]["verdict"], "stalled");
    assert_eq!(queues[1]["verdict"], "stalled");
    let names: Vec<&str> = queues.iter().filter_map(|q| q["queue"].as_str()).collect();
    assert!(
        names.contains(&"emails") && names.contains(&"reports"),
        "{names:?}"
    );
    let emails = queues
        .iter()
        .find(|q| q["queue"] == "emails")
        .expect("emails");
    assert_eq!(emails["reason"], "3 jobs wait and no worker takes from it");
    assert_eq!(emails["counts"]["pending"], 3);
    assert_eq!(o["throughput"]["period"], "1h");
    assert_eq!(o["throughput"]["x"].as_array().map(Vec::len), Some(60));
    let enqueued: u64 = o["throughput"]["enqueued"]
        .as_array()
        .expect("enqueued")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(enqueued, 4, "the store counted every enqueue: {o}");

    let (status, html) = d.get("/").await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"<tr data-queue="emails">"#), "{html}");
    assert!(html.contains("3 jobs wait and no worker takes from it"));
    assert!(
        html.contains(r#"data-chart="#),
        "the chart's data is in the page"
    );
    // Another period reads hours.
    let week = d.json("/api/v1/overview?period=7d").await;
    assert_eq!(
        week["throughput"]["x"].as_array().map(Vec::len),
        Some(7 * 24)
    );
    // The dashboard counts its own store time.
    assert!(week["cost"]["calls"].as_u64().unwrap_or(0) > 0, "{week}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_part_arrives_by_server_sent_events() {
    let (app, dir) = crate::common::app().await;
    let d = serve_app(app, dir, |b| b.live_every(Duration::from_millis(500))).await;
    let res = d.sse("/live/overview").await;
    // A job enqueued after the page was served shows in the next update.
    enqueue(&d.app, "late", "late.task", json!({}), 2).await;
    let mut stream = res.bytes_stream();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(r#"data-queue="late""#) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no update named the new queue: {seen}");
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("the stream ended: {other:?} after {seen}"),
        }
    }
    assert!(
        seen.starts_with("data:") || seen.contains("\ndata:"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_versions_in_the_registry_are_marked_as_deploys() {
    use celeriac::backend::{ProcessInfo, ProcessKind, ProcessState};
    use celeriac::ProcessRegistry;
    let d = serve().await;
    let now = d.app.client().now();
    let worker = |id: &str, version: &str, started_at: i64| ProcessInfo {
        id: id.to_string(),
        kind: ProcessKind::Worker,
        host: "h".to_string(),
        pid: 1,
        version: version.to_string(),
        started_at,
        queues: Vec::new(),
        concurrency: 4,
        busy: 0,
        running: Vec::new(),
        rss_bytes: None,
        store_rtt_us: None,
        clock_offset_ms: 0,
        state: ProcessState::Running,
        leader: false,
        seen_at: now,
        expires_at: now + 60_000,
    };
    let before = d.json("/api/v1/overview").await;
    assert_eq!(before["throughput"]["deploys"], json!([]), "no process yet");
    let store = d.app.backend();
    store
        .refresh(&worker("old-1", "1.4.0", now - 50 * 60_000))
        .await
        .expect("registered");
    store
        .refresh(&worker("new-1", "1.5.0", now - 10 * 60_000))
        .await
        .expect("registered");
    store
        .refresh(&worker("new-2", "1.5.0", now - 12 * 60_000))
        .await
        .expect("registered");
    let o = d.json("/api/v1/overview").await;
    assert_eq!(
        o["throughput"]["deploys"],
        json!([
            {"version": "1.4.0", "at": now - 50 * 60_000},
            {"version": "1.5.0", "at": now - 12 * 60_000},
        ]),
        "each version once, at its first process's start: {o}"
    );
    // Kept in the store: the old version's processes leave, the marker stays.
    store.leave("old-1").await.expect("left");
    let kept = celeriac::deploys::Deploys::load(store.as_ref(), now)
        .await
        .expect("read");
    assert_eq!(kept.seen.len(), 2);
    let (_, html) = d.get("/").await;
    assert!(html.contains(r#"id="deploys""#), "{html}");
    assert!(html.contains("1.5.0"));
    // The chart's data carries them for uPlot to draw.
    let markers = format!(
        "&quot;markers&quot;:[{},{}]",
        (now - 50 * 60_000) as f64 / 1000.0,
        (now - 12 * 60_000) as f64 / 1000.0
    );
    assert!(html.contains(&markers), "{markers} in {html}");
}
