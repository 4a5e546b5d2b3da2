//! The nightly report: a periodic schedule (`5 0 * * *`, UTC) whose task sums up a day of
//! orders — how many, the revenue, how many confirmations were sent — into `reports`, one
//! row per day (run again, it replaces the day's row).
//!
//! The day is the task's `day` argument (`YYYY-MM-DD`, `yesterday` or `today`, UTC) when
//! given; otherwise the day before the schedule's tick (so a tick fired late, or caught up
//! after a missed night, still reports the right day); otherwise yesterday.

use std::sync::Arc;
use std::time::Duration;

use celeriac::{Missed, Schedule, TaskContext, TaskDef, TaskError, TaskOptions};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::deps::Deps;

/// The report task.
pub const REPORT_TASK: &str = "shop.nightly_report";
/// Its queue.
pub const REPORT_QUEUE: &str = "reports";
/// The schedule's name.
pub const SCHEDULE: &str = "shop.nightly-report";
/// When it runs: 00:05 every day (UTC).
pub const CRON: &str = "5 0 * * *";

const DAY_MS: i64 = 86_400_000;

/// The task's arguments (all optional: the schedule passes none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportArgs {
    /// The day to report on: `YYYY-MM-DD`, `yesterday` or `today` (UTC).
    #[serde(default)]
    pub day: Option<String>,
}

/// One day's figures, as stored in `reports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The day (`YYYY-MM-DD`, UTC).
    pub day: String,
    /// Orders created that day.
    pub orders: i64,
    /// Their total, in cents.
    pub revenue_cents: i64,
    /// How many of them had their confirmation sent (when the report ran).
    pub emails_sent: i64,
    /// When the report was made (Unix ms).
    pub created_at_ms: i64,
}

/// The report task's defaults: queue `reports`, 5 attempts, a 5-minute hard time limit.
pub fn options() -> TaskOptions {
    TaskOptions {
        queue: REPORT_QUEUE.to_string(),
        max_attempts: 5,
        hard_time_limit: Some(Duration::from_secs(300)),
        ..TaskOptions::default()
    }
}

/// The report task, with the shop's dependencies.
pub fn tasks(deps: Deps) -> Vec<TaskDef> {
    let deps = Arc::new(deps);
    vec![TaskDef::from_fn(
        REPORT_TASK,
        options(),
        move |ctx: TaskContext, args: Option<ReportArgs>| {
            let deps = deps.clone();
            async move {
                let day = report_day(&ctx, &args.unwrap_or_default(), Utc::now())?;
                let report = build_report(&deps, day)
                    .await
                    .map_err(|e| TaskError::msg(format!("report for {day}: {e}")))?;
                tracing::info!(
                    day = %report.day,
                    orders = report.orders,
                    revenue_cents = report.revenue_cents,
                    emails_sent = report.emails_sent,
                    "nightly report"
                );
                Ok(report)
            }
        },
    )]
}

/// The nightly schedule: [`REPORT_TASK`] at 00:05 UTC every day; a missed night runs once
/// when a beat is back.
pub fn schedule() -> Schedule {
    Schedule::builder(SCHEDULE)
        .cron(CRON)
        .timezone("UTC")
        .task(REPORT_TASK)
        .args(serde_json::json!({}))
        .queue(REPORT_QUEUE)
        .missed(Missed::RunOnce)
        .build()
        .expect("the nightly schedule is valid")
}

/// The day a run reports on (see the module documentation).
///
/// # Errors
/// A fatal error for a `day` that is not a date.
pub fn report_day(
    ctx: &TaskContext,
    args: &ReportArgs,
    now: DateTime<Utc>,
) -> Result<NaiveDate, TaskError> {
    let today = now.date_naive();
    if let Some(day) = args.day.as_deref().map(str::trim) {
        return match day {
            "yesterday" => Ok(today.pred_opt().unwrap_or(today)),
            "today" => Ok(today),
            d => NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|e| {
                TaskError::fatal(format!(
                    "`{d}` is not a day: write YYYY-MM-DD, yesterday or today ({e})"
                ))
            }),
        };
    }
    let tick = ctx
        .headers()
        .get(celeriac::beat::TICK_HEADER)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc).date_naive());
    let base = tick.unwrap_or(today);
    Ok(base.pred_opt().unwrap_or(base))
}

/// The first and past-the-last Unix ms of `day` (UTC).
pub fn day_bounds(day: NaiveDate) -> (i64, i64) {
    let start = day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default();
    (start, start + DAY_MS)
}

/// Sums up `day`'s orders and stores the row (replacing an earlier one for the day).
///
/// # Errors
/// The database's error.
pub async fn build_report(deps: &Deps, day: NaiveDate) -> Result<Report, sqlx::Error> {
    let (from, until) = day_bounds(day);
    // Casts: PostgreSQL's SUM of BIGINT is NUMERIC, which the Any driver does not read.
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS orders, \
                CAST(COALESCE(SUM(total_cents), 0) AS BIGINT) AS revenue, \
                CAST(COALESCE(SUM(CASE WHEN email_sent_at_ms IS NOT NULL THEN 1 ELSE 0 END), 0) \
                     AS BIGINT) AS emails \
         FROM orders WHERE created_at_ms >= $1 AND created_at_ms < $2",
    )
    .bind(from)
    .bind(until)
    .fetch_one(&deps.db.pool)
    .await?;
    let report = Report {
        day: day.format("%Y-%m-%d").to_string(),
        orders: row.try_get("orders")?,
        revenue_cents: row.try_get("revenue")?,
        emails_sent: row.try_get("emails")?,
        created_at_ms: Utc::now().timestamp_millis(),
    };
    sqlx::query(
        "INSERT INTO reports (day, orders, revenue_cents, emails_sent, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (day) DO UPDATE SET orders = excluded.orders, \
             revenue_cents = excluded.revenue_cents, emails_sent = excluded.emails_sent, \
             created_at_ms = excluded.created_at_ms",
    )
    .bind(&report.day)
    .bind(report.orders)
    .bind(report.revenue_cents)
    .bind(report.emails_sent)
    .bind(report.created_at_ms)
    .execute(&deps.db.pool)
    .await?;
    Ok(report)
}

/// The stored report of `day`, if any.
///
/// # Errors
/// The database's error.
pub async fn stored(deps: &Deps, day: &str) -> Result<Option<Report>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT day, orders, revenue_cents, emails_sent, created_at_ms FROM reports WHERE day = $1",
    )
    .bind(day)
    .fetch_optional(&deps.db.pool)
    .await?;
    row.map(|r| {
        Ok(Report {
            day: r.try_get("day")?,
            orders: r.try_get("orders")?,
            revenue_cents: r.try_get("revenue_cents")?,
            emails_sent: r.try_get("emails_sent")?,
            created_at_ms: r.try_get("created_at_ms")?,
        })
    })
    .transpose()
}
