//! A dashboard served on a loopback port over a fresh SQLite file, and a client for it.

use celeriac::App;
use celeriac_web::dashboard::{Auth, Role};
use celeriac_web::Dashboard;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The operator's token of the served dashboards.
pub const OPERATOR: &str = "operator-token-0123456789";
/// The viewer's token.
pub const VIEWER: &str = "viewer-token-0123456789ab";

/// A served dashboard; stops when dropped.
pub struct Served {
    pub app: App,
    pub base: String,
    pub http: reqwest::Client,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A fresh application on a SQLite file.
pub async fn app() -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let app = App::builder().url(url.as_str()).build().await.expect("app");
    (app, dir)
}

/// The dashboard of a fresh application, with an operator's and a viewer's token.
pub async fn serve() -> Served {
    let (app, dir) = app().await;
    serve_app(app, dir, |d| d).await
}

/// The dashboard of `app`, as `configure` makes it (tokens already set).
pub async fn serve_app(
    app: App,
    dir: tempfile::TempDir,
    configure: impl FnOnce(Dashboard) -> Dashboard,
) -> Served {
    let auth = Auth::none()
        .token(Role::Operator, OPERATOR)
        .expect("a long token")
        .token(Role::Viewer, VIEWER)
        .expect("a long token");
    let dashboard = configure(Dashboard::new(app.clone()).auth(auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let stop = CancellationToken::new();
    tokio::spawn(dashboard.serve_on(listener, stop.clone()));
    Served {
        app,
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client"),
        stop,
        _dir: dir,
    }
}

impl Served {
    /// GET `path` as the operator; the status and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.get_as(OPERATOR, path).await
    }

    /// GET `path` with `token`.
    pub async fn get_as(&self, token: &str, path: &str) -> (u16, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("the dashboard answers");
        let status = res.status().as_u16();
        (status, res.text().await.expect("a body"))
    }

    /// GET the JSON twin at `path` as the operator; fails unless 200.
    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// POST the JSON object `body` to `path` with `token`; the status and the JSON answer.
    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("the dashboard answers");
        let status = res.status().as_u16();
        let text = res.text().await.expect("a body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POST as the operator; fails unless 200.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post_as(OPERATOR, path, body).await;
        assert_eq!(status, 200, "POST {path}: {v}");
        v
    }
}

/// Enqueues `n` jobs of `task` with `args` on `queue`.
pub async fn enqueue(
    app: &App,
    queue: &str,
    task: &str,
    args: Value,
    n: usize,
) -> Vec<celeriac::JobId> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let opts = celeriac::JobOptions {
            queue: Some(queue.to_string()),
            ..Default::default()
        };
        let h = app
            .client()
            .enqueue_json(None, task, &args, opts)
            .await
            .expect("enqueue");
        ids.push(h.id());
    }
    ids
}

/// The number of jobs of `queue` in `state`.
pub async fn count(app: &App, queue: &str, state: celeriac::JobState) -> u64 {
    use celeriac::QueueAdmin;
    app.backend()
        .stats()
        .await
        .expect("stats")
        .iter()
        .find(|s| s.queue == queue)
        .map_or(0, |s| s.count(state))
}

impl Served {
    /// Opens the server-sent event stream at `path` as the operator; fails unless it is one.
    pub async fn sse(&self, path: &str) -> reqwest::Response {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .expect("the stream opens");
        assert_eq!(res.status(), 200, "GET {path}");
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream"),
            "GET {path}"
        );
        res
    }
}
