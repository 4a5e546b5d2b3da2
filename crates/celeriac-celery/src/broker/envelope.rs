//! The few envelope fields the transport needs, read and changed in place on the raw bytes.
//!
//! The transport never re-serializes a message: Python may put tokens in an envelope that a
//! strict JSON parser refuses (`NaN`, `Infinity`) or cannot keep exactly (integers wider than
//! 64 bits), and a restored message must be the message that was taken. So this module scans
//! the JSON text just far enough to find members by name (strings, nesting and bare tokens are
//! skipped without being interpreted), parses only the small values it reads with
//! `serde_json`, and splices `"redelivered": true` into the text where kombu would set it.

use serde_json::Value;

/// A byte range of the text: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// `b[i]` is `"`: the index after the closing quote.
fn scan_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end of the value starting at `i` (after leading whitespace was skipped).
fn scan_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => scan_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = scan_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The whole text as one value, surrounded by whitespace only.
pub(crate) fn root(b: &[u8]) -> Option<Span> {
    let start = skip_ws(b, 0);
    let end = scan_value(b, start)?;
    (skip_ws(b, end) == b.len()).then_some(Span { start, end })
}

/// The members of the object at `obj`: (key span with quotes, value span).
fn members(b: &[u8], obj: Span) -> Option<Vec<(Span, Span)>> {
    if b.get(obj.start) != Some(&b'{') {
        return None;
    }
    let mut out = Vec::new();
    let mut i = skip_ws(b, obj.start + 1);
    if b.get(i) == Some(&b'}') {
        return Some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = scan_string(b, i)?;
        let key = Span {
            start: i,
            end: key_end,
        };
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let vstart = skip_ws(b, i + 1);
        let vend = scan_value(b, vstart)?;
        out.push((
            key,
            Span {
                start: vstart,
                end: vend,
            },
        ));
        i = skip_ws(b, vend);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return Some(out),
            _ => return None,
        }
    }
}

/// The elements of the array at `arr`.
fn elements(b: &[u8], arr: Span) -> Option<Vec<Span>> {
    if b.get(arr.start) != Some(&b'[') {
        return None;
    }
    let mut out = Vec::new();
    let mut i = skip_ws(b, arr.start + 1);
    if b.get(i) == Some(&b']') {
        return Some(out);
    }
    loop {
        let end = scan_value(b, i)?;
        out.push(Span { start: i, end });
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b']' => return Some(out),
            _ => return None,
        }
    }
}

/// The value of member `name` of the object at `obj` (the last one, as Python keeps it).
fn member(b: &[u8], obj: Span, name: &str) -> Option<Span> {
    members(b, obj)?
        .into_iter()
        .rev()
        .find(|(k, _)| key_is(b, *k, name))
        .map(|(_, v)| v)
}

fn key_is(b: &[u8], key: Span, name: &str) -> bool {
    let text = &b[key.start..key.end];
    // Plain keys compare as bytes; escaped ones are decoded first.
    if !text.contains(&b'\\') {
        return &text[1..text.len() - 1] == name.as_bytes();
    }
    serde_json::from_slice::<String>(text).is_ok_and(|k| k == name)
}

/// Parses a small value (a priority, a tag, `delivery_info`) strictly; `None` if it is not
/// standard JSON.
fn value(b: &[u8], span: Span) -> Option<Value> {
    serde_json::from_slice(&b[span.start..span.end]).ok()
}

/// `path` of object members from the root object.
fn path(b: &[u8], names: &[&str]) -> Option<Span> {
    let mut at = root(b)?;
    for name in names {
        at = member(b, at, name)?;
    }
    Some(at)
}

/// What the transport reads of an envelope.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EnvelopeFields {
    /// `properties.delivery_tag` as text (a number is written as Python's `str` would).
    pub(crate) delivery_tag: Option<String>,
    /// `properties.priority` as kombu reads it (`int(...)` clamped to 0..=9; else 0).
    pub(crate) priority: u8,
    /// Whether `properties.delivery_info` is an object.
    pub(crate) has_delivery_info: bool,
    /// `headers.redelivered` or `properties.delivery_info.redelivered` is `true`.
    pub(crate) redelivered: bool,
}

/// Reads the fields; `None` when the text is not a JSON object.
pub(crate) fn fields(b: &[u8]) -> Option<EnvelopeFields> {
    let r = root(b)?;
    members(b, r)?;
    let tag = path(b, &["properties", "delivery_tag"])
        .and_then(|s| value(b, s))
        .and_then(|v| match v {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    let priority = path(b, &["properties", "priority"])
        .and_then(|s| value(b, s))
        .map_or(0, |v| kombu_priority(&v));
    let info = path(b, &["properties", "delivery_info"]);
    let is_true = |names: &[&str]| {
        path(b, names)
            .and_then(|s| value(b, s))
            .is_some_and(|v| v == Value::Bool(true))
    };
    Some(EnvelopeFields {
        delivery_tag: tag,
        priority,
        has_delivery_info: info.is_some_and(|s| b[s.start] == b'{'),
        redelivered: is_true(&["headers", "redelivered"])
            || is_true(&["properties", "delivery_info", "redelivered"]),
    })
}

/// kombu's `_get_message_priority`: `int(priority)` clamped to `0..=9`; anything `int()`
/// refuses gives the default, 0.
pub(crate) fn kombu_priority(v: &Value) -> u8 {
    let n: Option<i64> = match v {
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|_| i64::MAX))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.trunc() as i64)
            }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    n.map_or(0, |n| n.clamp(0, 9) as u8)
}

/// kombu's restore edit: `headers.redelivered = true`, then
/// `properties.delivery_info.redelivered = true`; a missing `headers` skips both and a missing
/// `delivery_info` the second (Python stops at the first `KeyError`). Text that is not an
/// object, or whose `headers` is no object, comes back unchanged.
pub(crate) fn mark_redelivered(b: &[u8]) -> Vec<u8> {
    let Some(r) = root(b) else {
        return b.to_vec();
    };
    let Some(headers) = member(b, r, "headers") else {
        return b.to_vec();
    };
    let mut edits: Vec<(Span, Vec<u8>)> = Vec::new();
    if let Some(e) = set_true(b, headers, "redelivered") {
        edits.push(e);
    } else {
        return b.to_vec();
    }
    if let Some(info) = path(b, &["properties", "delivery_info"]) {
        if let Some(e) = set_true(b, info, "redelivered") {
            edits.push(e);
        }
    }
    // Apply from the end so earlier offsets stay valid (the spans never overlap).
    edits.sort_by_key(|(s, _)| std::cmp::Reverse(s.start));
    let mut out = b.to_vec();
    for (span, text) in edits {
        out.splice(span.start..span.end, text);
    }
    out
}

/// The edit that makes member `name` of the object at `obj` `true`: replace its value, or
/// insert it before the closing brace.
fn set_true(b: &[u8], obj: Span, name: &str) -> Option<(Span, Vec<u8>)> {
    let ms = members(b, obj)?;
    if let Some((_, v)) = ms.iter().rev().find(|(k, _)| key_is(b, *k, name)) {
        return Some((*v, b"true".to_vec()));
    }
    let close = obj.end - 1;
    let text = if ms.is_empty() {
        format!("\"{name}\": true")
    } else {
        format!(", \"{name}\": true")
    };
    Some((
        Span {
            start: close,
            end: close,
        },
        text.into_bytes(),
    ))
}

/// One entry of kombu's `unacked` hash: `[payload, exchange, routing_key]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UnackedRecord {
    /// The message as it was taken: the payload's own text when it is an object, the decoded
    /// text when the claim stored an undecodable message as a JSON string.
    pub(crate) raw: Vec<u8>,
    /// Whether `raw` was stored as an object (Python can restore it).
    pub(crate) is_object: bool,
    /// `delivery_info.exchange` when the message was taken.
    pub(crate) exchange: Value,
    /// `delivery_info.routing_key` when the message was taken.
    pub(crate) routing_key: Value,
}

/// Parses an `unacked` entry; `None` when it is not a three-element array.
pub(crate) fn unacked_record(b: &[u8]) -> Option<UnackedRecord> {
    let els = elements(b, root(b)?)?;
    let [payload, ex, rk] = els.as_slice() else {
        return None;
    };
    let (raw, is_object) = match b[payload.start] {
        b'"' => (
            serde_json::from_slice::<String>(&b[payload.start..payload.end])
                .ok()?
                .into_bytes(),
            false,
        ),
        _ => (
            b[payload.start..payload.end].to_vec(),
            b[payload.start] == b'{',
        ),
    };
    Some(UnackedRecord {
        raw,
        is_object,
        exchange: value(b, *ex).unwrap_or(Value::Null),
        routing_key: value(b, *rk).unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = br#"{"body": "W10=", "headers": {"task": "t", "x": NaN, "big": 123456789012345678901234567890}, "properties": {"priority": 5, "delivery_tag": "abc", "delivery_info": {"exchange": "", "routing_key": "q"}}}"#;

    #[test]
    fn reads_fields_around_python_tokens() {
        let f = fields(MSG).expect("an object");
        assert_eq!(f.delivery_tag.as_deref(), Some("abc"));
        assert_eq!(f.priority, 5);
        assert!(f.has_delivery_info);
        assert!(!f.redelivered);
    }

    #[test]
    fn marks_redelivered_keeping_every_other_byte() {
        let out = mark_redelivered(MSG);
        let text = String::from_utf8(out.clone()).expect("utf-8");
        assert!(text.contains(r#""big": 123456789012345678901234567890, "redelivered": true}"#));
        assert!(text.contains(r#""routing_key": "q", "redelivered": true}"#));
        assert!(text.contains("NaN"));
        assert!(fields(&out).expect("still an object").redelivered);
        // Idempotent: a second restore replaces rather than duplicates.
        assert_eq!(mark_redelivered(&out), out);
    }

    #[test]
    fn without_headers_nothing_changes() {
        let msg = br#"{"properties": {"delivery_info": {}}}"#;
        assert_eq!(mark_redelivered(msg), msg.to_vec());
        let empty = br#"{"headers": {}, "properties": {"delivery_info": {}}}"#;
        assert_eq!(
            mark_redelivered(empty),
            br#"{"headers": {"redelivered": true}, "properties": {"delivery_info": {"redelivered": true}}}"#.to_vec()
        );
    }

    #[test]
    fn priority_follows_python_int() {
        use serde_json::json;
        for (v, p) in [
            (json!(5), 5),
            (json!(5.9), 5),
            (json!("7"), 7),
            (json!(true), 1),
            (json!(null), 0),
            (json!(-3), 0),
            (json!(42), 9),
            (json!("x"), 0),
        ] {
            assert_eq!(kombu_priority(&v), p, "{v}");
        }
    }

    #[test]
    fn parses_unacked_records() {
        let rec = br#"[{"a": [1, "]"]}, "", "celery"]"#;
        let r = unacked_record(rec).expect("a record");
        assert_eq!(r.raw, br#"{"a": [1, "]"]}"#.to_vec());
        assert!(r.is_object);
        assert_eq!(r.routing_key, Value::from("celery"));
        let s = unacked_record(br#"["not json {", "", "q"]"#).expect("a record");
        assert_eq!(s.raw, b"not json {".to_vec());
        assert!(!s.is_object);
        assert!(unacked_record(b"[1, 2]").is_none());
    }
}
