//! A load is shared, its failure too: concurrent reads of a key run the loader once, and
//! when it fails each of them gets the loader's error, typed, as the same `Arc`.

use celeriac::cache::{Cache, CacheError};
use celeriac::App;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, PartialEq)]
struct Down(&'static str);

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "down: {}", self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_a_failed_load_share_its_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("cache.db").display());
    let app = App::builder().url(url.as_str()).build().await.expect("app");
    let cache: Cache<str, String, celeriac::AnyBackend> = Cache::builder("shared-load")
        .build(app.backend().clone())
        .await
        .expect("cache");
    let calls = Arc::new(AtomicU64::new(0));
    let failing = |calls: &Arc<AtomicU64>| {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Err::<String, _>(Down("the database"))
        }
    };
    let (a, b) = tokio::join!(
        cache.try_get_with("k", failing(&calls)),
        cache.try_get_with("k", failing(&calls)),
    );
    match (a, b) {
        (Err(CacheError::Load { key, error: x }), Err(CacheError::Load { error: y, .. })) => {
            assert!(Arc::ptr_eq(&x, &y), "one error, shared");
            assert_eq!(*x, Down("the database"), "as the loader returned it");
            assert_eq!(key, "celeriac:shared-load:k");
        }
        other => panic!("expected the shared load error twice, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one load for both reads");

    // Nothing was cached: the next read loads again, and a value is served.
    let v = cache
        .try_get_with("k", || async { Ok::<_, Down>("back".to_string()) })
        .await
        .expect("loads");
    assert_eq!(v, "back");
    let err = cache
        .entry("absent")
        .try_get_with(|| async { Ok::<Option<String>, Down>(None) })
        .await
        .expect_err("nothing found");
    assert!(
        matches!(&err, CacheError::NotFound { key } if key == "celeriac:shared-load:absent"),
        "{err:?}"
    );
}
