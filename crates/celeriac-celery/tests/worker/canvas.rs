//! Canvas sent from Python and served entirely by the Rust worker: chains, chords (and a
//! failing chord member), `link=` and `link_error=`.

use serde_json::json;

use crate::common::{py, World};
use crate::support::Venv;

/// `chain(add.s(1,2), add.s(10), add.s(100))` → 113, each step's result readable, and a
/// step's `children` name the next.
pub async fn chain_runs_to_the_end(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
r = chain(add.s(1, 2), add.s(10), add.s(100))()
first = app.AsyncResult(r.parent.parent.id)
out([r.get(timeout=30), r.parent.get(timeout=30), first.get(timeout=30),
     [c.id for c in first.children] == [r.parent.id]])
"#,
    )
    .await;
    assert_eq!(
        got,
        json!([113, 13, 3, true]),
        "{venv}: the first step's children name the second"
    );
    worker.stop().await;
}

/// `chord([add.s(3,3), add.s(4,4)], tsum.s())` → 14, the body sent by the Rust join.
pub async fn chord_joins_in_rust(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
r = chord([add.s(3, 3), add.s(4, 4)], tsum.s())()
out([r.get(timeout=30), r.state])
"#,
    )
    .await;
    assert_eq!(got, json!([14, "SUCCESS"]), "{venv}");
    worker.stop().await;
}

/// A chord with a failing member: the body is FAILURE `ChordError` naming the member's
/// error.
pub async fn chord_with_failing_member(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
r = chord([add.s(1, 1), fail.s("inchord")], tsum.s())()
# The chord's own result object re-raises the header's ValueError first; the body's record
# (what a fresh AsyncResult reads) is the ChordError.
body = app.AsyncResult(r.id)
out([raised(body), body.state])
"#,
    )
    .await;
    assert_eq!(got[0][0], json!("ChordError"), "{venv}: {got}");
    let message = got[0][2][0].as_str().expect("a message");
    assert!(
        message.contains("ValueError") && message.contains("inchord"),
        "{message}"
    );
    assert_eq!(got[1], json!("FAILURE"));
    worker.stop().await;
}

/// `link=` gets the result prepended; `link_error=` gets the failed task's id (old style),
/// and a failure propagates to the rest of its chain.
pub async fn links_and_errbacks(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
cb = add.s(10)
cb.freeze()
r = add.apply_async((2, 2), link=cb)
eb = on_err.s()
eb.freeze()
f = fail.apply_async(("x",), link_error=eb)
c = chain(fail.s("early"), add.s(1))()
out([r.get(timeout=30), app.AsyncResult(cb.id).get(timeout=30),
     raised(f), f.id, app.AsyncResult(eb.id).get(timeout=30), raised(c)])
"#,
    )
    .await;
    assert_eq!(got[0], json!(4), "{venv}: {got}");
    assert_eq!(got[1], json!(14));
    assert_eq!(got[2][0], json!("ValueError"));
    assert_eq!(got[4], got[3], "the errback got the failed task's id");
    assert_eq!(
        got[5],
        json!(["ValueError", "builtins", ["early"]]),
        "the chain's end fails too"
    );
    worker.stop().await;
}
