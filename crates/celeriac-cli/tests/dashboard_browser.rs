//! The dashboard in a real browser: headless Chromium ([`celeriac_testkit::Browser`]) against
//! real `celeriac` processes (`demo --dashboard`, `dashboard`, `worker`, `enqueue`) on a real
//! SQLite file in a temporary directory. Every wait is bounded and polls; every process is
//! killed when its guard drops, on every path.

mod common;

use celeriac_testkit::Browser;
use common::{enqueue, WorkerProc};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a process or a page may take to get somewhere on a busy machine.
const WAIT: Duration = Duration::from_secs(45);
/// How long `celeriac demo --jobs 300` may take to run its jobs and serve the dashboard.
const DEMO_WAIT: Duration = Duration::from_secs(120);
/// How often the waits look again.
const POLL: Duration = Duration::from_millis(100);

const OPERATOR_TOKEN: &str = "operator-token-0123456789abcdef";
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";

/// The variables that would change what a `celeriac` process does here.
const FOREIGN_VARS: &[&str] = &[
    "CELERIAC_URL",
    "CELERIAC_SCHEDULES",
    "CELERIAC_DASHBOARD",
    "CELERIAC_DASHBOARD_BIND",
    "CELERIAC_DASHBOARD_TOKEN",
    "CELERIAC_DASHBOARD_VIEWER_TOKEN",
    "CELERIAC_QUEUES",
    "CELERIAC_DEMO_JOBS",
];

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// A free loopback port (free when asked; nothing holds it afterwards).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binds a free port")
        .local_addr()
        .expect("has an address")
        .port()
}

/// A `celeriac` child process whose output is collected as it comes, killed when dropped.
struct Proc {
    what: String,
    child: Option<Child>,
    output: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `celeriac --url <url> <args>` in `dir`, with `env` and none of
    /// [`FOREIGN_VARS`] from this environment.
    fn spawn(url: &str, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac"));
        cmd.arg("--url").arg(url).args(args).current_dir(dir);
        for var in FOREIGN_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the celeriac binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut out) = output.lock() {
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
            });
        }
        Proc {
            what: format!("celeriac {}", args.join(" ")),
            child: Some(child),
            output,
        }
    }

    /// What it printed so far (stdout and stderr, interleaved by line).
    fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Its exit status, once it exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Waits until it exits (at most `within`) and returns its status.
    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` did not exit within {within:?}; it printed:\n{}",
                self.what,
                self.output()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `addr` takes connections (at most `within`), failing at once with the
    /// output if the process exits first.
    async fn wait_listening(&mut self, addr: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "`{}` exited ({status}) before {addr} answered; it printed:\n{}",
                    self.what,
                    self.output()
                );
            }
            if TcpStream::connect(addr).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} did not answer within {within:?}; `{}` printed:\n{}",
                self.what,
                self.output()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A temporary directory with a SQLite store in it.
struct Store {
    dir: TempDir,
    url: String,
}

fn store() -> Store {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = common::url_in(dir.path());
    Store { dir, url }
}

/// `celeriac dashboard --bind 127.0.0.1:<free port>` with `env`, once it answers; returns it
/// and its address.
async fn dashboard(s: &Store, env: &[(&str, &str)]) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut p = Proc::spawn(&s.url, &["dashboard", "--bind", &addr], env, s.dir.path());
    p.wait_listening(&addr, WAIT).await;
    (p, addr)
}

/// The demo's e-mail task (quick, succeeds), as `celeriac enqueue` arguments on `queue`.
fn email(i: usize) -> String {
    format!(r#"{{"to":"user{i}@example.com","subject":"hello","fail_times":0}}"#)
}

/// Enqueues `n` demo e-mails on `queue` with `celeriac enqueue`; returns their ids.
fn enqueue_emails(url: &str, queue: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            enqueue(
                url,
                &["demo.send_email", "--queue", queue, "--args", &email(i)],
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Plain HTTP to the dashboard's JSON twins
// ---------------------------------------------------------------------------------------

/// `GET path` on `addr` over a raw HTTP/1.1 connection, with an optional bearer token;
/// returns the status and the body.
fn http_get(addr: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connects to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("sets a read timeout");
    let auth = bearer.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("sends the request");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reads the answer");
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: not an HTTP answer: {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The JSON of `GET path` (which must answer 200).
fn api(addr: &str, path: &str, bearer: Option<&str>) -> Value {
    let (status, body) = http_get(addr, path, bearer);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// How many jobs of `queue` are in `state`, from `/api/v1/queues/<queue>`.
fn queue_count(addr: &str, queue: &str, state: &str, bearer: Option<&str>) -> u64 {
    let v = api(addr, &format!("/api/v1/queues/{queue}"), bearer);
    v["queue"]["counts"][state].as_u64().unwrap_or(0)
}

/// The events of `kind` about job `id`, from `/api/v1/events`.
fn job_events(addr: &str, kind: &str, id: &str) -> Vec<Value> {
    let v = api(addr, &format!("/api/v1/events?kind={kind}&q={id}"), None);
    v["events"]
        .as_array()
        .expect("the events are a list")
        .iter()
        .filter(|e| e["kind"] == kind && e["job"] == id)
        .cloned()
        .collect()
}

/// Polls `look` until it returns `Some` (at most `within`), then returns that.
async fn eventually<T>(what: &str, within: Duration, mut look: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = look() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------------------

/// A helper's result, or the test fails with its message.
fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

async fn browser() -> Browser {
    ok(Browser::start().await)
}

/// Polls the script `js` (a function body) until it returns something other than `null`
/// or `false` (at most `within`), and returns that.
async fn js_until(b: &Browser, what: &str, js: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = ok(b.execute(js).await);
        if !matches!(v, Value::Null | Value::Bool(false)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?} (`{js}`)"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the page's `h1` reads `title`.
async fn wait_h1(b: &Browser, title: &str) {
    let h1 = ok(b.wait_for_text("main h1", title, WAIT).await);
    assert_eq!(h1.trim(), title);
}

/// The page shows no error: neither a failure in place of its content nor a failed action's
/// notice (both are `.notice.bad` directly in `main`; a job's last error, shown as a bad
/// notice within its section, is content, not an error of the page).
async fn assert_no_error(b: &Browser, page: &str) {
    let errors = ok(b
        .execute(
            "return Array.from(document.querySelectorAll('main > .notice.bad'))\
             .map(e => e.textContent.trim());",
        )
        .await);
    assert_eq!(errors, Value::Array(vec![]), "{page} shows an error");
}

/// Opens `url`, waits for its title, checks it shows no error and takes a screenshot.
async fn visit(b: &Browser, url: &str, title: &str, shot: &str) {
    ok(b.goto(url).await);
    wait_h1(b, title).await;
    assert_no_error(b, url).await;
    let png = ok(b.screenshot(shot).await);
    println!("screenshot {shot}: {}", png.display());
}

/// Whether an element matches `css` now.
async fn exists(b: &Browser, css: &str) -> bool {
    let js = format!(
        "return document.querySelector({}) !== null;",
        js_string(css)
    );
    ok(b.execute(&js).await) == Value::Bool(true)
}

/// `text` as a JavaScript string literal.
fn js_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

// ---------------------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------------------

/// `celeriac demo --dashboard` serves the demo's data: the overview lists its queues and the
/// dead letters it reported, uPlot draws the chart under the content security policy, and
/// every main page renders without an error (each one screenshotted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_data_shows_on_every_page() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut demo = Proc::spawn(
        &url,
        &["demo", "--jobs", "300", "--dashboard", &addr],
        &[],
        dir.path(),
    );
    let line = "The dashboard shows the demo's data at";
    let deadline = Instant::now() + DEMO_WAIT;
    while !demo.output().contains(line) {
        if let Some(status) = demo.exited() {
            panic!("the demo exited ({status}):\n{}", demo.output());
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not serve its dashboard within {DEMO_WAIT:?}:\n{}",
            demo.output()
        );
        tokio::time::sleep(POLL).await;
    }
    demo.wait_listening(&addr, WAIT).await;
    let printed = demo.output();
    let dead: u64 = printed
        .lines()
        .find_map(|l| {
            l.strip_prefix("dead ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("the demo printed no dead letter count:\n{printed}"));
    assert!(dead > 0, "the demo makes dead letters:\n{printed}");
    let overview = api(&addr, "/api/v1/overview", None);
    assert_eq!(overview["dead"], dead, "the overview's JSON twin");

    let b = browser().await;
    let base = format!("http://{addr}");
    visit(&b, &format!("{base}/"), "Overview", "overview").await;
    let tile = ok(b.text_of("#dead-count").await);
    assert_eq!(tile.trim(), dead.to_string(), "the dead letters tile");
    for queue in ["emails", "images"] {
        assert!(
            exists(&b, &format!("#queue-health tr[data-queue=\"{queue}\"]")).await,
            "the overview lists the queue {queue}"
        );
    }
    // uPlot replaced the fallback with a canvas: the page's own scripts ran under its CSP.
    js_until(
        &b,
        "uPlot draws the overview's chart",
        "return document.querySelector('figure.chart[data-drawn] canvas') !== null;",
        WAIT,
    )
    .await;

    visit(&b, &format!("{base}/queues"), "Queues", "queues").await;
    assert!(exists(&b, "#queues tr[data-queue=\"emails\"]").await);
    visit(
        &b,
        &format!("{base}/queues/emails"),
        "Queue emails",
        "queue",
    )
    .await;
    visit(&b, &format!("{base}/jobs?q=state:dead"), "Jobs", "jobs").await;
    let rows = ok(b
        .execute("return document.querySelectorAll('table.jobs tbody tr[data-job]').length;")
        .await);
    assert_eq!(rows, dead, "the search finds every dead letter");

    // The first dead job, by its link (a boosted navigation: htmx swaps the page in).
    let id = ok(b
        .execute("return document.querySelector('table.jobs tbody tr[data-job]').dataset.job;")
        .await);
    let id = id.as_str().expect("a job id").to_string();
    ok(b.click("table.jobs tbody tr[data-job] td:first-child a")
        .await);
    wait_h1(&b, &format!("Job {id}")).await;
    assert_no_error(&b, "the dead job's page").await;
    let state = ok(b.text_of("section.summary > .badge").await);
    assert_eq!(state, "dead");
    println!(
        "screenshot job: {}",
        ok(b.screenshot("job").await).display()
    );

    visit(&b, &format!("{base}/dead"), "Dead letters", "dead").await;
    let summary = ok(b.text_of("#dead-summary").await);
    assert!(
        summary.starts_with(&format!("{dead} dead letters in ")),
        "{summary}"
    );
    for (path, title, shot) in [
        ("/schedules", "Schedules", "schedules"),
        ("/workers", "Workers", "workers"),
        ("/cache", "Cache", "cache"),
        ("/limits", "Rate limits", "limits"),
        ("/breakers", "Breakers", "breakers"),
        ("/events", "Events", "events"),
        ("/alerts", "Alerts", "alerts"),
        ("/settings", "Settings", "settings"),
    ] {
        visit(&b, &format!("{base}{path}"), title, shot).await;
    }
    ok(b.close().await);
}

/// Pausing a queue with its page's button stops the worker claiming from it, while it goes
/// on with another queue; resuming lets the jobs run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_queue_stops_claims() {
    let s = store();
    let (_dash, addr) = dashboard(&s, &[]).await;
    let _worker = WorkerProc::spawn_on(&s.url, "pause-worker", "mail,other", &[]);
    // A first job in each queue: the queues exist and the worker is seen to run.
    enqueue_emails(&s.url, "mail", 1);
    enqueue_emails(&s.url, "other", 1);
    eventually("the first jobs succeed", WAIT, || {
        (queue_count(&addr, "mail", "succeeded", None) == 1
            && queue_count(&addr, "other", "succeeded", None) == 1)
            .then_some(())
    })
    .await;

    let b = browser().await;
    ok(b.goto(&format!("http://{addr}/queues/mail")).await);
    wait_h1(&b, "Queue mail").await;
    assert!(!exists(&b, "section.summary .badge.paused").await);
    let button = "section.summary form.action button";
    assert_eq!(ok(b.text_of(button).await), "Pause");
    ok(b.click(button).await);
    ok(b.wait_for_text(button, "Resume", WAIT).await);
    assert!(exists(&b, "section.summary .badge.paused").await);
    let notice = ok(b.text_of("main > .notice").await);
    assert_eq!(notice, "paused mail");
    assert_eq!(
        api(&addr, "/api/v1/queues/mail", None)["queue"]["paused"],
        true
    );

    // The paused queue's jobs first: by the time the other queue's jobs ran, the worker had
    // every chance to claim them.
    enqueue_emails(&s.url, "mail", 5);
    enqueue_emails(&s.url, "other", 5);
    eventually("the other queue's jobs succeed", WAIT, || {
        (queue_count(&addr, "other", "succeeded", None) == 6).then_some(())
    })
    .await;
    let mail = api(&addr, "/api/v1/queues/mail", None);
    assert_eq!(
        mail["queue"]["counts"]["pending"], 5,
        "the paused queue's jobs wait: {mail}"
    );
    assert_eq!(mail["queue"]["counts"]["succeeded"], 1, "{mail}");

    ok(b.click(button).await);
    ok(b.wait_for_text(button, "Pause", WAIT).await);
    assert!(!exists(&b, "section.summary .badge.paused").await);
    eventually("the resumed queue's jobs succeed", WAIT, || {
        (queue_count(&addr, "mail", "succeeded", None) == 6).then_some(())
    })
    .await;
    ok(b.close().await);
}

/// A dead letter group's retry: the dry run counts it and changes nothing; confirmed, the
/// job runs again (and dies again: a second `job.dead` event, a later end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_group_retried_runs_again() {
    let s = store();
    let (_dash, addr) = dashboard(&s, &[]).await;
    let _worker = WorkerProc::spawn_on(&s.url, "dlq-worker", "default", &[]);
    // The demo's partner API is down: every attempt fails, and the job dies.
    let id = enqueue(&s.url, &["demo.sync_inventory", "--args", "7"]);
    let job = eventually("the job dies", WAIT, || {
        let v = api(&addr, &format!("/api/v1/jobs/{id}"), None);
        (v["state"] == "dead").then_some(v)
    })
    .await;
    let first_end = job["finished_at"].as_i64().expect("a dead job has ended");
    let deaths = eventually("its death is in the event stream", WAIT, || {
        let e = job_events(&addr, "job.dead", &id);
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(deaths.len(), 1);

    let b = browser().await;
    ok(b.goto(&format!("http://{addr}/dead")).await);
    wait_h1(&b, "Dead letters").await;
    let row = ok(b
        .execute(
            "return Array.from(document.querySelectorAll('#dead-groups tr[data-group]'))\
             .filter(r => r.textContent.includes('demo.sync_inventory'))\
             .map(r => r.dataset.group);",
        )
        .await);
    let groups = row.as_array().expect("a list");
    assert_eq!(groups.len(), 1, "one group of the partner API's deaths");
    let group = groups[0].as_str().expect("a group id");
    ok(b.click(&format!(
        "#dead-groups tr[data-group=\"{group}\"] td.ops a[href*=\"/retry\"]"
    ))
    .await);
    wait_h1(&b, "Retry dead letters").await;
    assert_no_error(&b, "the dry run").await;
    assert_eq!(ok(b.text_of("#retry-count").await), "1");
    let plan = ok(b.text_of("#retry-plan").await);
    assert!(
        plan.starts_with("1 dead letters of group") && plan.contains("would go back to pending"),
        "{plan}"
    );
    // The dry run changed nothing.
    let still = api(&addr, &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(still["state"], "dead");
    assert_eq!(still["finished_at"], first_end);
    assert_eq!(job_events(&addr, "job.dead", &id).len(), 1);

    let button = "div.actions form.action button";
    assert_eq!(ok(b.text_of(button).await), "Retry 1 dead letters");
    ok(b.click(button).await);
    wait_h1(&b, "Dead letters").await;
    let notice = ok(b.text_of("main > .notice").await);
    assert!(notice.starts_with("1 dead letters of group"), "{notice}");
    assert_no_error(&b, "the dead letters page after the retry").await;

    // It ran again: it died a second time, later.
    eventually("the retried job dies again", WAIT, || {
        (job_events(&addr, "job.dead", &id).len() == 2).then_some(())
    })
    .await;
    let again = eventually("the job is dead again", WAIT, || {
        let v = api(&addr, &format!("/api/v1/jobs/{id}"), None);
        (v["state"] == "dead").then_some(v)
    })
    .await;
    assert!(
        again["finished_at"].as_i64().expect("ended") > first_end,
        "a later end: {again}"
    );
    assert_eq!(
        again["attempts"], job["attempts"],
        "fresh attempts, all used"
    );
    ok(b.close().await);
}

/// A job cancelled with its page's button ends cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_from_its_page_ends_cancelled() {
    let s = store();
    let (_dash, addr) = dashboard(&s, &[]).await;
    let id = enqueue(
        &s.url,
        &["demo.send_email", "--args", &email(0), "--delay", "1h"],
    );
    let job = format!("/api/v1/jobs/{id}");
    assert_eq!(api(&addr, &job, None)["state"], "scheduled");

    let b = browser().await;
    ok(b.goto(&format!("http://{addr}/jobs/{id}")).await);
    wait_h1(&b, &format!("Job {id}")).await;
    assert_eq!(ok(b.text_of("section.summary > .badge").await), "scheduled");
    ok(b.accept_confirms().await);
    ok(
        b.click("section.summary form.action[action$=\"/cancel\"] button")
            .await,
    );
    ok(
        b.wait_for_text("section.summary > .badge", "cancelled", WAIT)
            .await,
    );
    let notice = ok(b.text_of("main > .notice").await);
    assert!(notice.starts_with(&format!("cancelled {id}")), "{notice}");
    assert!(
        !exists(&b, "section.summary form.action[action$=\"/cancel\"]").await,
        "no Cancel button on a cancelled job"
    );
    assert_eq!(api(&addr, &job, None)["state"], "cancelled");
    ok(b.close().await);
}

/// A shared breaker forced open from the breakers page is open for `celeriac breaker` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_forced_open_shows_open() {
    let s = store();
    let (_dash, addr) = dashboard(&s, &[]).await;
    let status = || {
        let out = common::celeriac(&s.url, &["breaker", "status", "partner-api", "--json"]);
        assert!(out.status.success(), "{}", common::stderr(&out));
        serde_json::from_str::<Value>(&common::stdout(&out)).expect("JSON")
    };
    assert_eq!(status()["state"], Value::Null, "no record before");

    let b = browser().await;
    ok(b.goto(&format!("http://{addr}/breakers?name=partner-api"))
        .await);
    wait_h1(&b, "Breakers").await;
    let cell = "#breakers tr[data-breaker=\"partner-api\"] td.state";
    let before = ok(b.text_of(cell).await);
    assert!(before.starts_with("closed"), "{before}");
    ok(b.accept_confirms().await);
    ok(b.click(
        "#breakers tr[data-breaker=\"partner-api\"] form.action[action$=\"/force-open\"] button",
    )
    .await);
    ok(b.wait_for_text(cell, "forced_open", WAIT).await);
    assert_no_error(&b, "the breakers page").await;

    assert_eq!(status()["state"], "forced_open");
    let page = api(&addr, "/api/v1/breakers?name=partner-api", None);
    let row = page["breakers"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["name"] == "partner-api")
        .cloned()
        .expect("the breaker asked for");
    assert_eq!(row["state"], "forced_open", "{row}");
    ok(b.close().await);
}

/// The overview's live part brings a new queue in without reloading the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_update_arrives_without_a_reload() {
    let s = store();
    let (_dash, addr) = dashboard(&s, &[]).await;
    let b = browser().await;
    ok(b.goto(&format!("http://{addr}/")).await);
    wait_h1(&b, "Overview").await;
    let fresh = "tr[data-queue=\"fresh\"]";
    assert!(!exists(&b, fresh).await, "no queue `fresh` yet");
    ok(b.execute("window.__stay = 42;").await);

    enqueue_emails(&s.url, "fresh", 3);
    js_until(
        &b,
        "the live part shows the queue `fresh`",
        &format!(
            "return document.querySelector({}) !== null;",
            js_string(fresh)
        ),
        Duration::from_secs(30),
    )
    .await;
    let pending = ok(b.text_of(&format!("{fresh} td.pending")).await);
    assert_eq!(pending, "3");
    assert_eq!(
        ok(b.execute("return window.__stay;").await),
        42,
        "the page was not reloaded"
    );
    let updated = ok(b
        .execute("return document.querySelector('div.live').getAttribute('data-updated');")
        .await);
    assert!(
        updated.as_str().is_some_and(|t| t.parse::<u64>().is_ok()),
        "the live part says when it was updated: {updated}"
    );
    ok(b.close().await);
}

/// A viewer signs in, sees the actions disabled, and is refused one submitted anyway; the
/// queue stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_is_refused_an_action() {
    let s = store();
    let (_dash, addr) = dashboard(
        &s,
        &[
            ("CELERIAC_DASHBOARD_TOKEN", OPERATOR_TOKEN),
            ("CELERIAC_DASHBOARD_VIEWER_TOKEN", VIEWER_TOKEN),
        ],
    )
    .await;
    enqueue_emails(&s.url, "vq", 1);
    let (status, _) = http_get(&addr, "/api/v1/queues/vq", None);
    assert_eq!(status, 401, "the API needs a token");

    let b = browser().await;
    ok(b.goto(&format!("http://{addr}/")).await);
    let here = b.client().current_url().await.expect("a URL");
    assert_eq!(here.path(), "/login", "sent to sign in: {here}");
    assert_eq!(ok(b.text_of("form.login h1").await), "Celeriac");
    println!(
        "screenshot login: {}",
        ok(b.screenshot("login").await).display()
    );

    ok(b.fill("#token", "not-a-token-of-this-dashboard").await);
    ok(b.click("form.login button[type=submit]").await);
    ok(
        b.wait_for_text("form.login", "That token opens nothing.", WAIT)
            .await,
    );
    ok(b.fill("#token", VIEWER_TOKEN).await);
    ok(b.click("form.login button[type=submit]").await);
    ok(b.wait_for_text("header.top .who", "viewer", WAIT).await);
    wait_h1(&b, "Overview").await;

    ok(b.goto(&format!("http://{addr}/queues")).await);
    wait_h1(&b, "Queues").await;
    let form = "#queues tr[data-queue=\"vq\"] form.action";
    assert_eq!(ok(b.text_of(&format!("{form} button")).await), "Pause");
    let disabled = ok(b
        .execute(&format!(
            "return document.querySelector({}).disabled;",
            js_string(&format!("{form} button"))
        ))
        .await);
    assert_eq!(disabled, true, "a viewer's Pause button is disabled");

    // Submitted anyway (a plain form submission, as without script).
    ok(b.execute(&format!(
        "document.querySelector({}).submit();",
        js_string(form)
    ))
    .await);
    ok(b.wait_for_text("body", "viewers may not act", WAIT).await);

    let q = api(&addr, "/api/v1/queues/vq", Some(OPERATOR_TOKEN));
    assert_eq!(q["queue"]["paused"], false, "the queue was not paused: {q}");
    assert_eq!(q["queue"]["counts"]["pending"], 1);
    let admin = api(&addr, "/api/v1/events?kind=admin.", Some(OPERATOR_TOKEN));
    assert_eq!(admin["events"], Value::Array(vec![]), "nothing was done");
    ok(b.close().await);
}

/// Off loopback, the dashboard refuses to start without authentication, and starts with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_bind_without_auth_is_refused() {
    let s = store();
    let bind = format!("0.0.0.0:{}", free_port());
    let mut refused = Proc::spawn(&s.url, &["dashboard", "--bind", &bind], &[], s.dir.path());
    let status = refused.wait_exit(WAIT).await;
    assert!(!status.success(), "it must refuse: {}", refused.output());
    let said = refused.output();
    assert!(said.contains("CELERIAC_DASHBOARD_TOKEN"), "{said}");
    assert!(
        said.contains(&bind),
        "the message names the address: {said}"
    );

    let port = free_port();
    let bind = format!("0.0.0.0:{port}");
    let mut served = Proc::spawn(
        &s.url,
        &["dashboard", "--bind", &bind],
        &[("CELERIAC_DASHBOARD_TOKEN", OPERATOR_TOKEN)],
        s.dir.path(),
    );
    let addr = format!("127.0.0.1:{port}");
    served.wait_listening(&addr, WAIT).await;
    let (status, _) = http_get(&addr, "/api/v1/overview", None);
    assert_eq!(status, 401, "it asks for the token");
    let overview = api(&addr, "/api/v1/overview", Some(OPERATOR_TOKEN));
    assert_eq!(overview["dead"], 0);

    // Its sign-in page, in a browser.
    let b = browser().await;
    ok(b.goto(&format!("http://{addr}/queues")).await);
    let here = b.client().current_url().await.expect("a URL");
    assert_eq!(here.path(), "/login", "{here}");
    assert_eq!(here.query(), Some("next=%2Fqueues"), "{here}");
    ok(b.close().await);
}

/// A page that answers with an error status shows when a click leads to it, as it would
/// without script: a search that does not read, and a dead letter group's "Retry…" on a page
/// that went stale (the group was retried meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_page_shows_after_a_click() {
    let s = store();
    let (_dash, addr) = dashboard(&s, &[]).await;
    let worker = WorkerProc::spawn_on(&s.url, "stale-worker", "default", &[]);
    // A task no worker knows: it dies at its first attempt.
    let id = enqueue(&s.url, &["demo.unheard_of", "--unchecked"]);
    eventually("the job dies", WAIT, || {
        (api(&addr, &format!("/api/v1/jobs/{id}"), None)["state"] == "dead").then_some(())
    })
    .await;
    drop(worker);

    let b = browser().await;
    ok(b.goto(&format!("http://{addr}/jobs")).await);
    wait_h1(&b, "Jobs").await;
    assert_no_error(&b, "the search").await;
    ok(b.fill("form.search input[name=q]", "state:bogus").await);
    ok(b.click("form.search button").await);
    let alert = ok(b.wait_for_text("main > .notice.bad", "bogus", WAIT).await);
    assert!(alert.contains("not a state"), "{alert}");
    let here = b.client().current_url().await.expect("a URL");
    assert_eq!(here.query(), Some("q=state%3Abogus"), "{here}");

    ok(b.goto(&format!("http://{addr}/dead")).await);
    wait_h1(&b, "Dead letters").await;
    let retry = "#dead-groups td.ops a[href*=\"/retry\"]";
    assert!(exists(&b, retry).await, "the group is listed");
    // Someone else retries it meanwhile (no worker runs it: it stays pending).
    let out = common::celeriac(&s.url, &["dlq", "retry", &id]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    ok(b.click(retry).await);
    wait_h1(&b, "Retry dead letters").await;
    let alert = ok(b.text_of("main > .notice.bad").await);
    assert!(alert.contains("no dead letters in group"), "{alert}");
    ok(b.close().await);
}
