//! Shared mode: breakers of one name in many processes publish their signals through a
//! [`BreakerStore`], which decides trips for all of them (with a quorum, so one bad node
//! does not trip the fleet) and hands out a bounded number of half-open probes.
//!
//! [`SharedRecord`] holds the rules the stores apply (SQLite through it, Redis in Lua that
//! mirrors it). [`SharedBreaker`] wraps a local [`CircuitBreaker`]: the local breaker keeps
//! protecting its process on its own evidence, and [`SharedBreaker::sync`] (run every
//! `sync_interval` by [`SharedBreaker::spawn_sync`]) reports what it saw and adopts the
//! store's verdict. **Bound:** once the store has tripped a breaker, every process stops
//! calling within one `sync_interval` plus one store round trip; a failing dependency is
//! tripped in the store within one `sync_interval` of the quorum's failures. Half-open
//! probes are bounded across processes even between syncs: a local probe taken while the
//! store was last seen open or half-open reserves one of the store's probes first.
//!
//! The tower layer (`CircuitBreakerLayer::shared`) and task breakers
//! ([`crate::Registry::shared_breaker`]) hold a shared breaker as a [`super::Guard`].

use super::{BreakerState, CircuitBreaker, Counts, OwnedPermit, Rejected, Verdict};
use crate::backend::{
    BreakerCommand, BreakerPolicy, BreakerSignal, BreakerStore, SharedBreakerState,
};
use crate::clock::{duration_ms, Clock, UnixMs};
use crate::error::{Error, Result};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A shared breaker's record in a store, and the rules every store applies to it. The rules
/// take any record a store hands back (a damaged one too) without a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRecord {
    /// Where it is.
    pub state: BreakerState,
    /// When the open period ends.
    pub open_until: UnixMs,
    /// Trips in a row.
    pub trips: u32,
    /// Moves at every change of state.
    pub generation: u64,
    /// When the current state began.
    pub since: UnixMs,
    /// Successful probes in this half-open period.
    pub probe_ok: u32,
    /// Failed probes in this half-open period.
    pub probe_fail: u32,
}

impl Default for SharedRecord {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            open_until: 0,
            trips: 0,
            generation: 0,
            since: 0,
            probe_ok: 0,
            probe_fail: 0,
        }
    }
}

/// What a store must do after a rule changed the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects {
    /// The state changed: drop every probe reservation.
    pub clear_probes: bool,
    /// Start a fresh window: drop every signal.
    pub clear_signals: bool,
}

impl SharedRecord {
    fn enter(&mut self, state: BreakerState, now: UnixMs) {
        self.state = state;
        // Compared for equality only: a record read back at the largest value goes on.
        self.generation = self.generation.wrapping_add(1);
        self.since = now;
        self.probe_ok = 0;
        self.probe_fail = 0;
    }

    fn open(&mut self, policy: &BreakerPolicy, now: UnixMs) -> Effects {
        self.trips = self.trips.saturating_add(1);
        self.open_until = now.saturating_add(policy.open_period_ms(self.trips));
        self.enter(BreakerState::Open, now);
        Effects {
            clear_probes: true,
            clear_signals: true,
        }
    }

    /// An open breaker whose period ended is half-open.
    pub fn settle(&mut self, now: UnixMs) -> Effects {
        if self.state == BreakerState::Open && now >= self.open_until {
            self.enter(BreakerState::HalfOpen, now);
            return Effects {
                clear_probes: true,
                clear_signals: false,
            };
        }
        Effects::default()
    }

    /// Judges a closed breaker by the window's counts per instance.
    pub fn judge(
        &mut self,
        per_instance: &[Counts],
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Effects {
        if self.state != BreakerState::Closed {
            return Effects::default();
        }
        let mut all = Counts::default();
        for c in per_instance {
            all.add(*c);
        }
        if all.calls < policy.min_calls.max(1) {
            return Effects::default();
        }
        let quorum = policy.quorum.max(1) as usize;
        let failing = all.failure_rate() >= policy.failure_rate
            && per_instance
                .iter()
                .filter(|c| c.calls > 0 && c.failure_rate() >= policy.failure_rate)
                .count()
                >= quorum;
        let slow = policy.slow_rate.is_some_and(|r| {
            all.slow_rate() >= r
                && per_instance
                    .iter()
                    .filter(|c| c.calls > 0 && c.slow_rate() >= r)
                    .count()
                    >= quorum
        });
        if failing || slow {
            self.open(policy, now)
        } else {
            Effects::default()
        }
    }

    /// Counts a probe's result while half-open.
    pub fn probe_result(&mut self, failed: bool, policy: &BreakerPolicy, now: UnixMs) -> Effects {
        if self.state != BreakerState::HalfOpen {
            return Effects::default();
        }
        if failed {
            self.probe_fail = self.probe_fail.saturating_add(1);
        } else {
            self.probe_ok = self.probe_ok.saturating_add(1);
        }
        let probes = policy.probes.max(1);
        if f64::from(self.probe_fail) * 100.0 >= policy.failure_rate * f64::from(probes) {
            return self.open(policy, now);
        }
        if self.probe_ok.saturating_add(self.probe_fail) >= probes {
            self.trips = 0;
            self.enter(BreakerState::Closed, now);
            return Effects {
                clear_probes: true,
                clear_signals: true,
            };
        }
        Effects::default()
    }

    /// Applies a manual override.
    pub fn command(&mut self, command: BreakerCommand, now: UnixMs) -> Effects {
        let to = match command {
            BreakerCommand::ForceOpen => BreakerState::ForcedOpen,
            BreakerCommand::ForceClosed => BreakerState::ForcedClosed,
            BreakerCommand::Reset => {
                self.trips = 0;
                BreakerState::Closed
            }
        };
        self.enter(to, now);
        Effects {
            clear_probes: true,
            clear_signals: true,
        }
    }
}

/// The oldest bucket epoch still inside a window ending at `now`.
pub fn oldest_epoch(window_ms: i64, bucket_ms: i64, now: UnixMs) -> i64 {
    let b = bucket_ms.max(1);
    let n = (window_ms.max(1) + b - 1) / b;
    now.div_euclid(b) - n + 1
}

/// How a [`SharedBreaker`] works with its store.
#[derive(Debug, Clone)]
pub struct SharedOptions {
    /// This process's id in the store (default: a random one).
    pub instance: String,
    /// How often local signals are reported and the store's state adopted (default 1 s).
    pub sync_interval: Duration,
    /// Instances that must each see the failure rate before the store opens (default 2).
    pub quorum: u32,
    /// A probe reservation lapses after this long without a result (default 30 s).
    pub probe_lease: Duration,
}

impl Default for SharedOptions {
    fn default() -> Self {
        Self {
            instance: uuid::Uuid::now_v7().to_string(),
            sync_interval: Duration::from_secs(1),
            quorum: 2,
            probe_lease: Duration::from_secs(30),
        }
    }
}

/// A [`CircuitBreaker`] whose signals and verdicts are shared through a [`BreakerStore`].
pub struct SharedBreaker<S> {
    local: CircuitBreaker,
    store: Arc<S>,
    options: SharedOptions,
    /// The store's state as last seen (a [`BreakerState`] code).
    seen: AtomicU8,
    /// The local breaker is open or half-open because the store said so.
    by_store: AtomicBool,
    /// The store's fleet clock, whose time every store call takes, unless the local breaker
    /// was given a clock of its own (tests), which is then used for both.
    fleet: Option<Arc<crate::clock::FleetClock>>,
}

impl<S> std::fmt::Debug for SharedBreaker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBreaker")
            .field("local", &self.local)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S: BreakerStore> SharedBreaker<S> {
    /// Shares `local` through `store`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `sync_interval`, `quorum` or `probe_lease` when zero, or
    /// `instance` when empty.
    pub fn new(local: CircuitBreaker, store: Arc<S>, options: SharedOptions) -> Result<Arc<Self>> {
        let bad = |setting: &str, msg: &str| {
            Err(Error::config(
                format!("breaker `{}`: {setting}", local.name()),
                msg,
            ))
        };
        if options.sync_interval.is_zero() {
            return bad("sync_interval", "must be above zero");
        }
        if options.quorum == 0 {
            return bad("quorum", "must be at least 1");
        }
        if options.probe_lease.is_zero() {
            return bad("probe_lease", "must be above zero");
        }
        if options.instance.is_empty() {
            return bad("instance", "must not be empty");
        }
        local.inner.tally_on.store(true, Ordering::Release);
        let fleet = (!local.inner.custom_clock).then(|| store.fleet_clock());
        Ok(Arc::new(Self {
            local,
            store,
            options,
            seen: AtomicU8::new(BreakerState::Closed.code()),
            by_store: AtomicBool::new(false),
            fleet,
        }))
    }

    /// The local breaker.
    pub fn local(&self) -> &CircuitBreaker {
        &self.local
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The options.
    pub fn options(&self) -> &SharedOptions {
        &self.options
    }

    /// The policy the store judges by, with a fresh random jitter.
    pub fn policy(&self) -> BreakerPolicy {
        policy_of(&self.local, &self.options)
    }

    /// Now, by the clock the store's times are on (the fleet's).
    fn now(&self) -> UnixMs {
        match &self.fleet {
            Some(fleet) => fleet.now_ms(),
            None => self.local.inner.clock.now_ms(),
        }
    }

    /// A time of the store's (an open period's end) on the local breaker's clock.
    fn to_local(&self, store_ms: UnixMs) -> UnixMs {
        match &self.fleet {
            Some(fleet) => store_ms
                .saturating_sub(fleet.now_ms())
                .saturating_add(self.local.inner.clock.now_ms()),
            None => store_ms,
        }
    }

    /// Reports the local signals gathered since the last report and adopts the store's
    /// state; returns it.
    ///
    /// # Errors
    /// The store's error (the signals are counted again in the next report).
    pub async fn sync(&self) -> Result<SharedBreakerState> {
        let (calls, failures, slow) = self.local.inner.take_tally();
        let signal = BreakerSignal {
            instance: self.options.instance.clone(),
            calls,
            failures,
            slow,
        };
        let now = self.now();
        match self
            .store
            .breaker_report(self.local.name(), signal, &self.policy(), now)
            .await
        {
            Ok(state) => {
                self.adopt(&state);
                Ok(state)
            }
            Err(e) => {
                self.local.inner.return_tally(calls, failures, slow);
                Err(e)
            }
        }
    }

    /// Runs [`SharedBreaker::sync`] every `sync_interval` (of the local breaker's clock's
    /// real time) in a spawned task, until the returned handle is aborted or the last `Arc`
    /// of this breaker is dropped (the task holds only a weak reference). A failed sync is
    /// logged and tried again at the next tick.
    pub fn spawn_sync(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = self
            .local
            .inner
            .clock
            .real_duration(self.options.sync_interval);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                if let Err(e) = me.sync().await {
                    tracing::warn!(breaker = %me.local.name(), error = %e, "breaker sync failed");
                }
            }
        })
    }

    fn adopt(&self, s: &SharedBreakerState) {
        self.seen.store(s.state.code(), Ordering::Release);
        match s.state {
            BreakerState::Open | BreakerState::ForcedOpen => {
                let until = if s.state == BreakerState::ForcedOpen {
                    i64::MAX
                } else {
                    self.to_local(s.open_until)
                };
                self.local
                    .apply_shared(BreakerState::Open, until, "opened in the shared store");
                // The store's verdict now owns the local open state (even when the local
                // breaker had tripped on its own): its later half-open and close apply here.
                let forced = matches!(
                    self.local.state(),
                    BreakerState::ForcedOpen | BreakerState::ForcedClosed
                );
                self.by_store.store(!forced, Ordering::Release);
            }
            BreakerState::HalfOpen => {
                // The store tripped and now probes: a local breaker that is open too (on the
                // store's word or its own) follows the store's probes from here on.
                if matches!(
                    self.local.state(),
                    BreakerState::Open | BreakerState::HalfOpen
                ) {
                    self.by_store.store(true, Ordering::Release);
                    self.local.apply_shared(
                        BreakerState::HalfOpen,
                        0,
                        "half-open in the shared store",
                    );
                }
            }
            BreakerState::Closed | BreakerState::ForcedClosed => {
                if self.by_store.swap(false, Ordering::AcqRel) {
                    self.local
                        .apply_shared(BreakerState::Closed, 0, "closed in the shared store");
                }
            }
        }
    }

    /// Asks to make a call: from the local breaker, and for a local probe while the store was
    /// last seen open or half-open, with one of the store's probes.
    ///
    /// # Errors
    /// [`Rejected`] when the local breaker rejects, or every probe in the store is taken.
    pub async fn acquire(&self) -> Result<SharedPermit<'_, S>, Rejected> {
        let (permit, reserve) = self.begin()?;
        let (permit, token) = if reserve {
            self.reserve(permit).await?
        } else {
            (permit, None)
        };
        Ok(SharedPermit {
            shared: self,
            permit,
            token,
        })
    }

    /// The local half of [`SharedBreaker::acquire`]: the local permit, and whether it must
    /// still reserve one of the store's probes (a local probe while the store was last seen
    /// open or half-open: a local open period that ends before the next sync probes through
    /// the store too, which turns half-open by then).
    pub(crate) fn begin(&self) -> Result<(OwnedPermit, bool), Rejected> {
        let permit = self.local.acquire_owned()?;
        let reserve = permit.is_probe()
            && matches!(
                BreakerState::from_code(self.seen.load(Ordering::Acquire)),
                Some(BreakerState::Open | BreakerState::HalfOpen | BreakerState::ForcedOpen)
            );
        Ok((permit, reserve))
    }

    /// Reserves a store probe for `permit`; returns it with the reservation's token (none
    /// when the store is unreachable: the local breaker alone bounds this process then).
    pub(crate) async fn reserve(
        &self,
        permit: OwnedPermit,
    ) -> Result<(OwnedPermit, Option<String>), Rejected> {
        let token = uuid::Uuid::now_v7().to_string();
        let now = self.now();
        match self
            .store
            .breaker_probe(self.local.name(), &token, &self.policy(), now)
            .await
        {
            Ok((true, _)) => Ok((permit, Some(token))),
            // Closed in the store meanwhile: the call goes through, judged locally.
            Ok((false, state))
                if matches!(
                    state.state,
                    BreakerState::Closed | BreakerState::ForcedClosed
                ) =>
            {
                self.adopt(&state);
                Ok((permit, None))
            }
            Ok((false, state)) => {
                drop(permit);
                self.adopt(&state);
                let wait = if state.state == BreakerState::Open {
                    state.open_until - now
                } else {
                    1_000
                };
                Err(Rejected {
                    breaker: self.local.inner.config.name.clone(),
                    state: state.state,
                    retry_after: Duration::from_millis(wait.max(1) as u64),
                })
            }
            Err(e) => {
                tracing::warn!(breaker = %self.local.name(), error = %e, "probe reservation failed");
                Ok((permit, None))
            }
        }
    }

    /// Records a store probe's result and adopts the state it leads to.
    pub(crate) async fn probe_done(&self, token: &str, verdict: Verdict) {
        if verdict == Verdict::Ignore {
            return;
        }
        let now = self.now();
        match self
            .store
            .breaker_probe_done(
                self.local.name(),
                token,
                verdict == Verdict::Failure,
                &self.policy(),
                now,
            )
            .await
        {
            Ok(state) => self.adopt(&state),
            Err(e) => {
                tracing::warn!(breaker = %self.local.name(), error = %e, "probe result not recorded")
            }
        }
    }

    /// Runs `fut` if the breakers let it; `Ok` is a success, `Err` a failure.
    ///
    /// # Errors
    /// [`super::CallError::Rejected`] without running `fut`, or the call's own error.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, super::CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.acquire().await.map_err(super::CallError::Rejected)?;
        let out = fut.await;
        permit
            .record(if out.is_ok() {
                Verdict::Success
            } else {
                Verdict::Failure
            })
            .await;
        out.map_err(super::CallError::Inner)
    }

    /// Forces the breaker open or closed, or resets it, in the store and here.
    ///
    /// # Errors
    /// The store's error.
    pub async fn command(&self, command: BreakerCommand) -> Result<SharedBreakerState> {
        let state = self
            .store
            .breaker_command(self.local.name(), command, &self.policy(), self.now())
            .await?;
        match command {
            BreakerCommand::ForceOpen => self.local.force_open(),
            BreakerCommand::ForceClosed => self.local.force_closed(),
            BreakerCommand::Reset => self.local.reset(),
        }
        self.by_store.store(false, Ordering::Release);
        self.seen.store(state.state.code(), Ordering::Release);
        Ok(state)
    }
}

/// The policy a store judges `local`'s breaker by, with a fresh random jitter.
pub fn policy_of(local: &CircuitBreaker, options: &SharedOptions) -> BreakerPolicy {
    let c = local.config();
    let (window_ms, bucket_ms, min_calls) = match c.window() {
        // A count window of N calls is shared as the calls of the last open period: signals
        // need a time to expire by.
        super::WindowKind::Count(_) => (
            duration_ms(c.open_for),
            duration_ms(c.open_for) / 10,
            c.min_calls(),
        ),
        super::WindowKind::Time { size, buckets } => {
            let ms = duration_ms(size);
            (ms, ms / i64::from(buckets.max(1)), c.min_calls())
        }
    };
    BreakerPolicy {
        window_ms: window_ms.max(1),
        bucket_ms: bucket_ms.max(1),
        min_calls: u64::from(min_calls),
        quorum: options.quorum,
        failure_rate: c.failure_rate(),
        slow_rate: c.slow_rate(),
        probes: c.half_open_probes(),
        probe_lease_ms: duration_ms(options.probe_lease),
        open_ms: duration_ms(c.open_for),
        backoff: c.backoff,
        max_open_ms: duration_ms(c.max_open_for),
        jitter_cut: if c.jitter() > 0.0 {
            c.jitter() * rand::random::<f64>()
        } else {
            0.0
        },
    }
}

/// Leave to make one call through a [`SharedBreaker`].
#[must_use = "a permit records nothing unless told how the call went"]
pub struct SharedPermit<'a, S> {
    shared: &'a SharedBreaker<S>,
    permit: OwnedPermit,
    token: Option<String>,
}

impl<S> std::fmt::Debug for SharedPermit<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPermit")
            .field("permit", &self.permit)
            .field("token", &self.token)
            .finish()
    }
}

impl<S: BreakerStore> SharedPermit<'_, S> {
    /// True when this call is one of the store's half-open probes.
    pub fn is_shared_probe(&self) -> bool {
        self.token.is_some()
    }

    /// Records the call's outcome here and, for a shared probe, in the store.
    pub async fn record(self, verdict: Verdict) {
        let SharedPermit {
            shared,
            permit,
            token,
        } = self;
        permit.record(verdict);
        if let Some(token) = token {
            shared.probe_done(&token, verdict).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            window_ms: 10_000,
            bucket_ms: 1_000,
            min_calls: 10,
            quorum: 2,
            failure_rate: 50.0,
            slow_rate: None,
            probes: 2,
            probe_lease_ms: 5_000,
            open_ms: 1_000,
            backoff: 2.0,
            max_open_ms: 3_000,
            jitter_cut: 0.0,
        }
    }

    fn c(calls: u64, failures: u64) -> Counts {
        Counts {
            calls,
            failures,
            slow: 0,
        }
    }

    #[test]
    fn one_bad_instance_does_not_trip_the_fleet() {
        let mut r = SharedRecord::default();
        let p = policy();
        assert_eq!(r.judge(&[c(20, 20), c(2, 0)], &p, 0), Effects::default());
        assert_eq!(r.state, BreakerState::Closed);
        let e = r.judge(&[c(20, 20), c(10, 6)], &p, 0);
        assert!(e.clear_signals && e.clear_probes);
        assert_eq!(r.state, BreakerState::Open);
        assert_eq!(r.open_until, 1_000);
    }

    #[test]
    fn probes_decide_and_backoff_is_capped() {
        let mut r = SharedRecord::default();
        let p = policy();
        r.judge(&[c(10, 10), c(10, 10)], &p, 0);
        for (t, until) in [(1_000, 3_000), (3_000, 6_000), (6_000, 9_000)] {
            assert!(r.settle(t).clear_probes);
            assert_eq!(r.state, BreakerState::HalfOpen);
            r.probe_result(true, &p, t);
            assert_eq!((r.state, r.open_until), (BreakerState::Open, until));
        }
        r.settle(9_000);
        r.probe_result(false, &p, 9_000);
        assert_eq!(r.state, BreakerState::HalfOpen);
        let e = r.probe_result(false, &p, 9_000);
        assert!(e.clear_signals);
        assert_eq!((r.state, r.trips), (BreakerState::Closed, 0));
    }

    #[test]
    fn oldest_epoch_covers_the_window() {
        assert_eq!(oldest_epoch(10_000, 1_000, 25_500), 16);
        assert_eq!(oldest_epoch(10_000, 3_000, 30_000), 7);
    }
}
