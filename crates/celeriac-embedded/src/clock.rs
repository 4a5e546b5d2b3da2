//! The fleet's clock on SQLite: every process of the file runs on one host, so they share its
//! boot clock, which no wall-clock step moves. The file keeps an anchor, the wall time the
//! fleet agreed on at one reading of the boot clock; every process reads the fleet's time as
//! that wall time plus how far the boot clock has run since.
//!
//! After a step of the host's wall clock, the fleet clock stays where it was (so no lease
//! expires early and no delayed job starts late) and then slews towards the wall clock by at
//! most [`SLEW_STEP`] every [`SLEW_EVERY`] across all processes: a one-minute step is absorbed
//! in twenty minutes, during which leases run at most 5% short. A reboot (a new boot id, or a
//! boot clock below the anchor's) starts a new anchor at the wall clock.

use crate::Inner;
use celeriac_core::clock::{system_now_ms, TimeSource, UnixMs};
use celeriac_core::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::Weak;

/// The most the anchor moves towards the wall clock at once.
pub(crate) const SLEW_STEP: i64 = 500;
/// The least boot-clock time between two moves of the anchor.
pub(crate) const SLEW_EVERY: i64 = 10_000;
/// How far the fleet clock may be from the wall clock before it is slewed.
const SLEW_ABOVE: i64 = 1_000;

/// The host's boot clock, in milliseconds: it counts through suspends and ignores steps of
/// the wall clock. Where there is none, the wall clock (and no protection against steps).
pub(crate) fn boot_now_ms() -> i64 {
    #[cfg(target_os = "linux")]
    let id = nix::time::ClockId::CLOCK_BOOTTIME;
    #[cfg(all(unix, not(target_os = "linux")))]
    let id = nix::time::ClockId::CLOCK_MONOTONIC;
    #[cfg(unix)]
    if let Ok(t) = nix::time::clock_gettime(id) {
        return t.tv_sec().saturating_mul(1000) + t.tv_nsec() / 1_000_000;
    }
    system_now_ms()
}

/// This boot of the host (Linux's boot id), or empty where unknown.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The anchor as read (and set or slewed if due): (wall ms, boot ms).
pub(crate) fn anchor(
    c: &Connection,
    boot: &str,
    wall_now: UnixMs,
    boot_now: i64,
) -> rusqlite::Result<(i64, i64)> {
    let row: Option<(String, i64, i64, i64)> = c
        .query_row(
            "SELECT boot_id, wall_ms, boot_ms, slewed_at FROM celeriac_clock WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((id, wall, at, slewed)) = row.filter(|(id, _, at, _)| id == boot && *at <= boot_now)
    else {
        c.execute(
            "INSERT OR REPLACE INTO celeriac_clock (id, boot_id, wall_ms, boot_ms, slewed_at) \
             VALUES (1, ?1, ?2, ?3, ?3)",
            params![boot, wall_now, boot_now],
        )?;
        return Ok((wall_now, boot_now));
    };
    let _ = id;
    let off = wall_now - (wall + (boot_now - at));
    if off.abs() > SLEW_ABOVE && boot_now - slewed >= SLEW_EVERY {
        let step = off.clamp(-SLEW_STEP, SLEW_STEP);
        c.execute(
            "UPDATE celeriac_clock SET wall_ms = wall_ms + ?1, slewed_at = ?2 WHERE id = 1",
            params![step, boot_now],
        )?;
        return Ok((wall + step, at));
    }
    Ok((wall, at))
}

/// Reads the fleet's time from the file's anchor and the boot clock.
pub(crate) struct HostTime {
    pub(crate) inner: Weak<Inner>,
    pub(crate) boot: String,
}

impl TimeSource for HostTime {
    async fn store_now(&self) -> Result<UnixMs> {
        let inner = self.inner.upgrade().ok_or(Error::Closed)?;
        let boot = self.boot.clone();
        let (wall, at) = inner
            .writer
            .call(move |c| anchor(c, &boot, system_now_ms(), boot_now_ms()))
            .await?;
        Ok(wall + (boot_now_ms() - at))
    }

    fn exact(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "the host's boot clock"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().expect("memory");
        c.execute_batch(include_str!("schema.sql")).expect("schema");
        c
    }

    #[test]
    fn the_anchor_holds_through_a_wall_step_and_slews_back() {
        let c = db();
        assert_eq!(
            anchor(&c, "b1", 1_000_000, 50).expect("read"),
            (1_000_000, 50)
        );
        // 5 s later by the boot clock, the wall clock has stepped forward a minute.
        let (wall, at) = anchor(&c, "b1", 1_065_000, 5_050).expect("read");
        assert_eq!(
            wall + (5_050 - at),
            1_005_000,
            "the fleet clock ignores the step"
        );
        // 10 s after the anchor, one slew step towards the wall clock, then none for 10 s.
        let (wall, at) = anchor(&c, "b1", 1_070_000, 10_050).expect("read");
        assert_eq!(wall + (10_050 - at), 1_010_000 + SLEW_STEP);
        let (wall, at) = anchor(&c, "b1", 1_075_000, 15_050).expect("read");
        assert_eq!(wall + (15_050 - at), 1_015_000 + SLEW_STEP);
        let (wall, at) = anchor(&c, "b1", 1_080_000, 20_050).expect("read");
        assert_eq!(wall + (20_050 - at), 1_020_000 + 2 * SLEW_STEP);
        // A backward step slews the other way, never faster.
        let (wall, at) = anchor(&c, "b1", 900_000, 30_050).expect("read");
        assert_eq!(wall + (30_050 - at), 1_030_000 + SLEW_STEP);
    }

    #[test]
    fn a_reboot_starts_a_new_anchor() {
        let c = db();
        anchor(&c, "b1", 1_000_000, 50_000).expect("read");
        assert_eq!(
            anchor(&c, "b2", 2_000_000, 10).expect("read"),
            (2_000_000, 10)
        );
        // The same boot id but a boot clock below the anchor's: a reboot too.
        assert_eq!(
            anchor(&c, "b2", 3_000_000, 5).expect("read"),
            (3_000_000, 5)
        );
    }
}
