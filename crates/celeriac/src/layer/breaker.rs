//! [`CircuitBreakerLayer`]: a [`CircuitBreaker`] (or a [`SharedBreaker`]) around a
//! `tower::Service`.
//!
//! Every call asks the breaker first. While it is open the inner service is not called:
//! an HTTP service ([`CircuitBreakerLayer::http`]) answers `503 Service Unavailable` with a
//! `Retry-After` header; any other service ([`CircuitBreakerLayer::new`]) fails with
//! [`CallError::Rejected`]. A classifier says which outcomes are failures: by default
//! errors, and for HTTP responses the 5xx statuses too.
//!
//! With a [`SharedBreaker`] ([`CircuitBreakerLayer::shared`], [`CircuitBreakerLayer::shared_http`])
//! trips are shared through the store and, while the store is half-open, a call only goes
//! through with one of the store's probes, reserved in `poll_ready` (so at most `probes`
//! calls pass across every process); a probe's result is sent to the store before its
//! response is returned. Start the breaker's sync ([`SharedBreaker::spawn_sync`]).
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

use celeriac_core::backend::BreakerStore;
use celeriac_core::breaker::{
    Admission, CallError, CircuitBreaker, Guard, GuardPermit, Rejected, Report, Reservation,
    SharedBreaker, Verdict,
};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use sync_wrapper::SyncWrapper;
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
    breaker: Guard,
    classify: C,
    reject: R,
}

impl CircuitBreakerLayer {
    /// For any service: rejected calls fail with [`CallError::Rejected`], errors are
    /// failures.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker: Guard::Local(breaker),
            classify: ErrorsAreFailures,
            reject: Typed,
        }
    }

    /// Like [`CircuitBreakerLayer::new`], with a breaker shared through a store.
    pub fn shared<S: BreakerStore>(breaker: Arc<SharedBreaker<S>>) -> Self {
        Self {
            breaker: Guard::from(breaker),
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
            breaker: Guard::Local(breaker),
            classify: ServerErrorsAreFailures,
            reject: Http,
        }
    }

    /// Like [`CircuitBreakerLayer::http`], with a breaker shared through a store.
    pub fn shared_http<S: BreakerStore>(breaker: Arc<SharedBreaker<S>>) -> Self {
        Self {
            breaker: Guard::from(breaker),
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

    /// The breaker (for a shared one, its local breaker).
    pub fn breaker(&self) -> &CircuitBreaker {
        self.breaker.local()
    }

    /// The local or shared breaker.
    pub fn guard(&self) -> &Guard {
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
            admitted: None,
            reserving: None,
        }
    }
}

/// A service behind a circuit breaker (see the [module docs](self)).
pub struct CircuitBreakerService<S, C = ErrorsAreFailures, R = Typed> {
    inner: S,
    breaker: Guard,
    classify: C,
    reject: R,
    /// Shared breakers: the admission decided in `poll_ready` for the next call.
    admitted: Option<Result<GuardPermit, Rejected>>,
    /// Shared breakers: a store probe being reserved in `poll_ready`.
    reserving: Option<SyncWrapper<Reservation>>,
}

impl<S: fmt::Debug, C: fmt::Debug, R: fmt::Debug> fmt::Debug for CircuitBreakerService<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .field("classify", &self.classify)
            .field("reject", &self.reject)
            .finish_non_exhaustive()
    }
}

/// A clone holds no admission: it asks the breaker in its own `poll_ready`.
impl<S: Clone, C: Clone, R: Clone> Clone for CircuitBreakerService<S, C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            reject: self.reject.clone(),
            admitted: None,
            reserving: None,
        }
    }
}

impl<S, C, R> CircuitBreakerService<S, C, R> {
    /// Shared breakers: decides the next call's admission, reserving a store probe when the
    /// store is half-open.
    fn poll_admit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.breaker.is_shared() || self.admitted.is_some() {
            return Poll::Ready(());
        }
        if self.reserving.is_none() {
            match self.breaker.admit() {
                Ok(Admission::Ready(p)) => {
                    self.admitted = Some(Ok(p));
                    return Poll::Ready(());
                }
                Ok(Admission::Reserve(f)) => self.reserving = Some(SyncWrapper::new(f)),
                Err(r) => {
                    self.admitted = Some(Err(r));
                    return Poll::Ready(());
                }
            }
        }
        let Some(reserving) = self.reserving.as_mut() else {
            return Poll::Ready(());
        };
        match reserving.get_mut().as_mut().poll(cx) {
            Poll::Ready(r) => {
                self.reserving = None;
                self.admitted = Some(r);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
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
            Poll::Ready(Ok(())) => self.poll_admit(cx).map(Ok),
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.reject.wrap(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let admitted = match &self.breaker {
            Guard::Local(b) => b.acquire_owned().map(GuardPermit::from),
            // Called without `poll_ready`: no store probe can be reserved here.
            Guard::Shared(_) => match self.admitted.take() {
                Some(admitted) => admitted,
                None => self.breaker.try_acquire(),
            },
        };
        match admitted {
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
    enum State<F, Out> {
        Called { #[pin] fut: F, permit: Option<GuardPermit> },
        Reporting { report: Report, out: Option<Out> },
        Rejected { rejected: Option<Rejected> },
    }
}

pin_project! {
    /// The future of a [`CircuitBreakerService`] call.
    pub struct ResponseFuture<F, C, R, Res, E> {
        #[pin]
        state: State<F, Result<Res, E>>,
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
        let mut this = self.project();
        match this.state.as_mut().project() {
            StateProj::Called { fut, permit } => {
                let out = match fut.poll(cx) {
                    Poll::Ready(out) => out,
                    Poll::Pending => return Poll::Pending,
                };
                if let Some(p) = permit.take() {
                    let report = p.record(this.classify.classify(&out));
                    if !report.is_done() {
                        // A store probe: its result reaches the store before the response.
                        this.state.set(State::Reporting {
                            report,
                            out: Some(out),
                        });
                        return poll_reporting(this.state, this.reject, cx);
                    }
                }
                Poll::Ready(out.map_err(|e| this.reject.wrap(e)))
            }
            StateProj::Reporting { .. } => poll_reporting(this.state, this.reject, cx),
            StateProj::Rejected { rejected } => match rejected.take() {
                Some(r) => Poll::Ready(this.reject.reject(r)),
                // Polled again after completion: the contract of Future allows anything but
                // undefined behaviour; stay pending rather than panic.
                None => Poll::Pending,
            },
        }
    }
}

/// Polls a store probe's report, then returns the call's outcome.
fn poll_reporting<F, Res, E, R: Reject<Res, E>>(
    state: Pin<&mut State<F, Result<Res, E>>>,
    reject: &R,
    cx: &mut Context<'_>,
) -> Poll<Result<Res, R::Error>> {
    let StateProj::Reporting { report, out } = state.project() else {
        return Poll::Pending;
    };
    if Pin::new(report).poll(cx).is_pending() {
        return Poll::Pending;
    }
    match out.take() {
        Some(out) => Poll::Ready(out.map_err(|e| reject.wrap(e))),
        // Polled again after completion.
        None => Poll::Pending,
    }
}
