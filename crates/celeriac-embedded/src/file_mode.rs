//! Who may read a new database file: its owner only (0600) unless `?mode=` says otherwise.
//!
//! SQLite creates a database with 0644 less the umask, so by default every user of the host
//! could read the jobs' arguments and results. The file is therefore created here, with the
//! mode asked for (set exactly, whatever the umask), before SQLite opens it. SQLite gives the
//! `-wal` and `-shm` files it creates later the permissions of the database file, so they
//! follow. A file that exists already keeps its mode: changing it is its owner's decision.

use celeriac_core::error::{Error, ErrorKind, Result};
use std::path::Path;

/// The mode of a new database file unless the URL's `?mode=` says otherwise.
pub const DEFAULT_FILE_MODE: u32 = 0o600;

/// Parses the value of `?mode=`: three or four octal digits (`0600`, `640`) that let the owner
/// read and write (SQLite needs both) and set no bits beyond the permissions (`0o777`).
pub(crate) fn parse(v: &str) -> Result<u32> {
    let bad = || {
        Error::config(
            "url: mode",
            format!(
                "`{v}` is not a file mode: give three or four octal digits that let the owner \
                 read and write, such as mode=0600 (the default) or mode=0640"
            ),
        )
    };
    if !(3..=4).contains(&v.len()) || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    let mode = u32::from_str_radix(v, 8).map_err(|_| bad())?;
    if mode > 0o777 || mode & 0o600 != 0o600 {
        return Err(bad());
    }
    Ok(mode)
}

/// Creates the database file at `path` with exactly `mode` if it does not exist yet; leaves an
/// existing file (or whatever else is at `path`) as it is, for SQLite to open or refuse.
///
/// # Errors
/// The file cannot be created (the directory is not writable, the disk is full), naming it.
#[cfg(unix)]
pub(crate) fn create(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| {
        Error::backend(
            ErrorKind::GiveUp,
            format!(
                "cannot use the SQLite database at {}: cannot create the file: {e}",
                path.display()
            ),
        )
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        // The umask may have taken bits away from what was asked for: set them exactly. The
        // empty file is a new database to SQLite.
        Ok(file) => file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(fail),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(fail(e)),
    }
}

/// No modes to set off Unix: SQLite creates the file with the system's defaults.
#[cfg(not(unix))]
pub(crate) fn create(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_bad_ones_name_the_setting() {
        assert_eq!(parse("0600").ok(), Some(0o600));
        assert_eq!(parse("640").ok(), Some(0o640));
        assert_eq!(parse("0660").ok(), Some(0o660));
        for bad in [
            "", "6", "60", "0o640", "0800", "rw", "0400", "0200", "04600", "1777", "-600",
        ] {
            let err = parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("url: mode"), "{bad:?}: {err}");
        }
    }
}
