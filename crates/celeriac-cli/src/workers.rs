//! `celeriac workers`: the live worker and beat processes from the registry in the store, and
//! the commands that tell one to be quiet or to stop.

use crate::args::WorkersCommand;
use crate::support::{CliError, CliResult};
use celeriac::backend::{Control, ProcessInfo, ProcessKind};
use celeriac::{App, ProcessRegistry};

pub(crate) async fn run(app: App, command: Option<WorkersCommand>, json: bool) -> CliResult {
    let now = app.client().now();
    let backend = app.backend();
    let (id, control) = match command {
        None => {
            let all = backend.processes(now).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_table(&all, now);
            }
            return Ok(());
        }
        Some(WorkersCommand::Quiet { id }) => (id, Control::Quiet),
        Some(WorkersCommand::Stop { id }) => (id, Control::Stop),
    };
    if !backend.control(&id, control, now).await? {
        let live = backend.processes(now).await?;
        let known = if live.is_empty() {
            "no process is registered".to_string()
        } else {
            let ids: Vec<&str> = live.iter().map(|p| p.id.as_str()).collect();
            format!("live processes: {}", ids.join(", "))
        };
        return Err(CliError(format!("no live process `{id}` ({known})")));
    }
    let what = match control {
        Control::Quiet => "to be quiet",
        Control::Stop => "to stop",
    };
    crate::events::audit(&app, control.as_str(), None, format!("told {id} {what}")).await;
    println!("told {id} {what}; it acts at its next registry refresh");
    Ok(())
}

fn print_table(all: &[ProcessInfo], now: i64) {
    if all.is_empty() {
        println!("no live worker or beat processes");
        return;
    }
    println!(
        "{:<28} {:<6} {:<9} {:<16} {:>7} {:<24} {:>7} {:>8} {:>8} {:>8} {:>8} {:>5}",
        "ID",
        "KIND",
        "STATE",
        "HOST",
        "PID",
        "QUEUES",
        "BUSY",
        "RSS",
        "RTT",
        "OFFSET",
        "UP",
        "SEEN"
    );
    for p in all {
        let queues = match p.kind {
            ProcessKind::Beat if p.leader => "(leader)".to_string(),
            ProcessKind::Beat => "(follower)".to_string(),
            ProcessKind::Worker => p
                .queues
                .iter()
                .map(|q| match q.weight {
                    0 => q.queue.clone(),
                    w => format!("{}:{w}", q.queue),
                })
                .collect::<Vec<_>>()
                .join(","),
        };
        let busy = match p.kind {
            ProcessKind::Worker => format!("{}/{}", p.busy, p.concurrency),
            ProcessKind::Beat => "-".to_string(),
        };
        println!(
            "{:<28} {:<6} {:<9} {:<16} {:>7} {:<24} {:>7} {:>8} {:>8} {:>8} {:>8} {:>5}",
            p.id,
            p.kind.as_str(),
            p.state.as_str(),
            p.host,
            p.pid,
            queues,
            busy,
            p.rss_bytes
                .map(|b| format!("{:.1}M", b as f64 / (1 << 20) as f64))
                .unwrap_or_else(|| "-".into()),
            p.store_rtt_us
                .map(|us| format!("{:.2}ms", us as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            format!("{}ms", p.clock_offset_ms),
            span(now - p.started_at),
            span(now - p.seen_at),
        );
    }
}

/// A short age: `42s`, `5m`, `3h`, `2d`.
fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
