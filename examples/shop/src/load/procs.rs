//! The processes of a run: a private `redis-server`, the SMTP sink, shop instances and workers.
//! Every child is killed when its handle drops, so an error or Ctrl-C leaves nothing behind.

use anyhow::{bail, Context, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free TCP port on 127.0.0.1 (bound, then released: another process could take it in
/// between, which is unlikely on this machine).
pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 for a free port")?;
    Ok(l.local_addr()?.port())
}

/// A child process that can be killed (`kill -9`) and started again with the same command.
pub(crate) struct Proc {
    pub(crate) name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    pub(crate) starts: u32,
}

impl Proc {
    pub(crate) fn new(
        name: &str,
        program: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        dir: &Path,
    ) -> Proc {
        Proc {
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
        }
    }

    /// Starts it, its output appended to `<dir>/<name>.log`.
    pub(crate) fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let err = log.try_clone()?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {} ({} {})",
                self.name,
                self.program.display(),
                self.args.join(" ")
            )
        })?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// `kill -9`, and reaps it.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(c.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Whether it is still running (an exit is reaped and reported as not running).
    pub(crate) fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The last lines of its log, for error messages.
    pub(crate) fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A private `redis-server`: AOF on (`appendfsync everysec`), no RDB snapshots, on a free port.
pub(crate) struct Redis {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
}

impl Redis {
    pub(crate) async fn start(dir: &Path) -> Result<Redis> {
        let port = free_port()?;
        let data = dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let args = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "yes".into(),
            "--appendfsync".into(),
            "everysec".into(),
            "--dir".into(),
            data.display().to_string(),
            "--daemonize".into(),
            "no".into(),
        ];
        let mut proc = Proc::new("redis", Path::new("redis-server"), args, vec![], dir);
        proc.start()
            .context("redis-server is required (apt-get install redis-server)")?;
        let r = Redis { proc, port };
        r.wait_ready(Duration::from_secs(15)).await?;
        Ok(r)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command (RESP) and returns the raw first reply line.
    pub(crate) async fn command(&self, args: &[&str]) -> Result<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await?;
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
    }

    pub(crate) async fn wait_ready(&self, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        loop {
            if let Ok(r) = self.command(&["PING"]).await {
                if r.starts_with("+PONG") {
                    return Ok(());
                }
            }
            if Instant::now() > until {
                bail!(
                    "redis-server did not answer PING within {within:?}:\n{}",
                    self.proc.tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Graceful shutdown (`SHUTDOWN`: the AOF is flushed and fsynced), waiting for the exit.
    pub(crate) async fn shutdown(&mut self) -> Result<()> {
        let _ = self.command(&["SHUTDOWN"]).await;
        let until = Instant::now() + Duration::from_secs(10);
        while self.proc.running() {
            if Instant::now() > until {
                self.proc.kill9();
                bail!("redis-server did not exit within 10 s of SHUTDOWN (killed)");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.proc.child = None;
        Ok(())
    }

    /// Starts it again on the same port with the same AOF directory.
    pub(crate) async fn restart(&mut self) -> Result<()> {
        self.proc.start()?;
        self.wait_ready(Duration::from_secs(30)).await
    }
}

/// Polls `url` until it answers 2xx.
pub(crate) async fn wait_http(
    client: &reqwest::Client,
    url: &str,
    within: Duration,
    proc: &mut Proc,
) -> Result<()> {
    let until = Instant::now() + within;
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if !proc.running() {
            bail!(
                "{} exited before answering {url}; its log ends with:\n{}",
                proc.name,
                proc.tail(30)
            );
        }
        if Instant::now() > until {
            bail!(
                "{} did not answer {url} within {within:?}; its log ends with:\n{}",
                proc.name,
                proc.tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
