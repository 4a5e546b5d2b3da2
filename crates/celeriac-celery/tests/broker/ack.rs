//! Ack emulation: kombu's `unacked` records, ack, requeue, the visibility sweep, extend,
//! and a consumer killed between claim and ack.

use std::time::Duration;

use celeriac_celery::broker::{KombuBroker, TransportOptions};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn unacked_entries_have_kombus_exact_format_and_ack_removes_both() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let mut conn = raw_conn(&server, 0).await;
    let raw = envelope("u1", "fmt", 4);
    b.publish("fmt", None, &raw).await.expect("publish");
    let before = server_time(&mut conn).await;
    let d = take(&b, &["fmt"]).await;
    let after = server_time(&mut conn).await;
    assert_eq!(d.raw, raw, "the message comes back byte for byte");
    assert_eq!(
        (d.queue.as_str(), d.priority, d.redelivered),
        ("fmt", 3, false)
    );
    assert_eq!(
        json_of(&raw)["properties"]["delivery_tag"],
        json!(d.delivery_tag)
    );

    let entry: Vec<u8> = redis::cmd("HGET")
        .arg("unacked")
        .arg(&d.delivery_tag)
        .query_async(&mut conn)
        .await
        .expect("HGET");
    // Python's QoS.restore_by_tag does `M, EX, RK = loads(entry)`.
    let entry = json_of(&entry);
    assert_eq!(entry, json!([json_of(&raw), "", "fmt"]));
    let score: f64 = redis::cmd("ZSCORE")
        .arg("unacked_index")
        .arg(&d.delivery_tag)
        .query_async(&mut conn)
        .await
        .expect("ZSCORE is a float");
    assert!(
        before - 0.001 <= score && score <= after + 0.001,
        "score {score} is the server's clock at the claim ({before}..{after})"
    );

    assert!(b.ack(&d.delivery_tag).await.expect("ack"));
    assert!(!hexists(&mut conn, &d.delivery_tag).await);
    let in_index: Option<f64> = redis::cmd("ZSCORE")
        .arg("unacked_index")
        .arg(&d.delivery_tag)
        .query_async(&mut conn)
        .await
        .expect("ZSCORE");
    assert_eq!(in_index, None);
    assert!(
        !b.ack(&d.delivery_tag).await.expect("second ack"),
        "already gone"
    );
}

#[tokio::test]
async fn requeue_puts_the_message_in_front_marked_redelivered() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let mut conn = raw_conn(&server, 0).await;
    for id in ["r1", "r2"] {
        b.publish("rq", None, &envelope(id, "rq", 7))
            .await
            .expect("publish");
    }
    let first = take(&b, &["rq"]).await;
    assert_eq!(id_of(&first), "r1");
    assert!(b.requeue(&first.delivery_tag).await.expect("requeue"));
    assert!(
        !hexists(&mut conn, &first.delivery_tag).await,
        "forgotten once restored"
    );

    let again = take(&b, &["rq"]).await;
    assert_eq!(
        id_of(&again),
        "r1",
        "restored to the consuming end, ahead of r2"
    );
    assert!(again.redelivered);
    assert_eq!(again.priority, 6, "back on its priority list");
    let mut expected = json_of(&first.raw);
    expected["headers"]["redelivered"] = json!(true);
    expected["properties"]["delivery_info"]["redelivered"] = json!(true);
    assert_eq!(json_of(&again.raw), expected, "nothing else changed");

    // kombu's reject(requeue=True): behind what waits.
    assert!(b
        .requeue_back(&again.delivery_tag)
        .await
        .expect("requeue_back"));
    assert_eq!(id_of(&take(&b, &["rq"]).await), "r2");
    assert_eq!(id_of(&take(&b, &["rq"]).await), "r1");
    assert!(!b.requeue("no-such-tag").await.expect("requeue of nothing"));
}

#[tokio::test]
async fn the_sweep_takes_the_mutex_and_restores_only_stale_entries() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let mut conn = raw_conn(&server, 0).await;
    for id in ["old", "new"] {
        b.publish("sw", None, &envelope(id, "sw", 0))
            .await
            .expect("publish");
    }
    let old = take(&b, &["sw"]).await;
    let new = take(&b, &["sw"]).await;
    assert_eq!((id_of(&old).as_str(), id_of(&new).as_str()), ("old", "new"));
    age(&mut conn, &old.delivery_tag, 2.0 * HOUR).await;

    // Another sweeper (a Python worker) holds the mutex: nothing happens.
    let _: () = redis::cmd("SET")
        .arg("unacked_mutex")
        .arg("python-token")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let report = b.restore_visible().await.expect("sweep");
    assert!(report.mutex_held);
    assert_eq!((report.restored, llen(&mut conn, "sw").await), (0, 0));
    let token: Option<String> = redis::cmd("GET")
        .arg("unacked_mutex")
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(
        token.as_deref(),
        Some("python-token"),
        "someone else's mutex is left alone"
    );

    let _: () = redis::cmd("DEL")
        .arg("unacked_mutex")
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let report = b.restore_visible().await.expect("sweep");
    assert!(!report.mutex_held);
    assert_eq!((report.restored, report.left), (1, 0));
    assert!(!hexists(&mut conn, &old.delivery_tag).await);
    assert!(
        hexists(&mut conn, &new.delivery_tag).await,
        "the fresh one stays"
    );
    let back = take(&b, &["sw"]).await;
    assert_eq!(id_of(&back), "old");
    assert!(back.redelivered);
    let mutex: Option<String> = redis::cmd("GET")
        .arg("unacked_mutex")
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(mutex, None, "released after the sweep");
}

#[tokio::test]
async fn extend_keeps_a_message_from_the_sweep() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let mut conn = raw_conn(&server, 0).await;
    for id in ["busy", "idle"] {
        b.publish("ex", None, &envelope(id, "ex", 0))
            .await
            .expect("publish");
    }
    let busy = take(&b, &["ex"]).await;
    let idle = take(&b, &["ex"]).await;
    age(&mut conn, &busy.delivery_tag, 2.0 * HOUR).await;
    age(&mut conn, &idle.delivery_tag, 2.0 * HOUR).await;

    let missing = b
        .extend(&[busy.delivery_tag.as_str(), "gone-tag"])
        .await
        .expect("extend");
    assert_eq!(missing, ["gone-tag"]);
    let report = b.restore_visible().await.expect("sweep");
    assert_eq!(report.restored, 1);
    assert!(
        hexists(&mut conn, &busy.delivery_tag).await,
        "extended: still ours"
    );
    assert!(!hexists(&mut conn, &idle.delivery_tag).await);
    assert_eq!(id_of(&take(&b, &["ex"]).await), "idle");
}

/// The child side of `a_consumer_killed_after_claiming_leaves_the_message_in_unacked`: takes
/// one message, says so, and waits to be killed. Runs only when that test starts it.
#[tokio::test]
#[ignore = "helper process of a_consumer_killed_after_claiming_leaves_the_message_in_unacked"]
async fn child_consumer_waits_to_be_killed() {
    let Ok(url) = std::env::var("CELERIAC_BROKER_CHILD_URL") else {
        return;
    };
    let b = KombuBroker::connect(&url, TransportOptions::default())
        .await
        .expect("child connects");
    let d = b
        .consume(&["killed"], Duration::from_secs(60))
        .await
        .expect("child consumes")
        .expect("child got a message");
    println!("CLAIMED {}", d.delivery_tag);
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn a_consumer_killed_after_claiming_leaves_the_message_in_unacked() {
    use tokio::io::AsyncBufReadExt;
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let mut conn = raw_conn(&server, 0).await;
    b.publish("killed", None, &envelope("k1", "killed", 0))
        .await
        .expect("publish");

    let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "ack::child_consumer_waits_to_be_killed",
            "--ignored",
            "--nocapture",
        ])
        .env("CELERIAC_BROKER_CHILD_URL", db_url(&server, 0))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("child starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let tag = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("child output") {
            if let Some(tag) = line.strip_prefix("CLAIMED ") {
                return tag.to_owned();
            }
        }
        panic!("the child exited without claiming");
    })
    .await
    .expect("the child claims within a minute");
    child.kill().await.expect("kill -9 the child");

    assert_eq!(llen(&mut conn, "killed").await, 0, "taken from the list");
    assert!(
        hexists(&mut conn, &tag).await,
        "recorded in unacked by the same step"
    );
    age(&mut conn, &tag, 2.0 * HOUR).await;
    let report = b.restore_visible().await.expect("sweep");
    assert_eq!(report.restored, 1);
    let back = take(&b, &["killed"]).await;
    assert_eq!((id_of(&back).as_str(), back.redelivered), ("k1", true));
}

#[tokio::test]
async fn restore_all_gives_every_own_message_back() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    for id in ["s1", "s2", "s3"] {
        b.publish("shut", None, &envelope(id, "shut", 0))
            .await
            .expect("publish");
    }
    let tags: Vec<String> = vec![
        take(&b, &["shut"]).await.delivery_tag,
        take(&b, &["shut"]).await.delivery_tag,
    ];
    assert_eq!(b.restore_all(&tags).await.expect("restore_all"), 2);
    assert_eq!(b.unacked_len().await.expect("HLEN"), 0);
    assert_eq!(b.queue_len("shut").await.expect("len"), 3);
}

#[tokio::test]
async fn undecodable_and_duplicate_messages_are_kept() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let mut conn = raw_conn(&server, 0).await;
    let _: i64 = redis::cmd("LPUSH")
        .arg("odd")
        .arg("not json {")
        .query_async(&mut conn)
        .await
        .expect("LPUSH");
    let d = take(&b, &["odd"]).await;
    assert_eq!(d.raw, b"not json {");
    assert!(
        d.delivery_tag.starts_with("celeriac-untagged-"),
        "{}",
        d.delivery_tag
    );
    let entry: Vec<u8> = redis::cmd("HGET")
        .arg("unacked")
        .arg(&d.delivery_tag)
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(json_of(&entry), json!(["not json {", "", "odd"]));
    assert!(b.requeue(&d.delivery_tag).await.expect("requeue"));
    let back: Vec<u8> = redis::cmd("RPOP")
        .arg("odd")
        .query_async(&mut conn)
        .await
        .expect("RPOP");
    assert_eq!(back, b"not json {", "given back as it was");

    // The same envelope twice: two entries, neither overwrites the other.
    let raw = envelope("dup", "dup", 0);
    b.publish("dup", None, &raw).await.expect("publish");
    b.publish("dup", None, &raw).await.expect("publish");
    let one = take(&b, &["dup"]).await;
    let two = take(&b, &["dup"]).await;
    assert_ne!(one.delivery_tag, two.delivery_tag);
    assert_eq!(b.unacked_len().await.expect("HLEN"), 2);
}
