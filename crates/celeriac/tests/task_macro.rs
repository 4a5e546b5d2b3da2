//! `#[celeriac::task]` against the embedded SQLite backend: what it generates, what it stores,
//! and jobs running end to end on a worker.

use celeriac::prelude::*;
use celeriac::{Backoff, JobOptions, TaskOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Email {
    to: String,
    subject: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    to: String,
    task: String,
    attempt: u32,
    subject_len: usize,
}

fn email(to: &str) -> Email {
    Email {
        to: to.to_string(),
        subject: "hello".to_string(),
    }
}

/// Every option but `ignore_result` and `no_jitter`, with values unlike the defaults.
#[celeriac::task(
    queue = "emails",
    retries = 5,
    backoff = "2s",
    backoff_max = "15m",
    soft_time_limit = "30s",
    time_limit = "1m",
    priority = 7,
    result_ttl = "1h",
    encoding = "msgpack",
    expires = "5m",
    name = "custom.send_email"
)]
async fn send_email(ctx: &TaskContext, email: Email) -> Result<Receipt, TaskError> {
    Ok(Receipt {
        subject_len: email.subject.len(),
        to: email.to,
        task: ctx.task().to_string(),
        attempt: ctx.attempt(),
    })
}

/// One struct argument, JSON, no context, nothing returned.
#[celeriac::task(ignore_result, no_jitter, backoff = "250ms")]
async fn notify(email: Email) {
    let _ = email;
}

/// One struct argument, JSON, a plain return value.
#[celeriac::task]
async fn greet(email: Email) -> String {
    format!("hello {} ({})", email.to, email.subject)
}

/// Several arguments, a fully qualified context type.
#[celeriac::task(queue = "math")]
async fn add(_ctx: &celeriac::TaskContext, a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

/// No arguments, a plain return value.
#[celeriac::task]
async fn ping() -> String {
    "pong".to_string()
}

/// The context by value; `_` as an argument name.
#[celeriac::task(queue = "math")]
pub(crate) async fn attempt_of(ctx: TaskContext, _: u8) -> u32 {
    ctx.attempt()
}

/// A retryable error with no retries left: dead.
#[celeriac::task(retries = 0)]
async fn always_fails(_ctx: &TaskContext, reason: String) -> Result<(), TaskError> {
    Err(TaskError::msg(reason))
}

/// A fatal error: failed at once, though retries remain.
#[celeriac::task(retries = 3)]
async fn fatal(reason: String) -> Result<(), TaskError> {
    Err(TaskError::fatal(reason))
}

/// A `std::error::Error` converts into a retryable `TaskError`.
#[celeriac::task(retries = 0)]
async fn parse_number(text: String) -> Result<u32, std::num::ParseIntError> {
    text.parse()
}

/// An error that only displays (like `anyhow::Error`) converts through its `Display`.
#[derive(Debug)]
struct DisplayOnly(String);

impl std::fmt::Display for DisplayOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "display only: {}", self.0)
    }
}

/// `anyhow::Result<T>`'s shape: a one-argument `Result` alias in another module.
mod display_only {
    pub type Result<T> = std::result::Result<T, super::DisplayOnly>;
}

#[celeriac::task(retries = 0)]
async fn display_error(fail: bool) -> display_only::Result<bool> {
    if fail {
        Err(DisplayOnly("boom".to_string()))
    } else {
        Ok(true)
    }
}

/// Types named like the generated items, and `self::`/`super::` paths, mean what they mean
/// next to the function.
mod shadowing {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Args {
        pub n: i32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Output {
        pub doubled: i32,
        pub to: String,
    }

    #[celeriac::task]
    pub(crate) async fn shadow(args: self::Args, email: super::Email) -> Result<Output, TaskError> {
        Ok(Output {
            doubled: args.n * 2,
            to: email.to,
        })
    }
}

async fn app() -> celeriac::Result<App> {
    App::builder()
        .url("sqlite::memory:")
        .task::<send_email::Task>()
        .task::<notify::Task>()
        .task::<greet::Task>()
        .task::<add::Task>()
        .task::<ping::Task>()
        .task::<attempt_of::Task>()
        .task::<always_fails::Task>()
        .task::<fatal::Task>()
        .task::<parse_number::Task>()
        .task::<display_error::Task>()
        .register(shadowing::shadow::def())
        .build()
        .await
}

fn payload_json(info: &celeriac::JobInfo) -> serde_json::Value {
    serde_json::from_slice(&info.job.payload).unwrap_or(serde_json::Value::String(
        "<payload is not JSON>".to_string(),
    ))
}

#[test]
fn options_reflect_the_attribute() -> celeriac::Result<()> {
    let expected = TaskOptions {
        queue: "emails".to_string(),
        max_attempts: 6,
        backoff: Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(15 * 60),
            jitter: true,
        },
        soft_time_limit: Some(Duration::from_secs(30)),
        hard_time_limit: Some(Duration::from_secs(60)),
        priority: Priority::new(7)?,
        ignore_result: false,
        result_ttl: Duration::from_secs(3600),
        encoding: Encoding::MsgPack,
        expires: Some(Duration::from_secs(300)),
        limits: Default::default(),
        breaker: None,
    };
    assert_eq!(send_email::options(), expected);
    assert_eq!(<send_email::Task as Task>::options(), expected);
    assert_eq!(send_email::def().options(), &expected);

    assert_eq!(send_email::NAME, "custom.send_email");
    assert_eq!(<send_email::Task as Task>::NAME, "custom.send_email");
    assert_eq!(send_email::def().name(), "custom.send_email");
    assert_eq!(add::NAME, "add");

    let notify = notify::options();
    assert!(notify.ignore_result);
    assert_eq!(
        notify.backoff,
        Backoff {
            base: Duration::from_millis(250),
            jitter: false,
            ..Backoff::default()
        }
    );
    assert_eq!(
        notify,
        TaskOptions {
            ignore_result: true,
            backoff: notify.backoff,
            ..TaskOptions::default()
        }
    );

    assert_eq!(ping::options(), TaskOptions::default());
    assert_eq!(add::options().queue, "math");
    assert_eq!(always_fails::options().max_attempts, 1);
    assert_eq!(fatal::options().max_attempts, 4);
    Ok(())
}

#[test]
fn generated_types_follow_the_signature() {
    fn same<A: 'static, B: 'static>() -> bool {
        std::any::TypeId::of::<A>() == std::any::TypeId::of::<B>()
    }
    assert!(same::<send_email::Args, Email>());
    assert!(same::<send_email::Output, Receipt>());
    assert!(same::<<send_email::Task as Task>::Args, Email>());
    assert!(same::<add::Args, (i64, i64)>());
    assert!(same::<add::Output, i64>());
    assert!(same::<ping::Args, ()>());
    assert!(same::<ping::Output, String>());
    assert!(same::<notify::Output, ()>());
    assert!(same::<attempt_of::Args, u8>());
    assert!(same::<display_error::Output, bool>());
    assert!(same::<shadowing::shadow::Args, (shadowing::Args, Email)>());
    assert!(same::<shadowing::shadow::Output, shadowing::Output>());
}

#[tokio::test]
async fn enqueue_stores_the_arguments_as_the_payload() -> celeriac::Result<()> {
    let app = app().await?;

    // One struct argument: the payload is the struct itself, a JSON object.
    let h = notify::enqueue(&app, email("a@example.com")).await?;
    let info = h.info().await?;
    assert_eq!(info.job.task, "notify");
    assert_eq!(info.job.queue, "default");
    assert_eq!(info.state, JobState::Pending);
    assert_eq!(
        payload_json(&info),
        json!({"to": "a@example.com", "subject": "hello"})
    );
    assert_eq!(info.job.result_ttl, None, "ignore_result keeps no result");

    // Several arguments: a JSON array.
    let info = add::enqueue(&app, 2, 3).await?.info().await?;
    assert_eq!(info.job.task, "add");
    assert_eq!(info.job.queue, "math");
    assert_eq!(payload_json(&info), json!([2, 3]));

    // No arguments: null.
    let info = ping::enqueue(&app).await?.info().await?;
    assert_eq!(info.job.task, "ping");
    assert_eq!(payload_json(&info), json!(null));

    // Context by value and a `_` argument.
    let info = attempt_of::enqueue(&app, 9).await?.info().await?;
    assert_eq!(payload_json(&info), json!(9));

    // The task's options shape the stored job; msgpack payloads decode back.
    let info = send_email::enqueue(&app, email("b@example.com"))
        .await?
        .info()
        .await?;
    assert_eq!(info.job.task, "custom.send_email");
    assert_eq!(info.job.queue, "emails");
    assert_eq!(info.job.encoding, Encoding::MsgPack);
    assert_eq!(info.job.max_attempts, 6);
    assert_eq!(info.job.priority, Priority::new(7)?);
    assert_eq!(info.job.soft_time_limit, Some(Duration::from_secs(30)));
    assert_eq!(info.job.hard_time_limit, Some(Duration::from_secs(60)));
    assert_eq!(info.job.result_ttl, Some(Duration::from_secs(3600)));
    assert_eq!(info.job.expires_at, Some(info.job.run_at + 300_000));
    assert_eq!(
        info.job.encoding.decode::<Email>(&info.job.payload)?,
        email("b@example.com")
    );

    // Through a client as well as through the app.
    let info = ping::enqueue(app.client()).await?.info().await?;
    assert_eq!(info.job.task, "ping");
    Ok(())
}

#[tokio::test]
async fn the_builder_overrides_delay_priority_and_queue() -> celeriac::Result<()> {
    let app = app().await?;
    let handle = send_email::with(email("c@example.com"))
        .delay(Duration::from_secs(3600))
        .priority(Priority::new(2)?)
        .enqueue(&app)
        .await?;
    let info = handle.info().await?;
    assert_eq!(info.state, JobState::Scheduled);
    assert_eq!(info.job.priority, Priority::new(2)?);
    assert_eq!(info.job.run_at - info.job.created_at, 3_600_000);
    assert_eq!(info.job.queue, "emails");
    assert_eq!(info.job.max_attempts, 6, "the task's defaults still apply");
    assert_eq!(
        info.job.encoding.decode::<Email>(&info.job.payload)?,
        email("c@example.com")
    );

    let info = add::with(40, 2)
        .queue("urgent-math")
        .max_attempts(9)
        .enqueue(&app)
        .await?
        .info()
        .await?;
    assert_eq!(info.state, JobState::Pending);
    assert_eq!(info.job.queue, "urgent-math");
    assert_eq!(info.job.max_attempts, 9);
    assert_eq!(info.job.priority, Priority::NORMAL);
    assert_eq!(payload_json(&info), json!([40, 2]));
    Ok(())
}

#[tokio::test]
async fn enqueue_many_stores_one_job_per_item() -> celeriac::Result<()> {
    let app = app().await?;
    let handles = add::enqueue_many(&app, vec![(1, 2), (3, 4), (5, 6)]).await?;
    assert_eq!(handles.len(), 3);
    let mut payloads = Vec::new();
    for h in &handles {
        let info = h.info().await?;
        assert_eq!(info.job.task, "add");
        assert_eq!(info.job.queue, "math");
        payloads.push(payload_json(&info));
    }
    assert_eq!(payloads, vec![json!([1, 2]), json!([3, 4]), json!([5, 6])]);

    let none = ping::enqueue_many(&app, Vec::new()).await?;
    assert!(none.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_end_to_end_on_a_worker() -> celeriac::Result<()> {
    let app = app().await?;

    // A job that keeps no result leaves no row once it succeeds: enqueue it before the worker
    // starts, to see it exist first.
    let forgotten = notify::enqueue(&app, email("z@example.com")).await?;
    assert_eq!(forgotten.state().await?, JobState::Pending);

    let worker = app.worker().config(WorkerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    });
    let shutdown = worker.shutdown_handle();
    let stats = worker.stats();
    let running = tokio::spawn(worker.run());
    let wait = Duration::from_secs(10);

    // Context and struct argument in, struct out (msgpack).
    let info = send_email::enqueue(&app, email("d@example.com"))
        .await?
        .wait(wait)
        .await?;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    assert_eq!(
        info.result_as::<Receipt>()?,
        Some(Receipt {
            to: "d@example.com".to_string(),
            task: "custom.send_email".to_string(),
            attempt: 1,
            subject_len: 5,
        })
    );

    // Several arguments, in one batch.
    let handles = add::enqueue_many(&app, vec![(1, 2), (30, 12)]).await?;
    let mut sums = Vec::new();
    for h in &handles {
        let info = h.wait(wait).await?;
        assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
        sums.push(info.result_as::<i64>()?);
    }
    assert_eq!(sums, vec![Some(3), Some(42)]);

    // No arguments, plain return value.
    let info = ping::enqueue(&app).await?.wait(wait).await?;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    assert_eq!(info.result_as::<String>()?, Some("pong".to_string()));

    // Context by value.
    let info = attempt_of::enqueue(&app, 0).await?.wait(wait).await?;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    assert_eq!(info.result_as::<u32>()?, Some(1));

    // A struct argument given as a JSON object by name, as `celeriac enqueue greet --args`
    // does.
    let info = app
        .client()
        .enqueue_json(
            Some(app.registry()),
            "greet",
            &json!({"to": "e@example.com", "subject": "hi"}),
            JobOptions::default(),
        )
        .await?
        .wait(wait)
        .await?;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    assert_eq!(
        info.result_as::<String>()?,
        Some("hello e@example.com (hi)".to_string())
    );

    // `ignore_result`: the job ran and left nothing behind.
    match forgotten.wait(wait).await {
        Err(celeriac::Error::NotFound(_)) => {}
        other => panic!("an ignore_result job should be gone once done, got {other:?}"),
    }

    // Types named like the generated items.
    let info = shadowing::shadow::enqueue(&app, shadowing::Args { n: 21 }, email("f@x"))
        .await?
        .wait(wait)
        .await?;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    assert_eq!(
        info.result_as::<shadowing::Output>()?,
        Some(shadowing::Output {
            doubled: 42,
            to: "f@x".to_string(),
        })
    );

    // Errors that convert from `std::error::Error`, and from `Display` alone.
    let info = parse_number::enqueue(&app, "42".to_string())
        .await?
        .wait(wait)
        .await?;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    assert_eq!(info.result_as::<u32>()?, Some(42));

    let info = parse_number::enqueue(&app, "forty-two".to_string())
        .await?
        .wait(wait)
        .await?;
    assert_eq!(info.state, JobState::Dead);
    let error = info.error.expect("a dead job records its error");
    assert_eq!(error.kind, "retries_exhausted");
    assert!(
        error.message.ends_with(": invalid digit found in string"),
        "{}",
        error.message
    );

    let info = display_error::enqueue(&app, false)
        .await?
        .wait(wait)
        .await?;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    assert_eq!(info.result_as::<bool>()?, Some(true));

    let info = display_error::enqueue(&app, true).await?.wait(wait).await?;
    assert_eq!(info.state, JobState::Dead);
    let error = info.error.expect("a dead job records its error");
    assert_eq!(error.kind, "retries_exhausted");
    assert!(
        error.message.ends_with(": display only: boom"),
        "{}",
        error.message
    );

    // A retryable error with no retries left ends dead.
    let info = always_fails::enqueue(&app, "try later".to_string())
        .await?
        .wait(wait)
        .await?;
    assert_eq!(info.state, JobState::Dead);
    assert_eq!(info.job.attempts, 1);
    let error = info.error.expect("a dead job records its error");
    assert_eq!(error.kind, "retries_exhausted");
    assert!(error.message.ends_with(": try later"), "{}", error.message);

    // A fatal error ends failed without using the retries it has.
    let info = fatal::enqueue(&app, "never".to_string())
        .await?
        .wait(wait)
        .await?;
    assert_eq!(info.state, JobState::Failed);
    assert_eq!(info.job.attempts, 1);
    assert_eq!(info.job.max_attempts, 4);
    let error = info.error.expect("a failed job records its error");
    assert_eq!(error.kind, "error");
    assert_eq!(error.message, "never");

    shutdown.graceful();
    running
        .await
        .map_err(|e| celeriac::Error::config("worker", e.to_string()))??;

    // Every job above, counted once: nothing ran twice or went missing.
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.succeeded.load(Relaxed), 10);
    assert_eq!(stats.failed.load(Relaxed), 1);
    assert_eq!(stats.dead.load(Relaxed), 3);
    assert_eq!(stats.retried.load(Relaxed), 0);
    Ok(())
}

/// A task limited across every worker.
#[celeriac::task(queue = "partners", concurrency_limit = 3, rate_limit = "100/m")]
async fn call_partner(n: u32) -> u32 {
    n
}

#[test]
fn limits_in_the_attribute_reach_the_options() {
    let limits = call_partner::options().limits;
    assert_eq!(limits.concurrency, Some(3));
    assert_eq!(
        limits.rate,
        Some(celeriac::Rate {
            count: 100,
            per: Duration::from_secs(60),
        })
    );
    assert!(send_email::options().limits.is_empty());
    assert_eq!(call_partner::def().options().limits, limits);
}

#[celeriac::task(breaker = "partner-api", retries = 2)]
async fn guarded_partner(order: u64) -> Result<u64, TaskError> {
    Ok(order)
}

#[tokio::test]
async fn a_task_names_its_breaker_and_the_app_checks_it() {
    assert_eq!(
        guarded_partner::options().breaker.as_deref(),
        Some("partner-api")
    );
    let missing = App::builder()
        .url("sqlite::memory:")
        .task::<guarded_partner::Task>()
        .build()
        .await
        .expect_err("the breaker is not registered");
    assert!(
        matches!(&missing, celeriac::Error::Config { setting, .. } if setting == "task `guarded_partner`: breaker"),
        "{missing}"
    );
    let breaker = celeriac::breaker::CircuitBreaker::builder("partner-api")
        .build()
        .expect("valid settings");
    let app = App::builder()
        .url("sqlite::memory:")
        .task::<guarded_partner::Task>()
        .breaker(breaker)
        .build()
        .await
        .expect("the breaker is registered");
    assert!(app.registry().get_breaker("partner-api").is_some());
}

#[tokio::test]
async fn the_app_shares_a_task_breaker_through_its_backend_and_syncs_it() {
    use celeriac::backend::{BreakerSignal, BreakerStore};
    use celeriac::breaker::{shared::policy_of, BreakerState, CircuitBreaker, SharedOptions};
    use celeriac::Clock;
    let local = CircuitBreaker::builder("partner-api")
        .min_calls(4)
        .open_for(Duration::from_secs(60))
        .build()
        .expect("valid settings");
    let options = SharedOptions {
        instance: "here".into(),
        sync_interval: Duration::from_millis(10),
        quorum: 1,
        ..SharedOptions::default()
    };
    let bad = App::builder()
        .url("sqlite::memory:")
        .task::<guarded_partner::Task>()
        .shared_breaker(
            local.clone(),
            SharedOptions {
                quorum: 0,
                ..options.clone()
            },
        )
        .build()
        .await
        .expect_err("a quorum of 0");
    assert!(
        matches!(&bad, celeriac::Error::Config { setting, .. } if setting == "breaker `partner-api`: quorum"),
        "{bad}"
    );
    let policy = policy_of(&local, &options);
    let app = App::builder()
        .url("sqlite::memory:")
        .task::<guarded_partner::Task>()
        .shared_breaker(local.clone(), options)
        .build()
        .await
        .expect("the task's breaker is the shared one");
    let guard = app.registry().get_guard("partner-api").expect("registered");
    assert!(guard.is_shared());
    // Another process trips it in the store; the app's sync task adopts the trip.
    let s = app
        .backend()
        .breaker_report(
            "partner-api",
            BreakerSignal {
                instance: "there".into(),
                calls: 4,
                failures: 4,
                slow: 0,
            },
            &policy,
            celeriac::SystemClock.now_ms(),
        )
        .await
        .expect("report");
    assert_eq!(s.state, BreakerState::Open);
    // Liveness only: the 10 ms sync picks it up long before this deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while local.state() != BreakerState::Open {
        assert!(
            std::time::Instant::now() < deadline,
            "the app's sync task never adopted the trip"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(guard.acquire().await.is_err(), "the task's jobs would wait");
}
