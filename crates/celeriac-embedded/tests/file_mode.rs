//! A new database file, its `-wal` and its `-shm` are readable by their owner only (0600)
//! whatever the umask, `?mode=` chooses otherwise, and an existing file keeps its mode.
#![cfg(unix)]

use celeriac_core::{Broker, Job};
use celeriac_embedded::SqliteBackend;
use nix::sys::stat::{umask, Mode};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;

const T0: i64 = 1_700_000_000_000;

/// The umask is the process's: tests that set it take turns.
static UMASK: Mutex<()> = Mutex::const_new(());

/// Runs `f` with the process's umask set to `mask`, then puts the old one back.
async fn with_umask<F: std::future::Future<Output = ()>>(mask: u32, f: impl FnOnce() -> F) {
    let _turn = UMASK.lock().await;
    let old = umask(Mode::from_bits_truncate(mask as _));
    f().await;
    umask(old);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} exists: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The database, its `-wal` and its `-shm`.
fn files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", db.display()));
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

/// Opens `url`, writes a job (so the WAL holds a transaction), and returns the backend, kept
/// open so the `-wal` and `-shm` stay (the last connection to close removes them).
async fn open_and_write(url: &str) -> SqliteBackend {
    let backend = SqliteBackend::connect(url).await.expect("open");
    backend
        .enqueue(vec![Job::new("mode.noop", b"{}".to_vec(), T0)], T0)
        .await
        .expect("enqueue");
    backend
}

/// The mode a plain file created now gets: what the umask leaves of 0666.
fn plain_file_mode(dir: &Path) -> u32 {
    let probe = dir.join("probe");
    std::fs::write(&probe, b"").expect("write a probe file");
    mode(&probe)
}

#[tokio::test]
async fn a_new_database_and_its_wal_and_shm_are_for_their_owner_only() {
    with_umask(0o022, || async {
        let dir = tempfile::tempdir().expect("tempdir");
        // Precondition: under this umask, files come out readable by everyone (SQLite's own
        // default would give 0644).
        assert_eq!(plain_file_mode(dir.path()), 0o644);
        let db = dir.path().join("jobs.db");
        let _backend = open_and_write(&format!("sqlite://{}", db.display())).await;
        for f in files(&db) {
            assert!(f.exists(), "{} was created", f.display());
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    })
    .await;
}

#[tokio::test]
async fn mode_in_the_url_chooses_the_permissions_whatever_the_umask() {
    with_umask(0o077, || async {
        let dir = tempfile::tempdir().expect("tempdir");
        // Precondition: this umask takes the group's bits away from anything created.
        assert_eq!(plain_file_mode(dir.path()), 0o600);
        let db = dir.path().join("shared.db");
        let _backend = open_and_write(&format!("sqlite://{}?mode=0640", db.display())).await;
        for f in files(&db) {
            assert!(f.exists(), "{} was created", f.display());
            assert_eq!(mode(&f), 0o640, "{}", f.display());
        }
    })
    .await;
}

#[tokio::test]
async fn an_existing_database_keeps_its_mode() {
    with_umask(0o022, || async {
        let dir = tempfile::tempdir().expect("tempdir");
        // An empty file is a new database to SQLite.
        let db = dir.path().join("old.db");
        std::fs::write(&db, b"").expect("create the file");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let _backend = open_and_write(&format!("sqlite://{}", db.display())).await;
        assert_eq!(mode(&db), 0o644, "the owner's choice stands");
        // SQLite gives the WAL and shared memory the database's mode.
        for f in &files(&db)[1..] {
            assert!(f.exists(), "{} was created", f.display());
            assert_eq!(mode(f), 0o644, "{}", f.display());
        }
    })
    .await;
}

#[tokio::test]
async fn a_bad_mode_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("never.db");
    for bad in ["0400", "rw", "0999", "07777"] {
        let err = SqliteBackend::connect(&format!("sqlite://{}?mode={bad}", db.display()))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("url: mode"), "{bad}: {err}");
        assert!(err.contains(bad), "names the value {bad}: {err}");
    }
    assert!(!db.exists(), "nothing was created");
}
