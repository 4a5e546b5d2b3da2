//! `celeriac bench monitor`: what monitoring costs the store with many jobs queued. Fills the
//! queues, then times the figures `celeriac queues` shows and, on Redis, counts the commands
//! one call sends, with the queues nearly empty and full: the count must not grow with jobs.

use crate::bench::jobs::Noop;
use crate::support::{progress_bar, CliError};
use celeriac::backend::JobQuery;
use celeriac::{App, Broker, Job, JobState, QueueAdmin, Task};
use serde::Serialize;
use std::time::Instant;

/// What the monitoring benchmark measured.
#[derive(Debug, Serialize)]
pub struct MonitorReport {
    /// Jobs queued at the end.
    pub jobs: u64,
    /// Queues they are spread over.
    pub queues: usize,
    /// Seconds the fill took.
    pub fill_secs: f64,
    /// Milliseconds one call of the queue figures took: median and slowest of the calls.
    pub figures_p50_ms: f64,
    /// The slowest call.
    pub figures_max_ms: f64,
    /// Milliseconds for a page of 50 pending jobs of one queue (median of the calls).
    pub page_p50_ms: f64,
    /// Milliseconds for a page with a filter nothing matches, which examines the most jobs a
    /// page may (median of the calls).
    pub filtered_page_p50_ms: f64,
    /// Redis commands one call sent with one job per queue, and with every job queued.
    pub commands_small: Option<u64>,
    /// See `commands_small`.
    pub commands_full: Option<u64>,
    /// Milliseconds the elected process takes to publish the fleet gauges once (queue figures,
    /// processes, store figures), median of the calls.
    pub fleet_p50_ms: f64,
    /// Redis commands one publish sends with every job queued.
    pub fleet_commands: Option<u64>,
    /// Milliseconds to render `/metrics` after a publish (it reads no store), median.
    pub scrape_p50_ms: f64,
    /// Lines of that `/metrics` page.
    pub scrape_lines: usize,
    /// The dashboard's pages over HTTP, and what an open tab costs the store.
    pub dashboard: crate::bench::dashboard::DashboardTimes,
}

/// Fills `queues` queues with `jobs` no-op jobs (one in ten delayed an hour), in batches of
/// `batch`, and measures the queue figures `rounds` times.
pub(crate) async fn run(
    app: &App,
    url: &str,
    jobs: u64,
    queues: usize,
    batch: usize,
    rounds: usize,
) -> Result<MonitorReport, CliError> {
    let names: Vec<String> = (0..queues)
        .map(|i| format!("bench-monitor-{i:02}"))
        .collect();
    let backend = app.backend();
    let mut made = 0u64;
    let fill = |from: u64, to: u64, now: i64| -> Vec<Job> {
        (from..to)
            .map(|i| {
                let mut job = Job::new(Noop::NAME, i.to_string().into_bytes(), now);
                job.queue = names[(i % queues as u64) as usize].clone();
                if i % 10 == 9 {
                    job.run_at = now + 3_600_000;
                }
                job
            })
            .collect()
    };
    let first = (queues as u64).min(jobs);
    backend
        .enqueue(fill(0, first, app.client().now()), app.client().now())
        .await?;
    made += first;
    let figures = || async {
        celeriac::monitor::queue_figures(app.backend().as_ref(), app.client().now()).await?;
        Ok(())
    };
    let commands_small = commands_per_call(url, figures).await?;
    let bar = progress_bar(jobs, "filling the queues");
    bar.set_position(made);
    let started = Instant::now();
    while made < jobs {
        let to = (made + batch as u64).min(jobs);
        let now = app.client().now();
        backend.enqueue(fill(made, to, now), now).await?;
        made = to;
        bar.set_position(made);
    }
    let fill_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let figures =
            celeriac::monitor::queue_figures(backend.as_ref(), app.client().now()).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let counted: u64 = figures
            .iter()
            .map(|f| f.stats.counts.values().sum::<u64>())
            .sum();
        if counted < jobs {
            return Err(CliError(format!(
                "the figures count {counted} jobs of the {jobs} queued"
            )));
        }
    }
    times.sort_by(f64::total_cmp);
    let commands_full = commands_per_call(url, figures).await?;
    let http = celeriac_web::Http::new(app.clone()).map_err(CliError)?;
    let fleet_p50_ms = median_ms(rounds, || http.publish_fleet_gauges()).await?;
    let fleet_commands = commands_per_call(url, || http.publish_fleet_gauges()).await?;
    let scrape_p50_ms = median_ms(rounds, || async {
        Ok::<_, celeriac::Error>(http.render_metrics())
    })
    .await?;
    let scrape_lines = http.render_metrics().lines().count();
    let page = JobQuery::new(names[0].clone(), JobState::Pending);
    let mut filtered = page.clone();
    filtered.task = Some("no-such-task".into());
    let page_p50_ms = median_ms(rounds, || backend.list_jobs(page.clone(), None, 50)).await?;
    let filtered_page_p50_ms =
        median_ms(rounds, || backend.list_jobs(filtered.clone(), None, 50)).await?;
    let dashboard =
        crate::bench::dashboard::measure(app, url, &names[0], Noop::NAME, rounds).await?;
    Ok(MonitorReport {
        jobs,
        queues,
        fill_secs,
        figures_p50_ms: times[times.len() / 2],
        figures_max_ms: times[times.len() - 1],
        page_p50_ms,
        filtered_page_p50_ms,
        commands_small,
        commands_full,
        fleet_p50_ms,
        fleet_commands,
        scrape_p50_ms,
        scrape_lines,
        dashboard,
    })
}

/// The median time of `rounds` calls of `call`, in ms.
async fn median_ms<T, F, Fut>(rounds: usize, call: F) -> Result<f64, CliError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = celeriac::Result<T>>,
{
    let mut times = Vec::with_capacity(rounds.max(1));
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        call().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Commands one `call` sends to a plain Redis (from `INFO stats` before and after); `None`
/// elsewhere.
#[cfg(feature = "redis")]
async fn commands_per_call<F, Fut>(url: &str, call: F) -> Result<Option<u64>, CliError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = celeriac::Result<()>>,
{
    if !url.starts_with("redis://") {
        return Ok(None);
    }
    let base = url.split('?').next().unwrap_or(url);
    let client = redis::Client::open(base)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let processed = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let before: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await?;
    call().await?;
    let after: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await?;
    // The first INFO is counted once it ran, so it is in `after` but not in `before`.
    Ok(Some(processed(after).saturating_sub(processed(before) + 1)))
}

#[cfg(not(feature = "redis"))]
async fn commands_per_call<F, Fut>(_url: &str, _call: F) -> Result<Option<u64>, CliError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = celeriac::Result<()>>,
{
    Ok(None)
}
