//! Real worker processes sharing one SQLite file: no job runs twice while leases are valid,
//! and a `kill -9` loses no job (only the jobs in flight at the kill run again); `celeriac
//! workers quiet|stop` reach them through the store; `--max-jobs` bounds what one process runs.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_worker_processes_never_run_the_same_job_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::no_job_runs_twice(&format!(
        "sqlite://{}",
        dir.path().join("shared.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_job_and_reruns_only_jobs_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::kill_dash_nine_reruns_only_jobs_in_flight(&format!(
        "sqlite://{}",
        dir.path().join("kill.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_worker_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::rate_limit_holds_across_processes(&format!(
        "sqlite://{}",
        dir.path().join("limited.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_of_1000_members_runs_its_callback_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::chord_callback_runs_once_across_processes(&format!(
        "sqlite://{}",
        dir.path().join("chord.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_quiet_and_stop_reach_worker_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::remote_control_quiets_and_stops_worker_processes(&common::url_in(dir.path())).await;
}

/// `--max-jobs 7` with 20 jobs queued and 4 slots: the worker claims over several calls, runs
/// exactly 7, exits 0 by itself, and leaves the other 13 queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_max_jobs_runs_that_many_and_exits() {
    use celeriac::JobState;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = common::url_in(dir.path());
    let app = common::demo_app(&url).await;
    common::enqueue_emails(&app, 20).await;
    let worker =
        common::WorkerProc::spawn(&url, "bounded", &["--max-jobs", "7", "--concurrency", "4"]);
    let out = worker.wait_exit(std::time::Duration::from_secs(60));
    assert!(out.status.success(), "exit status {:?}", out.status);
    assert_eq!(common::count(&app, JobState::Succeeded).await, 7);
    assert_eq!(common::count(&app, JobState::Pending).await, 13);
}
