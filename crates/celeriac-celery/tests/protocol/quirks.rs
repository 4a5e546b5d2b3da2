//! Everything Python may send: refused serializers, msgpack, compression (and bombs), protocol
//! v1, `NaN`/`Infinity`/big integers, kombu's `__type__` wrappers, naive and aware dates,
//! float time limits, 2-element bodies, minimal hand-made envelopes; and the display reprs.

use super::{capture_with_body, decode, ADD_CAPTURE};
use base64::Engine as _;
use celeriac_celery::protocol::time::{format_iso8601, parse_iso8601};
use celeriac_celery::protocol::{
    unwrap_kombu_types, Compression, Envelope, ProtocolError, Route, Signature, TaskMessage,
    MAX_DECOMPRESSED_BODY,
};
use celeriac_celery::pyjson::repr::{args_repr, kwargs_repr, REPR_MAX_CHARS};
use celeriac_celery::pyjson::{self, normalize, to_python_json_bytes};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};

fn envelope_with(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(ADD_CAPTURE).expect("json");
    v["content-type"] = json!(content_type);
    v["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
    serde_json::to_vec(&v).expect("json")
}

fn with_headers(patch: Value) -> Result<TaskMessage, ProtocolError> {
    let mut v: Value = serde_json::from_str(ADD_CAPTURE).expect("json");
    for (k, val) in patch.as_object().expect("an object") {
        v["headers"][k] = val.clone();
    }
    TaskMessage::decode(&Envelope::decode(&serde_json::to_vec(&v).expect("json"))?)
}

#[test]
fn pickle_and_yaml_are_refused_with_the_reason_and_msgpack_is_read() {
    for (ct, word) in [
        ("application/x-python-serialize", "pickle"),
        ("application/x-yaml", "YAML"),
        ("application/data", "only application/json"),
    ] {
        let env = Envelope::decode(&envelope_with(ct, b"\x80\x04whatever"))
            .expect("the envelope itself is fine");
        let err = TaskMessage::decode(&env).expect_err("refused");
        assert!(
            matches!(&err, ProtocolError::RefusedContentType { content_type, .. } if content_type == ct),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(ct) && text.contains(word), "{text}");
    }
    let err = TaskMessage::decode(
        &Envelope::decode(&envelope_with("application/x-python-serialize", b"x")).expect("ok"),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("arbitrary code"), "{err}");

    let body = rmp_serde::to_vec(&json!([[1, "a"], {"k": true}, null])).expect("msgpack");
    let msg = decode(&envelope_with("application/x-msgpack", &body));
    assert_eq!(
        (msg.args.clone(), msg.kwargs.get("k")),
        (vec![json!(1), json!("a")], Some(&json!(true)))
    );
}

#[test]
fn zlib_compression_round_trips_and_a_bomb_is_refused() {
    let mut env = Envelope::decode(ADD_CAPTURE.as_bytes()).expect("decodes");
    env.compression = Some(Compression::Zlib);
    let raw = env.encode();
    let v: Value = serde_json::from_slice(&raw).expect("json");
    assert_eq!(v["headers"]["compression"], "application/x-gzip");
    let wire = base64::engine::general_purpose::STANDARD
        .decode(v["body"].as_str().expect("body"))
        .expect("b64");
    assert_eq!(&wire[..2], &[0x78, 0x9c], "a zlib stream, not gzip");
    let back = Envelope::decode(&raw).expect("decompresses");
    assert_eq!(back, env);
    assert!(!back.headers.contains_key("compression"));
    assert_eq!(
        TaskMessage::decode(&back).expect("decodes").args,
        vec![json!(2), json!(3)]
    );

    // 17 MiB of spaces compress to a few KiB; decoding stops at the limit.
    let bomb = Compression::Zlib.compress(&vec![b' '; MAX_DECOMPRESSED_BODY + (1 << 20)]);
    assert!(bomb.len() < 100_000);
    let mut v: Value = serde_json::from_str(ADD_CAPTURE).expect("json");
    v["headers"]["compression"] = json!("zlib");
    v["body"] = json!(base64::engine::general_purpose::STANDARD.encode(&bomb));
    let err = Envelope::decode(&serde_json::to_vec(&v).expect("json")).expect_err("a bomb");
    assert!(
        matches!(err, ProtocolError::DecompressedTooLarge { limit } if limit == MAX_DECOMPRESSED_BODY),
        "{err:?}"
    );

    v["body"] = json!(base64::engine::general_purpose::STANDARD.encode(b"not zlib at all"));
    let err = Envelope::decode(&serde_json::to_vec(&v).expect("json")).expect_err("corrupt");
    assert!(matches!(err, ProtocolError::Decompress(_)), "{err:?}");

    v["headers"]["compression"] = json!("application/x-bz2");
    let err = Envelope::decode(&serde_json::to_vec(&v).expect("json")).expect_err("bz2");
    assert!(
        err.to_string().contains("application/x-bz2") && err.to_string().contains("only zlib"),
        "{err}"
    );
}

#[test]
fn a_protocol_v1_message_is_read_into_the_same_form() {
    let body = json!({"task": "tasks.add", "id": "v1-id", "args": [1, 2], "kwargs": {"z": 3}, "retries": 2,
        "eta": "2030-01-01T00:00:00", "expires": null, "utc": true, "callbacks": [Signature::new("tasks.add").to_value()],
        "errbacks": null, "taskset": "g1", "chord": null, "timelimit": [10, null]});
    let mut v: Value = serde_json::from_str(ADD_CAPTURE).expect("json");
    v["headers"] = json!({});
    v["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body.to_string()));
    let msg = decode(&serde_json::to_vec(&v).expect("json"));
    assert_eq!(
        (
            msg.headers.task.as_str(),
            msg.headers.id.as_str(),
            msg.headers.retries
        ),
        ("tasks.add", "v1-id", 2)
    );
    assert_eq!(msg.args, vec![json!(1), json!(2)]);
    assert_eq!(msg.kwargs.get("z"), Some(&json!(3)));
    assert_eq!(msg.headers.group.as_deref(), Some("g1"));
    assert_eq!(
        msg.headers.eta,
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single()
    );
    assert_eq!(msg.headers.timelimit.hard, Some(10.0));
    assert_eq!(msg.embed.callbacks.as_ref().map(Vec::len), Some(1));
    // Neither v2 headers nor a v1 body: the missing header is named.
    v["body"] = json!(base64::engine::general_purpose::STANDARD.encode("[[], {}, null]"));
    let err =
        TaskMessage::decode(&Envelope::decode(&serde_json::to_vec(&v).expect("json")).expect("ok"))
            .expect_err("no task");
    assert_eq!(err.to_string(), "task message header `task` is missing");
}

#[test]
fn nan_infinity_and_big_integers_decode() {
    let body = r#"[[NaN, Infinity, -Infinity, 123456789012345678901234567890, -5, "NaN in a \"string\" Infinity"], {"x": -Infinity}, null]"#;
    let msg = decode(&capture_with_body(body));
    // pyjson's policy: the non-finite floats and the big integer become strings, every digit
    // kept, and typed fields read them back with `pyjson::de`.
    assert_eq!(
        msg.args[..3],
        [json!("NaN"), json!("Infinity"), json!("-Infinity")]
    );
    assert_eq!(msg.args[3], json!("123456789012345678901234567890"));
    let big = pyjson::de::int(msg.args[3].clone()).expect("the digits read as an i128");
    assert_eq!(big, 123_456_789_012_345_678_901_234_567_890_i128);
    assert!(pyjson::de::float(msg.args[1].clone()).expect("a float") == f64::INFINITY);
    assert_eq!(msg.args[4], json!(-5));
    assert_eq!(
        msg.args[5],
        json!("NaN in a \"string\" Infinity"),
        "strings are untouched"
    );
    assert_eq!(msg.kwargs.get("x"), Some(&json!("-Infinity")));
    assert_eq!(&*normalize(b"[1, 2]"), b"[1, 2]");
}

#[test]
fn kombu_type_wrappers_unwrap_to_plain_json() {
    let body = r#"[[{"__type__": "datetime", "__value__": "2024-01-02T03:04:05.123456+00:00"},
        {"__type__": "date", "__value__": "2024-01-02"},
        {"__type__": "time", "__value__": "03:04:05"},
        {"__type__": "decimal", "__value__": "1.10"},
        {"__type__": "uuid", "__value__": {"hex": "6f1e0f5e3b7c4b8a9d0e1f2a3b4c5d6e"}},
        {"__type__": "bytes", "__value__": "hi"},
        {"__type__": "base64", "__value__": "/wA="},
        {"__type__": "datetime", "__value__": "x", "extra": 1},
        {"__type__": "nope", "__value__": 1}], {"nested": [{"__type__": "decimal", "__value__": "2"}]}, null]"#;
    let msg = decode(&capture_with_body(body));
    let args = unwrap_kombu_types(Value::Array(msg.args));
    assert_eq!(
        args,
        json!(["2024-01-02T03:04:05.123456+00:00", "2024-01-02", "03:04:05", "1.10",
            "6f1e0f5e-3b7c-4b8a-9d0e-1f2a3b4c5d6e", [104, 105], [255, 0],
            {"__type__": "datetime", "__value__": "x", "extra": 1}, {"__type__": "nope", "__value__": 1}])
    );
    let bytes: Vec<u8> =
        serde_json::from_value(args[5].clone()).expect("bytes deserialize into Vec<u8>");
    assert_eq!(bytes, b"hi");
    assert_eq!(
        unwrap_kombu_types(Value::Object(msg.kwargs)),
        json!({"nested": ["2"]})
    );
}

#[test]
fn dates_naive_or_aware_time_limits_int_or_float_retries_float() {
    let utc = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    };
    for (text, want) in [
        (
            "2026-11-30T07:47:24.069450+00:00",
            "2026-11-30T07:47:24.069450Z",
        ),
        ("2026-11-30T07:47:24.069450", "2026-11-30T07:47:24.069450Z"),
        ("2026-11-30T07:47:24Z", "2026-11-30T07:47:24Z"),
        ("2026-11-30 09:47:24+02:00", "2026-11-30T07:47:24Z"),
        ("2026-11-30T02:47:24-0500", "2026-11-30T07:47:24Z"),
        ("2000-01-01T00:00:00", "2000-01-01T00:00:00Z"),
        ("2000-01-01", "2000-01-01T00:00:00Z"),
    ] {
        assert_eq!(parse_iso8601(text), Some(utc(want)), "{text}");
        let msg = with_headers(json!({"eta": text, "expires": text})).expect("decodes");
        assert_eq!(
            (msg.headers.eta, msg.headers.expires),
            (Some(utc(want)), Some(utc(want)))
        );
    }
    assert_eq!(
        format_iso8601(&utc("2026-11-30T07:47:24.069450Z")),
        "2026-11-30T07:47:24.069450+00:00"
    );
    assert_eq!(
        format_iso8601(&utc("2026-11-30T07:47:24Z")),
        "2026-11-30T07:47:24+00:00"
    );
    let err = with_headers(json!({"eta": "tomorrow"})).expect_err("not a date");
    assert_eq!(
        err.to_string(),
        "task message header `eta` must be an ISO 8601 date-time or null, got \"tomorrow\""
    );

    let msg = with_headers(json!({"timelimit": [30.5, 20], "retries": 1.0, "group_index": 2.0}))
        .expect("decodes");
    assert_eq!(
        (msg.headers.timelimit.hard, msg.headers.timelimit.soft),
        (Some(30.5), Some(20.0))
    );
    assert_eq!((msg.headers.retries, msg.headers.group_index), (1, Some(2)));
    let v: Value =
        serde_json::from_slice(&msg.to_envelope(Route::queue("celery")).encode()).expect("json");
    assert_eq!(v["headers"]["timelimit"], json!([30.5, 20]));
    assert_eq!(v["headers"]["retries"], json!(1));
    let msg = with_headers(json!({"timelimit": [null, 5], "retries": null})).expect("decodes");
    assert_eq!(
        (
            msg.headers.timelimit.hard,
            msg.headers.timelimit.soft,
            msg.headers.retries
        ),
        (None, Some(5.0), 0)
    );

    let err = with_headers(json!({"retries": "x"})).expect_err("a string");
    assert_eq!(
        err.to_string(),
        "task message header `retries` must be an integer, got \"x\""
    );
    let err = with_headers(json!({"retries": 1.5})).expect_err("a fraction");
    assert_eq!(
        err.to_string(),
        "task message header `retries` must be an integer, got 1.5"
    );
    let err = with_headers(json!({"timelimit": ["30", null]})).expect_err("strings");
    assert!(
        err.to_string()
            .starts_with("task message header `timelimit` must be a list [hard, soft]"),
        "{err}"
    );
}

#[test]
fn bodies_python_may_send_are_accepted_and_three_elements_are_always_written() {
    for (body, args, kwargs) in [
        ("[[1, 2], {}]", json!([1, 2]), json!({})),
        (
            "[[], {\"x\": 2, \"y\": 5}, null]",
            json!([]),
            json!({"x": 2, "y": 5}),
        ),
        ("[[1, 2], {}, {}]", json!([1, 2]), json!({})),
        ("[null, null, null]", json!([]), json!({})),
    ] {
        let msg = decode(&capture_with_body(body));
        assert_eq!(
            (
                Value::Array(msg.args.clone()),
                Value::Object(msg.kwargs.clone())
            ),
            (args, kwargs),
            "{body}"
        );
        let written: Value = serde_json::from_slice(&msg.encode_body()).expect("json");
        assert_eq!(written.as_array().map(Vec::len), Some(3), "{body}");
    }
    for (body, needle) in [
        ("[[1]]", "3 elements, got 1"),
        ("[[], {}, {}, {}]", "3 elements, got 4"),
        ("{\"a\": 1}", "must be a list"),
        ("[{}, {}, null]", "`args` must be a list"),
        ("[[], [], null]", "`kwargs` must be an object"),
        ("[[], {}, {\"chain\": [1]}]", "embed.chain[0]"),
    ] {
        let err = TaskMessage::decode(&Envelope::decode(&capture_with_body(body)).expect("ok"))
            .expect_err(body);
        assert!(err.to_string().contains(needle), "{body}: {err}");
    }
}

#[test]
fn a_minimal_hand_made_envelope_is_accepted() {
    // §4.3: headers only task/id, properties only delivery_tag/delivery_info, body raw JSON.
    let raw = br#"{"body": "[[1,2],{},{}]", "headers": {"task": "tasks.add", "id": "x1"},
        "properties": {"delivery_tag": "t1", "delivery_info": {"exchange": "", "routing_key": "celery"}}}"#;
    let env = Envelope::decode(raw).expect("decodes");
    assert_eq!(
        (env.content_type.as_str(), env.properties.priority),
        ("application/json", None)
    );
    let msg = TaskMessage::decode(&env).expect("decodes");
    assert_eq!(
        (
            msg.headers.retries,
            msg.headers.root_id.clone(),
            msg.args.clone()
        ),
        (0, None, vec![json!(1), json!(2)])
    );
    // Written back it has everything Python needs.
    let v: Value = serde_json::from_slice(&env.encode()).expect("json");
    assert_eq!(
        (
            v["properties"]["priority"].clone(),
            v["properties"]["body_encoding"].clone()
        ),
        (json!(0), json!("base64"))
    );
    assert_eq!(
        Envelope::decode(&env.encode()).expect("decodes"),
        Envelope {
            properties: celeriac_celery::protocol::Properties {
                priority: Some(0),
                ..env.properties.clone()
            },
            ..env.clone()
        }
    );

    for (raw, needle) in [
        (&b"[]"[..], "must be a JSON object"),
        (
            b"{\"body\": 1, \"properties\": {\"body_encoding\": \"base64\"}}",
            "envelope `body` must be a base64 string, got 1",
        ),
        (
            b"{\"body\": \"!!\", \"properties\": {\"body_encoding\": \"base64\"}}",
            "base64",
        ),
        (
            b"{\"body\": \"x\", \"properties\": {\"body_encoding\": \"rot13\"}}",
            "rot13",
        ),
        (b"{\"properties\": {}}", "envelope `body` is missing"),
        (
            b"{\"body\": \"x\", \"properties\": {\"delivery_info\": 3}}",
            "envelope property `delivery_info` must be an object, got 3",
        ),
        (
            b"{\"body\": \"x\", \"headers\": []}",
            "envelope `headers` must be an object",
        ),
        (b"nope", "not valid JSON"),
    ] {
        let err = Envelope::decode(raw).expect_err("refused");
        assert!(
            err.to_string().contains(needle),
            "{}: {err}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn reprs_look_like_python_and_are_bounded() {
    assert_eq!(args_repr(&[json!(2), json!(3)]), "(2, 3)");
    assert_eq!(args_repr(&[json!(1)]), "(1,)");
    assert_eq!(args_repr(&[]), "()");
    assert_eq!(
        args_repr(&[
            json!(null),
            json!(true),
            json!(1.0),
            json!("it's"),
            json!([1, "a"]),
            json!(1e20)
        ]),
        "(None, True, 1.0, \"it's\", [1, 'a'], 1e+20)"
    );
    let mut kw = Map::new();
    kw.insert("a".into(), json!({"b": false}));
    assert_eq!(kwargs_repr(&kw), "{'a': {'b': False}}");
    let long = args_repr(&[json!("x".repeat(5000))]);
    assert_eq!(long.chars().count(), REPR_MAX_CHARS);
    assert!(long.ends_with("..."));
}

#[test]
fn python_json_separators_and_ascii_escapes() {
    assert_eq!(
        String::from_utf8(to_python_json_bytes(
            &json!({"a": [1, "é😀\u{7f}"], "b": null})
        ))
        .expect("utf-8"),
        r#"{"a": [1, "\u00e9\ud83d\ude00\u007f"], "b": null}"#
    );
}
