//! One event: the dict `celery.events.Event` builds, and the envelope kombu publishes it in.

use serde_json::{Map, Value};

use crate::protocol::{kombu_json, DeliveryInfo, Envelope, ProtocolError};

/// The fanout exchange events go to (`celeryev`).
pub const EVENT_EXCHANGE: &str = "celeryev";

/// An event: a JSON object whose `type` is e.g. `worker-heartbeat` or `task-succeeded`, with
/// the common fields `hostname`, `utcoffset`, `pid`, `clock`, `timestamp`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Every field, `type` included.
    pub fields: Map<String, Value>,
}

impl Event {
    /// An event of `event_type` with these fields (the common ones are added by the sender).
    pub fn new(event_type: &str, fields: Map<String, Value>) -> Self {
        let mut fields = fields;
        fields.insert("type".into(), Value::from(event_type));
        Event { fields }
    }

    /// Its `type` (`""` when missing).
    pub fn event_type(&self) -> &str {
        self.fields
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Its `hostname` (`""` when missing).
    pub fn hostname(&self) -> &str {
        self.fields
            .get("hostname")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The routing key it is published with: the type with `-` turned into `.`
    /// (`task.succeeded`).
    pub fn routing_key(&self) -> String {
        self.event_type().replace('-', ".")
    }

    /// The envelope as `celery.events.EventDispatcher` publishes it: headers
    /// `{"hostname": ...}`, `delivery_mode` 1, `delivery_info` `{"exchange": "celeryev",
    /// "routing_key": <rk>}`, the JSON body base64-encoded.
    pub fn encode(&self, hostname: &str) -> Vec<u8> {
        let body = kombu_json::to_python_json(&self.fields);
        let mut env = Envelope::json(body);
        env.headers
            .insert("hostname".into(), Value::String(hostname.to_owned()));
        env.properties.delivery_mode = Some(1);
        env.properties.priority = Some(0);
        env.properties.delivery_info = Some(DeliveryInfo {
            exchange: EVENT_EXCHANGE.to_owned(),
            routing_key: self.routing_key(),
            redelivered: None,
        });
        env.encode()
    }

    /// The events of one published envelope: one object, or an array of them (a Python
    /// worker batches task events under the routing key `task.multi`).
    ///
    /// # Errors
    /// A [`ProtocolError`] when the envelope or its body cannot be decoded, or the body is
    /// neither an object nor an array of objects.
    pub fn decode(raw: &[u8]) -> Result<Vec<Event>, ProtocolError> {
        let env = Envelope::decode(raw)?;
        let body = env.body_value()?;
        let not_event = |got: &Value| ProtocolError::Field {
            place: "event",
            field: "body".into(),
            expected: "an object or an array of objects",
            got: got.to_string().chars().take(80).collect(),
        };
        match body {
            Value::Object(fields) => Ok(vec![Event { fields }]),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Object(fields) => Ok(Event { fields }),
                    other => Err(not_event(&other)),
                })
                .collect(),
            other => Err(not_event(&other)),
        }
    }
}

/// What `task-received` reports of a task (the fields Celery's strategy sends).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceivedTask {
    /// `uuid`: the task id.
    pub id: String,
    /// `name`: the task name.
    pub name: String,
    /// `args`: `argsrepr` (Python's repr of the positional arguments).
    pub args_repr: String,
    /// `kwargs`: `kwargsrepr`.
    pub kwargs_repr: String,
    /// `retries`.
    pub retries: u64,
    /// `eta`: ISO 8601 text, or `None`.
    pub eta: Option<String>,
    /// `expires`: ISO 8601 text, or `None`.
    pub expires: Option<String>,
    /// `root_id`.
    pub root_id: Option<String>,
    /// `parent_id`.
    pub parent_id: Option<String>,
}

impl ReceivedTask {
    pub(crate) fn fields(&self) -> Map<String, Value> {
        let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        let mut m = Map::new();
        m.insert("uuid".into(), Value::from(self.id.as_str()));
        m.insert("name".into(), Value::from(self.name.as_str()));
        m.insert("args".into(), Value::from(self.args_repr.as_str()));
        m.insert("kwargs".into(), Value::from(self.kwargs_repr.as_str()));
        m.insert("root_id".into(), opt(&self.root_id));
        m.insert("parent_id".into(), opt(&self.parent_id));
        m.insert("retries".into(), Value::from(self.retries));
        m.insert("eta".into(), opt(&self.eta));
        m.insert("expires".into(), opt(&self.expires));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_as_the_dispatcher_does_and_decodes_batches() {
        let Value::Object(fields) = json!({"uuid": "a", "hostname": "h@x"}) else {
            unreachable!()
        };
        let ev = Event::new("task-started", fields);
        assert_eq!(ev.routing_key(), "task.started");
        let raw = ev.encode("h@x");
        let env: Value = serde_json::from_slice(&raw).expect("json");
        assert_eq!(env["headers"], json!({"hostname": "h@x"}));
        assert_eq!(env["properties"]["delivery_mode"], json!(1));
        assert_eq!(
            env["properties"]["delivery_info"],
            json!({"exchange": "celeryev", "routing_key": "task.started"})
        );
        assert_eq!(Event::decode(&raw).expect("decodes"), vec![ev.clone()]);

        let batch =
            Envelope::json(br#"[{"type": "task-started"}, {"type": "task-succeeded"}]"#.to_vec());
        let evs = Event::decode(&batch.encode()).expect("a batch decodes");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1].event_type(), "task-succeeded");
        assert!(Event::decode(&Envelope::json(b"[1]".to_vec()).encode()).is_err());
    }
}
