//! Waiting through a lost connection.

use std::time::Duration;

use celeriac_celery::results::{ResultBackend, ResultMeta, State};
use serde_json::json;

use crate::common::{new_id, World, WAIT};

/// A wait whose subscription is cut by a Redis restart subscribes again and reads the key:
/// the record stored after the restart ends it. Without a record it times out with the last
/// state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_survives_a_redis_restart() {
    let mut world = World::start().await;
    let backend = ResultBackend::connect(world.backend_url())
        .await
        .expect("connects");
    let id = new_id();
    let waiter = backend.subscribe(&id).await.expect("subscribes");
    let wait = tokio::spawn(waiter.wait(WAIT));
    world.server.kill();
    world.server.restart().await.expect("redis-server restarts");
    // The shared connection may report the old connection's loss once.
    let mut stored = None;
    for _ in 0..3 {
        match backend
            .store(&ResultMeta::success(&id, json!("after")))
            .await
        {
            Ok(s) => {
                stored = Some(s);
                break;
            }
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    }
    assert!(stored.is_some(), "the store succeeds after the restart");
    let meta = wait.await.expect("runs").expect("ready after the restart");
    assert_eq!((meta.status, meta.result), (State::Success, json!("after")));

    let nothing = backend
        .wait(&new_id(), Duration::from_millis(300))
        .await
        .expect_err("no record");
    assert!(
        nothing.to_string().contains("last state PENDING"),
        "{nothing}"
    );
}
