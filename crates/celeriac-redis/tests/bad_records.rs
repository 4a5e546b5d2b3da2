//! Bad data in Redis: a job record of the wrong shape goes to the dead letters with the
//! reason, on every path that reads it (a claim with or without task limits, a reap); a key of
//! the wrong type is a typed error, and nothing else is lost.

use celeriac_core::backend::{ClaimRequest, TaskLimits};
use celeriac_core::{Broker, Job, JobState, QueueAdmin, ResultStore};
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

/// The raw record of a job in the `default` queue.
fn job_key(id: impl std::fmt::Display) -> String {
    format!("celeriac:{{default}}:job:{id}")
}

/// Asserts, from the raw keys, that `id` is a dead letter whose reason names `field`.
async fn assert_dead_naming(server: &RedisServer, id: impl std::fmt::Display, field: &str) {
    let score = server
        .command(&["ZSCORE", "celeriac:{default}:dead", &id.to_string()])
        .await
        .expect("ZSCORE");
    assert!(score.as_text().is_some(), "{id} is not in the dead letters");
    let key = job_key(&id);
    let state = server.command(&["HGET", &key, "s"]).await.expect("HGET s");
    assert_eq!(state.as_text().as_deref(), Some("6"), "{id}: state code");
    let kind = server
        .command(&["HGET", &key, "ek"])
        .await
        .expect("HGET ek");
    assert_eq!(kind.as_text().as_deref(), Some("malformed_job"), "{id}");
    let message = server
        .command(&["HGET", &key, "em"])
        .await
        .expect("HGET em");
    let message = message.as_text().unwrap_or_default();
    assert!(
        message.contains(&format!("`{field}`")),
        "{id}: the reason should name `{field}`: {message}"
    );
}

#[tokio::test]
async fn malformed_records_met_by_a_claim_with_task_limits_are_dead_lettered_and_the_batch_goes_on()
{
    let server = RedisServer::start().await.expect("redis starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    let jobs: Vec<Job> = (0..5).map(|i| Job::new("t", vec![b'0' + i], NOW)).collect();
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    backend.enqueue(jobs, NOW).await.expect("enqueue");
    // Bad JSON in the spec (read by the script to find the task), no attempts, no max.
    let corrupt: [&[&str]; 3] = [&["HSET", "d", "{not json"], &["HDEL", "a"], &["HDEL", "m"]];
    for (id, cmd) in ids.iter().zip(corrupt) {
        let key = job_key(id);
        let mut args = vec![cmd[0], key.as_str()];
        args.extend(&cmd[1..]);
        server.command(&args).await.expect("corrupt a record");
    }

    let mut req = claim_req("default");
    req.limits.insert(
        "t".to_string(),
        TaskLimits {
            concurrency: Some(10),
            rate: None,
        },
    );
    let claimed = backend
        .claim(req.clone())
        .await
        .expect("the claim goes on past malformed records");
    let mut got: Vec<_> = claimed.iter().map(|c| c.job.id).collect();
    got.sort();
    let mut fine = ids[3..].to_vec();
    fine.sort();
    assert_eq!(got, fine, "the two readable jobs are claimed");

    assert_dead_naming(&server, ids[0], "d").await;
    assert_dead_naming(&server, ids[1], "a").await;
    assert_dead_naming(&server, ids[2], "m").await;
    // Only the claimed jobs count against the task's cap, and nothing is left behind.
    let running = server
        .command(&["HGET", "celeriac:{default}:meta", "run:t"])
        .await
        .expect("HGET run:t");
    assert_eq!(running.as_text().as_deref(), Some("2"));
    for set in ["ready", "active"] {
        // Every finite score: the active set's keeper (score +inf) is not a job.
        let n = server
            .command(&[
                "ZCOUNT",
                &format!("celeriac:{{default}}:{set}"),
                "-inf",
                "(+inf",
            ])
            .await
            .expect("ZCOUNT")
            .as_int();
        let want = if set == "active" { 2 } else { 0 };
        assert_eq!(n, Some(want), "{set}");
    }
    assert!(backend.claim(req).await.expect("claim again").is_empty());
    for id in &fine {
        let info = backend.get(*id).await.expect("get").expect("kept");
        assert_eq!(info.state, JobState::Active);
    }
}

#[tokio::test]
async fn a_malformed_record_with_an_expired_lease_is_dead_lettered_and_the_reaper_goes_on() {
    let server = RedisServer::start().await.expect("redis starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    let jobs: Vec<Job> = (0..3).map(|i| Job::new("t", vec![b'0' + i], NOW)).collect();
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    backend.enqueue(jobs, NOW).await.expect("enqueue");
    let claimed = backend.claim(claim_req("default")).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    // While leased, one record loses its max attempts, another gets attempts that are no number.
    server
        .command(&["HDEL", &job_key(ids[0]), "m"])
        .await
        .expect("corrupt");
    server
        .command(&["HSET", &job_key(ids[1]), "a", "many"])
        .await
        .expect("corrupt");

    // The leases ran out: the reaper meets both.
    let later = NOW + 60_000;
    let report = backend.reap(later).await.expect("the reap succeeds");
    assert_eq!(report.dead, 2, "{report:?}");
    assert_eq!(report.requeued, 1, "{report:?}");
    let mut ended: Vec<_> = report.ended.iter().map(|e| e.id).collect();
    ended.sort();
    let mut want = ids[..2].to_vec();
    want.sort();
    assert_eq!(ended, want);
    for e in &report.ended {
        let error = e
            .error
            .as_ref()
            .expect("a dead job is reported with its reason");
        assert_eq!(
            (e.state, error.kind.as_str(), e.task.as_str()),
            (JobState::Dead, "malformed_job", "t"),
            "{e:?}"
        );
    }
    assert_dead_naming(&server, ids[0], "m").await;
    assert_dead_naming(&server, ids[1], "a").await;

    // The reaper keeps working on this queue, and the sound job runs again.
    let report = backend.reap(later + 1).await.expect("reaps again");
    assert_eq!((report.dead, report.requeued), (0, 0), "{report:?}");
    let mut req = claim_req("default");
    req.now = later + 1;
    let again = backend.claim(req).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.id, ids[2]);
    assert_eq!(again[0].job.attempts, 2);
}

/// The claim judges the usual record with one pattern match and sends the rest to the full
/// check: at the edges of each range both must agree. Each value is written into its own
/// job's record; the job is claimed, or dead-lettered naming the field.
#[tokio::test]
async fn a_claim_judges_counts_and_times_at_the_edges_of_their_ranges() {
    let server = RedisServer::start().await.expect("redis starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    // (field, value, claimed?)
    let cases: &[(&str, &str, bool)] = &[
        ("a", "4", true),
        ("a", "4294967295", true),
        ("a", "04294967295", true),
        ("a", "4294967296", false),
        ("a", "007", true),
        ("a", "-1", false),
        ("m", "25", true),
        ("m", "4294967295", true),
        ("m", "4294967296", false),
        ("m", "0", false),
        ("m", "01", true),
        ("m", "00", false),
        ("pr", "9", true),
        ("pr", "09", true),
        ("pr", "10", false),
        ("pr", "-1", false),
        ("r", "-5", true),
        ("r", "-9007199254740992", true),
        ("r", "123456789012345678", false),
        ("r", "1e3", false),
        ("r", "", false),
    ];
    let jobs: Vec<Job> = cases
        .iter()
        .map(|_| Job::new("t", b"1".to_vec(), NOW))
        .collect();
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    backend.enqueue(jobs, NOW).await.expect("enqueue");
    for (id, (field, value, _)) in ids.iter().zip(cases) {
        server
            .command(&["HSET", &job_key(id), field, value])
            .await
            .expect("write the value");
    }
    let mut req = claim_req("default");
    req.limit = cases.len();
    let claimed: Vec<_> = backend
        .claim(req)
        .await
        .expect("the claim goes on")
        .iter()
        .map(|c| c.job.id)
        .collect();
    for (id, (field, value, fine)) in ids.iter().zip(cases) {
        assert_eq!(
            claimed.contains(id),
            *fine,
            "`{field}` = {value:?}: claimed {}",
            claimed.contains(id)
        );
        if !fine {
            assert_dead_naming(&server, id, field).await;
        }
    }
}
