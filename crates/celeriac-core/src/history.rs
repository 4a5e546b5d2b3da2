//! A worker's side of the [`History`] kept in the store: attempts are tallied in memory per
//! minute, queue and task, and written every few seconds in one call, so the hot path pays a
//! map update per attempt and the store one write per flush, not one per job.
//!
//! What a crash loses is the tally since the last flush (at most [`DEFAULT_FLUSH`]); a flush
//! the store refuses is kept and tried again with the next one.
//!
//! Also here: what readers make of history entries ([`by_queue_and_task`], [`series`],
//! [`Percentiles`]).

use crate::backend::{Counts, History, HistoryEntry, Outcome, Resolution};
use crate::clock::{Clock, UnixMs};
use crate::sketch::Sketch;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How often a worker writes its tally.
pub const DEFAULT_FLUSH: Duration = Duration::from_secs(10);

/// The most entries kept while the store refuses them; beyond it the oldest minutes go.
const MAX_PENDING: usize = 20_000;

/// The tally: per minute and queue (few at a time: a worker serves few queues), per task.
#[derive(Debug, Default)]
struct Tally {
    minutes: Vec<Minute>,
}

#[derive(Debug)]
struct Minute {
    start: UnixMs,
    queue: Arc<str>,
    tasks: HashMap<String, HistoryEntry>,
}

impl Tally {
    /// The entry of `queue` and `task` for the minute holding `at`; allocates only the first
    /// time a minute, queue or task is seen.
    fn entry(&mut self, queue: &Arc<str>, task: &str, at: UnixMs) -> Option<&mut HistoryEntry> {
        let start = Resolution::Minute.start_of(at);
        let i =
            match self.minutes.iter().position(|m| {
                m.start == start && (Arc::ptr_eq(&m.queue, queue) || m.queue == *queue)
            }) {
                Some(i) => i,
                None => {
                    self.minutes.push(Minute {
                        start,
                        queue: queue.clone(),
                        tasks: HashMap::new(),
                    });
                    self.minutes.len() - 1
                }
            };
        let tasks = &mut self.minutes.get_mut(i)?.tasks;
        if !tasks.contains_key(task) {
            tasks.insert(task.to_string(), HistoryEntry::new(start, &**queue, task));
        }
        tasks.get_mut(task)
    }

    fn len(&self) -> usize {
        self.minutes.iter().map(|m| m.tasks.len()).sum()
    }
}

/// The tally of attempts not yet written, shared by a worker's runs.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    pending: Arc<Mutex<Tally>>,
}

/// The history field of an attempt's outcome; `None` for one that never ran (deferred).
fn field_of(outcome: &Outcome) -> Option<&'static str> {
    Some(match outcome {
        Outcome::Succeeded { .. } => "o",
        Outcome::Retry { .. } => "r",
        Outcome::Failed { .. } => "f",
        Outcome::Dead { .. } => "d",
        Outcome::Cancelled => "c",
        Outcome::Deferred { .. } => return None,
    })
}

impl Recorder {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// An attempt started at `at`, its job due `waited_ms` before.
    pub fn started(&self, queue: &Arc<str>, task: &str, at: UnixMs, waited_ms: i64) {
        if let Ok(mut tally) = self.pending.lock() {
            if let Some(e) = tally.entry(queue, task, at) {
                e.counts.started += 1;
                e.wait_ms.add(waited_ms.max(0) as f64);
            }
        }
    }

    /// An attempt ended at `at` after running `ran`, as the store recorded it. A deferred
    /// attempt (it never ran) is not counted.
    pub fn ended(
        &self,
        queue: &Arc<str>,
        task: &str,
        at: UnixMs,
        outcome: &Outcome,
        ran: Duration,
    ) {
        self.ended_all(at, [(queue, task, outcome, ran)]);
    }

    /// Attempts that ended at `at` (queue, task, outcome, run time), under one lock.
    pub fn ended_all<'a>(
        &self,
        at: UnixMs,
        attempts: impl IntoIterator<Item = (&'a Arc<str>, &'a str, &'a Outcome, Duration)>,
    ) {
        let Ok(mut tally) = self.pending.lock() else {
            return;
        };
        for (queue, task, outcome, ran) in attempts {
            let Some(field) = field_of(outcome) else {
                continue;
            };
            if let Some(e) = tally.entry(queue, task, at) {
                if let Some(n) = e.counts.get_mut(field) {
                    *n += 1;
                }
                e.run_ms.add(ran.as_secs_f64() * 1000.0);
            }
        }
    }

    /// Takes what is pending.
    pub fn take(&self) -> Vec<HistoryEntry> {
        match self.pending.lock() {
            Ok(mut tally) => tally
                .minutes
                .drain(..)
                .flat_map(|m| m.tasks.into_values())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Puts back what could not be written, dropping the oldest minutes beyond a bound.
    fn put_back(&self, entries: Vec<HistoryEntry>) {
        let Ok(mut tally) = self.pending.lock() else {
            return;
        };
        for e in entries {
            let queue: Arc<str> = Arc::from(e.queue.as_str());
            if let Some(mine) = tally.entry(&queue, &e.task, e.start) {
                mine.merge(&e);
            }
        }
        let before = tally.len();
        if before > MAX_PENDING {
            // The oldest minutes go first, whole.
            tally.minutes.sort_by_key(|m| std::cmp::Reverse(m.start));
            let mut kept = 0;
            tally.minutes.retain(|m| {
                kept += m.tasks.len();
                kept <= MAX_PENDING
            });
            let dropped = before - tally.len();
            metrics::counter!("celeriac_history_dropped_total").increment(dropped as u64);
            warn!(
                dropped,
                "the store has refused history for long; dropping its oldest minutes"
            );
        }
    }

    /// Writes what is pending; keeps it for the next flush if the store refuses.
    pub async fn flush<B: History>(&self, backend: &B, clock: &dyn Clock) {
        let entries = self.take();
        if entries.is_empty() {
            return;
        }
        if let Err(e) = backend.record(entries.clone(), clock.now_ms()).await {
            debug!(error = %e, "could not write the history; keeping it for the next flush");
            self.put_back(entries);
        }
    }

    /// Flushes every `every` until `stop`, then once more.
    pub async fn flush_loop<B: History>(
        self,
        backend: Arc<B>,
        clock: Arc<dyn Clock>,
        every: Duration,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => self.flush(&*backend, &*clock).await,
                _ = stop.cancelled() => break,
            }
        }
        self.flush(&*backend, &*clock).await;
    }
}

/// The counts of entries summed (whatever their buckets).
pub fn total(entries: &[HistoryEntry]) -> Counts {
    let mut c = Counts::default();
    for e in entries {
        c.add(&e.counts);
    }
    c
}

/// Entries merged per queue and task over the whole period (each keeps the earliest start),
/// sorted by queue and task.
pub fn by_queue_and_task(entries: &[HistoryEntry]) -> Vec<HistoryEntry> {
    let mut groups: BTreeMap<(&str, &str), HistoryEntry> = BTreeMap::new();
    for e in entries {
        groups
            .entry((e.queue.as_str(), e.task.as_str()))
            .and_modify(|g| {
                g.start = g.start.min(e.start);
                g.merge(e);
            })
            .or_insert_with(|| e.clone());
    }
    groups.into_values().collect()
}

/// The counts per bucket start over `starts` (every start present, zero where nothing
/// happened), each merging every queue and task of its bucket.
pub fn series(entries: &[HistoryEntry], starts: &[UnixMs]) -> Vec<(UnixMs, Counts)> {
    let mut by_start: BTreeMap<UnixMs, Counts> =
        starts.iter().map(|s| (*s, Counts::default())).collect();
    for e in entries {
        if let Some(c) = by_start.get_mut(&e.start) {
            c.add(&e.counts);
        }
    }
    by_start.into_iter().collect()
}

/// The usual percentiles of a sketch, in its unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// The median.
    pub p50: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest value.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `sketch`, `None` when it is empty.
    pub fn of(sketch: &Sketch) -> Option<Self> {
        Some(Percentiles {
            p50: sketch.quantile(0.5)?,
            p95: sketch.quantile(0.95)?,
            p99: sketch.quantile(0.99)?,
            max: sketch.max()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ErrorInfo;

    #[test]
    fn attempts_are_tallied_per_minute_queue_and_task() {
        let r = Recorder::new();
        let q: Arc<str> = Arc::from("emails");
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;
        r.started(&q, "send", t0 + 5, 40);
        r.started(&q, "send", t0 + 59_999, 10);
        r.started(&q, "send", t0 + 60_000, 0);
        let ok = Outcome::Succeeded { result: None };
        r.ended(&q, "send", t0 + 10, &ok, Duration::from_millis(25));
        let dead = Outcome::Dead {
            error: ErrorInfo::new("error", "boom", 3),
        };
        r.ended(&q, "send", t0 + 20, &dead, Duration::from_millis(5));
        r.ended(
            &q,
            "send",
            t0 + 30,
            &Outcome::Deferred { at: t0 },
            Duration::ZERO,
        );
        let mut got = r.take();
        got.sort_by_key(|e| e.start);
        assert_eq!(got.len(), 2, "two minutes");
        assert_eq!(got[0].start, t0);
        assert_eq!(
            (
                got[0].counts.started,
                got[0].counts.succeeded,
                got[0].counts.dead
            ),
            (2, 1, 1)
        );
        assert_eq!(got[0].run_ms.count(), 2, "deferred attempts are not timed");
        assert_eq!(got[0].wait_ms.count(), 2);
        assert_eq!(got[1].counts.started, 1);
        assert!(r.take().is_empty(), "taken");
        r.put_back(got.clone());
        r.put_back(got);
        let again = r.take();
        assert_eq!(total(&again).started, 6, "put back twice adds twice");
    }
}
