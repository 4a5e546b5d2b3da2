//! The short fault run with the real binaries: a private Redis, two `shop serve`, two
//! `shop worker`, the SMTP sink, oha driving a low steady mix, while the runner kills workers,
//! restarts Redis and makes the sink refuse. Every verdict must pass.

use std::process::Command;

/// The verdicts `shop-load faults` prints, one line each.
const VERDICTS: &[&str] = &[
    "every-order-emailed",
    "no-email-twice",
    "listings-during-redis-restart",
    "update-visible-across-instances",
    "breaker-opened-and-closed",
    "rate-limits-held",
    "kills-hit-running-jobs",
];

fn oha_installed() -> bool {
    let mut candidates = vec![std::path::PathBuf::from("oha")];
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(std::path::PathBuf::from(home).join(".cache/celeriac/tools/bin/oha"));
    }
    if let Ok(tools) = std::env::var("CELERIAC_TOOLS") {
        candidates.push(std::path::PathBuf::from(tools).join("bin/oha"));
    }
    candidates.iter().any(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("1.16.0"))
    })
}

#[test]
fn the_short_fault_run_passes_every_verdict() {
    assert!(
        oha_installed(),
        "oha 1.16.0 is required for the fault run: cargo install --locked oha --version 1.16.0 \
         --root ~/.cache/celeriac/tools"
    );
    let work = tempfile::tempdir().expect("a temporary folder");
    let out = Command::new(env!("CARGO_BIN_EXE_shop-load"))
        .args(["faults", "--short", "--rate", "60", "--work-dir"])
        .arg(work.path())
        .arg("--shop")
        .arg(env!("CARGO_BIN_EXE_shop"))
        .output()
        .expect("running shop-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    for name in VERDICTS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("verdict:") && l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("no verdict line for {name}\n{report}"));
        assert!(
            line.starts_with("verdict: PASS "),
            "{name} failed: {line}\n{report}"
        );
    }
    assert!(
        out.status.success(),
        "shop-load faults exited with {}\n{report}",
        out.status
    );
    // Preconditions: the run carried orders and faults (the timeline shows them).
    for event in [
        "kill -9 worker-",
        "Redis: graceful SHUTDOWN",
        "SMTP sink refuses",
        "breaker smtp: open",
    ] {
        assert!(
            stdout.contains(event) || stderr.contains(event),
            "the timeline lacks `{event}`\n{report}"
        );
    }
}
