//! `shop` with no subcommand, the way a newcomer runs it: in an empty folder, everything in
//! one process (SMTP sink, HTTP service, worker and scheduler) on SQLite files in
//! `./shop-data`, on free ports. It answers `/healthz`, an order placed with the printed curl
//! line's shape gets its e-mail through the sink, and SIGTERM stops it cleanly.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Proc;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_alone_runs_everything_in_one_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut shop = Proc::spawn(
        common::shop_command(&[
            "--bind",
            "127.0.0.1:0",
            "--smtp-bind",
            "127.0.0.1:0",
            "--smtp-control",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env_remove("CELERIAC_URL")
        .env_remove("SHOP_DATABASE_URL"),
    );

    // The first start seeds the default catalog (5,000 products).
    let shop_line = shop
        .line_with("  shop       http://", Duration::from_secs(60))
        .await;
    let base = format!("http://{}", common::address(&shop_line, "http://"));
    let sink_line = shop
        .line_with("  smtp sink  smtp://", Duration::from_secs(5))
        .await;
    let control = common::address(
        &sink_line[sink_line.find("stats:").expect("stats")..],
        "http://",
    );
    shop.line_with("curl -H 'x-api-key: demo'", Duration::from_secs(5))
        .await;
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

    let listing: Value = common::get_json(
        client
            .get(format!("{base}/products?category=books&page=1"))
            .header("x-api-key", "demo"),
    )
    .await;
    assert_eq!(
        listing["total"],
        json!(625),
        "5,000 products over 8 categories"
    );

    let stats = |control: SocketAddr| async move {
        common::get_json::<Value>(reqwest::Client::new().get(format!("http://{control}/stats")))
            .await
    };
    assert_eq!(stats(control).await["delivered"], json!(0));

    let (id, _) = common::place_order(
        &base,
        "demo",
        &json!({"email": "you@example.com", "items": [{"product_id": 1, "quantity": 2}]}),
    )
    .await;

    common::email_sent(&client, &base, "demo", &id, Duration::from_secs(30)).await;
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

    let status = shop.terminate().await;
    assert!(status.success(), "{status}:\n{}", shop.output());
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
