//! Dead letters, schedules, workers, events and alerts, on a real SQLite file with real
//! workers and beats running in the test process.

use crate::common::{count, enqueue, serve, serve_app, Served, OPERATOR, VIEWER};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use celeriac::alerts::{Kind, Rule};
use celeriac::backend::{Event, JobQuery, ProcessState};
use celeriac::{
    App, AppBuilder, BeatConfig, Coordinator, EventLog, JobState, ProcessRegistry, QueueAdmin,
    Schedule, TaskDef, TaskError, TaskOptions, WorkerConfig,
};
use celeriac_web::{Alerting, Http};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fresh application on a SQLite file, as `build` makes it.
async fn app_with(build: impl FnOnce(AppBuilder) -> AppBuilder) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let app = build(App::builder().url(url.as_str()))
        .build()
        .await
        .expect("app");
    (app, dir)
}

/// A worker on `queue` named `id`, refreshing its registry entry often; its stop handle and
/// its run.
fn start_worker(
    app: &App,
    queue: &str,
    id: &str,
) -> (
    celeriac::Shutdown,
    tokio::task::JoinHandle<celeriac::Result<()>>,
) {
    let worker = app.worker().config(WorkerConfig {
        queues: vec![queue.to_string()],
        worker_id: id.to_string(),
        concurrency: 4,
        prefetch: 4,
        poll_interval: Duration::from_millis(50),
        registry_refresh: Duration::from_millis(200),
        grace_period: Duration::from_secs(5),
        ..WorkerConfig::default()
    });
    let stop = worker.shutdown_handle();
    (stop, tokio::spawn(worker.run()))
}

/// Polls `check` every 50 ms until it holds, failing with `what` after 30 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The latest events of `kind`.
async fn events_of(app: &App, kind: &str) -> Vec<Event> {
    app.backend()
        .events(None, 1000)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

/// A task on `payments` that always fails, with one attempt: "card declined by issuer" for
/// `{"case": "declined"}`, "customer <n> not found" otherwise.
fn failing_task() -> TaskDef {
    let options = TaskOptions {
        queue: "payments".to_string(),
        max_attempts: 1,
        ..TaskOptions::default()
    };
    TaskDef::from_fn("payments.charge", options, |_ctx, args: Value| async move {
        if args["case"] == "declined" {
            Err::<(), _>(TaskError::msg("card declined by issuer"))
        } else {
            Err(TaskError::msg(format!("customer {} not found", args["n"])))
        }
    })
}

/// Enqueues a job of a registered task, with the task's options, on its queue.
async fn enqueue_registered(app: &App, task: &str, args: Value) {
    app.client()
        .enqueue_json(
            Some(app.registry()),
            task,
            &args,
            celeriac::JobOptions::default(),
        )
        .await
        .expect("enqueue");
}

/// A served dashboard whose `payments` queue has 3 dead letters declined and 2 of missing
/// customers, made by a real worker that has stopped since.
async fn with_dead_letters() -> Served {
    let (app, dir) = app_with(|b| b.register(failing_task())).await;
    for _ in 0..3 {
        enqueue_registered(&app, "payments.charge", json!({"case": "declined"})).await;
    }
    for n in [17, 4242] {
        enqueue_registered(&app, "payments.charge", json!({"case": "missing", "n": n})).await;
    }
    let (stop, run) = start_worker(&app, "payments", "dead-maker");
    eventually("5 dead letters", || async {
        count(&app, "payments", JobState::Dead).await == 5
    })
    .await;
    stop.graceful();
    run.await.expect("the worker ends").expect("cleanly");
    assert_eq!(count(&app, "payments", JobState::Dead).await, 5);
    assert_eq!(count(&app, "payments", JobState::Pending).await, 0);
    serve_app(app, dir, |d| d).await
}

/// The groups of the dead letters page, as (count, message) largest first.
fn groups_of(v: &Value) -> Vec<(u64, String, String)> {
    v["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["count"].as_u64().expect("a count"),
                g["error_message"].as_str().expect("a message").to_string(),
                g["id"].as_str().expect("an id").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_group_by_error_and_a_group_retries_after_a_dry_run() {
    let d = with_dead_letters().await;
    let dead = d.json("/api/v1/dead").await;
    assert_eq!(dead["total"], 5, "{dead}");
    let groups = groups_of(&dead);
    assert_eq!(groups.len(), 2, "{dead}");
    assert_eq!(groups[0].0, 3);
    assert!(groups[0].1.ends_with("card declined by issuer"), "{dead}");
    assert_eq!(groups[1].0, 2);
    assert!(groups[1].1.contains("customer ") && groups[1].1.ends_with(" not found"));
    assert_eq!(dead["groups"][0]["queue"], "payments");
    assert_eq!(dead["groups"][0]["task"], "payments.charge");
    assert_eq!(
        dead["groups"][0]["error_kind"], "retries_exhausted",
        "{dead}"
    );
    let (declined, missing) = (groups[0].2.clone(), groups[1].2.clone());

    let (status, html) = d.get("/dead").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!(
            r#"<tr data-group="{declined}"><td class="num count">3</td>"#
        )),
        "{html}"
    );
    assert!(html.contains(&format!(
        r#"<tr data-group="{missing}"><td class="num count">2</td>"#
    )));
    assert!(html.contains("card declined by issuer"));
    assert!(
        html.contains("/queues/payments?state=dead&amp;task=payments.charge"),
        "links to the queue's dead tab"
    );
    assert!(html.contains(&format!("/dead/{declined}/retry?queue=payments")));

    // The dry run, as a page, as JSON and as a POST, changes nothing.
    let (status, html) = d.get(&format!("/dead/{declined}/retry")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("3 dead letters of group"), "{html}");
    assert!(html.contains("at 100 jobs/s: at once, within the request"));
    let plan = d
        .json(&format!("/api/v1/dead/groups/{declined}/retry?rate=1"))
        .await;
    assert_eq!(plan["jobs"], 3);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        plan["background"], true,
        "3 jobs at 1/s take batches: {plan}"
    );
    assert_eq!(plan["batches"], 3);
    let plan = d
        .post(
            &format!("/api/v1/dead/groups/{declined}/retry"),
            json!({"dry_run": "yes"}),
        )
        .await;
    assert_eq!(plan["jobs"], 3, "{plan}");
    assert_eq!(
        count(&d.app, "payments", JobState::Dead).await,
        5,
        "the dry run retried nothing"
    );
    assert_eq!(count(&d.app, "payments", JobState::Pending).await, 0);
    assert!(events_of(&d.app, "admin.dlq_retry").await.is_empty());

    // A retry that fits in one batch is done within the request: exactly that group.
    let done = d
        .post(&format!("/api/v1/dead/groups/{declined}/retry"), json!({}))
        .await;
    assert_eq!(done["count"], 3, "{done}");
    assert_eq!(count(&d.app, "payments", JobState::Dead).await, 2);
    assert_eq!(count(&d.app, "payments", JobState::Pending).await, 3);
    let pending = d
        .app
        .backend()
        .list_jobs(JobQuery::new("payments", JobState::Pending), None, 50)
        .await
        .expect("a listing");
    assert!(
        pending
            .jobs
            .iter()
            .all(|j| String::from_utf8_lossy(&j.job.payload).contains("declined")),
        "only the declined ones went back: {pending:?}"
    );
    let audit = events_of(&d.app, "admin.dlq_retry").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(
        audit[0]
            .message
            .contains(&format!("retried 3 dead letters of group {declined}")),
        "{audit:?}"
    );
    assert_eq!(audit[0].queue.as_deref(), Some("payments"));
    assert_eq!(audit[0].actor.as_deref(), Some("dashboard:token:operator"));
    let after = d.json("/api/v1/dead").await;
    assert_eq!(groups_of(&after).len(), 1, "{after}");

    // Paced: 2 jobs at 1 per second go in two batches, in the background.
    let bad = d
        .post_as(
            OPERATOR,
            &format!("/api/v1/dead/groups/{missing}/retry"),
            json!({"rate": "fast"}),
        )
        .await;
    assert_eq!(bad.0, 400, "{bad:?}");
    let started = d
        .post(
            &format!("/api/v1/dead/groups/{missing}/retry"),
            json!({"rate": 1}),
        )
        .await;
    assert_eq!(started["count"], 2, "{started}");
    assert!(
        started["message"]
            .as_str()
            .unwrap_or_default()
            .contains("in the background"),
        "{started}"
    );
    eventually("the paced retry ends", || async {
        count(&d.app, "payments", JobState::Pending).await == 5
            && events_of(&d.app, "admin.dlq_retry")
                .await
                .iter()
                .any(|e| e.message.ends_with("(done)"))
    })
    .await;
    assert_eq!(count(&d.app, "payments", JobState::Dead).await, 0);
    let done = events_of(&d.app, "admin.dlq_retry").await;
    assert!(done.iter().any(|e| e.message == format!("retried 2 dead letters of group {missing} (payments.charge on payments) (done)")), "{done:?}");
    let gone = d
        .post_as(
            OPERATOR,
            &format!("/api/v1/dead/groups/{missing}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(gone.0, 404, "no dead letters left in it: {gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_dead_letters_needs_a_confirmation() {
    let d = with_dead_letters().await;
    let (status, html) = d.get("/dead/purge?queue=payments").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Purging deletes <strong>5 dead letters</strong> of queue payments"),
        "{html}"
    );
    assert!(
        html.contains(r#"name="confirm" value="yes""#),
        "the real button carries the confirmation"
    );
    let plan = d.json("/api/v1/dead/purge").await;
    assert_eq!(plan["count"], 5);

    let (status, refused) = d
        .post_as(OPERATOR, "/api/v1/dead/purge", json!({"queue": "payments"}))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"]
        .as_str()
        .unwrap_or_default()
        .contains("confirm=yes"));
    assert_eq!(
        count(&d.app, "payments", JobState::Dead).await,
        5,
        "nothing was deleted"
    );
    assert!(events_of(&d.app, "admin.dlq_purge").await.is_empty());

    let done = d
        .post(
            "/api/v1/dead/purge",
            json!({"queue": "payments", "confirm": "yes"}),
        )
        .await;
    assert_eq!(done["count"], 5, "{done}");
    assert_eq!(count(&d.app, "payments", JobState::Dead).await, 0);
    let audit = events_of(&d.app, "admin.dlq_purge").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].message, "deleted 5 dead letters of queue payments");
    let (_, html) = d.get("/dead").await;
    assert!(html.contains("No dead letters."));
}

fn report_task() -> TaskDef {
    let options = TaskOptions {
        queue: "reports".to_string(),
        ..TaskOptions::default()
    };
    TaskDef::from_fn("reports.build", options, |_ctx, _args: Value| async move {
        Ok::<_, TaskError>(())
    })
}

fn nightly() -> Schedule {
    Schedule::builder("nightly")
        .cron("30 2 * * *")
        .timezone("Europe/Berlin")
        .task("reports.build")
        .args(json!({"day": "yesterday"}))
        .build()
        .expect("a schedule")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_show_their_next_fire_and_pause_resume_and_run_now() {
    let (app, dir) = app_with(|b| b.register(report_task()).schedule(nightly())).await;
    // Stored by another application: shown from its state alone.
    app.backend()
        .set_schedule_paused("legacy", true)
        .await
        .expect("stored");
    let beat = app
        .beat()
        .expect("a beat")
        .config(BeatConfig {
            holder: "test-beat".to_string(),
            registry_refresh: Duration::from_millis(200),
            ..BeatConfig::default()
        })
        .expect("settings");
    let beat_stop = beat.shutdown_handle();
    let beat_run = tokio::spawn(beat.run());
    let d = serve_app(app, dir, |d| d).await;

    let before = d.app.client().now();
    let s = d.json("/api/v1/schedules").await;
    let after = d.app.client().now();
    let rows = s["schedules"].as_array().expect("schedules");
    assert_eq!(rows.len(), 2, "{s}");
    let row = &rows[0];
    assert_eq!(row["name"], "nightly");
    assert_eq!(row["defined"], true);
    assert_eq!(row["spec"], "cron 30 2 * * *");
    assert_eq!(row["timezone"], "Europe/Berlin");
    assert_eq!(row["task"], "reports.build");
    assert_eq!(row["queue"], "reports");
    assert_eq!(row["paused"], false);
    let def = &d.app.schedules()[0];
    let next = row["next"].as_i64().expect("a next fire");
    assert!(
        [def.next_after(before), def.next_after(after)].contains(&Some(next)),
        "{s}"
    );
    assert_eq!(rows[1]["name"], "legacy");
    assert_eq!(rows[1]["defined"], false);
    assert_eq!(rows[1]["paused"], true);

    let (status, html) = d.get("/schedules").await;
    assert_eq!(status, 200);
    let next_text = chrono::DateTime::from_timestamp_millis(next)
        .expect("a time")
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    assert!(
        html.contains(&next_text),
        "the next fire: {next_text} in {html}"
    );
    assert!(html.contains(":00 CE"), "and in the schedule's time zone");
    assert!(html.contains("not defined in this application"));

    // The beat says it leads once it has refreshed its registry entry.
    eventually("the beat leads", || async {
        d.json("/api/v1/schedules").await["leader"] == "test-beat"
    })
    .await;
    let (_, html) = d.get("/schedules").await;
    assert!(
        html.contains("Leading beat: <strong>test-beat</strong>"),
        "{html}"
    );

    let paused = |app: App| async move {
        app.backend()
            .schedule_states()
            .await
            .expect("states")
            .iter()
            .find(|s| s.name == "nightly")
            .is_some_and(|s| s.paused)
    };
    assert!(!paused(d.app.clone()).await);
    d.post("/api/v1/schedules/nightly/pause", json!({})).await;
    assert!(paused(d.app.clone()).await, "paused in the store");
    assert_eq!(
        d.json("/api/v1/schedules").await["schedules"][0]["paused"],
        true
    );
    d.post("/api/v1/schedules/nightly/resume", json!({})).await;
    assert!(!paused(d.app.clone()).await, "resumed in the store");
    assert_eq!(events_of(&d.app, "admin.schedule_pause").await.len(), 1);
    assert_eq!(events_of(&d.app, "admin.schedule_resume").await.len(), 1);

    // Run now: exactly one job of the schedule's task, as the beat would fire it.
    assert_eq!(count(&d.app, "reports", JobState::Pending).await, 0);
    let ran = d.post("/api/v1/schedules/nightly/run", json!({})).await;
    assert_eq!(ran["count"], 1, "{ran}");
    assert_eq!(count(&d.app, "reports", JobState::Pending).await, 1);
    let jobs = d
        .app
        .backend()
        .list_jobs(JobQuery::new("reports", JobState::Pending), None, 10)
        .await
        .expect("a listing");
    assert_eq!(jobs.jobs.len(), 1);
    let job = &jobs.jobs[0].job;
    assert_eq!(job.task, "reports.build");
    assert_eq!(
        job.headers.get("celeriac-schedule").map(String::as_str),
        Some("nightly")
    );
    assert_eq!(
        String::from_utf8_lossy(&job.payload),
        r#"{"day":"yesterday"}"#
    );
    let audit = events_of(&d.app, "admin.schedule_run").await;
    assert_eq!(audit.len(), 1);
    assert!(audit[0].message.contains(&job.id.to_string()), "{audit:?}");

    let (status, _) = d
        .post_as(OPERATOR, "/api/v1/schedules/legacy/run", json!({}))
        .await;
    assert_eq!(status, 400, "a schedule only stored has no job to build");
    let (status, _) = d
        .post_as(OPERATOR, "/api/v1/schedules/nope/pause", json!({}))
        .await;
    assert_eq!(status, 404);

    beat_stop.cancel();
    beat_run.await.expect("the beat ends").expect("cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_show_their_running_jobs_and_can_be_told_to_be_quiet() {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let options = TaskOptions {
        queue: "slow".to_string(),
        ..TaskOptions::default()
    };
    let blocking = TaskDef::from_fn("slow.block", options, move |_ctx, _args: Value| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Ok::<_, TaskError>(())
        }
    });
    let (app, dir) = app_with(|b| b.register(blocking)).await;
    let d = serve_app(app, dir, |d| d).await;
    let ids = enqueue(&d.app, "slow", "slow.block", json!({}), 1).await;
    let job = ids[0].to_string();
    // An id with a slash, as beats have: it must survive the path.
    let worker_id = "dash-worker/1";
    let (stop, run) = start_worker(&d.app, "slow", worker_id);

    eventually("the worker lists its running job", || async {
        let w = d.json("/api/v1/workers").await;
        w["processes"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| {
                p["id"] == worker_id
                    && p["jobs"]
                        .as_array()
                        .is_some_and(|js| js.iter().any(|j| j["id"] == job.as_str()))
            })
        })
    })
    .await;
    let w = d.json("/api/v1/workers").await;
    let p = &w["processes"][0];
    assert_eq!(p["kind"], "worker");
    assert_eq!(p["state"], "running");
    assert_eq!(p["queues"][0]["queue"], "slow");
    assert_eq!(p["jobs"][0]["task"], "slow.block");
    let (status, html) = d.get("/workers").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(r#"<tr data-process="dash-worker/1">"#),
        "{html}"
    );
    assert!(html.contains(&format!(r#"<tr data-job="{job}">"#)));
    assert!(html.contains("/api/v1/workers/dash-worker%2F1/quiet"));

    let (status, _) = d
        .post_as(OPERATOR, "/api/v1/workers/nobody/quiet", json!({}))
        .await;
    assert_eq!(status, 404);
    let done = d
        .post("/api/v1/workers/dash-worker%2F1/quiet", json!({}))
        .await;
    assert!(
        done["message"]
            .as_str()
            .unwrap_or_default()
            .contains("told dash-worker/1 to be quiet"),
        "{done}"
    );
    eventually("the registry says quiet", || async {
        let now = d.app.client().now();
        d.app
            .backend()
            .processes(now)
            .await
            .expect("processes")
            .iter()
            .any(|p| p.id == worker_id && p.state == ProcessState::Quiet)
    })
    .await;
    let audit = events_of(&d.app, "admin.quiet").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].message, "told dash-worker/1 to be quiet");

    release.notify_waiters();
    release.notify_one();
    stop.graceful();
    run.await.expect("the worker ends").expect("cleanly");
}

async fn append(app: &App, kind: &str, queue: Option<&str>, message: &str) {
    let mut e = Event::new(kind, app.client().now(), message);
    e.queue = queue.map(str::to_string);
    app.backend().append(vec![e]).await.expect("appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_filter_by_kind_queue_and_text() {
    let d = serve().await;
    // An action of the dashboard leaves an admin event.
    d.app
        .backend()
        .set_schedule_paused("x", false)
        .await
        .expect("stored");
    d.post("/api/v1/schedules/x/pause", json!({})).await;
    append(
        &d.app,
        "job.failed",
        Some("emails"),
        "error: smtp refused the message",
    )
    .await;
    append(&d.app, "job.dead", Some("reports"), "error: disk full").await;

    let (status, html) = d.get("/events").await;
    assert_eq!(status, 200);
    assert!(html.contains("paused schedule x"), "{html}");
    assert!(html.contains("smtp refused the message"));
    assert!(html.contains(r#"data-live="/live/events?""#), "{html}");

    let (_, html) = d.get("/events?kind=admin.").await;
    assert!(html.contains("paused schedule x"));
    assert!(!html.contains("smtp refused"), "filtered by kind");
    assert!(
        html.contains(r#"data-live="/live/events?kind=admin.""#),
        "the tail keeps the filter"
    );

    let all = d.json("/api/v1/events").await;
    let kinds: Vec<&str> = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["job.dead", "job.failed", "admin.schedule_pause"],
        "newest first"
    );
    let jobs = d.json("/api/v1/events?kind=job.").await;
    assert_eq!(jobs["events"].as_array().map(Vec::len), Some(2));
    let q = d.json("/api/v1/events?queue=reports").await;
    assert_eq!(q["events"][0]["message"], "error: disk full");
    assert_eq!(q["events"].as_array().map(Vec::len), Some(1));
    let text = d.json("/api/v1/events?q=SMTP").await;
    assert_eq!(text["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(text["events"][0]["queue"], "emails");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_tail_sends_new_events() {
    let (app, dir) = crate::common::app().await;
    let d = serve_app(app, dir, |b| b.live_every(Duration::from_millis(500))).await;
    append(&d.app, "job.failed", Some("emails"), "an old failure").await;
    let res = d.sse("/live/events?kind=admin.").await;
    let mut stream = res.bytes_stream();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut appended = false;
    while !seen.contains("tail marker 7f3a") {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the tail never sent the new event: {seen}");
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("the stream ended: {other:?} after {seen}"),
        }
        // After the first update, an event appended now arrives in a later one.
        if !appended && seen.contains("data:") {
            append(&d.app, "admin.pause", Some("emails"), "tail marker 7f3a").await;
            appended = true;
        }
    }
    assert!(
        !seen.contains("an old failure"),
        "the tail keeps its filter: {seen}"
    );
    assert!(seen.contains(r#"data-kind="admin.pause""#));
}

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Value>>,
}

async fn hook(State(r): State<Arc<Receiver>>, Json(body): Json<Value>) -> StatusCode {
    if let Ok(mut g) = r.got.lock() {
        g.push(body);
    }
    StatusCode::OK
}

async fn broken(State(r): State<Arc<Receiver>>, Json(body): Json<Value>) -> StatusCode {
    if let Ok(mut g) = r.got.lock() {
        g.push(body);
    }
    StatusCode::SERVICE_UNAVAILABLE
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_show_firing_alerts_rules_history_and_test_a_webhook() {
    let d = serve().await;
    let a = d.json("/api/v1/alerts").await;
    assert_eq!(a["rules_source"], "defaults");
    assert_eq!(
        a["rules"].as_array().map(Vec::len),
        Some(Rule::defaults().len())
    );
    assert!(a["evaluated_at"].is_null());

    // A queue with ready jobs and no worker: a real evaluation fires queue_stalled.
    enqueue(&d.app, "emails", "mail.send", json!({}), 3).await;
    let http = Http::new(d.app.clone())
        .expect("the recorder installs")
        .alerting(Alerting {
            rules: vec![Rule::new(Kind::QueueStalled, 0.0, Duration::ZERO)],
            webhook: None,
            cooldown: Duration::from_secs(3600),
        });
    // The process may also evaluate on its own as the monitor lease's holder: either way the
    // alert fires once, and is stored and in the event stream.
    http.evaluate_alerts().await;
    let a = d.json("/api/v1/alerts").await;
    assert_eq!(a["states"][0]["status"], "firing", "{a}");
    assert_eq!(a["states"][0]["subject"], "emails");
    assert_eq!(a["history"][0]["kind"], "alert.firing");
    let (status, html) = d.get("/alerts").await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"<tr data-rule="queue_stalled" data-subject="emails"><td><span class="badge firing">firing</span>"#), "{html}");
    let summary = a["states"][0]["summary"].as_str().expect("a summary");
    assert!(summary.contains("emails"), "{summary}");
    assert!(html.contains(summary));
    assert!(
        html.contains(&Rule::defaults()[0].describe()),
        "the rules, described"
    );
    assert!(
        html.contains("The built-in rules"),
        "and said to be the defaults"
    );
    assert!(
        html.contains("[FIRING] queue_stalled emails"),
        "the history"
    );

    // Test a hook: a local receiver.
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let router = Router::new()
        .route("/hook/secret-part", post(hook))
        .route("/broken", post(broken))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let ok = d
        .post(
            "/api/v1/alerts/test-hook",
            json!({"url": format!("http://{addr}/hook/secret-part")}),
        )
        .await;
    assert_eq!(
        ok["message"],
        format!("the webhook at http://{addr} answered 200 OK"),
        "{ok}"
    );
    let got = receiver.got.lock().expect("lock").clone();
    assert_eq!(got.len(), 1);
    assert!(
        got[0]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("[TEST] Celeriac"),
        "{got:?}"
    );
    assert_eq!(got[0]["alerts"], json!([]));
    let (status, bad) = d
        .post_as(
            OPERATOR,
            "/api/v1/alerts/test-hook",
            json!({"url": format!("http://{addr}/broken")}),
        )
        .await;
    assert_eq!(status, 502, "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .unwrap_or_default()
            .contains("503 Service Unavailable"),
        "{bad}"
    );
    let (status, bad) = d
        .post_as(
            OPERATOR,
            "/api/v1/alerts/test-hook",
            json!({"url": "file:///etc/passwd"}),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        l.local_addr().expect("an address")
    };
    let (status, bad) = d
        .post_as(
            OPERATOR,
            "/api/v1/alerts/test-hook",
            json!({"url": format!("http://{closed}/x")}),
        )
        .await;
    assert_eq!(status, 502, "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .unwrap_or_default()
            .contains("could not be reached"),
        "{bad}"
    );
    let audit = events_of(&d.app, "admin.alert_test_hook").await;
    assert_eq!(audit.len(), 3, "{audit:?}");
    assert!(
        audit.iter().all(|e| !e.message.contains("secret-part")),
        "the URL's path is not recorded: {audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_may_not_act_on_these_pages() {
    let d = serve().await;
    enqueue(&d.app, "emails", "mail.send", json!({}), 1).await;
    d.app
        .backend()
        .set_schedule_paused("s", false)
        .await
        .expect("stored");
    for path in [
        "/api/v1/dead/groups/0123abcd/retry",
        "/api/v1/dead/purge",
        "/api/v1/schedules/s/pause",
        "/api/v1/schedules/s/resume",
        "/api/v1/schedules/s/run",
        "/api/v1/workers/w/quiet",
        "/api/v1/workers/w/stop",
        "/api/v1/alerts/test-hook",
    ] {
        let (status, body) = d
            .post_as(
                VIEWER,
                path,
                json!({"confirm": "yes", "url": "http://127.0.0.1:9/"}),
            )
            .await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // The read pages are open to them, with the buttons disabled.
    for path in [
        "/dead",
        "/dead/purge",
        "/schedules",
        "/workers",
        "/events",
        "/alerts",
    ] {
        let (status, html) = d.get_as(VIEWER, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!html.contains(r#"<button type="submit">Retry"#));
    }
    let (_, html) = d.get_as(VIEWER, "/schedules").await;
    assert!(
        html.contains(r#"<button type="submit" disabled>Pause</button>"#),
        "{html}"
    );
    assert!(events_of(&d.app, "admin.schedule_pause").await.is_empty());
    assert!(d
        .app
        .backend()
        .events(None, 100)
        .await
        .expect("events")
        .iter()
        .all(|e| !e.kind.starts_with("admin.")));
    assert_eq!(count(&d.app, "emails", JobState::Pending).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_page_shows_the_rules_it_was_given() {
    use celeriac::alerts::{Kind, Rule};
    let defaults = crate::common::serve().await;
    let d = defaults.json("/api/v1/alerts").await;
    assert_eq!(d["rules_source"], "defaults");
    assert_eq!(
        d["rules"].as_array().map(Vec::len),
        Some(Rule::defaults().len())
    );
    let (app, dir) = crate::common::app().await;
    let rule = Rule::new(Kind::QueueStalled, 5.0, std::time::Duration::from_secs(120));
    let given = crate::common::serve_app(app, dir, |b| b.alert_rules(vec![rule.clone()])).await;
    let g = given.json("/api/v1/alerts").await;
    assert_eq!(g["rules_source"], "configured");
    let rules = g["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1, "{g}");
    assert_eq!(rules[0]["id"], rule.id());
    let (_, html) = given.get("/alerts").await;
    assert!(
        html.contains("The rules this dashboard was given"),
        "{html}"
    );
}
