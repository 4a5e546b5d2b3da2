//! The dashboard: one web UI for the queues, jobs, dead letters, schedules, workflows,
//! workers, caches, rate limiters, breakers, events and alerts of an application, served
//! from the binary.
//!
//! Pages are rendered on the server (maud) and read without JavaScript; htmx makes the
//! navigation and the actions smoother, uPlot draws the charts, and server-sent events keep
//! the live parts of a page current while its tab is visible. Every page has a JSON twin
//! under `/api/v1`, and every action is a POST there.
//!
//! Safe by default: [`Dashboard::serve`] refuses an address other than loopback unless an
//! [`Auth`] is configured; viewers read and operators act; every action is checked against
//! cross-site requests and recorded in the event stream; a content security policy allows
//! only the dashboard's own scripts; job arguments pass a [`Redactor`] before they are shown.
//!
//! ```no_run
//! # async fn run(app: celeriac::App) -> Result<(), Box<dyn std::error::Error>> {
//! // Mounted in an application's own axum server, with authentication from the
//! // CELERIAC_DASHBOARD_* environment variables:
//! let admin = axum::Router::new().nest("/admin", celeriac_web::router(app)?);
//! # Ok(()) }
//! ```

mod alerts;
mod assets;
mod auth;
mod breakers;
mod cache;
mod cost;
mod dead;
mod events;
mod job;
mod jobs;
mod layout;
mod limits;
mod live;
mod overview;
mod period;
mod queues;
mod request;
mod schedules;
mod search;
mod settings;
mod workers;
mod workflows;

pub use auth::{Auth, AuthError, Role};
pub use cost::MonitoringCost;

use axum::routing::{get, post};
use axum::Router;
use celeriac::App;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the live parts of a page are refreshed while its tab is visible.
pub const LIVE_EVERY: Duration = Duration::from_secs(3);

/// Hides what job arguments and results should not show: given a task's name and the value
/// as JSON, returns what the dashboard displays.
pub type Redactor = Arc<dyn Fn(&str, serde_json::Value) -> serde_json::Value + Send + Sync>;

/// The dashboard of an application, to mount in an axum server ([`router`](Self::router))
/// or to serve on its own ([`serve`](Self::serve)).
#[derive(Clone)]
pub struct Dashboard {
    app: App,
    auth: Auth,
    redactor: Redactor,
    live_every: Duration,
    alert_rules: Option<Vec<celeriac::alerts::Rule>>,
}

/// The dashboard of `app` with authentication from the `CELERIAC_DASHBOARD_*` environment
/// variables (see [`Auth::from_env`]), as a router to mount.
///
/// # Errors
/// When those variables are malformed (the error names the variable).
pub fn router(app: App) -> Result<Router, AuthError> {
    Ok(Dashboard::new(app).auth(Auth::from_env()?).router())
}

impl Dashboard {
    /// The dashboard of `app`, with no authentication (so loopback only when served) and the
    /// default redaction ([`redact_secrets`]).
    pub fn new(app: App) -> Self {
        Dashboard {
            app,
            auth: Auth::none(),
            redactor: Arc::new(|_, v| redact_secrets(v)),
            live_every: LIVE_EVERY,
            alert_rules: None,
        }
    }

    /// Who may read and who may act.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Replaces the redaction of job arguments and results.
    pub fn redact(
        mut self,
        redactor: impl Fn(&str, serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.redactor = Arc::new(redactor);
        self
    }

    /// The alert rules the evaluating process runs, for the alerts page (without, it shows
    /// the built-in rules and says so).
    pub fn alert_rules(mut self, rules: Vec<celeriac::alerts::Rule>) -> Self {
        self.alert_rules = Some(rules);
        self
    }

    /// How often live parts refresh (at least 500 ms).
    pub fn live_every(mut self, every: Duration) -> Self {
        self.live_every = every.max(Duration::from_millis(500));
        self
    }

    /// Whether the dashboard may be served on `addr`: loopback always, any other address only
    /// with authentication configured.
    ///
    /// # Errors
    /// The refusal, in words that say what to set.
    pub fn check_bind(&self, addr: SocketAddr) -> Result<(), String> {
        if addr.ip().is_loopback() || self.auth.is_configured() {
            return Ok(());
        }
        Err(format!(
            "refusing to serve the dashboard on {addr} without authentication: anyone who can \
             reach it could purge queues. Bind to 127.0.0.1, or set CELERIAC_DASHBOARD_TOKEN \
             (operators) and CELERIAC_DASHBOARD_VIEWER_TOKEN (read only)"
        ))
    }

    /// The pages, their JSON twins, the actions and the static files.
    pub fn router(&self) -> Router {
        let mut ctx = request::Ctx::new(
            self.app.clone(),
            self.auth.clone(),
            self.redactor.clone(),
            self.live_every,
        );
        ctx.alert_rules = self.alert_rules.clone();
        let ctx = Arc::new(ctx);
        let pages = Router::new()
            .route("/", get(overview::page))
            .route("/api/v1/overview", get(overview::api))
            .route("/live/overview", get(overview::live))
            .route("/login", get(auth::login_page).post(auth::login))
            .route("/logout", post(auth::logout))
            .route("/static/{file}", get(assets::serve));
        let pages = queues::routes(pages);
        let pages = jobs::routes(pages);
        let pages = dead::routes(pages);
        let pages = schedules::routes(pages);
        let pages = workers::routes(pages);
        let pages = events::routes(pages);
        let pages = alerts::routes(pages);
        let pages = cache::routes(pages);
        let pages = breakers::routes(pages);
        let pages = limits::routes(pages);
        let pages = workflows::routes(pages);
        let pages = settings::routes(pages);
        pages
            .fallback(request::not_found)
            .layer(axum::middleware::from_fn_with_state(
                ctx.clone(),
                auth::guard,
            ))
            .with_state(ctx)
    }

    /// Serves the dashboard on `addr` until `stop`, after [`check_bind`](Self::check_bind).
    ///
    /// # Errors
    /// When the address is refused or cannot be bound (the error names it), or the server
    /// fails.
    pub async fn serve(self, addr: SocketAddr, stop: CancellationToken) -> std::io::Result<()> {
        self.check_bind(addr)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
        self.serve_on(crate::listen(addr).await?, stop).await
    }

    /// Serves the dashboard on a listener already bound (after
    /// [`check_bind`](Self::check_bind) on its address), until `stop`.
    ///
    /// # Errors
    /// When the address is refused, or the server fails.
    pub async fn serve_on(
        self,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        self.check_bind(addr)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
        tracing::info!(%addr, "serving the dashboard");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }
}

/// The default redaction: the value of every object key that names a secret (`password`,
/// `secret`, `token`, `api_key`, `authorization`, `credential`, `private_key`, `cookie`,
/// `session`, any case, as part of a longer key too) becomes `"***"`, at any depth.
pub fn redact_secrets(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    const SECRET: [&str; 10] = [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "credential",
        "private_key",
        "cookie",
    ];
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if SECRET.iter().any(|s| lower.contains(s)) || lower == "session" {
                        (k, Value::String("***".to_string()))
                    } else {
                        (k, redact_secrets(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_secrets).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v = json!({"user": "ann", "Password": "p", "nested": [{"api_key": "k", "n": 1}],
            "db": {"AUTHORIZATION_header": "Bearer x"}});
        let r = redact_secrets(v);
        assert_eq!(
            r,
            json!({"user": "ann", "Password": "***", "nested": [{"api_key": "***", "n": 1}],
                "db": {"AUTHORIZATION_header": "***"}})
        );
    }
}
