//! The message layer against real captures of Celery 5.7 (copied verbatim from
//! `shared/reference/celery-protocol.md`) and against the §4.4 shape a producer must write:
//! envelopes, task messages v2 (and v1), signatures and canvas, serializers, compression,
//! and Python's JSON quirks.

use base64::Engine as _;
use celeriac_celery::protocol::{Embed, Envelope, Route, Signature, TaskMessage};
use chrono::{TimeZone, Utc};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// §3: `add.delay(2, 3)`, celery 5.7.0 (verbatim, as the spec breaks its lines).
const ADD_CAPTURE: &str = r#"{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d",
 "content-encoding": "utf-8", "content-type": "application/json",
 "headers": {"lang": "py", "task": "tasks.add", "id": "adac2f2b-2aa6-4c79-aa76-1b180fd551eb", "shadow": null,
   "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null],
   "root_id": "adac2f2b-2aa6-4c79-aa76-1b180fd551eb", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}",
   "origin": "gen8628@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}},
 "properties": {"correlation_id": "adac2f2b-2aa6-4c79-aa76-1b180fd551eb", "reply_to": "a234e347-1cef-3d5d-b408-b494e36a7ee0",
   "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0,
   "body_encoding": "base64", "delivery_tag": "69fd4e87-a399-46ed-86ec-23865e85dd00"}}"#;

/// §3: the decoded body of that capture.
const ADD_BODY: &str =
    r#"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;

/// §5.3: the first message body of `chain(add.s(1,2), add.s(10), add.s(100))` (ids shortened
/// by the spec).
const CHAIN_BODY: &str = r#"[[1, 2], {}, {"callbacks": null, "errbacks": null, "chord": null, "chain": [
  {"task": "tasks.add", "args": [100], "kwargs": {}, "options": {"task_id": "9dda3067-…", "reply_to": "e50a50e9-…"}, "subtask_type": null, "immutable": false},
  {"task": "tasks.add", "args": [10],  "kwargs": {}, "options": {"task_id": "fc389262-…", "reply_to": "e50a50e9-…"}, "subtask_type": null, "immutable": false}]}]"#;

/// §5.6: a chord header member's body.
const CHORD_HEADER_BODY: &str = r#"[[3, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": {"task": "tasks.tsum", "args": [], "kwargs": {},
  "options": {"task_id": "b684b23e-…", "reply_to": "e50a50e9-…", "group_id": "1ef33011-…"}, "subtask_type": null, "immutable": false}}]"#;

/// The capture on one line, as Python wrote it (the spec breaks lines after `, `).
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if out.is_empty() {
            out.push_str(line);
        } else {
            out.push(' ');
            out.push_str(line.trim_start());
        }
    }
    out
}

/// The add capture with another body (base64), other headers kept.
fn capture_with_body(body: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(ADD_CAPTURE).expect("the capture is JSON");
    v["body"] = Value::String(base64::engine::general_purpose::STANDARD.encode(body));
    serde_json::to_vec(&v).expect("serializes")
}

#[path = "protocol/canvas.rs"]
mod canvas;
#[path = "protocol/python_captures.rs"]
mod python_captures;
#[path = "protocol/quirks.rs"]
mod quirks;

/// The exact header set Python's `as_task_v2` writes (§4.1, §4.4).
const PY_HEADERS: [&str; 19] = [
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
];

fn decode(raw: &[u8]) -> TaskMessage {
    let env = Envelope::decode(raw).expect("envelope decodes");
    TaskMessage::decode(&env).expect("task message decodes")
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn is_uuid4(s: &str) -> bool {
    uuid::Uuid::parse_str(s)
        .is_ok_and(|u| u.get_version_num() == 4 && u.hyphenated().to_string() == s)
}

#[test]
fn the_add_capture_decodes_field_by_field() {
    let env = Envelope::decode(ADD_CAPTURE.as_bytes()).expect("decodes");
    assert_eq!(env.body, ADD_BODY.as_bytes());
    assert_eq!(env.content_type, "application/json");
    assert_eq!(env.content_encoding, "utf-8");
    assert_eq!(env.compression, None);
    let p = &env.properties;
    assert_eq!(
        p.correlation_id.as_deref(),
        Some("adac2f2b-2aa6-4c79-aa76-1b180fd551eb")
    );
    assert_eq!(
        p.reply_to.as_deref(),
        Some("a234e347-1cef-3d5d-b408-b494e36a7ee0")
    );
    assert_eq!(p.delivery_mode, Some(2));
    let info = p.delivery_info.as_ref().expect("delivery_info");
    assert_eq!(
        (
            info.exchange.as_str(),
            info.routing_key.as_str(),
            info.redelivered
        ),
        ("", "celery", None)
    );
    assert_eq!(p.priority, Some(0));
    assert_eq!(
        p.delivery_tag.as_deref(),
        Some("69fd4e87-a399-46ed-86ec-23865e85dd00")
    );
    assert!(p.expiration.is_none() && p.extra.is_empty());

    let msg = TaskMessage::decode(&env).expect("message decodes");
    let h = &msg.headers;
    assert_eq!(h.lang.as_deref(), Some("py"));
    assert_eq!(h.task, "tasks.add");
    assert_eq!(h.id, "adac2f2b-2aa6-4c79-aa76-1b180fd551eb");
    assert_eq!(
        h.root_id.as_deref(),
        Some("adac2f2b-2aa6-4c79-aa76-1b180fd551eb")
    );
    assert_eq!(
        (
            h.shadow.as_ref(),
            h.eta,
            h.expires,
            h.group.as_ref(),
            h.group_index
        ),
        (None, None, None, None, None)
    );
    assert_eq!(h.retries, 0);
    assert_eq!((h.timelimit.hard, h.timelimit.soft), (None, None));
    assert_eq!(h.parent_id, None);
    assert_eq!(h.argsrepr.as_deref(), Some("(2, 3)"));
    assert_eq!(h.kwargsrepr.as_deref(), Some("{}"));
    assert_eq!(h.origin.as_deref(), Some("gen8628@vm"));
    assert_eq!(h.ignore_result, Some(false));
    assert_eq!(h.replaced_task_nesting, 0);
    assert_eq!(h.stamped_headers, None);
    assert!(h.stamps.is_empty() && h.extra.is_empty());
    assert_eq!(msg.args, vec![json!(2), json!(3)]);
    assert!(msg.kwargs.is_empty());
    assert_eq!(msg.embed, Embed::default());
}

#[test]
fn the_add_capture_encodes_back_to_the_bytes_python_wrote() {
    let env = Envelope::decode(ADD_CAPTURE.as_bytes()).expect("decodes");
    let written = String::from_utf8(env.encode()).expect("utf-8");
    assert_eq!(written, one_line(ADD_CAPTURE));
    // The body re-serialized from the typed message is Python's text too.
    let msg = TaskMessage::decode(&env).expect("decodes");
    assert_eq!(
        String::from_utf8(msg.encode_body()).expect("utf-8"),
        ADD_BODY
    );
}

#[test]
fn captures_round_trip() {
    for raw in [
        ADD_CAPTURE.as_bytes().to_vec(),
        capture_with_body(CHAIN_BODY),
        capture_with_body(CHORD_HEADER_BODY),
    ] {
        let env = Envelope::decode(&raw).expect("decodes");
        let again = Envelope::decode(&env.encode()).expect("re-decodes");
        assert_eq!(env, again);
        let msg = TaskMessage::decode(&env).expect("message");
        let rebuilt = msg.to_envelope(Route::from_envelope(&env));
        let msg2 = TaskMessage::decode(&Envelope::decode(&rebuilt.encode()).expect("decodes"))
            .expect("message");
        assert_eq!(msg, msg2);
    }
}

#[test]
fn a_producer_message_is_the_recommended_shape_field_by_field() {
    let msg = TaskMessage::new("tasks.add").args(vec![json!(2), json!(3)]);
    assert!(
        is_uuid4(&msg.headers.id),
        "fresh uuid4 id: {}",
        msg.headers.id
    );
    let raw = msg.to_envelope(Route::queue("jobs")).encode();
    let v: Value = serde_json::from_slice(&raw).expect("the envelope is standard JSON");
    assert_eq!(
        keys(&v),
        set(&[
            "body",
            "content-encoding",
            "content-type",
            "headers",
            "properties"
        ])
    );
    assert_eq!(v["content-type"], "application/json");
    assert_eq!(v["content-encoding"], "utf-8");

    let h = &v["headers"];
    assert_eq!(keys(h), set(&PY_HEADERS));
    let id = msg.headers.id.as_str();
    assert_eq!(h["lang"], "rust");
    assert_eq!(h["task"], "tasks.add");
    assert_eq!(
        (h["id"].as_str(), h["root_id"].as_str()),
        (Some(id), Some(id))
    );
    for null in [
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "parent_id",
        "stamped_headers",
    ] {
        assert_eq!(h[null], Value::Null, "header {null}");
    }
    assert!(
        h["retries"].is_u64() && h["retries"] == 0,
        "retries is the integer 0"
    );
    assert_eq!(h["timelimit"], json!([null, null]));
    assert_eq!(h["argsrepr"], "(2, 3)");
    assert_eq!(h["kwargsrepr"], "{}");
    assert!(h["origin"]
        .as_str()
        .is_some_and(|o| o.starts_with("rust") && o.contains('@')));
    assert_eq!(h["ignore_result"], false);
    assert_eq!(h["replaced_task_nesting"], 0);
    assert_eq!(h["stamps"], json!({}));

    let p = &v["properties"];
    assert_eq!(
        keys(p),
        set(&[
            "correlation_id",
            "reply_to",
            "delivery_mode",
            "delivery_info",
            "priority",
            "body_encoding",
            "delivery_tag"
        ])
    );
    assert_eq!(p["correlation_id"].as_str(), Some(id));
    assert_eq!(p["reply_to"], "");
    assert_eq!(p["delivery_mode"], 2);
    assert_eq!(
        p["delivery_info"],
        json!({"exchange": "", "routing_key": "jobs"})
    );
    assert_eq!(p["priority"], 0);
    assert_eq!(p["body_encoding"], "base64");
    let tag = p["delivery_tag"].as_str().expect("a delivery tag");
    assert!(
        is_uuid4(tag) && tag != id,
        "fresh uuid4 delivery tag: {tag}"
    );

    let body = base64::engine::general_purpose::STANDARD
        .decode(v["body"].as_str().expect("a string"))
        .expect("base64");
    assert_eq!(
        String::from_utf8(body).expect("utf-8"),
        r#"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
    );
    // Each envelope gets its own delivery tag.
    let again: Value =
        serde_json::from_slice(&msg.to_envelope(Route::queue("jobs")).encode()).expect("json");
    assert_ne!(again["properties"]["delivery_tag"], p["delivery_tag"]);
}

#[test]
fn builder_options_reach_the_headers_and_properties() {
    let eta = Utc
        .with_ymd_and_hms(2030, 1, 2, 3, 4, 5)
        .single()
        .expect("a date")
        + chrono::Duration::microseconds(60);
    let expires = eta + chrono::Duration::hours(1);
    let mut kwargs = Map::new();
    kwargs.insert("x".into(), json!("é"));
    let msg = TaskMessage::new("tasks.mul")
        .id("fixed-id")
        .kwargs(kwargs)
        .eta(eta)
        .expires(expires)
        .time_limits(Some(30.0), Some(20.5))
        .ignore_result(true)
        .root_id("root")
        .parent_id("parent")
        .group("gid", 4)
        .shadow("nice name")
        .header("custom", json!([1]))
        .link(Signature::new("tasks.ok"))
        .link_error(Signature::new("tasks.bad"));
    let env = msg.to_envelope(Route::queue("q").with_priority(7));
    let v: Value = serde_json::from_slice(&env.encode()).expect("json");
    let h = &v["headers"];
    assert_eq!(h["id"], "fixed-id");
    assert_eq!(h["eta"], "2030-01-02T03:04:05.000060+00:00");
    assert_eq!(h["expires"], "2030-01-02T04:04:05.000060+00:00");
    assert_eq!(
        h["timelimit"],
        json!([30, 20.5]),
        "integral limits are written as integers"
    );
    assert_eq!(
        (
            h["ignore_result"].clone(),
            h["root_id"].clone(),
            h["parent_id"].clone()
        ),
        (json!(true), json!("root"), json!("parent"))
    );
    assert_eq!(
        (h["group"].clone(), h["group_index"].clone()),
        (json!("gid"), json!(4))
    );
    assert_eq!(h["shadow"], "nice name");
    assert_eq!(h["custom"], json!([1]));
    assert_eq!(h["kwargsrepr"], "{'x': 'é'}");
    assert_eq!(v["properties"]["priority"], 7);
    assert!(v["properties"]["expiration"]
        .as_str()
        .is_some_and(|ms| ms.parse::<u64>().is_ok()));
    // Non-ASCII is escaped as Python's json.dumps does.
    assert!(String::from_utf8(env.encode())
        .expect("utf-8")
        .contains(r#"{'x': '\u00e9'}"#));

    let back = decode(&env.encode());
    assert_eq!(back.headers.eta, Some(eta));
    assert_eq!(
        back.headers.timelimit.hard_duration(),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        back.headers.timelimit.soft_duration(),
        Some(Duration::from_millis(20_500))
    );
    assert_eq!(
        back.embed.callbacks.as_ref().map(|c| c[0].task.as_str()),
        Some("tasks.ok")
    );
    assert_eq!(
        back.embed.errbacks.as_ref().map(|c| c[0].task.as_str()),
        Some("tasks.bad")
    );
    let mut expected = msg.clone();
    expected.headers.argsrepr = Some("()".into());
    expected.headers.kwargsrepr = Some("{'x': 'é'}".into());
    expected.headers.origin = Some(celeriac_celery::protocol::origin().to_owned());
    assert_eq!(
        back, expected,
        "decoding gives back the message, with the display headers filled"
    );

    let before = Utc::now();
    let counted = TaskMessage::new("t").countdown(Duration::from_secs(60));
    let eta = counted.headers.eta.expect("an eta");
    assert!(
        eta >= before + chrono::Duration::seconds(60)
            && eta <= Utc::now() + chrono::Duration::seconds(60)
    );
}

#[test]
fn a_retry_republishes_the_same_task_with_the_count_and_the_eta() {
    let mut raw: Value = serde_json::from_str(ADD_CAPTURE).expect("json");
    raw["properties"]["priority"] = json!(5);
    raw["headers"]["redelivered"] = json!(true);
    let env = Envelope::decode(&serde_json::to_vec(&raw).expect("json")).expect("decodes");
    let msg = TaskMessage::decode(&env).expect("decodes");
    let eta = Utc
        .with_ymd_and_hms(2026, 11, 30, 7, 47, 24)
        .single()
        .expect("a date");
    let retry = msg.for_retry(eta, msg.headers.retries + 1);
    assert_eq!(retry.headers.id, msg.headers.id);
    assert_eq!(retry.headers.retries, 1);
    assert_eq!(retry.headers.eta, Some(eta));
    assert_eq!(
        retry.headers.parent_id.as_deref(),
        Some(msg.headers.id.as_str()),
        "Python's quirk: parent = self"
    );
    assert!(!retry.headers.extra.contains_key("redelivered"));
    assert_eq!(
        (retry.args.clone(), retry.embed.clone()),
        (msg.args.clone(), msg.embed.clone())
    );
    let out = retry.to_envelope(Route::from_envelope(&env));
    assert_eq!(out.properties.priority, Some(5));
    assert_eq!(
        out.properties
            .delivery_info
            .as_ref()
            .map(|i| i.routing_key.as_str()),
        Some("celery")
    );
    assert_ne!(out.properties.delivery_tag, env.properties.delivery_tag);
    let v: Value = serde_json::from_slice(&out.encode()).expect("json");
    assert_eq!(v["headers"]["eta"], "2026-11-30T07:47:24+00:00");
    assert_eq!(v["headers"]["retries"], 1);
}
