//! Circuit breakers in real processes: `celeriac breaker drive` calls a flaky HTTP server (a
//! small tokio server in this test that fails on command) through a breaker and prints one
//! JSON line per call, state change and sync. Alone it opens, probes and closes as
//! configured; in shared mode on Redis a second process that never saw enough failures of its
//! own stops calling at its first sync after the first process tripped the shared breaker.

mod common;

use celeriac_testkit::RedisServer;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long to wait for something that should happen soon (a liveness bound, not a speed
/// claim).
const PATIENCE: Duration = Duration::from_secs(30);

/// An HTTP server that answers 200, or 503 while `failing`, counting requests per path.
struct Flaky {
    addr: String,
    failing: Arc<AtomicBool>,
    hits_a: Arc<AtomicU64>,
    hits_b: Arc<AtomicU64>,
}

async fn flaky_server() -> Flaky {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("an address").to_string();
    let failing = Arc::new(AtomicBool::new(false));
    let (hits_a, hits_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (f, a, b) = (failing.clone(), hits_a.clone(), hits_b.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (f, a, b) = (f.clone(), a.clone(), b.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got);
                if head.starts_with("GET /a") {
                    a.fetch_add(1, Ordering::SeqCst);
                } else if head.starts_with("GET /b") {
                    b.fetch_add(1, Ordering::SeqCst);
                }
                let status = if f.load(Ordering::SeqCst) {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let res =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = sock.write_all(res.as_bytes()).await;
            });
        }
    });
    Flaky {
        addr,
        failing,
        hits_a,
        hits_b,
    }
}

/// A `celeriac breaker drive` process and the JSON lines it printed.
struct Driver {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Driver {
    fn spawn(url: &str, args: &[&str]) -> Self {
        Self::spawn_off(url, args, None)
    }

    /// A driver whose wall clock is off by `clock_off` (`+90s`), if given.
    fn spawn_off(url: &str, args: &[&str], clock_off: Option<&str>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac"));
        if let Some(off) = clock_off {
            common::with_wall_clock_off(&mut cmd, off);
        }
        let mut child = cmd
            .args(["--url", url, "--log", "error", "breaker", "drive"])
            .args(args)
            .env_remove("CELERIAC_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the celeriac binary runs");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one matches; returns it.
    fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {what} within {PATIENCE:?}; last lines: {:?}",
                    &self.seen[self.seen.len().saturating_sub(10)..]
                ),
            }
        }
    }

    /// Reads the next `n` call lines.
    fn next_calls(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let v = self.wait_for("a call", |v| v["event"] == "call");
            out.push(v["result"].as_str().unwrap_or("?").to_string());
        }
        out
    }

    /// Stops the process and returns how many of its calls reached the server (ok or fail).
    fn stop(mut self) -> u64 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(v);
        }
        self.seen
            .iter()
            .filter(|v| v["event"] == "call" && (v["result"] == "ok" || v["result"] == "fail"))
            .count() as u64
    }
}

fn transition(from: &'static str, to: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |v| v["event"] == "transition" && v["from"] == from && v["to"] == to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opens_probes_and_closes_against_a_flaky_server() {
    let server = flaky_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = common::url_in(dir.path());
    let target = format!("http://{}/a", server.addr);
    let (failing, hits) = (server.failing.clone(), server.hits_a.clone());
    tokio::task::spawn_blocking(move || {
        let mut d = Driver::spawn(
            &url,
            &[
                "--target",
                &target,
                "--interval-ms",
                "10",
                "--window",
                "10",
                "--min-calls",
                "5",
                "--open-ms",
                "1500",
                "--probes",
                "1",
            ],
        );
        assert_eq!(d.next_calls(3), vec!["ok"; 3], "a healthy partner");
        failing.store(true, Ordering::SeqCst);
        d.wait_for("the trip", transition("closed", "open"));
        // While open, calls are rejected without reaching the server (the call that tripped
        // it may print after the change of state).
        d.wait_for("a rejected call", |v| {
            v["event"] == "call" && v["result"] == "rejected"
        });
        let at_trip = hits.load(Ordering::SeqCst);
        let calls = d.next_calls(5);
        assert!(calls.iter().all(|c| c == "rejected"), "{calls:?}");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            at_trip,
            "no call reached the server"
        );
        // The open period ends: one probe, which fails and opens it again.
        d.wait_for("half-open", transition("open", "half_open"));
        d.wait_for("the failed probe", transition("half_open", "open"));
        failing.store(false, Ordering::SeqCst);
        d.wait_for("half-open again", transition("open", "half_open"));
        d.wait_for("the close", transition("half_open", "closed"));
        assert_eq!(d.next_calls(3), vec!["ok"; 3], "closed again");
        let through = d.stop();
        let reached = hits.load(Ordering::SeqCst);
        assert!(
            reached == through || reached == through + 1,
            "the server saw {reached} calls, the driver reported {through} that went through \
             (at most one more, cut off by the kill)"
        );
    })
    .await
    .expect("joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_stops_calling_at_its_first_sync_after_the_shared_trip() {
    second_process_stops_after_the_shared_trip(None).await;
}

/// The same with the second process's wall clock 90 s ahead: the store's open period (a
/// minute) is judged on the fleet's clock, so it does not look over to that process at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_90_s_ahead_stops_calling_after_the_shared_trip() {
    second_process_stops_after_the_shared_trip(Some("+90s")).await;
}

async fn second_process_stops_after_the_shared_trip(b_clock_off: Option<&'static str>) {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let url = redis.url();
    let server = flaky_server().await;
    let (a_target, b_target) = (
        format!("http://{}/a", server.addr),
        format!("http://{}/b", server.addr),
    );
    let (failing, hits_b) = (server.failing.clone(), server.hits_b.clone());
    tokio::task::spawn_blocking(move || {
        let common_args = [
            "--shared",
            "--name",
            "partner",
            "--quorum",
            "1",
            "--sync-ms",
            "100",
            "--open-ms",
            "60000",
            "--interval-ms",
            "10",
        ];
        // a judges by 5 calls; b would need 1,000 of its own to open.
        let mut cmd_a: Vec<&str> = common_args.to_vec();
        cmd_a.extend([
            "--target",
            a_target.as_str(),
            "--instance",
            "a",
            "--min-calls",
            "5",
            "--window",
            "10",
        ]);
        let mut a = Driver::spawn(&url, &cmd_a);
        let mut cmd_b: Vec<&str> = common_args.to_vec();
        cmd_b.extend([
            "--target",
            b_target.as_str(),
            "--instance",
            "b",
            "--min-calls",
            "1000",
            "--window",
            "1000",
        ]);
        let mut b = Driver::spawn_off(&url, &cmd_b, b_clock_off);
        assert_eq!(a.next_calls(3), vec!["ok"; 3]);
        assert_eq!(b.next_calls(3), vec!["ok"; 3]);
        b.wait_for("a sync of b", |v| {
            v["event"] == "sync" && v["state"] == "closed"
        });

        failing.store(true, Ordering::SeqCst);
        a.wait_for("a's local trip", transition("closed", "open"));
        a.wait_for("a's report tripping the store", |v| {
            v["event"] == "sync" && v["state"] == "open"
        });
        // b saw failures too, far fewer than its own min_calls: only the store stops it.
        let synced = b.wait_for("b's sync seeing the store open", |v| {
            v["event"] == "sync" && v["state"] == "open"
        });
        assert_eq!(
            synced["local"], "open",
            "b adopted the store's state: {synced}"
        );
        let at_sync = hits_b.load(Ordering::SeqCst);
        let calls = b.next_calls(10);
        assert!(calls.iter().all(|c| c == "rejected"), "{calls:?}");
        assert_eq!(
            hits_b.load(Ordering::SeqCst),
            at_sync,
            "b made no call after its sync"
        );
        let status = common::celeriac(&url, &["breaker", "status", "partner", "--json"]);
        assert!(status.status.success(), "{}", common::stderr(&status));
        let s: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
        assert_eq!(s["state"], "open", "{s}");
        assert_eq!(s["trips"], 1, "{s}");
        a.stop();
        b.stop();
    })
    .await
    .expect("joined");
}

#[test]
fn breaker_status_and_overrides_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = common::url_in(dir.path());
    let status = |name: &str| {
        let out = common::celeriac(&url, &["breaker", "status", name, "--json"]);
        assert!(out.status.success(), "{}", common::stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    assert!(status("partner")["state"].is_null(), "no record yet");
    let out = common::celeriac(&url, &["breaker", "force-open", "partner", "--yes"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stdout(&out).contains("forced_open"),
        "{}",
        common::stdout(&out)
    );
    assert_eq!(status("partner")["state"], "forced_open");
    let out = common::celeriac(&url, &["breaker", "reset", "partner", "--yes"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(status("partner")["state"], "closed");
    let out = common::celeriac(&url, &["breaker", "status", ""]);
    assert!(!out.status.success(), "an empty name is refused");
    assert!(
        common::stderr(&out).contains("breaker name"),
        "{}",
        common::stderr(&out)
    );
}
