//! [`RateLimitLayer`]: a [`RateLimiter`] in front of an HTTP service.
//!
//! ```no_run
//! # async fn demo() -> celeriac::Result<()> {
//! use celeriac::layer::rate_limit::{KeyExtractor, RateLimitLayer};
//! use celeriac::limit::{Quota, RateLimiter};
//! use std::sync::Arc;
//! let store = Arc::new(celeriac::redis::RedisBackend::connect("redis://127.0.0.1:6379").await?);
//! let limiter = RateLimiter::builder(store)
//!     .quota(Quota::per_minute(100).burst(10))
//!     .build()?;
//! let layer = RateLimitLayer::new(limiter, KeyExtractor::header("x-api-key"));
//! // axum: Router::new().route("/", get(handler)).layer(layer)
//! # let _ = layer; Ok(()) }
//! ```
//!
//! Each request:
//! - gets its key from a [`KeyExtractor`] (a header, the client IP, the authenticated user from
//!   a request extension, or a function); a request without a usable key is answered
//!   **400 Bad Request** and never reaches the service;
//! - is checked by the limiter; a denied request is answered **429 Too Many Requests** with
//!   `Retry-After` (seconds, rounded up); a store failure follows the limiter's failure mode
//!   (fail-open passes, fail-closed answers 429);
//! - carries, allowed or not, the IETF headers (draft-ietf-httpapi-ratelimit-headers):
//!   `RateLimit-Policy: "default";q=100;w=60` (every quota of the key) and
//!   `RateLimit: "default";r=42;t=17` (the most restrictive quota: remaining, seconds until it
//!   is full again), and with [`RateLimitLayer::legacy_headers`] also `X-RateLimit-Limit`,
//!   `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds from now). In shadow mode no
//!   header is added and nothing is denied.
//!
//! The layer decides with the [`RateLimiter`] it is given; its clones share the limiter's
//! counters. To see the layer's decisions and its most denied keys on the dashboard's *Rate
//! limits* page, publish the limiter's figures to the store (under the application name the
//! page is asked for), before or after handing it to the layer
//! ([`RateLimitLayer::limiter`]):
//!
//! ```no_run
//! # async fn demo(app: celeriac::App) -> celeriac::Result<()> {
//! use celeriac::layer::rate_limit::{KeyExtractor, RateLimitLayer};
//! use celeriac::limit::{stats::DEFAULT_PUBLISH_EVERY, Quota, RateLimiter};
//! let limiter = RateLimiter::builder(app.backend().clone())
//!     .name("api")
//!     .quota(Quota::per_minute(100))
//!     .build()?;
//! let layer = RateLimitLayer::new(limiter, KeyExtractor::header("x-api-key"));
//! // Every 10 s while the limiter lives: /limits?name=shop on the dashboard.
//! layer.limiter().publish_stats(app.backend().clone(), "shop", DEFAULT_PUBLISH_EVERY)?;
//! # Ok(()) }
//! ```

use crate::limit::{Quota, RateLimiter, Source, Verdict};
use crate::RateLimitStore;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode, Uri};
use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// What a [`KeyExtractor`] sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (connection info, the authenticated user).
    pub extensions: &'a Extensions,
}

type KeyFn = Arc<dyn Fn(&RequestHead<'_>) -> Option<String> + Send + Sync>;
type CostFn = Arc<dyn Fn(&RequestHead<'_>) -> u32 + Send + Sync>;

/// Where a request's rate-limit key comes from. `None` (no key) answers 400.
#[derive(Clone)]
pub struct KeyExtractor {
    name: &'static str,
    f: KeyFn,
}

impl std::fmt::Debug for KeyExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyExtractor")
            .field("from", &self.name)
            .finish()
    }
}

impl KeyExtractor {
    /// The value of a header (an API key): prefixed `header:<name>:`, so keys from different
    /// extractors never meet. A missing or non-text header is no key.
    pub fn header(name: &'static str) -> Self {
        let header = HeaderName::from_static(name);
        KeyExtractor {
            name: "header",
            f: Arc::new(move |h| {
                let v = h.headers.get(&header)?.to_str().ok()?.trim();
                (!v.is_empty()).then(|| format!("header:{}:{v}", header.as_str()))
            }),
        }
    }

    /// The client's IP address from the connection, as axum records it:
    /// `KeyExtractor::client_ip::<ConnectInfo<SocketAddr>>()` (serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()`). Any extension that dereferences
    /// to a `SocketAddr` works.
    pub fn client_ip<C>() -> Self
    where
        C: Deref<Target = SocketAddr> + Send + Sync + 'static,
    {
        KeyExtractor {
            name: "client ip",
            f: Arc::new(|h| {
                let addr = h.extensions.get::<C>()?;
                Some(format!("ip:{}", addr.ip()))
            }),
        }
    }

    /// The client's IP address from `X-Forwarded-For`, for a service behind `proxies`
    /// trusted proxies that each append the address they saw: the entry `proxies` from the
    /// end is the client (entries before it can be forged by the client). Opt-in: only use it
    /// behind such proxies. Falls back to the connection's address (as
    /// [`Self::client_ip`]) when the header is missing or too short.
    pub fn forwarded_for<C>(proxies: usize) -> Self
    where
        C: Deref<Target = SocketAddr> + Send + Sync + 'static,
    {
        let proxies = proxies.max(1);
        KeyExtractor {
            name: "x-forwarded-for",
            f: Arc::new(move |h| {
                let entries: Vec<&str> = h
                    .headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .collect();
                let forwarded = entries
                    .len()
                    .checked_sub(proxies)
                    .and_then(|i| entries[i].parse::<IpAddr>().ok());
                match forwarded {
                    Some(ip) => Some(format!("ip:{ip}")),
                    None => h.extensions.get::<C>().map(|a| format!("ip:{}", a.ip())),
                }
            }),
        }
    }

    /// The authenticated user from a request extension of type `U` (put there by the
    /// authentication middleware), named by `id`: `user:<id>`. An anonymous request (no
    /// extension) is no key.
    pub fn user<U, F>(id: F) -> Self
    where
        U: Send + Sync + 'static,
        F: Fn(&U) -> String + Send + Sync + 'static,
    {
        KeyExtractor {
            name: "user",
            f: Arc::new(move |h| h.extensions.get::<U>().map(|u| format!("user:{}", id(u)))),
        }
    }

    /// Any function of the request head; `None` is no key (400).
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> Option<String> + Send + Sync + 'static,
    {
        KeyExtractor {
            name: "function",
            f: Arc::new(f),
        }
    }

    /// The key of a request, if it has one.
    pub fn extract(&self, head: &RequestHead<'_>) -> Option<String> {
        (self.f)(head)
    }
}

/// Adds rate limiting to a service; see the [module docs](self).
pub struct RateLimitLayer<S> {
    limiter: RateLimiter<S>,
    key: KeyExtractor,
    cost: Option<CostFn>,
    legacy: bool,
    /// The `RateLimit-Policy` of the default quotas, written once.
    policy: Policy,
}

/// Quotas and their `RateLimit-Policy` header value.
type Policy = Arc<(Arc<[Quota]>, Option<HeaderValue>)>;

impl<S> Clone for RateLimitLayer<S> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
            legacy: self.legacy,
            policy: self.policy.clone(),
        }
    }
}

impl<S> std::fmt::Debug for RateLimitLayer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("key", &self.key)
            .field("legacy", &self.legacy)
            .finish_non_exhaustive()
    }
}

impl<S: RateLimitStore> RateLimitLayer<S> {
    /// A layer over `limiter`, each request keyed by `key` (with axum, the client's address
    /// is `KeyExtractor::client_ip::<ConnectInfo<SocketAddr>>()`).
    pub fn new(limiter: RateLimiter<S>, key: KeyExtractor) -> Self {
        let quotas = limiter.default_quotas();
        let policy = Arc::new((quotas.clone(), header(policy(&quotas))));
        RateLimitLayer {
            limiter,
            key,
            cost: None,
            legacy: false,
            policy,
        }
    }

    /// The cost of a request (1 unless set): an expensive endpoint can count for more.
    pub fn cost(mut self, cost: impl Fn(&RequestHead<'_>) -> u32 + Send + Sync + 'static) -> Self {
        self.cost = Some(Arc::new(cost));
        self
    }

    /// Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
    /// (seconds from now).
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.legacy = on;
        self
    }

    /// The limiter the layer decides with (to read its [`RateLimiter::stats`] or publish
    /// them with [`RateLimiter::publish_stats`]).
    pub fn limiter(&self) -> &RateLimiter<S> {
        &self.limiter
    }
}

impl<S, Svc> tower::Layer<Svc> for RateLimitLayer<S> {
    type Service = RateLimit<S, Svc>;

    fn layer(&self, inner: Svc) -> Self::Service {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] wraps around another.
pub struct RateLimit<S, Svc> {
    inner: Svc,
    layer: RateLimitLayer<S>,
}

impl<S, Svc: Clone> Clone for RateLimit<S, Svc> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, Svc: std::fmt::Debug> std::fmt::Debug for RateLimit<S, Svc> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// Whole seconds, rounded up (a client told 0 would retry at once).
fn secs_up(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn header(value: String) -> Option<HeaderValue> {
    HeaderValue::from_str(&value).ok()
}

/// The `RateLimit-Policy` value of `quotas`: `"default";q=100;w=60, …`.
fn policy(quotas: &[Quota]) -> String {
    let mut out = String::new();
    for (i, q) in quotas.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(
            out,
            "{sep}\"{}\";q={};w={}",
            q.policy_name(),
            q.limit(),
            secs_up(q.window()).max(1)
        );
    }
    out
}

/// Writes the rate-limit headers of `verdict` into `headers`; `known` is the policy header
/// of the limiter's default quotas.
fn write_headers(
    headers: &mut HeaderMap,
    verdict: &Verdict,
    legacy: bool,
    denied: bool,
    known: &Policy,
) {
    if denied {
        if let Some(retry) = verdict.decision.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs_up(retry).max(1)));
        }
    }
    let Some(quota) = verdict.quota() else { return };
    if matches!(verdict.source, Source::FailedOpen) {
        return;
    }
    let policy = if Arc::ptr_eq(&verdict.quotas, &known.0) {
        known.1.clone()
    } else {
        header(policy(&verdict.quotas))
    };
    let d = &verdict.decision;
    let reset = secs_up(d.reset_after);
    let state = format!("\"{}\";r={};t={}", quota.policy_name(), d.remaining, reset);
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", header(state))] {
        if let Some(v) = value {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    if legacy {
        headers.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    }
}

fn plain<B: From<String>>(status: StatusCode, text: String) -> Response<B> {
    let mut r = Response::new(B::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl<S, Svc, ReqB, ResB> tower::Service<Request<ReqB>> for RateLimit<S, Svc>
where
    S: RateLimitStore,
    Svc: tower::Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    Svc::Future: Send + 'static,
    ReqB: Send + 'static,
    ResB: From<String> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = Svc::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The ready service handles this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            // The head borrows the request: read what is needed before any await.
            let (key, cost) = {
                let head = RequestHead {
                    method: req.method(),
                    uri: req.uri(),
                    headers: req.headers(),
                    extensions: req.extensions(),
                };
                let key = layer.key.extract(&head);
                (key, layer.cost.as_ref().map_or(1, |c| c(&head)))
            };
            let Some(key) = key else {
                return Ok(plain(
                    StatusCode::BAD_REQUEST,
                    format!("no rate limit key in the request ({})", layer.key.name),
                ));
            };
            let verdict = match layer.limiter.check_cost(&key, cost).await {
                Ok(v) => v,
                // A bad key (empty, too long) or a cost no quota holds: the client's fault.
                Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, e.to_string())),
            };
            let shadow = layer.limiter.is_shadow();
            if !verdict.allow {
                let mut r = plain(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many requests; retry after the time in Retry-After".to_string(),
                );
                write_headers(r.headers_mut(), &verdict, layer.legacy, true, &layer.policy);
                return Ok(r);
            }
            let mut response = inner.call(req).await?;
            if !shadow {
                write_headers(
                    response.headers_mut(),
                    &verdict,
                    layer.legacy,
                    false,
                    &layer.policy,
                );
            }
            Ok(response)
        })
    }
}
