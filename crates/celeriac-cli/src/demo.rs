//! The tasks and the driver behind `celeriac demo`: a realistic mix of jobs on the embedded
//! backend, with a progress bar and a summary.
//!
//! The tasks are written with the plain [`Task`] trait (no macro) and double as an example
//! of that path.

use crate::support::{progress_bar, CliError, CliResult, Scratch};
use celeriac::{App, Job, Registry, Task, TaskContext, TaskError, TaskOptions, WorkerConfig};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// An e-mail to send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Email {
    /// Recipient.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// How many first attempts fail with a transient SMTP error (to show retries).
    #[serde(default)]
    pub fail_times: u32,
}

/// Sends an e-mail through a simulated SMTP server with 5–30 ms of latency.
pub struct SendEmail;

impl Task for SendEmail {
    const NAME: &'static str = "demo.send_email";
    type Args = Email;
    type Output = String;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: "emails".into(),
            max_attempts: 4,
            backoff: celeriac::Backoff {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(1),
                jitter: true,
            },
            ..TaskOptions::default()
        }
    }

    async fn run(ctx: TaskContext, email: Email) -> Result<String, TaskError> {
        let latency = rand::rng().random_range(5..30);
        tokio::time::sleep(Duration::from_millis(latency)).await;
        if ctx.attempt() <= email.fail_times {
            return Err(TaskError::msg("421 service not available, try again later"));
        }
        Ok(format!("250 queued as <{}@demo>", ctx.job_id()))
    }
}

/// Image dimensions to render a thumbnail for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thumbnail {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// CPU-bound work on the blocking pool, so heartbeats keep beating.
pub struct ResizeImage;

impl Task for ResizeImage {
    const NAME: &'static str = "demo.resize_image";
    type Args = Thumbnail;
    type Output = u64;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: "images".into(),
            ..TaskOptions::default()
        }
    }

    async fn run(ctx: TaskContext, t: Thumbnail) -> Result<u64, TaskError> {
        ctx.blocking(move || {
            let pixels = u64::from(t.width.min(2000)) * u64::from(t.height.min(2000));
            (0..pixels).fold(0u64, |acc, p| acc.wrapping_mul(31).wrapping_add(p ^ 0x5bd1))
        })
        .await
    }
}

/// What [`AlbumSummary`] reports about an album's thumbnails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Album {
    /// Thumbnails rendered.
    pub thumbnails: u64,
    /// A checksum over all of them, in order.
    pub checksum: u64,
}

/// The callback of a chord of [`ResizeImage`] jobs: runs once with every thumbnail's result.
pub struct AlbumSummary;

impl Task for AlbumSummary {
    const NAME: &'static str = "demo.album_summary";
    type Args = Vec<u64>;
    type Output = Album;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: "images".into(),
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, sums: Vec<u64>) -> Result<Album, TaskError> {
        Ok(Album {
            thumbnails: sums.len() as u64,
            checksum: album_checksum(&sums),
        })
    }
}

/// The checksum [`AlbumSummary`] computes over thumbnail results, in order.
pub fn album_checksum(sums: &[u64]) -> u64 {
    sums.iter()
        .fold(17u64, |acc, s| acc.wrapping_mul(1_000_003).wrapping_add(*s))
}

/// Calls a partner API that is down: every attempt fails, and the job ends in the dead letters.
pub struct SyncInventory;

impl Task for SyncInventory {
    const NAME: &'static str = "demo.sync_inventory";
    type Args = u32;
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 3,
            backoff: celeriac::Backoff {
                base: Duration::from_millis(50),
                cap: Duration::from_millis(200),
                jitter: true,
            },
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, sku: u32) -> Result<(), TaskError> {
        Err(TaskError::msg(format!(
            "partner API returned 503 for SKU {sku}"
        )))
    }
}

/// Pings a partner whose API allows 10 calls a second across all of our workers: a global
/// rate limit, enforced when jobs are claimed.
pub struct PingPartner;

impl Task for PingPartner {
    const NAME: &'static str = "demo.ping_partner";
    type Args = u32;
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            queue: "partner".into(),
            limits: celeriac::TaskLimits {
                concurrency: None,
                rate: Some(celeriac::Rate {
                    count: 10,
                    per: Duration::from_secs(1),
                }),
            },
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, _n: u32) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Builds a report for as many milliseconds as it is given: a long job, such as an export.
pub struct ExportReport;

impl Task for ExportReport {
    const NAME: &'static str = "demo.export_report";
    type Args = u64;
    type Output = u64;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: "reports".into(),
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, millis: u64) -> Result<u64, TaskError> {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Ok(millis)
    }
}

/// A product of the demo's catalogue, as its cache holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Its key (`p1`...).
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Its price in cents.
    pub price_cents: u64,
}

/// How many products the demo catalogue has (`p1` to `p200`).
pub const PRODUCTS: usize = 200;

/// The demo's product cache (namespace `products`, fresh for an hour).
pub fn products_cache() -> celeriac::cache::CacheBuilder<str, Product> {
    celeriac::cache::Cache::<str, Product, ()>::builder("products").ttl(Duration::from_secs(3600))
}

/// Loads a product from the (simulated) database: 1–5 ms; an unknown SKU fails.
pub async fn load_product(sku: String) -> Result<Product, String> {
    let n: u64 = sku
        .strip_prefix('p')
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=PRODUCTS as u64).contains(n))
        .ok_or_else(|| format!("no product `{sku}` in the catalogue"))?;
    let latency = rand::rng().random_range(1..5);
    tokio::time::sleep(Duration::from_millis(latency)).await;
    Ok(Product {
        sku,
        name: format!("Product {n}"),
        price_cents: 100 + n * 7,
    })
}

/// The warmer of [`products_cache`]: every SKU of the catalogue, loaded by [`load_product`].
pub fn products_warmer() -> impl celeriac::cache::Warmer<celeriac::AnyBackend> {
    celeriac::cache::CacheWarmer::new(
        products_cache(),
        || async { Ok::<_, String>((1..=PRODUCTS).map(|n| format!("p{n}")).collect()) },
        load_product,
    )
}

/// The demo's stock levels cache (namespace `stock`), written behind to [`stock_file`].
pub fn stock_cache() -> celeriac::cache::CacheBuilder<str, u64> {
    celeriac::cache::Cache::<str, u64, ()>::builder("stock").ttl(Duration::from_secs(3600))
}

static STOCK_FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Sets the file the demo's stock writes are flushed to (once per process; a debug build of
/// the command line sets it from `CELERIAC_DEMO_STOCK_FILE`, for the process tests, a release
/// build never does); returns false if it was set already.
pub fn set_stock_file(path: std::path::PathBuf) -> bool {
    STOCK_FILE.set(path).is_ok()
}

/// The demo's "database" of stock levels: one JSON line per flushed write
/// ([`celeriac::cache::PendingWrite`]), `celeriac-demo-stock.jsonl` unless set.
pub fn stock_file() -> &'static std::path::Path {
    STOCK_FILE.get_or_init(|| "celeriac-demo-stock.jsonl".into())
}

/// Appends a batch of stock writes to [`stock_file`], one line each, in one write.
async fn write_stock(writes: Vec<celeriac::cache::PendingWrite<u64>>) -> Result<(), String> {
    let mut text = String::new();
    for w in &writes {
        let line = serde_json::to_string(w).map_err(|e| e.to_string())?;
        text.push_str(&line);
        text.push('\n');
    }
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let path = stock_file();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("{}: {e}", path.display()))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The demo's tasks, the built-in cache warming task and the flush task of the `stock`
/// write-behind cache; registers the warmer of the `products` cache in this process too
/// ([`products_warmer`]).
pub fn registry() -> Registry {
    celeriac::register_cache_warmer(products_warmer());
    let mut r = Registry::new();
    r.insert(celeriac::cache::write_behind_task(
        "stock",
        celeriac::cache::write::write_behind_options(),
        write_stock,
    ));
    r.register::<SendEmail>()
        .register::<ResizeImage>()
        .register::<AlbumSummary>()
        .register::<SyncInventory>()
        .register::<PingPartner>()
        .register::<ExportReport>()
        .register::<celeriac::WarmCache>();
    r
}

/// What the demo did.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Jobs enqueued.
    pub jobs: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Failed attempts that were retried.
    pub retried: u64,
    /// Jobs in the dead letters.
    pub dead: u64,
    /// Jobs that failed permanently.
    pub failed: u64,
    /// Seconds from the first enqueue to the last job finishing.
    pub seconds: f64,
    /// Finished jobs per second.
    pub throughput: f64,
    /// Median enqueue-to-start latency, milliseconds.
    pub p50_start_ms: i64,
    /// 99th percentile enqueue-to-start latency, milliseconds.
    pub p99_start_ms: i64,
    /// Dead letters by reason kind.
    pub dead_reasons: Vec<(String, u64)>,
    /// How the chord of thumbnails ended.
    pub album: String,
}

/// The value at quantile `q` (0..=1) of sorted samples.
pub fn percentile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs the demo mix of `jobs` jobs on `app` with an in-process worker; `tick` is called
/// with (finished, total) as jobs finish.
pub async fn run(
    app: &App,
    jobs: u64,
    mut tick: impl FnMut(u64, u64),
) -> celeriac::Result<DemoSummary> {
    let worker = app.worker().config(WorkerConfig {
        queues: vec!["emails".into(), "images".into(), "default".into()],
        concurrency: 64,
        prefetch: 64,
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    });
    let stats = worker.stats();
    let shutdown = worker.shutdown_handle();
    let handle = tokio::spawn(worker.run());
    let started = Instant::now();

    let client = app.client();
    let mut rng = rand::rng();
    let n_images = jobs / 10;
    let n_delayed = jobs / 20;
    let n_doomed = (jobs / 200).max(1);
    let n_bad = (jobs / 500).max(1);
    // The thumbnails are one chord: every thumbnail, then the album summary once.
    let n_emails = jobs.saturating_sub(n_images + 1 + n_delayed + n_doomed + 2 * n_bad);

    let emails: Vec<Email> = (0..n_emails)
        .map(|i| Email {
            to: format!("customer{i}@example.com"),
            subject: "Your order has shipped".into(),
            fail_times: if rng.random_ratio(1, 10) {
                rng.random_range(1..=2)
            } else {
                0
            },
        })
        .collect();
    for chunk in emails.chunks(500) {
        client.enqueue_many::<SendEmail>(chunk.to_vec()).await?;
    }
    let thumbs: Vec<celeriac::Flow> = (0..n_images)
        .map(|_| {
            celeriac::Step::of::<ResizeImage>(Thumbnail {
                width: rng.random_range(100..800),
                height: rng.random_range(100..800),
            })
            .into()
        })
        .collect();
    let album = celeriac::chord(thumbs, celeriac::Step::piped::<AlbumSummary>())
        .start(app)
        .await?;
    for i in 0..n_delayed {
        let delay = Duration::from_millis(rng.random_range(1000..3000));
        celeriac::Enqueue::<SendEmail>::new(Email {
            to: format!("reminder{i}@example.com"),
            subject: "Your cart misses you".into(),
            fail_times: 0,
        })
        .delay(delay)
        .enqueue(client)
        .await?;
    }
    client
        .enqueue_many::<SyncInventory>((0..n_doomed as u32).collect::<Vec<_>>())
        .await?;
    // Bad input: jobs for a task no worker knows, and payloads that do not decode.
    let now = client.now();
    let mut bad = Vec::new();
    for _ in 0..n_bad {
        bad.push(Job::new("demo.legacy_report", b"{}".to_vec(), now));
        let mut garbled = Job::new(SendEmail::NAME, br#"{"to": 42}"#.to_vec(), now);
        garbled.queue = "emails".into();
        bad.push(garbled);
    }
    client.push(bad).await?;

    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let finished = stats.finished();
        tick(finished.min(jobs), jobs);
        if finished >= jobs || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    shutdown.graceful();
    let _ = handle.await;
    let summary_job = album.callback_id();
    let runs = celeriac::ResultStore::get(app.backend().as_ref(), summary_job)
        .await?
        .map_or(0, |info| info.job.attempts);
    let album = match album.info().await {
        Ok(rec) => match celeriac::workflow::record_result::<Album>(&rec) {
            Ok(a) => format!(
                "chord {} {}: the album summary ran {runs} time(s), over {} thumbnails",
                rec.id,
                rec.state.as_str(),
                a.thumbnails
            ),
            Err(e) => format!("chord {} {}: {e}", rec.id, rec.state.as_str()),
        },
        Err(e) => format!("unknown: {e}"),
    };

    let mut lat = stats.start_latencies_ms();
    lat.sort_unstable();
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    let mut offset = 0;
    loop {
        let page =
            celeriac::QueueAdmin::dead_letters(app.backend().as_ref(), None, 500, offset).await?;
        if page.is_empty() {
            break;
        }
        offset += page.len();
        for info in page {
            let kind = info
                .error
                .map(|e| e.kind)
                .unwrap_or_else(|| "unknown".into());
            *reasons.entry(kind).or_default() += 1;
        }
    }
    use std::sync::atomic::Ordering::Relaxed;
    let finished = stats.finished();
    Ok(DemoSummary {
        jobs,
        succeeded: stats.succeeded.load(Relaxed),
        retried: stats.retried.load(Relaxed),
        dead: stats.dead.load(Relaxed),
        failed: stats.failed.load(Relaxed),
        seconds,
        throughput: finished as f64 / seconds.max(1e-9),
        p50_start_ms: percentile(&lat, 0.50),
        p99_start_ms: percentile(&lat, 0.99),
        dead_reasons: reasons.into_iter().collect(),
        album,
    })
}
pub(crate) async fn run_command(
    url: Option<&str>,
    jobs: u64,
    dashboard: Option<std::net::SocketAddr>,
) -> CliResult {
    let (url, _scratch) = match url {
        Some(u) => (u.to_string(), None),
        None => {
            let s = Scratch::new("demo")?;
            (s.url(), Some(s))
        }
    };
    let app = App::builder()
        .url(url.as_str())
        .registry(registry())
        .build()
        .await?;
    println!("Celeriac demo on {}", app.redacted_url());
    println!(
        "A worker with 64 slots runs {jobs} jobs: e-mails through a slow SMTP server (some fail \
         and retry), a chord of thumbnails on the blocking pool with an album summary after \
         them, delayed reminders, a partner API that is down, and some bad input.\n"
    );
    let bar = progress_bar(jobs, "jobs finished");
    let summary = run(&app, jobs, |done, _| bar.set_position(done)).await?;
    bar.finish_and_clear();
    println!("processed   {} jobs succeeded", summary.succeeded);
    println!(
        "retried     {} failed attempts were retried",
        summary.retried
    );
    println!("failed      {}", summary.failed);
    println!("dead        {} jobs in the dead letters", summary.dead);
    for (kind, n) in &summary.dead_reasons {
        println!("              {n:>5} × {kind}");
    }
    println!(
        "throughput  {:.0} jobs/s ({} jobs in {:.2} s, including delays and retry backoff)",
        summary.throughput, summary.jobs, summary.seconds
    );
    println!(
        "latency     p50 {} ms, p99 {} ms from due to started",
        summary.p50_start_ms, summary.p99_start_ms
    );
    println!("workflow    {}", summary.album);
    if _scratch.is_some() && dashboard.is_none() {
        println!(
            "\nThe demo's scratch database is removed on exit. To keep one and explore it:\n  \
             celeriac --url sqlite://demo.db demo && celeriac --url sqlite://demo.db dlq list\n\
             or see it in the dashboard: celeriac demo --dashboard"
        );
    }
    if summary.succeeded + summary.dead + summary.failed < summary.jobs {
        return Err(CliError(format!(
            "only {} of {} jobs finished",
            summary.succeeded + summary.dead + summary.failed,
            summary.jobs
        )));
    }
    if let Some(bind) = dashboard {
        // The scratch file lives until the dashboard stops.
        let stop = tokio_util::sync::CancellationToken::new();
        let server = crate::dashboard::spawn(&app, bind, None, stop.clone()).await?;
        println!(
            "\nThe dashboard shows the demo's data at http://{bind}/ (Ctrl-C to stop{})",
            if _scratch.is_some() {
                "; the scratch database goes with it"
            } else {
                ""
            }
        );
        crate::worker::wait_for_signal().await;
        stop.cancel();
        let _ = server.await;
    }
    Ok(())
}
