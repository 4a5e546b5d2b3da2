//! The per-key rate limit of the whole service (`http::router`), over real HTTP on a real
//! Redis: a key gets its bucket of 100 and then 429s with `Retry-After`, a premium key gets
//! more, a request without a key is refused, the query parameter counts as the key, and two
//! instances share each key's limit through Redis.
//!
//! GCRA refills one request every 0.6 s (100 a minute), so a count of allowed requests is
//! checked against `100 + the refills the elapsed time allows`, never against a speed.

// `Shop::open`'s future is deep.
#![recursion_limit = "256"]

mod common;

use celeriac_testkit::RedisServer;
use shop::http::{self, HttpOptions};
use shop::shop::Shop;
use std::path::Path;
use std::time::{Duration, Instant};

/// A shop instance `name` of these tests on the store `url`, 80 products.
async fn open_shop(url: &str, dir: &Path, name: &str) -> Shop {
    common::open_shop(url, dir, name, 80, 400).await
}

fn options() -> HttpOptions {
    HttpOptions {
        premium_keys: vec!["gold-key".to_string()],
        ..HttpOptions::default()
    }
}

/// The most requests GCRA may allow from a full bucket of `limit` a minute over `elapsed`.
fn most_allowed(limit: u64, elapsed: Duration) -> u64 {
    let interval_ms = 60_000 / limit;
    limit + elapsed.as_millis() as u64 / interval_ms + 1
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("a {name} header"))
        .to_str()
        .expect("text")
}

/// Sends requests from `key` (alternating over `bases`, by header or query parameter) until
/// the first 429; the allowed count, the time it took and the 429.
async fn until_denied(
    client: &reqwest::Client,
    bases: &[&str],
    key: &str,
    by_query: bool,
    max: u64,
) -> (u64, Duration, reqwest::Response) {
    let started = Instant::now();
    let mut allowed = 0;
    loop {
        let base = bases[(allowed % bases.len() as u64) as usize];
        let r = if by_query {
            client
                .get(format!("{base}/products?category=books&api_key={key}"))
                .send()
                .await
                .expect("the service answers")
        } else {
            common::get_books(client, base, key).await
        };
        if r.status() == 429 {
            return (allowed, started.elapsed(), r);
        }
        assert_eq!(r.status(), 200, "request {allowed} of {key}");
        allowed += 1;
        assert!(allowed <= max, "{key} was never limited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_gets_its_100_then_429_with_retry_after() {
    let redis = RedisServer::start().await.expect("redis starts");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let shop = open_shop(&redis.url(), dir.path(), "a").await;
    let base = common::serve(http::router(shop, options()).await.expect("the router")).await;
    let client = reqwest::Client::new();

    // The first answer carries the policy and what is left.
    let r = common::get_books(&client, &base, "alice").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit-policy"), "\"default\";q=100;w=60");
    assert!(
        header(&r, "ratelimit").starts_with("\"default\";r=99;t="),
        "{}",
        header(&r, "ratelimit")
    );

    let (allowed, took, denied) = until_denied(&client, &[&base], "alice", false, 1000).await;
    let allowed = allowed + 1; // the first request above
    assert!(
        allowed >= 100 && allowed <= most_allowed(100, took),
        "{allowed} allowed in {took:?}"
    );
    let retry: u64 = header(&denied, "retry-after").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        header(&denied, "ratelimit-policy"),
        "\"default\";q=100;w=60"
    );
    assert!(header(&denied, "ratelimit").starts_with("\"default\";r=0;"));
    // Denied locally until the retry-after, and again at once.
    let again = common::get_books(&client, &base, "alice").await;
    assert_eq!(again.status(), 429);

    // Another key is not affected.
    let other = common::get_books(&client, &base, "bob").await;
    assert_eq!(other.status(), 200);

    // A premium key gets the premium bucket: past 100 at once, and says so.
    let mut premium_allowed = 0;
    for _ in 0..150 {
        let r = common::get_books(&client, &base, "gold-key").await;
        assert_eq!(r.status(), 200, "premium request {premium_allowed}");
        assert_eq!(header(&r, "ratelimit-policy"), "\"premium\";q=1000;w=60");
        premium_allowed += 1;
    }
    assert_eq!(premium_allowed, 150);

    // No key at all: 400, on every limited route; /healthz needs none.
    for path in ["/products?category=books", "/products/1", "/orders/x"] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), 400, "{path} without a key");
    }
    let r = client
        .post(format!("{base}/orders"))
        .json(&serde_json::json!({"email": "a@example.com", "items": []}))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 400, "POST /orders without a key");
    let r = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("text"), "ok");
    let r = client
        .get(format!("{base}/no-such-route"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 404, "an unknown route is not limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_parameter_is_the_same_key_as_the_header() {
    let redis = RedisServer::start().await.expect("redis starts");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let shop = open_shop(&redis.url(), dir.path(), "a").await;
    let base = common::serve(http::router(shop, options()).await.expect("the router")).await;
    let client = reqwest::Client::new();

    let r = client
        .get(format!("{base}/products?category=books&api_key=carol"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200);
    assert!(header(&r, "ratelimit").starts_with("\"default\";r=99;"));
    // Half the bucket by header...
    let started = Instant::now();
    for i in 0..49 {
        let r = common::get_books(&client, &base, "carol").await;
        assert_eq!(r.status(), 200, "header request {i}");
    }
    // ...and the rest by query parameter: one bucket.
    let (allowed, _, denied) = until_denied(&client, &[&base], "carol", true, 1000).await;
    let total = 1 + 49 + allowed;
    let took = started.elapsed() + Duration::from_millis(1);
    assert!(
        total >= 100 && total <= most_allowed(100, took),
        "{total} allowed in {took:?}"
    );
    assert!(denied.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_each_keys_limit_through_redis() {
    let redis = RedisServer::start().await.expect("redis starts");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let a = open_shop(&redis.url(), dir.path(), "a").await;
    let b = open_shop(&redis.url(), dir.path(), "b").await;
    let base_a = common::serve(http::router(a, options()).await.expect("router a")).await;
    let base_b = common::serve(http::router(b, options()).await.expect("router b")).await;
    let client = reqwest::Client::new();

    // Alternating over A and B: were the limits per instance, 200 would pass.
    let (allowed, took, _) = until_denied(&client, &[&base_a, &base_b], "dave", false, 1000).await;
    assert!(
        allowed >= 100 && allowed <= most_allowed(100, took),
        "{allowed} allowed over two instances in {took:?}"
    );
    for base in [&base_a, &base_b] {
        let r = common::get_books(&client, base, "dave").await;
        assert_eq!(r.status(), 429, "{base} refuses dave too");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_limit_fails_open_to_a_local_one() {
    let mut redis = RedisServer::start().await.expect("redis starts");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let shop = open_shop(&redis.url(), dir.path(), "a").await;
    let base = common::serve(http::router(shop, options()).await.expect("the router")).await;
    let client = reqwest::Client::new();
    // The listing is cached before Redis goes.
    let r = common::get_books(&client, &base, "warm").await;
    assert_eq!(r.status(), 200);

    redis.kill();
    let (host, port) = redis.host_port();
    assert!(common::refuses(&host, port).await, "Redis is really down");
    // Requests still answer (fail-open), and this instance's local limiter holds the key to
    // its bucket meanwhile.
    let (allowed, took, denied) = until_denied(&client, &[&base], "erin", false, 1000).await;
    assert!(
        allowed >= 100 && allowed <= most_allowed(100, took),
        "{allowed} allowed with Redis down in {took:?}"
    );
    assert!(denied.headers().contains_key("retry-after"));
    assert!(
        common::refuses(&host, port).await,
        "Redis was down the whole time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_is_limited_and_the_photo_routes_answer() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let url = common::sqlite_url(&dir.path().join("celeriac.db"));
    let shop = open_shop(&url, dir.path(), "solo").await;
    let data_dir = shop.deps.data_dir.clone();
    let base = common::serve(http::router(shop, options()).await.expect("the router")).await;
    let client = reqwest::Client::new();

    // A small PNG, made with the image crate.
    let mut png = Vec::new();
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 40, 40]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("a png");

    let r = client
        .post(format!("{base}/products/3/photo"))
        .body(png.clone())
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 400, "the photo upload needs a key too");
    let r = client
        .post(format!("{base}/products/3/photo"))
        .header("x-api-key", "photographer")
        .body(png.clone())
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 202);
    assert!(
        r.headers().contains_key("ratelimit"),
        "limited, with headers"
    );
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(
        body["workflow"].as_str().is_some_and(|w| !w.is_empty()),
        "{body}"
    );
    let stored = std::fs::read(data_dir.join("photos").join("3.png")).expect("the original");
    assert_eq!(stored, png, "the original is stored for the resize jobs");

    for (path, body, status) in [
        ("/products/3/photo", b"not a png".to_vec(), 415),
        ("/products/999999/photo", png.clone(), 404),
    ] {
        let r = client
            .post(format!("{base}{path}"))
            .header("x-api-key", "photographer")
            .body(body)
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), status, "{path}");
    }
    let r = client
        .get(format!(
            "{base}/products/3/photo/variants?api_key=photographer"
        ))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("ratelimit"));
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["product_id"], 3);
    assert!(v["variants"].is_array(), "{v}");
}
