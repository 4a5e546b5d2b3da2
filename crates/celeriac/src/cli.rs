//! The `celeriac` command line, as a library: the stock binary calls [`run`], and an
//! application's own binary calls [`crate::App::run_cli`] to get the same subcommands for its
//! own tasks.
//!
//! Every flag can also be set with a `CELERIAC_*` environment variable (shown in `--help`).

use crate::backend::{WorkflowRecord, WorkflowStore};
use crate::bench::{self, BenchConfig, Phase};
use crate::workflow::FLOW_HEADER;
use crate::{
    demo, App, Broker, Error, JobId, JobInfo, JobOptions, Priority, Registry, ResultStore,
    WorkerConfig,
};
mod limits;

use clap::{Args, Parser, Subcommand};

mod breaker;
mod warp;
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "celeriac",
    version,
    about = "Background jobs for Rust: run workers, enqueue and inspect jobs, manage queues and dead letters.",
    long_about = "Background jobs for Rust: run workers, enqueue and inspect jobs, manage queues and \
dead letters.\n\nThe backend is chosen by URL (--url or CELERIAC_URL): sqlite://celeriac.db (the \
default, one file, no server), sqlite::memory:, or Redis: redis://host:6379, rediss:// (TLS), \
redis+cluster://h1:p1,h2:p2, redis+sentinel://s1:26379/mymaster.\n\nQuick start: `celeriac demo` runs a realistic \
mix of jobs on the embedded backend and prints a summary."
)]
struct Cli {
    /// Backend URL: sqlite://path/to/file.db (default sqlite://celeriac.db), sqlite::memory:,
    /// redis://[user:pass@]host:port[/db], rediss://..., redis+cluster://h1:p1,h2:p2 or
    /// redis+sentinel://s1:p1/master-name.
    #[arg(long, env = "CELERIAC_URL", global = true)]
    url: Option<String>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as celeriac=debug.
    #[arg(long, env = "CELERIAC_LOG", global = true)]
    log: Option<String>,

    /// The file the demo's `stock` write-behind cache flushes to (one JSON line per write).
    #[arg(long, env = "CELERIAC_DEMO_STOCK_FILE", global = true, hide = true)]
    demo_stock_file: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a worker: claim jobs from queues and run their tasks until SIGINT/SIGTERM.
    ///
    /// The first signal stops claiming and lets running jobs finish within the grace period
    /// (then hands the rest back); a second signal stops at once and leaves leases to expire.
    Worker(WorkerArgs),
    /// Run the scheduler: enqueue a job for each tick of the periodic schedules.
    ///
    /// Schedules come from code (AppBuilder::schedule) and from a TOML file (--schedules or
    /// CELERIAC_SCHEDULES). Run as many beats as you like: one holds the leader lease and fires,
    /// the others take over within --beat-lease if it dies, and a tick is never enqueued twice.
    Beat(BeatArgs),
    /// List the periodic schedules with their next run times, or pause and resume one.
    Schedules {
        #[command(subcommand)]
        command: Option<SchedulesCommand>,
        #[command(flatten)]
        file: ScheduleFileArgs,
        /// How many next run times to show.
        #[arg(long, env = "CELERIAC_SCHEDULES_NEXT", default_value_t = 3)]
        next: usize,
        /// Print JSON instead of a table.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// Enqueue a job for a task by name, with JSON arguments.
    Enqueue(EnqueueArgs),
    /// Show everything known about a job (state, arguments, result, error, progress) or a
    /// workflow (shape, state, result, the step that failed).
    Inspect {
        /// The job's id.
        id: String,
        /// Print JSON instead of text.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// Cancel a job: a waiting one never runs; a running one is asked to stop (its task's
    /// cancellation token fires within about a second) and ends as cancelled.
    Cancel {
        /// The job's id.
        id: String,
    },
    /// List queues with their job counts per state.
    Queues {
        /// Print JSON instead of a table.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// Pause a queue: workers stop claiming from it (running jobs finish).
    Pause {
        /// The queue.
        queue: String,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Delete the pending and scheduled jobs of a queue (running jobs are not touched).
    Purge {
        /// The queue.
        queue: String,
        /// Confirm the deletion.
        #[arg(long, env = "CELERIAC_YES")]
        yes: bool,
    },
    /// Dead letters: jobs that could not succeed, with the reason.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The cache: statistics per namespace, and warming.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// List the tasks this binary can run.
    Tasks,
    /// Run a demo on the embedded backend: a worker in this process and thousands of jobs
    /// (e-mails with latency, retries, delayed jobs, a few dead letters), then a summary.
    Demo {
        /// How many jobs.
        #[arg(long, env = "CELERIAC_DEMO_JOBS", default_value_t = 3000)]
        jobs: u64,
    },
    /// Shared circuit breakers: their state in the store, and manual overrides.
    Breaker {
        #[command(subcommand)]
        command: breaker::BreakerCommand,
    },
    /// Measure enqueue and processing throughput, start latency and memory with no-op jobs.
    ///
    /// Without --url it uses a fresh SQLite file with durable commits.
    Bench(BenchArgs),
    /// Rate limits in the store: check a key against quotas and print the decision.
    Limits {
        #[command(subcommand)]
        command: limits::LimitsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// Per namespace, the counters of every live instance summed: hits in L1 and L2, misses,
    /// the hit ratio, stale values served, loads and their mean time, waiters, evictions and
    /// L2 errors.
    ///
    /// Every cache publishes its counters every 10 s (its stats interval); an instance
    /// counts while its last snapshot is younger than three intervals.
    Stats {
        /// Only this namespace (default: every namespace of the application).
        #[arg(long, short, env = "CELERIAC_CACHE_NAMESPACE")]
        namespace: Option<String>,
        /// The application's name in cache keys.
        #[arg(long, env = "CELERIAC_CACHE_APP", default_value = "celeriac")]
        app: String,
        /// Print JSON instead of a table.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// Load a namespace's keys ahead of use with its registered warmer, in this process,
    /// with a progress bar; keys already fresh in the L2 are not loaded again.
    ///
    /// A worker runs the same warm as the job `celeriac.cache.warm` with arguments
    /// {"namespace": "...", "keys": [...]}, e.g. from a schedule.
    Warm {
        /// The namespace (see the registered warmers in the error when it is unknown).
        namespace: String,
        /// Only these keys, comma-separated.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        keys: Vec<String>,
        /// Every key the warmer lists.
        #[arg(long)]
        all: bool,
        /// Loads at once.
        #[arg(long, env = "CELERIAC_WARM_CONCURRENCY", default_value_t = crate::DEFAULT_WARM_CONCURRENCY)]
        concurrency: usize,
        /// Print JSON instead of a summary.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// FOR TESTS: writes `--writes` stock levels through the demo's write-behind cache,
    /// printing `acked <key> <version> <value>` as each is acknowledged, then `done`, and
    /// waits to be killed (it runs no worker: nothing is flushed here).
    #[command(hide = true)]
    WriteBehindDemo {
        /// How many writes.
        #[arg(long, default_value_t = 100)]
        writes: u64,
        /// Over how many keys (`sku-0`...).
        #[arg(long, default_value_t = 10)]
        keys: u64,
    },
    /// FOR TESTS: reads `--key` into this process's L1 of the namespace `probe` (loading
    /// `--initial` when absent), waits until the invalidation channel is subscribed, prints
    /// `ready <value>`; then, with `--set`, waits for a line on stdin, sets the new value and
    /// prints `set <unix ms>`; without, reads the key from its cache every 5 ms until the
    /// value changes and prints `saw <value> <unix ms>` (failing after `--within`).
    #[command(hide = true)]
    Probe {
        /// The key.
        #[arg(long, default_value = "k")]
        key: String,
        /// The value loaded when the key is absent.
        #[arg(long, default_value = "v0")]
        initial: String,
        /// Set this value when told (on stdin).
        #[arg(long)]
        set: Option<String>,
        /// How long to watch for a change.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        within: Duration,
    },
}

#[derive(Args, Debug)]
struct WorkerArgs {
    /// Queues to consume, comma-separated, most important first (default: the queues of the
    /// registered tasks). Strict order by default; give every queue a weight (`high:3,low:1`)
    /// to serve them in proportion instead, so no queue starves.
    #[arg(long, short, env = "CELERIAC_QUEUES", value_delimiter = ',')]
    queues: Vec<String>,
    /// Jobs running at once.
    #[arg(long, short, env = "CELERIAC_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Most jobs claimed per call (never more than the free slots).
    #[arg(long, env = "CELERIAC_PREFETCH")]
    prefetch: Option<usize>,
    /// Lease per job, e.g. 30s; a job whose worker dies is redelivered after this.
    #[arg(long, env = "CELERIAC_LEASE", default_value = "30s", value_parser = parse_duration)]
    lease: Duration,
    /// How often leases are extended (default: a third of the lease).
    #[arg(long, env = "CELERIAC_HEARTBEAT", value_parser = parse_duration)]
    heartbeat: Option<Duration>,
    /// How long an idle worker waits before looking for work enqueued by other processes.
    #[arg(long, env = "CELERIAC_POLL_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// On shutdown, how long running jobs may take to finish.
    #[arg(long, env = "CELERIAC_GRACE_PERIOD", default_value = "30s", value_parser = parse_duration)]
    grace_period: Duration,
    /// This worker's name (default host:pid).
    #[arg(long, env = "CELERIAC_WORKER_ID")]
    worker_id: Option<String>,
    /// Also run the scheduler in this process (see `celeriac beat`).
    #[arg(long, env = "CELERIAC_BEAT")]
    beat: bool,
    #[command(flatten)]
    beat_args: BeatArgs,
}

#[derive(Args, Debug, Clone)]
struct ScheduleFileArgs {
    /// A TOML file of schedules (`[[schedule]]` tables with name, cron or every, timezone,
    /// task, args, queue, priority, missed, paused), added to those defined in code.
    #[arg(long, env = "CELERIAC_SCHEDULES", global = true)]
    schedules: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct BeatArgs {
    #[command(flatten)]
    file: ScheduleFileArgs,
    /// The scheduler's leader lease, e.g. 30s: when the leading beat dies, another takes over
    /// within this long. Renewed every third of it.
    #[arg(long, env = "CELERIAC_BEAT_LEASE", default_value = "30s", value_parser = parse_duration)]
    beat_lease: Duration,
    /// A tick older than this when the scheduler gets to it counts as missed and follows the
    /// schedule's missed-tick policy.
    #[arg(long, env = "CELERIAC_BEAT_LATE_AFTER", default_value = "60s", value_parser = parse_duration)]
    beat_late_after: Duration,
    /// This beat's name in the leader lease (default host:pid).
    #[arg(long, env = "CELERIAC_BEAT_ID")]
    beat_id: Option<String>,
    #[command(flatten)]
    warp: warp::Warp,
}

#[derive(Subcommand, Debug)]
enum SchedulesCommand {
    /// List the schedules (the default).
    List,
    /// Pause a schedule: no beat fires it until it is resumed; ticks that pass meanwhile are
    /// not caught up on.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resume a paused schedule: it fires from its next tick on.
    Resume {
        /// The schedule's name.
        name: String,
    },
}

#[derive(Args, Debug)]
struct EnqueueArgs {
    /// The task's name (see `celeriac tasks`).
    task: String,
    /// The arguments as JSON: the value of the task's argument, or an array for several.
    #[arg(long, short, env = "CELERIAC_ARGS", default_value = "null")]
    args: String,
    /// Another queue than the task's own.
    #[arg(long, env = "CELERIAC_QUEUE")]
    queue: Option<String>,
    /// Priority 0..=9, 9 most urgent.
    #[arg(long, env = "CELERIAC_PRIORITY")]
    priority: Option<u8>,
    /// Run no sooner than this from now, e.g. 10s, 5m.
    #[arg(long, env = "CELERIAC_DELAY", value_parser = parse_duration)]
    delay: Option<Duration>,
    /// Expire if not started within this, e.g. 1h.
    #[arg(long, env = "CELERIAC_EXPIRES", value_parser = parse_duration)]
    expires: Option<Duration>,
    /// Total attempts.
    #[arg(long, env = "CELERIAC_MAX_ATTEMPTS")]
    max_attempts: Option<u32>,
    /// Make the job unique in its queue under this key: while the key is held, enqueueing
    /// prints the holder's id instead of adding a job.
    #[arg(long, env = "CELERIAC_UNIQUE")]
    unique: Option<String>,
    /// How long the unique key is held: started (until the job starts), finished (until it
    /// finishes), window=DURATION (throttle), debounce=DURATION (replace and push back).
    #[arg(long, env = "CELERIAC_UNIQUE_FOR", default_value = "finished", value_parser = parse_unique_for)]
    unique_for: crate::UniqueFor,
    /// Accept a task this binary does not know (one that workers in another binary run).
    #[arg(long, env = "CELERIAC_UNCHECKED")]
    unchecked: bool,
    /// Wait this long for the job to finish and print its result.
    #[arg(long, env = "CELERIAC_WAIT", value_parser = parse_duration)]
    wait: Option<Duration>,
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// List dead letters, newest first.
    List {
        /// Only this queue.
        #[arg(long, env = "CELERIAC_QUEUE")]
        queue: Option<String>,
        /// At most this many.
        #[arg(long, env = "CELERIAC_LIMIT", default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// Put dead jobs back in their queues with fresh attempts.
    Retry {
        /// Job ids; with none, every dead letter (of --queue, if given).
        ids: Vec<String>,
        /// Only this queue.
        #[arg(long, env = "CELERIAC_QUEUE")]
        queue: Option<String>,
    },
    /// Delete dead letters.
    Purge {
        /// Only this queue.
        #[arg(long, env = "CELERIAC_QUEUE")]
        queue: Option<String>,
        /// Confirm the deletion.
        #[arg(long, env = "CELERIAC_YES")]
        yes: bool,
    },
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// What to measure: `jobs` (enqueue, processing, start latency), `cache` (L1 hits
    /// against raw moka, L2 hits against redis-benchmark, a stampede of 3 processes on one
    /// cold key), `limits` (limiter decisions on the store against raw EVALSHA of a trivial
    /// script, local decisions on one core, what the rate-limit and breaker tower layers add
    /// to a request) or `breaker` (nanoseconds a closed circuit breaker adds to a call).
    #[arg(value_enum, default_value = "jobs")]
    what: BenchWhat,
    /// Breaker: calls per round.
    #[arg(long, env = "CELERIAC_BENCH_CALLS", default_value_t = 20_000_000)]
    calls: u64,
    /// Cache: gets per phase.
    #[arg(long, env = "CELERIAC_BENCH_GETS", default_value_t = 1_000_000)]
    gets: u64,
    /// Cache: distinct keys.
    #[arg(long, env = "CELERIAC_BENCH_KEYS", default_value_t = 10_000)]
    keys: u64,
    /// Cache: processes in the stampede, and concurrent gets of the cold key in each.
    #[arg(long, env = "CELERIAC_BENCH_STAMPEDE", default_value_t = 3)]
    stampede_processes: usize,
    /// Cache: concurrent gets of the cold key in each stampede process.
    #[arg(long, env = "CELERIAC_BENCH_STAMPEDE_GETS", default_value_t = 1000)]
    stampede_gets: usize,
    /// (Internal) run as one process of a cache stampede on this namespace.
    #[arg(long, hide = true)]
    stampede_child: Option<String>,
    /// (Internal) when the stampede starts, ms since the epoch.
    #[arg(long, hide = true, default_value_t = 0)]
    stampede_start: i64,
    /// Limits: decisions on the store.
    #[arg(long, env = "CELERIAC_BENCH_DECISIONS", default_value_t = 1_000_000)]
    decisions: u64,
    /// Limits: decisions of the local limiter per round.
    #[arg(
        long,
        env = "CELERIAC_BENCH_LOCAL_DECISIONS",
        default_value_t = 20_000_000
    )]
    local_decisions: u64,
    /// Limits: requests per round through each tower layer on one thread.
    #[arg(long, env = "CELERIAC_BENCH_LAYER_REQUESTS", default_value_t = 200_000)]
    layer_requests: u64,
    /// Limits: requests through the rate-limit layer on the store (and as many store
    /// decisions in turns with them).
    #[arg(
        long,
        env = "CELERIAC_BENCH_LAYER_STORE_REQUESTS",
        default_value_t = 50_000
    )]
    layer_store_requests: u64,
    /// Jobs to enqueue and process.
    #[arg(
        long,
        short = 'n',
        env = "CELERIAC_BENCH_JOBS",
        default_value_t = 20_000
    )]
    jobs: u64,
    /// Jobs per enqueue call.
    #[arg(long, env = "CELERIAC_BENCH_BATCH", default_value_t = 1000)]
    batch: usize,
    /// Worker concurrency.
    #[arg(long, short, env = "CELERIAC_BENCH_CONCURRENCY", default_value_t = 100)]
    concurrency: usize,
    /// Single jobs sent to an idle worker to measure start latency.
    #[arg(long, env = "CELERIAC_BENCH_LATENCY_SAMPLES", default_value_t = 500)]
    latency_samples: u64,
    /// Print JSON.
    #[arg(long, env = "CELERIAC_JSON")]
    json: bool,
}

fn run_breaker_bench(args: &BenchArgs) -> CliResult {
    if args.calls == 0 {
        return Err(CliError("--calls must be at least 1".into()));
    }
    let r = crate::bench_breaker::bench_breaker_overhead(args.calls)?;
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
        let backend = std::sync::Arc::new(crate::Backend::connect(url).await?);
        crate::bench_cache::stampede_child(backend, ns, args.stampede_gets, args.stampede_start)
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
    let backend = std::sync::Arc::new(crate::Backend::connect(&url).await?);
    let exe = std::env::current_exe().map_err(|e| {
        CliError(format!(
            "cannot find this program to start the stampede: {e}"
        ))
    })?;
    let config = crate::bench_cache::CacheBenchConfig {
        gets: args.gets,
        concurrency: args.concurrency,
        keys: args.keys,
        processes: args.stampede_processes,
        stampede_gets: args.stampede_gets,
        exe,
        url: url.clone(),
    };
    let spinner = progress_bar(0, "measuring the cache");
    let report = crate::bench_cache::run(backend, &config).await?;
    spinner.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("Celeriac cache benchmark on {url}");
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
    let backend = std::sync::Arc::new(crate::Backend::connect(&url).await?);
    let config = crate::bench_limits::LimitsBenchConfig {
        decisions: args.decisions,
        local_decisions: args.local_decisions,
        concurrency: args.concurrency,
        keys: args.keys,
        breaker_calls: crate::bench_limits::BREAKER_CALLS,
        layer_requests: args.layer_requests,
        layer_store_requests: args.layer_store_requests,
        url: url.clone(),
    };
    let spinner = progress_bar(0, "measuring the rate limiters");
    let report = crate::bench_limits::run(backend, &config).await?;
    spinner.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("Celeriac rate limit benchmark on {url}");
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

/// What `celeriac bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchWhat {
    /// The job queue.
    Jobs,
    /// The cache.
    Cache,
    /// The rate limiters.
    Limits,
    /// A circuit breaker's overhead per guarded call on its closed path.
    Breaker,
}

/// Splits `name:weight` queue arguments into names and weights (all or none weighted).
fn split_weights(args: &[String]) -> Result<(Vec<String>, Vec<u32>), CliError> {
    let mut names = Vec::new();
    let mut weights = Vec::new();
    for a in args {
        match a.rsplit_once(':') {
            Some((name, w)) => {
                let w: u32 = w.parse().map_err(|_| {
                    CliError(format!(
                        "--queues: `{a}`: the weight after `:` must be a whole number"
                    ))
                })?;
                names.push(name.to_string());
                weights.push(w);
            }
            None => names.push(a.clone()),
        }
    }
    if !weights.is_empty() && weights.len() != names.len() {
        return Err(CliError(
            "--queues: give every queue a weight (high:3,low:1) or none (strict order)".into(),
        ));
    }
    Ok((names, weights))
}

/// Parses `started`, `finished`, `window=10m` or `debounce=5s`.
pub fn parse_unique_for(s: &str) -> Result<crate::UniqueFor, String> {
    match s.split_once('=') {
        None if s == "started" => Ok(crate::UniqueFor::UntilStarted),
        None if s == "finished" => Ok(crate::UniqueFor::UntilFinished),
        Some(("window", d)) => Ok(crate::UniqueFor::Window(parse_duration(d)?)),
        Some(("debounce", d)) => Ok(crate::UniqueFor::Debounce(parse_duration(d)?)),
        _ => Err(format!(
            "`{s}` is not a unique lifetime: use started, finished, window=DURATION or debounce=DURATION"
        )),
    }
}

/// Parses `250ms`, `30s`, `5m`, `2h`, `1d`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 250ms, 30s, 5m, 2h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use ms, s, m, h or d)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A failure to report as one line.
struct CliError(String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

type CliResult = Result<(), CliError>;

/// Runs the stock `celeriac` binary (its tasks are the demo's).
pub async fn run() -> ExitCode {
    run_with_registry(None).await
}

/// Runs the command line with `registry`'s tasks (the demo tasks when `None`).
pub async fn run_with_registry(registry: Option<Registry>) -> ExitCode {
    run_with(registry, None).await
}

/// Runs the command line with `registry`'s tasks (the demo tasks when `None`), on
/// `default_url` unless `--url`/`CELERIAC_URL` says otherwise.
pub async fn run_with(registry: Option<Registry>, default_url: Option<String>) -> ExitCode {
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
        Command::Worker(_) | Command::Beat(_) => "info",
        Command::Demo { .. } | Command::Bench(_) | Command::Breaker { .. } => "error",
        _ => "warn",
    };
    init_logging(cli.log.as_deref().unwrap_or(default_log));
    if let Some(path) = &cli.demo_stock_file {
        demo::set_stock_file(path.clone());
    }
    let registry = registry.unwrap_or_else(|| {
        let mut r = demo::registry();
        r.register::<bench::Noop>();
        r
    });
    // Boxed: the commands' futures nest deeply, and a box keeps callers' futures small.
    match Box::pin(dispatch(cli, registry, default_url)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

async fn app(url: Option<&str>, registry: Registry) -> Result<App, CliError> {
    app_with_schedules(url, registry, None).await
}

async fn app_with_schedules(
    url: Option<&str>,
    registry: Registry,
    file: Option<&std::path::Path>,
) -> Result<App, CliError> {
    let url = url.unwrap_or(crate::DEFAULT_URL);
    let mut builder = App::builder().url(url).registry(registry);
    if let Some(file) = file {
        builder = builder.schedules_file(file);
    }
    Ok(builder.build().await?)
}

async fn dispatch(cli: Cli, registry: Registry, default_url: Option<String>) -> CliResult {
    // The demo and the benchmark use a scratch file unless a URL is given explicitly.
    let explicit = cli.url.as_deref();
    let url = explicit.or(default_url.as_deref());
    match cli.command {
        Command::Worker(args) => {
            let file = args
                .beat
                .then_some(args.beat_args.file.schedules.as_deref())
                .flatten();
            worker(app_with_schedules(url, registry, file).await?, args).await
        }
        Command::Beat(args) => {
            let app = app_with_schedules(url, registry, args.file.schedules.as_deref()).await?;
            beat(app, args).await
        }
        Command::Schedules {
            command,
            file,
            next,
            json,
        } => {
            let app = app_with_schedules(url, registry, file.schedules.as_deref()).await?;
            schedules(app, command, next, json).await
        }
        Command::Enqueue(args) => enqueue(app(url, registry).await?, args).await,
        Command::Inspect { id, json } => inspect(app(url, registry).await?, &id, json).await,
        Command::Queues { json } => queues(app(url, registry).await?, json).await,
        Command::Cancel { id } => {
            let id: JobId = id.parse()?;
            let app = app(url, registry).await?;
            match app.client().cancel(id).await? {
                crate::CancelOutcome::Cancelled => println!("{id} cancelled; it will not run"),
                crate::CancelOutcome::Requested => println!(
                    "{id} is running: its worker was asked to stop it; it ends as cancelled"
                ),
                crate::CancelOutcome::AlreadyFinished(state) => {
                    println!("{id} had already finished: {state}")
                }
                crate::CancelOutcome::NotFound => {
                    return Err(CliError(format!(
                        "no job {id} (it never existed, or its record expired)"
                    )))
                }
            }
            Ok(())
        }
        Command::Pause { queue } => {
            app(url, registry).await?.backend().pause(&queue).await?;
            println!("paused {queue}");
            Ok(())
        }
        Command::Resume { queue } => {
            app(url, registry).await?.backend().resume(&queue).await?;
            println!("resumed {queue}");
            Ok(())
        }
        Command::Purge { queue, yes } => {
            if !yes {
                return Err(CliError(format!(
                    "refusing to delete the waiting jobs of `{queue}` without --yes"
                )));
            }
            let n = app(url, registry).await?.backend().purge(&queue).await?;
            println!("deleted {n} waiting jobs from {queue}");
            Ok(())
        }
        Command::Dlq { command } => dlq(app(url, registry).await?, command).await,
        Command::Cache { command } => cache(app(url, registry).await?, command).await,
        Command::Tasks => {
            for name in registry.names() {
                if let Some(def) = registry.get(name) {
                    let o = def.options();
                    println!(
                        "{name}  queue={} attempts={} priority={}",
                        o.queue,
                        o.max_attempts,
                        o.priority.get()
                    );
                }
            }
            Ok(())
        }
        Command::Limits { command } => {
            limits::run(url.unwrap_or(crate::DEFAULT_URL), command).await
        }
        Command::Demo { jobs } => run_demo(explicit, jobs).await,
        Command::Bench(args) => run_bench(explicit, args).await,
        Command::Breaker { command } => {
            breaker::run(url.unwrap_or(crate::DEFAULT_URL), command).await
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn worker(app: App, args: WorkerArgs) -> CliResult {
    let (queues, weights) = split_weights(&args.queues)?;
    let mut config = WorkerConfig {
        queues,
        weights,
        concurrency: args.concurrency,
        prefetch: args.prefetch.unwrap_or(args.concurrency),
        lease: args.lease,
        heartbeat: args.heartbeat.unwrap_or(args.lease / 3),
        poll_interval: args.poll_interval,
        grace_period: args.grace_period,
        ..WorkerConfig::default()
    };
    if let Some(id) = args.worker_id {
        config.worker_id = id;
    }
    config.validate()?;
    let scheduler = if args.beat {
        Some(make_beat(&app, &args.beat_args)?)
    } else {
        None
    };
    let worker = app.worker().config(config);
    let shutdown = worker.shutdown_handle();
    let stats = worker.stats();
    let beat_stop = scheduler.as_ref().map(|b| b.shutdown_handle());
    let beat_task = scheduler.map(|b| tokio::spawn(b.run()));
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("shutting down: finishing running jobs (signal again to stop now)");
        if let Some(stop) = &beat_stop {
            stop.cancel();
        }
        shutdown.graceful();
        wait_for_signal().await;
        eprintln!("stopping now; unfinished jobs will be redelivered when their leases expire");
        shutdown.immediate();
    });
    worker.run().await?;
    if let Some(task) = beat_task {
        task.await
            .map_err(|e| CliError(format!("the scheduler failed: {e}")))??;
    }
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "worker stopped: started={} succeeded={} retried={} failed={} dead={} cancelled={} stale={} released={}",
        stats.started.load(Relaxed),
        stats.succeeded.load(Relaxed),
        stats.retried.load(Relaxed),
        stats.failed.load(Relaxed),
        stats.dead.load(Relaxed),
        stats.cancelled.load(Relaxed),
        stats.stale.load(Relaxed),
        stats.released.load(Relaxed),
    );
    Ok(())
}

/// The scheduler of `celeriac beat` and `celeriac worker --beat`.
fn make_beat(app: &App, args: &BeatArgs) -> Result<crate::Beat<crate::Backend>, CliError> {
    if app.schedules().is_empty() {
        return Err(CliError(
            "no schedules to run: give a TOML file of [[schedule]] tables with --schedules or \
             CELERIAC_SCHEDULES, or define schedules in code with AppBuilder::schedule"
                .into(),
        ));
    }
    let mut config = crate::BeatConfig::default().with_lease(args.beat_lease);
    config.late_after = args.beat_late_after;
    if let Some(id) = &args.beat_id {
        config.holder = id.clone();
    }
    config
        .validate()
        .map_err(|e| CliError(format!("--beat-lease/--beat-id: {e}")))?;
    let mut beat = app.beat()?.config(config)?;
    if let Some(warped) = args.warp.clock()? {
        beat = beat.clock(warped.clock);
    }
    Ok(beat)
}

async fn beat(app: App, args: BeatArgs) -> CliResult {
    let beat = make_beat(&app, &args)?;
    let stop = beat.shutdown_handle();
    let stats = beat.stats();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("shutting down the scheduler");
        stop.cancel();
    });
    beat.run().await?;
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "beat stopped: fired={} skipped={} acquired={} lost={}",
        stats.fired.load(Relaxed),
        stats.skipped.load(Relaxed),
        stats.acquired.load(Relaxed),
        stats.lost.load(Relaxed),
    );
    Ok(())
}

async fn schedules(
    app: App,
    command: Option<SchedulesCommand>,
    next: usize,
    json: bool,
) -> CliResult {
    use crate::Coordinator;
    let known = |name: &str| -> CliResult {
        if app.schedules().iter().any(|s| s.name() == name) {
            return Ok(());
        }
        let names: Vec<&str> = app.schedules().iter().map(|s| s.name()).collect();
        Err(CliError(format!(
            "no schedule `{name}`; defined schedules: {} (give the file with --schedules or \
             CELERIAC_SCHEDULES)",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )))
    };
    match command {
        Some(SchedulesCommand::Pause { name }) => {
            known(&name)?;
            app.backend().set_schedule_paused(&name, true).await?;
            println!("paused schedule {name}");
            return Ok(());
        }
        Some(SchedulesCommand::Resume { name }) => {
            known(&name)?;
            app.backend().set_schedule_paused(&name, false).await?;
            let still = app
                .schedules()
                .iter()
                .any(|s| s.name() == name && s.paused());
            if still {
                println!("resumed schedule {name}, but its definition says paused = true");
            } else {
                println!("resumed schedule {name}");
            }
            return Ok(());
        }
        Some(SchedulesCommand::List) | None => {}
    }
    let states: std::collections::HashMap<String, crate::backend::ScheduleState> = app
        .backend()
        .schedule_states()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let now = app.client().now();
    let fmt = |s: &crate::Schedule, t: i64| -> String {
        use chrono::TimeZone;
        s.timezone()
            .timestamp_millis_opt(t)
            .single()
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_else(|| t.to_string())
    };
    let mut rows = Vec::new();
    for s in app.schedules() {
        let state = states.get(s.name());
        let paused = s.paused() || state.is_some_and(|st| st.paused);
        let upcoming: Vec<String> = s.upcoming(now, next).iter().map(|&t| fmt(s, t)).collect();
        // The stored cursor is the last tick handled (fired, or passed over by the missed-tick
        // policy), or the moment a beat first saw the schedule when no tick came since.
        let last = state.and_then(|st| st.last_tick).map(|t| {
            if s.last_at_or_before(t) == Some(t) {
                fmt(s, t)
            } else {
                format!("none yet (watched since {})", fmt(s, t))
            }
        });
        rows.push(serde_json::json!({
            "name": s.name(),
            "spec": s.spec().to_string(),
            "timezone": s.timezone().name(),
            "task": s.task(),
            "missed": s.missed().to_string(),
            "paused": paused,
            "next": upcoming,
            "last_tick": last,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no schedules (give a TOML file with --schedules or CELERIAC_SCHEDULES)");
        return Ok(());
    }
    for r in &rows {
        let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
        println!(
            "{}  {}  tz={}  task={}  missed={}{}",
            text("name"),
            text("spec"),
            text("timezone"),
            text("task"),
            text("missed"),
            if r["paused"].as_bool().unwrap_or(false) {
                "  PAUSED"
            } else {
                ""
            }
        );
        println!(
            "    last tick: {}",
            r["last_tick"]
                .as_str()
                .unwrap_or("none (no beat has run it)")
        );
        if let Some(next) = r["next"].as_array() {
            let list: Vec<&str> = next.iter().filter_map(|v| v.as_str()).collect();
            println!("    next: {}", list.join(", "));
        }
    }
    Ok(())
}

async fn enqueue(app: App, args: EnqueueArgs) -> CliResult {
    let value: serde_json::Value = serde_json::from_str(&args.args)
        .map_err(|e| CliError(format!("--args is not valid JSON: {e}")))?;
    let priority = args.priority.map(Priority::new).transpose()?;
    let opts = JobOptions {
        queue: args.queue,
        priority,
        delay: args.delay,
        expires_in: args.expires,
        max_attempts: args.max_attempts,
        unique: args.unique.map(|key| crate::Unique {
            key,
            lifetime: args.unique_for,
        }),
        ..JobOptions::default()
    };
    let registry = (!args.unchecked).then(|| app.registry().as_ref());
    let handle = app
        .client()
        .enqueue_json(registry, &args.task, &value, opts)
        .await
        .map_err(|e| match e {
            Error::Config { setting, message } if setting == "task" => {
                CliError(format!("{message} (pass --unchecked to enqueue it anyway)"))
            }
            other => CliError(other.to_string()),
        })?;
    println!("{}", handle.id());
    if let Some(wait) = args.wait {
        let info = handle.wait(wait).await?;
        print_info(&info);
    }
    Ok(())
}

async fn inspect(app: App, id: &str, json: bool) -> CliResult {
    let id: JobId = id.parse()?;
    let Some(info) = app.backend().get(id).await? else {
        let Some(rec) = app.backend().workflow_get(id).await? else {
            return Err(CliError(format!(
                "no job or workflow {id} (it never existed, or its record expired)"
            )));
        };
        print_workflow(&rec, json)?;
        return Ok(());
    };
    if json {
        let mut v = serde_json::to_value(&info)?;
        if let Some(obj) = v.as_object_mut() {
            let result = info
                .result_text()
                .map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)));
            obj.insert("result".into(), result.unwrap_or(serde_json::Value::Null));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_info(&info);
        // The times above are the fleet's; say how this host's clock stands against it.
        println!(
            "\n{}",
            clock_line(&celeriac_core::StoreClock::fleet_clock(
                app.backend().as_ref()
            ))
        );
    }
    Ok(())
}

fn print_workflow(rec: &WorkflowRecord, json: bool) -> CliResult {
    let result = rec.result.as_deref().map(|bytes| {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into()))
    });
    if json {
        let mut v = serde_json::to_value(rec)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("result".into(), result.unwrap_or(serde_json::Value::Null));
            obj.insert("kind".into(), "workflow".into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let ts = |t: Option<i64>| t.map(format_ms).unwrap_or_else(|| "-".into());
    println!("workflow:    {}", rec.id);
    println!("shape:       {}", rec.name);
    println!("state:       {}", rec.state.as_str());
    println!("created:     {}", format_ms(rec.created_at));
    println!("finished:    {}", ts(rec.finished_at));
    if let Some(r) = result {
        println!("result:      {r}");
    }
    if let Some(e) = &rec.error {
        println!("error:       {e}");
    }
    Ok(())
}

fn print_info(info: &JobInfo) {
    let j = &info.job;
    let ts = |t: Option<i64>| t.map(format_ms).unwrap_or_else(|| "-".into());
    println!("id:          {}", j.id);
    println!("task:        {}", j.task);
    println!("queue:       {}", j.queue);
    println!("state:       {}", info.state);
    println!("priority:    {}", j.priority.get());
    println!("attempts:    {} of {}", j.attempts, j.max_attempts);
    println!("created:     {}", format_ms(j.created_at));
    println!("run at:      {}", format_ms(j.run_at));
    println!("started:     {}", ts(j.started_at));
    println!("finished:    {}", ts(j.finished_at));
    if let Some(e) = j.expires_at {
        println!("expires:     {}", format_ms(e));
    }
    println!("args:        {}", j.encoding.to_json_text(&j.payload));
    if let Some(r) = info.result_text() {
        println!("result:      {r}");
    }
    if let Some(e) = &info.error {
        println!("error:       {e}");
    }
    if let Some(p) = &info.progress {
        println!(
            "progress:    {:.0}%{}",
            p.fraction * 100.0,
            p.message
                .as_deref()
                .map(|m| format!(" {m}"))
                .unwrap_or_default()
        );
    }
    if let Some(w) = &info.worker {
        println!("worker:      {w} (lease until {})", ts(info.lease_until));
    }
    if let Some(w) = j.root_id.filter(|_| j.headers.contains_key(FLOW_HEADER)) {
        println!("workflow:    {w} (celeriac inspect {w})");
    }
    for (k, v) in j.headers.iter().filter(|(k, _)| k.as_str() != FLOW_HEADER) {
        println!("header:      {k}: {v}");
    }
}

async fn queues(app: App, json: bool) -> CliResult {
    let stats = app.backend().stats().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    if stats.is_empty() {
        println!("no queues yet");
        return Ok(());
    }
    use crate::JobState as S;
    println!(
        "{:<24} {:>8} {:>10} {:>8} {:>9} {:>8} {:>10} {:>8}",
        "QUEUE", "PENDING", "SCHEDULED", "ACTIVE", "RETRYING", "DEAD", "SUCCEEDED", "FAILED"
    );
    for q in stats {
        let name = if q.paused {
            format!("{} (paused)", q.queue)
        } else {
            q.queue.clone()
        };
        println!(
            "{:<24} {:>8} {:>10} {:>8} {:>9} {:>8} {:>10} {:>8}",
            name,
            q.count(S::Pending),
            q.count(S::Scheduled),
            q.count(S::Active),
            q.count(S::Retrying),
            q.count(S::Dead),
            q.count(S::Succeeded),
            q.count(S::Failed),
        );
    }
    println!(
        "\n{}",
        clock_line(&celeriac_core::StoreClock::fleet_clock(
            app.backend().as_ref()
        ))
    );
    Ok(())
}

/// One line on the fleet's clock as this process reads it: where it comes from and how far
/// this host's wall clock is off it.
fn clock_line(clock: &crate::clock::FleetClock) -> String {
    // Fleet minus wall: positive when this host's wall clock is behind.
    let off = clock.offset_ms();
    let how = match off {
        // A few milliseconds are the reading's own noise.
        -4..=4 => "in step with it".to_string(),
        o if o > 0 => format!("{:.3} s behind it", o as f64 / 1000.0),
        o => format!("{:.3} s ahead of it", -o as f64 / 1000.0),
    };
    let advice = if off.unsigned_abs() > crate::clock::OFFSET_WARNING.as_millis() as u64 {
        " (Celeriac runs on the store's clock, but check this host's time synchronisation)"
    } else {
        ""
    };
    format!(
        "clock: {}, read in {:.1} ms; this host's wall clock is {how}{advice}",
        clock.source().unwrap_or("this host's wall clock"),
        clock.round_trip().as_secs_f64() * 1000.0,
    )
}

async fn cache(app: App, command: CacheCommand) -> CliResult {
    match command {
        CacheCommand::Stats {
            namespace,
            app: name,
            json,
        } => cache_stats(&app, &name, namespace, json).await,
        CacheCommand::Probe {
            key,
            initial,
            set,
            within,
        } => probe(&app, &key, initial, set, within).await,
        CacheCommand::WriteBehindDemo { writes, keys } => {
            use std::io::Write;
            let cache = demo::stock_cache().build(app.backend().clone()).await?;
            let wb = crate::cache::WriteBehind::new(cache);
            let mut out = std::io::stdout().lock();
            for i in 0..writes {
                let key = format!("sku-{}", i % keys.max(1));
                let version = wb.write(key.as_str(), i).await?;
                writeln!(out, "acked {key} {version} {i}")?;
                out.flush()?;
            }
            writeln!(out, "done")?;
            out.flush()?;
            drop(out);
            std::future::pending::<()>().await;
            Ok(())
        }
        CacheCommand::Warm {
            namespace,
            keys,
            all,
            concurrency,
            json,
        } => {
            if keys.is_empty() && !all {
                return Err(CliError(format!(
                    "cache warm {namespace}: give --keys a,b,c or --all"
                )));
            }
            if concurrency == 0 {
                return Err(CliError("--concurrency must be at least 1".into()));
            }
            let warmer = crate::cache_warmer(&namespace).ok_or_else(|| {
                CliError(format!(
                    "no cache warmer for namespace `{namespace}` (this program registers: {})",
                    crate::cache_warmer_namespaces().join(", ")
                ))
            })?;
            let bar = progress_bar(0, "warming");
            let shown = bar.clone();
            let progress: crate::cache::WarmProgress = std::sync::Arc::new(move |done, total| {
                shown.set_length(total as u64);
                shown.set_position(done as u64);
            });
            let started = std::time::Instant::now();
            let keys = (!all).then_some(keys);
            let report = warmer
                .warm(app.backend().clone(), keys, concurrency, progress)
                .await?;
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["namespace"] = namespace.clone().into();
                v["seconds"] = seconds.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "warmed {namespace}: {} keys in the cache ({} loaded, the rest were fresh), \
                     {} failed, in {seconds:.2} s",
                    report.ok, report.loaded, report.failed
                );
                if let Some(e) = &report.first_error {
                    println!("first failure: {e}");
                }
            }
            if report.failed > 0 {
                return Err(CliError(format!(
                    "{} of {} keys of `{namespace}` did not warm",
                    report.failed,
                    report.ok + report.failed
                )));
            }
            Ok(())
        }
    }
}

async fn probe(
    app: &App,
    key: &str,
    initial: String,
    set: Option<String>,
    within: Duration,
) -> CliResult {
    use std::io::{BufRead, Write};
    let cache: crate::cache::Cache<str, String, crate::Backend> =
        crate::cache::Cache::<str, String, ()>::builder("probe")
            .ttl(Duration::from_secs(3600))
            .early_refresh(0.0)
            .build(app.backend().clone())
            .await?;
    let seen = cache.get_with(key, move || async move { initial }).await?;
    let deadline = std::time::Instant::now() + within;
    while !cache.listening() {
        if std::time::Instant::now() > deadline {
            return Err(CliError(
                "the invalidation channel was not subscribed in time".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unix_ms = || crate::Clock::now_ms(&crate::SystemClock);
    let say = |line: String| -> CliResult {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    };
    say(format!("ready {seen}"))?;
    if let Some(new) = set {
        let mut go = String::new();
        tokio::task::spawn_blocking(move || std::io::stdin().lock().read_line(&mut go))
            .await
            .map_err(|e| CliError(e.to_string()))??;
        cache.set(key, new).await?;
        return say(format!("set {}", unix_ms()));
    }
    loop {
        let now = cache.get(key).await?;
        if now.as_deref() != Some(seen.as_str()) {
            let shown = now.unwrap_or_else(|| "(none)".into());
            return say(format!("saw {shown} {}", unix_ms()));
        }
        if std::time::Instant::now() > deadline {
            return Err(CliError(format!(
                "`{key}` still reads `{seen}` after {within:?}: no update arrived"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn cache_stats(app: &App, name: &str, namespace: Option<String>, json: bool) -> CliResult {
    use crate::cache::stats;
    let store = app.backend();
    let now = crate::Clock::now_ms(&*celeriac_core::StoreClock::fleet_clock(store.as_ref()));
    let names = match namespace {
        Some(ns) => vec![ns],
        None => stats::namespaces(&**store, name, now).await?,
    };
    let mut all = Vec::with_capacity(names.len());
    for ns in &names {
        all.push(stats::read_stats(&**store, name, ns, now).await?);
    }
    if json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|n| {
                let mut v = serde_json::to_value(n).unwrap_or_default();
                v["hit_ratio"] = n.hit_ratio().into();
                v["mean_load_ms"] = n.mean_load_ms().into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no cache of application `{name}` has published statistics yet");
        return Ok(());
    }
    println!(
        "{:<20} {:>5} {:>10} {:>10} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
        "NAMESPACE",
        "INST",
        "L1 HITS",
        "L2 HITS",
        "MISSES",
        "HIT %",
        "STALE",
        "LOADS",
        "LOAD MS",
        "WAITERS",
        "EVICTIONS",
        "L2 ERR"
    );
    for n in &all {
        let s = &n.stats;
        let ratio = n
            .hit_ratio()
            .map_or_else(|| "-".to_string(), |r| format!("{:.1}", r * 100.0));
        let load = n
            .mean_load_ms()
            .map_or_else(|| "-".to_string(), |m| format!("{m:.1}"));
        println!(
            "{:<20} {:>5} {:>10} {:>10} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
            n.namespace,
            n.instances,
            s.l1_hits,
            s.l2_hits,
            s.misses,
            ratio,
            s.stale_served,
            s.loads,
            load,
            s.waiters,
            s.evictions,
            s.l2_errors
        );
    }
    Ok(())
}

async fn dlq(app: App, command: DlqCommand) -> CliResult {
    let backend = app.backend();
    match command {
        DlqCommand::List { queue, limit, json } => {
            let dead = backend.dead_letters(queue, limit, 0).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&dead)?);
            } else if dead.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<36}  {:<12} {:<24} {:<20} REASON",
                    "ID", "QUEUE", "TASK", "DIED"
                );
                for d in dead {
                    let reason = d
                        .error
                        .map(|e| format!("{}: {}", e.kind, e.message))
                        .unwrap_or_default();
                    println!(
                        "{:<36}  {:<12} {:<24} {:<20} {}",
                        d.job.id,
                        d.job.queue,
                        d.job.task,
                        d.job.finished_at.map(format_ms).unwrap_or_default(),
                        reason
                    );
                }
            }
        }
        DlqCommand::Retry { ids, queue } => {
            let ids: Vec<JobId> = if ids.is_empty() {
                let mut all = Vec::new();
                loop {
                    let page = backend.dead_letters(queue.clone(), 1000, all.len()).await?;
                    if page.is_empty() {
                        break;
                    }
                    all.extend(page.into_iter().map(|d| d.job.id));
                }
                all
            } else {
                ids.iter()
                    .map(|s| s.parse::<JobId>())
                    .collect::<Result<_, _>>()?
            };
            let bar = progress_bar(ids.len() as u64, "retrying dead letters");
            let mut retried = 0;
            for chunk in ids.chunks(200) {
                retried += backend
                    .retry_dead(Some(chunk.to_vec()), app.client().now())
                    .await?;
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            println!("{retried} jobs back in their queues");
        }
        DlqCommand::Purge { queue, yes } => {
            if !yes {
                return Err(CliError(
                    "refusing to delete dead letters without --yes".into(),
                ));
            }
            let n = backend.purge_dead(queue).await?;
            println!("deleted {n} dead letters");
        }
    }
    Ok(())
}

fn progress_bar(len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:24} [{bar:40.cyan/blue}] {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// A scratch SQLite file for demo and bench, removed when dropped.
struct Scratch {
    dir: std::path::PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Result<Self, CliError> {
        let dir = std::env::temp_dir().join(format!("celeriac-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| CliError(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Self { dir })
    }
    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.join("celeriac.db").display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn run_demo(url: Option<&str>, jobs: u64) -> CliResult {
    let (url, _scratch) = match url {
        Some(u) => (u.to_string(), None),
        None => {
            let s = Scratch::new("demo")?;
            (s.url(), Some(s))
        }
    };
    let app = App::builder()
        .url(url.as_str())
        .registry(demo::registry())
        .build()
        .await?;
    println!("Celeriac demo on {url}");
    println!(
        "A worker with 64 slots runs {jobs} jobs: e-mails through a slow SMTP server (some fail \
         and retry), a chord of thumbnails on the blocking pool with an album summary after \
         them, delayed reminders, a partner API that is down, and some bad input.\n"
    );
    let bar = progress_bar(jobs, "jobs finished");
    let summary = demo::run(&app, jobs, |done, _| bar.set_position(done)).await?;
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
    if _scratch.is_some() {
        println!(
            "\nThe demo's scratch database is removed on exit. To keep one and explore it:\n  \
             celeriac --url sqlite://demo.db demo && celeriac --url sqlite://demo.db dlq list"
        );
    }
    if summary.succeeded + summary.dead + summary.failed < summary.jobs {
        return Err(CliError(format!(
            "only {} of {} jobs finished",
            summary.succeeded + summary.dead + summary.failed,
            summary.jobs
        )));
    }
    Ok(())
}

async fn run_bench(url: Option<&str>, args: BenchArgs) -> CliResult {
    if args.what == BenchWhat::Cache {
        return run_cache_bench(url, args).await;
    }
    if args.what == BenchWhat::Limits {
        return run_limits_bench(url, args).await;
    }
    if args.what == BenchWhat::Breaker {
        return run_breaker_bench(&args);
    }
    if args.jobs == 0 || args.batch == 0 || args.concurrency == 0 {
        return Err(CliError(
            "--jobs, --batch and --concurrency must be at least 1".into(),
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
    registry.register::<bench::Noop>();
    let app = App::builder()
        .url(url.as_str())
        .registry(registry)
        .build()
        .await?;
    let config = BenchConfig {
        jobs: args.jobs,
        batch: args.batch,
        concurrency: args.concurrency,
        latency_samples: args.latency_samples,
    };
    let bar = progress_bar(args.jobs, "enqueueing");
    let mut phase = Phase::Enqueue;
    let report = bench::run(&app, &config, |p, done, total| {
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
        println!(
            "processing     {:>10.0} jobs/s  (concurrency {})",
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
    }
    Ok(())
}

/// Formats milliseconds since the epoch as an RFC 3339 UTC timestamp.
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_796_036_096_789), "2026-11-30T10:54:56.789Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
