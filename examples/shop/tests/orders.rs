//! Orders end to end, with real servers and processes: an order placed over HTTP gets its
//! confirmation e-mail exactly once through the real SMTP sink, sent by a `shop worker`
//! process, on the embedded store and on Redis; an order whose enqueue failed (Redis down
//! during the request) is accepted anyway and enqueued by the outbox sweeper once Redis is
//! back.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celeriac_testkit::RedisServer;
use serde_json::{json, Value};
use shop::db::SeedSizes;
use shop::orders::{self, Order};
use shop::shop::{Shop, ShopOptions};
use shop::sink::{Sink, SinkArgs};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// How long a confirmation may take to arrive (a worker process starting included).
const DELIVERY: Duration = Duration::from_secs(40);

/// A `shop` process, killed when dropped, its output kept.
struct Proc {
    child: tokio::process::Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
            .args(args)
            .env("SHOP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn shop");
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let out = output.clone();
            tokio::spawn(async move {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .expect("output lock")
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Proc { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// SIGTERM, then the exit status (within 30 s).
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("the process runs") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the process stops within 30 s of SIGTERM")
            .expect("wait")
    }
}

/// `shop worker` for `opts`, catalog left alone.
fn worker(opts: &ShopOptions) -> Proc {
    let data_dir = opts.data_dir.display().to_string();
    Proc::spawn(&[
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

/// Serves the order routes of `shop` on a free port.
async fn serve(shop: &Shop) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let router = orders::routes(shop.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

async fn post_order(addr: SocketAddr, body: &Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/orders"))
        .header("x-api-key", "tester")
        .json(body)
        .send()
        .await
        .expect("POST /orders");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON answer"))
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

/// The messages the sink accepted for `order`.
fn deliveries(sink: &Sink, order: &str) -> Vec<shop::sink::Delivery> {
    sink.deliveries()
        .into_iter()
        .filter(|d| d.order.as_deref() == Some(order))
        .collect()
}

/// An order over HTTP, confirmed once by a worker process; the store at `url` (`None`: the
/// embedded one in the temporary folder).
async fn confirmed_once(url: Option<String>, secret: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(SinkArgs::local()).await.expect("sink");
    let opts = options(dir.path(), url, &sink);
    let shop = Shop::open(&opts).await.expect("open the shop");
    assert_eq!(shop.deps.db.product_count().await.expect("count"), 40);
    let addr = serve(&shop).await;

    let (status, created) = post_order(
        addr,
        &json!({"email": "ada@example.com", "items": [
            {"product_id": 3, "quantity": 2}, {"product_id": 17, "quantity": 1},
            {"product_id": 3, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["order_id"]
        .as_str()
        .expect("an order id")
        .to_string();
    let expected = 3 * price(&shop, 3).await + price(&shop, 17).await;
    assert_eq!(created["total_cents"], json!(expected));
    let job = created["email_job"].as_str().expect("the e-mail job");
    assert_eq!(job, shop::mail::email_job_id(&id).to_string());
    // Nothing is sent before a worker runs.
    assert_eq!(sink.stats().delivered, 0);

    let worker = worker(&opts);
    let order = sent(&shop, &id).await;
    assert_eq!(order.email_job.as_deref(), Some(job));
    assert_eq!(
        order.email_message_id.as_deref(),
        Some(format!("<order-{id}@shop.example>").as_str())
    );
    let got = deliveries(&sink, &id);
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
    assert_eq!(deliveries(&sink, &id).len(), 1);
    assert_eq!(sink.stats().duplicates, 0);

    // An unknown product or a bad address is refused, and stores nothing.
    let (status, body) = post_order(
        addr,
        &json!({"email": "ada@example.com", "items": [{"product_id": 999, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().expect("an error").contains("999"));
    let (status, _) = post_order(
        addr,
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
    let shown: Value = reqwest::get(format!("http://{addr}/orders/{id}"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(shown["order_id"], json!(id));
    assert!(shown["email_sent_at_ms"].as_i64().is_some(), "{shown}");
    let missing = reqwest::get(format!("http://{addr}/orders/nope"))
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
    let addr = serve(&shop).await;
    let stop = CancellationToken::new();
    let outbox = orders::spawn_outbox(shop.clone(), stop.clone());

    redis.kill();
    let (status, created) = post_order(
        addr,
        &json!({"email": "grace@example.com", "items": [{"product_id": 5, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["email_job"], Value::Null, "{created}");
    let id = created["order_id"]
        .as_str()
        .expect("an order id")
        .to_string();
    // The sweeper cannot enqueue it either while Redis is down.
    tokio::time::sleep(orders::OUTBOX_GRACE + Duration::from_secs(1)).await;
    let order = orders::find(&shop, &id)
        .await
        .expect("read")
        .expect("the order is stored");
    assert_eq!(order.email_job, None);

    redis.restart().await.expect("restart redis");
    let worker = worker(&opts);
    let order = sent(&shop, &id).await;
    assert_eq!(
        order.email_job,
        Some(shop::mail::email_job_id(&id).to_string()),
        "the sweeper records the job"
    );
    let got = deliveries(&sink, &id);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(!got[0].duplicate);

    stop.cancel();
    outbox.await.expect("the sweeper stops");
    let status = worker.terminate().await;
    assert!(status.success());
}
