//! `shop` with no subcommand, the way a newcomer runs it: in an empty folder, everything in
//! one process (SMTP sink, HTTP service, worker and scheduler) on SQLite files in
//! `./shop-data`, on free ports. It answers `/healthz`, an order placed with the printed curl
//! line's shape gets its e-mail through the sink, and SIGTERM stops it cleanly.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Lines the process printed (stdout and stderr), as they come.
type Lines = Arc<Mutex<Vec<String>>>;

fn keep(lines: Lines, pipe: impl tokio::io::AsyncRead + Send + Unpin + 'static) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().expect("lines").push(line);
        }
    });
}

async fn line_with(lines: &Lines, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(line) = lines
            .lock()
            .expect("lines")
            .iter()
            .find(|l| l.contains(needle))
        {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} within {within:?}:\n{}",
            lines.lock().expect("lines").join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `host:port` after `http://` or `smtp://` in a line.
fn address(line: &str, scheme: &str) -> SocketAddr {
    let start = line.find(scheme).expect("a URL in the line") + scheme.len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c == '/' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].parse().expect("an address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_alone_runs_everything_in_one_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--smtp-bind",
            "127.0.0.1:0",
            "--smtp-control",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env_remove("CELERIAC_URL")
        .env_remove("SHOP_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shop");
    let lines: Lines = Arc::default();
    keep(lines.clone(), child.stdout.take().expect("stdout"));
    keep(lines.clone(), child.stderr.take().expect("stderr"));

    // The first start seeds the default catalog (5,000 products).
    let shop_line = line_with(&lines, "  shop       http://", Duration::from_secs(60)).await;
    let base = format!("http://{}", address(&shop_line, "http://"));
    let sink_line = line_with(&lines, "  smtp sink  smtp://", Duration::from_secs(5)).await;
    let control = address(
        &sink_line[sink_line.find("stats:").expect("stats")..],
        "http://",
    );
    line_with(&lines, "curl -H 'x-api-key: demo'", Duration::from_secs(5)).await;
    let data = dir.path().join("shop-data");
    for file in ["celeriac.db", "shop.db"] {
        assert!(data.join(file).is_file(), "no shop-data/{file}");
    }

    let client = reqwest::Client::new();
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(health.text().await.expect("body").trim(), "ok");

    let listing: Value = client
        .get(format!("{base}/products?category=books&page=1"))
        .header("x-api-key", "demo")
        .send()
        .await
        .expect("GET /products")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        listing["total"],
        json!(625),
        "5,000 products over 8 categories"
    );

    let stats = |control: SocketAddr| async move {
        reqwest::get(format!("http://{control}/stats"))
            .await
            .expect("GET /stats")
            .json::<Value>()
            .await
            .expect("JSON")
    };
    assert_eq!(stats(control).await["delivered"], json!(0));

    let res = client
        .post(format!("{base}/orders"))
        .header("x-api-key", "demo")
        .json(&json!({"email": "you@example.com", "items": [{"product_id": 1, "quantity": 2}]}))
        .send()
        .await
        .expect("POST /orders");
    assert_eq!(res.status().as_u16(), 201);
    let created: Value = res.json().await.expect("JSON");
    let id = created["order_id"]
        .as_str()
        .expect("an order id")
        .to_string();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let order: Value = client
            .get(format!("{base}/orders/{id}"))
            .header("x-api-key", "demo")
            .send()
            .await
            .expect("GET /orders")
            .json()
            .await
            .expect("JSON");
        if order["email_sent_at_ms"].is_i64() {
            break;
        }
        assert!(Instant::now() < deadline, "no e-mail: {order}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = stats(control).await;
    assert_eq!(s["delivered"], json!(1), "{s}");
    assert_eq!(s["duplicates"], json!(0), "{s}");
    // The sink's log, in the data folder, has the message (written shortly after).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(data.join("mail.jsonl")).unwrap_or_default();
        if log.contains(&id) {
            break;
        }
        assert!(Instant::now() < deadline, "shop-data/mail.jsonl: {log:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let pid = child.id().expect("running") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s of SIGTERM")
        .expect("wait");
    assert!(
        status.success(),
        "{status}:\n{}",
        lines.lock().expect("lines").join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_fail_at_start_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &'static [&'static str]| {
        let dir = dir.path().to_path_buf();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
                .args(args)
                .current_dir(dir)
                .env("SHOP_SEED_PRODUCTS", "0")
                .output()
                .await
                .expect("run shop");
            assert!(!out.status.success(), "{args:?} started");
            String::from_utf8_lossy(&out.stderr).to_string()
        }
    };
    let err = run(&["serve", "--bind", "nowhere"]).await;
    assert!(err.contains("--bind"), "{err}");
    let err = run(&["worker", "--concurrency", "0"]).await;
    assert!(err.contains("--concurrency"), "{err}");
    let err = run(&["serve", "--bind", "127.0.0.1:0", "--url", "memcached://h"]).await;
    assert!(err.contains("--url (CELERIAC_URL)"), "{err}");
    let err = run(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--url",
        "redis://:hunter2-secret@127.0.0.1:1",
    ])
    .await;
    assert!(err.contains("--url"), "{err}");
    assert!(!err.contains("hunter2-secret"), "{err}");
    let err = run(&["serve", "--bind", "127.0.0.1:0", "--smtp", "http://mail"]).await;
    assert!(err.contains("--smtp (SHOP_SMTP)"), "{err}");
    let err = run(&["serve", "--bind", "0.0.0.0:0"]).await;
    assert!(err.contains("CELERIAC_DASHBOARD_TOKEN"), "{err}");
}
