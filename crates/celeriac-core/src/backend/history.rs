//! [`History`]: what happened per queue and task, per minute and per hour, kept in the store
//! itself, so it survives restarts and needs no Prometheus.
//!
//! Each entry counts jobs enqueued and attempts started, succeeded, retried, failed, dead or
//! cancelled, and keeps run and wait times as [`Sketch`]es, so percentiles of any grouping
//! and period come from merged entries. Stores add what they are given to its minute and to
//! its hour at once (the hour is the minutes compacted as they arrive), keep minutes for
//! [`MINUTES_KEPT_MS`] and hours for [`HOURS_KEPT_MS`], and drop older ones: the size is
//! bounded by the number of queue and task pairs, never by the number of jobs.

use crate::clock::{StoreClock, UnixMs};
use crate::error::{Error, Result};
use crate::sketch::Sketch;
use serde::{Deserialize, Serialize};
use std::future::Future;

/// One minute, in ms.
pub const MINUTE_MS: i64 = 60_000;
/// One hour, in ms.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// How long minutes are kept after they end: 48 hours.
pub const MINUTES_KEPT_MS: i64 = 48 * HOUR_MS;
/// How long hours are kept after they end: 90 days.
pub const HOURS_KEPT_MS: i64 = 90 * 24 * HOUR_MS;
/// The most buckets one [`History::history`] call reads per queue.
pub const MAX_BUCKETS_READ: i64 = 6_000;

/// The span of one history bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
}

impl Resolution {
    /// The bucket's length in ms.
    pub fn span_ms(self) -> i64 {
        match self {
            Resolution::Minute => MINUTE_MS,
            Resolution::Hour => HOUR_MS,
        }
    }

    /// How long a bucket is kept after it ends.
    pub fn kept_ms(self) -> i64 {
        match self {
            Resolution::Minute => MINUTES_KEPT_MS,
            Resolution::Hour => HOURS_KEPT_MS,
        }
    }

    /// The start of the bucket holding `at`.
    pub fn start_of(self, at: UnixMs) -> UnixMs {
        at - at.rem_euclid(self.span_ms())
    }

    /// Whether the bucket starting at `start` is still kept at `now`.
    pub fn is_kept(self, start: UnixMs, now: UnixMs) -> bool {
        start + self.span_ms() + self.kept_ms() > now
    }

    /// The name stores use in keys and rows: `m` or `h`.
    pub fn code(self) -> &'static str {
        match self {
            Resolution::Minute => "m",
            Resolution::Hour => "h",
        }
    }
}

/// What happened in one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Jobs enqueued (counted by the store, as they are stored).
    pub enqueued: u64,
    /// Attempts started.
    pub started: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed and will be tried again.
    pub retried: u64,
    /// Attempts that failed for good.
    pub failed: u64,
    /// Attempts that sent their job to the dead letters.
    pub dead: u64,
    /// Attempts that ended cancelled.
    pub cancelled: u64,
}

impl Counts {
    /// The fields with the short names stores keep them under.
    pub const FIELDS: [&'static str; 7] = ["e", "s", "o", "r", "f", "d", "c"];

    /// The counts in the order of [`FIELDS`](Self::FIELDS).
    pub fn values(&self) -> [u64; 7] {
        [
            self.enqueued,
            self.started,
            self.succeeded,
            self.retried,
            self.failed,
            self.dead,
            self.cancelled,
        ]
    }

    /// The count stored under `field` (one of [`FIELDS`](Self::FIELDS)), if it is one.
    pub fn get_mut(&mut self, field: &str) -> Option<&mut u64> {
        Some(match field {
            "e" => &mut self.enqueued,
            "s" => &mut self.started,
            "o" => &mut self.succeeded,
            "r" => &mut self.retried,
            "f" => &mut self.failed,
            "d" => &mut self.dead,
            "c" => &mut self.cancelled,
            _ => return None,
        })
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Counts) {
        for (field, n) in Self::FIELDS.iter().zip(other.values()) {
            if let Some(c) = self.get_mut(field) {
                *c += n;
            }
        }
    }

    /// Attempts that ended, in any way.
    pub fn ended(&self) -> u64 {
        self.succeeded + self.retried + self.failed + self.dead + self.cancelled
    }

    /// Attempts that ended in an error (retried, failed or dead).
    pub fn errors(&self) -> u64 {
        self.retried + self.failed + self.dead
    }
}

/// What happened to one task's jobs in one queue during one bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The bucket's start (ms, fleet clock); when recording, any moment within the minute.
    pub start: UnixMs,
    /// The queue.
    pub queue: String,
    /// The task.
    pub task: String,
    /// What happened.
    pub counts: Counts,
    /// How long the attempts that ended ran, in ms.
    pub run_ms: Sketch,
    /// How long the attempts that started had waited since their job was due, in ms.
    pub wait_ms: Sketch,
}

impl HistoryEntry {
    /// An empty entry.
    pub fn new(start: UnixMs, queue: impl Into<String>, task: impl Into<String>) -> Self {
        HistoryEntry {
            start,
            queue: queue.into(),
            task: task.into(),
            ..Default::default()
        }
    }

    /// Adds `other`'s counts and times (whatever its bucket, queue and task).
    pub fn merge(&mut self, other: &HistoryEntry) {
        self.counts.add(&other.counts);
        self.run_ms.merge(&other.run_ms);
        self.wait_ms.merge(&other.wait_ms);
    }

    /// Whether nothing happened.
    pub fn is_empty(&self) -> bool {
        self.counts == Counts::default() && self.run_ms.count() == 0 && self.wait_ms.count() == 0
    }
}

/// Which history to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Minutes or hours.
    pub resolution: Resolution,
    /// The first bucket: the one holding this moment.
    pub from: UnixMs,
    /// The end (exclusive): buckets that start before it.
    pub to: UnixMs,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this task.
    pub task: Option<String>,
}

impl HistoryQuery {
    /// Every queue and task between `from` and `to` at `resolution`.
    pub fn new(resolution: Resolution, from: UnixMs, to: UnixMs) -> Self {
        HistoryQuery {
            resolution,
            from,
            to,
            queue: None,
            task: None,
        }
    }

    /// The starts of the buckets it reads, oldest first.
    ///
    /// # Errors
    /// When it spans more than [`MAX_BUCKETS_READ`] buckets.
    pub fn starts(&self) -> Result<Vec<UnixMs>> {
        let span = self.resolution.span_ms();
        let first = self.resolution.start_of(self.from);
        if self.to <= first {
            return Ok(Vec::new());
        }
        let n = (self.to - first + span - 1) / span;
        if n > MAX_BUCKETS_READ {
            return Err(Error::config(
                "history",
                format!(
                    "{n} buckets of one {} asked for; at most {MAX_BUCKETS_READ} are read at once \
                     (use hours for long periods)",
                    match self.resolution {
                        Resolution::Minute => "minute",
                        Resolution::Hour => "hour",
                    }
                ),
            ));
        }
        Ok((0..n).map(|i| first + i * span).collect())
    }

    /// Whether an entry of `queue` and `task` is asked for.
    pub fn wants(&self, queue: &str, task: &str) -> bool {
        self.queue.as_deref().is_none_or(|q| q == queue)
            && self.task.as_deref().is_none_or(|t| t == task)
    }
}

/// Entries of one resolution in one bucket each, merged by start, queue and task (several
/// recorders add to the same ones), sorted that way.
pub fn merge_by_bucket(resolution: Resolution, entries: Vec<HistoryEntry>) -> Vec<HistoryEntry> {
    let mut merged: std::collections::BTreeMap<(UnixMs, String, String), HistoryEntry> =
        std::collections::BTreeMap::new();
    for mut e in entries {
        e.start = resolution.start_of(e.start);
        match merged.entry((e.start, e.queue.clone(), e.task.clone())) {
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().merge(&e),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(e);
            }
        }
    }
    merged.into_values().collect()
}

/// The history store.
pub trait History: StoreClock {
    /// Adds what happened: each entry to the minute and the hour holding its `start`. Buckets
    /// no longer kept at `now` are dropped (whether given or stored).
    fn record(
        &self,
        entries: Vec<HistoryEntry>,
        now: UnixMs,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The entries of the asked buckets that hold something, sorted by start, queue and task.
    fn history(
        &self,
        query: HistoryQuery,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>>> + Send;
}
