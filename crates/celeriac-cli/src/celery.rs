//! `celeriac worker --celery <redis-url>`: the application's tasks that have a Celery name,
//! served to Python Celery clients (`send_task("demo.add", (2, 3)).get()`) by a
//! [`CeleryWorker`] speaking Celery's protocol over the kombu Redis transport, with results in
//! Celery's Redis result backend. `celery inspect`, `celery control` and Flower see it.

use crate::args::WorkerArgs;
use crate::support::{CliError, CliResult};
use celeriac::{TaskContext, TaskError};
use celeriac_celery::worker::{CeleriacDeadLetters, CeleryTaskOptions, CeleryWorker};
use clap::Args;

pub use celeriac_celery::worker::CeleryTask;

/// The `--celery*` flags of `celeriac worker`.
#[derive(Args, Debug, Clone)]
pub(crate) struct CeleryArgs {
    /// Serve the application's Celery-named tasks to Python Celery instead of running a
    /// Celeriac worker: the Celery broker URL, redis://[user:pass@]host:port/db or rediss://.
    /// Python clients then call them with `app.send_task("demo.add", (2, 3))` (or a task
    /// stub of that name) and read results with `.get()`; `celery inspect`, `celery control
    /// revoke/shutdown` and Flower see this worker. The stock binary serves `demo.add(x, y)`
    /// and `demo.send_email(to, subject)`. --concurrency and --grace-period apply. Messages it
    /// cannot serve (an unknown task, an undecodable body, pickle or YAML) go to the dead
    /// letters of the Celeriac store (--url) with the reason, under the queue `celery.<queue>`
    /// (`celeriac dlq list`).
    #[arg(
        long = "celery",
        env = "CELERIAC_CELERY_URL",
        hide_env_values = true,
        value_name = "REDIS_URL",
        help_heading = "Celery"
    )]
    pub(crate) celery_url: Option<String>,
    /// Celery's result backend (default: the broker's server, database 1, the usual Celery
    /// setup `redis://host:6379/0` + `redis://host:6379/1`).
    #[arg(
        long = "celery-backend",
        env = "CELERIAC_CELERY_BACKEND",
        hide_env_values = true,
        value_name = "REDIS_URL",
        requires = "celery_url",
        help_heading = "Celery"
    )]
    pub(crate) celery_backend: Option<String>,
    /// The Celery queues to consume, comma-separated (Celery's `-Q`).
    #[arg(
        long = "celery-queues",
        env = "CELERIAC_CELERY_QUEUES",
        value_delimiter = ',',
        default_value = "celery",
        help_heading = "Celery"
    )]
    pub(crate) celery_queues: Vec<String>,
    /// The node name (Celery's `-n`; default celeriac@<host>).
    #[arg(
        long = "celery-hostname",
        env = "CELERIAC_CELERY_HOSTNAME",
        help_heading = "Celery"
    )]
    pub(crate) celery_hostname: Option<String>,
    /// Send task events (Celery's `-E`; `celery control enable_events`/`disable_events`
    /// change it while running). Worker heartbeats are always sent.
    #[arg(
        long = "celery-task-events",
        env = "CELERIAC_CELERY_TASK_EVENTS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL",
        help_heading = "Celery"
    )]
    pub(crate) celery_task_events: bool,
}

/// The tasks the stock binary serves under Celery names: `demo.add(x, y)` and
/// `demo.send_email(to, subject)` (the demo's e-mail task).
pub fn demo_tasks() -> Vec<CeleryTask> {
    vec![
        CeleryTask::from_fn(
            "demo.add",
            CeleryTaskOptions::default(),
            |_ctx: TaskContext, (x, y): (i64, i64)| async move {
                x.checked_add(y)
                    .ok_or_else(|| TaskError::fatal(format!("{x} + {y} overflows")))
            },
        ),
        CeleryTask::of::<crate::demo::SendEmail>("demo.send_email"),
    ]
}

/// The passwords of the URLs given, for redaction.
fn secrets(args: &CeleryArgs) -> Vec<String> {
    [args.celery_url.as_deref(), args.celery_backend.as_deref()]
        .into_iter()
        .flatten()
        .flat_map(celeriac_core::redact::url_secrets)
        .collect()
}

/// Checks a Redis URL's shape; the error names `flag` and never the password.
fn check_url(flag: &str, url: &str) -> Result<(), CliError> {
    let shown = celeriac_core::redact::url(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(CliError(format!(
            "{flag}: expected a redis:// or rediss:// URL, got {shown:?}"
        )));
    };
    if !matches!(scheme, "redis" | "rediss") {
        return Err(CliError(format!(
            "{flag}: the Celery transport must be Redis (redis:// or rediss://), got {scheme}://"
        )));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return Err(CliError(format!("{flag}: no host in {shown:?}")));
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        if port.parse::<u16>().is_err() {
            return Err(CliError(format!("{flag}: bad port {port:?} in {shown:?}")));
        }
    }
    Ok(())
}

/// The broker's server, database 1.
fn default_backend(broker: &str) -> String {
    let (scheme, rest) = broker.split_once("://").unwrap_or(("redis", broker));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let query = rest[end..].find('?').map_or("", |q| &rest[end + q..]);
    format!("{scheme}://{}/1{query}", &rest[..end])
}

/// Runs the Celery worker until SIGINT/SIGTERM (or `celery control shutdown`).
pub(crate) async fn run(tasks: Vec<CeleryTask>, args: WorkerArgs, store: &str) -> CliResult {
    let c = &args.celery;
    let mut secrets = secrets(c);
    secrets.extend(celeriac_core::redact::url_secrets(store));
    let redact = |e: CliError| CliError(celeriac_core::redact::text(&e.0, &secrets));
    serve(tasks, &args, store).await.map_err(redact)
}

async fn serve(tasks: Vec<CeleryTask>, args: &WorkerArgs, store: &str) -> CliResult {
    let c = &args.celery;
    let url = c.celery_url.clone().unwrap_or_default();
    check_url("--celery", &url)?;
    let backend = match &c.celery_backend {
        Some(b) => {
            check_url("--celery-backend", b)?;
            b.clone()
        }
        None => default_backend(&url),
    };
    if tasks.is_empty() {
        return Err(CliError(
            "--celery: this application names no Celery tasks (celeriac_cli::Options::celery_tasks)"
                .into(),
        ));
    }
    let queues: Vec<String> = c
        .celery_queues
        .iter()
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty())
        .collect();
    if queues.is_empty() {
        return Err(CliError("--celery-queues: give at least one queue".into()));
    }
    if args.concurrency == 0 {
        return Err(CliError("--concurrency: must be at least 1".into()));
    }
    // Messages it cannot serve are kept with the reason in the Celeriac store's dead letters.
    let dead = celeriac::AnyBackend::connect(store).await.map_err(|e| {
        CliError(format!(
            "--url: the Celeriac store for dead letters ({}): {e}",
            celeriac_core::redact::url(store)
        ))
    })?;
    let names: Vec<String> = tasks.iter().map(|t| t.name().to_owned()).collect();
    let mut builder = CeleryWorker::builder(url, backend)
        .queues(queues.clone())
        .concurrency(args.concurrency)
        .prefetch(args.prefetch.unwrap_or(args.concurrency))
        .shutdown_grace(args.grace_period)
        .task_events(c.celery_task_events)
        .dead_letters(CeleriacDeadLetters::new(dead));
    if let Some(h) = &c.celery_hostname {
        builder = builder.hostname(h.clone());
    }
    for t in tasks {
        builder = builder.task(t);
    }
    let worker = builder.build().await.map_err(|e| {
        let flag = match &e {
            celeriac_celery::worker::WorkerError::Results(_) => "--celery-backend",
            _ => "--celery",
        };
        CliError(format!("{flag}: {e}"))
    })?;
    eprintln!(
        "celery worker {} serving {} on queues {}",
        worker.hostname(),
        names.join(", "),
        queues.join(", ")
    );
    let handle = worker.handle();
    tokio::spawn(async move {
        crate::worker::wait_for_signal().await;
        eprintln!("shutting down: finishing running tasks (signal again to stop now)");
        handle.shutdown();
        crate::worker::wait_for_signal().await;
        eprintln!("stopping now; unfinished messages go back to their queues after the visibility timeout");
        std::process::exit(1);
    });
    worker
        .run()
        .await
        .map_err(|e| CliError(format!("--celery: {e}")))?;
    eprintln!("celery worker stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_defaults_to_db_1_of_the_broker() {
        assert_eq!(
            default_backend("redis://:pw@h:6400/0"),
            "redis://:pw@h:6400/1"
        );
        assert_eq!(default_backend("redis://h"), "redis://h/1");
        assert_eq!(
            default_backend("rediss://h:1/3?ssl_cert_reqs=none"),
            "rediss://h:1/1?ssl_cert_reqs=none"
        );
    }

    #[test]
    fn bad_urls_name_the_flag_not_the_password() {
        let e = check_url("--celery", "amqp://u:hunter2@h/")
            .err()
            .map(|e| e.0);
        let e = e.unwrap_or_default();
        assert!(e.starts_with("--celery:") && !e.contains("hunter2"), "{e}");
        let e = check_url("--celery", "redis://u:hunter2@h:port/0")
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(e.contains("bad port") && !e.contains("hunter2"), "{e}");
        assert!(check_url("--celery", "redis://127.0.0.1:6379/0").is_ok());
    }
}
