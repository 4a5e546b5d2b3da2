//! The confirmation e-mail task with a real worker, on a SQLite store and on a real Redis,
//! sending real SMTP to the sink: one e-mail per order, a job run again sends nothing new,
//! a missing order fails for good with the reason, and an SMTP outage opens the shared
//! breaker `smtp`, defers the jobs without losing any, and every e-mail goes out once after
//! the recovery.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac::breaker::{BreakerEvent, BreakerState};
use celeriac::{App, Encoding, JobState, TaskContext, WorkerConfig};
use celeriac_testkit::RedisServer;
use common::Running;
use shop::db::Db;
use shop::deps::Deps;
use shop::mail::{self, EmailArgs, EmailOutcome, EMAIL_TASK};
use shop::sink::Sink;
use sqlx::Row;

/// A shop database, a sink, and an application with the e-mail task and its shared breaker.
struct Env {
    _dir: tempfile::TempDir,
    db: Db,
    sink: Sink,
    deps: Deps,
    app: App,
}

async fn env(store: Option<&RedisServer>) -> Env {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sink =
        common::sink_logging_to(dir.path().join("mail.jsonl"), Duration::from_millis(20)).await;
    let deps = common::task_deps(dir.path(), sink.url(), dir.path().to_path_buf()).await;
    let db = deps.db.clone();
    let url = match store {
        Some(redis) => redis.url(),
        None => common::sqlite_url(&dir.path().join("celeriac.db")),
    };
    let app = common::app_with(url, mail::tasks(deps.clone()))
        .shared_breaker(mail::breaker(), mail::shared_options("test-worker"))
        .build()
        .await
        .expect("the application builds");
    Env {
        _dir: dir,
        db,
        sink,
        deps,
        app,
    }
}

async fn insert_order(db: &Db, id: &str) {
    sqlx::query(
        "INSERT INTO orders (id, api_key, email, items, total_cents, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind("key-1")
    .bind(format!("customer-{id}@customer.example"))
    .bind(r#"[{"product_id": 7, "quantity": 2, "price_cents": 1250, "name": "Teapot"}]"#)
    .bind(2500_i64)
    .bind(chrono::Utc::now().timestamp_millis())
    .execute(&db.pool)
    .await
    .expect("the order is stored");
}

async fn sent_at(db: &Db, id: &str) -> (Option<i64>, Option<String>) {
    let row = sqlx::query("SELECT email_sent_at_ms, email_message_id FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .expect("the order is there");
    (
        row.try_get("email_sent_at_ms").expect("a time or NULL"),
        row.try_get("email_message_id").expect("an id or NULL"),
    )
}

/// A worker on the e-mail queue, 8 at once.
fn start_worker(app: &App) -> Running {
    common::start_worker(
        app,
        WorkerConfig {
            grace_period: Duration::from_secs(5),
            ..common::worker_config(mail::EMAIL_QUEUE, 8)
        },
    )
}

/// Every order gets its e-mail once: enqueued twice (as the outbox sweeper may), run by a
/// worker, recorded on the order; enqueued again afterwards, nothing new happens.
async fn each_order_gets_one_email(e: Env) {
    let ids: Vec<String> = (0..20)
        .map(|i| format!("0190f1a4-7b2c-7d3e-8f00-{i:012}"))
        .collect();
    let mut jobs = Vec::new();
    for id in &ids {
        insert_order(&e.db, id).await;
        let job = mail::enqueue(&e.app, id).await.expect("enqueued");
        let again = mail::enqueue(&e.app, id).await.expect("enqueued again");
        assert_eq!(job, again, "one job per order");
        assert_eq!(job, mail::email_job_id(id));
        jobs.push(job);
    }
    let worker = start_worker(&e.app);
    for job in &jobs {
        let info = common::wait_job(&e.app, *job, Duration::from_secs(60)).await;
        assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
        let out: EmailOutcome = info
            .result_as()
            .expect("decodes")
            .expect("the job has a result");
        assert!(out.sent);
    }
    let stats = e.sink.stats();
    assert_eq!((stats.delivered, stats.duplicates), (20, 0));
    let mut orders: Vec<String> = e
        .sink
        .deliveries()
        .into_iter()
        .map(|d| d.order.expect("each e-mail names its order"))
        .collect();
    orders.sort();
    assert_eq!(orders, ids, "one e-mail per order");
    for id in &ids {
        let (at, message_id) = sent_at(&e.db, id).await;
        assert!(at.is_some(), "order {id} is marked sent");
        assert_eq!(message_id, Some(format!("<order-{id}@shop.example>")));
    }
    // The outbox sweeper enqueues an order again: the same job, already done.
    let again = mail::enqueue(&e.app, &ids[0]).await.expect("enqueued");
    assert_eq!(again, jobs[0]);
    let info = e.app.client().handle(again).info().await.expect("known");
    assert_eq!(info.state, JobState::Succeeded);
    worker.stop().await;
    assert_eq!(e.sink.stats().delivered, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_gets_one_email_on_sqlite() {
    each_order_gets_one_email(env(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_gets_one_email_on_redis() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    each_order_gets_one_email(env(Some(&redis)).await).await;
}

/// Runs the task's body as a worker would for a job delivered again.
async fn run_task(e: &Env, order_id: &str) -> EmailOutcome {
    let def = mail::tasks(e.deps.clone())
        .into_iter()
        .find(|t| t.name() == EMAIL_TASK)
        .expect("the e-mail task");
    let payload = serde_json::to_vec(&EmailArgs {
        order_id: order_id.to_string(),
    })
    .expect("encodes");
    let out = def
        .call(TaskContext::detached(EMAIL_TASK), payload, Encoding::Json)
        .await
        .expect("the task succeeds")
        .expect("it has a result");
    serde_json::from_slice(&out).expect("an outcome")
}

#[tokio::test]
async fn the_same_job_run_twice_sends_once() {
    let e = env(None).await;
    let id = "order-twice";
    insert_order(&e.db, id).await;
    let first = run_task(&e, id).await;
    assert!(first.sent);
    let second = run_task(&e, id).await;
    assert!(!second.sent, "already sent: nothing sent");
    assert_eq!(second.sent_at_ms, first.sent_at_ms);
    assert_eq!(e.sink.stats().delivered, 1);
    assert_eq!(e.sink.stats().duplicates, 0);

    // A crash after the SMTP server's 250 and before the order was marked: the run again
    // sends the same Message-ID, which the provider does not deliver twice.
    sqlx::query("UPDATE orders SET email_sent_at_ms = NULL WHERE id = $1")
        .bind(id)
        .execute(&e.db.pool)
        .await
        .expect("unmarked");
    let third = run_task(&e, id).await;
    assert!(third.sent);
    let s = e.sink.stats();
    assert_eq!((s.delivered, s.duplicates), (1, 1));
    let ids: Vec<Option<String>> = e
        .sink
        .deliveries()
        .into_iter()
        .map(|d| d.message_id)
        .collect();
    assert_eq!(
        ids,
        vec![Some("<order-order-twice@shop.example>".to_string()); 2]
    );
}

#[tokio::test]
async fn a_missing_order_fails_for_good_with_the_reason() {
    let e = env(None).await;
    let job = mail::enqueue(&e.app, "no-such-order")
        .await
        .expect("enqueued");
    let worker = start_worker(&e.app);
    let info = common::wait_job(&e.app, job, Duration::from_secs(60)).await;
    worker.stop().await;
    assert_eq!(info.state, JobState::Failed);
    let error = info.error.expect("the reason is kept");
    assert!(
        error
            .to_string()
            .contains("order no-such-order does not exist"),
        "{error}"
    );
    assert_eq!(info.job.attempts, 1, "not retried");
    assert_eq!(e.sink.stats().delivered, 0);
}

/// The SMTP server fails: the breaker opens (locally and in the store), the jobs are deferred
/// rather than spending their attempts, none is lost; after the recovery every order gets its
/// e-mail once and the breaker closes.
async fn an_outage_opens_the_breaker_and_loses_nothing(e: Env) {
    let breaker = e
        .app
        .registry()
        .get_breaker(mail::BREAKER)
        .expect("the smtp breaker is registered")
        .clone();
    assert_eq!(breaker.state(), BreakerState::Closed);
    let events: Arc<Mutex<Vec<BreakerEvent>>> = Arc::default();
    let mut rx = breaker.subscribe();
    let seen = events.clone();
    tokio::spawn(async move {
        while let Ok(ev) = rx.recv().await {
            seen.lock().expect("not poisoned").push(ev);
        }
    });
    let opened = |events: &Arc<Mutex<Vec<BreakerEvent>>>| {
        events
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|ev| ev.to == BreakerState::Open)
    };

    e.sink.fail_for(Duration::from_secs(600));
    let ids: Vec<String> = (0..30).map(|i| format!("outage-{i}")).collect();
    let mut jobs = Vec::new();
    for id in &ids {
        insert_order(&e.db, id).await;
        jobs.push(mail::enqueue(&e.app, id).await.expect("enqueued"));
    }
    let worker = start_worker(&e.app);

    common::eventually("the breaker opens", Duration::from_secs(60), || async {
        opened(&events)
    })
    .await;
    // Shared: the store has it open too (every worker of the fleet adopts it).
    let backend = e.app.backend().clone();
    common::eventually(
        "the store trips the breaker",
        Duration::from_secs(60),
        || {
            let backend = backend.clone();
            async move {
                use celeriac::backend::BreakerStore;
                let now = chrono::Utc::now().timestamp_millis();
                backend
                    .breaker_status(mail::BREAKER, now)
                    .await
                    .expect("the store answers")
                    .is_some_and(|s| s.trips >= 1)
            }
        },
    )
    .await;
    let stats = worker.stats.clone();
    common::eventually("jobs are deferred", Duration::from_secs(60), || {
        let stats = stats.clone();
        async move { stats.deferred.load(std::sync::atomic::Ordering::Relaxed) > 0 }
    })
    .await;
    let refused = e.sink.stats();
    assert_eq!(refused.delivered, 0);
    assert!(refused.refused > 0);
    assert!(
        worker.stats.dead.load(std::sync::atomic::Ordering::Relaxed) == 0
            && worker
                .stats
                .failed
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0,
        "no job given up during the outage"
    );

    e.sink.recover();
    for (job, id) in jobs.iter().zip(&ids) {
        let info = common::wait_job(&e.app, *job, Duration::from_secs(90)).await;
        assert_eq!(info.state, JobState::Succeeded, "{id}: {:?}", info.error);
        assert!(sent_at(&e.db, id).await.0.is_some(), "{id} is marked sent");
    }
    let s = e.sink.stats();
    assert_eq!((s.delivered, s.duplicates), (30, 0), "each e-mail once");
    common::eventually("the breaker closes", Duration::from_secs(60), || async {
        breaker.state() == BreakerState::Closed
    })
    .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_the_breaker_and_loses_nothing_on_sqlite() {
    an_outage_opens_the_breaker_and_loses_nothing(env(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_the_breaker_and_loses_nothing_on_redis() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    an_outage_opens_the_breaker_and_loses_nothing(env(Some(&redis)).await).await;
}

#[test]
fn the_breaker_and_options_are_what_the_shop_registers() {
    let b = mail::breaker();
    assert_eq!(b.name(), "smtp");
    let o = mail::options();
    assert_eq!(o.queue, "emails");
    assert_eq!(o.breaker.as_deref(), Some("smtp"));
    assert!(o.max_attempts > 1 && o.hard_time_limit.is_some());
    assert_eq!(mail::QUEUES, &["emails", "photos", "reports"]);
}
