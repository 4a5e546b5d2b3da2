//! The process registry: entries live until they expire, are listed sorted and whole, commands
//! reach a live process once and die with it; and a real worker and beat register themselves,
//! show what they run, go quiet and stop when told through the store.

use crate::support::{enqueue, eventually, gate, info, wait_for, T0};
use celeriac_core::backend::{
    Control, ProcessInfo, ProcessKind, ProcessRegistry, ProcessState, QueueWeight,
};
use celeriac_core::{
    Beat, BeatConfig, Broker, Clock, Coordinator, Job, JobId, JobState, ManualClock, QueueAdmin,
    Registry, ResultStore, Task, TaskContext, TaskError, Worker, WorkerConfig,
};
use std::sync::Arc;
use std::time::Duration;

/// A worker entry serving `emails` and `reports`, seen at `seen_at`.
pub(crate) fn entry(id: &str, seen_at: i64, expires_at: i64) -> ProcessInfo {
    ProcessInfo {
        id: id.to_string(),
        kind: ProcessKind::Worker,
        host: "host-a".to_string(),
        pid: 4242,
        version: "0.1.0".to_string(),
        started_at: T0 - 60_000,
        queues: vec![
            QueueWeight {
                queue: "emails".to_string(),
                weight: 3,
            },
            QueueWeight {
                queue: "reports".to_string(),
                weight: 1,
            },
        ],
        concurrency: 8,
        busy: 1,
        running: vec![JobId::new()],
        rss_bytes: Some(20 << 20),
        store_rtt_us: Some(250),
        clock_offset_ms: -12,
        state: ProcessState::Running,
        leader: false,
        seen_at,
        expires_at,
    }
}

async fn refresh<B: ProcessRegistry>(b: &B, info: &ProcessInfo) -> Vec<Control> {
    b.refresh(info).await.expect("refresh succeeds")
}

async fn ids<B: ProcessRegistry>(b: &B, now: i64) -> Vec<String> {
    b.processes(now)
        .await
        .expect("processes succeeds")
        .into_iter()
        .map(|p| p.id)
        .collect()
}

/// Entries come back whole and sorted by id while they live, vanish once expired, come back
/// when refreshed, and leave removes one at once.
pub async fn registry_lists_live_processes_until_they_expire<B: ProcessRegistry>(backend: Arc<B>) {
    let b = &*backend;
    let a = entry("worker-b", T0, T0 + 15_000);
    let z = entry("worker-a", T0, T0 + 30_000);
    assert!(refresh(b, &a).await.is_empty(), "no commands yet");
    assert!(refresh(b, &z).await.is_empty());
    let listed = b.processes(T0).await.expect("processes succeeds");
    assert_eq!(
        listed,
        vec![z.clone(), a.clone()],
        "whole entries, sorted by id"
    );
    assert_eq!(
        ids(b, T0 + 15_000).await,
        ["worker-a", "worker-b"],
        "live at its expiry"
    );
    assert_eq!(ids(b, T0 + 15_001).await, ["worker-a"], "expired after it");

    // A refresh moves the expiry and replaces the entry.
    let mut again = a.clone();
    again.seen_at = T0 + 16_000;
    again.expires_at = T0 + 31_000;
    again.busy = 0;
    again.running.clear();
    again.state = ProcessState::Quiet;
    refresh(b, &again).await;
    let listed = b.processes(T0 + 20_000).await.expect("processes succeeds");
    assert_eq!(
        listed,
        vec![z, again],
        "the refreshed entry is back, as written"
    );

    b.leave("worker-a").await.expect("leave succeeds");
    assert_eq!(ids(b, T0 + 20_000).await, ["worker-b"], "left at once");
    b.leave("no-such-process")
        .await
        .expect("leaving twice is fine");
}

/// A command reaches a live process at its next refresh, each command once however often it
/// was sent; nothing can be sent to an unknown or expired process, and the commands of a
/// process that expired die with it.
pub async fn registry_delivers_commands_once_to_live_processes<B: ProcessRegistry>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let w = entry("w1", T0, T0 + 15_000);
    refresh(b, &w).await;
    let send = |id: &'static str, c: Control, now: i64| async move {
        b.control(id, c, now).await.expect("control succeeds")
    };
    assert!(!send("nobody", Control::Stop, T0).await, "unknown process");
    assert!(send("w1", Control::Stop, T0 + 1).await);
    assert!(send("w1", Control::Quiet, T0 + 2).await);
    assert!(send("w1", Control::Quiet, T0 + 3).await, "sent twice");
    let mut next = w.clone();
    next.seen_at = T0 + 5_000;
    next.expires_at = T0 + 20_000;
    assert_eq!(
        refresh(b, &next).await,
        [Control::Quiet, Control::Stop],
        "each command once, in order"
    );
    assert!(
        refresh(b, &next).await.is_empty(),
        "taken by the last refresh"
    );

    // Sent to a process that then expires: gone with it.
    assert!(send("w1", Control::Stop, T0 + 19_000).await);
    assert!(!send("w1", Control::Quiet, T0 + 20_001).await, "expired");
    let other = entry("w2", T0 + 21_000, T0 + 36_000);
    refresh(b, &other).await;
    let mut back = w.clone();
    back.seen_at = T0 + 22_000;
    back.expires_at = T0 + 37_000;
    assert!(
        refresh(b, &back).await.is_empty(),
        "a command for an expired entry does not reach the process that comes back"
    );
    assert_eq!(ids(b, T0 + 22_000).await, ["w1", "w2"]);
}

/// A task that waits at its gate (the argument names it).
struct Parked;

impl Task for Parked {
    const NAME: &'static str = "conformance.parked";
    type Args = String;
    type Output = ();

    async fn run(_ctx: TaskContext, gate_name: String) -> Result<(), TaskError> {
        gate(&gate_name).pass().await;
        Ok(())
    }
}

fn parked(queue: &str, gate_name: &str) -> Job {
    let payload = serde_json::to_vec(gate_name).expect("arguments encode");
    let mut j = Job::new(Parked::NAME, payload, T0);
    j.queue = queue.to_string();
    j
}

async fn find<B: ProcessRegistry>(b: &B, id: &str, now: i64) -> Option<ProcessInfo> {
    b.processes(now)
        .await
        .expect("processes succeeds")
        .into_iter()
        .find(|p| p.id == id)
}

/// A worker registers itself with its queues and concurrency, lists the job it runs, and
/// obeys the store: told to be quiet it claims nothing new while the running job finishes;
/// told to stop it shuts down and leaves the registry.
pub async fn a_worker_registers_and_obeys_quiet_and_stop<B: celeriac_core::WorkerStore>(
    backend: Arc<B>,
) {
    let clock = ManualClock::new(T0);
    let name = format!("registry-worker-{}", JobId::new());
    let (first_gate, second_gate) = (format!("{name}-1"), format!("{name}-2"));
    let mut registry = Registry::new();
    registry.register::<Parked>();
    let worker = Worker::new(backend.clone(), Arc::new(registry))
        .config(WorkerConfig {
            queues: vec!["reg-q".to_string()],
            concurrency: 2,
            prefetch: 2,
            poll_interval: Duration::from_millis(5),
            registry_refresh: Duration::from_millis(20),
            worker_id: name.clone(),
            ..WorkerConfig::default()
        })
        .clock(Arc::new(clock.clone()) as Arc<dyn Clock>);
    let running = tokio::spawn(worker.run());
    let b = &*backend;

    let first = parked("reg-q", &first_gate);
    let first_id = first.id;
    enqueue(b, vec![first], T0).await;
    wait_for("the worker to list the job it runs", || async {
        find(b, &name, T0)
            .await
            .is_some_and(|p| p.running == [first_id] && p.busy == 1 && p.store_rtt_us.is_some())
    })
    .await;
    let me = find(b, &name, T0).await.expect("registered");
    assert_eq!(me.kind, ProcessKind::Worker);
    assert_eq!(me.state, ProcessState::Running);
    assert_eq!(me.concurrency, 2);
    assert_eq!(me.queue_names().collect::<Vec<_>>(), ["reg-q"]);
    assert_eq!(me.pid, std::process::id());
    assert!(me.expires_at > T0 && me.seen_at == T0, "{me:?}");

    assert!(b.control(&name, Control::Quiet, T0).await.expect("control"));
    // Reported once its claim loop stopped claiming: nothing enqueued from now on is taken.
    wait_for("the worker to report itself quiet", || async {
        find(b, &name, T0)
            .await
            .is_some_and(|p| p.state == ProcessState::Quiet)
    })
    .await;
    let second = parked("reg-q", &second_gate);
    let second_id = second.id;
    enqueue(b, vec![second], T0).await;
    gate(&first_gate).release();
    eventually(b, first_id, "the running job to finish while quiet", |i| {
        i.state == JobState::Succeeded
    })
    .await;
    // Several refreshes and claim polls later, the quiet worker has still not claimed it
    // (with a free slot: the first job is done).
    wait_for("a few refreshes of the quiet worker", || async {
        find(b, &name, T0).await.is_some_and(|p| p.busy == 0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        info(b, second_id).await.state,
        JobState::Pending,
        "not claimed"
    );
    assert_eq!(gate(&second_gate).entered(), 0);

    assert!(b.control(&name, Control::Stop, T0).await.expect("control"));
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker stops when told")
        .expect("the worker task does not panic")
        .expect("the worker stops cleanly");
    assert!(find(b, &name, T0).await.is_none(), "it left the registry");
    assert_eq!(info(b, second_id).await.state, JobState::Pending);
    gate(&second_gate).release();
}

/// A beat registers itself and says whether it leads; told to be quiet it hands the lease
/// over (another beat takes it), told to stop it shuts down and leaves.
pub async fn a_beat_registers_and_obeys_quiet_and_stop<
    B: Broker + ResultStore + Coordinator + ProcessRegistry,
>(
    backend: Arc<B>,
) {
    let clock = ManualClock::new(T0);
    let name = format!("registry-beat-{}", JobId::new());
    let beat = Beat::new(backend.clone(), Vec::new())
        .expect("a beat")
        .config(BeatConfig {
            holder: name.clone(),
            leader: format!("leader-{name}"),
            registry_refresh: Duration::from_millis(20),
            ..BeatConfig::default()
        })
        .expect("valid settings")
        .clock(Arc::new(clock.clone()) as Arc<dyn Clock>);
    let running = tokio::spawn(beat.run());
    let b = &*backend;
    wait_for("the beat to register as the leader", || async {
        find(b, &name, T0)
            .await
            .is_some_and(|p| p.kind == ProcessKind::Beat && p.leader)
    })
    .await;
    assert_eq!(
        b.acquire_leader(
            &format!("leader-{name}"),
            "other",
            Duration::from_secs(30),
            T0
        )
        .await
        .expect("acquire"),
        None,
        "the beat holds the lease"
    );

    assert!(b.control(&name, Control::Quiet, T0).await.expect("control"));
    wait_for("the quiet beat to give up leading", || async {
        find(b, &name, T0)
            .await
            .is_some_and(|p| p.state == ProcessState::Quiet && !p.leader)
    })
    .await;
    assert!(
        b.acquire_leader(
            &format!("leader-{name}"),
            "other",
            Duration::from_secs(30),
            T0
        )
        .await
        .expect("acquire")
        .is_some(),
        "the quiet beat handed the lease over"
    );

    assert!(b.control(&name, Control::Stop, T0).await.expect("control"));
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the beat stops when told")
        .expect("the beat task does not panic")
        .expect("the beat stops cleanly");
    assert!(find(b, &name, T0).await.is_none(), "it left the registry");
}

/// Queue figures count as consumers the live, running workers that take from each queue
/// (not quiet ones, not beats, not expired entries), and add up their slots; their rates
/// come from the history's last complete minutes (not the current one).
pub async fn queue_figures_count_live_consumers<
    B: Broker + QueueAdmin + ResultStore + ProcessRegistry + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let b = &*backend;
    enqueue(b, vec![crate::support::job("emails", T0)], T0).await;
    enqueue(b, vec![crate::support::job("reports", T0)], T0).await;
    let both = entry("both", T0, T0 + 15_000); // emails and reports, 8 slots
    let mut emails = entry("emails-only", T0, T0 + 15_000);
    emails.queues.truncate(1);
    emails.concurrency = 4;
    let mut quiet = entry("quiet", T0, T0 + 15_000);
    quiet.state = ProcessState::Quiet;
    let mut gone = entry("gone", T0 - 30_000, T0 - 15_000);
    gone.concurrency = 100;
    let mut beat = entry("beat", T0, T0 + 15_000);
    beat.kind = ProcessKind::Beat;
    for e in [&both, &emails, &quiet, &gone, &beat] {
        refresh(b, e).await;
    }
    let now = T0 + 2_000;
    let minute = celeriac_core::backend::Resolution::Minute.start_of(now);
    let mut earlier = celeriac_core::backend::HistoryEntry::new(minute - 120_000, "emails", "t");
    earlier.counts.succeeded = 10;
    earlier.counts.retried = 2;
    earlier.counts.dead = 1;
    let mut current = celeriac_core::backend::HistoryEntry::new(minute, "emails", "t");
    current.counts.succeeded = 100;
    b.record(vec![earlier, current], now)
        .await
        .expect("record history");
    let figures = celeriac_core::monitor::queue_figures(b, now)
        .await
        .expect("queue figures");
    let of = |q: &str| {
        figures
            .iter()
            .find(|f| f.stats.queue == q)
            .unwrap_or_else(|| panic!("queue {q} listed: {figures:?}"))
    };
    assert_eq!((of("emails").consumers, of("emails").slots), (2, 12));
    assert_eq!((of("reports").consumers, of("reports").slots), (1, 8));
    assert_eq!(of("emails").latency_ms, 2_000, "waiting since T0");
    let per = celeriac_core::monitor::RATE_MINUTES as f64;
    assert_eq!(
        (of("emails").succeeded_per_min, of("emails").failed_per_min),
        (10.0 / per, 3.0 / per),
        "the last complete minutes, not the current one"
    );
    assert_eq!(of("reports").succeeded_per_min, 0.0);
}

/// The cases of this file, expanded by [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_processes {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            registry_lists_live_processes_until_they_expire,
            registry_delivers_commands_once_to_live_processes,
            a_worker_registers_and_obeys_quiet_and_stop,
            a_beat_registers_and_obeys_quiet_and_stop,
            queue_figures_count_live_consumers,
        }
    };
}
