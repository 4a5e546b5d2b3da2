//! [`Guard`]: a local [`CircuitBreaker`] or a [`SharedBreaker`] behind one type, for holders
//! that cannot be generic over the store (the task registry, the tower layer).
//!
//! A local guard's path is the local breaker's: a few atomics, no allocation. A shared guard
//! asks its local breaker first and, only for a half-open probe while the store is half-open,
//! reserves one of the store's probes (a boxed future); only such a probe's result goes to the
//! store when recorded.

use super::shared::SharedBreaker;
use super::{BreakerState, CircuitBreaker, OwnedPermit, Rejected, Verdict, PROBES_BUSY_RETRY};
use crate::backend::BreakerStore;
use futures_util::future::BoxFuture;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A [`SharedBreaker`] with its store's type erased (implemented by every
/// `SharedBreaker<S>`; [`Guard::Shared`] holds one).
pub trait DynShared: Send + Sync + fmt::Debug {
    /// The local breaker.
    fn local(&self) -> &CircuitBreaker;

    /// The local permit, and whether it must still reserve one of the store's probes.
    ///
    /// # Errors
    /// [`Rejected`] when the local breaker rejects.
    fn begin(&self) -> Result<(OwnedPermit, bool), Rejected>;

    /// Reserves a store probe for `permit`.
    fn reserve(self: Arc<Self>, permit: OwnedPermit) -> Reservation;

    /// Records the result of the store probe reserved under `token`.
    fn probe_done(self: Arc<Self>, token: String, verdict: Verdict) -> BoxFuture<'static, ()>;

    /// Starts reporting to the store every `sync_interval` ([`SharedBreaker::spawn_sync`]).
    fn spawn_sync(self: Arc<Self>) -> tokio::task::JoinHandle<()>;
}

impl<S: BreakerStore> DynShared for SharedBreaker<S> {
    fn local(&self) -> &CircuitBreaker {
        SharedBreaker::local(self)
    }

    fn begin(&self) -> Result<(OwnedPermit, bool), Rejected> {
        SharedBreaker::begin(self)
    }

    fn reserve(self: Arc<Self>, permit: OwnedPermit) -> Reservation {
        Box::pin(async move {
            let (permit, token) = SharedBreaker::reserve(&self, permit).await?;
            let probe = token.map(|t| (self as Arc<dyn DynShared>, t));
            Ok(GuardPermit { permit, probe })
        })
    }

    fn probe_done(self: Arc<Self>, token: String, verdict: Verdict) -> BoxFuture<'static, ()> {
        Box::pin(async move { SharedBreaker::probe_done(&self, &token, verdict).await })
    }

    fn spawn_sync(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        SharedBreaker::spawn_sync(&self)
    }
}

/// A local or a shared circuit breaker (cheap to clone).
#[derive(Clone, Debug)]
pub enum Guard {
    /// A breaker of this process alone.
    Local(CircuitBreaker),
    /// A breaker shared through a store: trips are shared and half-open probes bounded across
    /// every process (its sync must run: [`SharedBreaker::spawn_sync`]).
    Shared(Arc<dyn DynShared>),
}

impl From<CircuitBreaker> for Guard {
    fn from(b: CircuitBreaker) -> Self {
        Guard::Local(b)
    }
}

impl<S: BreakerStore> From<Arc<SharedBreaker<S>>> for Guard {
    fn from(b: Arc<SharedBreaker<S>>) -> Self {
        Guard::Shared(b)
    }
}

/// A store probe being reserved (see [`Admission::Reserve`]).
pub type Reservation = BoxFuture<'static, Result<GuardPermit, Rejected>>;

/// What [`Guard::admit`] decided without waiting.
pub enum Admission {
    /// Admitted.
    Ready(GuardPermit),
    /// A half-open probe that must still reserve one of the store's probes: await it.
    Reserve(Reservation),
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admission::Ready(p) => f.debug_tuple("Ready").field(p).finish(),
            Admission::Reserve(_) => f.write_str("Reserve"),
        }
    }
}

impl Guard {
    /// The local breaker (for a shared guard, the one in this process).
    pub fn local(&self) -> &CircuitBreaker {
        match self {
            Guard::Local(b) => b,
            Guard::Shared(s) => s.local(),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.local().name()
    }

    /// True for a shared guard.
    pub fn is_shared(&self) -> bool {
        matches!(self, Guard::Shared(_))
    }

    /// Asks to make a call, deciding at once when it can.
    ///
    /// # Errors
    /// [`Rejected`] when the local breaker rejects.
    #[inline]
    pub fn admit(&self) -> Result<Admission, Rejected> {
        match self {
            Guard::Local(b) => b
                .acquire_owned()
                .map(|p| Admission::Ready(GuardPermit::from(p))),
            Guard::Shared(s) => {
                let (permit, reserve) = s.begin()?;
                Ok(if reserve {
                    Admission::Reserve(s.clone().reserve(permit))
                } else {
                    Admission::Ready(GuardPermit::from(permit))
                })
            }
        }
    }

    /// Asks to make a call without waiting: a call that would need a store probe is turned
    /// away as if every probe were out.
    ///
    /// # Errors
    /// [`Rejected`] when the local breaker rejects or a store probe would be needed.
    pub fn try_acquire(&self) -> Result<GuardPermit, Rejected> {
        match self {
            Guard::Local(b) => b.acquire_owned().map(GuardPermit::from),
            Guard::Shared(s) => match s.begin()? {
                (permit, false) => Ok(GuardPermit::from(permit)),
                (_, true) => Err(Rejected {
                    breaker: s.local().config().name.clone(),
                    state: BreakerState::HalfOpen,
                    retry_after: PROBES_BUSY_RETRY,
                }),
            },
        }
    }

    /// Asks to make a call, reserving a store probe when needed.
    ///
    /// # Errors
    /// [`Rejected`] when the local breaker rejects or every store probe is taken.
    pub async fn acquire(&self) -> Result<GuardPermit, Rejected> {
        match self.admit()? {
            Admission::Ready(p) => Ok(p),
            Admission::Reserve(f) => f.await,
        }
    }
}

/// Leave to make one call through a [`Guard`]; a permit dropped unrecorded counts for nothing.
#[must_use = "a permit records nothing unless told how the call went"]
pub struct GuardPermit {
    permit: OwnedPermit,
    probe: Option<(Arc<dyn DynShared>, String)>,
}

impl fmt::Debug for GuardPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardPermit")
            .field("permit", &self.permit)
            .field("store_probe", &self.probe.as_ref().map(|p| &p.1))
            .finish()
    }
}

impl From<OwnedPermit> for GuardPermit {
    /// A permit of the local breaker alone.
    #[inline]
    fn from(permit: OwnedPermit) -> Self {
        Self {
            permit,
            probe: None,
        }
    }
}

impl GuardPermit {
    /// True when this call holds one of the store's half-open probes.
    pub fn is_store_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// Records the outcome in the local breaker at once; the returned [`Report`] sends a
    /// store probe's result to the store (it is done at once for every other call).
    #[inline]
    pub fn record(self, verdict: Verdict) -> Report {
        self.permit.record(verdict);
        Report(
            self.probe
                .map(|(shared, token)| shared.probe_done(token, verdict)),
        )
    }
}

/// The store half of [`GuardPermit::record`]: await it, or a store probe's result is lost
/// (its reservation then lapses after `probe_lease`).
#[must_use = "a store probe's result reaches the store only when this is awaited"]
pub struct Report(Option<BoxFuture<'static, ()>>);

impl Report {
    /// True when there is nothing left to send.
    pub fn is_done(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("done", &self.is_done())
            .finish()
    }
}

impl Future for Report {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            None => Poll::Ready(()),
            Some(f) => match f.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.0 = None;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
