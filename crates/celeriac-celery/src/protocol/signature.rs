//! Signatures: the JSON form of `celery.Signature` (§5.1).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{show, ProtocolError, Result};

/// `subtask_type` of a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubtaskType {
    /// `"chain"`: `kwargs.tasks` runs one after the other.
    Chain,
    /// `"group"`: `kwargs.tasks` runs in parallel.
    Group,
    /// `"chord"`: `kwargs.header` (a group) then `kwargs.body` with the list of results.
    Chord,
    /// Anything else (`xmap`, `xstarmap`, `chunks`, ...), kept as written.
    Other(String),
}

impl SubtaskType {
    fn parse(s: &str) -> SubtaskType {
        match s {
            "chain" => SubtaskType::Chain,
            "group" => SubtaskType::Group,
            "chord" => SubtaskType::Chord,
            other => SubtaskType::Other(other.to_owned()),
        }
    }

    /// The string written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            SubtaskType::Chain => "chain",
            SubtaskType::Group => "group",
            SubtaskType::Chord => "chord",
            SubtaskType::Other(s) => s,
        }
    }
}

/// A task call in Python's dict form: `{"task", "args", "kwargs", "options", "subtask_type",
/// "immutable"}` (plus `chord_size` from Celery 5.0, and any other key, kept).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Signature {
    /// The task name (`celery.chain`, `celery.group`, `celery.chord` for composites).
    pub task: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments (composites keep their members here).
    pub kwargs: Map<String, Value>,
    /// Options (`task_id`, `group_id`, `queue`, `link`, `chain`, ...; see [`super::canvas`]).
    pub options: Map<String, Value>,
    /// `None` for a plain task.
    pub subtask_type: Option<SubtaskType>,
    /// `true` (`.si()`): the parent's result is not prepended to `args`.
    pub immutable: bool,
    /// Celery 5.0's chord size, at the top level of a chord body.
    pub chord_size: Option<u64>,
    /// Other top-level keys, written back.
    pub extra: Map<String, Value>,
}

impl Signature {
    /// A plain task signature with no arguments.
    pub fn new(task: impl Into<String>) -> Signature {
        Signature {
            task: task.into(),
            ..Signature::default()
        }
    }

    /// Sets the positional arguments.
    pub fn with_args(mut self, args: Vec<Value>) -> Signature {
        self.args = args;
        self
    }

    /// Sets the keyword arguments.
    pub fn with_kwargs(mut self, kwargs: Map<String, Value>) -> Signature {
        self.kwargs = kwargs;
        self
    }

    /// Makes the signature immutable (`.si()`).
    pub fn immutable(mut self) -> Signature {
        self.immutable = true;
        self
    }

    /// Sets one option (`queue`, `priority`, `countdown`, `link`, ...).
    pub fn with_option(mut self, key: &str, value: impl Into<Value>) -> Signature {
        self.options.insert(key.to_owned(), value.into());
        self
    }

    /// The frozen task id (`options.task_id`), if any.
    pub fn task_id(&self) -> Option<&str> {
        self.options.get("task_id").and_then(Value::as_str)
    }

    /// `chain(a, b, ...)`: a `celery.chain` signature over `tasks`.
    pub fn chain(tasks: Vec<Signature>) -> Signature {
        Signature::composite("celery.chain", SubtaskType::Chain, "tasks", tasks)
    }

    /// `group(a, b, ...)`: a `celery.group` signature over `tasks`.
    pub fn group(tasks: Vec<Signature>) -> Signature {
        Signature::composite("celery.group", SubtaskType::Group, "tasks", tasks)
    }

    /// `chord(header, body)`: a `celery.chord` signature (`header` becomes a group).
    pub fn chord(header: Vec<Signature>, body: Signature) -> Signature {
        let mut kwargs = Map::new();
        kwargs.insert("header".into(), Signature::group(header).to_value());
        kwargs.insert("body".into(), body.to_value());
        kwargs.insert("kwargs".into(), Value::Object(Map::new()));
        Signature {
            task: "celery.chord".into(),
            kwargs,
            subtask_type: Some(SubtaskType::Chord),
            ..Signature::default()
        }
    }

    fn composite(task: &str, kind: SubtaskType, key: &str, tasks: Vec<Signature>) -> Signature {
        let mut kwargs = Map::new();
        kwargs.insert(
            key.into(),
            Value::Array(tasks.iter().map(Signature::to_value).collect()),
        );
        Signature {
            task: task.into(),
            kwargs,
            subtask_type: Some(kind),
            ..Signature::default()
        }
    }

    /// The members of a chain or group (`kwargs.tasks`).
    ///
    /// # Errors
    /// [`ProtocolError::Signature`] when `kwargs.tasks` is missing or holds a non-signature.
    pub fn tasks(&self) -> Result<Vec<Signature>> {
        match self.kwargs.get("tasks") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Signature::from_value(v, &format!("{}.kwargs.tasks[{i}]", self.task)))
                .collect(),
            // Python's group may keep a single signature.
            Some(v @ Value::Object(_)) => Ok(vec![Signature::from_value(v, "kwargs.tasks")?]),
            other => Err(ProtocolError::signature(
                format!("{}.kwargs.tasks", self.task),
                format!(
                    "must be a list of signatures, got {}",
                    other.map_or("nothing".into(), show)
                ),
            )),
        }
    }

    /// The header members and the body of a chord (`kwargs.header`, `kwargs.body`); the header
    /// may be a group signature or a plain list.
    ///
    /// # Errors
    /// [`ProtocolError::Signature`] when either is missing or malformed.
    pub fn chord_parts(&self) -> Result<(Vec<Signature>, Signature)> {
        let header = match self.kwargs.get("header") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Signature::from_value(v, &format!("chord.kwargs.header[{i}]")))
                .collect::<Result<Vec<_>>>()?,
            Some(v @ Value::Object(_)) => {
                let sig = Signature::from_value(v, "chord.kwargs.header")?;
                match sig.subtask_type {
                    Some(SubtaskType::Group) => sig.tasks()?,
                    _ => vec![sig],
                }
            }
            other => {
                return Err(ProtocolError::signature(
                    "chord.kwargs.header",
                    format!(
                        "must be a group signature or a list, got {}",
                        other.map_or("nothing".into(), show)
                    ),
                ))
            }
        };
        let body = match self.kwargs.get("body") {
            Some(v) if !v.is_null() => Signature::from_value(v, "chord.kwargs.body")?,
            _ => return Err(ProtocolError::signature("chord.kwargs.body", "is missing")),
        };
        Ok((header, body))
    }

    /// Reads a signature dict; `path` names it in errors. Tolerant: only `task` is required
    /// (`args`/`kwargs`/`options` may be missing or `null`).
    ///
    /// # Errors
    /// [`ProtocolError::Signature`] naming the field.
    pub fn from_value(value: &Value, path: &str) -> Result<Signature> {
        let Value::Object(map) = value else {
            return Err(ProtocolError::signature(
                path,
                format!("must be an object, got {}", show(value)),
            ));
        };
        let task = match map.get("task") {
            Some(Value::String(s)) => s.clone(),
            other => {
                return Err(ProtocolError::signature(
                    path,
                    format!(
                        "`task` must be a string, got {}",
                        other.map_or("nothing".into(), show)
                    ),
                ))
            }
        };
        let object = |key: &str| match map.get(key) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(o)) => Ok(o.clone()),
            Some(other) => Err(ProtocolError::signature(
                path,
                format!("`{key}` must be an object, got {}", show(other)),
            )),
        };
        let args = match map.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(other) => {
                return Err(ProtocolError::signature(
                    path,
                    format!("`args` must be a list, got {}", show(other)),
                ))
            }
        };
        let subtask_type = match map.get("subtask_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(SubtaskType::parse(s)),
            Some(other) => {
                return Err(ProtocolError::signature(
                    path,
                    format!(
                        "`subtask_type` must be a string or null, got {}",
                        show(other)
                    ),
                ))
            }
        };
        Ok(Signature {
            task,
            args,
            kwargs: object("kwargs")?,
            options: object("options")?,
            subtask_type,
            immutable: map
                .get("immutable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            chord_size: map.get("chord_size").and_then(Value::as_u64),
            extra: map
                .iter()
                .filter(|(k, _)| !ORDER.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The signature as Python's dict (JSON object).
    pub fn to_value(&self) -> Value {
        let mut m = self.extra.clone();
        m.insert("task".into(), Value::String(self.task.clone()));
        m.insert("args".into(), Value::Array(self.args.clone()));
        m.insert("kwargs".into(), Value::Object(self.kwargs.clone()));
        m.insert("options".into(), Value::Object(self.options.clone()));
        m.insert(
            "subtask_type".into(),
            self.subtask_type
                .as_ref()
                .map_or(Value::Null, |t| Value::String(t.as_str().to_owned())),
        );
        m.insert("immutable".into(), Value::Bool(self.immutable));
        if let Some(n) = self.chord_size {
            m.insert("chord_size".into(), Value::from(n));
        }
        Value::Object(m)
    }

    /// One signature or a list of them (`link`, `link_error`, `embed.callbacks`): always a
    /// list; `null` is empty.
    ///
    /// # Errors
    /// [`ProtocolError::Signature`] for a member that is not a signature.
    pub fn list_from_value(value: Option<&Value>, path: &str) -> Result<Vec<Signature>> {
        match value {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Signature::from_value(v, &format!("{path}[{i}]")))
                .collect(),
            Some(v) => Ok(vec![Signature::from_value(v, path)?]),
        }
    }
}

/// The fields of Python's signature dict, in the order Python writes them; any other key is
/// kept in `extra`.
const ORDER: [&str; 7] = [
    "task",
    "args",
    "kwargs",
    "options",
    "subtask_type",
    "immutable",
    "chord_size",
];

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let value = self.to_value();
        match &value {
            Value::Object(m) => crate::pyjson::ordered(m, &ORDER).serialize(s),
            other => other.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Signature::from_value(&value, "signature").map_err(serde::de::Error::custom)
    }
}
