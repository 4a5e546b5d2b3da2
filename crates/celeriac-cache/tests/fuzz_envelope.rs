//! Fuzzing the cache envelope, the bytes another process left in the L2: random bytes and
//! mutated real envelopes (small and large values, LZ4-compressed or not, every format) read
//! with [`Envelope::from_bytes`] and their values decoded, and mutated envelopes put in a
//! real store and read through a cache. No panic, memory bounded by the input, a typed error;
//! through the cache, a miss that is counted.
//!
//! Allocation is measured with a counting global allocator, so the tests of this binary take
//! a lock and run one at a time.

use celeriac_cache::{Cache, Envelope, Format, Meta, MAX_VALUE_BYTES};
use celeriac_core::backend::{KvEntry, KvStore};
use celeriac_core::clock::{Clock, StoreClock};
use celeriac_embedded::SqliteBackend;
use celeriac_testkit::fuzz::{bytes, mutated, run};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One test at a time: the allocation counter is global.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A value as an application caches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
    price: f64,
    tags: Vec<String>,
    stock: Option<u32>,
    attrs: BTreeMap<String, String>,
}

fn product(i: u64, text: usize) -> Product {
    Product {
        id: i,
        name: format!("product {i} ").repeat(text),
        price: 9.5 + i as f64,
        tags: (0..i % 4).map(|t| format!("tag{t}")).collect(),
        stock: i.is_multiple_of(2).then_some(i as u32),
        attrs: (0..i % 3)
            .map(|a| (format!("k{a}"), format!("v{a}")))
            .collect(),
    }
}

fn envelope(format: Format, value: Option<Vec<u8>>, tags: &[&str]) -> Envelope {
    Envelope {
        meta: Meta {
            created: 1_700_000_000_000,
            fresh_until: 1_700_000_060_000,
            stale_until: 1_700_000_360_000,
            load_ms: 12,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        },
        schema: 1,
        format,
        value,
    }
}

/// Real envelopes as the crate writes them: every format, small and large values, each
/// compressed and not, a cached "not found", with and without tags.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for format in [Format::Json, Format::MsgPack, Format::Postcard] {
        for (i, text) in [(1u64, 1usize), (2, 40), (3, 400)] {
            let value = format.encode(&product(i, text)).expect("encodes");
            let tags: &[&str] = match i {
                1 => &[],
                2 => &["catalog"],
                _ => &["catalog", "product:3"],
            };
            for compress_at in [0, usize::MAX] {
                out.push(envelope(format, Some(value.clone()), tags).to_bytes(compress_at));
            }
        }
        out.push(envelope(format, None, &["gone"]).to_bytes(0));
    }
    out
}

/// The most a read of `len` bytes may allocate: LZ4's largest ratio (255) on the value,
/// the tags and their list, and a constant.
fn envelope_budget(len: usize) -> u64 {
    (64 * 1024 + 300 * len) as u64
}

/// Reads `input` as an envelope and its value, measuring what that allocates.
fn read(input: &[u8]) -> Result<(), TestCaseError> {
    let region = Region::new(GLOBAL);
    let decoded = Envelope::from_bytes(input);
    let used = region.change().bytes_allocated as u64;
    prop_assert!(
        used <= envelope_budget(input.len()),
        "reading {} bytes allocated {used} bytes",
        input.len()
    );
    let Ok(env) = decoded else { return Ok(()) };
    // What was read writes back to the same envelope.
    let again =
        Envelope::from_bytes(&env.to_bytes(64)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&again, &env);
    if let Some(value) = &env.value {
        decode_value(env.format, value)?;
    }
    Ok(())
}

/// Decodes a value as an application's type and as any JSON value: errors are fine, a
/// panic or an allocation beyond serde's bounded preallocation is not.
fn decode_value(format: Format, value: &[u8]) -> Result<(), TestCaseError> {
    let region = Region::new(GLOBAL);
    let _ = format.decode::<Product>(value);
    let _ = format.decode::<serde_json::Value>(value);
    let used = region.change().bytes_allocated as u64;
    // serde caps what a claimed length preallocates at 1 MiB per collection.
    let budget = 4 * 1024 * 1024 + 64 * value.len() as u64;
    prop_assert!(
        used <= budget,
        "decoding {} bytes allocated {used}",
        value.len()
    );
    Ok(())
}

#[test]
fn fuzz_envelopes_from_random_bytes() {
    let _serial = serial();
    // Random bytes behind a real header get past the first checks.
    let header = corpus()[0][..38].to_vec();
    let n = run(
        "envelope random bytes",
        (any::<bool>(), bytes(512)),
        |(framed, tail)| {
            let mut input = if framed { header.clone() } else { Vec::new() };
            input.extend_from_slice(&tail);
            read(&input)
        },
    );
    assert!(n > 0);
}

#[test]
fn fuzz_envelopes_mutated() {
    let _serial = serial();
    let corpus = corpus();
    for e in &corpus {
        let env = Envelope::from_bytes(e).expect("every corpus envelope reads");
        if let Some(v) = &env.value {
            env.format
                .decode::<Product>(v)
                .expect("and its value decodes");
        }
    }
    let n = run("envelope mutated", mutated(corpus), |input| read(&input));
    assert!(n > 0);
}

#[test]
fn fuzz_values_mutated() {
    let _serial = serial();
    let mut values = Vec::new();
    for format in [Format::Json, Format::MsgPack, Format::Postcard] {
        for i in 0..4 {
            values.push((format, format.encode(&product(i, 3)).expect("encodes")));
        }
    }
    let formats: Vec<Format> = values.iter().map(|(f, _)| *f).collect();
    let encoded: Vec<Vec<u8>> = values.into_iter().map(|(_, v)| v).collect();
    let n = run(
        "cached value mutated",
        (0..formats.len(), mutated(encoded)),
        |(f, value)| decode_value(formats[f], &value),
    );
    assert!(n > 0);
}

/// A compressed envelope whose size prefix is replaced by `claimed`.
fn lying(claimed: u32) -> (Vec<u8>, usize) {
    let value = Format::Json.encode(&product(7, 200)).expect("encodes");
    let honest = envelope(Format::Json, Some(value), &["catalog"]).to_bytes(0);
    // Header (38 bytes) and the tag (2 + 7): then the size prefix of the LZ4 block.
    let at = 38 + 2 + "catalog".len();
    let mut bytes = honest.clone();
    bytes[at..at + 4].copy_from_slice(&claimed.to_le_bytes());
    (bytes, honest.len())
}

#[test]
fn a_lying_size_prefix_is_a_typed_error_and_allocates_little() {
    let _serial = serial();
    // The counter counts.
    let region = Region::new(GLOBAL);
    let v = std::hint::black_box(vec![0u8; 4096]);
    assert!(region.change().bytes_allocated >= 4096);
    drop(v);

    // With its true size the prefix reads, so the lie below is the only thing wrong.
    let size = Format::Json
        .encode(&product(7, 200))
        .expect("encodes")
        .len();
    let (honest, len) = lying(size as u32);
    let env = Envelope::from_bytes(&honest).expect("the honest prefix reads");
    assert_eq!(env.value.map(|v| v.len()), Some(size));
    assert!(
        len * 10 < size,
        "the value was compressed: {len} of {size} bytes"
    );

    for claimed in [0xFFFF_FFF0u32, u32::MAX, 0x7FFF_FFFF, (len as u32) * 300] {
        let (bytes, _) = lying(claimed);
        let region = Region::new(GLOBAL);
        let err = Envelope::from_bytes(&bytes).expect_err("a lying prefix is refused");
        let used = region.change().bytes_allocated;
        let message = err.to_string();
        assert!(
            matches!(err, celeriac_core::Error::Codec(_)),
            "{claimed:#x}: typed as a codec error: {err:?}"
        );
        assert!(message.contains(&claimed.to_string()), "{message}");
        assert!(
            used < 64 * 1024,
            "{claimed:#x}: reading {len} bytes allocated {used} bytes"
        );
    }
}

#[test]
fn a_size_prefix_over_the_readers_maximum_is_refused() {
    let _serial = serial();
    let value = vec![b'a'; 100_000];
    let bytes = envelope(Format::Json, Some(value), &[]).to_bytes(0);
    assert!(bytes.len() < 1_000, "compressed: {}", bytes.len());
    assert!(Envelope::from_bytes(&bytes).is_ok());
    assert!(Envelope::from_bytes_within(&bytes, 100_000).is_ok());
    let err = Envelope::from_bytes_within(&bytes, 99_999).expect_err("over the maximum");
    assert!(err.to_string().contains("99999"), "{err}");
    const { assert!(MAX_VALUE_BYTES >= 100_000) };
}

/// A tag count of 65,535 in a short envelope reserves no room for 65,535 tags.
#[test]
fn a_lying_tag_count_allocates_little() {
    let _serial = serial();
    let mut bytes = envelope(Format::Json, Some(b"1".to_vec()), &[]).to_bytes(usize::MAX);
    bytes[36..38].copy_from_slice(&u16::MAX.to_le_bytes());
    let region = Region::new(GLOBAL);
    assert!(
        Envelope::from_bytes(&bytes).is_err(),
        "the tags are not there"
    );
    let used = region.change().bytes_allocated;
    assert!(used < 4096, "allocated {used} bytes");
}

/// Values nested 100,000 levels deep are an error, without running out of stack on a thread
/// of tokio's default size (MessagePack's own limit, 1,024 levels, overflowed it); 100 levels
/// still read.
#[test]
fn deeply_nested_values_are_errors_not_stack_overflows() {
    let _serial = serial();
    let nested = |depth: usize| {
        let mut m = vec![0x91u8; depth]; // arrays of one element, nested
        m.push(0xc0);
        let mut j = "[".repeat(depth);
        j.push_str(&"]".repeat(depth));
        (m, j)
    };
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let (m, j) = nested(100_000);
            let err = Format::MsgPack
                .decode::<serde_json::Value>(&m)
                .expect_err("too deep");
            assert!(err.to_string().contains("depth"), "{err}");
            assert!(Format::Json
                .decode::<serde_json::Value>(j.as_bytes())
                .is_err());
            assert!(Format::Postcard.decode::<serde_json::Value>(&m).is_err());
            let (m, j) = nested(100);
            Format::MsgPack
                .decode::<serde_json::Value>(&m)
                .expect("100 levels read");
            Format::Json
                .decode::<serde_json::Value>(j.as_bytes())
                .expect("100 levels read");
        })
        .expect("spawns")
        .join()
        .expect("decodes without overflowing the stack");
}

/// A store, a cache over it and the key of one entry, with a real envelope stored there.
struct Setup {
    rt: tokio::runtime::Runtime,
    store: Arc<SqliteBackend>,
    cache: Cache<u64, Product, SqliteBackend>,
    key: String,
    real: Vec<u8>,
}

fn setup(format: Format) -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (store, cache) = rt.block_on(async {
        let store = Arc::new(SqliteBackend::memory().await.expect("store"));
        let cache: Cache<u64, Product, SqliteBackend> = Cache::builder("products")
            .format(format)
            .ttl(Duration::from_secs(60))
            .compress_at(64)
            .stats_interval(None)
            .build(store.clone())
            .await
            .expect("cache");
        (store, cache)
    });
    let key = cache.storage_key(&7);
    let real = rt.block_on(async {
        cache.set(&7, product(7, 20)).await.expect("set");
        let now = store.fleet_clock().now_ms();
        store
            .kv_get(vec![key.clone()], now)
            .await
            .expect("kv_get")
            .pop()
            .flatten()
            .expect("the entry is in the store")
    });
    Setup {
        rt,
        store,
        cache,
        key,
        real,
    }
}

impl Setup {
    /// Puts `bytes` in the store as the entry, and reads it through the cache (L1 emptied):
    /// what `get` answers.
    fn read_through(&self, bytes: Vec<u8>) -> celeriac_core::Result<Option<Product>> {
        self.rt.block_on(async {
            let now = self.store.fleet_clock().now_ms();
            self.store
                .kv_set(
                    vec![KvEntry {
                        key: self.key.clone(),
                        value: bytes,
                        ttl: Duration::from_secs(60),
                    }],
                    now,
                )
                .await?;
            self.cache.clear_local();
            self.cache.get(&7).await
        })
    }
}

#[test]
fn a_corrupt_value_in_l2_is_a_counted_miss() {
    let _serial = serial();
    let s = setup(Format::MsgPack);
    // The real entry reads back.
    let back = s.read_through(s.real.clone()).expect("reads");
    assert_eq!(back, Some(product(7, 20)));
    assert_eq!(s.cache.stats().decode_errors, 0);
    assert!(s.real[3] & 1 == 1, "the stored value is compressed");

    let mut lies = s.real.clone();
    let at = 38; // no tags: the size prefix follows the header
    lies[at..at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let mut other_schema = s.real.clone();
    other_schema[4] = 9;
    // Entries that would be fresh hits but for what is wrong with them.
    let live = |value: Vec<u8>| {
        let mut e = envelope(Format::MsgPack, Some(value), &[]);
        e.meta.fresh_until = i64::MAX - 1;
        e.meta.stale_until = i64::MAX;
        e
    };
    let wrong_type = live(Format::MsgPack.encode(&"a string").expect("encodes"));
    let big = product(8, 120_000);
    let too_large = live(Format::MsgPack.encode(&big).expect("encodes"));
    let size = too_large.value.as_ref().map_or(0, Vec::len);
    assert!(
        size > celeriac_cache::DEFAULT_MAX_VALUE_BYTES,
        "{size} bytes"
    );
    let fine = live(Format::MsgPack.encode(&product(8, 1)).expect("encodes"));
    assert_eq!(
        s.read_through(fine.to_bytes(64)).expect("reads"),
        Some(product(8, 1))
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a lying size prefix", lies),
        ("a truncated envelope", s.real[..s.real.len() / 2].to_vec()),
        ("not an envelope", b"{\"id\": 7}".to_vec()),
        ("another schema", other_schema),
        ("a value of another type", wrong_type.to_bytes(usize::MAX)),
        ("nothing", Vec::new()),
        (
            "a value over the namespace's maximum",
            too_large.to_bytes(64),
        ),
        ("the same, uncompressed", too_large.to_bytes(usize::MAX)),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let region = Region::new(GLOBAL);
        let got = s.read_through(bytes);
        let used = region.change().bytes_allocated;
        assert!(matches!(got, Ok(None)), "{what}: a miss, got {got:?}");
        let stats = s.cache.stats();
        assert_eq!(stats.decode_errors, i as u64 + 1, "{what}: counted");
        assert_eq!(stats.l2_errors, 0, "{what}: not an L2 failure");
        assert!(used < 8 * 1024 * 1024, "{what}: allocated {used} bytes");
    }
    // The loader stands in, and its value replaces the corrupt one.
    let loaded =
        s.rt.block_on(s.cache.get_with(&7, || async { product(7, 1) }))
            .expect("loads");
    assert_eq!(loaded, product(7, 1));
    s.cache.clear_local();
    let again = s.rt.block_on(s.cache.get(&7)).expect("reads");
    assert_eq!(again, Some(product(7, 1)), "the reloaded value is in L2");
}

#[test]
fn fuzz_l2_reads_of_mutated_envelopes() {
    let _serial = serial();
    let s = setup(Format::MsgPack);
    let mut corpus = corpus();
    corpus.push(s.real.clone());
    let n = run("cache read of mutated L2 entry", mutated(corpus), |bytes| {
        let before = s.cache.stats();
        let got = s.read_through(bytes);
        let after = s.cache.stats();
        // A mutation that still reads as a product is a hit, anything else a miss: never an
        // error to the caller, nor a failure of the L2.
        if let Err(e) = got {
            return Err(TestCaseError::fail(format!("an error to the caller: {e}")));
        }
        prop_assert_eq!(after.l2_errors, before.l2_errors);
        Ok(())
    });
    assert!(n > 0);
}
