//! The task message headers of protocol v2 (§4.1), typed.

use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};

use super::error::{ProtocolError, Result};
use super::time::{format_iso8601, parse_iso8601};

/// The headers Python's `as_task_v2` writes, in its order (used when encoding).
pub(crate) const HEADER_ORDER: [&str; 19] = [
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
];

/// `timelimit = [hard, soft]` in seconds (hard first, whatever Celery's protocol doc says).
/// Python sends integers, floats or `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeLimit {
    /// The hard limit (`time_limit`): the task is killed.
    pub hard: Option<f64>,
    /// The soft limit (`soft_time_limit`): the task is told.
    pub soft: Option<f64>,
}

impl TimeLimit {
    /// The hard limit as a duration (`None` when unset, negative or not finite).
    pub fn hard_duration(&self) -> Option<std::time::Duration> {
        self.hard
            .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
    }

    /// The soft limit as a duration (`None` when unset, negative or not finite).
    pub fn soft_duration(&self) -> Option<std::time::Duration> {
        self.soft
            .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
    }
}

/// Every header of a v2 task message, typed; headers this crate does not know are kept in
/// `extra` and written back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskHeaders {
    /// `lang`: `"py"` from Python, `"rust"` from this crate.
    pub lang: Option<String>,
    /// `task`: the registered task name.
    pub task: String,
    /// `id`: the task id (a uuid4 string), equal to `properties.correlation_id`.
    pub id: String,
    /// `shadow`: display name for logs and events.
    pub shadow: Option<String>,
    /// `eta`: earliest execution time.
    pub eta: Option<DateTime<Utc>>,
    /// `expires`: discard (REVOKED "expired") after this time.
    pub expires: Option<DateTime<Utc>>,
    /// `group`: the id of the group (or chord header) this task belongs to.
    pub group: Option<String>,
    /// `group_index`: position inside the group (chord results are ordered by it).
    pub group_index: Option<u32>,
    /// `retries`: how many times the task has been retried (0 on the first run).
    pub retries: u32,
    /// `timelimit`: `[hard, soft]`.
    pub timelimit: TimeLimit,
    /// `root_id`: the first task of the workflow.
    pub root_id: Option<String>,
    /// `parent_id`: the task that sent this one.
    pub parent_id: Option<String>,
    /// `argsrepr`: display form of the positional arguments.
    pub argsrepr: Option<String>,
    /// `kwargsrepr`: display form of the keyword arguments.
    pub kwargsrepr: Option<String>,
    /// `origin`: the sender's node name.
    pub origin: Option<String>,
    /// `ignore_result`: store no result. `None` (header absent) means the task's default;
    /// then the header is not written.
    pub ignore_result: Option<bool>,
    /// `replaced_task_nesting`: depth of `Task.replace()` (0 normally).
    pub replaced_task_nesting: u32,
    /// `stamped_headers`: names of stamp headers (canvas stamping).
    pub stamped_headers: Option<Vec<String>>,
    /// `stamps`: stamp values (`{}` normally).
    pub stamps: Map<String, Value>,
    /// Every other header (`meth`, `redelivered`, user headers from `apply_async(headers=..)`).
    pub extra: Map<String, Value>,
}

fn opt_string(map: &Map<String, Value>, field: &str) -> Result<Option<String>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ProtocolError::header(field, "a string or null", other)),
    }
}

/// An unsigned integer; a float with no fraction (`1.0`) is accepted.
pub(crate) fn as_u32(value: &Value) -> Option<u32> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .map(u32::try_from)
            .and_then(|r| r.ok())
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
                    .map(|f| f as u32)
            }),
        _ => None,
    }
}

fn opt_u32(map: &Map<String, Value>, field: &str, expected: &'static str) -> Result<Option<u32>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_u32(v)
            .map(Some)
            .ok_or_else(|| ProtocolError::header(field, expected, v)),
    }
}

fn opt_date(map: &Map<String, Value>, field: &str) -> Result<Option<DateTime<Utc>>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_iso8601(s).map(Some).ok_or_else(|| {
            ProtocolError::header(
                field,
                "an ISO 8601 date-time or null",
                &Value::String(s.clone()),
            )
        }),
        Some(other) => Err(ProtocolError::header(
            field,
            "an ISO 8601 date-time or null",
            other,
        )),
    }
}

fn limit(v: &Value) -> Option<Option<f64>> {
    match v {
        Value::Null => Some(None),
        Value::Number(n) => n.as_f64().map(Some),
        _ => None,
    }
}

fn timelimit(map: &Map<String, Value>) -> Result<TimeLimit> {
    let expected = "a list [hard, soft] of numbers or nulls";
    match map.get("timelimit") {
        None | Some(Value::Null) => Ok(TimeLimit::default()),
        Some(v @ Value::Array(items)) => {
            let get = |i: usize| items.get(i).map_or(Some(None), limit);
            match (items.len() <= 2, get(0), get(1)) {
                (true, Some(hard), Some(soft)) => Ok(TimeLimit { hard, soft }),
                _ => Err(ProtocolError::header("timelimit", expected, v)),
            }
        }
        Some(other) => Err(ProtocolError::header("timelimit", expected, other)),
    }
}

/// A number as Python would write it: integral values as integers.
fn seconds(value: Option<f64>) -> Value {
    match value {
        None => Value::Null,
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
        Some(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
    }
}

fn opt(value: Option<&String>) -> Value {
    value.map_or(Value::Null, |s| Value::String(s.clone()))
}

impl TaskHeaders {
    /// Reads the headers of a v2 message. Tolerant: every header but `task` and `id` may be
    /// missing or `null` (`retries` then is 0, `stamps` `{}`).
    ///
    /// # Errors
    /// [`ProtocolError::Missing`] without `task`/`id`, [`ProtocolError::Field`] naming the
    /// header whose value has the wrong type.
    pub fn from_map(map: &Map<String, Value>) -> Result<TaskHeaders> {
        let required = |field: &str| match map.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Err(ProtocolError::Missing {
                place: "task message header",
                field: field.to_owned(),
            }),
            Some(other) => Err(ProtocolError::header(field, "a string", other)),
        };
        let stamped_headers = match map.get("stamped_headers") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        ProtocolError::header("stamped_headers", "a list of strings or null", v)
                    })?,
            ),
            Some(other) => {
                return Err(ProtocolError::header(
                    "stamped_headers",
                    "a list of strings or null",
                    other,
                ))
            }
        };
        let stamps = match map.get("stamps") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(other) => return Err(ProtocolError::header("stamps", "an object or null", other)),
        };
        let ignore_result = match map.get("ignore_result") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(ProtocolError::header(
                    "ignore_result",
                    "a boolean or null",
                    other,
                ))
            }
        };
        let extra = map
            .iter()
            .filter(|(k, _)| !HEADER_ORDER.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(TaskHeaders {
            lang: opt_string(map, "lang")?,
            task: required("task")?,
            id: required("id")?,
            shadow: opt_string(map, "shadow")?,
            eta: opt_date(map, "eta")?,
            expires: opt_date(map, "expires")?,
            group: opt_string(map, "group")?,
            group_index: opt_u32(map, "group_index", "a non-negative integer or null")?,
            retries: opt_u32(map, "retries", "an integer")?.unwrap_or(0),
            timelimit: timelimit(map)?,
            root_id: opt_string(map, "root_id")?,
            parent_id: opt_string(map, "parent_id")?,
            argsrepr: opt_string(map, "argsrepr")?,
            kwargsrepr: opt_string(map, "kwargsrepr")?,
            origin: opt_string(map, "origin")?,
            ignore_result,
            replaced_task_nesting: opt_u32(map, "replaced_task_nesting", "an integer")?
                .unwrap_or(0),
            stamped_headers,
            stamps,
            extra,
        })
    }

    /// The headers as a JSON object: every header Python writes (`null` when unset), except
    /// `lang`, `root_id`, `argsrepr`, `kwargsrepr`, `origin` and `ignore_result`, which are
    /// left out when `None`; then `extra`.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let put_some = |m: &mut Map<String, Value>, k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put_some(&mut m, "lang", self.lang.clone().map(Value::String));
        m.insert("task".into(), Value::String(self.task.clone()));
        m.insert("id".into(), Value::String(self.id.clone()));
        m.insert("shadow".into(), opt(self.shadow.as_ref()));
        let date = |d: &Option<DateTime<Utc>>| {
            d.as_ref()
                .map_or(Value::Null, |d| Value::String(format_iso8601(d)))
        };
        m.insert("eta".into(), date(&self.eta));
        m.insert("expires".into(), date(&self.expires));
        m.insert("group".into(), opt(self.group.as_ref()));
        m.insert(
            "group_index".into(),
            self.group_index.map_or(Value::Null, Value::from),
        );
        m.insert("retries".into(), Value::from(self.retries));
        m.insert(
            "timelimit".into(),
            Value::Array(vec![
                seconds(self.timelimit.hard),
                seconds(self.timelimit.soft),
            ]),
        );
        put_some(&mut m, "root_id", self.root_id.clone().map(Value::String));
        m.insert("parent_id".into(), opt(self.parent_id.as_ref()));
        put_some(&mut m, "argsrepr", self.argsrepr.clone().map(Value::String));
        put_some(
            &mut m,
            "kwargsrepr",
            self.kwargsrepr.clone().map(Value::String),
        );
        put_some(&mut m, "origin", self.origin.clone().map(Value::String));
        put_some(&mut m, "ignore_result", self.ignore_result.map(Value::Bool));
        m.insert(
            "replaced_task_nesting".into(),
            Value::from(self.replaced_task_nesting),
        );
        m.insert(
            "stamped_headers".into(),
            self.stamped_headers.as_ref().map_or(Value::Null, |v| {
                Value::Array(v.iter().cloned().map(Value::String).collect())
            }),
        );
        m.insert("stamps".into(), Value::Object(self.stamps.clone()));
        for (k, v) in &self.extra {
            if !m.contains_key(k) {
                m.insert(k.clone(), v.clone());
            }
        }
        m
    }
}
