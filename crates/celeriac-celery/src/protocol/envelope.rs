//! The envelope: the JSON object kombu puts on a Redis list (§3).

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};

use super::compression::Compression;
use super::error::{show, ProtocolError, Result};
use super::headers::HEADER_ORDER;
use super::serializer;
use crate::pyjson::{self, ordered, Ordered};

const PROPERTY_ORDER: [&str; 9] = [
    "correlation_id",
    "reply_to",
    "delivery_mode",
    "expiration",
    "delivery_info",
    "priority",
    "body_encoding",
    "delivery_tag",
    "origin",
];

/// Where a message was published: `properties.delivery_info`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeliveryInfo {
    /// The exchange (`""` for Celery's default publish path).
    pub exchange: String,
    /// The routing key (the queue name when the exchange is `""`).
    pub routing_key: String,
    /// `redelivered`, set by kombu on messages restored from `unacked`.
    pub redelivered: Option<bool>,
}

/// `properties` of an envelope. `body_encoding` is not kept: bodies are decoded on read and
/// always written base64, as kombu's Redis transport does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    /// `correlation_id`: the task id for task messages.
    pub correlation_id: Option<String>,
    /// `reply_to`: the client's oid (only the RPC backend uses it).
    pub reply_to: Option<String>,
    /// `delivery_mode`: 2 persistent (tasks), 1 transient (events).
    pub delivery_mode: Option<u8>,
    /// `delivery_info`; written as `{"exchange": "", "routing_key": ""}` when `None`, since a
    /// Python worker loses a message without it.
    pub delivery_info: Option<DeliveryInfo>,
    /// `priority` 0..=9 (values out of range are clamped on read; 0 is served first).
    pub priority: Option<u8>,
    /// `delivery_tag`: the key of the message in `unacked`; a fresh uuid4 is written when `None`.
    pub delivery_tag: Option<String>,
    /// `expiration`: TTL in ms as a string (informational on Redis).
    pub expiration: Option<String>,
    /// Other properties (`origin` on retried messages, ...), kept and written back.
    pub extra: Map<String, Value>,
}

/// A decoded envelope: `body` holds the serialized payload with base64 and compression undone.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The serialized payload (JSON text for `application/json`).
    pub body: Vec<u8>,
    /// `content-type` (the body serializer's MIME type).
    pub content_type: String,
    /// `content-encoding` (`utf-8` for JSON, `binary` for msgpack).
    pub content_encoding: String,
    /// The body's compression (`headers.compression`), undone in `body`, redone on encode.
    pub compression: Option<Compression>,
    /// `headers` (the task headers for task messages), without `compression`.
    pub headers: Map<String, Value>,
    /// `properties`.
    pub properties: Properties,
}

fn opt_str(map: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // Tolerated where Python is loose: numbers written for string fields.
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(ProtocolError::property(key, "a string", other)),
    }
}

fn small_int(value: Option<&Value>, max: i64) -> Option<u8> {
    let n = match value? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    u8::try_from(n.clamp(0, max)).ok()
}

fn delivery_info(value: Option<&Value>) -> Result<Option<DeliveryInfo>> {
    let map = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(ProtocolError::property("delivery_info", "an object", other)),
    };
    let text = |k: &str| match map.get(k) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(ProtocolError::property(
            if k == "exchange" {
                "delivery_info.exchange"
            } else {
                "delivery_info.routing_key"
            },
            "a string",
            other,
        )),
    };
    Ok(Some(DeliveryInfo {
        exchange: text("exchange")?,
        routing_key: text("routing_key")?,
        redelivered: map.get("redelivered").and_then(Value::as_bool),
    }))
}

impl Properties {
    fn from_map(map: &Map<String, Value>) -> Result<Properties> {
        let known = [
            "correlation_id",
            "reply_to",
            "delivery_mode",
            "delivery_info",
            "priority",
            "body_encoding",
            "delivery_tag",
            "expiration",
        ];
        Ok(Properties {
            correlation_id: opt_str(map, "correlation_id")?,
            reply_to: opt_str(map, "reply_to")?,
            delivery_mode: small_int(map.get("delivery_mode"), 255),
            delivery_info: delivery_info(map.get("delivery_info"))?,
            priority: small_int(map.get("priority"), 9),
            delivery_tag: opt_str(map, "delivery_tag")?,
            expiration: opt_str(map, "expiration")?,
            extra: map
                .iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    fn to_map(&self) -> Map<String, Value> {
        let mut m = self.extra.clone();
        let s = |v: &str| Value::String(v.to_owned());
        if let Some(v) = &self.correlation_id {
            m.insert("correlation_id".into(), s(v));
        }
        if let Some(v) = &self.reply_to {
            m.insert("reply_to".into(), s(v));
        }
        if let Some(v) = self.delivery_mode {
            m.insert("delivery_mode".into(), Value::from(v));
        }
        if let Some(v) = &self.expiration {
            m.insert("expiration".into(), s(v));
        }
        let info = self.delivery_info.clone().unwrap_or_default();
        let mut di = Map::new();
        di.insert("exchange".into(), Value::String(info.exchange));
        di.insert("routing_key".into(), Value::String(info.routing_key));
        if let Some(r) = info.redelivered {
            di.insert("redelivered".into(), Value::Bool(r));
        }
        m.insert("delivery_info".into(), Value::Object(di));
        m.insert("priority".into(), Value::from(self.priority.unwrap_or(0)));
        m.insert("body_encoding".into(), s("base64"));
        let tag = self
            .delivery_tag
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        m.insert("delivery_tag".into(), Value::String(tag));
        m
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    body: String,
    #[serde(rename = "content-encoding")]
    content_encoding: &'a str,
    #[serde(rename = "content-type")]
    content_type: &'a str,
    headers: Ordered<'a>,
    properties: Ordered<'a>,
}

impl Envelope {
    /// A JSON envelope around `body` with empty headers and default properties.
    pub fn json(body: Vec<u8>) -> Envelope {
        Envelope {
            body,
            content_type: serializer::JSON.to_owned(),
            content_encoding: "utf-8".to_owned(),
            compression: None,
            headers: Map::new(),
            properties: Properties::default(),
        }
    }

    /// Decodes an envelope as popped from a Redis list. Tolerant: missing `content-type`
    /// means JSON, missing `headers`/`properties` are empty, `null`s are absent values; a
    /// `body` without `body_encoding` is the serialized text itself.
    ///
    /// # Errors
    /// A [`ProtocolError`] naming the field: not JSON, not an object, no `body`, bad base64,
    /// an unknown `body_encoding`, an unsupported or corrupt compression, a decompressed
    /// body over 16 MiB, a property of the wrong type.
    pub fn decode(raw: &[u8]) -> Result<Envelope> {
        let value: Value = pyjson::parse(raw).map_err(ProtocolError::EnvelopeJson)?;
        let Value::Object(mut map) = value else {
            return Err(ProtocolError::EnvelopeNotObject(show(&value)));
        };
        let field = |field: &str, expected, got: &Value| ProtocolError::Field {
            place: "envelope",
            field: field.to_owned(),
            expected,
            got: show(got),
        };
        let mut headers = match map.remove("headers") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(h)) => h,
            Some(other) => return Err(field("headers", "an object", &other)),
        };
        let properties = match map.get("properties") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(other) => return Err(field("properties", "an object", other)),
        };
        let text = |key: &str, default: &str| match map.get(key) {
            None | Some(Value::Null) => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(field(key, "a string", other)),
        };
        let content_type = text("content-type", serializer::JSON)?;
        let content_encoding = text("content-encoding", "utf-8")?;
        let encoding = match properties.get("body_encoding") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => return Err(ProtocolError::property("body_encoding", "a string", other)),
        };
        let body = match (map.get("body"), encoding) {
            (None | Some(Value::Null), _) => {
                return Err(ProtocolError::Missing {
                    place: "envelope",
                    field: "body".into(),
                })
            }
            (Some(Value::String(s)), Some("base64")) => base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(ProtocolError::Base64)?,
            (Some(Value::String(s)), None | Some("" | "utf-8" | "utf8" | "identity")) => {
                s.clone().into_bytes()
            }
            (Some(Value::String(_)), Some(other)) => {
                return Err(ProtocolError::UnsupportedBodyEncoding(other.to_owned()))
            }
            (Some(other), Some("base64")) => return Err(field("body", "a base64 string", other)),
            // A hand-made envelope may carry the body as JSON itself.
            (Some(other), _) => serde_json::to_vec(other).map_err(ProtocolError::EnvelopeJson)?,
        };
        let compression = match headers.remove("compression") {
            None | Some(Value::Null) => None,
            Some(Value::String(c)) => Some(Compression::parse(&c)?),
            Some(other) => {
                return Err(ProtocolError::header("compression", "a string", &other));
            }
        };
        let body = match compression {
            Some(c) => c.decompress(&body)?,
            None => body,
        };
        Ok(Envelope {
            body,
            content_type,
            content_encoding,
            compression,
            headers,
            properties: Properties::from_map(&properties)?,
        })
    }

    /// Encodes the envelope as kombu writes it: body compressed (when `compression` is set)
    /// and base64-encoded, `body_encoding: "base64"`, `delivery_info` and `priority` always
    /// present, a fresh uuid4 `delivery_tag` when none is set, Python's key order and
    /// separators.
    pub fn encode(&self) -> Vec<u8> {
        let body = match self.compression {
            Some(c) => c.compress(&self.body),
            None => self.body.clone(),
        };
        let mut headers = self.headers.clone();
        if let Some(c) = self.compression {
            headers.insert(
                "compression".into(),
                Value::String(c.content_type().to_owned()),
            );
        }
        let properties = self.properties.to_map();
        let wire = Wire {
            body: base64::engine::general_purpose::STANDARD.encode(body),
            content_encoding: &self.content_encoding,
            content_type: &self.content_type,
            headers: ordered(&headers, &HEADER_ORDER),
            properties: ordered(&properties, &PROPERTY_ORDER),
        };
        pyjson::to_python_json_bytes(&wire)
    }

    /// Gives the envelope a fresh uuid4 `delivery_tag` (each publish needs its own).
    pub fn renew_delivery_tag(&mut self) -> &str {
        self.properties
            .delivery_tag
            .insert(uuid::Uuid::new_v4().to_string())
    }

    /// The body deserialized per `content-type` (JSON leniently, msgpack; others refused).
    ///
    /// # Errors
    /// See [`serializer::deserialize`].
    pub fn body_value(&self) -> Result<Value> {
        serializer::deserialize(&self.content_type, &self.body)
    }
}
