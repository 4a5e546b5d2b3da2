//! `celeriac stats`: the history kept in the store, per queue and task over a period: jobs
//! enqueued, attempts and how they ended, run and wait time percentiles, and how throughput
//! and errors went, minute by minute or hour by hour.

use crate::support::{format_ms, short_ms, CliResult};
use celeriac::backend::{Counts, History, HistoryEntry, HistoryQuery, Resolution};
use celeriac::history::{by_queue_and_task, series, Percentiles};
use celeriac::App;
use serde::Serialize;
use std::time::Duration;

/// Up to this long a period is shown by minute (unless told), beyond it by hour.
const MINUTES_UP_TO: Duration = Duration::from_secs(6 * 3600);

/// The most characters a sparkline takes; longer series are merged into fewer columns.
const SPARK_WIDTH: usize = 60;

/// What `celeriac stats` was asked.
pub(crate) struct StatsArgs {
    pub(crate) queue: Option<String>,
    pub(crate) task: Option<String>,
    pub(crate) since: Duration,
    pub(crate) by: Option<Resolution>,
    pub(crate) json: bool,
}

/// One queue and task over the period.
#[derive(Serialize)]
struct Group {
    queue: String,
    task: String,
    #[serde(flatten)]
    counts: Counts,
    /// Run time percentiles in ms.
    run_ms: Option<Percentiles>,
    /// Wait time percentiles in ms.
    wait_ms: Option<Percentiles>,
}

impl Group {
    fn of(e: &HistoryEntry) -> Self {
        Group {
            queue: e.queue.clone(),
            task: e.task.clone(),
            counts: e.counts,
            run_ms: Percentiles::of(&e.run_ms),
            wait_ms: Percentiles::of(&e.wait_ms),
        }
    }
}

/// One bucket of the period, every queue and task merged.
#[derive(Serialize)]
struct Point {
    start: i64,
    #[serde(flatten)]
    counts: Counts,
}

#[derive(Serialize)]
struct Report {
    from: i64,
    to: i64,
    resolution: Resolution,
    groups: Vec<Group>,
    total: Group,
    series: Vec<Point>,
}

pub(crate) async fn run(app: App, args: StatsArgs) -> CliResult {
    let now = app.client().now();
    let since = i64::try_from(args.since.as_millis()).unwrap_or(i64::MAX);
    let resolution = args.by.unwrap_or(if args.since <= MINUTES_UP_TO {
        Resolution::Minute
    } else {
        Resolution::Hour
    });
    let mut query = HistoryQuery::new(resolution, now.saturating_sub(since), now + 1);
    query.queue = args.queue.clone();
    query.task = args.task.clone();
    let starts = query.starts()?;
    let entries = app.backend().history(query.clone()).await?;
    let groups = by_queue_and_task(&entries);
    let mut all = HistoryEntry::new(query.from, "all", "");
    for g in &groups {
        all.merge(g);
    }
    let report = Report {
        from: starts.first().copied().unwrap_or(query.from),
        to: now,
        resolution,
        groups: groups.iter().map(Group::of).collect(),
        total: Group::of(&all),
        series: series(&entries, &starts)
            .into_iter()
            .map(|(start, counts)| Point { start, counts })
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_report(&report, &args);
    Ok(())
}

fn print_report(r: &Report, args: &StatsArgs) {
    let by = match r.resolution {
        Resolution::Minute => "minute",
        Resolution::Hour => "hour",
    };
    let mut scope = String::new();
    if let Some(q) = &args.queue {
        scope.push_str(&format!(" queue={q}"));
    }
    if let Some(t) = &args.task {
        scope.push_str(&format!(" task={t}"));
    }
    println!(
        "History from {} to {} by {by}{scope}\n",
        format_ms(r.from),
        format_ms(r.to)
    );
    if r.groups.is_empty() {
        println!("nothing happened in this period");
        return;
    }
    println!(
        "{:<16} {:<28} {:>9} {:>9} {:>9} {:>8} {:>7} {:>7} {:>6}  {:<20} {:<20}",
        "QUEUE",
        "TASK",
        "ENQUEUED",
        "STARTED",
        "SUCCEEDED",
        "RETRIED",
        "FAILED",
        "DEAD",
        "ERR%",
        "RUN p50/p95/p99",
        "WAIT p50/p95/p99"
    );
    for g in r.groups.iter().chain(std::iter::once(&r.total)) {
        let c = &g.counts;
        let ended = c.ended();
        let err = if ended == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", 100.0 * c.errors() as f64 / ended as f64)
        };
        println!(
            "{:<16} {:<28} {:>9} {:>9} {:>9} {:>8} {:>7} {:>7} {:>6}  {:<20} {:<20}",
            g.queue,
            g.task,
            c.enqueued,
            c.started,
            c.succeeded,
            c.retried,
            c.failed,
            c.dead,
            err,
            percentiles(g.run_ms),
            percentiles(g.wait_ms),
        );
    }
    let ok: Vec<u64> = r.series.iter().map(|p| p.counts.succeeded).collect();
    let errors: Vec<u64> = r.series.iter().map(|p| p.counts.errors()).collect();
    println!(
        "\nsucceeded per {by} (most {}): {}",
        ok.iter().max().copied().unwrap_or(0),
        sparkline(&ok)
    );
    println!(
        "errors per {by}    (most {}): {}",
        errors.iter().max().copied().unwrap_or(0),
        sparkline(&errors)
    );
    println!(
        "\nERR%: attempts that ended in an error (retried, failed or dead) of all that ended. \
         RUN: how long attempts ran; WAIT: how long they waited once due."
    );
}

fn percentiles(p: Option<Percentiles>) -> String {
    match p {
        None => "-".to_string(),
        Some(p) => format!(
            "{}/{}/{}",
            short_ms(p.p50),
            short_ms(p.p95),
            short_ms(p.p99)
        ),
    }
}

/// A line of block characters, one per column, as high as the column's sum; at most
/// [`SPARK_WIDTH`] columns, each merging as many buckets as it takes.
fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() {
        return String::new();
    }
    let per = values.len().div_ceil(SPARK_WIDTH);
    let columns: Vec<u64> = values.chunks(per).map(|c| c.iter().sum()).collect();
    let top = columns.iter().max().copied().unwrap_or(0);
    columns
        .iter()
        .map(|&v| match v {
            0 => ' ',
            v => {
                let level = ((v as f64 / top as f64) * 7.0).round() as usize;
                BARS[level.min(7)]
            }
        })
        .collect()
}

/// Parses `minute` or `hour` (and `m`, `h`).
pub(crate) fn parse_resolution(text: &str) -> Result<Resolution, String> {
    match text {
        "minute" | "minutes" | "m" => Ok(Resolution::Minute),
        "hour" | "hours" | "h" => Ok(Resolution::Hour),
        other => Err(format!("`{other}`: give minute or hour")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_is_as_high_as_its_values_and_at_most_sixty_wide() {
        assert_eq!(sparkline(&[0, 1, 7]), " ▂█");
        let long: Vec<u64> = (0..360).collect();
        let line = sparkline(&long);
        assert_eq!(line.chars().count(), 60);
        assert_eq!(line.chars().last(), Some('█'));
        assert_eq!(sparkline(&[]), "");
    }

    #[test]
    fn resolutions_parse_by_name() {
        assert_eq!(parse_resolution("hour"), Ok(Resolution::Hour));
        assert_eq!(parse_resolution("m"), Ok(Resolution::Minute));
        assert!(parse_resolution("day").is_err());
    }
}
