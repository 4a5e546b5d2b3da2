//! Redis-only robustness, against real `redis-server` processes the testkit starts (never the
//! shared Redis on 6379): authentication, ACL users, TLS, the eviction-policy guard, Redis
//! down at start, a restart mid-run with AOF, a Sentinel failover and a Cluster with queues on
//! different nodes while a worker runs, and idle workers woken across connections.
//!
//! Every wait is bounded by a generous timeout; no assertion depends on how fast a machine is.

mod common;

use celeriac::{
    App, Enqueue, JobId, JobState, QueueAdmin, ResultStore, Task, TaskContext, TaskError,
    TaskOptions, WorkerConfig, WorkerStats,
};
use celeriac_redis::RedisBackend;
use celeriac_testkit::{RedisCluster, RedisSentinel, RedisServer};
use common::{connect_error, counters, round_trip_with, wait_for_acks, wait_until_succeeded};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The queue of [`Nap`].
const QUEUE: &str = "safety";

/// Sleeps about 5 ms and returns its argument. Outages may cost an attempt;
/// never let that dead-letter a job in these tests.
#[celeriac::task(name = "safety.nap", queue = "safety", retries = 9)]
async fn nap(n: u32) -> u32 {
    tokio::time::sleep(Duration::from_millis(5)).await;
    n
}
use nap::Task as Nap;

/// Where the Sentinel failover test is when a [`Doze`] run starts: 0 before the failover,
/// 1 from just before it until the store has been read after it, 2 after that.
static PHASE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
/// Job argument -> the [`PHASE`] at the start of each of its runs.
static DOZE_RUNS: std::sync::Mutex<Option<std::collections::HashMap<u32, Vec<u8>>>> =
    std::sync::Mutex::new(None);

/// Like [`Nap`], 25 ms long: a run that outlasts a failover. Records each run's start.
struct Doze;

impl Task for Doze {
    const NAME: &'static str = "safety.doze";
    type Args = u32;
    type Output = u32;

    fn options() -> TaskOptions {
        Nap::options()
    }

    async fn run(_ctx: TaskContext, n: u32) -> Result<u32, TaskError> {
        let phase = PHASE.load(Ordering::SeqCst);
        if let Ok(mut runs) = DOZE_RUNS.lock() {
            runs.get_or_insert_with(Default::default)
                .entry(n)
                .or_default()
                .push(phase);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        Ok(n)
    }
}

/// The jobs of `ids` in state Succeeded, all read at once.
async fn succeeded(app: &App, ids: &[JobId]) -> std::collections::HashSet<JobId> {
    let mut reads = tokio::task::JoinSet::new();
    for id in ids {
        let (backend, id) = (app.backend().clone(), *id);
        reads.spawn(async move { (id, backend.get(id).await) });
    }
    let mut done = std::collections::HashSet::new();
    while let Some(read) = reads.join_next().await {
        if let (id, Ok(Some(info))) = read.expect("read task") {
            if info.state == JobState::Succeeded {
                done.insert(id);
            }
        }
    }
    done
}

fn worker_config(queues: &[&str], lease: Duration, heartbeat: Duration) -> WorkerConfig {
    WorkerConfig {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        concurrency: 8,
        prefetch: 8,
        lease,
        heartbeat,
        poll_interval: Duration::from_millis(50),
        grace_period: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

async fn app(url: &str) -> App {
    App::builder()
        .url(url)
        .task::<Nap>()
        .task::<Doze>()
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// NOAUTH, WRONGPASS, "authentication failed"...
fn mentions_auth(msg: &str) -> bool {
    let m = msg.to_lowercase();
    m.contains("auth") || m.contains("wrongpass")
}

/// Enqueues one job on `url`, runs a worker until it finishes, and checks it succeeded with
/// its result.
async fn round_trip(url: &str) {
    let config = worker_config(&[QUEUE], Duration::from_secs(10), Duration::from_secs(2));
    round_trip_with::<Nap>(&app(url).await, config).await;
}

async fn enqueue_naps(app: &App, n: u32) -> Vec<JobId> {
    let handles = app
        .client()
        .enqueue_many::<Nap>(0..n)
        .await
        .expect("enqueue");
    handles.iter().map(|h| h.id()).collect()
}

/// The jobs claimed and not finished, read as soon as the store answers again after an
/// outage: those in flight when it went away (and any claimed since, which only widens the
/// set). Only these may run twice.
async fn unfinished_claims(app: &App, ids: &[JobId]) -> std::collections::HashSet<JobId> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut set = std::collections::HashSet::new();
        let mut failed = None;
        // All reads at once: the set is taken in one short moment.
        let mut reads = tokio::task::JoinSet::new();
        for id in ids {
            let backend = app.backend().clone();
            let id = *id;
            reads.spawn(async move { (id, backend.get(id).await) });
        }
        while let Some(read) = reads.join_next().await {
            match read.expect("read task") {
                (id, Ok(Some(info))) => {
                    if info.job.attempts >= 1 && info.state != JobState::Succeeded {
                        set.insert(id);
                    }
                }
                (id, Ok(None)) => panic!("job {id} was lost"),
                (_, Err(e)) => failed = Some(e),
            }
        }
        match failed {
            None => return set,
            Some(e) => {
                assert!(Instant::now() < deadline, "the store never answered: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits until every job is Succeeded in the store (store errors while it recovers are
/// retried), then checks each job: kept, succeeded, and run at most `max_attempts` times.
/// Returns the jobs that ran more than once.
async fn wait_all_succeeded(
    app: &App,
    ids: &[JobId],
    max_attempts: u32,
    within: Duration,
    stats: &WorkerStats,
) -> std::collections::HashSet<JobId> {
    wait_until_succeeded(app, ids, within, stats).await;
    let mut reruns = std::collections::HashSet::new();
    for id in ids {
        let info = app
            .backend()
            .get(*id)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("job {id} was lost"));
        assert_eq!(info.state, JobState::Succeeded, "job {id}: {info:?}");
        assert!(
            (1..=max_attempts).contains(&info.job.attempts),
            "job {id} ran {} times",
            info.job.attempts
        );
        if info.job.attempts > 1 {
            reruns.insert(*id);
        }
    }
    reruns
}

// 1. Password (requirepass).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_is_required_and_used() {
    let server = RedisServer::builder()
        .password("pw-s3cret")
        .start()
        .await
        .expect("redis-server starts");
    let port = server.port();

    let msg = connect_error(&format!("redis://127.0.0.1:{port}")).await;
    assert!(
        mentions_auth(&msg),
        "without the password the error should say authentication is needed: {msg}"
    );
    let msg = connect_error(&format!("redis://:wrong@127.0.0.1:{port}")).await;
    assert!(
        mentions_auth(&msg),
        "a wrong password should be named as such: {msg}"
    );

    assert!(server.url().starts_with("redis://:pw-s3cret@"));
    round_trip(&server.url()).await;
}

/// The start-up guarantee "authentication refused fails at connect" must not depend on the
/// maxmemory-policy check happening to send the first command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_password_fails_at_connect_even_with_allow_eviction() {
    let server = RedisServer::builder()
        .password("pw-s3cret")
        .start()
        .await
        .expect("redis-server starts");
    let msg = connect_error(&format!(
        "redis://127.0.0.1:{}?allow_eviction=true",
        server.port()
    ))
    .await;
    assert!(
        mentions_auth(&msg),
        "without the password the error should say authentication is needed: {msg}"
    );
}

// 2. ACL user.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_round_trips_and_a_wrong_password_fails_clearly() {
    let server = RedisServer::builder()
        .acl_user("app", "secret")
        .start()
        .await
        .expect("redis-server starts");
    let port = server.port();
    assert_eq!(server.url(), format!("redis://app:secret@127.0.0.1:{port}"));
    round_trip(&server.url()).await;

    let msg = connect_error(&format!("redis://app:wrong@127.0.0.1:{port}")).await;
    assert!(
        mentions_auth(&msg) || msg.contains("invalid username-password"),
        "a wrong password should be named as such: {msg}"
    );
    // The default user is off: no credentials at all is refused too.
    let msg = connect_error(&format!("redis://127.0.0.1:{port}")).await;
    assert!(mentions_auth(&msg), "no credentials: {msg}");
}

// 3. TLS.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trips_with_the_ca_and_plain_text_is_refused() {
    let server = RedisServer::builder()
        .tls()
        .start()
        .await
        .expect("redis-server starts");
    let port = server.port();
    let ca = server
        .tls_ca_path()
        .expect("a TLS server has a CA")
        .display();

    // Plain text to the TLS port: an error, bounded by the timeouts, not a hang.
    let msg = connect_error(&format!(
        "redis://127.0.0.1:{port}?connect_timeout_ms=2000&response_timeout_ms=2000"
    ))
    .await;
    assert!(
        msg.to_lowercase().contains("connect"),
        "plain text to the TLS port: {msg}"
    );

    round_trip(&format!("rediss://127.0.0.1:{port}?ca={ca}")).await;

    // TLS without trusting the testkit's CA: the certificate is refused.
    let msg = connect_error(&format!(
        "rediss://127.0.0.1:{port}?connect_timeout_ms=2000&response_timeout_ms=2000"
    ))
    .await;
    assert!(
        msg.to_lowercase().contains("certificate"),
        "TLS with an unknown CA should name the certificate: {msg}"
    );
}

// 4. maxmemory-policy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_refused_unless_allowed() {
    let server = RedisServer::builder()
        .maxmemory_policy("allkeys-lru")
        .start()
        .await
        .expect("redis-server starts");
    let msg = connect_error(&server.url()).await;
    for needle in ["maxmemory-policy", "allkeys-lru", "allow_eviction"] {
        assert!(
            msg.contains(needle),
            "the error should name {needle}: {msg}"
        );
    }
    let url = format!("{}?allow_eviction=true", server.url());
    RedisBackend::connect(&url)
        .await
        .expect("allow_eviction=true accepts the policy");
    round_trip(&url).await;
}

// 5. Redis down at start.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_is_an_error_naming_redis() {
    let mut server = RedisServer::start().await.expect("redis-server starts");
    server.kill();
    let url = format!("{}?connect_timeout_ms=500", server.url());
    let started = Instant::now();
    let msg = connect_error(&url).await;
    eprintln!(
        "connect to a dead port failed after {:?}: {msg}",
        started.elapsed()
    );
    let lower = msg.to_lowercase();
    assert!(
        lower.contains("redis") && lower.contains("connect"),
        "the error should say it could not connect to Redis: {msg}"
    );
}

// 6. Restart mid-run, with AOF.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_run_loses_no_job() {
    let mut server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .expect("redis-server starts");
    let app = app(&server.url()).await;
    const N: u32 = 300;
    let ids = enqueue_naps(&app, N).await;

    let worker = app.worker().config(worker_config(
        &[QUEUE],
        Duration::from_secs(3),
        Duration::from_secs(1),
    ));
    let stats: Arc<WorkerStats> = worker.stats();
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());

    wait_for_acks(&stats, 100, Duration::from_secs(60)).await;
    let before = unfinished_claims(&app, &ids).await;
    server.kill();
    let at_kill = stats.succeeded.load(Ordering::Relaxed);
    assert!(
        at_kill < u64::from(N),
        "the outage should land while jobs remain ({at_kill} done)"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await.expect("redis-server restarts");
    let in_flight: std::collections::HashSet<JobId> =
        &before | &unfinished_claims(&app, &ids).await;
    assert!(!in_flight.is_empty(), "the kill should land while jobs run");

    let reruns = wait_all_succeeded(&app, &ids, 2, Duration::from_secs(120), &stats).await;
    assert!(
        !run.is_finished(),
        "the worker must keep running through the outage"
    );
    assert!(
        reruns.is_subset(&in_flight),
        "only jobs in flight at the kill ran twice: {} reruns, {} not in flight",
        reruns.len(),
        reruns.difference(&in_flight).count()
    );
    eprintln!(
        "restart: {at_kill} acknowledged at the kill; {} in flight; {} jobs ran twice; stale={}",
        in_flight.len(),
        reruns.len(),
        stats.stale.load(Ordering::Relaxed)
    );
    shutdown.graceful();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the worker stops")
        .expect("worker task")
        .expect("worker ran");
}

// 7. Sentinel failover.

/// `ZCARD` of one of the queue's sets, asked of one server directly.
async fn zcard(server: &RedisServer, set: &str) -> i64 {
    server
        .command(&["ZCARD", &format!("celeriac:{{{QUEUE}}}:{set}")])
        .await
        .expect("ZCARD")
        .as_int()
        .expect("an integer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_mid_run_loses_no_job() {
    let mut setup = RedisSentinel::start().await.expect("sentinel setup starts");
    let app = app(&setup.url()).await;
    const N: u32 = 300;
    let ids = app
        .client()
        .enqueue_many::<Doze>(0..N)
        .await
        .expect("enqueue")
        .iter()
        .map(|h| h.id())
        .collect::<Vec<JobId>>();
    // The jobs were enqueued a while before the failover: let replication deliver them (a
    // forced failover to a replica that has not received them would lose them, as with any
    // asynchronous replication).
    let deadline = Instant::now() + Duration::from_secs(30);
    while zcard(setup.replica(), "ready").await < i64::from(N) {
        assert!(Instant::now() < deadline, "the replica never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Slow enough that the failover lands while most jobs remain.
    let worker = app.worker().config(WorkerConfig {
        concurrency: 2,
        prefetch: 2,
        ..worker_config(&[QUEUE], Duration::from_secs(2), Duration::from_millis(500))
    });
    let stats = worker.stats();
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());

    wait_for_acks(&stats, 100, Duration::from_secs(60)).await;
    PHASE.store(1, Ordering::SeqCst);
    let before = unfinished_claims(&app, &ids).await;
    let done_before = succeeded(&app, &ids).await;
    setup.failover().await.expect("failover completes");

    // Asked of the new master itself, not through the backend under test: every job's record
    // is there (none was lost outright), and the failover landed while jobs remained.
    let mut missing = Vec::new();
    for id in &ids {
        let key = format!("celeriac:{{{QUEUE}}}:job:{id}");
        let exists = setup
            .master()
            .command(&["EXISTS", &key])
            .await
            .expect("EXISTS on the new master")
            .as_int();
        if exists != Some(1) {
            missing.push(*id);
        }
    }
    assert!(
        missing.is_empty(),
        "{} enqueued jobs are not in the new master at all, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let done_at_failover = zcard(setup.master(), "succeeded").await;
    assert!(
        done_at_failover < i64::from(N),
        "the failover should land while jobs remain"
    );

    let in_flight: std::collections::HashSet<JobId> =
        &before | &unfinished_claims(&app, &ids).await;
    // Completions the old master took but never passed on: those jobs run again too.
    let lost_outcomes: std::collections::HashSet<JobId> =
        &done_before - &succeeded(&app, &ids).await;
    PHASE.store(2, Ordering::SeqCst);
    assert!(
        !in_flight.is_empty(),
        "the failover should land while jobs run"
    );

    wait_all_succeeded(&app, &ids, 10, Duration::from_secs(120), &stats).await;
    assert!(
        !run.is_finished(),
        "the worker must keep running through the failover"
    );
    // Runs counted by the task itself: a job whose claim was lost with the old master runs
    // again without its attempt showing it. Only jobs the failover touched may run twice: in
    // flight at it, with an outcome the old master lost, or first run while it happened.
    let runs = DOZE_RUNS.lock().expect("runs").clone().unwrap_or_default();
    let mut ran_twice = std::collections::HashSet::new();
    let mut during = std::collections::HashSet::new();
    for (n, id) in ids.iter().enumerate() {
        let starts = runs.get(&(n as u32)).cloned().unwrap_or_default();
        assert!(!starts.is_empty(), "job {id} never ran");
        if starts.len() > 1 {
            ran_twice.insert(*id);
        }
        if starts[0] == 1 {
            during.insert(*id);
        }
    }
    let touched: std::collections::HashSet<JobId> = &(&in_flight | &lost_outcomes) | &during;
    assert!(
        ran_twice.is_subset(&touched),
        "only jobs the failover touched ran twice: {} ran twice, {} of them untouched",
        ran_twice.len(),
        ran_twice.difference(&touched).count()
    );
    eprintln!(
        "failover: {done_at_failover} succeeded in the new master at the switch; {} in flight, \
         {} completions lost, {} first run during it; {} jobs ran twice; {}",
        in_flight.len(),
        lost_outcomes.len(),
        during.len(),
        ran_twice.len(),
        counters(&stats)
    );
    shutdown.graceful();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the worker stops")
        .expect("worker task")
        .expect("worker ran");
}

// 8. Cluster: queues in slots on different nodes.

/// The index of the cluster node serving the slot of `key`.
async fn node_of(cluster: &RedisCluster, key: &str) -> usize {
    let slot = cluster.nodes()[0]
        .command(&["CLUSTER", "KEYSLOT", key])
        .await
        .expect("CLUSTER KEYSLOT")
        .as_int()
        .expect("a slot number");
    match slot {
        0..=5460 => 0,
        5461..=10922 => 1,
        _ => 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_worker_serves_queues_on_different_nodes() {
    let cluster = RedisCluster::start().await.expect("cluster starts");
    let app = app(&cluster.url()).await;
    let queues = ["alpha", "beta"];
    let ready = |q: &str| format!("celeriac:{{{q}}}:ready");
    let homes = [
        node_of(&cluster, &ready(queues[0])).await,
        node_of(&cluster, &ready(queues[1])).await,
    ];
    assert_ne!(
        homes[0], homes[1],
        "the queues must hash to different nodes"
    );

    const PER_QUEUE: u32 = 100;
    let now = app.client().now();
    let mut jobs = Vec::new();
    for q in queues {
        for i in 0..PER_QUEUE {
            jobs.push(
                Enqueue::<Nap>::new(i)
                    .queue(q)
                    .build(now)
                    .expect("job builds"),
            );
        }
    }
    let ids: Vec<JobId> = app
        .client()
        .push(jobs)
        .await
        .expect("enqueue")
        .iter()
        .map(|h| h.id())
        .collect();
    // Each queue's jobs really live on its own node.
    for (q, home) in queues.iter().zip(homes) {
        let n = cluster.nodes()[home]
            .command(&["ZCARD", &ready(q)])
            .await
            .expect("ZCARD on the owning node")
            .as_int();
        assert_eq!(
            n,
            Some(i64::from(PER_QUEUE)),
            "ready jobs of {q} on node {home}"
        );
    }

    let worker = app.worker().config(worker_config(
        &queues,
        Duration::from_secs(10),
        Duration::from_secs(2),
    ));
    let stats = worker.stats();
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());
    let reruns = wait_all_succeeded(&app, &ids, 1, Duration::from_secs(120), &stats).await;
    assert!(reruns.is_empty());
    assert_eq!(stats.stale.load(Ordering::Relaxed), 0);
    let by_queue = app.backend().stats().await.expect("stats");
    for q in queues {
        let s = by_queue
            .iter()
            .find(|s| s.queue == q)
            .unwrap_or_else(|| panic!("stats of {q}"));
        assert_eq!(s.count(JobState::Succeeded), u64::from(PER_QUEUE), "{q}");
    }
    shutdown.graceful();
    run.await.expect("worker task").expect("worker ran");
}

// 9. Idle blocking wake-up across connections.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_wakes_for_work_enqueued_elsewhere() {
    let server = RedisServer::start().await.expect("redis-server starts");
    // Two backends, two sets of connections: as two processes would have.
    let worker_side = app(&server.url()).await;
    let client_side = app(&server.url()).await;

    let worker = worker_side.worker().config(WorkerConfig {
        poll_interval: Duration::from_secs(3600),
        ..worker_config(&[QUEUE], Duration::from_secs(10), Duration::from_secs(2))
    });
    let stats = worker.stats();
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());
    // Let it find nothing and go idle (blocking on the queue's marker).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stats.started.load(Ordering::Relaxed), 0);

    for n in 0..3u32 {
        let handle = client_side
            .client()
            .enqueue::<Nap>(n)
            .await
            .expect("enqueue");
        let info = handle
            .wait(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| {
                panic!("job {n}: an idle worker polling hourly was not woken: {e}")
            });
        assert_eq!(info.state, JobState::Succeeded);
        // Idle again before the next one.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(stats.started.load(Ordering::Relaxed), 3);
    shutdown.graceful();
    run.await.expect("worker task").expect("worker ran");
}
