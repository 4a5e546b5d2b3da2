//! Self-fencing against a real `redis-server` the testkit starts (never the shared one on
//! 6379): Redis is paused (SIGSTOP) for twice the lease while two workers run long jobs.
//! Each worker must give up the jobs it holds, firing their tokens, before their leases can
//! run out, with Redis answering nothing; after Redis resumes every job succeeds, and no job
//! ever ran in two places at once.
//!
//! Every wait is bounded by a generous timeout; no assertion depends on how fast the machine
//! is. The tasks record each execution on the test's monotonic clock (both workers run in
//! this process), so overlaps are measured, not guessed.

use celeriac::{
    App, JobId, JobState, ResultStore, Task, TaskContext, TaskError, TaskOptions, WorkerConfig,
    WorkerStats,
};
use celeriac_testkit::RedisServer;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QUEUE: &str = "fencing";
const LEASE: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long Redis stays paused: well past every lease held when it stops.
const PAUSE: Duration = Duration::from_secs(6);
/// Longer than the test: a first attempt of [`Vigil`] never ends by itself.
const FOREVER: Duration = Duration::from_secs(600);
/// Generous bound for anything that should happen.
const PATIENCE: Duration = Duration::from_secs(60);

/// One run of a task, as the task saw it.
#[derive(Debug, Clone)]
struct Execution {
    id: JobId,
    attempt: u32,
    started: Instant,
    /// When the run stopped: it returned, or its future was dropped.
    ended: Option<Instant>,
    /// The run saw its cancellation token fire.
    saw_cancel: bool,
    /// The run returned its result.
    completed: bool,
}

static EXECUTIONS: Mutex<Vec<Execution>> = Mutex::new(Vec::new());

fn executions() -> Vec<Execution> {
    EXECUTIONS.lock().expect("executions").clone()
}

/// Records a run's start, and its end when dropped (a dropped future ends the run too).
struct Run(usize);

impl Run {
    fn start(ctx: &TaskContext) -> Self {
        let mut all = EXECUTIONS.lock().expect("executions");
        all.push(Execution {
            id: ctx.job_id(),
            attempt: ctx.attempt(),
            started: Instant::now(),
            ended: None,
            saw_cancel: false,
            completed: false,
        });
        Run(all.len() - 1)
    }

    fn update(&self, f: impl FnOnce(&mut Execution)) {
        if let Some(e) = EXECUTIONS.lock().expect("executions").get_mut(self.0) {
            f(e);
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let now = Instant::now();
        self.update(|e| e.ended = Some(now));
    }
}

fn options() -> TaskOptions {
    TaskOptions {
        queue: QUEUE.into(),
        // An outage may cost an attempt; never let that dead-letter a job here.
        max_attempts: 10,
        ..TaskOptions::default()
    }
}

/// Its first attempt runs until cancelled, checking its token every 20 ms; later attempts
/// take 100 ms.
struct Vigil;

impl Task for Vigil {
    const NAME: &'static str = "fencing.vigil";
    type Args = u32;
    type Output = u32;

    fn options() -> TaskOptions {
        options()
    }

    async fn run(ctx: TaskContext, n: u32) -> Result<u32, TaskError> {
        let run = Run::start(&ctx);
        let length = if ctx.attempt() == 1 {
            FOREVER
        } else {
            Duration::from_millis(100)
        };
        let until = Instant::now() + length;
        while Instant::now() < until {
            if ctx.is_cancelled() {
                run.update(|e| e.saw_cancel = true);
                return Err(TaskError::msg("stopped: cancelled"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run.update(|e| e.completed = true);
        Ok(n)
    }
}

/// Takes 50 ms.
struct Brief;

impl Task for Brief {
    const NAME: &'static str = "fencing.brief";
    type Args = u32;
    type Output = u32;

    fn options() -> TaskOptions {
        options()
    }

    async fn run(ctx: TaskContext, n: u32) -> Result<u32, TaskError> {
        let run = Run::start(&ctx);
        tokio::time::sleep(Duration::from_millis(50)).await;
        run.update(|e| e.completed = true);
        Ok(n)
    }
}

/// An app of its own (its own connections) on `url`.
async fn app(url: &str) -> App {
    App::builder()
        .url(url)
        .task::<Vigil>()
        .task::<Brief>()
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

fn sum(workers: &[Arc<WorkerStats>], counter: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
    workers
        .iter()
        .map(|s| counter(s).load(Ordering::Relaxed))
        .sum()
}

fn counters(workers: &[Arc<WorkerStats>]) -> String {
    format!(
        "started={} succeeded={} retried={} failed={} dead={} stale={} fenced={}",
        sum(workers, |s| &s.started),
        sum(workers, |s| &s.succeeded),
        sum(workers, |s| &s.retried),
        sum(workers, |s| &s.failed),
        sum(workers, |s| &s.dead),
        sum(workers, |s| &s.stale),
        sum(workers, |s| &s.fenced),
    )
}

/// Waits until `cond` holds, failing with `what` after `within`.
async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The jobs among `ids` not yet Succeeded in the store (an error counts as not yet).
async fn unfinished(app: &App, ids: &[JobId]) -> Vec<JobId> {
    let mut left = Vec::new();
    for id in ids {
        match app.backend().get(*id).await {
            Ok(Some(info)) if info.state == JobState::Succeeded => {}
            _ => left.push(*id),
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_makes_workers_give_up_their_jobs_before_the_leases_run_out() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    let apps = [app(&url).await, app(&url).await];
    let config = WorkerConfig {
        queues: vec![QUEUE.into()],
        concurrency: 3,
        prefetch: 3,
        lease: LEASE,
        heartbeat: HEARTBEAT,
        poll_interval: Duration::from_millis(50),
        grace_period: Duration::from_secs(5),
        ..WorkerConfig::default()
    };
    let mut stats = Vec::new();
    let mut running = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let worker = app.worker().config(WorkerConfig {
            worker_id: format!("fencing-{i}"),
            ..config.clone()
        });
        stats.push(worker.stats());
        running.push((worker.shutdown_handle(), tokio::spawn(worker.run())));
    }

    // Four jobs that run until cancelled, and short ones through the two slots left.
    let client = apps[0].client();
    let vigils: Vec<JobId> = client
        .enqueue_many::<Vigil>(0..4)
        .await
        .expect("enqueue vigils")
        .iter()
        .map(|h| h.id())
        .collect();
    let briefs: Vec<JobId> = client
        .enqueue_many::<Brief>(100..106)
        .await
        .expect("enqueue briefs")
        .iter()
        .map(|h| h.id())
        .collect();
    let all_vigils: BTreeSet<JobId> = vigils.iter().copied().collect();
    eventually(
        "every vigil runs and every brief is acknowledged",
        PATIENCE,
        || {
            let running: BTreeSet<JobId> = executions()
                .iter()
                .filter(|e| e.ended.is_none())
                .map(|e| e.id)
                .collect();
            running == all_vigils && sum(&stats, |s| &s.succeeded) == briefs.len() as u64
        },
    )
    .await;
    assert!(unfinished(&apps[0], &briefs).await.is_empty());

    // What runs when Redis stops: exactly the vigils (precondition).
    server.pause();
    let paused_at = Instant::now();
    let held: Vec<Execution> = executions()
        .into_iter()
        .filter(|e| e.ended.is_none())
        .collect();
    let held_ids: BTreeSet<JobId> = held.iter().map(|e| e.id).collect();
    assert_eq!(held_ids, all_vigils, "in flight at the pause: {held:?}");
    assert!(!held.is_empty());
    assert_eq!(
        sum(&stats, |s| &s.fenced),
        0,
        "nothing given up while Redis answered"
    );

    // With Redis answering nothing, every held job must be given up: its token fires and
    // its run stops, all before Redis resumes (the pause is twice the lease).
    let stopped = |e: &Execution| held.iter().any(|h| h.started == e.started && h.id == e.id);
    eventually(
        "every job held at the pause saw its token fire and stopped",
        PAUSE,
        || {
            executions()
                .iter()
                .filter(|e| stopped(e))
                .all(|e| e.ended.is_some() && e.saw_cancel)
        },
    )
    .await;
    assert_eq!(
        sum(&stats, |s| &s.fenced),
        held.len() as u64,
        "the workers count every job they gave up; {}",
        counters(&stats)
    );
    let given_up_at = Instant::now();
    for e in executions().iter().filter(|e| stopped(e)) {
        if let Some(ended) = e.ended {
            eprintln!("{} stopped {:?} into the pause", e.id, ended - paused_at);
        }
    }
    tokio::time::sleep((paused_at + PAUSE).saturating_duration_since(given_up_at)).await;
    server.resume();

    // Claiming resumes: new work runs, and every job ends succeeded.
    let mut later = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while later.is_empty() {
        match client.enqueue_many::<Brief>(200..204).await {
            Ok(handles) => later = handles.iter().map(|h| h.id()).collect(),
            Err(e) => {
                assert!(Instant::now() < deadline, "enqueue after the pause: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let ids: Vec<JobId> = vigils
        .iter()
        .chain(&briefs)
        .chain(&later)
        .copied()
        .collect();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = unfinished(&apps[0], &ids).await;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs did not succeed, e.g. {:?}; {}",
            left.len(),
            apps[0].backend().get(left[0]).await,
            counters(&stats)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every success recorded exactly once; each given-up attempt recorded once (as a retry,
    // or refused as stale when the lease had already been reaped).
    eventually("every acknowledgement is counted", PATIENCE, || {
        sum(&stats, |s| &s.succeeded) >= ids.len() as u64
            && sum(&stats, |s| &s.retried) + sum(&stats, |s| &s.stale) >= held.len() as u64
    })
    .await;
    assert_eq!(
        sum(&stats, |s| &s.succeeded),
        ids.len() as u64,
        "{}",
        counters(&stats)
    );
    assert_eq!(
        sum(&stats, |s| &s.retried) + sum(&stats, |s| &s.stale),
        held.len() as u64,
        "{}",
        counters(&stats)
    );
    assert_eq!(sum(&stats, |s| &s.failed) + sum(&stats, |s| &s.dead), 0);

    let mut runs: BTreeMap<JobId, Vec<Execution>> = BTreeMap::new();
    for e in executions() {
        runs.entry(e.id).or_default().push(e);
    }
    for (n, id) in ids.iter().enumerate() {
        let info = apps[0]
            .backend()
            .get(*id)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("job {id} was lost"));
        assert_eq!(info.state, JobState::Succeeded, "{info:?}");
        let mut mine = runs.remove(id).unwrap_or_default();
        mine.sort_by_key(|e| e.started);
        // One completed run, the last; the store counted every run.
        assert_eq!(
            mine.iter().filter(|e| e.completed).count(),
            1,
            "job {id}: {mine:?}"
        );
        assert!(
            mine.last().is_some_and(|e| e.completed),
            "job {id}: {mine:?}"
        );
        assert!(
            info.job.attempts as usize >= mine.len(),
            "job {id}: {} attempts for {} runs",
            info.job.attempts,
            mine.len()
        );
        // Only a job given up at the pause ran twice, and never alongside itself.
        if mine.len() > 1 {
            assert!(held_ids.contains(id), "job {id} ran again: {mine:?}");
            assert_eq!(mine.len(), 2, "job {id}: {mine:?}");
        }
        for pair in mine.windows(2) {
            let first_end = pair[0].ended.expect("an earlier run ended");
            assert!(
                first_end <= pair[1].started,
                "job {id} ran in two places at once: {pair:?}"
            );
            assert!(pair[1].started >= paused_at + PAUSE, "{pair:?}");
            assert!(pair[0].attempt < pair[1].attempt, "{pair:?}");
        }
        let expected = if n < vigils.len() {
            n as u32
        } else if n < vigils.len() + briefs.len() {
            100 + (n - vigils.len()) as u32
        } else {
            200 + (n - vigils.len() - briefs.len()) as u32
        };
        assert_eq!(info.result_as::<u32>().expect("decodes"), Some(expected));
    }
    for id in &held_ids {
        assert!(
            ids.contains(id),
            "every job held at the pause is among the checked ones"
        );
    }
    eprintln!("self-fencing: {}", counters(&stats));

    for (shutdown, run) in running {
        assert!(!run.is_finished(), "a worker stopped during the outage");
        shutdown.graceful();
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the worker stops")
            .expect("worker task")
            .expect("worker ran");
    }
}
