//! §14 group 2, canvas: Rust-built chains, chords and groups run on a Python worker; the
//! chord join is set up before the header tasks are published; every message the client
//! publishes is captured and checked, and compared with Python's for the same canvas.

use celeriac_celery::client::ClientError;
use celeriac_celery::protocol::Signature;
use serde_json::{json, Value};

use crate::common::*;
use crate::support::Venv;

fn add(args: &[i64]) -> Signature {
    Signature::new("tasks.add").with_args(args.iter().map(|a| json!(a)).collect())
}

fn kind(wire: &Wire) -> &'static str {
    let embed = &wire.body[2];
    if !embed["chord"].is_null() {
        "chord header"
    } else if embed["chain"].as_array().is_some_and(|c| !c.is_empty()) {
        "chain"
    } else if !wire.headers()["group"].is_null() {
        "group member"
    } else {
        "plain"
    }
}

pub async fn canvas_runs_on_python_workers(venv: Venv) {
    let world = World::start().await;
    let client = world.client(&venv, "cq").await;

    let chain = client
        .apply(Signature::chain(vec![
            add(&[1, 2]),
            add(&[10]),
            add(&[100]),
        ]))
        .await
        .expect("chain sent")
        .into_task()
        .expect("a chain has one result");
    let chord = client
        .apply(Signature::chord(
            vec![add(&[3, 3]), add(&[4, 4])],
            Signature::new("tasks.tsum"),
        ))
        .await
        .expect("chord sent")
        .into_task()
        .expect("a chord has one result");
    let failing = Signature::new("tasks.fail").with_args(vec![json!("inchord")]);
    let bad_chord = client
        .apply(Signature::chord(
            vec![add(&[1, 1]), failing],
            Signature::new("tasks.tsum"),
        ))
        .await
        .expect("chord sent")
        .into_task()
        .expect("a chord has one result");
    let group = client
        .apply(Signature::group(vec![
            add(&[1, 1]),
            add(&[2, 2]),
            add(&[3, 3]),
        ]))
        .await
        .expect("group sent")
        .into_group()
        .expect("a group has a group result");
    assert_eq!(group.results.len(), 3);
    let bad_group = client
        .apply(Signature::group(vec![
            add(&[1, 1]),
            Signature::new("tasks.fail").with_args(vec![json!("ingroup")]),
        ]))
        .await
        .expect("group sent")
        .into_group()
        .expect("a group result");
    // A group followed by more steps: upgraded to a chord whose body carries the rest.
    let upgraded = client
        .apply(Signature::chain(vec![
            Signature::group(vec![add(&[1, 1]), add(&[2, 2])]),
            Signature::new("tasks.tsum"),
            add(&[100]),
        ]))
        .await
        .expect("chain sent")
        .into_task()
        .expect("a chain has one result");

    // Every message as published, before any worker runs.
    let wires = capture(&world, &["cq"]).await;
    assert_eq!(wires.len(), 1 + 2 + 2 + 3 + 2 + 2, "{venv}: {wires:#?}");
    for (id, wire) in &wires {
        assert_wire_safe(wire, &format!("{venv} {} {id}", kind(wire)));
    }
    // The chain's first step carries the rest reversed, the last one with the id waited on.
    let first = wires
        .values()
        .find(|w| kind(w) == "chain")
        .expect("the chain's first message");
    assert_eq!(first.body[0], json!([1, 2]));
    let rest = first.body[2]["chain"].as_array().expect("embed.chain");
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0]["args"], json!([100]), "reversed");
    assert_eq!(rest[0]["options"]["task_id"], json!(chain.id));
    // Chord headers: group + index + body; the join size is set before any worker runs.
    let mut backend = world.redis(1).await;
    for body_id in [&chord.id, &bad_chord.id] {
        let headers: Vec<&Wire> = wires
            .values()
            .filter(|w| w.body[2]["chord"]["options"]["task_id"] == json!(body_id))
            .collect();
        assert_eq!(headers.len(), 2, "{venv}: two header tasks");
        let gid = headers[0].headers()["group"]
            .as_str()
            .expect("group")
            .to_owned();
        let mut indexes: Vec<u64> = headers
            .iter()
            .map(|w| w.headers()["group_index"].as_u64().expect("group_index"))
            .collect();
        indexes.sort_unstable();
        assert_eq!(indexes, [0, 1]);
        let size: Option<String> = redis::cmd("GET")
            .arg(format!("celery-taskset-meta-{gid}.s"))
            .query_async(&mut backend)
            .await
            .expect("GET .s");
        assert_eq!(size.as_deref(), Some("2"), "{venv}: chord size set first");
    }
    for (i, r) in group.results.iter().enumerate() {
        let w = &wires[&r.id];
        assert_eq!(w.headers()["group"], json!(group.id));
        assert_eq!(w.headers()["group_index"], json!(i));
    }

    // Python's messages for the same canvas (to a queue nobody serves): same key sets.
    let cfg = world.cfg.clone().default_queue("pyref");
    let code = "\
chain(add.s(1, 2), add.s(10), add.s(100)).apply_async()
chord([add.s(3, 3), add.s(4, 4)], tsum.s()).apply_async()
group(add.s(1, 1), add.s(2, 2)).apply_async()";
    let out = venv
        .run(
            &cfg,
            &format!(
                "from tasks import add, tsum\nfrom celery import chain, chord, group\n{code}\n"
            ),
        )
        .await;
    out.assert_success();
    let python: Vec<Wire> = world
        .lrange("pyref")
        .await
        .iter()
        .map(|(list, raw)| Wire::parse(list, raw))
        .collect();
    assert_eq!(python.len(), 1 + 2 + 2, "{venv}: Python's messages");
    let mut compared = 0;
    for wire in wires.values() {
        let k = kind(wire);
        let py = python
            .iter()
            .find(|p| kind(p) == k)
            .unwrap_or_else(|| panic!("{venv}: a Python {k} message"));
        assert_same_keys(wire, py, &format!("{venv} {k}"));
        // The same call in Python (same kind, same arguments): the same values too.
        if let Some(same) = python
            .iter()
            .find(|p| kind(p) == k && p.body[0] == wire.body[0])
        {
            assert_same_values(wire, same, &format!("{venv} {k} {}", wire.body[0]));
            compared += 1;
        }
        let (r, p) = (&wire.body[2], &py.body[2]);
        for field in ["chain", "chord"] {
            if let (Some(rs), Some(ps)) = (sig_of(&r[field]), sig_of(&p[field])) {
                let keys = |v: &Value| {
                    v.as_object()
                        .map(|m| m.keys().cloned().collect::<std::collections::BTreeSet<_>>())
                };
                assert_eq!(keys(rs), keys(ps), "{venv} {k}: {field} signature keys");
            }
        }
    }

    // The worker sends chain steps and chord bodies (no `queue` option) to its own default
    // queue: the same as the client's, as in a deployment sharing one configuration.
    assert_eq!(
        compared, 6,
        "{venv}: chain, 2 chord headers, 3 group members compared"
    );

    let worker = venv
        .start_worker(&world.cfg.clone().default_queue("cq"), "cq")
        .await;
    let total: i64 = chain
        .get(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{venv}: chain: {e}\n{}", worker.log()));
    assert_eq!(total, 113, "{venv}");
    let sum: i64 = chord
        .get(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{venv}: chord: {e}\n{}", worker.log()));
    assert_eq!(sum, 14, "{venv}");
    let err = bad_chord
        .get::<i64>(WAIT)
        .await
        .expect_err("the body fails");
    let failure = match &err {
        ClientError::TaskFailed(f) => f,
        other => panic!("{venv}: {other}\n{}", worker.log()),
    };
    assert_eq!(failure.exc_type, "ChordError", "{venv}: {err}");
    assert!(failure.message.contains("inchord"), "{venv}: {err}");
    let values: Vec<i64> = group
        .get(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{venv}: group: {e}\n{}", worker.log()));
    assert_eq!(values, [2, 4, 6], "{venv}: in member order");
    assert!(group.ready().await.expect("ready"), "{venv}");
    let err = bad_group
        .get::<i64>(WAIT)
        .await
        .expect_err("a member failed");
    let failure = err.failure().unwrap_or_else(|| panic!("{venv}: {err}"));
    assert_eq!(
        (failure.exc_type.as_str(), failure.message.as_str()),
        ("ValueError", "ingroup")
    );
    assert_eq!(
        failure.task_id, bad_group.results[1].id,
        "{venv}: the failed member"
    );
    let total: i64 = upgraded
        .get(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{venv}: group | tsum | add: {e}\n{}", worker.log()));
    assert_eq!(total, 106, "{venv}");
    worker.stop().await;
}

/// The first signature of an embed field (a list for `chain`, one for `chord`).
fn sig_of(v: &Value) -> Option<&Value> {
    match v {
        Value::Array(items) => items.first(),
        Value::Object(_) => Some(v),
        _ => None,
    }
}
