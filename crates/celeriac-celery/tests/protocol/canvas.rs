//! Canvas: chains (reversed, next step), groups, chords, links, and the mapping of signature
//! options onto messages.

use super::{capture_with_body, decode, is_uuid4, CHAIN_BODY, CHORD_HEADER_BODY};
use celeriac_celery::protocol::canvas::freeze;
use celeriac_celery::protocol::{ApplyContext, Route, Signature, SubtaskType, TaskMessage};
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

#[test]
fn the_chain_capture_is_reversed_and_the_next_step_is_the_last_element() {
    let msg = decode(&capture_with_body(CHAIN_BODY));
    assert_eq!(msg.args, vec![json!(1), json!(2)]);
    let chain = msg.embed.chain.as_ref().expect("a chain");
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].args, vec![json!(100)]);
    assert_eq!(chain[1].task_id(), Some("fc389262-…"));
    assert_eq!(chain[1].options["reply_to"], json!("e50a50e9-…"));
    assert_eq!(
        (chain[1].subtask_type.as_ref(), chain[1].immutable),
        (None, false)
    );

    let (next, rest) = msg.embed.next_chain_step().expect("a next step");
    assert_eq!(next.args, vec![json!(10)]);
    assert_eq!(rest, vec![chain[0].clone()]);

    // The worker sends it with the result prepended, the rest of the chain, and the ids (§5.3).
    let now = Utc::now();
    let d = msg
        .embed
        .dispatch_chain_step(&ApplyContext::after(&msg.headers, json!(3), now))
        .expect("dispatches")
        .expect("a step");
    assert_eq!(d.messages.len(), 1);
    let (second, route) = &d.messages[0];
    assert_eq!(second.headers.id, "fc389262-…");
    assert_eq!(d.result_id, "fc389262-…");
    assert_eq!(second.args, vec![json!(3), json!(10)]);
    assert_eq!(
        second.headers.parent_id.as_deref(),
        Some(msg.headers.id.as_str())
    );
    assert_eq!(second.headers.root_id, msg.headers.root_id);
    assert_eq!(
        second.embed.chain.as_ref().map(|c| c[0].args.clone()),
        Some(vec![json!(100)])
    );
    assert_eq!(route, &Route::queue("celery"));

    // The last step carries an exhausted chain, written `[]` as Python does.
    let last = decode(&second.to_envelope(route.clone()).encode());
    let d = last
        .embed
        .dispatch_chain_step(&ApplyContext::after(&last.headers, json!(13), now))
        .expect("ok")
        .expect("a step");
    let (third, _) = &d.messages[0];
    assert_eq!(third.args, vec![json!(13), json!(100)]);
    assert_eq!(third.embed.chain, Some(vec![]));
    let body: Value = serde_json::from_slice(&third.encode_body()).expect("json");
    assert_eq!(body[2]["chain"], json!([]));
    assert!(third
        .embed
        .dispatch_chain_step(&ApplyContext::after(&third.headers, json!(113), now))
        .expect("ok")
        .is_none());
}

#[test]
fn the_chord_capture_carries_the_body_signature() {
    let msg = decode(&capture_with_body(CHORD_HEADER_BODY));
    let body = msg.embed.chord.as_ref().expect("embed.chord");
    assert_eq!(body.task, "tasks.tsum");
    assert_eq!(body.task_id(), Some("b684b23e-…"));
    assert_eq!(body.options["group_id"], json!("1ef33011-…"));
    assert!(body.args.is_empty() && body.kwargs.is_empty());
}

fn add(args: Vec<Value>) -> Signature {
    Signature::new("tasks.add").with_args(args)
}

#[test]
fn a_producer_chain_sends_the_first_step_with_the_rest_reversed_and_frozen() {
    let chain = Signature::chain(vec![
        add(vec![json!(1), json!(2)]),
        add(vec![json!(10)]),
        add(vec![json!(100)]),
    ]);
    let d = chain
        .dispatch(&ApplyContext::new(Utc::now()))
        .expect("dispatches");
    assert!(d.chord.is_none());
    assert_eq!(d.messages.len(), 1);
    let (first, route) = &d.messages[0];
    assert_eq!(route, &Route::queue("celery"));
    assert_eq!(first.args, vec![json!(1), json!(2)]);
    let rest = first.embed.chain.as_ref().expect("embed.chain");
    assert_eq!(
        rest.iter().map(|s| s.args.clone()).collect::<Vec<_>>(),
        vec![vec![json!(100)], vec![json!(10)]]
    );
    assert!(
        rest.iter().all(|s| s.task_id().is_some_and(is_uuid4)),
        "every step is frozen"
    );
    assert_eq!(
        Some(d.result_id.as_str()),
        rest[0].task_id(),
        "the client waits on the last step"
    );

    // The builder's chain is the same thing.
    let m = TaskMessage::new("tasks.add").chain(vec![add(vec![json!(10)]), add(vec![json!(100)])]);
    let c = m.embed.chain.as_ref().expect("chain");
    assert_eq!(
        (c[0].args.clone(), c[1].args.clone()),
        (vec![json!(100)], vec![json!(10)])
    );
    assert!(c.iter().all(|s| s.task_id().is_some()));
}

#[test]
fn a_producer_chord_tags_header_members_and_freezes_the_body() {
    let chord = Signature::chord(
        vec![add(vec![json!(3), json!(3)]), add(vec![json!(4), json!(4)])],
        Signature::new("tasks.tsum"),
    );
    let d = chord
        .dispatch(&ApplyContext::new(Utc::now()))
        .expect("dispatches");
    let setup = d.chord.as_ref().expect("a chord setup");
    assert_eq!(setup.size, 2);
    assert_eq!(setup.body_id, d.result_id);
    assert_eq!(d.messages.len(), 2);
    for (i, (m, _)) in d.messages.iter().enumerate() {
        assert_eq!(m.headers.group.as_deref(), Some(setup.group_id.as_str()));
        assert_eq!(m.headers.group_index, Some(i as u32));
        let body = m.embed.chord.as_ref().expect("embed.chord");
        assert_eq!(body.task, "tasks.tsum");
        assert_eq!(body.task_id(), Some(setup.body_id.as_str()));
        assert_eq!(body.options["group_id"], json!(setup.group_id));
    }
    assert_ne!(d.messages[0].0.headers.id, d.messages[1].0.headers.id);

    // What the joining worker sends: the body with the ordered results and the group id.
    let body = d.messages[0].0.embed.chord.clone().expect("body");
    let ctx = ApplyContext::after(&d.messages[1].0.headers, json!([6, 8]), Utc::now());
    let sent = body.dispatch(&ctx).expect("dispatches");
    let (m, _) = &sent.messages[0];
    assert_eq!(
        (m.headers.id.as_str(), m.args.clone()),
        (setup.body_id.as_str(), vec![json!([6, 8])])
    );
    assert_eq!(m.headers.group.as_deref(), Some(setup.group_id.as_str()));
}

#[test]
fn a_group_then_a_task_in_a_chain_becomes_a_chord_carrying_the_rest() {
    let chain = Signature::chain(vec![
        Signature::group(vec![
            add(vec![json!(1), json!(1)]),
            add(vec![json!(2), json!(2)]),
        ]),
        Signature::new("tasks.tsum"),
        add(vec![json!(100)]),
    ]);
    let d = chain
        .dispatch(&ApplyContext::new(Utc::now()))
        .expect("dispatches");
    let setup = d.chord.expect("a chord");
    assert_eq!(setup.size, 2);
    let body = d.messages[0].0.embed.chord.clone().expect("the chord body");
    assert_eq!(body.task, "tasks.tsum");
    let rest = Signature::list_from_value(body.options.get("chain"), "chain").expect("signatures");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].args, vec![json!(100)]);
    assert_eq!(Some(d.result_id.as_str()), rest[0].task_id());
}

#[test]
fn signature_options_map_onto_the_message() {
    let now = Utc
        .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .expect("a date");
    let sig = add(vec![json!(1)])
        .immutable()
        .with_option("task_id", "tid")
        .with_option("queue", "fast")
        .with_option("priority", 3)
        .with_option("countdown", 10)
        .with_option("expires", 60.5)
        .with_option("time_limit", 30)
        .with_option("soft_time_limit", 20)
        .with_option("group_id", "g")
        .with_option("group_index", 2)
        .with_option("shadow", "s")
        .with_option("headers", json!({"h": 1}))
        .with_option("link", add(vec![]).to_value())
        .with_option(
            "link_error",
            json!([add(vec![]).to_value(), add(vec![]).to_value()]),
        );
    let parent = TaskMessage::new("p").root_id("root");
    let d = sig
        .dispatch(&ApplyContext::after(&parent.headers, json!(99), now))
        .expect("dispatches");
    let (m, route) = &d.messages[0];
    assert_eq!(m.args, vec![json!(1)], "immutable: no result prepended");
    assert_eq!(m.headers.id, "tid");
    assert_eq!(route, &Route::queue("fast").with_priority(3));
    assert_eq!(m.headers.eta, Some(now + chrono::Duration::seconds(10)));
    assert_eq!(
        m.headers.expires,
        Some(now + chrono::Duration::milliseconds(60_500))
    );
    assert_eq!(
        (m.headers.timelimit.hard, m.headers.timelimit.soft),
        (Some(30.0), Some(20.0))
    );
    assert_eq!(
        (m.headers.group.as_deref(), m.headers.group_index),
        (Some("g"), Some(2))
    );
    assert_eq!(m.headers.shadow.as_deref(), Some("s"));
    assert_eq!(m.headers.extra.get("h"), Some(&json!(1)));
    assert_eq!(
        m.headers.parent_id.as_deref(),
        Some(parent.headers.id.as_str())
    );
    assert_eq!(m.headers.root_id.as_deref(), Some("root"));
    assert_eq!(
        m.embed.callbacks.as_ref().map(Vec::len),
        Some(1),
        "a single link becomes a list"
    );
    assert_eq!(m.embed.errbacks.as_ref().map(Vec::len), Some(2));

    // An errback gets the failed task's id (§5.4).
    let errback = add(vec![]);
    let ctx = ApplyContext {
        parent_result: Some(json!("failed-id")),
        ..ApplyContext::new(now)
    };
    let d = errback.dispatch(&ctx).expect("dispatches");
    assert_eq!(d.messages[0].0.args, vec![json!("failed-id")]);

    // Group options reach every member; a member's own option wins.
    let group = Signature::group(vec![add(vec![]), add(vec![]).with_option("queue", "own")])
        .with_option("queue", "g");
    let d = group.dispatch(&ctx).expect("dispatches");
    let queues: Vec<&str> = d.messages.iter().map(|(_, r)| r.queue.as_str()).collect();
    assert_eq!(queues, vec!["g", "own"]);
    assert!(d
        .messages
        .iter()
        .all(|(m, _)| m.headers.group.as_deref() == Some(d.result_id.as_str())));

    let bad = add(vec![])
        .with_option("countdown", "soon")
        .dispatch(&ctx)
        .expect_err("a string countdown");
    assert_eq!(
        bad.to_string(),
        "signature options.countdown: must be a number of seconds, got \"soon\""
    );
}

#[test]
fn signatures_read_and_write_python_dicts() {
    let py = json!({"task": "celery.chord", "args": [], "kwargs": {
        "header": {"task": "celery.group", "args": [], "kwargs": {"tasks": [
            {"task": "tasks.add", "args": [1, 1], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}]},
            "options": {}, "subtask_type": "group", "immutable": false},
        "body": {"task": "tasks.tsum", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false},
        "kwargs": {}}, "options": {}, "subtask_type": "chord", "immutable": false, "chord_size": 1});
    let sig: Signature = serde_json::from_value(py.clone()).expect("deserializes");
    assert_eq!(sig.subtask_type, Some(SubtaskType::Chord));
    assert_eq!(sig.chord_size, Some(1));
    let (header, body) = sig.chord_parts().expect("parts");
    assert_eq!(
        (header.len(), header[0].args.clone(), body.task.as_str()),
        (1, vec![json!(1), json!(1)], "tasks.tsum")
    );
    assert_eq!(serde_json::to_value(&sig).expect("serializes"), py);
    // Python reads only task/args/kwargs/options: a minimal dict works, nulls included.
    let min: Signature =
        serde_json::from_value(json!({"task": "t", "args": null})).expect("tolerant");
    assert_eq!(
        (min.args.len(), min.immutable, min.subtask_type),
        (0, false, None)
    );
    let err = serde_json::from_value::<Signature>(json!({"args": []})).expect_err("no task");
    assert!(err.to_string().contains("`task` must be a string"), "{err}");
    // Freezing a group gives every member the group id and index.
    let mut group = Signature::group(vec![add(vec![]), add(vec![])]);
    let gid = freeze(&mut group);
    let members = group.tasks().expect("members");
    assert!(members
        .iter()
        .enumerate()
        .all(|(i, m)| m.options["group_id"] == json!(gid) && m.options["group_index"] == json!(i)));
}

/// Verified by hand against a Celery 5.7 worker (result 12): a group in the middle of a chain
/// travels as a chord whose `task_id` is its header group id, as Python freezes it.
#[test]
fn a_group_inside_a_chain_travels_as_a_chord_frozen_like_python() {
    let chain = Signature::chain(vec![
        add(vec![json!(1), json!(1)]),
        Signature::chain(vec![
            Signature::group(vec![add(vec![json!(1)]), add(vec![json!(2)])]),
            Signature::new("tasks.tsum"),
        ]),
        add(vec![json!(5)]),
    ]);
    let d = chain
        .dispatch(&ApplyContext::new(Utc::now()))
        .expect("dispatches");
    assert!(d.chord.is_none(), "the first step is a plain task");
    let (first, _) = &d.messages[0];
    let steps = first.embed.chain.clone().expect("the rest of the chain");
    assert_eq!(
        steps.len(),
        2,
        "nested chains are flattened, group + tsum is one step"
    );
    assert_eq!(Some(d.result_id.as_str()), steps[0].task_id());
    let chord = &steps[1];
    assert_eq!(chord.subtask_type, Some(SubtaskType::Chord));
    let gid = chord.kwargs["header"]["options"]["task_id"].clone();
    assert!(gid.as_str().is_some_and(is_uuid4));
    assert_eq!(chord.options.get("task_id"), Some(&gid));
    let (header, body) = chord.chord_parts().expect("parts");
    assert!(header
        .iter()
        .enumerate()
        .all(|(i, m)| m.options["group_id"] == gid && m.options["group_index"] == json!(i)));
    assert_eq!(body.options["group_id"], gid);
    assert!(body.task_id().is_some_and(is_uuid4));
}

#[test]
fn a_chains_own_options_reach_its_steps_as_in_python() {
    let chain = Signature::chain(vec![add(vec![json!(1), json!(2)]), add(vec![json!(10)])])
        .with_option("queue", "fast")
        .with_option("link", Signature::new("tasks.done").to_value())
        .with_option("link_error", Signature::new("tasks.err").to_value());
    let d = chain
        .dispatch(&ApplyContext::new(Utc::now()))
        .expect("dispatches");
    let (first, route) = &d.messages[0];
    assert_eq!(route.queue, "fast", "options go to the first step");
    let errbacks: Vec<&str> = first
        .embed
        .errbacks
        .iter()
        .flatten()
        .map(|s| s.task.as_str())
        .collect();
    assert_eq!(errbacks, vec!["tasks.err"], "link_error on every step");
    assert!(
        first.embed.callbacks.is_none(),
        "link only on the last step"
    );
    let last = &first.embed.chain.as_ref().expect("the rest")[0];
    let links = Signature::list_from_value(last.options.get("link"), "link").expect("signatures");
    assert_eq!(
        links.iter().map(|s| s.task.as_str()).collect::<Vec<_>>(),
        vec!["tasks.done"]
    );
    let errs = Signature::list_from_value(last.options.get("link_error"), "link_error")
        .expect("signatures");
    assert_eq!(errs.len(), 1);
}
