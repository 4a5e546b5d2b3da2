//! The result record (`celery-task-meta-<id>`): what `_get_result_meta` writes, and reading
//! back what any Celery 5.x wrote.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{Error, Result};
use super::exception::ExceptionInfo;
use super::state::State;
use crate::pyjson::{kombu_wrapper, parse_str, to_python_json};

/// The fields `result_extended = True` adds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtendedMeta {
    /// `name`: the task name.
    pub name: Option<String>,
    /// `args`: the positional arguments.
    pub args: Option<Value>,
    /// `kwargs`: the keyword arguments.
    pub kwargs: Option<Value>,
    /// `worker`: the worker's node name (`celery@host`).
    pub worker: Option<String>,
    /// `retries`: how often it was retried.
    pub retries: Option<u64>,
    /// `queue`: the routing key it came with.
    pub queue: Option<String>,
}

/// One result record.
///
/// Written with the key order Python uses (`status, result, traceback, children, date_done,
/// [group_id], [parent_id], [extended fields], task_id`); read tolerantly.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMeta {
    /// `task_id`.
    pub task_id: String,
    /// `status`.
    pub status: State,
    /// `result`: the return value (SUCCESS), an exception dict (FAILURE, RETRY, REVOKED; see
    /// [`ResultMeta::exception`]) or any state's meta (`{"pid": .., "hostname": ..}` for
    /// STARTED). kombu `__type__` wrappers are kept as stored.
    pub result: Value,
    /// `traceback`: free text, shown by Python as `AsyncResult.traceback`.
    pub traceback: Option<String>,
    /// `children`: result tuples of tasks sent while running (`[[["<id>", null], null]]`).
    pub children: Vec<Value>,
    /// `date_done`: set for ready states. Written as UTC with `+00:00`; read from naive
    /// (UTC, Celery ≤ 5.3), aware (any offset, 5.4+) or `Z` strings and kombu datetime tags.
    pub date_done: Option<DateTime<Utc>>,
    /// `group_id`: when the task ran in a group (or chord header).
    pub group_id: Option<String>,
    /// `parent_id`: when the task had a parent (a chain predecessor, a chord member).
    pub parent_id: Option<String>,
    /// The `result_extended` fields; written only by a backend with `result_extended` on.
    pub extended: Option<ExtendedMeta>,
    /// Any other field (stamps, `stamped_headers`, ...), kept as read and written back after
    /// the extended fields.
    pub other: Map<String, Value>,
}

impl ResultMeta {
    /// A record of `status` with `result`, no traceback, no children, and `date_done` = now
    /// for ready states.
    pub fn new(task_id: impl Into<String>, status: State, result: Value) -> Self {
        let date_done = status.is_ready().then(Utc::now);
        ResultMeta {
            task_id: task_id.into(),
            status,
            result,
            traceback: None,
            children: Vec::new(),
            date_done,
            group_id: None,
            parent_id: None,
            extended: None,
            other: Map::new(),
        }
    }

    /// SUCCESS with the return value.
    pub fn success(task_id: impl Into<String>, value: Value) -> Self {
        Self::new(task_id, State::Success, value)
    }

    /// FAILURE with this exception and traceback text (Python shows it as
    /// `AsyncResult.traceback`; give one, even a one-line summary).
    pub fn failure(
        task_id: impl Into<String>,
        exception: &ExceptionInfo,
        traceback: impl Into<String>,
    ) -> Self {
        let mut meta = Self::new(task_id, State::Failure, exception.to_json());
        meta.traceback = Some(traceback.into());
        meta
    }

    /// RETRY with the exception given to retry (if any) and the traceback text.
    pub fn retry(
        task_id: impl Into<String>,
        exception: Option<&ExceptionInfo>,
        traceback: impl Into<String>,
    ) -> Self {
        let result = exception.map_or(Value::Null, ExceptionInfo::to_json);
        let mut meta = Self::new(task_id, State::Retry, result);
        meta.traceback = Some(traceback.into());
        meta
    }

    /// REVOKED with `TaskRevokedError(reason)` (`"expired"`, `"revoked"`).
    pub fn revoked(task_id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(
            task_id,
            State::Revoked,
            ExceptionInfo::task_revoked(reason).to_json(),
        )
    }

    /// STARTED with `{"pid": pid, "hostname": hostname}` (as `task_track_started` stores it).
    pub fn started(task_id: impl Into<String>, pid: u32, hostname: impl Into<String>) -> Self {
        let info = serde_json::json!({"pid": pid, "hostname": hostname.into()});
        Self::new(task_id, State::Started, info)
    }

    /// Sets the group id.
    #[must_use]
    pub fn with_group(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }

    /// Sets the parent id.
    #[must_use]
    pub fn with_parent(mut self, parent_id: impl Into<String>) -> Self {
        self.parent_id = Some(parent_id.into());
        self
    }

    /// Sets the `result_extended` fields.
    #[must_use]
    pub fn with_extended(mut self, extended: ExtendedMeta) -> Self {
        self.extended = Some(extended);
        self
    }

    /// The exception of a FAILURE/RETRY/REVOKED record (`None` for other states or a result
    /// that is not an exception dict).
    pub fn exception(&self) -> Option<ExceptionInfo> {
        if self.status.is_exception() {
            ExceptionInfo::from_json(&self.result)
        } else {
            None
        }
    }

    /// The JSON Python would write for this record (`json.dumps` formatting).
    ///
    /// `extended`: whether to write the `result_extended` fields.
    ///
    /// # Errors
    /// [`Error::Encode`] when a value cannot be serialized.
    pub fn to_json(&self, extended: bool) -> Result<String> {
        let ext = if extended {
            self.extended.as_ref()
        } else {
            None
        };
        let wire = Wire {
            status: self.status.as_str(),
            result: &self.result,
            traceback: self.traceback.as_deref(),
            children: &self.children,
            date_done: self.date_done.map(format_date),
            group_id: self.group_id.as_deref(),
            parent_id: self.parent_id.as_deref(),
            extended: ext.map(|e| WireExtended {
                name: e.name.as_deref(),
                args: e.args.as_ref(),
                kwargs: e.kwargs.as_ref(),
                worker: e.worker.as_deref(),
                retries: e.retries,
                queue: e.queue.as_deref(),
            }),
            other: &self.other,
            task_id: &self.task_id,
        };
        to_python_json(&wire).map_err(|source| Error::Encode {
            what: format!("result record of task {}", self.task_id),
            source,
        })
    }

    /// Reads a record as stored under `key` (used in error messages). `task_id` fills in a
    /// missing `task_id` field.
    ///
    /// # Errors
    /// [`Error::Decode`] when the bytes are not a JSON object with a string `status`
    /// (compressed or pickled records, foreign data).
    pub fn from_bytes(bytes: &[u8], key: &str, task_id: &str) -> Result<Self> {
        let decode = |reason: String| Error::Decode {
            key: key.to_owned(),
            reason,
        };
        let inflated;
        let bytes = match bytes.strip_prefix(COMPRESSED_MAGIC) {
            Some(rest) => {
                inflated = decompress(rest).map_err(decode)?;
                inflated.as_slice()
            }
            None => bytes,
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| decode(format!("not UTF-8 text ({e}): not a JSON result record")))?;
        let value = parse_str(text).map_err(|e| decode(format!("not JSON: {e}")))?;
        Self::from_value(value, task_id).map_err(decode)
    }

    fn from_value(value: Value, task_id: &str) -> std::result::Result<Self, String> {
        let Value::Object(mut map) = value else {
            return Err("not a JSON object".into());
        };
        let status = match map.remove("status") {
            Some(Value::String(s)) => State::parse(&s),
            other => return Err(format!("field status: expected a string, got {other:?}")),
        };
        let result = map.remove("result").unwrap_or(Value::Null);
        let traceback = match map.remove("traceback") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        };
        let children = match map.remove("children") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let date_done = map.remove("date_done").as_ref().and_then(parse_date);
        let task_id = match map.remove("task_id") {
            Some(Value::String(s)) => s,
            _ => task_id.to_owned(),
        };
        let group_id = take_string(&mut map, "group_id");
        let parent_id = take_string(&mut map, "parent_id");
        let extended = if ["name", "args", "kwargs", "worker", "retries", "queue"]
            .iter()
            .any(|k| map.contains_key(*k))
        {
            Some(ExtendedMeta {
                name: take_string(&mut map, "name"),
                args: map.remove("args").filter(|v| !v.is_null()),
                kwargs: map.remove("kwargs").filter(|v| !v.is_null()),
                worker: take_string(&mut map, "worker"),
                retries: map.remove("retries").and_then(|v| v.as_u64()),
                queue: take_string(&mut map, "queue"),
            })
        } else {
            None
        };
        Ok(ResultMeta {
            task_id,
            status,
            result,
            traceback,
            children,
            date_done,
            group_id,
            parent_id,
            extended,
            other: map,
        })
    }
}

/// What Celery 5.7's `result_compression` puts before `<content type>\0<compressed JSON>`.
const COMPRESSED_MAGIC: &[u8] = b"\x00celery-compressed\x00";

/// Undoes `compress_payload`: `<content type>\0<body>`. Only kombu's zlib compressor
/// (`application/x-gzip`, which is a zlib stream, and `application/zlib`) is supported.
fn decompress(payload: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read as _;
    let split = payload
        .iter()
        .position(|&b| b == 0)
        .ok_or("a compressed record without its content type")?;
    let (content_type, body) = (&payload[..split], &payload[split + 1..]);
    let content_type = String::from_utf8_lossy(content_type);
    match content_type.as_ref() {
        "application/x-gzip" | "application/zlib" | "zlib" | "gzip" => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| format!("compressed record ({content_type}) does not inflate: {e}"))?;
            Ok(out)
        }
        other => Err(format!(
            "compressed record with {other:?}: only application/x-gzip (zlib) is supported"
        )),
    }
}

fn take_string(map: &mut Map<String, Value>, key: &str) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// `2026-11-30T07:47:23.060597+00:00`, as Python's `isoformat()` of an aware UTC datetime.
pub fn format_date(date: DateTime<Utc>) -> String {
    date.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// Reads a date as Celery 5.x writes it: ISO 8601 with `T` or a space, with or without
/// fraction, naive (taken as UTC), with an offset or `Z`; also a kombu `datetime` tag.
pub fn parse_date(value: &Value) -> Option<DateTime<Utc>> {
    let text = match value {
        Value::String(s) => s.as_str(),
        other => match kombu_wrapper(other) {
            Some(("datetime", Value::String(s))) => s.as_str(),
            _ => return None,
        },
    };
    let text = text.trim();
    if let Ok(aware) = DateTime::parse_from_rfc3339(text) {
        return Some(aware.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(aware) = DateTime::parse_from_str(text, format) {
            return Some(aware.with_timezone(&Utc));
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    None
}

#[derive(Serialize)]
struct Wire<'a> {
    status: &'a str,
    result: &'a Value,
    traceback: Option<&'a str>,
    children: &'a [Value],
    date_done: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extended: Option<WireExtended<'a>>,
    #[serde(flatten)]
    other: &'a Map<String, Value>,
    task_id: &'a str,
}

#[derive(Serialize)]
struct WireExtended<'a> {
    name: Option<&'a str>,
    args: Option<&'a Value>,
    kwargs: Option<&'a Value>,
    worker: Option<&'a str>,
    retries: Option<u64>,
    queue: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn writes_python_key_order_and_format() {
        let mut meta = ResultMeta::success("t1", json!(5))
            .with_group("g")
            .with_parent("p");
        meta.date_done = Some(
            Utc.with_ymd_and_hms(2026, 11, 30, 7, 47, 23)
                .single()
                .expect("a date"),
        );
        assert_eq!(
            meta.to_json(false).expect("encodes"),
            r#"{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-30T07:47:23.000000+00:00", "group_id": "g", "parent_id": "p", "task_id": "t1"}"#
        );
        let ext = meta.clone().with_extended(ExtendedMeta {
            name: Some("tasks.add".into()),
            args: Some(json!([2, 3])),
            kwargs: Some(json!({})),
            worker: Some("w@h".into()),
            retries: Some(0),
            queue: Some("celery".into()),
        });
        let text = ext.to_json(true).expect("encodes");
        assert!(text.contains(r#""parent_id": "p", "name": "tasks.add", "args": [2, 3], "kwargs": {}, "worker": "w@h", "retries": 0, "queue": "celery", "task_id": "t1"}"#), "{text}");
        assert_eq!(
            ResultMeta::from_bytes(text.as_bytes(), "k", "x").expect("decodes"),
            ext
        );
        assert!(!ext.to_json(false).expect("encodes").contains("worker"));
    }

    #[test]
    fn reads_what_every_celery_wrote() {
        let naive = br#"{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}, "traceback": "Traceback...", "children": null, "date_done": "2024-01-02T03:04:05.123456", "task_id": "a", "stamps": {"x": 1}}"#;
        let meta = ResultMeta::from_bytes(naive, "k", "a").expect("decodes");
        assert_eq!(meta.status, State::Failure);
        assert_eq!(meta.exception().expect("an exception").message(), "boom");
        assert_eq!(
            meta.date_done.map(format_date).as_deref(),
            Some("2024-01-02T03:04:05.123456+00:00")
        );
        assert_eq!(meta.other.get("stamps"), Some(&json!({"x": 1})));
        assert!(meta.children.is_empty());
        for (text, expect) in [
            (
                "2024-01-02T05:04:05+02:00",
                "2024-01-02T03:04:05.000000+00:00",
            ),
            ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000000+00:00"),
            ("2024-01-02 03:04:05.5", "2024-01-02T03:04:05.500000+00:00"),
        ] {
            assert_eq!(
                parse_date(&json!(text)).map(format_date).as_deref(),
                Some(expect),
                "{text}"
            );
        }
        let tagged = json!({"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"});
        assert!(parse_date(&tagged).is_some());
        let odd = br#"{"status": "SUCCESS", "result": [NaN, 123456789012345678901234567890], "date_done": "garbage"}"#;
        let meta = ResultMeta::from_bytes(odd, "k", "fallback").expect("decodes");
        assert_eq!(meta.task_id, "fallback");
        assert_eq!(
            meta.result,
            json!(["NaN", "123456789012345678901234567890"])
        );
        assert_eq!(meta.date_done, None);
        assert!(ResultMeta::from_bytes(b"[1]", "k", "a").is_err());
        assert!(ResultMeta::from_bytes(b"\x80\x04pickle", "k", "a").is_err());
    }
}
