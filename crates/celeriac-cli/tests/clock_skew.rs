//! Worker processes whose hosts' wall clocks disagree, made real with libfaketime (the
//! `faketime` program): one process runs with its wall clock 30 s or 90 s behind or ahead of
//! the others, and one has its wall clock stepped by a minute mid-run. Every job runs once,
//! nothing is dead-lettered, delays hold, and the process says that its clock is off.

mod common;

use celeriac::{App, JobId, JobState, ResultStore};
use celeriac_cli::demo::ExportReport;
use celeriac_testkit::RedisServer;
use common::{count, demo_app, sigterm};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a process's wall clock is faked.
#[derive(Clone, Copy)]
enum Fake<'a> {
    /// The host's clock as it is.
    None,
    /// Off by a fixed offset, such as `-30s`.
    Offset(&'a str),
    /// Read from a file the test rewrites to step the clock (an offset such as `+60s`).
    File(&'a Path),
}

/// A `celeriac` process under a faked wall clock (the monotonic clock stays real, as on a
/// host whose wall clock is off), its standard error kept in a file.
fn celeriac_cmd(url: &str, fake: Fake<'_>, log: &Path) -> Command {
    celeriac_cmd_at(url, fake, log, "warn")
}

/// [`celeriac_cmd`] logging at `level`.
fn celeriac_cmd_at(url: &str, fake: Fake<'_>, log: &Path, level: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac"));
    match fake {
        Fake::None => {}
        Fake::Offset(by) => common::with_wall_clock_off(&mut cmd, by),
        Fake::File(file) => {
            cmd.env("LD_PRELOAD", common::libfaketime())
                .env("FAKETIME_TIMESTAMP_FILE", file)
                .env("FAKETIME_CACHE_DURATION", "1");
        }
    }
    cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env_remove("CELERIAC_URL")
        // Its workers run as root when the tests do.
        .env("CELERIAC_ALLOW_ROOT", "true")
        .args(["--url", url, "--log", level])
        .stderr(Stdio::from(
            std::fs::File::create(log).expect("log file created"),
        ));
    cmd
}

/// A worker process for the `reports` queue with the default lease (30 s) and heartbeat.
struct Worker {
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    fn spawn(url: &str, id: &str, fake: Fake<'_>, dir: &Path) -> Self {
        Self::spawn_on(url, "reports", id, fake, dir)
    }

    fn spawn_on(url: &str, queue: &str, id: &str, fake: Fake<'_>, dir: &Path) -> Self {
        let log = dir.join(format!("{id}.log"));
        let child = celeriac_cmd(url, fake, &log)
            .args(["worker", "--queues", queue, "--worker-id", id])
            .args(["--concurrency", "8", "--poll-interval", "20ms"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("faketime and the worker start (scripts/test installs faketime)");
        Worker {
            child: Some(child),
            log,
        }
    }

    /// Stops the worker; returns `(started, stale)` from its summary line and its log.
    fn stop(mut self) -> (u64, u64, String) {
        let child = self.child.take().expect("running");
        sigterm(child.id());
        let out = child.wait_with_output().expect("worker exits");
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(out.status.success(), "worker exit {:?}: {log}", out.status);
        let (started, stale) = common::worker_summary(&out);
        (started, stale, log)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The number a log line gives for `field` (`field=-30000`).
fn log_field(line: &str, field: &str) -> Option<i64> {
    let value = line.split(&format!("{field}=")).nth(1)?;
    value.split_whitespace().next()?.parse().ok()
}

/// The `offset_ms` of the first warning that the host's clock is off the fleet's.
fn offset_warned(log: &str) -> Option<i64> {
    let line = log
        .lines()
        .find(|l| l.contains("wall clock is off the fleet's clock"))?;
    Some(log_field(line, "offset_ms").expect("offset_ms is a number"))
}

async fn enqueue_reports(app: &App, n: u64, millis: u64) -> Vec<JobId> {
    let handles = app
        .client()
        .enqueue_many::<ExportReport>(vec![millis; n as usize])
        .await
        .expect("enqueue");
    handles.iter().map(|h| h.id()).collect()
}

async fn wait_until_all_ended(app: &App, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ended = count(app, JobState::Succeeded).await + count(app, JobState::Dead).await;
        if ended >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {ended} of {n} jobs ended in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every job succeeded after exactly one attempt, none is in the dead letters, and every
/// time a worker stamped on it lies within `window` of the fleet's clock, give or take a
/// second (a worker stamping by its own wall clock would put its jobs the skew away; on SQLite
/// processes may disagree by one slew step of the file's anchor until they read it again).
async fn each_ran_once(app: &App, ids: &[JobId], window: (i64, i64)) {
    assert_eq!(count(app, JobState::Dead).await, 0, "no job may die");
    let (from, to) = (window.0 - 1_000, window.1 + 1_000);
    for id in ids {
        let info = app
            .backend()
            .get(*id)
            .await
            .expect("get")
            .expect("job kept");
        assert_eq!(info.state, JobState::Succeeded, "job {id}");
        assert_eq!(info.job.attempts, 1, "job {id} ran more than once");
        let started = info.job.started_at.expect("started");
        let finished = info.job.finished_at.expect("finished");
        assert!(
            from <= started && started <= finished && finished <= to,
            "job {id} stamped {started}..{finished}, outside the run {from}..{to} by the fleet's clock"
        );
    }
}

/// The fleet's time now, as the test process reads it.
fn fleet_now(app: &App) -> i64 {
    app.client().clock().now_ms()
}

/// Enqueues a short report with a delay of 4 s from a `celeriac enqueue` process under
/// `fake`; returns its id and the fleet's time just before.
async fn enqueue_delayed(app: &App, url: &str, fake: Fake<'_>, dir: &Path) -> (JobId, i64) {
    let before = app.client().clock().now_ms();
    let out = celeriac_cmd(url, fake, &dir.join("enqueue.log"))
        .args(["enqueue", "demo.export_report", "-a", "10", "--delay", "4s"])
        .output()
        .expect("celeriac enqueue runs");
    assert!(out.status.success(), "enqueue failed: {out:?}");
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("enqueue prints the job id");
    (id, before)
}

/// The delayed job started 4 s after it was enqueued by the fleet's clock: not at once (a
/// clock behind would have made it due already) nor the skew late (a clock ahead).
async fn started_after_its_delay(app: &App, id: JobId, enqueued: i64) {
    let info = app.backend().get(id).await.expect("get").expect("job kept");
    assert_eq!(info.state, JobState::Succeeded);
    let waited = info.job.started_at.expect("started") - enqueued;
    assert!(
        (4_000..30_000).contains(&waited),
        "a job delayed by 4 s started {waited} ms after it was enqueued"
    );
}

/// Two workers, one with its wall clock off by `skew_s` seconds, share 80 jobs of 3 s each
/// (the default 30 s lease, a heartbeat every 10 s, every worker reaping every second). With
/// each process's own wall clock as `now`, the other worker's reaper would take the jobs
/// back from under the slow clock within a second. The skewed process also enqueues a
/// delayed job.
async fn skewed_workers_run_each_job_once(url: &str, skew_s: i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = demo_app(url).await;
    let from = fleet_now(&app);
    const N: u64 = 80;
    let mut ids = enqueue_reports(&app, N, 3_000).await;
    let by = format!("{skew_s:+}s");
    let (delayed, enqueued) = enqueue_delayed(&app, url, Fake::Offset(&by), dir.path()).await;
    let skewed = Worker::spawn(url, "skewed", Fake::Offset(&by), dir.path());
    let right = Worker::spawn(url, "right", Fake::None, dir.path());
    wait_until_all_ended(&app, N + 1, Duration::from_secs(180)).await;
    let (s_started, s_stale, s_log) = skewed.stop();
    let (r_started, r_stale, r_log) = right.stop();

    // The skew was real, and the skewed process saw it.
    let offset = offset_warned(&s_log)
        .unwrap_or_else(|| panic!("the skewed worker warned of its clock: {s_log}"));
    assert!(
        (offset + skew_s * 1000).abs() < 2_000,
        "offset {offset} ms for a clock {skew_s:+} s off"
    );
    assert_eq!(
        offset_warned(&r_log),
        None,
        "the right clock is not off: {r_log}"
    );
    // Both took part, so each could have reaped the other's jobs.
    assert!(
        s_started > 0 && r_started > 0,
        "both workers ran jobs: skewed {s_started}, right {r_started}"
    );
    assert_eq!(
        s_started + r_started,
        N + 1,
        "executions for {} jobs",
        N + 1
    );
    assert_eq!((s_stale, r_stale), (0, 0), "no completion refused");
    started_after_its_delay(&app, delayed, enqueued).await;
    ids.push(delayed);
    each_ran_once(&app, &ids, (from, fleet_now(&app))).await;
}

/// Waits until `log` holds the warning that the wall clock stepped; returns the step in ms.
async fn step_warned(log: &Path) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("wall clock stepped")) {
            return log_field(line, "step_ms").expect("step_ms is a number");
        }
        assert!(Instant::now() < deadline, "no step was logged: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Workers share 48 jobs of 5 s each; the wall clock of the `stepped` ones jumps by
/// `step` (`+60s` or `-60s`) while jobs run. A forward step would have made every lease
/// look expired to the stepped reapers; a backward one would have made the stepped
/// workers' new leases look expired to the others.
async fn a_step_mid_run_runs_each_job_once(
    url: &str,
    step: &str,
    stepped: &[&str],
    right: &[&str],
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = demo_app(url).await;
    let from = fleet_now(&app);
    const N: u64 = 48;
    let ids = enqueue_reports(&app, N, 5_000).await;
    let file = dir.path().join("faketime");
    std::fs::write(&file, "+0").expect("faketime file");
    let mut workers = Vec::new();
    for id in stepped {
        workers.push((Worker::spawn(url, id, Fake::File(&file), dir.path()), true));
    }
    for id in right {
        workers.push((Worker::spawn(url, id, Fake::None, dir.path()), false));
    }
    // Step once every stepped worker runs jobs (so it runs on the fleet's clock already),
    // and say how many jobs run.
    let deadline = Instant::now() + Duration::from_secs(60);
    let in_flight = loop {
        let mut active = 0;
        let mut holders = std::collections::HashSet::new();
        for id in &ids {
            let info = app.backend().get(*id).await.expect("get").expect("job");
            if info.state == JobState::Active {
                active += 1;
                holders.extend(info.worker);
            }
        }
        if active >= 8 && stepped.iter().all(|w| holders.contains(*w)) {
            break active;
        }
        assert!(
            Instant::now() < deadline,
            "the stepped workers took no jobs ({active} active, held by {holders:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    std::fs::write(&file, step).expect("step the clock");
    for (w, is_stepped) in &workers {
        if *is_stepped {
            let ms = step_warned(&w.log).await;
            let want: i64 = step.trim_end_matches('s').parse::<i64>().expect("step") * 1000;
            assert!(
                (ms - want).abs() < 2_000,
                "logged a step of {ms} ms for {step}"
            );
        }
    }
    wait_until_all_ended(&app, N, Duration::from_secs(180)).await;
    let mut started = 0;
    for (w, _) in workers {
        let (s, stale, _) = w.stop();
        assert_eq!(stale, 0, "no completion refused");
        started += s;
    }
    assert!(in_flight > 0, "jobs ran when the clock stepped");
    assert_eq!(started, N, "executions for {N} jobs");
    each_ran_once(&app, &ids, (from, fleet_now(&app))).await;
}

/// A task limited to 10 starts a second across the fleet (`demo.ping_partner`), served by a
/// worker whose wall clock is 90 s ahead and one whose clock is right. With each on its own
/// clock, the fast one would push the shared rate state 90 s ahead and starve the other; on
/// the fleet's clock no eleven starts fall within a second and both serve the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_between_workers_90_s_apart_on_redis() {
    use celeriac_cli::demo::PingPartner;
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = demo_app(&url).await;
    let from = fleet_now(&app);
    const N: u32 = 40;
    let ids: Vec<JobId> = app
        .client()
        .enqueue_many::<PingPartner>(0..N)
        .await
        .expect("enqueue")
        .iter()
        .map(|h| h.id())
        .collect();
    let ahead = Worker::spawn_on(&url, "partner", "ahead", Fake::Offset("+90s"), dir.path());
    let right = Worker::spawn_on(&url, "partner", "right", Fake::None, dir.path());
    wait_until_all_ended(&app, u64::from(N), Duration::from_secs(120)).await;
    let (a_started, a_stale, a_log) = ahead.stop();
    let (r_started, r_stale, _) = right.stop();
    let offset = offset_warned(&a_log).unwrap_or_else(|| panic!("no clock warning: {a_log}"));
    assert!((offset + 90_000).abs() < 2_000, "offset {offset} ms");
    assert!(
        a_started > 0 && r_started > 0,
        "both workers served the queue: ahead {a_started}, right {r_started}"
    );
    assert_eq!(a_started + r_started, u64::from(N));
    assert_eq!((a_stale, r_stale), (0, 0));
    each_ran_once(&app, &ids, (from, fleet_now(&app))).await;
    let mut starts = Vec::new();
    for id in &ids {
        let info = app.backend().get(*id).await.expect("get").expect("kept");
        starts.push(info.job.started_at.expect("started"));
    }
    starts.sort_unstable();
    for w in starts.windows(11) {
        assert!(
            w[10] - w[0] >= 1_000,
            "11 starts within one second ({} ms): {starts:?}",
            w[10] - w[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_clock_stepped_forward_on_redis_runs_each_job_once() {
    let server = RedisServer::start().await.expect("redis-server starts");
    a_step_mid_run_runs_each_job_once(&server.url(), "+60s", &["stepped"], &["right"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_clock_stepped_back_on_redis_runs_each_job_once() {
    let server = RedisServer::start().await.expect("redis-server starts");
    a_step_mid_run_runs_each_job_once(&server.url(), "-60s", &["stepped"], &["right"]).await;
}

/// On SQLite every process shares the host's clock: both workers step together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_clock_stepped_forward_on_sqlite_runs_each_job_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = common::url_in(dir.path());
    a_step_mid_run_runs_each_job_once(&url, "+60s", &["one", "two"], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_30_s_behind_on_redis_runs_each_job_once() {
    let server = RedisServer::start().await.expect("redis-server starts");
    skewed_workers_run_each_job_once(&server.url(), -30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_30_s_ahead_on_redis_runs_each_job_once() {
    let server = RedisServer::start().await.expect("redis-server starts");
    skewed_workers_run_each_job_once(&server.url(), 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_90_s_behind_on_redis_runs_each_job_once() {
    let server = RedisServer::start().await.expect("redis-server starts");
    skewed_workers_run_each_job_once(&server.url(), -90).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_90_s_ahead_on_redis_runs_each_job_once() {
    let server = RedisServer::start().await.expect("redis-server starts");
    skewed_workers_run_each_job_once(&server.url(), 90).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_90_s_behind_on_sqlite_runs_each_job_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = common::url_in(dir.path());
    skewed_workers_run_each_job_once(&url, -90).await;
}

/// One `celeriac limits check` decision on `key` under 2 calls a minute, from a process
/// under `fake`.
fn limit_decision(url: &str, fake: Fake<'_>, dir: &Path, key: &str) -> serde_json::Value {
    let out = celeriac_cmd(url, fake, &dir.join("limits.log"))
        .args(["limits", "check", key, "--limit", "2/minute", "--json"])
        .output()
        .expect("celeriac limits check runs");
    assert!(out.status.success(), "limits check failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("a JSON decision")
}

/// Rate-limit decisions from processes whose wall clocks are 90 s apart share one state on
/// the fleet's clock: once a right clock has taken a key's call (2 a minute: one every 30 s),
/// a process 90 s behind is told to retry within the 30 s (not the skew later), and a process
/// 90 s ahead is denied too (its own clock would have found the 30 s long over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiter_decisions_agree_between_processes_90_s_apart_on_redis() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = limit_decision(&url, Fake::None, dir.path(), "skewed-key");
    assert_eq!(d["allowed"], true, "{d}");
    for by in ["-90s", "+90s"] {
        let d = limit_decision(&url, Fake::Offset(by), dir.path(), "skewed-key");
        assert_eq!(d["allowed"], false, "a clock {by} off is denied too: {d}");
        let retry = d["retry_after_ms"].as_u64().expect("a retry-after");
        assert!(
            retry <= 30_000,
            "a clock {by} off retries within the 30 s, not the skew later: {d}"
        );
    }
    let log = std::fs::read_to_string(dir.path().join("limits.log")).unwrap_or_default();
    let offset = offset_warned(&log).unwrap_or_else(|| panic!("no clock warning: {log}"));
    assert!(
        (offset.abs() - 90_000).abs() < 2_000,
        "the last process saw its clock 90 s off: {offset} ms"
    );
}

/// Two beats, one with its wall clock 90 s behind and one 90 s ahead, share a schedule that
/// ticks every second. On the fleet's clock every tick of the run fires once, at its time:
/// none is missing, none lies outside the run (a leader on its own clock would fire the
/// ticks of 90 s earlier or later), and the fires logged add up to the ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beats_90_s_apart_fire_each_tick_once_on_time_on_redis() {
    use std::io::Write;
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schedules.toml");
    let mut f = std::fs::File::create(&file).expect("schedule file");
    write!(
        f,
        r#"
[[schedule]]
name = "skew-proof"
every = "1s"
task = "demo.send_email"
queue = "beat-skew"
args = {{ to = "ops@example.com", subject = "tick", fail_times = 0 }}
"#
    )
    .expect("write");
    drop(f);
    let app = demo_app(&url).await;
    let from = fleet_now(&app);
    let mut beats = Vec::new();
    for (id, by) in [("behind", "-90s"), ("ahead", "+90s")] {
        let log = dir.path().join(format!("{id}.log"));
        let child = celeriac_cmd_at(&url, Fake::Offset(by), &log, "info")
            .args(["beat", "--beat-id", id, "--beat-lease", "3s"])
            .arg("--schedules")
            .arg(&file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("beat starts");
        beats.push((child, log));
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let to = fleet_now(&app);
    let mut fired_logged = 0;
    for (child, log) in beats {
        sigterm(child.id());
        let out = child.wait_with_output().expect("beat exits");
        assert!(out.status.success(), "beat exit {:?}", out.status);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let offset = offset_warned(&text).unwrap_or_else(|| panic!("no clock warning: {text}"));
        assert!((offset.abs() - 90_000).abs() < 2_000, "offset {offset} ms");
        fired_logged += common::beat_fires_logged(&log, "skew-proof");
    }
    // Every second tick from well before the run to well after it.
    let mut fired = Vec::new();
    let mut t = (from - 120_000).div_euclid(1000) * 1000;
    while t <= to + 120_000 {
        let id = celeriac::schedule::tick_job_id("skew-proof", t);
        if app.backend().get(id).await.expect("get").is_some() {
            fired.push(t);
        }
        t += 1000;
    }
    assert!(fired.len() >= 8, "the beats fired ticks: {fired:?}");
    let first = fired[0];
    let last = fired[fired.len() - 1];
    assert!(
        first >= from - 1_000 && last <= to + 1_000,
        "ticks fired outside the run {from}..{to}: {first}..{last}"
    );
    assert_eq!(
        fired.len() as i64,
        (last - first) / 1000 + 1,
        "no tick of the run is missing: {fired:?}"
    );
    assert_eq!(
        fired_logged,
        fired.len() as u64,
        "each tick fired once across the beats"
    );
}
