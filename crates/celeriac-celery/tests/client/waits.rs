//! `AsyncResult::get` as Redis sees it (MONITOR): SUBSCRIBE to the result channel, then one
//! GET of the key, then nothing until the PUBLISH wakes it (no polling).

use std::time::Duration;

use celeriac_celery::client::Client;
use celeriac_celery::results::{ResultBackend, ResultMeta};
use futures_util::StreamExt;
use serde_json::json;

use crate::common::{World, WAIT};

/// How long a pending waiter is watched for a second GET: any poller faster than this shows.
const QUIET: Duration = Duration::from_millis(700);

#[tokio::test]
async fn get_subscribes_then_reads_once_then_waits_for_the_publish() {
    let world = World::start().await;
    let client = Client::builder(world.cfg.broker_url.clone())
        .result_backend(world.cfg.backend_url.clone())
        .build()
        .await
        .expect("connects");
    let backend = ResultBackend::connect(world.cfg.backend_url.clone())
        .await
        .expect("backend");
    let id = uuid::Uuid::new_v4().to_string();
    let key = format!("celery-task-meta-{id}");
    let monitor = redis::Client::open(world.server.url())
        .expect("URL")
        .get_async_monitor()
        .await
        .expect("MONITOR");
    let mut lines = monitor.into_on_message::<String>();

    let r = client.result(id.clone());
    let waiting = tokio::spawn(async move { r.get::<i64>(WAIT).await });

    let quoted = format!("\"{key}\"");
    let mut seen = Vec::new();
    // Up to the GET: the SUBSCRIBE must come first.
    loop {
        let line = tokio::time::timeout(WAIT, lines.next())
            .await
            .expect("the waiter reads the key")
            .expect("monitor stream open");
        if line.contains(&quoted) {
            seen.push(line.clone());
        }
        if line.contains("\"GET\"") && line.contains(&quoted) {
            break;
        }
    }
    assert!(
        seen.first().is_some_and(|l| l.contains("\"SUBSCRIBE\"")),
        "SUBSCRIBE before GET: {seen:#?}"
    );
    // While the task is pending: no further command on the key.
    let quiet = tokio::time::timeout(QUIET, async {
        loop {
            match lines.next().await {
                Some(line) if line.contains(&quoted) => return line,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "polled while pending: {quiet:?}");

    backend
        .store(&ResultMeta::success(&id, json!(5)))
        .await
        .expect("store");
    let value = waiting.await.expect("joins").expect("the publish woke it");
    assert_eq!(value, 5);
    let gets = seen.iter().filter(|l| l.contains("\"GET\"")).count();
    assert_eq!(gets, 1, "{seen:#?}");
}

/// The chord join is initialised before any header task is published, with each
/// generation's commands (5.7: `DEL .c`, `SET .s EX`; 5.1–5.6: `SETEX .s` + `PUBLISH`).
#[tokio::test]
async fn chord_size_is_set_before_the_header_tasks_are_published() {
    use celeriac_celery::protocol::Signature;
    use celeriac_celery::results::ChordGeneration;

    let world = World::start().await;
    let monitor = redis::Client::open(world.server.url())
        .expect("URL")
        .get_async_monitor()
        .await
        .expect("MONITOR");
    let mut lines = monitor.into_on_message::<String>();
    for generation in [ChordGeneration::Claim, ChordGeneration::Classic] {
        let client = Client::builder(world.cfg.broker_url.clone())
            .result_backend(world.cfg.backend_url.clone())
            .default_queue("nobody")
            .chord_generation(generation)
            .build()
            .await
            .expect("connects");
        let header = (0..3)
            .map(|i| Signature::new("tasks.add").with_args(vec![json!(i), json!(i)]))
            .collect();
        client
            .apply(Signature::chord(header, Signature::new("tasks.tsum")))
            .await
            .expect("sent");
        // Every command up to the third LPUSH.
        let mut commands = Vec::new();
        while commands
            .iter()
            .filter(|c: &&String| c.contains("\"LPUSH\""))
            .count()
            < 3
        {
            let line = tokio::time::timeout(WAIT, lines.next())
                .await
                .expect("the client publishes")
                .expect("monitor stream open");
            if line.contains("celery-taskset-meta-") || line.contains("\"LPUSH\"") {
                commands.push(line);
            }
        }
        let first_push = commands
            .iter()
            .position(|c| c.contains("\"LPUSH\""))
            .expect("a push");
        let before = &commands[..first_push];
        let has = |verb: &str, suffix: &str| {
            before
                .iter()
                .any(|c| c.contains(&format!("\"{verb}\"")) && c.contains(suffix))
        };
        let sets_size = has("SETEX", ".s\" \"") || has("SET", ".s\" \"3\" \"EX\"");
        assert!(sets_size, "{generation:?}: {commands:#?}");
        let (claims, publishes) = (has("DEL", ".c\""), has("PUBLISH", ".s\" \"3\""));
        match generation {
            ChordGeneration::Claim => assert!(claims && !publishes, "{commands:#?}"),
            _ => assert!(publishes && !claims, "{commands:#?}"),
        }
    }
    let wires = crate::common::capture(&world, &["nobody"]).await;
    assert_eq!(wires.len(), 6, "two chords of three");
    for (id, wire) in &wires {
        crate::common::assert_wire_safe(wire, id);
    }
}
