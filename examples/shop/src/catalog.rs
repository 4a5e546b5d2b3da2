//! The product catalog: `GET /products?category=C&page=N`, `GET /products/{id}` and
//! `PUT /products/{id}`, read through Celeriac's two-level cache.
//!
//! - **Listing**: 20 products a page (pages from 1) of one category, best rated first (the
//!   average rating, then the number of reviews, then the id), each with its average rating
//!   and review count from a query joining `reviews`. Cached in the namespace `listing` under
//!   the key `C:N`, tagged `category:C` and `page:C:N`.
//! - **A product**: the same figures for one product, cached in the namespace `product`
//!   under its id, tagged `product:ID`; "not found" is cached for the ttl too.
//! - **An update** (`{"price_cents": N}` and/or `{"name": "..."}`) writes the database, finds
//!   the page the product is on (an update changes neither its rating nor its review count,
//!   so it stays there), then, before answering, invalidates the tags `page:C:N` and
//!   `product:ID` in this instance and, through the cache's invalidation broadcast (Redis
//!   pub/sub, or the embedded store's 100 ms poll), in every other instance. One page of one
//!   category is loaded again, not the whole category. When the page cannot be found (the
//!   query failed), the whole category's tag is invalidated instead.
//!
//! With the cache off (`routes(shop, false)`, `shop serve --no-cache`) every request runs
//! its query.
//!
//! # How stale a listing can be
//!
//! After a `PUT` has answered, another instance may still serve the old listing (or product)
//! for at most the time the answer gives in `stale_for_ms`; `invalidated` says which case
//! applies:
//!
//! - **`everywhere`, Redis up: 0.5 s** ([`CatalogOptions::bound_with_broadcast`]). The
//!   other instances drop their copies when the broadcast reaches them: Redis pub/sub
//!   delivers in about a millisecond on one host, so in practice their next request sees
//!   the change (the test sees it on the first one); [`DELIVERY`] allows 0.5 s. A tag
//!   invalidation is a barrier in time: it bars every value of the tag created before it,
//!   and a loaded value counts as created when its load began, so a reload that read the
//!   database before the update but stored its value after the invalidation is barred too.
//! - **`local`, Redis down or restarting: 7.3 s**
//!   ([`CatalogOptions::bound_without_broadcast`]). Neither the L2 nor the channel can be
//!   reached: the updating instance drops its own copies and answers; the others keep what
//!   their L1 holds until it expires. A value holding the old row was loaded at most one
//!   [`LOAD_TIMEOUT`] after the update committed, is fresh for [`TTL`] (5 s), and then is
//!   served once more while one background refresh runs (at most three L2 calls that fail
//!   within [`L2_TIMEOUT`], 100 ms, and the query, [`LOAD_TIMEOUT`]): 1 + 5 + 0.3 + 1 s.
//!   Values in a Redis that comes back with its AOF were written before it went down, so the
//!   same bound holds for them. Once Redis answers, each instance flushes its L1 when its
//!   subscription comes back (after a backoff of at most 5 s), and the update's
//!   invalidation, retried every 500 ms in the background, reaches the L2 and the others.
//!   For [`TROUBLE_MEMORY`] (40 s) after this instance last saw the store fail, an update
//!   that was broadcast still promises only this bound: other instances may not be
//!   listening again yet.
//! - **The exception**: when a refresh's query itself fails (the database is down, or
//!   slower than [`LOAD_TIMEOUT`]), the previous value is served (fail-safe) rather than an
//!   error, and the query retried every second, for up to [`STALE_FOR`] (5 minutes):
//!   listings keep answering, freshness waits for the database.
//!
//! Times are compared on the store's fleet clock, which the instances share to within a few
//! milliseconds. Pub/sub delivers at most once: an instance whose subscription broke while
//! Redis stayed up flushes its L1 when it resubscribes (within the same backoff).

use crate::shop::Shop;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use celeriac::cache::{Cache, CacheError};
use celeriac::AnyBackend;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Products on a listing page.
pub const PER_PAGE: i64 = 20;
/// The last page a listing serves (deeper offsets would only scan).
pub const MAX_PAGE: i64 = 10_000;
/// How long a cached listing or product is fresh.
pub const TTL: Duration = Duration::from_secs(5);
/// How long past its freshness a value may stand in: served at once while one background
/// refresh runs (stale-while-revalidate), and served when the refresh's query fails
/// (fail-safe).
pub const STALE_FOR: Duration = Duration::from_secs(300);
/// The longest a cached query (a load) may take; past it the load fails (and a stale value
/// stands in if there is one).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(1);
/// The timeout of each call of the cache to Redis (or SQLite).
pub const L2_TIMEOUT: Duration = Duration::from_millis(100);
/// Allowed for an invalidation broadcast to reach the other instances (Redis pub/sub
/// delivers in about a millisecond on one host).
pub const DELIVERY: Duration = Duration::from_millis(500);
/// How often a failed invalidation is tried again (Redis down).
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How long a cached query waits for another process's load of the same key before loading
/// itself (or serving stale).
const LOCK_WAIT: Duration = Duration::from_millis(250);
/// The longest category name accepted.
const MAX_CATEGORY: usize = 100;

/// How the catalog serves: the cache on or off, and its timings (the defaults are the
/// constants of this module; tests lengthen the ttl).
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    /// Read through the cache (else every request runs its query).
    pub cache: bool,
    /// [`TTL`].
    pub ttl: Duration,
    /// [`STALE_FOR`].
    pub stale_for: Duration,
    /// [`LOAD_TIMEOUT`].
    pub load_timeout: Duration,
    /// [`L2_TIMEOUT`].
    pub l2_timeout: Duration,
}

impl CatalogOptions {
    /// The defaults, with the cache on or off.
    pub fn new(cache: bool) -> Self {
        CatalogOptions {
            cache,
            ttl: TTL,
            stale_for: STALE_FOR,
            load_timeout: LOAD_TIMEOUT,
            l2_timeout: L2_TIMEOUT,
        }
    }

    /// The longest another instance serves the old listing after an update answered, while
    /// the invalidation broadcast works (see the [module docs](self)).
    pub fn bound_with_broadcast(&self) -> Duration {
        DELIVERY
    }

    /// The same while Redis is down or restarting (see the [module docs](self)).
    pub fn bound_without_broadcast(&self) -> Duration {
        self.ttl + self.load_timeout * 2 + self.l2_timeout * 3
    }
}

/// A product with its reviews' figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Its id.
    pub id: i64,
    /// Its category.
    pub category: String,
    /// Its name.
    pub name: String,
    /// Its price in cents.
    pub price_cents: i64,
    /// When it was last changed (Unix ms).
    pub updated_at_ms: i64,
    /// The average rating of its reviews (none without reviews).
    pub rating: Option<f64>,
    /// How many reviews it has.
    pub reviews: i64,
}

/// One page of a category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    /// The category.
    pub category: String,
    /// The page (from 1).
    pub page: i64,
    /// Products per page.
    pub per_page: i64,
    /// Products in the category.
    pub total: i64,
    /// The page's products, best rated first.
    pub products: Vec<Product>,
}

/// A query that failed or took too long (the text of the database's error).
#[derive(Debug, Clone)]
pub struct DbError(String);

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        DbError(e.to_string())
    }
}

const LISTING_SQL: &str = "SELECT p.id, p.category, p.name, p.price_cents, p.updated_at_ms,
    CAST(AVG(r.rating) AS DOUBLE PRECISION) AS rating, COUNT(r.id) AS reviews
    FROM products p LEFT JOIN reviews r ON r.product_id = p.id
    WHERE p.category = $1
    GROUP BY p.id, p.category, p.name, p.price_cents, p.updated_at_ms
    ORDER BY COALESCE(AVG(r.rating), 0) DESC, COUNT(r.id) DESC, p.id
    LIMIT $2 OFFSET $3";

/// The rank (from 1) of a product in its category's listing order.
const RANK_SQL: &str = "SELECT rn FROM (SELECT p.id AS id,
    ROW_NUMBER() OVER (ORDER BY COALESCE(AVG(r.rating), 0) DESC, COUNT(r.id) DESC, p.id) AS rn
    FROM products p LEFT JOIN reviews r ON r.product_id = p.id
    WHERE p.category = $1
    GROUP BY p.id) ranked WHERE id = $2";

const COUNT_SQL: &str = "SELECT COUNT(*) AS n FROM products WHERE category = $1";

const PRODUCT_SQL: &str = "SELECT p.id, p.category, p.name, p.price_cents, p.updated_at_ms,
    CAST(AVG(r.rating) AS DOUBLE PRECISION) AS rating, COUNT(r.id) AS reviews
    FROM products p LEFT JOIN reviews r ON r.product_id = p.id
    WHERE p.id = $1
    GROUP BY p.id, p.category, p.name, p.price_cents, p.updated_at_ms";

fn product_of(row: &sqlx::any::AnyRow) -> Result<Product, sqlx::Error> {
    let rating: Option<f64> = row.try_get("rating")?;
    Ok(Product {
        id: row.try_get("id")?,
        category: row.try_get("category")?,
        name: row.try_get("name")?,
        price_cents: row.try_get("price_cents")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        rating: rating.map(|r| (r * 100.0).round() / 100.0),
        reviews: row.try_get("reviews")?,
    })
}

/// Runs the listing query: one page of `category`.
///
/// # Errors
/// The database's.
pub async fn query_listing(
    pool: &sqlx::AnyPool,
    category: &str,
    page: i64,
) -> Result<Listing, DbError> {
    let rows = sqlx::query(LISTING_SQL)
        .bind(category.to_string())
        .bind(PER_PAGE)
        .bind((page - 1) * PER_PAGE)
        .fetch_all(pool)
        .await?;
    let products = rows.iter().map(product_of).collect::<Result<Vec<_>, _>>()?;
    let total: i64 = sqlx::query(COUNT_SQL)
        .bind(category.to_string())
        .fetch_one(pool)
        .await?
        .try_get("n")?;
    Ok(Listing {
        category: category.to_string(),
        page,
        per_page: PER_PAGE,
        total,
        products,
    })
}

/// Runs the product query.
///
/// # Errors
/// The database's.
pub async fn query_product(pool: &sqlx::AnyPool, id: i64) -> Result<Option<Product>, DbError> {
    let row = sqlx::query(PRODUCT_SQL)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(product_of).transpose()?)
}

/// The caches of the catalog.
struct Caches {
    listing: Cache<str, Listing, AnyBackend>,
    product: Cache<i64, Product, AnyBackend>,
}

/// The catalog's state, shared by its handlers.
struct Catalog {
    pool: sqlx::AnyPool,
    opts: CatalogOptions,
    caches: Option<Arc<Caches>>,
    retrier: Arc<Retrier>,
    /// When this instance last saw the store fail, for the bound an update promises.
    trouble: Arc<Trouble>,
}

/// How long after a store failure an update still promises only the bound without the
/// broadcast: the other instances may not be listening again yet. Their subscription comes
/// back within its backoff (at most 5 s) in most restarts, but a 10-minute fault run saw one
/// instance miss broadcasts for 22–26 s after Redis answered again, and the cache's L2 backs
/// off for up to 30 s after a long outage; 40 s covers both.
pub const TROUBLE_MEMORY: Duration = Duration::from_secs(40);

/// The last time this instance saw the store fail.
struct Trouble {
    origin: Instant,
    /// Milliseconds since `origin`, plus one; 0: never.
    at: AtomicU64,
}

impl Trouble {
    fn new() -> Self {
        Trouble {
            origin: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    fn saw(&self) {
        self.at.store(self.now(), Ordering::Relaxed);
    }

    fn recent(&self) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        at != 0 && self.now().saturating_sub(at) < TROUBLE_MEMORY.as_millis() as u64
    }
}

/// The tag of a category's listings.
fn category_tag(category: &str) -> String {
    format!("category:{category}")
}

/// The tag of one listing page.
fn page_tag(category: &str, page: i64) -> String {
    format!("page:{category}:{page}")
}

/// The tag of a product's entry.
fn product_tag(id: i64) -> String {
    format!("product:{id}")
}

/// The catalog's routes with the default settings, the cache on or off.
///
/// # Errors
/// When a cache cannot be built (a bad setting).
pub async fn routes(shop: Shop, cache: bool) -> anyhow::Result<Router> {
    routes_with(shop, CatalogOptions::new(cache)).await
}

/// The catalog's routes with these settings.
///
/// # Errors
/// When a cache cannot be built (a bad setting).
pub async fn routes_with(shop: Shop, opts: CatalogOptions) -> anyhow::Result<Router> {
    let caches = if opts.cache {
        let backend = shop.app.backend().clone();
        let listing = Cache::<str, Listing, ()>::builder("listing")
            .ttl(opts.ttl)
            .stale_for(opts.stale_for)
            .stale_while_revalidate(true)
            .fail_safe(true, Duration::from_secs(1))
            .l2_timeout(opts.l2_timeout)
            .load_lock(opts.load_timeout * 2, LOCK_WAIT)
            .build(backend.clone())
            .await?;
        let product = Cache::<i64, Product, ()>::builder("product")
            .ttl(opts.ttl)
            .stale_for(opts.stale_for)
            .stale_while_revalidate(true)
            .fail_safe(true, Duration::from_secs(1))
            .negative_ttl(opts.ttl)
            .l2_timeout(opts.l2_timeout)
            .load_lock(opts.load_timeout * 2, LOCK_WAIT)
            .l1(50_000, opts.ttl + opts.stale_for)
            .build(backend)
            .await?;
        Some(Arc::new(Caches { listing, product }))
    } else {
        None
    };
    let catalog = Arc::new(Catalog {
        pool: shop.deps.db.pool.clone(),
        retrier: Arc::new(Retrier::default()),
        trouble: Arc::new(Trouble::new()),
        opts,
        caches,
    });
    Ok(Router::new()
        .route("/products", get(listing))
        .route("/products/{id}", get(product).put(update))
        .with_state(catalog))
}

/// A JSON error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn unavailable<E: fmt::Display>(e: CacheError<E>) -> Response {
    match e {
        CacheError::NotFound { .. } => error(StatusCode::NOT_FOUND, "no such product"),
        other => {
            tracing::warn!(error = %other, "catalog query failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the catalog is unavailable; try again shortly",
            )
        }
    }
}

/// The query of `GET /products`.
#[derive(Debug, Deserialize)]
struct ListingQuery {
    category: Option<String>,
    page: Option<String>,
}

async fn listing(
    State(c): State<Arc<Catalog>>,
    query: Result<Query<ListingQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "the query string does not parse");
    };
    let category = match q.category.as_deref().map(str::trim) {
        Some(c) if !c.is_empty() && c.len() <= MAX_CATEGORY && !c.contains(char::is_control) => c,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("give a category: ?category=NAME (1 to {MAX_CATEGORY} characters)"),
            )
        }
    };
    let page = match q.page.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(p) => match p.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("page must be a number from 1 to {MAX_PAGE}"),
                )
            }
        },
    };
    // Without the cache, the query runs as long as it needs (the pool's acquire timeout
    // bounds the wait for a connection): the uncached figures measure the database.
    let Some(caches) = &c.caches else {
        return match query_listing(&c.pool, category, page).await {
            Ok(l) => Json(l).into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "listing query failed");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the catalog is unavailable; try again shortly",
                )
            }
        };
    };
    let key = format!("{category}:{page}");
    let pool = c.pool.clone();
    let owned = category.to_string();
    let limit = c.opts.load_timeout;
    let got = caches
        .listing
        .entry(key.as_str())
        .tags([category_tag(category), page_tag(category, page)])
        .try_get_with(move || async move {
            timed(limit, query_listing(&pool, &owned, page))
                .await
                .map(Some)
        })
        .await;
    match got {
        Ok(l) => Json(l).into_response(),
        Err(e) => unavailable(e),
    }
}

/// Runs a query under the load timeout.
async fn timed<T>(
    limit: Duration,
    query: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(limit, query).await {
        Ok(r) => r,
        Err(_) => Err(DbError(format!("the query took longer than {limit:?}"))),
    }
}

/// A product id from the path: a positive number.
fn product_id(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}

fn bad_id() -> Response {
    error(StatusCode::BAD_REQUEST, "a product id is a positive number")
}

async fn product(State(c): State<Arc<Catalog>>, Path(raw): Path<String>) -> Response {
    let Some(id) = product_id(&raw) else {
        return bad_id();
    };
    let Some(caches) = &c.caches else {
        return match query_product(&c.pool, id).await {
            Ok(Some(p)) => Json(p).into_response(),
            Ok(None) => error(StatusCode::NOT_FOUND, "no such product"),
            Err(e) => {
                tracing::warn!(error = %e, "product query failed");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the catalog is unavailable; try again shortly",
                )
            }
        };
    };
    let pool = c.pool.clone();
    let limit = c.opts.load_timeout;
    let got = caches
        .product
        .entry(&id)
        .tags([product_tag(id)])
        .try_get_with(move || async move { timed(limit, query_product(&pool, id)).await })
        .await;
    match got {
        Ok(p) => Json(p).into_response(),
        Err(e) => unavailable(e),
    }
}

/// The body of `PUT /products/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    price_cents: Option<i64>,
    name: Option<String>,
}

/// What `PUT /products/{id}` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Updated {
    /// The product as stored now.
    pub product: Product,
    /// `everywhere`: the invalidation reached the store and was broadcast to every instance
    /// before this answer; `local`: the store is unreachable, so only this instance dropped
    /// its copies (the invalidation is retried in the background).
    pub invalidated: String,
    /// The longest another instance may still serve the old values, in ms: the bound with
    /// the broadcast (0.5 s), or without it (7.3 s) when it was not sent or this instance
    /// saw the store fail in the last [`TROUBLE_MEMORY`]; 0 without the cache. See the
    /// [module docs](self).
    pub stale_for_ms: u64,
}

async fn update(
    State(c): State<Arc<Catalog>>,
    Path(raw): Path<String>,
    body: Result<Json<Update>, JsonRejection>,
) -> Response {
    let Some(id) = product_id(&raw) else {
        return bad_id();
    };
    let Update { price_cents, name } = match body {
        Ok(Json(u)) => u,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON with `price_cents` and/or `name`: {}",
                    e.body_text()
                ),
            )
        }
    };
    if price_cents.is_none() && name.is_none() {
        return error(StatusCode::BAD_REQUEST, "give `price_cents` and/or `name`");
    }
    if price_cents.is_some_and(|p| !(0..=1_000_000_000).contains(&p)) {
        return error(
            StatusCode::BAD_REQUEST,
            "price_cents must be from 0 to 1,000,000,000",
        );
    }
    let name = name.map(|n| n.trim().to_string());
    if name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > 200 || n.contains(char::is_control))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "name must have 1 to 200 characters",
        );
    }
    let now = chrono::Utc::now().timestamp_millis();
    let stored = match (price_cents, name) {
        (Some(p), Some(n)) => sqlx::query(
            "UPDATE products SET price_cents = $1, name = $2, updated_at_ms = $3 WHERE id = $4
             RETURNING category",
        )
        .bind(p)
        .bind(n)
        .bind(now)
        .bind(id),
        (Some(p), None) => sqlx::query(
            "UPDATE products SET price_cents = $1, updated_at_ms = $2 WHERE id = $3
             RETURNING category",
        )
        .bind(p)
        .bind(now)
        .bind(id),
        (None, Some(n)) => sqlx::query(
            "UPDATE products SET name = $1, updated_at_ms = $2 WHERE id = $3
             RETURNING category",
        )
        .bind(n)
        .bind(now)
        .bind(id),
        (None, None) => return error(StatusCode::BAD_REQUEST, "nothing to update"),
    }
    .fetch_optional(&c.pool)
    .await;
    let category: String = match stored {
        Ok(Some(row)) => match row.try_get("category") {
            Ok(c) => c,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such product"),
        Err(e) => {
            tracing::warn!(error = %e, "product update failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the product could not be updated; try again shortly",
            );
        }
    };
    let (invalidated, stale_for) = match &c.caches {
        None => ("everywhere", Duration::ZERO),
        Some(caches) => {
            if !caches.listing.l2_available() || !caches.product.l2_available() {
                c.trouble.saw();
            }
            let page = match page_of(&c.pool, &category, id).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, id, "the product's page is unknown: invalidating its whole category");
                    None
                }
            };
            let tags = [
                page.map_or_else(|| category_tag(&category), |n| page_tag(&category, n)),
                product_tag(id),
            ];
            let failed = invalidate(caches, &tags).await;
            if !failed.is_empty() {
                c.retrier
                    .retry(caches.clone(), c.trouble.clone(), c.opts.stale_for, failed);
                c.trouble.saw();
                ("local", c.opts.bound_without_broadcast())
            } else if c.trouble.recent() {
                // Broadcast, but the others may not all be listening again yet.
                ("everywhere", c.opts.bound_without_broadcast())
            } else {
                ("everywhere", c.opts.bound_with_broadcast())
            }
        }
    };
    let product = match query_product(&c.pool, id).await {
        Ok(Some(p)) => p,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such product"),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    Json(Updated {
        product,
        invalidated: invalidated.to_string(),
        stale_for_ms: u64::try_from(stale_for.as_millis()).unwrap_or(u64::MAX),
    })
    .into_response()
}

/// The page of its category a product is listed on (none: no such product).
///
/// # Errors
/// The database's.
pub async fn page_of(
    pool: &sqlx::AnyPool,
    category: &str,
    id: i64,
) -> Result<Option<i64>, DbError> {
    let rank: Option<i64> = sqlx::query_scalar(RANK_SQL)
        .bind(category.to_string())
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(rank.map(|r| (r - 1) / PER_PAGE + 1))
}

/// Invalidates the tags, here and (through the store) everywhere. Returns those that did
/// not reach the store or were not broadcast (none: all did).
async fn invalidate(caches: &Caches, tags: &[String]) -> Vec<String> {
    let calls = tags.iter().map(|tag| async move {
        let r = if tag.starts_with("product:") {
            caches.product.invalidate_tag(tag).await
        } else {
            caches.listing.invalidate_tag(tag).await
        };
        r.map_err(|e| {
            tracing::debug!(error = %e, tag, "invalidation not stored");
            tag.clone()
        })
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

/// Invalidations that did not reach the store (Redis down), tried again every
/// [`RETRY_EVERY`] until they do, for up to the stale window. One task while any is left.
#[derive(Default)]
struct Retrier {
    /// Each tag left, with when it first failed.
    pending: Mutex<HashMap<String, Instant>>,
}

impl Retrier {
    /// Adds `tags` to the retries, starting the task if none runs.
    fn retry(
        self: &Arc<Self>,
        caches: Arc<Caches>,
        trouble: Arc<Trouble>,
        give_up: Duration,
        tags: Vec<String>,
    ) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let start = pending.is_empty();
        let now = Instant::now();
        for tag in tags {
            pending.entry(tag).or_insert(now);
        }
        drop(pending);
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.run(caches, trouble, give_up).await });
        }
    }

    /// Tries the pending invalidations until none is left.
    async fn run(self: Arc<Self>, caches: Arc<Caches>, trouble: Arc<Trouble>, give_up: Duration) {
        loop {
            tokio::time::sleep(RETRY_EVERY).await;
            let tags: Vec<String> = match self.pending.lock() {
                Ok(p) => p.keys().cloned().collect(),
                Err(_) => return,
            };
            let failed = invalidate(&caches, &tags).await;
            if !failed.is_empty() {
                trouble.saw();
            }
            let Ok(mut pending) = self.pending.lock() else {
                return;
            };
            let now = Instant::now();
            pending.retain(|tag, since| {
                let keep = failed.contains(tag) && now.duration_since(*since) <= give_up;
                if failed.contains(tag) && !keep {
                    tracing::warn!(
                        tag,
                        "giving up an invalidation: the store stayed unreachable"
                    );
                }
                keep
            });
            if pending.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_follow_the_settings() {
        let o = CatalogOptions::new(true);
        assert_eq!(o.bound_with_broadcast(), Duration::from_millis(500));
        assert_eq!(o.bound_without_broadcast(), Duration::from_millis(7300));
    }
}
