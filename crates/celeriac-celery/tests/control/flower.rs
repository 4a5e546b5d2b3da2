//! Flower (the Celery monitor) lists the Rust worker: its API shows what remote control
//! answers, and its events state shows the worker online.
//!
//! Flower lives in its own environment, `~/.cache/celeriac/venvs/flower-2.2.0` (celery 5.7.0
//! and flower 2.2.0 from PyPI), which `scripts/celery-venvs` creates with the others.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use celeriac_celery::broker::{KombuBroker, TransportOptions};
use celeriac_celery::control::{InMemoryHandler, PidboxResponder};
use celeriac_celery::events::EventSender;
use celeriac_testkit::RedisServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::{py_dir, venvs_root, CeleryConfig};

const PINS: &str = "celery[redis]==5.7.0 flower==2.2.0";

/// The Flower environment `scripts/celery-venvs` creates.
fn flower_venv() -> PathBuf {
    let dir = venvs_root().join("flower-2.2.0");
    let stamp = dir.join(".celeriac-pins");
    assert_eq!(
        std::fs::read_to_string(&stamp).ok().as_deref(),
        Some(PINS),
        "{} is missing or not {PINS}: run scripts/celery-venvs",
        dir.display()
    );
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Flower's `/api/workers?refresh=1` lists the Rust node with its registered tasks, stats and
/// queues (from remote control), and `/api/workers?status=1` reports it online (from its
/// heartbeats).
pub(crate) async fn flower_lists_the_rust_worker() {
    let venv = flower_venv();
    let server = RedisServer::start().await.expect("redis-server starts");
    let cfg = CeleryConfig::for_server(&server.url());
    let broker = KombuBroker::connect(&cfg.broker_url, TransportOptions::default())
        .await
        .expect("the broker connects");
    let host = "celeriac@flower-test";
    let events = EventSender::builder(host)
        .heartbeat_interval(Duration::from_millis(500))
        .start(broker.clone());
    let handler = Arc::new(InMemoryHandler::with_tasks(["tasks.add"], &["rustq"]));
    let responder = PidboxResponder::builder(host, handler)
        .events(events.clone())
        .start(broker)
        .await
        .expect("the responder subscribes");

    let port = free_port();
    let mut flower = Command::new(venv.join("bin").join("celery"))
        .args(["-A", "tasks", "flower", "--address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .current_dir(py_dir())
        .env("PYTHONPATH", py_dir())
        .env("PYTHONUNBUFFERED", "1")
        .env("FLOWER_UNAUTHENTICATED_API", "true")
        .envs(cfg.vars())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("flower starts");
    let stderr = flower.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut log = String::new();
    let ready = async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if line.contains("Visit me at") {
                return true;
            }
        }
        false
    };
    let started = tokio::time::timeout(Duration::from_secs(60), ready).await;
    assert!(matches!(started, Ok(true)), "flower is ready: {log}");
    // Keep reading its log so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let code = format!(
        r#"
import json, time, urllib.request
H = {host:?}
base = 'http://127.0.0.1:{port}/api/workers'
def get(q):
    with urllib.request.urlopen(base + q, timeout=30) as r:
        return json.load(r)
deadline = time.time() + 60
workers = status = {{}}
while time.time() < deadline:
    workers = get('?refresh=1')
    status = get('?status=1')
    if H in workers and 'registered' in workers[H] and status.get(H) is True:
        break
    time.sleep(0.2)
w = workers.get(H, {{}})
print(json.dumps({{'status': status.get(H), 'registered': w.get('registered'),
                  'queues': [q['name'] for q in w.get('active_queues') or []],
                  'pool': (w.get('stats') or {{}}).get('pool')}}))
"#
    );
    let out = Command::new(venv.join("bin").join("python"))
        .arg("-c")
        .arg(&code)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON from the script");
    assert_eq!(got["status"], true, "Flower sees the worker online: {got}");
    assert_eq!(got["registered"], serde_json::json!(["tasks.add"]), "{got}");
    assert_eq!(got["queues"], serde_json::json!(["rustq"]), "{got}");
    assert!(got["pool"].is_object(), "stats parsed: {got}");

    responder.stop().await;
    events.stop().await;
    let _ = flower.kill().await;
}
