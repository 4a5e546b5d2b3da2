//! Python's `repr()` of JSON values as Python decodes them: the display headers `argsrepr` /
//! `kwargsrepr` (bounded as Celery's `saferepr`) and messages that quote Python objects (a
//! chord's `ChordError` quotes the failed member's exception as `ValueError('boom')`).

use serde_json::{Map, Value};

/// The longest `argsrepr`/`kwargsrepr` Celery writes (`argsrepr_maxsize`, `kwargsrepr_maxsize`).
pub const REPR_MAX_CHARS: usize = 1024;

/// Bytes of output after which a bounded repr stops descending (it is cut to
/// [`REPR_MAX_CHARS`] characters afterwards).
const BOUNDED_BYTES: usize = REPR_MAX_CHARS * 4;

/// Python's `repr()` of a JSON value, whole (`'text'`, `None`, `True`, `[1, 2]`, `{'k': 1}`).
pub fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, usize::MAX);
    out
}

/// `repr(value)` of one JSON value, cut to [`REPR_MAX_CHARS`] characters with `...`.
pub fn value_repr(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, BOUNDED_BYTES);
    bounded(out)
}

/// `repr(tuple(args))` as Python prints it (`(2, 3)`, `(1,)`, `()`), bounded like
/// [`value_repr`].
pub fn args_repr(args: &[Value]) -> String {
    let mut out = String::from("(");
    write_items(&mut out, args, BOUNDED_BYTES);
    if args.len() == 1 {
        out.push(',');
    }
    out.push(')');
    bounded(out)
}

/// `repr(kwargs)` as Python prints a dict (`{'x': 1}`), bounded like [`value_repr`].
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_map(&mut out, kwargs, BOUNDED_BYTES);
    bounded(out)
}

fn bounded(s: String) -> String {
    if s.chars().count() <= REPR_MAX_CHARS {
        return s;
    }
    let mut cut: String = s.chars().take(REPR_MAX_CHARS - 3).collect();
    cut.push_str("...");
    cut
}

/// `items` separated by `", "`, stopping once `out` is longer than `cap` bytes.
fn write_items(out: &mut String, items: &[Value], cap: usize) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_value(out, item, cap);
        if out.len() > cap {
            break;
        }
    }
}

fn write_map(out: &mut String, map: &Map<String, Value>, cap: usize) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        write_value(out, v, cap);
        if out.len() > cap {
            break;
        }
    }
    out.push('}');
}

fn write_value(out: &mut String, v: &Value, cap: usize) {
    if out.len() > cap {
        return;
    }
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            write_items(out, items, cap);
            out.push(']');
        }
        Value::Object(map) => write_map(out, map, cap),
    }
}

/// `repr(float)`: shortest digits; exponent form outside `[1e-4, 1e16)` with a sign and at
/// least two digits (`1e+20`, `1.5e-05`); `2.0`, `nan`, `inf`.
fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{f:e}");
        if let Some((mantissa, exp)) = s.split_once('e') {
            if let Ok(exp) = exp.parse::<i32>() {
                let sign = if exp < 0 { '-' } else { '+' };
                return format!("{mantissa}e{sign}{:02}", exp.abs());
            }
        }
        return s;
    }
    let s = f.to_string();
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// `repr(str)`: single quotes unless the text has `'` and no `"`.
fn write_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reprs_like_python() {
        let cases = [
            (json!("it's"), r#""it's""#),
            (json!("a'b\"c"), r#"'a\'b"c'"#),
            (json!("tab\t\u{1}"), r"'tab\t\x01'"),
            (json!(null), "None"),
            (json!([true, false]), "[True, False]"),
            (json!({"k": 1}), "{'k': 1}"),
            (json!(2.0), "2.0"),
            (json!(1e20), "1e+20"),
            (json!(1.5e-5), "1.5e-05"),
            (json!(0.1), "0.1"),
            (json!(-3), "-3"),
            (json!(u64::MAX), "18446744073709551615"),
        ];
        for (value, repr) in cases {
            assert_eq!(py_repr(&value), repr, "{value}");
            assert_eq!(value_repr(&value), repr, "{value}");
        }
        let long = json!(["x".repeat(5000)]);
        assert_eq!(py_repr(&long).len(), 5004);
        assert_eq!(value_repr(&long).chars().count(), REPR_MAX_CHARS);
    }
}
