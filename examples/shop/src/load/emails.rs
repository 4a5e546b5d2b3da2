//! Orders against e-mails: the shop's `orders` table and the sink's JSON-lines log.

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Orders and their confirmations after a run.
#[derive(Clone, Debug, Serialize, Default)]
pub(crate) struct EmailCheck {
    /// Rows in `orders`.
    pub(crate) orders: u64,
    /// Orders whose `email_sent_at_ms` is set.
    pub(crate) marked_sent: u64,
    /// Orders with exactly one delivered (non-duplicate) message in the sink's log.
    pub(crate) exactly_one: u64,
    /// Orders with no delivered message.
    pub(crate) missing: u64,
    /// Orders with more than one delivered message (the sink deduplicates by Message-ID, so
    /// this would mean two different Message-IDs for one order).
    pub(crate) delivered_twice: u64,
    /// Messages the sink caught as resends of a Message-ID it had delivered (an SMTP-level
    /// resend after a crash between the SMTP answer and the database update).
    pub(crate) smtp_resends_caught: u64,
    /// Delivered messages that belong to no order of the database.
    pub(crate) unknown: u64,
    /// Delivered messages per order (1.0 is the goal).
    pub(crate) per_order: Option<f64>,
    /// A few order ids without their e-mail, for the report.
    pub(crate) missing_examples: Vec<String>,
}

fn read_orders(db: &Path) -> Result<Vec<(String, Option<i64>)>> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut st = conn.prepare("SELECT id, email_sent_at_ms FROM orders")?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
    })?;
    let mut v = Vec::new();
    for r in rows {
        v.push(r?);
    }
    Ok(v)
}

/// Orders not yet marked sent.
pub(crate) fn pending(db: &Path) -> Result<(u64, u64)> {
    let o = read_orders(db)?;
    let pending = o.iter().filter(|(_, s)| s.is_none()).count() as u64;
    Ok((o.len() as u64, pending))
}

/// Waits until every order is marked sent, or `within` passed. Returns the seconds waited.
pub(crate) async fn drain(db: &Path, within: Duration, progress: impl Fn(u64, u64)) -> Result<f64> {
    let start = Instant::now();
    loop {
        let (all, left) = pending(db)?;
        if left == 0 {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > within {
            return Ok(start.elapsed().as_secs_f64());
        }
        progress(all, left);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Compares the orders with the sink's log.
pub(crate) fn check(db: &Path, mail_log: &Path) -> Result<EmailCheck> {
    let orders = read_orders(db)?;
    let text = std::fs::read_to_string(mail_log).unwrap_or_default();
    let mut delivered: HashMap<String, u64> = HashMap::new();
    let mut c = EmailCheck::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let order = v
            .get("order")
            .and_then(|o| {
                o.as_str()
                    .map(str::to_string)
                    .or_else(|| o.as_i64().map(|i| i.to_string()))
            })
            .unwrap_or_default();
        if v.get("duplicate").and_then(serde_json::Value::as_bool) == Some(true) {
            c.smtp_resends_caught += 1;
        } else {
            *delivered.entry(order).or_default() += 1;
        }
    }
    c.orders = orders.len() as u64;
    let mut known = 0u64;
    for (id, sent) in &orders {
        if sent.is_some() {
            c.marked_sent += 1;
        }
        match delivered.get(id).copied().unwrap_or(0) {
            0 => {
                c.missing += 1;
                if c.missing_examples.len() < 5 {
                    c.missing_examples.push(id.clone());
                }
            }
            1 => c.exactly_one += 1,
            _ => c.delivered_twice += 1,
        }
        known += delivered.get(id).copied().unwrap_or(0);
    }
    let total: u64 = delivered.values().sum();
    c.unknown = total.saturating_sub(known);
    c.per_order = (c.orders > 0).then(|| known as f64 / c.orders as f64);
    Ok(c)
}
