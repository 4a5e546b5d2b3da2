//! `RateLimitLayer` in an axum router: keys, 429 with Retry-After, the IETF and legacy
//! headers, 400 for a missing or bad key, failure modes, and one server over real TCP.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use celeriac::embedded::SqliteBackend;
use celeriac::layer::rate_limit::{KeyExtractor, RateLimitLayer};
use celeriac::limit::{FailMode, Quota, RateLimiter};
use celeriac::ManualClock;
use celeriac_testkit::RedisServer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const T0: i64 = 1_700_000_000_000;

async fn limiter(quotas: Vec<Quota>) -> RateLimiter<SqliteBackend> {
    let store = Arc::new(SqliteBackend::memory().await.expect("sqlite"));
    quotas
        .into_iter()
        .fold(RateLimiter::builder(store), |b, q| b.quota(q))
        .clock(Arc::new(ManualClock::new(T0)))
        .build()
        .expect("limiter")
}

fn app<S: celeriac::RateLimitStore>(layer: RateLimitLayer<S>) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer)
}

async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.expect("the router answers")
}

fn with_key(key: &str) -> Request<Body> {
    Request::get("/")
        .header("x-api-key", key)
        .body(Body::empty())
        .expect("request")
}

fn h<'a>(r: &'a Response<Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn allowed_and_denied_responses_carry_the_ietf_headers() {
    let layer = RateLimitLayer::new(
        limiter(vec![Quota::per_minute(60).burst(1)]).await,
        KeyExtractor::header("x-api-key"),
    );
    let app = app(layer);
    let r = send(&app, with_key("k1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h(&r, "ratelimit-policy"), Some("\"default\";q=60;w=60"));
    assert_eq!(h(&r, "ratelimit"), Some("\"default\";r=1;t=1"));
    assert_eq!(h(&r, "retry-after"), None);
    assert_eq!(
        h(&r, "x-ratelimit-limit"),
        None,
        "legacy headers are opt-in"
    );
    let r = send(&app, with_key("k1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h(&r, "ratelimit"), Some("\"default\";r=0;t=2"));
    let r = send(&app, with_key("k1")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h(&r, "retry-after"), Some("1"));
    assert_eq!(h(&r, "ratelimit"), Some("\"default\";r=0;t=2"));
    assert_eq!(h(&r, "ratelimit-policy"), Some("\"default\";q=60;w=60"));
    let r = send(&app, with_key("k2")).await;
    assert_eq!(r.status(), StatusCode::OK, "another key is apart");
}

#[tokio::test]
async fn several_quotas_and_legacy_headers() {
    let layer = RateLimitLayer::new(
        limiter(vec![
            Quota::per_minute(100).burst(9),
            Quota::per_hour(3).burst(2).name("hourly"),
        ])
        .await,
        KeyExtractor::header("x-api-key"),
    )
    .legacy_headers(true);
    let app = app(layer);
    let r = send(&app, with_key("k")).await;
    assert_eq!(
        h(&r, "ratelimit-policy"),
        Some("\"default\";q=100;w=60, \"hourly\";q=3;w=3600")
    );
    assert_eq!(h(&r, "ratelimit"), Some("\"hourly\";r=2;t=1200"));
    assert_eq!(h(&r, "x-ratelimit-limit"), Some("3"));
    assert_eq!(h(&r, "x-ratelimit-remaining"), Some("2"));
    assert_eq!(h(&r, "x-ratelimit-reset"), Some("1200"));
}

#[tokio::test]
async fn a_key_with_its_own_quotas_shows_its_own_policy() {
    let store = Arc::new(SqliteBackend::memory().await.expect("sqlite"));
    let limiter = RateLimiter::builder(store)
        .quota(Quota::per_minute(60))
        .override_key("header:x-api-key:premium", vec![Quota::per_minute(600)])
        .clock(Arc::new(ManualClock::new(T0)))
        .build()
        .expect("limiter");
    let app = app(RateLimitLayer::new(
        limiter,
        KeyExtractor::header("x-api-key"),
    ));
    let premium = send(&app, with_key("premium")).await;
    assert_eq!(
        h(&premium, "ratelimit-policy"),
        Some("\"default\";q=600;w=60")
    );
    let plain = send(&app, with_key("plain")).await;
    assert_eq!(h(&plain, "ratelimit-policy"), Some("\"default\";q=60;w=60"));
    let premium = send(&app, with_key("premium")).await;
    assert_eq!(
        h(&premium, "ratelimit-policy"),
        Some("\"default\";q=600;w=60")
    );
}

#[tokio::test]
async fn a_missing_or_bad_key_is_a_400() {
    let layer = RateLimitLayer::new(
        limiter(vec![Quota::per_minute(5)]).await,
        KeyExtractor::header("x-api-key"),
    );
    let app = app(layer);
    let r = send(&app, Request::get("/").body(Body::empty()).expect("req")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = send(&app, with_key(&"k".repeat(600))).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "a key that is too long"
    );
    let body = axum::body::to_bytes(r.into_body(), 4096)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("rate limit key"), "{text}");
}

#[derive(Clone)]
struct User(&'static str);

#[tokio::test]
async fn the_authenticated_user_is_the_key() {
    let layer = RateLimitLayer::new(
        limiter(vec![Quota::per_minute(1)]).await,
        KeyExtractor::user(|u: &User| u.0.to_string()),
    );
    let app = app(layer);
    let as_user = |name: &'static str| {
        Request::get("/")
            .extension(User(name))
            .body(Body::empty())
            .expect("req")
    };
    assert_eq!(send(&app, as_user("ann")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, as_user("ann")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&app, as_user("bob")).await.status(), StatusCode::OK);
    let anonymous = Request::get("/").body(Body::empty()).expect("req");
    assert_eq!(
        send(&app, anonymous).await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn forwarded_for_trusts_only_the_proxies_entry() {
    let layer = RateLimitLayer::new(
        limiter(vec![Quota::per_minute(1)]).await,
        KeyExtractor::forwarded_for::<ConnectInfo<SocketAddr>>(1),
    );
    let app = app(layer);
    let via = |xff: &str| {
        Request::get("/")
            .header("x-forwarded-for", xff)
            .extension(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 4000))))
            .body(Body::empty())
            .expect("req")
    };
    assert_eq!(
        send(&app, via("1.1.1.1, 2.2.2.2")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, via("9.9.9.9, 2.2.2.2")).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a forged first entry does not make a new client"
    );
    assert_eq!(send(&app, via("2.2.2.3")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, via("not an address")).await.status(),
        StatusCode::OK,
        "falls back to the connection's address"
    );
}

#[tokio::test]
async fn shadow_mode_adds_no_headers_and_never_denies() {
    let store = Arc::new(SqliteBackend::memory().await.expect("sqlite"));
    let limiter = RateLimiter::builder(store)
        .quota(Quota::per_minute(1))
        .shadow(true)
        .build()
        .expect("limiter");
    let app = app(RateLimitLayer::new(
        limiter,
        KeyExtractor::header("x-api-key"),
    ));
    for _ in 0..3 {
        let r = send(&app, with_key("k")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(h(&r, "ratelimit"), None);
    }
}

#[tokio::test]
async fn a_failed_store_follows_the_failure_mode() {
    let mut server = RedisServer::start().await.expect("redis-server");
    let url = format!("{}?connect_timeout_ms=200", server.url());
    let store = Arc::new(
        celeriac::redis::RedisBackend::connect(&url)
            .await
            .expect("redis"),
    );
    let build = |mode| {
        RateLimiter::builder(store.clone())
            .quota(Quota::per_minute(5))
            .fail_mode(mode)
            .local_fallback(false)
            .timeout(std::time::Duration::from_millis(200))
            .build()
            .expect("limiter")
    };
    let open = app(RateLimitLayer::new(
        build(FailMode::Open),
        KeyExtractor::header("x-api-key"),
    ));
    let closed = app(RateLimitLayer::new(
        build(FailMode::Closed),
        KeyExtractor::header("x-api-key"),
    ));
    assert_eq!(send(&closed, with_key("k")).await.status(), StatusCode::OK);
    server.kill();
    let r = send(&open, with_key("k")).await;
    assert_eq!(r.status(), StatusCode::OK, "fail-open passes");
    assert_eq!(h(&r, "ratelimit"), None, "nothing known to report");
    let r = send(&closed, with_key("k")).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "fail-closed denies"
    );
    assert_eq!(h(&r, "retry-after"), Some("1"));
}

/// One HTTP/1.1 request over a fresh TCP connection; the status and the raw header block.
async fn get_over_tcp(addr: SocketAddr) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    (status, head)
}

#[tokio::test]
async fn a_real_server_limits_clients_by_ip_over_tcp() {
    let layer = RateLimitLayer::new(
        limiter(vec![Quota::per_minute(60).burst(1)]).await,
        KeyExtractor::client_ip::<ConnectInfo<SocketAddr>>(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app(layer).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let (s1, h1) = get_over_tcp(addr).await;
    let (s2, _) = get_over_tcp(addr).await;
    let (s3, h3) = get_over_tcp(addr).await;
    server.abort();
    assert_eq!((s1, s2, s3), (200, 200, 429));
    assert!(h1.contains("ratelimit: \"default\";r=1;t=1"), "{h1}");
    assert!(h3.contains("retry-after: 1"), "{h3}");
    assert!(
        h3.contains("ratelimit-policy: \"default\";q=60;w=60"),
        "{h3}"
    );
}
