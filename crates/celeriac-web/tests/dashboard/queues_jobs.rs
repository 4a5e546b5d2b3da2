//! The queue, job and workflow pages on a real SQLite file: the queue list and one queue
//! with its pages of jobs, pause, resume, purge and the bulk actions; the job search; one
//! job's page (redaction, the enqueue command, its actions); a workflow drawn with the jobs
//! a real worker ran.

use crate::common::{self, count, enqueue, Served, OPERATOR, VIEWER};
use celeriac::backend::JobQuery;
use celeriac::task::TaskOptions;
use celeriac::{
    chain, chord, map, App, AppBuilder, EventLog, JobId, JobOptions, JobState, QueueAdmin,
    ResultStore, Step, Task, TaskContext, TaskError, WorkerConfig,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The most a test waits for workers.
const PATIENCE: Duration = Duration::from_secs(30);

/// A task that always fails, once: its jobs go dead at their first attempt.
struct Boom;
impl Task for Boom {
    const NAME: &'static str = "tests.boom";
    type Args = Value;
    type Output = ();
    fn options() -> TaskOptions {
        TaskOptions {
            queue: "boom".to_string(),
            max_attempts: 1,
            ..TaskOptions::default()
        }
    }
    async fn run(_: TaskContext, _: Value) -> Result<(), TaskError> {
        Err(TaskError::msg("connection refused by the upstream"))
    }
}

/// `0..n`.
struct Seq;
impl Task for Seq {
    const NAME: &'static str = "wf.seq";
    type Args = u32;
    type Output = Vec<u32>;
    async fn run(_: TaskContext, n: u32) -> Result<Vec<u32>, TaskError> {
        Ok((0..n).collect())
    }
}

/// Twice a number.
struct Double;
impl Task for Double {
    const NAME: &'static str = "wf.double";
    type Args = u32;
    type Output = u32;
    async fn run(_: TaskContext, n: u32) -> Result<u32, TaskError> {
        Ok(n * 2)
    }
}

/// Its input, as is.
struct Collect;
impl Task for Collect {
    const NAME: &'static str = "wf.collect";
    type Args = Value;
    type Output = Value;
    async fn run(_: TaskContext, v: Value) -> Result<Value, TaskError> {
        Ok(v)
    }
}

/// A served dashboard over an application with tasks.
async fn serve_with(tasks: impl FnOnce(AppBuilder) -> AppBuilder) -> Served {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let app = tasks(App::builder().url(url.as_str()))
        .build()
        .await
        .expect("app");
    common::serve_app(app, dir, |d| d).await
}

/// Runs a worker on `queues` until `done` says so (or the patience runs out), then stops it.
async fn work_until<F, Fut>(app: &App, queues: &[&str], done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let worker = app.worker().config(WorkerConfig {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        poll_interval: Duration::from_millis(20),
        ..WorkerConfig::default()
    });
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "the worker did not get there in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.graceful();
    running
        .await
        .expect("the worker task ends")
        .expect("the worker stops cleanly");
}

async fn state_of(app: &App, id: JobId) -> Option<JobState> {
    app.backend().get(id).await.expect("get").map(|i| i.state)
}

async fn event_kinds(app: &App) -> Vec<(String, Option<String>, String)> {
    app.backend()
        .events(None, 1000)
        .await
        .expect("events")
        .into_iter()
        .map(|e| (e.kind, e.queue, e.message))
        .collect()
}

fn ids_of(v: &Value) -> Vec<String> {
    v["jobs"]
        .as_array()
        .expect("a list of jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("an id").to_string())
        .collect()
}

fn q(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("a query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_page_and_twin_show_each_queue_with_its_counts() {
    let s = common::serve().await;
    enqueue(&s.app, "emails", "emails.send", json!({}), 3).await;
    enqueue(&s.app, "reports", "reports.build", json!({}), 1).await;
    enqueue(&s.app, celeriac_web::CANARY_QUEUE, "canary", json!({}), 1).await;
    assert_eq!(count(&s.app, "emails", JobState::Pending).await, 3);

    let (status, html) = s.get("/queues").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"<tr data-queue="emails">"#), "{html}");
    assert!(html.contains(r#"<tr data-queue="reports">"#));
    assert!(
        html.contains(r#"href="/queues/emails?state=pending">3</a>"#),
        "{html}"
    );
    assert!(
        !html.contains(celeriac_web::CANARY_QUEUE),
        "the canary queue is left out"
    );
    assert_eq!(
        html.matches(r#"<svg class="spark "#).count(),
        4,
        "two lines per queue"
    );

    let v = s.json("/api/v1/queues").await;
    let queues = v["queues"].as_array().expect("queues");
    let names: Vec<&str> = queues.iter().filter_map(|q| q["queue"].as_str()).collect();
    assert_eq!(names, vec!["emails", "reports"]);
    assert_eq!(queues[0]["counts"]["pending"], 3);
    assert_eq!(queues[0]["paused"], false);
    assert_eq!(
        queues[0]["verdict"], "stalled",
        "jobs wait and no worker takes them"
    );
    assert_eq!(queues[0]["consumers"], 0);
    let minutes = v["minutes"].as_array().expect("minutes").len();
    assert_eq!(minutes, 60, "an hour of minutes");
    assert_eq!(
        queues[0]["succeeded_last_hour"].as_array().map(Vec::len),
        Some(minutes)
    );
    assert_eq!(
        queues[0]["failed_last_hour"].as_array().map(Vec::len),
        Some(minutes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_lists_its_pending_jobs_a_page_at_a_time() {
    let s = common::serve().await;
    let ids = enqueue(&s.app, "emails", "emails.send", json!({}), 120).await;
    assert_eq!(count(&s.app, "emails", JobState::Pending).await, 120);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut query = vec![("state", "pending")];
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let v = s
            .json(&format!("/api/v1/queues/emails?{}", q(&query)))
            .await;
        assert_eq!(v["filters"]["state"], "pending");
        assert_eq!(v["queue"]["counts"]["pending"], 120);
        let page = ids_of(&v);
        pages.push(page.len());
        seen.extend(page);
        match v["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages.len() < 10, "the pages end");
    }
    assert_eq!(pages, vec![50, 50, 20]);
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), 120, "no job twice");
    let enqueued: BTreeSet<String> = ids.iter().map(JobId::to_string).collect();
    assert_eq!(
        distinct.into_iter().cloned().collect::<BTreeSet<_>>(),
        enqueued
    );

    let (status, html) = s.get("/queues/emails").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"rel="next""#), "a next page link");
    assert!(
        html.contains(&format!(r#"name="id" value="{}""#, ids[0])),
        "a checkbox per job"
    );
    assert!(
        html.contains(&format!(r#"href="/jobs/{}""#, ids[0])),
        "a link per job"
    );
    assert!(html.contains(r#"<form class="select" method="post""#));
    assert!(
        html.contains(r#"name="csrf""#) && html.contains(r#"name="back" value="/queues/emails""#)
    );

    // A filter that matches nothing, and a state that does not exist.
    let v = s
        .json("/api/v1/queues/emails?state=pending&task=other")
        .await;
    assert!(ids_of(&v).is_empty());
    let (status, body) = s.get("/api/v1/queues/emails?state=lost").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`lost` is not a state"), "{body}");
    let (status, _) = s.get("/api/v1/queues/nowhere").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_through_the_api_are_audited_and_viewers_are_refused() {
    let s = common::serve().await;
    enqueue(&s.app, "emails", "emails.send", json!({}), 2).await;
    let paused = |app: App| async move {
        app.backend()
            .stats()
            .await
            .expect("stats")
            .into_iter()
            .find(|q| q.queue == "emails")
            .expect("the queue")
            .paused
    };
    assert!(!paused(s.app.clone()).await);

    let (status, body) = s
        .post_as(VIEWER, "/api/v1/queues/emails/pause", json!({}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(!paused(s.app.clone()).await, "a viewer paused nothing");

    let v = s.post("/api/v1/queues/emails/pause", json!({})).await;
    assert_eq!(v["message"], "paused emails");
    assert!(paused(s.app.clone()).await);
    let v = s.json("/api/v1/queues").await;
    assert_eq!(v["queues"][0]["paused"], true);

    s.post("/api/v1/queues/emails/resume", json!({})).await;
    assert!(!paused(s.app.clone()).await);

    let events = s.app.backend().events(None, 100).await.expect("events");
    let pause = events
        .iter()
        .find(|e| e.kind == "admin.pause")
        .expect("the pause is in the event stream");
    assert_eq!(pause.queue.as_deref(), Some("emails"));
    assert_eq!(pause.actor.as_deref(), Some("dashboard:token:operator"));
    let resume = events
        .iter()
        .find(|e| e.kind == "admin.resume")
        .expect("the resume is in the event stream");
    assert!(resume.at >= pause.at);

    // From a page's form: back to the page with the outcome.
    let res = s
        .http
        .post(format!("{}/api/v1/queues/emails/pause", s.base))
        .bearer_auth(OPERATOR)
        .form(&[("back", "/queues/emails")])
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status().as_u16(), 303);
    let to = res.headers()["location"].to_str().expect("a location");
    assert_eq!(to, "/queues/emails?notice=paused+emails");
    assert!(paused(s.app.clone()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_needs_its_confirmation() {
    let s = common::serve().await;
    enqueue(&s.app, "emails", "emails.send", json!({}), 4).await;
    let opts = JobOptions {
        queue: Some("emails".into()),
        delay: Some(Duration::from_secs(3600)),
        ..JobOptions::default()
    };
    for _ in 0..2 {
        s.app
            .client()
            .enqueue_json(None, "emails.send", &json!({}), opts.clone())
            .await
            .expect("enqueue");
    }
    assert_eq!(count(&s.app, "emails", JobState::Pending).await, 4);
    assert_eq!(count(&s.app, "emails", JobState::Scheduled).await, 2);

    let (status, v) = s
        .post_as(OPERATOR, "/api/v1/queues/emails/purge", json!({}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().expect("why").contains("confirm=yes"),
        "{v}"
    );
    assert_eq!(
        count(&s.app, "emails", JobState::Pending).await,
        4,
        "nothing went"
    );

    let (status, html) = s.get("/queues/emails/purge").await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("<strong>6</strong> waiting jobs of emails"),
        "{html}"
    );
    assert!(html.contains("4 pending and 2 scheduled"), "{html}");
    assert!(html.contains(r#"action="/api/v1/queues/emails/purge""#));
    assert!(html.contains(r#"name="confirm" value="yes""#));
    assert!(html.contains("Delete 6 waiting jobs"));

    let v = s
        .post("/api/v1/queues/emails/purge", json!({ "confirm": "yes" }))
        .await;
    assert_eq!(v["count"], 6, "{v}");
    assert_eq!(count(&s.app, "emails", JobState::Pending).await, 0);
    assert_eq!(count(&s.app, "emails", JobState::Scheduled).await, 0);
    assert!(event_kinds(&s.app)
        .await
        .iter()
        .any(|(k, q, m)| k == "admin.purge" && q.as_deref() == Some("emails") && m.contains('6')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_are_retried_by_selection_and_by_all_matching() {
    let s = serve_with(|b| b.task::<Boom>()).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            s.app
                .client()
                .enqueue::<Boom>(json!({ "n": i }))
                .await
                .expect("enqueue")
                .id(),
        );
    }
    let app = s.app.clone();
    work_until(&s.app, &["boom"], || {
        let app = app.clone();
        async move { count(&app, "boom", JobState::Dead).await == 6 }
    })
    .await;
    for id in &ids {
        assert_eq!(
            state_of(&s.app, *id).await,
            Some(JobState::Dead),
            "dead first"
        );
    }

    // The dead job's page: its last error and its death in the timeline.
    let v = s.json(&format!("/api/v1/jobs/{}", ids[0])).await;
    assert_eq!(v["state"], "dead");
    assert!(v["error"]["message"]
        .as_str()
        .expect("an error")
        .contains("connection refused by the upstream"));
    assert!(v["error"]["at"].is_i64(), "when it died: {v}");
    let timeline = v["timeline"].as_array().expect("a timeline");
    assert!(timeline.iter().any(|m| m["event"] == "job.dead"), "{v}");
    let (_, html) = s.get(&format!("/jobs/{}", ids[0])).await;
    assert!(
        html.contains(&format!(r#"action="/api/v1/jobs/{}/retry""#, ids[0])),
        "a retry button"
    );

    // The dead tab lists them; a selection of two goes back.
    let v = s.json("/api/v1/queues/boom?state=dead").await;
    assert_eq!(ids_of(&v).len(), 6);
    let (status, _) = s
        .post_as(
            VIEWER,
            "/api/v1/queues/boom/jobs/retry",
            json!({ "state": "dead", "id": [ids[0].to_string()] }),
        )
        .await;
    assert_eq!(status, 403);
    let v = s
        .post(
            "/api/v1/queues/boom/jobs/retry",
            json!({ "state": "dead", "id": [ids[0].to_string(), ids[1].to_string()] }),
        )
        .await;
    assert_eq!(v["count"], 2, "{v}");
    assert_eq!(state_of(&s.app, ids[0]).await, Some(JobState::Pending));
    assert_eq!(state_of(&s.app, ids[1]).await, Some(JobState::Pending));
    for id in &ids[2..] {
        assert_eq!(
            state_of(&s.app, *id).await,
            Some(JobState::Dead),
            "the others stay"
        );
    }

    // Retrying another state is refused.
    let (status, v) = s
        .post_as(
            OPERATOR,
            "/api/v1/queues/boom/jobs/retry",
            json!({ "state": "pending", "all": "yes" }),
        )
        .await;
    assert_eq!(status, 400, "{v}");

    // Everything matching: the other four.
    let v = s
        .post(
            "/api/v1/queues/boom/jobs/retry",
            json!({ "state": "dead", "all": "yes" }),
        )
        .await;
    assert_eq!(v["count"], 4, "{v}");
    assert_eq!(count(&s.app, "boom", JobState::Dead).await, 0);
    assert_eq!(count(&s.app, "boom", JobState::Pending).await, 6);
    for id in &ids {
        assert_eq!(state_of(&s.app, *id).await, Some(JobState::Pending));
    }
    let retries: Vec<_> = event_kinds(&s.app)
        .await
        .into_iter()
        .filter(|(k, q, _)| k == "admin.retry" && q.as_deref() == Some("boom"))
        .collect();
    assert_eq!(retries.len(), 2, "{retries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_cancelled_and_deleted_one_by_one_or_all_matching() {
    let s = common::serve().await;
    let ids = enqueue(&s.app, "emails", "emails.send", json!({}), 2).await;
    let (a, b) = (ids[0], ids[1]);
    assert_eq!(state_of(&s.app, a).await, Some(JobState::Pending));

    let (status, _) = s
        .post_as(VIEWER, &format!("/api/v1/jobs/{a}/cancel"), json!({}))
        .await;
    assert_eq!(status, 403);
    assert_eq!(state_of(&s.app, a).await, Some(JobState::Pending));

    let v = s.post(&format!("/api/v1/jobs/{a}/cancel"), json!({})).await;
    assert!(
        v["message"]
            .as_str()
            .expect("a message")
            .contains("cancelled"),
        "{v}"
    );
    assert_eq!(state_of(&s.app, a).await, Some(JobState::Cancelled));
    let (status, v) = s
        .post_as(OPERATOR, &format!("/api/v1/jobs/{a}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "already finished: {v}");
    let page = s.json(&format!("/api/v1/jobs/{a}")).await;
    assert!(
        page["timeline"]
            .as_array()
            .expect("a timeline")
            .iter()
            .any(|m| m["event"] == "admin.cancel"),
        "the cancel shows on the job's page: {page}"
    );

    s.post(&format!("/api/v1/jobs/{b}/delete"), json!({})).await;
    assert_eq!(state_of(&s.app, b).await, None, "deleted");
    let (status, html) = s.get(&format!("/jobs/{b}")).await;
    assert_eq!(status, 404);
    assert!(html.contains("no job"), "{html}");
    let (status, body) = s.get(&format!("/api/v1/jobs/{b}")).await;
    assert_eq!(status, 404);
    assert!(body.contains("\"error\""), "{body}");
    let kinds = event_kinds(&s.app).await;
    assert!(kinds
        .iter()
        .any(|(k, _, m)| k == "admin.cancel" && m.contains(&a.to_string())));
    assert!(kinds.iter().any(|(k, q, m)| k == "admin.delete"
        && q.as_deref() == Some("emails")
        && m.contains(&b.to_string())));

    // Everything matching: refused without the confirmation, done with it.
    let more = enqueue(&s.app, "emails", "emails.send", json!({}), 5).await;
    let (status, v) = s
        .post_as(
            OPERATOR,
            "/api/v1/queues/emails/jobs/cancel",
            json!({ "state": "pending", "all": "yes" }),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(count(&s.app, "emails", JobState::Pending).await, 5);
    let v = s
        .post(
            "/api/v1/queues/emails/jobs/delete",
            json!({ "state": "pending", "id": [more[0].to_string()] }),
        )
        .await;
    assert_eq!(v["count"], 1);
    let v = s
        .post(
            "/api/v1/queues/emails/jobs/cancel",
            json!({ "state": "pending", "all": "yes", "confirm": "yes" }),
        )
        .await;
    assert_eq!(v["count"], 4, "{v}");
    assert_eq!(count(&s.app, "emails", JobState::Pending).await, 0);
    assert_eq!(count(&s.app, "emails", JobState::Cancelled).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_finds_exactly_the_jobs_its_qualifiers_name() {
    let s = common::serve().await;
    let x_alpha = enqueue(&s.app, "alpha", "x", json!({}), 3).await;
    enqueue(&s.app, "alpha", "y", json!({}), 2).await;
    let x_beta = enqueue(&s.app, "beta", "x", json!({}), 2).await;
    let gone = enqueue(&s.app, "alpha", "x", json!({}), 1).await[0];
    s.app.client().cancel(gone).await.expect("cancel");
    assert_eq!(state_of(&s.app, gone).await, Some(JobState::Cancelled));

    let search = |query: &str| format!("/api/v1/jobs?{}", q(&[("q", query)]));
    let set = |ids: &[JobId]| ids.iter().map(JobId::to_string).collect::<BTreeSet<_>>();
    let found = |v: &Value| ids_of(v).into_iter().collect::<BTreeSet<_>>();

    let v = s.json(&search("task:x state:pending")).await;
    let want: Vec<JobId> = x_alpha.iter().chain(&x_beta).copied().collect();
    assert_eq!(found(&v), set(&want));
    assert_eq!(ids_of(&v).len(), 5);
    assert_eq!(v["search"]["task"], "x");
    let v = s.json(&search("task:x state:pending queue:alpha")).await;
    assert_eq!(found(&v), set(&x_alpha));
    let v = s.json(&search("task:x")).await;
    assert_eq!(
        found(&v),
        set(&want),
        "cancelled jobs are not among the default states"
    );
    assert_eq!(v["default_states"], true);
    let v = s.json(&search("task:x state:cancelled")).await;
    assert_eq!(found(&v), set(&[gone]));
    let v = s.json(&search(&format!("id:{gone}"))).await;
    assert_eq!(found(&v), set(&[gone]));

    let (status, html) = s
        .get(&format!("/jobs?{}", q(&[("q", "task:x state:pending")])))
        .await;
    assert_eq!(status, 200);
    for id in &want {
        assert!(html.contains(&format!(r#"href="/jobs/{id}""#)), "{html}");
    }
    assert!(html.contains("Qualifiers:"), "the help line");

    let (status, body) = s.get(&search("colour:red")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown qualifier `colour:`"), "{body}");
    let (status, html) = s.get(&format!("/jobs?{}", q(&[("q", "state:lost")]))).await;
    assert_eq!(status, 400);
    assert!(
        html.contains("`lost` is not a state") && html.contains(r#"name="q""#),
        "{html}"
    );

    // Pages across queues: every job once, through the cursor.
    enqueue(&s.app, "alpha", "z", json!({}), 60).await;
    enqueue(&s.app, "beta", "z", json!({}), 30).await;
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let mut query = vec![("q", "task:z")];
        if let Some(c) = &next {
            query.push(("cursor", c));
        }
        let v = s.json(&format!("/api/v1/jobs?{}", q(&query))).await;
        let page = ids_of(&v);
        sizes.push(page.len());
        seen.extend(page);
        match v["next"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => break,
        }
        assert!(sizes.len() < 10);
    }
    assert_eq!(sizes.first(), Some(&50), "{sizes:?}");
    assert_eq!(seen.len(), 90, "{sizes:?}");
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        90,
        "no job twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_page_redacts_arguments_and_gives_the_enqueue_command() {
    let s = common::serve().await;
    let args = json!({ "user": "ann", "password": "hunter2-secret", "note": "it's" });
    let mut headers = std::collections::BTreeMap::new();
    headers.insert("x-api-token".to_string(), "tok-secret-9".to_string());
    headers.insert("tenant".to_string(), "acme".to_string());
    let opts = JobOptions {
        queue: Some("emails".into()),
        headers,
        ..JobOptions::default()
    };
    let id = s
        .app
        .client()
        .enqueue_json(None, "emails.send", &args, opts)
        .await
        .expect("enqueue")
        .id();

    let (status, html) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("&quot;password&quot;: &quot;***&quot;"),
        "{html}"
    );
    assert!(!html.contains("hunter2"), "the password appears nowhere");
    assert!(!html.contains("tok-secret"), "nor the secret header");
    assert!(html.contains("acme"), "the other header shows");

    let (status, body) = s.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("hunter2") && !body.contains("tok-secret"),
        "{body}"
    );
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["arguments"]["password"], "***");
    assert_eq!(v["arguments"]["user"], "ann");
    assert_eq!(v["headers"]["tenant"], "acme");
    assert_eq!(v["headers_hidden"], 1);

    let shown = json!({ "user": "ann", "password": "***", "note": "it's" });
    let quoted = serde_json::to_string(&shown)
        .expect("JSON")
        .replace('\'', r"'\''");
    let expected = format!(
        "celeriac enqueue emails.send --args '{quoted}' --queue emails --priority 5 \
         --max-attempts 4 --unchecked"
    );
    assert_eq!(v["command"], expected.as_str());
    assert!(expected.contains(r#""note":"it'\''s""#), "{expected}");
    assert_eq!(v["command_redacted"], true);
    let escaped = expected.replace('&', "&amp;").replace('"', "&quot;");
    assert!(
        html.contains(&format!(
            r#"<pre class="cmd" id="enqueue-command">{escaped}</pre>"#
        )),
        "{html}"
    );
    assert!(html.contains(r#"data-copy="enqueue-command""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_is_drawn_with_the_jobs_it_ran() {
    let s = serve_with(|b| b.task::<Seq>().task::<Double>().task::<Collect>()).await;
    let flow = chain([
        Step::of::<Seq>(3).into(),
        chord(
            [
                map(Step::piped::<Double>()),
                Step::piped::<Collect>().into(),
            ],
            Step::piped::<Collect>(),
        ),
        Step::piped::<Collect>().into(),
    ]);
    let wf = flow.start(&s.app).await.expect("starts");
    let handle = wf.clone();
    let app = s.app.clone();
    work_until(&app, &["default"], || {
        let handle = handle.clone();
        async move {
            handle
                .info()
                .await
                .is_ok_and(|r| r.state != celeriac::backend::WorkflowState::Running)
        }
    })
    .await;
    let out: Value = wf
        .result(Duration::from_secs(1))
        .await
        .expect("it succeeded");
    assert_eq!(out, json!([[0, 2, 4], [0, 1, 2]]));

    // The jobs that ran, as the store has them.
    let page = s
        .app
        .backend()
        .list_jobs(JobQuery::new("default", JobState::Succeeded), None, 100)
        .await
        .expect("a listing");
    let ran: BTreeSet<String> = page
        .jobs
        .iter()
        .filter(|j| j.job.root_id == Some(wf.id()))
        .map(|j| j.job.id.to_string())
        .collect();
    assert_eq!(
        ran.len(),
        7,
        "seq, three doubles, collect, the chord's body, the last step"
    );

    let v = s.json(&format!("/api/v1/workflows/{}", wf.id())).await;
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["result"], out);
    let mut drawn = BTreeSet::new();
    let mut states = Vec::new();
    fn walk(v: &Value, ids: &mut BTreeSet<String>, states: &mut Vec<Value>) {
        match v {
            Value::Object(m) => {
                if let (Some(id), Some(state)) = (m.get("id"), m.get("state")) {
                    ids.insert(id.as_str().unwrap_or_default().to_string());
                    states.push(state.clone());
                }
                m.values().for_each(|x| walk(x, ids, states));
            }
            Value::Array(items) => items.iter().for_each(|x| walk(x, ids, states)),
            _ => {}
        }
    }
    walk(&v["graph"], &mut drawn, &mut states);
    assert_eq!(drawn, ran, "the page works out every job's id: {v}");
    assert!(states.iter().all(|st| st == "succeeded"), "{states:?}");
    assert_eq!(
        v["members_read"], 8,
        "seven jobs, and the map's fourth found missing"
    );

    let (status, html) = s.get(&format!("/workflows/{}", wf.id())).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"<div class="graph">"#));
    for id in &ran {
        assert!(html.contains(&format!(r#"href="/jobs/{id}""#)), "{html}");
    }
    // A step's page links to its workflow.
    let first = ran.iter().next().expect("a job");
    let (_, html) = s.get(&format!("/jobs/{first}")).await;
    assert!(
        html.contains(&format!(r#"href="/workflows/{}""#, wf.id())),
        "{html}"
    );
    let (status, _) = s.get(&format!("/api/v1/workflows/{}", JobId::new())).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_everything_matching_stops_the_workflows_of_cancelled_steps() {
    let s = serve_with(|b| b.task::<Seq>().task::<Collect>()).await;
    let wf = chain([Step::of::<Seq>(3).into(), Step::piped::<Collect>().into()])
        .start(&s.app)
        .await
        .expect("starts");
    let before = wf.info().await.expect("the record");
    assert_eq!(before.state, celeriac::backend::WorkflowState::Running);
    assert_eq!(
        count(&s.app, "default", JobState::Pending).await,
        1,
        "the first step waits"
    );
    let v = s
        .post(
            "/api/v1/queues/default/jobs/cancel",
            json!({ "state": "pending", "all": "yes", "confirm": "yes" }),
        )
        .await;
    assert_eq!(v["count"], 1, "{v}");
    let after = wf.info().await.expect("the record");
    assert_ne!(
        after.state,
        celeriac::backend::WorkflowState::Running,
        "a cancelled step ends its workflow, as one cancel does"
    );
}
