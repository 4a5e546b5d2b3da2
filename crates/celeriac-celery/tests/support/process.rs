//! Running Python processes: [`PyProcess`] (output collected as it comes, process group
//! killed on drop), [`PyOutput`], and [`Worker`] (a ready `celery worker`).

use std::collections::VecDeque;
use std::fmt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use super::{CeleryConfig, Venv, READY_TIMEOUT, RUN_TIMEOUT, STOP_TIMEOUT};

/// What a finished Python process left.
#[derive(Debug, Clone)]
pub struct PyOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl PyOutput {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics (showing stdout and stderr) unless it exited with 0; returns `self`.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "Python failed ({}):\n{self}", self.status);
        self
    }

    /// The last non-empty stdout line parsed as JSON (snippets end with
    /// `print(json.dumps(...))`).
    ///
    /// # Panics
    /// When there is no such line or it is not JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("Python printed nothing:\n{self}"));
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("Python's last line is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for PyOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Output collected from a running process, and a notification for each new line.
#[derive(Default)]
struct Captured {
    stdout: Mutex<(String, VecDeque<String>)>,
    stderr: Mutex<String>,
    changed: Notify,
}

impl Captured {
    fn text(&self) -> (String, String) {
        let out = self.stdout.lock().map(|g| g.0.clone()).unwrap_or_default();
        let err = self.stderr.lock().map(|g| g.clone()).unwrap_or_default();
        (out, err)
    }
}

/// A running Python process (a snippet or a worker): its output is collected as it comes;
/// dropping it kills its whole process group.
pub struct PyProcess {
    child: Option<Child>,
    pgid: Option<i32>,
    label: String,
    captured: Arc<Captured>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl PyProcess {
    pub(super) fn spawn(mut cmd: Command, label: String) -> PyProcess {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        let captured = Arc::new(Captured::default());
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(read_lines(out, captured.clone(), true)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(read_lines(err, captured.clone(), false)));
        }
        PyProcess {
            child: Some(child),
            pgid,
            label,
            captured,
            readers,
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Waits for the next stdout line that contains `needle` (lines before it are consumed)
    /// and returns it.
    ///
    /// # Panics
    /// When the process exits or [`READY_TIMEOUT`] passes first (its output is in the message).
    pub async fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let captured = self.captured.clone();
        loop {
            let notified = captured.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut guard = captured.stdout.lock().expect("stdout lock");
                while let Some(line) = guard.1.pop_front() {
                    if line.contains(needle) {
                        return line;
                    }
                }
            }
            if self.pipes_closed() {
                self.panic_with_output(&format!("exited before printing {needle:?}"));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                self.panic_with_output(&format!(
                    "no stdout line with {needle:?} within {READY_TIMEOUT:?}"
                ));
            }
        }
    }

    /// Waits until stdout or stderr (everything so far) contains `needle`.
    pub(super) async fn wait_for_output(&self, needle: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.captured.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (out, err) = self.captured.text();
            if out.contains(needle) || err.contains(needle) {
                return;
            }
            if self.pipes_closed() {
                self.panic_with_output(&format!("exited before printing {needle:?}"));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                self.panic_with_output(&format!("no output {needle:?} within {within:?}"));
            }
        }
    }

    /// Both pipes are at end of file: the process has exited (or closed them).
    fn pipes_closed(&self) -> bool {
        self.readers
            .iter()
            .all(tokio::task::JoinHandle::is_finished)
    }

    fn panic_with_output(&self, what: &str) -> ! {
        let (out, err) = self.captured.text();
        panic!(
            "{}: {what}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
            self.label
        )
    }

    /// Everything printed so far: `(stdout, stderr)`.
    pub fn output(&self) -> (String, String) {
        self.captured.text()
    }

    /// Waits for the process to exit (at most [`RUN_TIMEOUT`]) and returns its output.
    ///
    /// # Panics
    /// When it runs longer (it is killed, and its output is in the message).
    pub async fn finish(mut self) -> PyOutput {
        let mut child = self.child.take().expect("process not yet waited for");
        let status = match tokio::time::timeout(RUN_TIMEOUT, child.wait()).await {
            Ok(status) => status.unwrap_or_else(|e| panic!("{}: wait failed: {e}", self.label)),
            Err(_) => {
                self.kill_group(Signal::SIGKILL);
                let (out, err) = self.captured.text();
                panic!(
                    "{} still running after {RUN_TIMEOUT:?}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
                    self.label
                );
            }
        };
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.await;
        }
        let (stdout, stderr) = self.captured.text();
        PyOutput {
            status,
            stdout,
            stderr,
        }
    }

    fn kill_group(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }
}

impl Drop for PyProcess {
    fn drop(&mut self) {
        // The group may outlive the leader (a prefork child, a process a snippet started).
        self.kill_group(Signal::SIGKILL);
    }
}

async fn read_lines(pipe: impl AsyncRead + Unpin, captured: Arc<Captured>, stdout: bool) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if stdout {
            if let Ok(mut guard) = captured.stdout.lock() {
                guard.0.push_str(&line);
                guard.0.push('\n');
                guard.1.push_back(line);
            }
        } else if let Ok(mut guard) = captured.stderr.lock() {
            guard.push_str(&line);
            guard.push('\n');
        }
        captured.changed.notify_waiters();
    }
    captured.changed.notify_waiters();
}

/// The worker's execution pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// `-P solo -c 1`: one task at a time in the worker process.
    Solo,
    /// `-P threads -c N`.
    Threads(usize),
}

/// Options of [`Venv::start_worker_with`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// `-Q` (joined with commas).
    pub queues: Vec<String>,
    /// `-P`/`-c`.
    pub pool: Pool,
    /// `-n`; default `w<uuid>@celeriac`.
    pub hostname: Option<String>,
    /// Further arguments for `celery worker`.
    pub extra_args: Vec<String>,
}

impl WorkerOptions {
    /// A solo worker on one queue.
    pub fn new(queue: impl Into<String>) -> Self {
        WorkerOptions {
            queues: vec![queue.into()],
            pool: Pool::Solo,
            hostname: None,
            extra_args: Vec::new(),
        }
    }

    /// Also consumes this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
        self
    }

    /// Sets the pool.
    pub fn pool(mut self, pool: Pool) -> Self {
        self.pool = pool;
        self
    }

    /// Sets the node name (`-n`).
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }
}

/// A running, ready `celery worker`; dropping it kills it (`SIGKILL` to its process group).
pub struct Worker {
    process: PyProcess,
    hostname: String,
    venv: Venv,
    cfg: CeleryConfig,
}

impl Worker {
    pub(super) fn new(process: PyProcess, hostname: String, venv: Venv, cfg: CeleryConfig) -> Self {
        Worker {
            process,
            hostname,
            venv,
            cfg,
        }
    }

    /// Its node name (`-n`), e.g. `w1234@celeriac`.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Its log so far (Celery logs to stderr; stdout is appended).
    pub fn log(&self) -> String {
        let (out, err) = self.process.output();
        format!("{err}{out}")
    }

    /// Waits until its log contains `needle` (e.g. `"Task tasks.add[<id>] succeeded"`).
    ///
    /// # Panics
    /// When [`READY_TIMEOUT`] passes first.
    pub async fn wait_for_log(&self, needle: &str) {
        self.process.wait_for_output(needle, READY_TIMEOUT).await;
    }

    /// Whether it answers `celery inspect ping`.
    pub async fn ping(&self) -> bool {
        self.venv.inspect_ping(&self.cfg, &self.hostname).await
    }

    /// `kill -9` of its process group (a crash: nothing is acknowledged or restored); waits
    /// until it is gone and returns its log.
    pub async fn kill9(mut self) -> String {
        self.process.kill_group(Signal::SIGKILL);
        if let Some(child) = self.process.child.as_mut() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await;
        }
        self.log()
    }

    /// Warm shutdown (`SIGTERM`: finish the running task, restore prefetched messages); kills
    /// it if that takes longer than [`STOP_TIMEOUT`]. Returns its log.
    pub async fn stop(mut self) -> String {
        self.process.kill_group(Signal::SIGTERM);
        let exited = match self.process.child.as_mut() {
            Some(child) => tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_ok(),
            None => true,
        };
        if !exited {
            self.process.kill_group(Signal::SIGKILL);
        }
        self.log()
    }
}
