//! The scheduler loop (`celeriac beat`): fires periodic [`Schedule`]s into the queues, written
//! against [`Broker`] + [`Coordinator`] and a [`Clock`].
//!
//! Any number of beat processes may run; a tick is never enqueued twice:
//! - **One leader.** Each process tries to take the lease `beat` (a [`Coordinator`] leader
//!   lease with a fencing token); only the holder fires, and it renews the lease every
//!   [`BeatConfig::renew`], well before its [`BeatConfig::lease`] runs out. When the leader
//!   dies, another process takes over once the lease expires, with a larger token.
//! - **Idempotent firing.** The job for tick `t` of schedule `s` has an id derived from both
//!   ([`crate::schedule::tick_job_id`]) and the unique key `s@t` (a window of
//!   [`BeatConfig::unique_window`]), so a stale leader that fires a tick again adds nothing.
//! - **Fenced progress.** After enqueueing, the leader records the last tick handled with its
//!   token ([`Coordinator::record_tick`]); a refusal means the lease moved on, and the process
//!   stops firing at once.
//!
//! A schedule seen for the first time starts at the moment it is seen (no back-fill). Ticks
//! older than [`BeatConfig::late_after`] when the leader gets to them (no beat was running,
//! a takeover, a stall) go through the schedule's [`crate::schedule::Missed`] policy.
//!
//! Between passes the loop sleeps until the next tick or lease renewal, whichever comes first
//! (never longer than [`BeatConfig::max_sleep`]), and wakes at once on shutdown.
//!
//! A running beat keeps its entry in the process registry fresh (id: its holder name). Told to
//! be quiet, it hands the lease over and stops taking it; told to stop, it shuts down.

use crate::backend::{Broker, Control, Coordinator, ProcessKind, ProcessRegistry, ScheduleState};
use crate::bounds::Bounds;
use crate::client::JobOptions;
use crate::clock::{duration_ms, Clock, UnixMs};
use crate::error::{Error, Result};
use crate::job::{Job, Unique, UniqueFor};
use crate::schedule::{check_tasks, check_unique_names, tick_key, Schedule};
use crate::task::Registry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The header naming the schedule that fired a job.
pub const SCHEDULE_HEADER: &str = "celeriac-schedule";
/// The header holding the tick (RFC 3339, UTC) a job was fired for.
pub const TICK_HEADER: &str = "celeriac-tick";

/// How a beat runs.
#[derive(Debug, Clone)]
pub struct BeatConfig {
    /// This process's name in the lease and the process registry; empty (the default) means
    /// `host:pid/beat` (see [`crate::process::default_name`]).
    pub holder: String,
    /// The name of the leader lease; beats that share it share the work.
    pub leader: String,
    /// How long the leader's lease lasts without renewal: after the leader dies, another
    /// process takes over within this long.
    pub lease: Duration,
    /// How often the leader renews its lease (and followers try to take it).
    pub renew: Duration,
    /// A tick older than this when the leader gets to it counts as missed.
    pub late_after: Duration,
    /// How long the unique key of a fired tick keeps a duplicate out (besides its id).
    pub unique_window: Duration,
    /// The longest single sleep, so a clock that jumps is noticed within it.
    pub max_sleep: Duration,
    /// How often the beat refreshes its entry in the process registry and looks for commands.
    pub registry_refresh: Duration,
}

impl Default for BeatConfig {
    fn default() -> Self {
        Self {
            holder: String::new(),
            leader: "beat".to_string(),
            lease: Duration::from_secs(30),
            renew: Duration::from_secs(10),
            late_after: Duration::from_secs(60),
            unique_window: Duration::from_secs(3600),
            max_sleep: Duration::from_secs(60),
            registry_refresh: crate::process::DEFAULT_REFRESH,
        }
    }
}

impl BeatConfig {
    /// A lease and a renewal period of a third of it.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self.renew = lease / 3;
        self
    }

    /// Checks the settings, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.leader.is_empty() || self.leader.contains(['{', '}']) {
            return Err(Error::config(
                "beat leader",
                "must be non-empty, without braces",
            ));
        }
        if self.lease < Duration::from_millis(100) {
            return Err(Error::config("beat lease", "must be at least 100ms"));
        }
        if self.renew.is_zero() || self.renew >= self.lease {
            return Err(Error::config(
                "beat renew",
                "must be above zero and shorter than the lease",
            ));
        }
        if self.unique_window.is_zero() {
            return Err(Error::config("beat unique_window", "must be above zero"));
        }
        if self.max_sleep.is_zero() {
            return Err(Error::config("beat max_sleep", "must be above zero"));
        }
        if self.registry_refresh.is_zero() {
            return Err(Error::config("beat registry_refresh", "must be above zero"));
        }
        Ok(())
    }
}

/// What a beat did, readable while it runs.
#[derive(Debug, Default)]
pub struct BeatStats {
    /// Jobs fired (enqueued; a duplicate the store refused counts too).
    pub fired: AtomicU64,
    /// Ticks passed over by a missed-tick policy or while paused.
    pub skipped: AtomicU64,
    /// Times this process became the leader.
    pub acquired: AtomicU64,
    /// Times it lost the lease (expired, taken over, or a tick record refused).
    pub lost: AtomicU64,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    /// Whether this process held the lease after the pass.
    pub leader: bool,
    /// Jobs fired in this pass.
    pub fired: u64,
    /// Ticks passed over in this pass.
    pub skipped: u64,
    /// When the next pass is due (the next tick or lease renewal), by the beat's clock.
    pub next_wake: UnixMs,
}

/// The scheduler over backend `B`.
pub struct Beat<B> {
    backend: Arc<B>,
    schedules: Arc<[Schedule]>,
    registry: Option<Arc<Registry>>,
    clock: Arc<dyn Clock>,
    config: BeatConfig,
    bounds: Bounds,
    shutdown: CancellationToken,
    stats: Arc<BeatStats>,
    token: Option<u64>,
    renew_at: UnixMs,
}

impl<B> std::fmt::Debug for Beat<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beat")
            .field("holder", &self.config.holder)
            .field("schedules", &self.schedules.len())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl<B: Broker + Coordinator + ProcessRegistry> Beat<B> {
    /// A beat for `schedules` with default settings and the store's fleet clock.
    ///
    /// # Errors
    /// Two schedules with one name.
    pub fn new(backend: Arc<B>, schedules: Vec<Schedule>) -> Result<Self> {
        check_unique_names(&schedules)?;
        Ok(Self {
            clock: backend.fleet_clock(),
            backend,
            schedules: schedules.into(),
            registry: None,
            config: BeatConfig {
                holder: crate::process::default_name(ProcessKind::Beat),
                ..BeatConfig::default()
            },
            bounds: Bounds::default(),
            shutdown: CancellationToken::new(),
            stats: Arc::new(BeatStats::default()),
            token: None,
            renew_at: UnixMs::MIN,
        })
    }

    /// Checks every schedule's task against `registry` and uses the tasks' options (queue,
    /// priority, attempts, encoding) as the defaults of the jobs it fires.
    ///
    /// # Errors
    /// A schedule whose task is unknown, naming it and listing the known tasks.
    pub fn registry(mut self, registry: Arc<Registry>) -> Result<Self> {
        check_tasks(&self.schedules, &registry)?;
        self.registry = Some(registry);
        Ok(self)
    }

    /// Uses these settings.
    ///
    /// # Errors
    /// An invalid setting, named.
    pub fn config(mut self, mut config: BeatConfig) -> Result<Self> {
        if config.holder.is_empty() {
            config.holder = std::mem::take(&mut self.config.holder);
        }
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    /// Uses an injected clock (tests, or a [`crate::clock::WarpedClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the jobs it fires against `bounds` (default [`Bounds::default`]); a schedule
    /// whose job is over them stops [`Beat::run`] at its start, naming the schedule.
    ///
    /// # Errors
    /// A bound of zero, named (see [`Bounds::validate`]).
    pub fn bounds(mut self, bounds: Bounds) -> Result<Self> {
        bounds.validate()?;
        self.bounds = bounds;
        Ok(self)
    }

    /// The token that stops [`Beat::run`] when cancelled.
    pub fn shutdown_handle(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The beat's counters.
    pub fn stats(&self) -> Arc<BeatStats> {
        self.stats.clone()
    }

    /// The schedules.
    pub fn schedules(&self) -> &[Schedule] {
        &self.schedules
    }

    /// Whether this process held the lease after its last pass.
    pub fn is_leader(&self) -> bool {
        self.token.is_some()
    }

    fn lost(&mut self, why: &str) {
        if self.token.take().is_some() {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("celeriac_beat_leases_lost_total").increment(1);
            warn!(holder = %self.config.holder, "beat lost the leader lease: {why}");
        }
    }

    /// One pass: take or renew the lease, and if this process leads, fire what is due.
    ///
    /// # Errors
    /// A backend call failed; nothing fired in this pass is lost (the next pass fires the same
    /// ticks again, and the store keeps them from being enqueued twice).
    pub async fn step(&mut self) -> Result<StepReport> {
        let now = self.clock.now_ms();
        let mut report = StepReport {
            leader: false,
            fired: 0,
            skipped: 0,
            next_wake: now.saturating_add(duration_ms(self.config.renew)),
        };
        if self.token.is_none() || now >= self.renew_at {
            let got = self
                .backend
                .acquire_leader(
                    &self.config.leader,
                    &self.config.holder,
                    self.config.lease,
                    now,
                )
                .await?;
            self.renew_at = now.saturating_add(duration_ms(self.config.renew));
            match got {
                Some(token) => {
                    if self.token != Some(token) {
                        self.stats.acquired.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("celeriac_beat_leases_acquired_total").increment(1);
                        info!(holder = %self.config.holder, token, "beat is the leader");
                    }
                    self.token = Some(token);
                }
                None => {
                    self.lost("another process holds it");
                    return Ok(report);
                }
            }
        }
        let Some(token) = self.token else {
            return Ok(report);
        };
        report.leader = true;
        report.next_wake = self.renew_at;

        let states: HashMap<String, ScheduleState> = self
            .backend
            .schedule_states()
            .await?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let schedules = self.schedules.clone();
        for s in schedules.iter() {
            let state = states.get(s.name());
            let paused = s.paused() || state.is_some_and(|st| st.paused);
            let cursor = match state.and_then(|st| st.last_tick) {
                Some(c) => c,
                None => {
                    // First sight: start from now (a tick exactly now still fires).
                    let start = now.saturating_sub(1);
                    if !self.record(token, s.name(), start, now).await? {
                        return Ok(StepReport {
                            leader: false,
                            ..report
                        });
                    }
                    debug!(schedule = s.name(), "schedule registered");
                    start
                }
            };
            if paused {
                let passed = s.ticks_between(cursor, now, 10_000);
                if let Some(&last) = passed.last() {
                    if !self.record(token, s.name(), last, now).await? {
                        return Ok(StepReport {
                            leader: false,
                            ..report
                        });
                    }
                    self.count_skipped(s, passed.len() as u64, &mut report);
                }
                continue;
            }
            let due = s.due(cursor, now, self.config.late_after);
            if !due.fire.is_empty() {
                let mut jobs = due
                    .fire
                    .iter()
                    .map(|&tick| self.job_for(s, tick, now))
                    .collect::<Result<Vec<_>>>()?;
                self.bounds
                    .admit(&mut jobs)
                    .map_err(|e| in_schedule(s, e))?;
                self.backend.enqueue(jobs, now).await?;
            }
            if let Some(through) = due.through {
                if !self.record(token, s.name(), through, now).await? {
                    return Ok(StepReport {
                        leader: false,
                        ..report
                    });
                }
            }
            if !due.fire.is_empty() {
                let n = due.fire.len() as u64;
                report.fired += n;
                self.stats.fired.fetch_add(n, Ordering::Relaxed);
                metrics::counter!("celeriac_beat_fired_total", "schedule" => s.name().to_string())
                    .increment(n);
                info!(schedule = s.name(), ticks = ?due.fire, "fired");
            }
            self.count_skipped(s, due.skipped, &mut report);
            if let Some(next) = s.next_after(now) {
                report.next_wake = report.next_wake.min(next);
            }
        }
        Ok(report)
    }

    fn count_skipped(&self, s: &Schedule, n: u64, report: &mut StepReport) {
        if n == 0 {
            return;
        }
        report.skipped += n;
        self.stats.skipped.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("celeriac_beat_skipped_total", "schedule" => s.name().to_string())
            .increment(n);
        info!(
            schedule = s.name(),
            skipped = n,
            policy = %s.missed(),
            "missed ticks passed over"
        );
    }

    /// Records a tick; on refusal the lease is gone and this process stops firing.
    async fn record(
        &mut self,
        token: u64,
        schedule: &str,
        tick: UnixMs,
        now: UnixMs,
    ) -> Result<bool> {
        let ok = self
            .backend
            .record_tick(&self.config.leader, token, schedule, tick, now)
            .await?;
        if !ok {
            self.lost("a tick record was refused");
        }
        Ok(ok)
    }

    /// The job that tick `tick` of `s` enqueues.
    pub fn job_for(&self, s: &Schedule, tick: UnixMs, now: UnixMs) -> Result<Job> {
        tick_job(
            self.registry.as_deref(),
            s,
            tick,
            now,
            self.config.unique_window,
        )
    }

    /// Runs passes until shut down, then gives the lease up.
    ///
    /// # Errors
    /// Only for invalid configuration; backend errors while running are logged and retried.
    pub async fn run(mut self) -> Result<()> {
        self.config.validate()?;
        // A schedule whose jobs the bounds refuse would fail at every tick: refused now.
        let now = self.clock.now_ms();
        for s in self.schedules.iter() {
            let job = self.job_for(s, now, now)?;
            self.bounds.check(&job).map_err(|e| in_schedule(s, e))?;
        }
        info!(
            holder = %self.config.holder,
            schedules = self.schedules.len(),
            "beat started"
        );
        let quiet = CancellationToken::new();
        let leading = Arc::new(AtomicBool::new(false));
        let presence_stop = CancellationToken::new();
        let presence = tokio::spawn(self.presence(&quiet, &leading, presence_stop.clone()));
        let mut backoff = Duration::from_millis(100);
        while !self.shutdown.is_cancelled() {
            if quiet.is_cancelled() {
                self.release("quiet").await;
                leading.store(false, Ordering::Relaxed);
                info!(holder = %self.config.holder, "beat quiet: not leading until shut down");
                self.shutdown.cancelled().await;
                break;
            }
            let step = self.step().await;
            leading.store(self.token.is_some(), Ordering::Relaxed);
            let wait = match step {
                Ok(report) => {
                    backoff = Duration::from_millis(100);
                    let left = report.next_wake.saturating_sub(self.clock.now_ms());
                    // One millisecond past the due time, so the next pass finds it due.
                    Duration::from_millis(u64::try_from(left.max(0)).unwrap_or(0) + 1)
                }
                Err(e) => {
                    warn!(error = %e, "beat pass failed; retrying in {:?}", backoff);
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.config.renew);
                    wait
                }
            };
            let real = self.clock.real_duration(wait).min(self.config.max_sleep);
            tokio::select! {
                _ = tokio::time::sleep(real) => {}
                _ = self.shutdown.cancelled() => break,
                _ = quiet.cancelled() => {}
            }
        }
        self.release("stopped").await;
        presence_stop.cancel();
        let _ = presence.await;
        Ok(())
    }

    /// Gives the lease up, if held.
    async fn release(&mut self, why: &str) {
        if let Some(token) = self.token.take() {
            match self
                .backend
                .release_leader(&self.config.leader, token)
                .await
            {
                Ok(_) => info!(holder = %self.config.holder, "beat {why}; lease released"),
                Err(e) => {
                    warn!(error = %e, "beat {why}; the lease could not be released and will expire")
                }
            }
        }
    }

    /// The loop that keeps this beat's registry entry fresh and obeys its commands.
    fn presence(
        &self,
        quiet: &CancellationToken,
        leading: &Arc<AtomicBool>,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let info = crate::process::describe(&self.config.holder, ProcessKind::Beat, &*self.clock);
        let (quiet_now, quiet) = (quiet.clone(), quiet.clone());
        let (shutdown_now, shutdown) = (self.shutdown.clone(), self.shutdown.clone());
        let leading = leading.clone();
        let status = move |info: &mut crate::backend::ProcessInfo| {
            info.leader = leading.load(Ordering::Relaxed);
            info.state = crate::backend::ProcessState::of(
                shutdown_now.is_cancelled(),
                quiet_now.is_cancelled(),
            );
        };
        let on_control = move |command| match command {
            Control::Quiet => quiet.cancel(),
            Control::Stop => shutdown.cancel(),
        };
        let presence = crate::process::Presence {
            info,
            every: self.config.registry_refresh,
            status,
            on_control,
            failing: Arc::default(),
        };
        crate::process::keep_fresh(self.backend.clone(), self.clock.clone(), presence, stop)
    }
}

/// The job that tick `tick` of schedule `s` enqueues: the task's options from `registry`
/// (when it knows the task), the schedule's queue, priority and limits, the headers naming
/// the schedule and the tick, an id and a unique key derived from the tick (held for
/// `unique_window`), so a tick enqueued twice is one job. What a beat fires, and what "run
/// now" fires for a tick at `now`.
///
/// # Errors
/// When the schedule's arguments or options do not make a job (the error names the
/// schedule).
pub fn tick_job(
    registry: Option<&Registry>,
    s: &Schedule,
    tick: UnixMs,
    now: UnixMs,
    unique_window: Duration,
) -> Result<Job> {
    let defaults = registry
        .and_then(|r| r.get(s.task()))
        .map(|d| d.options().clone())
        .unwrap_or_default();
    let key = tick_key(s.name(), tick);
    let mut headers = BTreeMap::new();
    headers.insert(SCHEDULE_HEADER.to_string(), s.name().to_string());
    headers.insert(
        TICK_HEADER.to_string(),
        key.rsplit_once('@')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default(),
    );
    let opts = JobOptions {
        id: Some(s.tick_job_id(tick)),
        queue: s.queue().map(str::to_string),
        priority: s.priority(),
        max_attempts: s.max_attempts(),
        expires_in: s.expires_in(),
        headers,
        unique: Some(Unique {
            key,
            lifetime: UniqueFor::Window(unique_window),
        }),
        ..JobOptions::default()
    };
    opts.build(s.task(), &defaults, s.args(), now)
        .map_err(|e| in_schedule(s, e))
}

/// A configuration error of the job of schedule `s`, naming the schedule.
fn in_schedule(s: &Schedule, e: Error) -> Error {
    match e {
        Error::Config { setting, message } => {
            Error::config(format!("schedule \"{}\": {setting}", s.name()), message)
        }
        other => other,
    }
}
