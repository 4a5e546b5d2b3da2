//! Alert rules: built-in kinds, each with a threshold and a `for` duration, evaluated against a
//! [`Snapshot`] of the fleet by one elected process. Each rule watches subjects (a queue, a
//! task, a worker, the store); a subject whose value breaches the threshold is pending, and
//! fires once it has breached for the rule's `for`; a firing alert is notified when it fires,
//! again after each cooldown while it fires, and once when it resolves.
//!
//! This module is the arithmetic and the state machine; the store keeps the states (so every
//! process and `celeriac alerts` sees them) and `celeriac-web` evaluates and delivers.

use crate::backend::{
    History, HistoryEntry, KvEntry, KvStore, ProcessInfo, ProcessKind, ProcessRegistry, QueueAdmin,
    StoreFigures, StoreHealth,
};
use crate::clock::{duration_ms, UnixMs};
use crate::error::{Error, Result};
use crate::monitor::QueueFigures;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A queue's latency (the oldest ready job's wait), in seconds, above the threshold.
    QueueLatency,
    /// A queue with ready jobs and no live consumer (threshold: jobs waiting).
    QueueStalled,
    /// A task's share of attempts that ended in an error over the last minutes (0 to 1), with
    /// at least [`MIN_ATTEMPTS`] attempts.
    FailureRatio,
    /// Jobs that went to a queue's dead letters over the last minutes.
    DeadLetters,
    /// A worker whose registry entry was not refreshed for this many refresh periods.
    WorkerStale,
    /// The store's memory in use over its maximum (0 to 1).
    StoreMemory,
    /// Keys the store evicted since the last evaluation.
    StoreEvicting,
    /// The store did not answer (threshold unused: down is down).
    StoreDown,
}

impl Kind {
    /// Every kind, in order.
    pub const ALL: [Kind; 8] = [
        Kind::QueueLatency,
        Kind::QueueStalled,
        Kind::FailureRatio,
        Kind::DeadLetters,
        Kind::WorkerStale,
        Kind::StoreMemory,
        Kind::StoreEvicting,
        Kind::StoreDown,
    ];

    /// Its name in rule files and notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::QueueLatency => "queue_latency",
            Kind::QueueStalled => "queue_stalled",
            Kind::FailureRatio => "failure_ratio",
            Kind::DeadLetters => "dead_letters",
            Kind::WorkerStale => "worker_stale",
            Kind::StoreMemory => "store_memory",
            Kind::StoreEvicting => "store_evicting",
            Kind::StoreDown => "store_down",
        }
    }
}

/// The attempts a task needs in the window before its failure ratio counts.
pub const MIN_ATTEMPTS: u64 = 20;

/// The minutes of history the failure ratio and dead letters look at.
pub const WINDOW_MINUTES: i64 = crate::monitor::RATE_MINUTES;

/// A rule: a kind, its threshold, how long it must hold, and optionally one queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// What it watches.
    pub kind: Kind,
    /// The value above which a subject breaches.
    pub threshold: f64,
    /// How long a subject must breach before the alert fires.
    #[serde(with = "crate::duration::serde_text", rename = "for")]
    pub for_: Duration,
    /// Only this queue (for the queue and task kinds).
    #[serde(default)]
    pub queue: Option<String>,
}

impl Rule {
    /// A rule of `kind` above `threshold` for `for_`.
    pub fn new(kind: Kind, threshold: f64, for_: Duration) -> Self {
        Rule {
            kind,
            threshold,
            for_,
            queue: None,
        }
    }

    /// The rule's id: its kind, and its queue if it has one.
    pub fn id(&self) -> String {
        match &self.queue {
            Some(q) => format!("{}:{q}", self.kind.as_str()),
            None => self.kind.as_str().to_string(),
        }
    }

    /// The built-in rules.
    pub fn defaults() -> Vec<Rule> {
        let min = |m: u64| Duration::from_secs(60 * m);
        vec![
            Rule::new(Kind::QueueLatency, 300.0, min(5)),
            Rule::new(Kind::QueueStalled, 0.0, min(2)),
            Rule::new(Kind::FailureRatio, 0.2, min(5)),
            Rule::new(Kind::DeadLetters, 10.0, Duration::ZERO),
            Rule::new(Kind::WorkerStale, 2.0, Duration::ZERO),
            Rule::new(Kind::StoreMemory, 0.9, min(5)),
            Rule::new(Kind::StoreEvicting, 0.0, Duration::ZERO),
            Rule::new(Kind::StoreDown, 0.0, min(1)),
        ]
    }

    /// What the rule says, in words.
    pub fn describe(&self) -> String {
        let t = self.threshold;
        let what = match self.kind {
            Kind::QueueLatency => format!("a queue's oldest ready job has waited over {t} s"),
            Kind::QueueStalled => format!("a queue has over {t} ready jobs and no consumer"),
            Kind::FailureRatio => format!(
                "over {:.0} % of a task's attempts failed in the last {WINDOW_MINUTES} minutes",
                t * 100.0
            ),
            Kind::DeadLetters => format!(
                "over {t} jobs of a queue went to the dead letters in the last {WINDOW_MINUTES} \
                 minutes"
            ),
            Kind::WorkerStale => {
                format!("a worker missed over {t} refreshes of its registry entry")
            }
            Kind::StoreMemory => format!("the store uses over {:.0} % of its memory", t * 100.0),
            Kind::StoreEvicting => "the store evicted keys".to_string(),
            Kind::StoreDown => "the store does not answer".to_string(),
        };
        let scope = self
            .queue
            .as_ref()
            .map(|q| format!(" (queue {q})"))
            .unwrap_or_default();
        format!("{what}{scope}, for {}", crate::duration::format(self.for_))
    }
}

/// What the fleet looked like at one moment, as the elected process read it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When (fleet clock).
    pub now: UnixMs,
    /// Why the store could not be read, if it could not (everything else is then empty).
    pub store_error: Option<String>,
    /// Every queue's figures.
    pub queues: Vec<QueueFigures>,
    /// The registry's live processes.
    pub processes: Vec<ProcessInfo>,
    /// History of the last [`WINDOW_MINUTES`] complete minutes.
    pub recent: Vec<HistoryEntry>,
    /// The store's own figures.
    pub store: StoreFigures,
    /// Keys the store had evicted at the previous evaluation.
    pub evicted_before: Option<u64>,
}

impl Snapshot {
    /// Reads what the rules look at, at `now`: every queue's figures, the registry, the
    /// store's own figures and the last [`WINDOW_MINUTES`] complete minutes of history. Costs
    /// the store what `celeriac queues` does, plus a few history buckets per queue.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn read<B>(backend: &B, now: UnixMs) -> Result<Self>
    where
        B: QueueAdmin + ProcessRegistry + History + StoreHealth,
    {
        // Each read once: the queue figures' rates come from the same recent history.
        let stats = backend.stats().await?;
        let processes = backend.processes(now).await?;
        let recent = crate::monitor::recent_history(backend, now).await?;
        let queues = crate::monitor::figures_of(stats, &processes, &recent, now);
        let store = backend.store_figures().await?;
        Ok(Snapshot {
            now,
            store_error: None,
            queues,
            processes,
            recent,
            store,
            evicted_before: None,
        })
    }

    /// The snapshot of a store that could not be read at `now`.
    pub fn store_down(now: UnixMs, error: String) -> Self {
        Snapshot {
            now,
            store_error: Some(error),
            ..Default::default()
        }
    }
}

/// One subject's reading under a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// What it is about: a queue, `queue/task`, a worker id, or `store`.
    pub subject: String,
    /// The value compared with the threshold.
    pub value: f64,
    /// The reading in words.
    pub summary: String,
}

/// The readings of `rule` in `snap` that breach its threshold.
pub fn breaches(rule: &Rule, snap: &Snapshot) -> Vec<Reading> {
    let t = rule.threshold;
    let wanted = |q: &str| rule.queue.as_deref().is_none_or(|w| w == q);
    let mut out = Vec::new();
    if rule.kind == Kind::StoreDown {
        if let Some(e) = &snap.store_error {
            out.push(Reading {
                subject: "store".into(),
                value: 1.0,
                summary: format!("the store does not answer: {e}"),
            });
        }
        return out;
    }
    if snap.store_error.is_some() {
        return out;
    }
    match rule.kind {
        Kind::QueueLatency => {
            for f in snap.queues.iter().filter(|f| wanted(&f.stats.queue)) {
                let secs = f.latency_ms as f64 / 1000.0;
                if secs > t && !f.stats.paused {
                    out.push(Reading {
                        subject: f.stats.queue.clone(),
                        value: secs,
                        summary: format!(
                            "queue {}: the oldest ready job has waited {secs:.0} s",
                            f.stats.queue
                        ),
                    });
                }
            }
        }
        Kind::QueueStalled => {
            for f in snap.queues.iter().filter(|f| wanted(&f.stats.queue)) {
                let ready = f.stats.count(crate::job::JobState::Pending) as f64;
                if ready > t && f.consumers == 0 && !f.stats.paused {
                    out.push(Reading {
                        subject: f.stats.queue.clone(),
                        value: ready,
                        summary: format!(
                            "queue {}: {ready} jobs ready and no live worker takes from it",
                            f.stats.queue
                        ),
                    });
                }
            }
        }
        Kind::FailureRatio => {
            for g in crate::history::by_queue_and_task(&snap.recent)
                .iter()
                .filter(|g| wanted(&g.queue))
            {
                let ended = g.counts.ended();
                if ended < MIN_ATTEMPTS {
                    continue;
                }
                let ratio = g.counts.errors() as f64 / ended as f64;
                if ratio > t {
                    out.push(Reading {
                        subject: format!("{}/{}", g.queue, g.task),
                        value: ratio,
                        summary: format!(
                            "task {} in queue {}: {:.0} % of {ended} attempts failed in the last \
                             {WINDOW_MINUTES} minutes",
                            g.task,
                            g.queue,
                            ratio * 100.0
                        ),
                    });
                }
            }
        }
        Kind::DeadLetters => {
            let mut per_queue: BTreeMap<&str, u64> = BTreeMap::new();
            for e in snap.recent.iter().filter(|e| wanted(&e.queue)) {
                *per_queue.entry(e.queue.as_str()).or_default() += e.counts.dead;
            }
            for (queue, dead) in per_queue {
                if dead as f64 > t {
                    out.push(Reading {
                        subject: queue.to_string(),
                        value: dead as f64,
                        summary: format!(
                            "queue {queue}: {dead} jobs went to the dead letters in the last \
                             {WINDOW_MINUTES} minutes"
                        ),
                    });
                }
            }
        }
        Kind::WorkerStale => {
            for p in snap
                .processes
                .iter()
                .filter(|p| p.kind == ProcessKind::Worker)
            {
                // An entry lives three refresh periods from its last refresh.
                let period = ((p.expires_at - p.seen_at) / 3).max(1);
                let missed = (snap.now - p.seen_at) as f64 / period as f64;
                if missed > t {
                    out.push(Reading {
                        subject: p.id.clone(),
                        value: missed,
                        summary: format!(
                            "worker {} on {}: last refresh {:.0} s ago ({missed:.1} periods)",
                            p.id,
                            p.host,
                            (snap.now - p.seen_at) as f64 / 1000.0
                        ),
                    });
                }
            }
        }
        Kind::StoreMemory => {
            if let (Some(used), Some(max)) =
                (snap.store.memory_used_bytes, snap.store.memory_max_bytes)
            {
                let ratio = if max > 0 {
                    used as f64 / max as f64
                } else {
                    0.0
                };
                if ratio > t {
                    out.push(Reading {
                        subject: "store".into(),
                        value: ratio,
                        summary: format!(
                            "the store uses {:.0} % of its memory ({used} of {max} bytes)",
                            ratio * 100.0
                        ),
                    });
                }
            }
        }
        Kind::StoreEvicting => {
            if let (Some(now), Some(before)) = (snap.store.evicted_keys, snap.evicted_before) {
                let n = now.saturating_sub(before) as f64;
                if n > t {
                    out.push(Reading {
                        subject: "store".into(),
                        value: n,
                        summary: format!("the store evicted {n} keys since the last evaluation"),
                    });
                }
            }
        }
        Kind::StoreDown => {}
    }
    out
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Breaching, not yet for long enough.
    Pending,
    /// Breaching for the rule's `for`.
    Firing,
    /// No longer breaching (only in notifications).
    Resolved,
}

/// One rule's alert for one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's id ([`Rule::id`]).
    pub rule: String,
    /// The rule's kind.
    pub kind: Kind,
    /// What it is about.
    pub subject: String,
    /// Where it stands.
    pub status: Status,
    /// The last reading's value.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// The last reading in words.
    pub summary: String,
    /// When it started breaching.
    pub since: UnixMs,
    /// When it was last notified (fired, or reminded), if it was.
    #[serde(default)]
    pub notified_at: Option<UnixMs>,
}

/// Every alert that is pending or firing, by rule id and subject.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertStates {
    /// The alerts.
    pub alerts: Vec<Alert>,
    /// When they were last evaluated.
    #[serde(default)]
    pub evaluated_at: UnixMs,
    /// Keys the store had evicted then.
    #[serde(default)]
    pub evicted_keys: Option<u64>,
}

/// Where the alerts' states live in the store's key-value space.
pub const STATES_KEY: &str = "celeriac:alerts:states";

/// How long stored states outlive the last evaluation.
const STATES_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl AlertStates {
    /// The states kept in `store` (empty when none are).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn load<B: KvStore>(store: &B, now: UnixMs) -> Result<Self> {
        let stored = store.kv_get(vec![STATES_KEY.to_string()], now).await?;
        Ok(Self::decode(stored.first().and_then(|v| v.as_deref())))
    }

    /// Keeps the states in `store`.
    ///
    /// # Errors
    /// When the store refuses them.
    pub async fn save<B: KvStore>(&self, store: &B, now: UnixMs) -> Result<()> {
        let entry = KvEntry {
            key: STATES_KEY.to_string(),
            value: self.encode()?,
            ttl: STATES_TTL,
        };
        store.kv_set(vec![entry], now).await
    }

    /// The states as stores keep them (JSON).
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Codec(format!("alert states: {e}")))
    }

    /// States as stored; empty when there are none or they cannot be read.
    pub fn decode(stored: Option<&[u8]>) -> Self {
        stored
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }
}

/// Evaluates `rules` on `snap`, moves `states` on, and returns what to notify: alerts that
/// fired, that still fire a `cooldown` after their last notice, and that resolved.
pub fn evaluate(
    rules: &[Rule],
    snap: &Snapshot,
    states: &mut AlertStates,
    cooldown: Duration,
) -> Vec<Alert> {
    let now = snap.now;
    let mut before: BTreeMap<(String, String), Alert> = states
        .alerts
        .drain(..)
        .map(|a| ((a.rule.clone(), a.subject.clone()), a))
        .collect();
    let mut notify = Vec::new();
    for rule in rules {
        for r in breaches(rule, snap) {
            let key = (rule.id(), r.subject.clone());
            let mut alert = before.remove(&key).unwrap_or_else(|| Alert {
                rule: rule.id(),
                kind: rule.kind,
                subject: r.subject.clone(),
                status: Status::Pending,
                value: r.value,
                threshold: rule.threshold,
                summary: r.summary.clone(),
                since: now,
                notified_at: None,
            });
            alert.value = r.value;
            alert.summary = r.summary;
            alert.threshold = rule.threshold;
            if alert.status == Status::Pending && now - alert.since >= duration_ms(rule.for_) {
                alert.status = Status::Firing;
            }
            let due = match alert.notified_at {
                None => true,
                Some(at) => now - at >= duration_ms(cooldown),
            };
            if alert.status == Status::Firing && due {
                alert.notified_at = Some(now);
                notify.push(alert.clone());
            }
            states.alerts.push(alert);
        }
    }
    // What no longer breaches: a firing alert resolves (and says so); a pending one goes.
    for (_, mut alert) in before {
        if alert.status == Status::Firing {
            alert.status = Status::Resolved;
            alert.notified_at = Some(now);
            notify.push(alert);
        }
    }
    states
        .alerts
        .sort_by(|a, b| (&a.rule, &a.subject).cmp(&(&b.rule, &b.subject)));
    states.evaluated_at = now;
    states.evicted_keys = snap.store.evicted_keys;
    notify
}

/// The rules as Prometheus alerting rules (YAML), on the metrics `celeriac-web` serves.
pub fn prometheus_rules(rules: &[Rule]) -> String {
    let mut out = String::from("groups:\n  - name: celeriac\n    rules:\n");
    for rule in rules {
        let t = rule.threshold;
        let q = rule
            .queue
            .as_ref()
            .map(|q| format!("queue=\"{q}\""))
            .unwrap_or_default();
        let sel = |extra: &str| -> String {
            let parts: Vec<&str> = [q.as_str(), extra]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect();
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        };
        let w = format!("{WINDOW_MINUTES}m");
        let expr = match rule.kind {
            Kind::QueueLatency => format!(
                "celeriac_queue_latency_seconds{} > {t} and on(queue) celeriac_queue_paused == 0",
                sel("")
            ),
            Kind::QueueStalled => format!(
                "celeriac_queue_jobs{} > {t} and on(queue) celeriac_queue_consumers == 0 \
                 and on(queue) celeriac_queue_paused == 0",
                sel("state=\"pending\"")
            ),
            Kind::FailureRatio => format!(
                "(sum by (queue, task) (increase(celeriac_job_attempts_total{}[{w}])) \
                 / sum by (queue, task) (increase(celeriac_job_attempts_total{}[{w}]))) > {t} \
                 and sum by (queue, task) (increase(celeriac_job_attempts_total{}[{w}])) >= {MIN_ATTEMPTS}",
                sel("outcome=~\"retried|failed|dead\""),
                sel("outcome!~\"deferred|stale\""),
                sel("outcome!~\"deferred|stale\""),
            ),
            Kind::DeadLetters => format!(
                "sum by (queue) (increase(celeriac_job_attempts_total{}[{w}])) > {t}",
                sel("outcome=\"dead\"")
            ),
            Kind::WorkerStale => format!(
                "increase(celeriac_registry_refresh_failures_total[5m]) > {t}"
            ),
            Kind::StoreMemory => format!(
                "celeriac_store_memory_used_bytes / celeriac_store_memory_max_bytes > {t} \
                 and celeriac_store_memory_max_bytes > 0"
            ),
            Kind::StoreEvicting => format!("delta(celeriac_store_evicted_keys[5m]) > {t}"),
            Kind::StoreDown => "max(celeriac_monitor_leader) == 0 or absent(celeriac_monitor_leader)"
                .to_string(),
        };
        let for_ = format!("{}s", rule.for_.as_secs());
        out.push_str(&format!(
            "      - alert: celeriac_{}\n        expr: {}\n        for: {for_}\n        labels:\n          severity: warning\n        annotations:\n          summary: {}\n",
            rule.id().replace(':', "_").replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_"),
            yaml_quote(&expr),
            yaml_quote(&rule.describe()),
        ));
    }
    out
}

/// A YAML double-quoted string.
fn yaml_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests;
