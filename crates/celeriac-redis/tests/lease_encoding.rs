//! The lease structures (`active`, `leases`) stay in Redis's hash-table encodings however few
//! jobs are in flight, because of the keeper entry each holds (see `KEEPER` in
//! `lua/includes/common.lua`); the keeper is never counted, listed or reaped as a job, and it
//! comes back when its keys are deleted.

use celeriac_core::backend::{ClaimRequest, Completion, JobQuery, Outcome};
use celeriac_core::{Broker, Job, JobState, QueueAdmin};
use celeriac_redis::RedisBackend;
use celeriac_testkit::RedisServer;
use std::time::Duration;

const NOW: i64 = 1_700_000_000_000;
const ACTIVE: &str = "celeriac:{default}:active";
const LEASES: &str = "celeriac:{default}:leases";

fn claim_req(limit: usize) -> ClaimRequest {
    ClaimRequest {
        queues: vec!["default".to_string()],
        limit,
        lease: Duration::from_secs(30),
        worker: "test".into(),
        now: NOW,
        limits: Default::default(),
    }
}

async fn encoding(server: &RedisServer, key: &str) -> String {
    server
        .command(&["OBJECT", "ENCODING", key])
        .await
        .expect("OBJECT ENCODING")
        .as_text()
        .unwrap_or_default()
}

async fn active_count(backend: &RedisBackend) -> u64 {
    let stats = backend.stats().await.expect("stats");
    stats
        .iter()
        .find(|s| s.queue == "default")
        .map_or(0, |s| s.count(JobState::Active))
}

async fn listed_active(backend: &RedisBackend, newest_first: bool) -> Vec<celeriac_core::JobId> {
    let mut query = JobQuery::new("default", JobState::Active);
    query.newest_first = newest_first;
    let page = backend.list_jobs(query, None, 50).await.expect("list");
    page.jobs.iter().map(|j| j.job.id).collect()
}

#[tokio::test]
async fn few_leases_stay_hash_table_encoded_and_the_keeper_is_no_job() {
    let server = RedisServer::start().await.expect("redis starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    // The precondition: this server keeps a small sorted set and a small hash as listpacks,
    // so the encodings asserted below are the keeper's doing.
    server
        .command(&["ZADD", "control:z", "1", "a", "2", "b"])
        .await
        .expect("ZADD");
    server
        .command(&["HSET", "control:h", "a", "1", "b", "2"])
        .await
        .expect("HSET");
    assert_eq!(encoding(&server, "control:z").await, "listpack");
    assert_eq!(encoding(&server, "control:h").await, "listpack");

    let jobs: Vec<Job> = (0..3).map(|i| Job::new("t", vec![i], NOW)).collect();
    backend.enqueue(jobs, NOW).await.expect("enqueue");
    let claimed = backend.claim(claim_req(2)).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert_eq!(encoding(&server, ACTIVE).await, "skiplist");
    assert_eq!(encoding(&server, LEASES).await, "hashtable");
    // Two jobs in flight, and the keeper besides.
    let zcard = server.command(&["ZCARD", ACTIVE]).await.expect("ZCARD");
    assert_eq!(zcard.as_int(), Some(3));

    let mut held: Vec<_> = claimed.iter().map(|c| c.job.id).collect();
    held.sort();
    assert_eq!(active_count(&backend).await, 2);
    for newest_first in [false, true] {
        let mut listed = listed_active(&backend, newest_first).await;
        listed.sort();
        assert_eq!(listed, held, "newest first: {newest_first}");
    }
    // A reap far in the future finds the two leases expired and not the keeper.
    let report = backend.reap(NOW + 365 * 86_400_000).await.expect("reap");
    assert_eq!(report.requeued, 2, "{report:?}");
    assert_eq!(active_count(&backend).await, 0);
    assert_eq!(encoding(&server, ACTIVE).await, "skiplist");

    // Deleted (by hand, or by an operator's cleanup), the keeper comes back with the next
    // claim; completing every lease leaves it alone.
    server.command(&["DEL", ACTIVE, LEASES]).await.expect("DEL");
    let claimed = backend.claim(claim_req(10)).await.expect("claim again");
    assert_eq!(claimed.len(), 3);
    assert_eq!(encoding(&server, ACTIVE).await, "skiplist");
    assert_eq!(encoding(&server, LEASES).await, "hashtable");
    let done = claimed
        .iter()
        .map(|c| Completion {
            lease: c.lease(),
            outcome: Outcome::Succeeded { result: None },
        })
        .collect();
    let applied = backend.complete(done, NOW + 1).await.expect("complete");
    assert_eq!(applied, vec![true; 3]);
    assert_eq!(active_count(&backend).await, 0);
    assert!(listed_active(&backend, false).await.is_empty());
    let zcard = server.command(&["ZCARD", ACTIVE]).await.expect("ZCARD");
    assert_eq!(zcard.as_int(), Some(1), "only the keeper is left");
}
