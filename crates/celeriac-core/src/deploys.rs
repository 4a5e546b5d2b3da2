//! Deploys as the process registry saw them: each Celeriac version, with the moment its first
//! process started. Charts mark them, so a change in throughput or errors can be laid
//! against the release that came with it.
//!
//! Whoever reads the registry to show the fleet (the process publishing the fleet gauges, the
//! dashboard) [`observe`]s it; the list lives in the store's key-value space, capped at
//! [`KEPT`] versions and kept as long as the history's hours.

use crate::backend::{KvEntry, KvStore, ProcessInfo, HOURS_KEPT_MS};
use crate::clock::UnixMs;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where the list lives in the store's key-value space.
pub const KEY: &str = "celeriac:deploys";

/// The most versions kept; older ones drop off.
pub const KEPT: usize = 200;

/// One version, first seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    /// The version its processes report.
    pub version: String,
    /// When the earliest of them started (fleet clock, ms).
    pub at: UnixMs,
}

/// The versions seen, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploys {
    /// The versions.
    pub seen: Vec<Deploy>,
}

impl Deploys {
    /// The list kept in `store` (empty when none is, or it cannot be read back).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn load<B: KvStore>(store: &B, now: UnixMs) -> Result<Self> {
        let stored = store.kv_get(vec![KEY.to_string()], now).await?;
        Ok(stored
            .first()
            .and_then(|v| v.as_deref())
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default())
    }

    /// Adds the versions of `processes` not seen before, each at the earliest start among its
    /// processes; returns whether any was added.
    pub fn note(&mut self, processes: &[ProcessInfo]) -> bool {
        let mut added = false;
        for p in processes {
            if p.version.is_empty() {
                continue;
            }
            let newest = self.is_newest(&p.version);
            match self.seen.iter_mut().find(|d| d.version == p.version) {
                // A process of the newest version started earlier than noted (it was first
                // seen late): keep the earliest.
                Some(d) if p.started_at < d.at && newest => {
                    d.at = p.started_at;
                    added = true;
                }
                Some(_) => {}
                None => {
                    self.seen.push(Deploy {
                        version: p.version.clone(),
                        at: p.started_at,
                    });
                    added = true;
                }
            }
        }
        if added {
            self.seen.sort_by_key(|d| d.at);
            let over = self.seen.len().saturating_sub(KEPT);
            self.seen.drain(..over);
        }
        added
    }

    fn is_newest(&self, version: &str) -> bool {
        self.seen.last().is_some_and(|d| d.version == version)
    }

    /// The moments of the deploys in `[from, to)`.
    pub fn between(&self, from: UnixMs, to: UnixMs) -> Vec<UnixMs> {
        self.seen
            .iter()
            .filter(|d| d.at >= from && d.at < to)
            .map(|d| d.at)
            .collect()
    }

    /// Keeps the list in `store`.
    ///
    /// # Errors
    /// When the store refuses it.
    pub async fn save<B: KvStore>(&self, store: &B, now: UnixMs) -> Result<()> {
        let value = serde_json::to_vec(self).map_err(|e| Error::Codec(format!("deploys: {e}")))?;
        let ttl = Duration::from_millis(u64::try_from(HOURS_KEPT_MS).unwrap_or(u64::MAX));
        store
            .kv_set(
                vec![KvEntry {
                    key: KEY.to_string(),
                    value,
                    ttl,
                }],
                now,
            )
            .await
    }
}

/// Notes the versions `processes` run in the list kept in `store` (one read, and one write
/// when a version is new) and returns the list.
///
/// Two observers that see two new versions at the same moment may each keep only their own;
/// the next observation adds the other back while its processes live.
///
/// # Errors
/// When the store cannot be read or written.
pub async fn observe<B: KvStore>(
    store: &B,
    processes: &[ProcessInfo],
    now: UnixMs,
) -> Result<Deploys> {
    let mut deploys = Deploys::load(store, now).await?;
    if deploys.note(processes) {
        deploys.save(store, now).await?;
    }
    Ok(deploys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ProcessKind, ProcessState};

    fn process(version: &str, started_at: UnixMs) -> ProcessInfo {
        ProcessInfo {
            id: format!("w-{version}-{started_at}"),
            kind: ProcessKind::Worker,
            host: "h".into(),
            pid: 1,
            version: version.into(),
            started_at,
            queues: Vec::new(),
            concurrency: 1,
            busy: 0,
            running: Vec::new(),
            rss_bytes: None,
            store_rtt_us: None,
            clock_offset_ms: 0,
            state: ProcessState::Running,
            leader: false,
            seen_at: started_at,
            expires_at: started_at + 15_000,
        }
    }

    #[test]
    fn each_version_is_noted_once_at_its_first_start() {
        let mut d = Deploys::default();
        assert!(d.note(&[process("1.0", 1_000), process("1.0", 900)]));
        assert_eq!(
            d.seen,
            vec![Deploy {
                version: "1.0".into(),
                at: 900
            }]
        );
        assert!(!d.note(&[process("1.0", 5_000)]), "nothing new");
        assert!(d.note(&[process("1.0", 5_000), process("1.1", 6_000)]));
        assert!(
            d.note(&[process("1.1", 5_500)]),
            "an earlier start of the newest"
        );
        assert_eq!(d.between(0, 10_000), vec![900, 5_500]);
        assert_eq!(d.between(1_000, 10_000), vec![5_500]);
        // An old version still running is not a new deploy.
        assert!(!d.note(&[process("1.0", 100)]));
        assert!(
            !d.note(&[process("", 100)]),
            "a process with no version adds nothing"
        );
    }

    #[test]
    fn the_list_is_capped() {
        let mut d = Deploys::default();
        for i in 0..(KEPT as i64 + 5) {
            d.note(&[process(&format!("v{i}"), i * 1000)]);
        }
        assert_eq!(d.seen.len(), KEPT);
        assert_eq!(d.seen[0].version, "v5", "the oldest dropped off");
    }
}
