//! Publishing and consuming: priority lists, queue order, concurrent consumers, waiting.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use celeriac_celery::broker::{QueueOrder, TransportOptions};

use crate::common::*;

#[tokio::test]
async fn priority_lists_are_served_lowest_step_first_across_queues() {
    let server = server().await;
    let b = broker(
        &server,
        TransportOptions::default().queue_order(QueueOrder::Priority),
    )
    .await;
    let mut conn = raw_conn(&server, 0).await;
    for (queue, id, priority) in [
        ("A", "a9", 9),
        ("A", "a5", 5),
        ("B", "b3", 3),
        ("A", "a0", 0),
        ("B", "b1", 1),
    ] {
        b.publish(queue, None, &envelope(id, queue, priority))
            .await
            .expect("publish");
    }
    // Where kombu would have put them: 5 → step 3, 1 → step 0.
    for (key, n) in [
        ("A", 1),
        ("A\x06\x163", 1),
        ("A\x06\x169", 1),
        ("B", 1),
        ("B\x06\x163", 1),
    ] {
        assert_eq!(llen(&mut conn, key).await, n, "{key:?}");
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let d = take(&b, &["A", "B"]).await;
        got.push((id_of(&d), d.queue.clone(), d.priority));
    }
    let expected = [
        ("a0", "A", 0),
        ("b1", "B", 0),
        ("a5", "A", 3),
        ("b3", "B", 3),
        ("a9", "A", 9),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(i, q, p)| ((*i).to_owned(), (*q).to_owned(), *p))
        .collect();
    assert_eq!(got, expected);
    assert!(b
        .consume(&["A", "B"], Duration::ZERO)
        .await
        .expect("consume")
        .is_none());
}

#[tokio::test]
async fn round_robin_rotates_the_queue_that_delivered_and_lists_are_fifo() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    for id in ["x1", "x2"] {
        b.publish("X", None, &envelope(id, "X", 0))
            .await
            .expect("publish");
    }
    for id in ["y1", "y2"] {
        b.publish("Y", None, &envelope(id, "Y", 0))
            .await
            .expect("publish");
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(id_of(&take(&b, &["X", "Y"]).await));
    }
    assert_eq!(got, ["x1", "y1", "x2", "y2"]);
}

#[tokio::test]
async fn concurrent_consumers_never_share_a_message_and_lose_none() {
    const TOTAL: usize = 300;
    let server = server().await;
    let mut brokers = Vec::new();
    for _ in 0..3 {
        brokers.push(broker(&server, TransportOptions::default()).await);
    }
    let received = Arc::new(AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for b in &brokers {
        for _ in 0..4 {
            let b = b.clone();
            let received = received.clone();
            consumers.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                while received.load(Ordering::SeqCst) < TOTAL {
                    if let Some(d) = b
                        .consume(&["c1", "c2"], Duration::from_millis(300))
                        .await
                        .expect("consume")
                    {
                        ids.push(id_of(&d));
                        assert!(b.ack(&d.delivery_tag).await.expect("ack"), "acked once");
                        received.fetch_add(1, Ordering::SeqCst);
                    }
                }
                ids
            }));
        }
    }
    let producer = brokers[0].clone();
    for i in 0..TOTAL {
        let queue = if i % 2 == 0 { "c1" } else { "c2" };
        producer
            .publish(
                queue,
                None,
                &envelope(&format!("m{i}"), queue, (i % 10) as u8),
            )
            .await
            .expect("publish");
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.expect("consumer task"));
    }
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(
        all.len(),
        TOTAL,
        "every message received exactly once in total"
    );
    assert_eq!(distinct.len(), TOTAL, "no message received twice");
    assert_eq!(producer.unacked_len().await.expect("HLEN"), 0);
    assert_eq!(
        producer.queue_len("c1").await.expect("len") + producer.queue_len("c2").await.expect("len"),
        0
    );
}

#[tokio::test]
async fn a_waiting_consume_wakes_when_a_message_arrives() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.consume(&["wake"], Duration::from_secs(120)).await })
    };
    // Precondition: the consume call is blocked (its four list watchers wait in BLMOVE).
    wait_blocked(&server, 4).await;
    assert!(!waiting.is_finished());
    let raw = envelope("w1", "wake", 6);
    b.publish("wake", None, &raw).await.expect("publish");
    let d = waiting
        .await
        .expect("consume task")
        .expect("consume")
        .expect("woken with the message");
    assert_eq!((d.raw, d.priority), (raw, 6));
}

#[tokio::test]
async fn consume_gives_up_after_max_wait_and_cancelling_it_loses_nothing() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let none = b
        .consume(&["empty"], Duration::from_millis(100))
        .await
        .expect("consume");
    assert!(none.is_none());
    // A consume dropped while it waits takes nothing with it.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        b.consume(&["later"], Duration::from_secs(60)),
    )
    .await;
    assert!(cancelled.is_err(), "still waiting when cancelled");
    b.publish("later", None, &envelope("l1", "later", 0))
        .await
        .expect("publish");
    assert_eq!(id_of(&take(&b, &["later"]).await), "l1");
    assert_eq!(
        b.unacked_len().await.expect("HLEN"),
        1,
        "only the one taken"
    );
}

#[tokio::test]
async fn queue_len_and_purge_cover_every_priority_list() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    for p in [0, 2, 4, 7, 9, 9] {
        b.publish("pl", Some(p), &envelope("p", "pl", p))
            .await
            .expect("publish");
    }
    assert_eq!(b.queue_len("pl").await.expect("len"), 6);
    assert_eq!(b.purge("pl").await.expect("purge"), 6);
    assert_eq!(b.queue_len("pl").await.expect("len"), 0);
}

#[tokio::test]
async fn the_global_keyprefix_applies_to_lists_and_ack_keys() {
    let server = server().await;
    let b = broker(
        &server,
        TransportOptions::default().global_keyprefix("pfx:"),
    )
    .await;
    let mut conn = raw_conn(&server, 0).await;
    b.publish("pq", None, &envelope("g1", "pq", 3))
        .await
        .expect("publish");
    assert_eq!(llen(&mut conn, "pfx:pq\x06\x163").await, 1);
    let d = take(&b, &["pq"]).await;
    assert_eq!(d.queue, "pq");
    let n: i64 = redis::cmd("HLEN")
        .arg("pfx:unacked")
        .query_async(&mut conn)
        .await
        .expect("HLEN");
    assert_eq!(n, 1);
    assert!(
        !hexists(&mut conn, &d.delivery_tag).await,
        "nothing unprefixed"
    );
}

#[tokio::test]
async fn publish_refuses_envelopes_python_workers_would_lose() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let no_tag = br#"{"headers": {}, "properties": {"delivery_info": {"exchange": "", "routing_key": "q"}}}"#;
    let e = b
        .publish("q", None, no_tag)
        .await
        .expect_err("no delivery_tag");
    assert!(e.to_string().contains("properties.delivery_tag"), "{e}");
    let no_info = br#"{"headers": {}, "properties": {"delivery_tag": "t"}}"#;
    let e = b
        .publish("q", None, no_info)
        .await
        .expect_err("no delivery_info");
    assert!(e.to_string().contains("properties.delivery_info"), "{e}");
    assert_eq!(b.queue_len("q").await.expect("len"), 0);
}

#[tokio::test]
async fn a_waiting_consume_survives_a_server_restart() {
    let mut server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.consume(&["boot"], Duration::from_secs(120)).await })
    };
    wait_blocked(&server, 4).await;
    let idle = broker(&server, TransportOptions::default()).await;
    assert_eq!(idle.queue_len("boot").await.expect("len"), 0);
    server.kill();
    server.restart().await.expect("redis-server restarts");
    assert!(!waiting.is_finished(), "still waiting through the restart");
    // Published by another client: the waiting one's watchers reconnect on their own.
    let other = broker(&server, TransportOptions::default()).await;
    let raw = envelope("b1", "boot", 0);
    other.publish("boot", None, &raw).await.expect("publish");
    let d = waiting
        .await
        .expect("consume task")
        .expect("consume")
        .expect("woken with the message");
    assert_eq!(d.raw, raw);
    assert_eq!(b.unacked_len().await.expect("HLEN"), 1);
    // A client idle through the restart reconnects on its first idempotent call.
    assert!(idle
        .ack(&d.delivery_tag)
        .await
        .expect("ack after the restart"));
}
