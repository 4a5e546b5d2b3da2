//! What every command shares: the one-line error, progress bars, timestamps and the scratch
//! file of the demo and the benchmarks.

use indicatif::{ProgressBar, ProgressStyle};

/// A failure to report as one line.
pub(crate) struct CliError(pub(crate) String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

pub(crate) type CliResult = Result<(), CliError>;

pub(crate) fn progress_bar(len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:24} [{bar:40.cyan/blue}] {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// A scratch SQLite file for demo and bench, removed when dropped.
pub(crate) struct Scratch {
    dir: std::path::PathBuf,
}

impl Scratch {
    pub(crate) fn new(tag: &str) -> Result<Self, CliError> {
        let dir = std::env::temp_dir().join(format!("celeriac-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| CliError(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Self { dir })
    }
    pub(crate) fn url(&self) -> String {
        format!("sqlite://{}", self.dir.join("celeriac.db").display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A duration in ms, short, for a table: `850µs`, `12ms`, `1.5s`, `2.0m`, `1.2h`.
pub(crate) fn short_ms(ms: f64) -> String {
    match ms {
        m if m < 1.0 => format!("{:.0}µs", m * 1000.0),
        m if m < 1000.0 => format!("{m:.0}ms"),
        m if m < 60_000.0 => format!("{:.1}s", m / 1000.0),
        m if m < 3_600_000.0 => format!("{:.1}m", m / 60_000.0),
        m => format!("{:.1}h", m / 3_600_000.0),
    }
}

/// Formats milliseconds since the epoch as an RFC 3339 UTC timestamp.
pub(crate) fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_796_036_096_789), "2026-11-30T10:54:56.789Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
