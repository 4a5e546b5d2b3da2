//! The nightly report with a real worker on a SQLite store: a day's orders summed up into
//! `reports` (one row per day, replaced when run again), the day taken from the argument,
//! from the schedule's tick (the job a beat fires), or yesterday; the schedule itself.

mod common;

use std::time::Duration;

use celeriac::{JobId, JobOptions, JobState, Missed, TaskContext};
use chrono::{DateTime, NaiveDate, Utc};
use common::Postgres;
use shop::db::Db;
use shop::deps::Deps;
use shop::report::{self, Report, ReportArgs, REPORT_TASK};

type Env = common::TaskEnv;

async fn env() -> Env {
    common::task_env("smtp://127.0.0.1:1", None, report::tasks, |app| {
        app.schedule(report::schedule())
    })
    .await
}

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("a time")
        .timestamp_millis()
}

async fn insert_order(db: &Db, id: &str, created: &str, total: i64, sent: bool) {
    sqlx::query(
        "INSERT INTO orders (id, api_key, email, items, total_cents, created_at_ms, \
         email_sent_at_ms) VALUES ($1, 'k', 'a@customer.example', '[]', $2, $3, $4)",
    )
    .bind(id)
    .bind(total)
    .bind(ms(created))
    .bind(sent.then(|| ms(created) + 1000))
    .execute(&db.pool)
    .await
    .expect("the order is stored");
}

/// Runs a worker on `reports` until job `id` ends; its result.
async fn run_job(e: &Env, id: JobId) -> celeriac::JobInfo {
    let worker = common::start_worker(&e.app, common::worker_config(report::REPORT_QUEUE, 2));
    let info = common::wait_job(&e.app, id, Duration::from_secs(60)).await;
    worker.stop().await;
    info
}

async fn report_for(e: &Env, args: serde_json::Value) -> celeriac::JobInfo {
    let job = e
        .app
        .client()
        .enqueue_json(
            Some(e.app.registry().as_ref()),
            REPORT_TASK,
            &args,
            JobOptions::default(),
        )
        .await
        .expect("enqueued");
    assert_eq!(
        job.info().await.expect("known").job.queue,
        report::REPORT_QUEUE
    );
    run_job(e, job.id()).await
}

async fn report_rows(db: &Db) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM reports")
        .fetch_one(&db.pool)
        .await
        .expect("counted")
        .try_get("n")
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_orders_is_summed_up_once_per_day() {
    let e = env().await;
    insert_order(&e.db, "before", "2026-02-28T23:59:59.999Z", 100_000, true).await;
    insert_order(&e.db, "a", "2026-03-01T00:00:00Z", 1_000, true).await;
    insert_order(&e.db, "b", "2026-03-01T12:30:00Z", 2_550, true).await;
    insert_order(&e.db, "c", "2026-03-01T23:59:59.999Z", 450, false).await;
    insert_order(&e.db, "after", "2026-03-02T00:00:00Z", 100_000, true).await;

    let info = report_for(&e, serde_json::json!({"day": "2026-03-01"})).await;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    let r: Report = info.result_as().expect("decodes").expect("a result");
    assert_eq!(
        (r.day.as_str(), r.orders, r.revenue_cents, r.emails_sent),
        ("2026-03-01", 3, 4_000, 2)
    );
    assert_eq!(
        report::stored(&e.deps, "2026-03-01").await.expect("read"),
        Some(r.clone())
    );

    // A late order and a second run: the day's row is replaced, not added.
    insert_order(&e.db, "d", "2026-03-01T18:00:00Z", 500, true).await;
    let info = report_for(&e, serde_json::json!({"day": "2026-03-01"})).await;
    let again: Report = info.result_as().expect("decodes").expect("a result");
    assert_eq!(
        (again.orders, again.revenue_cents, again.emails_sent),
        (4, 4_500, 3)
    );
    assert_eq!(
        report::stored(&e.deps, "2026-03-01").await.expect("read"),
        Some(again)
    );
    assert_eq!(report_rows(&e.db).await, 1);

    // A day without orders is a row of zeros.
    let info = report_for(&e, serde_json::json!({"day": "2026-01-15"})).await;
    let empty: Report = info.result_as().expect("decodes").expect("a result");
    assert_eq!(
        (empty.orders, empty.revenue_cents, empty.emails_sent),
        (0, 0, 0)
    );
    assert_eq!(report_rows(&e.db).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_a_beat_fires_reports_the_day_before_its_tick() {
    let e = env().await;
    insert_order(&e.db, "a", "2026-03-01T08:00:00Z", 1_234, true).await;
    let schedule = report::schedule();
    let beat = e.app.beat().expect("the schedule's task is registered");
    // The tick of 2026-03-02 00:05 UTC, fired late (as after a missed night): still March 1.
    let tick = ms("2026-03-02T00:05:00Z");
    assert_eq!(schedule.next_after(ms("2026-03-01T12:00:00Z")), Some(tick));
    let job = beat
        .job_for(&schedule, tick, ms("2026-03-02T09:00:00Z"))
        .expect("the tick's job");
    let id = job.id;
    e.app.client().push(vec![job]).await.expect("enqueued");
    let info = run_job(&e, id).await;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    let r: Report = info.result_as().expect("decodes").expect("a result");
    assert_eq!(
        (r.day.as_str(), r.orders, r.revenue_cents),
        ("2026-03-01", 1, 1_234)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_day_fails_for_good_with_the_reason() {
    let e = env().await;
    let info = report_for(&e, serde_json::json!({"day": "March 1st"})).await;
    assert_eq!(info.state, JobState::Failed);
    let error = info.error.expect("a reason").to_string();
    assert!(error.contains("`March 1st` is not a day"), "{error}");
    assert_eq!(report_rows(&e.db).await, 0);
}

#[test]
fn without_a_day_or_a_tick_it_reports_yesterday() {
    let ctx = TaskContext::detached(REPORT_TASK);
    let now = DateTime::parse_from_rfc3339("2026-03-10T00:05:00Z")
        .expect("a time")
        .with_timezone(&Utc);
    let day = |args: ReportArgs| report::report_day(&ctx, &args, now).expect("a day");
    let ymd = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("a date");
    assert_eq!(day(ReportArgs::default()), ymd(2026, 3, 9));
    assert_eq!(
        day(ReportArgs {
            day: Some("yesterday".into())
        }),
        ymd(2026, 3, 9)
    );
    assert_eq!(
        day(ReportArgs {
            day: Some("today".into())
        }),
        ymd(2026, 3, 10)
    );
    assert_eq!(
        day(ReportArgs {
            day: Some("2025-12-31".into())
        }),
        ymd(2025, 12, 31)
    );
    assert_eq!(
        report::day_bounds(ymd(2026, 3, 1)),
        (ms("2026-03-01T00:00:00Z"), ms("2026-03-02T00:00:00Z"))
    );
}

#[test]
fn the_schedule_runs_at_five_past_midnight_utc_and_runs_a_missed_night_once() {
    let s = report::schedule();
    assert_eq!(s.task(), REPORT_TASK);
    assert_eq!(s.timezone().name(), "UTC");
    assert_eq!(s.missed(), Missed::RunOnce);
    assert_eq!(s.queue(), Some(report::REPORT_QUEUE));
    assert_eq!(
        s.upcoming(ms("2026-03-01T00:05:00Z"), 2),
        vec![ms("2026-03-02T00:05:00Z"), ms("2026-03-03T00:05:00Z")]
    );
}

/// The same SQL on PostgreSQL (sums are NUMERIC there unless cast; upserts by `excluded`):
/// the report, and the photo variants' upsert and read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_and_photo_variant_queries_run_on_postgres() {
    let pg = Postgres::start(None);
    let db = Db::connect(&pg.url()).await.expect("PostgreSQL answers");
    db.migrate().await.expect("the schema is created");
    let deps = Deps {
        db: db.clone(),
        smtp: "smtp://127.0.0.1:1".into(),
        data_dir: pg.dir.path().to_path_buf(),
    };
    insert_order(&db, "a", "2026-03-01T01:00:00Z", 1_000, true).await;
    insert_order(&db, "b", "2026-03-01T02:00:00Z", 250, false).await;
    insert_order(&db, "c", "2026-03-02T02:00:00Z", 99, true).await;
    let day = NaiveDate::from_ymd_opt(2026, 3, 1).expect("a date");
    let r = report::build_report(&deps, day).await.expect("the report");
    assert_eq!((r.orders, r.revenue_cents, r.emails_sent), (2, 1_250, 1));
    let again = report::build_report(&deps, day).await.expect("again");
    let stored = report::stored(&deps, "2026-03-01")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored, again);
    assert_eq!(
        (stored.orders, stored.revenue_cents, stored.emails_sent),
        (2, 1_250, 1)
    );
    assert_eq!(report_rows(&db).await, 1);

    let v = |size, width, height| shop::photos::Variant {
        product_id: 3,
        size,
        width,
        height,
        bytes: 100,
    };
    let n = shop::photos::record(&deps, &[v(64, 64, 32), v(256, 256, 128)])
        .await
        .expect("recorded");
    assert_eq!(n, 2);
    shop::photos::record(&deps, &[v(64, 64, 48)])
        .await
        .expect("replaced");
    assert_eq!(
        shop::photos::variants(&deps, 3).await.expect("read"),
        vec![v(64, 64, 48), v(256, 256, 128)]
    );
}
