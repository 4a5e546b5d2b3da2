//! `celeriac beat`, `worker --beat` and `celeriac schedules` as a user runs them: listing,
//! pausing, a worker that fires its own schedule, and bad schedule files refused at start
//! with the place named.

mod common;

use common::{celeriac, stderr, stdout, url_in};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the schedule file");
    path
}

const GOOD: &str = r#"
[[schedule]]
name = "nightly"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
task = "demo.send_email"
args = { to = "ops@example.com", subject = "report", fail_times = 0 }

[[schedule]]
name = "every-second"
every = "1s"
task = "demo.send_email"
args = { to = "ops@example.com", subject = "tick", fail_times = 0 }
missed = "skip"
"#;

/// The refused command's one-line error.
fn refused(url: &str, args: &[&str]) -> String {
    let out = celeriac(url, args);
    assert!(!out.status.success(), "refused: {}", stdout(&out));
    stderr(&out)
}

#[test]
fn bad_schedule_files_are_refused_at_start_naming_the_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let d = dir.path();

    let f = write(
        d,
        "cron.toml",
        "[[schedule]]\nname = \"a\"\nevery = \"1m\"\ntask = \"demo.send_email\"\n\n\
         [[schedule]]\nname = \"broken\"\ncron = \"0 25 * * *\"\ntask = \"demo.send_email\"\n",
    );
    let f = f.to_string_lossy().into_owned();
    let err = refused(&url, &["beat", "--schedules", &f]);
    assert!(
        err.contains("cron.toml:6") && err.contains("schedule \"broken\": cron"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let f = write(
        d,
        "tz.toml",
        "[[schedule]]\nname = \"b\"\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berln\"\ntask = \"demo.send_email\"\n",
    );
    let err = refused(
        &url,
        &["worker", "--beat", "--schedules", &f.to_string_lossy()],
    );
    assert!(
        err.contains("tz.toml") && err.contains("timezone") && err.contains("Europe/Berln"),
        "{err}"
    );

    let f = write(d, "syntax.toml", "[[schedule]]\nname = \"c\"\nevery = 5m\n");
    let err = refused(&url, &["beat", "--schedules", &f.to_string_lossy()]);
    assert!(err.contains("syntax.toml:3"), "{err}");

    let f = write(
        d,
        "task.toml",
        "[[schedule]]\nname = \"d\"\nevery = \"1m\"\ntask = \"demo.no_such_task\"\n",
    );
    let err = refused(&url, &["beat", "--schedules", &f.to_string_lossy()]);
    assert!(
        err.contains("task.toml")
            && err.contains("schedule \"d\": task")
            && err.contains("demo.no_such_task")
            && err.contains("demo.send_email"),
        "names the schedule and lists the known tasks: {err}"
    );

    let missing = d.join("missing.toml");
    let err = refused(&url, &["beat", "--schedules", &missing.to_string_lossy()]);
    assert!(err.contains("missing.toml"), "{err}");

    let err = refused(&url, &["beat"]);
    assert!(
        err.contains("no schedules") && err.contains("CELERIAC_SCHEDULES"),
        "{err}"
    );
}

#[test]
fn schedules_list_pause_and_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let f = write(dir.path(), "s.toml", GOOD);
    let f = f.to_string_lossy().into_owned();

    let out = celeriac(&url, &["schedules", "--schedules", &f]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("nightly  cron 30 2 * * *  tz=Europe/Berlin"),
        "{text}"
    );
    assert!(text.contains("every-second  every 1s  tz=UTC"), "{text}");
    // Berlin's 02:30 is shown with its offset.
    assert!(
        text.contains("T02:30:00+01:00") || text.contains("T02:30:00+02:00"),
        "{text}"
    );

    let out = celeriac(&url, &["schedules", "pause", "nightly", "--schedules", &f]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = celeriac(
        &url,
        &["schedules", "--json", "--next", "2", "--schedules", &f],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let row = |name: &str| {
        rows.as_array()
            .and_then(|r| r.iter().find(|v| v["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} listed: {rows}"))
    };
    assert_eq!(row("nightly")["paused"], true);
    assert_eq!(row("every-second")["paused"], false);
    assert_eq!(row("nightly")["next"].as_array().map(Vec::len), Some(2));
    assert_eq!(row("every-second")["missed"], "skip");

    let out = celeriac(&url, &["schedules", "resume", "nightly", "--schedules", &f]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = celeriac(&url, &["schedules", "--json", "--schedules", &f]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["paused"], false, "{rows}");

    let err = refused(&url, &["schedules", "pause", "nope", "--schedules", &f]);
    assert!(
        err.contains("no schedule `nope`") && err.contains("nightly, every-second"),
        "{err}"
    );
}

#[test]
fn worker_with_beat_runs_the_jobs_its_schedule_fires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let f = write(dir.path(), "s.toml", GOOD);
    let child = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args([
            "--url",
            &url,
            "--log",
            "error",
            "worker",
            "--beat",
            "--schedules",
        ])
        .arg(&f)
        .args(["--queues", "emails", "--poll-interval", "20ms"])
        .env_remove("CELERIAC_URL")
        .env("CELERIAC_ALLOW_ROOT", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("worker starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let succeeded = loop {
        let out = celeriac(&url, &["queues", "--json"]);
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let n = stats
            .as_array()
            .into_iter()
            .flatten()
            .filter(|q| q["queue"] == "emails")
            .filter_map(|q| q["counts"]["succeeded"].as_u64())
            .sum::<u64>();
        if n >= 2 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    common::sigterm(child.id());
    let out = child.wait_with_output().expect("worker exits");
    assert!(out.status.success(), "worker exit status {:?}", out.status);
    assert!(
        succeeded >= 2,
        "the worker ran at least two fired ticks (got {succeeded})"
    );
    let list = celeriac(
        &url,
        &["schedules", "--json", "--schedules", &f.to_string_lossy()],
    );
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let last = rows
        .as_array()
        .and_then(|r| r.iter().find(|v| v["name"] == "every-second"))
        .map(|v| v["last_tick"].clone());
    assert!(
        last.as_ref()
            .and_then(|v| v.as_str())
            .is_some_and(|t| t.ends_with('Z') && !t.starts_with("none")),
        "the last tick is recorded: {last:?}"
    );
}
