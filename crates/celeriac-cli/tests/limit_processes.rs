//! Ten real `celeriac limits check` processes hammer one key with a 100/minute limit on a
//! Redis the testkit starts. Their clocks run 12 times faster from a shared origin, so two
//! simulated minutes and more pass in about 11 seconds. Every window of a minute sees at most
//! the 100 calls the limit permits, and, while everyone hammers, not far fewer.

use celeriac_testkit::RedisServer;
use std::process::{Command, Stdio};

const PROCESSES: usize = 10;
const SCALE: i64 = 12;
const LIMIT: i64 = 100;
const WINDOW_MS: i64 = 60_000;
/// Simulated length of the run.
const RUN_MS: i64 = 130_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_processes_share_one_limit_of_100_per_minute() {
    let server = RedisServer::start().await.expect("redis-server");
    let url = server.url();
    // Hammering starts when every process is up: three real seconds from now.
    let origin = celeriac::clock::system_now_ms() + 3_000;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_celeriac"))
                .args([
                    "--url", &url, "--log", "error", "limits", "check", "user:42",
                ])
                .args(["--limit", "100/minute", "--hammer-tasks", "4"])
                .args(["--hammer-for", &format!("{RUN_MS}ms")])
                .env("CELERIAC_TEST_TIME_SCALE", SCALE.to_string())
                .env("CELERIAC_TEST_TIME_ORIGIN", origin.to_string())
                .env_remove("CELERIAC_URL")
                .env_remove("CELERIAC_JSON")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a hammer process starts")
        })
        .collect();
    let mut allowed: Vec<i64> = Vec::new();
    let mut per_process = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("the process ends");
        assert!(
            out.status.success(),
            "a hammer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let times: Vec<i64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().expect("one time per line"))
            .collect();
        per_process.push(times.len());
        allowed.extend(times);
    }
    allowed.sort_unstable();
    assert!(
        allowed.iter().all(|t| *t >= origin && *t < origin + RUN_MS),
        "every allowed call lies in the run"
    );
    assert!(
        per_process.iter().filter(|n| **n > 0).count() > 1,
        "several processes got calls through: {per_process:?}"
    );
    let in_window = |from: i64| {
        let lo = allowed.partition_point(|t| *t < from);
        let hi = allowed.partition_point(|t| *t < from + WINDOW_MS);
        (hi - lo) as i64
    };
    // Every window that starts at an allowed call (the densest ones do) is within the limit.
    let most = allowed.iter().map(|t| in_window(*t)).max().unwrap_or(0);
    assert!(
        most <= LIMIT,
        "{most} calls in one minute, more than {LIMIT}"
    );
    // Every whole window inside the run, sampled every simulated second, got ≥ 90% of it.
    let mut least = i64::MAX;
    let mut from = origin;
    while from + WINDOW_MS <= origin + RUN_MS {
        least = least.min(in_window(from));
        from += 1_000;
    }
    assert!(
        least >= LIMIT * 9 / 10,
        "only {least} calls in some minute while ten processes hammered (per process: \
         {per_process:?}, total {})",
        allowed.len()
    );
    println!(
        "allowed {} in {} simulated ms; busiest minute {most}, quietest {least}; per process {per_process:?}",
        allowed.len(),
        RUN_MS
    );
}

/// `celeriac limits check` prints the decision, charges the key, and refuses bad quotas with
/// a message naming the setting.
#[test]
fn limits_check_prints_decisions_and_refuses_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("limits.db").display());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_celeriac"))
            .args(["--url", &url, "limits", "check"])
            .args(args)
            .env_remove("CELERIAC_URL")
            .env_remove("CELERIAC_JSON")
            .env_remove("CELERIAC_TEST_TIME_SCALE")
            .env_remove("CELERIAC_TEST_TIME_ORIGIN")
            .output()
            .expect("the celeriac binary runs")
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let first = run(&["u", "--limit", "2/minute; burst=1", "--json"]);
    assert!(first.status.success(), "{}", text(&first));
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    assert_eq!(
        (v["allowed"].as_bool(), v["remaining"].as_u64()),
        (Some(true), Some(1))
    );
    assert!(run(&["u", "--limit", "2/minute; burst=1"]).status.success());
    let third = run(&["u", "--limit", "2/minute; burst=1"]);
    assert!(
        text(&third).starts_with("denied: u under 2/1m; burst=1"),
        "{}",
        text(&third)
    );
    assert!(text(&third).contains("retry after"), "{}", text(&third));
    for (limit, says) in [
        ("0/minute", "limit of zero"),
        ("5/0s", "window of zero"),
        ("5/minute; algorithm=leaky", "unknown algorithm `leaky`"),
    ] {
        let o = run(&["u", "--limit", limit]);
        assert!(!o.status.success(), "{limit} is refused");
        assert!(text(&o).contains(says), "{limit}: {}", text(&o));
    }
    let long = "k".repeat(600);
    let o = run(&[&long, "--limit", "5/minute"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("rate limit key"), "{}", text(&o));
}
