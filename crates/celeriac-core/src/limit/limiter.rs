//! [`RateLimiter`]: quotas enforced through a shared store, with what a service needs around
//! it: a failure mode, a local fallback, a short-circuit cache, shadow mode, overrides.

use super::local::LocalLimiter;
use super::maths::Decision;
use super::quota::Quota;
use super::stats::{self, Counters, LimiterStats};
use crate::backend::{KvStore, RateLimitStore};
use crate::clock::{duration_ms, Clock, UnixMs};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a limiter does while its store fails or times out (or is paused after failing, see
/// [`RateLimiterBuilder::store_pause`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Let calls through (the default). With the local fallback on (the default), each
    /// process still enforces the quotas on its own meanwhile.
    #[default]
    Open,
    /// Deny every call until the store answers again.
    Closed,
}

/// Where a [`Verdict`] came from.
///
/// While the store is paused after consecutive failures
/// ([`RateLimiterBuilder::store_pause`]) the failure mode decides as when a call fails:
/// `Fallback`, `FailedOpen` or `FailedClosed` (those calls are counted apart, in
/// [`LimiterCounts::store_paused`](super::stats::LimiterCounts::store_paused)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The shared store decided.
    Store,
    /// The key was known to be over its limit until its retry-after: no round trip.
    ShortCircuit,
    /// The store failed (or is paused); the local fallback limiter decided (fail-open).
    Fallback,
    /// The store failed (or is paused); fail-open without a fallback let the call through.
    FailedOpen,
    /// The store failed (or is paused); fail-closed denied the call.
    FailedClosed,
}

/// A limiter's answer for one call.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Whether to let the call through (always true in shadow mode).
    pub allow: bool,
    /// The decision as made (in shadow mode it may deny while `allow` is true).
    pub decision: Decision,
    /// Who decided.
    pub source: Source,
    /// The quotas that applied to the key (for `RateLimit-Policy` headers).
    pub quotas: Arc<[Quota]>,
}

impl Verdict {
    /// The quota the decision reports on (the most restrictive).
    pub fn quota(&self) -> Option<&Quota> {
        self.quotas.get(self.decision.quota)
    }
}

type Tier = Arc<dyn Fn(&str) -> Option<Arc<[Quota]>> + Send + Sync>;

/// Builds a [`RateLimiter`]; see [`RateLimiter::builder`].
pub struct RateLimiterBuilder<S> {
    store: Arc<S>,
    name: String,
    quotas: Vec<Quota>,
    overrides: HashMap<String, Vec<Quota>>,
    tier: Option<Tier>,
    fail_mode: FailMode,
    local_fallback: bool,
    timeout: Duration,
    store_pause: Duration,
    pause_after: u32,
    shadow: bool,
    short_circuit: bool,
    short_circuit_capacity: u64,
    clock: Arc<dyn Clock>,
}

impl<S> std::fmt::Debug for RateLimiterBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiterBuilder")
            .field("name", &self.name)
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}

impl<S: RateLimitStore> RateLimiterBuilder<S> {
    /// Names the limiter (the `limiter` label of its metrics; `default` unless set).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a quota every key must keep (several are checked at once, all or nothing).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// Gives one key its own quotas in place of the default ones (a premium customer).
    pub fn override_key(mut self, key: impl Into<String>, quotas: Vec<Quota>) -> Self {
        self.overrides.insert(key.into(), quotas);
        self
    }

    /// Chooses quotas per key by a function (a tier looked up from the key); `None` keeps the
    /// default ones. Keys given to [`Self::override_key`] come first. Quotas it returns are
    /// checked on each call; a bad one is an error for that call.
    pub fn override_with(
        mut self,
        tier: impl Fn(&str) -> Option<Arc<[Quota]>> + Send + Sync + 'static,
    ) -> Self {
        self.tier = Some(Arc::new(tier));
        self
    }

    /// What to do while the store fails or times out ([`FailMode::Open`] by default).
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// Whether fail-open enforces the quotas per process meanwhile (on by default).
    pub fn local_fallback(mut self, on: bool) -> Self {
        self.local_fallback = on;
        self
    }

    /// The longest wait for the store per call (100 ms by default); past it the failure mode
    /// applies.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the store is left alone after [`Self::pause_after`] consecutive failures
    /// (1 s by default; [`Duration::ZERO`] turns the pause off).
    ///
    /// While the store is down each call would otherwise wait for its failure (up to the
    /// [`Self::timeout`]) before the failure mode decides. During the pause the failure mode
    /// decides at once (fail-open: the local fallback, or unlimited without one; fail-closed:
    /// denied), and those calls are counted as `store_paused`. When the pause ends, one call
    /// asks the store again (the others keep deciding locally meanwhile): an answer ends the
    /// pause, a failure starts another. The pause is measured on this host's monotonic clock,
    /// never on the limiter's [`Self::clock`]. Logged at warn level when it starts and at
    /// info level when the store answers again.
    pub fn store_pause(mut self, pause: Duration) -> Self {
        self.store_pause = pause;
        self
    }

    /// How many consecutive store failures (errors or timeouts) start a
    /// [`Self::store_pause`] (2 by default; at least 1).
    pub fn pause_after(mut self, failures: u32) -> Self {
        self.pause_after = failures;
        self
    }

    /// Shadow mode: decide and count, never deny (to try a limit out in production).
    pub fn shadow(mut self, on: bool) -> Self {
        self.shadow = on;
        self
    }

    /// Whether keys known to be over their limit are denied locally until their
    /// retry-after, without asking the store (on by default), and how many such keys are
    /// kept at most.
    pub fn short_circuit(mut self, on: bool, capacity: u64) -> Self {
        self.short_circuit = on;
        self.short_circuit_capacity = capacity;
        self
    }

    /// The clock `now` is read from (the store's fleet clock by default; a
    /// [`crate::ManualClock`] in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the limiter. Metrics are registered here: install the `metrics` recorder first.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad quota (zero limit or window…), no quota at all, two
    /// quotas of one key sharing a policy name, a zero timeout, or a zero
    /// [`Self::pause_after`].
    pub fn build(self) -> Result<RateLimiter<S>> {
        if self.quotas.is_empty() {
            return Err(Error::config(
                "rate limit",
                format!(
                    "limiter `{}` has no quota; add one with .quota(..)",
                    self.name
                ),
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::config(
                "rate limit timeout",
                "the store timeout is zero; give it a length above zero",
            ));
        }
        if self.pause_after == 0 {
            return Err(Error::config(
                "rate limit pause_after",
                "pause_after is zero; give the consecutive store failures that pause the store \
                 (1 or more), or turn the pause off with store_pause(Duration::ZERO)",
            ));
        }
        let check = |quotas: &[Quota]| -> Result<Arc<[Quota]>> {
            super::check_request("check", quotas, 1)?;
            check_names(quotas)?;
            Ok(quotas.into())
        };
        let quotas = check(&self.quotas)?;
        let overrides = self
            .overrides
            .iter()
            .map(|(k, q)| {
                super::check_key("rate limit key", k)?;
                Ok((k.clone(), check(q)?))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        let label = self.name.clone();
        let counter = |outcome: &'static str| {
            metrics::counter!("celeriac_rate_limit_decisions_total",
                "limiter" => label.clone(), "outcome" => outcome)
        };
        let metrics = Metrics {
            allowed: counter("allowed"),
            denied: counter("denied"),
            shadow_denied: counter("shadow_denied"),
            short_circuited: counter("short_circuited"),
            store_errors: metrics::counter!("celeriac_rate_limit_store_errors_total",
                "limiter" => label.clone()),
            store_paused: metrics::counter!("celeriac_rate_limit_store_paused_total",
                "limiter" => label.clone()),
        };
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                store: self.store,
                name: self.name,
                quotas,
                overrides,
                tier: self.tier,
                fail_mode: self.fail_mode,
                fallback: self.local_fallback.then(LocalLimiter::new),
                timeout: self.timeout,
                pause: (!self.store_pause.is_zero())
                    .then(|| Pause::new(self.pause_after, self.store_pause)),
                shadow: self.shadow,
                over: self.short_circuit.then(|| {
                    moka::sync::Cache::builder()
                        .max_capacity(self.short_circuit_capacity.max(1))
                        .build()
                }),
                clock: self.clock,
                metrics,
                counters: Counters::default(),
                instance: format!("{}.{}", std::process::id(), uuid::Uuid::now_v7().simple()),
            }),
        })
    }
}

fn check_names(quotas: &[Quota]) -> Result<()> {
    for (i, q) in quotas.iter().enumerate() {
        if quotas[..i]
            .iter()
            .any(|p| p.policy_name() == q.policy_name())
        {
            return Err(Error::config(
                "rate limit",
                format!(
                    "two quotas are named `{}`; give each its own with .name(..) (the name is \
                     the policy in RateLimit headers)",
                    q.policy_name()
                ),
            ));
        }
    }
    Ok(())
}

struct Metrics {
    allowed: metrics::Counter,
    denied: metrics::Counter,
    shadow_denied: metrics::Counter,
    short_circuited: metrics::Counter,
    store_errors: metrics::Counter,
    store_paused: metrics::Counter,
}

/// [`Pause::state`] while the store is asked.
const CLOSED: u64 = 0;
/// [`Pause::state`] while one call probes the store after a pause.
const PROBING: u64 = u64::MAX;

/// The store left alone after consecutive failures: a small circuit breaker on the monotonic
/// clock. Lock-free: a call reads one atomic while the store answers.
#[derive(Debug)]
struct Pause {
    /// Consecutive failures that start a pause (at least 1).
    after: u32,
    /// How long a pause lasts.
    length: Duration,
    /// The origin of [`Self::now`].
    origin: Instant,
    /// Store failures since the last answer.
    failures: AtomicU32,
    /// [`CLOSED`], [`PROBING`], or when the pause ends (ns after `origin`, between the two).
    state: AtomicU64,
}

/// Whether a call asks the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Yes, as usual.
    Store,
    /// Yes, as the one call that tries the store after a pause.
    Probe,
    /// No: the store is paused (or another call probes it).
    Paused,
}

/// What a store failure did to the pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// Counted; no pause (yet, or one runs already).
    Counted,
    /// It started a pause (after closed).
    Opened,
    /// The probe failed: another pause.
    PausedAgain,
}

impl Pause {
    fn new(after: u32, length: Duration) -> Self {
        Pause {
            after,
            length,
            origin: Instant::now(),
            failures: AtomicU32::new(0),
            state: AtomicU64::new(CLOSED),
        }
    }

    /// Now on the monotonic clock, in ns after `origin`.
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(PROBING - 1)
    }

    /// When a pause starting at `now` ends (never [`CLOSED`] or [`PROBING`]).
    fn end(&self, now: u64) -> u64 {
        let length = u64::try_from(self.length.as_nanos()).unwrap_or(u64::MAX);
        now.saturating_add(length).clamp(CLOSED + 1, PROBING - 1)
    }

    /// Whether a call asks the store now: when the pause has ended, exactly one call (the
    /// first to swap the state) probes it. While the store answers, one atomic load (the
    /// clock is not read).
    fn ask(&self) -> Ask {
        self.ask_at(|| self.now())
    }

    /// [`Self::ask`] at the time `now` gives.
    fn ask_at(&self, now: impl FnOnce() -> u64) -> Ask {
        let mut state = self.state.load(Ordering::Acquire);
        if state == CLOSED {
            return Ask::Store;
        }
        let now = now();
        loop {
            if state == CLOSED {
                return Ask::Store;
            }
            if state == PROBING || now < state {
                return Ask::Paused;
            }
            match self
                .state
                .compare_exchange(state, PROBING, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ask::Probe,
                Err(now_state) => state = now_state,
            }
        }
    }

    /// The store answered; true when that ended a pause (the probe's answer).
    fn answered(&self, ask: Ask) -> bool {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        ask == Ask::Probe
            && self
                .state
                .compare_exchange(PROBING, CLOSED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// The store failed or timed out at `now`.
    fn failed(&self, ask: Ask, now: u64) -> Failed {
        if ask == Ask::Probe {
            // Another pause, from now.
            let _ = self.state.compare_exchange(
                PROBING,
                self.end(now),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            return Failed::PausedAgain;
        }
        let failures = self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(1))
            })
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if failures >= self.after
            && self
                .state
                .compare_exchange(CLOSED, self.end(now), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Failed::Opened;
        }
        Failed::Counted
    }

    /// A probe that ended without a verdict on the store (the call was dropped, or the
    /// store refused its input): the next call probes instead.
    fn abandon_probe(&self) {
        let _ =
            self.state
                .compare_exchange(PROBING, CLOSED + 1, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Hands the probe on when a probing call ends without reporting (dropped mid-call).
struct ProbeGuard<'a> {
    pause: Option<&'a Pause>,
}

impl ProbeGuard<'_> {
    /// The probe reported: nothing to hand on.
    fn disarm(&mut self) {
        self.pause = None;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let Some(pause) = self.pause {
            pause.abandon_probe();
        }
    }
}

/// Over its limit until `until` for calls costing at least `cost`.
#[derive(Clone, Copy)]
struct Over {
    until: UnixMs,
    cost: u32,
    decision: Decision,
}

struct Inner<S> {
    store: Arc<S>,
    name: String,
    quotas: Arc<[Quota]>,
    overrides: HashMap<String, Arc<[Quota]>>,
    tier: Option<Tier>,
    fail_mode: FailMode,
    fallback: Option<LocalLimiter>,
    timeout: Duration,
    /// The store left alone after consecutive failures (`None`: never).
    pause: Option<Pause>,
    shadow: bool,
    over: Option<moka::sync::Cache<String, Over>>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// The same decisions as `metrics`, readable in process ([`RateLimiter::stats`]).
    counters: Counters,
    /// This instance's name in the published figures (`<pid>.<uuid>`).
    instance: String,
}

/// Quotas enforced across every process through a [`RateLimitStore`].
///
/// ```
/// # use std::sync::Arc;
/// use celeriac_core::limit::{FailMode, LocalLimiter, Quota, RateLimiter};
/// # async fn demo() -> celeriac_core::Result<()> {
/// # let store = Arc::new(LocalLimiter::new());
/// let limiter = RateLimiter::builder(store)
///     .quota(Quota::per_minute(100).burst(10))
///     .quota(Quota::per_hour(1000).name("hourly"))
///     .override_key("user:premium", vec![Quota::per_minute(1000)])
///     .fail_mode(FailMode::Open)
///     .build()?;
/// let verdict = limiter.check("user:42").await?;
/// if !verdict.allow {
///     // 429, Retry-After: verdict.decision.retry_after
/// }
/// # Ok(()) }
/// ```
///
/// - **Failure mode**: each store call has a timeout; when the store fails or times out,
///   [`FailMode::Open`] lets calls through (each process enforcing the quotas with a local
///   fallback limiter meanwhile, unless turned off) and [`FailMode::Closed`] denies them.
///   Store failures are counted and logged at debug level.
/// - **Store pause**: after 2 consecutive failures the store is not asked for 1 s and the
///   failure mode decides at once, so a store that is down does not cost each call its
///   timeout; then one call probes it ([`RateLimiterBuilder::store_pause`],
///   [`RateLimiterBuilder::pause_after`]).
/// - **Short-circuit**: a key the store denied is denied locally until its retry-after (for
///   calls costing at least as much), saving the round trip; keys over their limit are the
///   ones that call most.
/// - **Shadow mode**: decisions are made and counted but never deny.
/// - **Overrides**: per key (a premium customer) or by a function (tiers).
///
/// Metrics: `celeriac_rate_limit_decisions_total{limiter, outcome}` with outcome `allowed`,
/// `denied`, `shadow_denied` or `short_circuited` (also counted as denied),
/// `celeriac_rate_limit_store_errors_total{limiter}` and
/// `celeriac_rate_limit_store_paused_total{limiter}` (calls decided without asking the store
/// during a pause). The same counts and a sample of the most denied keys are read with
/// [`Self::stats`] and published for the dashboard with [`Self::publish_stats`] (see
/// [`super::stats`]).
pub struct RateLimiter<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for RateLimiter<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S> std::fmt::Debug for RateLimiter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.inner.name)
            .field("quotas", &self.inner.quotas)
            .field("fail_mode", &self.inner.fail_mode)
            .field("shadow", &self.inner.shadow)
            .finish_non_exhaustive()
    }
}

impl<S: RateLimitStore> RateLimiter<S> {
    /// A builder over `store`, with the defaults: fail-open with a local fallback, a 100 ms
    /// timeout, a 1 s store pause after 2 consecutive failures, short-circuit on (100,000
    /// keys), no shadow mode, the store's fleet clock.
    pub fn builder(store: Arc<S>) -> RateLimiterBuilder<S> {
        RateLimiterBuilder {
            clock: store.fleet_clock(),
            store,
            name: "default".into(),
            quotas: Vec::new(),
            overrides: HashMap::new(),
            tier: None,
            fail_mode: FailMode::Open,
            local_fallback: true,
            timeout: Duration::from_millis(100),
            store_pause: Duration::from_secs(1),
            pause_after: 2,
            shadow: false,
            short_circuit: true,
            short_circuit_capacity: 100_000,
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This limiter's name among the instances of its name in the published figures
    /// (`<pid>.<uuid>`, one per [`RateLimiterBuilder::build`]; clones share it).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// What this limiter (and its clones) decided since it was built, and the keys it denied
    /// most (a sample, most first): see [`super::stats`].
    pub fn stats(&self) -> LimiterStats {
        let inner = &*self.inner;
        LimiterStats {
            limiter: inner.name.clone(),
            instances: 1,
            shadow: inner.shadow,
            quotas: inner.quotas.iter().map(ToString::to_string).collect(),
            counts: inner.counters.counts(),
            top_denied: inner.counters.top(),
        }
    }

    /// Publishes [`Self::stats`] to `kv` every `every` (the first at once) while the limiter
    /// or a clone of it lives, for the dashboard's *Rate limits* page and
    /// [`stats::read`]: under application name `app` (the one the dashboard is asked for),
    /// the limiter's name and [`Self::instance`], kept three intervals. Failed publications
    /// are logged at debug level and made again at the next tick. Abort the handle to stop
    /// earlier. Call it from within a Tokio runtime.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use celeriac_core::limit::{Quota, RateLimiter};
    /// # use celeriac_core::limit::stats::DEFAULT_PUBLISH_EVERY;
    /// # async fn demo<S: celeriac_core::backend::RateLimitStore + celeriac_core::backend::KvStore>(
    /// #     store: Arc<S>,
    /// # ) -> celeriac_core::Result<()> {
    /// let limiter = RateLimiter::builder(store.clone())
    ///     .name("api")
    ///     .quota(Quota::per_minute(100))
    ///     .build()?;
    /// limiter.publish_stats(store, "shop", DEFAULT_PUBLISH_EVERY)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when `app` or the limiter's name cannot name published figures
    /// (1 to 100 bytes without `:`, `{` or `}`), or `every` is zero.
    pub fn publish_stats<K: KvStore>(
        &self,
        kv: Arc<K>,
        app: &str,
        every: Duration,
    ) -> Result<tokio::task::JoinHandle<()>> {
        self.check_publication(app, every)?;
        let limiter = Arc::downgrade(&self.inner);
        let app = app.to_string();
        Ok(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = limiter.upgrade() else {
                    return;
                };
                let limiter = RateLimiter { inner };
                if let Err(e) = limiter.publish_stats_now(&*kv, &app, every).await {
                    tracing::debug!(limiter = %limiter.name(), error = %e,
                        "rate limiter figures not published");
                }
            }
        }))
    }

    /// Publishes [`Self::stats`] to `kv` once, as [`Self::publish_stats`] does at each tick
    /// (`every` is the interval the snapshot is kept three of): at shutdown, or in tests.
    /// The snapshot's time is `kv`'s fleet clock (the one readers judge it by).
    ///
    /// # Errors
    /// As [`Self::publish_stats`], and the store's when it fails or does not answer within
    /// `every` (at least a second).
    pub async fn publish_stats_now<K: KvStore>(
        &self,
        kv: &K,
        app: &str,
        every: Duration,
    ) -> Result<()> {
        self.check_publication(app, every)?;
        let now = kv.fleet_clock().now_ms();
        let write = stats::publish(kv, app, &self.inner.instance, self.stats(), every, now);
        match tokio::time::timeout(every.max(Duration::from_secs(1)), write).await {
            Ok(r) => r,
            Err(_) => Err(Error::backend(
                crate::ErrorKind::Retry,
                "the rate limiter's figures were not written in time",
            )),
        }
    }

    fn check_publication(&self, app: &str, every: Duration) -> Result<()> {
        stats::check_name("rate limiter statistics app", app)?;
        stats::check_name("rate limiter name", &self.inner.name)?;
        if every.is_zero() {
            return Err(Error::config(
                "rate limiter statistics interval",
                "the publication interval is zero; give it a length above zero",
            ));
        }
        Ok(())
    }

    /// Whether the limiter runs in shadow mode (decides, never denies).
    pub fn is_shadow(&self) -> bool {
        self.inner.shadow
    }

    /// The quotas of every key without an override or a tier of its own.
    pub fn default_quotas(&self) -> Arc<[Quota]> {
        self.inner.quotas.clone()
    }

    /// The quotas that apply to `key` (an override, or the default ones).
    pub fn quotas_for(&self, key: &str) -> Arc<[Quota]> {
        if let Some(q) = self.inner.overrides.get(key) {
            return q.clone();
        }
        if let Some(q) = self.inner.tier.as_ref().and_then(|t| t(key)) {
            return q;
        }
        self.inner.quotas.clone()
    }

    /// [`Self::check_cost`] with a cost of 1.
    ///
    /// # Errors
    /// As [`Self::check_cost`].
    pub async fn check(&self, key: &str) -> Result<Verdict> {
        self.check_cost(key, 1).await
    }

    /// Decides one call of `cost` for `key`.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad key (empty, too long) or a cost no quota can hold: bad
    /// input, never a store failure (those follow the failure mode).
    pub async fn check_cost(&self, key: &str, cost: u32) -> Result<Verdict> {
        let inner = &*self.inner;
        let quotas = self.quotas_for(key);
        super::check_request(key, &quotas, cost)?;
        let now = inner.clock.now_ms();
        if let Some(over) = &inner.over {
            if let Some(o) = over.get(key) {
                if now < o.until && cost >= o.cost {
                    let mut decision = o.decision;
                    decision.retry_after = Some(Duration::from_millis((o.until - now) as u64));
                    inner.metrics.short_circuited.increment(1);
                    Counters::one(&inner.counters.short_circuited);
                    return Ok(self.finish(key, decision, Source::ShortCircuit, quotas));
                }
                over.invalidate(key);
            }
        }
        let pause = inner.pause.as_ref();
        let ask = pause.map_or(Ask::Store, Pause::ask);
        if ask == Ask::Paused {
            inner.metrics.store_paused.increment(1);
            Counters::one(&inner.counters.store_paused);
            let (decision, source) = self.by_fail_mode(key, &quotas, cost, now)?;
            return Ok(self.finish(key, decision, source, quotas));
        }
        let mut probe = ProbeGuard {
            pause: pause.filter(|_| ask == Ask::Probe),
        };
        let call = inner.store.check_limits(key, &quotas, cost, now);
        let failure = match tokio::time::timeout(inner.timeout, call).await {
            Ok(Ok(decision)) => {
                probe.disarm();
                if pause.is_some_and(|p| p.answered(ask)) {
                    tracing::info!(limiter = %inner.name, "rate limit store answers again");
                }
                if let (Some(over), Some(retry)) = (&inner.over, decision.retry_after) {
                    over.insert(
                        key.to_string(),
                        Over {
                            until: now.saturating_add(duration_ms(retry)),
                            cost,
                            decision,
                        },
                    );
                }
                return Ok(self.finish(key, decision, Source::Store, quotas));
            }
            // Bad input, not a store failure: a probe hands on to the next call (guard).
            Ok(Err(e @ Error::Config { .. })) => return Err(e),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", inner.timeout),
        };
        probe.disarm();
        inner.metrics.store_errors.increment(1);
        Counters::one(&inner.counters.store_errors);
        match pause.map(|p| (p, p.failed(ask, p.now()))) {
            Some((p, Failed::Opened)) => tracing::warn!(limiter = %inner.name,
                error = %failure, failures = p.after, pause = ?p.length,
                "rate limit store fails; not asked during the pause, the failure mode decides"),
            Some((p, Failed::PausedAgain)) => tracing::debug!(limiter = %inner.name,
                error = %failure, pause = ?p.length, "rate limit store still fails; paused again"),
            _ => tracing::debug!(limiter = %inner.name, error = %failure,
                "rate limit store failed"),
        }
        let (decision, source) = self.by_fail_mode(key, &quotas, cost, now)?;
        Ok(self.finish(key, decision, source, quotas))
    }

    /// The decision of the failure mode, without the store.
    fn by_fail_mode(
        &self,
        key: &str,
        quotas: &[Quota],
        cost: u32,
        now: UnixMs,
    ) -> Result<(Decision, Source)> {
        let inner = &*self.inner;
        Ok(match (inner.fail_mode, &inner.fallback) {
            (FailMode::Open, Some(local)) => {
                (local.check(key, quotas, cost, now)?, Source::Fallback)
            }
            (FailMode::Open, None) => (Decision::unlimited(), Source::FailedOpen),
            (FailMode::Closed, _) => {
                let mut d = Decision::unlimited();
                d.allowed = false;
                d.limit = quotas.first().map_or(0, Quota::limit);
                d.remaining = 0;
                d.retry_after = Some(Duration::from_secs(1));
                d.reset_after = Duration::from_secs(1);
                (d, Source::FailedClosed)
            }
        })
    }

    fn finish(
        &self,
        key: &str,
        decision: Decision,
        source: Source,
        quotas: Arc<[Quota]>,
    ) -> Verdict {
        let m = &self.inner.metrics;
        let c = &self.inner.counters;
        let allow = decision.allowed || self.inner.shadow;
        if decision.allowed {
            m.allowed.increment(1);
            Counters::one(&c.allowed);
        } else {
            if self.inner.shadow {
                m.shadow_denied.increment(1);
                Counters::one(&c.shadow_denied);
            } else {
                m.denied.increment(1);
                Counters::one(&c.denied);
            }
            c.sample_denial(key);
        }
        Verdict {
            allow,
            decision,
            source,
            quotas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn builder() -> RateLimiterBuilder<LocalLimiter> {
        RateLimiter::builder(Arc::new(LocalLimiter::new())).quota(Quota::per_minute(1))
    }

    #[test]
    fn a_zero_pause_after_is_a_config_error_naming_it() {
        let e = builder().pause_after(0).build().expect_err("zero");
        match &e {
            Error::Config { setting, .. } => assert_eq!(setting, "rate limit pause_after"),
            other => panic!("expected a config error, got {other}"),
        }
        assert!(e.to_string().contains("pause_after is zero"), "{e}");
        // Turning the pause off does not make a zero valid; one failure is.
        assert!(builder()
            .store_pause(Duration::ZERO)
            .pause_after(0)
            .build()
            .is_err());
        let one = builder().pause_after(1).build().expect("one failure");
        assert!(one.inner.pause.as_ref().is_some_and(|p| p.after == 1));
        let off = builder()
            .store_pause(Duration::ZERO)
            .build()
            .expect("no pause");
        assert!(off.inner.pause.is_none(), "a zero pause turns it off");
        let default = builder().build().expect("defaults");
        let p = default.inner.pause.as_ref().expect("on by default");
        assert_eq!((p.after, p.length), (2, Duration::from_secs(1)));
    }

    /// The pause on explicit monotonic times: opened by consecutive failures only, one probe
    /// when it ends, closed by the probe's answer or started again by its failure.
    #[test]
    fn the_pause_opens_probes_once_and_closes() {
        let p = Pause::new(2, Duration::from_secs(1));
        assert_eq!(p.ask_at(|| 0), Ask::Store);
        assert_eq!(p.failed(Ask::Store, 0), Failed::Counted);
        assert!(!p.answered(Ask::Store), "an answer ends no pause");
        assert_eq!(
            p.failed(Ask::Store, 0),
            Failed::Counted,
            "an answer in between resets the count"
        );
        assert_eq!(p.failed(Ask::Store, 10), Failed::Opened);
        // A call that was in flight fails too: counted, no second opening (logged once).
        assert_eq!(p.failed(Ask::Store, 20), Failed::Counted);
        assert_eq!(p.ask_at(|| 10), Ask::Paused);
        assert_eq!(
            p.ask_at(|| SECOND + 9),
            Ask::Paused,
            "the pause runs from the failure"
        );
        assert_eq!(
            p.ask_at(|| SECOND + 10),
            Ask::Probe,
            "the first call once it ended"
        );
        for _ in 0..3 {
            assert_eq!(p.ask_at(|| SECOND + 11), Ask::Paused, "only one probe");
        }
        assert_eq!(p.failed(Ask::Probe, 2 * SECOND), Failed::PausedAgain);
        assert_eq!(p.ask_at(|| 3 * SECOND - 1), Ask::Paused);
        assert_eq!(p.ask_at(|| 3 * SECOND), Ask::Probe);
        assert!(p.answered(Ask::Probe), "the probe's answer ends the pause");
        assert_eq!(p.ask_at(|| 3 * SECOND), Ask::Store);
        assert_eq!(
            p.failed(Ask::Store, 3 * SECOND),
            Failed::Counted,
            "the count starts again"
        );
        assert_eq!(p.failed(Ask::Store, 3 * SECOND), Failed::Opened);
    }

    #[test]
    fn an_abandoned_probe_hands_on_to_the_next_call() {
        let p = Pause::new(1, Duration::from_secs(1));
        assert_eq!(p.failed(Ask::Store, 0), Failed::Opened);
        assert_eq!(p.ask_at(|| SECOND), Ask::Probe);
        drop(ProbeGuard { pause: Some(&p) });
        assert_eq!(
            p.ask_at(|| SECOND),
            Ask::Probe,
            "a dropped probe does not stick"
        );
        let mut guard = ProbeGuard { pause: Some(&p) };
        guard.disarm();
        drop(guard);
        assert_eq!(
            p.ask_at(|| SECOND),
            Ask::Paused,
            "a reported probe is not handed on"
        );
    }

    #[test]
    fn pause_ends_stay_between_closed_and_probing() {
        let p = Pause::new(1, Duration::MAX);
        assert_eq!(p.end(5), PROBING - 1);
        let q = Pause::new(1, Duration::from_nanos(1));
        assert_eq!(q.end(0), 1);
        assert_eq!(q.end(u64::MAX), PROBING - 1);
    }
}
