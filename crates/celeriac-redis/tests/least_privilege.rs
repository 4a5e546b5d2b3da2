//! The least-privilege ACL (`celeriac_redis::acl`) against real `redis-server` processes the
//! testkit starts: the whole conformance suite runs as a user with exactly those rights (the
//! default user off), and afterwards the server's `ACL LOG` shows nothing refused but the
//! `CONFIG GET` of the checks at start; the eviction and persistence checks pass through `INFO`
//! on a noeviction server with the append-only file, without any `allow_*` flag, and refuse an
//! evicting one; a Cluster and a Sentinel-watched master serve queues under the same rights;
//! two applications with different key prefixes on one Redis neither see nor purge each
//! other's queues, each with its own user and with one shared unrestricted user.

use celeriac::backend::JobQuery;
use celeriac::clock::StoreClock;
use celeriac::{
    App, Clock, Enqueue, JobId, JobState, ProcessRegistry, QueueAdmin, ResultStore, TaskError,
    WorkerConfig,
};
use celeriac_conformance::{suite, Guarded};
use celeriac_redis::{acl, RedisBackend};
use celeriac_testkit::{Persistence, RedisCluster, RedisSentinel, RedisServer};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The application's user (rights: `acl::rules(prefix)`).
const USER: &str = "celeriac";
const PASSWORD: &str = "lp-s3cret";
/// A second user with every right, never given to an application: it only reads `ACL LOG`.
const AUDITOR: &str = "auditor";
const AUDITOR_PASSWORD: &str = "audit-s3cret";
const AUDIT: Option<(&str, &str)> = Some((AUDITOR, AUDITOR_PASSWORD));
/// The queue both applications of the isolation test use.
const SHARED: &str = "shared";

/// Returns its argument.
#[celeriac::task(name = "lp.echo", queue = "shared", retries = 3)]
async fn echo(n: u32) -> u32 {
    n
}
use echo::Task as Echo;

/// Fails with no retries left: a dead letter.
#[celeriac::task(name = "lp.doomed", queue = "shared", retries = 0)]
async fn doomed(n: u32) -> Result<u32, TaskError> {
    Err(TaskError::msg(format!("job {n} is doomed")))
}
use doomed::Task as Doomed;

// Servers and their checks.

/// A server whose only user a client can act as (the default user is off) is [`USER`] with the
/// least-privilege rules for `prefix`, persisting with the append-only file; `policy` sets
/// `maxmemory-policy`. The [`AUDITOR`] exists to read `ACL LOG`.
async fn restricted_server(prefix: &str, policy: Option<&str>) -> RedisServer {
    let mut builder = RedisServer::builder()
        .acl_user(USER, PASSWORD)
        .acl_rules(acl::rules(prefix))
        .persistence(Persistence::AofEverySec)
        .args(
            "--user",
            [
                AUDITOR.to_string(),
                "on".to_string(),
                format!(">{AUDITOR_PASSWORD}"),
                "~*".to_string(),
                "&*".to_string(),
                "+@all".to_string(),
            ],
        );
    if let Some(policy) = policy {
        builder = builder.maxmemory_policy(policy);
    }
    let server = builder.start().await.expect("redis-server starts");
    assert!(server.url().starts_with(&format!("redis://{USER}:")));
    assert_user_is_restricted(&server, prefix).await;
    // What the test refuses from here on is the application's doing.
    acl_log_reset(&server, AUDIT);
    server
}

/// Preconditions: the URL's user may not run `CONFIG GET` (NOPERM, so the checks must use
/// `INFO`), `KEYS`, `FLUSHALL`, nor touch a key outside its prefix; and without credentials
/// nothing is allowed (the default user is off).
async fn assert_user_is_restricted(server: &RedisServer, prefix: &str) {
    let refused = |args: &'static [&'static str]| async move {
        match server.command(args).await {
            Err(celeriac_testkit::Error::Server(msg)) => msg,
            other => panic!("{args:?} should be refused to the least-privilege user: {other:?}"),
        }
    };
    for args in [
        &["CONFIG", "GET", "maxmemory-policy"][..],
        &["KEYS", "*"],
        &["FLUSHALL"],
        &["GET", "outside-the-prefix"],
    ] {
        let msg = refused(args).await;
        assert!(msg.starts_with("NOPERM"), "{args:?}: {msg}");
    }
    let own_key = format!("{prefix}:probe");
    server
        .command(&["GET", own_key.as_str()])
        .await
        .expect("a key under the prefix may be read");
    let (host, port) = server.host_port();
    let mut anonymous = celeriac_testkit::resp::Connection::connect(&host, port)
        .await
        .expect("connect");
    match anonymous.command(&["PING"]).await {
        Err(celeriac_testkit::Error::Server(msg)) => {
            assert!(msg.starts_with("NOAUTH"), "{msg}")
        }
        other => panic!("the default user must be off: PING without credentials gave {other:?}"),
    }
}

/// The entries of the server's `ACL LOG`, read as `as_user` (user, password; `None`: the
/// default user): `reason object (context)` each, e.g. `command config|get (toplevel)`.
fn acl_log(server: &RedisServer, as_user: Option<(&str, &str)>) -> Vec<String> {
    let text = acl_log_command(server, as_user, &["1000"]);
    let lines: Vec<&str> = text.lines().collect();
    let field = |from: usize, name: &str| -> String {
        lines[from..]
            .iter()
            .position(|l| *l == name)
            .and_then(|i| lines.get(from + i + 1))
            .map_or_else(String::new, |v| (*v).to_string())
    };
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| **l == "count")
        .map(|(i, _)| {
            format!(
                "{} {} ({})",
                field(i, "reason"),
                field(i, "object"),
                field(i, "context")
            )
        })
        .collect()
}

/// `ACL LOG <args>` through `redis-cli`, as `as_user`: its output.
fn acl_log_command(server: &RedisServer, as_user: Option<(&str, &str)>, args: &[&str]) -> String {
    let (host, port) = server.host_port();
    let mut cmd = std::process::Command::new("redis-cli");
    cmd.args(["-h", host.as_str(), "-p", &port.to_string()]);
    if let Some((user, password)) = as_user {
        cmd.args(["--user", user, "--pass", password, "--no-auth-warning"]);
    }
    let out = cmd
        .args(["ACL", "LOG"])
        .args(args)
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !text.starts_with("NOPERM") && !text.starts_with("NOAUTH"),
        "ACL LOG {args:?}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Empties the server's `ACL LOG`, as `as_user` (as in [`acl_log`]).
fn acl_log_reset(server: &RedisServer, as_user: Option<(&str, &str)>) {
    assert_eq!(acl_log_command(server, as_user, &["RESET"]).trim(), "OK");
}

/// Fails unless everything the server refused was a `CONFIG GET` (the checks at start try it
/// before `INFO`) or `CLIENT SETINFO` (sent by the client at connect to Redis 7.2 and later,
/// its refusal ignored).
fn assert_nothing_else_refused(entries: &[String]) {
    let unexpected: Vec<&String> = entries
        .iter()
        .filter(|e| {
            *e != "command config|get (toplevel)" && *e != "command client|setinfo (toplevel)"
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "the least-privilege user was refused something Celeriac needs: {unexpected:?}"
    );
}

/// A least-privilege server that, when the test ends without a panic, fails it if Redis
/// refused the application anything but `CONFIG GET`.
#[derive(Debug)]
struct Audited(RedisServer);

impl Drop for Audited {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_nothing_else_refused(&acl_log(&self.0, AUDIT));
        }
    }
}

// 1. The conformance suite under the least-privilege user.

async fn least_privilege() -> Result<Guarded<RedisBackend, Audited>, Box<dyn std::error::Error>> {
    let server = restricted_server("celeriac", None).await;
    // No allow_* flag: the checks must pass through INFO.
    let backend = RedisBackend::connect(&server.url()).await?;
    Ok(Guarded {
        backend,
        guard: Audited(server),
    })
}

suite!(redis_least_privilege, least_privilege());

// 2. The checks at start through INFO.

fn app_builder(url: &str) -> celeriac::AppBuilder {
    App::builder().url(url).task::<Echo>().task::<Doomed>()
}

async fn app(url: &str) -> App {
    app_builder(url)
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

fn worker_config(id: &str, queues: &[&str]) -> WorkerConfig {
    WorkerConfig {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        concurrency: 4,
        prefetch: 4,
        lease: Duration::from_secs(10),
        heartbeat: Duration::from_secs(2),
        poll_interval: Duration::from_millis(50),
        grace_period: Duration::from_secs(5),
        worker_id: id.to_string(),
        registry_refresh: Duration::from_millis(200),
        ..WorkerConfig::default()
    }
}

/// Runs a worker until one job finishes and checks its result (the wait is woken by the
/// completion channel).
async fn round_trip(app: &App) {
    let worker = app.worker().config(worker_config("round-trip", &[SHARED]));
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());
    let handle = app.client().enqueue::<Echo>(42).await.expect("enqueue");
    let info = handle
        .wait(Duration::from_secs(30))
        .await
        .expect("the job finishes");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.result_as::<u32>().expect("result decodes"), Some(42));
    shutdown.graceful();
    run.await.expect("worker task").expect("worker ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noeviction_redis_with_aof_starts_without_any_allow_flag() {
    let server = restricted_server("celeriac", None).await;
    let url = server.url();
    assert!(!url.contains("allow_"), "{url}");
    let app = app(&url).await;
    round_trip(&app).await;
    let log = acl_log(&server, AUDIT);
    assert!(
        log.iter().any(|e| e == "command config|get (toplevel)"),
        "the checks tried CONFIG GET first and were refused: {log:?}"
    );
    assert_nothing_else_refused(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_refused_through_info_and_allow_eviction_skips_only_that() {
    let server = restricted_server("celeriac", Some("allkeys-lru")).await;
    let msg = match RedisBackend::connect(&server.url()).await {
        Ok(b) => panic!("an allkeys-lru Redis must be refused: {b:?}"),
        Err(e) => e.to_string(),
    };
    for needle in ["maxmemory-policy", "allkeys-lru", "allow_eviction"] {
        assert!(
            msg.contains(needle),
            "the error should name {needle}: {msg}"
        );
    }
    assert!(!msg.contains(PASSWORD), "{msg}");
    // The policy was read through INFO: CONFIG GET was refused.
    assert!(acl_log(&server, AUDIT)
        .iter()
        .any(|e| e == "command config|get (toplevel)"));

    let url = format!("{}?allow_eviction=true", server.url());
    let app = app(&url).await;
    round_trip(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_config_is_an_unknown_command_the_policy_is_read_from_info() {
    // `rename-command CONFIG ""`, as on some managed services.
    let start = |policy: &str| {
        RedisServer::builder()
            .persistence(Persistence::AofEverySec)
            .maxmemory_policy(policy)
            .args("--rename-command", ["CONFIG", ""])
            .start()
    };
    let safe = start("noeviction").await.expect("redis-server starts");
    match safe.command(&["CONFIG", "GET", "maxmemory-policy"]).await {
        Err(celeriac_testkit::Error::Server(msg)) => {
            assert!(msg.contains("unknown command"), "{msg}")
        }
        other => panic!("CONFIG should be unknown: {other:?}"),
    }
    RedisBackend::connect(&safe.url())
        .await
        .expect("noeviction and the AOF, read from INFO: no allow_* flag needed");
    let evicting = start("volatile-lru").await.expect("redis-server starts");
    let msg = match RedisBackend::connect(&evicting.url()).await {
        Ok(b) => panic!("a volatile-lru Redis must be refused: {b:?}"),
        Err(e) => e.to_string(),
    };
    for needle in ["maxmemory-policy", "volatile-lru", "allow_eviction"] {
        assert!(
            msg.contains(needle),
            "the error should name {needle}: {msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_info_the_checks_say_what_to_grant_or_allow() {
    let rules: Vec<String> = acl::rules("celeriac")
        .into_iter()
        .filter(|r| r != "+info")
        .collect();
    assert!(rules.len() + 1 == acl::rules("celeriac").len());
    let server = RedisServer::builder()
        .acl_user(USER, PASSWORD)
        .acl_rules(rules)
        .persistence(Persistence::AofEverySec)
        .start()
        .await
        .expect("redis-server starts");
    let msg = match RedisBackend::connect(&server.url()).await {
        Ok(b) => panic!("without CONFIG and INFO the policy cannot be read: {b:?}"),
        Err(e) => e.to_string(),
    };
    for needle in ["maxmemory-policy", "INFO", "allow_eviction"] {
        assert!(
            msg.contains(needle),
            "the error should name {needle}: {msg}"
        );
    }
    let msg = match RedisBackend::connect(&format!("{}?allow_eviction=true", server.url())).await {
        Ok(b) => panic!("without CONFIG and INFO persistence cannot be read: {b:?}"),
        Err(e) => e.to_string(),
    };
    for needle in ["persists", "INFO", "allow_volatile"] {
        assert!(
            msg.contains(needle),
            "the error should name {needle}: {msg}"
        );
    }
}

// 3. A Cluster under the same rights.

/// The index of the cluster node serving the slot of `key`.
async fn node_of(cluster: &RedisCluster, key: &str) -> usize {
    let slot = cluster.nodes()[0]
        .command(&["CLUSTER", "KEYSLOT", key])
        .await
        .expect("CLUSTER KEYSLOT")
        .as_int()
        .expect("a slot number");
    match slot {
        0..=5460 => 0,
        5461..=10922 => 1,
        _ => 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_queues_on_every_node_under_the_least_privilege_user() {
    let cluster = RedisCluster::start().await.expect("cluster starts");
    let setuser = acl::setuser_args(USER, PASSWORD, "celeriac");
    let setuser: Vec<&str> = setuser.iter().map(String::as_str).collect();
    for node in cluster.nodes() {
        node.command(&setuser)
            .await
            .expect("ACL SETUSER is accepted");
        node.command(&["CONFIG", "SET", "appendonly", "yes"])
            .await
            .expect("AOF on");
    }
    let url = cluster
        .url()
        .replacen("://", &format!("://{USER}:{PASSWORD}@"), 1);
    // Precondition: that user may not read the configuration.
    let (host, port) = cluster.nodes()[0].host_port();
    let mut conn = celeriac_testkit::resp::Connection::connect(&host, port)
        .await
        .expect("connect");
    conn.command(&["AUTH", USER, PASSWORD]).await.expect("AUTH");
    match conn.command(&["CONFIG", "GET", "maxmemory-policy"]).await {
        Err(celeriac_testkit::Error::Server(msg)) => assert!(msg.starts_with("NOPERM"), "{msg}"),
        other => panic!("CONFIG GET should be refused: {other:?}"),
    }

    let queues = ["alpha", "beta"];
    let ready = |q: &str| format!("celeriac:{{{q}}}:ready");
    let homes = [
        node_of(&cluster, &ready(queues[0])).await,
        node_of(&cluster, &ready(queues[1])).await,
    ];
    assert_ne!(
        homes[0], homes[1],
        "the queues must hash to different nodes"
    );

    let app = app(&url).await;
    let now = app.client().now();
    let jobs = queues
        .iter()
        .flat_map(|q| (0..20u32).map(move |i| (q, i)))
        .map(|(q, i)| {
            Enqueue::<Echo>::new(i)
                .queue(*q)
                .build(now)
                .expect("builds")
        })
        .collect();
    let handles = app.client().push(jobs).await.expect("enqueue");
    let worker = app.worker().config(worker_config("cluster", &queues));
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());
    for h in &handles {
        let info = h.wait(Duration::from_secs(60)).await.expect("finishes");
        assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    }
    shutdown.graceful();
    run.await.expect("worker task").expect("worker ran");
    for (i, node) in cluster.nodes().iter().enumerate() {
        let log = acl_log(node, None);
        assert_nothing_else_refused(&log);
        if homes.contains(&i) {
            assert!(
                log.iter().any(|e| e == "command config|get (toplevel)"),
                "node {i} was checked through INFO: {log:?}"
            );
        }
    }
}

// 4. Sentinel under the same rights.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_finds_the_master_for_the_least_privilege_user() {
    let mut setup = RedisSentinel::start().await.expect("sentinel setup starts");
    let setuser = acl::setuser_args(USER, PASSWORD, "celeriac");
    let setuser: Vec<&str> = setuser.iter().map(String::as_str).collect();
    for master in [true, false] {
        let node = if master {
            setup.master()
        } else {
            setup.replica()
        };
        node.command(&setuser)
            .await
            .expect("ACL SETUSER is accepted");
        node.command(&["CONFIG", "SET", "appendonly", "yes"])
            .await
            .expect("AOF on");
        acl_log_reset(node, None);
    }
    let url = setup
        .url()
        .replacen("://", &format!("://{USER}:{PASSWORD}@"), 1);
    let app = app(&url).await;
    round_trip(&app).await;
    let log = acl_log(setup.master(), None);
    assert!(
        log.iter().any(|e| e == "command config|get (toplevel)"),
        "the master was checked through INFO: {log:?}"
    );
    // The client asks the master its ROLE first and reads INFO replication when refused.
    let log: Vec<String> = log
        .into_iter()
        .filter(|e| e != "command role (toplevel)")
        .collect();
    assert_nothing_else_refused(&log);
}

// 5. Two prefixes on one Redis.

/// The ids of the jobs `app` lists in `state` in the shared queue (one page is enough).
async fn listed(app: &App, state: JobState) -> BTreeSet<JobId> {
    let page = app
        .backend()
        .list_jobs(JobQuery::new(SHARED, state), None, 1000)
        .await
        .expect("list_jobs");
    assert!(page.next.is_none(), "one page holds them all");
    page.jobs.iter().map(|j| j.job.id).collect()
}

async fn count(app: &App, state: JobState) -> u64 {
    app.backend()
        .stats()
        .await
        .expect("stats")
        .iter()
        .filter(|q| q.queue == SHARED)
        .map(|q| q.count(state))
        .sum()
}

async fn dead(app: &App) -> BTreeSet<JobId> {
    app.backend()
        .dead_letters(None, 1000, 0)
        .await
        .expect("dead_letters")
        .iter()
        .map(|j| j.job.id)
        .collect()
}

async fn live_workers(app: &App) -> Vec<String> {
    let clock = app.backend().fleet_clock();
    let now = clock.now_ms();
    app.backend()
        .processes(now)
        .await
        .expect("processes")
        .into_iter()
        .map(|p| p.id)
        .collect()
}

async fn enqueue<T: celeriac::Task<Args = u32>>(app: &App, n: u32) -> BTreeSet<JobId> {
    let handles = app.client().enqueue_many::<T>(0..n).await.expect("enqueue");
    handles.iter().map(|h| h.id()).collect()
}

/// Applications A and B, on `url_a` and `url_b` (different prefixes, one Redis), use a queue
/// of the same name: neither sees the other's jobs, dead letters, counts, pages or workers, and
/// purging A's queue and dead letters leaves B's intact.
async fn prefixes_are_isolated(url_a: &str, url_b: &str) {
    let (a, b) = (app(url_a).await, app(url_b).await);

    // Dead letters (1 in A, 2 in B), made by each application's own worker.
    let dead_a = enqueue::<Doomed>(&a, 1).await;
    let dead_b = enqueue::<Doomed>(&b, 2).await;
    let workers: Vec<_> = [(&a, "worker-a"), (&b, "worker-b")]
        .into_iter()
        .map(|(app, id)| {
            let w = app.worker().config(worker_config(id, &[SHARED]));
            (w.shutdown_handle(), tokio::spawn(w.run()))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (da, db) = (dead(&a).await, dead(&b).await);
        let (wa, wb) = (live_workers(&a).await, live_workers(&b).await);
        if da == dead_a && db == dead_b && !wa.is_empty() && !wb.is_empty() {
            assert_eq!(wa, ["worker-a"], "A lists only its own worker");
            assert_eq!(wb, ["worker-b"], "B lists only its own worker");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead letters A {da:?} (want {dead_a:?}), B {db:?} (want {dead_b:?}); \
             workers A {wa:?}, B {wb:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (shutdown, run) in workers {
        shutdown.graceful();
        run.await.expect("worker task").expect("worker ran");
    }

    // Pending jobs (3 in A, 5 in B), with no worker running.
    let pending_a = enqueue::<Echo>(&a, 3).await;
    let pending_b = enqueue::<Echo>(&b, 5).await;
    // Both really exist, each where its application looks.
    assert_eq!(count(&a, JobState::Pending).await, 3);
    assert_eq!(count(&b, JobState::Pending).await, 5);
    assert_eq!(count(&a, JobState::Dead).await, 1);
    assert_eq!(count(&b, JobState::Dead).await, 2);
    assert_eq!(listed(&a, JobState::Pending).await, pending_a);
    assert_eq!(listed(&b, JobState::Pending).await, pending_b);
    assert_eq!(listed(&a, JobState::Dead).await, dead_a);
    assert_eq!(listed(&b, JobState::Dead).await, dead_b);
    assert_eq!(dead(&a).await, dead_a);
    assert_eq!(dead(&b).await, dead_b);
    for (app, own, other) in [(&a, &pending_a, &pending_b), (&b, &pending_b, &pending_a)] {
        for id in own {
            assert!(app.backend().get(*id).await.expect("get").is_some());
        }
        for id in other {
            assert!(
                app.backend().get(*id).await.expect("get").is_none(),
                "job {id} of the other application is visible"
            );
        }
    }

    // Purging A's queue and dead letters leaves B's.
    assert_eq!(a.backend().purge(SHARED).await.expect("purge"), 3);
    assert_eq!(
        a.backend()
            .purge_dead(Some(SHARED.to_string()))
            .await
            .expect("purge_dead"),
        1
    );
    assert_eq!(count(&a, JobState::Pending).await, 0);
    assert_eq!(count(&a, JobState::Dead).await, 0);
    assert_eq!(
        count(&b, JobState::Pending).await,
        5,
        "B's queue was purged"
    );
    assert_eq!(
        count(&b, JobState::Dead).await,
        2,
        "B's dead letters were purged"
    );
    assert_eq!(listed(&b, JobState::Pending).await, pending_b);
    assert_eq!(dead(&b).await, dead_b);
    // And the other way round.
    assert_eq!(b.backend().purge(SHARED).await.expect("purge"), 5);
    assert_eq!(count(&b, JobState::Pending).await, 0);
}

/// A server whose ACL user has every right (the default user off): it creates the
/// applications' users.
async fn admin_server() -> RedisServer {
    RedisServer::builder()
        .acl_user("admin", "admin-s3cret")
        .persistence(Persistence::AofEverySec)
        .start()
        .await
        .expect("redis-server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prefixes_each_with_its_own_user_cannot_see_or_purge_each_other() {
    let server = admin_server().await;
    let (_, port) = server.host_port();
    for (user, prefix) in [("app-a", "a"), ("app-b", "b")] {
        let args = acl::setuser_args(user, &format!("{user}-pw"), prefix);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server
            .command(&args)
            .await
            .expect("ACL SETUSER is accepted");
    }
    // Precondition: A's user may not even read B's keys.
    let mut conn = celeriac_testkit::resp::Connection::connect("127.0.0.1", port)
        .await
        .expect("connect");
    conn.command(&["AUTH", "app-a", "app-a-pw"])
        .await
        .expect("AUTH");
    match conn.command(&["ZCARD", "b:{shared}:ready"]).await {
        Err(celeriac_testkit::Error::Server(msg)) => assert!(msg.starts_with("NOPERM"), "{msg}"),
        other => panic!("A's user read B's key: {other:?}"),
    }
    prefixes_are_isolated(
        &format!("redis://app-a:app-a-pw@127.0.0.1:{port}?prefix=a"),
        &format!("redis://app-b:app-b-pw@127.0.0.1:{port}?prefix=b"),
    )
    .await;
    let log = acl_log(&server, Some(("admin", "admin-s3cret")));
    let probe = "key b:{shared}:ready (toplevel)";
    assert!(
        log.iter().any(|e| e == probe),
        "the refused read of B's key is logged: {log:?}"
    );
    let log: Vec<String> = log.into_iter().filter(|e| e != probe).collect();
    assert_nothing_else_refused(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prefixes_with_one_unrestricted_user_cannot_see_or_purge_each_other() {
    let server = admin_server().await;
    let url = server.url();
    prefixes_are_isolated(&format!("{url}?prefix=a"), &format!("{url}?prefix=b")).await;
}
