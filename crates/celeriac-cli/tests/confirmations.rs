//! Commands that delete or change many things at once ask first: with `--yes` they act and say
//! how many they touched; without it, off a terminal, they refuse and say how many they would
//! have touched, and nothing changes; on a terminal they go ahead only when the name is typed
//! back.

mod common;

use celeriac::{App, JobOptions, JobState};
use celeriac_testkit::RedisServer;
use common::{celeriac, count, demo_app, enqueue_emails, stderr, stdout, url_in, WorkerProc};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Asserts `out` is a refusal that asks for `--yes` and says what it would do.
fn assert_refused(out: &Output, says: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "refused without --yes: {}",
        stdout(out)
    );
    assert!(err.contains(says), "says `{says}`: {err}");
    assert!(err.contains("add --yes to confirm"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
}

/// Asserts `out` succeeded and its standard output says `says`.
fn assert_done(out: &Output, says: &str) {
    assert!(out.status.success(), "{}", stderr(out));
    assert!(stdout(out).contains(says), "says `{says}`: {}", stdout(out));
}

/// Jobs of an unknown task in `emails`, run by a worker process until each is a dead letter.
async fn dead_letters(url: &str, app: &App, n: u64) {
    for _ in 0..n {
        let opts = JobOptions {
            queue: Some("emails".into()),
            ..JobOptions::default()
        };
        app.client()
            .enqueue_json(None, "legacy.task", &serde_json::Value::Null, opts)
            .await
            .expect("enqueue");
    }
    let worker = WorkerProc::spawn(url, "dead-maker", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(app, JobState::Dead).await < n {
        assert!(Instant::now() < deadline, "the jobs did not die in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop();
    assert_eq!(count(app, JobState::Dead).await, n);
}

/// `url` in single quotes for `sh -c`.
fn quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs `celeriac --url <url> <args>` on a pseudo-terminal (`script` from util-linux), typing
/// `typed` and Enter; returns what the terminal showed.
fn on_a_terminal(url: &str, args: &[&str], typed: &str) -> Output {
    let line = [env!("CARGO_BIN_EXE_celeriac"), "--url", url]
        .iter()
        .chain(args)
        .map(|a| quoted(a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .env_remove("CELERIAC_URL")
        .env_remove("CELERIAC_YES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` runs (util-linux's, in Debian's essential bsdutils package)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{typed}\n").as_bytes())
        .expect("typed");
    child.wait_with_output().expect("script ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_asks_first_and_says_how_many_it_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let app = demo_app(&url).await;
    enqueue_emails(&app, 5).await;
    assert_eq!(count(&app, JobState::Pending).await, 5);

    let out = celeriac(&url, &["purge", "emails"]);
    assert_refused(&out, "deletes the 5 waiting jobs of queue `emails`");
    assert_eq!(count(&app, JobState::Pending).await, 5, "nothing deleted");

    let out = celeriac(&url, &["purge", "emails", "--yes"]);
    assert_done(&out, "deleted 5 waiting jobs from emails");
    assert_eq!(count(&app, JobState::Pending).await, 0);

    // Nothing left: nothing to ask, nothing done.
    let out = celeriac(&url, &["purge", "emails"]);
    assert_done(&out, "nothing to do: queue `emails` has no waiting jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_retries_and_purges_of_many_ask_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let app = demo_app(&url).await;
    dead_letters(&url, &app, 3).await;

    let out = celeriac(&url, &["dlq", "retry"]);
    assert_refused(&out, "puts the 3 dead letters of every queue back");
    let out = celeriac(&url, &["dlq", "retry", "--queue", "emails"]);
    assert_refused(&out, "puts the 3 dead letters of queue `emails` back");
    let groups = celeriac(&url, &["dlq", "groups", "--json"]);
    let groups: serde_json::Value = serde_json::from_slice(&groups.stdout).expect("JSON");
    let group = groups[0]["id"].as_str().expect("one group");
    let out = celeriac(&url, &["dlq", "retry", "--group", group]);
    assert_refused(&out, &format!("puts the 3 dead letters of group {group}"));
    let out = celeriac(&url, &["dlq", "purge"]);
    assert_refused(&out, "deletes the 3 dead letters of every queue");
    let out = celeriac(&url, &["dlq", "purge", "--queue", "emails"]);
    assert_refused(&out, "deletes the 3 dead letters of queue `emails`");
    assert_eq!(count(&app, JobState::Dead).await, 3, "nothing changed");
    assert_eq!(count(&app, JobState::Pending).await, 0, "nothing retried");

    let out = celeriac(&url, &["dlq", "purge", "-y"]);
    assert_done(&out, "deleted 3 dead letters");
    assert_eq!(count(&app, JobState::Dead).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_on_all_that_match_ask_first_and_named_ids_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let app = demo_app(&url).await;
    let ids = enqueue_emails(&app, 4).await;

    let out = celeriac(&url, &["jobs", "delete", "-q", "emails"]);
    assert_refused(
        &out,
        "deletes the 4 jobs of queue `emails` in state pending for good",
    );
    let out = celeriac(
        &url,
        &["jobs", "cancel", "-q", "emails", "-t", "demo.send_email"],
    );
    assert_refused(
        &out,
        "cancels the 4 jobs of queue `emails` in state pending matching the filters",
    );
    // A retry of jobs that are not dead letters is an error before anything is asked.
    let out = celeriac(&url, &["jobs", "retry", "-q", "emails"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("add --state dead"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(&app, JobState::Pending).await, 4, "nothing changed");

    let one = ids[0].to_string();
    let out = celeriac(&url, &["jobs", "delete", "-q", "emails", "--ids", &one]);
    assert_done(&out, "deleted 1 of 1 matching jobs");
    assert_eq!(count(&app, JobState::Pending).await, 3);

    // CELERIAC_YES is --yes.
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["--url", &url, "jobs", "delete", "-q", "emails"])
        .env_remove("CELERIAC_URL")
        .env("CELERIAC_YES", "true")
        .output()
        .expect("runs");
    assert_done(&out, "deleted 3 of 3 matching jobs");
    assert_eq!(count(&app, JobState::Pending).await, 0);
}

#[test]
fn breaker_overrides_ask_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let state = || {
        let out = celeriac(&url, &["breaker", "status", "partner", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")["state"].clone()
    };
    for (cmd, says) in [
        ("force-open", "forces breaker `partner` open"),
        ("force-closed", "forces breaker `partner` closed"),
        ("reset", "resets breaker `partner`"),
    ] {
        let out = celeriac(&url, &["breaker", cmd, "partner"]);
        assert_refused(&out, says);
        assert!(state().is_null(), "{cmd}: nothing written to the store");
    }
    let out = celeriac(&url, &["breaker", "force-open", "partner", "--yes"]);
    assert_done(&out, "partner: forced_open");
    assert_eq!(state(), "forced_open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_name_typed_back_confirms_and_nothing_else_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url_in(dir.path());
    let app = demo_app(&url).await;
    enqueue_emails(&app, 3).await;
    let prompt =
        "This deletes the 3 waiting jobs of queue `emails` (3 pending, 0 scheduled, 0 retrying; \
         running jobs stay). Type `emails` to confirm:";

    for wrong in ["y", "yes", "email"] {
        let out = on_a_terminal(&url, &["purge", "emails"], wrong);
        let shown = stdout(&out);
        // Precondition: the command saw a terminal (it asked instead of refusing).
        assert!(shown.contains(prompt), "asked on the terminal: {shown}");
        assert!(!out.status.success(), "`{wrong}` does not confirm: {shown}");
        assert!(
            shown.contains(&format!("not confirmed (`{wrong}` is not `emails`)")),
            "{shown}"
        );
        assert_eq!(count(&app, JobState::Pending).await, 3, "nothing deleted");
    }

    let out = on_a_terminal(&url, &["purge", "emails"], "emails");
    let shown = stdout(&out);
    assert!(shown.contains(prompt), "asked on the terminal: {shown}");
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("deleted 3 waiting jobs from emails"),
        "{shown}"
    );
    assert_eq!(count(&app, JobState::Pending).await, 0);

    let out = on_a_terminal(&url, &["breaker", "force-open", "partner"], "partner");
    let shown = stdout(&out);
    assert!(
        shown.contains("This forces breaker `partner` open") && shown.contains("Type `partner`"),
        "asked on the terminal: {shown}"
    );
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("partner: forced_open"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_dead_letters_and_purges_ask_first() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    let app = demo_app(&url).await;
    dead_letters(&url, &app, 3).await;

    let out = celeriac(&url, &["dlq", "retry"]);
    assert_refused(&out, "puts the 3 dead letters of every queue back");
    assert_eq!(count(&app, JobState::Dead).await, 3, "nothing retried");
    assert_eq!(count(&app, JobState::Pending).await, 0);

    let out = celeriac(&url, &["dlq", "retry", "--yes"]);
    assert_done(&out, "3 jobs back in their queues");
    assert_eq!(count(&app, JobState::Dead).await, 0);
    assert_eq!(count(&app, JobState::Pending).await, 3);

    let out = celeriac(&url, &["purge", "emails"]);
    assert_refused(&out, "deletes the 3 waiting jobs of queue `emails`");
    assert_eq!(count(&app, JobState::Pending).await, 3, "nothing deleted");

    let out = celeriac(&url, &["purge", "emails", "--yes"]);
    assert_done(&out, "deleted 3 waiting jobs from emails");
    assert_eq!(count(&app, JobState::Pending).await, 0);
}
