//! The `celeriac` command line, as a library.
//!
//! The stock binary calls [`run_stock`]. An application's own binary gets the same
//! subcommands for its own tasks with [`run`] (or `app.run_cli()` through [`RunCli`]):
//!
//! ```no_run
//! use celeriac::App;
//! use celeriac_cli::RunCli;
//!
//! # async fn main_() -> std::process::ExitCode {
//! let app = App::builder().url("sqlite://my-app.db").build().await.expect("app");
//! app.run_cli().await // `my-app worker`, `my-app enqueue ...`, `my-app queues`, ...
//! # }
//! ```
//!
//! Every flag can also be set with a `CELERIAC_*` environment variable (shown in `--help`).
//! One file per command group (worker and beat, jobs and queues, dead letters, caches, limits,
//! breakers, the benchmarks, the demo); `args.rs` holds the arguments of all of them.

#[cfg(feature = "redis")]
mod acl;
mod alerts;
mod args;
pub mod bench;
mod breaker;
mod browse;
mod cache;
#[cfg(feature = "celery")]
mod celery;
mod confirm;
mod dashboard;
pub mod demo;
mod dlq;
mod events;
mod health;
mod jobs;
mod limits;
mod stats;
mod support;
mod warp;
mod worker;
mod workers;

#[cfg(feature = "celery")]
pub use celery::{demo_tasks as celery_demo_tasks, CeleryTask};

/// What an application's command line serves besides its Celeriac tasks.
///
/// With the `celery` feature (on by default):
///
/// ```no_run
/// use celeriac_cli::{CeleryTask, Options};
/// # struct Resize;
/// # impl celeriac::Task for Resize {
/// #     const NAME: &'static str = "resize";
/// #     type Args = (u32,);
/// #     type Output = u32;
/// #     async fn run(_: celeriac::TaskContext, (x,): (u32,)) -> Result<u32, celeriac::TaskError> { Ok(x) }
/// # }
/// # async fn main_(registry: celeriac::Registry) -> std::process::ExitCode {
/// let options = Options {
///     celery_tasks: vec![CeleryTask::of::<Resize>("tasks.resize")],
///     ..Options::default()
/// };
/// celeriac_cli::run_with_options(registry, options).await // `my-app worker --celery redis://...`
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Options {
    /// Tasks under their Celery names, served by `worker --celery <redis-url>`.
    #[cfg(feature = "celery")]
    pub celery_tasks: Vec<CeleryTask>,
}

use args::{Cli, Command};
use celeriac::{App, Bounds, Registry, DEFAULT_URL};
use clap::Parser;
use std::future::Future;
use std::process::ExitCode;
use support::{CliError, CliResult};

/// Runs the stock `celeriac` binary: its tasks are the demo's and the benchmark's.
pub async fn run_stock() -> ExitCode {
    let mut registry = demo::registry();
    registry.register::<bench::jobs::Noop>();
    let options = Options {
        #[cfg(feature = "celery")]
        celery_tasks: celery::demo_tasks(),
    };
    run_inner(registry, None, options).await
}

/// Runs the command line for `app`: its tasks, and its URL unless `--url`/`CELERIAC_URL`
/// says otherwise.
pub async fn run(app: App) -> ExitCode {
    run_app_with_options(app, Options::default()).await
}

/// [`run`] with [`Options`]: e.g. tasks under Celery names for `worker --celery`.
pub async fn run_app_with_options(app: App, options: Options) -> ExitCode {
    let url = Some(app.url().to_string());
    run_inner(app.registry().as_ref().clone(), url, options).await
}

/// Runs the command line with `registry`'s tasks, on the URL of `--url`/`CELERIAC_URL`
/// (`sqlite://celeriac.db` when neither is given).
pub async fn run_with(registry: Registry) -> ExitCode {
    run_inner(registry, None, Options::default()).await
}

/// [`run_with`] with [`Options`]: e.g. tasks under Celery names for `worker --celery`.
pub async fn run_with_options(registry: Registry, options: Options) -> ExitCode {
    run_inner(registry, None, options).await
}

/// `app.run_cli()`: the command line for an application's own binary.
pub trait RunCli {
    /// Parses the process's arguments and runs the command, as [`run`] does.
    fn run_cli(self) -> impl Future<Output = ExitCode>;
}

impl RunCli for App {
    fn run_cli(self) -> impl Future<Output = ExitCode> {
        run(self)
    }
}

async fn run_inner(registry: Registry, default_url: Option<String>, options: Options) -> ExitCode {
    quiet_on_closed_stdout();
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
        Command::Worker(_) | Command::Beat(_) | Command::Dashboard { .. } => "info",
        Command::Demo { .. } | Command::Bench(_) | Command::Breaker { .. } => "error",
        _ => "warn",
    };
    init_logging(cli.log.as_deref().unwrap_or(default_log));
    // A knob for the process tests, absent from release builds.
    #[cfg(debug_assertions)]
    if let Some(path) = &cli.demo_stock_file {
        demo::set_stock_file(path.clone());
    }
    // Whatever an error quotes, the store's password is not printed.
    let secrets = cli
        .url
        .as_deref()
        .or(default_url.as_deref())
        .map(celeriac_core::redact::url_secrets)
        .unwrap_or_default();
    // Boxed: the commands' futures nest deeply, and a box keeps callers' futures small.
    match Box::pin(dispatch(cli, registry, default_url, options)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(msg)) => {
            eprintln!("error: {}", celeriac_core::redact::text(&msg, &secrets));
            ExitCode::FAILURE
        }
    }
}

/// `celeriac jobs list | head`: when the reader of stdout goes away, `println!` panics on the
/// broken pipe. The process ends quietly instead, with the status a shell gives a program
/// killed by `SIGPIPE` (141), as C tools do.
fn quiet_on_closed_stdout() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        previous(info);
    }));
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

async fn app(url: Option<&str>, registry: Registry, bounds: Bounds) -> Result<App, CliError> {
    app_with_schedules(url, registry, bounds, None).await
}

async fn app_with_schedules(
    url: Option<&str>,
    registry: Registry,
    bounds: Bounds,
    file: Option<&std::path::Path>,
) -> Result<App, CliError> {
    let url = url.unwrap_or(DEFAULT_URL);
    let mut builder = App::builder().url(url).registry(registry).bounds(bounds);
    if let Some(file) = file {
        builder = builder.schedules_file(file);
    }
    Ok(builder.build().await?)
}

/// The bounds the command line sets, over the defaults.
fn bounds_of(cli: &Cli) -> Bounds {
    let bytes = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let mut bounds = Bounds::default();
    if let Some(v) = cli.max_payload_bytes {
        bounds.max_payload_bytes = bytes(v);
    }
    if let Some(v) = cli.max_result_bytes {
        bounds.max_result_bytes = bytes(v);
    }
    bounds
}

async fn dispatch(
    cli: Cli,
    registry: Registry,
    default_url: Option<String>,
    options: Options,
) -> CliResult {
    // Without the `celery` feature an application has nothing else to add.
    #[cfg(not(feature = "celery"))]
    let Options {} = options;
    // The demo and the benchmark use a scratch file unless a URL is given explicitly.
    let explicit = cli.url.as_deref();
    let url = explicit.or(default_url.as_deref());
    let bounds = bounds_of(&cli);
    match cli.command {
        Command::Worker(args) => {
            // Before the store is opened: as root, a new SQLite file would be root's.
            worker::refuse_root(args.allow_root)?;
            #[cfg(feature = "celery")]
            if args.celery.celery_url.is_some() {
                return celery::run(options.celery_tasks, args, url.unwrap_or(DEFAULT_URL)).await;
            }
            let file = args
                .beat
                .then_some(args.beat_args.file.schedules.as_deref())
                .flatten();
            worker::worker(app_with_schedules(url, registry, bounds, file).await?, args).await
        }
        Command::Beat(args) => {
            let app =
                app_with_schedules(url, registry, bounds, args.file.schedules.as_deref()).await?;
            worker::beat(app, args).await
        }
        Command::Schedules {
            command,
            file,
            next,
            json,
        } => {
            let app = app_with_schedules(url, registry, bounds, file.schedules.as_deref()).await?;
            worker::schedules(app, command, next, json).await
        }
        Command::Enqueue(args) => jobs::enqueue(app(url, registry, bounds).await?, args).await,
        Command::Inspect { id, json } => {
            jobs::inspect(app(url, registry, bounds).await?, &id, json).await
        }
        Command::Events {
            limit,
            follow,
            json,
        } => events::run(app(url, registry, bounds).await?, limit, follow, json).await,
        Command::Jobs { command } => browse::run(app(url, registry, bounds).await?, command).await,
        Command::Alerts { command, json } => {
            alerts::run(app(url, registry, bounds).await?, command, json).await
        }
        Command::Health {
            http,
            deep,
            live,
            timeout,
        } => health::run(http, deep, live, timeout).await,
        Command::Workers { command, json } => {
            workers::run(app(url, registry, bounds).await?, command, json).await
        }
        Command::Stats {
            queue,
            task,
            since,
            by,
            json,
        } => {
            let args = stats::StatsArgs {
                queue,
                task,
                since,
                by,
                json,
            };
            stats::run(app(url, registry, bounds).await?, args).await
        }
        Command::Queues { json } => jobs::queues(app(url, registry, bounds).await?, json).await,
        Command::Cancel { id } => jobs::cancel(app(url, registry, bounds).await?, &id).await,
        Command::Pause { queue } => jobs::pause(app(url, registry, bounds).await?, &queue).await,
        Command::Resume { queue } => jobs::resume(app(url, registry, bounds).await?, &queue).await,
        Command::Purge { queue, yes } => {
            jobs::purge(app(url, registry, bounds).await?, &queue, yes.yes).await
        }
        Command::Dlq { command } => dlq::dlq(app(url, registry, bounds).await?, command).await,
        Command::Cache { command } => {
            cache::cache(app(url, registry, bounds).await?, command).await
        }
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
        Command::Limits { command } => limits::run(url.unwrap_or(DEFAULT_URL), command).await,
        Command::Demo { jobs, dashboard } => demo::run_command(explicit, jobs, dashboard).await,
        Command::Dashboard { bind, alert_rules } => {
            dashboard::run(
                app(url, registry, bounds).await?,
                bind,
                alert_rules.as_deref(),
            )
            .await
        }
        Command::Bench(args) => bench::run(explicit, args).await,
        Command::Breaker { command } => breaker::run(url.unwrap_or(DEFAULT_URL), command).await,
        #[cfg(feature = "redis")]
        Command::RedisAcl { user, prefix, json } => acl::run(url, &user, prefix, json),
    }
}
