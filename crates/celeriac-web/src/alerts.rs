//! Alerts: the elected process (the holder of the `celeriac-monitor` lease) evaluates the rules
//! each time it publishes the fleet gauges, keeps the alerts' states in the store (so
//! `celeriac alerts` and the next leader see them), records each alert that fires or resolves
//! in the event stream, and posts them to a webhook in a Slack-compatible shape.

use celeriac::alerts::{evaluate, Alert, AlertStates, Rule, Snapshot, Status};
use celeriac::backend::{Event, EventLog};
use celeriac::App;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use tracing::{debug, warn};

/// How long a webhook may take to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What to alert on and where to send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alerting {
    /// The rules.
    pub rules: Vec<Rule>,
    /// Where notices are posted (JSON with a Slack-compatible `text`); none: only the store
    /// and the event stream hear of them.
    pub webhook: Option<String>,
    /// How long a firing alert waits before it is notified again.
    pub cooldown: Duration,
}

impl Default for Alerting {
    fn default() -> Self {
        Alerting {
            rules: Rule::defaults(),
            webhook: None,
            cooldown: Duration::from_secs(3600),
        }
    }
}

/// A rules file: `[[rule]]` tables that replace the built-in rule of the same kind and queue
/// (or add to them), `defaults = false` to start from none, and a `cooldown`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default = "yes")]
    defaults: bool,
    #[serde(default, with = "opt_duration")]
    cooldown: Option<Duration>,
    #[serde(default)]
    rule: Vec<Rule>,
}

fn yes() -> bool {
    true
}

mod opt_duration {
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
        text.map(|t| celeriac::duration::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl Alerting {
    /// The rules of a TOML rules file, with the built-in rules it does not replace.
    ///
    /// # Errors
    /// When the text is not a rules file (the message says where).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = if file.defaults {
            Rule::defaults()
        } else {
            Vec::new()
        };
        for rule in file.rule {
            if rule.threshold.is_nan() {
                return Err(format!("rule {}: the threshold is not a number", rule.id()));
            }
            rules.retain(|r| r.id() != rule.id());
            rules.push(rule);
        }
        let mut a = Alerting {
            rules,
            ..Alerting::default()
        };
        if let Some(c) = file.cooldown {
            a.cooldown = c;
        }
        Ok(a)
    }
}

/// The alerts' states as the store keeps them.
///
/// # Errors
/// When the store cannot be read.
pub async fn states(app: &App) -> celeriac::Result<AlertStates> {
    AlertStates::load(app.backend().as_ref(), app.client().now()).await
}

/// Evaluates alerts: the states come from the store, or from the last evaluation when the
/// store cannot be read (so "the store is down" can fire while it is).
pub(crate) struct Evaluator {
    config: Alerting,
    last: Mutex<Option<AlertStates>>,
    client: reqwest::Client,
    /// One evaluation at a time: each reads the states the one before stored.
    turn: tokio::sync::Mutex<()>,
}

impl Evaluator {
    pub(crate) fn new(config: Alerting) -> Self {
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .build()
            .unwrap_or_default();
        Evaluator {
            config,
            last: Mutex::new(None),
            client,
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// One evaluation on `snap`; returns what was notified.
    pub(crate) async fn run(&self, app: &App, snap: &Snapshot) -> Vec<Alert> {
        let _turn = self.turn.lock().await;
        let mut states = if snap.store_error.is_none() {
            match states(app).await {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "could not read the alerts' states");
                    self.remembered()
                }
            }
        } else {
            self.remembered()
        };
        let mut snap_with_history = snap.clone();
        snap_with_history.evicted_before = states.evicted_keys;
        let notify = evaluate(
            &self.config.rules,
            &snap_with_history,
            &mut states,
            self.config.cooldown,
        );
        if !notify.is_empty() {
            if let Err(e) = self.deliver(&notify).await {
                warn!(error = %e, "could not post alerts to the webhook; trying again at the next evaluation");
                metrics::counter!("celeriac_alert_webhook_failures_total").increment(1);
                // Firing alerts go out again at the next evaluation.
                for a in states.alerts.iter_mut() {
                    if notify
                        .iter()
                        .any(|n| n.rule == a.rule && n.subject == a.subject)
                    {
                        a.notified_at = None;
                    }
                }
            }
            let events: Vec<Event> = notify.iter().map(event_of).collect();
            if let Err(e) = app.backend().append(events).await {
                debug!(error = %e, "could not record alerts in the event stream");
            }
        }
        for a in &notify {
            metrics::counter!(
                "celeriac_alert_notices_total",
                "rule" => a.rule.clone(),
                "status" => status_name(a.status)
            )
            .increment(1);
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some(states.clone());
        }
        if snap.store_error.is_none() {
            if let Err(e) = states
                .save(app.backend().as_ref(), app.client().now())
                .await
            {
                debug!(error = %e, "could not store the alerts' states");
            }
        }
        notify
    }

    fn remembered(&self) -> AlertStates {
        self.last
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_default()
    }

    async fn deliver(&self, notify: &[Alert]) -> Result<(), String> {
        let Some(url) = &self.config.webhook else {
            return Ok(());
        };
        let body = webhook_body(notify);
        let reply = self
            .client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !reply.status().is_success() {
            return Err(format!("the webhook answered {}", reply.status()));
        }
        Ok(())
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    }
}

/// A notice as one line of text.
fn line(a: &Alert) -> String {
    let mark = match a.status {
        Status::Resolved => "RESOLVED",
        _ => "FIRING",
    };
    format!("[{mark}] {} {}: {}", a.rule, a.subject, a.summary)
}

/// The event of an alert that fired or resolved.
fn event_of(a: &Alert) -> Event {
    let kind = format!("alert.{}", status_name(a.status));
    let mut e = Event::new(kind, a.notified_at.unwrap_or(a.since), line(a));
    if !matches!(a.kind, celeriac::alerts::Kind::WorkerStale)
        && !a.subject.contains('/')
        && a.subject != "store"
    {
        e.queue = Some(a.subject.clone());
    }
    e
}

/// The webhook's JSON: `text` (what Slack and compatible receivers show) and the alerts.
pub fn webhook_body(notify: &[Alert]) -> serde_json::Value {
    let text = notify.iter().map(line).collect::<Vec<_>>().join("\n");
    serde_json::json!({
        "text": text,
        "alerts": notify,
    })
}

/// Posts one test notice to `url`: the webhook's JSON shape with `text` and no alerts, through
/// a client with the same timeout as the real notices. Returns the status it answered, or why
/// it could not be reached (without the URL, which may hold a secret).
pub(crate) async fn post_test_notice(url: &str, text: &str) -> Result<reqwest::StatusCode, String> {
    let client = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .map_err(|e| e.without_url().to_string())?;
    let mut body = webhook_body(&[]);
    body["text"] = serde_json::Value::String(text.to_string());
    let reply = client.post(url).json(&body).send().await.map_err(|e| {
        let e = e.without_url();
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why.push_str(": ");
            why.push_str(&s.to_string());
            source = s.source();
        }
        why
    })?;
    Ok(reply.status())
}
