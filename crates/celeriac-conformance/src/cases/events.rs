//! The event stream: kept in order, read from the newest or after an id, capped; and a worker
//! records the jobs that fail or die there (not the ones that succeed).

use crate::support::{enqueue, eventually, job, wait_for, RunningWorker, T0};
use celeriac_core::backend::{Event, EventLog, EVENTS_KEPT};
use celeriac_core::{Job, JobState, ManualClock, Registry, Task, TaskContext, TaskError};
use std::sync::Arc;

async fn read<B: EventLog>(b: &B, after: Option<&str>, limit: usize) -> Vec<Event> {
    b.events(after.map(str::to_string), limit)
        .await
        .expect("events succeeds")
}

/// Events come back as appended, oldest first, with growing ids; reading goes on after an id;
/// beyond the cap the oldest are gone; an id from nowhere is refused.
pub async fn events_are_kept_in_order_and_capped<B: EventLog>(backend: Arc<B>) {
    let b = &*backend;
    assert!(read(b, None, 10).await.is_empty(), "no events yet");
    let appended: Vec<Event> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut e = Event::new("admin.pause", T0 + i as i64, *m);
            e.queue = Some("q".into());
            e.actor = Some("ops@host".into());
            e
        })
        .collect();
    b.append(appended.clone()).await.expect("append succeeds");
    let all = read(b, None, 10).await;
    let messages: Vec<&str> = all.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["a", "b", "c"]);
    for (got, sent) in all.iter().zip(&appended) {
        assert!(!got.id.is_empty(), "the store gives each an id");
        let mut same = got.clone();
        same.id.clear();
        assert_eq!(&same, sent, "kept whole");
    }
    let newest = read(b, None, 2).await;
    assert_eq!(newest, all[1..].to_vec(), "the newest two, oldest first");
    assert_eq!(read(b, Some(&all[0].id), 10).await, all[1..].to_vec());
    assert!(
        read(b, Some(&all[2].id), 10).await.is_empty(),
        "nothing after the last"
    );
    assert!(b.events(Some("no such id".into()), 10).await.is_err());

    let n = EVENTS_KEPT as usize + 50;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk
            .iter()
            .map(|i| Event::new("job.failed", T0 + 10 + *i as i64, format!("e{i}")))
            .collect();
        b.append(batch).await.expect("append succeeds");
    }
    let kept = read(b, None, 2 * n).await;
    assert!(
        kept.len() >= EVENTS_KEPT as usize && kept.len() < EVENTS_KEPT as usize + 1000,
        "about the cap kept: {}",
        kept.len()
    );
    assert_eq!(
        kept.last().map(|e| e.message.as_str()),
        Some(format!("e{}", n - 1).as_str())
    );
    assert!(
        kept.iter().all(|e| e.kind == "job.failed"),
        "the oldest went first"
    );
    assert!(kept.windows(2).all(|w| w[0].at < w[1].at), "in order");
}

/// A task that fails for good.
struct Refuses;

impl Task for Refuses {
    const NAME: &'static str = "conformance.refuses";
    type Args = ();
    type Output = ();

    async fn run(_ctx: TaskContext, _: ()) -> Result<(), TaskError> {
        Err(TaskError::fatal("the order does not exist"))
    }
}

/// A worker records a job that failed and one that died (its task unknown) as events with
/// their job, queue and reason; a job that succeeds adds none.
pub async fn a_worker_records_jobs_that_fail_or_die<B: celeriac_core::WorkerStore>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let q = "events-worker";
    let clock = ManualClock::new(T0);
    let mut registry = Registry::new();
    registry.register::<Refuses>();
    registry.register::<crate::support::Add>();
    let mut failing = Job::new(Refuses::NAME, b"null".to_vec(), T0);
    failing.queue = q.into();
    let mut unknown = job(q, T0);
    unknown.task = "conformance.nobody-runs-this".into();
    let mut fine = Job::new(crate::support::Add::NAME, b"[1,2]".to_vec(), T0);
    fine.queue = q.into();
    let ids = (failing.id, unknown.id, fine.id);
    enqueue(b, vec![fine, failing, unknown], T0).await;
    let worker = RunningWorker::start(backend.clone(), registry, q, &clock);
    for (id, state) in [(ids.0, JobState::Failed), (ids.1, JobState::Dead)] {
        eventually(b, id, "the job to end", |i| i.state == state).await;
    }
    eventually(b, ids.2, "the fine job", |i| i.state == JobState::Succeeded).await;
    wait_for("the events of both jobs", || async {
        read(b, None, 100).await.len() >= 2
    })
    .await;
    worker.stop().await;
    let events = read(b, None, 100).await;
    let of = |id| events.iter().find(|e| e.job == Some(id));
    let failed = of(ids.0).expect("an event for the failed job");
    assert_eq!(failed.kind, "job.failed");
    assert_eq!(failed.queue.as_deref(), Some(q));
    assert!(
        failed.message.contains("the order does not exist"),
        "{failed:?}"
    );
    let dead = of(ids.1).expect("an event for the dead job");
    assert_eq!(dead.kind, "job.dead");
    assert!(dead.message.contains("nobody-runs-this"), "{dead:?}");
    assert!(of(ids.2).is_none(), "a success is counted, not streamed");
}

/// The cases of this file, expanded by [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_events {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            events_are_kept_in_order_and_capped,
            a_worker_records_jobs_that_fail_or_die,
        }
    };
}
