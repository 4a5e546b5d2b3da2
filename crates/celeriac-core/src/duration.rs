//! Durations as people write them: `30s`, `5m`, `1h30m`, `2d`, `250ms`.
//!
//! This is the one grammar for every duration Celeriac reads as text: the schedule file
//! (`every`, `expires_in`), rate-limit windows (`100/30s`) and the command line's options.
//! The options of `#[celeriac::task]` and `#[celeriac::cached]` are read at compile time by an
//! identical copy in the macro crate, tested against the same table of cases
//! (`duration/cases.rs`).
//!
//! # Grammar
//! - **A number and a unit**: `250ms`, `30s`, `5m`, `2h`, `1d`.
//! - **Several of them, added up**, in any order, with or without spaces: `1h30m`, `1h 30m`,
//!   `2d12h`, `1m30s500ms`.
//! - **A plain number, in seconds**: `45` is `45s`, `1.5` is `1.5s`.
//!
//! A number may have a decimal fraction (`1.5s`, `0.25h`, `.5m`) as long as the whole duration
//! comes to a whole number of milliseconds: `1.5ms` is refused rather than rounded. A space may
//! separate a number from its unit (`5 minutes`). Units are read in any case (`5M` is five
//! minutes: there is no month unit):
//!
//! | unit | also written |
//! |------|--------------|
//! | `ms` | `msec`, `millisecond`, `milliseconds` |
//! | `s`  | `sec`, `secs`, `second`, `seconds` |
//! | `m`  | `min`, `mins`, `minute`, `minutes` |
//! | `h`  | `hr`, `hrs`, `hour`, `hours` |
//! | `d`  | `day`, `days` |
//!
//! Durations are never negative, and at most `u64::MAX` milliseconds. Zero (`0s`, `0`) is a
//! duration; whether a setting accepts it is the setting's business.
//!
//! ```
//! use celeriac_core::duration;
//! use std::time::Duration;
//!
//! assert_eq!(duration::parse("1h30m")?, Duration::from_secs(5400));
//! assert_eq!(duration::parse("250ms")?, Duration::from_millis(250));
//! assert_eq!(duration::parse("1.5s")?, Duration::from_millis(1500));
//! assert_eq!(duration::parse("45")?, Duration::from_secs(45));
//! assert_eq!(duration::parse("5 minutes")?, Duration::from_secs(300));
//! assert_eq!(duration::format(Duration::from_secs(5400)), "1h30m");
//!
//! let err = duration::parse("5 parsecs").unwrap_err();
//! assert_eq!(err.to_string(), "`5 parsecs` has an unknown unit `parsecs` (use ms, s, m, h or d)");
//! # Ok::<(), duration::DurationError>(())
//! ```
//!
//! An error says what is wrong with the text, not which setting it was given to: the caller
//! knows that, and names it (`schedule "nightly": every`, `rate limit`, `--delay`).

use std::fmt;
use std::time::Duration;

/// Each unit's names (the first is the one [`format`] writes) and its length in ms.
const UNITS: &[(&[&str], u64)] = &[
    (&["ms", "msec", "millisecond", "milliseconds"], 1),
    (&["s", "sec", "secs", "second", "seconds"], 1_000),
    (&["m", "min", "mins", "minute", "minutes"], 60_000),
    (&["h", "hr", "hrs", "hour", "hours"], 3_600_000),
    (&["d", "day", "days"], 86_400_000),
];

/// The length in ms of the unit called `name` (in any case).
fn unit_ms(name: &str) -> Option<u64> {
    UNITS
        .iter()
        .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
        .map(|&(_, ms)| ms)
}

/// Text that is not a duration, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    text: String,
    problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    Empty,
    NotADuration,
    Negative,
    UnitWithoutNumber(String),
    NumberWithoutUnit(String),
    UnknownUnit(String),
    Unexpected(char),
    BadNumber(String),
    FinerThanAMillisecond,
    TooLarge,
}

impl DurationError {
    /// The text that was read.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNIT_LIST: &str = "(use ms, s, m, h or d)";
        const EXAMPLES: &str = "write a number and a unit, like 30s, 5m, 1h30m or 250ms";
        let text = &self.text;
        match &self.problem {
            Problem::Empty => write!(f, "empty duration; {EXAMPLES}"),
            Problem::NotADuration => write!(f, "`{text}` is not a duration; {EXAMPLES}"),
            Problem::Negative => write!(f, "`{text}` is negative; a duration is zero or more"),
            Problem::UnitWithoutNumber(unit) => {
                write!(f, "`{text}` has a unit without a number, `{unit}`")
            }
            Problem::NumberWithoutUnit(n) => {
                write!(f, "`{text}` has a number without a unit, `{n}` {UNIT_LIST}")
            }
            Problem::UnknownUnit(unit) => {
                write!(f, "`{text}` has an unknown unit `{unit}` {UNIT_LIST}")
            }
            Problem::Unexpected(c) => write!(f, "`{text}` has an unexpected `{c}`; {EXAMPLES}"),
            Problem::BadNumber(n) => write!(f, "`{text}` has a malformed number `{n}`"),
            Problem::FinerThanAMillisecond => {
                write!(f, "`{text}` is finer than a millisecond")
            }
            Problem::TooLarge => write!(f, "`{text}` is too large"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Reads a duration (see the [module documentation](self) for the grammar).
///
/// # Errors
/// [`DurationError`], saying what is wrong with `text`: empty, an unknown unit, a number
/// without a unit in a sum (`1m30`), a fraction finer than a millisecond, too large...
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_ms(text).map(Duration::from_millis)
}

/// Reads a duration in whole milliseconds (see [`parse`]).
///
/// # Errors
/// As [`parse`].
pub fn parse_ms(text: &str) -> Result<u64, DurationError> {
    let fail = |problem| DurationError {
        text: text.to_string(),
        problem,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(fail(Problem::Empty));
    }
    if s.starts_with('-') {
        return Err(fail(Problem::Negative));
    }
    let is_number_char = |c: char| c.is_ascii_digit() || c == '.';
    let mut rest = s;
    let mut total: u64 = 0;
    let mut first = true;
    while !rest.is_empty() {
        let number_len = rest.find(|c| !is_number_char(c)).unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() {
            let word_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let word = &rest[..word_len];
            return Err(fail(match rest.chars().next() {
                Some(c) if !c.is_ascii_alphabetic() => Problem::Unexpected(c),
                _ if first && unit_ms(word).is_none() => Problem::NotADuration,
                _ => Problem::UnitWithoutNumber(word.to_string()),
            }));
        }
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let per = if unit.is_empty() {
            match rest.chars().next() {
                // A plain number: seconds.
                None if first => 1_000,
                Some(c) if !is_number_char(c) => return Err(fail(Problem::Unexpected(c))),
                _ => return Err(fail(Problem::NumberWithoutUnit(number.to_string()))),
            }
        } else {
            unit_ms(unit).ok_or_else(|| fail(Problem::UnknownUnit(unit.to_string())))?
        };
        let ms = term_ms(number, per).map_err(fail)?;
        total = total
            .checked_add(ms)
            .ok_or_else(|| fail(Problem::TooLarge))?;
        first = false;
    }
    Ok(total)
}

/// `number` (digits with at most one `.`) times `per` ms, when that is a whole number of ms.
fn term_ms(number: &str, per: u64) -> Result<u64, Problem> {
    let bad = || Problem::BadNumber(number.to_string());
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| Problem::TooLarge)?
    };
    let mut ms = whole.checked_mul(per).ok_or(Problem::TooLarge)?;
    let fraction = fraction.trim_end_matches('0');
    if !fraction.is_empty() {
        // A fraction ending in a non-zero digit, times a unit of at most 2^10 * 5^5 ms, is
        // a whole number of ms only if it has at most ten digits.
        if fraction.len() > 10 {
            return Err(Problem::FinerThanAMillisecond);
        }
        let digits: u128 = fraction.parse().map_err(|_| bad())?;
        let scaled = digits * u128::from(per);
        let scale = 10u128.pow(fraction.len() as u32);
        if !scaled.is_multiple_of(scale) {
            return Err(Problem::FinerThanAMillisecond);
        }
        let part = u64::try_from(scaled / scale).map_err(|_| Problem::TooLarge)?;
        ms = ms.checked_add(part).ok_or(Problem::TooLarge)?;
    }
    Ok(ms)
}

/// Writes a duration the way [`parse`] reads it, largest unit first, to the millisecond:
/// `1h30m`, `1m30s`, `250ms`, `2d3h`, and `0s` for zero.
pub fn format(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (names, per) in UNITS.iter().rev() {
        if ms >= *per {
            out.push_str(&(ms / per).to_string());
            out.push_str(names[0]);
            ms %= per;
        }
    }
    out
}

/// Serde for a [`Duration`] written as text in this grammar (`"5m"`, `"1h30m"`):
/// `#[serde(with = "celeriac_core::duration::serde_text")]`.
pub mod serde_text {
    use std::time::Duration;

    /// Writes `d` with [`format`](super::format).
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    /// Reads a duration with [`parse`](super::parse).
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
