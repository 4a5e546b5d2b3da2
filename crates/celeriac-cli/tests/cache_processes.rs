//! Real processes sharing one cache L2: `celeriac bench cache` starts three processes that
//! each make 1,000 concurrent gets of one cold key at the same moment; the loader runs once
//! across all of them. On Redis (a server the testkit starts) and on a SQLite file.

mod common;

use celeriac_testkit::RedisServer;

fn stampede(url: &str) {
    let out = common::celeriac(
        url,
        &[
            "bench", "cache", "--gets", "2000", "--keys", "100", "--json",
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["stampede_processes"], 3, "{report}");
    assert_eq!(report["stampede_gets"], 1000, "{report}");
    assert_eq!(
        report["stampede_loader_calls"], 1,
        "3 processes × 1,000 gets of one cold key load it once: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_load_a_cold_key_once_on_redis() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    tokio::task::spawn_blocking(move || stampede(&url))
        .await
        .expect("joined");
}

#[test]
fn three_processes_load_a_cold_key_once_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    stampede(&common::url_in(dir.path()));
}
