//! The shop's wiring: its database, its Celeriac application (every task, the shared `smtp`
//! breaker, the nightly report's schedule) and this process's instance name.

use std::path::{Path, PathBuf};

use anyhow::Context;
use celeriac::App;

use crate::db::{self, Db, SeedSizes};
use crate::deps::Deps;
use crate::{mail, photos, report};

/// The SMTP server used when none is given: the sink's default address.
pub const DEFAULT_SMTP: &str = "smtp://127.0.0.1:2525";
/// The data folder used when none is given.
pub const DEFAULT_DATA_DIR: &str = "shop-data";

/// Where a shop process finds its store, database, SMTP server and data.
#[derive(Clone)]
pub struct ShopOptions {
    /// The Celeriac store: `sqlite://path` or `redis://host:port` (`CELERIAC_URL`).
    pub url: String,
    /// The shop's database: `sqlite://path` or `postgres://...`.
    pub database_url: String,
    /// The SMTP server for the confirmation e-mails, `smtp://host:port`.
    pub smtp: String,
    /// Where photos and their variants are kept.
    pub data_dir: PathBuf,
    /// This process's name among the shop's instances (logs, the breaker's signals).
    pub instance: String,
    /// Seeds the catalog with these sizes when it has no product; `None`: never.
    pub seed: Option<SeedSizes>,
}

impl ShopOptions {
    /// Everything under `dir`: the store `dir/celeriac.db`, the database `dir/shop.db`,
    /// photos in `dir/photos`; the SMTP server at [`DEFAULT_SMTP`], the default seed.
    pub fn in_dir(dir: impl AsRef<Path>) -> ShopOptions {
        let dir = dir.as_ref();
        ShopOptions {
            url: format!("sqlite://{}", dir.join("celeriac.db").display()),
            database_url: format!("sqlite://{}", dir.join("shop.db").display()),
            smtp: DEFAULT_SMTP.to_string(),
            data_dir: dir.to_path_buf(),
            instance: default_instance(),
            seed: Some(SeedSizes::default()),
        }
    }
}

impl Default for ShopOptions {
    /// [`ShopOptions::in_dir`] of `./shop-data`.
    fn default() -> Self {
        ShopOptions::in_dir(DEFAULT_DATA_DIR)
    }
}

impl std::fmt::Debug for ShopOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopOptions")
            .field("url", &db::redacted(&self.url))
            .field("database_url", &db::redacted(&self.database_url))
            .field("smtp", &db::redacted(&self.smtp))
            .field("data_dir", &self.data_dir)
            .field("instance", &self.instance)
            .field("seed", &self.seed)
            .finish()
    }
}

/// This process's default instance name: `host-pid`.
pub fn default_instance() -> String {
    format!("{}-{}", celeriac::process::hostname(), std::process::id())
}

/// A shop process's shared state: cheap to clone, handed to the HTTP handlers and the
/// sweeper.
#[derive(Clone)]
pub struct Shop {
    /// The Celeriac application: every shop task registered, the `smtp` breaker shared
    /// through the store, the nightly report scheduled.
    pub app: App,
    /// The database, the SMTP server and the data folder.
    pub deps: Deps,
    /// This process's instance name.
    pub instance: String,
}

impl std::fmt::Debug for Shop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shop")
            .field("app", &self.app)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Shop {
    /// Opens the database (migrating it, and seeding it when it has no product and
    /// `opts.seed` says so), then the Celeriac application with the shop's tasks
    /// (`mail`, `report`, `photos`), the shared `smtp` breaker and the report's schedule.
    ///
    /// # Errors
    /// A database or store that cannot be opened, or a bad setting, naming the flag and
    /// environment variable; URLs are shown with their passwords masked.
    pub async fn open(opts: &ShopOptions) -> anyhow::Result<Shop> {
        // Boxed: the future of opening everything is deep, and a box keeps callers' small.
        Box::pin(Shop::open_inner(opts)).await
    }

    async fn open_inner(opts: &ShopOptions) -> anyhow::Result<Shop> {
        std::fs::create_dir_all(&opts.data_dir).with_context(|| {
            format!(
                "--data-dir (SHOP_DATA_DIR): cannot create {}",
                opts.data_dir.display()
            )
        })?;
        mail::parse_smtp_url(&opts.smtp).map_err(|e| {
            anyhow::anyhow!("--smtp (SHOP_SMTP): `{}`: {e}", db::redacted(&opts.smtp))
        })?;
        let db = Db::connect(&opts.database_url)
            .await
            .context("--database-url (SHOP_DATABASE_URL)")?;
        db.migrate()
            .await
            .with_context(|| format!("migrating {}", db::redacted(&opts.database_url)))?;
        if let Some(sizes) = opts.seed {
            let started = std::time::Instant::now();
            if db.seed_if_empty(sizes).await? {
                tracing::info!(
                    products = sizes.products,
                    reviews = sizes.reviews,
                    took_ms = started.elapsed().as_millis() as u64,
                    "seeded the catalog"
                );
            }
        }
        let deps = Deps {
            db,
            smtp: opts.smtp.clone(),
            data_dir: opts.data_dir.clone(),
        };
        let app = build_app(&opts.url, &deps, &opts.instance).await?;
        Ok(Shop {
            app,
            deps,
            instance: opts.instance.clone(),
        })
    }
}

/// The Celeriac application of the shop on `url`.
async fn build_app(url: &str, deps: &Deps, instance: &str) -> anyhow::Result<App> {
    let shown = db::redacted(url);
    // The embedded store creates its file, not the folder around it.
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = Path::new(path.split_once('?').map_or(path, |(p, _)| p));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "--url (CELERIAC_URL) {shown}: cannot create {}",
                    dir.display()
                )
            })?;
        }
    }
    let mut builder = App::builder().url(url);
    let defs = mail::tasks(deps.clone())
        .into_iter()
        .chain(report::tasks(deps.clone()))
        .chain(photos::tasks(deps.clone()));
    for def in defs {
        builder = builder.register(def);
    }
    // The breaker's signals are per process: two processes given one instance name (a
    // `serve` and a `worker`) must still count as two.
    let breaker_instance = format!("{instance}/{}", std::process::id());
    builder = builder
        .shared_breaker(mail::breaker(), mail::shared_options(breaker_instance))
        .schedule(report::schedule());
    builder
        .build()
        .await
        .with_context(|| format!("--url (CELERIAC_URL): cannot open the store {shown}"))
}
