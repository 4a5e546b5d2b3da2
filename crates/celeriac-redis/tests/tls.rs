//! TLS against real `redis-server` processes the testkit starts with its own certificates
//! (never the shared Redis on 6379): the server's host name is verified, client certificates
//! (mutual TLS) come from `?cert=&key=`, and a Cluster and a Sentinel setup are reached over
//! TLS only.
//!
//! Every wait is bounded by a generous timeout; no assertion depends on how fast a machine is.

mod common;

use celeriac::{App, WorkerConfig};
use celeriac_testkit::resp::Connection;
use celeriac_testkit::{RedisCluster, RedisSentinel, RedisServer};
use common::{connect_error, connects, round_trip_with};
use std::path::Path;
use std::time::Duration;

/// Sleeps about 5 ms and returns its argument.
#[celeriac::task(name = "tls.nap", queue = "tls", retries = 9)]
async fn nap(n: u32) -> u32 {
    tokio::time::sleep(Duration::from_millis(5)).await;
    n
}
use nap::Task as Nap;

/// Short timeouts for connections that are meant to fail.
const FAIL_FAST: &str = "connect_timeout_ms=2000&response_timeout_ms=2000";

async fn app(url: &str) -> App {
    App::builder()
        .url(url)
        .task::<Nap>()
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// Enqueues one job on `url`, runs a worker until it finishes, and checks it succeeded with
/// its result.
async fn round_trip(url: &str) {
    let config = WorkerConfig {
        queues: vec!["tls".into()],
        concurrency: 2,
        prefetch: 2,
        lease: Duration::from_secs(10),
        heartbeat: Duration::from_secs(2),
        poll_interval: Duration::from_millis(50),
        grace_period: Duration::from_secs(5),
        ..WorkerConfig::default()
    };
    round_trip_with::<Nap>(&app(url).await, config).await;
}

/// A path as a URL parameter value.
fn param(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('%', "%25")
        .replace('&', "%26")
}

/// Asserts that nothing answers a plain-text PING on `port` (a TLS port, or nothing at all).
async fn assert_no_plain_text(port: u16) {
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        let mut conn = Connection::connect("127.0.0.1", port).await?;
        conn.command(&["PING"]).await
    })
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "port {port} answered a plain-text PING: {plain:?}"
    );
}

/// The value of one `CONFIG GET` on `server` (through the testkit's admin socket).
async fn config_get(server: &RedisServer, name: &str) -> String {
    let reply = server
        .command(&["CONFIG", "GET", name])
        .await
        .unwrap_or_else(|e| panic!("CONFIG GET {name}: {e}"));
    reply
        .as_array()
        .and_then(|items| items.get(1)?.as_text())
        .unwrap_or_default()
}

/// Asserts that `server` has no plain-text TCP port at all, serves TLS on its own port, and
/// refuses plain text there.
async fn assert_tls_only(server: &RedisServer) {
    assert_eq!(config_get(server, "port").await, "0", "no plain-text port");
    assert_eq!(
        config_get(server, "tls-port").await,
        server.port().to_string()
    );
    assert_no_plain_text(server.port()).await;
}

/// `redis-cli` with these arguments: (success, trimmed stdout + stderr).
fn redis_cli(args: &[String]) -> (bool, String) {
    let out = std::process::Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_owned())
}

/// Whether an error message says the server's certificate was refused for its name (and
/// which name it is for).
fn names_the_certificate_name(msg: &str) -> bool {
    msg.contains("certificate not valid for name") && msg.contains("certificate is only valid for")
}

// 1. Host name verification.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_localhost_only_is_refused_at_127_0_0_1() {
    let server = RedisServer::builder()
        .tls_server_names(["localhost"])
        .start()
        .await
        .expect("redis-server starts");
    let port = server.port();
    let ca = param(server.tls_ca_path().expect("a TLS server has a CA"));

    // Precondition: with the name the certificate is for, the same CA and the same server
    // work.
    round_trip(&format!("rediss://localhost:{port}?ca={ca}")).await;

    // The same server at an address the certificate does not name: refused.
    let msg = connect_error(&format!("rediss://127.0.0.1:{port}?ca={ca}&{FAIL_FAST}")).await;
    assert!(
        names_the_certificate_name(&msg),
        "a certificate for another name should be refused as such: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused() {
    let server = RedisServer::builder()
        .tls_server_names(["other.invalid"])
        .start()
        .await
        .expect("redis-server starts");
    let port = server.port();
    let ca = param(server.tls_ca_path().expect("a TLS server has a CA"));

    // Precondition: the certificate is valid and signed by this CA; only its name is wrong.
    // redis-cli checks the chain but not the host name.
    let mut args = server.redis_cli_args();
    args.push("PING".into());
    assert_eq!(
        redis_cli(&args),
        (true, "PONG".to_owned()),
        "redis-cli trusts the chain"
    );

    for host in ["127.0.0.1", "localhost"] {
        let msg = connect_error(&format!("rediss://{host}:{port}?ca={ca}&{FAIL_FAST}")).await;
        assert!(
            names_the_certificate_name(&msg),
            "a certificate for other.invalid should be refused at {host}: {msg}"
        );
        assert_eq!(msg.matches("backend error").count(), 1, "said once: {msg}");
    }
    // No way around it through the URL: redis-rs's `#insecure` fragment does not get through.
    for url in [
        format!("rediss://127.0.0.1:{port}/#insecure?ca={ca}&{FAIL_FAST}"),
        format!("rediss://127.0.0.1:{port}/0#insecure?ca={ca}&{FAIL_FAST}"),
        format!("rediss://127.0.0.1:{port}#insecure?ca={ca}&{FAIL_FAST}"),
        format!("rediss://127.0.0.1:{port}?ca={ca}&{FAIL_FAST}#insecure"),
        format!("rediss+cluster://127.0.0.1:{port}#insecure?ca={ca}&{FAIL_FAST}"),
    ] {
        let msg = connect_error(&url).await;
        assert!(
            msg.contains("invalid configuration `url") && !msg.contains("#insecure is"),
            "{url}: {msg}"
        );
    }
}

// 2. Client certificates (mutual TLS).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let server = RedisServer::builder()
        .tls_auth_clients()
        .start()
        .await
        .expect("redis-server starts");
    let port = server.port();
    let ca = param(server.tls_ca_path().expect("a TLS server has a CA"));
    let cert = param(server.tls_client_cert_path().expect("a client certificate"));
    let key = param(server.tls_client_key_path().expect("a client key"));

    let msg = connect_error(&format!("rediss://127.0.0.1:{port}?ca={ca}&{FAIL_FAST}")).await;
    assert!(
        msg.contains("requires a client certificate"),
        "without a client certificate: {msg}"
    );
    // Precondition: the server refused the connection for want of a certificate.
    let log = server.log().to_lowercase();
    assert!(
        log.contains("certificate"),
        "the server should log the missing client certificate: {log}"
    );

    round_trip(&format!(
        "rediss://127.0.0.1:{port}?ca={ca}&cert={cert}&key={key}"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_are_checked_at_start_naming_the_setting_and_the_path() {
    let server = RedisServer::builder()
        .tls_auth_clients()
        .start()
        .await
        .expect("redis-server starts");
    let port = server.port();
    let ca = param(server.tls_ca_path().expect("a TLS server has a CA"));
    let cert = param(server.tls_client_cert_path().expect("a client certificate"));
    let key = param(server.tls_client_key_path().expect("a client key"));
    let missing = server.dir().join("missing.pem");
    let missing = param(&missing);
    let base = format!("rediss://127.0.0.1:{port}");

    let msg = connect_error(&format!("{base}?ca={ca}&cert={missing}&key={key}")).await;
    assert!(
        msg.contains("url: cert") && msg.contains(&missing),
        "a missing certificate file: {msg}"
    );
    let msg = connect_error(&format!("{base}?ca={ca}&cert={cert}&key={missing}")).await;
    assert!(
        msg.contains("url: key") && msg.contains(&missing),
        "a missing key file: {msg}"
    );
    let msg = connect_error(&format!("{base}?ca={missing}")).await;
    assert!(
        msg.contains("url: ca") && msg.contains(&missing),
        "a missing CA file: {msg}"
    );
    // A key file that holds no key, a certificate file that holds no certificate.
    let msg = connect_error(&format!("{base}?ca={ca}&cert={cert}&key={cert}")).await;
    assert!(
        msg.contains("url: key") && msg.contains(&cert),
        "a certificate given as the key: {msg}"
    );
    let msg = connect_error(&format!("{base}?ca={ca}&cert={key}&key={key}")).await;
    assert!(
        msg.contains("url: cert") && msg.contains(&key),
        "a key given as the certificate: {msg}"
    );
    // Another certificate's key.
    let server_key = param(&server.dir().join("server.key"));
    assert!(server.dir().join("server.key").exists(), "precondition");
    let msg = connect_error(&format!("{base}?ca={ca}&cert={cert}&key={server_key}")).await;
    assert!(
        msg.contains("url: key") && msg.contains("does not go with"),
        "a key that is not the certificate's: {msg}"
    );
    // Only one of the pair.
    let msg = connect_error(&format!("{base}?ca={ca}&cert={cert}")).await;
    assert!(msg.contains("url: key"), "a certificate without key: {msg}");
    // TLS settings on a plain-text URL are not silently ignored.
    for (query, setting) in [
        (format!("ca={ca}"), "url: ca"),
        (format!("cert={cert}&key={key}"), "url: cert"),
    ] {
        let msg = connect_error(&format!("redis://127.0.0.1:{port}?{query}")).await;
        assert!(
            msg.contains(setting) && msg.contains("rediss://"),
            "{query} without TLS: {msg}"
        );
    }
    // Precondition: the same files, right, work.
    connects(&format!("{base}?ca={ca}&cert={cert}&key={key}")).await;
}

// 3. Cluster and Sentinel over TLS.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_runs_jobs_and_speaks_no_plain_text() {
    let cluster = RedisCluster::start_tls().await.expect("cluster starts");
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    let ca = param(cluster.tls_ca_path().expect("a TLS cluster has a CA"));

    round_trip(&format!("{url}?ca={ca}")).await;
    // The other spelling: `redis+cluster://` with `tls=true`.
    let plain_scheme = url.replacen("rediss+cluster://", "redis+cluster://", 1);
    connects(&format!("{plain_scheme}?tls=true&ca={ca}")).await;

    // It really was TLS: no node has a plain-text port, the bus is TLS, and the same URL in
    // plain text, or without trusting the CA, is refused.
    for node in cluster.nodes() {
        assert_tls_only(node).await;
        assert_eq!(config_get(node, "tls-cluster").await, "yes");
    }
    connect_error(&format!("{plain_scheme}?{FAIL_FAST}")).await;
    let msg = connect_error(&format!("{url}?{FAIL_FAST}")).await;
    assert!(
        msg.to_lowercase().contains("certificate"),
        "without the CA: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_sentinel_setup_runs_jobs_and_speaks_no_plain_text() {
    let mut setup = RedisSentinel::start_tls()
        .await
        .expect("sentinel setup starts");
    let url = setup.url();
    assert!(url.starts_with("rediss+sentinel://"), "{url}");
    let ca = param(setup.tls_ca_path().expect("a TLS setup has a CA"));

    round_trip(&format!("{url}?ca={ca}")).await;

    // It really was TLS, to the sentinel and to the data nodes: none has a plain-text port,
    // and the same URL in plain text is refused.
    assert_no_plain_text(setup.sentinel().port()).await;
    assert_tls_only(setup.master()).await;
    assert_tls_only(setup.replica()).await;
    let plain_scheme = url.replacen("rediss+sentinel://", "redis+sentinel://", 1);
    connect_error(&format!("{plain_scheme}?{FAIL_FAST}")).await;
    let msg = connect_error(&format!("{url}?{FAIL_FAST}")).await;
    assert!(
        msg.to_lowercase().contains("certificate"),
        "without the CA: {msg}"
    );
}
