//! History: what a store is given adds to its minute and to its hour (the hour is the minutes
//! compacted), whoever records it; buckets no longer kept are not kept; filters choose queues
//! and tasks; and a worker's attempts and the store's own count of enqueued jobs land in it.

use crate::support::{enqueue, eventually, job, RunningWorker, T0};
use celeriac_core::backend::{History, HistoryEntry, HistoryQuery, Resolution, HOUR_MS, MINUTE_MS};
use celeriac_core::sketch::Sketch;
use celeriac_core::{Job, JobState, ManualClock, Registry, Task, TaskContext, TaskError, UnixMs};
use std::sync::Arc;

/// The start of an hour after `T0`.
fn hour0() -> UnixMs {
    Resolution::Hour.start_of(T0) + HOUR_MS
}

fn sketch(values: &[f64]) -> Sketch {
    let mut s = Sketch::new();
    for v in values {
        s.add(*v);
    }
    s
}

fn entry(start: UnixMs, queue: &str, task: &str, run: &[f64], wait: &[f64]) -> HistoryEntry {
    let mut e = HistoryEntry::new(start, queue, task);
    e.run_ms = sketch(run);
    e.wait_ms = sketch(wait);
    e
}

async fn read<B: History>(
    b: &B,
    resolution: Resolution,
    from: UnixMs,
    to: UnixMs,
    queue: Option<&str>,
    task: Option<&str>,
) -> Vec<HistoryEntry> {
    let mut q = HistoryQuery::new(resolution, from, to);
    q.queue = queue.map(str::to_string);
    q.task = task.map(str::to_string);
    b.history(q).await.expect("history succeeds")
}

/// The same quantiles, extremes and count: what a store keeps of a sketch.
fn assert_same_times(got: &Sketch, want: &Sketch, what: &str) {
    assert_eq!(got.count(), want.count(), "{what}: count");
    assert_eq!((got.min(), got.max()), (want.min(), want.max()), "{what}");
    for q in [0.0, 0.5, 0.95, 0.99, 1.0] {
        assert_eq!(got.quantile(q), want.quantile(q), "{what}: quantile {q}");
    }
}

/// Entries go to their minute and their hour; two recorders of one minute add up; the
/// hour holds the merged counts and times of its minutes; queue and task filters apply.
pub async fn history_adds_to_minutes_and_hours<B: History>(backend: Arc<B>) {
    let b = &*backend;
    let h0 = hour0();
    let now = h0 + 10 * MINUTE_MS;
    let mut e1 = entry(
        h0 + 30_000,
        "hist-a",
        "t1",
        &[10.0, 20.0, 30.0],
        &[1.0, 2.0, 3.0],
    );
    e1.counts.started = 3;
    e1.counts.succeeded = 2;
    e1.counts.retried = 1;
    let mut e2 = entry(
        h0 + 5 * MINUTE_MS + 1_000,
        "hist-a",
        "t1",
        &[1000.0, 2000.5],
        &[0.0, 5.0],
    );
    e2.counts.started = 2;
    e2.counts.failed = 1;
    e2.counts.dead = 1;
    let mut e3 = entry(h0 + 5 * MINUTE_MS, "hist-b", "t2", &[], &[]);
    e3.counts.succeeded = 4;
    b.record(vec![e1.clone(), e2.clone(), e3.clone()], now)
        .await
        .expect("record succeeds");
    b.record(vec![e1.clone()], now)
        .await
        .expect("a second recorder adds to the same minute");

    let minutes = read(b, Resolution::Minute, h0, h0 + HOUR_MS, None, None).await;
    let mine: Vec<&HistoryEntry> = minutes
        .iter()
        .filter(|e| e.queue.starts_with("hist-"))
        .collect();
    let keys: Vec<(UnixMs, &str, &str)> = mine
        .iter()
        .map(|e| (e.start, e.queue.as_str(), e.task.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            (h0, "hist-a", "t1"),
            (h0 + 5 * MINUTE_MS, "hist-a", "t1"),
            (h0 + 5 * MINUTE_MS, "hist-b", "t2"),
        ],
        "one entry per minute, queue and task, at the minute's start, in order"
    );
    let mut twice = e1.clone();
    twice.merge(&e1);
    assert_eq!(mine[0].counts, twice.counts, "two recorders add up");
    assert_same_times(
        &mine[0].run_ms,
        &twice.run_ms,
        "run times of the first minute",
    );
    assert_same_times(
        &mine[0].wait_ms,
        &twice.wait_ms,
        "wait times of the first minute",
    );
    assert_eq!(mine[1].counts, e2.counts);
    assert_same_times(&mine[1].wait_ms, &e2.wait_ms, "wait times with a zero");
    assert_eq!(mine[2].counts, e3.counts);
    assert_eq!(mine[2].run_ms.count(), 0, "no times recorded, none kept");

    let hours = read(b, Resolution::Hour, h0, h0 + HOUR_MS, None, None).await;
    let hour_a = hours
        .iter()
        .find(|e| e.queue == "hist-a" && e.task == "t1")
        .expect("the hour of hist-a");
    let mut all = twice.clone();
    all.merge(&e2);
    assert_eq!(hour_a.start, h0);
    assert_eq!(hour_a.counts, all.counts, "the hour holds its minutes");
    assert_same_times(&hour_a.run_ms, &all.run_ms, "the hour's run times");
    assert_same_times(&hour_a.wait_ms, &all.wait_ms, "the hour's wait times");
    assert_eq!(
        hours
            .iter()
            .filter(|e| e.queue.starts_with("hist-"))
            .count(),
        2
    );

    let only_a = read(
        b,
        Resolution::Minute,
        h0,
        h0 + HOUR_MS,
        Some("hist-a"),
        Some("t1"),
    )
    .await;
    assert_eq!(only_a.len(), 2, "both minutes of hist-a's t1");
    let only_t2 = read(b, Resolution::Minute, h0, h0 + HOUR_MS, None, Some("t2")).await;
    assert_eq!(only_t2.len(), 1);
    assert_eq!(only_t2[0].queue, "hist-b");
    let later = read(
        b,
        Resolution::Minute,
        h0 + MINUTE_MS,
        h0 + 5 * MINUTE_MS,
        Some("hist-a"),
        None,
    )
    .await;
    assert!(
        later.is_empty(),
        "nothing between the two minutes: {later:?}"
    );
    assert!(read(b, Resolution::Minute, h0, h0, None, None)
        .await
        .is_empty());
}

/// Minutes are kept 48 hours and hours 90 days: older buckets are not kept, newer ones are;
/// a query over too many buckets is refused.
pub async fn history_keeps_minutes_two_days_and_hours_ninety_days<B: History>(backend: Arc<B>) {
    let b = &*backend;
    let q = "hist-old";
    let now = hour0() + 100 * 24 * HOUR_MS + 30 * MINUTE_MS;
    let mut recent = entry(now - 47 * HOUR_MS, q, "t", &[5.0], &[]);
    recent.counts.succeeded = 1;
    let mut older = entry(now - 50 * HOUR_MS, q, "t", &[7.0], &[]);
    older.counts.succeeded = 2;
    let mut ancient = entry(now - 91 * 24 * HOUR_MS, q, "t", &[9.0], &[]);
    ancient.counts.succeeded = 4;
    b.record(vec![recent.clone(), older.clone(), ancient], now)
        .await
        .expect("record succeeds");

    let minutes = read(
        b,
        Resolution::Minute,
        now - 60 * HOUR_MS,
        now,
        Some(q),
        None,
    )
    .await;
    let starts: Vec<UnixMs> = minutes.iter().map(|e| e.start).collect();
    assert_eq!(
        starts,
        [Resolution::Minute.start_of(recent.start)],
        "only the minute of 47 hours ago is kept"
    );
    let hours = read(
        b,
        Resolution::Hour,
        now - 92 * 24 * HOUR_MS,
        now,
        Some(q),
        None,
    )
    .await;
    let counts: Vec<u64> = hours.iter().map(|e| e.counts.succeeded).collect();
    assert_eq!(
        counts,
        [2, 1],
        "the hours of 50 and 47 hours ago, not of 91 days ago"
    );

    let too_many = HistoryQuery::new(Resolution::Minute, now - 30 * 24 * HOUR_MS, now);
    assert!(
        b.history(too_many).await.is_err(),
        "a month of minutes is refused"
    );
}

/// A task that fails for good.
struct Fails;

impl Task for Fails {
    const NAME: &'static str = "conformance.history-fails";
    type Args = ();
    type Output = ();

    async fn run(_ctx: TaskContext, _: ()) -> Result<(), TaskError> {
        Err(TaskError::fatal("no such order"))
    }
}

/// The store counts the jobs it stores; a worker adds each attempt's start and end with its
/// run and wait time, written by the time it stops.
pub async fn a_worker_and_the_store_fill_the_history<B: celeriac_core::WorkerStore>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let q = "hist-worker";
    let clock = ManualClock::new(T0);
    let mut registry = Registry::new();
    registry.register::<Fails>();
    registry.register::<crate::support::Add>();
    let mut jobs: Vec<Job> = (0..3)
        .map(|i| {
            let mut j = Job::new(
                crate::support::Add::NAME,
                format!("[{i},1]").into_bytes(),
                T0,
            );
            j.queue = q.into();
            j
        })
        .collect();
    let mut failing = Job::new(Fails::NAME, b"null".to_vec(), T0);
    failing.queue = q.into();
    let mut unknown = job(q, T0);
    unknown.task = "conformance.nobody-runs-this".into();
    jobs.push(failing);
    jobs.push(unknown);
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    enqueue(b, jobs, T0).await;

    let window = (T0 - MINUTE_MS, T0 + 2 * MINUTE_MS);
    let before = read(b, Resolution::Minute, window.0, window.1, Some(q), None).await;
    let enqueued: u64 = before.iter().map(|e| e.counts.enqueued).sum();
    assert_eq!(
        enqueued, 5,
        "the store counted the jobs it stored: {before:?}"
    );
    assert!(
        before.iter().all(|e| e.counts.started == 0),
        "nothing ran yet"
    );

    let worker = RunningWorker::start(backend.clone(), registry, q, &clock);
    let mut states = Vec::new();
    for id in &ids {
        states.push(
            eventually(b, *id, "the job to end", |i| i.state.is_terminal())
                .await
                .state,
        );
    }
    worker.stop().await;
    use JobState::{Dead, Failed, Succeeded};
    assert_eq!(
        states,
        [Succeeded, Succeeded, Succeeded, Failed, Dead],
        "the jobs really ran"
    );

    let after = read(b, Resolution::Minute, window.0, window.1, Some(q), None).await;
    let of = |task: &str| -> HistoryEntry {
        let mut sum = HistoryEntry::new(0, q, task);
        for e in after.iter().filter(|e| e.task == task) {
            sum.merge(e);
        }
        sum
    };
    let add = of(crate::support::Add::NAME);
    assert_eq!(
        (
            add.counts.enqueued,
            add.counts.started,
            add.counts.succeeded
        ),
        (3, 3, 3)
    );
    assert_eq!(add.run_ms.count(), 3, "each attempt's run time");
    assert_eq!(add.wait_ms.count(), 3, "each attempt's wait");
    let fails = of(Fails::NAME);
    assert_eq!((fails.counts.started, fails.counts.failed), (1, 1));
    let nobody = of("conformance.nobody-runs-this");
    assert_eq!((nobody.counts.enqueued, nobody.counts.dead), (1, 1));
    let hours = read(b, Resolution::Hour, window.0, window.1, Some(q), None).await;
    let succeeded: u64 = hours.iter().map(|e| e.counts.succeeded).sum();
    assert_eq!(succeeded, 3, "the hour holds the same");
}

/// The cases of this file, expanded by [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_history {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            history_adds_to_minutes_and_hours,
            history_keeps_minutes_two_days_and_hours_ninety_days,
            a_worker_and_the_store_fill_the_history,
        }
    };
}
