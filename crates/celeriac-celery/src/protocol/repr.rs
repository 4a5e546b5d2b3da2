//! Python `repr` of JSON values, for the display headers `argsrepr` / `kwargsrepr`.

use serde_json::{Map, Value};

/// The longest `argsrepr`/`kwargsrepr` Celery writes (`argsrepr_maxsize`, `kwargsrepr_maxsize`).
pub const REPR_MAX_CHARS: usize = 1024;

/// `repr(tuple(args))` as Python prints it (`(2, 3)`, `(1,)`, `()`), cut to
/// [`REPR_MAX_CHARS`] characters with `...`.
pub fn args_repr(args: &[Value]) -> String {
    let mut out = String::from("(");
    for (i, v) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_value(&mut out, v);
        if out.len() > REPR_MAX_CHARS * 4 {
            break;
        }
    }
    if args.len() == 1 {
        out.push(',');
    }
    out.push(')');
    bounded(out)
}

/// `repr(kwargs)` as Python prints a dict (`{'x': 1}`), bounded like [`args_repr`].
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_map(&mut out, kwargs);
    bounded(out)
}

/// `repr(value)` of one JSON value as the equivalent Python value, bounded.
pub fn value_repr(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
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

fn write_map(out: &mut String, map: &Map<String, Value>) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        write_value(out, v);
        if out.len() > REPR_MAX_CHARS * 4 {
            break;
        }
    }
    out.push('}');
}

fn write_value(out: &mut String, v: &Value) {
    if out.len() > REPR_MAX_CHARS * 4 {
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
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
                if out.len() > REPR_MAX_CHARS * 4 {
                    break;
                }
            }
            out.push(']');
        }
        Value::Object(map) => write_map(out, map),
    }
}

fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Python: 1e+16, 1.5e-05.
        let s = format!("{f:e}");
        return match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        };
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

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
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}
