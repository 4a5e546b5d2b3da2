//! The cache's bound on values: a value over its namespace's `max_value_bytes` is returned
//! and kept in the process's L1, but not stored in the L2 (where an older value of its key is
//! removed), and it is counted, in process and in the published figures.

use crate::support::T0;
use celeriac_cache::{stats, Cache};
use celeriac_core::backend::KvStore;
use celeriac_core::ManualClock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The most a value may weigh in the case's namespace.
const MAX: usize = 1024;

/// A value of `n` characters; serialized as JSON, it is `n + 2` bytes.
fn text(n: usize) -> String {
    "v".repeat(n)
}

/// A loaded value over the maximum is returned and served from L1 by the instance that
/// loaded it; another instance (another process) finds nothing in L2 and loads it itself; the
/// L2 holds no entry for it, and an older one written under the same key is gone. A value
/// at the maximum is stored in L2 as usual.
pub async fn cache_keeps_values_over_max_value_bytes_out_of_l2<B: KvStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    let build = |l1: bool| {
        let builder = Cache::<str, String, ()>::builder("bounded")
            .ttl(Duration::from_secs(60))
            .early_refresh(0.0)
            .max_value_bytes(MAX)
            .stats_interval(None)
            .clock(Arc::new(clock.clone()));
        let builder = if l1 { builder } else { builder.l1_off() };
        builder.build(backend.clone())
    };
    let a = build(true).await.expect("the cache builds");
    // Reads every value from the L2, as a process that never saw it would.
    let other = build(false).await.expect("the cache builds");
    let loads = Arc::new(AtomicU64::new(0));
    let loader = |value: String| {
        let loads = loads.clone();
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            value
        }
    };
    let in_l2 = |key: &str| {
        let full = a.storage_key(key);
        let backend = backend.clone();
        async move {
            let mut got = backend.kv_get(vec![full], T0).await.expect("the L2 reads");
            got.pop().flatten().is_some()
        }
    };

    // Precondition: a value at the maximum goes to the L2, and other instances read it there.
    let fits = text(MAX - 2);
    let got = a
        .get_with("fits", loader(fits.clone()))
        .await
        .expect("read");
    assert_eq!(got, fits);
    assert!(in_l2("fits").await, "a value at the maximum is in the L2");
    let got = other
        .get_with("fits", loader("not loaded".into()))
        .await
        .expect("read");
    assert_eq!(got, fits, "the other instance reads it from the L2");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(a.stats().too_large, 0);

    // One byte over: returned, kept in L1, not in the L2, counted.
    let big = text(MAX - 1);
    let got = a.get_with("big", loader(big.clone())).await.expect("read");
    assert_eq!(got, big, "the caller gets the value");
    assert_eq!(a.stats().too_large, 1, "{:?}", a.stats());
    assert!(!in_l2("big").await, "the L2 holds no entry for it");
    let again = a
        .get_with("big", loader("reloaded".into()))
        .await
        .expect("read");
    assert_eq!(again, big, "served from L1");
    assert_eq!(loads.load(Ordering::SeqCst), 2, "without loading again");
    let elsewhere = other
        .get_with("big", loader("loaded elsewhere".into()))
        .await
        .expect("read");
    assert_eq!(
        elsewhere, "loaded elsewhere",
        "another instance misses it in the L2 and loads it"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 3);

    // A key whose small value is in the L2, written again too large: the old value is gone
    // from the L2, so no instance serves it in place of the new one.
    a.set("swapped", text(10)).await.expect("set");
    assert!(
        in_l2("swapped").await,
        "precondition: the small value is stored"
    );
    a.set("swapped", text(2 * MAX)).await.expect("set");
    assert!(!in_l2("swapped").await, "the older value was removed");
    assert_eq!(
        a.get("swapped").await.expect("read"),
        Some(text(2 * MAX)),
        "this instance has the new value in L1"
    );
    assert_eq!(
        other.get("swapped").await.expect("read"),
        None,
        "the other instance finds nothing, not the old value"
    );
    assert_eq!(a.stats().too_large, 2);

    // The count is published with the other figures (`celeriac cache stats`, the dashboard).
    a.publish_stats().await.expect("published");
    let published = stats::read_stats(&*backend, "celeriac", "bounded", T0)
        .await
        .expect("read the published figures");
    assert_eq!(published.instances, 1, "{published:?}");
    assert_eq!(published.stats.too_large, 2, "{published:?}");
}

/// A namespace's maximum must be above zero.
pub async fn cache_refuses_a_zero_max_value_bytes<B: KvStore>(backend: Arc<B>) {
    let refused = Cache::<str, String, ()>::builder("zero")
        .max_value_bytes(0)
        .build(backend.clone())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(refused.contains("max_value_bytes"), "{refused}");
    let ok = Cache::<str, String, ()>::builder("zero")
        .max_value_bytes(1)
        .build(backend)
        .await;
    assert!(ok.is_ok(), "one byte is a maximum");
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cases_kv_cache_bounds {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            cache_keeps_values_over_max_value_bytes_out_of_l2,
            cache_refuses_a_zero_max_value_bytes,
        }
    };
}
