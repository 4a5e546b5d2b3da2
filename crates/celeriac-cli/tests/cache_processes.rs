//! Real processes sharing one cache L2: `celeriac bench cache` starts three processes that
//! each make 1,000 concurrent gets of one cold key at the same moment; the loader runs once
//! across all of them, and the two other processes wait for it. On Redis (a server the testkit starts) and on a SQLite file.

mod common;

use celeriac_testkit::RedisServer;

fn stampede(url: &str) {
    let out = common::celeriac(
        url,
        &[
            "bench", "cache", "--gets", "2000", "--keys", "100", "--json",
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["stampede_processes"], 3, "{report}");
    assert_eq!(report["stampede_gets"], 1000, "{report}");
    assert_eq!(
        report["stampede_loader_calls"], 1,
        "3 processes × 1,000 gets of one cold key load it once: {report}"
    );
    // The processes really contended: the two that did not load waited for the one that did
    // (a process that started late would have read the value and proved nothing).
    assert_eq!(
        report["stampede_processes_waited"], 2,
        "every process but the loader's waited for its load: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_load_a_cold_key_once_on_redis() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    tokio::task::spawn_blocking(move || stampede(&url))
        .await
        .expect("joined");
}

#[test]
fn three_processes_load_a_cold_key_once_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    stampede(&common::url_in(dir.path()));
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", common::stderr(out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The table of `celeriac cache stats`: every column there, and each one as wide on every
/// line (the L2's line follows it).
fn assert_table_lines_up(text: &str) {
    let header = text
        .lines()
        .find(|l| l.starts_with("NAMESPACE"))
        .unwrap_or_else(|| panic!("a header: {text}"));
    for column in [
        "INST",
        "L1 HITS",
        "L2 HITS",
        "MISSES",
        "HIT %",
        "STALE",
        "LOADS",
        "LOAD MS",
        "WAITERS",
        "LOADING",
        "ADDED",
        "EVICTED",
        "EXPIRED",
        "REMOVED",
        "L1 BYTES",
        "L2 ERR",
        "L2 FULL",
        "TOO LARGE",
    ] {
        assert!(header.contains(column), "no {column}: {text}");
    }
    let rows: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("L2 ("))
        .collect();
    assert!(rows.len() >= 2, "a header and a row: {text}");
    for row in &rows {
        assert_eq!(
            row.chars().count(),
            header.chars().count(),
            "every line of the table as wide: {text}"
        );
    }
}

/// The line of `celeriac cache stats` about the L2's memory.
fn l2_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("L2 ("))
        .unwrap_or_else(|| panic!("no L2 line: {text}"))
}

/// A Redis bounded to 5 MiB that evicts (`allkeys-lfu`), overfilled so it evicted keys and
/// emptied again; `cache stats` then tells the L2's memory: its use out of the bound, the
/// policy and the keys evicted, as Redis counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stats_tells_a_bounded_redis_memory_policy_and_evictions() {
    // 10 MiB into 5 MiB, then emptied for the application.
    let (server, evicted) = RedisServer::evicting_after_overfill(5 << 20)
        .await
        .expect("a bounded server evicts");
    assert!(evicted > 0, "10 MiB into 5 MiB evicted keys");
    // An evicting Redis is refused for jobs unless the URL accepts it.
    let url = format!("{}?allow_eviction=true", server.url());
    let (stats, text) = tokio::task::spawn_blocking(move || {
        let warm = json(&common::celeriac(
            &url,
            &["cache", "warm", "products", "--all", "--json"],
        ));
        assert_eq!(warm["loaded"], 200, "{warm}");
        let stats = json(&common::celeriac(&url, &["cache", "stats", "--json"]));
        let table = common::celeriac(&url, &["cache", "stats"]);
        assert!(table.status.success(), "{}", common::stderr(&table));
        (stats, common::stdout(&table))
    })
    .await
    .expect("joined");
    let memory = &stats[0]["l2_memory"];
    assert_eq!(memory["backend"], "redis", "{stats}");
    assert_eq!(memory["max_bytes"], 5 << 20, "{stats}");
    assert_eq!(memory["policy"], "allkeys-lfu", "{stats}");
    assert_eq!(
        memory["evicted_keys"], evicted,
        "Redis's own count: {stats}"
    );
    assert_eq!(memory["refuses_when_full"], false, "{stats}");
    let used = memory["used_bytes"].as_u64().expect("used bytes");
    assert!(
        used > 0 && used < 5 << 20,
        "emptied below the bound: {stats}"
    );

    assert_table_lines_up(&text);
    let line = l2_line(&text);
    assert!(line.starts_with("L2 (redis): "), "{text}");
    assert!(line.contains(" used of 5.0 MiB ("), "{text}");
    assert!(line.contains("%), policy allkeys-lfu, "), "{text}");
    assert!(line.ends_with(" evicted"), "{text}");
    assert!(!line.contains("writes fail"), "this policy evicts: {text}");
}

/// A Redis bounded with `noeviction` refuses writes once full: `cache stats` says so, and
/// opening it with `?role=cache` logs a warning naming the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stats_warns_that_a_full_noeviction_redis_refuses_writes() {
    let server = RedisServer::builder()
        .arg("--maxmemory", "5mb")
        .maxmemory_policy("noeviction")
        .start()
        .await
        .expect("redis-server starts");
    let refused = server
        .overfill(10 << 20, 128 << 10)
        .await
        .expect("every write taken or refused for space");
    assert!(refused > 0, "the bound was reached: writes were refused");
    assert_eq!(
        server
            .info_field("stats", "evicted_keys")
            .await
            .expect("INFO stats"),
        "0"
    );
    // Room again, so the command's own connection starts as it would on any day.
    server.command(&["FLUSHALL"]).await.expect("FLUSHALL");
    // Opened as a cache store, which warns at connect that this policy refuses when full.
    let url = format!("{}?role=cache", server.url());
    let out = tokio::task::spawn_blocking(move || common::celeriac(&url, &["cache", "stats"]))
        .await
        .expect("joined");
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    let line = l2_line(&text);
    assert!(
        line.starts_with("L2 (redis): ")
            && line.contains(" of 5.0 MiB (")
            && line.contains("policy noeviction, 0 keys evicted")
            && line.contains("writes fail when full"),
        "{text}"
    );
    let warned = common::stderr(&out);
    assert!(
        warned.contains("WARN") && warned.contains("maxmemory-policy noeviction"),
        "the connect warns of the policy: {warned}"
    );
}

/// `celeriac cache warm` loads the demo catalogue into the L2 of a SQLite file; another
/// process then finds every key fresh there (nothing loads again), and `cache stats` sums
/// the published counters of both.
#[test]
fn cache_warm_fills_the_l2_and_cache_stats_counts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = common::url_in(dir.path());
    let first = json(&common::celeriac(
        &url,
        &["cache", "warm", "products", "--all", "--json"],
    ));
    assert_eq!(
        (&first["ok"], &first["loaded"], &first["failed"]),
        (&200.into(), &200.into(), &0.into()),
        "{first}"
    );
    let again = json(&common::celeriac(
        &url,
        &[
            "cache",
            "warm",
            "products",
            "--keys",
            "p1,p50,p200",
            "--json",
        ],
    ));
    assert_eq!(
        (&again["ok"], &again["loaded"]),
        (&3.into(), &0.into()),
        "a new process finds the keys in the L2: {again}"
    );
    let stats = json(&common::celeriac(&url, &["cache", "stats", "--json"]));
    let rows = stats.as_array().expect("one row per namespace");
    assert_eq!(rows.len(), 1, "{stats}");
    let row = &rows[0];
    assert_eq!(row["namespace"], "products");
    assert_eq!(row["instances"], 2, "both warms published: {row}");
    assert_eq!(row["stats"]["loads"], 200, "{row}");
    assert_eq!(row["stats"]["l2_hits"], 3, "{row}");
    let memory = &row["l2_memory"];
    assert_eq!(memory["backend"], "sqlite", "{row}");
    assert!(
        memory["used_bytes"].as_u64().is_some_and(|b| b > 0),
        "the 200 warmed keys take room in the file: {row}"
    );
    assert!(memory["policy"].is_string(), "{row}");
    let table = common::celeriac(&url, &["cache", "stats", "--namespace", "products"]);
    assert!(table.status.success(), "{}", common::stderr(&table));
    let text = common::stdout(&table);
    assert!(
        text.contains("HIT %") && text.lines().any(|l| l.starts_with("products")),
        "{text}"
    );
    assert_table_lines_up(&text);
    let l2 = l2_line(&text);
    assert!(
        l2.starts_with("L2 (sqlite): ") && l2.contains(" used") && l2.contains(", policy "),
        "{text}"
    );

    let bad = common::celeriac(&url, &["cache", "warm", "nope", "--all"]);
    assert!(!bad.status.success());
    assert!(
        common::stderr(&bad).contains("no cache warmer for namespace `nope`")
            && common::stderr(&bad).contains("products"),
        "{}",
        common::stderr(&bad)
    );
    let neither = common::celeriac(&url, &["cache", "warm", "products"]);
    assert!(common::stderr(&neither).contains("--keys a,b,c or --all"));
}

/// A schedule fires `celeriac.cache.warm`, a worker runs it, and the warmed keys are then in
/// the L2 for any process.
#[test]
fn a_scheduled_warm_job_run_by_a_worker_fills_the_cache() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    let url = common::url_in(dir.path());
    let schedules = dir.path().join("warm.toml");
    std::fs::write(
        &schedules,
        r#"
[[schedule]]
name = "warm-products"
every = "1s"
task = "celeriac.cache.warm"
args = { namespace = "products", keys = ["p7", "p8", "p9"] }
missed = "skip"
"#,
    )
    .expect("write the schedule file");
    let schedules = schedules.to_string_lossy().into_owned();
    let worker = common::WorkerProc::spawn_on(
        &url,
        "warmer",
        "default",
        &["--beat", "--schedules", &schedules],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = json(&common::celeriac(&url, &["queues", "--json"]));
        let done: u64 = q
            .as_array()
            .into_iter()
            .flatten()
            .filter(|q| q["queue"] == "default")
            .filter_map(|q| q["counts"]["succeeded"].as_u64())
            .sum();
        if done >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no warm job succeeded within a minute: {q}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    worker.stop();
    let check = json(&common::celeriac(
        &url,
        &["cache", "warm", "products", "--keys", "p7,p8,p9", "--json"],
    ));
    assert_eq!(
        (&check["ok"], &check["loaded"]),
        (&3.into(), &0.into()),
        "the worker's job left the keys in the L2: {check}"
    );
    let stats = json(&common::celeriac(
        &url,
        &["cache", "stats", "--namespace", "products", "--json"],
    ));
    assert!(
        stats[0]["stats"]["loads"].as_u64() >= Some(3),
        "the job's loads were published: {stats}"
    );
}

/// A writer process acknowledges write-behind writes and is killed with `kill -9` while
/// writing, before anything is flushed (it runs no worker); a worker process started
/// afterwards flushes every acknowledged write to the "database" (a file of JSON lines).
fn write_behind_survives_kill_dash_nine(url: &str, dir: &std::path::Path) {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let stock = dir.join("stock.jsonl");
    let stock_arg = stock.to_string_lossy().into_owned();
    let mut writer = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args([
            "--url",
            url,
            "--log",
            "error",
            "--demo-stock-file",
            &stock_arg,
        ])
        .args([
            "cache",
            "write-behind-demo",
            "--writes",
            "1000000",
            "--keys",
            "25",
        ])
        .env_remove("CELERIAC_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the writer starts");
    let mut out = BufReader::new(writer.stdout.take().expect("stdout"));
    let mut text = String::new();
    let mut acks = 0;
    while acks < 300 {
        let mut line = String::new();
        let n = out.read_line(&mut line).expect("read the writer");
        assert!(n > 0, "the writer ended early after {acks} acks");
        acks += usize::from(line.starts_with("acked "));
        text.push_str(&line);
    }
    writer.kill().expect("SIGKILL");
    let status = writer.wait().expect("the writer is reaped");
    assert!(!status.success(), "killed, not exited: {status:?}");
    // What it printed before it died: every one of those writes was acknowledged.
    out.read_to_string(&mut text)
        .expect("the rest of its output");
    let acked: BTreeSet<(String, u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("acked ")?.split(' ');
            Some((
                f.next()?.to_string(),
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect();
    assert!(acked.len() >= 300, "{} acks", acked.len());
    assert!(!stock.exists(), "the writer flushed nothing itself");

    let worker = common::WorkerProc::spawn_on(
        url,
        "flusher",
        "default",
        &["--demo-stock-file", &stock_arg],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let flushed = loop {
        let flushed: BTreeSet<(String, u64, u64)> = std::fs::read_to_string(&stock)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let w: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                (
                    w["key"].as_str().expect("key").to_string(),
                    w["version"].as_u64().expect("version"),
                    w["value"].as_u64().expect("value"),
                )
            })
            .collect();
        if acked.is_subset(&flushed) {
            break flushed;
        }
        assert!(
            Instant::now() < deadline,
            "after two minutes, {} of {} acknowledged writes were flushed; first missing: {:?}",
            acked.intersection(&flushed).count(),
            acked.len(),
            acked.difference(&flushed).next()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    worker.stop();
    // The newest version of each key is the last value written to it.
    let mut newest: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (k, version, value) in &flushed {
        let e = newest.entry(k).or_insert((0, 0));
        if *version > e.0 {
            *e = (*version, *value);
        }
    }
    for (k, version, value) in &acked {
        let (v, val) = newest[k.as_str()];
        assert!(v >= *version, "{k}: version {v} < acknowledged {version}");
        if v == *version {
            assert_eq!(val, *value, "{k} v{v}");
        }
    }
}

#[test]
fn acknowledged_write_behind_writes_survive_kill_dash_nine_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_behind_survives_kill_dash_nine(&common::url_in(dir.path()), dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_write_behind_writes_survive_kill_dash_nine_on_redis() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || write_behind_survives_kill_dash_nine(&url, &path))
        .await
        .expect("joined");
}

/// Two processes hold key `k` in their L1; one sets a new value, and the other's reads
/// change to it once the invalidation arrives (Redis pub/sub; on SQLite, the events table
/// polled every 100 ms). The watcher gives up, failing with a clear message, after a
/// generous 30 s; the delay measured is printed, not asserted.
fn an_update_reaches_the_other_process(url: &str) {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let start = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_celeriac"))
            .args([
                "--url", url, "--log", "error", "cache", "probe", "--within", "30s",
            ])
            .args(extra)
            .env_remove("CELERIAC_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("a probe process starts")
    };
    let first_line = |child: &mut std::process::Child| {
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        line.trim().to_string()
    };
    let mut watcher = start(&[]);
    let mut setter = start(&["--set", "v1"]);
    assert_eq!(first_line(&mut watcher), "ready v0", "the watcher holds k");
    assert_eq!(first_line(&mut setter), "ready v0", "the setter holds k");
    setter
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("tell the setter");
    let set = setter.wait_with_output().expect("the setter ends");
    assert!(set.status.success(), "{}", common::stderr(&set));
    let set_at: i64 = common::stdout(&set)
        .trim()
        .strip_prefix("set ")
        .and_then(|ms| ms.parse().ok())
        .expect("set <ms>");
    let seen = watcher.wait_with_output().expect("the watcher ends");
    assert!(
        seen.status.success(),
        "the other process never saw the update: {}",
        common::stderr(&seen)
    );
    let text = common::stdout(&seen);
    let mut fields = text.split_whitespace();
    assert_eq!(
        (fields.next(), fields.next()),
        (Some("saw"), Some("v1")),
        "the other process's view changed to the new value: {text}"
    );
    let saw_at: i64 = fields.next().and_then(|ms| ms.parse().ok()).expect("ms");
    eprintln!(
        "{url}: the update reached the other process's L1 in {} ms",
        saw_at - set_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_in_one_process_reaches_another_on_redis() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let url = server.url();
    tokio::task::spawn_blocking(move || an_update_reaches_the_other_process(&url))
        .await
        .expect("joined");
}

#[test]
fn an_update_in_one_process_reaches_another_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    an_update_reaches_the_other_process(&common::url_in(dir.path()));
}
