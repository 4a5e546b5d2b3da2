//! Real storage faults for tests: a small tmpfs that a filler file fills up, and files made
//! immutable (`chattr +i`), which even root cannot write. Both need root; a test that cannot
//! set its fault up fails with a message that says why, and never passes without it.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command, panicking with its output if it fails.
fn must(program: &str, args: &[&str], why: &str) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{why}: cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{why}: `{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A tmpfs of a fixed size mounted on a temporary directory, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (needs root: `mount -t tmpfs -o size=...`).
    pub fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().display().to_string();
        must(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "tmpfs",
                &path,
            ],
            "this test needs a small tmpfs to fill (run it as root)",
        );
        Self { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a filler file, leaving about `leave` bytes free (less if
    /// that much was not free); [`Filler::remove`] gives the space back.
    pub fn fill(&self, leave: u64) -> Filler {
        let path = self.path().join("filler");
        let mut file = File::create(&path).expect("create the filler file");
        let chunk = vec![0xA5u8; 64 * 1024];
        let mut written: u64 = 0;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) || e.kind() == ErrorKind::StorageFull => {
                    break
                }
                Err(e) => panic!("filling the tmpfs failed unexpectedly: {e}"),
            }
        }
        let keep = written.saturating_sub(leave);
        file.set_len(keep).expect("truncate the filler");
        file.sync_all().expect("sync the filler");
        assert!(
            keep > 0,
            "the filler took no space: the tmpfs was already full"
        );
        Filler { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so it detaches even while a backend of a failed test still holds files.
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

/// The file that fills a [`Tmpfs`].
pub struct Filler {
    path: PathBuf,
}

impl Filler {
    /// Gives the space back.
    pub fn remove(self) {
        std::fs::remove_file(&self.path).expect("remove the filler");
    }
}

/// Files made immutable (`chattr +i`): every write to them fails, even by root and through
/// descriptors opened before. Made writable again on drop.
pub struct Immutable {
    files: Vec<PathBuf>,
}

impl Immutable {
    /// Makes `files` immutable and checks that writing them really fails.
    pub fn set(files: &[PathBuf]) -> Self {
        let this = Self {
            files: files.to_vec(),
        };
        for f in files {
            must(
                "chattr",
                &["+i", &f.display().to_string()],
                "this test makes files immutable (run it as root on a file system with chattr \
                 support, such as ext4)",
            );
            let write = OpenOptions::new().append(true).open(f);
            assert!(
                write.is_err(),
                "{} is still writable after chattr +i",
                f.display()
            );
        }
        this
    }

    /// Makes the files writable again.
    pub fn clear(mut self) {
        self.unset();
    }

    fn unset(&mut self) {
        for f in self.files.drain(..) {
            let _ = Command::new("chattr").arg("-i").arg(&f).status();
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        self.unset();
    }
}
