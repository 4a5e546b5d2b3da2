//! Redis Cluster faults while a worker runs, against real `redis-server` nodes the testkit
//! starts (never the shared Redis on 6379): the slot of a busy queue is resharded to another
//! master, and the master owning it is killed (kill -9) so its replica takes over. Every job
//! must end Succeeded; none may be lost or stuck.
//!
//! Every wait polls with a deadline; no assertion depends on how fast a machine is.

mod common;

use celeriac::{App, JobId, Task, TaskContext, TaskError, TaskOptions, WorkerConfig};
use celeriac_testkit::resp::Value;
use celeriac_testkit::{RedisCluster, RedisServer};
use common::{counters, wait_for_acks, wait_until_succeeded};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The queue every job of these tests goes to.
const QUEUE: &str = "busy";

/// Set once the fault has happened: runs record whether they started before it.
static AFTER_FAULT: AtomicBool = AtomicBool::new(false);
/// Job argument -> one entry per run: whether it started after the fault.
static RUNS: Mutex<Option<HashMap<u32, Vec<bool>>>> = Mutex::new(None);

/// Records its run and sleeps 20 ms.
struct Step;

impl Task for Step {
    const NAME: &'static str = "faults.step";
    type Args = u32;
    type Output = u32;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QUEUE.into(),
            // A fault may cost an attempt; never let that dead-letter a job here.
            max_attempts: 10,
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, n: u32) -> Result<u32, TaskError> {
        let after = AFTER_FAULT.load(Ordering::SeqCst);
        if let Ok(mut runs) = RUNS.lock() {
            runs.get_or_insert_with(HashMap::new)
                .entry(n)
                .or_default()
                .push(after);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(n)
    }
}

fn runs() -> HashMap<u32, Vec<bool>> {
    RUNS.lock().expect("runs").clone().unwrap_or_default()
}

async fn app(url: &str) -> App {
    App::builder()
        .url(url)
        .task::<Step>()
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

fn worker_config(lease: Duration, heartbeat: Duration) -> WorkerConfig {
    WorkerConfig {
        queues: vec![QUEUE.to_string()],
        concurrency: 4,
        prefetch: 4,
        lease,
        heartbeat,
        poll_interval: Duration::from_millis(50),
        grace_period: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

fn key(name: &str) -> String {
    format!("celeriac:{{{QUEUE}}}:{name}")
}

fn text(v: Value) -> String {
    v.as_text().unwrap_or_default()
}

/// The slot of the queue, and the index of the master serving it at start.
async fn queue_slot(cluster: &RedisCluster) -> (u16, usize) {
    let slot = cluster.nodes()[0]
        .command(&["CLUSTER", "KEYSLOT", &key("ready")])
        .await
        .expect("CLUSTER KEYSLOT")
        .as_int()
        .expect("a slot number");
    let home = match slot {
        0..=5460 => 0,
        5461..=10922 => 1,
        _ => 2,
    };
    (u16::try_from(slot).expect("a slot"), home)
}

/// The jobs in one of the queue's sets: every finite score (the active set's keeper, score
/// +inf, is not a job).
async fn zcard(server: &RedisServer, set: &str) -> i64 {
    server
        .command(&["ZCOUNT", &key(set), "-inf", "(+inf"])
        .await
        .expect("ZCOUNT")
        .as_int()
        .expect("an integer")
}

async fn enqueue_all(app: &App, n: u32) -> Vec<JobId> {
    app.client()
        .enqueue_many::<Step>(0..n)
        .await
        .expect("enqueue")
        .iter()
        .map(|h| h.id())
        .collect()
}

/// Every set of the queue on `owner` is empty but `succeeded`, which holds all `n` jobs.
async fn assert_settled(owner: &RedisServer, n: u32) {
    for set in ["ready", "scheduled", "retry", "active", "dead"] {
        assert_eq!(zcard(owner, set).await, 0, "{set} on the owning node");
    }
    assert_eq!(zcard(owner, "succeeded").await, i64::from(n));
}

/// Moves one slot from `from` to `to` as `redis-cli --cluster reshard` does, key batch by key
/// batch (`MIGRATE … KEYS`, job records first), pausing between batches so work goes on
/// mid-migration. Returns how many batches moved keys.
async fn move_slot(
    from: &RedisServer,
    to: &RedisServer,
    others: &[&RedisServer],
    slot: u16,
) -> u32 {
    let slot = slot.to_string();
    let from_id = text(from.command(&["CLUSTER", "MYID"]).await.expect("MYID"));
    let to_id = text(to.command(&["CLUSTER", "MYID"]).await.expect("MYID"));
    to.command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id])
        .await
        .expect("SETSLOT IMPORTING");
    from.command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id])
        .await
        .expect("SETSLOT MIGRATING");
    let port = to.port().to_string();
    let mut batches = 0;
    loop {
        let keys = from
            .command(&["CLUSTER", "GETKEYSINSLOT", &slot, "100000"])
            .await
            .expect("GETKEYSINSLOT");
        let mut keys: Vec<String> = keys
            .as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_text)
            .collect();
        if keys.is_empty() {
            break;
        }
        // Job records first, the queue's own keys last: the order that leaves the source
        // holding every declared key of a script while the job keys it reads have moved.
        keys.sort_by_key(|k| !k.contains(":job:"));
        for batch in keys.chunks(5) {
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(batch.iter().map(String::as_str));
            from.command(&args).await.expect("MIGRATE");
            batches += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for node in [to, from].into_iter().chain(others.iter().copied()) {
        node.command(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])
            .await
            .expect("SETSLOT NODE");
    }
    batches
}

/// The queue's sets a run of [`Step`] jobs leaves empty, and a member planted in each, due
/// far in the future so neither a claim nor a reap touches it.
const SPARE_SETS: [&str; 6] = [
    "scheduled",
    "retry",
    "dead",
    "failed",
    "cancelled",
    "expired",
];
const FAR_FUTURE: &str = "9000000000000000";
const PLANTED: &str = "planted";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_a_busy_queue_s_slot_loses_no_job() {
    let cluster = RedisCluster::start().await.expect("cluster starts");
    let app = app(&cluster.url()).await;
    let (slot, home) = queue_slot(&cluster).await;
    let target = (home + 1) % 3;
    let [source, dest] = [&cluster.nodes()[home], &cluster.nodes()[target]];
    let other = &cluster.nodes()[(home + 2) % 3];

    const N: u32 = 600;
    let ids = enqueue_all(&app, N).await;
    assert_eq!(
        zcard(source, "ready").await,
        i64::from(N),
        "jobs on the source"
    );

    // Every set of the queue exists, so the node keeping the queue's keys longest would serve
    // a script declaring only them: the case where a script met a job key already moved.
    for set in SPARE_SETS {
        source
            .command(&["ZADD", &key(set), FAR_FUTURE, PLANTED])
            .await
            .expect("plant a member");
    }

    let worker = app.worker().config(worker_config(
        Duration::from_secs(10),
        Duration::from_secs(1),
    ));
    let stats = worker.stats();
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());
    wait_for_acks(&stats, 50, Duration::from_secs(60)).await;

    // Precondition: the move starts while jobs wait and run.
    let acked_before = stats.succeeded.load(Ordering::Relaxed);
    let ready_at_start = zcard(source, "ready").await;
    assert!(
        ready_at_start > 0,
        "jobs must still wait when the move starts"
    );
    let batches = move_slot(source, dest, &[other], slot).await;
    let acked_after = stats.succeeded.load(Ordering::Relaxed);

    // The slot really moved: the source holds none of its keys, the destination serves it.
    let left = source
        .command(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
        .await
        .expect("COUNTKEYSINSLOT")
        .as_int();
    assert_eq!(left, Some(0), "keys left on the source");
    assert!(batches >= 2, "the migration took {batches} batch(es)");
    let meta = dest
        .command(&["EXISTS", &key("meta")])
        .await
        .expect("EXISTS on the destination")
        .as_int();
    assert_eq!(meta, Some(1), "the queue's keys are on the destination");
    assert!(
        acked_after < u64::from(N),
        "jobs must remain after the move (acked {acked_after} of {N})"
    );

    wait_until_succeeded(&app, &ids, Duration::from_secs(120), &stats).await;
    // Claims went on after the move, from the new owner.
    assert!(stats.succeeded.load(Ordering::Relaxed) > acked_after);
    let runs = runs();
    let never: Vec<u32> = (0..N).filter(|n| !runs.contains_key(n)).collect();
    assert!(never.is_empty(), "jobs that never ran: {never:?}");
    for set in SPARE_SETS {
        dest.command(&["ZREM", &key(set), PLANTED])
            .await
            .expect("remove the planted member");
    }
    assert_settled(dest, N).await;
    eprintln!(
        "reshard: slot {slot} moved from node {home} to {target} in {batches} batches while \
         {ready_at_start} jobs were ready; acked {acked_before} before, {acked_after} right \
         after; {} jobs ran more than once; {}",
        runs.values().filter(|r| r.len() > 1).count(),
        counters(&stats)
    );
    shutdown.graceful();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the worker stops")
        .expect("worker task")
        .expect("worker ran");
}

/// A field of `INFO replication` on `server`.
async fn replication_field(server: &RedisServer, field: &str) -> Option<String> {
    let info = text(
        server
            .command(&["INFO", "replication"])
            .await
            .expect("INFO replication"),
    );
    info.lines().find_map(|line| {
        let (k, v) = line.trim_end().split_once(':')?;
        (k == field).then(|| v.to_string())
    })
}

/// The members of one of the queue's sets as the replica has them.
async fn replica_members(replica: &RedisServer, set: &str) -> HashSet<String> {
    let mut conn = replica.connect().await.expect("connects to the replica");
    conn.command(&["READONLY"]).await.expect("READONLY");
    let members = conn
        .command(&["ZRANGE", &key(set), "0", "-1"])
        .await
        .expect("ZRANGE on the replica");
    members
        .as_array()
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_of_a_busy_queue_s_slot_loses_no_job() {
    let mut cluster = RedisCluster::with_replicas()
        .await
        .expect("cluster with replicas starts");
    let app = app(&cluster.url()).await;
    let (_, home) = queue_slot(&cluster).await;

    const N: u32 = 300;
    let ids = enqueue_all(&app, N).await;
    // Replication is asynchronous: an enqueue acknowledged just before an unplanned failover
    // can be lost. So this test lets the replica catch up with the enqueues first; what it
    // checks is the work in flight at the kill.
    let master = &cluster.nodes()[home];
    let replica = &cluster.replicas()[home];
    let offset: i64 = replication_field(master, "master_repl_offset")
        .await
        .and_then(|v| v.parse().ok())
        .expect("the master's offset");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let at: i64 = replication_field(replica, "slave_repl_offset")
            .await
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if at >= offset {
            break;
        }
        assert!(Instant::now() < deadline, "the replica never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(replica_members(replica, "ready").await.len(), N as usize);

    let worker = app.worker().config(worker_config(
        Duration::from_secs(2),
        Duration::from_millis(500),
    ));
    let stats = worker.stats();
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());
    wait_for_acks(&stats, 50, Duration::from_secs(60)).await;

    cluster.nodes_mut()[home].kill();
    let replica = &cluster.replicas()[home];
    // What the replica holds is what survives: completions it has are final.
    let acked_at_kill = replica_members(replica, "succeeded").await;
    // No claim can succeed while the slot has no master, so every run that starts before this
    // point comes from a claim made before the kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        replication_field(replica, "role").await.as_deref(),
        Some("slave"),
        "the replica must not have taken over yet"
    );
    AFTER_FAULT.store(true, Ordering::SeqCst);

    let started_before: HashSet<u32> = runs()
        .iter()
        .filter(|(_, r)| r.iter().any(|after| !after))
        .map(|(n, _)| *n)
        .collect();
    let acked_at_kill: HashSet<u32> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| acked_at_kill.contains(&id.to_string()))
        .map(|(n, _)| n as u32)
        .collect();
    let in_flight: HashSet<u32> = started_before.difference(&acked_at_kill).copied().collect();
    assert!(
        acked_at_kill.len() < N as usize,
        "the kill must land while jobs remain"
    );
    assert!(!in_flight.is_empty(), "the kill must land while jobs run");

    let deadline = Instant::now() + Duration::from_secs(60);
    while replication_field(replica, "role").await.as_deref() != Some("master") {
        assert!(Instant::now() < deadline, "the replica never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    wait_until_succeeded(&app, &ids, Duration::from_secs(120), &stats).await;
    assert!(
        !run.is_finished(),
        "the worker must keep running through the failover"
    );
    let runs = runs();
    let never: Vec<u32> = (0..N).filter(|n| !runs.contains_key(n)).collect();
    assert!(never.is_empty(), "jobs that never ran: {never:?}");
    let reruns: HashSet<u32> = runs
        .iter()
        .filter(|(_, r)| r.len() > 1)
        .map(|(n, _)| *n)
        .collect();
    let outside: Vec<&u32> = reruns.difference(&in_flight).collect();
    assert!(
        outside.is_empty(),
        "jobs ran again that were not in flight at the kill: {outside:?} (in flight: {in_flight:?})"
    );
    assert_settled(replica, N).await;
    eprintln!(
        "failover: {} acked in the replica at the kill, {} in flight, {} ran again; {}",
        acked_at_kill.len(),
        in_flight.len(),
        reruns.len(),
        counters(&stats)
    );
    shutdown.graceful();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the worker stops")
        .expect("worker task")
        .expect("worker ran");
}
