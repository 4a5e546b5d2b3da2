//! A worker process serving HTTP (`--http`) over a Redis the testkit starts: `/metrics` in the
//! Prometheus format with the job metrics and the fleet gauges, `/livez`, `/readyz` and a deep
//! `/healthz`; readiness follows the store (a paused or killed Redis makes the worker not ready
//! while it stays live, and `celeriac health` exits non-zero) until the store is back.

mod common;

use celeriac_testkit::RedisServer;
use common::{demo_app, enqueue_emails, stderr, stdout, wait_until_succeeded, WorkerProc};
use std::io::{Read, Write};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `celeriac health --http <addr> [extra]`.
fn health(addr: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["health", "--http", addr, "--timeout", "5s"])
        .args(extra)
        .env_remove("CELERIAC_HTTP")
        .output()
        .expect("celeriac health runs")
}

/// Waits until `celeriac health` (with `extra`) exits as `ok` says; returns that output.
fn wait_health(addr: &str, extra: &[&str], ok: bool, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    loop {
        let out = health(addr, extra);
        if out.status.success() == ok {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "celeriac health {extra:?} did not turn {} within {within:?}: {}{}",
            if ok { "ready" } else { "not ready" },
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The body of `GET http://addr/path`.
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
    reply
}

/// Waits until `/metrics` has a line starting with `prefix`; returns that line.
fn wait_metric(addr: &str, prefix: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let page = get(addr, "/metrics");
        if let Some(line) = page.lines().find(|l| l.starts_with(prefix)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no `{prefix}` in /metrics within {within:?}:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_metrics_and_health_and_readiness_follows_the_store() {
    let mut server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    let addr = format!("127.0.0.1:{}", free_port());
    let worker = WorkerProc::spawn(&url, "http-worker", &["--http", &addr]);
    let ready = wait_health(&addr, &[], true, Duration::from_secs(20));
    assert!(
        stdout(&ready).contains("\"heartbeat\""),
        "{}",
        stdout(&ready)
    );

    let app = demo_app(&url).await;
    enqueue_emails(&app, 20).await;
    wait_until_succeeded(&app, 20, Duration::from_secs(30)).await;
    let page = get(&addr, "/metrics");
    for expected in [
        "# TYPE celeriac_job_attempts_total counter",
        "celeriac_build_info{version=",
        "celeriac_worker_slots{worker=\"http-worker\"} 16",
        "celeriac_job_run_seconds_bucket{",
        "celeriac_runtime_lag_seconds ",
    ] {
        assert!(
            page.contains(expected),
            "no `{expected}` in /metrics:\n{page}"
        );
    }
    let attempts = wait_metric(
        &addr,
        "celeriac_job_attempts_total{queue=\"emails\",task=\"demo.send_email\",outcome=\"succeeded\"}",
        Duration::from_secs(10),
    );
    assert!(attempts.ends_with(" 20"), "{attempts}");
    // The only process with --http leads, and publishes the fleet gauges every 15 s.
    assert!(wait_metric(&addr, "celeriac_monitor_leader ", Duration::from_secs(5)).ends_with(" 1"));
    let succeeded = wait_metric(
        &addr,
        "celeriac_queue_jobs{queue=\"emails\",state=\"succeeded\"} 20",
        Duration::from_secs(40),
    );
    assert!(!succeeded.is_empty());
    let memory = wait_metric(
        &addr,
        "celeriac_store_memory_used_bytes ",
        Duration::from_secs(5),
    );
    let used: f64 = memory
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(used > 0.0, "{memory}");

    let deep = wait_health(&addr, &["--deep"], true, Duration::from_secs(10));
    assert!(stdout(&deep).contains("canary"), "{}", stdout(&deep));

    // A paused Redis answers nothing: not ready after the ping's timeout, still live.
    server.pause();
    let paused = wait_health(&addr, &[], false, Duration::from_secs(15));
    assert!(stdout(&paused).contains("\"store\""), "{}", stdout(&paused));
    assert!(
        health(&addr, &["--live"]).status.success(),
        "live while the store is paused"
    );
    server.resume();
    wait_health(&addr, &[], true, Duration::from_secs(20));

    // A killed Redis refuses connections: not ready at once, live all along; ready again once
    // it is back.
    server.kill();
    let down = wait_health(&addr, &[], false, Duration::from_secs(15));
    assert!(!down.status.success());
    assert!(
        health(&addr, &["--live"]).status.success(),
        "live while the store is down"
    );
    server.restart().await.expect("redis-server restarts");
    wait_health(&addr, &[], true, Duration::from_secs(30));
    worker.stop();
}
