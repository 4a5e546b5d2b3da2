//! The command line's arguments: every subcommand, flag and `CELERIAC_*` variable, and the
//! parsers of their values.

use crate::confirm::Yes;
use crate::{breaker, limits};
use celeriac::duration;
use clap::{Args, Parser, Subcommand};
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
pub(crate) struct Cli {
    /// Backend URL: sqlite://path/to/file.db (default sqlite://celeriac.db), sqlite::memory:,
    /// redis://[user:pass@]host:port[/db], rediss://..., redis+cluster://h1:p1,h2:p2 or
    /// redis+sentinel://s1:p1/master-name.
    #[arg(long, env = "CELERIAC_URL", global = true, hide_env_values = true)]
    pub(crate) url: Option<String>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as celeriac=debug.
    #[arg(long, env = "CELERIAC_LOG", global = true)]
    pub(crate) log: Option<String>,

    /// The largest job payload enqueued, in bytes (default 1 MiB): by `enqueue`, by a worker
    /// for the workflow steps it enqueues, by the scheduler. A larger job is refused, naming
    /// this setting, before it reaches the store.
    #[arg(long, env = "CELERIAC_MAX_PAYLOAD_BYTES", global = true,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_payload_bytes: Option<u64>,

    /// The largest task result a worker stores, in bytes (default 16 MiB): a task returning
    /// more fails (error kind `result_too_large`) instead of writing it.
    #[arg(long, env = "CELERIAC_MAX_RESULT_BYTES", global = true,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_result_bytes: Option<u64>,

    /// FOR TESTS ONLY (debug builds): the file the demo's `stock` write-behind cache flushes
    /// to (one JSON line per write). A release binary has no such setting: nothing in the
    /// environment can make it write to another file.
    #[cfg(debug_assertions)]
    #[arg(long, env = "CELERIAC_DEMO_STOCK_FILE", global = true, hide = true)]
    pub(crate) demo_stock_file: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    /// Browse the jobs of a queue by state, with filters and paging, and retry, cancel or
    /// delete many at once (a selection, or everything matching the filters).
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// The events kept in the store: jobs that failed, died or were cancelled, and every
    /// administrative action with who did it (the last 10,000). Successful jobs are counted,
    /// not listed.
    Events {
        /// How many of the newest to show first.
        #[arg(long, env = "CELERIAC_LIMIT", default_value_t = 50)]
        limit: usize,
        /// Keep printing new events as they come (Ctrl-C stops).
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line instead of text.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// List the live worker and beat processes, or tell one to be quiet or to stop.
    ///
    /// Every worker and beat refreshes its entry in the store every few seconds
    /// (--registry-refresh); an entry not refreshed for three periods is gone. A command sent
    /// with `quiet` or `stop` reaches the process at its next refresh.
    Workers {
        #[command(subcommand)]
        command: Option<WorkersCommand>,
        /// Print JSON instead of a table.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// What happened over a period, from the history kept in the store: per queue and task,
    /// jobs enqueued, attempts started, succeeded, retried, failed and dead, the error ratio,
    /// run and wait time percentiles (p50/p95/p99), and throughput and errors over time.
    ///
    /// The store keeps minutes for 48 hours and hours for 90 days. Workers write what they
    /// did every 10 seconds, so the last few seconds may not show yet.
    Stats {
        /// Only this queue.
        #[arg(long, short)]
        queue: Option<String>,
        /// Only this task.
        #[arg(long, short)]
        task: Option<String>,
        /// How far back, e.g. 15m, 6h, 7d.
        #[arg(long, env = "CELERIAC_SINCE", default_value = "1h", value_parser = duration::parse)]
        since: Duration,
        /// Buckets of a `minute` or an `hour` (default: minutes up to 6h, hours beyond).
        #[arg(long, value_parser = crate::stats::parse_resolution)]
        by: Option<celeriac::backend::Resolution>,
        /// Print JSON instead of a table.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// The alerts: which fire and which are pending, from the states the evaluating process
    /// keeps in the store; `alerts export --prometheus` writes the rules for Prometheus.
    ///
    /// Rules are evaluated every 15 s by the process that publishes the fleet gauges (a worker
    /// or beat with --http), each with a threshold and a `for` duration; what fires and what
    /// resolves goes to the event stream and to --alert-webhook.
    Alerts {
        #[command(subcommand)]
        command: Option<AlertsCommand>,
        /// Print JSON instead of a table.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// Ask a worker or beat served with --http whether it is ready, and exit non-zero if not
    /// (for a container's HEALTHCHECK).
    ///
    /// Prints the checks: the store answers, the worker's heartbeats land, nothing drains;
    /// --deep also takes a canary job through the store. --live asks only whether the process
    /// runs (never the store).
    Health {
        /// Where the process serves HTTP.
        #[arg(long, env = "CELERIAC_HTTP", default_value = "127.0.0.1:9464")]
        http: std::net::SocketAddr,
        /// Also take a canary job through the store.
        #[arg(long, conflicts_with = "live")]
        deep: bool,
        /// Only whether the process runs (/livez).
        #[arg(long)]
        live: bool,
        /// How long to wait for the answer.
        #[arg(long, default_value = "10s", value_parser = duration::parse)]
        timeout: Duration,
    },
    /// List queues with their jobs per state, their latency (how long the oldest ready job has
    /// waited), their consumers (live workers on them, and their slots) and their rates of
    /// successes and errors per minute.
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
    /// Delete the waiting jobs of a queue: pending, scheduled and retrying (running jobs are
    /// not touched). Says how many first, and asks (see --yes).
    Purge {
        /// The queue.
        queue: String,
        #[command(flatten)]
        yes: Yes,
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
        /// Afterwards, keep the demo's data and serve the dashboard on this address (default
        /// 127.0.0.1:7777) until Ctrl-C.
        #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:7777", value_name = "ADDR")]
        dashboard: Option<std::net::SocketAddr>,
    },
    /// Serve the dashboard: queues, jobs, dead letters, schedules, workers, caches, breakers,
    /// events and alerts, with actions for operators.
    ///
    /// Without authentication it serves on loopback only. To serve on another address, set
    /// CELERIAC_DASHBOARD_TOKEN (operators: read and act) and optionally
    /// CELERIAC_DASHBOARD_VIEWER_TOKEN (read only), each at least 16 characters; people sign
    /// in with the token, API clients send it as `Authorization: Bearer <token>`.
    Dashboard {
        /// Where to serve it.
        #[arg(
            long,
            env = "CELERIAC_DASHBOARD_BIND",
            default_value = "127.0.0.1:7777"
        )]
        bind: std::net::SocketAddr,
        /// The alert rules file the evaluating process runs (see `celeriac worker
        /// --alert-rules`), for the alerts page; without, it shows the built-in rules.
        #[arg(long, env = "CELERIAC_ALERT_RULES")]
        alert_rules: Option<std::path::PathBuf>,
    },
    /// Print the least-privilege Redis user for this application: the `ACL SETUSER` line to
    /// type at the redis-cli prompt (a placeholder where the password goes).
    ///
    /// The user may touch only keys and channels under the prefix, and only the commands
    /// Celeriac sends (nothing of @admin, no KEYS, no SCAN). The prefix is --prefix, or the
    /// `?prefix=` of a Redis --url, or `celeriac`.
    #[cfg(feature = "redis")]
    RedisAcl {
        /// The Redis user's name.
        #[arg(long, default_value = "celeriac", env = "CELERIAC_ACL_USER")]
        user: String,
        /// The key prefix (default: the URL's `?prefix=`, else `celeriac`).
        #[arg(long, env = "CELERIAC_ACL_PREFIX")]
        prefix: Option<String>,
        /// Print the rules and every command with why it is needed, as JSON.
        #[arg(long)]
        json: bool,
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
pub(crate) enum JobsCommand {
    /// List jobs, a page at a time: pending ones in the order they will run, scheduled and
    /// retrying ones by when they are due, active ones by lease end, dead ones by time of
    /// death, finished ones by when their record expires (--newest reverses).
    List {
        #[command(flatten)]
        filter: JobFilterArgs,
        /// Newest first.
        #[arg(long)]
        newest: bool,
        /// At most this many.
        #[arg(long, env = "CELERIAC_LIMIT", default_value_t = 50)]
        limit: usize,
        /// Go on from where a previous page ended (the cursor it printed).
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// Put dead letters back in their queue with fresh attempts (--state dead). Without --ids,
    /// says how many match and asks first (see --yes).
    Retry(JobsActionArgs),
    /// Cancel jobs: waiting ones never run, running ones are asked to stop. Without --ids,
    /// says how many match and asks first (see --yes).
    Cancel(JobsActionArgs),
    /// Delete jobs that are not running. Without --ids, says how many match and asks first
    /// (see --yes).
    Delete(JobsActionArgs),
}

/// Which jobs: a queue, a state and filters.
#[derive(Args, Debug, Clone)]
pub(crate) struct JobFilterArgs {
    /// The queue.
    #[arg(long, short, env = "CELERIAC_QUEUE")]
    pub(crate) queue: String,
    /// The state: pending, scheduled, active, retrying, succeeded, failed, dead, cancelled,
    /// expired.
    #[arg(long, short, default_value = "pending", value_parser = parse_state)]
    pub(crate) state: celeriac::JobState,
    /// Only jobs of this task.
    #[arg(long, short)]
    pub(crate) task: Option<String>,
    /// Only jobs whose last error contains this text (case-insensitive).
    #[arg(long)]
    pub(crate) error: Option<String>,
    /// Only jobs created within this long, e.g. 6h.
    #[arg(long, value_parser = duration::parse)]
    pub(crate) since: Option<Duration>,
}

/// Which jobs a bulk action applies to.
#[derive(Args, Debug, Clone)]
pub(crate) struct JobsActionArgs {
    #[command(flatten)]
    pub(crate) filter: JobFilterArgs,
    /// Only these jobs (comma-separated ids) among those the filters select (then nothing is
    /// asked).
    #[arg(long, value_delimiter = ',')]
    pub(crate) ids: Vec<String>,
    /// Without --ids: act on everything the filters select.
    #[command(flatten)]
    pub(crate) yes: Yes,
}

/// Parses a job state by name.
pub(crate) fn parse_state(s: &str) -> Result<celeriac::JobState, String> {
    celeriac::JobState::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = celeriac::JobState::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown state `{s}`; one of {}", names.join(", "))
        })
}

#[derive(Subcommand, Debug)]
pub(crate) enum WorkersCommand {
    /// Tell a process to be quiet: a worker claims nothing new and finishes what it runs; a
    /// beat hands the leader lease over. It stays up until stopped.
    Quiet {
        /// The process's id (see `celeriac workers`).
        id: String,
    },
    /// Tell a process to shut down gracefully, as SIGTERM would: running jobs get the grace
    /// period to finish, the rest are handed back.
    Stop {
        /// The process's id (see `celeriac workers`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AlertsCommand {
    /// Write the alert rules as Prometheus alerting rules (YAML) on the metrics `--http`
    /// serves, for teams that alert from Prometheus instead.
    Export {
        /// Prometheus alerting rules (the only format so far).
        #[arg(long, required = true)]
        prometheus: bool,
        /// A rules file (default: the built-in rules).
        #[arg(long, env = "CELERIAC_ALERT_RULES")]
        rules: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CacheCommand {
    /// Per namespace, the counters of every live instance summed: hits in L1 and L2, misses,
    /// the hit ratio, stale values served, loads and their mean time, waiters, loads under way
    /// when the figures were published (LOADING), L1 departures by cause (evicted for size,
    /// expired, removed by the cache), the L1's weighted size over its byte bound, L2 errors
    /// and writes the L2 refused for space (L2 FULL), and values too large for the L2. Then
    /// one line for the store itself: memory used and its maximum, its policy when full, and
    /// the keys it evicted (Redis `INFO`; a SQLite cache file's `max_bytes`). Use the cache's
    /// store URL (`--url redis://cache:6379?role=cache`).
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
        #[arg(long, env = "CELERIAC_WARM_CONCURRENCY", default_value_t = celeriac::DEFAULT_WARM_CONCURRENCY)]
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
        #[arg(long, default_value = "30s", value_parser = duration::parse)]
        within: Duration,
    },
}

#[derive(Args, Debug)]
pub(crate) struct WorkerArgs {
    /// Queues to consume, comma-separated, most important first (default: the queues of the
    /// registered tasks). Strict order by default; give every queue a weight (`high:3,low:1`)
    /// to serve them in proportion instead, so no queue starves.
    #[arg(long, short, env = "CELERIAC_QUEUES", value_delimiter = ',')]
    pub(crate) queues: Vec<String>,
    /// Jobs running at once.
    #[arg(long, short, env = "CELERIAC_CONCURRENCY", default_value_t = 16)]
    pub(crate) concurrency: usize,
    /// Most jobs claimed per call (never more than the free slots).
    #[arg(long, env = "CELERIAC_PREFETCH")]
    pub(crate) prefetch: Option<usize>,
    /// Lease per job, e.g. 30s; a job whose worker dies is redelivered after this.
    #[arg(long, env = "CELERIAC_LEASE", default_value = "30s", value_parser = duration::parse)]
    pub(crate) lease: Duration,
    /// How often leases are extended (default: a third of the lease).
    #[arg(long, env = "CELERIAC_HEARTBEAT", value_parser = duration::parse)]
    pub(crate) heartbeat: Option<Duration>,
    /// How long an idle worker waits before looking for work enqueued by other processes.
    #[arg(long, env = "CELERIAC_POLL_INTERVAL", default_value = "100ms", value_parser = duration::parse)]
    pub(crate) poll_interval: Duration,
    /// On shutdown, how long running jobs may take to finish.
    #[arg(long, env = "CELERIAC_GRACE_PERIOD", default_value = "30s", value_parser = duration::parse)]
    pub(crate) grace_period: Duration,
    /// How often a worker writes its tally of attempts to the history in the store (what
    /// `celeriac stats` reads); a crash loses at most this long of it.
    #[arg(long, env = "CELERIAC_HISTORY_FLUSH", default_value = "10s", value_parser = duration::parse)]
    pub(crate) history_flush: Duration,
    /// Claim at most this many jobs, let them finish, then exit 0 (for a supervisor to start
    /// a fresh process): bounds what a leaking task can grow to. Default: run until stopped.
    #[arg(long, env = "CELERIAC_MAX_JOBS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_jobs: Option<u64>,
    /// This worker's name (default host:pid).
    #[arg(long, env = "CELERIAC_WORKER_ID")]
    pub(crate) worker_id: Option<String>,
    /// Also run the scheduler in this process (see `celeriac beat`).
    #[arg(long, env = "CELERIAC_BEAT")]
    pub(crate) beat: bool,
    /// Run even as root. Without it a worker refuses to: the tasks it runs would have every
    /// privilege on the host.
    #[arg(long, env = "CELERIAC_ALLOW_ROOT")]
    pub(crate) allow_root: bool,
    #[command(flatten)]
    pub(crate) beat_args: BeatArgs,
    #[cfg(feature = "celery")]
    #[command(flatten)]
    pub(crate) celery: Box<crate::celery::CeleryArgs>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ScheduleFileArgs {
    /// A TOML file of schedules (`[[schedule]]` tables with name, cron or every, timezone,
    /// task, args, queue, priority, missed, paused), added to those defined in code.
    #[arg(long, env = "CELERIAC_SCHEDULES", global = true)]
    pub(crate) schedules: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct BeatArgs {
    #[command(flatten)]
    pub(crate) file: ScheduleFileArgs,
    /// How often this process's worker and beat refresh their entries in the process registry
    /// and look for commands sent by `celeriac workers quiet|stop`.
    #[arg(long, env = "CELERIAC_REGISTRY_REFRESH", default_value = "5s", value_parser = duration::parse)]
    pub(crate) registry_refresh: Duration,
    /// Serve /metrics (Prometheus), /livez, /readyz and /healthz on this address, e.g.
    /// 127.0.0.1:9464 (0.0.0.0:9464 in a container).
    #[arg(long, env = "CELERIAC_HTTP")]
    pub(crate) http: Option<std::net::SocketAddr>,
    /// Also serve the dashboard on this address, e.g. 127.0.0.1:7777 (see `celeriac
    /// dashboard` for authentication).
    #[arg(long, env = "CELERIAC_DASHBOARD")]
    pub(crate) dashboard: Option<std::net::SocketAddr>,
    /// Alert rules (a TOML file of [[rule]] tables; default: the built-in rules), evaluated
    /// by the process that publishes the fleet gauges (one with --http).
    #[arg(long, env = "CELERIAC_ALERT_RULES")]
    pub(crate) alert_rules: Option<std::path::PathBuf>,
    /// Post alerts that fire and resolve to this URL (JSON with a Slack-compatible `text`).
    #[arg(long, env = "CELERIAC_ALERT_WEBHOOK", hide_env_values = true)]
    pub(crate) alert_webhook: Option<String>,
    /// The scheduler's leader lease, e.g. 30s: when the leading beat dies, another takes over
    /// within this long. Renewed every third of it.
    #[arg(long, env = "CELERIAC_BEAT_LEASE", default_value = "30s", value_parser = duration::parse)]
    pub(crate) beat_lease: Duration,
    /// A tick older than this when the scheduler gets to it counts as missed and follows the
    /// schedule's missed-tick policy.
    #[arg(long, env = "CELERIAC_BEAT_LATE_AFTER", default_value = "60s", value_parser = duration::parse)]
    pub(crate) beat_late_after: Duration,
    /// This beat's name in the leader lease (default host:pid).
    #[arg(long, env = "CELERIAC_BEAT_ID")]
    pub(crate) beat_id: Option<String>,
    #[command(flatten)]
    pub(crate) warp: crate::warp::Warp,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SchedulesCommand {
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
pub(crate) struct EnqueueArgs {
    /// The task's name (see `celeriac tasks`).
    pub(crate) task: String,
    /// The arguments as JSON: the value of the task's argument, or an array for several.
    #[arg(long, short, env = "CELERIAC_ARGS", default_value = "null")]
    pub(crate) args: String,
    /// Another queue than the task's own.
    #[arg(long, env = "CELERIAC_QUEUE")]
    pub(crate) queue: Option<String>,
    /// Priority 0..=9, 9 most urgent.
    #[arg(long, env = "CELERIAC_PRIORITY")]
    pub(crate) priority: Option<u8>,
    /// Run no sooner than this from now, e.g. 10s, 5m.
    #[arg(long, env = "CELERIAC_DELAY", value_parser = duration::parse)]
    pub(crate) delay: Option<Duration>,
    /// Expire if not started within this, e.g. 1h.
    #[arg(long, env = "CELERIAC_EXPIRES", value_parser = duration::parse)]
    pub(crate) expires: Option<Duration>,
    /// Total attempts.
    #[arg(long, env = "CELERIAC_MAX_ATTEMPTS")]
    pub(crate) max_attempts: Option<u32>,
    /// Make the job unique in its queue under this key: while the key is held, enqueueing
    /// prints the holder's id instead of adding a job.
    #[arg(long, env = "CELERIAC_UNIQUE")]
    pub(crate) unique: Option<String>,
    /// How long the unique key is held: started (until the job starts), finished (until it
    /// finishes), window=DURATION (throttle), debounce=DURATION (replace and push back).
    #[arg(long, env = "CELERIAC_UNIQUE_FOR", default_value = "finished", value_parser = parse_unique_for)]
    pub(crate) unique_for: celeriac::UniqueFor,
    /// Accept a task this binary does not know (one that workers in another binary run).
    #[arg(long, env = "CELERIAC_UNCHECKED")]
    pub(crate) unchecked: bool,
    /// Wait this long for the job to finish and print its result.
    #[arg(long, env = "CELERIAC_WAIT", value_parser = duration::parse)]
    pub(crate) wait: Option<Duration>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DlqCommand {
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
    /// Dead letters grouped by queue, task and error (numbers and ids masked), with counts
    /// and first and last seen, largest first.
    Groups {
        /// Only this queue.
        #[arg(long, env = "CELERIAC_QUEUE")]
        queue: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// Put dead jobs back in their queues with fresh attempts. Without ids (every dead letter,
    /// or a group's), says how many first and asks (see --yes).
    Retry {
        /// Job ids; with none, every dead letter (of --queue, if given).
        ids: Vec<String>,
        /// Only this queue.
        #[arg(long, env = "CELERIAC_QUEUE")]
        queue: Option<String>,
        /// Every dead letter of one group (see `dlq groups`), as one action.
        #[arg(long, conflicts_with_all = ["ids", "queue"])]
        group: Option<String>,
        #[command(flatten)]
        yes: Yes,
    },
    /// Delete dead letters (of every queue, or of --queue). Says how many first, and asks
    /// (see --yes).
    Purge {
        /// Only this queue.
        #[arg(long, env = "CELERIAC_QUEUE")]
        queue: Option<String>,
        #[command(flatten)]
        yes: Yes,
    },
}

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// What to measure: `jobs` (enqueue, processing, start latency), `cache` (L1 hits
    /// against raw moka, L2 hits against redis-benchmark, a stampede of 3 processes on one
    /// cold key), `limits` (limiter decisions on the store against raw EVALSHA of a trivial
    /// script, local decisions on one core, what the rate-limit and breaker tower layers add
    /// to a request), `breaker` (nanoseconds a closed circuit breaker adds to a call) or
    /// `monitor` (the time and store commands of the queue figures with --jobs queued).
    #[arg(value_enum, default_value = "jobs")]
    pub(crate) what: BenchWhat,
    /// Breaker: calls per round.
    #[arg(long, env = "CELERIAC_BENCH_CALLS", default_value_t = 20_000_000)]
    pub(crate) calls: u64,
    /// Cache: gets per phase.
    #[arg(long, env = "CELERIAC_BENCH_GETS", default_value_t = 1_000_000)]
    pub(crate) gets: u64,
    /// Cache: distinct keys.
    #[arg(long, env = "CELERIAC_BENCH_KEYS", default_value_t = 10_000)]
    pub(crate) keys: u64,
    /// Cache: processes in the stampede, and concurrent gets of the cold key in each.
    #[arg(long, env = "CELERIAC_BENCH_STAMPEDE", default_value_t = 3)]
    pub(crate) stampede_processes: usize,
    /// Cache: concurrent gets of the cold key in each stampede process.
    #[arg(long, env = "CELERIAC_BENCH_STAMPEDE_GETS", default_value_t = 1000)]
    pub(crate) stampede_gets: usize,
    /// (Internal) run as one process of a cache stampede on this namespace.
    #[arg(long, hide = true)]
    pub(crate) stampede_child: Option<String>,
    /// (Internal) when the stampede starts, ms since the epoch.
    #[arg(long, hide = true, default_value_t = 0)]
    pub(crate) stampede_start: i64,
    /// Limits: decisions on the store.
    #[arg(long, env = "CELERIAC_BENCH_DECISIONS", default_value_t = 1_000_000)]
    pub(crate) decisions: u64,
    /// Limits: decisions of the local limiter per round.
    #[arg(
        long,
        env = "CELERIAC_BENCH_LOCAL_DECISIONS",
        default_value_t = 20_000_000
    )]
    pub(crate) local_decisions: u64,
    /// Limits: requests per round through each tower layer on one thread.
    #[arg(long, env = "CELERIAC_BENCH_LAYER_REQUESTS", default_value_t = 200_000)]
    pub(crate) layer_requests: u64,
    /// Limits: requests through the rate-limit layer on the store (and as many store
    /// decisions in turns with them).
    #[arg(
        long,
        env = "CELERIAC_BENCH_LAYER_STORE_REQUESTS",
        default_value_t = 50_000
    )]
    pub(crate) layer_store_requests: u64,
    /// Jobs to enqueue and process.
    #[arg(
        long,
        short = 'n',
        env = "CELERIAC_BENCH_JOBS",
        default_value_t = 20_000
    )]
    pub(crate) jobs: u64,
    /// Jobs: queues the backlog is dealt over, round-robin: `celeriac-bench` alone (1), or
    /// `celeriac-bench-0` .. `celeriac-bench-{N-1}`; the worker consumes them all. On a Redis
    /// Cluster each queue lives on the master that serves its slot, and the report tells
    /// what each master cost.
    #[arg(long, env = "CELERIAC_BENCH_QUEUES", default_value_t = 1)]
    pub(crate) queues: usize,
    /// Monitor: queues the jobs are spread over.
    #[arg(long, env = "CELERIAC_BENCH_QUEUE_COUNT", default_value_t = 20)]
    pub(crate) queue_count: usize,
    /// Jobs per enqueue call.
    #[arg(long, env = "CELERIAC_BENCH_BATCH", default_value_t = 1000)]
    pub(crate) batch: usize,
    /// Worker concurrency.
    #[arg(long, short, env = "CELERIAC_BENCH_CONCURRENCY", default_value_t = 100)]
    pub(crate) concurrency: usize,
    /// Single jobs sent to an idle worker to measure start latency.
    #[arg(long, env = "CELERIAC_BENCH_LATENCY_SAMPLES", default_value_t = 500)]
    pub(crate) latency_samples: u64,
    /// Jobs, on Redis: what each phase costs the server per job, read from `INFO` just
    /// before and just after it (CPU, `used_memory` with the backlog queued, the costliest
    /// commands); `--redis-cpu=false` leaves them out.
    #[arg(
        long,
        env = "CELERIAC_BENCH_REDIS_CPU",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true
    )]
    pub(crate) redis_cpu: bool,
    /// Print JSON.
    #[arg(long, env = "CELERIAC_JSON")]
    pub(crate) json: bool,
}

/// What `celeriac bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchWhat {
    /// The job queue.
    Jobs,
    /// The cache.
    Cache,
    /// The rate limiters.
    Limits,
    /// A circuit breaker's overhead per guarded call on its closed path.
    Breaker,
    /// What monitoring costs the store with --jobs queued over --queue-count queues.
    Monitor,
}

/// Parses `started`, `finished`, `window=10m` or `debounce=5s`.
pub(crate) fn parse_unique_for(s: &str) -> Result<celeriac::UniqueFor, String> {
    match s.split_once('=') {
        None if s == "started" => Ok(celeriac::UniqueFor::UntilStarted),
        None if s == "finished" => Ok(celeriac::UniqueFor::UntilFinished),
        Some(("window", d)) => Ok(celeriac::UniqueFor::Window(parse_in_unique(d)?)),
        Some(("debounce", d)) => Ok(celeriac::UniqueFor::Debounce(parse_in_unique(d)?)),
        _ => Err(format!(
            "`{s}` is not a unique lifetime: use started, finished, window=DURATION or debounce=DURATION"
        )),
    }
}

/// A duration inside `--unique-for`, in the one grammar of [`celeriac::duration`].
fn parse_in_unique(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::Parser;

    /// The knobs for the process tests (the stock file, the warped clock) exist in debug
    /// builds, which the tests run, and in no release build: there they are unknown arguments,
    /// and no environment variable reaches them. `cargo test --release` checks the latter.
    #[test]
    fn test_knobs_exist_in_debug_builds_only() {
        let stock = Cli::try_parse_from(["celeriac", "--demo-stock-file", "x.jsonl", "tasks"]);
        assert_eq!(stock.is_ok(), cfg!(debug_assertions), "{stock:?}");
        let warp = Cli::try_parse_from([
            "celeriac",
            "beat",
            "--test-time-scale",
            "10",
            "--test-time-origin",
            "0",
        ]);
        assert_eq!(warp.is_ok(), cfg!(debug_assertions), "{warp:?}");
    }
}
