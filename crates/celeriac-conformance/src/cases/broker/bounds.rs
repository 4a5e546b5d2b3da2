//! Bounded sizes: a job over the client's [`Bounds`] is refused with an error naming the
//! bound, before it reaches the store (nothing is enqueued, while a job at every maximum is
//! accepted); a worker refuses queue names the bounds refuse; an error text of any size is
//! kept, cut, with the dead letter; a workflow step whose output is too large for the next
//! job fails its workflow, naming the bound.

use crate::support::{eventually, job, RunningWorker, PATIENCE, T0};
use celeriac_core::backend::{QueueAdmin, WorkflowState};
use celeriac_core::bounds::MAX_ERROR_BYTES;
use celeriac_core::workflow::{chain, record_result, Step};
use celeriac_core::{
    Backoff, Bounds, Broker, Client, Enqueue, Error, Job, JobOptions, JobState, ManualClock,
    Registry, ResultStore, Task, TaskContext, TaskError, TaskOptions, Unique, UniqueFor, Worker,
    WorkerConfig, WorkerStore,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Every job the backend holds, in every queue and state.
async fn total_jobs<B: QueueAdmin>(backend: &B) -> u64 {
    backend
        .stats()
        .await
        .expect("stats should succeed")
        .iter()
        .map(|s| JobState::ALL.iter().map(|&st| s.count(st)).sum::<u64>())
        .sum()
}

/// A JSON string payload of exactly `bytes` bytes.
fn payload_of(bytes: usize) -> Vec<u8> {
    format!("\"{}\"", "x".repeat(bytes - 2)).into_bytes()
}

/// `count` headers whose names and values add up to exactly `bytes`.
fn headers_of(count: usize, bytes: usize) -> BTreeMap<String, String> {
    let names: Vec<String> = (0..count).map(|i| format!("h{i:03}")).collect();
    let left = bytes - names.iter().map(String::len).sum::<usize>();
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let share = left / count + usize::from(i < left % count);
            (name, "v".repeat(share))
        })
        .collect()
}

/// The setting and message of a refusal; fails the case for anything else.
fn refusal<T: std::fmt::Debug>(what: &str, r: celeriac_core::Result<T>) -> (String, String) {
    match r {
        Err(Error::Config { setting, message }) => (setting, message),
        other => panic!("{what}: expected a refusal naming a bound, got {other:?}"),
    }
}

/// A job at every maximum at once is enqueued; a job one byte (or one header) over any of
/// them is refused with an error naming the bound, its size and the maximum, and nothing is
/// stored; a batch with one job over is refused whole. Bounds can be raised.
pub async fn enqueue_refuses_jobs_over_the_bounds<B: Broker + ResultStore + QueueAdmin>(
    backend: Arc<B>,
) {
    let client = Client::with_clock(backend.clone(), Arc::new(ManualClock::new(T0)));
    let bounds = *client.bounds();
    assert_eq!(bounds, Bounds::default());
    assert_eq!(total_jobs(&*backend).await, 0, "the backend starts empty");

    // Precondition: everything at its maximum is accepted.
    let long_queue = format!(
        "bounds-{}",
        "q".repeat(bounds.max_queue_name_bytes - "bounds-".len())
    );
    let mut at_max = job(&long_queue, T0);
    at_max.payload = payload_of(bounds.max_payload_bytes);
    at_max.headers = headers_of(bounds.max_headers, bounds.max_header_bytes);
    at_max.unique = Some(Unique {
        key: format!(
            "user:{}",
            "k".repeat(bounds.max_unique_key_bytes - "user:".len())
        ),
        lifetime: UniqueFor::UntilStarted,
    });
    at_max.task = "t".repeat(bounds.max_task_name_bytes);
    let at_max_id = at_max.id;
    let handles = client
        .push(vec![at_max])
        .await
        .expect("a job at every maximum is accepted");
    assert_eq!(handles[0].id(), at_max_id);
    let stored = crate::support::info(&*backend, at_max_id).await;
    assert_eq!(stored.job.payload.len(), bounds.max_payload_bytes);
    assert_eq!(stored.job.headers.len(), bounds.max_headers);
    assert_eq!(total_jobs(&*backend).await, 1);

    let q = "bounds";
    let over = |change: &dyn Fn(&mut Job)| {
        let mut j = job(q, T0);
        change(&mut j);
        j
    };
    let unique = |key: String| {
        Some(Unique {
            key,
            lifetime: UniqueFor::UntilStarted,
        })
    };
    let cases: Vec<(&str, Job, &str, Vec<String>)> = vec![
        (
            "a payload one byte over",
            over(&|j| j.payload = payload_of(bounds.max_payload_bytes + 1)),
            "max_payload_bytes",
            vec![
                format!("{} bytes", bounds.max_payload_bytes + 1),
                "over the 1 MiB maximum".into(),
            ],
        ),
        (
            "one header too many",
            over(&|j| {
                // Names only: four bytes each, far under the byte maximum.
                j.headers = headers_of(bounds.max_headers + 1, 4 * (bounds.max_headers + 1))
            }),
            "max_headers",
            vec![
                format!("{} headers", bounds.max_headers + 1),
                format!("maximum of {}", bounds.max_headers),
            ],
        ),
        (
            "headers one byte over",
            over(&|j| j.headers = headers_of(4, bounds.max_header_bytes + 1)),
            "max_header_bytes",
            vec![
                format!("{} bytes", bounds.max_header_bytes + 1),
                "over the 16 KiB maximum".into(),
            ],
        ),
        (
            "a queue name with the key separator",
            over(&|j| j.queue = "bounds:evil".into()),
            "queue",
            vec!["bounds:evil".into(), "`:`".into()],
        ),
        (
            "a queue name with a hash tag brace",
            over(&|j| j.queue = "bounds}{x".into()),
            "queue",
            vec!["`}`".into()],
        ),
        (
            "a queue name with a control character",
            over(&|j| j.queue = "bounds\u{7}".into()),
            "queue",
            vec!["U+0007".into(), "bounds\\u{7}".into()],
        ),
        (
            "a queue name one byte too long",
            over(&|j| j.queue = "q".repeat(bounds.max_queue_name_bytes + 1)),
            "max_queue_name_bytes",
            vec![format!("{} bytes", bounds.max_queue_name_bytes + 1)],
        ),
        (
            "a unique key one byte too long",
            over(&|j| j.unique = unique("k".repeat(bounds.max_unique_key_bytes + 1))),
            "max_unique_key_bytes",
            vec![format!("{} bytes", bounds.max_unique_key_bytes + 1)],
        ),
        (
            "a unique key with a control character",
            over(&|j| j.unique = unique("user\n42".into())),
            "unique",
            vec!["U+000A".into()],
        ),
        (
            "a task name with a control character",
            over(&|j| j.task = "noop\u{1b}[2J".into()),
            "task",
            vec!["U+001B".into()],
        ),
    ];
    for (what, j, bound, says) in cases {
        let (setting, message) = refusal(what, client.push(vec![j]).await);
        assert_eq!(setting, bound, "{what}: {message}");
        for s in &says {
            assert!(
                message.contains(s.as_str()),
                "{what}: `{s}` not in: {message}"
            );
        }
        assert!(
            !message.chars().any(char::is_control),
            "{what}: the message shows no control character: {message:?}"
        );
    }
    assert_eq!(
        total_jobs(&*backend).await,
        1,
        "no refused job reached the store"
    );

    // All or none: a batch with one job over stores nothing.
    let good = job(q, T0);
    let good_id = good.id;
    let bad = over(&|j| j.payload = payload_of(bounds.max_payload_bytes + 1));
    let (setting, _) = refusal("a batch", client.push(vec![good, bad]).await);
    assert_eq!(setting, "max_payload_bytes");
    assert!(
        backend.get(good_id).await.expect("get").is_none(),
        "the good job of a refused batch is not stored"
    );
    // The path of the command line and the dashboard: a task by name with JSON arguments.
    let big = serde_json::Value::String("x".repeat(bounds.max_payload_bytes));
    let (setting, _) = refusal(
        "enqueue_json",
        client
            .enqueue_json(None, "conformance.noop", &big, JobOptions::default())
            .await,
    );
    assert_eq!(setting, "max_payload_bytes");
    assert_eq!(total_jobs(&*backend).await, 1);

    // Raised bounds accept what the defaults refuse.
    let roomy = client
        .clone()
        .with_bounds(Bounds {
            max_payload_bytes: 2 << 20,
            ..Bounds::default()
        })
        .expect("valid bounds");
    roomy
        .push(vec![over(&|j| {
            j.payload = payload_of(bounds.max_payload_bytes + 1)
        })])
        .await
        .expect("a raised maximum accepts the job");
    assert_eq!(total_jobs(&*backend).await, 2);
    let zero = client
        .clone()
        .with_bounds(Bounds {
            max_headers: 0,
            ..Bounds::default()
        })
        .err();
    assert!(
        matches!(&zero, Some(Error::Config { setting, .. }) if setting == "max_headers"),
        "a zero bound is refused: {zero:?}"
    );
}

/// A worker given a queue name the bounds refuse does not start, and says which; the same
/// worker with valid names runs.
pub async fn worker_refuses_invalid_queue_names<B: WorkerStore>(backend: Arc<B>) {
    let clock = ManualClock::new(T0);
    // Precondition: with valid names, the worker runs and stops cleanly.
    let running = RunningWorker::start(backend.clone(), Registry::new(), "bounds-good", &clock);
    running.stop().await;
    for (bad, says) in [
        ("bounds:bad", "`:`"),
        ("bounds{bad}", "`{`"),
        ("bounds\tbad", "U+0009"),
    ] {
        let worker = Worker::new(backend.clone(), Arc::new(Registry::new()))
            .config(WorkerConfig {
                queues: vec!["bounds-good".into(), bad.into()],
                ..WorkerConfig::default()
            })
            .clock(Arc::new(clock.clone()));
        let ran = tokio::time::timeout(PATIENCE, worker.run())
            .await
            .expect("a refused worker returns at once");
        let (setting, message) = refusal(bad, ran);
        assert_eq!(setting, "queue", "{message}");
        assert!(message.contains(says), "{bad:?}: {message}");
        let shown = bad.escape_default().to_string();
        assert!(message.contains(&shown), "names {shown}: {message}");
    }
}

/// A task that fails with an error text as long as its argument: two attempts, backoff one
/// second without jitter.
struct FailsAtLength;

impl Task for FailsAtLength {
    const NAME: &'static str = "conformance.fails_at_length";
    type Args = usize;
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            queue: "bounds-errors".into(),
            max_attempts: 2,
            backoff: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(1),
                jitter: false,
            },
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, length: usize) -> Result<(), TaskError> {
        Err(TaskError::msg("e".repeat(length)))
    }
}

/// A task failing with a 1 MB error is retried, then dead-lettered: both records keep the
/// error cut to [`MAX_ERROR_BYTES`] on a character boundary, with its full length.
pub async fn huge_errors_are_truncated_not_refused<B: WorkerStore + QueueAdmin>(backend: Arc<B>) {
    const LENGTH: usize = 1_000_000;
    let clock = ManualClock::new(T0);
    let client = Client::with_clock(backend.clone(), Arc::new(clock.clone()));
    let handle = Enqueue::<FailsAtLength>::new(LENGTH)
        .enqueue(&client)
        .await
        .expect("enqueued");
    let id = handle.id();
    let mut registry = Registry::new();
    registry.register::<FailsAtLength>();
    let worker = RunningWorker::start(backend.clone(), registry, "bounds-errors", &clock);

    let retrying = eventually(&*backend, id, "the first attempt to fail", |i| {
        i.state == JobState::Retrying
    })
    .await;
    let error = retrying.error.expect("a retrying job shows its error");
    assert!(
        error.message.len() <= MAX_ERROR_BYTES,
        "{}",
        error.message.len()
    );
    assert!(error.message.starts_with("eeee"), "{:.40}", error.message);
    let marker = format!("… (truncated, {LENGTH} bytes)");
    assert!(
        error.message.ends_with(&marker),
        "ends with the marker: {}",
        &error.message[error.message.len().saturating_sub(60)..]
    );

    clock.advance(Duration::from_secs(1));
    let dead = eventually(&*backend, id, "the last attempt to fail", |i| {
        i.state.is_terminal()
    })
    .await;
    worker.stop().await;
    assert_eq!(
        dead.state,
        JobState::Dead,
        "a failure of any size is recorded"
    );
    let reason = dead.error.expect("a dead letter carries its reason");
    assert_eq!(reason.kind, "retries_exhausted");
    let head = "gave up after 2 attempts; last error (error): ";
    assert!(reason.message.starts_with(head), "{:.80}", reason.message);
    assert!(reason.message.len() <= MAX_ERROR_BYTES);
    let full = format!("… (truncated, {} bytes)", head.len() + LENGTH);
    assert!(
        reason.message.ends_with(&full),
        "{}",
        &reason.message[reason.message.len().saturating_sub(60)..]
    );
    let listed = backend
        .dead_letters(Some("bounds-errors".into()), 10, 0)
        .await
        .expect("dead letters");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].error.as_ref(), Some(&reason));
}

/// A task that returns a string as long as its argument.
struct Outputs;

impl Task for Outputs {
    const NAME: &'static str = "conformance.outputs";
    type Args = usize;
    type Output = String;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: "bounds-flow".into(),
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, length: usize) -> Result<String, TaskError> {
        Ok("o".repeat(length))
    }
}

/// A task that measures a string.
struct Measures;

impl Task for Measures {
    const NAME: &'static str = "conformance.measures";
    type Args = String;
    type Output = usize;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: "bounds-flow".into(),
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, text: String) -> Result<usize, TaskError> {
        Ok(text.len())
    }
}

/// A chain whose first step returns more than the next job may carry: the workflow ends
/// failed naming `max_payload_bytes`, and the next step is never enqueued. The same chain
/// with a short output runs through (the precondition).
pub async fn oversized_step_output_fails_the_workflow<B: WorkerStore + QueueAdmin>(
    backend: Arc<B>,
) {
    let clock = ManualClock::new(T0);
    let client = Client::with_clock(backend.clone(), Arc::new(clock.clone()));
    let mut registry = Registry::new();
    registry.register::<Outputs>();
    registry.register::<Measures>();
    let worker = RunningWorker::start(backend.clone(), registry, "bounds-flow", &clock);

    let small = chain([
        Step::of::<Outputs>(10).into(),
        Step::piped::<Measures>().into(),
    ])
    .start(&client)
    .await
    .expect("started");
    let rec = small.wait(PATIENCE).await.expect("the workflow ends");
    assert_eq!(rec.state, WorkflowState::Succeeded, "{rec:?}");
    assert_eq!(record_result::<usize>(&rec).expect("a result"), 10);
    let after_small = total_jobs(&*backend).await;
    assert_eq!(
        after_small, 2,
        "both steps of the small chain were enqueued"
    );

    let big = chain([
        Step::of::<Outputs>(Bounds::default().max_payload_bytes).into(),
        Step::piped::<Measures>().into(),
    ])
    .start(&client)
    .await
    .expect("started");
    let rec = big.wait(PATIENCE).await.expect("the workflow ends");
    worker.stop().await;
    assert_eq!(rec.state, WorkflowState::Failed, "{rec:?}");
    let error = rec.error.unwrap_or_default();
    assert!(
        error.contains("max_payload_bytes") && error.contains("over the 1 MiB maximum"),
        "{error}"
    );
    assert_eq!(
        total_jobs(&*backend).await,
        after_small + 1,
        "only the first step of the big chain was enqueued"
    );
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_bounds {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            enqueue_refuses_jobs_over_the_bounds,
            worker_refuses_invalid_queue_names,
            huge_errors_are_truncated_not_refused,
            oversized_step_output_fails_the_workflow,
        }
    };
}
