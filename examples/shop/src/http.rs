//! The shop's HTTP service: the catalog, the orders and the photos behind a per-key rate
//! limit, `/healthz`, and the dashboard with Prometheus metrics at `/admin`.
//!
//! - **Rate limits**: every route but `/healthz` and `/admin` goes through Celeriac's
//!   [`RateLimitLayer`], keyed by the `x-api-key` header or, for clients that cannot set
//!   headers, the `api_key` query parameter (a request with neither is a `400`). Each key
//!   has a bucket of 100 requests refilled at 100 a minute (GCRA, `Quota::per_minute(100)`
//!   with a burst of 99: a client may spend its 100 at once, then gets one every 0.6 s);
//!   premium keys get 1,000 a minute the same way. Decisions are made in the store (one Lua
//!   script on Redis, shared by every instance), fail open with a local limiter per process
//!   while the store is unreachable (the limiter stops asking a store that failed twice for a
//!   second at a time, so requests do not wait out timeouts), and
//!   carry the standard `RateLimit-Policy` /
//!   `RateLimit` headers; a `429` says `Retry-After`. The limiter publishes its figures for
//!   the dashboard's *Rate limits* page (`/admin/limits?name=shop`).
//! - **`/admin`**: the Celeriac dashboard (celeriac-web's [`Dashboard`]) and
//!   `/admin/metrics` (celeriac-web's [`Http`] Prometheus page), both behind the dashboard's
//!   authentication: the operator token ([`HttpOptions::admin_token`], from
//!   `CELERIAC_DASHBOARD_TOKEN`) as `Authorization: Bearer`, or the session cookie of a
//!   signed-in browser. Without a token they are only served on loopback: [`check_bind`].
//! - **`/healthz`**: `200 ok` while the process serves.

use crate::shop::Shop;
use crate::{catalog, orders, photos};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use celeriac::layer::rate_limit::{KeyExtractor, RateLimitLayer, RequestHead};
use celeriac::limit::stats::DEFAULT_PUBLISH_EVERY;
use celeriac::limit::{FailMode, Quota, RateLimiter};
use celeriac::AnyBackend;
use celeriac_web::dashboard::{Auth, Role};
use celeriac_web::{Dashboard, Http};
use sqlx::Row;
use std::net::SocketAddr;
use std::time::Duration;
use tower::ServiceExt;

/// The application name the limiter publishes its figures under (the dashboard's
/// `/admin/limits?name=shop`).
pub const LIMITS_APP: &str = "shop";
/// The limiter's name (the `limiter` label of `celeriac_rate_limit_*` metrics).
pub const LIMITER: &str = "api";
/// The largest photo accepted.
pub const MAX_PHOTO_BYTES: usize = 20 << 20;

/// How the HTTP service is set up.
#[derive(Clone)]
pub struct HttpOptions {
    /// Read the catalog through the cache (`--no-cache`: every request queries).
    pub cache: bool,
    /// API keys with the premium quota.
    pub premium_keys: Vec<String>,
    /// The operator token of `/admin` (`CELERIAC_DASHBOARD_TOKEN`; at least 16 characters).
    /// Without one, `/admin` is open to whoever reaches it: serve on loopback only
    /// ([`check_bind`]).
    pub admin_token: Option<String>,
    /// Requests a minute per key.
    pub limit_per_minute: u32,
    /// Requests a minute per premium key.
    pub premium_per_minute: u32,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("cache", &self.cache)
            .field("premium_keys", &self.premium_keys.len())
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("limit_per_minute", &self.limit_per_minute)
            .field("premium_per_minute", &self.premium_per_minute)
            .finish()
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            cache: true,
            premium_keys: Vec::new(),
            admin_token: None,
            limit_per_minute: 100,
            premium_per_minute: 1000,
        }
    }
}

impl HttpOptions {
    /// The dashboard's authentication: the operator token, if any.
    ///
    /// # Errors
    /// A token shorter than 16 characters (the token itself is never shown).
    pub fn auth(&self) -> anyhow::Result<Auth> {
        match self.admin_token.as_deref().filter(|t| !t.is_empty()) {
            None => Ok(Auth::none()),
            Some(t) => Auth::none()
                .token(Role::Operator, t)
                .map_err(|e| anyhow::anyhow!("CELERIAC_DASHBOARD_TOKEN: {e}")),
        }
    }
}

/// Whether the service may listen on `addr`: loopback always; any other address only with
/// an admin token, since `/admin` lets whoever reaches it purge queues.
///
/// # Errors
/// The refusal, saying what to set; or a token that is too short.
pub fn check_bind(addr: SocketAddr, opts: &HttpOptions) -> anyhow::Result<()> {
    let auth = opts.auth()?;
    if addr.ip().is_loopback() || auth.is_configured() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve on {addr} without an admin token: /admin (the dashboard) would let \
         anyone who reaches it purge queues. Bind to 127.0.0.1, or set \
         CELERIAC_DASHBOARD_TOKEN (at least 16 characters)"
    )
}

/// The `x-api-key` header.
static API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// A request's rate-limit key: `key:<the x-api-key header>`, or `key:<the api_key query
/// parameter>` (percent-decoded); none (a `400`) without either.
pub fn api_key(head: &RequestHead<'_>) -> Option<String> {
    if let Some(v) = head.headers.get(&API_KEY_HEADER) {
        let v = v.to_str().ok()?.trim();
        return (!v.is_empty()).then(|| format!("key:{v}"));
    }
    let query = head.uri.query()?;
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("api_key="))?;
    let v = percent_decode(raw)?;
    let v = v.trim();
    (!v.is_empty()).then(|| format!("key:{v}"))
}

/// Decodes `%XX` escapes and `+` (a space) of a query value; `None` when it is not UTF-8
/// or an escape is broken.
fn percent_decode(raw: &str) -> Option<String> {
    if !raw.contains(['%', '+']) {
        return Some(raw.to_string());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A quota of `per_minute` requests a minute as a bucket of that many (GCRA with a burst of
/// `per_minute - 1`), named `name` in the `RateLimit` headers.
pub fn quota(per_minute: u32, name: &str) -> Quota {
    Quota::per_minute(per_minute)
        .burst(per_minute.saturating_sub(1))
        .name(name)
}

/// The longest the limiter waits for the store on a request; past it (or on an error) the
/// request is decided by this process's local limiter (fail-open). After two such failures
/// in a row the limiter leaves the store alone for a second at a time (its store pause), so
/// requests do not wait out timeouts while Redis is down.
pub const LIMIT_STORE_TIMEOUT: Duration = Duration::from_millis(50);

/// The rate limiter of the API: the default quota, the premium keys' quota, fail-open with
/// a local fallback, over the app's store. Call it after the
/// metrics recorder is installed ([`Http::new`]).
///
/// # Errors
/// A zero limit, or a premium key that cannot be a key (empty, over 512 bytes).
pub fn limiter(shop: &Shop, opts: &HttpOptions) -> anyhow::Result<RateLimiter<AnyBackend>> {
    let mut builder = RateLimiter::builder(shop.app.backend().clone())
        .name(LIMITER)
        .quota(quota(opts.limit_per_minute, "default"))
        .fail_mode(FailMode::Open)
        .local_fallback(true)
        .timeout(LIMIT_STORE_TIMEOUT)
        .pause_after(2)
        .store_pause(Duration::from_secs(1));
    for key in opts
        .premium_keys
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
    {
        builder = builder.override_key(
            format!("key:{key}"),
            vec![quota(opts.premium_per_minute, "premium")],
        );
    }
    Ok(builder.build()?)
}

/// The whole service: the catalog, the orders and the photos behind the rate limit, then
/// `/healthz` and `/admin` (the dashboard and `/admin/metrics`, behind the admin token).
///
/// # Errors
/// A bad setting (a zero limit, a short token), or a cache or the metrics recorder that
/// cannot be set up.
pub async fn router(shop: Shop, opts: HttpOptions) -> anyhow::Result<Router> {
    let auth = opts.auth()?;
    // First: the Prometheus recorder must be installed before the limiter and the caches
    // register their metrics.
    let http = Http::new(shop.app.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let limiter = limiter(&shop, &opts)?;
    limiter.publish_stats(
        shop.app.backend().clone(),
        LIMITS_APP,
        DEFAULT_PUBLISH_EVERY,
    )?;
    let limit = RateLimitLayer::new(limiter, KeyExtractor::from_fn(api_key));
    let limited = catalog::routes(shop.clone(), opts.cache)
        .await?
        .merge(orders::routes(shop.clone()))
        .merge(photo_routes(shop.clone()))
        .layer(limit);
    Ok(Router::new()
        .merge(limited)
        .route("/healthz", get(healthz))
        // The nested dashboard's root is `/admin`; `/admin/` goes there.
        .route("/admin/", get(|| async { Redirect::permanent("/admin") }))
        .nest("/admin", admin(&shop, auth, &http))
        // Unknown paths: a plain 404, not limited.
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "no such route") }))
}

async fn healthz() -> &'static str {
    "ok"
}

/// The dashboard, with `/metrics` beside it behind the same authentication.
fn admin(shop: &Shop, auth: Auth, http: &Http) -> Router {
    let dashboard = Dashboard::new(shop.app.clone()).auth(auth).router();
    let metrics = Router::new()
        .route("/metrics", get(metrics_page))
        .with_state(http.clone())
        .layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            same_auth,
        ));
    metrics.merge(dashboard)
}

async fn metrics_page(State(http): State<Http>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        http.render_metrics(),
    )
        .into_response()
}

/// Lets a request through when the dashboard would: asks the dashboard's own guard with the
/// request's credentials (its `Authorization` and `Cookie` headers), on a path that only
/// the guard answers (a `404` past it), so bearer tokens and the sessions of signed-in
/// browsers work the same here.
async fn same_auth(State(dashboard): State<Router>, req: Request, next: Next) -> Response {
    let mut probe = Request::builder()
        .method("GET")
        .uri("/api/v1/shop-auth-probe");
    for name in [header::AUTHORIZATION, header::COOKIE] {
        for v in req.headers().get_all(&name) {
            probe = probe.header(&name, v.clone());
        }
    }
    let Ok(probe) = probe.body(Body::empty()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match dashboard.oneshot(probe).await {
        Ok(r) if r.status() == StatusCode::NOT_FOUND => next.run(req).await,
        Ok(r) if r.status().is_client_error() => {
            let mut refused = (
                r.status(),
                "sign in: the dashboard's token in the Authorization header (Bearer), or its \
                 session",
            )
                .into_response();
            refused
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            refused
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `POST /products/{id}/photo` and `GET /products/{id}/photo/variants`.
fn photo_routes(shop: Shop) -> Router {
    Router::new()
        .route(
            "/products/{id}/photo",
            post(upload_photo).layer(DefaultBodyLimit::max(MAX_PHOTO_BYTES)),
        )
        .route("/products/{id}/photo/variants", get(variants))
        .with_state(shop)
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// A product id from the path: a positive number.
fn product_id(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}

fn bad_id() -> Response {
    json_error(StatusCode::BAD_REQUEST, "a product id is a positive number")
}

/// The first bytes of every PNG file.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

async fn upload_photo(State(shop): State<Shop>, Path(raw): Path<String>, body: Bytes) -> Response {
    let Some(id) = product_id(&raw) else {
        return bad_id();
    };
    if !body.starts_with(PNG_SIGNATURE) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be a PNG image",
        );
    }
    let known = sqlx::query("SELECT id FROM products WHERE id = $1")
        .bind(id)
        .fetch_optional(&shop.deps.db.pool)
        .await;
    match known {
        Ok(Some(_)) => {}
        Ok(None) => return json_error(StatusCode::NOT_FOUND, "no such product"),
        Err(e) => {
            tracing::warn!(error = %e, "product lookup failed");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            );
        }
    }
    let path = photos::original_path(&shop.deps.data_dir, id);
    if let Err(e) = write_atomically(&path, &body).await {
        tracing::warn!(error = %e, path = %path.display(), "cannot store a photo");
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the photo could not be stored",
        );
    }
    match photos::start(&shop.app, id).await {
        Ok(workflow) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "workflow": workflow })),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the photo workflow");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the resizing could not be started; try again shortly",
            )
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a resize job never
/// reads half a photo.
async fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension(format!("upload-{}", uuid::Uuid::now_v7().simple()));
    tokio::fs::write(&tmp, bytes).await?;
    let renamed = tokio::fs::rename(&tmp, path).await;
    if renamed.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    renamed
}

async fn variants(State(shop): State<Shop>, Path(raw): Path<String>) -> Response {
    let Some(id) = product_id(&raw) else {
        return bad_id();
    };
    let rows = sqlx::query(
        "SELECT size, width, height, bytes, created_at_ms FROM photo_variants
         WHERE product_id = $1 ORDER BY size",
    )
    .bind(id)
    .fetch_all(&shop.deps.db.pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "photo variants query failed");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            );
        }
    };
    let mut variants = Vec::with_capacity(rows.len());
    for row in &rows {
        let get = |name: &str| row.try_get::<i64, _>(name);
        match (
            get("size"),
            get("width"),
            get("height"),
            get("bytes"),
            get("created_at_ms"),
        ) {
            (Ok(size), Ok(width), Ok(height), Ok(bytes), Ok(created_at_ms)) => {
                variants.push(serde_json::json!({
                    "size": size, "width": width, "height": height, "bytes": bytes,
                    "created_at_ms": created_at_ms,
                }));
            }
            _ => {
                return json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "a variant row does not read",
                )
            }
        }
    }
    Json(serde_json::json!({ "product_id": id, "variants": variants })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Extensions, HeaderMap, Method, Uri};

    fn key_of(uri: &str, header: Option<&str>) -> Option<String> {
        let uri: Uri = uri.parse().expect("a uri");
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert("x-api-key", HeaderValue::from_str(h).expect("a header"));
        }
        let ext = Extensions::new();
        api_key(&RequestHead {
            method: &Method::GET,
            uri: &uri,
            headers: &headers,
            extensions: &ext,
        })
    }

    #[test]
    fn the_key_comes_from_the_header_or_the_query() {
        assert_eq!(key_of("/products", Some("abc")).as_deref(), Some("key:abc"));
        assert_eq!(
            key_of("/products?category=x&api_key=k%20y", None).as_deref(),
            Some("key:k y")
        );
        assert_eq!(
            key_of("/products?api_key=q", Some("h")).as_deref(),
            Some("key:h")
        );
        assert_eq!(key_of("/products?category=x", None), None);
        assert_eq!(key_of("/products?api_key=", None), None);
        assert_eq!(key_of("/products?api_key=%zz", None), None);
        assert_eq!(key_of("/products", Some("  ")), None);
    }

    #[test]
    fn binding_off_loopback_needs_a_token() {
        let open = HttpOptions::default();
        let public: SocketAddr = "0.0.0.0:8080".parse().expect("an address");
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("an address");
        assert!(check_bind(local, &open).is_ok());
        assert!(check_bind(public, &open).is_err());
        let guarded = HttpOptions {
            admin_token: Some("0123456789abcdef0123".into()),
            ..HttpOptions::default()
        };
        assert!(check_bind(public, &guarded).is_ok());
        let short = HttpOptions {
            admin_token: Some("short".into()),
            ..HttpOptions::default()
        };
        let e = check_bind(local, &short).expect_err("a short token is refused");
        assert!(
            !format!("{guarded:?}").contains("0123456789"),
            "Debug hides the token"
        );
        assert!(
            !e.to_string().contains("short"),
            "the token is not shown: {e}"
        );
    }
}
