//! Orders end to end, with real servers and processes: an order placed over HTTP gets its
//! confirmation e-mail exactly once through the real SMTP sink, sent by a `shop worker`
//! process, on the embedded store and on Redis; an order whose enqueue failed (Redis down
//! during the request) is accepted anyway and enqueued by the outbox sweeper once Redis is
//! back.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use celeriac_testkit::RedisServer;
use common::Proc;
use serde_json::{json, Value};
use shop::db::SeedSizes;
use shop::orders::{self, Order};
use shop::shop::{Shop, ShopOptions};
use shop::sink::{Sink, SinkArgs};
use tokio_util::sync::CancellationToken;

/// How long a confirmation may take to arrive (a worker process starting included).
const DELIVERY: Duration = Duration::from_secs(40);

/// `shop worker` for `opts`, catalog left alone.
fn worker(opts: &ShopOptions) -> Proc {
    let data_dir = opts.data_dir.display().to_string();
    Proc::spawn(
        common::shop_command(&[
            "worker",
            "--url",
            &opts.url,
            "--database-url",
            &opts.database_url,
            "--smtp",
            &opts.smtp,
            "--data-dir",
            &data_dir,
            "--concurrency",
            "8",
            "--seed-products",
            "0",
        ])
        .env("SHOP_LOG", "info"),
    )
}

/// Options for a shop under `dir`, on the store `url`, sending through `sink`, with a small
/// catalog.
fn options(dir: &Path, url: Option<String>, sink: &Sink) -> ShopOptions {
    let mut opts = ShopOptions::in_dir(dir);
    if let Some(url) = url {
        opts.url = url;
    }
    opts.smtp = sink.url();
    opts.seed = Some(SeedSizes {
        products: 40,
        reviews: 200,
    });
    opts
}

/// Serves the order routes of `shop` on a free port; their base URL.
async fn serve(shop: &Shop) -> String {
    common::serve(orders::routes(shop.clone())).await
}

async fn price(shop: &Shop, id: i64) -> i64 {
    sqlx::query_scalar("SELECT price_cents FROM products WHERE id = $1")
        .bind(id)
        .fetch_one(&shop.deps.db.pool)
        .await
        .expect("the product's price")
}

/// Waits until the order's confirmation is recorded as sent, and its job as enqueued (the
/// job is recorded just after the answer).
async fn sent(shop: &Shop, id: &str) -> Order {
    let deadline = Instant::now() + DELIVERY;
    loop {
        let order = orders::find(shop, id)
            .await
            .expect("read the order")
            .expect("the order exists");
        if order.email_sent_at_ms.is_some() && order.email_job.is_some() {
            return order;
        }
        assert!(
            Instant::now() < deadline,
            "no confirmation for order {id} within {DELIVERY:?}: {order:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An order over HTTP, confirmed once by a worker process; the store at `url` (`None`: the
/// embedded one in the temporary folder).
async fn confirmed_once(url: Option<String>, secret: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(SinkArgs::local()).await.expect("sink");
    let opts = options(dir.path(), url, &sink);
    let shop = Shop::open(&opts).await.expect("open the shop");
    assert_eq!(shop.deps.db.product_count().await.expect("count"), 40);
    let base = serve(&shop).await;

    let (id, created) = common::place_order(
        &base,
        "tester",
        &json!({"email": "ada@example.com", "items": [
            {"product_id": 3, "quantity": 2}, {"product_id": 17, "quantity": 1},
            {"product_id": 3, "quantity": 1}]}),
    )
    .await;
    let expected = 3 * price(&shop, 3).await + price(&shop, 17).await;
    assert_eq!(created["total_cents"], json!(expected));
    let job = created["email_job"].as_str().expect("the e-mail job");
    assert_eq!(job, shop::mail::email_job_id(&id).to_string());
    // Nothing is sent before a worker runs.
    assert_eq!(sink.stats().delivered, 0);

    let mut worker = worker(&opts);
    let order = sent(&shop, &id).await;
    assert_eq!(order.email_job.as_deref(), Some(job));
    assert_eq!(
        order.email_message_id.as_deref(),
        Some(format!("<order-{id}@shop.example>").as_str())
    );
    let got = common::deliveries_for(&sink, &id);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(!got[0].duplicate);
    assert_eq!(got[0].to, "ada@example.com");

    // Enqueueing it again (as the sweeper may) adds no job, and nothing is sent again.
    let again = shop::mail::enqueue(&shop.app, &id)
        .await
        .expect("enqueue again");
    assert_eq!(again.to_string(), job);
    assert_eq!(
        orders::sweep(&shop, Duration::ZERO).await.expect("sweep"),
        0
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(common::deliveries_for(&sink, &id).len(), 1);
    assert_eq!(sink.stats().duplicates, 0);

    // An unknown product or a bad address is refused, and stores nothing.
    let (status, body) = common::post_order(
        &base,
        "tester",
        &json!({"email": "ada@example.com", "items": [{"product_id": 999, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().expect("an error").contains("999"));
    let (status, _) = common::post_order(
        &base,
        "tester",
        &json!({"email": "not an address", "items": [{"product_id": 1, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 400);
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&shop.deps.db.pool)
        .await
        .expect("count orders");
    assert_eq!(orders, 1);

    // GET /orders/{id} shows it.
    let shown: Value =
        common::get_json(reqwest::Client::new().get(format!("{base}/orders/{id}"))).await;
    assert_eq!(shown["order_id"], json!(id));
    assert!(shown["email_sent_at_ms"].as_i64().is_some(), "{shown}");
    let missing = reqwest::get(format!("{base}/orders/nope"))
        .await
        .expect("GET");
    assert_eq!(missing.status().as_u16(), 404);

    let output = worker.output();
    let status = worker.terminate().await;
    assert!(
        status.success(),
        "the worker did not stop cleanly: {output}"
    );
    if let Some(secret) = secret {
        assert!(
            !output.contains(secret),
            "the worker printed the password: {output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_confirmed_once_on_the_embedded_store() {
    confirmed_once(None, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_confirmed_once_on_redis() {
    let secret = "orders-redis-pw";
    let redis = RedisServer::builder()
        .password(secret)
        .start()
        .await
        .expect("redis-server");
    confirmed_once(Some(redis.url()), Some(secret)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_enqueues_an_order_placed_while_redis_was_down() {
    let mut redis = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(SinkArgs::local()).await.expect("sink");
    let opts = options(dir.path(), Some(redis.url()), &sink);
    let shop = Shop::open(&opts).await.expect("open the shop");
    let base = serve(&shop).await;
    let stop = CancellationToken::new();
    let outbox = orders::spawn_outbox(shop.clone(), stop.clone());

    redis.kill();
    let (id, created) = common::place_order(
        &base,
        "tester",
        &json!({"email": "grace@example.com", "items": [{"product_id": 5, "quantity": 1}]}),
    )
    .await;
    assert_eq!(created["email_job"], Value::Null, "{created}");
    // The sweeper cannot enqueue it either while Redis is down.
    tokio::time::sleep(orders::OUTBOX_GRACE + Duration::from_secs(1)).await;
    let order = orders::find(&shop, &id)
        .await
        .expect("read")
        .expect("the order is stored");
    assert_eq!(order.email_job, None);

    redis.restart().await.expect("restart redis");
    let mut worker = worker(&opts);
    let order = sent(&shop, &id).await;
    assert_eq!(
        order.email_job,
        Some(shop::mail::email_job_id(&id).to_string()),
        "the sweeper records the job"
    );
    let got = common::deliveries_for(&sink, &id);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(!got[0].duplicate);

    stop.cancel();
    outbox.await.expect("the sweeper stops");
    let status = worker.terminate().await;
    assert!(status.success());
}
