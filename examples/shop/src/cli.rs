//! The command line: `shop` (everything in one process, for trying it), `shop serve`,
//! `shop worker`, `shop smtp-sink` and `shop seed`. Every flag has an environment variable
//! (`SHOP_*`; the store is `CELERIAC_URL` as for `celeriac`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::db::{self, Db, SeedSizes};
use crate::http::{self, HttpOptions};
use crate::shop::{self, Shop, ShopOptions};
use crate::sink::{self, Sink, SinkArgs};
use crate::{mail, orders};

const ABOUT: &str = "The shop: an example service on Celeriac (orders and their confirmation \
e-mails, a cached catalog, per-key rate limits, a nightly report, photo resizing, the dashboard \
at /admin)";

const LONG_ABOUT: &str = "The shop: an example service on Celeriac (orders and their \
confirmation e-mails, a cached catalog, per-key rate limits, a nightly report, photo resizing, \
the dashboard at /admin).

Without a subcommand, `shop` runs everything in one process on SQLite files in ./shop-data: \
an SMTP sink, the HTTP service on 127.0.0.1:8080, and a worker with the scheduler. For a \
fleet, run `shop serve` (HTTP) and `shop worker` (tasks) against one store \
(--url redis://127.0.0.1:6379) and one database (--database-url postgres://... or a shared \
SQLite file), with an SMTP server (`shop smtp-sink`, or any given by --smtp).

Every flag can be set by the environment variable shown in its help.";

/// The shop's command line.
#[derive(Parser, Debug)]
#[command(
    name = "shop",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// What to log on stderr, as a tracing filter (`info`, `warn,shop=debug`); without it,
    /// `RUST_LOG`, else `info` (`warn,shop=info` without a subcommand).
    // Not `--log`: `shop smtp-sink --log FILE` is the sink's log of messages.
    #[arg(
        long = "log-filter",
        id = "log_filter",
        env = "SHOP_LOG",
        global = true
    )]
    log: Option<String>,
    #[command(flatten)]
    dev: DevArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serves the HTTP API (catalog, orders, photos, /admin, /healthz) and runs the outbox
    /// sweeper.
    Serve(ServeArgs),
    /// Runs the shop's tasks (queues emails, photos, reports), optionally with the scheduler
    /// and an HTTP side (/metrics, /livez, /readyz, /healthz). SIGTERM or Ctrl-C stops
    /// claiming and lets running jobs finish; a second signal stops at once.
    Worker(WorkerArgs),
    /// Runs the SMTP sink: a local SMTP server that logs every message (JSON lines), with a
    /// control API to make it fail.
    SmtpSink(SinkArgs),
    /// Creates the tables and fills the catalog (deterministic; rows already there are kept).
    Seed(SeedArgs),
}

/// Where a process finds the store, the database, the SMTP server and its data.
#[derive(Args, Debug, Clone)]
struct StoreArgs {
    /// The Celeriac store: sqlite://path or redis://host:port [default:
    /// sqlite://<data-dir>/celeriac.db]
    #[arg(long, env = "CELERIAC_URL", hide_env_values = true)]
    url: Option<String>,
    /// The shop's database: sqlite://path or postgres://user:password@host:port/db
    /// [default: sqlite://<data-dir>/shop.db]
    #[arg(long, env = "SHOP_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The SMTP server for the confirmation e-mails [default: smtp://127.0.0.1:2525; `shop`
    /// without a subcommand starts its own sink unless this is given]
    #[arg(long, env = "SHOP_SMTP", hide_env_values = true)]
    smtp: Option<String>,
    /// The data folder: SQLite files by default, photos and their variants.
    #[arg(long, env = "SHOP_DATA_DIR", default_value = shop::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// This process's name among the shop's instances [default: <host>-<pid>]
    #[arg(long, env = "SHOP_INSTANCE")]
    instance: Option<String>,
    /// Products created at the first start, when the catalog is empty (0: none).
    #[arg(long, env = "SHOP_SEED_PRODUCTS", default_value_t = SeedSizes::default().products)]
    seed_products: u32,
    /// Reviews created at the first start, when the catalog is empty.
    #[arg(long, env = "SHOP_SEED_REVIEWS", default_value_t = SeedSizes::default().reviews)]
    seed_reviews: u32,
}

impl StoreArgs {
    fn options(&self, smtp: Option<String>) -> ShopOptions {
        let dir = &self.data_dir;
        let defaults = ShopOptions::in_dir(dir);
        ShopOptions {
            url: self.url.clone().unwrap_or(defaults.url),
            database_url: self.database_url.clone().unwrap_or(defaults.database_url),
            smtp: smtp.or_else(|| self.smtp.clone()).unwrap_or(defaults.smtp),
            data_dir: dir.clone(),
            instance: self.instance.clone().unwrap_or(defaults.instance),
            seed: (self.seed_products > 0).then_some(SeedSizes {
                products: self.seed_products,
                reviews: self.seed_reviews,
            }),
        }
    }
}

/// The HTTP service's settings.
#[derive(Args, Debug, Clone)]
struct HttpArgs {
    /// Where the HTTP service listens (port 0 picks a free one). Off loopback it needs
    /// CELERIAC_DASHBOARD_TOKEN: /admin can purge queues.
    #[arg(long, env = "SHOP_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Read the catalog through the cache (`on`) or query the database on every request
    /// (`off`).
    #[arg(long, env = "SHOP_CACHE", default_value = "on", value_parser = ["on", "off"])]
    cache: String,
    /// The same as `--cache off`.
    #[arg(long)]
    no_cache: bool,
    /// API keys with the premium quota, comma-separated.
    #[arg(
        long,
        env = "SHOP_PREMIUM_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    premium_keys: Vec<String>,
    /// The operator token of /admin (at least 16 characters), as `Authorization: Bearer`;
    /// without one /admin is only served on loopback.
    #[arg(long, env = "CELERIAC_DASHBOARD_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Requests a minute per API key.
    #[arg(long, env = "SHOP_LIMIT_PER_MINUTE", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    limit_per_minute: u32,
    /// Requests a minute per premium API key.
    #[arg(long, env = "SHOP_PREMIUM_PER_MINUTE", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    premium_per_minute: u32,
}

impl HttpArgs {
    fn options(&self) -> HttpOptions {
        HttpOptions {
            cache: !self.no_cache && self.cache == "on",
            premium_keys: self
                .premium_keys
                .iter()
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            limit_per_minute: self.limit_per_minute,
            premium_per_minute: self.premium_per_minute,
        }
    }
}

/// How a worker runs.
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Jobs run at once.
    #[arg(long, short = 'c', env = "SHOP_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// On shutdown, how long running jobs may take to finish (`30s`).
    #[arg(long, env = "SHOP_GRACE_PERIOD", default_value = "30s",
          value_parser = celeriac::duration::parse)]
    grace_period: Duration,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(Args, Debug)]
struct WorkerArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Also run the scheduler (the nightly report); any number of processes may.
    #[arg(long, env = "SHOP_BEAT")]
    beat: bool,
    /// Serve /metrics, /livez, /readyz and /healthz on this address.
    #[arg(long, env = "SHOP_WORKER_HTTP")]
    http: Option<SocketAddr>,
}

#[derive(Args, Debug)]
struct SeedArgs {
    /// The shop's database [default: sqlite://<data-dir>/shop.db]
    #[arg(long, env = "SHOP_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The data folder (where the default database is).
    #[arg(long, env = "SHOP_DATA_DIR", default_value = shop::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Products (ids 1..=N over 8 categories).
    #[arg(long, env = "SHOP_SEED_PRODUCTS", default_value_t = SeedSizes::default().products)]
    products: u32,
    /// Reviews.
    #[arg(long, env = "SHOP_SEED_REVIEWS", default_value_t = SeedSizes::default().reviews)]
    reviews: u32,
}

/// `shop` without a subcommand.
#[derive(Args, Debug, Clone)]
struct DevArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Where the SMTP sink listens (port 0 picks a free one).
    #[arg(long, env = "SHOP_SMTP_BIND", default_value = "127.0.0.1:2525")]
    smtp_bind: String,
    /// Where the SMTP sink's control API listens (`GET /stats`, `POST /fail?seconds=30`,
    /// `POST /recover`).
    #[arg(long, env = "SHOP_SMTP_CONTROL", default_value = "127.0.0.1:2526")]
    smtp_control: String,
    /// How long the SMTP sink takes to accept each message (a mail provider's latency).
    #[arg(long, env = "SHOP_SMTP_DELAY", default_value = "0ms",
          value_parser = celeriac::duration::parse)]
    smtp_delay: Duration,
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let default_log = match cli.command {
        None => "warn,shop=info",
        Some(Command::Seed(_)) => "warn",
        Some(_) => "info",
    };
    // `--log` / `SHOP_LOG`, else `RUST_LOG`, else the command's default.
    let rust_log = std::env::var("RUST_LOG").ok().filter(|f| !f.is_empty());
    init_logging(
        cli.log
            .as_deref()
            .or(rust_log.as_deref())
            .unwrap_or(default_log),
    );
    let secrets = secrets(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(Box::pin(dispatch(cli)));
    // Tasks still running (a sweeper, the breaker's sync) end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("error: {}", celeriac_core::redact::text(&text, &secrets));
            ExitCode::FAILURE
        }
    }
}

/// The passwords of every URL given, kept out of error messages.
fn secrets(cli: &Cli) -> Vec<String> {
    let store = match &cli.command {
        None => Some(&cli.dev.store),
        Some(Command::Serve(a)) => Some(&a.store),
        Some(Command::Worker(a)) => Some(&a.store),
        _ => None,
    };
    let mut urls: Vec<&str> = Vec::new();
    if let Some(s) = store {
        urls.extend(s.url.as_deref());
        urls.extend(s.database_url.as_deref());
        urls.extend(s.smtp.as_deref());
    }
    if let Some(Command::Seed(a)) = &cli.command {
        urls.extend(a.database_url.as_deref());
    }
    urls.into_iter()
        .flat_map(celeriac_core::redact::url_secrets)
        .collect()
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => dev(cli.dev).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Worker(args)) => worker(args).await,
        Some(Command::SmtpSink(args)) => sink::run(args).await,
        Some(Command::Seed(args)) => seed(args).await,
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Binds `addr`, naming the setting when it cannot.
async fn listen(
    addr: impl tokio::net::ToSocketAddrs + std::fmt::Display,
    setting: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("{setting}: cannot listen on {addr}"))
}

/// Checks the HTTP settings before anything is opened.
fn http_options(args: &HttpArgs) -> anyhow::Result<HttpOptions> {
    let opts = args.options();
    http::check_bind(args.bind, &opts).context("--bind (SHOP_BIND)")?;
    Ok(opts)
}

/// Serves `router` on `listener` until `stop`.
fn spawn_server(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let http_opts = http_options(&args.http)?;
    let opts = args.store.options(None);
    let shop = Shop::open(&opts).await?;
    let listener = listen(args.http.bind, "--bind (SHOP_BIND)").await?;
    let addr = listener.local_addr()?;
    let router = http::router(shop.clone(), http_opts).await?;
    let stop = CancellationToken::new();
    let outbox = orders::spawn_outbox(shop.clone(), stop.clone());
    let server = spawn_server(listener, router, stop.clone());
    println!(
        "shop {} serving on http://{addr}/ (store {}, database {})",
        shop.instance,
        shop.app.redacted_url(),
        db::redacted(&opts.database_url)
    );
    wait_for_signal().await;
    eprintln!("shutting down: finishing the requests in flight");
    stop.cancel();
    let _ = outbox.await;
    server
        .await
        .context("the HTTP server panicked")?
        .context("the HTTP server failed")?;
    Ok(())
}

/// A worker on the shop's queues and, with `beat`, the scheduler.
struct Fleet {
    worker: celeriac::Worker<celeriac::AnyBackend>,
    beat: Option<celeriac::Beat<celeriac::AnyBackend>>,
}

fn fleet(shop: &Shop, run: &RunArgs, beat: bool) -> anyhow::Result<Fleet> {
    let concurrency = run.concurrency as usize;
    let config = celeriac::WorkerConfig {
        queues: mail::QUEUES.iter().map(|q| q.to_string()).collect(),
        concurrency,
        prefetch: concurrency,
        grace_period: run.grace_period,
        ..celeriac::WorkerConfig::default()
    };
    config
        .validate()
        .context("--concurrency / --grace-period")?;
    let beat = if beat {
        Some(shop.app.beat().context("the scheduler")?)
    } else {
        None
    };
    Ok(Fleet {
        worker: shop.app.worker().config(config),
        beat,
    })
}

impl Fleet {
    /// Runs the worker (and the beat) until the first signal asks them to stop (running jobs
    /// finish within the grace period; a second signal stops at once), or until `stop`.
    async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let shutdown = self.worker.shutdown_handle();
        let stats = self.worker.stats();
        let beat_stop = self.beat.as_ref().map(|b| b.shutdown_handle());
        let beat_task = self.beat.map(|b| tokio::spawn(b.run()));
        let watcher = {
            let beat_stop = beat_stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = wait_for_signal() => {}
                    () = stop.cancelled() => {}
                }
                eprintln!("shutting down: finishing running jobs (signal again to stop now)");
                if let Some(b) = &beat_stop {
                    b.cancel();
                }
                shutdown.graceful();
                wait_for_signal().await;
                eprintln!(
                    "stopping now; unfinished jobs will be redelivered when their leases expire"
                );
                shutdown.immediate();
            })
        };
        let ran = self.worker.run().await;
        watcher.abort();
        if let Some(b) = &beat_stop {
            b.cancel();
        }
        if let Some(task) = beat_task {
            task.await.context("the scheduler panicked")??;
        }
        ran?;
        use std::sync::atomic::Ordering::Relaxed;
        eprintln!(
            "worker stopped: succeeded={} retried={} failed={} dead={}",
            stats.succeeded.load(Relaxed),
            stats.retried.load(Relaxed),
            stats.failed.load(Relaxed),
            stats.dead.load(Relaxed),
        );
        Ok(())
    }
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let opts = args.store.options(None);
    let shop = Shop::open(&opts).await?;
    let fleet = fleet(&shop, &args.run, args.beat)?;
    let http_stop = CancellationToken::new();
    let http_task = match args.http {
        Some(addr) => {
            let listener = listen(addr, "--http (SHOP_WORKER_HTTP)").await?;
            let mut http = celeriac_web::Http::new(shop.app.clone())
                .map_err(|e| anyhow::anyhow!("--http: {e}"))?
                .watch_worker(&fleet.worker);
            if let Some(b) = &fleet.beat {
                http = http.watch_beat(b);
            }
            eprintln!(
                "serving /metrics, /livez, /readyz and /healthz on http://{}",
                listener.local_addr()?
            );
            Some(tokio::spawn(http.serve_on(listener, http_stop.clone())))
        }
        None => None,
    };
    println!(
        "shop worker {} on queues {} ({} at once{}), store {}, database {}",
        shop.instance,
        mail::QUEUES.join(","),
        args.run.concurrency,
        if args.beat {
            ", with the scheduler"
        } else {
            ""
        },
        shop.app.redacted_url(),
        db::redacted(&opts.database_url)
    );
    let ran = fleet.run(CancellationToken::new()).await;
    http_stop.cancel();
    if let Some(task) = http_task {
        let _ = task.await;
    }
    ran
}

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| ShopOptions::in_dir(&args.data_dir).database_url);
    let db = Db::connect(&url)
        .await
        .context("--database-url (SHOP_DATABASE_URL)")?;
    db.migrate().await?;
    let started = std::time::Instant::now();
    db.seed(SeedSizes {
        products: args.products,
        reviews: args.reviews,
    })
    .await?;
    println!(
        "seeded {} products and {} reviews into {} in {:.1}s ({} products there now)",
        args.products,
        args.reviews,
        db::redacted(&url),
        started.elapsed().as_secs_f64(),
        db.product_count().await?
    );
    Ok(())
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let http_opts = http_options(&args.http)?;
    let data_dir = args.store.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| {
        format!(
            "--data-dir (SHOP_DATA_DIR): cannot create {}",
            data_dir.display()
        )
    })?;
    let log = data_dir.join("mail.jsonl");
    let sink = match &args.store.smtp {
        Some(_) => None,
        None => Some(
            Sink::start(SinkArgs {
                bind: args.smtp_bind.clone(),
                control: args.smtp_control.clone(),
                log: Some(log.clone()),
                delay: args.smtp_delay,
                ..SinkArgs::local()
            })
            .await
            .context("the SMTP sink (--smtp-bind, --smtp-control; or give --smtp)")?,
        ),
    };
    let opts = args.store.options(sink.as_ref().map(Sink::url));
    if opts.seed.is_some() && !Path::new(&data_dir.join("shop.db")).exists() {
        eprintln!("creating the catalog (first start)...");
    }
    let shop = Shop::open(&opts).await?;
    let listener = listen(args.http.bind, "--bind (SHOP_BIND)").await?;
    let addr = listener.local_addr()?;
    let router = http::router(shop.clone(), http_opts).await?;
    let stop = CancellationToken::new();
    let outbox = orders::spawn_outbox(shop.clone(), stop.clone());
    let fleet = fleet(&shop, &args.run, true)?;
    let server = spawn_server(listener, router, stop.clone());
    let worker = tokio::spawn(fleet.run(stop.clone()));
    print_banner(addr, &shop, &opts, sink.as_ref(), &log);
    tokio::select! {
        () = wait_for_signal() => {}
        () = stop.cancelled() => {}
    }
    stop.cancel();
    let _ = outbox.await;
    let served = server.await.context("the HTTP server panicked")?;
    let worked = worker.await.context("the worker panicked")?;
    if let Some(sink) = sink {
        sink.shutdown().await;
    }
    served.context("the HTTP server failed")?;
    worked
}

fn print_banner(
    addr: SocketAddr,
    shop: &Shop,
    opts: &ShopOptions,
    sink: Option<&Sink>,
    log: &Path,
) {
    let base = format!("http://{addr}");
    println!("shop is running (all in one process; Ctrl-C stops it)");
    println!("  shop       {base}/");
    println!("  dashboard  {base}/admin/");
    println!("  metrics    {base}/admin/metrics");
    match sink {
        Some(s) => println!(
            "  smtp sink  {} (stats: http://{}/stats, messages: {})",
            s.url(),
            s.control_addr(),
            log.display()
        ),
        None => println!("  smtp       {}", db::redacted(&opts.smtp)),
    }
    println!(
        "  data       {} (store {}, database {})",
        opts.data_dir.display(),
        shop.app.redacted_url(),
        db::redacted(&opts.database_url)
    );
    println!();
    println!("Try:");
    println!("  curl -H 'x-api-key: demo' '{base}/products?category=books&page=1'");
    println!(
        "  curl -H 'x-api-key: demo' -H 'content-type: application/json' \
         -d '{{\"email\":\"you@example.com\",\"items\":[{{\"product_id\":1,\"quantity\":2}}]}}' \
         {base}/orders"
    );
    match sink {
        Some(s) => println!("  curl http://{}/stats", s.control_addr()),
        None => println!("  curl -H 'x-api-key: demo' {base}/orders/<order_id>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        fn walk(cmd: &clap::Command, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                let builtin = matches!(id, "help" | "version");
                // `--no-cache` is `--cache off` (SHOP_CACHE=off).
                if !builtin
                    && id != "no_cache"
                    && arg.get_long().is_some()
                    && arg.get_env().is_none()
                {
                    missing.push(format!("{} --{id}", cmd.get_name()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), &mut missing);
        assert!(missing.is_empty(), "flags without a variable: {missing:?}");
    }
}
