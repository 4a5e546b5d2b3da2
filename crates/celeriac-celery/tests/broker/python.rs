//! Against real Python Celery (venvs of `scripts/celery-venvs`): Python clients, workers
//! and sweeps sharing the keys with this transport.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use celeriac_celery::broker::TransportOptions;
use serde_json::json;

use crate::common::*;
use crate::support::{CeleryConfig, Venv};

#[tokio::test]
async fn a_python_priority_message_is_consumed_from_its_sublist() {
    for venv in Venv::all() {
        python_priority_message(&venv).await;
    }
}

async fn python_priority_message(venv: &Venv) {
    let server = server().await;
    let cfg = CeleryConfig::for_server(&server.url());
    let sent = python(
        venv,
        &cfg,
        "import json\nfrom tasks import add\n\
         r = add.apply_async((2, 3), priority=5, queue='pyprio')\n\
         print(json.dumps({'id': r.id}))",
    )
    .await;
    let id = sent["id"].as_str().expect("task id");
    let b = broker(&server, TransportOptions::default()).await;
    let mut conn = raw_conn(&server, 0).await;
    assert_eq!(
        llen(&mut conn, &format!("pyprio{SEP}3")).await,
        1,
        "priority 5 → step 3"
    );
    let d = take(&b, &["pyprio"]).await;
    let msg = json_of(&d.raw);
    assert_eq!((d.queue.as_str(), d.priority), ("pyprio", 3));
    assert_eq!(msg["headers"]["task"], json!("tasks.add"));
    assert_eq!(msg["headers"]["id"], json!(id));
    assert_eq!(msg["properties"]["delivery_tag"], json!(d.delivery_tag));
    assert!(b.ack(&d.delivery_tag).await.expect("ack"));
}

#[tokio::test]
async fn a_python_worker_restores_what_our_consumer_left_in_unacked() {
    for venv in Venv::all() {
        python_worker_restores_our_unacked(&venv).await;
    }
}

async fn python_worker_restores_our_unacked(venv: &Venv) {
    let server = server().await;
    let cfg = CeleryConfig::for_server(&server.url()).visibility_timeout(1.0);
    let sent = python(
        venv,
        &cfg,
        "import json\nfrom tasks import add\n\
         r = add.apply_async((4, 5), queue='coexist')\n\
         print(json.dumps({'id': r.id}))",
    )
    .await;
    let id = sent["id"].as_str().expect("task id");
    let b = broker(&server, TransportOptions::default()).await;
    let mut conn = raw_conn(&server, 0).await;
    let d = take(&b, &["coexist"]).await;
    assert_eq!(id_of(&d), id);
    // Our consumer "crashed": the message is only in unacked, taken 10 s ago.
    age(&mut conn, &d.delivery_tag, 10.0).await;
    assert_eq!(llen(&mut conn, "coexist").await, 0);

    let worker = venv.start_worker(&cfg, "coexist").await;
    worker
        .wait_for_log(&format!("Task tasks.add[{id}] succeeded"))
        .await;
    assert!(worker.log().contains(": 9"), "{}", worker.log());
    // A warm shutdown acks what ran and restores what did not: afterwards the message is
    // nowhere, so Python acknowledged it.
    let log = worker.stop().await;
    assert!(
        !hexists(&mut conn, &d.delivery_tag).await,
        "acked by Python:\n{log}"
    );
    assert_eq!(
        llen(&mut conn, "coexist").await,
        0,
        "not restored again:\n{log}"
    );
}

#[tokio::test]
async fn a_python_worker_runs_an_envelope_we_publish() {
    for venv in Venv::all() {
        python_worker_runs_our_envelope(&venv).await;
    }
}

async fn python_worker_runs_our_envelope(venv: &Venv) {
    let server = server().await;
    let cfg = CeleryConfig::for_server(&server.url());
    let sent = python(
        venv,
        &cfg,
        "import json\nfrom tasks import add\n\
         r = add.apply_async((20, 22), queue='staging', priority=7)\n\
         print(json.dumps({'id': r.id}))",
    )
    .await;
    let id = sent["id"].as_str().expect("task id");
    let mut conn = raw_conn(&server, 0).await;
    let raw: Vec<u8> = redis::cmd("RPOP")
        .arg(format!("staging{SEP}6"))
        .query_async(&mut conn)
        .await
        .expect("Python's envelope is on the priority-6 list");
    // Re-address it to another queue, as a Rust producer would address its own.
    let mut msg = json_of(&raw);
    msg["properties"]["delivery_info"]["routing_key"] = json!("relay");
    let raw = serde_json::to_vec(&msg).expect("JSON");

    let b = broker(&server, TransportOptions::default()).await;
    b.publish("relay", None, &raw).await.expect("publish");
    assert_eq!(
        llen(&mut conn, &format!("relay{SEP}6")).await,
        1,
        "its priority decides the list"
    );
    let worker = venv.start_worker(&cfg, "relay").await;
    worker
        .wait_for_log(&format!("Task tasks.add[{id}] succeeded"))
        .await;
    assert!(worker.log().contains(": 42"), "{}", worker.log());
    let log = worker.stop().await;
    assert_eq!(
        b.unacked_len().await.expect("HLEN"),
        0,
        "acked by Python:\n{log}"
    );
    assert_eq!(
        b.queue_len("relay").await.expect("len"),
        0,
        "not restored:\n{log}"
    );
}

#[tokio::test]
async fn a_python_worker_runs_a_message_we_requeued() {
    for venv in Venv::all() {
        let server = server().await;
        let cfg = CeleryConfig::for_server(&server.url());
        let sent = python(
            &venv,
            &cfg,
            "import json\nfrom tasks import add\n\
             r = add.apply_async((1, 2), queue='again', priority=4)\n\
             print(json.dumps({'id': r.id}))",
        )
        .await;
        let id = sent["id"].as_str().expect("task id");
        let b = broker(&server, TransportOptions::default()).await;
        let d = take(&b, &["again"]).await;
        assert!(b.requeue(&d.delivery_tag).await.expect("requeue"));
        assert_eq!(b.queue_len("again").await.expect("len"), 1);
        let worker = venv.start_worker(&cfg, "again").await;
        worker
            .wait_for_log(&format!("Task tasks.add[{id}] succeeded"))
            .await;
        let log = worker.stop().await;
        assert!(log.contains(": 3"), "{venv}:\n{log}");
        assert_eq!(b.unacked_len().await.expect("HLEN"), 0, "{venv}:\n{log}");
    }
}

#[tokio::test]
async fn our_sweep_restores_what_a_killed_python_worker_left_in_unacked() {
    for venv in Venv::all() {
        let server = server().await;
        let cfg = CeleryConfig::for_server(&server.url()).acks_late(true);
        let worker = venv.start_worker(&cfg, "crash").await;
        let sent = python(
            &venv,
            &cfg,
            "import json\nfrom tasks import sleep\n\
             r = sleep.apply_async((600,), queue='crash')\n\
             print(json.dumps({'id': r.id}))",
        )
        .await;
        let id = sent["id"].as_str().expect("task id");
        worker
            .wait_for_log(&format!("Task tasks.sleep[{id}] received"))
            .await;
        let log = worker.kill9().await;

        let b = broker(&server, TransportOptions::default()).await;
        let mut conn = raw_conn(&server, 0).await;
        let tags: Vec<String> = redis::cmd("HKEYS")
            .arg("unacked")
            .query_async(&mut conn)
            .await
            .expect("HKEYS");
        assert_eq!(
            tags.len(),
            1,
            "{venv}: Python recorded the running task:\n{log}"
        );
        assert_eq!(b.queue_len("crash").await.expect("len"), 0);
        age(&mut conn, &tags[0], 2.0 * HOUR).await;
        let report = b.restore_visible().await.expect("sweep");
        assert_eq!(report.restored, 1, "{venv}");
        let d = take(&b, &["crash"]).await;
        let msg = json_of(&d.raw);
        assert_eq!(
            (
                msg["headers"]["task"].as_str(),
                msg["headers"]["id"].as_str()
            ),
            (Some("tasks.sleep"), Some(id))
        );
        assert!(d.redelivered, "{venv}");
    }
}

#[tokio::test]
async fn our_consumers_and_a_python_worker_share_a_queue_without_duplicates() {
    const TOTAL: usize = 40;
    let server = server().await;
    let venv = Venv::newest();
    let cfg = CeleryConfig::for_server(&server.url());
    let worker = venv.start_worker(&cfg, "shared").await;
    let b = broker(&server, TransportOptions::default()).await;
    let published = Arc::new(AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let b = b.clone();
        let published = published.clone();
        consumers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let got = b
                    .consume(&["shared"], Duration::from_millis(500))
                    .await
                    .expect("consume");
                match got {
                    Some(d) => {
                        ids.push(id_of(&d));
                        assert!(b.ack(&d.delivery_tag).await.expect("ack"));
                    }
                    None if published.load(Ordering::SeqCst) == TOTAL
                        && b.queue_len("shared").await.expect("len") == 0 =>
                    {
                        return ids
                    }
                    None => {}
                }
            }
        }));
    }
    let ids: Vec<String> = (0..TOTAL)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    for id in &ids {
        b.publish("shared", None, &envelope(id, "shared", 0))
            .await
            .expect("publish");
        published.fetch_add(1, Ordering::SeqCst);
    }
    let mut ours = Vec::new();
    for c in consumers {
        ours.extend(c.await.expect("consumer task"));
    }
    let ours: HashSet<String> = ours.into_iter().collect();
    for id in ids.iter().filter(|id| !ours.contains(*id)) {
        worker
            .wait_for_log(&format!("Task tasks.add[{id}] succeeded"))
            .await;
    }
    let log = worker.stop().await;
    let python_ran = ids
        .iter()
        .filter(|id| log.contains(&format!("Task tasks.add[{id}] received")))
        .count();
    let both: Vec<&String> = ids
        .iter()
        .filter(|id| ours.contains(*id) && log.contains(&format!("tasks.add[{id}]")))
        .collect();
    eprintln!("ours: {}, Python's: {python_ran}", ours.len());
    assert!(both.is_empty(), "taken by both sides: {both:?}");
    assert_eq!(
        ours.len() + python_ran,
        TOTAL,
        "every message taken once:\n{log}"
    );
    assert_eq!(b.unacked_len().await.expect("HLEN"), 0);
}

#[tokio::test]
async fn extend_keeps_our_message_from_a_python_workers_sweep() {
    let server = server().await;
    let venv = Venv::newest();
    let cfg = CeleryConfig::for_server(&server.url()).visibility_timeout(30.0);
    let sent = python(
        &venv,
        &cfg,
        "import json\nfrom tasks import add\n\
         a = add.apply_async((1, 1), queue='long')\n\
         b = add.apply_async((2, 2), queue='long')\n\
         print(json.dumps({'ids': [a.id, b.id]}))",
    )
    .await;
    let b = broker(&server, TransportOptions::default()).await;
    let mut conn = raw_conn(&server, 0).await;
    let busy = take(&b, &["long"]).await;
    let idle = take(&b, &["long"]).await;
    assert_eq!(
        json!([id_of(&busy), id_of(&idle)]),
        sent["ids"],
        "both taken, in order"
    );
    // Both taken a minute ago: stale for a Python worker with a 30 s visibility timeout...
    age(&mut conn, &busy.delivery_tag, 60.0).await;
    age(&mut conn, &idle.delivery_tag, 60.0).await;
    // ...but we are still working on one of them.
    assert!(b
        .extend(&[busy.delivery_tag.as_str()])
        .await
        .expect("extend")
        .is_empty());

    let worker = venv.start_worker(&cfg, "long").await;
    let idle_id = id_of(&idle);
    worker
        .wait_for_log(&format!("Task tasks.add[{idle_id}] succeeded"))
        .await;
    let log = worker.stop().await;
    assert!(
        !log.contains(&format!("tasks.add[{}]", id_of(&busy))),
        "the extended message was not run by Python:\n{log}"
    );
    assert!(hexists(&mut conn, &busy.delivery_tag).await, "still ours");
    assert!(b.ack(&busy.delivery_tag).await.expect("ack"));
    assert_eq!(b.unacked_len().await.expect("HLEN"), 0);
}
