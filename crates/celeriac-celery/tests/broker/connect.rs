//! Fanout channels, and what a wrong URL or an unreachable server says.

use celeriac_celery::broker::{BrokerError, ErrorKind, KombuBroker, TransportOptions};
use celeriac_testkit::RedisServer;
use futures_util::StreamExt;

use crate::common::*;

#[tokio::test]
async fn fanout_channels_carry_the_db_and_the_prefix() {
    let server = server().await;
    let b = KombuBroker::connect(
        &db_url(&server, 2),
        TransportOptions::default().global_keyprefix("pfx:"),
    )
    .await
    .expect("connects");
    assert_eq!(
        b.fanout_channel("celeryev", "task.sent"),
        "pfx:/2.celeryev/task.sent"
    );
    let mut sub = b
        .subscribe_fanout(&[("celeryev", "#"), ("celery.pidbox", "")])
        .await
        .expect("subscribe");
    // A plain subscriber on the literal channel name kombu uses.
    let mut plain = redis::Client::open(db_url(&server, 0))
        .expect("url")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    plain
        .subscribe("pfx:/2.celery.pidbox")
        .await
        .expect("SUBSCRIBE");
    let mut plain = plain.into_on_message();

    let n = b
        .publish_fanout("celeryev", "worker.heartbeat", b"{\"hb\": 1}")
        .await
        .expect("publish");
    assert_eq!(n, 1, "our pattern subscriber received it");
    let m = sub.next().await.expect("a message");
    assert_eq!(
        (m.channel.as_str(), m.raw.as_slice()),
        ("/2.celeryev/worker.heartbeat", &b"{\"hb\": 1}"[..])
    );

    assert_eq!(
        b.publish_fanout("celery.pidbox", "", b"{}")
            .await
            .expect("publish"),
        2
    );
    assert_eq!(
        sub.next().await.expect("a message").channel,
        "/2.celery.pidbox"
    );
    let p = plain.next().await.expect("plain subscriber message");
    assert_eq!(p.get_payload_bytes(), b"{}");
}

#[tokio::test]
async fn connection_errors_are_clear_and_never_show_the_password() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://celery:hunter2-secret@127.0.0.1:{port}/0");
    let e = KombuBroker::connect(&url, TransportOptions::default())
        .await
        .expect_err("nothing listens there");
    let text = e.to_string();
    assert!(matches!(e, BrokerError::Connect { .. }), "{e:?}");
    assert!(
        !text.contains("hunter2-secret") && !format!("{e:?}").contains("hunter2-secret"),
        "{text}"
    );
    assert!(
        text.contains(&format!("redis://celery:***@127.0.0.1:{port}/0")),
        "{text}"
    );
    assert_eq!(e.kind(), ErrorKind::Reconnect);

    let server = RedisServer::builder()
        .password("the-right-one")
        .start()
        .await
        .expect("redis-server with a password");
    let (host, port) = server.host_port();
    let wrong = format!("redis://:wrong-password-42@{host}:{port}/0");
    let e = KombuBroker::connect(&wrong, TransportOptions::default())
        .await
        .expect_err("wrong password");
    assert!(!format!("{e} {e:?}").contains("wrong-password-42"), "{e}");
    assert_eq!(e.kind(), ErrorKind::GiveUp, "{e}");
    let right = format!("{}/0", server.url());
    KombuBroker::connect(&right, TransportOptions::default())
        .await
        .expect("the right password connects");

    let e = KombuBroker::connect("http://u:pw-in-url@host/0", TransportOptions::default())
        .await
        .expect_err("not a redis url");
    assert!(
        matches!(e, BrokerError::Url { .. }) && !e.to_string().contains("pw-in-url"),
        "{e}"
    );
}
