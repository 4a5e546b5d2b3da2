//! The shop on PostgreSQL: a temporary cluster (`initdb`, on a free port, with a password),
//! `shop seed` into it, then `shop serve` and `shop worker` processes on it: the listing is
//! the real query, an order is stored and its confirmation sent once through the SMTP sink,
//! and no process prints the database's password.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Postgres, Proc};
use serde_json::{json, Value};
use shop::sink::{Sink, SinkArgs};

const PASSWORD: &str = "pg-s3cret-for-tests";

/// A `shop` process with `args` in `cwd`, logging at `info`.
fn shop_proc(args: &[&str], cwd: &Path) -> Proc {
    Proc::spawn(
        common::shop_command(args)
            .current_dir(cwd)
            .env("SHOP_LOG", "info"),
    )
}

/// Runs `shop serve` on the database `database_url` in `cwd`, which must fail; what it printed
/// to stderr.
async fn serve_fails(database_url: &str, cwd: &Path) -> String {
    let out = common::shop_command(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        database_url,
    ])
    .current_dir(cwd)
    .output()
    .await
    .expect("run shop serve");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_runs_on_postgres() {
    let pg = Postgres::start(Some(PASSWORD));
    let url = pg.url();
    let dir = tempfile::tempdir().expect("tempdir");

    // `shop seed`: migrates and seeds; twice gives the same catalog.
    for _ in 0..2 {
        let out = common::shop_command(&["seed", "--products", "200", "--reviews", "2000"])
            .env("SHOP_DATABASE_URL", &url)
            .current_dir(dir.path())
            .output()
            .await
            .expect("run shop seed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "shop seed failed: {text}");
        assert!(text.contains("(200 products there now)"), "{text}");
        assert!(text.contains("postgres://shop:***@"), "{text}");
        assert!(!text.contains(PASSWORD), "the password was printed: {text}");
    }

    let sink = Sink::start(SinkArgs::local()).await.expect("sink");
    let store = format!("sqlite://{}", dir.path().join("celeriac.db").display());
    let common = [
        "--url",
        store.as_str(),
        "--database-url",
        url.as_str(),
        "--seed-products",
        "0",
    ];
    let smtp = sink.url();
    let mut serve_args = vec!["serve", "--bind", "127.0.0.1:0", "--smtp", &smtp];
    serve_args.extend(common);
    let serve = shop_proc(&serve_args, dir.path());
    let mut worker_args = vec!["worker", "--concurrency", "4", "--smtp", &smtp];
    worker_args.extend(common);
    let worker = shop_proc(&worker_args, dir.path());
    let addr = common::address(
        &serve
            .line_with("serving on http://", Duration::from_secs(30))
            .await,
        "http://",
    );
    let base = format!("http://{addr}");
    worker
        .line_with("shop worker", Duration::from_secs(30))
        .await;

    let client = reqwest::Client::new();
    // The listing: 200 products over 8 categories, 25 books, with their reviews.
    let res = client
        .get(format!("{base}/products?category=books&page=1"))
        .header("x-api-key", "pg-test")
        .send()
        .await
        .expect("GET /products");
    assert_eq!(res.status().as_u16(), 200);
    let listing: Value = res.json().await.expect("JSON");
    let products = listing["products"].as_array().expect("products");
    assert_eq!(products.len(), 20, "{listing}");
    assert_eq!(listing["total"], json!(25), "{listing}");
    assert!(products.iter().all(|p| p["category"] == json!("books")));
    let reviews: i64 = products
        .iter()
        .map(|p| p["reviews"].as_i64().expect("a review count"))
        .sum();
    assert!(reviews > 0, "no reviews joined: {listing}");

    // An order: stored in PostgreSQL, confirmed once.
    let (id, created) = common::place_order(
        &base,
        "pg-test",
        &json!({"email": "pg@example.com", "items": [{"product_id": 9, "quantity": 3}]}),
    )
    .await;
    assert!(created["email_job"].is_string(), "{created}");
    let product: Value = common::get_json(
        client
            .get(format!("{base}/products/9"))
            .header("x-api-key", "pg-test"),
    )
    .await;
    let unit = product["price_cents"].as_i64().expect("a price");
    assert_eq!(created["total_cents"], json!(3 * unit));

    let order = common::email_sent(&client, &base, "pg-test", &id, Duration::from_secs(40)).await;
    assert_eq!(order["email"], json!("pg@example.com"));
    let sent = common::deliveries_for(&sink, &id);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(!sent[0].duplicate);

    for p in [&serve, &worker] {
        let output = p.output();
        assert!(
            !output.contains(PASSWORD),
            "the password was printed: {output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_does_not_answer_fails_at_start_without_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "postgres://shop:{PASSWORD}@127.0.0.1:{}/postgres",
        common::free_port()
    );
    let stderr = serve_fails(&url, dir.path()).await;
    assert!(
        stderr.contains("--database-url (SHOP_DATABASE_URL)"),
        "{stderr}"
    );
    assert!(stderr.contains("postgres://shop:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    let stderr = serve_fails("mysql://x:y@h/db", dir.path()).await;
    assert!(stderr.contains("--database-url"), "{stderr}");
    assert!(!stderr.contains(":y@"), "{stderr}");
}
