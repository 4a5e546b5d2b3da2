//! Who may use the dashboard, and how every request is checked: tokens for two roles, a
//! session cookie after logging in, cross-site checks on every action, and the security
//! headers of every answer.

use super::layout;
use super::request::{base_of, failure_json, parse_form, Ctx, Failure, MAX_FORM};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads every page.
    Viewer,
    /// Reads, and acts: pause, retry, cancel, delete, purge, force breakers.
    Operator,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// Malformed authentication settings; the message names the setting, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

/// Tokens that open the dashboard, each with its role. No token: no authentication, which
/// [`Dashboard::serve`](super::Dashboard::serve) allows on loopback only.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Vec<(String, Role)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<&str> = self.tokens.iter().map(|(_, r)| r.as_str()).collect();
        f.debug_struct("Auth").field("tokens", &roles).finish()
    }
}

/// The shortest token accepted.
pub const MIN_TOKEN: usize = 16;

impl Auth {
    /// No authentication: everyone who reaches the dashboard is an operator.
    pub fn none() -> Self {
        Auth::default()
    }

    /// Adds a token for `role`.
    ///
    /// # Errors
    /// When the token is shorter than [`MIN_TOKEN`] characters.
    pub fn token(mut self, role: Role, token: impl Into<String>) -> Result<Self, AuthError> {
        let token = token.into();
        if token.chars().count() < MIN_TOKEN {
            return Err(AuthError(format!(
                "a dashboard {} token must have at least {MIN_TOKEN} characters",
                role.as_str()
            )));
        }
        self.tokens.push((token, role));
        Ok(self)
    }

    /// From `CELERIAC_DASHBOARD_TOKEN` (operators) and `CELERIAC_DASHBOARD_VIEWER_TOKEN`
    /// (read only); neither set is no authentication.
    ///
    /// # Errors
    /// When one is set but too short (the error names it; the value is never shown).
    pub fn from_env() -> Result<Self, AuthError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with the variables from `var`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, AuthError> {
        let mut auth = Auth::none();
        for (name, role) in [
            ("CELERIAC_DASHBOARD_TOKEN", Role::Operator),
            ("CELERIAC_DASHBOARD_VIEWER_TOKEN", Role::Viewer),
        ] {
            if let Some(token) = var(name).filter(|t| !t.is_empty()) {
                auth = auth
                    .token(role, token)
                    .map_err(|_| AuthError(format!("{name}: at least {MIN_TOKEN} characters")))?;
            }
        }
        Ok(auth)
    }

    /// The roles that have a token, operators first.
    pub fn roles(&self) -> Vec<&'static str> {
        [Role::Operator, Role::Viewer]
            .into_iter()
            .filter(|r| self.tokens.iter().any(|(_, role)| role == r))
            .map(Role::as_str)
            .collect()
    }

    /// Whether any token is set.
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The role of `token`, compared in constant time.
    fn role_of(&self, token: &str) -> Option<Role> {
        let mut found = None;
        for (t, role) in &self.tokens {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(*role);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who a request comes from.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    /// What may be done.
    pub(crate) role: Role,
    /// A name for the audit trail.
    pub(crate) name: String,
    /// The token every form of the page carries back.
    pub(crate) csrf: String,
    /// Whether authentication is on (a logout button shows).
    pub(crate) signed_in: bool,
}

/// How long a session lasts.
const SESSION_FOR: Duration = Duration::from_secs(12 * 3600);

/// The session cookie's name.
const COOKIE: &str = "celeriac_dashboard";

struct Session {
    role: Role,
    csrf: String,
    until: Instant,
}

/// Sessions of this process (a restart asks to log in again), and the cross-site token of
/// the dashboard without authentication.
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    anonymous_csrf: String,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            open: Mutex::new(HashMap::new()),
            anonymous_csrf: random_hex(),
        }
    }
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    fn start(&self, role: Role) -> (String, String) {
        let id = random_hex();
        let csrf = random_hex();
        if let Ok(mut open) = self.open.lock() {
            let now = Instant::now();
            open.retain(|_, s| s.until > now);
            open.insert(
                id.clone(),
                Session {
                    role,
                    csrf: csrf.clone(),
                    until: now + SESSION_FOR,
                },
            );
        }
        (id, csrf)
    }

    fn get(&self, id: &str) -> Option<(Role, String)> {
        let open = self.open.lock().ok()?;
        let s = open.get(id)?;
        (s.until > Instant::now()).then(|| (s.role, s.csrf.clone()))
    }

    fn end(&self, id: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(id);
        }
    }
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// How a request identified itself.
enum Identity {
    /// No authentication is configured.
    Anyone,
    /// A token in the `Authorization` header: not a browser's ambient credential.
    Bearer(Role),
    /// The session cookie.
    Session(Role, String),
}

fn identify(ctx: &Ctx, headers: &HeaderMap) -> Option<Identity> {
    if !ctx.auth.is_configured() {
        return Some(Identity::Anyone);
    }
    if let Some(token) = bearer(headers) {
        return ctx.auth.role_of(token).map(Identity::Bearer);
    }
    let id = cookie(headers)?;
    ctx.sessions
        .get(&id)
        .map(|(role, csrf)| Identity::Session(role, csrf))
}

/// Checks every request: who it is from, whether they may do it, and, for an action, that it
/// comes from the dashboard's own pages; then adds the security headers.
pub(crate) async fn guard(State(ctx): State<Arc<Ctx>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let open = path.starts_with("/static/") || path == "/login";
    let api = path.starts_with("/api/");
    let base = {
        let (parts, _) = clone_parts(&req);
        base_of(&parts)
    };
    let who = match identify(&ctx, req.headers()) {
        Some(Identity::Anyone) => Who {
            role: Role::Operator,
            name: "local".to_string(),
            csrf: ctx.sessions.anonymous_csrf.clone(),
            signed_in: false,
        },
        Some(Identity::Bearer(role)) => Who {
            role,
            name: format!("token:{}", role.as_str()),
            csrf: String::new(),
            signed_in: false,
        },
        Some(Identity::Session(role, csrf)) => Who {
            role,
            name: format!("session:{}", role.as_str()),
            csrf,
            signed_in: true,
        },
        None if open => Who {
            role: Role::Viewer,
            name: "anonymous".to_string(),
            csrf: String::new(),
            signed_in: false,
        },
        None => {
            let f = Failure {
                status: StatusCode::UNAUTHORIZED,
                message: "sign in: a session, or a token in the Authorization header".to_string(),
            };
            // A person (a page, or a form posted from one, say after a restart ended the
            // session) is sent to sign in; a client gets the reason.
            let person = (!api && req.method() == Method::GET) || is_form(req.headers());
            let res = if !person {
                failure_json(&f)
            } else {
                let here = if req.method() == Method::GET {
                    req.uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string()
                } else {
                    "/".to_string()
                };
                Redirect::to(&super::request::link(
                    &base,
                    &format!("/login?next={}", layout::query_escape(&here)),
                ))
                .into_response()
            };
            return secured(res);
        }
    };
    let acting = !matches!(*req.method(), Method::GET | Method::HEAD);
    let req = if acting && !open {
        // Anyone signed in may sign out; every other action is an operator's.
        if who.role < Role::Operator && path != "/logout" {
            let f = Failure {
                status: StatusCode::FORBIDDEN,
                message: "viewers may not act: an operator's token is needed".to_string(),
            };
            return secured(deny(&req, &base, f));
        }
        let bearer = bearer(req.headers()).is_some();
        match same_origin(req, &who, bearer, &base).await {
            Ok(req) => req,
            Err(res) => return secured(res),
        }
    } else {
        req
    };
    let mut req = req;
    req.extensions_mut().insert(who);
    secured(next.run(req).await)
}

/// The request's parts, for reading (the body stays with the request).
fn clone_parts(req: &Request) -> (axum::http::request::Parts, ()) {
    let mut b = Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone());
    if let Some(o) = req.extensions().get::<axum::extract::OriginalUri>() {
        b = b.extension(o.clone());
    }
    let (parts, _) = b.body(()).unwrap_or_else(|_| Request::new(())).into_parts();
    (parts, ())
}

/// A refusal: JSON for the API, a page for a person.
fn deny(req: &Request, base: &str, f: Failure) -> Response {
    if req.uri().path().starts_with("/api/") && !is_form(req.headers()) {
        return failure_json(&f);
    }
    (f.status, layout::bare(base, "Refused", layout::failure(&f))).into_response()
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// An action must come from the dashboard's own pages: a browser's `Sec-Fetch-Site` says
/// same-origin (or none, typed by the user), and the form carries the page's token. A
/// client with a token in the `Authorization` header sends no ambient credential, so only
/// the browser header is checked for it.
async fn same_origin(
    req: Request,
    who: &Who,
    bearer: bool,
    base: &str,
) -> Result<Request, Response> {
    let refuse = |req: &Request, message: &str| {
        deny(
            req,
            base,
            Failure {
                status: StatusCode::FORBIDDEN,
                message: message.to_string(),
            },
        )
    };
    if let Some(site) = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        if !matches!(site, "same-origin" | "none") {
            return Err(refuse(
                &req,
                "refused: the action came from another site (Sec-Fetch-Site)",
            ));
        }
    }
    if bearer {
        return Ok(req);
    }
    if let Some(token) = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return if constant_time_eq(token.as_bytes(), who.csrf.as_bytes()) {
            Ok(req)
        } else {
            Err(refuse(&req, "refused: the page's token does not match"))
        };
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
        Ok(b) => b,
        Err(e) => {
            return Err(failure_json(&Failure::bad_request(format!(
                "unreadable body: {e}"
            ))))
        }
    };
    let fields = parse_form(&bytes, json).unwrap_or_default();
    let token = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    let req = Request::from_parts(parts, axum::body::Body::from(bytes));
    match token {
        Some(t) if constant_time_eq(t.as_bytes(), who.csrf.as_bytes()) => Ok(req),
        _ => Err(refuse(
            &req,
            "refused: the action did not carry the page's token (reload the page and try again)",
        )),
    }
}

/// The content security policy: the dashboard's own scripts, styles and connections only.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

fn secured(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The login form.
pub(crate) async fn login_page(
    State(ctx): State<Arc<Ctx>>,
    req: super::request::Req,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    if !ctx.auth.is_configured() {
        return Redirect::to(&req.link("/")).into_response();
    }
    let next = q.get("next").cloned().unwrap_or_else(|| "/".to_string());
    let failed = q.contains_key("failed");
    layout::bare(
        &req.base,
        "Sign in",
        html! {
            form.login method="post" action=(req.link("/login")) {
                h1 { "Celeriac" }
                @if failed { p.notice.bad { "That token opens nothing." } }
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" autofocus;
                input type="hidden" name="next" value=(next);
                button type="submit" { "Sign in" }
            }
        },
    )
    .into_response()
}

/// Checks a token and opens a session.
pub(crate) async fn login(
    State(ctx): State<Arc<Ctx>>,
    req: super::request::Req,
    form: super::request::Form,
) -> Response {
    let next = form
        .get("next")
        .filter(|n| n.starts_with('/') && !n.starts_with("//"))
        .unwrap_or("/")
        .to_string();
    let Some(role) = form.get("token").and_then(|t| ctx.auth.role_of(t)) else {
        tracing::warn!("a dashboard sign-in with a wrong token");
        return Redirect::to(&format!(
            "{}?failed=1&next={}",
            req.link("/login"),
            layout::query_escape(&next)
        ))
        .into_response();
    };
    let (id, _) = ctx.sessions.start(role);
    let path = if req.base.is_empty() { "/" } else { &req.base };
    let cookie = format!(
        "{COOKIE}={id}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_FOR.as_secs()
    );
    let mut res = Redirect::to(&req.link(&next)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// Ends the session.
pub(crate) async fn logout(
    State(ctx): State<Arc<Ctx>>,
    req: super::request::Req,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = cookie(&headers) {
        ctx.sessions.end(&id);
    }
    let mut res = Redirect::to(&req.link("/login")).into_response();
    let path = if req.base.is_empty() { "/" } else { &req.base };
    if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}=; Path={path}; Max-Age=0")) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}
