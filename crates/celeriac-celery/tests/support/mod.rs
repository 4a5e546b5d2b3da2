//! Harness for the interop tests: real Python Celery from the virtual environments that
//! `scripts/celery-venvs` creates (`~/.cache/celeriac/venvs/celery-<version>`).
//!
//! - [`Venv`]: one pinned Celery ([`Venv::newest`], [`Venv::v5_3`], [`Venv::all`]); runs Python
//!   snippets ([`Venv::run`]), long-lived Python processes ([`Venv::spawn`]) and workers
//!   ([`Venv::start_worker`]), and Python's `EventReceiver` + `State` ([`Venv::state_receiver`]).
//! - [`CeleryConfig`]: the environment variables `tests/py/tasks.py` configures its app from
//!   (broker and backend URLs, visibility timeout, `result_extended`, `task_track_started`, ...).
//! - [`Worker`]: a `celery -A tasks worker` process, ready when returned, killed (with its whole
//!   process group) on drop.
//!
//! Python code runs with `tests/py` as working directory and on `PYTHONPATH`, so a snippet can
//! `from tasks import app, add`. Every wait has a ceiling so that a broken test fails instead
//! of hanging; none of them is used as synchronization.
//!
//! Use it from a test file with `mod support;` (it lives in `tests/support/mod.rs`, so it is
//! no test binary of its own).
#![allow(dead_code)] // each test binary uses a part of it

mod process;
mod receiver;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

pub use process::{Pool, PyOutput, PyProcess, Worker, WorkerOptions};

/// The newest Celery 5.x on PyPI (kombu 5.7.0, redis-py 8.x).
pub const NEWEST: &str = "5.7.0";
/// The 5.3.x pin (kombu 5.3.7, redis-py 5.0.8): 5.1–5.6 chord bookkeeping, naive `date_done`.
pub const V5_3: &str = "5.3.6";

/// Ceiling for a Python snippet ([`Venv::run`], [`PyProcess::finish`]).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Ceiling for a worker to log that it is ready, and for a line of a [`PyProcess`].
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Worker::stop`] lets a warm shutdown take before it kills.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory with `tasks.py`.
pub fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("py")
}

/// Where `scripts/celery-venvs` puts the environments (`CELERIAC_VENVS` overrides it).
pub fn venvs_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CELERIAC_VENVS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is set (the venvs live in ~/.cache)");
    Path::new(&home)
        .join(".cache")
        .join("celeriac")
        .join("venvs")
}

/// One virtual environment with a pinned Celery.
#[derive(Debug, Clone)]
pub struct Venv {
    version: &'static str,
    dir: PathBuf,
}

impl fmt::Display for Venv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "celery {}", self.version)
    }
}

impl Venv {
    /// The newest Celery 5.x ([`NEWEST`]).
    ///
    /// # Panics
    /// When the environment is missing: run `scripts/celery-venvs`.
    pub fn newest() -> Venv {
        Venv::find(NEWEST)
    }

    /// Celery 5.3.x ([`V5_3`]).
    ///
    /// # Panics
    /// When the environment is missing: run `scripts/celery-venvs`.
    pub fn v5_3() -> Venv {
        Venv::find(V5_3)
    }

    /// Every pinned version, newest first.
    ///
    /// # Panics
    /// When an environment is missing: run `scripts/celery-venvs`.
    pub fn all() -> Vec<Venv> {
        vec![Venv::newest(), Venv::v5_3()]
    }

    fn find(version: &'static str) -> Venv {
        let dir = venvs_root().join(format!("celery-{version}"));
        let celery = dir.join("bin").join("celery");
        assert!(
            celery.is_file(),
            "Python Celery {version} is not installed at {}: run `scripts/celery-venvs` \
             (creates ~/.cache/celeriac/venvs/celery-{{{NEWEST},{V5_3}}})",
            dir.display()
        );
        Venv { version, dir }
    }

    /// The Celery version, e.g. `"5.7.0"`.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// `(major, minor)` of the Celery version.
    pub fn minor(&self) -> (u32, u32) {
        let mut parts = self
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// Whether this Celery is at least `major.minor` (e.g. `at_least(5, 7)` for the 5.7 chord
    /// join with `.d`/`.c`).
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.minor() >= (major, minor)
    }

    /// The environment's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its `python`.
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin").join("python")
    }

    /// Its `celery` command.
    pub fn celery(&self) -> PathBuf {
        self.dir.join("bin").join("celery")
    }

    fn command(&self, program: PathBuf, cfg: &CeleryConfig) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(py_dir())
            .env("PYTHONPATH", py_dir())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(cfg.vars())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: drop kills the process and everything it started.
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    /// Runs `python -c <code>` to the end (at most [`RUN_TIMEOUT`]).
    ///
    /// # Panics
    /// When Python cannot be started or runs longer than [`RUN_TIMEOUT`].
    pub async fn run(&self, cfg: &CeleryConfig, code: &str) -> PyOutput {
        self.spawn(cfg, code).finish().await
    }

    /// Runs `python <script> <args...>` to the end (at most [`RUN_TIMEOUT`]).
    ///
    /// # Panics
    /// As [`Venv::run`].
    pub async fn run_script(&self, cfg: &CeleryConfig, script: &Path, args: &[&str]) -> PyOutput {
        let mut cmd = self.command(self.python(), cfg);
        cmd.arg(script).args(args);
        PyProcess::spawn(cmd, format!("{self} {}", script.display()))
            .finish()
            .await
    }

    /// Starts `python -c <code>` and returns at once: read its stdout line by line with
    /// [`PyProcess::wait_for_line`] (e.g. a waiter printing `READY` once it is subscribed),
    /// then [`PyProcess::finish`].
    ///
    /// # Panics
    /// When Python cannot be started.
    pub fn spawn(&self, cfg: &CeleryConfig, code: &str) -> PyProcess {
        let mut cmd = self.command(self.python(), cfg);
        cmd.arg("-c").arg(code);
        PyProcess::spawn(cmd, format!("{self} python -c"))
    }

    /// Starts `celery -A tasks worker -P solo -c 1 -E --without-mingle --without-gossip -Q
    /// <queue>` and waits until it logs that it is ready.
    ///
    /// # Panics
    /// When it does not become ready within [`READY_TIMEOUT`] (its log is in the message).
    pub async fn start_worker(&self, cfg: &CeleryConfig, queue: &str) -> Worker {
        self.start_worker_with(cfg, WorkerOptions::new(queue)).await
    }

    /// Starts a worker with these options and waits until it is ready.
    ///
    /// # Panics
    /// As [`Venv::start_worker`].
    pub async fn start_worker_with(&self, cfg: &CeleryConfig, options: WorkerOptions) -> Worker {
        let hostname = options
            .hostname
            .clone()
            .unwrap_or_else(|| format!("w{}@celeriac", uuid::Uuid::new_v4().simple()));
        let mut cmd = self.command(self.celery(), cfg);
        cmd.args(["-A", "tasks", "worker", "-l", "INFO", "-E"])
            .args(["--without-mingle", "--without-gossip"])
            .args(["-n", &hostname, "-Q", &options.queues.join(",")]);
        match options.pool {
            Pool::Solo => {
                cmd.args(["-P", "solo", "-c", "1"]);
            }
            Pool::Threads(n) => {
                cmd.args(["-P", "threads", "-c", &n.to_string()]);
            }
        }
        cmd.args(&options.extra_args);
        let process = PyProcess::spawn(cmd, format!("{self} worker {hostname}"));
        // Celery logs "<hostname> ready." once the consumer listens on its queues.
        let needle = format!("{hostname} ready.");
        process.wait_for_output(&needle, READY_TIMEOUT).await;
        Worker::new(process, hostname, self.clone(), cfg.clone())
    }

    /// `celery inspect ping -d <hostname>` (needs a worker with remote control, the default):
    /// whether the worker answered.
    pub async fn inspect_ping(&self, cfg: &CeleryConfig, hostname: &str) -> bool {
        let mut cmd = self.command(self.celery(), cfg);
        cmd.args(["-A", "tasks", "inspect", "ping", "-t", "5", "-d", hostname]);
        let out = PyProcess::spawn(cmd, format!("{self} inspect ping"))
            .finish()
            .await;
        out.status.success() && out.stdout.contains("pong")
    }
}

/// The environment variables `tests/py/tasks.py` configures its Celery app from.
#[derive(Debug, Clone, Default)]
pub struct CeleryConfig {
    /// `CELERIAC_BROKER_URL`.
    pub broker_url: String,
    /// `CELERIAC_BACKEND_URL`.
    pub backend_url: String,
    /// `CELERIAC_VISIBILITY_TIMEOUT` (seconds).
    pub visibility_timeout: Option<f64>,
    /// `CELERIAC_RESULT_EXTENDED`.
    pub result_extended: bool,
    /// `CELERIAC_TRACK_STARTED`.
    pub track_started: bool,
    /// `CELERIAC_ACKS_LATE`.
    pub acks_late: bool,
    /// `CELERIAC_DEFAULT_QUEUE`: where `.delay()` sends.
    pub default_queue: Option<String>,
    /// `CELERIAC_RESULT_EXPIRES` (seconds).
    pub result_expires: Option<u64>,
    /// `CELERIAC_BACKEND_PREFIX`: the result backend's `global_keyprefix`.
    pub backend_prefix: Option<String>,
    /// `CELERIAC_BROKER_PREFIX`: the broker's `global_keyprefix`.
    pub broker_prefix: Option<String>,
    /// Further variables.
    pub extra: Vec<(String, String)>,
}

impl CeleryConfig {
    /// Broker and result backend URLs as given.
    pub fn new(broker_url: impl Into<String>, backend_url: impl Into<String>) -> Self {
        CeleryConfig {
            broker_url: broker_url.into(),
            backend_url: backend_url.into(),
            ..CeleryConfig::default()
        }
    }

    /// Broker on db 0, result backend on db 1 of the server at `server_url`
    /// (`redis://127.0.0.1:PORT`, as `RedisServer::url` gives it).
    pub fn for_server(server_url: &str) -> Self {
        let base = server_url.trim_end_matches('/');
        CeleryConfig::new(format!("{base}/0"), format!("{base}/1"))
    }

    /// Sets the broker's visibility timeout (seconds).
    pub fn visibility_timeout(mut self, seconds: f64) -> Self {
        self.visibility_timeout = Some(seconds);
        self
    }

    /// Sets `result_extended`.
    pub fn result_extended(mut self, on: bool) -> Self {
        self.result_extended = on;
        self
    }

    /// Sets `task_track_started`.
    pub fn track_started(mut self, on: bool) -> Self {
        self.track_started = on;
        self
    }

    /// Sets `task_acks_late`.
    pub fn acks_late(mut self, on: bool) -> Self {
        self.acks_late = on;
        self
    }

    /// Sets `task_default_queue`.
    pub fn default_queue(mut self, queue: impl Into<String>) -> Self {
        self.default_queue = Some(queue.into());
        self
    }

    /// Sets `result_expires` (seconds).
    pub fn result_expires(mut self, seconds: u64) -> Self {
        self.result_expires = Some(seconds);
        self
    }

    /// Sets the result backend's `global_keyprefix`.
    pub fn backend_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.backend_prefix = Some(prefix.into());
        self
    }

    /// Sets the broker's `global_keyprefix`.
    pub fn broker_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.broker_prefix = Some(prefix.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// The variables, as set on every Python process.
    pub fn vars(&self) -> Vec<(String, String)> {
        let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
        let mut vars = vec![
            ("CELERIAC_BROKER_URL".to_owned(), self.broker_url.clone()),
            ("CELERIAC_BACKEND_URL".to_owned(), self.backend_url.clone()),
            (
                "CELERIAC_RESULT_EXTENDED".to_owned(),
                flag(self.result_extended),
            ),
            (
                "CELERIAC_TRACK_STARTED".to_owned(),
                flag(self.track_started),
            ),
            ("CELERIAC_ACKS_LATE".to_owned(), flag(self.acks_late)),
        ];
        let optional = [
            (
                "CELERIAC_VISIBILITY_TIMEOUT",
                self.visibility_timeout.map(|v| v.to_string()),
            ),
            ("CELERIAC_DEFAULT_QUEUE", self.default_queue.clone()),
            (
                "CELERIAC_RESULT_EXPIRES",
                self.result_expires.map(|v| v.to_string()),
            ),
            ("CELERIAC_BACKEND_PREFIX", self.backend_prefix.clone()),
            ("CELERIAC_BROKER_PREFIX", self.broker_prefix.clone()),
        ];
        for (name, value) in optional {
            vars.push((name.to_owned(), value.unwrap_or_default()));
        }
        vars.extend(self.extra.iter().cloned());
        vars
    }
}
