//! What the rate-limit layer costs a request over HTTP: one process serves the same trivial
//! handler at `/plain` and, behind `RateLimitLayer` over a private Redis (100/minute per
//! `api_key`, as the shop), at `/limited`; oha drives both at the same fixed rate at the same
//! time (so both see the same machine), over keys that are all allowed; and at `/local` the
//! same layer over an in-process limiter.

use super::oha::{self, Class, Rec};
use super::procs::{free_port, wait_http, Proc, Redis};
use super::stats::{self, RouteStats};
use super::{say, Env};
use anyhow::Result;
use celeriac::layer::rate_limit::{KeyExtractor, RateLimitLayer};
use celeriac::limit::RateLimiter;
use clap::Args;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of the hidden `limit-probe` server.
#[derive(Args, Debug)]
pub(crate) struct ProbeArgs {
    /// The store (`redis://...`).
    #[arg(long)]
    url: String,
    /// Port on 127.0.0.1.
    #[arg(long)]
    port: u16,
}

/// The server: `/plain` and `/limited`, the same handler.
pub(crate) async fn serve(a: ProbeArgs) -> Result<()> {
    let backend = Arc::new(celeriac::AnyBackend::connect(&a.url).await?);
    // The shop's quota (a bucket of 100 a minute) and key (the `api_key` parameter).
    let limiter = RateLimiter::builder(backend)
        .quota(crate::http::quota(100, "default"))
        .build()?;
    let key = KeyExtractor::from_fn(crate::http::api_key);
    async fn handler() -> &'static str {
        "ok"
    }
    let limited = axum::Router::new()
        .route("/limited", axum::routing::get(handler))
        .layer(RateLimitLayer::new(limiter, key.clone()));
    // The same layer over an in-process limiter: what the layer itself costs, without the
    // store's round trip.
    let local = RateLimiter::builder(Arc::new(celeriac::limit::LocalLimiter::new()))
        .quota(crate::http::quota(100, "default"))
        .build()?;
    let local = axum::Router::new()
        .route("/local", axum::routing::get(handler))
        .layer(RateLimitLayer::new(local, key));
    let app = axum::Router::new()
        .route("/plain", axum::routing::get(handler))
        .route("/healthz", axum::routing::get(handler))
        .merge(limited)
        .merge(local);
    let l = tokio::net::TcpListener::bind(("127.0.0.1", a.port)).await?;
    axum::serve(l, app).await?;
    Ok(())
}

/// The measurement.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Overhead {
    pub(crate) rate: f64,
    pub(crate) plain: RouteStats,
    pub(crate) limited: RouteStats,
    /// The layer over an in-process limiter (no store round trip).
    pub(crate) local: RouteStats,
    pub(crate) local_p99_added_us: f64,
    pub(crate) p50_added_us: f64,
    pub(crate) p99_added_us: f64,
}

/// Starts Redis and the probe server, drives both routes at `rate` each for `d`.
pub(crate) async fn measure(env: &Env, d: Duration, rate: f64) -> Result<Overhead> {
    let dir = env.work.join("limit-overhead");
    std::fs::create_dir_all(&dir)?;
    say("rate-limit layer: starting a private Redis and the probe server");
    let redis = Redis::start(&dir).await?;
    let port = free_port()?;
    let me = std::env::current_exe()?;
    let mut p = Proc::new(
        "limit-probe",
        &me,
        vec![
            "limit-probe".into(),
            "--url".into(),
            redis.url(),
            "--port".into(),
            port.to_string(),
        ],
        vec![],
        &dir,
    );
    p.start()?;
    let http = reqwest::Client::new();
    wait_http(
        &http,
        &format!("http://127.0.0.1:{port}/healthz"),
        Duration::from_secs(20),
        &mut p,
    )
    .await?;
    let warm = 2.0;
    let secs = d.as_secs_f64() + warm;
    let mk = |route: &'static str| Class {
        route,
        instance: "probe".into(),
        rate: Some(rate),
        url_regex: format!(r"http://127.0.0.1:{port}/{route}\?api_key=k-[0-9]{{8}}"),
        method: "GET",
        bodies: None,
        conns: 32,
    };
    let t0 = oha::now_ms();
    let a = oha::spawn(&env.oha, mk("plain"), secs, &dir, "overhead")?;
    let b = oha::spawn(&env.oha, mk("limited"), secs, &dir, "overhead")?;
    let c = oha::spawn(&env.oha, mk("local"), secs, &dir, "overhead")?;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        tokio::time::sleep(Duration::from_secs(5)).await;
        say(format!(
            "rate-limit layer: {:.0} s left",
            (secs - start.elapsed().as_secs_f64()).max(0.0)
        ));
    }
    let a = a.finish().await?;
    let b = b.finish().await?;
    let c = c.finish().await?;
    p.stop(Duration::from_secs(2));
    drop(redis);
    let ra: Vec<&Rec> = a.recs.iter().collect();
    let rb: Vec<&Rec> = b.recs.iter().collect();
    let rc: Vec<&Rec> = c.recs.iter().collect();
    let from = t0 + warm * 1000.0;
    let to = t0 + secs * 1000.0;
    let plain = stats::route_stats("plain", &ra, from, to, a.errors.iter().map(|e| e.1).sum());
    let limited = stats::route_stats("limited", &rb, from, to, b.errors.iter().map(|e| e.1).sum());
    let local = stats::route_stats("local", &rc, from, to, c.errors.iter().map(|e| e.1).sum());
    let diff = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y) * 1000.0,
        _ => f64::NAN,
    };
    Ok(Overhead {
        rate,
        p50_added_us: diff(limited.p50_ms, plain.p50_ms),
        p99_added_us: diff(limited.p99_ms, plain.p99_ms),
        local_p99_added_us: diff(local.p99_ms, plain.p99_ms),
        plain,
        limited,
        local,
    })
}
