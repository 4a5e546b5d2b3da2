//! The client's settings and errors, without Python: connect failures name the setting and
//! hide the password; bad arguments are refused before anything is sent; results read from
//! the backend (PENDING when absent, typed failures, timeouts, forget).

use std::time::Duration;

use celeriac_celery::client::{Client, ClientError};
use celeriac_celery::results::{ExceptionInfo, ResultBackend, ResultMeta, State};
use serde_json::json;

use crate::common::{assert_wire_safe, capture, World};

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("address").port()
}

#[tokio::test]
async fn connect_errors_name_the_setting_and_hide_the_password() {
    let port = closed_port();
    let err = Client::builder(format!("redis://:hunter2secret@127.0.0.1:{port}/0"))
        .build()
        .await
        .expect_err("nothing listens there");
    let shown = err.to_string();
    assert!(
        matches!(
            err,
            ClientError::Connect {
                setting: "broker_url",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(shown.contains("broker_url"), "{shown}");
    assert!(!shown.contains("hunter2secret"), "{shown}");
    assert!(!format!("{err:?}").contains("hunter2secret"), "{err:?}");

    let err = Client::builder("http://127.0.0.1:1/0")
        .build()
        .await
        .expect_err("not a redis URL");
    assert!(
        matches!(
            err,
            ClientError::Setting {
                setting: "broker_url",
                ..
            }
        ),
        "{err:?}"
    );

    // A working broker, an unreachable result backend.
    let world = World::start().await;
    let err = Client::builder(world.cfg.broker_url.clone())
        .result_backend(format!("redis://:hunter2secret@127.0.0.1:{port}/1"))
        .build()
        .await
        .expect_err("the backend is unreachable");
    let shown = err.to_string();
    assert!(
        matches!(
            err,
            ClientError::Connect {
                setting: "result_backend",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!shown.contains("hunter2secret"), "{shown}");
    assert!(!format!("{err:?}").contains("hunter2secret"), "{err:?}");

    let err = Client::builder(world.cfg.broker_url.clone())
        .default_queue("")
        .build()
        .await
        .expect_err("empty queue");
    assert!(
        matches!(
            err,
            ClientError::Setting {
                setting: "default_queue",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn bad_arguments_are_refused_and_nothing_is_sent() {
    let world = World::start().await;
    let client = Client::builder(world.cfg.broker_url.clone())
        .default_queue("q")
        .build()
        .await
        .expect("connects");
    let err = client
        .send_task("tasks.add")
        .args(5)
        .send()
        .await
        .expect_err("args must be a sequence");
    assert!(
        matches!(&err, ClientError::Arguments { field: "args", task, .. } if task == "tasks.add"),
        "{err:?}"
    );
    let err = client
        .send_task("tasks.add")
        .kwargs(vec![1, 2])
        .send()
        .await
        .expect_err("kwargs must be a map");
    assert!(
        matches!(
            err,
            ClientError::Arguments {
                field: "kwargs",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(client.broker().queue_len("q").await.expect("len"), 0);

    // Without a result backend a task is sent, but not awaited; a chord is not sent.
    let r = client
        .send_task("tasks.add")
        .args(())
        .send()
        .await
        .expect("sent");
    assert_eq!(client.broker().queue_len("q").await.expect("len"), 1);
    let wires = capture(&world, &["q"]).await;
    assert_wire_safe(&wires[&r.id], "no arguments");
    assert_eq!(wires[&r.id].body[0], serde_json::json!([]));
    let err = r
        .get::<i64>(Duration::from_secs(1))
        .await
        .expect_err("no backend");
    assert!(
        matches!(
            err,
            ClientError::Setting {
                setting: "result_backend",
                ..
            }
        ),
        "{err:?}"
    );
    let chord = celeriac_celery::protocol::Signature::chord(
        vec![celeriac_celery::protocol::Signature::new("tasks.add")],
        celeriac_celery::protocol::Signature::new("tasks.tsum"),
    );
    let err = client
        .apply(chord)
        .await
        .expect_err("a chord needs the backend");
    assert!(
        matches!(
            err,
            ClientError::Setting {
                setting: "result_backend",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(client.broker().queue_len("q").await.expect("len"), 1);
}

#[tokio::test]
async fn results_read_from_the_backend() {
    let world = World::start().await;
    let client = Client::builder(world.cfg.broker_url.clone())
        .result_backend(world.cfg.backend_url.clone())
        .build()
        .await
        .expect("connects");
    let backend = ResultBackend::connect(world.cfg.backend_url.clone())
        .await
        .expect("backend");

    let r = client.result("t-pending");
    assert_eq!(r.state().await.expect("state"), State::Pending);
    assert!(!r.ready().await.expect("ready"));
    let err = r
        .get::<i64>(Duration::from_millis(300))
        .await
        .expect_err("nothing arrives");
    assert!(
        matches!(&err, ClientError::Timeout { last_state, .. } if last_state == "PENDING"),
        "{err:?}"
    );

    backend
        .store(&ResultMeta::success("t-ok", json!({"a": [1, 2]})))
        .await
        .expect("store");
    let r = client.result("t-ok");
    let value: std::collections::BTreeMap<String, Vec<u8>> =
        r.get(Duration::from_secs(5)).await.expect("success");
    assert_eq!(value["a"], [1, 2]);
    let err = r
        .get::<String>(Duration::from_secs(5))
        .await
        .expect_err("not a string");
    assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
    assert!(r.forget().await.expect("forget"));
    assert_eq!(r.state().await.expect("state"), State::Pending);

    let exc = ExceptionInfo::with_module("tasks", "CustomError", vec![json!("bad")])
        .expect("a valid exception");
    backend
        .store(&ResultMeta::failure(
            "t-fail",
            &exc,
            "Traceback...\nCustomError: bad\n",
        ))
        .await
        .expect("store");
    let err = client
        .result("t-fail")
        .get::<i64>(Duration::from_secs(5))
        .await
        .expect_err("failed");
    let f = err.failure().expect("a task failure");
    assert_eq!(f.class_path(), "tasks.CustomError");
    assert_eq!(f.message, "bad");
    assert!(err.to_string().contains("tasks.CustomError: bad"), "{err}");

    backend
        .store(&ResultMeta::revoked("t-rev", "revoked"))
        .await
        .expect("store");
    let err = client
        .result("t-rev")
        .get::<i64>(Duration::from_secs(5))
        .await
        .expect_err("revoked");
    assert!(
        matches!(&err, ClientError::Revoked { reason, .. } if reason == "revoked"),
        "{err:?}"
    );
}
