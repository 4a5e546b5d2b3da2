//! The L1 bounded in bytes ([`CacheBuilder::l1_max_bytes`]) over the embedded SQLite store:
//! its weighted size stays within the bound under values of mixed sizes, the entry bound still
//! holds, a value heavier than the whole bound is served but not kept, each entry weighs what
//! the documentation says, and the L1's departures are counted by cause (size, expiry,
//! removal) consistently with what entered it.

use celeriac_cache::{Cache, CacheBuilder, CacheStats, L1_ENTRY_OVERHEAD};
use celeriac_core::clock::{Clock, ManualClock, UnixMs};
use celeriac_embedded::SqliteBackend;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const T0: UnixMs = 1_700_000_000_000;
/// An envelope's bytes before its tags and value (see `Envelope::size`).
const HEADER: u64 = 38;

type Texts = Cache<str, String, SqliteBackend>;

async fn texts(
    namespace: &str,
    clock: Option<&ManualClock>,
    configure: impl FnOnce(CacheBuilder<str, String>) -> CacheBuilder<str, String>,
) -> Texts {
    let store = Arc::new(SqliteBackend::memory().await.expect("the store opens"));
    let mut builder = Cache::<str, String, ()>::builder(namespace)
        .ttl(Duration::from_secs(3600))
        .early_refresh(0.0)
        .stats_interval(None);
    if let Some(clock) = clock {
        let clock: Arc<dyn Clock> = Arc::new(clock.clone());
        builder = builder.clock(clock);
    }
    configure(builder)
        .build(store)
        .await
        .expect("the cache builds")
}

/// What `key` with a string value of `len` bytes weighs in an L1 whose entries' share is
/// `share`: the key, the envelope (header, no tags, the JSON string with its quotes) and the
/// fixed overhead.
fn weight(key: &str, len: usize, share: u64) -> u64 {
    (u64::from(L1_ENTRY_OVERHEAD) + key.len() as u64 + HEADER + len as u64 + 2).max(share)
}

/// Every entry that entered the L1 (`entered`, as the test counts them) is in it, or left it
/// for one counted cause.
fn assert_accounted(entered: u64, s: &CacheStats) {
    assert_eq!(s.l1_added, entered, "entries that entered the L1: {s:?}");
    assert_eq!(
        entered,
        s.l1_entries + s.l1_evicted_size + s.l1_expired + s.l1_removed,
        "every entry that entered the L1 is there or counted by cause: {s:?}"
    );
    assert_eq!(s.evictions, s.l1_evicted_size + s.l1_expired, "{s:?}");
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A size from 1 B to 64 KiB, spread over the powers of two (as many tiny as large).
    fn size(&mut self) -> usize {
        let bits = self.next() % 17; // 2^0 ..= 2^16
        let top = 1u64 << bits;
        (top / 2 + self.next() % (top / 2 + 1)).clamp(1, 1 << 16) as usize
    }
}

#[tokio::test]
async fn a_1_mib_l1_stays_within_it_under_values_of_mixed_sizes() {
    const ENTRIES: u64 = 10_000;
    let cache = texts("mixed", None, |b| {
        b.l1(ENTRIES, Duration::from_secs(3600)).l1_max_bytes(MIB)
    })
    .await;
    let share = MIB / ENTRIES;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut written, mut written_weight, mut sizes) = (0u64, 0u64, Vec::new());
    let mut max_seen = 0;
    for batch in 0..30 {
        for i in 0..100 {
            let key = format!("k{batch}-{i}");
            let len = rng.size();
            cache.set(&key, "x".repeat(len)).await.expect("set");
            written += 1;
            written_weight += weight(&key, len, share);
            sizes.push((key, len));
        }
        // Reads of earlier keys: L1 hits, or L2 hits that enter the L1 again.
        for _ in 0..50 {
            let (key, len) = &sizes[(rng.next() % sizes.len() as u64) as usize];
            let got = cache.get(key.as_str()).await.expect("get");
            assert_eq!(got.map(|v| v.len()), Some(*len), "{key} is served whole");
        }
        let s = cache.stats();
        assert!(
            s.l1_weighted_bytes <= MIB,
            "batch {batch}: the L1 weighs {} > 1 MiB: {s:?}",
            s.l1_weighted_bytes
        );
        assert!(s.l1_entries <= ENTRIES, "batch {batch}: {s:?}");
        assert_eq!(s.l1_max_bytes, MIB);
        assert_accounted(written + s.l2_hits, &s);
        max_seen = max_seen.max(s.l1_weighted_bytes);
    }
    let s = cache.stats();
    assert!(
        written_weight > 10 * MIB,
        "precondition: far more than the bound was written ({written_weight} bytes)"
    );
    assert!(
        s.l1_evicted_size > 0,
        "entries were evicted for size: {s:?}"
    );
    assert!(
        s.l2_hits > 0,
        "evicted values were read back from the L2: {s:?}"
    );
    assert!(
        max_seen > MIB / 2,
        "the bound was what limited the L1, not something smaller: {max_seen}"
    );
    assert_eq!(
        s.l1_expired + s.l1_removed,
        0,
        "nothing expired or removed: {s:?}"
    );
}

#[tokio::test]
async fn each_entry_weighs_its_key_envelope_and_overhead() {
    const ENTRIES: u64 = 1_000;
    let cache = texts("weights", None, |b| {
        b.l1(ENTRIES, Duration::from_secs(3600)).l1_max_bytes(MIB)
    })
    .await;
    let share = MIB / ENTRIES;
    let mut expected = 0;
    // Below the bound altogether (about 400 KiB): nothing is evicted, every weight counts.
    for (i, len) in [
        0usize, 1, 10, 100, 700, 1_000, 4_096, 65_536, 65_536, 262_144,
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("w{i}");
        cache.set(&key, "y".repeat(len)).await.expect("set");
        expected += weight(&key, len, share);
    }
    let s = cache.stats();
    assert_eq!(s.l1_entries, 10, "all kept: {s:?}");
    assert_eq!(s.l1_evicted_size, 0, "{s:?}");
    assert_eq!(
        s.l1_weighted_bytes, expected,
        "the weighted size is the sum of the documented weights"
    );
    // A small value weighs its share (up to 700 bytes here), a larger one its bytes.
    assert!(weight("w0", 0, share) == share && weight("w5", 1_000, share) > share);
}

#[tokio::test]
async fn the_entry_bound_holds_with_a_byte_bound() {
    const ENTRIES: u64 = 100;
    let cache = texts("entries", None, |b| {
        b.l1(ENTRIES, Duration::from_secs(3600)).l1_max_bytes(MIB)
    })
    .await;
    let share = MIB / ENTRIES;
    for i in 0..1_000 {
        cache.set(&format!("t{i}"), "z".into()).await.expect("set");
    }
    let s = cache.stats();
    assert!(
        weight("t999", 1, share) == share,
        "precondition: each tiny entry weighs its share"
    );
    assert!(s.l1_entries <= ENTRIES, "{s:?}");
    assert!(s.l1_entries > ENTRIES / 2, "the L1 was not emptied: {s:?}");
    assert_eq!(s.l1_weighted_bytes, s.l1_entries * share, "{s:?}");
    assert!(s.l1_evicted_size >= 1_000 - ENTRIES, "{s:?}");
    assert_accounted(1_000, &s);
}

#[tokio::test]
async fn a_value_heavier_than_the_bound_is_served_but_not_kept() {
    let cache = texts("heavy", None, |b| {
        b.l1(1_000, Duration::from_secs(3600))
            .l1_max_bytes(MIB)
            .max_value_bytes(4 * MIB as usize)
    })
    .await;
    let heavy = "h".repeat(MIB as usize + 1);
    cache.set("big", "small".into()).await.expect("set");
    assert_eq!(
        cache.stats().l1_entries,
        1,
        "precondition: the small value is in L1"
    );
    cache.set("big", heavy.clone()).await.expect("set");
    let s = cache.stats();
    assert_eq!(
        s.l1_entries, 0,
        "neither the heavy value nor the old one is kept: {s:?}"
    );
    assert_eq!(s.l1_evicted_size, 1, "{s:?}");
    assert_eq!(s.l1_weighted_bytes, 0, "{s:?}");
    for _ in 0..3 {
        let got = cache.get("big").await.expect("get");
        assert_eq!(got.as_deref(), Some(heavy.as_str()), "served from the L2");
    }
    let s = cache.stats();
    assert_eq!((s.l1_hits, s.l2_hits), (0, 3), "never from L1: {s:?}");
    assert_eq!(s.l1_evicted_size, 4, "each L2 read counted too: {s:?}");
    assert_eq!(s.l1_entries, 0, "{s:?}");
    // "small" entered, left when replaced by "big" (removed), then 4 heavy entries.
    assert_accounted(5, &s);
    assert_eq!(s.l1_removed, 1, "{s:?}");

    // Loaded, and over the L2's bound too: still served, counted in both.
    let loaded = cache
        .get_with("huge", {
            let v = "g".repeat(2 * MIB as usize);
            move || async move { v }
        })
        .await
        .expect("loaded");
    assert_eq!(loaded.len(), 2 * MIB as usize);
    let s = cache.stats();
    assert_eq!(s.l1_evicted_size, 5, "{s:?}");
    assert_eq!(s.l1_entries, 0, "{s:?}");
}

#[tokio::test]
async fn expiry_and_removal_are_counted_by_cause() {
    let clock = ManualClock::new(T0);
    let cache = texts("causes", Some(&clock), |b| {
        b.ttl(Duration::from_secs(10))
            .l1(1_000, Duration::from_secs(3600))
            .l1_max_bytes(MIB)
    })
    .await;
    for i in 0..5 {
        cache
            .set(&format!("e{i}"), format!("v{i}"))
            .await
            .expect("set");
    }
    assert_eq!(cache.stats().l1_entries, 5, "precondition");
    // Past the hard expiry (no stale window): each read finds its entry expired.
    clock.advance(Duration::from_secs(11));
    for i in 0..5 {
        assert_eq!(cache.get(&format!("e{i}")).await.expect("get"), None);
    }
    let s = cache.stats();
    assert_eq!(
        (s.l1_expired, s.l1_removed, s.l1_evicted_size),
        (5, 0, 0),
        "{s:?}"
    );

    for i in 0..4 {
        cache
            .set(&format!("r{i}"), format!("v{i}"))
            .await
            .expect("set");
    }
    cache.remove("r0").await.expect("remove");
    cache.remove("r1").await.expect("remove");
    let s = cache.stats();
    assert_eq!(
        (s.l1_expired, s.l1_removed, s.l1_entries),
        (5, 2, 2),
        "{s:?}"
    );
    cache.clear_local();
    let s = cache.stats();
    assert_eq!(
        (s.l1_expired, s.l1_removed, s.l1_entries),
        (5, 4, 0),
        "{s:?}"
    );
    assert_eq!(s.evictions, 5, "removals are not evictions: {s:?}");
    assert_accounted(9, &s);
}

#[tokio::test]
async fn the_l1_time_to_live_counts_as_expiry() {
    // moka's time to live runs on the monotonic clock: the test waits for the count,
    // within a bound far above the time to live.
    let cache = texts("l1ttl", None, |b| {
        b.l1(1_000, Duration::from_millis(50)).l1_max_bytes(MIB)
    })
    .await;
    for i in 0..3 {
        cache.set(&format!("x{i}"), "v".into()).await.expect("set");
    }
    assert_eq!(cache.stats().l1_entries, 3, "precondition");
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = cache.stats();
        if s.l1_expired == 3 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (s.l1_expired, s.l1_entries, s.l1_weighted_bytes),
        (3, 0, 0),
        "{s:?}"
    );
    assert_eq!((s.l1_evicted_size, s.l1_removed), (0, 0), "{s:?}");
    assert_accounted(3, &s);
}

#[tokio::test]
async fn without_a_byte_bound_the_l1_counts_entries() {
    let cache = texts("plain", None, |b| b.l1(10, Duration::from_secs(3600))).await;
    for i in 0..100 {
        cache
            .set(&format!("p{i}"), "q".repeat(10_000))
            .await
            .expect("set");
    }
    let s = cache.stats();
    assert!(s.l1_entries <= 10 && s.l1_entries > 0, "{s:?}");
    assert_eq!((s.l1_weighted_bytes, s.l1_max_bytes), (0, 0), "{s:?}");
    assert_eq!(s.l1_evicted_size, 100 - s.l1_entries, "{s:?}");
    assert_accounted(100, &s);
}

#[tokio::test]
async fn settings_that_make_no_sense_are_refused_by_name() {
    type Configure = fn(CacheBuilder<str, String>) -> CacheBuilder<str, String>;
    let cases: [(&str, Configure); 4] = [
        ("zero", |b| b.l1_max_bytes(0)),
        ("under one entry", |b| b.l1_max_bytes(100)),
        ("under the capacity", |b| {
            b.l1(10_000, Duration::from_secs(60)).l1_max_bytes(9_999)
        }),
        ("a share over 4 GiB", |b| {
            b.l1(1, Duration::from_secs(60)).l1_max_bytes(1 << 33)
        }),
    ];
    for (what, configure) in cases {
        let store = Arc::new(SqliteBackend::memory().await.expect("the store opens"));
        let builder = Cache::<str, String, ()>::builder("bad").stats_interval(None);
        match configure(builder).build(store).await {
            Ok(_) => panic!("{what}: the settings were accepted"),
            Err(e) => assert!(e.to_string().contains("l1_max_bytes"), "{what}: {e}"),
        }
    }
    let store = Arc::new(SqliteBackend::memory().await.expect("the store opens"));
    let ok = Cache::<str, String, ()>::builder("good")
        .stats_interval(None)
        .l1(10_000, Duration::from_secs(60))
        .l1_max_bytes(10_000)
        .build(store)
        .await;
    assert!(ok.is_ok(), "a share of one byte is allowed");
}
