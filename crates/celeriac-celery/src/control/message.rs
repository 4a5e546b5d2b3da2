//! Control messages as kombu's `Mailbox` publishes them, and the replies its clients collect.

use serde_json::{Map, Value};

use super::error::ControlError;
use crate::protocol::{kombu_json, DeliveryInfo, Envelope};

/// The fanout exchange control messages are broadcast on.
pub const PIDBOX_EXCHANGE: &str = "celery.pidbox";
/// The direct exchange replies go through (clients bind `<oid>.reply.celery.pidbox` to it).
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";

/// Where to send the reply: `reply_to` of a control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The reply exchange (`reply.celery.pidbox`).
    pub exchange: String,
    /// The client's oid.
    pub routing_key: String,
}

/// A remote-control command (`{"method", "arguments", "destination", "pattern", "matcher",
/// "ticket", "reply_to"}` with headers `{"clock", "expires"}`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ControlMessage {
    /// The command (`ping`, `revoke`, `stats`, ...).
    pub method: String,
    /// Its keyword arguments.
    pub arguments: Map<String, Value>,
    /// The hostnames it is for; `None` (or empty) for every node.
    pub destination: Option<Vec<String>>,
    /// A hostname pattern, used with `matcher` when there is no destination.
    pub pattern: Option<String>,
    /// `glob` (default) or `pcre`.
    pub matcher: Option<String>,
    /// The reply ticket (calls only; casts such as `revoke` have none).
    pub ticket: Option<String>,
    /// Where to reply (calls only).
    pub reply_to: Option<ReplyTo>,
    /// The sender's Lamport clock (`headers.clock`).
    pub clock: Option<u64>,
    /// When the sender stops waiting (`headers.expires`, UNIX seconds; 0 or absent: never).
    pub expires: Option<f64>,
}

fn opt_text(
    body: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ControlError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ControlError::field(field, "a string", other)),
    }
}

impl ControlMessage {
    /// A call or cast of `method` for every node.
    pub fn new(method: &str, arguments: Map<String, Value>) -> Self {
        ControlMessage {
            method: method.to_owned(),
            arguments,
            ..ControlMessage::default()
        }
    }

    /// Decodes a message published on `celery.pidbox`. Tolerant as kombu: `destination` may
    /// be a single string, absent fields are `None`.
    ///
    /// # Errors
    /// [`ControlError::Protocol`] when the envelope or its body cannot be decoded,
    /// [`ControlError::Field`] naming a field of the wrong type.
    pub fn decode(raw: &[u8]) -> Result<Self, ControlError> {
        let env = Envelope::decode(raw)?;
        let body = env.body_value()?;
        let Value::Object(body) = body else {
            return Err(ControlError::field("body", "an object", &body));
        };
        let method = opt_text(&body, "method")?
            .ok_or_else(|| ControlError::field("method", "a string", &Value::Null))?;
        let arguments = match body.get("arguments") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => return Err(ControlError::field("arguments", "an object", other)),
        };
        let destination = match body.get("destination") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(ControlError::field(
                            "destination",
                            "a list of hostnames",
                            other,
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(other) => {
                return Err(ControlError::field(
                    "destination",
                    "a list of hostnames",
                    other,
                ))
            }
        };
        let reply_to = match body.get("reply_to") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(ReplyTo {
                exchange: opt_text(m, "exchange")?.unwrap_or_else(|| REPLY_EXCHANGE.to_owned()),
                routing_key: opt_text(m, "routing_key")?.unwrap_or_default(),
            }),
            Some(other) => return Err(ControlError::field("reply_to", "an object", other)),
        };
        let number = |k: &str| env.headers.get(k).and_then(Value::as_f64);
        Ok(ControlMessage {
            method,
            arguments,
            destination,
            pattern: opt_text(&body, "pattern")?,
            matcher: opt_text(&body, "matcher")?,
            ticket: opt_text(&body, "ticket")?,
            reply_to,
            clock: number("clock").filter(|c| *c >= 0.0).map(|c| c as u64),
            expires: number("expires"),
        })
    }

    /// Whether `hostname` should handle it, as kombu's `Node.handle_message` decides: listed
    /// in a non-empty `destination`; else matched by `pattern` with `matcher` (`glob`; `pcre`
    /// is not supported and matches nothing); else every node.
    pub fn is_for(&self, hostname: &str) -> bool {
        match &self.destination {
            Some(d) if !d.is_empty() => d.iter().any(|h| h == hostname),
            _ => match (&self.pattern, &self.matcher) {
                (Some(p), Some(m)) if !p.is_empty() && !m.is_empty() => match m.as_str() {
                    "glob" => glob_match(p.as_bytes(), hostname.as_bytes()),
                    _ => {
                        tracing::warn!(matcher = %m, "unsupported control matcher; ignoring message");
                        false
                    }
                },
                _ => true,
            },
        }
    }

    /// Whether it is a call (the sender waits for replies).
    pub fn wants_reply(&self) -> bool {
        self.reply_to.is_some()
    }

    /// The envelope as kombu's `Mailbox._publish` writes it (headers `clock`, `expires`).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Map::new();
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        body.insert("method".into(), Value::from(self.method.as_str()));
        body.insert("arguments".into(), Value::Object(self.arguments.clone()));
        body.insert(
            "destination".into(),
            self.destination.clone().map_or(Value::Null, Value::from),
        );
        body.insert("pattern".into(), text(&self.pattern));
        body.insert("matcher".into(), text(&self.matcher));
        if let Some(r) = &self.reply_to {
            body.insert("ticket".into(), text(&self.ticket));
            let mut m = Map::new();
            m.insert("exchange".into(), Value::from(r.exchange.as_str()));
            m.insert("routing_key".into(), Value::from(r.routing_key.as_str()));
            body.insert("reply_to".into(), Value::Object(m));
        }
        let mut env = Envelope::json(kombu_json::to_python_json(&body));
        env.headers
            .insert("clock".into(), Value::from(self.clock.unwrap_or(0)));
        env.headers
            .insert("expires".into(), Value::from(self.expires.unwrap_or(0.0)));
        env.properties.delivery_mode = Some(2);
        env.properties.delivery_info = Some(DeliveryInfo {
            exchange: PIDBOX_EXCHANGE.to_owned(),
            routing_key: String::new(),
            redelivered: None,
        });
        env.encode()
    }
}

/// A reply as kombu's `Mailbox._publish_reply` writes it: body `{hostname: reply}`, headers
/// `{"ticket", "clock"}`, `delivery_mode` 1.
pub fn reply_envelope(
    hostname: &str,
    reply: Value,
    ticket: Option<&str>,
    clock: u64,
    reply_to: &ReplyTo,
) -> Vec<u8> {
    let mut body = Map::new();
    body.insert(hostname.to_owned(), reply);
    let mut env = Envelope::json(kombu_json::to_python_json(&body));
    env.headers
        .insert("ticket".into(), ticket.map_or(Value::Null, Value::from));
    env.headers.insert("clock".into(), Value::from(clock));
    env.properties.delivery_mode = Some(1);
    env.properties.delivery_info = Some(DeliveryInfo {
        exchange: reply_to.exchange.clone(),
        routing_key: reply_to.routing_key.clone(),
        redelivered: None,
    });
    env.encode()
}

/// `fnmatch` without character classes: `*` any run, `?` one character.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_selects_destinations() {
        let mut msg = ControlMessage::new("ping", Map::new());
        msg.ticket = Some("t1".into());
        msg.reply_to = Some(ReplyTo {
            exchange: REPLY_EXCHANGE.into(),
            routing_key: "oid".into(),
        });
        msg.clock = Some(7);
        let back = ControlMessage::decode(&msg.encode()).expect("decodes");
        assert_eq!(
            back,
            ControlMessage {
                expires: Some(0.0),
                ..msg.clone()
            }
        );
        assert!(back.is_for("a@x"));

        msg.destination = Some(vec!["b@x".into()]);
        assert!(!msg.is_for("a@x"));
        assert!(msg.is_for("b@x"));

        msg.destination = None;
        msg.pattern = Some("celeriac@*".into());
        msg.matcher = Some("glob".into());
        assert!(msg.is_for("celeriac@host"));
        assert!(!msg.is_for("w1@host"));
    }

    #[test]
    fn decodes_python_capture() {
        let body = json!({"method": "revoke", "arguments": {"task_id": "abc", "terminate": true, "signal": "SIGTERM"},
                          "destination": null, "pattern": null, "matcher": null});
        let mut env = Envelope::json(serde_json::to_vec(&body).expect("json"));
        env.headers.insert("clock".into(), json!(33));
        env.headers
            .insert("expires".into(), json!(1796559559.859987));
        let msg = ControlMessage::decode(&env.encode()).expect("decodes");
        assert_eq!(msg.method, "revoke");
        assert_eq!(msg.arguments["terminate"], json!(true));
        assert_eq!(msg.clock, Some(33));
        assert!(!msg.wants_reply());
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a?c*", b"abcdef"));
        assert!(!glob_match(b"a?c", b"abcd"));
        assert!(glob_match(b"*@host", b"w1@host"));
    }
}
