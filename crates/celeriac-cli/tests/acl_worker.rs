//! Real worker processes (the `celeriac` binary) on a Redis whose only user an application can
//! act as has the least-privilege rights of `celeriac::redis::acl` (the default user off): a
//! `kill -9` loses no job, a chord's callback runs once across processes, and `celeriac
//! workers quiet|stop` reach the workers, with no `allow_*` flag in the URL; the server's
//! `ACL LOG` shows nothing refused but the `CONFIG GET` the checks at start try before `INFO`.

mod common;

use celeriac::redis::acl;
use celeriac_testkit::{Persistence, RedisServer};

const USER: &str = "celeriac";
const PASSWORD: &str = "lp-s3cret";
/// A user with every right, never given to the workers: it reads and empties `ACL LOG`.
const AUDITOR: [&str; 2] = ["auditor", "audit-s3cret"];

/// A server with the least-privilege user for `prefix`, the append-only file, and the auditor.
async fn least_privilege_server(prefix: &str) -> RedisServer {
    let server = RedisServer::builder()
        .acl_user(USER, PASSWORD)
        .acl_rules(acl::rules(prefix))
        .persistence(Persistence::AofEverySec)
        .args(
            "--user",
            [
                AUDITOR[0].to_string(),
                "on".to_string(),
                format!(">{}", AUDITOR[1]),
                "~*".to_string(),
                "&*".to_string(),
                "+@all".to_string(),
            ],
        )
        .start()
        .await
        .expect("redis-server starts");
    // Precondition: the user cannot read the configuration, so the checks go through INFO.
    match server.command(&["CONFIG", "GET", "maxmemory-policy"]).await {
        Err(celeriac_testkit::Error::Server(msg)) => assert!(msg.starts_with("NOPERM"), "{msg}"),
        other => panic!("CONFIG GET should be refused to the least-privilege user: {other:?}"),
    }
    acl_log(&server, "RESET");
    server
}

/// `ACL LOG <arg>` as the auditor: `redis-cli`'s output, one value a line.
fn acl_log(server: &RedisServer, arg: &str) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
        .args([
            "--user",
            AUDITOR[0],
            "--pass",
            AUDITOR[1],
            "--no-auth-warning",
        ])
        .args(["ACL", "LOG", arg])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !text.starts_with("NOPERM"),
        "{text}"
    );
    text
}

/// Fails unless every command Redis refused the workers and the CLI was a `CONFIG GET` (or the
/// client's `CLIENT SETINFO` on Redis 7.2 and later), and no key or channel was refused.
fn assert_nothing_else_refused(server: &RedisServer) {
    let log = acl_log(server, "1000");
    let lines: Vec<&str> = log.lines().collect();
    let refused: Vec<String> = lines
        .windows(2)
        .filter(|w| w[0] == "object")
        .map(|w| w[1].to_string())
        .collect();
    assert!(
        refused.iter().any(|o| o == "config|get"),
        "the checks at start tried CONFIG GET: {log}"
    );
    let unexpected: Vec<&String> = refused
        .iter()
        .filter(|o| *o != "config|get" && *o != "client|setinfo")
        .collect();
    assert!(
        unexpected.is_empty(),
        "refused to the least-privilege user: {unexpected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_under_the_least_privilege_user_loses_no_job() {
    let server = least_privilege_server("celeriac").await;
    assert!(!server.url().contains('?'), "no allow_* flag");
    common::kill_dash_nine_reruns_only_jobs_in_flight(&server.url()).await;
    assert_nothing_else_refused(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_quiet_and_stop_reach_workers_of_a_prefix_under_its_own_user() {
    let server = least_privilege_server("ops").await;
    let url = format!("{}?prefix=ops", server.url());
    common::remote_control_quiets_and_stops_worker_processes(&url).await;
    assert_nothing_else_refused(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_under_the_least_privilege_user_runs_its_callback_once() {
    let server = least_privilege_server("celeriac").await;
    common::chord_callback_runs_once_across_processes(&server.url()).await;
    assert_nothing_else_refused(&server);
}
