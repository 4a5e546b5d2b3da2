//! Two `CircuitBreakerLayer`s over breakers shared through one SQLite file (two connections,
//! as two processes would have): a trip seen by one rejects calls in the other after its
//! sync, and in half-open at most `probes` requests pass across both.

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use celeriac::breaker::{
    BreakerState, CallError, CircuitBreaker, SharedBreaker, SharedOptions, WindowKind,
};
use celeriac::embedded::SqliteBackend;
use celeriac::layer::breaker::CircuitBreakerLayer;
use celeriac::ManualClock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::{service_fn, Layer, Service, ServiceExt};

mod common;
use common::get_status;

const T0: i64 = 1_700_000_000_000;

/// Count window of 2, opens at 50% from 2 calls, 2 probes, open 10 s, no jitter; quorum 1.
fn shared(
    store: SqliteBackend,
    clock: &ManualClock,
    instance: &str,
) -> Arc<SharedBreaker<SqliteBackend>> {
    let local = CircuitBreaker::builder("shared-partner")
        .window(WindowKind::Count(2))
        .min_calls(2)
        .failure_rate(50.0)
        .half_open_probes(2)
        .open_for(Duration::from_secs(10))
        .jitter(0.0)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("valid settings");
    SharedBreaker::new(
        local,
        Arc::new(store),
        SharedOptions {
            instance: instance.to_string(),
            quorum: 1,
            ..SharedOptions::default()
        },
    )
    .expect("valid options")
}

type Shared = Arc<SharedBreaker<SqliteBackend>>;

/// Two breakers shared through one SQLite file, each over its own connection.
async fn two_instances() -> (tempfile::TempDir, ManualClock, Shared, Shared) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("breakers.db").display());
    let clock = ManualClock::new(T0);
    let open = |who| {
        let url = url.clone();
        async move { SqliteBackend::connect(&url).await.expect(who) }
    };
    let sa = shared(open("open a").await, &clock, "a");
    let sb = shared(open("open b").await, &clock, "b");
    (dir, clock, sa, sb)
}

/// The partner behind both layers: fails while `failing`; waits at the gate while `hold`.
#[derive(Default)]
struct Partner {
    failing: AtomicBool,
    hold: AtomicBool,
    entered: AtomicU32,
    gate: tokio::sync::Notify,
}

impl Partner {
    async fn answer(&self) -> (StatusCode, &'static str) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        loop {
            let opened = self.gate.notified();
            if !self.hold.load(Ordering::SeqCst) {
                break;
            }
            opened.await;
        }
        if self.failing.load(Ordering::SeqCst) {
            (StatusCode::BAD_GATEWAY, "partner down")
        } else {
            (StatusCode::OK, "42")
        }
    }

    fn release(&self) {
        self.hold.store(false, Ordering::SeqCst);
        self.gate.notify_waiters();
    }
}

fn app(partner: &Arc<Partner>, breaker: Arc<SharedBreaker<SqliteBackend>>) -> Router {
    let p = partner.clone();
    Router::new()
        .route(
            "/quote",
            get(move || {
                let p = p.clone();
                async move { p.answer().await }
            }),
        )
        .layer(CircuitBreakerLayer::shared_http(breaker))
}

#[tokio::test]
async fn two_layers_share_a_trip_and_bound_half_open_probes() {
    let (_dir, clock, sa, sb) = two_instances().await;
    let partner = Arc::new(Partner {
        failing: AtomicBool::new(true),
        ..Partner::default()
    });
    let (app_a, app_b) = (app(&partner, sa.clone()), app(&partner, sb.clone()));

    // a sees two failures and trips; its sync trips the store.
    for _ in 0..2 {
        assert_eq!(
            get_status(&app_a, "/quote").await.0,
            StatusCode::BAD_GATEWAY
        );
    }
    assert_eq!(
        get_status(&app_a, "/quote").await,
        (StatusCode::SERVICE_UNAVAILABLE, Some("10".into()))
    );
    let s = sa.sync().await.expect("sync a");
    assert_eq!((s.state, s.open_until), (BreakerState::Open, T0 + 10_000));

    // b saw nothing and calls the partner until its sync, then answers 503 too.
    partner.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        get_status(&app_b, "/quote").await.0,
        StatusCode::OK,
        "b has not synced"
    );
    assert_eq!(sb.sync().await.expect("sync b").state, BreakerState::Open);
    let calls = partner.entered.load(Ordering::SeqCst);
    assert_eq!(
        get_status(&app_b, "/quote").await,
        (StatusCode::SERVICE_UNAVAILABLE, Some("10".into()))
    );
    assert_eq!(
        partner.entered.load(Ordering::SeqCst),
        calls,
        "the partner was not called"
    );

    // Half-open: six requests at once, three on each layer; each local breaker would let
    // two through, the store lets two through in all.
    clock.advance(Duration::from_secs(10));
    partner.hold.store(true, Ordering::SeqCst);
    let before = partner.entered.load(Ordering::SeqCst);
    let mut requests = tokio::task::JoinSet::new();
    for app in [&app_a, &app_a, &app_a, &app_b, &app_b, &app_b] {
        let app = app.clone();
        requests.spawn(async move { get_status(&app, "/quote").await });
    }
    let mut unavailable = 0;
    while unavailable + (partner.entered.load(Ordering::SeqCst) - before) < 6 {
        let (status, _) = requests
            .join_next()
            .await
            .expect("requests left")
            .expect("a request task");
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "only rejections end while held"
        );
        unavailable += 1;
    }
    assert_eq!(
        (partner.entered.load(Ordering::SeqCst) - before, unavailable),
        (2, 4),
        "two probes across both layers"
    );
    partner.release();
    while let Some(r) = requests.join_next().await {
        assert_eq!(
            r.expect("a request task").0,
            StatusCode::OK,
            "the probes succeed"
        );
    }
    // The probes' results reached the store before their responses: it is closed.
    assert_eq!(sa.sync().await.expect("sync a").state, BreakerState::Closed);
    assert_eq!(sb.sync().await.expect("sync b").state, BreakerState::Closed);
    assert_eq!(get_status(&app_a, "/quote").await.0, StatusCode::OK);
    assert_eq!(get_status(&app_b, "/quote").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_typed_shared_layer_rejects_with_the_store_state() {
    let (_dir, clock, sa, sb) = two_instances().await;
    let failing =
        service_fn(|_: ()| async { Err::<u8, std::io::Error>(std::io::Error::other("down")) });
    let svc_a = CircuitBreakerLayer::shared(sa.clone()).layer(failing);
    for _ in 0..2 {
        assert!(matches!(
            svc_a.clone().oneshot(()).await,
            Err(CallError::Inner(_))
        ));
    }
    sa.sync().await.expect("sync a");
    sb.sync().await.expect("sync b");
    let ok = service_fn(|_: ()| async { Ok::<u8, std::io::Error>(7) });
    let svc_b = CircuitBreakerLayer::shared(sb.clone()).layer(ok);
    match svc_b.clone().oneshot(()).await {
        Err(CallError::Rejected(r)) => {
            assert_eq!(
                (r.state, r.retry_after),
                (BreakerState::Open, Duration::from_secs(10))
            );
        }
        other => panic!("b should reject after its sync, got {other:?}"),
    }
    // One probe each from the store's two; both succeed and close it.
    clock.advance(Duration::from_secs(10));
    // Called without `poll_ready`, a probe cannot reserve one of the store's probes.
    let mut direct = CircuitBreakerLayer::shared(sb.clone()).layer(ok);
    match direct.call(()).await {
        Err(CallError::Rejected(r)) => assert_eq!(r.state, BreakerState::HalfOpen),
        other => panic!("a probe needs poll_ready, got {other:?}"),
    }
    assert_eq!(svc_b.clone().oneshot(()).await.ok(), Some(7));
    assert_eq!(svc_b.clone().oneshot(()).await.ok(), Some(7));
    assert_eq!(
        sb.local().state(),
        BreakerState::Closed,
        "the second probe closed it"
    );
    assert_eq!(sa.sync().await.expect("sync a").state, BreakerState::Closed);
}
