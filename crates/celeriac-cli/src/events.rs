//! `celeriac events`: the capped stream of failures, dead letters, cancellations and
//! administrative actions kept in the store, and the record every administrative command
//! leaves there.

use crate::support::{format_ms, CliResult};
use celeriac::{App, Event, EventLog};
use std::time::Duration;

/// How often `--follow` looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

pub(crate) async fn run(app: App, limit: usize, follow: bool, json: bool) -> CliResult {
    let backend = app.backend();
    let mut last = None;
    let first = backend.events(None, limit.max(1)).await?;
    if first.is_empty() && !follow {
        println!("no events yet");
        return Ok(());
    }
    print_all(&first, json)?;
    last = first.last().map(|e| e.id.clone()).or(last);
    if !follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let new = match &last {
            Some(id) => backend.events(Some(id.clone()), 1000).await?,
            None => backend.events(None, 1000).await?,
        };
        print_all(&new, json)?;
        if let Some(e) = new.last() {
            last = Some(e.id.clone());
        }
    }
}

fn print_all(events: &[Event], json: bool) -> CliResult {
    for e in events {
        if json {
            println!("{}", serde_json::to_string(e)?);
            continue;
        }
        let mut place = String::new();
        if let Some(q) = &e.queue {
            place.push_str(&format!(" queue={q}"));
        }
        if let Some(j) = &e.job {
            place.push_str(&format!(" job={j}"));
        }
        if let Some(a) = &e.actor {
            place.push_str(&format!(" by={a}"));
        }
        println!("{} {:<14}{place}  {}", format_ms(e.at), e.kind, e.message);
    }
    Ok(())
}

/// Records an administrative action in the event stream (`admin.<action>`, with who did it).
/// A store that cannot take it does not stop the action, which already happened: it is said
/// on stderr.
pub(crate) async fn audit(app: &App, action: &str, queue: Option<&str>, message: String) {
    record(app.backend(), app.client().now(), action, queue, message).await;
}

/// [`audit`] for a command that has a backend but no application.
pub(crate) async fn record(
    backend: &celeriac::AnyBackend,
    now: celeriac::clock::UnixMs,
    action: &str,
    queue: Option<&str>,
    message: String,
) {
    let mut e = Event::new(format!("admin.{action}"), now, message);
    e.queue = queue.map(str::to_string);
    e.actor = Some(celeriac::backend::actor());
    if let Err(err) = backend.append(vec![e]).await {
        eprintln!("warning: the action was not recorded in the event stream: {err}");
    }
}
