//! `celeriac bench` on Redis tells what each phase cost the server per job (CPU from
//! `INFO cpu`, memory per queued job from `used_memory`, the commands from
//! `INFO commandstats`), on a server the testkit starts; nothing of it on SQLite or with
//! `--redis-cpu=false`, and a one-line note, not a failure, when the user may not run `INFO`.

mod common;

use celeriac_testkit::RedisServer;
use serde_json::Value;

const FIELDS: [&str; 5] = [
    "redis_cpu_us_per_job_enqueue",
    "redis_cpu_us_per_job_process",
    "redis_bytes_per_queued_job",
    "redis_commandstats_enqueue",
    "redis_commandstats_process",
];

/// `celeriac --url URL bench -n 300 ... EXTRA`, run to success, its standard output.
fn bench(url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["-n", "300", "--batch", "100", "--latency-samples", "3"];
    args.extend_from_slice(extra);
    common::bench(url, &args)
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn positive(report: &Value, field: &str) -> f64 {
    let x = report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number: {report}"));
    assert!(x.is_finite() && x > 0.0, "{field} = {x}: {report}");
    x
}

/// The line of `command` in a phase's commandstats.
fn command<'a>(report: &'a Value, phase: &str, command: &str) -> &'a Value {
    report[phase]
        .as_array()
        .unwrap_or_else(|| panic!("{phase} is a list: {report}"))
        .iter()
        .find(|c| c["command"] == command)
        .unwrap_or_else(|| panic!("{command} in {phase}: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_bench_tells_what_each_phase_cost_redis() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    let (report, text) = tokio::task::spawn_blocking(move || {
        let report = json(&bench(&url, &["--json"]));
        let text = common::stdout(&bench(&url, &[]));
        (report, text)
    })
    .await
    .expect("joined");
    assert_eq!(report["jobs"], 300, "{report}");
    assert!(report.get("redis_note").is_none(), "{report}");
    positive(&report, "redis_cpu_us_per_job_enqueue");
    positive(&report, "redis_cpu_us_per_job_process");
    let bytes = positive(&report, "redis_bytes_per_queued_job");
    assert!(
        bytes < 1_000_000.0,
        "a queued no-op job takes less than a megabyte: {bytes}"
    );
    for phase in ["redis_commandstats_enqueue", "redis_commandstats_process"] {
        let evalsha = command(&report, phase, "evalsha");
        let calls = evalsha["calls"].as_u64().expect("calls");
        assert!(calls > 0, "{evalsha}");
        let per_job = evalsha["calls_per_job"].as_f64().expect("calls_per_job");
        assert!((per_job - calls as f64 / 300.0).abs() < 1e-9, "{evalsha}");
        let usec = evalsha["usec"].as_u64().expect("usec") as f64;
        let per_call = evalsha["usec_per_call"].as_f64().expect("usec_per_call");
        assert!((per_call - usec / calls as f64).abs() < 1e-6, "{evalsha}");
        // Costliest first.
        let usecs: Vec<u64> = report[phase]
            .as_array()
            .expect("a list")
            .iter()
            .map(|c| c["usec"].as_u64().expect("usec"))
            .collect();
        assert!(usecs.windows(2).all(|w| w[0] >= w[1]), "{phase}: {usecs:?}");
    }
    // The bench's own readings are not counted among the commands.
    for phase in ["redis_commandstats_enqueue", "redis_commandstats_process"] {
        assert!(
            report[phase]
                .as_array()
                .expect("a list")
                .iter()
                .all(|c| c["command"] != "info"),
            "{phase}: {report}"
        );
    }
    for line in [
        "Redis CPU      enqueue ",
        "Redis memory   ",
        "where Redis's time went, enqueue",
        "where Redis's time went, processing",
        "  command ",
        "  evalsha ",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cpu_false_leaves_the_redis_figures_out() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    let report =
        tokio::task::spawn_blocking(move || json(&bench(&url, &["--redis-cpu=false", "--json"])))
            .await
            .expect("joined");
    assert_eq!(report["jobs"], 300, "the bench ran: {report}");
    for field in FIELDS.iter().chain(&["redis_note"]) {
        assert!(report.get(field).is_none(), "{field}: {report}");
    }
}

#[test]
fn on_sqlite_there_are_no_redis_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = common::url_in(dir.path());
    let report = json(&bench(&url, &["--json"]));
    assert_eq!(report["jobs"], 300, "the bench ran: {report}");
    positive(&report, "process_jobs_per_sec");
    for field in FIELDS.iter().chain(&["redis_note"]) {
        assert!(report.get(field).is_none(), "{field}: {report}");
    }
    let text = common::stdout(&bench(&url, &[]));
    assert!(text.contains("processing "), "{text}");
    assert!(!text.contains("Redis"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_refused_info_gets_a_note_not_a_failure() {
    let server = RedisServer::builder()
        .acl_user("bencher", "s3cret-pw")
        .acl_rules(["~*", "&*", "+@all", "-info"])
        .start()
        .await
        .expect("redis-server starts");
    // The precondition: this user really may not run INFO.
    let refused = server.command(&["INFO", "cpu"]).await;
    assert!(
        format!("{refused:?}").contains("NOPERM"),
        "INFO is refused: {refused:?}"
    );
    let url = server.url();
    let (report, text) = tokio::task::spawn_blocking(move || {
        (
            json(&bench(&url, &["--json"])),
            common::stdout(&bench(&url, &[])),
        )
    })
    .await
    .expect("joined");
    assert_eq!(report["jobs"], 300, "the bench ran: {report}");
    for field in FIELDS {
        assert!(report.get(field).is_none(), "{field}: {report}");
    }
    let note = report["redis_note"].as_str().expect("a note");
    assert!(note.contains("may not run INFO"), "{note}");
    assert!(!note.contains("s3cret-pw"), "{note}");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("Redis")).collect();
    assert_eq!(lines.len(), 1, "one line about Redis:\n{text}");
    assert!(lines[0].contains("may not run INFO"), "{text}");
}
