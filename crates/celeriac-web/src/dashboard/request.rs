//! What every handler shares: the dashboard's context, the request as the dashboard sees it
//! (who asks, where the dashboard is mounted), and the answers: a page, its JSON twin, the
//! outcome of an action.

use super::auth::{Auth, Who};
use super::cost::Cost;
use super::layout;
use super::Redactor;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use celeriac::clock::UnixMs;
use celeriac::App;
use maud::Markup;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// What the dashboard's handlers share.
pub(crate) struct Ctx {
    pub(crate) app: App,
    pub(crate) auth: Auth,
    pub(crate) sessions: super::auth::Sessions,
    pub(crate) redactor: Redactor,
    pub(crate) live_every: Duration,
    /// The store time the dashboard spent.
    pub(crate) cost: Cost,
    /// The alert rules in force, when the dashboard was told them.
    pub(crate) alert_rules: Option<Vec<celeriac::alerts::Rule>>,
}

impl Ctx {
    pub(crate) fn new(app: App, auth: Auth, redactor: Redactor, live_every: Duration) -> Self {
        Ctx {
            app,
            auth,
            sessions: super::auth::Sessions::default(),
            redactor,
            live_every,
            cost: Cost::default(),
            alert_rules: None,
        }
    }

    /// The fleet's time.
    pub(crate) fn now(&self) -> UnixMs {
        self.app.client().now()
    }

    /// The application's backend.
    pub(crate) fn store(&self) -> &celeriac::AnyBackend {
        self.app.backend().as_ref()
    }
}

/// A request as the dashboard sees it.
pub(crate) struct Req {
    pub(crate) ctx: Arc<Ctx>,
    /// Who asks (set by the guard).
    pub(crate) who: Who,
    /// Where the dashboard is mounted (`""` at the root, `/admin` when nested there).
    pub(crate) base: String,
    /// The path and query asked, within the dashboard.
    pub(crate) here: String,
}

impl FromRequestParts<Arc<Ctx>> for Req {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Ctx>) -> Result<Self, Response> {
        let who = parts
            .extensions
            .get::<Who>()
            .cloned()
            .ok_or_else(|| StatusCode::UNAUTHORIZED.into_response())?;
        let base = base_of(parts);
        let here = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
        Ok(Req {
            ctx: ctx.clone(),
            who,
            base,
            here,
        })
    }
}

/// Where the router is mounted: the original path less the path the router saw.
pub(crate) fn base_of(parts: &Parts) -> String {
    let seen = parts.uri.path();
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(seen, |o| o.0.path());
    // Nested at `/admin`, the router sees `/` for `/admin` itself.
    let base = if seen == "/" {
        original
    } else {
        original.strip_suffix(seen).unwrap_or("")
    };
    base.trim_end_matches('/').to_string()
}

/// `path` (from the dashboard's root) under the mount point `base`: the root itself is
/// `base` with no slash after it, as a nested router answers it.
pub(crate) fn link(base: &str, path: &str) -> String {
    match path.strip_prefix('/') {
        Some(rest) if !base.is_empty() && (rest.is_empty() || rest.starts_with('?')) => {
            format!("{base}{rest}")
        }
        _ => format!("{base}{path}"),
    }
}

/// Why a page or an action could not be served.
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::NOT_FOUND,
            message: what.into(),
        }
    }

    pub(crate) fn bad_request(what: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            message: what.into(),
        }
    }
}

impl From<celeriac::Error> for Failure {
    fn from(e: celeriac::Error) -> Self {
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the store could not answer: {e}"),
        }
    }
}

/// What handlers return.
pub(crate) type Outcome<T> = Result<T, Failure>;

/// The answer of an action.
#[derive(Debug, Serialize)]
pub(crate) struct Done {
    /// What happened, in words.
    pub(crate) message: String,
    /// How many things it touched, where that counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) count: Option<u64>,
}

impl Done {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Done {
            message: message.into(),
            count: None,
        }
    }

    pub(crate) fn counted(message: impl Into<String>, count: u64) -> Self {
        Done {
            message: message.into(),
            count: Some(count),
        }
    }
}

impl Req {
    /// A link within the dashboard.
    pub(crate) fn link(&self, path: &str) -> String {
        link(&self.base, path)
    }

    /// A page: the layout around `body`, or the error page.
    pub(crate) fn page<T>(
        &self,
        title: &str,
        data: Outcome<T>,
        body: impl FnOnce(&Req, &T) -> Markup,
    ) -> Response {
        match data {
            Ok(d) => layout::page(self, title, body(self, &d)).into_response(),
            Err(f) => (f.status, layout::page(self, title, layout::failure(&f))).into_response(),
        }
    }

    /// A page's JSON twin.
    pub(crate) fn json<T: Serialize>(data: Outcome<T>) -> Response {
        match data {
            Ok(d) => Json(d).into_response(),
            Err(f) => failure_json(&f),
        }
    }

    /// The answer to an action: JSON for API clients; for a form, back to the page it came
    /// from (the `back` field) with the outcome as a notice.
    pub(crate) fn done(&self, form: &Form, outcome: Outcome<Done>) -> Response {
        let Some(back) = form.get("back").filter(|b| b.starts_with('/')) else {
            return Self::json(outcome);
        };
        let notice = match &outcome {
            Ok(d) => d.message.clone(),
            Err(f) => format!("failed: {}", f.message),
        };
        let sep = if back.contains('?') { '&' } else { '?' };
        let to = self.link(&format!(
            "{back}{sep}notice={}",
            layout::query_escape(&notice)
        ));
        Redirect::to(&to).into_response()
    }

    /// Records an action in the event stream (`admin.<action>`, by the dashboard's user). A
    /// store that cannot take it does not undo the action, which already happened.
    pub(crate) async fn audit(&self, action: &str, queue: Option<&str>, message: String) {
        let mut e =
            celeriac::backend::Event::new(format!("admin.{action}"), self.ctx.now(), message);
        e.queue = queue.map(str::to_string);
        e.actor = Some(format!("dashboard:{}", self.who.name));
        let store = self.ctx.store();
        if let Err(err) = celeriac::backend::EventLog::append(store, vec![e]).await {
            tracing::warn!(%err, "the action was not recorded in the event stream");
        }
    }

    /// Store work timed into the dashboard's monitoring cost.
    pub(crate) async fn timed<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        self.ctx.cost.timed(work).await
    }
}

/// An action's form fields (or JSON object fields), in order; a field may repeat (`id`).
pub(crate) struct Form(pub(crate) Vec<(String, String)>);

impl Form {
    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether the checkbox or flag `name` is on.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| matches!(v, "1" | "true" | "on" | "yes"))
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, Response> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bytes = axum::body::to_bytes(req.into_body(), MAX_FORM)
            .await
            .map_err(|e| failure_json(&Failure::bad_request(format!("unreadable body: {e}"))))?;
        parse_form(&bytes, json)
            .map(Form)
            .map_err(|m| failure_json(&Failure::bad_request(m)))
    }
}

/// The largest form or JSON body an action takes.
pub(crate) const MAX_FORM: usize = 1 << 20;

/// Fields from a urlencoded form, or from a flat JSON object (arrays become repeated fields).
pub(crate) fn parse_form(bytes: &[u8], json: bool) -> Result<Vec<(String, String)>, String> {
    if !json {
        return serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes)
            .map_err(|e| format!("the form could not be read: {e}"));
    }
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the JSON body could not be read: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("the JSON body must be an object".to_string());
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let mut push = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => out.push((k.clone(), s.clone())),
            serde_json::Value::Null => {}
            other => out.push((k.clone(), other.to_string())),
        };
        match &v {
            serde_json::Value::Array(items) => items.iter().for_each(&mut push),
            other => push(other),
        }
    }
    Ok(out)
}

pub(crate) fn failure_json(f: &Failure) -> Response {
    (f.status, Json(serde_json::json!({ "error": f.message }))).into_response()
}

/// Anything the dashboard does not serve.
pub(crate) async fn not_found(req: Req) -> Response {
    let f = Failure::not_found(format!("nothing here: {}", req.here));
    if req.here.starts_with("/api/") {
        return failure_json(&f);
    }
    (
        f.status,
        layout::page(&req, "Not found", layout::failure(&f)),
    )
        .into_response()
}
