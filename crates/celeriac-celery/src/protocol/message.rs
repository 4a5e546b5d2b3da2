//! The task message of protocol v2 (§4): typed headers and the `[args, kwargs, embed]` body.

use serde::Serialize;
use serde_json::{Map, Value};

use super::envelope::Envelope;
use super::error::{show, ProtocolError, Result};
use super::headers::TaskHeaders;
use super::signature::Signature;
use crate::pyjson;

/// `embed`, the third element of the body: what runs after the task.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embed {
    /// `callbacks` (`link`): applied with the result on success.
    pub callbacks: Option<Vec<Signature>>,
    /// `errbacks` (`link_error`): sent with `[task_id]` on failure.
    pub errbacks: Option<Vec<Signature>>,
    /// `chain`: the rest of a chain, **reversed** (the last element runs next).
    pub chain: Option<Vec<Signature>>,
    /// `chord`: the chord body, when this task is a chord header member.
    pub chord: Option<Signature>,
}

impl Embed {
    /// Reads `embed` (`null` and `{}` are empty; a single signature where a list belongs is
    /// taken as a list of one).
    ///
    /// # Errors
    /// [`ProtocolError::Signature`] naming the element (`embed.chain[1]`) or
    /// [`ProtocolError::BodyShape`] when `embed` is not an object.
    pub fn from_value(value: &Value) -> Result<Embed> {
        let map = match value {
            Value::Null => return Ok(Embed::default()),
            Value::Object(m) => m,
            other => {
                return Err(ProtocolError::BodyShape(format!(
                    "`embed` must be an object or null, got {}",
                    show(other)
                )))
            }
        };
        let list = |key: &str| -> Result<Option<Vec<Signature>>> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                v => Signature::list_from_value(v, &format!("embed.{key}")).map(Some),
            }
        };
        Ok(Embed {
            callbacks: list("callbacks")?,
            errbacks: list("errbacks")?,
            chain: list("chain")?,
            chord: match map.get("chord") {
                None | Some(Value::Null) => None,
                Some(v) => Some(Signature::from_value(v, "embed.chord")?),
            },
        })
    }

    /// The next step of the chain and the rest (still reversed) to send with it: the last
    /// element of `chain`. `None` when there is no chain or it is exhausted.
    pub fn next_chain_step(&self) -> Option<(Signature, Vec<Signature>)> {
        let chain = self.chain.as_ref()?;
        let (next, rest) = chain.split_last()?;
        Some((next.clone(), rest.to_vec()))
    }
}

impl Serialize for Embed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Embed", 4)?;
        st.serialize_field("callbacks", &self.callbacks)?;
        st.serialize_field("errbacks", &self.errbacks)?;
        st.serialize_field("chain", &self.chain)?;
        st.serialize_field("chord", &self.chord)?;
        st.end()
    }
}

/// A task message: typed headers and the body `[args, kwargs, embed]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// The headers.
    pub headers: TaskHeaders,
    /// Positional arguments (may hold kombu `__type__` wrappers; see
    /// [`pyjson::unwrap_kombu_types`]).
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Callbacks, errbacks, chain and chord.
    pub embed: Embed,
}

impl TaskMessage {
    /// Decodes the task message in an envelope: protocol v2 (`headers.task` present) or a
    /// protocol v1 body dict (`{"task", "id", "args", "kwargs", ...}`), mapped onto the same
    /// typed form. The body may be JSON or msgpack; a 2-element body `[args, kwargs]` (old or
    /// hand-made clients) is read with an empty `embed`.
    ///
    /// # Errors
    /// Any [`ProtocolError`]: refused serializer, bad body, bad header, bad signature.
    pub fn decode(envelope: &Envelope) -> Result<TaskMessage> {
        let body = envelope.body_value()?;
        if envelope.headers.contains_key("task") {
            let headers = TaskHeaders::from_map(&envelope.headers)?;
            let (args, kwargs, embed) = split_body(body)?;
            return Ok(TaskMessage {
                headers,
                args,
                kwargs,
                embed,
            });
        }
        match body {
            Value::Object(map) if map.contains_key("task") => decode_v1(map),
            _ => Err(ProtocolError::Missing {
                place: "task message header",
                field: "task".into(),
            }),
        }
    }

    /// The body `[args, kwargs, embed]` as JSON text, written as Python writes it. Always
    /// three elements.
    pub fn encode_body(&self) -> Vec<u8> {
        pyjson::to_python_json_bytes(&(&self.args, &self.kwargs, &self.embed))
    }
}

fn split_body(body: Value) -> Result<(Vec<Value>, Map<String, Value>, Embed)> {
    let Value::Array(items) = body else {
        return Err(ProtocolError::BodyShape(format!(
            "must be a list [args, kwargs, embed], got {}",
            show(&body)
        )));
    };
    if !(2..=3).contains(&items.len()) {
        return Err(ProtocolError::BodyShape(format!(
            "must be a list [args, kwargs, embed] of 3 elements, got {} elements",
            items.len()
        )));
    }
    let mut it = items.into_iter();
    let args = match it.next() {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => {
            return Err(ProtocolError::BodyShape(format!(
                "`args` must be a list, got {}",
                show(&other)
            )))
        }
    };
    let kwargs = match it.next() {
        Some(Value::Object(m)) => m,
        Some(Value::Null) | None => Map::new(),
        Some(other) => {
            return Err(ProtocolError::BodyShape(format!(
                "`kwargs` must be an object (a mapping), got {}",
                show(&other)
            )))
        }
    };
    let embed = match it.next() {
        Some(v) => Embed::from_value(&v)?,
        None => Embed::default(),
    };
    Ok((args, kwargs, embed))
}

/// Protocol v1: everything is in the body dict.
fn decode_v1(body: Map<String, Value>) -> Result<TaskMessage> {
    let mut h = Map::new();
    for key in ["task", "id", "retries", "eta", "expires", "timelimit"] {
        if let Some(v) = body.get(key) {
            h.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(v) = body.get("taskset") {
        h.insert("group".into(), v.clone());
    }
    let headers = TaskHeaders::from_map(&h)?;
    let args = match body.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(other) => {
            return Err(ProtocolError::BodyShape(format!(
                "(protocol v1) `args` must be a list, got {}",
                show(other)
            )))
        }
    };
    let kwargs = match body.get("kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(ProtocolError::BodyShape(format!(
                "(protocol v1) `kwargs` must be an object, got {}",
                show(other)
            )))
        }
    };
    let mut embed_map = Map::new();
    for key in ["callbacks", "errbacks", "chord"] {
        if let Some(v) = body.get(key) {
            embed_map.insert(key.to_owned(), v.clone());
        }
    }
    let embed = Embed::from_value(&Value::Object(embed_map))?;
    Ok(TaskMessage {
        headers,
        args,
        kwargs,
        embed,
    })
}
