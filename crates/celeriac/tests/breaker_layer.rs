//! `CircuitBreakerLayer` on an axum router and on a plain tower service, driven by a
//! `ManualClock`.

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use celeriac::breaker::CallError;
use celeriac::breaker::{BreakerState, CircuitBreaker, Verdict, WindowKind};
use celeriac::layer::breaker::CircuitBreakerLayer;
use celeriac::ManualClock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::{service_fn, Layer, ServiceExt};

mod common;
use common::get_status;

fn breaker(clock: &ManualClock) -> CircuitBreaker {
    CircuitBreaker::builder("partner")
        .window(WindowKind::Count(10))
        .min_calls(4)
        .failure_rate(50.0)
        .half_open_probes(1)
        .open_for(Duration::from_millis(9_500))
        .jitter(0.0)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("valid settings")
}

struct Partner {
    failing: AtomicBool,
    calls: AtomicU32,
}

#[tokio::test]
async fn http_breaker_answers_503_with_retry_after_then_probes_and_closes() {
    let clock = ManualClock::new(1_700_000_000_000);
    let b = breaker(&clock);
    let partner = Arc::new(Partner {
        failing: AtomicBool::new(true),
        calls: AtomicU32::new(0),
    });
    let p = partner.clone();
    let app = Router::new()
        .route(
            "/quote",
            get(move || {
                let p = p.clone();
                async move {
                    p.calls.fetch_add(1, Ordering::SeqCst);
                    if p.failing.load(Ordering::SeqCst) {
                        (StatusCode::BAD_GATEWAY, "partner down")
                    } else {
                        (StatusCode::OK, "42")
                    }
                }
            }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .layer(CircuitBreakerLayer::http(b.clone()));

    // 4xx answers are no failures of the partner.
    for _ in 0..5 {
        assert_eq!(get_status(&app, "/missing").await.0, StatusCode::NOT_FOUND);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..5 {
        assert_eq!(get_status(&app, "/quote").await.0, StatusCode::BAD_GATEWAY);
    }
    // 5 failures of 10 calls: open.
    assert_eq!(b.state(), BreakerState::Open);
    let calls = partner.calls.load(Ordering::SeqCst);
    let (status, retry) = get_status(&app, "/quote").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("10"), "9.5 s rounds up");
    assert_eq!(
        partner.calls.load(Ordering::SeqCst),
        calls,
        "not called while open"
    );

    clock.advance(Duration::from_millis(9_500));
    partner.failing.store(false, Ordering::SeqCst);
    assert_eq!(get_status(&app, "/quote").await.0, StatusCode::OK);
    assert_eq!(b.state(), BreakerState::Closed, "one good probe closes it");
    assert_eq!(partner.calls.load(Ordering::SeqCst), calls + 1);
}

#[tokio::test]
async fn typed_breaker_fails_with_rejected_and_takes_a_classifier() {
    let clock = ManualClock::new(1_700_000_000_000);
    let b = breaker(&clock);
    let svc = service_fn(|n: u32| async move {
        if n == 0 {
            Err::<u32, &'static str>("zero")
        } else {
            Ok(n)
        }
    });
    // Odd answers count as failures too.
    let layer =
        CircuitBreakerLayer::new(b.clone()).classify(|r: &Result<u32, &'static str>| match r {
            Ok(n) if n % 2 == 0 => Verdict::Success,
            _ => Verdict::Failure,
        });
    let svc = layer.layer(svc);
    assert_eq!(svc.clone().oneshot(2).await.ok(), Some(2));
    assert!(matches!(
        svc.clone().oneshot(0).await,
        Err(CallError::Inner("zero"))
    ));
    assert_eq!(svc.clone().oneshot(3).await.ok(), Some(3));
    assert_eq!(b.state(), BreakerState::Closed, "3 calls are fewer than 4");
    assert_eq!(svc.clone().oneshot(5).await.ok(), Some(5));
    assert_eq!(b.state(), BreakerState::Open, "3 of 4 failed");
    match svc.clone().oneshot(2).await {
        Err(CallError::Rejected(r)) => {
            assert_eq!(r.state, BreakerState::Open);
            assert_eq!(r.retry_after, Duration::from_millis(9_500));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}
