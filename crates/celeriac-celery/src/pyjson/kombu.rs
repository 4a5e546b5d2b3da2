//! kombu's type tags: `{"__type__": T, "__value__": V}` (kombu ≥ 5.3 `json` serializer).

use base64::Engine as _;
use serde_json::Value;

/// Turns kombu's `{"__type__": T, "__value__": V}` wrappers (anywhere in `value`) into plain
/// JSON, so typed Rust values deserialize:
/// - `datetime`, `date`, `time`: the ISO string as is;
/// - `decimal`: the decimal's string (`"1.10"`), not a float, so no digit is lost;
/// - `uuid`: the hyphenated string (`V` is `{"hex": ...}` or a string);
/// - `bytes` (UTF-8 text) and `base64` (non-UTF-8 bytes): an array of the byte values, which
///   deserializes into `Vec<u8>`.
///
/// An object is a wrapper only when its key set is exactly `{"__type__", "__value__"}` (as
/// kombu checks, [`kombu_wrapper`]); a wrapper of an unknown type, or one whose value does not
/// fit its type, is left as it is.
pub fn unwrap_kombu_types(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(unwrap_kombu_types).collect()),
        Value::Object(map) => {
            let wrapper = Value::Object(map);
            if let Some((kind, inner)) = kombu_wrapper(&wrapper) {
                return unwrap_one(kind, inner).unwrap_or(wrapper);
            }
            let Value::Object(map) = wrapper else {
                return wrapper;
            };
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, unwrap_kombu_types(v)))
                    .collect(),
            )
        }
        other => other,
    }
}

/// [`unwrap_kombu_types`] of a borrowed value (a copy), for reading a stored result whose
/// original is kept as it is (a result relayed to a Python task keeps its Python type).
pub fn unwrap_kombu(value: &Value) -> Value {
    unwrap_kombu_types(value.clone())
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

fn unwrap_one(kind: &str, value: &Value) -> Option<Value> {
    let bytes_array = |b: &[u8]| Value::Array(b.iter().map(|x| Value::from(*x)).collect());
    match (kind, value) {
        ("datetime" | "date" | "time" | "decimal", Value::String(s)) => {
            Some(Value::String(s.clone()))
        }
        ("uuid", Value::String(s)) => hyphenated(s),
        ("uuid", Value::Object(o)) => hyphenated(o.get("hex")?.as_str()?),
        ("bytes", Value::String(s)) => Some(bytes_array(s.as_bytes())),
        ("base64", Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .map(|b| bytes_array(&b)),
        _ => None,
    }
}

fn hyphenated(s: &str) -> Option<Value> {
    let id = uuid::Uuid::try_parse(s).ok()?;
    Some(Value::String(id.hyphenated().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unwraps_kombu_type_tags() {
        let v = json!({"when": {"__type__": "datetime", "__value__": "2024-01-02T03:04:05"},
            "id": {"__type__": "uuid", "__value__": {"hex": "0a1b2c3d4e5f60718293a4b5c6d7e8f9"}},
            "raw": [{"__type__": "base64", "__value__": "/wA="}],
            "odd": {"__type__": "nope", "__value__": 1},
            "extra": {"__type__": "bytes", "__value__": "x", "more": 1}});
        let plain = unwrap_kombu(&v);
        assert_eq!(plain["when"], json!("2024-01-02T03:04:05"));
        assert_eq!(plain["id"], json!("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"));
        assert_eq!(plain["raw"], json!([[255, 0]]));
        assert_eq!(plain["odd"], v["odd"]);
        assert_eq!(plain["extra"], v["extra"]);
        assert_eq!(unwrap_kombu_types(v.clone()), plain);
    }
}
