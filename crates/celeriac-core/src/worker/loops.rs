//! The worker's loops: starting the ones that run beside the claim loop (acknowledgements,
//! heartbeats, fencing, cancel checks, reaping), the claim loop itself, which leases jobs into
//! free slots and spawns their runs, and the drain on shutdown.

use super::ack::{ack_loop, Done};
use super::config::{claim_order, WorkerConfig};
use super::lease::{fence_loop, for_each_running, heartbeat_loop, held_leases, LeaseTiming};
use super::run_one::{FlowOver, FlowSink, ProgressOver, RunOne};
use super::{Inflight, Running, Worker};
use crate::backend::{
    Broker, ClaimRequest, Claimed, Event, EventLog, LeaseRef, ProcessKind, QueueWeight,
};
use crate::clock::{Clock, UnixMs};
use crate::task::ProgressSink;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

/// How often an idle worker with limited tasks looks again at most.
const LIMITED_POLL: Duration = Duration::from_secs(1);

/// How often an idle worker looks for work on a store that wakes it by itself.
const BLOCKING_POLL: Duration = Duration::from_secs(5);

/// How often a worker asks the store whether any of its running jobs were cancelled.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// A job's place in the worker: a running slot, freed when its task ends, and a place in the
/// bounded backlog of attempts waiting for their acknowledgement, freed when it lands.
pub(super) struct Slot {
    pub(super) run: OwnedSemaphorePermit,
    pub(super) unacked: OwnedSemaphorePermit,
}

/// What the claim loop shares with the runs it spawns and the loops beside it.
struct Crew {
    inflight: Inflight,
    tracker: TaskTracker,
    /// Fired when the grace period is over: running jobs are handed back.
    abandon: CancellationToken,
    progress: Arc<dyn ProgressSink>,
    flow: Arc<dyn FlowSink>,
    done: mpsc::UnboundedSender<Done>,
    release: mpsc::UnboundedSender<LeaseRef>,
    /// Whether held leases can be extended: no claims while they cannot.
    extending: watch::Receiver<bool>,
    /// Wakes the fence check when jobs are claimed.
    held: Arc<Notify>,
}

/// The loops beside the claim loop, stopped and awaited on shutdown.
struct Loops {
    stop: CancellationToken,
    /// Leases of runs handed back on shutdown, released in one call at the end.
    released: mpsc::UnboundedReceiver<LeaseRef>,
    acker: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    fencer: JoinHandle<()>,
    stopper: JoinHandle<()>,
    reaper: JoinHandle<()>,
    presence: JoinHandle<()>,
    /// Stopped after the acknowledgements, so it writes their tally too.
    history_stop: CancellationToken,
    history: JoinHandle<()>,
}

impl<B: super::WorkerStore> Worker<B> {
    /// Runs with resolved settings: starts the loops, claims until shut down, then drains.
    pub(super) async fn run_loops(&self, config: Arc<WorkerConfig>) {
        let timing = LeaseTiming::new(&config);
        let (mut crew, loops) = self.start_loops(&config, timing);
        self.claim_loop(&config, timing, &mut crew).await;
        self.drain(&config, crew, loops).await;
    }

    /// Starts the loops that run beside the claim loop.
    fn start_loops(&self, config: &Arc<WorkerConfig>, timing: LeaseTiming) -> (Crew, Loops) {
        let inflight: Inflight = Arc::new(Mutex::new(HashMap::new()));
        let (done, done_rx) = mpsc::unbounded_channel::<Done>();
        let (release, released) = mpsc::unbounded_channel::<LeaseRef>();
        let stop = CancellationToken::new();
        let flow: Arc<dyn FlowSink> = Arc::new(FlowOver(self.backend.clone(), self.bounds));
        let (extending_tx, extending) = watch::channel(true);
        let held = Arc::new(Notify::new());

        let acker = tokio::spawn(ack_loop(
            self.backend.clone(),
            self.clock.clone(),
            done_rx,
            inflight.clone(),
            self.stats.clone(),
            self.history.clone(),
            self.shutdown.now.clone(),
        ));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.backend.clone(),
            self.clock.clone(),
            config.clone(),
            timing,
            inflight.clone(),
            extending_tx,
            stop.clone(),
        ));
        let fencer = tokio::spawn(fence_loop(
            timing,
            inflight.clone(),
            held.clone(),
            self.stats.clone(),
            stop.clone(),
        ));
        let stopper = tokio::spawn(stop_loop(
            self.backend.clone(),
            inflight.clone(),
            stop.clone(),
        ));
        let reaper = tokio::spawn(reap_loop(
            self.backend.clone(),
            self.clock.clone(),
            config.clone(),
            flow.clone(),
            stop.clone(),
        ));
        let presence = tokio::spawn(self.presence(config, inflight.clone(), stop.clone()));
        let history_stop = CancellationToken::new();
        let history = tokio::spawn(self.history.clone().flush_loop(
            self.backend.clone(),
            self.clock.clone(),
            config.history_flush,
            history_stop.clone(),
        ));
        let crew = Crew {
            inflight,
            tracker: TaskTracker::new(),
            abandon: CancellationToken::new(),
            progress: Arc::new(ProgressOver(self.backend.clone())),
            flow,
            done,
            release,
            extending,
            held,
        };
        let loops = Loops {
            stop,
            released,
            acker,
            heartbeat,
            fencer,
            stopper,
            reaper,
            presence,
            history_stop,
            history,
        };
        (crew, loops)
    }

    /// The loop that keeps this worker's registry entry fresh and obeys its commands.
    fn presence(
        &self,
        config: &WorkerConfig,
        inflight: Inflight,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut info =
            crate::process::describe(&config.worker_id, ProcessKind::Worker, &*self.clock);
        info.queues = config
            .queues
            .iter()
            .enumerate()
            .map(|(i, queue)| QueueWeight {
                queue: queue.clone(),
                weight: config.weights.get(i).copied().unwrap_or(0),
            })
            .collect();
        info.concurrency = u32::try_from(config.concurrency).unwrap_or(u32::MAX);
        let (status_of, control) = (self.shutdown.clone(), self.shutdown.clone());
        let slots = metrics::gauge!("celeriac_worker_slots", "worker" => config.worker_id.clone());
        let busy =
            metrics::gauge!("celeriac_worker_busy_slots", "worker" => config.worker_id.clone());
        let status = move |info: &mut crate::backend::ProcessInfo| {
            if let Ok(map) = inflight.lock() {
                info.busy = u32::try_from(map.len()).unwrap_or(u32::MAX);
                slots.set(f64::from(info.concurrency));
                busy.set(f64::from(info.busy));
                info.running = map
                    .keys()
                    .take(crate::backend::MAX_LISTED_JOBS)
                    .copied()
                    .collect();
                info.running.sort();
            }
            info.state =
                crate::backend::ProcessState::of(status_of.is_requested(), status_of.is_quiet());
        };
        let on_control = move |command| match command {
            crate::backend::Control::Quiet => control.quiet(),
            crate::backend::Control::Stop => control.graceful(),
        };
        let presence = crate::process::Presence {
            info,
            every: config.registry_refresh,
            status,
            on_control,
            failing: self.stats.refresh_failing.clone(),
        };
        crate::process::keep_fresh(self.backend.clone(), self.clock.clone(), presence, stop)
    }

    /// Claims jobs into free slots and spawns their runs, until shut down.
    async fn claim_loop(&self, config: &WorkerConfig, timing: LeaseTiming, crew: &mut Crew) {
        let slots = Arc::new(Semaphore::new(config.concurrency));
        // Finished jobs waiting for their acknowledgement: a bounded backlog, so a store that
        // refuses acknowledgements stops the claiming too.
        let unacked = Arc::new(Semaphore::new(config.concurrency * 2));
        let graceful = &self.shutdown.graceful;
        let quiet = &self.shutdown.quiet;
        let limits = self.registry.limits();
        let mut error_backoff = Duration::from_millis(50);
        let mut left = config.max_jobs;
        loop {
            if graceful.is_cancelled() {
                break;
            }
            if left == Some(0) {
                info!(worker = %config.worker_id, max_jobs = config.max_jobs, "worker claimed its most jobs; stopping");
                break;
            }
            if quiet.is_cancelled() {
                self.shutdown.parked.store(true, Ordering::Release);
                info!(worker = %config.worker_id, "worker quiet: claiming nothing new until shut down");
                graceful.cancelled().await;
                break;
            }
            let first = tokio::select! {
                p = acquire_slot(&slots, &unacked) => match p { Some(p) => p, None => break },
                _ = graceful.cancelled() => break,
                _ = quiet.cancelled() => continue,
            };
            // No new leases while the held ones cannot be extended (at once when they can,
            // and also once the heartbeat loop is gone).
            tokio::select! {
                _ = crew.extending.wait_for(|ok| *ok) => {}
                _ = graceful.cancelled() => break,
                _ = quiet.cancelled() => continue,
            }
            let mut permits = vec![first];
            take_free_slots(&slots, &unacked, &mut permits, config.prefetch);
            if let Some(left) = left {
                permits.truncate(usize::try_from(left).unwrap_or(usize::MAX).max(1));
            }
            let epoch = self.backend.work_epoch();
            let now = self.clock.now_ms();
            let req = ClaimRequest {
                queues: claim_order(&config.queues, &config.weights),
                limits: limits.clone(),
                limit: permits.len(),
                lease: config.lease,
                worker: config.worker_id.clone(),
                now,
            };
            let sent = Instant::now();
            let claimed = match self.backend.claim(req).await {
                Ok(c) => {
                    error_backoff = Duration::from_millis(50);
                    c
                }
                Err(e) => {
                    warn!(error = %e, "claim failed; retrying in {:?}", error_backoff);
                    drop(permits);
                    tokio::select! {
                        _ = tokio::time::sleep(error_backoff) => {}
                        _ = graceful.cancelled() => break,
                    }
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(permits);
                let wait = self.idle_wait(config, &limits, now).await;
                tokio::select! {
                    _ = self.backend.wait_for_work(&config.queues, epoch, wait) => {}
                    _ = graceful.cancelled() => break,
                    _ = quiet.cancelled() => {}
                }
                continue;
            }
            if Instant::now() >= sent + timing.window {
                drop(permits);
                self.hand_back_late(claimed, sent).await;
                continue;
            }
            if let Some(n) = left.as_mut() {
                *n = n.saturating_sub(claimed.len() as u64);
            }
            for (job, permit) in claimed.into_iter().zip(permits) {
                self.spawn_run(job, permit, sent, timing, crew);
            }
            crew.held.notify_one();
        }
    }

    /// How long an idle worker waits before looking again.
    async fn idle_wait(
        &self,
        config: &WorkerConfig,
        limits: &BTreeMap<String, crate::backend::TaskLimits>,
        now: UnixMs,
    ) -> Duration {
        // A store that wakes idle workers itself only needs an occasional safety-net look.
        let poll = if self.backend.wakes_across_processes() {
            config.poll_interval.max(BLOCKING_POLL)
        } else {
            config.poll_interval
        };
        let mut wait = match self.backend.next_due(config.queues.clone()).await {
            Ok(Some(due)) if due > now => Duration::from_millis((due - now) as u64).min(poll),
            Ok(Some(_)) => Duration::from_millis(1),
            _ => poll,
        };
        // Jobs a limit holds back are not announced when the limit lets them go: look again as
        // soon as the tightest rate allows, and at least every second.
        if !limits.is_empty() {
            let step = limits
                .values()
                .filter_map(|l| l.rate.map(|r| r.interval_ms()))
                .min()
                .map_or(LIMITED_POLL, |ms| Duration::from_millis(ms as u64));
            wait = wait.min(step.min(LIMITED_POLL));
        }
        wait
    }

    /// Hands back, unrun and their attempt not counted, jobs whose claim was answered so late
    /// that their leases are already due to be given up.
    async fn hand_back_late(&self, claimed: Vec<Claimed>, sent: Instant) {
        let leases: Vec<LeaseRef> = claimed.iter().map(Claimed::lease).collect();
        warn!(
            jobs = leases.len(),
            waited = ?sent.elapsed(),
            "a claim was answered too late to run its jobs within their leases; \
             handing them back"
        );
        if let Err(e) = self.backend.release(leases, self.clock.now_ms()).await {
            warn!(error = %e, "could not hand the leases back; they will expire");
        }
    }

    /// Holds a claimed job's lease in the in-flight map and spawns its run.
    fn spawn_run(
        &self,
        job: Claimed,
        permit: Slot,
        sent: Instant,
        timing: LeaseTiming,
        crew: &Crew,
    ) {
        let cancel = CancellationToken::new();
        let stop = CancellationToken::new();
        let (fence, fenced) = oneshot::channel();
        if let Ok(mut map) = crew.inflight.lock() {
            map.insert(
                job.job.id,
                Running {
                    token: job.token,
                    queue: job.job.queue.as_str().into(),
                    cancel: cancel.clone(),
                    stop: stop.clone(),
                    granted: sent,
                    fence: Some(fence),
                },
            );
        }
        let span = tracing::info_span!(
            "job",
            id = %job.job.id,
            task = %job.job.task,
            queue = %job.job.queue,
            attempt = job.job.attempts
        );
        crate::trace::continue_trace(&span, &job.job.headers);
        let run = RunOne {
            registry: self.registry.clone(),
            clock: self.clock.clone(),
            stats: self.stats.clone(),
            progress: crew.progress.clone(),
            flow: crew.flow.clone(),
            kill: self.shutdown.now.clone(),
            abandon: crew.abandon.clone(),
            done: crew.done.clone(),
            release: crew.release.clone(),
            stop,
            fence_window: timing.window,
            history: self.history.clone(),
            max_result_bytes: self.bounds.max_result_bytes,
        };
        crew.tracker
            .spawn(run.run(job, cancel, fenced, permit).instrument(span));
    }

    /// Shutdown: no more claims. Running jobs get the grace period to finish, then the rest
    /// are handed back; the acknowledgements are flushed and the loops stopped.
    async fn drain(&self, config: &WorkerConfig, crew: Crew, mut loops: Loops) {
        let Crew {
            tracker,
            abandon,
            done,
            release,
            ..
        } = crew;
        tracker.close();
        let running = tracker.len();
        if running > 0 {
            info!(running, grace = ?config.grace_period, "worker stopping; waiting for running jobs");
        }
        tokio::select! {
            _ = tracker.wait() => {}
            _ = tokio::time::sleep(config.grace_period) => {
                warn!("grace period over; handing the remaining jobs back");
                abandon.cancel();
                tracker.wait().await;
            }
            _ = self.shutdown.now.cancelled() => {
                tracker.wait().await;
            }
        }
        loops.stop.cancel();
        drop(done);
        drop(release);
        let mut to_release = Vec::new();
        while let Ok(lease) = loops.released.try_recv() {
            to_release.push(lease);
        }
        // Acks already produced are flushed even on an immediate stop: they are finished work.
        let _ = tokio::time::timeout(Duration::from_secs(10), loops.acker).await;
        loops.history_stop.cancel();
        if !to_release.is_empty() && !self.shutdown.now.is_cancelled() {
            match self.backend.release(to_release, self.clock.now_ms()).await {
                Ok(n) => {
                    self.stats.released.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => warn!(error = %e, "could not hand leases back; they will expire"),
            }
        }
        let _ = loops.heartbeat.await;
        let _ = loops.fencer.await;
        let _ = loops.reaper.await;
        let _ = loops.stopper.await;
        let _ = loops.presence.await;
        let _ = loops.history.await;
    }
}

/// Waits for a free running slot and a place in the acknowledgement backlog.
async fn acquire_slot(slots: &Arc<Semaphore>, unacked: &Arc<Semaphore>) -> Option<Slot> {
    let unacked = unacked.clone().acquire_owned().await.ok()?;
    let run = slots.clone().acquire_owned().await.ok()?;
    Some(Slot { run, unacked })
}

/// Takes free slots without waiting, up to `max` in all.
fn take_free_slots(
    slots: &Arc<Semaphore>,
    unacked: &Arc<Semaphore>,
    into: &mut Vec<Slot>,
    max: usize,
) {
    while into.len() < max {
        let Ok(unacked) = unacked.clone().try_acquire_owned() else {
            break;
        };
        let Ok(run) = slots.clone().try_acquire_owned() else {
            break;
        };
        into.push(Slot { run, unacked });
    }
}

/// Asks the store which running jobs were cancelled, and tells their runs to stop.
async fn stop_loop<B: Broker>(backend: Arc<B>, inflight: Inflight, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CANCEL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let leases = held_leases(&inflight, |r| !r.stop.is_cancelled());
        if leases.is_empty() {
            continue;
        }
        match backend.cancel_requested(leases).await {
            Ok(stopped) => for_each_running(&inflight, &stopped, |r| r.stop.cancel()),
            Err(e) => debug!(error = %e, "checking for cancelled jobs failed"),
        }
    }
}

/// Reaps expired leases and old records; the jobs a reap ended still end their workflow's
/// step, from what the reap reported (nothing is read back).
async fn reap_loop<B: Broker + EventLog>(
    backend: Arc<B>,
    clock: Arc<dyn Clock>,
    config: Arc<WorkerConfig>,
    flow: Arc<dyn FlowSink>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.reap_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match backend.reap(clock.now_ms()).await {
            Ok(r) => {
                metrics::counter!("celeriac_jobs_redelivered_total").increment(r.requeued);
                if r.requeued + r.dead > 0 {
                    info!(
                        requeued = r.requeued,
                        dead = r.dead,
                        "reaped expired leases"
                    );
                }
                let events: Vec<Event> = r
                    .ended
                    .iter()
                    .map(|j| {
                        let state = format!("job.{}", j.state);
                        Event::job_ended(state, clock.now_ms(), j.id, j.error.as_ref(), "cancelled")
                    })
                    .collect();
                if !events.is_empty() {
                    if let Err(e) = backend.append(events).await {
                        debug!(error = %e, "could not record the events of reaped jobs");
                    }
                }
                for job in r.ended.iter().filter(|j| j.flow.is_some()) {
                    let end = crate::workflow::StepEnd::by_store(job);
                    if let Err(e) = flow.end(job.into(), end, clock.now_ms()).await {
                        warn!(error = %e, job = %job.id, "could not record the failure in its workflow");
                    }
                }
            }
            Err(e) => debug!(error = %e, "reaping failed"),
        }
    }
}
