//! The shop on PostgreSQL: a temporary cluster (`initdb`, on a free port, with a password),
//! `shop seed` into it, then `shop serve` and `shop worker` processes on it: the listing is
//! the real query, an order is stored and its confirmation sent once through the SMTP sink,
//! and no process prints the database's password.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shop::sink::{Sink, SinkArgs};
use tokio::io::{AsyncBufReadExt, BufReader};

const PASSWORD: &str = "pg-s3cret-for-tests";

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

/// A temporary PostgreSQL cluster, stopped when dropped.
struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    user: Option<(u32, u32)>,
    port: u16,
}

impl Postgres {
    fn command(&self, bin: &str) -> std::process::Command {
        pg_command(bin, self.user)
    }

    fn start() -> Postgres {
        let user = pg_user();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let socket = dir.path().join("socket");
        std::fs::create_dir(&socket).expect("socket dir");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("password file");
        if let Some((uid, gid)) = user {
            for p in [dir.path(), &socket, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
            }
        }
        let out = pg_command("initdb", user)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "shop",
                "-E",
                "UTF8",
                "--no-sync",
                "--auth-local=trust",
            ])
            .arg("--auth-host=scram-sha-256")
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let pg = Postgres {
            data,
            user,
            port,
            _dir: dir,
        };
        let log = pg._dir.path().join("log");
        let out = pg
            .command("pg_ctl")
            .arg("-D")
            .arg(&pg.data)
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
        pg
    }

    fn url(&self) -> String {
        format!(
            "postgres://shop:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A `shop` process, killed when dropped; its output lines are kept.
struct Proc {
    _child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(args: &[&str], cwd: &Path) -> Proc {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
            .args(args)
            .current_dir(cwd)
            .env("SHOP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn shop");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let keep = |lines: Arc<Mutex<Vec<String>>>, pipe| {
            tokio::spawn(async move {
                let mut reader = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().expect("lines").push(line);
                }
            })
        };
        keep(
            lines.clone(),
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        );
        keep(
            lines.clone(),
            Box::new(stderr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        );
        Proc {
            _child: child,
            lines,
        }
    }

    fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits for a line containing `needle`.
    async fn line_with(&self, needle: &str, within: Duration) -> String {
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
}

/// The `http://host:port` in a line.
fn address(line: &str) -> SocketAddr {
    let start = line.find("http://").expect("a URL in the line") + "http://".len();
    let rest = &line[start..];
    let end = rest.find('/').unwrap_or(rest.len());
    rest[..end].parse().expect("an address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_runs_on_postgres() {
    let pg = Postgres::start();
    let url = pg.url();
    let dir = tempfile::tempdir().expect("tempdir");

    // `shop seed`: migrates and seeds; twice gives the same catalog.
    for _ in 0..2 {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
            .args(["seed", "--products", "200", "--reviews", "2000"])
            .env("SHOP_DATABASE_URL", &url)
            .current_dir(dir.path())
            .output()
            .await
            .expect("run shop seed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "shop seed failed: {text}");
        assert!(text.contains("(200 products there now)"), "{text}");
        assert!(text.contains("postgres://shop:***@"), "{text}");
        assert!(!text.contains(PASSWORD), "the password was printed: {text}");
    }

    let sink = Sink::start(SinkArgs::local()).await.expect("sink");
    let store = format!("sqlite://{}", dir.path().join("celeriac.db").display());
    let common = [
        "--url",
        store.as_str(),
        "--database-url",
        url.as_str(),
        "--seed-products",
        "0",
    ];
    let smtp = sink.url();
    let mut serve_args = vec!["serve", "--bind", "127.0.0.1:0", "--smtp", &smtp];
    serve_args.extend(common);
    let serve = Proc::spawn(&serve_args, dir.path());
    let mut worker_args = vec!["worker", "--concurrency", "4", "--smtp", &smtp];
    worker_args.extend(common);
    let worker = Proc::spawn(&worker_args, dir.path());
    let addr = address(
        &serve
            .line_with("serving on http://", Duration::from_secs(30))
            .await,
    );
    worker
        .line_with("shop worker", Duration::from_secs(30))
        .await;

    let client = reqwest::Client::new();
    // The listing: 200 products over 8 categories, 25 books, with their reviews.
    let res = client
        .get(format!("http://{addr}/products?category=books&page=1"))
        .header("x-api-key", "pg-test")
        .send()
        .await
        .expect("GET /products");
    assert_eq!(res.status().as_u16(), 200);
    let listing: Value = res.json().await.expect("JSON");
    let products = listing["products"].as_array().expect("products");
    assert_eq!(products.len(), 20, "{listing}");
    assert_eq!(listing["total"], json!(25), "{listing}");
    assert!(products.iter().all(|p| p["category"] == json!("books")));
    let reviews: i64 = products
        .iter()
        .map(|p| p["reviews"].as_i64().expect("a review count"))
        .sum();
    assert!(reviews > 0, "no reviews joined: {listing}");

    // An order: stored in PostgreSQL, confirmed once.
    let res = client
        .post(format!("http://{addr}/orders"))
        .header("x-api-key", "pg-test")
        .json(&json!({"email": "pg@example.com", "items": [{"product_id": 9, "quantity": 3}]}))
        .send()
        .await
        .expect("POST /orders");
    assert_eq!(res.status().as_u16(), 201);
    let created: Value = res.json().await.expect("JSON");
    let id = created["order_id"]
        .as_str()
        .expect("an order id")
        .to_string();
    assert!(created["email_job"].is_string(), "{created}");
    let product: Value = client
        .get(format!("http://{addr}/products/9"))
        .header("x-api-key", "pg-test")
        .send()
        .await
        .expect("GET /products/9")
        .json()
        .await
        .expect("JSON");
    let unit = product["price_cents"].as_i64().expect("a price");
    assert_eq!(created["total_cents"], json!(3 * unit));

    let deadline = Instant::now() + Duration::from_secs(40);
    let order = loop {
        let order: Value = client
            .get(format!("http://{addr}/orders/{id}"))
            .header("x-api-key", "pg-test")
            .send()
            .await
            .expect("GET /orders")
            .json()
            .await
            .expect("JSON");
        if order["email_sent_at_ms"].is_i64() {
            break order;
        }
        assert!(Instant::now() < deadline, "not confirmed: {order}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(order["email"], json!("pg@example.com"));
    let sent: Vec<_> = sink
        .deliveries()
        .into_iter()
        .filter(|d| d.order.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(!sent[0].duplicate);

    for p in [&serve, &worker] {
        let output = p.output();
        assert!(
            !output.contains(PASSWORD),
            "the password was printed: {output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_does_not_answer_fails_at_start_without_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "postgres://shop:{PASSWORD}@127.0.0.1:{}/postgres",
        free_port()
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["serve", "--bind", "127.0.0.1:0", "--database-url", &url])
        .current_dir(dir.path())
        .output()
        .await
        .expect("run shop serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--database-url (SHOP_DATABASE_URL)"),
        "{stderr}"
    );
    assert!(stderr.contains("postgres://shop:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            "mysql://x:y@h/db",
        ])
        .current_dir(dir.path())
        .output()
        .await
        .expect("run shop serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--database-url"), "{stderr}");
    assert!(!stderr.contains(":y@"), "{stderr}");
}
