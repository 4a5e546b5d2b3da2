//! Ticks, daylight saving time, missed-tick policies, tick ids, definitions and schedule
//! files.

use super::*;
use chrono::NaiveDate;

fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> UnixMs {
    let naive = NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|d| d.and_hms_opt(h, mi, s))
        .expect("valid date");
    tz.from_local_datetime(&naive)
        .earliest()
        .expect("exists")
        .timestamp_millis()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> UnixMs {
    at(Tz::UTC, y, mo, d, h, mi, s)
}

fn cron(name: &str, expr: &str, tz: &str) -> Schedule {
    Schedule::builder(name)
        .cron(expr)
        .timezone(tz)
        .task("t")
        .build()
        .expect("valid schedule")
}

fn every(name: &str, d: Duration, missed: Missed) -> Schedule {
    Schedule::builder(name)
        .every(d)
        .task("t")
        .missed(missed)
        .build()
        .expect("valid schedule")
}

#[test]
fn intervals_are_anchored_to_the_epoch() {
    let s = every("five", Duration::from_secs(300), Missed::RunOnce);
    let t = utc(2024, 1, 1, 10, 7, 13);
    assert_eq!(s.next_after(t), Some(utc(2024, 1, 1, 10, 10, 0)));
    assert_eq!(
        s.next_after(utc(2024, 1, 1, 10, 10, 0)),
        Some(utc(2024, 1, 1, 10, 15, 0)),
        "strictly after"
    );
    assert_eq!(s.last_at_or_before(t), Some(utc(2024, 1, 1, 10, 5, 0)));
    assert_eq!(
        s.ticks_between(utc(2024, 1, 1, 10, 0, 0), utc(2024, 1, 1, 10, 20, 0), 100),
        vec![
            utc(2024, 1, 1, 10, 5, 0),
            utc(2024, 1, 1, 10, 10, 0),
            utc(2024, 1, 1, 10, 15, 0),
            utc(2024, 1, 1, 10, 20, 0)
        ]
    );
}

#[test]
fn five_and_six_field_cron() {
    let s = cron("quarter", "*/15 * * * *", "UTC");
    assert_eq!(
        s.upcoming(utc(2024, 5, 1, 9, 1, 0), 2),
        vec![utc(2024, 5, 1, 9, 15, 0), utc(2024, 5, 1, 9, 30, 0)]
    );
    let s = cron("secs", "*/10 * * * * *", "UTC");
    assert_eq!(
        s.upcoming(utc(2024, 5, 1, 9, 0, 1), 2),
        vec![utc(2024, 5, 1, 9, 0, 10), utc(2024, 5, 1, 9, 0, 20)]
    );
}

#[test]
fn cron_reads_the_wall_clock_of_its_time_zone() {
    let s = cron("ny", "0 9 * * *", "America/New_York");
    // 09:00 EST is 14:00 UTC in January.
    assert_eq!(
        s.next_after(utc(2024, 1, 10, 0, 0, 0)),
        Some(utc(2024, 1, 10, 14, 0, 0))
    );
}

#[test]
fn spring_forward_runs_a_gap_time_once_at_the_end_of_the_gap() {
    // Europe/Berlin, 2024-03-31: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    let berlin = Tz::Europe__Berlin;
    let s = cron("nightly", "30 2 * * *", "Europe/Berlin");
    let runs = s.upcoming(at(berlin, 2024, 3, 29, 12, 0, 0), 4);
    assert_eq!(
        runs,
        vec![
            at(berlin, 2024, 3, 30, 2, 30, 0),
            // The first instant after the gap: 03:00 CEST = 01:00 UTC.
            utc(2024, 3, 31, 1, 0, 0),
            at(berlin, 2024, 4, 1, 2, 30, 0),
            at(berlin, 2024, 4, 2, 2, 30, 0),
        ]
    );
    // Exactly once that day, whichever instant the search starts from.
    let day = s.ticks_between(
        at(berlin, 2024, 3, 31, 0, 0, 0),
        at(berlin, 2024, 3, 31, 23, 59, 59),
        10,
    );
    assert_eq!(day, vec![utc(2024, 3, 31, 1, 0, 0)]);
    assert_eq!(
        s.ticks_between(
            utc(2024, 3, 31, 1, 0, 0),
            at(berlin, 2024, 3, 31, 23, 0, 0),
            10
        ),
        Vec::<UnixMs>::new(),
        "not again after the gap"
    );
}

#[test]
fn fall_back_runs_a_repeated_time_once() {
    // Europe/Berlin, 2024-10-27: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    let berlin = Tz::Europe__Berlin;
    let s = cron("nightly", "30 2 * * *", "Europe/Berlin");
    let day = s.ticks_between(
        at(berlin, 2024, 10, 27, 0, 0, 0),
        at(berlin, 2024, 10, 27, 23, 0, 0),
        10,
    );
    // The first 02:30 (CEST, UTC+2) only.
    assert_eq!(day, vec![utc(2024, 10, 27, 0, 30, 0)]);
    // And the policy sees the same thing when the whole day was missed.
    let due = s.due(
        at(berlin, 2024, 10, 27, 0, 0, 0),
        at(berlin, 2024, 10, 27, 23, 0, 0),
        Duration::from_secs(30),
    );
    assert_eq!(due.fire, vec![utc(2024, 10, 27, 0, 30, 0)]);
    assert_eq!(due.skipped, 0);
}

#[test]
fn intervals_ignore_daylight_saving_time() {
    let s = Schedule::builder("hourly")
        .every(Duration::from_secs(3600))
        .timezone("Europe/Berlin")
        .task("t")
        .build()
        .expect("valid");
    // Across the fall-back night: 25 wall-clock hours, 25 ticks, one hour apart.
    let from = utc(2024, 10, 26, 22, 0, 0);
    let ticks = s.ticks_between(from, from + 25 * 3_600_000, 100);
    assert_eq!(ticks.len(), 25);
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 3_600_000));
}

#[test]
fn wildcard_hours_run_in_both_passes_of_a_repeated_hour() {
    let s = cron("quarter", "0,30 * * * *", "Europe/Berlin");
    let ticks = s.ticks_between(
        utc(2024, 10, 26, 23, 59, 0),
        utc(2024, 10, 27, 1, 59, 0),
        10,
    );
    // 00:00, 00:30, 01:00, 01:30 UTC: 02:00/02:30 CEST then 02:00/02:30 CET.
    assert_eq!(
        ticks,
        vec![
            utc(2024, 10, 27, 0, 0, 0),
            utc(2024, 10, 27, 0, 30, 0),
            utc(2024, 10, 27, 1, 0, 0),
            utc(2024, 10, 27, 1, 30, 0)
        ]
    );
}

#[test]
fn missed_tick_policies() {
    let minute = Duration::from_secs(60);
    let late = Duration::from_secs(30);
    let t0 = utc(2024, 1, 1, 0, 0, 0);
    // An hour passed without a scheduler: 60 missed ticks, the last at t0 + 60 min.
    let now = t0 + 3_600_000 + 10_000;
    let last = t0 + 3_600_000;
    // The tick at `last` is only 10 s old: on time.
    let skip = every("s", minute, Missed::Skip).due(t0, now, late);
    assert_eq!(skip.fire, vec![last]);
    assert_eq!(skip.skipped, 59);
    assert_eq!(skip.through, Some(last));
    let once = every("o", minute, Missed::RunOnce).due(t0, now, late);
    assert_eq!(
        once.fire,
        vec![last],
        "the on-time tick stands for the missed"
    );
    assert_eq!(once.skipped, 59);
    let catch = every("c", minute, Missed::CatchUp(5)).due(t0, now, late);
    assert_eq!(
        catch.fire,
        vec![
            last - 5 * 60_000,
            last - 4 * 60_000,
            last - 3 * 60_000,
            last - 2 * 60_000,
            last - 60_000,
            last
        ],
        "the latest five missed, then the one on time"
    );
    assert_eq!(catch.skipped, 54);

    // Now 50 s after the last tick: every tick is late.
    let now = last + 50_000;
    let skip = every("s", minute, Missed::Skip).due(t0, now, late);
    assert!(skip.fire.is_empty());
    assert_eq!(skip.skipped, 60);
    assert_eq!(skip.through, Some(last));
    let once = every("o", minute, Missed::RunOnce).due(t0, now, late);
    assert_eq!(once.fire, vec![last]);
    assert_eq!(once.skipped, 59);
    let catch = every("c", minute, Missed::CatchUp(100)).due(t0, now, late);
    assert_eq!(catch.fire.len(), 60);
    assert_eq!(catch.skipped, 0);
    assert_eq!(catch.fire.first(), Some(&(t0 + 60_000)));

    // Nothing due: nothing handled.
    let none = every("o", minute, Missed::RunOnce).due(last, last + 59_000, late);
    assert_eq!(none, Due::default());
}

#[test]
fn tick_ids_are_deterministic_time_ordered_and_distinct() {
    let a = tick_job_id("nightly", 1_700_000_000_000);
    assert_eq!(a, tick_job_id("nightly", 1_700_000_000_000));
    // A fixed value: the derivation must not change between versions.
    assert_eq!(a.to_string(), "018bcfe5-6800-7925-a48b-96ed781536e4");
    assert_ne!(a, tick_job_id("hourly", 1_700_000_000_000));
    assert!(tick_job_id("nightly", 1_700_000_001_000) > a);
    assert!(tick_job_id("aaa", 1_700_000_001_000) > tick_job_id("zzz", 1_700_000_000_000));
    assert_eq!(
        tick_key("nightly", utc(2024, 3, 31, 1, 0, 0)),
        "nightly@2024-03-31T01:00:00Z"
    );
}

#[test]
fn bad_definitions_name_the_schedule_and_the_field() {
    let err = |b: ScheduleBuilder| b.build().expect_err("refused").to_string();
    let e = err(Schedule::builder("nightly").cron("61 * * * *").task("t"));
    assert!(
        e.contains("schedule \"nightly\": cron") && e.contains("61"),
        "{e}"
    );
    let e = err(Schedule::builder("nightly").cron("* * * *").task("t"));
    assert!(e.contains("4 fields"), "{e}");
    let e = err(Schedule::builder("nightly")
        .cron("0 0 0 * * * 2030")
        .task("t"));
    assert!(e.contains("7 fields"), "{e}");
    let e = err(Schedule::builder("feb").cron("0 0 30 2 *").task("t"));
    assert!(e.contains("never matches"), "{e}");
    let e = err(Schedule::builder("tz")
        .cron("0 0 * * *")
        .timezone("Mars/Olympus")
        .task("t"));
    assert!(
        e.contains("schedule \"tz\": timezone") && e.contains("Mars/Olympus"),
        "{e}"
    );
    let e = err(Schedule::builder("fast")
        .every(Duration::from_millis(500))
        .task("t"));
    assert!(e.contains("schedule \"fast\": every"), "{e}");
    let e = err(Schedule::builder("none").task("t"));
    assert!(e.contains("schedule \"none\""), "{e}");
    let e = err(Schedule::builder("notask").every(Duration::from_secs(1)));
    assert!(e.contains("schedule \"notask\": task"), "{e}");
    let e = err(Schedule::builder("p")
        .every(Duration::from_secs(1))
        .task("t")
        .priority(10));
    assert!(e.contains("schedule \"p\": priority"), "{e}");
    assert!("catch_up:0".parse::<Missed>().is_err());
    assert!("sometimes".parse::<Missed>().is_err());
    assert_eq!(
        "catch_up:5".parse::<Missed>().ok(),
        Some(Missed::CatchUp(5))
    );
    let a = every("dup", Duration::from_secs(1), Missed::Skip);
    let e = check_unique_names(&[a.clone(), a])
        .expect_err("duplicate")
        .to_string();
    assert!(e.contains("schedule \"dup\"") && e.contains("twice"), "{e}");
}

#[test]
fn toml_files_define_schedules() {
    let text = r#"
[[schedule]]
name = "nightly"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
task = "reports.nightly"
args = { day = "yesterday", n = 3 }
queue = "reports"
priority = 7
missed = "catch_up:5"

[[schedule]]
name = "ping"
every = "1m30s"
task = "ops.ping"
paused = true
"#;
    let s = parse_toml(text, "s.toml").expect("parses");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].name(), "nightly");
    assert_eq!(s[0].timezone(), Tz::Europe__Berlin);
    assert_eq!(
        s[0].args(),
        &serde_json::json!({"day": "yesterday", "n": 3})
    );
    assert_eq!(s[0].queue(), Some("reports"));
    assert_eq!(s[0].priority().map(Priority::get), Some(7));
    assert_eq!(s[0].missed(), Missed::CatchUp(5));
    assert_eq!(s[1].spec(), &Spec::Every(Duration::from_secs(90)));
    assert!(s[1].paused());
    assert_eq!(s[1].missed(), Missed::RunOnce, "the default");
}

#[test]
fn toml_errors_name_the_file_line_and_schedule() {
    let err = |text: &str| parse_toml(text, "s.toml").expect_err("refused").to_string();
    let e = err("[[schedule]]\nname = \"a\"\ncron = \"* * *\ntask = \"t\"\n");
    assert!(e.contains("s.toml:3"), "{e}");
    let e = err("[[schedule]]\nname = \"a\"\nevery = \"5m\"\ntask = \"t\"\n\n[[schedule]]\nname = \"b\"\ncron = \"0 25 * * *\"\ntask = \"t\"\n");
    assert!(e.contains("s.toml:6: schedule \"b\": cron"), "{e}");
    let e = err("[[schedule]]\nname = \"a\"\ncron = \"0 0 * * *\"\ntimezone = \"Europe/Berln\"\ntask = \"t\"\n");
    assert!(
        e.contains("s.toml:1: schedule \"a\": timezone") && e.contains("Europe/Berln"),
        "{e}"
    );
    let e = err("[[schedule]]\nname = \"a\"\ncronn = \"0 0 * * *\"\ntask = \"t\"\n");
    assert!(e.contains("s.toml:3") && e.contains("cronn"), "{e}");
    let e = err("[[schedule]]\nname = \"a\"\nevery = \"soon\"\ntask = \"t\"\n");
    assert!(
        e.contains("schedule \"a\": every") && e.contains("soon"),
        "{e}"
    );
    let e = err("[[schedule]]\nname = \"a\"\nevery = \"5m\"\ntask = \"t\"\nmissed = \"later\"\n");
    assert!(e.contains("schedule \"a\": missed"), "{e}");
    let e = err("[[schedule]]\nname = \"a\"\nevery = \"5m\"\ntask = \"t\"\n[[schedule]]\nname = \"a\"\nevery = \"1m\"\ntask = \"t\"\n");
    assert!(e.contains("s.toml") && e.contains("twice"), "{e}");
    let mut reg = crate::task::Registry::new();
    reg.insert(crate::task::TaskDef::of::<NoopTask>());
    let ok = parse_toml(
        "[[schedule]]\nname = \"a\"\nevery = \"5m\"\ntask = \"nope\"\n",
        "s.toml",
    )
    .expect("parses");
    let e = check_tasks(&ok, &reg)
        .expect_err("unknown task")
        .to_string();
    assert!(
        e.contains("schedule \"a\": task") && e.contains("nope") && e.contains("test.noop"),
        "{e}"
    );
}

struct NoopTask;
impl crate::task::Task for NoopTask {
    const NAME: &'static str = "test.noop";
    type Args = ();
    type Output = ();
    async fn run(
        _ctx: crate::task::TaskContext,
        _args: (),
    ) -> std::result::Result<(), crate::task::TaskError> {
        Ok(())
    }
}
