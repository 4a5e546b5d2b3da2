//! The grammar against the shared table of cases, and formatting round trips.

use super::*;

/// The table the macro crate's copy of the grammar is tested against too.
const CASES: &[(&str, Result<u64, &str>)] = include!("cases.rs");

#[test]
fn every_case_of_the_shared_table() {
    for (text, expected) in CASES {
        match (parse_ms(text), expected) {
            (Ok(ms), Ok(want)) => assert_eq!(ms, *want, "{text:?}"),
            (Err(e), Err(part)) => {
                let msg = e.to_string();
                assert!(msg.contains(part), "{text:?}: {msg:?} lacks {part:?}");
                assert_eq!(e.text(), *text);
            }
            (got, want) => panic!("{text:?}: got {got:?}, expected {want:?}"),
        }
    }
}

#[test]
fn parse_gives_a_duration() {
    assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
    assert!(parse("soon").is_err());
}

#[test]
fn errors_say_what_was_wrong() {
    let msg = |text: &str| parse(text).expect_err(text).to_string();
    assert_eq!(
        msg(""),
        "empty duration; write a number and a unit, like 30s, 5m, 1h30m or 250ms"
    );
    assert_eq!(
        msg("2x"),
        "`2x` has an unknown unit `x` (use ms, s, m, h or d)"
    );
    assert_eq!(
        msg("1m30"),
        "`1m30` has a number without a unit, `30` (use ms, s, m, h or d)"
    );
    assert_eq!(msg("0.5ms"), "`0.5ms` is finer than a millisecond");
}

#[test]
fn format_writes_the_largest_units_first() {
    let f = |ms: u64| format(Duration::from_millis(ms));
    assert_eq!(f(0), "0s");
    assert_eq!(f(250), "250ms");
    assert_eq!(f(90_000), "1m30s");
    assert_eq!(f(5_400_000), "1h30m");
    assert_eq!(f(86_400_000 + 3 * 3_600_000 + 5), "1d3h5ms");
    // Below a millisecond is dropped.
    assert_eq!(format(Duration::from_micros(1_500)), "1ms");
}

#[test]
fn format_round_trips_through_parse() {
    let mut samples = vec![0, 1, 999, 1_000, 59_999, 60_000, 86_400_000, u64::MAX];
    // Spread over every magnitude, with every unit's remainder present.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..2_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        samples.push(x >> (x % 64));
    }
    for ms in samples {
        let text = format(Duration::from_millis(ms));
        assert_eq!(parse_ms(&text), Ok(ms), "{ms} ms written as {text:?}");
    }
    for (text, expected) in CASES {
        if let Ok(ms) = expected {
            let again = format(Duration::from_millis(*ms));
            assert_eq!(parse_ms(&again), Ok(*ms), "{text:?} written as {again:?}");
        }
    }
}

#[test]
fn durations_read_and_print_humanely() {
    assert_eq!(parse("30s").ok(), Some(Duration::from_secs(30)));
    assert_eq!(parse("5m").ok(), Some(Duration::from_secs(300)));
    assert_eq!(parse("1h30m").ok(), Some(Duration::from_secs(5400)));
    assert_eq!(parse("250ms").ok(), Some(Duration::from_millis(250)));
    assert_eq!(parse("45").ok(), Some(Duration::from_secs(45)));
    assert!(parse("soon").is_err());
    assert!(parse("5 parsecs").is_err());
    assert_eq!(format(Duration::from_secs(5400)), "1h30m");
}
