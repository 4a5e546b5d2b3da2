//! JSON as Python's `json` module and kombu write it.
//!
//! Reading: Python may emit the non-standard tokens `NaN`, `Infinity` and `-Infinity`, and
//! integers wider than 64 bits. [`parse`] rewrites the three tokens (outside strings) to
//! `null` before parsing, and serde_json (without `arbitrary_precision`, which would change
//! every crate of the workspace) reads an integer beyond `u64`/`i64` as the nearest `f64`.
//! Both are lossy: a NaN or infinite float arrives as `null`, a huge integer loses its low
//! digits.
//!
//! kombu ≥ 5.3 wraps some Python values as `{"__type__": T, "__value__": V}`;
//! [`unwrap_kombu_types`] turns them into plain JSON.
//!
//! Writing: [`to_python_json`] uses Python's default separators (`", "`, `": "`) and escapes
//! every non-ASCII character (`ensure_ascii=True`), so the bytes match what Python writes.

use std::borrow::Cow;
use std::io;

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{ProtocolError, Result};

/// Parses JSON text that Python may have written (see the module docs for what is lossy).
///
/// # Errors
/// [`ProtocolError::BodyJson`] naming `what` when the text is not JSON even after the
/// NaN/Infinity rewrite.
pub fn parse(bytes: &[u8], what: &'static str) -> Result<Value> {
    let text = rewrite_non_finite(bytes);
    serde_json::from_slice(&text).map_err(|source| ProtocolError::BodyJson { what, source })
}

/// Replaces `NaN`, `Infinity` and `-Infinity` outside strings with `null`; borrows when there
/// is none.
pub fn rewrite_non_finite(bytes: &[u8]) -> Cow<'_, [u8]> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out: Option<Vec<u8>> = None;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if matches!(b, b'-' | b'I' | b'N') {
            if let Some(token) = TOKENS.iter().find(|t| bytes[i..].starts_with(t)) {
                let buf = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                buf.extend_from_slice(&bytes[copied..i]);
                buf.extend_from_slice(b"null");
                i += token.len();
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    match out {
        None => Cow::Borrowed(bytes),
        Some(mut buf) => {
            buf.extend_from_slice(&bytes[copied..]);
            Cow::Owned(buf)
        }
    }
}

/// Turns kombu's `{"__type__": T, "__value__": V}` wrappers (anywhere in `value`) into plain
/// JSON, so typed Rust arguments deserialize:
/// - `datetime`, `date`, `time`: the ISO string as is;
/// - `decimal`: the decimal's string (`"1.10"`), not a float, so no digit is lost;
/// - `uuid`: the hyphenated string (`V` is `{"hex": ...}` or a string);
/// - `bytes` (UTF-8 text) and `base64` (non-UTF-8 bytes): an array of the byte values, which
///   deserializes into `Vec<u8>`.
///
/// An object is a wrapper only when its key set is exactly `{"__type__", "__value__"}` (as
/// kombu checks); a wrapper of an unknown type, or one whose value does not fit its type, is
/// left as it is.
pub fn unwrap_kombu_types(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(unwrap_kombu_types).collect()),
        Value::Object(map) => {
            if map.len() == 2 {
                if let (Some(Value::String(t)), Some(v)) =
                    (map.get("__type__"), map.get("__value__"))
                {
                    if let Some(plain) = unwrap_one(t, v) {
                        return plain;
                    }
                    return Value::Object(map);
                }
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, unwrap_kombu_types(v)))
                    .collect(),
            )
        }
        other => other,
    }
}

fn unwrap_one(kind: &str, value: &Value) -> Option<Value> {
    let bytes_array = |b: &[u8]| Value::Array(b.iter().map(|x| Value::from(*x)).collect());
    match (kind, value) {
        ("datetime" | "date" | "time" | "decimal", Value::String(s)) => {
            Some(Value::String(s.clone()))
        }
        ("uuid", Value::String(s)) => Some(Value::String(hyphenated(s)?)),
        ("uuid", Value::Object(o)) => match o.get("hex") {
            Some(Value::String(s)) => Some(Value::String(hyphenated(s)?)),
            _ => None,
        },
        ("bytes", Value::String(s)) => Some(bytes_array(s.as_bytes())),
        ("base64", Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .map(|b| bytes_array(&b)),
        _ => None,
    }
}

fn hyphenated(s: &str) -> Option<String> {
    uuid::Uuid::parse_str(s)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// Serializes `value` as Python's `json.dumps` does by default: `", "` and `": "` separators,
/// non-ASCII (and DEL) escaped as `\uXXXX`.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serializing into a Vec with string keys cannot fail; a map with non-string keys would
    // be a bug of this crate, and then the output is at worst truncated JSON.
    if value.serialize(&mut ser).is_err() {
        tracing::error!("serializing a message to JSON failed");
    }
    out
}

/// A map that serializes its entries in the given order (serde_json's `Map` sorts keys).
pub(crate) struct Ordered<'a>(pub Vec<(&'a str, &'a Value)>);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// `map` with the keys of `order` first (those present, in that order), then the rest.
pub(crate) fn ordered<'a>(map: &'a Map<String, Value>, order: &[&'a str]) -> Ordered<'a> {
    let mut entries: Vec<(&str, &Value)> = order
        .iter()
        .filter_map(|k| map.get(*k).map(|v| (*k, v)))
        .collect();
    entries.extend(
        map.iter()
            .filter(|(k, _)| !order.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v)),
    );
    Ordered(entries)
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.bytes().all(|b| b < 0x7f) {
            return w.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if (c as u32) < 0x7f {
                let mut buf = [0u8; 4];
                w.write_all(c.encode_utf8(&mut buf).as_bytes())?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}
