//! The testkit against real `redis-server` processes: standalone, AUTH, ACL, TLS, AOF,
//! kill/pause/restart, overfilling a bounded server, Cluster, Sentinel, and cleanup on drop.

use std::process::Command;
use std::time::Duration;

use celeriac_testkit::resp::{Connection, Value};
use celeriac_testkit::{Error, Persistence, RedisCluster, RedisSentinel, RedisServer};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Runs `redis-cli` with `args`; returns whether it exited 0 and its trimmed stdout+stderr.
fn redis_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli runs (scripts/test installs redis-tools)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_owned())
}

fn text(value: &Value) -> String {
    value.as_text().expect("a string reply")
}

fn process_exists(pid: u32) -> bool {
    let pid = i32::try_from(pid).expect("pid fits in i32");
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => panic!("kill(pid, 0) failed unexpectedly: {e}"),
    }
}

async fn ping(server: &RedisServer) -> celeriac_testkit::Result<Value> {
    server.command(&["PING"]).await
}

#[tokio::test]
async fn standalone_answers_ping_set_and_get() {
    let server = RedisServer::start().await.expect("server starts");
    let (host, port) = server.host_port();
    assert_eq!(host, "127.0.0.1");
    assert_ne!(port, 6379, "never the shared Redis");
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert!(server.dir().join("redis.log").exists());
    assert!(server.tls_ca_path().is_none());
    assert!(server.log().contains("Ready to accept connections"));

    let mut conn = Connection::connect(&host, port).await.expect("connects");
    let pong = conn.command(&["PING"]).await.expect("PING");
    assert_eq!(pong, Value::Simple("PONG".into()));
    conn.command(&["SET", "greeting", "hello"])
        .await
        .expect("SET");
    let value = conn.command(&["GET", "greeting"]).await.expect("GET");
    assert_eq!(value, Value::Bulk(b"hello".to_vec()));
    let missing = conn.command(&["GET", "nope"]).await.expect("GET");
    assert_eq!(missing, Value::Nil);
    let n = conn.command(&["INCR", "n"]).await.expect("INCR");
    assert_eq!(n.as_int(), Some(1));

    // Hourly RDB snapshots by default (none falls due in a test), no append-only file.
    let save = server
        .command(&["CONFIG", "GET", "save"])
        .await
        .expect("CONFIG GET");
    assert_eq!(text(&save.as_array().expect("array")[1]), "3600 1");
    let aof = server
        .command(&["CONFIG", "GET", "appendonly"])
        .await
        .expect("CONFIG GET");
    assert_eq!(text(&aof.as_array().expect("array")[1]), "no");
}

#[tokio::test]
async fn error_replies_are_server_errors() {
    let server = RedisServer::start().await.expect("server starts");
    let err = server
        .command(&["NOSUCHCOMMAND"])
        .await
        .expect_err("unknown command");
    assert!(
        matches!(&err, Error::Server(msg) if msg.starts_with("ERR unknown command")),
        "{err}"
    );
}

#[tokio::test]
async fn password_is_required_and_checked() {
    let server = RedisServer::builder()
        .password("s3cret")
        .start()
        .await
        .expect("server starts");
    let (host, port) = server.host_port();
    assert_eq!(server.url(), format!("redis://:s3cret@127.0.0.1:{port}"));

    let mut conn = Connection::connect(&host, port).await.expect("connects");
    let err = conn.command(&["GET", "k"]).await.expect_err("needs AUTH");
    assert!(
        matches!(&err, Error::Server(m) if m.starts_with("NOAUTH")),
        "{err}"
    );
    let err = conn
        .command(&["AUTH", "wrong"])
        .await
        .expect_err("wrong password");
    assert!(
        matches!(&err, Error::Server(m) if m.starts_with("WRONGPASS")),
        "{err}"
    );
    let ok = conn.command(&["AUTH", "s3cret"]).await.expect("AUTH");
    assert_eq!(ok, Value::Simple("OK".into()));
    conn.command(&["SET", "k", "v"])
        .await
        .expect("SET after AUTH");

    // The server's own connection authenticates by itself.
    let value = server.command(&["GET", "k"]).await.expect("GET");
    assert_eq!(text(&value), "v");

    let mut args = server.redis_cli_args();
    args.push("PING".into());
    assert_eq!(redis_cli(&args), (true, "PONG".to_owned()));
}

#[tokio::test]
async fn acl_user_has_all_permissions_and_default_user_is_off() {
    let server = RedisServer::builder()
        .acl_user("app", "secret")
        .start()
        .await
        .expect("server starts");
    let (host, port) = server.host_port();
    assert_eq!(server.url(), format!("redis://app:secret@127.0.0.1:{port}"));

    let mut conn = Connection::connect(&host, port).await.expect("connects");
    let err = conn.command(&["PING"]).await.expect_err("default user off");
    assert!(
        matches!(&err, Error::Server(m) if m.starts_with("NOAUTH")),
        "{err}"
    );
    let err = conn
        .command(&["AUTH", "app", "wrong"])
        .await
        .expect_err("wrong password");
    assert!(
        matches!(&err, Error::Server(m) if m.starts_with("WRONGPASS")),
        "{err}"
    );
    let err = conn
        .command(&["AUTH", "default", ""])
        .await
        .expect_err("default user is off");
    assert!(
        matches!(&err, Error::Server(m) if m.starts_with("WRONGPASS")),
        "{err}"
    );
    conn.command(&["AUTH", "app", "secret"])
        .await
        .expect("AUTH as app");
    let whoami = conn.command(&["ACL", "WHOAMI"]).await.expect("WHOAMI");
    assert_eq!(text(&whoami), "app");
    // +@all ~* &*: admin commands, keys and channels.
    conn.command(&["SET", "k", "v"]).await.expect("SET");
    conn.command(&["CONFIG", "GET", "maxmemory"])
        .await
        .expect("CONFIG");
    conn.command(&["PUBLISH", "ch", "hi"])
        .await
        .expect("PUBLISH");

    let whoami = server
        .command(&["ACL", "WHOAMI"])
        .await
        .expect("server.command authenticates as app");
    assert_eq!(text(&whoami), "app");
}

#[tokio::test]
async fn acl_user_with_password_keeps_default_user_behind_the_password() {
    let server = RedisServer::builder()
        .password("pw")
        .acl_user("app", "secret")
        .start()
        .await
        .expect("server starts");
    let (host, port) = server.host_port();
    let mut conn = Connection::connect(&host, port).await.expect("connects");
    conn.command(&["AUTH", "pw"])
        .await
        .expect("default user with the password");
    conn.command(&["AUTH", "app", "secret"])
        .await
        .expect("ACL user");
}

#[tokio::test]
async fn tls_only_server_speaks_tls_with_the_generated_ca() {
    let server = RedisServer::builder()
        .tls()
        .start()
        .await
        .expect("server starts");
    let (_, port) = server.host_port();
    assert_eq!(server.url(), format!("rediss://127.0.0.1:{port}"));
    let ca = server.tls_ca_path().expect("a CA for a TLS server");
    let pem = std::fs::read_to_string(ca).expect("CA file");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(ca.starts_with(server.dir()));

    let port_arg = port.to_string();
    let (ok, out) = redis_cli(&[
        "--tls",
        "--cacert",
        &ca.display().to_string(),
        "-h",
        "127.0.0.1",
        "-p",
        &port_arg,
        "PING",
    ]);
    assert!(ok && out == "PONG", "redis-cli over TLS: {out}");
    // The certificate names localhost too.
    let (ok, out) = redis_cli(&[
        "--tls",
        "--cacert",
        &ca.display().to_string(),
        "-h",
        "localhost",
        "-p",
        &port_arg,
        "PING",
    ]);
    assert!(
        ok && out == "PONG",
        "redis-cli over TLS to localhost: {out}"
    );
    let mut args = server.redis_cli_args();
    args.push("PING".into());
    assert_eq!(redis_cli(&args), (true, "PONG".to_owned()));

    // Without TLS nothing answers.
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        let mut conn = Connection::connect("127.0.0.1", port).await?;
        conn.command(&["PING"]).await
    })
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "a plain-text PING must not be answered: {plain:?}"
    );
    let err = server.connect().await.expect_err("plain client on TLS");
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}

#[tokio::test]
async fn appendonly_data_survives_kill_and_restart() {
    let mut server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .expect("server starts");
    let port = server.host_port().1;
    server
        .command(&["SET", "durable", "yes"])
        .await
        .expect("SET");
    let fsync = server
        .command(&["CONFIG", "GET", "appendfsync"])
        .await
        .expect("CONFIG GET");
    assert_eq!(text(&fsync.as_array().expect("array")[1]), "always");

    server.kill();
    assert!(ping(&server).await.is_err(), "a killed server answers");
    server.restart().await.expect("restarts");
    assert_eq!(server.host_port().1, port, "same port after restart");
    let value = server.command(&["GET", "durable"]).await.expect("GET");
    assert_eq!(text(&value), "yes", "log:\n{}", server.log());
}

#[tokio::test]
async fn restart_without_persistence_starts_empty_on_the_same_port() {
    let mut server = RedisServer::builder()
        .persistence(Persistence::None)
        .start()
        .await
        .expect("server starts");
    let save = server
        .command(&["CONFIG", "GET", "save"])
        .await
        .expect("CONFIG GET");
    assert_eq!(text(&save.as_array().expect("array")[1]), "");
    let port = server.host_port().1;
    server.command(&["SET", "k", "v"]).await.expect("SET");
    // Restarting a running server kills it first.
    server.restart().await.expect("restarts");
    assert_eq!(server.host_port().1, port);
    let value = server.command(&["GET", "k"]).await.expect("GET");
    assert_eq!(value, Value::Nil);
}

#[tokio::test]
async fn default_snapshots_take_none_before_a_kill() {
    let mut server = RedisServer::start().await.expect("server starts");
    server.command(&["SET", "k", "v"]).await.expect("SET");
    server.kill();
    server.restart().await.expect("restarts");
    let value = server.command(&["GET", "k"]).await.expect("GET");
    assert_eq!(value, Value::Nil, "no snapshot falls due within a test");
}

#[tokio::test]
async fn killed_server_refuses_connections() {
    let mut server = RedisServer::start().await.expect("server starts");
    let pid = server.pid().expect("running");
    server.kill();
    assert!(server.pid().is_none());
    assert!(!process_exists(pid), "SIGKILL + wait leaves no process");
    let err = ping(&server).await.expect_err("nothing listens");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    server.kill(); // A second kill is a no-op.
}

#[tokio::test]
async fn paused_server_does_not_answer_until_resumed() {
    let server = RedisServer::start().await.expect("server starts");
    server.pause();
    let paused = tokio::time::timeout(Duration::from_millis(500), ping(&server)).await;
    assert!(paused.is_err(), "a paused server answered: {paused:?}");
    server.resume();
    let pong = tokio::time::timeout(Duration::from_secs(5), ping(&server))
        .await
        .expect("answers after resume")
        .expect("PING");
    assert_eq!(text(&pong), "PONG");
}

#[tokio::test]
async fn options_reach_the_server() {
    let server = RedisServer::builder()
        .maxmemory_policy("allkeys-lru")
        .arg("--maxmemory", "10mb")
        .args(
            "--client-output-buffer-limit",
            ["pubsub", "1mb", "1mb", "60"],
        )
        .start()
        .await
        .expect("server starts");
    let policy = server
        .command(&["CONFIG", "GET", "maxmemory-policy"])
        .await
        .expect("CONFIG GET");
    assert_eq!(text(&policy.as_array().expect("array")[1]), "allkeys-lru");
    let maxmemory = server
        .command(&["CONFIG", "GET", "maxmemory"])
        .await
        .expect("CONFIG GET");
    assert_eq!(text(&maxmemory.as_array().expect("array")[1]), "10485760");
}

/// Writes of 128 KiB that make 10 MiB.
const WRITES: i64 = 80;

/// A server bounded to 5 MiB with `policy`, and what `overfill` of 10 MiB in values of
/// 128 KiB did to it: the writes refused and `evicted_keys`.
async fn overfilled(policy: &str) -> (RedisServer, u64, u64) {
    let server = RedisServer::builder()
        .arg("--maxmemory", "5mb")
        .maxmemory_policy(policy)
        .start()
        .await
        .expect("server starts");
    assert_eq!(
        server
            .info_field("memory", "maxmemory_policy")
            .await
            .expect("INFO memory"),
        policy
    );
    let refused = server
        .overfill(10 << 20, 128 << 10)
        .await
        .expect("every write taken or refused for space");
    let evicted = server
        .info_field("stats", "evicted_keys")
        .await
        .expect("INFO stats")
        .parse()
        .expect("a count");
    (server, refused, evicted)
}

#[tokio::test]
async fn overfilling_an_evicting_server_evicts_and_refuses_nothing() {
    let (server, refused, evicted) = overfilled("allkeys-lru").await;
    assert_eq!(refused, 0, "an evicting server takes every write");
    assert!(evicted > 0, "10 MiB into 5 MiB evicted keys");
    let keys = server.command(&["DBSIZE"]).await.expect("DBSIZE");
    assert_eq!(
        keys.as_int(),
        Some(WRITES - i64::try_from(evicted).expect("a small count")),
        "every filler key but those evicted"
    );
    let used: u64 = server
        .info_field("memory", "used_memory")
        .await
        .expect("INFO memory")
        .parse()
        .expect("bytes");
    assert!(
        used <= (5 << 20) + (128 << 10),
        "within the bound, but for the last value: {used}"
    );
}

#[tokio::test]
async fn overfilling_a_noeviction_server_refuses_writes() {
    let (server, refused, evicted) = overfilled("noeviction").await;
    assert!(
        refused > 0 && i64::try_from(refused).is_ok_and(|r| r < WRITES),
        "the first writes fit, the last are refused: {refused}"
    );
    assert_eq!(evicted, 0, "noeviction evicts nothing");
    let keys = server.command(&["DBSIZE"]).await.expect("DBSIZE");
    assert_eq!(
        keys.as_int(),
        Some(WRITES - i64::try_from(refused).expect("a small count")),
        "every write not refused was kept"
    );
}

#[tokio::test]
async fn overfill_and_info_field_on_an_unbounded_server() {
    let server = RedisServer::start().await.expect("server starts");
    let err = server
        .overfill(1024, 0)
        .await
        .expect_err("values of no bytes");
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert_eq!(
        server
            .overfill(1000, 300)
            .await
            .expect("an unbounded server"),
        0
    );
    let keys = server.command(&["DBSIZE"]).await.expect("DBSIZE");
    assert_eq!(keys.as_int(), Some(4), "1000 bytes in values of 300: four");
    let err = server
        .info_field("stats", "no_such_field")
        .await
        .expect_err("no such field");
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("no_such_field")),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_option_fails_with_the_server_output() {
    let err = RedisServer::builder()
        .arg("--no-such-option", "1")
        .start()
        .await
        .expect_err("bad option");
    let message = err.to_string();
    assert!(matches!(err, Error::Start { .. }), "{message}");
    assert!(message.contains("no-such-option"), "{message}");
}

#[test]
fn not_installed_error_says_how_to_install() {
    assert_eq!(
        Error::NotInstalled.to_string(),
        "redis-server not found on PATH; run scripts/test, which installs it \
         (apt-get install redis-server)"
    );
}

#[tokio::test]
async fn dropping_a_server_kills_it_and_removes_its_directory() {
    let server = RedisServer::start().await.expect("server starts");
    let pid = server.pid().expect("running");
    let dir = server.dir().to_path_buf();
    assert!(process_exists(pid));
    drop(server);
    assert!(
        !process_exists(pid),
        "redis-server {pid} outlived its handle"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[tokio::test]
async fn a_panicking_test_leaves_no_server_behind() {
    let (tx, rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        let server = RedisServer::start().await.expect("server starts");
        tx.send(server.pid().expect("running")).expect("send pid");
        server.pause(); // A stopped process must die too.
        panic!("deliberate panic with a live server");
    });
    let result = task.await;
    assert!(result.expect_err("the task panicked").is_panic());
    let pid = rx.recv().expect("pid");
    assert!(!process_exists(pid), "redis-server {pid} survived a panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_servers_start_at_once_on_distinct_ports() {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        set.spawn(RedisServer::start());
    }
    let mut servers = Vec::new();
    while let Some(started) = set.join_next().await {
        servers.push(started.expect("task").expect("server starts"));
    }
    let mut ports: Vec<u16> = servers.iter().map(|s| s.host_port().1).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 8);
    for server in &servers {
        assert_eq!(text(&ping(server).await.expect("PING")), "PONG");
    }
}

#[tokio::test]
async fn cluster_serves_all_slots_and_redirects() {
    let cluster = RedisCluster::start().await.expect("cluster starts");
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 3);
    let ports: Vec<u16> = nodes.iter().map(|n| n.host_port().1).collect();
    assert_eq!(
        cluster.url(),
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            ports[0], ports[1], ports[2]
        )
    );
    assert_eq!(
        cluster.node_urls(),
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
    );
    for node in nodes {
        let info = node
            .command(&["CLUSTER", "INFO"])
            .await
            .expect("CLUSTER INFO");
        let info = text(&info);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_ok:16384"), "{info}");
    }

    let (p1, p2, p3) = (
        ports[0].to_string(),
        ports[1].to_string(),
        ports[2].to_string(),
    );
    let (ok, out) = redis_cli(&["-c", "-p", &p1, "SET", "{a}x", "1"]);
    assert!(ok && out == "OK", "SET via node 1: {out}");
    let (ok, out) = redis_cli(&["-c", "-p", &p2, "GET", "{a}x"]);
    assert!(ok && out == "1", "GET via node 2: {out}");
    let (ok, out) = redis_cli(&["-c", "-p", &p3, "GET", "{a}x"]);
    assert!(ok && out == "1", "GET via node 3: {out}");

    let pids: Vec<u32> = nodes.iter().map(|n| n.pid().expect("running")).collect();
    drop(cluster);
    for pid in pids {
        assert!(
            !process_exists(pid),
            "cluster node {pid} outlived the cluster"
        );
    }
}

#[tokio::test]
async fn sentinel_reports_the_master_and_fails_over_to_the_replica() {
    let mut setup = RedisSentinel::start().await.expect("sentinel setup starts");
    let master_port = setup.master().host_port().1;
    let replica_port = setup.replica().host_port().1;
    let sentinel_port = setup.sentinel().host_port().1;
    assert_eq!(
        setup.url(),
        format!("redis+sentinel://127.0.0.1:{sentinel_port}/mymaster")
    );
    assert_eq!(
        setup.master_addr().await.expect("master addr"),
        ("127.0.0.1".to_owned(), master_port)
    );

    // Writes to the master reach the replica.
    setup
        .master()
        .command(&["SET", "k", "v"])
        .await
        .expect("SET");
    let replica_port_arg = replica_port.to_string();
    let mut replicated = false;
    for _ in 0..100 {
        if redis_cli(&["-p", &replica_port_arg, "GET", "k"]).1 == "v" {
            replicated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replicated, "the replica never saw the write");

    setup.failover().await.expect("failover");
    assert_eq!(
        setup.master_addr().await.expect("master addr"),
        ("127.0.0.1".to_owned(), replica_port)
    );
    assert_eq!(setup.master().host_port().1, replica_port);
    assert_eq!(setup.replica().host_port().1, master_port);
    let info = setup
        .master()
        .command(&["INFO", "replication"])
        .await
        .expect("INFO");
    assert!(text(&info).contains("role:master"), "{}", text(&info));
    setup
        .master()
        .command(&["SET", "after", "failover"])
        .await
        .expect("the new master takes writes");
    let info = setup
        .replica()
        .command(&["INFO", "replication"])
        .await
        .expect("INFO");
    assert!(text(&info).contains("role:slave"), "{}", text(&info));
}
