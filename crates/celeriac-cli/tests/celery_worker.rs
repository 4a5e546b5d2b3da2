//! `celeriac worker --celery <redis-url>`: the stock binary serves its demo tasks to real
//! Python Celery clients (both pinned versions, from `scripts/celery-venvs`), keeps what it
//! cannot serve in the Celeriac store's dead letters, fails at start on bad settings naming the
//! flag without the password, stops gracefully on SIGTERM, and keeps etas and expiry times
//! by the broker's clock when its host's wall clock is off.
#![cfg(feature = "redis")]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use celeriac_testkit::RedisServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Ceiling for anything awaited.
const WAIT: Duration = Duration::from_secs(60);
/// The pinned Celery versions of the harness.
const VERSIONS: [&str; 2] = ["5.7.0", "5.3.6"];

fn python(version: &str) -> PathBuf {
    let root = std::env::var_os("CELERIAC_VENVS").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/celeriac/venvs")
        },
        PathBuf::from,
    );
    let python = root.join(format!("celery-{version}/bin/python"));
    assert!(
        python.is_file(),
        "Python Celery {version} missing at {}: run scripts/celery-venvs",
        python.display()
    );
    python
}

/// Runs a Python snippet with `app` configured for `broker` (results on db 1); returns its
/// last stdout line.
async fn py(version: &str, broker: &str, backend: &str, code: &str) -> String {
    let code = format!(
        "import json\nfrom celery import Celery\n\
         app = Celery('client', broker={broker:?}, backend={backend:?})\n{code}\n"
    );
    let out = tokio::time::timeout(
        WAIT * 2,
        Command::new(python(version))
            .arg("-c")
            .arg(code)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("Python finishes within the ceiling")
    .expect("Python starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "celery {version}: Python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap_or("").to_owned()
}

/// The `celeriac` binary on the Celeriac store `store` (where dead letters go).
fn celeriac(store: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac"));
    cmd.env("CELERIAC_ALLOW_ROOT", "true")
        .env("CELERIAC_URL", store)
        .env("CELERIAC_LOG", "info")
        .env_remove("CELERIAC_CELERY_URL")
        .env_remove("CELERIAC_CELERY_BACKEND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Waits for the process to end; returns (success, stdout + stderr).
async fn finish(mut child: Child) -> (bool, String) {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (mut out, mut err) = (String::new(), String::new());
    let read = async {
        let (a, b) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        a.and(b).expect("output readable");
        child.wait().await.expect("the process is waited for")
    };
    let status = tokio::time::timeout(WAIT, read)
        .await
        .expect("the process ends within the ceiling");
    (status.success(), format!("{out}{err}"))
}

/// `demo.add(2, 3)` from both Python versions gives 5 (and `demo.send_email` with keyword
/// arguments its SMTP reply); a task the binary does not have raises `NotRegistered` in
/// Python and is listed by `celeriac dlq list` with the reason; SIGTERM then stops the worker
/// gracefully: exit status 0, nothing left unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_python_clients_and_stops_on_sigterm() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = format!("sqlite://{}", dir.path().join("celeriac.db").display());
    let broker = format!("{}/0", server.url());
    let backend = format!("{}/1", server.url());
    let child = celeriac(&store)
        .args(["worker", "--celery", &broker, "--celery-queues", "celery"])
        .spawn()
        .expect("celeriac starts");
    let pid = child.id().expect("a pid");
    for version in VERSIONS {
        let got = py(
            version,
            &broker,
            &backend,
            "print(json.dumps([app.send_task('demo.add', (2, 3)).get(timeout=30),\n\
             app.send_task('demo.send_email', kwargs={'to': 'a@b.c', 'subject': 'hi'})\
             .get(timeout=30)]))",
        )
        .await;
        let got: serde_json::Value = serde_json::from_str(&got).expect("JSON");
        assert_eq!(got[0], serde_json::json!(5), "celery {version}: {got}");
        assert!(
            got[1].as_str().is_some_and(|s| s.starts_with("250 queued")),
            "celery {version}: {got}"
        );
        let raised = py(
            version,
            &broker,
            &backend,
            "try:\n    app.send_task('demo.nope', (1,)).get(timeout=30)\n    print('no error')\n\
             except Exception as e:\n    print(type(e).__name__)",
        )
        .await;
        assert_eq!(raised, "NotRegistered", "celery {version}");
    }
    // Both unknown-task messages are kept, with the reason, in the store's dead letters.
    let (ok, listed) = finish(
        celeriac(&store)
            .args(["dlq", "list", "--json"])
            .spawn()
            .expect("celeriac starts"),
    )
    .await;
    assert!(ok, "dlq list:\n{listed}");
    let dead: serde_json::Value = serde_json::from_str(&listed).expect("dlq list --json");
    let dead = dead.as_array().expect("a list of dead letters");
    assert_eq!(dead.len(), 2, "one per Python version: {listed}");
    assert!(
        dead.iter().all(|d| d.to_string().contains("demo.nope")),
        "each names the task: {listed}"
    );
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid fits"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM delivered");
    let (ok, output) = finish(child).await;
    assert!(ok, "a graceful stop exits 0:\n{output}");
    assert!(output.contains("celery worker stopped"), "{output}");
    let mut conn = redis::Client::open(broker.as_str())
        .expect("URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connects");
    let unacked: u64 = redis::cmd("HLEN")
        .arg("unacked")
        .query_async(&mut conn)
        .await
        .expect("HLEN");
    assert_eq!(unacked, 0, "nothing left unacknowledged");
}

/// Bad settings fail at start, naming the setting and never the password: an unreachable
/// broker, a bad port, a non-Redis transport (through `CELERIAC_CELERY_URL`), a bad
/// `--celery-backend`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_fail_at_start_without_the_password() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = format!("sqlite://{}", dir.path().join("celeriac.db").display());
    let good = format!("{}/0", server.url());
    let cases: [(&[&str], Option<&str>, &str); 4] = [
        (
            &["--celery", "redis://user:hunter2@127.0.0.1:1/0"],
            None,
            "--celery:",
        ),
        (
            &["--celery", "redis://user:hunter2@127.0.0.1:port/0"],
            None,
            "--celery:",
        ),
        (&[], Some("amqp://user:hunter2@localhost//"), "--celery:"),
        (
            &[
                "--celery",
                &good,
                "--celery-backend",
                "redis://:hunter2@127.0.0.1:1/1",
            ],
            None,
            "--celery-backend:",
        ),
    ];
    for (args, env, needle) in cases {
        let mut cmd = celeriac(&store);
        cmd.arg("worker").args(args);
        if let Some(url) = env {
            cmd.env("CELERIAC_CELERY_URL", url);
        }
        let (ok, output) = finish(cmd.spawn().expect("celeriac starts")).await;
        assert!(!ok, "{args:?}: fails at start:\n{output}");
        assert!(
            output.contains(needle),
            "{args:?}: names {needle}:\n{output}"
        );
        assert!(
            !output.contains("hunter2"),
            "{args:?}: no password:\n{output}"
        );
    }
}

/// A worker whose host's wall clock is five minutes ahead of or behind the broker's (made real
/// with libfaketime) reads etas and expiry times by the broker's clock: a task with a 3 s
/// countdown is still waiting 1.5 s after it was sent (a clock ahead would run it at once) and
/// done within the ceiling (a clock behind would hold it five minutes), and a task that
/// expires in two minutes runs (a clock ahead would find it expired). The worker says its
/// clock is off, by about the skew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_clock_is_off_keeps_etas_and_expiry_times() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = format!("sqlite://{}", dir.path().join("celeriac.db").display());
    let broker = format!("{}/0", server.url());
    let backend = format!("{}/1", server.url());
    for (skew, skew_ms) in [("+300s", 300_000i64), ("-300s", -300_000)] {
        let child = celeriac(&store)
            .env("LD_PRELOAD", common::libfaketime())
            .env("FAKETIME", skew)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .args(["worker", "--celery", &broker, "--celery-queues", "celery"])
            .spawn()
            .expect("celeriac starts under libfaketime");
        let pid = child.id().expect("a pid");
        let got = py(
            VERSIONS[0],
            &broker,
            &backend,
            "import time\n\
             assert app.send_task('demo.add', (1, 1)).get(timeout=30) == 2\n\
             early = app.send_task('demo.add', (2, 3), countdown=3)\n\
             time.sleep(1.5)\n\
             state = early.state\n\
             late = app.send_task('demo.add', (4, 5), expires=120)\n\
             print(json.dumps([state, early.get(timeout=30), late.get(timeout=30)]))",
        )
        .await;
        let got: serde_json::Value = serde_json::from_str(&got).expect("JSON");
        assert_eq!(
            got,
            serde_json::json!(["PENDING", 5, 9]),
            "clock {skew}: waited for its eta, ran, did not expire"
        );
        let pid = Pid::from_raw(i32::try_from(pid).expect("a pid fits"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM delivered");
        let (ok, output) = finish(child).await;
        assert!(ok, "clock {skew}: a graceful stop exits 0:\n{output}");
        let warning = output
            .lines()
            .find(|l| l.contains("wall clock is off") && l.contains("broker"))
            .unwrap_or_else(|| panic!("clock {skew}: the worker warned of its clock:\n{output}"));
        let offset: i64 = warning
            .split("offset_ms=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("clock {skew}: an offset in {warning}"));
        assert!(
            (offset + skew_ms).abs() < 5_000,
            "clock {skew}: fleet minus host is about {}: {warning}",
            -skew_ms
        );
    }
}
