//! The order confirmation e-mail: a task on the `emails` queue that talks real SMTP (lettre)
//! behind the shared circuit breaker `smtp`.
//!
//! Exactly one e-mail per order, however often its job runs:
//!
//! - the job's id derives from the order's id ([`email_job_id`]), so enqueueing it again (the
//!   outbox sweeper does) adds nothing while the job is known;
//! - the task sends nothing when the order's `email_sent_at_ms` is set, and sets it (with
//!   `email_message_id`) once the SMTP server accepted the message;
//! - between the two (a crash after the SMTP server's `250`, before the update), a job run
//!   again sends the same message again, with the same `Message-ID: <order-{id}@shop.example>`,
//!   which the provider (our sink) recognises as a duplicate and does not deliver twice.
//!
//! Failures are retried with exponential backoff. While the SMTP server fails, the breaker
//! opens (in every worker, through the store) and the jobs wait out the open period without
//! using attempts; half-open probes find out when it answers again.

use std::sync::Arc;
use std::time::Duration;

use celeriac::breaker::{CircuitBreaker, SharedOptions, WindowKind};
use celeriac::{App, Backoff, JobId, JobOptions, TaskContext, TaskDef, TaskError, TaskOptions};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::OnceCell;

use crate::deps::Deps;

/// The confirmation e-mail task.
pub const EMAIL_TASK: &str = "shop.send_confirmation";
/// Its queue.
pub const EMAIL_QUEUE: &str = "emails";
/// The circuit breaker around the SMTP server.
pub const BREAKER: &str = "smtp";
/// Every queue the shop's tasks use (what `shop worker` serves).
pub const QUEUES: &[&str] = &["emails", "photos", "reports"];
/// Who the e-mails are from.
pub const FROM: &str = "Shop <orders@shop.example>";

/// How long one SMTP exchange may take before it counts as failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pooled SMTP connections per process: enough for a worker's concurrency at 200 ms per
/// message.
const POOL_SIZE: u32 = 128;

/// The task's arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailArgs {
    /// The order to confirm.
    pub order_id: String,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailOutcome {
    /// The order.
    pub order_id: String,
    /// The message's Message-ID.
    pub message_id: String,
    /// True when this run sent it; false when it had been sent before (nothing sent).
    pub sent: bool,
    /// When the SMTP server accepted it (Unix ms).
    pub sent_at_ms: i64,
}

/// The e-mail task's defaults: queue `emails`, 25 attempts with backoff from 1 s to 20 s
/// (full jitter), a 20 s soft and 30 s hard time limit, behind the breaker `smtp`.
pub fn options() -> TaskOptions {
    TaskOptions {
        queue: EMAIL_QUEUE.to_string(),
        max_attempts: 25,
        backoff: Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(20),
            jitter: true,
        },
        soft_time_limit: Some(Duration::from_secs(20)),
        hard_time_limit: Some(Duration::from_secs(30)),
        breaker: Some(BREAKER.to_string()),
        ..TaskOptions::default()
    }
}

/// The breaker around the SMTP server, `smtp`: judged over the last 10 s (at least 5 calls),
/// it opens at 50 % failures, stays open 2 s the first time (doubling on trips in a row, at
/// most 5 s), then lets 2 probes decide. A 30 s outage opens it within a second or so of the
/// first failures (a failing server answers at once), and it closes within about 5 s of the
/// server's recovery.
///
/// Register it shared (`App::builder().shared_breaker(mail::breaker(),
/// mail::shared_options(instance))`) so every worker defers its jobs once the store opens it.
pub fn breaker() -> CircuitBreaker {
    CircuitBreaker::builder(BREAKER)
        .window(WindowKind::Time {
            size: Duration::from_secs(10),
            buckets: 10,
        })
        .failure_rate(50.0)
        .min_calls(5)
        .open_for(Duration::from_secs(2))
        .max_open_for(Duration::from_secs(5))
        .half_open_probes(2)
        .build()
        .expect("the smtp breaker's settings are valid")
}

/// How the `smtp` breaker is shared: synced every 500 ms, and a quorum of one instance (the
/// SMTP server is one dependency for the whole fleet: a worker that sees it fail is enough,
/// and `shop` in dev mode has a single worker).
pub fn shared_options(instance: impl Into<String>) -> SharedOptions {
    SharedOptions {
        instance: instance.into(),
        sync_interval: Duration::from_millis(500),
        quorum: 1,
        probe_lease: Duration::from_secs(30),
    }
}

/// The id of the e-mail job of an order: derived from the order's id, the same in every
/// process (a UUID order id keeps its timestamp, so the job sorts by the order's time).
pub fn email_job_id(order_id: &str) -> JobId {
    match order_id.parse::<JobId>() {
        Ok(id) => id.derive("email"),
        Err(_) => {
            const NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
                0x3c, 0x52, 0x8e, 0x1a, 0x0b, 0x47, 0x4f, 0x0e, 0x9d, 0x61, 0x72, 0x19, 0x55, 0xa0,
                0x0c, 0xe3,
            ]);
            let mut b = *uuid::Uuid::new_v5(&NAMESPACE, order_id.as_bytes()).as_bytes();
            b[6] = 0x70 | (b[6] & 0x0f);
            JobId::from_bytes(b)
        }
    }
}

/// The Message-ID of an order's confirmation.
pub fn message_id(order_id: &str) -> String {
    format!("<order-{order_id}@shop.example>")
}

/// Enqueues the confirmation of `order_id` on `emails`, under [`email_job_id`]: calling it
/// again for the same order returns the same job and stores nothing new.
///
/// # Errors
/// The store's error.
pub async fn enqueue(app: &App, order_id: &str) -> celeriac::Result<JobId> {
    let id = email_job_id(order_id);
    let job = JobOptions {
        id: Some(id),
        ..JobOptions::default()
    }
    .build(
        EMAIL_TASK,
        &options(),
        &EmailArgs {
            order_id: order_id.to_string(),
        },
        app.client().now(),
    )?;
    let handles = app.client().push(vec![job]).await?;
    Ok(handles.first().map_or(id, |h| h.id()))
}

/// The e-mail task, with the shop's dependencies (its SMTP transport is pooled and made on
/// first use, one per call of this function: call it once per process).
pub fn tasks(deps: Deps) -> Vec<TaskDef> {
    let mailer = Arc::new(Mailer {
        url: deps.smtp.clone(),
        transport: OnceCell::new(),
    });
    let deps = Arc::new(deps);
    vec![TaskDef::from_fn(
        EMAIL_TASK,
        options(),
        move |ctx: TaskContext, args: EmailArgs| {
            let deps = deps.clone();
            let mailer = mailer.clone();
            async move { send_confirmation(&ctx, &deps, &mailer, args).await }
        },
    )]
}

/// A lazily made, pooled SMTP transport.
struct Mailer {
    url: String,
    transport: OnceCell<AsyncSmtpTransport<Tokio1Executor>>,
}

impl Mailer {
    fn transport(&self) -> Result<&AsyncSmtpTransport<Tokio1Executor>, TaskError> {
        if let Some(t) = self.transport.get() {
            return Ok(t);
        }
        let (host, port) = parse_smtp_url(&self.url).map_err(TaskError::fatal)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(SMTP_TIMEOUT))
            .pool_config(
                PoolConfig::new()
                    .max_size(POOL_SIZE)
                    .idle_timeout(Duration::from_secs(30)),
            )
            .build();
        // Two first uses at once: one transport wins, the other is dropped unused.
        let _ = self.transport.set(transport);
        self.transport
            .get()
            .ok_or_else(|| TaskError::msg("the SMTP transport was not made"))
    }
}

/// `smtp://host:port` (or `host:port`, or `host`) into host and port (default 25).
pub fn parse_smtp_url(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("smtp://").unwrap_or(url);
    if rest.contains("://") {
        return Err(format!(
            "`{url}` is not an SMTP URL: write smtp://host:port (TLS is not supported)"
        ));
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("`{url}` has a bad port `{p}`"))?;
            (h, port)
        }
        _ => (rest, 25),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{url}` names no host: write smtp://host:port"));
    }
    Ok((host.to_string(), port))
}

/// The order as the e-mail needs it.
struct Order {
    email: String,
    items: String,
    total_cents: i64,
    sent_at_ms: Option<i64>,
    message_id: Option<String>,
}

async fn load_order(deps: &Deps, order_id: &str) -> Result<Option<Order>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT email, items, total_cents, email_sent_at_ms, email_message_id \
         FROM orders WHERE id = $1",
    )
    .bind(order_id)
    .fetch_optional(&deps.db.pool)
    .await?;
    row.map(|r| {
        Ok(Order {
            email: r.try_get("email")?,
            items: r.try_get("items")?,
            total_cents: r.try_get("total_cents")?,
            sent_at_ms: r.try_get("email_sent_at_ms")?,
            message_id: r.try_get("email_message_id")?,
        })
    })
    .transpose()
}

async fn send_confirmation(
    ctx: &TaskContext,
    deps: &Deps,
    mailer: &Mailer,
    args: EmailArgs,
) -> Result<EmailOutcome, TaskError> {
    let order_id = args.order_id;
    let id = message_id(&order_id);
    let order = load_order(deps, &order_id)
        .await
        .map_err(|e| TaskError::msg(format!("cannot read order {order_id}: {e}")))?
        .ok_or_else(|| TaskError::fatal(format!("order {order_id} does not exist")))?;
    if let Some(at) = order.sent_at_ms {
        // Sent by an earlier run of this job (or another job for the order): nothing to do.
        return Ok(EmailOutcome {
            order_id,
            message_id: order.message_id.unwrap_or(id),
            sent: false,
            sent_at_ms: at,
        });
    }
    let message = compose(&order_id, &order, &id)?;
    let transport = mailer.transport()?;
    let sent = tokio::select! {
        sent = transport.send(message) => sent,
        _ = ctx.cancelled() => {
            return Err(TaskError::msg("stopped before the SMTP server answered"));
        }
    };
    if let Err(e) = sent {
        return Err(if e.is_permanent() {
            TaskError::fatal(format!("the SMTP server refused the message for good: {e}"))
        } else {
            TaskError::msg(format!("SMTP: {e}"))
        });
    }
    let now = chrono::Utc::now().timestamp_millis();
    // If this fails, the retry sends the same Message-ID again; the provider drops it.
    sqlx::query(
        "UPDATE orders SET email_sent_at_ms = $1, email_message_id = $2 \
         WHERE id = $3 AND email_sent_at_ms IS NULL",
    )
    .bind(now)
    .bind(&id)
    .bind(&order_id)
    .execute(&deps.db.pool)
    .await
    .map_err(|e| {
        TaskError::msg(format!(
            "sent, but cannot record it on order {order_id}: {e}"
        ))
    })?;
    tracing::debug!(order = %order_id, attempt = ctx.attempt(), "confirmation sent");
    Ok(EmailOutcome {
        order_id,
        message_id: id,
        sent: true,
        sent_at_ms: now,
    })
}

/// An item of an order, as stored in `orders.items` (JSON).
#[derive(Deserialize)]
struct Item {
    product_id: i64,
    quantity: i64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    price_cents: Option<i64>,
}

fn compose(order_id: &str, order: &Order, id: &str) -> Result<Message, TaskError> {
    let to: Mailbox = order
        .email
        .parse()
        .map_err(|e| TaskError::fatal(format!("order {order_id}: bad address: {e}")))?;
    let from: Mailbox = FROM
        .parse()
        .map_err(|e| TaskError::fatal(format!("bad sender address: {e}")))?;
    let mut body = format!("Thank you for your order {order_id}.\n\n");
    match serde_json::from_str::<Vec<Item>>(&order.items) {
        Ok(items) => {
            for i in items {
                let name = i
                    .name
                    .unwrap_or_else(|| format!("product {}", i.product_id));
                match i.price_cents {
                    Some(p) => {
                        body.push_str(&format!("  {} x {name} at {}\n", i.quantity, money(p)))
                    }
                    None => body.push_str(&format!("  {} x {name}\n", i.quantity)),
                }
            }
        }
        Err(_) => body.push_str("  (see your account for the items)\n"),
    }
    body.push_str(&format!("\nTotal: {}\n", money(order.total_cents)));
    let order_header: String = order_id.chars().filter(|c| !c.is_control()).collect();
    Message::builder()
        .from(from)
        .to(to)
        .subject(format!("Your order {order_id} is confirmed"))
        .message_id(Some(id.to_string()))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Shop-Order"),
            order_header,
        ))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| TaskError::fatal(format!("order {order_id}: cannot build the e-mail: {e}")))
}

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}${}.{:02}", c / 100, c % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_read() {
        assert_eq!(
            parse_smtp_url("smtp://127.0.0.1:2525"),
            Ok(("127.0.0.1".into(), 2525))
        );
        assert_eq!(
            parse_smtp_url("mail.example"),
            Ok(("mail.example".into(), 25))
        );
        assert_eq!(parse_smtp_url("smtp://[::1]:25/"), Ok(("::1".into(), 25)));
        assert!(parse_smtp_url("smtps://x:465").is_err());
        assert!(parse_smtp_url("smtp://x:port").is_err());
    }

    #[test]
    fn job_ids_derive_from_the_order() {
        let uuid = "0190f1a4-7b2c-7d3e-8f00-112233445566";
        assert_eq!(email_job_id(uuid), email_job_id(uuid));
        assert_ne!(
            email_job_id(uuid),
            email_job_id("0190f1a4-7b2c-7d3e-8f00-112233445567")
        );
        assert_eq!(email_job_id("o-17"), email_job_id("o-17"));
        assert_ne!(email_job_id("o-17"), email_job_id("o-18"));
        assert_eq!(money(123_456), "$1234.56");
        assert_eq!(money(5), "$0.05");
    }
}
