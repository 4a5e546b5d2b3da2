//! `celeriac bench`: the job queue, the cache, the rate limiters and the breaker, measured.

use crate::args::{BenchArgs, BenchWhat};
use crate::bench::jobs::{BenchConfig, Phase};
use crate::support::{progress_bar, CliError, CliResult, Scratch};
use celeriac::{App, Registry};
use celeriac_core::redact;

pub mod breaker;
pub mod cache;
pub mod cluster_info;
pub mod dashboard;
pub mod jobs;
pub mod layers;
pub mod limits;
pub mod monitor;
pub mod redis_info;

pub(crate) async fn run(url: Option<&str>, args: BenchArgs) -> CliResult {
    if args.what == BenchWhat::Cache {
        return run_cache_bench(url, args).await;
    }
    if args.what == BenchWhat::Limits {
        return run_limits_bench(url, args).await;
    }
    if args.what == BenchWhat::Breaker {
        return run_breaker_bench(&args);
    }
    if args.what == BenchWhat::Monitor {
        return run_monitor_bench(url, args).await;
    }
    if args.jobs == 0 || args.batch == 0 || args.concurrency == 0 || args.queues == 0 {
        return Err(CliError(
            "--jobs, --batch, --concurrency and --queues must be at least 1".into(),
        ));
    }
    let (url, _scratch) = match url {
        Some(u) => (u.to_string(), None),
        None => {
            let s = Scratch::new("bench")?;
            (s.url(), Some(s))
        }
    };
    let mut registry = Registry::new();
    registry.register::<crate::bench::jobs::Noop>();
    let app = App::builder()
        .url(url.as_str())
        .registry(registry)
        .build()
        .await?;
    let config = BenchConfig {
        jobs: args.jobs,
        queues: args.queues,
        batch: args.batch,
        concurrency: args.concurrency,
        latency_samples: args.latency_samples,
        redis_url: (args.redis_cpu && redis_info::is_redis_url(&url)).then(|| url.clone()),
    };
    let bar = progress_bar(args.jobs, "enqueueing");
    let mut phase = Phase::Enqueue;
    let report = crate::bench::jobs::run(&app, &config, |p, done, total| {
        if p != phase {
            phase = p;
            bar.set_length(total);
            bar.reset();
            bar.set_message(match p {
                Phase::Enqueue => "enqueueing",
                Phase::Process => "processing",
                Phase::Latency => "measuring latency",
            });
        }
        bar.set_position(done);
    })
    .await?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("backend        {}", report.url);
        println!(
            "enqueue        {:>10.0} jobs/s  ({} jobs in batches of {})",
            report.enqueue_jobs_per_sec, report.jobs, report.batch
        );
        let over = if report.queues > 1 {
            format!(", {} queues", report.queues)
        } else {
            String::new()
        };
        println!(
            "processing     {:>10.0} jobs/s  (concurrency {}{over})",
            report.process_jobs_per_sec, report.concurrency
        );
        println!(
            "start latency  p50 {:.2} ms, p99 {:.2} ms  (idle worker, {} single jobs)",
            report.latency_p50_us as f64 / 1000.0,
            report.latency_p99_us as f64 / 1000.0,
            args.latency_samples
        );
        if let Some(kib) = report.peak_rss_kib {
            println!("peak RSS       {:.1} MiB", kib as f64 / 1024.0);
        }
        print_redis_figures(&report);
    }
    Ok(())
}

/// Rows of each phase's table of commands.
const TOP_COMMANDS: usize = 8;

/// The Redis figures of `celeriac bench`, when measured: CPU and memory per job, and where
/// Redis's time went in each phase.
fn print_redis_figures(report: &crate::bench::jobs::BenchReport) {
    if let (Some(enqueue), Some(process)) = (
        report.redis_cpu_us_per_job_enqueue,
        report.redis_cpu_us_per_job_process,
    ) {
        println!(
            "Redis CPU      enqueue {enqueue:.2} µs/job, processing {process:.2} µs/job, \
             together {:.2} µs/job  (INFO cpu just before and after each phase)",
            enqueue + process
        );
        if let Some(nodes) = &report.redis_nodes {
            println!(
                "               (the {} masters of the Cluster together)",
                nodes.len()
            );
        }
    } else if let Some(enqueue) = report.redis_cpu_us_per_job_enqueue {
        println!("Redis CPU      enqueue {enqueue:.2} µs/job");
    }
    if let Some(bytes) = report.redis_bytes_per_queued_job {
        println!(
            "Redis memory   {bytes:.0} bytes per queued job  (used_memory with all {} queued, \
             minus before)",
            report.jobs
        );
    }
    for (phase, commands) in [
        ("enqueue", &report.redis_commandstats_enqueue),
        ("processing", &report.redis_commandstats_process),
    ] {
        let Some(commands) = commands else { continue };
        println!("where Redis's time went, {phase} (INFO commandstats, costliest first):");
        let width = commands
            .iter()
            .take(TOP_COMMANDS)
            .map(|c| c.command.len())
            .max()
            .unwrap_or(0)
            .max("command".len());
        println!(
            "  {:<width$}  {:>10}  {:>9}  {:>9}",
            "command", "calls/job", "µs/call", "µs/job"
        );
        for c in commands.iter().take(TOP_COMMANDS) {
            println!(
                "  {:<width$}  {:>10.3}  {:>9.2}  {:>9.3}",
                c.command, c.calls_per_job, c.usec_per_call, c.usec_per_job
            );
        }
        if commands.len() > TOP_COMMANDS {
            println!("  ({} more in --json)", commands.len() - TOP_COMMANDS);
        }
    }
    if report.redis_commandstats_enqueue.is_some() {
        println!(
            "  (µs of execution, not CPU; the commands of a script or a MULTI/EXEC count in its \
             evalsha or exec line and again on their own)"
        );
    }
    if let Some(nodes) = &report.redis_nodes {
        print_node_table(nodes, report.jobs);
    }
    if let Some(note) = &report.redis_note {
        println!("Redis figures  not measured: {note}");
    }
}

/// "Where the load lands": each master of a Cluster, its queues and its CPU in each phase.
fn print_node_table(nodes: &[crate::bench::cluster_info::NodeCost], jobs: u64) {
    let ms = |us: Option<f64>| us.map_or("-".to_string(), |us| format!("{:.1}", us / 1000.0));
    let per = |us: Option<f64>| us.map_or("-".to_string(), |us| format!("{us:.2}"));
    let total = |f: fn(&crate::bench::cluster_info::NodeCost) -> Option<f64>| {
        nodes.iter().map(f).sum::<Option<f64>>()
    };
    let total_process = total(|n| n.cpu_us_process);
    let width = nodes
        .iter()
        .map(|n| n.address.len())
        .max()
        .unwrap_or(0)
        .max("all masters".len());
    println!(
        "where the load lands (each master's INFO cpu before and after each phase; µs/job over \
         the jobs of its queues):"
    );
    println!(
        "  {:<width$}  {:>11}  {:>7}  {:>10}  {:>7}  {:>10}  {:>7}  {:>5}  queues",
        "master", "slots", "jobs", "enqueue ms", "µs/job", "process ms", "µs/job", "share"
    );
    for n in nodes {
        let share = match (n.cpu_us_process, total_process) {
            (Some(mine), Some(all)) if all > 0.0 => format!("{:.0} %", 100.0 * mine / all),
            _ => "-".to_string(),
        };
        println!(
            "  {:<width$}  {:>11}  {:>7}  {:>10}  {:>7}  {:>10}  {:>7}  {:>5}  {}",
            n.address,
            n.slots,
            n.jobs,
            ms(n.cpu_us_enqueue),
            per(n.cpu_us_per_job_enqueue),
            ms(n.cpu_us_process),
            per(n.cpu_us_per_job_process),
            share,
            if n.queues.is_empty() {
                "(none)".to_string()
            } else {
                n.queues.join(", ")
            }
        );
    }
    let total_enqueue = total(|n| n.cpu_us_enqueue);
    let all_jobs = |us: Option<f64>| us.map(|us| us / jobs.max(1) as f64);
    println!(
        "  {:<width$}  {:>11}  {:>7}  {:>10}  {:>7}  {:>10}  {:>7}",
        "all masters",
        "",
        jobs,
        ms(total_enqueue),
        per(all_jobs(total_enqueue)),
        ms(total_process),
        per(all_jobs(total_process)),
    );
}

async fn run_monitor_bench(url: Option<&str>, args: BenchArgs) -> CliResult {
    if args.jobs == 0 || args.batch == 0 || args.queue_count == 0 {
        return Err(CliError(
            "--jobs, --batch and --queue-count must be at least 1".into(),
        ));
    }
    let (url, _scratch) = match url {
        Some(u) => (u.to_string(), None),
        None => {
            let s = Scratch::new("bench-monitor")?;
            (s.url(), Some(s))
        }
    };
    let app = App::builder().url(url.as_str()).build().await?;
    let r =
        crate::bench::monitor::run(&app, &url, args.jobs, args.queue_count, args.batch, 20).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let backend = if url.starts_with("sqlite") {
        "embedded SQLite"
    } else {
        "Redis"
    };
    println!("backend          {backend}");
    println!(
        "filled           {} jobs over {} queues (one in ten delayed) in {:.1} s",
        r.jobs, r.queues, r.fill_secs
    );
    println!(
        "queue figures    p50 {:.2} ms, slowest {:.2} ms  (20 calls: counts, latency, consumers)",
        r.figures_p50_ms, r.figures_max_ms
    );
    println!(
        "jobs list        p50 {:.2} ms a page of 50; {:.2} ms a page whose filter matches none \
         ({} jobs examined)",
        r.page_p50_ms,
        r.filtered_page_p50_ms,
        celeriac::backend::SCAN_MAX
    );
    if let (Some(small), Some(full)) = (r.commands_small, r.commands_full) {
        println!(
            "store commands   {small} per call with one job per queue, {full} with all {} queued",
            r.jobs
        );
    }
    println!(
        "fleet gauges     p50 {:.2} ms to publish once{} (the elected process, every {} s)",
        r.fleet_p50_ms,
        r.fleet_commands
            .map(|n| format!(", {n} store commands"))
            .unwrap_or_default(),
        celeriac_web::FLEET_EVERY.as_secs()
    );
    println!(
        "/metrics         p50 {:.3} ms to render {} lines (no store call)",
        r.scrape_p50_ms, r.scrape_lines
    );
    let d = &r.dashboard;
    println!(
        "dashboard        p50 {:.1} ms the overview, {:.1} ms a queue's page, {:.1} ms a search \
         (over HTTP)",
        d.overview_p50_ms, d.queue_p50_ms, d.search_p50_ms
    );
    println!(
        "an open tab      {:.2} % of the store's time{} (one live update every {} s)",
        d.live_store_percent,
        d.live_redis_cpu_percent
            .map(|p| format!(", {p:.2} % of Redis's CPU"))
            .unwrap_or_default(),
        celeriac_web::dashboard::LIVE_EVERY.as_secs()
    );
    Ok(())
}

fn run_breaker_bench(args: &BenchArgs) -> CliResult {
    if args.calls == 0 {
        return Err(CliError("--calls must be at least 1".into()));
    }
    let r = crate::bench::breaker::bench_breaker_overhead(args.calls)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "Celeriac circuit breaker, closed path, one thread, best of 5 × {} calls",
        r.calls
    );
    println!("bare call                {:>8.2} ns", r.unguarded_ns);
    println!(
        "guarded, count window    {:>8.2} ns   overhead {:.2} ns",
        r.guarded_count_ns,
        r.overhead_count_ns()
    );
    println!(
        "guarded, time window     {:>8.2} ns   overhead {:.2} ns (one clock read per call)",
        r.guarded_time_ns,
        r.overhead_time_ns()
    );
    println!(
        "allocations on the closed path: none (crates/celeriac-core/tests/breaker_no_alloc.rs)"
    );
    Ok(())
}

async fn run_cache_bench(url: Option<&str>, args: BenchArgs) -> CliResult {
    if let Some(ns) = &args.stampede_child {
        let url = url.ok_or_else(|| CliError("--stampede-child needs --url".into()))?;
        let backend = std::sync::Arc::new(celeriac::AnyBackend::connect(url).await?);
        crate::bench::cache::stampede_child(backend, ns, args.stampede_gets, args.stampede_start)
            .await?;
        return Ok(());
    }
    if args.gets == 0 || args.keys == 0 || args.concurrency == 0 || args.stampede_gets == 0 {
        return Err(CliError(
            "--gets, --keys, --concurrency and --stampede-gets must be at least 1".into(),
        ));
    }
    let (url, _scratch) = match url {
        Some(u) => (u.to_string(), None),
        None => {
            let s = Scratch::new("bench-cache")?;
            (s.url(), Some(s))
        }
    };
    let backend = std::sync::Arc::new(celeriac::AnyBackend::connect(&url).await?);
    let exe = std::env::current_exe().map_err(|e| {
        CliError(format!(
            "cannot find this program to start the stampede: {e}"
        ))
    })?;
    let config = crate::bench::cache::CacheBenchConfig {
        gets: args.gets,
        concurrency: args.concurrency,
        keys: args.keys,
        processes: args.stampede_processes,
        stampede_gets: args.stampede_gets,
        exe,
        url: url.clone(),
    };
    let spinner = progress_bar(0, "measuring the cache");
    let report = crate::bench::cache::run(backend, &config).await?;
    spinner.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("Celeriac cache benchmark on {}", redact::url(&url));
    println!(
        "L1 hits      {:>12.0}/s   raw moka {:.0}/s   ratio {:.2}×",
        report.l1_hits_per_s, report.moka_gets_per_s, report.l1_ratio
    );
    match (report.redis_benchmark_gets_per_s, report.l2_ratio) {
        (Some(rb), Some(r)) => println!(
            "L2 hits      {:>12.0}/s   redis-benchmark GET {rb:.0}/s   ratio {r:.2}× (concurrency {})",
            report.l2_hits_per_s, args.concurrency
        ),
        _ => println!(
            "L2 hits      {:>12.0}/s   (concurrency {}; redis-benchmark compares on redis:// only)",
            report.l2_hits_per_s, args.concurrency
        ),
    }
    println!(
        "stampede     {} processes × {} concurrent gets of one cold key: {} loader call(s), \
         {} process(es) waited for another's load",
        report.stampede_processes,
        report.stampede_gets,
        report.stampede_loader_calls,
        report.stampede_processes_waited
    );
    Ok(())
}

async fn run_limits_bench(url: Option<&str>, args: BenchArgs) -> CliResult {
    if args.decisions == 0
        || args.local_decisions == 0
        || args.layer_requests == 0
        || args.layer_store_requests == 0
        || args.keys == 0
        || args.concurrency == 0
    {
        return Err(CliError(
            "--decisions, --local-decisions, --layer-requests, --layer-store-requests, --keys \
             and --concurrency must be at least 1"
                .into(),
        ));
    }
    let (url, _scratch) = match url {
        Some(u) => (u.to_string(), None),
        None => {
            let s = Scratch::new("bench-limits")?;
            (s.url(), Some(s))
        }
    };
    let backend = std::sync::Arc::new(celeriac::AnyBackend::connect(&url).await?);
    let config = crate::bench::limits::LimitsBenchConfig {
        decisions: args.decisions,
        local_decisions: args.local_decisions,
        concurrency: args.concurrency,
        keys: args.keys,
        breaker_calls: crate::bench::limits::BREAKER_CALLS,
        layer_requests: args.layer_requests,
        layer_store_requests: args.layer_store_requests,
        url: url.clone(),
    };
    let spinner = progress_bar(0, "measuring the rate limiters");
    let report = crate::bench::limits::run(backend, &config).await?;
    spinner.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("Celeriac rate limit benchmark on {}", redact::url(&url));
    match (report.raw_evalsha_per_s, report.store_ratio) {
        (Some(raw), Some(r)) => {
            println!(
                "store decisions {:>12.0}/s   raw EVALSHA {raw:.0}/s   ratio {r:.2}× (concurrency {})",
                report.store_decisions_per_s, report.concurrency
            );
            if let (Some(same), Some(r)) = (
                report.raw_evalsha_same_args_per_s,
                report.store_ratio_same_args,
            ) {
                println!(
                    "                                 raw EVALSHA with a decision's keys and arguments {same:.0}/s   ratio {r:.2}×"
                );
            }
        }
        _ => println!(
            "store decisions {:>12.0}/s   (concurrency {}; the EVALSHA comparison runs on redis:// only)",
            report.store_decisions_per_s, report.concurrency
        ),
    }
    println!(
        "local decisions {:>12.0}/s   (one core, one GCRA quota)",
        report.local_decisions_per_s
    );
    let b = &report.breaker;
    println!(
        "breaker overhead {:>10.1} ns per guarded call, count window ({:.1} ns guarded, {:.1} ns bare)",
        b.overhead_count_ns(),
        b.guarded_count_ns,
        b.unguarded_ns
    );
    println!(
        "breaker overhead {:>10.1} ns per guarded call, time window ({:.1} ns guarded)",
        b.overhead_time_ns(),
        b.guarded_time_ns
    );
    let l = &report.layers;
    println!(
        "layer, local    {:>12.0}/s   RateLimitLayer over a local limiter, one thread: {:.0} ns per request, overhead {:.0} ns ({:.0} ns bare)",
        l.rate_limit_local_per_s, l.rate_limit_local_ns, l.rate_limit_local_overhead_ns, l.bare_ns
    );
    println!(
        "layer, store    {:>12.0}/s   RateLimitLayer over the store (concurrency {}): ratio {:.2}× of the {:.0} store decisions/s measured in turns with it",
        l.rate_limit_store_per_s, report.concurrency, l.rate_limit_store_ratio, l.store_decisions_per_s
    );
    println!(
        "breaker layer   {:>11.1} ns per request, HTTP CircuitBreakerLayer, closed, count window ({:.1} ns layered, {:.1} ns bare)",
        l.breaker_overhead_ns, l.breaker_ns, l.bare_ns
    );
    Ok(())
}
