//! A [`RateLimiter`](super::RateLimiter)'s figures: its decisions counted since it was built
//! ([`LimiterCounts`]), a bounded sample of the keys it denied most ([`DeniedKey`]), and
//! their publication to a [`KvStore`], where [`read`] sums the live instances of a limiter
//! (as the cache's statistics are published and read).
//!
//! - **Counting**: atomics, counted where the `metrics` counters are
//!   (`celeriac_rate_limit_decisions_total{limiter, outcome}` and
//!   `celeriac_rate_limit_store_errors_total{limiter}` and
//!   `celeriac_rate_limit_store_paused_total{limiter}`); an allowed call adds one atomic
//!   increment and no allocation.
//! - **Most denied keys**: each denial (shadow denials too) goes through a Space-Saving sample
//!   of [`SAMPLE_CAPACITY`] keys under a short lock: a key denied more than one time in
//!   [`SAMPLE_CAPACITY`] is in it, and a sampled key's count may overstate its denials by at
//!   most its `error`. A key longer than [`SAMPLED_KEY_MAX`] bytes is cut (and ends with `…`).
//! - **Publication** ([`RateLimiter::publish_stats`](super::RateLimiter::publish_stats)):
//!   the instance's [`LimiterStats`] under `<app>:limiter-stats:<limiter>:<instance>`, kept
//!   for [`SNAPSHOT_LIFETIMES`] publication intervals, so an instance that stops drops out
//!   after that; the live instances of a limiter listed under `<app>:limiter-stats:<limiter>`;
//!   and the limiters of an application under `<app>:limiter-stats`. Both lists are updated
//!   under a short lease lock (`<list key>:lock`); a list write that loses the race is made at
//!   the next publication.
//! - **Reading**: [`limiters`] lists the names, [`read`] sums a limiter's live instances
//!   (counts added, sampled keys merged by adding their counts, the [`TOP_KEYS`] highest
//!   kept).
//!
//! Only current counters are kept (one snapshot per live instance), not a time series.

use crate::backend::KvStore;
use crate::clock::UnixMs;
use crate::error::{Error, Result};
use crate::published;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// A publication interval that suits most services (what the cache uses by default).
pub const DEFAULT_PUBLISH_EVERY: Duration = Duration::from_secs(10);

/// A snapshot is kept this many publication intervals.
pub const SNAPSHOT_LIFETIMES: u32 = 3;

/// How many keys the sample of denied keys holds per limiter instance.
pub const SAMPLE_CAPACITY: usize = 32;

/// The longest key the sample keeps, in bytes; longer keys are cut (at a character boundary).
pub const SAMPLED_KEY_MAX: usize = 200;

/// How many of the most denied keys [`read`] keeps after merging the instances' samples.
pub const TOP_KEYS: usize = 20;

/// The longest application or limiter name that may be published, in bytes.
pub const MAX_NAME_LEN: usize = 100;

/// How long the limiter index of an application is kept after its last change; every
/// limiter adds its name again when it is missing.
const INDEX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A limiter's decisions since it was built (or summed over instances).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimiterCounts {
    /// Calls the decision allowed.
    pub allowed: u64,
    /// Calls denied (short-circuited ones included).
    pub denied: u64,
    /// Calls the decision denied but shadow mode let through.
    pub shadow_denied: u64,
    /// Denials made locally from the short-circuit cache, without asking the store (also
    /// counted in `denied`, or in `shadow_denied` in shadow mode).
    pub short_circuited: u64,
    /// Store calls that failed or timed out (the failure mode decided those calls).
    pub store_errors: u64,
    /// Calls the failure mode decided without asking the store, while the store was paused
    /// after consecutive failures ([`RateLimiterBuilder::store_pause`]). Snapshots published
    /// before this count existed read as 0.
    ///
    /// [`RateLimiterBuilder::store_pause`]: super::RateLimiterBuilder::store_pause
    pub store_paused: u64,
}

impl LimiterCounts {
    /// Every decision: allowed, denied and shadow-denied.
    pub fn decisions(&self) -> u64 {
        self.allowed
            .saturating_add(self.denied)
            .saturating_add(self.shadow_denied)
    }

    /// Denials (shadow denials included) out of every decision, or `None` before any.
    pub fn denial_ratio(&self) -> Option<f64> {
        let all = self.decisions();
        (all > 0).then(|| self.denied.saturating_add(self.shadow_denied) as f64 / all as f64)
    }
}

/// Saturating: the figures of other instances are read back from a store.
impl std::ops::AddAssign for LimiterCounts {
    fn add_assign(&mut self, o: Self) {
        self.allowed = self.allowed.saturating_add(o.allowed);
        self.denied = self.denied.saturating_add(o.denied);
        self.shadow_denied = self.shadow_denied.saturating_add(o.shadow_denied);
        self.short_circuited = self.short_circuited.saturating_add(o.short_circuited);
        self.store_errors = self.store_errors.saturating_add(o.store_errors);
        self.store_paused = self.store_paused.saturating_add(o.store_paused);
    }
}

/// A key of the sample of denied keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedKey {
    /// The key as the limiter was given it (cut to [`SAMPLED_KEY_MAX`] bytes, then `…`).
    pub key: String,
    /// Its denials as sampled: at least the true count, at most `error` above it.
    pub count: u64,
    /// How much `count` may overstate (denials of other keys it inherited when it took
    /// their place in a full sample).
    pub error: u64,
}

/// A limiter's figures: one instance's ([`RateLimiter::stats`](super::RateLimiter::stats)),
/// or every live instance's summed ([`read`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimiterStats {
    /// The limiter's name.
    pub limiter: String,
    /// Instances counted (1 for one limiter's own figures).
    pub instances: u32,
    /// Whether it runs in shadow mode (any instance, when summed).
    pub shadow: bool,
    /// Its default quotas, as text (`100/1m; burst=10`).
    pub quotas: Vec<String>,
    /// Its decisions.
    pub counts: LimiterCounts,
    /// The most denied keys, most first.
    pub top_denied: Vec<DeniedKey>,
}

/// One entry of the sample.
#[derive(Debug)]
struct Slot {
    /// The key, cut to [`SAMPLED_KEY_MAX`] bytes.
    key: String,
    /// Whether it was cut.
    cut: bool,
    count: u64,
    error: u64,
}

/// A Space-Saving sample of the most frequent keys (Metwally et al.): `capacity` slots; a
/// key not in a full sample takes the place of the least counted one and inherits its count
/// (recorded as its error).
#[derive(Debug)]
struct Sampler {
    slots: Vec<Slot>,
    capacity: usize,
}

/// `key` cut to at most [`SAMPLED_KEY_MAX`] bytes at a character boundary, and whether it was.
fn cut(key: &str) -> (&str, bool) {
    if key.len() <= SAMPLED_KEY_MAX {
        return (key, false);
    }
    let mut end = SAMPLED_KEY_MAX;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    (&key[..end], true)
}

impl Sampler {
    fn new(capacity: usize) -> Self {
        Sampler {
            slots: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// Counts one occurrence of `key`.
    fn add(&mut self, key: &str) {
        let (key, was_cut) = cut(key);
        if let Some(s) = self
            .slots
            .iter_mut()
            .find(|s| s.cut == was_cut && s.key == key)
        {
            s.count += 1;
            return;
        }
        if self.slots.len() < self.capacity {
            self.slots.push(Slot {
                key: key.to_string(),
                cut: was_cut,
                count: 1,
                error: 0,
            });
            return;
        }
        let Some(least) = self.slots.iter_mut().min_by_key(|s| s.count) else {
            return;
        };
        // The slot's string is reused: no allocation once keys of this length were seen.
        least.key.clear();
        least.key.push_str(key);
        least.cut = was_cut;
        least.error = least.count;
        least.count += 1;
    }

    /// Every sampled key, most counted first (then by key).
    fn top(&self) -> Vec<DeniedKey> {
        let mut out: Vec<DeniedKey> = self
            .slots
            .iter()
            .map(|s| DeniedKey {
                key: if s.cut {
                    format!("{}…", s.key)
                } else {
                    s.key.clone()
                },
                count: s.count,
                error: s.error,
            })
            .collect();
        sort_top(&mut out);
        out
    }
}

fn sort_top(keys: &mut [DeniedKey]) {
    keys.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
}

/// Merges samples of several instances: the counts (and errors) of a key are added, and the
/// `keep` most counted keys are kept, most first.
fn merge_top<I>(samples: I, keep: usize) -> Vec<DeniedKey>
where
    I: IntoIterator,
    I::Item: IntoIterator<Item = DeniedKey>,
{
    let mut by_key: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for sample in samples {
        for k in sample {
            let e = by_key.entry(k.key).or_default();
            e.0 = e.0.saturating_add(k.count);
            e.1 = e.1.saturating_add(k.error);
        }
    }
    let mut out: Vec<DeniedKey> = by_key
        .into_iter()
        .map(|(key, (count, error))| DeniedKey { key, count, error })
        .collect();
    sort_top(&mut out);
    out.truncate(keep);
    out
}

/// A limiter instance's counters and sample.
#[derive(Debug)]
pub(super) struct Counters {
    pub(super) allowed: AtomicU64,
    pub(super) denied: AtomicU64,
    pub(super) shadow_denied: AtomicU64,
    pub(super) short_circuited: AtomicU64,
    pub(super) store_errors: AtomicU64,
    pub(super) store_paused: AtomicU64,
    sample: Mutex<Sampler>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            shadow_denied: AtomicU64::new(0),
            short_circuited: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            store_paused: AtomicU64::new(0),
            sample: Mutex::new(Sampler::new(SAMPLE_CAPACITY)),
        }
    }
}

impl Counters {
    /// Adds one to `counter`.
    pub(super) fn one(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a denial of `key` in the sample.
    pub(super) fn sample_denial(&self, key: &str) {
        self.sample
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(key);
    }

    /// The counts now.
    pub(super) fn counts(&self) -> LimiterCounts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LimiterCounts {
            allowed: l(&self.allowed),
            denied: l(&self.denied),
            shadow_denied: l(&self.shadow_denied),
            short_circuited: l(&self.short_circuited),
            store_errors: l(&self.store_errors),
            store_paused: l(&self.store_paused),
        }
    }

    /// The sampled keys, most denied first.
    pub(super) fn top(&self) -> Vec<DeniedKey> {
        self.sample
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .top()
    }
}

/// One instance's published figures.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    at: UnixMs,
    stats: LimiterStats,
}

/// The key of one instance's snapshot.
fn snapshot_key(app: &str, limiter: &str, instance: &str) -> String {
    format!("{app}:limiter-stats:{limiter}:{instance}")
}

/// The key of a limiter's list of live instances.
fn instances_key(app: &str, limiter: &str) -> String {
    format!("{app}:limiter-stats:{limiter}")
}

/// The key of an application's limiter index.
fn index_key(app: &str) -> String {
    format!("{app}:limiter-stats")
}

/// Checks an application or limiter name for publication: 1 to [`MAX_NAME_LEN`] bytes
/// without `:`, `{` or `}` (as cache names).
///
/// # Errors
/// [`Error::Config`] naming `what`.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains([':', '{', '}']) {
        return Err(Error::config(
            what,
            format!(
                "`{name}` cannot name published rate-limit figures: give 1 to {MAX_NAME_LEN} \
                 bytes without `:`, `{{` or `}}`"
            ),
        ));
    }
    Ok(())
}

fn codec(e: serde_json::Error) -> Error {
    Error::Codec(e.to_string())
}

/// Writes `instance`'s snapshot (kept [`SNAPSHOT_LIFETIMES`] × `every`) and makes sure the
/// instance and the limiter are listed.
pub(super) async fn publish<K: KvStore>(
    kv: &K,
    app: &str,
    instance: &str,
    stats: LimiterStats,
    every: Duration,
    now: UnixMs,
) -> Result<()> {
    let keep = every * SNAPSHOT_LIFETIMES;
    let limiter = stats.limiter.clone();
    let snapshot = serde_json::to_vec(&Snapshot { at: now, stats }).map_err(codec)?;
    let keys = published::Keys {
        snapshot: &snapshot_key(app, &limiter, instance),
        instances: &instances_key(app, &limiter),
        index: &index_key(app),
    };
    published::publish(kv, keys, &limiter, instance, snapshot, keep, INDEX_TTL, now).await
}

/// The limiters of application `app` that published figures (sorted).
///
/// # Errors
/// The store's, when it cannot be read.
pub async fn limiters<K: KvStore>(kv: &K, app: &str, now: UnixMs) -> Result<Vec<String>> {
    published::names(kv, &index_key(app), now).await
}

/// The figures of `limiter` summed over its live instances (none: all zero): counts added,
/// shadow mode if any instance runs in it, the quotas of the latest snapshot, and the sampled
/// keys merged (counts added, the [`TOP_KEYS`] most denied kept).
///
/// # Errors
/// The store's, when it cannot be read.
pub async fn read<K: KvStore>(
    kv: &K,
    app: &str,
    limiter: &str,
    now: UnixMs,
) -> Result<LimiterStats> {
    let snapshots: Vec<Snapshot> = published::live(
        kv,
        &instances_key(app, limiter),
        |id| snapshot_key(app, limiter, id),
        now,
    )
    .await?;
    let mut out = LimiterStats {
        limiter: limiter.to_string(),
        ..LimiterStats::default()
    };
    let mut latest = UnixMs::MIN;
    let mut samples = Vec::new();
    for s in snapshots {
        out.instances += 1;
        out.counts += s.stats.counts;
        out.shadow |= s.stats.shadow;
        if s.at >= latest {
            latest = s.at;
            out.quotas = s.stats.quotas;
        }
        samples.push(s.stats.top_denied);
    }
    out.top_denied = merge_top(samples, TOP_KEYS);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_denied_most_comes_first() {
        let mut s = Sampler::new(SAMPLE_CAPACITY);
        // 100 denials of one key among 300 of 150 others, more keys than the sample holds.
        for i in 0..300 {
            if i % 3 == 0 {
                s.add("user:hot");
            }
            s.add(&format!("ip:10.0.0.{}", i % 150));
        }
        let top = s.top();
        assert_eq!(top[0].key, "user:hot", "{top:?}");
        assert!(top[0].count >= 100, "never below the true count: {top:?}");
        assert!(
            top[0].count - top[0].error <= 100,
            "the error bounds the overstatement: {top:?}"
        );
    }

    #[test]
    fn the_sample_holds_its_capacity_and_every_occurrence() {
        let mut s = Sampler::new(SAMPLE_CAPACITY);
        for i in 0..1000 {
            s.add(&format!("key-{i}"));
        }
        let top = s.top();
        assert_eq!(top.len(), SAMPLE_CAPACITY);
        // Space-Saving keeps the total: every occurrence is counted in some slot.
        assert_eq!(top.iter().map(|k| k.count).sum::<u64>(), 1000);
        assert!(top.windows(2).all(|w| w[0].count >= w[1].count));
    }

    #[test]
    fn exact_counts_while_the_sample_has_room() {
        let mut s = Sampler::new(4);
        for k in ["a", "b", "a", "c", "a", "b"] {
            s.add(k);
        }
        let top: Vec<(String, u64, u64)> = s
            .top()
            .into_iter()
            .map(|k| (k.key, k.count, k.error))
            .collect();
        assert_eq!(
            top,
            vec![
                ("a".to_string(), 3, 0),
                ("b".to_string(), 2, 0),
                ("c".to_string(), 1, 0)
            ]
        );
    }

    #[test]
    fn long_keys_are_cut_at_a_character_boundary() {
        let mut s = Sampler::new(4);
        // 'é' is two bytes: byte 200 falls inside one.
        let long = format!("x{}", "é".repeat(150));
        s.add(&long);
        s.add(&long);
        let top = s.top();
        assert_eq!(top.len(), 1, "one key, counted twice: {top:?}");
        assert_eq!(top[0].count, 2);
        let shown = top[0].key.strip_suffix('…').expect("marked as cut");
        assert_eq!(shown.len(), 199);
        assert!(long.starts_with(shown));
        // A short key equal to the cut prefix is another key.
        s.add(shown);
        assert_eq!(s.top().len(), 2);
    }

    #[test]
    fn merged_samples_add_counts_and_keep_the_top() {
        let key = |k: &str, count| DeniedKey {
            key: k.to_string(),
            count,
            error: 0,
        };
        let a: Vec<DeniedKey> = (0..30).map(|i| key(&format!("a{i:02}"), 1)).collect();
        let b = vec![key("hot", 5), key("a01", 3)];
        let c = vec![key("hot", 4)];
        let merged = merge_top([a, b, c], TOP_KEYS);
        assert_eq!(merged.len(), TOP_KEYS);
        assert_eq!((merged[0].key.as_str(), merged[0].count), ("hot", 9));
        assert_eq!((merged[1].key.as_str(), merged[1].count), ("a01", 4));
        assert_eq!((merged[2].key.as_str(), merged[2].count), ("a00", 1));
    }

    /// Snapshots are read back from a store: counts at the largest add up without overflow.
    #[test]
    fn figures_read_back_at_their_largest_saturate() {
        let big = DeniedKey {
            key: "k".into(),
            count: u64::MAX,
            error: u64::MAX,
        };
        let merged = merge_top([vec![big.clone()], vec![big]], TOP_KEYS);
        assert_eq!((merged[0].count, merged[0].error), (u64::MAX, u64::MAX));
        let mut c = LimiterCounts {
            allowed: u64::MAX,
            denied: u64::MAX,
            shadow_denied: 1,
            short_circuited: u64::MAX,
            store_errors: u64::MAX,
            store_paused: u64::MAX,
        };
        c += c;
        assert_eq!(c.decisions(), u64::MAX);
        assert_eq!(c.store_paused, u64::MAX);
        assert!(c.denial_ratio().is_some());
    }

    #[test]
    fn the_denial_ratio_counts_shadow_denials() {
        let c = LimiterCounts {
            allowed: 6,
            denied: 3,
            shadow_denied: 1,
            short_circuited: 2,
            store_errors: 0,
            store_paused: 0,
        };
        assert_eq!(c.decisions(), 10);
        assert_eq!(c.denial_ratio(), Some(0.4));
        assert_eq!(LimiterCounts::default().denial_ratio(), None);
    }

    /// A snapshot published before a count existed (here `store_paused`) still reads, the
    /// missing count as 0, and so does one missing whole parts.
    #[test]
    fn older_snapshots_still_read() {
        let old = r#"{"at":1700000000000,"stats":{"limiter":"api","instances":1,"shadow":false,
            "quotas":["100/1m"],"counts":{"allowed":7,"denied":2,"shadow_denied":0,
            "short_circuited":1,"store_errors":3},
            "top_denied":[{"key":"u","count":2,"error":0}]}}"#;
        let s: Snapshot = serde_json::from_str(old).expect("an older snapshot reads");
        assert_eq!(s.stats.limiter, "api");
        assert_eq!(
            s.stats.counts,
            LimiterCounts {
                allowed: 7,
                denied: 2,
                shadow_denied: 0,
                short_circuited: 1,
                store_errors: 3,
                store_paused: 0,
            }
        );
        assert_eq!(s.stats.top_denied.len(), 1);
        let bare: Snapshot =
            serde_json::from_str(r#"{"at":1,"stats":{"limiter":"api"}}"#).expect("reads");
        assert_eq!(bare.stats.counts, LimiterCounts::default());
        // And the new count goes out and comes back.
        let c = LimiterCounts {
            store_paused: 5,
            ..LimiterCounts::default()
        };
        let back: LimiterCounts =
            serde_json::from_str(&serde_json::to_string(&c).expect("writes")).expect("reads");
        assert_eq!(back.store_paused, 5);
    }

    #[test]
    fn names_that_would_break_the_keys_are_refused() {
        assert!(check_name("app", "shop").is_ok());
        for bad in ["", "a:b", "{x}", &"n".repeat(MAX_NAME_LEN + 1)] {
            assert!(check_name("app", bad).is_err(), "{bad}");
        }
    }
}
