//! ISO 8601 dates as Celery writes and reads them (`eta`, `expires`).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// Parses an ISO 8601 date-time as Python's `datetime.fromisoformat` accepts it: `T` or space
/// between date and time, optional fraction, offset `Z`/`+HH:MM`/`+HHMM`/`+HH` or none. A naive
/// value (no offset) is UTC, as a Celery worker with the default timezone reads it. A bare
/// date is its midnight. `None` when the text is not such a date.
pub fn parse_iso8601(text: &str) -> Option<DateTime<Utc>> {
    let s = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    const AWARE: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M%#z",
        "%Y-%m-%d %H:%M%#z",
    ];
    for fmt in AWARE {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    const NAIVE: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    for fmt in NAIVE {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc())
}

/// Writes a date-time as Python's `datetime.isoformat()` of an aware UTC value:
/// `2026-11-30T07:47:24.069450+00:00`, without the fraction when it is zero.
pub fn format_iso8601(dt: &DateTime<Utc>) -> String {
    let micros = dt.timestamp_subsec_micros();
    let base = dt.to_rfc3339_opts(SecondsFormat::Secs, false);
    // `base` ends in "+00:00"; the fraction goes before it.
    match (micros, base.strip_suffix("+00:00")) {
        (0, _) | (_, None) => base,
        (m, Some(head)) => format!("{head}.{m:06}+00:00"),
    }
}
