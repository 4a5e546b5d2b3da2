//! The shop's database through sqlx: SQLite (a file, the default) or PostgreSQL.
//!
//! Queries are written once for both, through sqlx's `Any` driver: numbered placeholders
//! (`$1`), `BIGINT` integers, times as Unix milliseconds, JSON as `TEXT`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::AnyPoolOptions;
use sqlx::Executor;

/// The schema, created at start when missing (each statement on its own).
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS products (
        id BIGINT PRIMARY KEY,
        category TEXT NOT NULL,
        name TEXT NOT NULL,
        price_cents BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS products_by_category ON products (category, id)",
    "CREATE TABLE IF NOT EXISTS reviews (
        id BIGINT PRIMARY KEY,
        product_id BIGINT NOT NULL,
        rating BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS reviews_by_product ON reviews (product_id)",
    // `email_job`: the Celeriac job of the confirmation, once enqueued (NULL: the outbox
    // sweeper enqueues it). `email_sent_at_ms`: set by the e-mail task once the SMTP server
    // accepted the message, whose Message-ID is `email_message_id`.
    "CREATE TABLE IF NOT EXISTS orders (
        id TEXT PRIMARY KEY,
        api_key TEXT NOT NULL,
        email TEXT NOT NULL,
        items TEXT NOT NULL,
        total_cents BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        email_job TEXT,
        email_sent_at_ms BIGINT,
        email_message_id TEXT)",
    "CREATE INDEX IF NOT EXISTS orders_by_created ON orders (created_at_ms)",
    "CREATE TABLE IF NOT EXISTS reports (
        day TEXT PRIMARY KEY,
        orders BIGINT NOT NULL,
        revenue_cents BIGINT NOT NULL,
        emails_sent BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL)",
    // The outbox sweeper's scan: only the orders whose e-mail is not enqueued yet (a partial
    // index, small however many orders there are).
    "CREATE INDEX IF NOT EXISTS orders_unqueued ON orders (created_at_ms) WHERE email_job IS NULL",
    "CREATE TABLE IF NOT EXISTS photo_variants (
        product_id BIGINT NOT NULL,
        size BIGINT NOT NULL,
        width BIGINT NOT NULL,
        height BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (product_id, size))",
];

/// A pool on the shop's database.
#[derive(Clone, Debug)]
pub struct Db {
    /// The pool (sqlx's `Any` driver: SQLite or PostgreSQL).
    pub pool: sqlx::AnyPool,
}

/// The database used when none is given: a SQLite file under `./shop-data`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://shop-data/shop.db";

/// The product categories of the seeded catalog.
pub const CATEGORIES: [&str; 8] = [
    "books",
    "electronics",
    "garden",
    "kitchen",
    "music",
    "outdoor",
    "tools",
    "toys",
];

/// Connections per process on SQLite (one writer at a time anyway; readers in parallel).
const SQLITE_POOL: u32 = 16;
/// Connections per process on PostgreSQL.
const POSTGRES_POOL: u32 = 16;
/// How long a statement waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per `INSERT` while seeding.
const SEED_BATCH: usize = 500;

/// The current time as Unix milliseconds (the schema's time format).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A database URL with its password masked (`postgres://shop:***@host/db`), for messages.
pub fn redacted(url: &str) -> String {
    celeriac_core::redact::url(url)
}

/// Which database a [`Db`] is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl DbKind {
    /// The kind a database URL names, or an error naming what is accepted.
    ///
    /// # Errors
    /// A URL that is neither `sqlite:` nor `postgres://` / `postgresql://`.
    pub fn of_url(url: &str) -> anyhow::Result<DbKind> {
        if url.starts_with("sqlite:") {
            Ok(DbKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DbKind::Postgres)
        } else {
            anyhow::bail!(
                "`{}` is not a database URL the shop knows: give sqlite://path/to/shop.db or \
                 postgres://user:password@host:port/database",
                redacted(url)
            )
        }
    }
}

/// How much [`Db::seed`] creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedSizes {
    /// Products, spread over the 8 [`CATEGORIES`] (ids 1..=products).
    pub products: u32,
    /// Reviews, each of a product with a rating from 1 to 5.
    pub reviews: u32,
}

impl Default for SeedSizes {
    /// 5,000 products and 100,000 reviews.
    fn default() -> Self {
        SeedSizes {
            products: 5_000,
            reviews: 100_000,
        }
    }
}

/// The file behind a `sqlite:` URL, or `None` for an in-memory database.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(PathBuf::from(path))
}

impl Db {
    /// Connects to `sqlite://path` (creating the file and its folder, in WAL mode) or
    /// `postgres://...`.
    ///
    /// # Errors
    /// An unknown scheme, a folder that cannot be created, or a database that does not
    /// answer; the messages show the URL with its password masked.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let kind = DbKind::of_url(url)?;
        let shown = redacted(url);
        let (url, size) = match kind {
            DbKind::Sqlite => {
                let Some(path) = sqlite_path(url) else {
                    anyhow::bail!(
                        "`{shown}`: give the shop's SQLite database as a file \
                         (sqlite://shop-data/shop.db); an in-memory one is not shared \
                         between connections"
                    );
                };
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("cannot create {} for the database {shown}", dir.display())
                    })?;
                }
                let url = if url.contains("mode=") {
                    url.to_string()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                };
                (url, SQLITE_POOL)
            }
            DbKind::Postgres => (url.to_string(), POSTGRES_POOL),
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if kind == DbKind::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL: readers never wait for the writer, and other processes (a worker)
                    // share the file. NORMAL is durable across process crashes in WAL mode.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect(&url)
            .await
            .with_context(|| format!("cannot open the database {shown}"))?;
        Ok(Db { pool })
    }

    /// Whether this is SQLite or PostgreSQL.
    pub fn kind(&self) -> DbKind {
        if self.pool.connect_options().database_url.scheme() == "sqlite" {
            DbKind::Sqlite
        } else {
            DbKind::Postgres
        }
    }

    /// On SQLite, a turn to write: hold it around a write statement (or a short write
    /// transaction) on a hot path. SQLite takes one writer at a time, and a connection that
    /// finds the file locked sleeps in steps of 1, 2, 5, 10 ms... before it tries again, so
    /// concurrent writers of one process wait far longer than their statements take; queued
    /// here they go one after the other without sleeping. `None` on PostgreSQL (nothing to
    /// wait for). One gate per process.
    pub async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'static, ()>> {
        static SQLITE_WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        match self.kind() {
            DbKind::Sqlite => Some(SQLITE_WRITER.lock().await),
            DbKind::Postgres => None,
        }
    }

    /// Creates the tables and indexes that are missing ([`SCHEMA`]). Several processes may
    /// migrate at once.
    ///
    /// # Errors
    /// A statement the database refuses.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        for statement in SCHEMA {
            // Two processes creating the same table at once on PostgreSQL: one of them gets
            // a unique violation on the catalog; the table is there, so once more succeeds.
            let mut tries = 0;
            loop {
                match sqlx::query(*statement).execute(&self.pool).await {
                    Ok(_) => break,
                    Err(_) if tries < 3 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        let first = statement.lines().next().unwrap_or(statement);
                        return Err(e).with_context(|| format!("migrating: {first}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// How many products there are.
    ///
    /// # Errors
    /// The database's error.
    pub async fn product_count(&self) -> anyhow::Result<i64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
            .fetch_one(&self.pool)
            .await
            .context("counting products")?;
        Ok(n)
    }

    /// Seeds the catalog when it has no product yet (the first start); true when it did.
    ///
    /// # Errors
    /// As [`Db::seed`].
    pub async fn seed_if_empty(&self, sizes: SeedSizes) -> anyhow::Result<bool> {
        if self.product_count().await? > 0 {
            return Ok(false);
        }
        self.seed(sizes).await?;
        Ok(true)
    }

    /// Fills the catalog with `sizes.products` products (ids from 1, spread over the 8
    /// [`CATEGORIES`] in turn) and `sizes.reviews` reviews, the same every time (a seeded
    /// generator); rows already there are kept, so seeding twice, or from two processes at
    /// once, gives the same catalog.
    ///
    /// # Errors
    /// The database's error.
    pub async fn seed(&self, sizes: SeedSizes) -> anyhow::Result<()> {
        let now = now_ms();
        let mut rng = SplitMix(0x5eed_0000_0000_0017);
        let mut tx = self.pool.begin().await.context("seeding: begin")?;
        let products: Vec<u32> = (1..=sizes.products).collect();
        for chunk in products.chunks(SEED_BATCH) {
            let mut sql = String::from(
                "INSERT INTO products (id, category, name, price_cents, updated_at_ms) VALUES ",
            );
            push_placeholders(&mut sql, chunk.len(), 5);
            sql.push_str(" ON CONFLICT DO NOTHING");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for &id in chunk {
                let category = CATEGORIES[(id as usize - 1) % CATEGORIES.len()];
                let name = product_name(&mut rng, category);
                let price = 199 + (rng.next() % 49_801) as i64;
                q = q
                    .bind(i64::from(id))
                    .bind(category)
                    .bind(name)
                    .bind(price)
                    .bind(now);
            }
            q.execute(&mut *tx).await.context("seeding products")?;
        }
        if sizes.products > 0 {
            let reviews: Vec<u32> = (1..=sizes.reviews).collect();
            for chunk in reviews.chunks(SEED_BATCH) {
                let mut sql = String::from("INSERT INTO reviews (id, product_id, rating) VALUES ");
                push_placeholders(&mut sql, chunk.len(), 3);
                sql.push_str(" ON CONFLICT DO NOTHING");
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for &id in chunk {
                    let product = 1 + rng.next() % u64::from(sizes.products);
                    // Mostly good reviews, as in real shops: 5 and 4 most often.
                    let rating = match rng.next() % 10 {
                        0 => 1,
                        1 => 2,
                        2 | 3 => 3,
                        4..=6 => 4,
                        _ => 5,
                    };
                    q = q
                        .bind(i64::from(id))
                        .bind(product as i64)
                        .bind(rating as i64);
                }
                q.execute(&mut *tx).await.context("seeding reviews")?;
            }
        }
        tx.commit().await.context("seeding: commit")?;
        Ok(())
    }
}

/// Appends `rows` groups of `columns` numbered placeholders: `($1, $2), ($3, $4)`.
fn push_placeholders(sql: &mut String, rows: usize, columns: usize) {
    use std::fmt::Write;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", r * columns + c + 1);
        }
        sql.push(')');
    }
}

/// A product's name: two words and the category's noun, `Sturdy Blue Lamp`.
fn product_name(rng: &mut SplitMix, category: &str) -> String {
    const ADJECTIVES: [&str; 16] = [
        "Sturdy", "Classic", "Compact", "Deluxe", "Handy", "Quiet", "Bright", "Gentle", "Rapid",
        "Smart", "Tiny", "Grand", "Rustic", "Modern", "Cozy", "Bold",
    ];
    const COLOURS: [&str; 8] = [
        "Blue", "Green", "Red", "Black", "White", "Amber", "Silver", "Teal",
    ];
    let noun = match category {
        "books" => "Novel",
        "electronics" => "Speaker",
        "garden" => "Planter",
        "kitchen" => "Kettle",
        "music" => "Ukulele",
        "outdoor" => "Tent",
        "tools" => "Wrench",
        _ => "Puzzle",
    };
    let a = ADJECTIVES[(rng.next() % ADJECTIVES.len() as u64) as usize];
    let c = COLOURS[(rng.next() % COLOURS.len() as u64) as usize];
    format!("{a} {c} {noun}")
}

/// A small deterministic generator (SplitMix64): the seed data must not change with a
/// library's version.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_db(dir: &tempfile::TempDir, name: &str) -> Db {
        let url = format!("sqlite://{}", dir.path().join("sub").join(name).display());
        let db = Db::connect(&url).await.expect("the database opens");
        db.migrate().await.expect("migrated");
        db
    }

    #[test]
    fn placeholders_are_numbered_row_by_row() {
        let mut sql = String::new();
        push_placeholders(&mut sql, 2, 3);
        assert_eq!(sql, "($1, $2, $3), ($4, $5, $6)");
    }

    #[test]
    fn urls_are_read() {
        assert_eq!(
            sqlite_path("sqlite://shop-data/shop.db?mode=rwc"),
            Some(PathBuf::from("shop-data/shop.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db"),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(
            DbKind::of_url("postgresql://h/db").expect("postgres"),
            DbKind::Postgres
        );
        let err = DbKind::of_url("mysql://u:pw@h/db").expect_err("refused");
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[tokio::test]
    async fn numbered_placeholders_work_on_sqlite_through_any() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = temp_db(&dir, "p.db").await;
        assert_eq!(db.kind(), DbKind::Sqlite);
        // Out of order and used twice: bound by number, not by position.
        let n: i64 = sqlx::query_scalar("SELECT $2 * 100 + $1 * 10 + $2")
            .bind(1_i64)
            .bind(7_i64)
            .fetch_one(&db.pool)
            .await
            .expect("the query runs");
        assert_eq!(n, 717);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&db.pool)
            .await
            .expect("the journal mode");
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn seeding_is_deterministic_and_keeps_what_is_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sizes = SeedSizes {
            products: 64,
            reviews: 1_200,
        };
        let mut dumps = Vec::new();
        for name in ["a.db", "b.db"] {
            let db = temp_db(&dir, name).await;
            assert!(db.seed_if_empty(sizes).await.expect("seeded"));
            assert!(!db.seed_if_empty(sizes).await.expect("not again"));
            db.seed(sizes).await.expect("seeding twice is harmless");
            let products: Vec<(i64, String, String, i64)> =
                sqlx::query_as("SELECT id, category, name, price_cents FROM products ORDER BY id")
                    .fetch_all(&db.pool)
                    .await
                    .expect("products");
            let reviews: Vec<(i64, i64, i64)> =
                sqlx::query_as("SELECT id, product_id, rating FROM reviews ORDER BY id")
                    .fetch_all(&db.pool)
                    .await
                    .expect("reviews");
            assert_eq!(products.len(), 64);
            assert_eq!(reviews.len(), 1_200);
            let categories: std::collections::BTreeSet<&str> =
                products.iter().map(|p| p.1.as_str()).collect();
            assert_eq!(categories.len(), CATEGORIES.len());
            assert!(reviews.iter().all(|r| (1..=5).contains(&r.2)));
            assert!(reviews.iter().all(|r| (1..=64).contains(&r.1)));
            dumps.push((products, reviews));
        }
        assert_eq!(dumps[0], dumps[1]);
    }
}
