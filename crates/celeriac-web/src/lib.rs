//! Celeriac over HTTP: an axum [`Router`] that serves
//!
//! - `/metrics`: every metric Celeriac (and the application) records through the `metrics`
//!   facade, in the Prometheus text format (`metrics-exporter-prometheus`), and, from the one
//!   process that holds the `celeriac-monitor` lease, the fleet gauges (queue depth and
//!   latency, consumers, workers alive, schedules, the store's memory);
//! - `/livez`: whether the process runs tasks (a watchdog on the runtime); it never asks the
//!   store, so a store outage does not restart every pod;
//! - `/readyz`: whether the store answers, the workers' heartbeats land and nothing is
//!   draining;
//! - `/healthz`: the same, and with `?deep=1` a canary job through the store.
//!
//! Answers are JSON (status 200 or 503), except `/metrics`.
//!
//! ```no_run
//! # async fn run(app: celeriac::App) -> Result<(), Box<dyn std::error::Error>> {
//! let worker = app.worker();
//! let http = celeriac_web::Http::new(app.clone())?.watch_worker(&worker);
//! // Mount `http.router()` in your own axum app, or serve it on its own:
//! let stop = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(http.serve("127.0.0.1:9464".parse()?, stop.clone()));
//! worker.run().await?;
//! stop.cancel();
//! # Ok(()) }
//! ```

mod alerts;
pub mod dashboard;
mod fleet;
mod health;
mod metrics;

pub use crate::metrics::prometheus;
pub use alerts::{states as alert_states, webhook_body, Alerting};
pub use dashboard::{router, Dashboard};
pub use fleet::{EVERY as FLEET_EVERY, LEASE as FLEET_LEASE};
pub use health::{Check, Liveness, Readiness, CANARY_QUEUE, STALLED_AFTER, STORE_TIMEOUT};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use celeriac::alerts::Snapshot;
use celeriac::{AnyBackend, App, Beat, Worker};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the deep check's canary may take.
pub const CANARY_LIMIT: Duration = Duration::from_secs(5);

/// The HTTP side of a process: its metrics, health checks and the fleet gauges it may publish.
/// Cloning shares it.
#[derive(Clone)]
pub struct Http {
    inner: Arc<Inner>,
}

struct Inner {
    app: App,
    prometheus: PrometheusHandle,
    watchdog: health::Watchdog,
    served: health::Served,
    fleet: Arc<fleet::FleetPage>,
    alerts: Arc<RwLock<Option<Arc<alerts::Evaluator>>>>,
    /// Stops the watchdog and the fleet publisher when the last clone goes.
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Http {
    /// The HTTP side of `app`: installs the Prometheus recorder (once per process), starts the
    /// runtime watchdog and competes to publish the fleet gauges. Call it inside a Tokio
    /// runtime.
    ///
    /// # Errors
    /// When another `metrics` recorder is installed in this process.
    pub fn new(app: App) -> Result<Self, String> {
        let prometheus = metrics::prometheus()?;
        let stop = CancellationToken::new();
        let watchdog = health::Watchdog::start(stop.clone(), Some(prometheus.clone()));
        let holder = format!(
            "{}:{}/http",
            celeriac::process::hostname(),
            std::process::id()
        );
        let page = Arc::new(fleet::FleetPage::default());
        let evaluator = Arc::new(RwLock::new(None));
        tokio::spawn(fleet::publish_loop(
            app.clone(),
            page.clone(),
            evaluator.clone(),
            holder,
            fleet::EVERY,
            stop.clone(),
        ));
        Ok(Http {
            inner: Arc::new(Inner {
                app,
                prometheus,
                watchdog,
                served: health::Served::default(),
                fleet: page,
                alerts: evaluator,
                stop,
            }),
        })
    }

    /// Evaluates these alert rules whenever this process publishes the fleet gauges (while it
    /// holds the `celeriac-monitor` lease), and posts what fires and resolves to the webhook.
    pub fn alerting(self, config: Alerting) -> Self {
        if let Ok(mut a) = self.inner.alerts.write() {
            *a = Some(Arc::new(alerts::Evaluator::new(config)));
        }
        self
    }

    /// Evaluates the alert rules now, whether this process leads or not, and returns what
    /// fired or resolved (and was notified); nothing without [`alerting`](Self::alerting).
    pub async fn evaluate_alerts(&self) -> Vec<celeriac::alerts::Alert> {
        let Some(ev) = self.inner.alerts.read().ok().and_then(|a| a.clone()) else {
            return Vec::new();
        };
        let app = &self.inner.app;
        let snap = match Snapshot::read(app.backend().as_ref(), app.client().now()).await {
            Ok(s) => s,
            Err(e) => Snapshot::store_down(app.client().now(), e.to_string()),
        };
        ev.run(app, &snap).await
    }

    /// Readiness also follows this worker: its heartbeats to the store, and whether it drains.
    pub fn watch_worker(self, worker: &Worker<AnyBackend>) -> Self {
        if let Ok(mut w) = self.inner.served.workers.lock() {
            w.push((worker.shutdown_handle(), worker.stats()));
        }
        self
    }

    /// Readiness also follows this beat: whether it is stopping.
    pub fn watch_beat(self, beat: &Beat<AnyBackend>) -> Self {
        if let Ok(mut b) = self.inner.served.beats.lock() {
            b.push(beat.shutdown_handle());
        }
        self
    }

    /// The routes, to serve or to mount in an application's own router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics_page))
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .route("/healthz", get(healthz))
            .with_state(self.inner.clone())
    }

    /// Serves [`router`](Self::router) on `addr` until `stop`.
    ///
    /// # Errors
    /// When `addr` cannot be bound (the error names it), or the server fails.
    pub async fn serve(self, addr: SocketAddr, stop: CancellationToken) -> std::io::Result<()> {
        self.serve_on(listen(addr).await?, stop).await
    }

    /// Serves [`router`](Self::router) on a listener already bound, until `stop`.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn serve_on(
        self,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        tracing::info!(
            addr = ?listener.local_addr().ok(),
            "serving /metrics, /livez, /readyz and /healthz"
        );
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }

    /// Publishes the fleet gauges now, whether this process leads or not (benchmarks; the
    /// next round of the elected publisher decides again whether they show).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn publish_fleet_gauges(&self) -> celeriac::Result<()> {
        fleet::publish(&self.inner.app, &self.inner.fleet)
            .await
            .map(drop)
    }
}

/// A listener on `addr`; the error names the address.
pub(crate) async fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

async fn metrics_page(State(inner): State<Arc<Inner>>) -> Response {
    let page = Http { inner }.render_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
        .into_response()
}

impl Http {
    /// The `/metrics` page: what this process recorded, and the fleet gauges while it leads.
    pub fn render_metrics(&self) -> String {
        let mut page = self.inner.prometheus.render();
        if let Some(fleet) = self.inner.fleet.text() {
            page.push_str(&fleet);
        }
        page
    }
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn livez(State(inner): State<Arc<Inner>>) -> Response {
    let l = health::liveness(&inner.watchdog);
    (status(l.live), Json(l)).into_response()
}

async fn readyz(State(inner): State<Arc<Inner>>) -> Response {
    let r = health::readiness(&inner.app, &inner.served).await;
    (status(r.ready), Json(r)).into_response()
}

/// The query of `/healthz`.
#[derive(Debug, Deserialize)]
struct Deep {
    #[serde(default)]
    deep: Option<String>,
}

async fn healthz(State(inner): State<Arc<Inner>>, Query(q): Query<Deep>) -> Response {
    let mut r = health::readiness(&inner.app, &inner.served).await;
    let deep = q
        .deep
        .as_deref()
        .is_some_and(|d| matches!(d, "1" | "true" | "yes"));
    if deep {
        let c = health::canary(&inner.app, CANARY_LIMIT).await;
        r.ready &= c.ok;
        r.checks.push(c);
    }
    (status(r.ready), Json(r)).into_response()
}
