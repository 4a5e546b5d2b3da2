//! Python's `EventReceiver` feeding a `celery.events.state.State` ([`Venv::state_receiver`]).

use std::time::Duration;

use super::{CeleryConfig, PyProcess, Venv, READY_TIMEOUT};

/// Follows the events of the worker `STATE_HOST` until its `worker-offline`, then prints
/// what `State` made of them.
const STATE_RECEIVER: &str = r#"
import json, os
from tasks import app
from celery.events.state import State
H = os.environ['STATE_HOST']
state = State()
seen = []
alive_at_heartbeat = []
def on_event(ev):
    state.event(ev)
    if ev.get('hostname') != H:
        return
    seen.append([ev['type'], ev.get('uuid')])
    if ev['type'] == 'worker-heartbeat' and not alive_at_heartbeat:
        alive_at_heartbeat.append(state.workers[H].alive)
        print('HEARTBEAT', flush=True)
    if ev['type'] == 'worker-offline':
        recv.should_stop = True
with app.connection() as conn:
    recv = app.events.Receiver(conn, handlers={'*': on_event})
    print('LISTENING', flush=True)
    recv.capture(limit=None, timeout=90, wakeup=False)
w = state.workers[H]
print(json.dumps({
    'seen': seen,
    'alive_at_heartbeat': alive_at_heartbeat[0] if alive_at_heartbeat else None,
    'alive_after_offline': w.alive,
    'processed': w.processed,
    'active': w.active,
    'freq': w.freq,
    'tasks': {u: {'state': t.state, 'name': t.name, 'result': t.result,
                  'exception': t.exception, 'args': t.args,
                  'worker': t.worker.hostname if t.worker else None}
              for u, t in state.tasks.items()},
}))
"#;

impl Venv {
    /// Starts Python's `EventReceiver` + `State` on the events of the worker `hostname` and
    /// returns once it listens: when `psubscribers` clients of the broker (it included) hold
    /// a pattern subscription (the receiver subscribes inside `capture()`).
    ///
    /// It prints `HEARTBEAT` at the worker's first heartbeat and, after its `worker-offline`,
    /// a JSON object: `seen` (`[type, uuid]` of the worker's events), `alive_at_heartbeat`,
    /// `alive_after_offline`, `processed`, `active`, `freq`, and `tasks` (by id: `state`,
    /// `name`, `result`, `exception`, `args`, `worker`).
    ///
    /// # Panics
    /// When it does not listen within [`READY_TIMEOUT`].
    pub async fn state_receiver(
        &self,
        cfg: &CeleryConfig,
        hostname: &str,
        psubscribers: usize,
    ) -> PyProcess {
        let mut receiver = self.spawn(&cfg.clone().env("STATE_HOST", hostname), STATE_RECEIVER);
        receiver.wait_for_line("LISTENING").await;
        wait_for_psubscribers(&cfg.broker_url, psubscribers).await;
        receiver
    }
}

/// Waits until `n` clients of the Redis server at `url` hold a pattern subscription
/// (`NUMPAT` counts patterns, not clients).
///
/// # Panics
/// When that does not happen within [`READY_TIMEOUT`].
async fn wait_for_psubscribers(url: &str, n: usize) {
    let mut conn = redis::Client::open(url)
        .expect("valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connects");
    let subscribed = async {
        loop {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut conn)
                .await
                .expect("CLIENT LIST");
            let psubscribers = clients
                .lines()
                .filter(|l| {
                    l.split(' ')
                        .any(|f| f.starts_with("psub=") && f != "psub=0")
                })
                .count();
            if psubscribers >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, subscribed)
        .await
        .unwrap_or_else(|_| panic!("{n} pattern subscribers within {READY_TIMEOUT:?}"));
}
