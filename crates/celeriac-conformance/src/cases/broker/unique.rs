//! Unique jobs: while a key is held, a duplicate returns the holder; the state change that
//! ends the hold releases it.

use crate::support::{claim, claim_only, complete, exists, info, job, lease, success, T0};
use celeriac_core::backend::Outcome;
use celeriac_core::{Broker, ErrorInfo, Job, JobId, ResultStore, Unique, UniqueFor};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn unique_job(queue: &str, now: i64, key: &str, lifetime: UniqueFor) -> Job {
    let mut j = job(queue, now);
    j.unique = Some(Unique {
        key: key.to_string(),
        lifetime,
    });
    j
}

async fn enqueue_one<B: Broker>(backend: &B, j: Job, now: i64) -> JobId {
    let ids = backend
        .enqueue(vec![j], now)
        .await
        .expect("enqueue succeeds");
    assert_eq!(ids.len(), 1, "one id per job");
    ids[0]
}

/// Until started: duplicates return the waiting holder; once it starts, a new job is added.
pub async fn unique_until_started<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "uniq-started";
    let a = unique_job(q, T0, "report:42", UniqueFor::UntilStarted);
    let a_id = a.id;
    assert_eq!(enqueue_one(&*backend, a, T0).await, a_id);
    let dup = unique_job(q, T0, "report:42", UniqueFor::UntilStarted);
    let dup_id = dup.id;
    assert_eq!(
        enqueue_one(&*backend, dup, T0).await,
        a_id,
        "the holder stands for it"
    );
    assert!(
        !exists(&*backend, dup_id).await,
        "the duplicate was not stored"
    );
    // Another key, and another queue, are independent.
    let other = unique_job(q, T0, "report:43", UniqueFor::UntilStarted);
    let other_id = other.id;
    assert_eq!(enqueue_one(&*backend, other, T0).await, other_id);
    let elsewhere = unique_job("uniq-started-2", T0, "report:42", UniqueFor::UntilStarted);
    let elsewhere_id = elsewhere.id;
    assert_eq!(enqueue_one(&*backend, elsewhere, T0).await, elsewhere_id);

    claim_only(&*backend, q, a_id, T0 + 1).await;
    let after = unique_job(q, T0 + 2, "report:42", UniqueFor::UntilStarted);
    let after_id = after.id;
    assert_eq!(
        enqueue_one(&*backend, after, T0 + 2).await,
        after_id,
        "a started holder no longer keeps duplicates out"
    );
}

/// Until finished: a retry keeps the key; the end of the job releases it.
pub async fn unique_until_finished<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "uniq-finished";
    let key = "sync:7";
    let a = unique_job(q, T0, key, UniqueFor::UntilFinished);
    let a_id = a.id;
    enqueue_one(&*backend, a, T0).await;
    let c = claim_only(&*backend, q, a_id, T0).await;
    let dup = unique_job(q, T0, key, UniqueFor::UntilFinished);
    assert_eq!(
        enqueue_one(&*backend, dup, T0).await,
        a_id,
        "running holder"
    );
    let error = ErrorInfo::new("error", "again", 1);
    assert!(
        complete(
            &*backend,
            lease(&c),
            Outcome::Retry { at: T0 + 10, error },
            T0 + 1
        )
        .await
    );
    let dup = unique_job(q, T0 + 2, key, UniqueFor::UntilFinished);
    assert_eq!(
        enqueue_one(&*backend, dup, T0 + 2).await,
        a_id,
        "retrying holder"
    );
    let c = claim_only(&*backend, q, a_id, T0 + 10).await;
    assert!(complete(&*backend, lease(&c), success(&json!(1)), T0 + 11).await);
    let after = unique_job(q, T0 + 12, key, UniqueFor::UntilFinished);
    let after_id = after.id;
    assert_eq!(
        enqueue_one(&*backend, after, T0 + 12).await,
        after_id,
        "a finished holder releases the key"
    );
}

/// A window holds the key for its length from the first enqueue, whatever the job does.
pub async fn unique_window_throttles<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "uniq-window";
    let key = "digest:alice";
    let w = UniqueFor::Window(Duration::from_secs(10));
    let a = unique_job(q, T0, key, w);
    let a_id = a.id;
    enqueue_one(&*backend, a, T0).await;
    let c = claim_only(&*backend, q, a_id, T0).await;
    assert!(complete(&*backend, lease(&c), success(&json!(1)), T0 + 1).await);
    let dup = unique_job(q, T0 + 9_999, key, w);
    assert_eq!(
        enqueue_one(&*backend, dup, T0 + 9_999).await,
        a_id,
        "within the window, even after the job finished"
    );
    let after = unique_job(q, T0 + 10_000, key, w);
    let after_id = after.id;
    assert_eq!(
        enqueue_one(&*backend, after, T0 + 10_000).await,
        after_id,
        "window over"
    );
}

/// Debounce: a duplicate replaces the waiting job's arguments and pushes its start back.
pub async fn unique_debounce_replaces_and_delays<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "uniq-debounce";
    let key = "reindex";
    let d = UniqueFor::Debounce(Duration::from_secs(5));
    let mut a = unique_job(q, T0, key, d);
    a.run_at = T0 + 5_000;
    a.payload = b"\"first\"".to_vec();
    let a_id = a.id;
    enqueue_one(&*backend, a, T0).await;
    let mut b = unique_job(q, T0 + 2_000, key, d);
    b.run_at = T0 + 7_000;
    b.payload = b"\"second\"".to_vec();
    let b_id = b.id;
    assert_eq!(enqueue_one(&*backend, b, T0 + 2_000).await, a_id);
    assert!(!exists(&*backend, b_id).await);
    let held = info(&*backend, a_id).await;
    assert_eq!(
        held.job.payload,
        b"\"second\"".to_vec(),
        "the newest arguments win"
    );
    assert_eq!(held.job.run_at, T0 + 7_000, "the start moved back");
    assert!(claim(&*backend, &[q], 10, T0 + 6_999).await.is_empty());
    let c = claim_only(&*backend, q, a_id, T0 + 7_000).await;
    assert_eq!(c.job.payload, b"\"second\"".to_vec());
    let after = unique_job(q, T0 + 7_001, key, d);
    let after_id = after.id;
    assert_eq!(
        enqueue_one(&*backend, after, T0 + 7_001).await,
        after_id,
        "once started, a new job gathers the next burst"
    );
}

/// A debounce duplicate in the same batch as its holder moves the holder out of the ready
/// jobs: it runs once, after the delay.
pub async fn unique_debounce_within_one_batch<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "uniq-debounce-batch";
    let d = UniqueFor::Debounce(Duration::from_secs(5));
    let a = unique_job(q, T0, "reindex", d);
    let a_id = a.id;
    let mut b = unique_job(q, T0, "reindex", d);
    b.payload = b"\"second\"".to_vec();
    let ids = backend
        .enqueue(vec![a, b], T0)
        .await
        .expect("a batch with a debounced duplicate is accepted");
    assert_eq!(ids, vec![a_id, a_id], "the first job stands for both");
    assert!(
        claim(&*backend, &[q], 10, T0).await.is_empty(),
        "the holder waits for the debounce delay"
    );
    let c = claim(&*backend, &[q], 10, T0 + 5_000).await;
    assert_eq!(c.len(), 1, "the holder runs once");
    assert_eq!(c[0].job.id, a_id);
    assert_eq!(c[0].job.payload, b"\"second\"".to_vec());
    assert!(claim(&*backend, &[q], 10, T0 + 5_001).await.is_empty());
}

/// Enqueueing is idempotent by id: a second job with an existing id is not stored, and the
/// existing job stands for it, whatever state it is in.
pub async fn enqueue_is_idempotent_by_id<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "idem";
    let a = job(q, T0);
    let id = a.id;
    assert_eq!(enqueue_one(&*backend, a, T0).await, id);
    let mut again = job(q, T0 + 1);
    again.id = id;
    again.payload = json!({"second": true}).to_string().into_bytes();
    assert_eq!(enqueue_one(&*backend, again.clone(), T0 + 1).await, id);
    let stored = info(&*backend, id).await;
    assert_ne!(
        stored.job.payload, again.payload,
        "the first job's payload stays"
    );
    // In a batch, the existing job is skipped and the new one is stored.
    let fresh = job(q, T0 + 2);
    let fresh_id = fresh.id;
    let ids = backend
        .enqueue(vec![again.clone(), fresh], T0 + 2)
        .await
        .expect("a batch with a known id is accepted");
    assert_eq!(ids, vec![id, fresh_id]);
    // One new id twice in a batch: stored once, both places name it.
    let twin = job(q, T0 + 2);
    let twin_id = twin.id;
    let ids = backend
        .enqueue(vec![twin.clone(), twin], T0 + 2)
        .await
        .expect("a batch naming one id twice is accepted");
    assert_eq!(ids, vec![twin_id, twin_id]);
    // Once finished, the id still stands for the job: nothing runs twice.
    let c = claim(&*backend, &[q], 10, T0 + 3).await;
    assert_eq!(c.len(), 3, "three jobs were stored, not five");
    for claimed in &c {
        complete(&*backend, lease(claimed), success(&json!(1)), T0 + 4).await;
    }
    assert_eq!(enqueue_one(&*backend, again, T0 + 5).await, id);
    assert!(
        claim(&*backend, &[q], 10, T0 + 6).await.is_empty(),
        "a finished job is not enqueued again under its id"
    );
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_unique {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            unique_until_started,
            unique_until_finished,
            unique_window_throttles,
            unique_debounce_replaces_and_delays,
            unique_debounce_within_one_batch,
            enqueue_is_idempotent_by_id,
        }
    };
}
