//! Property-based fuzzing on stable Rust: random and mutated bytes fed to decoders, for a
//! number of cases or for a length of time.
//!
//! A fuzz test calls [`run`] with a [`Strategy`] (often [`bytes`] or [`mutated`] over a
//! corpus of real encoded values) and a check that returns `Err` or panics on a finding.
//! Two environment variables decide how long it runs:
//! - `CELERIAC_FUZZ_CASES`: cases per round (default 256, the short run of `scripts/test`);
//! - `CELERIAC_FUZZ_SECONDS`: keep starting new rounds with fresh seeds until this many
//!   seconds have passed (`scripts/fuzz` sets it); without it, one round with a fixed seed, so
//!   the short run is the same on every machine.
//!
//! A failure is shrunk by proptest and reported with the round's seed; the minimal input
//! then belongs in the test file as a regression case.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// The seed of the first round: fixed, so the default short run repeats exactly.
const FIRST_SEED: [u8; 32] = *b"celeriac fuzz: the first round.!";

/// Cases per round (`CELERIAC_FUZZ_CASES`, default 256).
pub fn cases() -> u32 {
    std::env::var("CELERIAC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(256)
}

/// How long to keep fuzzing (`CELERIAC_FUZZ_SECONDS`); `None` for one round.
pub fn duration() -> Option<Duration> {
    std::env::var("CELERIAC_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
}

/// Runs `check` on values of `strategy`: one round of [`cases`], or rounds with fresh seeds
/// until [`duration`] has passed. Panics with the shrunk input and the round's seed on the
/// first failure. Returns the number of cases run, so a test can assert it ran at all.
pub fn run<S, F>(name: &str, strategy: S, check: F) -> u64
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError>,
{
    let cases = cases();
    let deadline = duration().map(|d| Instant::now() + d);
    let mut seed = FIRST_SEED;
    let mut total = 0u64;
    let mut round = 0u64;
    loop {
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
        let mut runner = TestRunner::new_with_rng(config, rng);
        if let Err(e) = runner.run(&strategy, &check) {
            panic!("fuzz `{name}` failed in round {round} (seed {seed:02x?}): {e}");
        }
        total += u64::from(cases);
        round += 1;
        match deadline {
            Some(end) if Instant::now() < end => {
                // A fresh seed per round, derived from the clock and the round.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                seed[..16].copy_from_slice(&nanos.to_le_bytes());
                seed[16..24].copy_from_slice(&round.to_le_bytes());
            }
            _ => break,
        }
    }
    if deadline.is_some() {
        eprintln!("fuzz `{name}`: {total} cases in {round} rounds");
    }
    total
}

/// Random bytes, up to `max_len` long.
pub fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max_len)
}

/// One change to a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// A 32-bit length-like value written over four bytes (little or big endian).
    Length(usize, u32, bool),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u8),
        Just(0xff),
        Just(0x7f),
        Just(0x80),
        Just(b'"'),
        Just(b'\\'),
        Just(b':'),
        any::<u8>()
    ];
    let big = prop_oneof![
        Just(u32::MAX),
        Just(0x7fff_ffff),
        Just(0x4000_0000),
        Just(0),
        any::<u32>()
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), bytes(16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<usize>(), big, any::<bool>()).prop_map(|(i, v, le)| Mutation::Length(i, v, le)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    let at = |i: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::FlipBit(i, bit) if len > 0 => bytes[at(*i)] ^= 1 << bit,
        Mutation::SetByte(i, b) if len > 0 => bytes[at(*i)] = *b,
        Mutation::Truncate(i) => bytes.truncate(if len == 0 { 0 } else { i % (len + 1) }),
        Mutation::Insert(i, extra) => {
            let pos = if len == 0 { 0 } else { i % (len + 1) };
            bytes.splice(pos..pos, extra.iter().copied());
        }
        Mutation::Remove(i, n) if len > 0 => {
            let start = at(*i);
            let end = (start + n).min(len);
            bytes.drain(start..end);
        }
        Mutation::Length(i, v, le) if len >= 4 => {
            let start = i % (len - 3);
            let word = if *le {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            bytes[start..start + 4].copy_from_slice(&word);
        }
        Mutation::Duplicate(i, n) if len > 0 => {
            let start = at(*i);
            let end = (start + n).min(len);
            let copy = bytes[start..end].to_vec();
            bytes.splice(end..end, copy);
        }
        _ => {}
    }
}

/// Values from `corpus` (real encoded values) with one to eight random mutations each: bit
/// flips, interesting bytes, truncation, insertion, removal, length-like words and duplicated
/// runs. Panics if the corpus is empty.
pub fn mutated(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(
        !corpus.is_empty(),
        "a mutation corpus needs at least one value"
    );
    let n = corpus.len();
    (0..n, proptest::collection::vec(mutation(), 1..=8)).prop_map(move |(i, ms)| {
        let mut value = corpus[i].clone();
        for m in &ms {
            apply(&mut value, m);
        }
        value
    })
}

/// Text from `corpus` with mutations, kept when still UTF-8 and otherwise decoded lossily: for
/// parsers of strings (URLs, cron expressions, durations, schedule files).
pub fn mutated_text(corpus: Vec<String>) -> impl Strategy<Value = String> {
    mutated(corpus.into_iter().map(String::into_bytes).collect())
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    #[test]
    fn mutations_change_values_and_stay_in_bounds() {
        let corpus = vec![b"{\"a\":1}".to_vec(), vec![0u8; 32]];
        let mut changed = 0;
        let count = run("mutations", mutated(corpus.clone()), |v| {
            prop_assert!(v.len() <= 32 + 8 * 64 + 8 * 16);
            Ok(())
        });
        assert_eq!(count, u64::from(cases()));
        let mut runner = TestRunner::deterministic();
        for _ in 0..200 {
            let v = mutated(corpus.clone())
                .new_tree(&mut runner)
                .map(|t| t.current())
                .unwrap_or_default();
            if !corpus.contains(&v) {
                changed += 1;
            }
        }
        assert!(
            changed > 100,
            "only {changed} of 200 mutated values differ from the corpus"
        );
    }

    #[test]
    #[should_panic(expected = "fuzz `finds` failed")]
    fn a_failing_check_is_reported() {
        run("finds", bytes(64), |v| {
            prop_assert!(!v.contains(&0x41));
            Ok(())
        });
    }
}
