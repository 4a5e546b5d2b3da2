//! Serde helpers for the [policy](super): reading values of other formats under it
//! ([`Lenient`]), and typed fields that accept both forms of a Python number
//! (`#[serde(deserialize_with = "celeriac_celery::pyjson::de::float")]`).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// A JSON value read from any serde format (msgpack) under the same policy as [`super::parse`]:
/// non-finite floats become `"NaN"`/`"Infinity"`/`"-Infinity"`, integers beyond 64 bits their
/// digits, and byte strings an array of the byte values (as kombu's `bytes` tag unwraps).
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient(pub Value);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor).map(Lenient)
    }
}

/// The string a non-finite float reads as, or the number.
fn float_value(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::from("NaN"),
        None if f > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

struct LenientVisitor;

impl<'de> Visitor<'de> for LenientVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(u64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(float_value(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Array(v.iter().map(|b| Value::from(*b)).collect()))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Lenient::deserialize(d).map(|l| l.0)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Lenient::deserialize(d).map(|l| l.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Lenient(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some((k, Lenient(v))) = map.next_entry::<String, Lenient>()? {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Reads an `f64` field from a number or from the strings the policy gives Python's
/// `nan`/`inf`/`-inf` and big integers.
///
/// # Errors
/// The deserializer's error for anything else (another string, a list, ...).
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(FloatVisitor)
}

struct FloatVisitor;

impl Visitor<'_> for FloatVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, \"NaN\", \"Infinity\" or \"-Infinity\"")
    }
    fn visit_i64<E>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_f64<E>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            digits if is_integer(digits) => digits.parse().map_err(E::custom),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

/// Reads an `i128` field from a number or from a big integer's digits.
///
/// # Errors
/// The deserializer's error for a fraction, another string or an integer beyond `i128`.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
    d.deserialize_any(IntVisitor)
}

/// Reads a `u128` field from a number or from a big integer's digits.
///
/// # Errors
/// As [`int`], and for a negative number.
pub fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
    let v = int(d)?;
    u128::try_from(v).map_err(|_| de::Error::custom(format!("{v} is negative")))
}

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = i128;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or a string of its digits")
    }
    fn visit_i64<E>(self, v: i64) -> Result<i128, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<i128, E> {
        Ok(v.into())
    }
    fn visit_i128<E>(self, v: i128) -> Result<i128, E> {
        Ok(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
        if !is_integer(v) {
            return Err(E::invalid_value(de::Unexpected::Str(v), &self));
        }
        v.parse()
            .map_err(|_| E::custom(format!("integer {v} does not fit in 128 bits")))
    }
}

fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct Typed {
        #[serde(deserialize_with = "float")]
        x: f64,
        #[serde(deserialize_with = "int")]
        n: i128,
        #[serde(deserialize_with = "uint")]
        u: u128,
    }

    #[test]
    fn typed_fields_read_both_forms() {
        let v = super::super::parse(br#"{"x": -Infinity, "n": -1180591620717411303424, "u": 7}"#)
            .expect("parses");
        let t: Typed = serde_json::from_value(v).expect("binds");
        assert_eq!(t.x, f64::NEG_INFINITY);
        assert_eq!(t.n, -(1i128 << 70));
        assert_eq!(t.u, 7);
        let nan: Typed =
            serde_json::from_value(json!({"x": "NaN", "n": 1, "u": "1"})).expect("binds");
        assert!(nan.x.is_nan());
        let err = serde_json::from_value::<Typed>(json!({"x": "pi", "n": 1, "u": 1}))
            .expect_err("not a float");
        assert!(err.to_string().contains("pi"), "{err}");
        assert!(serde_json::from_value::<Typed>(json!({"x": 1, "n": 1.5, "u": 1})).is_err());
    }

    #[test]
    fn msgpack_follows_the_policy() {
        let bytes = rmp_serde::to_vec(&(f64::NAN, f64::INFINITY, 1.5, serde_bytes_like()))
            .expect("encodes");
        let Lenient(v) = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(v, json!(["NaN", "Infinity", 1.5, [255, 0]]));
    }

    /// A msgpack `bin` value.
    fn serde_bytes_like() -> rmpv_bin::Bin {
        rmpv_bin::Bin(vec![255, 0])
    }

    mod rmpv_bin {
        /// Serializes as bytes (msgpack `bin`).
        pub struct Bin(pub Vec<u8>);
        impl serde::Serialize for Bin {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }
}
