//! The dead-letter cap is set with `?dead_max=` on both backends, drops the oldest and
//! counts them in `celeriac_dead_letters_dropped_total`, per queue.

use celeriac::embedded::SqliteBackend;
use celeriac::redis::RedisBackend;
use celeriac_core::backend::{ClaimRequest, Completion, Outcome};
use celeriac_core::retention::DEAD_LETTERS_DROPPED;
use celeriac_core::{Broker, ErrorInfo, Job, JobId, ResultStore};
use celeriac_testkit::RedisServer;
mod counts;

use counts::Counts;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;

/// One dead letter in `queue`, dying at `at`.
async fn dead_letter<B: Broker>(backend: &B, queue: &str, at: i64) -> JobId {
    let mut job = Job::new("cap.noop", b"null".to_vec(), T0);
    job.queue = queue.into();
    let id = job.id;
    backend.enqueue(vec![job], T0).await.expect("enqueue");
    let claimed = backend
        .claim(ClaimRequest {
            queues: vec![queue.into()],
            limit: 1,
            lease: Duration::from_secs(30),
            worker: "cap".into(),
            now: at,
            limits: Default::default(),
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "the job just enqueued is claimable");
    let dead = Outcome::Dead {
        error: ErrorInfo::new("retries_exhausted", "gave up", 1),
    };
    let done = vec![Completion {
        lease: claimed[0].lease(),
        outcome: dead,
    }];
    assert_eq!(backend.complete(done, at).await.expect("complete"), [true]);
    id
}

/// Five dead letters in one queue and one in another, under a cap of three: a reap drops the
/// oldest two of the first queue and counts them under its name.
async fn cap_of_three_drops_the_oldest<B: Broker + ResultStore>(backend: &B, counts: &Counts) {
    let mut ids = Vec::new();
    for k in 0..5 {
        ids.push(dead_letter(backend, "capped", T0 + k).await);
    }
    dead_letter(backend, "other", T0).await;

    let report = backend.reap(T0 + 10).await.expect("reap");
    assert_eq!(report.dead_dropped, 2, "two beyond the cap of three");
    assert_eq!(counts.get(&format!("{DEAD_LETTERS_DROPPED}:capped")), 2);
    assert_eq!(counts.get(&format!("{DEAD_LETTERS_DROPPED}:other")), 0);
    for (k, id) in ids.iter().enumerate() {
        let kept = backend.get(*id).await.expect("get").is_some();
        assert_eq!(kept, k >= 2, "dead letter #{k} (the oldest two go)");
    }
    assert_eq!(backend.reap(T0 + 11).await.expect("reap").dead_dropped, 0);
    assert_eq!(counts.get(&format!("{DEAD_LETTERS_DROPPED}:capped")), 2);
}

// One thread per test: the counter is recorded on the test's thread, where the recorder is set.

#[tokio::test(flavor = "current_thread")]
async fn sqlite_cap_drops_the_oldest_and_counts_them() {
    let counts = Counts::by("queue");
    let _recorder = metrics::set_default_local_recorder(&counts);
    let backend = SqliteBackend::connect("sqlite::memory:?dead_max=3")
        .await
        .expect("open");
    assert_eq!(backend.config().dead_max, 3);
    cap_of_three_drops_the_oldest(&backend, &counts).await;
}

#[tokio::test(flavor = "current_thread")]
async fn redis_cap_drops_the_oldest_and_counts_them() {
    let counts = Counts::by("queue");
    let _recorder = metrics::set_default_local_recorder(&counts);
    let server = RedisServer::start().await.expect("redis-server");
    let backend = RedisBackend::connect(&format!("{}?dead_max=3", server.url()))
        .await
        .expect("connect");
    cap_of_three_drops_the_oldest(&backend, &counts).await;
}
