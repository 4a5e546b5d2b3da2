//! One `redis-server` process: [`RedisServer`] and its builder.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::resp::{Connection, Value};
use crate::tls::{self, TlsFiles, DEFAULT_SERVER_NAMES};

/// How long a process may take from spawn to answering PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`RedisServer::command`] waits for connect + reply.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts with a new port when the chosen one was taken in the meantime.
const PORT_ATTEMPTS: usize = 5;
/// Cluster nodes also listen on port + 10000 (the cluster bus).
const CLUSTER_BUS_OFFSET: u16 = 10000;
/// Cluster ports stay below this, so that the bus port stays below 65535.
const CLUSTER_PORT_LIMIT: u16 = 55000;
/// Written by a server once it listens; sentinels log their id instead.
const READY_LINE: &str = "Ready to accept connections";
const SENTINEL_READY_LINE: &str = "Sentinel ID is";
const PORT_TAKEN_LINE: &str = "Address already in use";
/// The Unix socket a TLS server also listens on (in its directory, owner only), for the
/// testkit's plain-text admin commands: its TCP port speaks TLS only.
const ADMIN_SOCKET: &str = "admin.sock";

/// What kind of process a builder starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    Standalone,
    /// `cluster-enabled yes`; the bus port (port + 10000) must be free too.
    ClusterNode,
    /// `redis-server sentinel.conf --sentinel`, with this `sentinel.conf` content.
    Sentinel(String),
}

/// What a server keeps on disk; see [`RedisServerBuilder::persistence`].
///
/// The default, [`Snapshots`](Persistence::Snapshots), is a persistence the Redis backend
/// accepts (it refuses a Redis that persists nothing unless the URL says
/// `?allow_volatile=true`) and costs a test nothing: no snapshot falls due within an hour, so a
/// [`RedisServer::kill`] loses everything, as a crash of such a Redis would.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing: no append-only file and no RDB save point (`--save ""`).
    None,
    /// RDB snapshots after an hour with a change (`--save "3600 1"`), no append-only file.
    #[default]
    Snapshots,
    /// The append-only file with `appendfsync always`: every acknowledged write survives a
    /// kill.
    AofAlways,
    /// The append-only file with `appendfsync everysec`, what most deployments run: a kill
    /// may lose about the last second of acknowledged writes.
    AofEverySec,
}

/// Options for one `redis-server`; see [`RedisServer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisServerBuilder {
    password: Option<String>,
    acl_user: Option<(String, String)>,
    acl_rules: Option<Vec<String>>,
    tls: bool,
    tls_server_names: Option<Vec<String>>,
    tls_auth_clients: bool,
    tls_files: Option<TlsFiles>,
    persistence: Persistence,
    maxmemory_policy: Option<String>,
    extra: Vec<Vec<String>>,
    mode: Mode,
}

impl RedisServerBuilder {
    fn new() -> Self {
        RedisServerBuilder {
            password: None,
            acl_user: None,
            acl_rules: None,
            tls: false,
            tls_server_names: None,
            tls_auth_clients: false,
            tls_files: None,
            persistence: Persistence::default(),
            maxmemory_policy: None,
            extra: Vec::new(),
            mode: Mode::Standalone,
        }
    }

    /// Requires this password of the default user (`requirepass`).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Adds an ACL user with every permission (`user NAME on >PASSWORD ~* &* +@all`), or with
    /// the rules of [`acl_rules`](Self::acl_rules).
    ///
    /// Without [`password`](Self::password), the default user is switched off
    /// (`user default off`), so every connection must authenticate as this user; with a
    /// password, the default user stays on and requires that password.
    /// [`RedisServer::url`] and [`RedisServer::connect`] use this user.
    pub fn acl_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.acl_user = Some((name.into(), password.into()));
        self
    }

    /// Gives the [`acl_user`](Self::acl_user) exactly these ACL rules (key patterns, channel
    /// patterns, commands, e.g. `["~app:*", "resetchannels", "&app:*", "-@all", "+ping"]`) in
    /// place of every permission; the rules must allow `PING`, which tells when the server is
    /// ready. Without [`password`](Self::password) the default user is off, so this user is
    /// the only one a client can act as.
    pub fn acl_rules<I, S>(mut self, rules: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.acl_rules = Some(rules.into_iter().map(Into::into).collect());
        self
    }

    /// Serves TLS only (`port 0`, `tls-port P`) with certificates generated for
    /// `127.0.0.1` and `localhost`; clients must trust [`RedisServer::tls_ca_path`] and need
    /// no certificate of their own (`tls-auth-clients no`, see
    /// [`tls_auth_clients`](Self::tls_auth_clients)). Replication links are TLS too
    /// (`tls-replication yes`). The testkit's own commands ([`RedisServer::command`]) go
    /// through a Unix socket in the server's directory.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Serves TLS (as [`tls`](Self::tls)) with a server certificate for these names only
    /// (DNS names or IP addresses) instead of `127.0.0.1` and `localhost`: e.g.
    /// `["other.invalid"]`, which a client that checks host names refuses.
    pub fn tls_server_names<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tls = true;
        self.tls_server_names = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Serves TLS (as [`tls`](Self::tls)) and requires a client certificate signed by the
    /// CA (`tls-auth-clients yes`, mutual TLS): [`RedisServer::tls_client_cert_path`] and
    /// [`RedisServer::tls_client_key_path`] are one.
    pub fn tls_auth_clients(mut self) -> Self {
        self.tls = true;
        self.tls_auth_clients = true;
        self
    }

    /// Serves TLS (as [`tls`](Self::tls)) with these certificates instead of fresh ones, so
    /// that several servers trust each other.
    pub(crate) fn tls_files(mut self, files: TlsFiles) -> Self {
        self.tls = true;
        self.tls_files = Some(files);
        self
    }

    /// Turns on the append-only file with `appendfsync always`, so every acknowledged write
    /// survives [`RedisServer::kill`] + [`RedisServer::restart`]; `false` is the default,
    /// [`Persistence::Snapshots`].
    pub fn appendonly(self, on: bool) -> Self {
        self.persistence(if on {
            Persistence::AofAlways
        } else {
            Persistence::default()
        })
    }

    /// Chooses what the server keeps on disk (default [`Persistence::Snapshots`]).
    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    /// Sets `maxmemory-policy` (e.g. `allkeys-lru`).
    pub fn maxmemory_policy(mut self, policy: impl Into<String>) -> Self {
        self.maxmemory_policy = Some(policy.into());
        self
    }

    /// Passes any other `redis-server` option, e.g. `.arg("--maxmemory", "10mb")`. Later
    /// options win over earlier ones, including the testkit's own.
    pub fn arg(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.args(name, [value.into()])
    }

    /// Passes an option that takes several values, e.g.
    /// `.args("--replicaof", ["127.0.0.1", "6380"])`.
    pub fn args<I, S>(mut self, name: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut option = vec![name.into()];
        option.extend(values.into_iter().map(Into::into));
        self.extra.push(option);
        self
    }

    pub(crate) fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Starts the server on a free port and waits until it answers.
    ///
    /// # Errors
    ///
    /// [`Error::NotInstalled`] without `redis-server` on `PATH`; [`Error::Start`], with the
    /// server's log, when it exits or is not ready within 10 s.
    pub async fn start(self) -> Result<RedisServer> {
        let exe = find_on_path("redis-server").ok_or(Error::NotInstalled)?;
        let dir = tempfile::Builder::new()
            .prefix("celeriac-redis-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let tls = match (&self.tls_files, self.tls) {
            (Some(files), _) => Some(files.clone()),
            (None, true) => {
                let names = self.tls_server_names.clone().unwrap_or_else(|| {
                    DEFAULT_SERVER_NAMES
                        .iter()
                        .map(|n| (*n).to_owned())
                        .collect()
                });
                Some(tls::generate(dir.path(), &names)?)
            }
            (None, false) => None,
        };
        if let Mode::Sentinel(conf) = &self.mode {
            let path = dir.path().join("sentinel.conf");
            std::fs::write(&path, conf)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        let mut server = RedisServer {
            child: None,
            port: 0,
            exe,
            tls,
            options: self,
            dir,
        };
        let mut attempt = 1;
        loop {
            server.port = reserve_port(server.options.mode == Mode::ClusterNode)?;
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(Launch::PortTaken(_)) if attempt < PORT_ATTEMPTS => {
                    release_port(server.port);
                    attempt += 1;
                }
                Err(Launch::PortTaken(e) | Launch::Failed(e)) => return Err(e),
            }
        }
    }
}

/// One `redis-server` process on `127.0.0.1`, in its own temporary directory.
///
/// Dropping it kills the process (SIGKILL), waits for it to exit and removes the directory.
/// Where `setpriv` is available the process is also started with a parent-death signal, so
/// it dies with the test process even when that is killed without unwinding; the "parent"
/// is the thread that started (or restarted) it, so keep a server no longer than that
/// thread lives (a `#[tokio::test]` body is fine).
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    exe: PathBuf,
    tls: Option<TlsFiles>,
    options: RedisServerBuilder,
    // Last, so the directory is removed after the process is gone.
    dir: tempfile::TempDir,
}

enum Launch {
    /// The port was taken between choosing and binding it: try another.
    PortTaken(Error),
    Failed(Error),
}

impl RedisServer {
    /// Starts a standalone server with the default [`Persistence::Snapshots`].
    ///
    /// # Errors
    ///
    /// As [`RedisServerBuilder::start`].
    pub async fn start() -> Result<RedisServer> {
        Self::builder().start().await
    }

    /// A builder for a server with a password, an ACL user, TLS, AOF or other options.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::new()
    }

    /// The URL a client uses: `redis://127.0.0.1:PORT`, `redis://:PASSWORD@127.0.0.1:PORT`
    /// with a password, `redis://USER:PASSWORD@127.0.0.1:PORT` with an ACL user, and
    /// `rediss://...` with TLS. User and password are percent-encoded.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let auth = match (&self.options.acl_user, &self.options.password) {
            (Some((user, pass)), _) => format!("{}:{}@", encode(user), encode(pass)),
            (None, Some(pass)) => format!(":{}@", encode(pass)),
            (None, None) => String::new(),
        };
        format!("{scheme}://{auth}127.0.0.1:{}", self.port)
    }

    /// `("127.0.0.1", port)`; with TLS, the TLS port.
    pub fn host_port(&self) -> (String, u16) {
        ("127.0.0.1".to_owned(), self.port)
    }

    /// The port (the TLS port with TLS).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Kills the process (and any fork child of it) with SIGKILL and waits for it to exit;
    /// a no-op when it is not running. The port and directory stay reserved for
    /// [`restart`](Self::restart).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The whole process group: a fork child (an RDB transfer to a replica, an AOF
            // rewrite) would otherwise outlive the server. Fails only if all are gone.
            if let Some(pgid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
            let _ = child.start_kill();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    /// Stops the process (SIGSTOP): it keeps its connections but answers nothing until
    /// [`resume`](Self::resume). A no-op when it is not running.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Continues a paused process (SIGCONT). A no-op when it is not running.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid().and_then(|pid| i32::try_from(pid).ok()) {
            // Fails only if the process is already gone.
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Starts the server again on the same port, in the same directory, with the same
    /// options (killing it first if it still runs): with
    /// [`appendonly`](RedisServerBuilder::appendonly) its data survives.
    ///
    /// # Errors
    ///
    /// [`Error::Start`] when it does not come up, e.g. because another process took the port.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let mut attempt = 1;
        loop {
            match self.launch().await {
                Ok(()) => return Ok(()),
                // The port was ours a moment ago; give a lingering socket a moment.
                Err(Launch::PortTaken(_)) if attempt < PORT_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(Launch::PortTaken(e) | Launch::Failed(e)) => return Err(e),
            }
        }
    }

    /// The CA certificate (PEM) a client must trust, for a TLS server.
    pub fn tls_ca_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_cert.as_path())
    }

    /// A client certificate (PEM) signed by the CA, for a TLS server: what a client presents
    /// to a server started with [`tls_auth_clients`](RedisServerBuilder::tls_auth_clients).
    pub fn tls_client_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.client_cert.as_path())
    }

    /// The private key (PEM) of [`tls_client_cert_path`](Self::tls_client_cert_path).
    pub fn tls_client_key_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.client_key.as_path())
    }

    /// For a TLS server, the Unix socket (in its directory) that the testkit's own commands
    /// use, since its TCP port speaks TLS only.
    pub fn admin_socket_path(&self) -> Option<PathBuf> {
        self.tls
            .as_ref()
            .map(|_| self.dir.path().join(ADMIN_SOCKET))
    }

    /// The server's directory: its log, AOF files, certificates, `nodes.conf`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log, followed by anything it printed to stdout/stderr (config errors),
    /// for failure messages.
    pub fn log(&self) -> String {
        let mut log = read_lossy(&self.log_path());
        let output = read_lossy(&self.output_path());
        if !output.trim().is_empty() {
            log.push_str("--- stdout/stderr ---\n");
            log.push_str(&output);
        }
        log
    }

    /// The arguments that point `redis-cli` at this server: host, port, and the TLS and
    /// credential options it needs (`--tls --cacert CA`, `--user U --pass P` or `-a P`).
    pub fn redis_cli_args(&self) -> Vec<String> {
        let mut args = vec![
            "-h".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
        ];
        if let Some(tls) = &self.tls {
            args.extend(["--tls".to_owned(), "--cacert".to_owned()]);
            args.push(tls.ca_cert.display().to_string());
            if self.options.tls_auth_clients {
                args.push("--cert".to_owned());
                args.push(tls.client_cert.display().to_string());
                args.push("--key".to_owned());
                args.push(tls.client_key.display().to_string());
            }
        }
        match (&self.options.acl_user, &self.options.password) {
            (Some((user, pass)), _) => {
                args.extend(["--user".to_owned(), user.clone(), "--pass".to_owned()]);
                args.push(pass.clone());
            }
            (None, Some(pass)) => args.extend(["-a".to_owned(), pass.clone()]),
            (None, None) => {}
        }
        if self.options.acl_user.is_some() || self.options.password.is_some() {
            args.push("--no-auth-warning".to_owned());
        }
        args
    }

    /// Opens a plain-TCP RESP connection, authenticated as the ACL user or with the
    /// password when the server has one.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a TLS server (its port speaks TLS only: use
    /// [`command`](Self::command), which goes through the admin socket, or `redis-cli` with
    /// [`redis_cli_args`](Self::redis_cli_args)); [`Error::Io`] or [`Error::Server`] when
    /// connecting or authenticating fails. No timeout: a paused server makes it hang.
    pub async fn connect(&self) -> Result<Connection> {
        if self.tls.is_some() {
            return Err(Error::Unsupported(
                "the testkit's RESP client speaks plain TCP only; use redis-cli with \
                 RedisServer::redis_cli_args() for a TLS server"
                    .into(),
            ));
        }
        let conn = Connection::connect("127.0.0.1", self.port).await?;
        self.authenticate(conn).await
    }

    /// A connection for the testkit's own commands: TCP, or the Unix socket of a TLS server;
    /// authenticated as [`connect`](Self::connect) is.
    async fn admin_connect(&self) -> Result<Connection> {
        let conn = match self.admin_socket_path() {
            Some(path) => Connection::connect_unix(&path).await?,
            None => Connection::connect("127.0.0.1", self.port).await?,
        };
        self.authenticate(conn).await
    }

    async fn authenticate(&self, mut conn: Connection) -> Result<Connection> {
        match (&self.options.acl_user, &self.options.password) {
            (Some((user, pass)), _) => {
                conn.command(&["AUTH", user.as_str(), pass.as_str()])
                    .await?;
            }
            (None, Some(pass)) => {
                conn.command(&["AUTH", pass.as_str()]).await?;
            }
            (None, None) => {}
        }
        Ok(conn)
    }

    /// Runs one command on a new authenticated connection, within 5 s: over TCP, or for a
    /// TLS server over its [admin socket](Self::admin_socket_path).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect) (but not [`Error::Unsupported`]) and
    /// [`Connection::command`], and [`Error::Timeout`].
    pub async fn command(&self, args: &[&str]) -> Result<Value> {
        let run = async {
            let mut conn = self.admin_connect().await?;
            conn.command(args).await
        };
        tokio::time::timeout(COMMAND_TIMEOUT, run)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("{} on 127.0.0.1:{}", args.join(" "), self.port),
                after: COMMAND_TIMEOUT,
            })?
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn output_path(&self) -> PathBuf {
        self.dir.path().join("output.log")
    }

    /// The `redis-server` command line for the current port.
    fn command_line(&self) -> Vec<String> {
        let o = &self.options;
        let dir = self.dir.path().display().to_string();
        let mut args: Vec<String> = Vec::new();
        let mut opt = |items: &[&str]| args.extend(items.iter().map(|s| (*s).to_owned()));
        if let Mode::Sentinel(_) = o.mode {
            // The config file must come first; the sentinel rewrites it as it learns.
            opt(&[&format!("{dir}/sentinel.conf"), "--sentinel"]);
        }
        let port = self.port.to_string();
        opt(&["--bind", "127.0.0.1"]);
        if let Some(tls) = &self.tls {
            opt(&["--port", "0", "--tls-port", &port]);
            opt(&["--tls-cert-file", &tls.server_cert.display().to_string()]);
            opt(&["--tls-key-file", &tls.server_key.display().to_string()]);
            opt(&["--tls-ca-cert-file", &tls.ca_cert.display().to_string()]);
            let auth_clients = if o.tls_auth_clients { "yes" } else { "no" };
            opt(&["--tls-auth-clients", auth_clients]);
            // Replicas, sentinels and cluster peers reach each other over TLS too.
            opt(&["--tls-replication", "yes"]);
            if o.mode == Mode::ClusterNode {
                opt(&["--tls-cluster", "yes"]);
            }
            let socket = self.dir.path().join(ADMIN_SOCKET).display().to_string();
            opt(&["--unixsocket", &socket, "--unixsocketperm", "700"]);
        } else {
            opt(&["--port", &port]);
        }
        opt(&["--dir", &dir]);
        opt(&["--logfile", &self.log_path().display().to_string()]);
        match (&o.mode, o.persistence) {
            (Mode::Sentinel(_), _) | (_, Persistence::None) => {
                opt(&["--save", "", "--appendonly", "no"]);
            }
            (_, Persistence::Snapshots) => opt(&["--save", "3600 1", "--appendonly", "no"]),
            (_, Persistence::AofAlways) => {
                opt(&[
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ]);
            }
            (_, Persistence::AofEverySec) => {
                opt(&[
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                ]);
            }
        }
        opt(&["--protected-mode", "no", "--daemonize", "no"]);
        if !matches!(o.mode, Mode::Sentinel(_)) {
            // A replica's first sync would otherwise wait 5 s for more replicas to join.
            opt(&["--repl-diskless-sync-delay", "0"]);
        }
        if let Some(pass) = &o.password {
            opt(&["--requirepass", pass]);
        }
        if let Some((user, pass)) = &o.acl_user {
            opt(&["--user", user, "on", &format!(">{pass}")]);
            let rules: Vec<&str> = match &o.acl_rules {
                Some(rules) => rules.iter().map(String::as_str).collect(),
                None => vec!["~*", "&*", "+@all"],
            };
            opt(&rules);
            if o.password.is_none() {
                opt(&["--user", "default", "off"]);
            }
        }
        if let Some(policy) = &o.maxmemory_policy {
            opt(&["--maxmemory-policy", policy]);
        }
        if o.mode == Mode::ClusterNode {
            opt(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
            opt(&["--cluster-node-timeout", "5000"]);
        }
        for option in &o.extra {
            args.extend(option.iter().cloned());
        }
        args
    }

    /// Spawns the process on `self.port` and waits until it is ready.
    async fn launch(&mut self) -> Result<(), Launch> {
        // The log is appended to across restarts: only look at what this run writes.
        let log_offset = file_len(&self.log_path());
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.output_path())
            .map_err(|e| Launch::Failed(Error::io("opening output.log", e)))?;
        let output_err = output
            .try_clone()
            .map_err(|e| Launch::Failed(Error::io("opening output.log", e)))?;

        let mut command = match parent_death_wrapper() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        command
            .args(self.command_line())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output_err)
            // Its own process group, so that kill() also reaches its fork children.
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| {
            Launch::Failed(Error::io(format!("starting {}", self.exe.display()), e))
        })?;
        self.child = Some(child);

        let ready_line = match self.options.mode {
            Mode::Sentinel(_) => SENTINEL_READY_LINE,
            _ => READY_LINE,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(format!("it exited ({status})")),
                Some(Err(e)) => Some(format!("waiting for it failed: {e}")),
                None => Some("it is not running".to_owned()),
            };
            let new_log = read_lossy_from(&self.log_path(), log_offset);
            if let Some(reason) = exited {
                self.child = None;
                let error = self.start_error(reason);
                return Err(if new_log.contains(PORT_TAKEN_LINE) {
                    Launch::PortTaken(error)
                } else {
                    Launch::Failed(error)
                });
            }
            // Checking our own log first matters: if another server took the port, a PING
            // alone could be answered by that one.
            if new_log.contains(ready_line) && self.answers().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(Launch::Failed(
                    self.start_error(format!("not ready after {READY_TIMEOUT:?}")),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the server answers PING (over its admin socket with TLS) and, with TLS,
    /// accepts connections on its port.
    async fn answers(&self) -> bool {
        if self.tls.is_some() && TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            return false;
        }
        matches!(self.command(&["PING"]).await, Ok(Value::Simple(s)) if s == "PONG")
    }

    fn start_error(&self, reason: String) -> Error {
        Error::Start {
            port: self.port,
            reason,
            log: self.log(),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        release_port(self.port);
    }
}

/// Polls `check` every 50 ms until it returns `Ok(true)`; after `timeout`, fails with
/// [`Error::Setup`] carrying `what`, the last check error and the logs of `servers`.
pub(crate) async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    servers: &[&RedisServer],
    mut check: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            let mut logs = match last {
                Some(e) => format!("\nlast error: {e}"),
                None => String::new(),
            };
            for server in servers {
                logs.push_str(&format!(
                    "\n--- log of 127.0.0.1:{} ---\n{}",
                    server.port,
                    server.log()
                ));
            }
            return Err(Error::Setup {
                what: format!("timed out waiting for {what}"),
                after: timeout,
                logs,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `field:value` lines of an `INFO` or `CLUSTER INFO` reply.
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (key, value) = line.trim_end().split_once(':')?;
        (key == field).then_some(value)
    })
}

/// Ports handed to live servers of this process (and their cluster bus ports), so two
/// servers started at the same moment never pick the same one. Other processes are caught
/// by the "Address already in use" retry.
fn reserved_ports() -> &'static Mutex<HashSet<u16>> {
    static RESERVED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    RESERVED.get_or_init(Default::default)
}

/// Picks a free port on 127.0.0.1 (and, for a cluster node, a free bus port + 10000).
fn reserve_port(cluster: bool) -> Result<u16> {
    let bindable = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..200 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("finding a free port on 127.0.0.1", e))?
            .port();
        if cluster && (port >= CLUSTER_PORT_LIMIT || !bindable(port + CLUSTER_BUS_OFFSET)) {
            continue;
        }
        let mut reserved = reserved_ports()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bus = port.checked_add(CLUSTER_BUS_OFFSET);
        if reserved.contains(&port) || (cluster && bus.is_some_and(|b| reserved.contains(&b))) {
            continue;
        }
        reserved.insert(port);
        if let (true, Some(bus)) = (cluster, bus) {
            reserved.insert(bus);
        }
        return Ok(port);
    }
    Err(Error::Unsupported(
        "found no free port pair on 127.0.0.1 in 200 tries".into(),
    ))
}

fn release_port(port: u16) {
    let mut reserved = reserved_ports()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    reserved.remove(&port);
    if let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) {
        reserved.remove(&bus);
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `setpriv`, if it can set a parent-death signal here (util-linux >= 2.33).
pub(crate) fn parent_death_wrapper() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let setpriv = find_on_path("setpriv")?;
            let works = std::process::Command::new(&setpriv)
                .args(["--pdeathsig", "KILL", "--", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            works.then_some(setpriv)
        })
        .as_deref()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn read_lossy(path: &Path) -> String {
    read_lossy_from(path, 0)
}

fn read_lossy_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Percent-encodes a URL user-info part.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
