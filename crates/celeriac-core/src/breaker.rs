//! Circuit breakers: stop calling a dependency that keeps failing, try it again now and then,
//! and close when it answers again.
//!
//! A breaker is **closed** while calls go through and are judged in a sliding window (the
//! last N calls, or the calls of the last T in buckets). Once the window holds at least
//! `min_calls` calls and the failure rate (or the slow-call rate) reaches its threshold, it
//! **opens**: calls are rejected at once with the time to wait. After the open period
//! (`open_for`, times `backoff` for each further trip in a row, up to `max_open_for`, shortened
//! by random jitter) it turns **half-open** and lets `half_open_probes` calls through: if
//! their failure rate stays under the threshold it closes, otherwise it opens again for longer.
//! A half-open breaker that gets no verdict within `max_wait_in_half_open` opens again.
//! [`CircuitBreaker::force_open`], [`CircuitBreaker::force_closed`] and
//! [`CircuitBreaker::reset`] override it by hand.
//!
//! The closed path is a few atomic operations and allocates nothing. State changes are sent
//! to [`CircuitBreaker::subscribe`]rs as [`BreakerEvent`]s and counted through the `metrics`
//! facade: the gauge `celeriac_breaker_state` (0 closed, 1 open, 2 half-open, 3 forced open,
//! 4 forced closed), the counters `celeriac_breaker_transitions_total{from,to}`,
//! `celeriac_breaker_calls_total{outcome}` (success, failure, ignored, rejected) and
//! `celeriac_breaker_slow_calls_total`, all labelled `breaker`. (Counter handles are taken when
//! the breaker is built: install the metrics recorder before building breakers.)
//!
//! [`SharedBreaker`] shares a breaker's trips and half-open probes across processes through
//! a store ([`shared`]); [`Guard`] holds either kind for the task registry and the tower
//! layer.
//!
//! ```
//! use celeriac_core::breaker::{CallError, CircuitBreaker};
//! # async fn partner() -> Result<u32, std::io::Error> { Ok(1) }
//! # async fn run() -> celeriac_core::Result<()> {
//! let breaker = CircuitBreaker::builder("partner-api").min_calls(5).build()?;
//! match breaker.call(partner()).await {
//!     Ok(n) => println!("got {n}"),
//!     Err(CallError::Rejected(r)) => println!("partner is down, retry in {:?}", r.retry_after),
//!     Err(CallError::Inner(e)) => println!("partner failed: {e}"),
//! }
//! # Ok(()) }
//! ```

mod config;
mod guard;
pub mod shared;
mod window;

pub use config::{BreakerBuilder, BreakerConfig, ErrorPredicate, WindowKind, MAX_NAME_LEN};
pub use guard::{Admission, DynShared, Guard, GuardPermit, Report, Reservation};
pub use shared::{SharedBreaker, SharedOptions, SharedPermit};
pub use window::Counts;

use crate::clock::{duration_ms, Clock, UnixMs};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use window::{CountWindow, Sample, TimeWindow, Window};

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through and are judged.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A limited number of probe calls go through; their outcome decides.
    HalfOpen,
    /// Opened by hand: every call is rejected until [`CircuitBreaker::reset`].
    ForcedOpen,
    /// Closed by hand: every call goes through and nothing is judged until
    /// [`CircuitBreaker::reset`].
    ForcedClosed,
}

impl BreakerState {
    const ALL: [BreakerState; 5] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::ForcedOpen,
        BreakerState::ForcedClosed,
    ];

    /// A small stable number (the value of the `celeriac_breaker_state` gauge).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The state of a code from [`BreakerState::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::ForcedClosed => "forced_closed",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerEvent {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// The state it left.
    pub from: BreakerState,
    /// The state it entered.
    pub to: BreakerState,
    /// When (ms since the epoch, by the breaker's clock).
    pub at: UnixMs,
    /// For a move to open: when the open period ends.
    pub open_until: Option<UnixMs>,
    /// Why, in a few words ("failure rate 60.0% ≥ 50%", "probes succeeded", "forced").
    pub reason: String,
}

/// A call the breaker did not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// Its state.
    pub state: BreakerState,
    /// How long to wait before trying again (at least 1 ms).
    pub retry_after: Duration,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker `{}` is {}; retry in {} ms",
            self.breaker,
            self.state,
            self.retry_after.as_millis()
        )
    }
}

impl std::error::Error for Rejected {}

/// The error of a guarded call: rejected by the breaker, or the call's own error.
#[derive(Debug)]
pub enum CallError<E> {
    /// The breaker did not let the call through.
    Rejected(Rejected),
    /// The call ran and failed.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected(r) => r.fmt(f),
            CallError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Rejected(r) => Some(r),
            CallError::Inner(e) => Some(e),
        }
    }
}

/// How a call's outcome counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It worked.
    Success,
    /// It failed (counts towards the failure rate).
    Failure,
    /// It says nothing about the dependency's health (a caller's mistake): not recorded.
    Ignore,
}

/// A point-in-time view of a breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: Arc<str>,
    /// Its state.
    pub state: BreakerState,
    /// What the closed window holds.
    pub window: Counts,
    /// When the open period ends (while open).
    pub open_until: Option<UnixMs>,
    /// Trips in a row without closing in between (drives the backoff).
    pub trips_in_row: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Taken while closed: judged by the window.
    Closed,
    /// A half-open probe of the given generation.
    Probe,
    /// Taken while forced closed: not judged.
    Free,
}

/// What a permit remembers about the call it admitted.
#[derive(Debug)]
struct Ticket {
    kind: Kind,
    generation: u64,
    start: UnixMs,
    done: bool,
}

/// The parts of a breaker only transitions touch, under one lock.
#[derive(Debug)]
struct Slow {
    trips_in_row: u32,
    since: UnixMs,
}

/// Metric handles taken once, so that counting allocates nothing.
struct Meters {
    success: metrics::Counter,
    failure: metrics::Counter,
    ignored: metrics::Counter,
    rejected: metrics::Counter,
    slow: metrics::Counter,
    state: metrics::Gauge,
}

impl Meters {
    fn new(name: &Arc<str>) -> Self {
        let calls = |outcome: &'static str| metrics::counter!("celeriac_breaker_calls_total", "breaker" => name.to_string(), "outcome" => outcome);
        Self {
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            rejected: calls("rejected"),
            slow: metrics::counter!("celeriac_breaker_slow_calls_total", "breaker" => name.to_string()),
            state: metrics::gauge!("celeriac_breaker_state", "breaker" => name.to_string()),
        }
    }
}

struct Inner {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    /// Whether `clock` was given (else the coarse host clock, which a shared breaker
    /// translates to the store's fleet clock).
    custom_clock: bool,
    state: AtomicU8,
    generation: AtomicU64,
    open_until: AtomicI64,
    window: Window,
    slow_ms: Option<i64>,
    probes_issued: AtomicU32,
    probes_done: AtomicU32,
    probe_failures: AtomicU32,
    probe_slow: AtomicU32,
    slow: Mutex<Slow>,
    events: tokio::sync::broadcast::Sender<BreakerEvent>,
    meters: Meters,
    /// Shared mode: count judged calls for the next report to the store.
    tally_on: AtomicBool,
    tally: [AtomicU64; 3],
}

/// A circuit breaker (cheap to clone: clones share one state).
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.config.name)
            .field("state", &self.state())
            .finish()
    }
}

const CLOSED: u8 = BreakerState::Closed as u8;
const OPEN: u8 = BreakerState::Open as u8;
const HALF_OPEN: u8 = BreakerState::HalfOpen as u8;
const FORCED_OPEN: u8 = BreakerState::ForcedOpen as u8;
const FORCED_CLOSED: u8 = BreakerState::ForcedClosed as u8;

/// How long a caller turned away by a half-open breaker whose probes are all out should wait.
const PROBES_BUSY_RETRY: Duration = Duration::from_secs(1);

impl CircuitBreaker {
    /// A builder with the defaults: the last 100 calls, opens at 50% failures once 10 calls
    /// were seen, 3 half-open probes, open for 30 s doubling up to 300 s, 10% jitter.
    pub fn builder(name: impl Into<String>) -> BreakerBuilder {
        BreakerBuilder::new(name)
    }

    pub(crate) fn from_config(
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
        custom_clock: bool,
    ) -> Self {
        let window = match config.window {
            WindowKind::Count(n) => Window::Count(CountWindow::new(n)),
            WindowKind::Time { size, buckets } => {
                let bucket_ms = (duration_ms(size) / i64::from(buckets.max(1))).max(1);
                Window::Time(TimeWindow::new(buckets, bucket_ms))
            }
        };
        let slow_ms = config.slow_rate.map(|_| duration_ms(config.slow_call));
        let (events, _) = tokio::sync::broadcast::channel(64);
        let meters = Meters::new(&config.name);
        meters.state.set(f64::from(CLOSED));
        let now = clock.now_ms();
        Self {
            inner: Arc::new(Inner {
                config,
                clock,
                custom_clock,
                state: AtomicU8::new(CLOSED),
                generation: AtomicU64::new(0),
                open_until: AtomicI64::new(0),
                window,
                slow_ms,
                probes_issued: AtomicU32::new(0),
                probes_done: AtomicU32::new(0),
                probe_failures: AtomicU32::new(0),
                probe_slow: AtomicU32::new(0),
                slow: Mutex::new(Slow {
                    trips_in_row: 0,
                    since: now,
                }),
                events,
                meters,
                tally_on: AtomicBool::new(false),
                tally: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            }),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// Its settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }

    /// Its state as last recorded (an open breaker whose period ran out turns half-open on
    /// the next call).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_code(self.inner.state.load(Ordering::Acquire))
            .unwrap_or(BreakerState::Closed)
    }

    /// Its state, window counts and open period.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let inner = &*self.inner;
        let state = self.state();
        let trips_in_row = inner.lock_slow().trips_in_row;
        BreakerSnapshot {
            name: inner.config.name.clone(),
            state,
            window: inner.window.counts(inner.clock.now_ms()),
            open_until: (state == BreakerState::Open)
                .then(|| inner.open_until.load(Ordering::Acquire)),
            trips_in_row,
        }
    }

    /// Receives every later change of state. A receiver that falls more than 64 events
    /// behind loses the oldest ones (it is told how many).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<BreakerEvent> {
        self.inner.events.subscribe()
    }

    /// Asks to make a call. Record how it went on the permit ([`Permit::success`],
    /// [`Permit::failure`], [`Permit::record`]); a permit dropped unrecorded counts for
    /// nothing (and gives a half-open probe back).
    ///
    /// # Errors
    /// [`Rejected`] while open, forced open, or half-open with every probe out.
    #[inline]
    pub fn acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.inner.acquire().map(|ticket| Permit {
            inner: &self.inner,
            ticket,
        })
    }

    /// Like [`CircuitBreaker::acquire`], with a permit that owns a handle to the breaker
    /// (for futures that must be `'static`).
    ///
    /// # Errors
    /// [`Rejected`] as for [`CircuitBreaker::acquire`].
    pub fn acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        self.inner.acquire().map(|ticket| OwnedPermit {
            inner: self.inner.clone(),
            ticket,
        })
    }

    /// Runs `fut` if the breaker lets it, and records its outcome: `Ok` is a success, an
    /// error is a failure unless the builder's [`BreakerBuilder::record_error`] predicate
    /// says to ignore it.
    ///
    /// # Errors
    /// [`CallError::Rejected`] without running `fut`, or [`CallError::Inner`] with its error.
    ///
    /// # Cancel safety
    /// Dropping the returned future drops `fut`; the call counts for nothing.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let is_failure = self.inner.config.is_failure.clone();
        self.call_with(fut, move |r| match r {
            Ok(_) => Verdict::Success,
            Err(e) => match &is_failure {
                Some(p) if !p(e) => Verdict::Ignore,
                _ => Verdict::Failure,
            },
        })
        .await
    }

    /// Runs `fut` if the breaker lets it; `classify` says how its outcome counts.
    ///
    /// # Errors
    /// [`CallError::Rejected`] without running `fut`, or [`CallError::Inner`] with its error.
    pub async fn call_with<F, T, E, C>(&self, fut: F, classify: C) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Verdict,
    {
        let permit = self.acquire().map_err(CallError::Rejected)?;
        let out = fut.await;
        permit.record(classify(&out));
        out.map_err(CallError::Inner)
    }

    /// Opens the breaker until [`CircuitBreaker::reset`]: every call is rejected.
    pub fn force_open(&self) {
        self.inner.manual(BreakerState::ForcedOpen);
    }

    /// Closes the breaker until [`CircuitBreaker::reset`]: every call goes through and
    /// nothing is judged.
    pub fn force_closed(&self) {
        self.inner.manual(BreakerState::ForcedClosed);
    }

    /// Closes the breaker with an empty window and no backoff history.
    pub fn reset(&self) {
        self.inner.manual(BreakerState::Closed);
    }

    /// Moves to `state` on the word of a shared store (see the shared mode): `open_until` for
    /// open. Forced states are kept. Returns whether the state changed.
    pub fn apply_shared(&self, state: BreakerState, open_until: UnixMs, reason: &str) -> bool {
        self.inner.apply_shared(state, open_until, reason)
    }
}

impl Inner {
    fn lock_slow(&self) -> std::sync::MutexGuard<'_, Slow> {
        self.slow.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[inline]
    fn acquire(&self) -> Result<Ticket, Rejected> {
        let s = self.state.load(Ordering::Acquire);
        if s == CLOSED {
            let start = match self.slow_ms {
                Some(_) => self.clock.now_ms(),
                None => 0,
            };
            return Ok(Ticket {
                kind: Kind::Closed,
                generation: 0,
                start,
                done: false,
            });
        }
        self.acquire_slow(s)
    }

    #[cold]
    fn acquire_slow(&self, mut s: u8) -> Result<Ticket, Rejected> {
        let now = self.clock.now_ms();
        if s == FORCED_CLOSED {
            return Ok(Ticket {
                kind: Kind::Free,
                generation: 0,
                start: now,
                done: false,
            });
        }
        if s == OPEN {
            let until = self.open_until.load(Ordering::Acquire);
            if now < until {
                return Err(self.reject(BreakerState::Open, until - now));
            }
            let mut slow = self.lock_slow();
            if self.state.load(Ordering::Acquire) == OPEN
                && now >= self.open_until.load(Ordering::Acquire)
            {
                self.transition(
                    &mut slow,
                    BreakerState::HalfOpen,
                    now,
                    None,
                    "open period over",
                );
            }
            drop(slow);
            s = self.state.load(Ordering::Acquire);
            if s == CLOSED {
                return self.acquire();
            }
        }
        if s == HALF_OPEN {
            if let Some(max) = self.config.max_half_open {
                let mut slow = self.lock_slow();
                if self.state.load(Ordering::Acquire) == HALF_OPEN
                    && now - slow.since > duration_ms(max)
                {
                    self.trip(&mut slow, now, "no verdict within max_wait_in_half_open");
                    let until = self.open_until.load(Ordering::Acquire);
                    return Err(self.reject(BreakerState::Open, until - now));
                }
            }
            let generation = self.generation.load(Ordering::Acquire);
            let probes = self.config.half_open_probes;
            let got = self
                .probes_issued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < probes).then_some(n + 1)
                });
            return match got {
                Ok(_) => Ok(Ticket {
                    kind: Kind::Probe,
                    generation,
                    start: now,
                    done: false,
                }),
                Err(_) => Err(self.reject(BreakerState::HalfOpen, duration_ms(PROBES_BUSY_RETRY))),
            };
        }
        if s == FORCED_OPEN {
            return Err(self.reject(BreakerState::ForcedOpen, duration_ms(self.config.open_for)));
        }
        // Closed again by another thread meanwhile.
        self.acquire()
    }

    fn reject(&self, state: BreakerState, wait_ms: i64) -> Rejected {
        self.meters.rejected.increment(1);
        Rejected {
            breaker: self.config.name.clone(),
            state,
            retry_after: Duration::from_millis(wait_ms.max(1) as u64),
        }
    }

    #[inline]
    fn finish(&self, ticket: &mut Ticket, verdict: Verdict) {
        ticket.done = true;
        if verdict == Verdict::Ignore {
            self.meters.ignored.increment(1);
            if ticket.kind == Kind::Probe {
                self.give_back(ticket);
            }
            return;
        }
        let failed = verdict == Verdict::Failure;
        if failed {
            self.meters.failure.increment(1);
        } else {
            self.meters.success.increment(1);
        }
        match ticket.kind {
            Kind::Free => {}
            Kind::Closed => {
                let needs_now = self.slow_ms.is_some() || self.window.needs_time();
                let now = if needs_now { self.clock.now_ms() } else { 0 };
                let slow = self.slow_ms.is_some_and(|ms| now - ticket.start >= ms);
                if slow {
                    self.meters.slow.increment(1);
                }
                if self.state.load(Ordering::Acquire) != CLOSED {
                    return;
                }
                self.window.record(Sample { failed, slow }, now);
                if self.tally_on.load(Ordering::Relaxed) {
                    self.count_tally(failed, slow);
                }
                if failed || slow {
                    self.judge_closed(if needs_now { now } else { self.clock.now_ms() });
                }
            }
            Kind::Probe => {
                let now = self.clock.now_ms();
                let slow = self.slow_ms.is_some_and(|ms| now - ticket.start >= ms);
                if slow {
                    self.meters.slow.increment(1);
                }
                self.judge_probe(ticket.generation, failed, slow, now);
            }
        }
    }

    #[cold]
    fn count_tally(&self, failed: bool, slow: bool) {
        self.tally[0].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.tally[1].fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            self.tally[2].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The calls, failures and slow calls counted since the last take.
    fn take_tally(&self) -> (u64, u64, u64) {
        (
            self.tally[0].swap(0, Ordering::AcqRel),
            self.tally[1].swap(0, Ordering::AcqRel),
            self.tally[2].swap(0, Ordering::AcqRel),
        )
    }

    /// Puts back a tally whose report failed.
    fn return_tally(&self, calls: u64, failures: u64, slow: u64) {
        self.tally[0].fetch_add(calls, Ordering::AcqRel);
        self.tally[1].fetch_add(failures, Ordering::AcqRel);
        self.tally[2].fetch_add(slow, Ordering::AcqRel);
    }

    fn give_back(&self, ticket: &Ticket) {
        if ticket.kind == Kind::Probe
            && self.generation.load(Ordering::Acquire) == ticket.generation
        {
            let _ = self
                .probes_issued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    #[cold]
    fn judge_closed(&self, now: UnixMs) {
        let c = self.window.counts(now);
        if c.calls < u64::from(self.config.min_calls) {
            return;
        }
        let reason = if c.failure_rate() >= self.config.failure_rate {
            format!(
                "failure rate {:.1}% ≥ {}% over {} calls",
                c.failure_rate(),
                self.config.failure_rate,
                c.calls
            )
        } else if self.config.slow_rate.is_some_and(|r| c.slow_rate() >= r) {
            format!(
                "slow-call rate {:.1}% ≥ {}% over {} calls",
                c.slow_rate(),
                self.config.slow_rate.unwrap_or(100.0),
                c.calls
            )
        } else {
            return;
        };
        let mut slow = self.lock_slow();
        if self.state.load(Ordering::Acquire) == CLOSED {
            self.trip(&mut slow, now, &reason);
        }
    }

    fn judge_probe(&self, generation: u64, failed: bool, slow_call: bool, now: UnixMs) {
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let done = self.probes_done.fetch_add(1, Ordering::AcqRel) + 1;
        let failures = if failed {
            self.probe_failures.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.probe_failures.load(Ordering::Acquire)
        };
        let slows = if slow_call {
            self.probe_slow.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.probe_slow.load(Ordering::Acquire)
        };
        let n = f64::from(self.config.half_open_probes);
        // Decide as soon as the outcome is certain: enough failures to reach the threshold
        // even if every other probe succeeds, or every probe in.
        let fail_pct = f64::from(failures) * 100.0 / n;
        let slow_pct = f64::from(slows) * 100.0 / n;
        let too_slow = self.config.slow_rate.is_some_and(|r| slow_pct >= r);
        if fail_pct >= self.config.failure_rate || too_slow {
            let mut slow = self.lock_slow();
            if self.generation.load(Ordering::Acquire) == generation
                && self.state.load(Ordering::Acquire) == HALF_OPEN
            {
                let reason = if too_slow {
                    format!("{slows} of {n} probes slow")
                } else {
                    format!("{failures} of {n} probes failed")
                };
                self.trip(&mut slow, now, &reason);
            }
        } else if done >= self.config.half_open_probes {
            let mut slow = self.lock_slow();
            if self.generation.load(Ordering::Acquire) == generation
                && self.state.load(Ordering::Acquire) == HALF_OPEN
            {
                slow.trips_in_row = 0;
                self.transition(
                    &mut slow,
                    BreakerState::Closed,
                    now,
                    None,
                    "probes succeeded",
                );
            }
        }
    }

    /// Opens for the next period of the backoff.
    fn trip(&self, slow: &mut Slow, now: UnixMs, reason: &str) {
        slow.trips_in_row = slow.trips_in_row.saturating_add(1);
        let full = self.config.open_duration(slow.trips_in_row);
        let cut = if self.config.jitter > 0.0 {
            self.config.jitter * rand::random::<f64>()
        } else {
            0.0
        };
        let period = duration_ms(full.mul_f64(1.0 - cut)).max(1);
        self.transition(
            slow,
            BreakerState::Open,
            now,
            Some(now.saturating_add(period)),
            reason,
        );
    }

    fn transition(
        &self,
        slow: &mut Slow,
        to: BreakerState,
        now: UnixMs,
        open_until: Option<UnixMs>,
        reason: &str,
    ) {
        let from = BreakerState::from_code(self.state.load(Ordering::Acquire))
            .unwrap_or(BreakerState::Closed);
        match to {
            BreakerState::Closed => self.window.reset(),
            BreakerState::HalfOpen => {
                self.probes_issued.store(0, Ordering::Release);
                self.probes_done.store(0, Ordering::Release);
                self.probe_failures.store(0, Ordering::Release);
                self.probe_slow.store(0, Ordering::Release);
            }
            _ => {}
        }
        if let Some(until) = open_until {
            self.open_until.store(until, Ordering::Release);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.state.store(to.code(), Ordering::Release);
        slow.since = now;
        self.meters.state.set(f64::from(to.code()));
        metrics::counter!(
            "celeriac_breaker_transitions_total",
            "breaker" => self.config.name.to_string(),
            "from" => from.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
        tracing::info!(breaker = %self.config.name, %from, %to, reason, "circuit breaker changed state");
        // No receiver is not an error: nobody listens.
        let _ = self.events.send(BreakerEvent {
            breaker: self.config.name.clone(),
            from,
            to,
            at: now,
            open_until,
            reason: reason.to_string(),
        });
    }

    fn manual(&self, to: BreakerState) {
        let now = self.clock.now_ms();
        let mut slow = self.lock_slow();
        if to == BreakerState::Closed {
            slow.trips_in_row = 0;
            // Reset always empties the window, even when already closed.
            self.window.reset();
        }
        if self.state.load(Ordering::Acquire) != to.code() {
            let reason = match to {
                BreakerState::Closed => "reset",
                _ => "forced",
            };
            self.transition(&mut slow, to, now, None, reason);
        }
    }

    fn apply_shared(&self, to: BreakerState, open_until: UnixMs, reason: &str) -> bool {
        let now = self.clock.now_ms();
        let mut slow = self.lock_slow();
        let cur = self.state.load(Ordering::Acquire);
        if cur == FORCED_OPEN || cur == FORCED_CLOSED {
            return false;
        }
        match to {
            BreakerState::Open => {
                if cur == OPEN && self.open_until.load(Ordering::Acquire) >= open_until {
                    return false;
                }
                if cur == OPEN {
                    self.open_until.store(open_until, Ordering::Release);
                    return true;
                }
                self.transition(&mut slow, to, now, Some(open_until), reason);
                true
            }
            BreakerState::Closed if cur != CLOSED => {
                slow.trips_in_row = 0;
                self.transition(&mut slow, to, now, None, reason);
                true
            }
            BreakerState::HalfOpen if cur == OPEN => {
                self.transition(&mut slow, to, now, None, reason);
                true
            }
            _ => false,
        }
    }
}

/// Leave to make one call, borrowed from a [`CircuitBreaker`]; say how it went with
/// [`Permit::record`] (or [`Permit::success`] / [`Permit::failure`]).
#[derive(Debug)]
#[must_use = "a permit records nothing unless told how the call went"]
pub struct Permit<'a> {
    inner: &'a Inner,
    ticket: Ticket,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.config.name)
    }
}

impl Permit<'_> {
    /// Records the call's outcome.
    #[inline]
    pub fn record(mut self, verdict: Verdict) {
        self.inner.finish(&mut self.ticket, verdict);
    }

    /// Records a success.
    #[inline]
    pub fn success(self) {
        self.record(Verdict::Success);
    }

    /// Records a failure.
    pub fn failure(self) {
        self.record(Verdict::Failure);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.ticket.done {
            self.inner.give_back(&self.ticket);
        }
    }
}

/// A [`Permit`] that owns a handle to its breaker.
#[derive(Debug)]
#[must_use = "a permit records nothing unless told how the call went"]
pub struct OwnedPermit {
    inner: Arc<Inner>,
    ticket: Ticket,
}

impl OwnedPermit {
    /// True when this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.kind == Kind::Probe
    }

    /// Records the call's outcome.
    pub fn record(mut self, verdict: Verdict) {
        self.inner.finish(&mut self.ticket, verdict);
    }

    /// Records a success.
    pub fn success(self) {
        self.record(Verdict::Success);
    }

    /// Records a failure.
    pub fn failure(self) {
        self.record(Verdict::Failure);
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if !self.ticket.done {
            self.inner.give_back(&self.ticket);
        }
    }
}

#[cfg(test)]
mod tests;
