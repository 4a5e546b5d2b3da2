//! Retention keeps up on Redis: tens of thousands of kept results, all due at once, leave
//! nothing in the `:succeeded` index (and no record) after one reap, and the memory they
//! took is given back.

use celeriac_core::backend::{ClaimRequest, Completion, Outcome};
use celeriac_core::{Broker, Job};
use celeriac_redis::RedisBackend;
use celeriac_testkit::RedisServer;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;
const COMPLETIONS: usize = 30_000;
const BATCH: usize = 1_000;
// Longer than the test runs, so Redis's own expiry of the records plays no part.
const RESULT_TTL: Duration = Duration::from_secs(600);
const QUEUE: &str = "soak";

async fn int(server: &RedisServer, args: &[&str]) -> i64 {
    server
        .command(args)
        .await
        .expect("command")
        .as_int()
        .unwrap_or_else(|| panic!("{args:?} should answer a number"))
}

async fn used_memory(server: &RedisServer) -> i64 {
    let info = server
        .command(&["INFO", "memory"])
        .await
        .expect("INFO memory")
        .as_text()
        .expect("INFO answers text");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory has used_memory")
}

/// Enqueues, claims and completes `n` jobs at `now`, each keeping a small result.
async fn complete_many(backend: &RedisBackend, n: usize, now: i64) {
    for _ in 0..n / BATCH {
        let jobs: Vec<Job> = (0..BATCH)
            .map(|i| {
                let mut j = Job::new("soak.noop", format!("[{i}]").into_bytes(), now);
                j.queue = QUEUE.into();
                j.result_ttl = Some(RESULT_TTL);
                j
            })
            .collect();
        backend.enqueue(jobs, now).await.expect("enqueue");
        let mut claimed = Vec::with_capacity(BATCH);
        while claimed.len() < BATCH {
            let got = backend
                .claim(ClaimRequest {
                    queues: vec![QUEUE.into()],
                    limit: BATCH - claimed.len(),
                    lease: Duration::from_secs(30),
                    worker: "soak".into(),
                    now,
                    limits: Default::default(),
                })
                .await
                .expect("claim");
            assert!(!got.is_empty(), "every job just enqueued is claimable");
            claimed.extend(got);
        }
        let done = claimed
            .iter()
            .map(|c| Completion {
                lease: c.lease(),
                outcome: Outcome::Succeeded {
                    result: Some(b"null".to_vec()),
                },
            })
            .collect();
        let applied = backend.complete(done, now).await.expect("complete");
        assert!(applied.iter().all(|a| *a), "every completion applies");
    }
}

#[tokio::test]
async fn a_reap_after_the_ttl_empties_the_succeeded_index() {
    let server = RedisServer::start().await.expect("redis-server");
    let backend = RedisBackend::connect(&server.url()).await.expect("connect");
    let index = format!("celeriac:{{{QUEUE}}}:succeeded");
    // The queue exists (its keys and scripts loaded) before the baseline is read.
    complete_many(&backend, BATCH, T0).await;
    backend
        .reap(T0 + RESULT_TTL.as_millis() as i64)
        .await
        .expect("reap");
    let before = used_memory(&server).await;

    complete_many(&backend, COMPLETIONS, T0).await;
    assert_eq!(
        int(&server, &["ZCARD", &index]).await,
        COMPLETIONS as i64,
        "every completion should be in the index until its ttl"
    );
    let peak = used_memory(&server).await;
    assert!(
        peak - before > 1_000_000,
        "{COMPLETIONS} kept results should take memory (before {before}, peak {peak})"
    );

    let ttl_ms = RESULT_TTL.as_millis() as i64;
    let report = backend.reap(T0 + ttl_ms).await.expect("reap");
    assert_eq!(
        report.swept, COMPLETIONS as u64,
        "one reap after the ttl should sweep every kept result"
    );
    assert_eq!(int(&server, &["ZCARD", &index]).await, 0);
    let keys = int(&server, &["DBSIZE"]).await;
    assert!(
        keys < 20,
        "only the queue's own keys should be left, not job records ({keys} keys)"
    );
    let after = used_memory(&server).await;
    assert!(
        after - before < (peak - before) / 10,
        "the memory of the results should be given back (before {before}, peak {peak}, \
         after {after})"
    );
}
