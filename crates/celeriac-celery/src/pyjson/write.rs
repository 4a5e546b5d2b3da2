//! Writing JSON as Python's `json.dumps` does with kombu's defaults.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::{Map, Value};

/// Serializes like Python's `json.dumps(value)`: `", "` / `": "` separators, every non-ASCII
/// character (and DEL) escaped as `\uXXXX` (`ensure_ascii=True`), so the text is byte-for-byte
/// what Python writes for the same value (keys in the value's own order).
///
/// # Errors
/// A `serde_json` error when the value cannot be serialized (a map with non-string keys).
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut buf = Vec::with_capacity(128);
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut buf,
        PythonFormatter,
    ))?;
    // Only ASCII is written: escapes for everything else.
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// [`to_python_json`] as bytes, for values that always serialize (JSON values, tuples and
/// structs of them): on the impossible error it logs and returns what was written.
pub fn to_python_json_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serializing into a Vec with string keys cannot fail; a map with non-string keys would
    // be a bug of this crate, and then the output is at worst truncated JSON.
    if let Err(e) = value.serialize(&mut ser) {
        tracing::error!("serializing a message to JSON failed: {e}");
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

/// `json.dumps` defaults: `", "`, `": "`, `ensure_ascii=True`.
struct PythonFormatter;

/// `", "` before every item but the first.
fn separator<W: ?Sized + io::Write>(w: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        w.write_all(b", ")
    }
}

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        separator(w, first)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        separator(w, first)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_like_python_json_dumps() {
        let v = json!({"k": [1, "é😀\u{7f}", null, true, 2.5], "a\n": {}});
        // serde_json's Map is sorted: the order is "a\n", "k".
        let want = r#"{"a\n": {}, "k": [1, "\u00e9\ud83d\ude00\u007f", null, true, 2.5]}"#;
        assert_eq!(to_python_json(&v).expect("serializes"), want);
        assert_eq!(to_python_json_bytes(&v), want.as_bytes());
        let m = json!({"b": 1, "a": 2, "c": 3});
        let m = m.as_object().expect("an object");
        assert_eq!(
            to_python_json(&ordered(m, &["c", "b"])).expect("serializes"),
            r#"{"c": 3, "b": 1, "a": 2}"#
        );
    }
}
