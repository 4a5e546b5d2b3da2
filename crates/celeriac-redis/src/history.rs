//! [`History`] on Redis: one HASH per queue, resolution and bucket
//! (`<prefix>:{<queue>}:hist:<m|h>:<start>`, see `keys.rs`) of `<code>|<task>` fields. A
//! record adds each queue's minute to its minute and hour buckets in one script call
//! (`recordHistory-N`); each bucket expires when it is no longer kept (a TTL from the
//! caller's clock, as every time a script judges). Jobs enqueued are
//! added by the enqueue script itself.

use crate::conn::map_err;
use crate::RedisBackend;
use celeriac_core::backend::{Counts, History, HistoryEntry, HistoryQuery, Resolution};
use celeriac_core::error::Result;
use celeriac_core::sketch::{Sketch, MAX_BUCKETS, MIN_VALUE, RELATIVE_ERROR};
use celeriac_core::UnixMs;
use std::collections::{BTreeMap, HashMap};

const RESOLUTIONS: [Resolution; 2] = [Resolution::Minute, Resolution::Hour];

impl RedisBackend {
    fn history_key(&self, queue: &str, res: Resolution, start: UnixMs) -> String {
        crate::keys::history_key(&self.inner.config.prefix, queue, res.code(), start)
    }
}

/// The fields of one entry, as `recordHistory-N` adds them.
pub(crate) fn fields(e: &HistoryEntry, out: &mut Vec<(String, String)>) {
    let task = &e.task;
    for (code, n) in Counts::FIELDS.iter().zip(e.counts.values()) {
        if n > 0 {
            out.push((format!("{code}|{task}"), n.to_string()));
        }
    }
    for (letter, s) in [('R', &e.run_ms), ('W', &e.wait_ms)] {
        if s.count() == 0 {
            continue;
        }
        for (i, n) in s.buckets() {
            out.push((format!("{letter}{i}|{task}"), n.to_string()));
        }
        if s.zeros() > 0 {
            out.push((format!("{letter}z|{task}"), s.zeros().to_string()));
        }
        out.push((format!("{letter}s|{task}"), format!("{:?}", s.sum())));
        if let (Some(min), Some(max)) = (s.min(), s.max()) {
            out.push((format!("{letter}l|{task}"), format!("{min:?}")));
            out.push((format!("{letter}h|{task}"), format!("{max:?}")));
        }
    }
}

/// The largest count a stored field reads as: more than any store records in one bucket, and
/// small enough that sums over every bucket of a sketch, and over the buckets of months, never
/// overflow.
const MAX_COUNT: u64 = u32::MAX as u64;

/// The sketch bucket indexes a value can have: from just above [`MIN_VALUE`] (smaller values
/// count as zeros) to `f64::MAX`. An index outside them was not written by a sketch; reading it
/// would make the sketch span (and allocate) the distance between the indexes.
fn sketch_indexes() -> std::ops::RangeInclusive<i32> {
    let ln_gamma = ((1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)).ln();
    let index = |v: f64| (v.ln() / ln_gamma).ceil() as i32;
    index(MIN_VALUE)..=index(f64::MAX)
}

/// A stored count, at most [`MAX_COUNT`]; `None` if it is no number.
fn stored_count(value: &str) -> Option<u64> {
    value.parse::<u64>().ok().map(|n| n.min(MAX_COUNT))
}

/// The parts of one task's sketch while a bucket is read.
#[derive(Default)]
struct Parts {
    /// Bucket counts by index: one entry per index, however many fields spell it
    /// (`R7`, `R07`, `R+7`).
    buckets: BTreeMap<i32, u64>,
    zeros: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Parts {
    /// The sketch, its lowest buckets folded as the sketch itself folds them (at most
    /// [`MAX_BUCKETS`] from the highest down), so rebuilding it spans no more than that.
    fn sketch(mut self) -> Sketch {
        if let Some(&top) = self.buckets.keys().next_back() {
            let lowest_kept = top.saturating_sub(MAX_BUCKETS as i32 - 1);
            let kept = self.buckets.split_off(&lowest_kept);
            let folded: u64 = self.buckets.values().sum();
            self.buckets = kept;
            if folded > 0 {
                let c = self.buckets.entry(lowest_kept).or_default();
                *c = c.saturating_add(folded).min(MAX_COUNT);
            }
        }
        Sketch::from_parts(self.buckets, self.zeros, self.sum, self.min, self.max)
    }
}

/// The entries of one bucket's hash; fields that cannot be read are skipped, counts read as at
/// most [`MAX_COUNT`], and sketch indexes no value can have are skipped, so what another
/// process wrote cannot make a reader overflow or allocate without bound.
pub(crate) fn entries_of(
    queue: &str,
    start: UnixMs,
    hash: HashMap<String, String>,
    query: &HistoryQuery,
) -> Vec<HistoryEntry> {
    let indexes = sketch_indexes();
    let mut tasks: BTreeMap<String, (HistoryEntry, Parts, Parts)> = BTreeMap::new();
    for (field, value) in hash {
        let Some((code, task)) = field.split_once('|') else {
            continue;
        };
        if !query.wants(queue, task) {
            continue;
        }
        let (e, run, wait) = tasks.entry(task.to_string()).or_insert_with(|| {
            (
                HistoryEntry::new(start, queue, task),
                Parts::default(),
                Parts::default(),
            )
        });
        if let Some(c) = e.counts.get_mut(code) {
            *c = stored_count(&value).unwrap_or(0);
            continue;
        }
        let mut chars = code.chars();
        let parts = match chars.next() {
            Some('R') => &mut *run,
            Some('W') => &mut *wait,
            _ => continue,
        };
        match chars.as_str() {
            "z" => parts.zeros = stored_count(&value).unwrap_or(0),
            "s" => parts.sum = value.parse().unwrap_or(0.0),
            "l" => parts.min = value.parse().ok(),
            "h" => parts.max = value.parse().ok(),
            index => {
                if let (Ok(i), Some(n)) = (index.parse::<i32>(), stored_count(&value)) {
                    if indexes.contains(&i) {
                        let c = parts.buckets.entry(i).or_default();
                        *c = c.saturating_add(n).min(MAX_COUNT);
                    }
                }
            }
        }
    }
    tasks
        .into_values()
        .map(|(mut e, run, wait)| {
            e.run_ms = run.sketch();
            e.wait_ms = wait.sketch();
            e
        })
        .filter(|e| !e.is_empty())
        .collect()
}

impl History for RedisBackend {
    async fn record(&self, entries: Vec<HistoryEntry>, now: UnixMs) -> Result<()> {
        let mut by_minute: BTreeMap<(String, UnixMs), Vec<HistoryEntry>> = BTreeMap::new();
        for e in entries {
            let minute = Resolution::Minute.start_of(e.start);
            by_minute
                .entry((e.queue.clone(), minute))
                .or_default()
                .push(e);
        }
        // Reading every queue's history starts from the set of queue names.
        self.remember_queues(by_minute.keys().map(|(q, _)| q.as_str()))
            .await?;
        for ((queue, minute), entries) in by_minute {
            let kept: Vec<(String, UnixMs)> = RESOLUTIONS
                .iter()
                .map(|&res| (res, res.start_of(minute)))
                .filter(|&(res, start)| res.is_kept(start, now))
                .map(|(res, start)| {
                    let key = self.history_key(&queue, res, start);
                    (key, start + res.span_ms() + res.kept_ms() - now)
                })
                .collect();
            if kept.is_empty() {
                continue;
            }
            let mut pairs = Vec::new();
            for e in &entries {
                fields(e, &mut pairs);
            }
            if pairs.is_empty() {
                continue;
            }
            let mut call = self.inner.scripts.record_history.prepare_invoke();
            for (key, _) in &kept {
                call.key(key);
            }
            for (_, ttl) in &kept {
                call.arg(ttl);
            }
            for (field, value) in &pairs {
                call.arg(field).arg(value);
            }
            let _: i64 = call.invoke_async(&mut self.conn()).await.map_err(map_err)?;
        }
        Ok(())
    }

    async fn history(&self, query: HistoryQuery) -> Result<Vec<HistoryEntry>> {
        let starts = query.starts()?;
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let queues = match &query.queue {
            Some(q) => vec![q.clone()],
            None => self.all_queues().await?,
        };
        let mut out = Vec::new();
        for queue in queues {
            // One pipeline per queue and slice: every key of it is on the queue's slot.
            for slice in starts.chunks(500) {
                let mut pipe = redis::pipe();
                for &start in slice {
                    pipe.hgetall(self.history_key(&queue, query.resolution, start));
                }
                let hashes: Vec<HashMap<String, String>> =
                    pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
                for (&start, hash) in slice.iter().zip(hashes) {
                    if !hash.is_empty() {
                        out.extend(entries_of(&queue, start, hash, &query));
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.start, &a.queue, &a.task).cmp(&(b.start, &b.queue, &b.task)));
        Ok(out)
    }
}
