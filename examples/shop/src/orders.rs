//! Orders: `POST /orders` stores an order and enqueues its confirmation e-mail without
//! waiting for it; `GET /orders/{id}` shows it. The outbox sweeper enqueues what a request
//! could not (the store was down).
//!
//! The request's path is one SQL statement that prices and stores the order together (an
//! `INSERT ... SELECT` over the products, so a price is read where it is used) and one
//! enqueue; the job is recorded in `orders.email_job` just after the answer, by a task that
//! batches the records of concurrent orders into one `UPDATE`. On SQLite the writes of a
//! process take turns ([`Db::write_turn`](crate::db::Db::write_turn)) rather than sleeping
//! in SQLite's busy handler. When the enqueue fails or times out the order is still accepted
//! (`201`, `"email_job": null`): its row keeps `email_job IS NULL`, and [`spawn_outbox`]
//! enqueues it within a few seconds once the store answers. Enqueueing twice is harmless: the
//! job's id derives from the order's ([`mail::enqueue`]).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::now_ms;
use crate::mail;
use crate::shop::Shop;

/// Lines in one order at most.
pub const MAX_ITEMS: usize = 50;
/// The largest quantity of one line.
pub const MAX_QUANTITY: i64 = 1_000;
/// How long a request waits for the store to take the e-mail job before answering without
/// it (the sweeper enqueues it later).
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the outbox sweeper looks for orders without a job.
pub const OUTBOX_EVERY: Duration = Duration::from_secs(1);
/// Orders younger than this are left to their request (which may still be enqueueing).
pub const OUTBOX_GRACE: Duration = Duration::from_secs(3);
/// Orders the sweeper enqueues per round at most.
const OUTBOX_BATCH: i64 = 500;
/// Jobs recorded by one `UPDATE` at most.
const RECORD_BATCH: usize = 100;

/// The body of `POST /orders`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewOrder {
    /// Where the confirmation goes.
    pub email: String,
    /// What is ordered (1 to [`MAX_ITEMS`] lines).
    pub items: Vec<Item>,
}

/// A line of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The product.
    pub product_id: i64,
    /// How many (1 to [`MAX_QUANTITY`]).
    pub quantity: i64,
}

/// The answer to `POST /orders` (`201`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// The new order's id (a UUIDv7).
    pub order_id: String,
    /// The total at the products' prices now, in cents.
    pub total_cents: i64,
    /// The confirmation's job, or `null` when the store did not take it in time (the outbox
    /// sweeper enqueues it).
    pub email_job: Option<String>,
}

/// An order, as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Its id.
    pub order_id: String,
    /// Where the confirmation goes.
    pub email: String,
    /// Its lines (one per product).
    pub items: Vec<Item>,
    /// Its total in cents.
    pub total_cents: i64,
    /// When it was stored (Unix ms).
    pub created_at_ms: i64,
    /// The confirmation's job, once enqueued.
    pub email_job: Option<String>,
    /// When the SMTP server accepted the confirmation (Unix ms), once it did.
    pub email_sent_at_ms: Option<i64>,
    /// The confirmation's Message-ID, once sent.
    pub email_message_id: Option<String>,
}

/// `POST /orders` and `GET /orders/{id}`. Call it inside a Tokio runtime: it starts the
/// task that records the e-mail jobs (it ends with the router).
pub fn routes(shop: Shop) -> Router {
    let recorder = spawn_recorder(shop.clone());
    Router::new()
        .route("/orders", post(create))
        .route("/orders/{id}", get(show))
        .with_state(Orders { shop, recorder })
}

/// The routes' state.
#[derive(Clone)]
struct Orders {
    shop: Shop,
    /// (order, job) pairs to record in `orders.email_job`.
    recorder: mpsc::UnboundedSender<(String, String)>,
}

/// Records e-mail jobs in batches, after the requests answered: one `UPDATE` for whatever
/// accumulated while the previous one ran. A batch that fails is left to the sweeper (the
/// orders keep `email_job IS NULL`; enqueueing them again adds nothing).
fn spawn_recorder(shop: Shop) -> mpsc::UnboundedSender<(String, String)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String)>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            if let Err(e) = record_jobs(&shop, &batch).await {
                tracing::warn!(
                    orders = batch.len(),
                    error = %e,
                    "could not record e-mail jobs; the outbox sweeper will"
                );
            }
            batch.clear();
        }
    });
    tx
}

/// An error answer: a status and `{"error": "..."}`.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(message: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message.into())
}

fn unavailable(what: &str, e: &sqlx::Error) -> Failure {
    tracing::warn!(error = %e, "{what}");
    Failure(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what}: the database did not answer; try again"),
    )
}

/// Checks an order and folds lines of one product together (sorted by product).
fn validate(order: &NewOrder) -> Result<Vec<Item>, Failure> {
    check_email(&order.email)?;
    if order.items.is_empty() {
        return Err(bad("items: an order needs at least one item"));
    }
    if order.items.len() > MAX_ITEMS {
        return Err(bad(format!("items: at most {MAX_ITEMS} lines per order")));
    }
    let mut lines: BTreeMap<i64, i64> = BTreeMap::new();
    for item in &order.items {
        if item.product_id < 1 {
            return Err(bad(format!(
                "items: product_id {} is not a product id",
                item.product_id
            )));
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(bad(format!(
                "items: quantity {} of product {}: give 1 to {MAX_QUANTITY}",
                item.quantity, item.product_id
            )));
        }
        *lines.entry(item.product_id).or_default() += item.quantity;
    }
    let items: Vec<Item> = lines
        .into_iter()
        .map(|(product_id, quantity)| Item {
            product_id,
            quantity,
        })
        .collect();
    if let Some(item) = items.iter().find(|i| i.quantity > MAX_QUANTITY) {
        return Err(bad(format!(
            "items: {} of product {} in all: give at most {MAX_QUANTITY}",
            item.quantity, item.product_id
        )));
    }
    Ok(items)
}

/// An address a confirmation can go to: `local@domain`, printable, no spaces, no brackets.
fn check_email(email: &str) -> Result<(), Failure> {
    let fail = || bad("email: give an e-mail address such as you@example.com");
    if email.len() > 254 || email.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(fail());
    }
    if email.contains(['<', '>', ',', ';', '"', '(', ')', '\\']) {
        return Err(fail());
    }
    match email.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !local.contains('@')
                && domain.len() >= 3
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.') =>
        {
            Ok(())
        }
        _ => Err(fail()),
    }
}

/// The caller's API key: the `x-api-key` header, or the `api_key` query parameter.
fn api_key(headers: &HeaderMap, uri: &Uri) -> String {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return key.to_string();
    }
    uri.query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("api_key="))
        .map(str::to_string)
        .unwrap_or_default()
}

/// The statement that prices and stores an order at once: no row when a product is unknown.
fn insert_sql(lines: usize) -> String {
    // $1 id, $2 api key, $3 e-mail, $4 items (JSON), $5 created; then product, quantity pairs.
    let mut case = String::from("CASE id");
    let mut ids = Vec::with_capacity(lines);
    for i in 0..lines {
        let p = 6 + 2 * i;
        case.push_str(&format!(" WHEN ${p} THEN ${}", p + 1));
        ids.push(format!("${p}"));
    }
    case.push_str(" END");
    format!(
        "INSERT INTO orders (id, api_key, email, items, total_cents, created_at_ms) \
         SELECT $1, $2, $3, $4, SUM(price_cents * {case}), $5 \
         FROM products WHERE id IN ({}) HAVING COUNT(*) = {lines} \
         RETURNING total_cents",
        ids.join(", ")
    )
}

async fn create(
    State(orders): State<Orders>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Json<NewOrder>, JsonRejection>,
) -> Response {
    match create_order(&orders, &headers, &uri, body).await {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(failure) => failure.into_response(),
    }
}

async fn create_order(
    orders: &Orders,
    headers: &HeaderMap,
    uri: &Uri,
    body: Result<Json<NewOrder>, JsonRejection>,
) -> Result<Created, Failure> {
    let shop = &orders.shop;
    let Json(order) = body.map_err(|e| bad(e.body_text()))?;
    let items = validate(&order)?;
    let order_id = uuid::Uuid::now_v7().to_string();
    let items_json = serde_json::to_string(&items)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut key = api_key(headers, uri);
    if key.is_empty() {
        key = "anonymous".into();
    }
    let sql = insert_sql(items.len());
    let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .bind(order_id.clone())
        .bind(key)
        .bind(order.email.clone())
        .bind(items_json)
        .bind(now_ms());
    for item in &items {
        query = query.bind(item.product_id).bind(item.quantity);
    }
    let db = &shop.deps.db;
    let started = std::time::Instant::now();
    let turn = db.write_turn().await;
    let inserted = query.fetch_optional(&db.pool).await;
    drop(turn);
    let total_cents = match inserted {
        Ok(Some(total)) => total,
        Ok(None) => return Err(unknown_products(shop, &items).await),
        Err(e) => return Err(unavailable("storing the order", &e)),
    };
    let stored = started.elapsed();
    let email_job = enqueue_email(shop, &order_id).await;
    if let Some(job) = &email_job {
        // Recorded after the answer; if it never is, the sweeper enqueues the order again
        // (which adds nothing) and records it.
        let _ = orders.recorder.send((order_id.clone(), job.clone()));
    }
    tracing::debug!(
        order = %order_id,
        insert_us = stored.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "order stored and enqueued"
    );
    Ok(Created {
        order_id,
        total_cents,
        email_job,
    })
}

/// Enqueues an order's confirmation; `None` when the store did not take it in time (the
/// order keeps `email_job IS NULL` for the sweeper).
async fn enqueue_email(shop: &Shop, order_id: &str) -> Option<String> {
    match tokio::time::timeout(ENQUEUE_TIMEOUT, mail::enqueue(&shop.app, order_id)).await {
        Ok(Ok(job)) => Some(job.to_string()),
        Ok(Err(e)) => {
            tracing::warn!(order = order_id, error = %e, "the confirmation is not enqueued yet; the outbox will");
            None
        }
        Err(_) => {
            tracing::warn!(
                order = order_id,
                "the store did not take the confirmation within {ENQUEUE_TIMEOUT:?}; the outbox will"
            );
            None
        }
    }
}

/// Records the e-mail job of each (order, job) pair, in one statement, where none is yet.
async fn record_jobs(shop: &Shop, pairs: &[(String, String)]) -> Result<(), sqlx::Error> {
    if pairs.is_empty() {
        return Ok(());
    }
    let mut case = String::from("CASE id");
    let mut ids = Vec::with_capacity(pairs.len());
    for i in 0..pairs.len() {
        let p = 2 * i + 1;
        case.push_str(&format!(" WHEN ${p} THEN ${}", p + 1));
        ids.push(format!("${p}"));
    }
    let sql = format!(
        "UPDATE orders SET email_job = {case} END WHERE id IN ({}) AND email_job IS NULL",
        ids.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (order, job) in pairs {
        query = query.bind(order.clone()).bind(job.clone());
    }
    let db = &shop.deps.db;
    let _turn = db.write_turn().await;
    query.execute(&db.pool).await?;
    Ok(())
}

/// The answer when the order's insert stored nothing: which products are unknown.
async fn unknown_products(shop: &Shop, items: &[Item]) -> Failure {
    let placeholders: Vec<String> = (1..=items.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT id FROM products WHERE id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
    for item in items {
        query = query.bind(item.product_id);
    }
    match query.fetch_all(&shop.deps.db.pool).await {
        Ok(known) => {
            let missing: Vec<String> = items
                .iter()
                .filter(|i| !known.contains(&i.product_id))
                .map(|i| i.product_id.to_string())
                .collect();
            Failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("items: no product {}", missing.join(", ")),
            )
        }
        Err(e) => unavailable("checking the products", &e),
    }
}

async fn show(State(orders): State<Orders>, Path(id): Path<String>) -> Response {
    match find(&orders.shop, &id).await {
        Ok(Some(order)) => Json(order).into_response(),
        Ok(None) => Failure(StatusCode::NOT_FOUND, format!("no order {id}")).into_response(),
        Err(e) => unavailable("reading the order", &e).into_response(),
    }
}

/// The order `id`, if there is one.
///
/// # Errors
/// The database's error.
pub async fn find(shop: &Shop, id: &str) -> Result<Option<Order>, sqlx::Error> {
    if id.is_empty() || id.len() > 64 {
        return Ok(None);
    }
    type Row = (
        String,
        String,
        String,
        i64,
        i64,
        Option<String>,
        Option<i64>,
        Option<String>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, email, items, total_cents, created_at_ms, email_job, email_sent_at_ms, \
         email_message_id FROM orders WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&shop.deps.db.pool)
    .await?;
    Ok(row.map(
        |(order_id, email, items, total_cents, created_at_ms, job, sent, message)| Order {
            order_id,
            email,
            items: serde_json::from_str(&items).unwrap_or_default(),
            total_cents,
            created_at_ms,
            email_job: job,
            email_sent_at_ms: sent,
            email_message_id: message,
        },
    ))
}

/// Enqueues the confirmation of every order older than `grace` whose `email_job` is NULL (at
/// most 500 per call, oldest first) and records the jobs; returns how many it enqueued.
///
/// # Errors
/// The database's or the store's error (what was enqueued before it stays recorded).
pub async fn sweep(shop: &Shop, grace: Duration) -> anyhow::Result<usize> {
    let before = now_ms() - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM orders WHERE email_job IS NULL AND created_at_ms < $1 \
         ORDER BY created_at_ms LIMIT $2",
    )
    .bind(before)
    .bind(OUTBOX_BATCH)
    .fetch_all(&shop.deps.db.pool)
    .await?;
    let mut pairs = Vec::with_capacity(ids.len());
    let mut failed = None;
    for id in ids {
        match tokio::time::timeout(ENQUEUE_TIMEOUT, mail::enqueue(&shop.app, &id)).await {
            Ok(Ok(job)) => pairs.push((id, job.to_string())),
            Ok(Err(e)) => {
                failed = Some(anyhow::Error::new(e));
                break;
            }
            Err(_) => {
                failed = Some(anyhow::anyhow!(
                    "the store did not take a job within {ENQUEUE_TIMEOUT:?}"
                ));
                break;
            }
        }
    }
    // What was enqueued is recorded, even when the store failed on a later order.
    for chunk in pairs.chunks(RECORD_BATCH) {
        record_jobs(shop, chunk).await?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(pairs.len()),
    }
}

/// Runs [`sweep`] every [`OUTBOX_EVERY`] until `stop`, so that every accepted order gets its
/// confirmation enqueued even when its request could not (the store was down). Every instance
/// may run one: enqueueing an order twice adds nothing.
pub fn spawn_outbox(shop: Shop, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(OUTBOX_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match sweep(&shop, OUTBOX_GRACE).await {
                Ok(n) => {
                    if failing {
                        tracing::info!("the outbox sweeper works again");
                        failing = false;
                    }
                    if n > 0 {
                        tracing::info!(orders = n, "the outbox enqueued confirmations");
                    }
                }
                Err(e) => {
                    // Once per outage, not every second.
                    if !failing {
                        tracing::warn!(error = %format!("{e:#}"), "the outbox sweeper failed; retrying every second");
                        failing = true;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(email: &str, items: &[(i64, i64)]) -> NewOrder {
        NewOrder {
            email: email.into(),
            items: items
                .iter()
                .map(|&(product_id, quantity)| Item {
                    product_id,
                    quantity,
                })
                .collect(),
        }
    }

    #[test]
    fn lines_of_one_product_are_folded() {
        let items = validate(&order("a@example.com", &[(3, 1), (1, 2), (3, 4)])).expect("valid");
        assert_eq!(
            items,
            vec![
                Item {
                    product_id: 1,
                    quantity: 2
                },
                Item {
                    product_id: 3,
                    quantity: 5
                }
            ]
        );
    }

    #[test]
    fn bad_orders_are_refused() {
        for (email, items) in [
            ("", vec![(1, 1)]),
            ("no-at.example.com", vec![(1, 1)]),
            ("a@b", vec![(1, 1)]),
            ("a b@example.com", vec![(1, 1)]),
            ("a@example.com\r\nBcc: x@y.z", vec![(1, 1)]),
            ("<a@example.com>", vec![(1, 1)]),
            ("a@example.com", vec![]),
            ("a@example.com", vec![(0, 1)]),
            ("a@example.com", vec![(1, 0)]),
            ("a@example.com", vec![(1, MAX_QUANTITY + 1)]),
            ("a@example.com", vec![(1, MAX_QUANTITY), (1, 1)]),
        ] {
            assert!(
                validate(&order(email, &items)).is_err(),
                "{email:?} {items:?} passed"
            );
        }
        let many: Vec<(i64, i64)> = (1..=(MAX_ITEMS as i64 + 1)).map(|i| (i, 1)).collect();
        assert!(validate(&order("a@example.com", &many)).is_err());
    }

    #[test]
    fn the_insert_numbers_its_parameters() {
        let sql = insert_sql(2);
        assert!(
            sql.contains("CASE id WHEN $6 THEN $7 WHEN $8 THEN $9 END"),
            "{sql}"
        );
        assert!(
            sql.contains("WHERE id IN ($6, $8) HAVING COUNT(*) = 2"),
            "{sql}"
        );
    }

    #[test]
    fn the_api_key_comes_from_the_header_or_the_query() {
        let mut headers = HeaderMap::new();
        let uri: Uri = "/orders?x=1&api_key=k1".parse().expect("a uri");
        assert_eq!(api_key(&headers, &uri), "k1");
        headers.insert("x-api-key", "k2".parse().expect("a header value"));
        assert_eq!(api_key(&headers, &uri), "k2");
    }
}
