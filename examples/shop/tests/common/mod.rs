//! Setup shared by the shop's integration tests (`mod common;`): shops on a store URL with a
//! seeded SQLite database, routers served on free loopback ports, requests and JSON, `shop`
//! processes, a temporary PostgreSQL cluster, the SMTP sink, in-process workers, waiting.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celeriac::{App, AppBuilder, JobId, JobInfo, TaskDef, WorkerConfig, WorkerStats};
use serde_json::Value;
use shop::db::{Db, SeedSizes};
use shop::deps::Deps;
use shop::shop::{Shop, ShopOptions};
use shop::sink::{Delivery, Sink, SinkArgs};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The URL of the SQLite file at `path`: `sqlite://path`.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A shop `name` on the store `url`, the database `dir/shop.db`, seeded `products`/`reviews`.
pub async fn open_shop(url: &str, dir: &Path, name: &str, products: u32, reviews: u32) -> Shop {
    let opts = ShopOptions {
        url: url.to_string(),
        database_url: sqlite_url(&dir.join("shop.db")),
        smtp: "smtp://127.0.0.1:2525".to_string(),
        data_dir: dir.to_path_buf(),
        instance: name.to_string(),
        seed: Some(SeedSizes { products, reviews }),
    };
    Shop::open(&opts).await.expect("the shop opens")
}

/// Serves `router` on a free loopback port; its address.
pub async fn serve_addr(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Serves `router` on a free loopback port; its base URL, `http://host:port`.
pub async fn serve(router: axum::Router) -> String {
    format!("http://{}", serve_addr(router).await)
}

/// A free loopback port (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether nothing accepts connections at `host:port` (a server killed is really down).
pub async fn refuses(host: &str, port: u16) -> bool {
    tokio::net::TcpStream::connect((host, port)).await.is_err()
}

/// `GET {base}/products?category=books` with the API key `key` in `x-api-key`.
pub async fn get_books(client: &reqwest::Client, base: &str, key: &str) -> reqwest::Response {
    client
        .get(format!("{base}/products?category=books"))
        .header("x-api-key", key)
        .send()
        .await
        .expect("answers")
}

/// Sends `request` and reads its answer as JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
    request
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON")
}

/// `POST {base}/orders` of `body` with the API key `key`; the status and the JSON answer.
pub async fn post_order(base: &str, key: &str, body: &Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}/orders"))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await
        .expect("POST /orders");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON answer"))
}

/// [`post_order`], asserting the order is created (201); its id and the answer.
pub async fn place_order(base: &str, key: &str, body: &Value) -> (String, Value) {
    let (status, created) = post_order(base, key, body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["order_id"]
        .as_str()
        .expect("an order id")
        .to_string();
    (id, created)
}

/// Polls `GET {base}/orders/{id}` (key `key`) until its e-mail is sent, within `within`.
pub async fn email_sent(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let order: Value = get_json(
            client
                .get(format!("{base}/orders/{id}"))
                .header("x-api-key", key),
        )
        .await;
        if order["email_sent_at_ms"].is_i64() {
            return order;
        }
        assert!(
            Instant::now() < deadline,
            "order {id} not confirmed within {within:?}: {order}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (polling every 50 ms) until `check` holds, failing after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `host:port` after `scheme` (`http://`, `smtp://`) in a line, up to a `/` or a space.
pub fn address(line: &str, scheme: &str) -> SocketAddr {
    let start = line.find(scheme).expect("a URL in the line") + scheme.len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c == '/' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].parse().expect("an address")
}

/// The `shop` binary with `args`, to be started with [`Proc::spawn`].
pub fn shop_command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"));
    cmd.args(args);
    cmd
}

/// SIGTERM to `child`, then its exit status (it must stop within 30 s).
pub async fn terminate(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("the process runs") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the process stops within 30 s of SIGTERM")
        .expect("wait")
}

/// A process, killed when dropped, whose output lines (stdout and stderr) are kept as they come.
pub struct Proc {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `cmd` with no input and its output kept.
    pub fn spawn(cmd: &mut tokio::process::Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn shop");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        keep(lines.clone(), child.stdout.take().expect("stdout"));
        keep(lines.clone(), child.stderr.take().expect("stderr"));
        Proc { child, lines }
    }

    /// Everything it printed so far, a line each.
    pub fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits for a line containing `needle`, failing after `within`; the line.
    pub async fn line_with(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} within {within:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status (within 30 s).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child).await
    }
}

/// Reads `pipe` line by line into `lines` (invalid UTF-8 replaced), until it closes.
fn keep(lines: Arc<Mutex<Vec<String>>>, pipe: impl tokio::io::AsyncRead + Send + Unpin + 'static) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.strip_suffix('\n').unwrap_or(&line);
                    let line = line.strip_suffix('\r').unwrap_or(line);
                    lines.lock().expect("lines").push(line.to_string());
                }
            }
        }
    });
}

/// A PostgreSQL binary: on `PATH`, else under `/usr/lib/postgresql/*/bin`.
fn pg_bin(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("{name} is not installed (PostgreSQL's server binaries)"))
}

/// PostgreSQL refuses to run as root: the user it runs as then (`postgres`, else `nobody`).
fn pg_user() -> Option<(u32, u32)> {
    // The owner of this process's own /proc entry is its effective user.
    let me =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc/self"));
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    for name in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3 && fields[0] == name {
                let uid = fields[2].parse().expect("a uid");
                let gid = fields[3].parse().expect("a gid");
                return Some((uid, gid));
            }
        }
    }
    panic!("running as root and no `postgres` or `nobody` user to run PostgreSQL as");
}

/// A PostgreSQL command, run as [`pg_user`] (from `/`) when there is one.
fn pg_command(bin: &str, user: Option<(u32, u32)>) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(pg_bin(bin));
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
        // Its own working directory: root's may not be readable by that user.
        cmd.current_dir("/");
    }
    cmd
}

/// A temporary PostgreSQL cluster (`initdb` on a free port, user `shop`), stopped when dropped.
pub struct Postgres {
    /// Its folder (the cluster in `data`, its socket, its log).
    pub dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    data: PathBuf,
    user: Option<(u32, u32)>,
    password: Option<String>,
}

impl Postgres {
    /// Starts a cluster; with `password`, TCP clients need it (scram-sha-256), else trust.
    pub fn start(password: Option<&str>) -> Postgres {
        let user = pg_user();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let socket = dir.path().join("socket");
        std::fs::create_dir(&socket).expect("socket dir");
        let mut owned = vec![dir.path().to_path_buf(), socket.clone()];
        let mut initdb = pg_command("initdb", user);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "shop", "-E", "UTF8", "--no-sync"]);
        match password {
            Some(password) => {
                let pwfile = dir.path().join("pw");
                std::fs::write(&pwfile, password).expect("password file");
                initdb
                    .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                    .arg(format!("--pwfile={}", pwfile.display()));
                owned.push(pwfile);
            }
            None => {
                initdb.arg("--auth=trust");
            }
        }
        if let Some((uid, gid)) = user {
            for p in &owned {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
            }
        }
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = dir.path().join("log");
        let out = pg_command("pg_ctl", user)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
                socket.display()
            ))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Postgres {
            dir,
            port,
            data,
            user,
            password: password.map(str::to_string),
        }
    }

    /// `postgres://shop[:password]@127.0.0.1:port/postgres`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!(
                "postgres://shop:{password}@127.0.0.1:{}/postgres",
                self.port
            ),
            None => format!("postgres://shop@127.0.0.1:{}/postgres", self.port),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl", self.user)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An SMTP sink on loopback that logs each message to `log` and waits `delay` before answering.
pub async fn sink_logging_to(log: PathBuf, delay: Duration) -> Sink {
    Sink::start(SinkArgs {
        log: Some(log),
        delay,
        ..SinkArgs::local()
    })
    .await
    .expect("the sink starts")
}

/// The messages `sink` accepted for the order `order`.
pub fn deliveries_for(sink: &Sink, order: &str) -> Vec<Delivery> {
    sink.deliveries()
        .into_iter()
        .filter(|d| d.order.as_deref() == Some(order))
        .collect()
}

/// The tasks' [`Deps`]: the database `dir/shop.db` (see [`shop_db`]), `smtp`, `data_dir`.
pub async fn task_deps(dir: &Path, smtp: String, data_dir: PathBuf) -> Deps {
    Deps {
        db: shop_db(dir).await,
        smtp,
        data_dir,
    }
}

/// A temporary folder with the tasks' deps and an application on the store `dir/celeriac.db`.
pub struct TaskEnv {
    /// The folder (the databases, the files).
    pub dir: tempfile::TempDir,
    /// The shop's database (the one in `deps`).
    pub db: Db,
    /// What the tasks use.
    pub deps: Deps,
    /// The application, with the tasks registered.
    pub app: App,
}

/// A [`TaskEnv`]: `smtp`, files in the folder or its `data_subdir`, `tasks` and `extra` setup.
pub async fn task_env(
    smtp: &str,
    data_subdir: Option<&str>,
    tasks: fn(Deps) -> Vec<TaskDef>,
    extra: impl FnOnce(AppBuilder) -> AppBuilder,
) -> TaskEnv {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data_dir = match data_subdir {
        Some(sub) => dir.path().join(sub),
        None => dir.path().to_path_buf(),
    };
    let deps = task_deps(dir.path(), smtp.to_string(), data_dir).await;
    let url = sqlite_url(&dir.path().join("celeriac.db"));
    let app = extra(app_with(url, tasks(deps.clone())))
        .build()
        .await
        .expect("the application builds");
    TaskEnv {
        db: deps.db.clone(),
        dir,
        deps,
        app,
    }
}

/// The shop's database `dir/shop.db` (SQLite), its schema created.
pub async fn shop_db(dir: &Path) -> Db {
    let db = Db::connect(&sqlite_url(&dir.join("shop.db")))
        .await
        .expect("the shop's database opens");
    db.migrate().await.expect("the schema is created");
    db
}

/// An application builder on the store `url` with `tasks` registered.
pub fn app_with(url: String, tasks: Vec<TaskDef>) -> AppBuilder {
    tasks
        .into_iter()
        .fold(App::builder().url(url), |builder, task| {
            builder.register(task)
        })
}

/// A worker on `queue` only, `concurrency` at once (as many prefetched), polling every 50 ms.
pub fn worker_config(queue: &str, concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        queues: vec![queue.to_string()],
        concurrency,
        prefetch: concurrency,
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

/// A worker of this process running on its own task.
pub struct Running {
    stop: celeriac::Shutdown,
    run: tokio::task::JoinHandle<celeriac::Result<()>>,
    /// Its counters.
    pub stats: Arc<WorkerStats>,
}

/// Starts a worker of `app` with `config`.
pub fn start_worker(app: &App, config: WorkerConfig) -> Running {
    let worker = app.worker().config(config);
    Running {
        stop: worker.shutdown_handle(),
        stats: worker.stats(),
        run: tokio::spawn(worker.run()),
    }
}

impl Running {
    /// Stops it gracefully and waits until it has stopped.
    pub async fn stop(self) {
        self.stop.graceful();
        self.run
            .await
            .expect("the worker's task ends")
            .expect("the worker ran");
    }
}

/// Waits up to `within` for the job `id` of `app` to end; its record.
pub async fn wait_job(app: &App, id: JobId, within: Duration) -> JobInfo {
    app.client()
        .handle(id)
        .wait(within)
        .await
        .expect("the job ends")
}
