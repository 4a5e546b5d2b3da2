//! No command prints the store's password. Every subcommand of `celeriac` runs against a
//! Redis that requires one (the default user's, and an ACL user's), with the password in the
//! URL (on the command line or in `CELERIAC_URL`) and debug logs on; so do the error paths (a
//! wrong password, an unknown scheme, an unreachable port, a bad parameter, malformed URLs).
//! Each run must really have run (its exit status and output say so), and neither its standard
//! output nor its standard error (where the logs go) may hold either password; where the URL
//! is shown, it shows `***` in the password's place. The `Debug` output of the settings, the
//! application and the backend masks it too.

mod common;

use celeriac_testkit::RedisServer;
use common::sigterm;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default user's password (`requirepass`).
const PASSWORD: &str = "Zx9-secret-Pw-7731";
/// The ACL user's.
const ACL_USER: &str = "celeriac-app";
const ACL_PASSWORD: &str = "Qr4-acl-Pw-5518";
/// Parts of the passwords that no output may hold either (a password cut in two is leaked
/// too).
const FRAGMENTS: [&str; 4] = ["secret-Pw", "Pw-7731", "acl-Pw", "Pw-5518"];

/// The subcommands this file runs (`help` aside), checked against `celeriac --help`.
const COVERED: [&str; 26] = [
    "worker",
    "beat",
    "schedules",
    "enqueue",
    "inspect",
    "cancel",
    "jobs",
    "events",
    "workers",
    "stats",
    "alerts",
    "health",
    "queues",
    "pause",
    "resume",
    "purge",
    "dlq",
    "cache",
    "tasks",
    "demo",
    "dashboard",
    "breaker",
    "bench",
    "limits",
    "redis-acl",
    "help",
];

/// A Redis with both users: the default one behind [`PASSWORD`], and [`ACL_USER`].
async fn server() -> RedisServer {
    RedisServer::builder()
        .password(PASSWORD)
        .acl_user(ACL_USER, ACL_PASSWORD)
        .start()
        .await
        .expect("redis-server starts")
}

/// The default user's URL.
fn default_user_url(server: &RedisServer) -> String {
    format!("redis://:{PASSWORD}@127.0.0.1:{}", server.port())
}

/// The ACL user's URL.
fn acl_url(server: &RedisServer) -> String {
    let url = server.url();
    assert_eq!(
        url,
        format!(
            "redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{}",
            server.port()
        )
    );
    url
}

/// `celeriac` with debug logs, as root may run it, confirming without asking, and with no
/// other `CELERIAC_*` setting from the environment.
fn celeriac() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac"));
    for (name, _) in std::env::vars() {
        if name.starts_with("CELERIAC_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("CELERIAC_LOG", "debug")
        .env("CELERIAC_ALLOW_ROOT", "true")
        .env("CELERIAC_YES", "true")
        .env("NO_COLOR", "1");
    cmd
}

/// Fails if `text` holds a password or a part of one.
fn assert_no_secret(what: &str, text: &str) {
    for secret in [PASSWORD, ACL_PASSWORD].iter().chain(FRAGMENTS.iter()) {
        assert!(
            !text.contains(secret),
            "`{what}` printed the password ({secret}):\n{text}"
        );
    }
}

/// One finished run: its output, checked for secrets.
struct Ran {
    what: String,
    out: Output,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn of(what: String, out: Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_no_secret(&what, &stdout);
        assert_no_secret(&what, &stderr);
        Ran {
            what,
            out,
            stdout,
            stderr,
        }
    }

    /// Asserts the run succeeded; returns it.
    fn ok(self) -> Self {
        assert!(
            self.out.status.success(),
            "`{}` failed ({:?}):\n{}\n{}",
            self.what,
            self.out.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts the run failed with the one-line error of the command line; returns it.
    fn refused(self) -> Self {
        assert_eq!(
            self.out.status.code(),
            Some(1),
            "`{}` should fail:\n{}\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.lines().any(|l| l.starts_with("error: ")),
            "`{}` says what went wrong:\n{}",
            self.what,
            self.stderr
        );
        self
    }

    /// Asserts standard output holds `part`; returns the run.
    fn says(self, part: &str) -> Self {
        assert!(
            self.stdout.contains(part),
            "`{}` should print `{part}`:\n{}\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `celeriac --url <url> <args>` to the end.
fn run(url: &str, args: &[&str]) -> Ran {
    let out = celeriac()
        .arg("--url")
        .arg(url)
        .args(args)
        .output()
        .expect("the celeriac binary runs");
    Ran::of(args.join(" "), out)
}

/// A command that runs until stopped, its output collected as it comes.
struct Running {
    what: String,
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    /// Starts `celeriac <args>` with the URL in `CELERIAC_URL`.
    fn start(url: &str, args: &[&str]) -> Self {
        let mut child = celeriac()
            .env("CELERIAC_URL", url)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the celeriac binary starts");
        let collect = |pipe: Box<dyn Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut t) = sink.lock() {
                        t.push_str(&line);
                        t.push('\n');
                    }
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().expect("piped")));
        let stderr = collect(Box::new(child.stderr.take().expect("piped")));
        Running {
            what: args.join(" "),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    fn text(&self) -> (String, String) {
        let read = |t: &Arc<Mutex<String>>| t.lock().map(|t| t.clone()).unwrap_or_default();
        (read(&self.stdout), read(&self.stderr))
    }

    /// Waits (at most 60 s) until its standard output or error holds `part`.
    fn wait_for(&self, part: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (out, err) = self.text();
            assert_no_secret(&self.what, &out);
            assert_no_secret(&self.what, &err);
            if out.contains(part) || err.contains(part) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` did not print `{part}`:\n{out}\n{err}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 60 s) for it to exit by itself; returns the run.
    fn wait_exit(mut self) -> Ran {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("try_wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "`{}` did not exit by itself",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.finish(child)
    }

    /// Stops it with SIGTERM; returns the run.
    fn stop(mut self) -> Ran {
        let child = self.child.take().expect("running");
        sigterm(child.id());
        self.finish(child)
    }

    fn finish(&self, mut child: Child) -> Ran {
        let status = child.wait().expect("exits");
        // The readers end with the pipes; give them a moment to take the last lines.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.stdout) + Arc::strong_count(&self.stderr) > 2
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (stdout, stderr) = self.text();
        Ran::of(
            self.what.clone(),
            Output {
                status,
                stdout: stdout.into_bytes(),
                stderr: stderr.into_bytes(),
            },
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string()
}

/// The body of `GET http://addr/path`, which must answer 200.
fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connects");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("sends");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reads");
    assert!(reply.starts_with("HTTP/1.1 200"), "{path}: {reply}");
    assert_no_secret(path, &reply);
    reply
}

/// The dashboard's settings page and its JSON show the store's URL with `***` for the
/// password, and not the password.
fn dashboard_shows_the_url_masked(addr: &str, masked: &str) {
    let page = get(addr, "/settings");
    assert!(
        page.contains(masked),
        "the settings page shows {masked}: {page}"
    );
    let api = get(addr, "/api/v1/settings");
    assert!(
        api.contains(masked),
        "the settings JSON shows {masked}: {api}"
    );
}

/// Waits (at most 60 s) until `check` holds for the output of `celeriac <args>`.
fn wait_until(url: &str, args: &[&str], check: impl Fn(&str) -> bool) -> Ran {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ran = run(url, args);
        if ran.out.status.success() && check(&ran.stdout) {
            return ran;
        }
        assert!(
            Instant::now() < deadline,
            "`{}` never printed what was expected:\n{}\n{}",
            ran.what,
            ran.stdout,
            ran.stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every command an operator runs, on a Redis reached as the ACL user: enqueueing, a worker
/// serving HTTP and the dashboard, the scheduler, health checks, the listings, the dead
/// letters, bulk actions, caches, limits, breakers, remote control, and the help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_keeps_the_password_out_of_its_output_and_logs() {
    let server = server().await;
    let url = acl_url(&server);
    let masked = format!("{ACL_USER}:***@127.0.0.1:{}", server.port());
    let dir = tempfile::tempdir().expect("tempdir");

    // The help, with the URL in the environment: clap would show the variable's value.
    let help = celeriac()
        .env("CELERIAC_URL", &url)
        .arg("--help")
        .output()
        .expect("runs");
    Ran::of("--help".into(), help).ok().says("Usage:");
    let help = celeriac()
        .env("CELERIAC_URL", &url)
        .args(["worker", "--help"])
        .output()
        .expect("runs");
    Ran::of("worker --help".into(), help)
        .ok()
        .says("CELERIAC_URL");

    run(&url, &["tasks"]).ok().says("demo.send_email");
    let ok_id = run(
        &url,
        &[
            "enqueue",
            "demo.send_email",
            "--args",
            r#"{"to":"a@example.com","subject":"hi","fail_times":0}"#,
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    let doomed = run(
        &url,
        &[
            "enqueue",
            "demo.send_email",
            "--args",
            r#"{"to":"b@example.com","subject":"no","fail_times":9}"#,
            "--max-attempts",
            "1",
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    let later = run(
        &url,
        &[
            "enqueue",
            "demo.send_email",
            "--args",
            r#"{"to":"c@example.com","subject":"later","fail_times":0}"#,
            "--delay",
            "1h",
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    run(&url, &["inspect", &ok_id]).ok().says("demo.send_email");
    run(&url, &["cancel", &later]).ok();
    run(&url, &["queues"]).ok().says("emails");

    // A worker with its HTTP side and the dashboard.
    let schedules = dir.path().join("schedules.toml");
    std::fs::write(
        &schedules,
        "[[schedule]]\nname = \"tick\"\nevery = \"1s\"\ntask = \"demo.send_email\"\n\
         args = { to = \"ops@example.com\", subject = \"tick\", fail_times = 0 }\n",
    )
    .expect("writes the schedules");
    let schedules = schedules.to_str().expect("a UTF-8 path");
    let (http, board) = (free_addr(), free_addr());
    let worker = Running::start(
        &url,
        &[
            "worker",
            "--worker-id",
            "sec-worker",
            "--queues",
            "emails,default",
            "--registry-refresh",
            "200ms",
            "--http",
            &http,
            "--dashboard",
            &board,
        ],
    );
    worker.wait_for("worker started");
    wait_until(&url, &["dlq", "list"], |out| out.contains(&doomed));
    let ran = run(&url, &["health", "--http", &http, "--deep"]);
    ran.ok().says("\"ready\": true");
    run(&url, &["health", "--http", &http, "--live"]).ok();
    dashboard_shows_the_url_masked(&board, &masked);
    get(&http, "/metrics");

    let beat = Running::start(
        &url,
        &["beat", "--schedules", schedules, "--beat-lease", "2s"],
    );
    beat.wait_for(" fired ");
    run(&url, &["schedules", "--schedules", schedules])
        .ok()
        .says("tick");
    run(
        &url,
        &["schedules", "--schedules", schedules, "pause", "tick"],
    )
    .ok();
    run(
        &url,
        &["schedules", "--schedules", schedules, "resume", "tick"],
    )
    .ok();
    let beat = beat.stop().ok().says("beat stopped:");
    drop(beat);

    let events = Running::start(&url, &["events", "--follow"]);
    events.wait_for(&doomed);
    run(&url, &["pause", "default"]).ok().says("paused default");
    run(&url, &["resume", "default"]).ok();
    events.stop();

    wait_until(&url, &["workers"], |out| out.contains("sec-worker"));
    run(&url, &["stats"]).ok();
    run(&url, &["alerts"]).ok();
    run(&url, &["alerts", "export", "--prometheus"]).ok();
    run(&url, &["dlq", "groups"]).ok().says("demo.send_email");
    run(
        &url,
        &["jobs", "list", "--queue", "emails", "--state", "dead"],
    )
    .ok()
    .says(&doomed);
    run(&url, &["dlq", "retry", &doomed]).ok();
    wait_until(&url, &["dlq", "list"], |out| out.contains(&doomed));
    run(
        &url,
        &[
            "jobs", "retry", "--queue", "emails", "--state", "dead", "--yes",
        ],
    )
    .ok();
    wait_until(&url, &["dlq", "list"], |out| out.contains(&doomed));
    run(
        &url,
        &[
            "jobs", "delete", "--queue", "emails", "--state", "dead", "--yes",
        ],
    )
    .ok();
    run(
        &url,
        &[
            "jobs", "cancel", "--queue", "emails", "--state", "pending", "--yes",
        ],
    )
    .ok();
    run(&url, &["dlq", "purge"]).ok();
    run(&url, &["purge", "emails"]).ok();
    run(&url, &["cache", "warm", "products", "--keys", "p1,p2"])
        .ok()
        .says("warmed products");
    run(&url, &["cache", "stats"]).ok();
    run(&url, &["limits", "check", "user-1", "--limit", "10/s"])
        .ok()
        .says("allowed");
    run(&url, &["breaker", "status", "partner"]).ok();
    run(&url, &["breaker", "force-open", "partner"]).ok();
    run(&url, &["breaker", "force-closed", "partner"]).ok();
    run(&url, &["breaker", "reset", "partner"]).ok();
    run(&url, &["redis-acl"]).ok().says("ACL SETUSER");

    run(&url, &["workers", "quiet", "sec-worker"]).ok();
    run(&url, &["workers", "stop", "sec-worker"]).ok();
    worker.wait_exit().ok().says("worker stopped:");

    let board = free_addr();
    let dashboard = Running::start(&url, &["dashboard", "--bind", &board]);
    dashboard.wait_for("dashboard on http://");
    dashboard_shows_the_url_masked(&board, &masked);
    dashboard.stop();
}

/// The benchmarks and the demo print the store's URL in their banners and reports: with
/// `***` for the password. Tiny counts keep them short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmarks_and_the_demo_show_the_url_masked() {
    let server = server().await;
    let url = default_user_url(&server);
    let masked = format!("redis://:***@127.0.0.1:{}", server.port());
    let jobs = [
        "bench",
        "--jobs",
        "50",
        "--batch",
        "10",
        "--concurrency",
        "4",
        "--latency-samples",
        "3",
    ];
    run(&url, &jobs)
        .ok()
        .says(&format!("backend        {masked}"));
    let json = run(&url, &[&jobs[..], &["--json"]].concat()).ok();
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(report["url"], masked.as_str(), "{report}");
    assert_eq!(report["jobs"], 50, "{report}");

    let cache = [
        "bench",
        "cache",
        "--gets",
        "200",
        "--keys",
        "10",
        "--concurrency",
        "2",
        "--stampede-processes",
        "2",
        "--stampede-gets",
        "3",
    ];
    run(&url, &cache)
        .ok()
        .says(&format!("Celeriac cache benchmark on {masked}"))
        .says("stampede     2 processes");
    run(&url, &[&cache[..], &["--json"]].concat())
        .ok()
        .says("\"stampede_loader_calls\": 1");

    run(
        &url,
        &[
            "bench",
            "limits",
            "--decisions",
            "100",
            "--local-decisions",
            "100",
            "--layer-requests",
            "100",
            "--layer-store-requests",
            "100",
            "--keys",
            "10",
            "--concurrency",
            "2",
        ],
    )
    .ok()
    .says(&format!("Celeriac rate limit benchmark on {masked}"));
    run(
        &url,
        &[
            "bench",
            "monitor",
            "--jobs",
            "20",
            "--queue-count",
            "2",
            "--batch",
            "10",
        ],
    )
    .ok()
    .says("backend          Redis");
    run(&url, &["bench", "breaker", "--calls", "1000"])
        .ok()
        .says("bare call");

    run(&url, &["demo", "--jobs", "20"])
        .ok()
        .says(&format!("Celeriac demo on {masked}"))
        .says("processed");
}

/// What goes wrong with a URL is said without the password: a wrong password (the default
/// user's and an ACL user's), an unknown scheme, an unreachable port, unknown and secret-named
/// parameters, and malformed URLs, through every way a command opens the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_fail_without_quoting_the_password() {
    let server = server().await;
    let port = server.port();
    let unreachable = free_addr();
    let wrong_default = format!("redis://:wrong-{PASSWORD}@127.0.0.1:{port}");
    let wrong_acl = format!("redis://{ACL_USER}:wrong-{ACL_PASSWORD}@127.0.0.1:{port}");
    let wrong_user = format!("redis://nobody:{ACL_PASSWORD}@127.0.0.1:{port}");
    // Each bad URL, and what its error must say.
    let cases = [
        (wrong_default.clone(), "authentication"),
        (wrong_acl.clone(), "authentication"),
        (wrong_user.clone(), "authentication"),
        (
            format!("rediss+foo://u:{PASSWORD}@127.0.0.1:{port}"),
            "unknown backend URL scheme in `rediss+foo://u:***@127.0.0.1",
        ),
        (format!("redis://:{PASSWORD}@{unreachable}"), "refused"),
        (
            format!("redis://:{PASSWORD}@127.0.0.1:{port}?bogus=1"),
            "unknown Redis URL parameter `bogus`",
        ),
        (
            format!("redis://127.0.0.1:{port}?password={PASSWORD}"),
            "unknown Redis URL parameter `password`",
        ),
        (
            format!("redis://:{PASSWORD}@127.0.0.1:{port}?tls={PASSWORD}"),
            "url: tls",
        ),
        (
            format!("redis:/:{PASSWORD}@127.0.0.1:{port}"),
            "`redis:***@127.0.0.1",
        ),
        (
            format!("redis://u:{PASSWORD}@"),
            "`redis://u:***@` names no host",
        ),
        (
            format!("redis://u:a?{PASSWORD}@127.0.0.1:{port}"),
            "`redis://u:***@127.0.0.1",
        ),
        (
            format!("redis://u:{PASSWORD}@127.0.0.1:{port}/{PASSWORD}"),
            "database number",
        ),
        (format!("u:{PASSWORD}@127.0.0.1:{port}"), "u:***@127.0.0.1"),
        (PASSWORD.to_string(), "no scheme"),
    ];
    // Every way a command opens the store, with a wrong password and an unreachable port.
    let unreachable = format!("redis://:{PASSWORD}@{unreachable}");
    let board = free_addr();
    let commands: [&[&str]; 12] = [
        &["worker", "--queues", "emails"],
        &["beat"],
        &["enqueue", "demo.send_email", "--args", "{}"],
        &["dlq", "list"],
        &["limits", "check", "k", "--limit", "1/s"],
        &["breaker", "status", "partner"],
        &["dashboard", "--bind", &board],
        &["bench", "--jobs", "1", "--latency-samples", "1"],
        &["bench", "cache", "--gets", "1"],
        &["bench", "limits", "--decisions", "1"],
        &["bench", "monitor", "--jobs", "1"],
        &["demo", "--jobs", "1"],
    ];
    let mut runs: Vec<(String, &[&str], &str)> = cases
        .iter()
        .map(|(url, says)| (url.clone(), &["queues"][..], *says))
        .collect();
    for url in [&wrong_default, &wrong_acl, &unreachable] {
        runs.extend(commands.iter().map(|args| (url.clone(), *args, "")));
    }
    // A refused connection is retried for about a second: the runs go at once.
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|(url, args, says)| {
                s.spawn(move || {
                    let err = run(url, args).refused().stderr;
                    assert!(err.contains(says), "`{url}` should say `{says}`: {err}");
                })
            })
            .collect();
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

/// The `Debug` output of the settings, the application and its backend show `***` where the
/// password would be; so does the application's URL for people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_masks_the_password() {
    let server = server().await;
    let url = acl_url(&server);

    let config = celeriac::redis::RedisConfig::from_url(&url).expect("parses");
    assert_eq!(config.password.as_deref(), Some(ACL_PASSWORD));
    let shown = format!("{config:?}");
    assert_no_secret("Debug of RedisConfig", &shown);
    assert!(shown.contains("password: Some(\"***\")"), "{shown}");
    assert!(shown.contains(ACL_USER), "{shown}");
    assert_no_secret("pretty Debug of RedisConfig", &format!("{config:#?}"));

    let app = celeriac::App::builder()
        .url(&url)
        .build()
        .await
        .expect("the application connects");
    let shown = format!("{app:?}");
    assert_no_secret("Debug of App", &shown);
    assert!(
        shown.contains(&format!("{ACL_USER}:***@127.0.0.1")),
        "{shown}"
    );
    assert_eq!(
        app.redacted_url(),
        format!("redis://{ACL_USER}:***@127.0.0.1:{}", server.port())
    );
    let backend = format!("{:?}", app.backend());
    assert_no_secret("Debug of AnyBackend", &backend);
    assert!(backend.contains("127.0.0.1"), "{backend}");
    let redis = celeriac::redis::RedisBackend::connect(&url)
        .await
        .expect("connects");
    assert_no_secret("Debug of RedisBackend", &format!("{redis:?}"));
    assert_no_secret("Debug of its settings", &format!("{:?}", redis.config()));

    // A malformed URL's error, from the library.
    for bad in [
        format!("redis://u:{ACL_PASSWORD}@"),
        format!("redis//u:{ACL_PASSWORD}@h"),
        format!("redis://u:x?{ACL_PASSWORD}@h"),
        format!("redis://u:{ACL_PASSWORD}@h?tls={ACL_PASSWORD}"),
    ] {
        let err = celeriac::redis::RedisConfig::from_url(&bad)
            .err()
            .unwrap_or_else(|| panic!("`{bad}` is refused"));
        assert_no_secret("from_url", &err.to_string());
        assert_no_secret("from_url", &format!("{err:?}"));
    }
    let wrong = format!(
        "redis://{ACL_USER}:wrong-{ACL_PASSWORD}@127.0.0.1:{}",
        server.port()
    );
    let err = celeriac::App::builder()
        .url(&wrong)
        .build()
        .await
        .expect_err("a wrong password is refused");
    assert_no_secret("App::build", &format!("{err} {err:?}"));
}

/// This file runs every subcommand `celeriac --help` lists: a new one must be added here.
#[test]
fn every_subcommand_is_covered() {
    let help = celeriac().arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let listed: BTreeSet<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(listed.contains("worker"), "the commands are listed: {help}");
    let covered: BTreeSet<&str> = COVERED.into_iter().collect();
    assert_eq!(
        listed.difference(&covered).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "subcommands this file does not run"
    );
}
