//! Messages written by real Python Celery (5.7.0, kombu 5.7.0, `pip install 'celery[redis]'`)
//! into a private Redis and read back with `LRANGE`: this crate reads each of them, writes
//! each back byte for byte, and a Rust producer writes the same key sets.

use super::{is_uuid4, keys};
use base64::Engine as _;
use celeriac_celery::protocol::time::parse_iso8601;
use celeriac_celery::protocol::{
    unwrap_kombu_types, ApplyContext, Compression, Envelope, Route, Signature, SubtaskType,
    TaskMessage,
};
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

/// Celery 5.7.0 / kombu 5.7.0 into Redis: `add.apply_async((2, 3), countdown=30, expires=600, time_limit=30, soft_time_limit=20.5, priority=5, queue='opts')`.
const PY_OPTS: &str = r#"{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "5fab5965-2508-4296-b80e-3313e1b67905", "shadow": null, "eta": "2026-12-06T12:00:19.434685+00:00", "expires": "2026-12-06T12:09:49.434685+00:00", "group": null, "group_index": null, "retries": 0, "timelimit": [30, 20.5], "root_id": "5fab5965-2508-4296-b80e-3313e1b67905", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen4083@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "5fab5965-2508-4296-b80e-3313e1b67905", "reply_to": "a0099301-d7c9-3de0-b42f-1d236f73a495", "delivery_mode": 2, "expiration": "600000", "delivery_info": {"exchange": "", "routing_key": "opts"}, "priority": 5, "body_encoding": "base64", "delivery_tag": "2f353314-f86f-4616-9bb9-b57eda51fbed"}}"#;

/// Celery 5.7.0 / kombu 5.7.0 into Redis: `many.apply_async((b'\xff\x00', Decimal('1.10'), UUID(int=5), float('nan'), 10**30))`.
const PY_TYPES: &str = r#"{"body": "W1t7Il9fdHlwZV9fIjogImJhc2U2NCIsICJfX3ZhbHVlX18iOiAiL3dBPSJ9LCB7Il9fdHlwZV9fIjogImRlY2ltYWwiLCAiX192YWx1ZV9fIjogIjEuMTAifSwgeyJfX3R5cGVfXyI6ICJ1dWlkIiwgIl9fdmFsdWVfXyI6IHsiaGV4IjogIjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA1In19LCBOYU4sIDEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDBdLCB7fSwgeyJjYWxsYmFja3MiOiBudWxsLCAiZXJyYmFja3MiOiBudWxsLCAiY2hhaW4iOiBudWxsLCAiY2hvcmQiOiBudWxsfV0=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.many", "id": "aaa72335-776a-4d7e-90b8-ed23dd527c6f", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "aaa72335-776a-4d7e-90b8-ed23dd527c6f", "parent_id": null, "argsrepr": "(b'ff00', Decimal('1.10'), UUID('00000000-0000-0000-0000-000000000005'), nan, 1000000000000000000000000000000)", "kwargsrepr": "{}", "origin": "gen4083@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "aaa72335-776a-4d7e-90b8-ed23dd527c6f", "reply_to": "a0099301-d7c9-3de0-b42f-1d236f73a495", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "types2"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "d6577da6-2399-4747-8d5e-0e783b53b214"}}"#;

/// Celery 5.7.0 / kombu 5.7.0 into Redis: `add.apply_async((2,), {'y': datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)})`.
const PY_DATETIME_KWARG: &str = r#"{"body": "W1syXSwgeyJ5IjogeyJfX3R5cGVfXyI6ICJkYXRldGltZSIsICJfX3ZhbHVlX18iOiAiMjAyNC0wMS0wMlQwMzowNDowNSswMDowMCJ9fSwgeyJjYWxsYmFja3MiOiBudWxsLCAiZXJyYmFja3MiOiBudWxsLCAiY2hhaW4iOiBudWxsLCAiY2hvcmQiOiBudWxsfV0=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "d244dac4-46a2-442a-ad47-fc69682da575", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "d244dac4-46a2-442a-ad47-fc69682da575", "parent_id": null, "argsrepr": "(2,)", "kwargsrepr": "{'y': datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)}", "origin": "gen4083@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "d244dac4-46a2-442a-ad47-fc69682da575", "reply_to": "a0099301-d7c9-3de0-b42f-1d236f73a495", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "types"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "7d2f1e64-28b8-4882-b0a2-5156adb1b874"}}"#;

/// Celery 5.7.0 / kombu 5.7.0 into Redis: `chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s(), add.s(5)).apply_async()`.
const PY_CHAIN_CHORD: &str = r#"{"body": "W1sxLCAxXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogW3sidGFzayI6ICJ0YXNrcy5hZGQiLCAiYXJncyI6IFs1XSwgImt3YXJncyI6IHt9LCAib3B0aW9ucyI6IHsidGFza19pZCI6ICI3YWMxZjM5MC0xYWFmLTRlY2EtOWRlOS01ZDE1OGUxYWM1M2YiLCAicmVwbHlfdG8iOiAiYTAwOTkzMDEtZDdjOS0zZGUwLWI0MmYtMWQyMzZmNzNhNDk1In0sICJzdWJ0YXNrX3R5cGUiOiBudWxsLCAiaW1tdXRhYmxlIjogZmFsc2V9LCB7InRhc2siOiAiY2VsZXJ5LmNob3JkIiwgImFyZ3MiOiBbXSwgImt3YXJncyI6IHsia3dhcmdzIjoge30sICJoZWFkZXIiOiB7InRhc2siOiAiY2VsZXJ5Lmdyb3VwIiwgImFyZ3MiOiBbXSwgImt3YXJncyI6IHsidGFza3MiOiBbeyJ0YXNrIjogInRhc2tzLmFkZCIsICJhcmdzIjogWzFdLCAia3dhcmdzIjoge30sICJvcHRpb25zIjogeyJ0YXNrX2lkIjogImFmNGY3ZmQ3LWM2YTgtNDQ2ZS1iMDVlLWZlODQyNjI3YWNjMiIsICJyZXBseV90byI6ICJhMDA5OTMwMS1kN2M5LTNkZTAtYjQyZi0xZDIzNmY3M2E0OTUiLCAiZ3JvdXBfaW5kZXgiOiAwfSwgInN1YnRhc2tfdHlwZSI6IG51bGwsICJpbW11dGFibGUiOiBmYWxzZX0sIHsidGFzayI6ICJ0YXNrcy5hZGQiLCAiYXJncyI6IFsyXSwgImt3YXJncyI6IHt9LCAib3B0aW9ucyI6IHsidGFza19pZCI6ICI2YzYyMjA3MS0zZDhmLTRkZDUtYjIzNy00OTc2MjcwZGEwMWEiLCAicmVwbHlfdG8iOiAiYTAwOTkzMDEtZDdjOS0zZGUwLWI0MmYtMWQyMzZmNzNhNDk1IiwgImdyb3VwX2luZGV4IjogMX0sICJzdWJ0YXNrX3R5cGUiOiBudWxsLCAiaW1tdXRhYmxlIjogZmFsc2V9XX0sICJvcHRpb25zIjogeyJ0YXNrX2lkIjogIjU1ZTA1Yjc3LWU1NjgtNGVhMy1hYzZkLWVjZWIyODFmZWIzNiIsICJyb290X2lkIjogbnVsbCwgInBhcmVudF9pZCI6IG51bGx9LCAic3VidGFza190eXBlIjogImdyb3VwIiwgImltbXV0YWJsZSI6IGZhbHNlfSwgImJvZHkiOiB7InRhc2siOiAidGFza3MudHN1bSIsICJhcmdzIjogW10sICJrd2FyZ3MiOiB7fSwgIm9wdGlvbnMiOiB7InRhc2tfaWQiOiAiMjEwNTc0Y2YtODZiMy00ZGJmLWE2MGUtNzhiOGJkZGJmOWU2IiwgInJlcGx5X3RvIjogImEwMDk5MzAxLWQ3YzktM2RlMC1iNDJmLTFkMjM2ZjczYTQ5NSJ9LCAic3VidGFza190eXBlIjogbnVsbCwgImltbXV0YWJsZSI6IGZhbHNlfX0sICJvcHRpb25zIjogeyJ0YXNrX2lkIjogIjU1ZTA1Yjc3LWU1NjgtNGVhMy1hYzZkLWVjZWIyODFmZWIzNiJ9LCAic3VidGFza190eXBlIjogImNob3JkIiwgImltbXV0YWJsZSI6IGZhbHNlfV0sICJjaG9yZCI6IG51bGx9XQ==", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "3d3aaf6d-8890-44bc-a751-3477410da781", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "3d3aaf6d-8890-44bc-a751-3477410da781", "parent_id": null, "argsrepr": "(1, 1)", "kwargsrepr": "{}", "origin": "gen4083@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "3d3aaf6d-8890-44bc-a751-3477410da781", "reply_to": "a0099301-d7c9-3de0-b42f-1d236f73a495", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "chainchord"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "1f0b0c69-4016-450d-a981-2ded03ce4a5e"}}"#;

/// Celery 5.7.0 / kombu 5.7.0 into Redis: `add.apply_async((2, 3), link=tsum.s(), link_error=on_err.s())`.
const PY_LINKS: &str = r#"{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogW3sidGFzayI6ICJ0YXNrcy50c3VtIiwgImFyZ3MiOiBbXSwgImt3YXJncyI6IHt9LCAib3B0aW9ucyI6IHt9LCAic3VidGFza190eXBlIjogbnVsbCwgImltbXV0YWJsZSI6IGZhbHNlfV0sICJlcnJiYWNrcyI6IFt7InRhc2siOiAidGFza3Mub25fZXJyIiwgImFyZ3MiOiBbXSwgImt3YXJncyI6IHt9LCAib3B0aW9ucyI6IHt9LCAic3VidGFza190eXBlIjogbnVsbCwgImltbXV0YWJsZSI6IGZhbHNlfV0sICJjaGFpbiI6IG51bGwsICJjaG9yZCI6IG51bGx9XQ==", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "e2160692-da4f-47b5-b4f3-79db7c1af2c5", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "e2160692-da4f-47b5-b4f3-79db7c1af2c5", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen4083@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "e2160692-da4f-47b5-b4f3-79db7c1af2c5", "reply_to": "a0099301-d7c9-3de0-b42f-1d236f73a495", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "links"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "e8c7c154-ae19-45c8-92e7-73ada1bdf1ec"}}"#;

/// Celery 5.7.0 / kombu 5.7.0 into Redis: `add.apply_async((2, 3), serializer='msgpack')`.
const PY_MSGPACK: &str = r#"{"body": "k5ICA4CEqWNhbGxiYWNrc8CoZXJyYmFja3PApWNoYWluwKVjaG9yZMA=", "content-encoding": "binary", "content-type": "application/x-msgpack", "headers": {"lang": "py", "task": "tasks.add", "id": "7defeec2-5ec5-4f6e-b56d-b2eea43110d6", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "7defeec2-5ec5-4f6e-b56d-b2eea43110d6", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen4083@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "7defeec2-5ec5-4f6e-b56d-b2eea43110d6", "reply_to": "a0099301-d7c9-3de0-b42f-1d236f73a495", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "msgpack"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "07f4ee49-3c73-422a-8260-77586af26c18"}}"#;

/// Celery 5.7.0 / kombu 5.7.0 into Redis: `add.apply_async((2, 3), compression='zlib')`.
const PY_ZLIB: &str = r#"{"body": "eJyLjjbSUTCO1VGorgVipeTEnJykxOTsYiUrhbzSnBwdBaXUoiI0keSMxMw8ZG5+UQqUWxsLAApsGfI=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "4051d23e-3690-4a6a-af8a-31dd1b24023d", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "4051d23e-3690-4a6a-af8a-31dd1b24023d", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen4083@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}, "compression": "application/x-gzip"}, "properties": {"correlation_id": "4051d23e-3690-4a6a-af8a-31dd1b24023d", "reply_to": "a0099301-d7c9-3de0-b42f-1d236f73a495", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "zlib"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "a1b5055a-8435-4a2d-a45b-fddb4d79ce1c"}}"#;

/// Celery 5.7.0 / kombu 5.7.0 into Redis: `add.apply_async((1, 2), eta=datetime(2030, 1, 2, 3, 4, 5))` (naive).
const PY_NAIVE_ETA: &str = r#"{"body": "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "8a989763-51bd-4594-a42c-456fc4c252ca", "shadow": null, "eta": "2030-01-02T03:04:05", "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "8a989763-51bd-4594-a42c-456fc4c252ca", "parent_id": null, "argsrepr": "(1, 2)", "kwargsrepr": "{}", "origin": "gen4083@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "8a989763-51bd-4594-a42c-456fc4c252ca", "reply_to": "a0099301-d7c9-3de0-b42f-1d236f73a495", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "naive"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "054e40a3-7bdf-41e6-ab6c-81d78ce07c25"}}"#;

fn message(raw: &str) -> (Envelope, TaskMessage) {
    let env = Envelope::decode(raw.as_bytes()).expect("Python's envelope decodes");
    let msg = TaskMessage::decode(&env).expect("Python's task message decodes");
    (env, msg)
}

#[test]
fn every_python_message_decodes_and_encodes_back_byte_for_byte() {
    for raw in [
        PY_OPTS,
        PY_TYPES,
        PY_DATETIME_KWARG,
        PY_CHAIN_CHORD,
        PY_LINKS,
        PY_MSGPACK,
        PY_NAIVE_ETA,
    ] {
        let (env, msg) = message(raw);
        assert_eq!(String::from_utf8(env.encode()).expect("utf-8"), raw);
        // Through the typed message too (headers re-written from their types).
        let again = TaskMessage::decode(
            &Envelope::decode(&msg.to_envelope(Route::from_envelope(&env)).encode()).expect("ok"),
        )
        .expect("decodes");
        assert_eq!(again, msg);
    }
    // zlib: the same stream up to the compressor's choices; the body is Python's.
    let (env, msg) = message(PY_ZLIB);
    assert_eq!(env.compression, Some(Compression::Zlib));
    assert_eq!(msg.args, vec![json!(2), json!(3)]);
    assert_eq!(Envelope::decode(&env.encode()).expect("re-decodes"), env);
}

#[test]
fn python_options_read_as_typed_headers_and_a_rust_producer_writes_the_same_keys() {
    let (env, msg) = message(PY_OPTS);
    let h = &msg.headers;
    assert_eq!(h.eta, parse_iso8601("2026-12-06T12:00:19.434685+00:00"));
    assert_eq!(h.expires, parse_iso8601("2026-12-06T12:09:49.434685+00:00"));
    assert_eq!(
        (h.timelimit.hard, h.timelimit.soft),
        (Some(30.0), Some(20.5))
    );
    assert_eq!(env.properties.priority, Some(5));
    assert_eq!(env.properties.expiration.as_deref(), Some("600000"));
    assert_eq!(
        Route::from_envelope(&env),
        Route::queue("opts").with_priority(5)
    );

    let ours = TaskMessage::new("tasks.add")
        .args(vec![json!(2), json!(3)])
        .countdown(std::time::Duration::from_secs(30))
        .expires(Utc::now() + chrono::Duration::seconds(600))
        .time_limits(Some(30.0), Some(20.5))
        .to_envelope(Route::queue("opts").with_priority(5));
    let ours: Value = serde_json::from_slice(&ours.encode()).expect("json");
    let theirs: Value = serde_json::from_str(PY_OPTS).expect("json");
    assert_eq!(keys(&ours), keys(&theirs));
    assert_eq!(keys(&ours["headers"]), keys(&theirs["headers"]));
    assert_eq!(keys(&ours["properties"]), keys(&theirs["properties"]));
    assert_eq!(ours["headers"]["timelimit"], theirs["headers"]["timelimit"]);
    assert_eq!(
        ours["properties"]["priority"],
        theirs["properties"]["priority"]
    );
    assert_eq!(
        ours["properties"]["delivery_info"],
        theirs["properties"]["delivery_info"]
    );
    let ms: i64 = ours["properties"]["expiration"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("ms as a string");
    assert!((590_000..=600_000).contains(&ms), "{ms}");
}

#[test]
fn python_type_tags_nan_and_big_ints_unwrap() {
    let (_, msg) = message(PY_TYPES);
    assert_eq!(msg.headers.task, "tasks.many");
    let args = unwrap_kombu_types(Value::Array(msg.args));
    assert_eq!(
        args,
        json!([
            [255, 0],
            "1.10",
            "00000000-0000-0000-0000-000000000005",
            "NaN",
            "1000000000000000000000000000000"
        ])
    );

    let (_, msg) = message(PY_DATETIME_KWARG);
    let y = unwrap_kombu_types(msg.kwargs["y"].clone());
    assert_eq!(y, json!("2024-01-02T03:04:05+00:00"));
    assert_eq!(
        parse_iso8601(y.as_str().expect("a string")),
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).single()
    );
}

#[test]
fn a_python_naive_eta_is_utc() {
    let (env, msg) = message(PY_NAIVE_ETA);
    assert_eq!(env.headers["eta"], "2030-01-02T03:04:05");
    assert_eq!(
        msg.headers.eta,
        Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).single()
    );
}

#[test]
fn python_msgpack_bodies_are_read() {
    let (env, msg) = message(PY_MSGPACK);
    assert_eq!(
        (env.content_type.as_str(), env.content_encoding.as_str()),
        ("application/x-msgpack", "binary")
    );
    assert_eq!(msg.args, vec![json!(2), json!(3)]);
    assert_eq!(msg.embed, Default::default());
}

#[test]
fn python_links_are_applied_with_the_result_and_the_failed_id() {
    let (_, msg) = message(PY_LINKS);
    let callbacks = msg.embed.callbacks.clone().expect("callbacks");
    let errbacks = msg.embed.errbacks.clone().expect("errbacks");
    assert_eq!(
        (callbacks.len(), callbacks[0].task.as_str()),
        (1, "tasks.tsum")
    );
    assert_eq!(
        (errbacks.len(), errbacks[0].task.as_str()),
        (1, "tasks.on_err")
    );
    let now = Utc::now();
    let d = callbacks[0]
        .dispatch(&ApplyContext::after(&msg.headers, json!(5), now))
        .expect("dispatches");
    let (cb, _) = &d.messages[0];
    assert_eq!(cb.args, vec![json!(5)]);
    assert_eq!(
        cb.headers.parent_id.as_deref(),
        Some(msg.headers.id.as_str())
    );
    assert!(is_uuid4(&cb.headers.id));
    let ctx = ApplyContext {
        parent_result: Some(json!(msg.headers.id)),
        ..ApplyContext::after(&msg.headers, Value::Null, now)
    };
    let d = errbacks[0].dispatch(&ctx).expect("dispatches");
    assert_eq!(d.messages[0].0.args, vec![json!(msg.headers.id)]);
}

#[test]
fn a_python_chain_whose_next_step_is_a_chord_runs_it_as_a_chord() {
    let (_, msg) = message(PY_CHAIN_CHORD);
    let chain = msg.embed.chain.clone().expect("a chain");
    assert_eq!(chain.len(), 2);
    let chord = &chain[1];
    assert_eq!(
        (chord.task.as_str(), &chord.subtask_type),
        ("celery.chord", &Some(SubtaskType::Chord))
    );
    let (header, body) = chord.chord_parts().expect("header and body");
    let header_gid = chord.kwargs["header"]["options"]["task_id"]
        .as_str()
        .expect("the header group id")
        .to_owned();
    let after = chain[0].clone();

    let d = msg
        .embed
        .dispatch_chain_step(&ApplyContext::after(&msg.headers, json!(2), Utc::now()))
        .expect("ok")
        .expect("a step");
    let setup = d.chord.clone().expect("a chord setup to write first");
    assert_eq!(
        (setup.group_id.as_str(), setup.size),
        (header_gid.as_str(), 2)
    );
    assert_eq!(Some(setup.body_id.as_str()), body.task_id());
    assert_eq!(
        Some(d.result_id.as_str()),
        body.task_id(),
        "this step's result is the chord body's"
    );
    for (i, (m, _)) in d.messages.iter().enumerate() {
        assert_eq!(Some(m.headers.id.as_str()), header[i].task_id());
        assert_eq!(m.args, vec![json!(2), header[i].args[0].clone()]);
        assert_eq!(
            (m.headers.group.as_deref(), m.headers.group_index),
            (Some(header_gid.as_str()), Some(i as u32))
        );
        assert_eq!(
            m.headers.parent_id.as_deref(),
            Some(msg.headers.id.as_str())
        );
        let embedded = m.embed.chord.clone().expect("embed.chord");
        assert_eq!(embedded.task_id(), body.task_id());
        assert_eq!(embedded.options["group_id"], json!(header_gid));
        let rest = Signature::list_from_value(embedded.options.get("chain"), "chain")
            .expect("the rest of the chain");
        assert_eq!(rest, vec![after.clone()]);
    }
    // The base64 of what goes out is standard.
    let raw = d.messages[0]
        .0
        .to_envelope(d.messages[0].1.clone())
        .encode();
    let v: Value = serde_json::from_slice(&raw).expect("json");
    assert!(base64::engine::general_purpose::STANDARD
        .decode(v["body"].as_str().expect("body"))
        .is_ok());
}
