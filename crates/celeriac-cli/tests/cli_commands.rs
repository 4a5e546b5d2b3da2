//! The `celeriac` binary as a user runs it: commands, output, and bad input.

mod common;

use common::{celeriac, enqueue, sigterm, stderr, stdout, url_in, WorkerProc};
use std::process::Command;

#[test]
fn malformed_args_json_is_a_one_line_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = celeriac(
        &url_in(dir.path()),
        &["enqueue", "demo.send_email", "--args", "{not json"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--args is not valid JSON"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn unknown_task_on_enqueue_is_refused_and_names_the_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let out = celeriac(&url, &["enqueue", "no.such.task", "--args", "{}"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown task `no.such.task`"), "{err}");
    assert!(err.contains("--unchecked"), "{err}");
    // Nothing was stored.
    let q = celeriac(&url, &["queues", "--json"]);
    assert!(q.status.success(), "{}", stderr(&q));
    let stats: serde_json::Value = serde_json::from_slice(&q.stdout).expect("json");
    assert_eq!(stats.as_array().map(Vec::len), Some(0), "{stats}");
}

#[test]
fn unknown_url_scheme_is_a_clear_error() {
    let out = celeriac("mongodb://localhost/x", &["queues"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown backend URL scheme"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn corrupt_database_file_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jobs.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).expect("write");
    let out = celeriac(&url_in(dir.path()), &["queues"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("not a database"), "{err}");
    assert!(err.contains("jobs.db"), "names the file: {err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "the file must not change"
    );
}

#[test]
fn missing_directory_is_a_clear_error() {
    let out = celeriac("sqlite:///no/such/dir/jobs.db", &["queues"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn bad_worker_setting_fails_at_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = celeriac(&url_in(dir.path()), &["worker", "--concurrency", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("concurrency"), "{}", stderr(&out));
    let out = celeriac(&url_in(dir.path()), &["worker", "--lease", "3 fortnights"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--lease"), "{}", stderr(&out));
}

#[test]
fn settings_come_from_environment_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["enqueue", "demo.send_email"])
        .env("CELERIAC_URL", url_in(dir.path()))
        .env("CELERIAC_ARGS", r#"{"to":"env@example.com","subject":"s"}"#)
        .env("CELERIAC_PRIORITY", "8")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let info = celeriac(&url_in(dir.path()), &["inspect", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(v["job"]["priority"], 8, "{v}");
    assert_eq!(v["state"], "pending");
}

#[test]
fn bounds_come_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let args = r#"{"to":"a@example.com","subject":"hi"}"#;
    // Over --max-payload-bytes: refused, naming the setting, and nothing is stored.
    let out = celeriac(
        &url,
        &[
            "--max-payload-bytes",
            "8",
            "enqueue",
            "demo.send_email",
            "--args",
            args,
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("max_payload_bytes"), "{err}");
    let q = celeriac(&url, &["queues", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&q.stdout).expect("json");
    assert_eq!(stats.as_array().map(Vec::len), Some(0), "{stats}");
    // Zero bounds nothing: the parser refuses it, naming the flag.
    let out = celeriac(&url, &["--max-result-bytes", "0", "queues"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--max-result-bytes"), "{err}");

    // The same job without the flag is stored; a worker told to store no result over 8 bytes
    // fails it, saying why, where it would have succeeded.
    let id = enqueue(&url, &["demo.send_email", "--args", args]);
    let worker = WorkerProc::spawn(&url, "bounds", &["--max-result-bytes", "8"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = stdout(&celeriac(&url, &["inspect", &id]));
        if text.contains("state:       failed") {
            break text;
        }
        assert!(
            !text.contains("state:       succeeded") && std::time::Instant::now() < deadline,
            "the job should fail: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    worker.stop();
    assert!(text.contains("result_too_large"), "{text}");
    assert!(text.contains("max_result_bytes (8)"), "{text}");
}

#[test]
fn enqueue_work_inspect_and_dead_letters_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let ok_id = enqueue(
        &url,
        &[
            "demo.send_email",
            "--args",
            r#"{"to":"a@example.com","subject":"hi"}"#,
        ],
    );
    let lost_id = enqueue(&url, &["legacy.task", "--unchecked", "--queue", "emails"]);

    let pending = celeriac(&url, &["inspect", &ok_id]);
    assert!(
        stdout(&pending).contains("state:       pending"),
        "{}",
        stdout(&pending)
    );

    // A worker process runs them; SIGTERM stops it gracefully.
    let worker = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args([
            "--url",
            &url,
            "worker",
            "--queues",
            "emails",
            "--poll-interval",
            "20ms",
        ])
        .env("CELERIAC_ALLOW_ROOT", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("worker starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let i = celeriac(&url, &["inspect", &ok_id]);
        if stdout(&i).contains("state:       succeeded") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job never finished: {}",
            stdout(&i)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sigterm(worker.id());
    let out = worker.wait_with_output().expect("worker exits");
    assert!(out.status.success(), "graceful stop exits 0");
    assert!(
        stdout(&out).contains("worker stopped: started=2"),
        "{}",
        stdout(&out)
    );

    let done = celeriac(&url, &["inspect", &ok_id]);
    let text = stdout(&done);
    assert!(text.contains("result:      \"250 queued as"), "{text}");

    let dlq = celeriac(&url, &["dlq", "list"]);
    let text = stdout(&dlq);
    assert!(text.contains(&lost_id), "{text}");
    assert!(text.contains("unknown_task"), "{text}");

    let refused = celeriac(&url, &["dlq", "purge"]);
    assert!(!refused.status.success(), "purge needs --yes");

    let retry = celeriac(&url, &["dlq", "retry", &lost_id]);
    assert!(stdout(&retry).contains("1 jobs back"), "{}", stdout(&retry));
    let back = celeriac(&url, &["inspect", &lost_id]);
    assert!(
        stdout(&back).contains("state:       pending"),
        "{}",
        stdout(&back)
    );

    let q = celeriac(&url, &["queues"]);
    let text = stdout(&q);
    assert!(text.lines().any(|l| l.starts_with("emails")), "{text}");

    let purge = celeriac(&url, &["purge", "emails", "--yes"]);
    assert!(
        stdout(&purge).contains("deleted 1 waiting jobs"),
        "{}",
        stdout(&purge)
    );
}

#[test]
fn cancel_stops_a_waiting_job_and_says_what_it_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let id = enqueue(
        &url,
        &[
            "demo.send_email",
            "--delay",
            "1h30m",
            "--args",
            r#"{"to":"a@b.c","subject":"s"}"#,
        ],
    );

    let first = celeriac(&url, &["cancel", &id]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("cancelled; it will not run"),
        "{}",
        stdout(&first)
    );
    let shown = celeriac(&url, &["inspect", &id]);
    assert!(
        stdout(&shown).contains("state:       cancelled"),
        "{}",
        stdout(&shown)
    );

    let again = celeriac(&url, &["cancel", &id]);
    assert!(
        stdout(&again).contains("had already finished: cancelled"),
        "{}",
        stdout(&again)
    );

    let unknown = celeriac(&url, &["cancel", "01a22bbb-50d2-73ac-85a4-0a62c0345e37"]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("no job"), "{}", stderr(&unknown));
}

#[test]
fn enqueue_with_a_unique_key_returns_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let args = r#"{"to":"a@b.c","subject":"s"}"#;
    let first = enqueue(&url, &["demo.send_email", "--args", args, "--unique", "k1"]);
    let again = enqueue(&url, &["demo.send_email", "--args", args, "--unique", "k1"]);
    assert_eq!(first, again, "the holder's id");
    let other = enqueue(&url, &["demo.send_email", "--args", args, "--unique", "k2"]);
    assert_ne!(first, other);
    let bad = celeriac(
        &url,
        &[
            "enqueue",
            "demo.send_email",
            "--args",
            args,
            "--unique",
            "k3",
            "--unique-for",
            "forever",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("not a unique lifetime"),
        "{}",
        stderr(&bad)
    );
    let long = "k".repeat(600);
    let too_long = celeriac(
        &url,
        &[
            "enqueue",
            "demo.send_email",
            "--args",
            args,
            "--unique",
            &long,
        ],
    );
    assert!(!too_long.status.success());
    assert!(
        stderr(&too_long).contains("unique key"),
        "{}",
        stderr(&too_long)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_a_workflow_and_where_its_steps_belong() {
    use celeriac::{chord, Step};
    use celeriac_cli::demo::{AlbumSummary, ResizeImage, Thumbnail};
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let app = common::demo_app(&url).await;
    let members = (0..3).map(|i| {
        Step::of::<ResizeImage>(Thumbnail {
            width: 10 + i,
            height: 10,
        })
        .into()
    });
    let run = chord(members, Step::piped::<AlbumSummary>())
        .start(&app)
        .await
        .expect("starts");
    let wf = run.id().to_string();

    let out = celeriac(&url, &["inspect", &wf]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("state:       running"), "{text}");
    assert!(
        text.contains("chord(group(demo.resize_image, demo.resize_image, demo.resize_image), demo.album_summary)"),
        "{text}"
    );
    let member = run.member_id(1).to_string();
    let text = stdout(&celeriac(&url, &["inspect", &member]));
    assert!(text.contains(&format!("workflow:    {wf}")), "{text}");
    assert!(
        !text.contains("celeriac-flow"),
        "the continuation is not shown: {text}"
    );

    let worker = app.worker();
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    run.wait(std::time::Duration::from_secs(30))
        .await
        .expect("the chord ends");
    stop.graceful();
    running.await.expect("joined").expect("worker ran");

    let out = celeriac(&url, &["inspect", &wf, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["thumbnails"], 3, "{v}");

    let out = celeriac(&url, &["inspect", &celeriac::JobId::new().to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no job or workflow"),
        "{}",
        stderr(&out)
    );
}

/// Two processes opening one new SQLite file at the same moment all succeed (switching
/// a new file to WAL waits for the others instead of failing with "database is locked").
#[test]
fn processes_opening_a_new_file_at_once_all_succeed() {
    use std::process::Stdio;
    for round in 0..30 {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = url_in(dir.path());
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_celeriac"))
                    .args(["--url", &url, "queues"])
                    .env_remove("CELERIAC_URL")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("starts")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("ends");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Administrative commands leave an event with who did it; `celeriac events` shows them in
/// order, as text and as JSON lines.
#[test]
fn admin_commands_are_recorded_in_the_event_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = common::url_in(dir.path());
    let out = common::celeriac(&url, &["events"]);
    assert!(
        common::stdout(&out).contains("no events yet"),
        "{}",
        common::stdout(&out)
    );
    for args in [
        &["pause", "emails"][..],
        &["resume", "emails"][..],
        &["purge", "emails", "--yes"][..],
    ] {
        let out = common::celeriac(&url, args);
        assert!(out.status.success(), "{args:?}: {}", common::stderr(&out));
    }
    let out = common::celeriac(&url, &["events", "--json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let events: Vec<serde_json::Value> = common::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["admin.pause", "admin.resume", "admin.purge"]);
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    for e in &events {
        assert_eq!(e["queue"], "emails");
        let actor = e["actor"].as_str().expect("an actor");
        assert!(actor.starts_with(&format!("{user}@")), "{actor}");
    }
    let text = common::stdout(&common::celeriac(&url, &["events", "--limit", "1"]));
    assert!(
        text.contains("admin.purge")
            && text.contains("deleted 0 waiting jobs")
            && !text.contains("admin.pause"),
        "{text}"
    );
}

/// `celeriac queues | head -0`: a reader that goes away ends the command quietly (status 141,
/// as for a C tool killed by `SIGPIPE`), not with a panic.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let out = celeriac(
        &url,
        &[
            "enqueue",
            "demo.send_email",
            "--args",
            r#"{"to":"a@b.c","subject":"s"}"#,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The precondition: the command prints something to stdout.
    let shown = celeriac(&url, &["queues"]);
    assert!(
        shown.status.success() && !shown.stdout.is_empty(),
        "{}",
        stderr(&shown)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["--url", &url, "queues"])
        .env_remove("CELERIAC_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Closing the only read end before the command writes makes every write fail (EPIPE).
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// `celeriac redis-acl` prints the line the least-privilege tests run under, for the prefix
/// of `--prefix` or of the URL, with a placeholder for the password.
#[test]
fn redis_acl_prints_the_least_privilege_line_for_the_prefix() {
    let out = celeriac(
        "redis://app:s3cret@127.0.0.1:1/?prefix=billing",
        &["redis-acl"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        celeriac::redis::acl::setuser_line("celeriac", "password", "billing")
    );
    assert!(!stdout(&out).contains("s3cret") && !stderr(&out).contains("s3cret"));
    assert!(stderr(&out).contains("?prefix=billing"), "{}", stderr(&out));

    let out = celeriac(
        "sqlite::memory:",
        &["redis-acl", "--user", "shop", "--prefix", "shop"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        celeriac::redis::acl::setuser_line("shop", "password", "shop")
    );
    let out = celeriac("sqlite::memory:", &["redis-acl", "--prefix", ""]);
    assert!(!out.status.success());
}
