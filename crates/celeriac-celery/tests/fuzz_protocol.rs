//! Fuzzing the message layer: random bytes and mutated real envelopes, bodies and signatures
//! never panic, only return errors; what decodes encodes back to the same value.

use base64::Engine as _;
use celeriac_celery::protocol::{
    unwrap_kombu_types, ApplyContext, Compression, Envelope, Route, Signature, TaskMessage,
};
use celeriac_celery::pyjson::{self, normalize, parse};
use celeriac_testkit::fuzz::{bytes, mutated, run};
use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

const ADD_CAPTURE: &str = r#"{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "adac2f2b-2aa6-4c79-aa76-1b180fd551eb", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "adac2f2b-2aa6-4c79-aa76-1b180fd551eb", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen8628@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "adac2f2b-2aa6-4c79-aa76-1b180fd551eb", "reply_to": "a234e347-1cef-3d5d-b408-b494e36a7ee0", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "69fd4e87-a399-46ed-86ec-23865e85dd00"}}"#;

const BODIES: [&str; 6] = [
    r#"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#,
    r#"[[1, 2], {}, {"callbacks": null, "errbacks": null, "chord": null, "chain": [{"task": "tasks.add", "args": [100], "kwargs": {}, "options": {"task_id": "9dda3067", "reply_to": "e50a50e9"}, "subtask_type": null, "immutable": false}, {"task": "tasks.add", "args": [10], "kwargs": {}, "options": {"task_id": "fc389262"}, "subtask_type": null, "immutable": false}]}]"#,
    r#"[[3, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": {"task": "tasks.tsum", "args": [], "kwargs": {}, "options": {"task_id": "b684b23e", "group_id": "1ef33011"}, "subtask_type": null, "immutable": false}}]"#,
    r#"[[NaN, -Infinity, 123456789012345678901234567890, {"__type__": "bytes", "__value__": "hi"}], {"d": {"__type__": "uuid", "__value__": {"hex": "6f1e0f5e3b7c4b8a9d0e1f2a3b4c5d6e"}}}, null]"#,
    r#"{"task": "tasks.add", "id": "v1", "args": [1], "kwargs": {}, "retries": 1, "eta": "2030-01-01T00:00:00", "taskset": "g", "timelimit": [1.5, null], "callbacks": [{"task": "x"}]}"#,
    r#"[[], {"x": 1}]"#,
];

fn envelope(body: &[u8], patch: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(ADD_CAPTURE).expect("the capture is JSON");
    v["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
    patch(&mut v);
    serde_json::to_vec(&v).expect("serializes")
}

fn envelope_corpus() -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = BODIES
        .iter()
        .map(|b| envelope(b.as_bytes(), |_| ()))
        .collect();
    corpus.push(ADD_CAPTURE.as_bytes().to_vec());
    corpus.push(envelope(
        &Compression::Zlib.compress(BODIES[1].as_bytes()),
        |v| {
            v["headers"]["compression"] = json!("application/x-gzip");
        },
    ));
    let msgpack =
        rmp_serde::to_vec(&json!([[1, "a"], {"k": [true, null]}, null])).expect("msgpack");
    corpus.push(envelope(&msgpack, |v| {
        v["content-type"] = json!("application/x-msgpack")
    }));
    corpus.push(
        br#"{"body": "[[1,2],{},{}]", "headers": {"task": "t", "id": "x", "eta": "2000-01-01T00:00:00", "timelimit": [1, 2.5]}, "properties": {"delivery_tag": "t1", "delivery_info": {"exchange": "", "routing_key": "q", "redelivered": true}, "priority": 12}}"#.to_vec(),
    );
    corpus
}

/// Decoding never panics; an error has a message; what decodes re-encodes to the same
/// envelope (after the first encoding filled defaults) and task message.
fn check_envelope(raw: &[u8]) -> Result<(), TestCaseError> {
    let env = match Envelope::decode(raw) {
        Ok(env) => env,
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            return Ok(());
        }
    };
    // Encoding fills what Python needs (`priority`, `delivery_info`, `delivery_tag`), so the
    // first round trip may add fields; from then on it is exact.
    let redecode = |e: &Envelope| {
        Envelope::decode(&e.encode()).map_err(|e| TestCaseError::fail(format!("re-decoding: {e}")))
    };
    let once = redecode(&env)?;
    prop_assert_eq!(&once.body, &env.body);
    prop_assert_eq!(&once.headers, &env.headers);
    prop_assert_eq!(&redecode(&once)?, &once);
    match TaskMessage::decode(&env) {
        Ok(msg) => {
            let routed = msg.to_envelope(Route::from_envelope(&env));
            let back = TaskMessage::decode(
                &Envelope::decode(&routed.encode())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?,
            )
            .map_err(|e| TestCaseError::fail(format!("re-decoding the message: {e}")))?;
            prop_assert_eq!(back.args.len(), msg.args.len());
            prop_assert_eq!(&back.headers.id, &msg.headers.id);
            prop_assert_eq!(back.headers.retries, msg.headers.retries);
            prop_assert_eq!(&back.embed, &msg.embed);
            let _ = unwrap_kombu_types(Value::Array(msg.args));
            let now = Utc
                .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
                .single()
                .expect("a date");
            let _ =
                msg.embed
                    .dispatch_chain_step(&ApplyContext::after(&msg.headers, json!(1), now));
            if let Some(chord) = &msg.embed.chord {
                let _ = chord.dispatch(&ApplyContext::new(now));
            }
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

#[test]
fn fuzz_envelopes_random_bytes() {
    assert!(run("envelope random bytes", bytes(512), |b| check_envelope(&b)) > 0);
}

#[test]
fn fuzz_envelopes_mutated() {
    assert!(
        run("envelope mutated", mutated(envelope_corpus()), |b| {
            check_envelope(&b)
        }) > 0
    );
}

/// Mutations inside the body (under the base64), where the JSON parser and the shape checks
/// see them.
#[test]
fn fuzz_bodies_mutated() {
    let corpus = BODIES.iter().map(|b| b.as_bytes().to_vec()).collect();
    let n = run("body mutated", mutated(corpus), |body| {
        check_envelope(&envelope(&body, |_| ()))
    });
    assert!(n > 0);
}

#[test]
fn fuzz_compressed_and_msgpack_bodies_mutated() {
    let mut corpus: Vec<Vec<u8>> = BODIES
        .iter()
        .map(|b| Compression::Zlib.compress(b.as_bytes()))
        .collect();
    corpus.push(
        rmp_serde::to_vec(&json!([[1, {"a": [1.5, "x"]}], {"k": null}, {"chain": null}]))
            .expect("msgpack"),
    );
    let n = run("compressed body mutated", mutated(corpus), |body| {
        check_envelope(&envelope(&body, |v| {
            v["headers"]["compression"] = json!("zlib")
        }))?;
        check_envelope(&envelope(&body, |v| {
            v["content-type"] = json!("application/x-msgpack")
        }))
    });
    assert!(n > 0);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z_]{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("task"),
            Just("args"),
            Just("kwargs"),
            Just("options"),
            Just("subtask_type"),
            Just("chain"),
            Just("group"),
            Just("chord"),
            Just("tasks"),
            Just("header"),
            Just("body"),
            Just("task_id"),
            Just("link"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("task".to_owned()),
                    Just("args".to_owned()),
                    Just("kwargs".to_owned()),
                    Just("options".to_owned()),
                    Just("subtask_type".to_owned()),
                    Just("tasks".to_owned()),
                    Just("header".to_owned()),
                    Just("body".to_owned()),
                    Just("chain".to_owned()),
                    Just("link".to_owned()),
                    Just("queue".to_owned()),
                    Just("countdown".to_owned()),
                    Just("__type__".to_owned()),
                    Just("__value__".to_owned()),
                    "[a-z]{1,4}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arbitrary JSON as a signature: reading, freezing, dispatching and unwrapping never panic;
/// a signature that reads writes back to a value that reads to it again.
#[test]
fn fuzz_signatures() {
    let now = Utc
        .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .expect("a date");
    let n = run("signatures", json_value(), |v| {
        let _ = unwrap_kombu_types(v.clone());
        if let Ok(sig) = Signature::from_value(&v, "fuzz") {
            let again = Signature::from_value(&sig.to_value(), "again")
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&again, &sig);
            let _ = sig.dispatch(&ApplyContext::new(now));
            let mut frozen = sig.clone();
            let _ = celeriac_celery::protocol::canvas::freeze(&mut frozen);
        }
        Ok(())
    });
    assert!(n > 0);
}

/// Python's non-standard tokens: the rewrite keeps strings intact and never panics.
#[test]
fn fuzz_non_finite_rewrite() {
    let corpus = vec![
        br#"[NaN, "NaN", -Infinity, "a\"Infinity", {"k": Infinity}]"#.to_vec(),
        br#"{"a": "\\", "b": NaN}"#.to_vec(),
    ];
    let n = run("non-finite rewrite", mutated(corpus), |b| {
        let rewritten = normalize(&b);
        // Each rewritten token (at least 3 bytes and a separator) gains two quotes.
        prop_assert!(rewritten.len() <= b.len() + b.len() / 2 + 4);
        if let Ok(v) = parse(&b) {
            // What parses is plain JSON afterwards: what Rust writes of it reads again.
            if let Err(e) = parse(&pyjson::to_python_json_bytes(&v)) {
                return Err(TestCaseError::fail(format!("re-reading: {e}")));
            }
        }
        Ok(())
    });
    assert!(n > 0);
}
