//! Bad data in Redis: a job record of the wrong shape goes to the dead letters with the
//! reason; a key of the wrong type is a typed error, and nothing else is lost.

use celeriac_core::backend::ClaimRequest;
use celeriac_core::{Broker, Job, JobState, ResultStore};
use celeriac_redis::RedisBackend;
use celeriac_testkit::RedisServer;
use std::time::Duration;

const NOW: i64 = 1_700_000_000_000;

fn claim_req(queue: &str) -> ClaimRequest {
    ClaimRequest {
        queues: vec![queue.to_string()],
        limit: 10,
        lease: Duration::from_secs(30),
        worker: "test".into(),
        now: NOW,
        limits: Default::default(),
    }
}

#[tokio::test]
async fn a_malformed_job_record_is_dead_lettered_with_the_reason() {
    let server = RedisServer::start().await.expect("redis starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    let broken = Job::new("t", b"1".to_vec(), NOW);
    let fine = Job::new("t", b"2".to_vec(), NOW);
    let (broken_id, fine_id) = (broken.id, fine.id);
    backend
        .enqueue(vec![broken, fine], NOW)
        .await
        .expect("enqueue");

    let key = format!("celeriac:{{default}}:job:{broken_id}");
    server
        .command(&["HSET", &key, "d", "{not json"])
        .await
        .expect("corrupt the record");

    let claimed = backend
        .claim(claim_req("default"))
        .await
        .expect("claim still works");
    let ids: Vec<_> = claimed.iter().map(|c| c.job.id).collect();
    assert_eq!(
        ids,
        vec![fine_id],
        "the readable job is claimed, the broken one is not"
    );

    let dead = backend
        .dead_letters(None, 10, 0)
        .await
        .expect("dead letters list, broken record and all");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].job.id, broken_id);
    assert_eq!(dead[0].job.task, "<unreadable>");
    assert_eq!(dead[0].state, JobState::Dead);
    let error = dead[0].error.as_ref().expect("a reason");
    assert_eq!(error.kind, "undecodable_job");
    assert!(
        error.message.contains("cannot be read"),
        "{}",
        error.message
    );
    let info = backend.get(broken_id).await.expect("get").expect("kept");
    assert_eq!(info.state, JobState::Dead);
    // A second claim does not bring it back.
    assert!(backend
        .claim(claim_req("default"))
        .await
        .expect("claim")
        .is_empty());
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_a_typed_error_and_other_queues_keep_working() {
    let server = RedisServer::start().await.expect("redis starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    server
        .command(&["SET", "celeriac:{spoiled}:ready", "oops"])
        .await
        .expect("plant a string");
    let err = backend
        .claim(claim_req("spoiled"))
        .await
        .expect_err("claiming from a spoiled queue fails");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");

    let job = Job::new("t", b"1".to_vec(), NOW);
    let id = job.id;
    backend
        .enqueue(vec![job], NOW)
        .await
        .expect("enqueue elsewhere");
    let claimed = backend
        .claim(claim_req("default"))
        .await
        .expect("other queue");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job.id, id);
    let info = backend.get(id).await.expect("get").expect("exists");
    assert_eq!(info.state, JobState::Active);
}
