//! Concurrent chord joins: many members (and their redeliveries) racing on separate
//! connections release the body exactly once, with the results in header order.

use std::sync::Arc;

use celeriac_celery::results::{
    ChordGeneration, ChordPart, ChordPartOutcome, ChordRelease, ResultBackend, ResultMeta, State,
};
use serde_json::{json, Value};

use crate::common::World;

/// Which kind of outcome one join call had.
#[derive(Debug)]
enum Seen {
    Pending,
    Late,
    Released(Vec<Value>, Option<Box<ChordRelease>>),
}

/// Stores member `index` and joins; a release is finished (cleaned up) at once unless
/// `defer_finish`, which keeps the chord's state until the caller finishes it, as a slow body
/// publish would.
async fn join_member_with(
    backend: &ResultBackend,
    gid: &str,
    index: u64,
    value: Value,
    defer_finish: bool,
) -> Seen {
    let tid = format!("{gid}-m{index}");
    let meta = ResultMeta::success(&tid, value).with_group(gid);
    backend.store(&meta).await.expect("stores");
    let outcome = backend
        .chord_part_return(ChordPart {
            group_id: gid,
            task_id: &tid,
            group_index: Some(index),
            state: &State::Success,
            result: &meta.result,
        })
        .await
        .expect("joins");
    match outcome {
        ChordPartOutcome::Pending { .. } => Seen::Pending,
        ChordPartOutcome::AlreadyReleased => Seen::Late,
        ChordPartOutcome::Release(release) => {
            let results = release.outcome.clone().expect("no member failed");
            if defer_finish {
                return Seen::Released(results, Some(release));
            }
            assert!(backend.chord_finish(&release).await.expect("cleans up"));
            Seen::Released(results, None)
        }
    }
}

async fn join_member(backend: &ResultBackend, gid: &str, index: u64, value: Value) -> Seen {
    join_member_with(backend, gid, index, value, false).await
}

/// A deterministic shuffle (xorshift), so a failing order can be replayed.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = usize::try_from(seed % (i as u64 + 1)).expect("small");
        items.swap(i, j);
    }
}

/// `members` members, each delivered twice, in a shuffled order, on 6 connections, for
/// `rounds` chords: exactly one call per chord releases, with `[0, 10, 20, ...]`. In odd
/// rounds the release is cleaned up only after every join returned (a slow body publish),
/// so duplicates meet a complete chord that is not yet cleaned up.
async fn race(generation: ChordGeneration, members: u64, rounds: u64) {
    let world = World::start().await;
    let mut backends = Vec::new();
    for _ in 0..6 {
        backends.push(Arc::new(
            ResultBackend::builder(world.backend_url())
                .chord_generation(generation)
                .build()
                .await
                .expect("connects"),
        ));
    }
    let expected: Vec<Value> = (0..members).map(|i| json!(i * 10)).collect();
    for round in 0..rounds {
        let gid = format!("race-{round}-{}", uuid::Uuid::new_v4());
        backends[0]
            .init_chord(&gid, members)
            .await
            .expect("sets the size");
        let mut deliveries: Vec<u64> = (0..members).chain(0..members).collect();
        shuffle(&mut deliveries, 0x9E37_79B9_7F4A_7C15 ^ (round + 1));
        let defer = round % 2 == 1;
        let mut released = Vec::new();
        let mut deferred = Vec::new();
        // Odd rounds: a third delivery of every member once the chord is complete but its
        // release not yet finished.
        let phases = if defer {
            vec![deliveries, (0..members).collect()]
        } else {
            vec![deliveries]
        };
        for phase in phases {
            let mut tasks = Vec::new();
            for (n, index) in phase.into_iter().enumerate() {
                let backend = backends[n % backends.len()].clone();
                let gid = gid.clone();
                tasks.push(tokio::spawn(async move {
                    join_member_with(&backend, &gid, index, json!(index * 10), defer).await
                }));
            }
            for task in tasks {
                if let Seen::Released(results, release) = task.await.expect("join task runs") {
                    released.push(results);
                    deferred.extend(release);
                }
            }
        }
        for release in deferred {
            assert!(backends[1].chord_finish(&release).await.expect("cleans up"));
        }
        assert_eq!(
            released.len(),
            1,
            "{generation:?} round {round}: releases {released:?}"
        );
        assert_eq!(
            released[0], expected,
            "{generation:?} round {round}: header order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_release_once_claim_generation() {
    race(ChordGeneration::Claim, 40, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_release_once_classic_generation() {
    race(ChordGeneration::Classic, 40, 8).await;
}

/// Celery 5.7 bookkeeping: a redelivered member counts once even when its second run
/// returned something else, and a duplicate after the release is ignored (`done` marker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_generation_dedups_redeliveries_and_late_duplicates() {
    let world = World::start().await;
    let backend = ResultBackend::builder(world.backend_url())
        .chord_generation(ChordGeneration::Claim)
        .build()
        .await
        .expect("connects");
    let gid = uuid::Uuid::new_v4().to_string();
    backend.init_chord(&gid, 2).await.expect("sets the size");
    assert!(matches!(
        join_member(&backend, &gid, 0, json!("a")).await,
        Seen::Pending
    ));
    // Redelivered with a different result: still one member.
    let again = backend
        .chord_part_return(ChordPart {
            group_id: &gid,
            task_id: &format!("{gid}-m0"),
            group_index: Some(0),
            state: &State::Success,
            result: &json!("other"),
        })
        .await
        .expect("joins");
    assert_eq!(
        again,
        ChordPartOutcome::Pending {
            ready: 1,
            size: Some(2)
        }
    );
    let Seen::Released(results, _) = join_member(&backend, &gid, 1, json!("b")).await else {
        panic!("the second member releases");
    };
    assert_eq!(results, vec![json!("a"), json!("b")]);
    assert!(matches!(
        join_member(&backend, &gid, 1, json!("b")).await,
        Seen::Late
    ));
    let mut conn = world.redis(1).await;
    let marker: Option<String> = redis::cmd("GET")
        .arg(backend.group_key(&gid, ".c"))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(marker.as_deref(), Some("done"));
    // A new run of the same (frozen) chord id starts over: init_chord deletes the marker.
    backend.init_chord(&gid, 1).await.expect("sets the size");
    assert!(
        matches!(join_member(&backend, &gid, 5, json!("c")).await, Seen::Released(r, _) if r == vec![json!("c")])
    );
}

/// Without the size (`.s`) nothing is released, however many members report.
#[tokio::test]
async fn no_release_without_the_size() {
    let world = World::start().await;
    for generation in [ChordGeneration::Claim, ChordGeneration::Classic] {
        let backend = ResultBackend::builder(world.backend_url())
            .chord_generation(generation)
            .build()
            .await
            .expect("connects");
        let gid = uuid::Uuid::new_v4().to_string();
        for i in 0..3 {
            let seen = join_member(&backend, &gid, i, json!(i)).await;
            assert!(matches!(seen, Seen::Pending), "{generation:?}: {seen:?}");
        }
    }
}
