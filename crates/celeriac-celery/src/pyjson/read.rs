//! Lenient reading of Python's JSON (the policy is in the [module doc](super)).

use std::borrow::Cow;

use serde_json::Value;

/// Parses JSON text that Python may have written: `NaN`/`Infinity`/`-Infinity` and integers
/// wider than 64 bits become strings (see the [module doc](super)).
///
/// # Errors
/// The `serde_json` error when the text is not JSON even after that rewrite.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(&normalize(bytes))
}

/// [`parse`] for text.
///
/// # Errors
/// As [`parse`].
pub fn parse_str(text: &str) -> Result<Value, serde_json::Error> {
    parse(text.as_bytes())
}

/// Quotes the non-standard tokens outside strings (`NaN` → `"NaN"`, a big integer → its
/// digits in quotes); borrows the input when there is nothing to rewrite. Each rewrite adds
/// exactly two bytes.
pub fn normalize(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0; // bytes of the input already in `out`
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = skip_string(bytes, i),
            b'N' | b'I' | b'-' | b'0'..=b'9' => {
                let start = i;
                i = token_end(bytes, i);
                let token = &bytes[start..i];
                if is_non_finite(token) || is_big_integer(token) {
                    let buf = out.get_or_insert_with(|| Vec::with_capacity(bytes.len() + 8));
                    buf.extend_from_slice(&bytes[copied..start]);
                    buf.push(b'"');
                    buf.extend_from_slice(token);
                    buf.push(b'"');
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(bytes),
        Some(mut buf) => {
            buf.extend_from_slice(&bytes[copied..]);
            Cow::Owned(buf)
        }
    }
}

/// [`normalize`] for text.
pub fn normalize_str(text: &str) -> Cow<'_, str> {
    match normalize(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        // Only ASCII quotes were inserted at token (ASCII) boundaries: still UTF-8.
        Cow::Owned(buf) => Cow::Owned(String::from_utf8_lossy(&buf).into_owned()),
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

fn is_non_finite(token: &[u8]) -> bool {
    matches!(token, b"NaN" | b"Infinity" | b"-Infinity")
}

/// An integer literal that neither `i64` nor `u64` holds.
fn is_big_integer(token: &[u8]) -> bool {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    // Fewer than 19 digits always fit; otherwise ask the parsers (ASCII digits: valid UTF-8).
    let text = std::str::from_utf8(token).unwrap_or("");
    digits.len() > 18 && text.parse::<i64>().is_err() && text.parse::<u64>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_python_tokens_outside_strings_only() {
        let text = r#"{"a": NaN, "b": [Infinity, -Infinity], "c": "NaN Infinity \" 123456789012345678901234", "d": 123456789012345678901234, "e": -1.5e10, "f": 18446744073709551615, "g": -9223372036854775808, "h": -9223372036854775809}"#;
        let v = parse_str(text).expect("lenient JSON parses");
        assert_eq!(v["a"], json!("NaN"));
        assert_eq!(v["b"], json!(["Infinity", "-Infinity"]));
        assert_eq!(v["c"], json!("NaN Infinity \" 123456789012345678901234"));
        assert_eq!(v["d"], json!("123456789012345678901234"));
        assert_eq!(v["e"], json!(-1.5e10));
        assert_eq!(v["f"], json!(u64::MAX));
        assert_eq!(v["g"], json!(i64::MIN));
        assert_eq!(v["h"], json!("-9223372036854775809"));
        assert!(matches!(
            normalize_str(r#"{"x": [1, -2, 3.5, true, null]}"#),
            Cow::Borrowed(_)
        ));
        assert_eq!(&*normalize(b"[NaN,1]"), b"[\"NaN\",1]");
    }
}
