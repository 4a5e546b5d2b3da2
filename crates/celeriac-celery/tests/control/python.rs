//! Python Celery clients steering the Rust pidbox responder.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use celeriac_celery::broker::{KombuBroker, TransportOptions};
use celeriac_celery::control::{
    InMemoryHandler, MemoryState, PidboxResponder, RevokeCall, TaskDelivery, TaskInfo, WorkerStats,
};
use celeriac_testkit::RedisServer;
use serde_json::{json, Value};

use crate::support::{CeleryConfig, Venv};

const WAIT: Duration = Duration::from_secs(60);

struct Setup {
    _server: RedisServer,
    cfg: CeleryConfig,
    handler: Arc<InMemoryHandler>,
    responder: PidboxResponder,
}

fn running_task(hostname: &str) -> TaskInfo {
    TaskInfo {
        id: "t-active".into(),
        name: "tasks.add".into(),
        args: vec![json!(2), json!(3)],
        kwargs: serde_json::Map::new(),
        hostname: hostname.into(),
        time_start: Some(1_796_000_000.5),
        acknowledged: true,
        delivery_info: TaskDelivery {
            exchange: String::new(),
            routing_key: "rustq".into(),
            priority: Some(0),
            redelivered: false,
        },
        worker_pid: Some(4242),
    }
}

async fn setup(hostname: &str) -> Setup {
    let server = RedisServer::start().await.expect("redis-server starts");
    let cfg = CeleryConfig::for_server(&server.url());
    let broker = KombuBroker::connect(&cfg.broker_url, TransportOptions::default())
        .await
        .expect("the broker connects");
    let handler = Arc::new(InMemoryHandler::new({
        let mut state = MemoryState::default();
        state.active = vec![running_task(hostname)];
        state.registered = vec!["tasks.mul".into(), "tasks.add".into()];
        state.stats = WorkerStats {
            total: BTreeMap::from([("tasks.add".to_owned(), 3)]),
            uptime: 12,
            pool_implementation: "celeriac:tokio".into(),
            max_concurrency: 4,
            processes: vec![],
            prefetch_count: 16,
        };
        state.queues = vec!["rustq".into()];
        state
    }));
    let responder = PidboxResponder::builder(hostname, handler.clone())
        .start(broker)
        .await
        .expect("the responder subscribes");
    Setup {
        _server: server,
        cfg,
        handler,
        responder,
    }
}

/// `app.control.inspect()` / `app.control.*` from Python: every reply parses, a revoke with
/// `terminate` reaches the handler and is listed by `inspect revoked`, commands for another
/// node are ignored, `shutdown` reaches the handler.
pub(crate) async fn python_inspects_and_controls_a_rust_worker(venv: Venv) {
    let host = "celeriac@control-test";
    let s = setup(host).await;
    assert!(
        s.handler.snapshot().calls.is_empty(),
        "precondition: no call yet"
    );
    let code = format!(
        r#"
import json
from tasks import app
H = {host:?}
i = app.control.inspect(destination=[H], timeout=10)
out = {{}}
out['ping'] = i.ping()
out['active'] = i.active()
out['registered'] = i.registered()
out['stats'] = i.stats()
out['active_queues'] = i.active_queues()
out['revoke'] = app.control.revoke('t-active', terminate=True, signal='SIGKILL',
                                   destination=[H], reply=True, timeout=10)
out['revoke_plain'] = app.control.revoke(['r-2'], destination=[H], reply=True, timeout=10)
out['revoked'] = i.revoked()
out['rate_limit'] = app.control.rate_limit('tasks.add', '1/s', destination=[H], reply=True,
                                           timeout=10)
out['unknown'] = app.control.broadcast('no_such_command', destination=[H], reply=True,
                                       timeout=10)
# For another node: we must neither act nor reply.
out['other_ping'] = app.control.inspect(destination=['other@nowhere'], timeout=1).ping()
app.control.revoke('not-for-us', destination=['other@nowhere'])
app.control.shutdown(destination=['other@nowhere'])
# Handled in order by the responder: once this is answered, the above were seen.
out['ping_after'] = app.control.ping(destination=[H], timeout=10)
app.control.shutdown(destination=[H])
print(json.dumps(out))
"#
    );
    let out = venv.run(&s.cfg, &code).await;
    out.assert_success();
    let out = out.json();

    assert_eq!(out["ping"], json!({host: {"ok": "pong"}}), "{venv}: {out}");
    let active = &out["active"][host];
    assert_eq!(active.as_array().map(Vec::len), Some(1), "{venv}: {out}");
    assert_eq!(active[0]["id"], "t-active");
    assert_eq!(active[0]["name"], "tasks.add");
    assert_eq!(active[0]["args"], json!([2, 3]));
    assert_eq!(active[0]["worker_pid"], 4242);
    assert_eq!(active[0]["time_start"], json!(1_796_000_000.5));
    assert_eq!(active[0]["delivery_info"]["routing_key"], "rustq");
    assert_eq!(
        out["registered"][host],
        json!(["tasks.add", "tasks.mul"]),
        "sorted as Python sorts them"
    );
    let stats = &out["stats"][host];
    assert_eq!(stats["total"], json!({"tasks.add": 3}), "{venv}: {stats}");
    assert_eq!(stats["pool"]["max-concurrency"], 4);
    assert_eq!(stats["pool"]["implementation"], "celeriac:tokio");
    assert_eq!(stats["prefetch_count"], 16);
    assert_eq!(stats["pid"], std::process::id());
    assert_eq!(out["active_queues"][host][0]["name"], "rustq");
    assert_eq!(
        out["revoke"],
        json!([{host: {"ok": "terminate: t-active"}}]),
        "{venv}: {out}"
    );
    assert_eq!(
        out["revoke_plain"],
        json!([{host: {"ok": "tasks {'r-2'} flagged as revoked"}}])
    );
    assert_eq!(out["revoked"][host], json!(["t-active", "r-2"]));
    let rate = &out["rate_limit"][0][host]["error"];
    assert!(
        rate.as_str().is_some_and(|e| e.contains("not supported")),
        "rate_limit answers clearly: {out}"
    );
    assert_eq!(
        out["unknown"],
        json!([{host: {"error": "KeyError('no_such_command')"}}])
    );
    assert!(
        matches!(&out["other_ping"], Value::Null) || out["other_ping"] == json!({}),
        "no reply from us to another node's ping: {out}"
    );
    assert_eq!(out["ping_after"], json!([{host: {"ok": "pong"}}]));

    assert!(
        s.handler.wait_until(|st| st.shutdowns == 1, WAIT).await,
        "{venv}: shutdown reached the handler: {:?}",
        s.handler.snapshot()
    );
    let state = s.handler.snapshot();
    assert_eq!(
        state.revokes,
        vec![
            RevokeCall {
                ids: vec!["t-active".into()],
                terminate: true,
                signal: "SIGKILL".into()
            },
            RevokeCall {
                ids: vec!["r-2".into()],
                terminate: false,
                signal: "SIGTERM".into()
            },
        ]
    );
    assert_eq!(
        state.calls,
        vec![
            "active",
            "registered",
            "stats",
            "active_queues",
            "revoke",
            "revoke",
            "shutdown"
        ],
        "nothing else was called (the other node's revoke and shutdown were skipped)"
    );
    assert!(s.responder.revoked().contains("t-active"));
    assert!(!s.responder.revoked().contains("not-for-us"));
    s.responder.stop().await;
}

/// The `celery` command: `inspect ping -d <rust node>` lists it with `pong`, `inspect
/// registered` prints its tasks, `control shutdown -d` reaches the handler.
pub(crate) async fn celery_cli_pings_and_shuts_down_a_rust_worker(venv: Venv) {
    let host = "celeriac@cli-test";
    let s = setup(host).await;
    assert!(
        !venv.inspect_ping(&s.cfg, "nobody@nowhere").await,
        "precondition: an unknown node does not answer"
    );
    assert!(
        venv.inspect_ping(&s.cfg, host).await,
        "{venv}: inspect ping"
    );
    let registered = venv
        .run(
            &s.cfg,
            &format!(
                "import subprocess, sys\n\
                 r = subprocess.run([sys.executable, '-m', 'celery', '-A', 'tasks', 'inspect', \
                 'registered', '-t', '10', '-d', {host:?}], capture_output=True, text=True)\n\
                 print(r.stdout)\nprint(r.stderr, file=sys.stderr)\nsys.exit(r.returncode)\n"
            ),
        )
        .await;
    registered.assert_success();
    assert!(
        registered.stdout.contains(host) && registered.stdout.contains("tasks.mul"),
        "{venv}: {registered}"
    );
    let shutdown = venv
        .run(
            &s.cfg,
            &format!(
                "import subprocess, sys\n\
                 r = subprocess.run([sys.executable, '-m', 'celery', '-A', 'tasks', 'control', \
                 'shutdown', '-t', '2', '-d', {host:?}], capture_output=True, text=True)\n\
                 print(r.stdout)\nprint(r.stderr, file=sys.stderr)\n"
            ),
        )
        .await;
    assert!(
        s.handler.wait_until(|st| st.shutdowns == 1, WAIT).await,
        "{venv}: `celery control shutdown` reached the handler: {shutdown}"
    );
    s.responder.stop().await;
}
