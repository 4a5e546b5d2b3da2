//! `#[celeriac::cached]` over the embedded store: a call with the same key runs the function
//! once, errors are not cached and keep their type, concurrent calls whose shared run failed
//! all return its error without running the function again, and a tag invalidated through
//! another handle on the namespace reaches the function's cache.

use celeriac::cache::Cache;
use celeriac::App;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static PRODUCT_CALLS: AtomicU64 = AtomicU64::new(0);
static FLAKY_CALLS: AtomicU64 = AtomicU64::new(0);
static LOCKED_CALLS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Product {
    id: u64,
    name: String,
}

#[derive(Debug, Clone, PartialEq)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "db: {}", self.0)
    }
}

#[celeriac::cached(namespace = "macro-products", ttl = "1h", key = "{id}:{lang}", tags = ["catalog", "product:{id}"])]
async fn product(id: u64, lang: String) -> Result<Product, DbError> {
    PRODUCT_CALLS.fetch_add(1, Ordering::SeqCst);
    Ok(Product {
        id,
        name: format!("celeriac-{lang}"),
    })
}

#[celeriac::cached(namespace = "macro-flaky", ttl = "1h")]
async fn flaky(n: u32) -> Result<u32, DbError> {
    FLAKY_CALLS.fetch_add(1, Ordering::SeqCst);
    if n == 0 {
        Err(DbError("no row".into()))
    } else {
        Ok(n * 10)
    }
}

#[celeriac::cached(namespace = "macro-locked", ttl = "1h")]
async fn locked(n: u32) -> Result<u32, DbError> {
    LOCKED_CALLS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Err(DbError(format!("row {n} is locked")))
}

#[celeriac::cached(ttl = "1h")]
async fn square(n: u64) -> u64 {
    n * n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_functions_run_once_per_key_and_keep_their_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("cache.db").display());
    let app = App::builder().url(url.as_str()).build().await.expect("app");

    let a = product(7, "en".into()).await.expect("loads");
    assert_eq!(a.name, "celeriac-en");
    assert_eq!(product(7, "en".into()).await.expect("cached"), a);
    assert_eq!(
        PRODUCT_CALLS.load(Ordering::SeqCst),
        1,
        "the second call hit the cache"
    );
    product(7, "de".into()).await.expect("another key");
    assert_eq!(PRODUCT_CALLS.load(Ordering::SeqCst), 2);

    // Errors keep their type and are not cached.
    assert_eq!(flaky(0).await, Err(DbError("no row".into())));
    assert_eq!(flaky(0).await, Err(DbError("no row".into())));
    assert_eq!(FLAKY_CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(flaky(3).await, Ok(30));
    assert_eq!(flaky(3).await, Ok(30));
    assert_eq!(FLAKY_CALLS.load(Ordering::SeqCst), 3);

    assert_eq!(square(12).await, 144);

    // Concurrent calls share one run; when it fails, each returns its error.
    let (a, b, c) = tokio::join!(locked(1), locked(1), locked(1));
    let locked_row = Err(DbError("row 1 is locked".into()));
    assert_eq!((&a, &b, &c), (&locked_row, &locked_row, &locked_row));
    assert_eq!(
        LOCKED_CALLS.load(Ordering::SeqCst),
        1,
        "the waiters got the shared error and did not run the function again"
    );

    // Another handle on the namespace invalidates a tag: the function loads again.
    let handle: Cache<str, Product, celeriac::AnyBackend> = Cache::builder("macro-products")
        .build(app.backend().clone())
        .await
        .expect("a handle");
    handle
        .invalidate_tag("product:7")
        .await
        .expect("invalidate");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        product(7, "en".into()).await.expect("reloads");
        if PRODUCT_CALLS.load(Ordering::SeqCst) == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tag invalidation never reached the function's cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
