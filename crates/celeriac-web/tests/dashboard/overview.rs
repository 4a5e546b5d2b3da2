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
    let res = d
        .http
        .get(format!("{}/live/overview", d.base))
        .bearer_auth(crate::common::OPERATOR)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
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
