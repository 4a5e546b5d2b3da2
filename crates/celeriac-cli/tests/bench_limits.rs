//! `celeriac bench limits` on a small config on the embedded default: every figure, the
//! tower layers' included, is there and positive (how fast is a benchmark, not a test), and
//! a layer phase whose requests are not all answered 200 fails rather than give a figure.

use celeriac::limit::Quota;
use celeriac::AnyBackend;
use celeriac_cli::bench::layers::bench_layers;
use celeriac_cli::bench::limits::{run, LimitsBenchConfig};
use std::sync::Arc;

async fn scratch(dir: &tempfile::TempDir) -> (String, Arc<AnyBackend>) {
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let backend = AnyBackend::connect(&url)
        .await
        .expect("the scratch store opens");
    (url, Arc::new(backend))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_bench_reports_the_layers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, backend) = scratch(&dir).await;
    let cfg = LimitsBenchConfig {
        decisions: 2_000,
        local_decisions: 20_000,
        concurrency: 8,
        keys: 50,
        breaker_calls: 20_000,
        layer_requests: 5_000,
        layer_store_requests: 1_600,
        url,
    };
    let r = run(backend, &cfg).await.expect("the bench runs");
    assert!(r.store_decisions_per_s > 0.0, "{r:?}");
    assert!(r.local_decisions_per_s > 0.0, "{r:?}");
    assert_eq!(r.raw_evalsha_per_s, None, "no EVALSHA off redis://");
    let l = &r.layers;
    assert_eq!(l.requests, 5_000, "{l:?}");
    assert_eq!(
        l.rate_limit_store_requests, 1_600,
        "2 turns × 8 tasks × 100 requests: {l:?}"
    );
    for (name, figure) in [
        ("bare_ns", l.bare_ns),
        ("rate_limit_local_ns", l.rate_limit_local_ns),
        ("rate_limit_local_per_s", l.rate_limit_local_per_s),
        ("rate_limit_store_per_s", l.rate_limit_store_per_s),
        ("breaker_ns", l.breaker_ns),
        ("store_decisions_per_s", l.store_decisions_per_s),
        ("rate_limit_store_ratio", l.rate_limit_store_ratio),
    ] {
        assert!(
            figure.is_finite() && figure > 0.0,
            "{name} = {figure}: {r:?}"
        );
    }
    // The overheads are differences of two timings, floored at zero: on a busy machine the
    // bare rounds can all come out slower than the layered ones, so only their range is
    // checked here.
    for (name, figure, of) in [
        (
            "rate_limit_local_overhead_ns",
            l.rate_limit_local_overhead_ns,
            l.rate_limit_local_ns,
        ),
        ("breaker_overhead_ns", l.breaker_overhead_ns, l.breaker_ns),
    ] {
        assert!(
            figure.is_finite() && (0.0..=of).contains(&figure),
            "{name} = {figure}: {r:?}"
        );
    }
    // `--json` shows them.
    let json = serde_json::to_value(&r).expect("the report serializes");
    for field in [
        "requests",
        "bare_ns",
        "rate_limit_local_ns",
        "rate_limit_local_overhead_ns",
        "rate_limit_local_per_s",
        "rate_limit_store_requests",
        "rate_limit_store_per_s",
        "store_decisions_per_s",
        "rate_limit_store_ratio",
        "breaker_ns",
        "breaker_overhead_ns",
    ] {
        assert!(json["layers"][field].is_number(), "layers.{field}: {json}");
    }
}

#[tokio::test]
async fn a_request_not_answered_200_fails_the_layer_bench() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_url, backend) = scratch(&dir).await;
    // A key holds two requests at once: the eleventh request over five keys is denied.
    let quota = Quota::per_minute(1).burst(1);
    let err = bench_layers(&backend, quota, 100, 100, 2, 5)
        .await
        .expect_err("a denied request fails the bench");
    let text = err.to_string();
    assert!(
        text.contains("429") && text.contains("rate-limit layer, local limiter"),
        "{text}"
    );
}
