//! Real worker processes (the `celeriac` binary) sharing one Redis the testkit starts: no job
//! runs twice while leases are valid, and a `kill -9` loses no job (only the jobs in flight at
//! the kill run again); `celeriac workers quiet|stop` reach them through the store.

mod common;

use celeriac_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_worker_processes_on_redis_never_run_the_same_job_twice() {
    let server = RedisServer::start().await.expect("redis-server starts");
    common::no_job_runs_twice(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_on_redis_loses_no_job_and_reruns_only_jobs_in_flight() {
    let server = RedisServer::start().await.expect("redis-server starts");
    common::kill_dash_nine_reruns_only_jobs_in_flight(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_on_redis_holds_across_worker_processes() {
    let server = RedisServer::start().await.expect("redis-server starts");
    common::rate_limit_holds_across_processes(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_of_1000_members_on_redis_runs_its_callback_once() {
    let server = RedisServer::start().await.expect("redis-server starts");
    common::chord_callback_runs_once_across_processes(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_quiet_and_stop_reach_worker_processes_on_redis() {
    let server = RedisServer::start().await.expect("redis-server starts");
    common::remote_control_quiets_and_stops_worker_processes(&server.url()).await;
}
