//! Real `celeriac beat` processes sharing one Redis the testkit starts: three beats live
//! through ten minutes of simulated one-second ticks (their clocks run 20 times faster, from a
//! shared origin), the leader is killed with `kill -9` on the way, and every tick in the
//! window is enqueued exactly once and fired once: the fires every process logged, the
//! killed one's included, never exceed the ticks (the store's dedupe would hide a double fire
//! from the jobs alone).

mod common;

use celeriac::schedule::tick_job_id;
use celeriac::{QueueAdmin, ResultStore};
use celeriac_testkit::RedisServer;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCHEDULE: &str = "proof";
const QUEUE: &str = "beat-proof";
/// Simulated seconds per real second.
const SCALE: i64 = 20;
/// Ten minutes of one-second ticks.
const TICKS: u64 = 600;

struct BeatProc {
    id: String,
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl BeatProc {
    fn spawn(url: &str, id: &str, file: &std::path::Path, origin: i64) -> Self {
        let log = file.with_file_name(format!("{id}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_celeriac"))
            .args(["--url", url, "--log", "info", "beat"])
            .arg("--schedules")
            .arg(file)
            .args(["--beat-id", id, "--beat-lease", "10s"])
            .env("CELERIAC_TEST_TIME_SCALE", SCALE.to_string())
            .env("CELERIAC_TEST_TIME_ORIGIN", origin.to_string())
            .env_remove("CELERIAC_URL")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("beat process starts");
        BeatProc {
            id: id.to_string(),
            child: Some(child),
            log,
        }
    }

    /// SIGTERM, and the `key=value` counters of its summary line.
    fn stop(mut self) -> Vec<(String, u64)> {
        let child = self.child.take().expect("running");
        common::sigterm(child.id());
        let out = child.wait_with_output().expect("beat exits");
        assert!(out.status.success(), "beat exit status {:?}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("beat stopped:"))
            .unwrap_or_else(|| panic!("no summary line in {text:?}"));
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }

    fn kill_dash_nine(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
}

impl Drop for BeatProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn jobs_in_queue(app: &celeriac::App) -> u64 {
    app.backend()
        .stats()
        .await
        .expect("stats")
        .iter()
        .filter(|q| q.queue == QUEUE)
        .map(|q| q.counts.values().sum::<u64>())
        .sum()
}

async fn leader(server: &RedisServer) -> Option<String> {
    let mut conn = server.connect().await.expect("admin connection");
    conn.command(&["HGET", "celeriac:{celeriac:beat}:leader:beat", "holder"])
        .await
        .expect("HGET")
        .as_text()
        .filter(|h| !h.is_empty())
}

async fn wait_for_jobs(app: &celeriac::App, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let have = jobs_in_queue(app).await;
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {have} of {n} ticks were enqueued in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_beat_processes_on_redis_fire_each_tick_exactly_once_through_a_kill_dash_nine() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schedules.toml");
    let mut f = std::fs::File::create(&file).expect("schedule file");
    write!(
        f,
        r#"
[[schedule]]
name = "{SCHEDULE}"
every = "1s"
task = "demo.send_email"
queue = "{QUEUE}"
args = {{ to = "ops@example.com", subject = "tick", fail_times = 0 }}
missed = "catch_up:1000"
"#
    )
    .expect("write");
    drop(f);
    let app = common::demo_app(&url).await;
    let origin = celeriac::clock::system_now_ms();

    let mut beats: Vec<BeatProc> = (0..3)
        .map(|i| BeatProc::spawn(&url, &format!("beat-{i}"), &file, origin))
        .collect();

    // Halfway through, kill the leader.
    wait_for_jobs(&app, TICKS / 2, Duration::from_secs(120)).await;
    let victim = leader(&server).await.expect("a beat leads");
    let at = beats
        .iter()
        .position(|b| b.id == victim)
        .unwrap_or_else(|| panic!("the leader `{victim}` is one of the beats"));
    let victim_proc = beats.remove(at);
    let victim_log = victim_proc.log.clone();
    victim_proc.kill_dash_nine();
    let killed_at = jobs_in_queue(&app).await;
    let victim_fired = common::beat_fires_logged(&victim_log, SCHEDULE);
    assert!(victim_fired > 0, "the killed leader had fired ticks");

    // The rest of the ten minutes, with another leader.
    wait_for_jobs(&app, TICKS + 1, Duration::from_secs(120)).await;
    let successor = leader(&server).await.expect("a beat leads");
    assert_ne!(successor, victim, "another beat took over");
    let logs: Vec<std::path::PathBuf> = beats.iter().map(|b| b.log.clone()).collect();
    let summaries: Vec<Vec<(String, u64)>> = beats.into_iter().map(BeatProc::stop).collect();
    // The survivors' summaries and logs agree on what they fired.
    let survivors_fired: u64 = summaries
        .iter()
        .flatten()
        .filter(|(k, _)| k == "fired")
        .map(|(_, v)| v)
        .sum();
    let survivors_logged: u64 = logs
        .iter()
        .map(|l| common::beat_fires_logged(l, SCHEDULE))
        .sum();
    let per_log: Vec<(String, u64)> = logs
        .iter()
        .chain(std::iter::once(&victim_log))
        .map(|l| {
            (
                l.display().to_string(),
                common::beat_fires_logged(l, SCHEDULE),
            )
        })
        .collect();
    assert_eq!(survivors_fired, survivors_logged, "summaries against logs");
    let acquired: u64 = summaries
        .iter()
        .flatten()
        .filter(|(k, _)| k == "acquired")
        .map(|(_, v)| v)
        .sum();
    assert!(acquired >= 1, "a survivor became leader: {summaries:?}");

    // Every candidate tick from before the origin to well past now (simulated).
    let end = origin + (celeriac::clock::system_now_ms() - origin) * SCALE + 10_000;
    let mut fired = BTreeSet::new();
    let mut t = (origin - 10_000).div_euclid(1000) * 1000;
    while t <= end {
        if let Some(info) = app
            .backend()
            .get(tick_job_id(SCHEDULE, t))
            .await
            .expect("get")
        {
            assert_eq!(info.job.queue, QUEUE);
            assert_eq!(
                info.job
                    .headers
                    .get("celeriac-schedule")
                    .map(String::as_str),
                Some(SCHEDULE)
            );
            fired.insert(t);
        }
        t += 1000;
    }
    let first = *fired.first().expect("ticks fired");
    let last = *fired.last().expect("ticks fired");
    let span = u64::try_from((last - first) / 1000 + 1).expect("positive");
    assert!(
        span > TICKS,
        "ten minutes of ticks covered ({span} seconds, the kill after {killed_at})"
    );
    let missing: Vec<i64> = (0..span as i64)
        .map(|i| first + i * 1000)
        .filter(|t| !fired.contains(t))
        .collect();
    assert!(missing.is_empty(), "ticks never fired: {missing:?}");
    assert_eq!(
        jobs_in_queue(&app).await,
        fired.len() as u64,
        "each tick enqueued exactly once (no job under another id)"
    );
    // A pass is counted once its cursor is recorded under the leader's token, and a tick is
    // recorded at most once: so a tick fired twice would make the fires counted exceed the
    // ticks. The killed leader may die between recording a pass and logging it, so its log
    // can miss that one pass (a few ticks), never add one.
    let counted = victim_fired + survivors_fired;
    let ticks = fired.len() as u64;
    assert!(
        counted <= ticks,
        "a tick was fired twice: {counted} fires counted for {ticks} ticks (the killed leader \
         {victim_fired}, the others {survivors_fired}; per log {per_log:?})"
    );
    assert!(
        ticks - counted <= SCALE as u64,
        "only the killed leader's last pass may be missing from the logs: {counted} fires \
         counted for {ticks} ticks (per log {per_log:?})"
    );
}
