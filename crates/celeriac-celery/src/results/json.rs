//! JSON as Python's kombu writes and reads it.
//!
//! Reading is tolerant: Python's `json` emits the non-standard tokens `NaN`, `Infinity` and
//! `-Infinity`, and integers wider than 64 bits, which `serde_json` refuses or rounds. Rather
//! than turning on `serde_json` features (which would change every crate of the workspace),
//! [`parse_lenient`] rewrites those tokens into JSON strings before parsing: `NaN` →
//! `"NaN"`, `Infinity` → `"Infinity"`, `-Infinity` → `"-Infinity"`, and an integer outside
//! the `i64`/`u64` range → its decimal digits as a string. Text inside strings is untouched.
//!
//! Writing ([`to_python_json`]) mirrors `json.dumps` with kombu's defaults: `", "` and `": "`
//! separators and `ensure_ascii` (non-ASCII as `\uXXXX` escapes), so Rust-written results are
//! byte-for-byte what a Python worker would store for the same value.
//!
//! kombu ≥ 5.3 wraps some Python values as `{"__type__": T, "__value__": V}`; [`unwrap_kombu`]
//! turns them into plain JSON (for reading by Rust); values are otherwise kept as stored, so a
//! result relayed to a Python task (a chord body) keeps its Python type.

use std::borrow::Cow;
use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::Value;

/// Parses JSON written by Python, accepting `NaN`/`Infinity` tokens and big integers (see the
/// module doc for what they become).
///
/// # Errors
/// The `serde_json` error when the text is not JSON even after that rewriting.
pub fn parse_lenient(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(&normalize(text))
}

/// Rewrites the non-standard number tokens outside strings (see the module doc); borrows the
/// text when there is nothing to rewrite.
pub fn normalize(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `text` already in `out`
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = skip_string(bytes, i),
            b'N' | b'I' | b'-' | b'0'..=b'9' => {
                let start = i;
                let end = token_end(bytes, i);
                let token = &text[start..end];
                i = end;
                let replacement = match token {
                    "NaN" | "Infinity" | "-Infinity" => Some(token),
                    t if is_big_integer(t) => Some(t),
                    _ => None,
                };
                if let Some(r) = replacement {
                    let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 8));
                    buf.push_str(&text[copied..start]);
                    buf.push('"');
                    buf.push_str(r);
                    buf.push('"');
                    copied = end;
                }
            }
            _ => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            Cow::Owned(buf)
        }
    }
}

/// The index just past the string that opens at `start` (a `"`).
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The end of a bare token (number or literal) starting at `start`.
fn token_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < bytes.len()
        && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'-' | b'+' | b'.'))
    {
        i += 1;
    }
    i
}

/// An integer literal that neither `i64` nor `u64` holds.
fn is_big_integer(token: &str) -> bool {
    let digits = token.strip_prefix('-').unwrap_or(token);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && token.parse::<i64>().is_err()
        && token.parse::<u64>().is_err()
}

/// Serializes like Python's `json.dumps(value)` (kombu's defaults): `", "` / `": "` separators,
/// non-ASCII escaped.
///
/// # Errors
/// A `serde_json` error when the value cannot be serialized (a map with non-string keys).
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut buf = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, PythonFormatter);
    value.serialize(&mut ser)?;
    // Only ASCII is written: escapes for everything else.
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `json.dumps` defaults: `", "`, `": "`, `ensure_ascii=True`.
struct PythonFormatter;

impl Formatter for PythonFormatter {
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
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Replaces kombu's `{"__type__": T, "__value__": V}` wrappers (recursively) by plain JSON:
/// `datetime`/`date`/`time`/`decimal`/`bytes`/`base64` → the string V, `uuid` → the hyphenated
/// UUID. Unknown types are left as they are.
pub fn unwrap_kombu(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(unwrap_kombu).collect()),
        Value::Object(map) => {
            if let Some((kind, inner)) = kombu_wrapper(value) {
                if let Some(plain) = unwrap_one(kind, inner) {
                    return plain;
                }
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), unwrap_kombu(v)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// `(T, V)` when `value` is exactly `{"__type__": T, "__value__": V}` with a string T.
pub fn kombu_wrapper(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    if map.len() != 2 {
        return None;
    }
    let kind = map.get("__type__")?.as_str()?;
    Some((kind, map.get("__value__")?))
}

fn unwrap_one(kind: &str, inner: &Value) -> Option<Value> {
    match kind {
        "datetime" | "date" | "time" | "decimal" | "bytes" | "base64" => {
            inner.as_str().map(|s| Value::String(s.to_owned()))
        }
        "uuid" => {
            let hex = inner
                .get("hex")
                .and_then(Value::as_str)
                .or_else(|| inner.as_str())?;
            let id = uuid::Uuid::try_parse(hex).ok()?;
            Some(Value::String(id.hyphenated().to_string()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_python_tokens_outside_strings_only() {
        let text = r#"{"a": NaN, "b": [Infinity, -Infinity], "c": "NaN Infinity \" 123456789012345678901234", "d": 123456789012345678901234, "e": -1.5e10, "f": 18446744073709551615}"#;
        let v = parse_lenient(text).expect("lenient JSON parses");
        assert_eq!(v["a"], json!("NaN"));
        assert_eq!(v["b"], json!(["Infinity", "-Infinity"]));
        assert_eq!(v["c"], json!("NaN Infinity \" 123456789012345678901234"));
        assert_eq!(v["d"], json!("123456789012345678901234"));
        assert_eq!(v["e"], json!(-1.5e10));
        assert_eq!(v["f"], json!(u64::MAX));
        assert!(matches!(
            normalize(r#"{"x": [1, -2, 3.5, true, null]}"#),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn writes_like_python_json_dumps() {
        let v = json!({"k": [1, "é😀", null, true, 2.5], "a\n": {}});
        // serde_json's Map is sorted: the order is "a\n", "k".
        assert_eq!(
            to_python_json(&v).expect("serializes"),
            r#"{"a\n": {}, "k": [1, "\u00e9\ud83d\ude00", null, true, 2.5]}"#
        );
    }

    #[test]
    fn unwraps_kombu_type_tags() {
        let v = json!({"when": {"__type__": "datetime", "__value__": "2024-01-02T03:04:05"},
            "id": {"__type__": "uuid", "__value__": {"hex": "0a1b2c3d4e5f60718293a4b5c6d7e8f9"}},
            "odd": {"__type__": "nope", "__value__": 1},
            "extra": {"__type__": "bytes", "__value__": "x", "more": 1}});
        let plain = unwrap_kombu(&v);
        assert_eq!(plain["when"], json!("2024-01-02T03:04:05"));
        assert_eq!(plain["id"], json!("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"));
        assert_eq!(plain["odd"], v["odd"]);
        assert_eq!(plain["extra"], v["extra"]);
    }
}
