//! A worker refuses to run as root unless `--allow-root` (or `CELERIAC_ALLOW_ROOT=true`) says
//! so, before it opens the store; the demo runs as root without any flag.
#![cfg(unix)]

mod common;

use common::{enqueue, sigterm, stderr, stdout, url_in};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const REFUSAL: &str = "refusing to run a worker as root";

/// `celeriac --url <url> worker ...` with `extra` and `env`, and no CELERIAC_ALLOW_ROOT from
/// this environment; stopped with SIGTERM once `job` succeeded, or waited for if it exits
/// first (without a job, until it exits).
fn worker(url: &str, extra: &[&str], env: &[(&str, &str)], job: Option<&str>) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args([
            "--url", url, "--log", "warn", "worker", "--queues", "emails",
        ])
        .args(["--poll-interval", "20ms"])
        .args(extra)
        .env_remove("CELERIAC_URL")
        .env_remove("CELERIAC_ALLOW_ROOT")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the worker starts");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut child = Some(child);
    loop {
        let running = child.as_mut().expect("child");
        if running.try_wait().expect("try_wait").is_some() {
            break;
        }
        if let Some(job) = job {
            let info = common::celeriac(url, &["inspect", job]);
            if stdout(&info).contains("state:       succeeded") {
                sigterm(pid);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the worker neither ran nor exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
        .take()
        .expect("child")
        .wait_with_output()
        .expect("the worker exits")
}

fn email(url: &str) -> String {
    enqueue(
        url,
        &[
            "demo.send_email",
            "--args",
            r#"{"to":"root@example.com","subject":"hi"}"#,
        ],
    )
}

#[test]
fn a_worker_refuses_root_unless_allowed_and_runs_when_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("jobs.db");
    let url = url_in(dir.path());
    if nix::unistd::geteuid().is_root() {
        // Refused before the store is touched: no file of root's is left behind.
        let refused = worker(&url, &[], &[], None);
        assert!(!refused.status.success(), "refused as root");
        let err = stderr(&refused);
        assert!(err.contains(REFUSAL), "{err}");
        assert!(
            err.contains("--allow-root") && err.contains("CELERIAC_ALLOW_ROOT=true"),
            "says how to allow it: {err}"
        );
        assert!(!db.exists(), "the store was not opened");
        let refused = worker(&url, &[], &[("CELERIAC_ALLOW_ROOT", "false")], None);
        assert!(stderr(&refused).contains(REFUSAL), "false is not allowed");

        for (extra, env) in [
            (&["--allow-root"][..], &[][..]),
            (&[][..], &[("CELERIAC_ALLOW_ROOT", "true")][..]),
        ] {
            let job = email(&url);
            let out = worker(&url, extra, env, Some(&job));
            assert!(out.status.success(), "{extra:?} {env:?}: {}", stderr(&out));
            assert!(
                stdout(&out).contains("worker stopped: started=1"),
                "it ran the job: {}",
                stdout(&out)
            );
            assert!(
                stderr(&out).contains("running as root"),
                "it warns: {}",
                stderr(&out)
            );
        }
    } else {
        // Not root: nothing to refuse, with or without the flag.
        for extra in [&[][..], &["--allow-root"][..]] {
            let job = email(&url);
            let out = worker(&url, extra, &[], Some(&job));
            assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
            assert!(!stderr(&out).contains(REFUSAL), "{}", stderr(&out));
            assert!(
                stdout(&out).contains("worker stopped: started=1"),
                "it ran the job: {}",
                stdout(&out)
            );
        }
    }
}

#[test]
fn the_demo_runs_as_root_without_a_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["demo", "--jobs", "30"])
        .current_dir(dir.path())
        .env_remove("CELERIAC_URL")
        .env_remove("CELERIAC_ALLOW_ROOT")
        .output()
        .expect("the demo runs");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(REFUSAL), "{}", stderr(&out));
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));
}
