//! [`CircuitBreakerLayer`]: a [`CircuitBreaker`] around a `tower::Service`.
//!
//! Every call asks the breaker first. While it is open the inner service is not called:
//! an HTTP service ([`CircuitBreakerLayer::http`]) answers `503 Service Unavailable` with a
//! `Retry-After` header; any other service ([`CircuitBreakerLayer::new`]) fails with
//! [`CallError::Rejected`]. A classifier says which outcomes are failures: by default
//! errors, and for HTTP responses the 5xx statuses too.
//!
//! ```
//! use axum::{routing::get, Router};
//! use celeriac::breaker::CircuitBreaker;
//! use celeriac::layer::breaker::CircuitBreakerLayer;
//! # fn run() -> celeriac::Result<()> {
//! let breaker = CircuitBreaker::builder("partner-proxy").build()?;
//! let app: Router = Router::new()
//!     .route("/quote", get(|| async { "42" }))
//!     .layer(CircuitBreakerLayer::http(breaker));
//! # Ok(()) }
//! ```

use celeriac_core::breaker::{CallError, CircuitBreaker, OwnedPermit, Rejected, Verdict};
use pin_project_lite::pin_project;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Says how an outcome of the inner service counts for the breaker.
pub trait Classify<Res, E> {
    /// The verdict on one outcome.
    fn classify(&self, outcome: &Result<Res, E>) -> Verdict;
}

impl<Res, E, F> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Verdict,
{
    fn classify(&self, outcome: &Result<Res, E>) -> Verdict {
        self(outcome)
    }
}

/// Errors are failures, every response a success (the default of [`CircuitBreakerLayer::new`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAreFailures;

impl<Res, E> Classify<Res, E> for ErrorsAreFailures {
    fn classify(&self, outcome: &Result<Res, E>) -> Verdict {
        match outcome {
            Ok(_) => Verdict::Success,
            Err(_) => Verdict::Failure,
        }
    }
}

/// Errors and 5xx responses are failures (the default of [`CircuitBreakerLayer::http`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerErrorsAreFailures;

impl<B, E> Classify<http::Response<B>, E> for ServerErrorsAreFailures {
    fn classify(&self, outcome: &Result<http::Response<B>, E>) -> Verdict {
        match outcome {
            Ok(r) if !r.status().is_server_error() => Verdict::Success,
            _ => Verdict::Failure,
        }
    }
}

/// How a service behind the layer answers a rejected call.
pub trait Reject<Res, E> {
    /// The service's error type.
    type Error;
    /// The answer to a call the breaker turned away.
    fn reject(&self, rejected: Rejected) -> Result<Res, Self::Error>;
    /// Wraps the inner service's error.
    fn wrap(&self, error: E) -> Self::Error;
}

/// Rejected calls fail with [`CallError::Rejected`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Typed;

impl<Res, E> Reject<Res, E> for Typed {
    type Error = BreakerError<E>;
    fn reject(&self, rejected: Rejected) -> Result<Res, BreakerError<E>> {
        Err(CallError::Rejected(rejected))
    }
    fn wrap(&self, error: E) -> BreakerError<E> {
        CallError::Inner(error)
    }
}

/// Rejected calls are answered `503 Service Unavailable` with `Retry-After` (whole seconds,
/// rounded up) and an empty body; errors pass through unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

impl<B: Default, E> Reject<http::Response<B>, E> for Http {
    type Error = E;
    fn reject(&self, rejected: Rejected) -> Result<http::Response<B>, E> {
        Ok(unavailable(&rejected))
    }
    fn wrap(&self, error: E) -> E {
        error
    }
}

/// The 503 answer to a rejected call.
pub fn unavailable<B: Default>(rejected: &Rejected) -> http::Response<B> {
    let secs = rejected.retry_after.as_millis().div_ceil(1000).max(1);
    let mut res = http::Response::new(B::default());
    *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    res.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(secs as u64),
    );
    res
}

/// The error of a [`Typed`] breaker service: rejected, or the inner service's error.
pub type BreakerError<E> = CallError<E>;

/// Wraps services in a [`CircuitBreakerService`] sharing one breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = ErrorsAreFailures, R = Typed> {
    breaker: CircuitBreaker,
    classify: C,
    reject: R,
}

impl CircuitBreakerLayer {
    /// For any service: rejected calls fail with [`CallError::Rejected`], errors are
    /// failures.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classify: ErrorsAreFailures,
            reject: Typed,
        }
    }
}

impl CircuitBreakerLayer<ServerErrorsAreFailures, Http> {
    /// For HTTP services: rejected calls get a 503 with `Retry-After`; errors and 5xx
    /// responses are failures.
    pub fn http(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classify: ServerErrorsAreFailures,
            reject: Http,
        }
    }
}

impl<C, R> CircuitBreakerLayer<C, R> {
    /// Replaces the classifier (a [`Classify`], or a closure over `&Result<Response, Error>`
    /// returning a [`Verdict`]).
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2, R> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classify,
            reject: self.reject,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for CircuitBreakerLayer<C, R> {
    type Service = CircuitBreakerService<S, C, R>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            reject: self.reject.clone(),
        }
    }
}

/// A service behind a circuit breaker (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C = ErrorsAreFailures, R = Typed> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
    reject: R,
}

impl<S, C, R, Req> Service<Req> for CircuitBreakerService<S, C, R>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error> + Clone,
    R: Reject<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = R::Error;
    type Future = ResponseFuture<S::Future, C, R, S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.reject.wrap(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.acquire_owned() {
            Ok(permit) => ResponseFuture {
                state: State::Called {
                    fut: self.inner.call(req),
                    permit: Some(permit),
                },
                classify: self.classify.clone(),
                reject: self.reject.clone(),
                _out: PhantomData,
            },
            Err(rejected) => ResponseFuture {
                state: State::Rejected {
                    rejected: Some(rejected),
                },
                classify: self.classify.clone(),
                reject: self.reject.clone(),
                _out: PhantomData,
            },
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F, permit: Option<OwnedPermit> },
        Rejected { rejected: Option<Rejected> },
    }
}

pin_project! {
    /// The future of a [`CircuitBreakerService`] call.
    pub struct ResponseFuture<F, C, R, Res, E> {
        #[pin]
        state: State<F>,
        classify: C,
        reject: R,
        _out: PhantomData<fn() -> (Res, E)>,
    }
}

impl<F, C, R, Res, E> Future for ResponseFuture<F, C, R, Res, E>
where
    F: Future<Output = Result<Res, E>>,
    C: Classify<Res, E>,
    R: Reject<Res, E>,
{
    type Output = Result<Res, R::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Called { fut, permit } => {
                let out = match fut.poll(cx) {
                    Poll::Ready(out) => out,
                    Poll::Pending => return Poll::Pending,
                };
                if let Some(p) = permit.take() {
                    p.record(this.classify.classify(&out));
                }
                Poll::Ready(out.map_err(|e| this.reject.wrap(e)))
            }
            StateProj::Rejected { rejected } => match rejected.take() {
                Some(r) => Poll::Ready(this.reject.reject(r)),
                // Polled again after completion: the contract of Future allows anything but
                // undefined behaviour; stay pending rather than panic.
                None => Poll::Pending,
            },
        }
    }
}
