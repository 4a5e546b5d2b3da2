//! `celeriac bench --queues N` on a Redis Cluster the testkit starts: the backlog is dealt over
//! N queues, each on the master that serves its slot, and the report tells what each master
//! cost (its queues, its CPU in each phase and per job of its queues) besides the totals.

mod common;

use celeriac_testkit::RedisCluster;
use serde_json::Value;
use std::collections::BTreeSet;

const JOBS: u64 = 3000;
const QUEUES: usize = 6;

fn queue_names() -> Vec<String> {
    (0..QUEUES).map(|i| format!("celeriac-bench-{i}")).collect()
}

/// `celeriac --url URL bench -n 3000 --queues 6 ... EXTRA`, run to success.
fn bench(url: &str, extra: &[&str]) -> std::process::Output {
    let jobs = JOBS.to_string();
    let queues = QUEUES.to_string();
    let mut args = vec![
        "-n",
        &jobs,
        "--queues",
        &queues,
        "--batch",
        "500",
        "--latency-samples",
        "3",
    ];
    args.extend_from_slice(extra);
    common::bench(url, &args)
}

fn number(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number: {v}"))
}

/// Which master (by address) serves each queue, asked of the cluster itself: the slot of
/// `{<queue>}` by `CLUSTER KEYSLOT`, and each master's ranges from its own line of
/// `CLUSTER NODES`.
async fn owners(cluster: &RedisCluster) -> Vec<(String, String)> {
    let mut ranges: Vec<(String, Vec<(u16, u16)>)> = Vec::new();
    for node in cluster.nodes() {
        let text = node
            .command(&["CLUSTER", "NODES"])
            .await
            .expect("CLUSTER NODES")
            .as_text()
            .expect("text");
        let me = text
            .lines()
            .find(|l| l.contains("myself"))
            .expect("a line about itself");
        let slots = me
            .split_whitespace()
            .skip(8)
            .map(|s| match s.split_once('-') {
                Some((a, b)) => (a.parse().expect("slot"), b.parse().expect("slot")),
                None => {
                    let a = s.parse().expect("slot");
                    (a, a)
                }
            })
            .collect();
        ranges.push((format!("127.0.0.1:{}", node.port()), slots));
    }
    let mut out = Vec::new();
    for q in queue_names() {
        let slot = cluster.nodes()[0]
            .command(&["CLUSTER", "KEYSLOT", &format!("{{{q}}}")])
            .await
            .expect("CLUSTER KEYSLOT");
        let slot = u16::try_from(slot.as_int().expect("an integer")).expect("a slot number");
        let owner = ranges
            .iter()
            .find(|(_, r)| r.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|(addr, _)| addr.clone())
            .unwrap_or_else(|| panic!("a master serves slot {slot}"));
        out.push((q, owner));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_report_tells_what_each_master_cost() {
    let cluster = RedisCluster::start().await.expect("the cluster starts");
    let expected = owners(&cluster).await;
    // The precondition: the six queues land on at least two masters.
    let distinct: BTreeSet<&String> = expected.iter().map(|(_, o)| o).collect();
    assert!(
        distinct.len() >= 2,
        "the queues spread over several masters: {expected:?}"
    );
    let url = format!("{}?allow_volatile=true", cluster.url());
    let (report, text) = tokio::task::spawn_blocking(move || {
        let out = bench(&url, &["--json"]);
        let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        let text = common::stdout(&bench(&url, &[]));
        (report, text)
    })
    .await
    .expect("joined");

    assert_eq!(report["jobs"], JOBS, "{report}");
    assert_eq!(report["queues"], QUEUES, "{report}");
    assert!(report.get("redis_note").is_none(), "{report}");
    assert!(number(&report, "process_jobs_per_sec") > 0.0, "{report}");
    // The totals: every master's CPU over all the jobs, memory added up.
    for field in [
        "redis_cpu_us_per_job_enqueue",
        "redis_cpu_us_per_job_process",
    ] {
        let x = number(&report, field);
        assert!(x.is_finite() && x > 0.0, "{field} = {x}: {report}");
    }
    let bytes = number(&report, "redis_bytes_per_queued_job");
    assert!(bytes > 0.0 && bytes < 1_000_000.0, "{bytes}: {report}");
    assert!(
        report["redis_commandstats_process"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["command"] == "evalsha")),
        "{report}"
    );

    let nodes = report["redis_nodes"].as_array().expect("redis_nodes");
    assert_eq!(nodes.len(), 3, "{report}");
    let masters: BTreeSet<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut jobs = 0;
    let mut cpu_process = 0.0;
    for node in nodes {
        let address = node["address"].as_str().expect("address").to_string();
        assert!(masters.contains(&address), "{address} is a master: {node}");
        let queues: Vec<String> = node["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .map(|q| q.as_str().expect("a name").to_string())
            .collect();
        // The report's mapping is the cluster's own.
        let mine: Vec<String> = expected
            .iter()
            .filter(|(_, o)| *o == address)
            .map(|(q, _)| q.clone())
            .collect();
        assert_eq!(queues, mine, "{node}");
        let node_jobs = node["jobs"].as_u64().expect("jobs");
        assert_eq!(
            node_jobs,
            JOBS / QUEUES as u64 * queues.len() as u64,
            "{node}"
        );
        jobs += node_jobs;
        let process = number(node, "cpu_us_process");
        cpu_process += process;
        if !queues.is_empty() {
            assert!(process > 0.0, "a master with queues worked: {node}");
            assert!(number(node, "cpu_us_enqueue") > 0.0, "{node}");
            let per_job = number(node, "cpu_us_per_job_process");
            assert!(
                (per_job - process / node_jobs as f64).abs() < 1e-6,
                "{node}"
            );
            assert!(number(node, "used_memory_delta_bytes") > 0.0, "{node}");
        }
        seen.extend(queues);
    }
    seen.sort();
    assert_eq!(seen, queue_names(), "every queue on exactly one master");
    assert_eq!(jobs, JOBS);
    let total = number(&report, "redis_cpu_us_per_job_process");
    assert!(
        (total - cpu_process / JOBS as f64).abs() < 1e-6,
        "the total is the masters' CPU over all jobs: {total} vs {cpu_process}: {report}"
    );

    for line in [
        "processing ",
        ", 6 queues)",
        "Redis CPU      enqueue ",
        "where the load lands",
        "all masters",
        "celeriac-bench-0",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    for m in &masters {
        assert!(text.contains(m.as_str()), "no {m} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_one_queue_lands_on_one_master() {
    let cluster = RedisCluster::start().await.expect("the cluster starts");
    let url = format!("{}?allow_volatile=true", cluster.url());
    let report = tokio::task::spawn_blocking(move || {
        let out = common::celeriac(
            &url,
            &["bench", "-n", "300", "--latency-samples", "3", "--json"],
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).expect("one JSON document")
    })
    .await
    .expect("joined");
    assert_eq!(report["jobs"], 300, "{report}");
    assert_eq!(report["queues"], 1, "{report}");
    let nodes = report["redis_nodes"].as_array().expect("redis_nodes");
    assert_eq!(nodes.len(), 3, "{report}");
    let owning: Vec<&Value> = nodes
        .iter()
        .filter(|n| n["queues"].as_array().is_some_and(|q| !q.is_empty()))
        .collect();
    assert_eq!(owning.len(), 1, "{report}");
    assert_eq!(owning[0]["queues"][0], "celeriac-bench", "{report}");
    assert_eq!(owning[0]["jobs"], 300, "{report}");
    for n in nodes.iter().filter(|n| n["jobs"] == 0) {
        assert!(n.get("cpu_us_per_job_process").is_none(), "{n}");
    }
}
