//! Alerts end to end on a SQLite file, with a local HTTP receiver as the webhook: a queue with
//! ready jobs and no worker fires `queue_stalled` once (not again within the cooldown), in a
//! Slack-compatible shape; the event stream and the stored states show it; a notice the
//! webhook refuses goes out again at the next evaluation; and once the queues are empty the
//! alerts resolve and the receiver hears it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use celeriac::alerts::{Kind, Rule, Status};
use celeriac::{App, EventLog, QueueAdmin};
use celeriac_web::{alert_states, Alerting, Http};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Value>>,
    refuse: AtomicBool,
}

impl Receiver {
    fn texts(&self) -> Vec<String> {
        self.got
            .lock()
            .map(|g| {
                g.iter()
                    .filter_map(|v| v["text"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.texts()
            .iter()
            .map(|t| t.lines().filter(|l| l.contains(needle)).count())
            .sum()
    }
}

async fn hook(State(r): State<Arc<Receiver>>, Json(body): Json<Value>) -> StatusCode {
    if let Ok(mut g) = r.got.lock() {
        g.push(body);
    }
    if r.refuse.load(Ordering::Relaxed) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn enqueue(app: &App, queue: &str, n: usize) {
    for _ in 0..n {
        let opts = celeriac::JobOptions {
            queue: Some(queue.to_string()),
            ..Default::default()
        };
        app.client()
            .enqueue_json(None, "reports.build", &serde_json::json!({}), opts)
            .await
            .expect("enqueue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_queue_fires_once_reaches_the_webhook_and_resolves() {
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let router = Router::new()
        .route("/hook", post(hook))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let app = App::builder().url(url.as_str()).build().await.expect("app");
    enqueue(&app, "emails", 3).await;
    let http = Http::new(app.clone())
        .expect("the recorder installs")
        .alerting(Alerting {
            rules: vec![Rule::new(Kind::QueueStalled, 0.0, Duration::ZERO)],
            webhook: Some(format!("http://{addr}/hook")),
            cooldown: Duration::from_secs(3600),
        });

    for _ in 0..3 {
        http.evaluate_alerts().await;
    }
    assert_eq!(
        receiver.count("[FIRING] queue_stalled emails"),
        1,
        "fired once, not again within the cooldown: {:?}",
        receiver.texts()
    );
    let body = receiver.got.lock().expect("lock")[0].clone();
    assert_eq!(body["alerts"][0]["status"], "firing");
    assert_eq!(body["alerts"][0]["subject"], "emails");
    let states = alert_states(&app).await.expect("states");
    assert_eq!(states.alerts.len(), 1);
    assert_eq!(states.alerts[0].status, Status::Firing);
    let events = app.backend().events(None, 100).await.expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.kind == "alert.firing" && e.queue.as_deref() == Some("emails")),
        "{events:?}"
    );

    // The webhook refuses: the notice goes out again at the next evaluation.
    receiver.refuse.store(true, Ordering::Relaxed);
    enqueue(&app, "reports", 2).await;
    http.evaluate_alerts().await;
    assert_eq!(
        receiver.count("[FIRING] queue_stalled reports"),
        1,
        "tried once"
    );
    receiver.refuse.store(false, Ordering::Relaxed);
    http.evaluate_alerts().await;
    assert_eq!(
        receiver.count("[FIRING] queue_stalled reports"),
        2,
        "sent again after the refusal: {:?}",
        receiver.texts()
    );
    http.evaluate_alerts().await;
    assert_eq!(
        receiver.count("[FIRING] queue_stalled reports"),
        2,
        "then not again"
    );

    for q in ["emails", "reports"] {
        app.backend().purge(q).await.expect("purge");
    }
    http.evaluate_alerts().await;
    for q in ["emails", "reports"] {
        assert_eq!(
            receiver.count(&format!("[RESOLVED] queue_stalled {q}")),
            1,
            "{:?}",
            receiver.texts()
        );
    }
    assert!(alert_states(&app).await.expect("states").alerts.is_empty());
}
