//! `celeriac dlq`: listing, retrying and deleting dead letters.

use crate::args::DlqCommand;
use crate::confirm::{confirm, counted, Plan};
use crate::support::{format_ms, progress_bar, CliError, CliResult};
use celeriac::{App, JobId, JobState, QueueAdmin};

/// What to type to confirm an action on the dead letters of every queue.
const ALL: &str = "all";

/// The dead letters `queue` names, in words: `of queue `emails`` or `of every queue`.
fn scope(queue: Option<&str>) -> String {
    queue.map_or_else(|| "of every queue".into(), |q| format!("of queue `{q}`"))
}

/// That there are no dead letters where `queue` says.
fn none_in(queue: Option<&str>) -> String {
    queue.map_or_else(
        || "no dead letters in any queue".into(),
        |q| format!("no dead letters in queue `{q}`"),
    )
}

pub(crate) async fn dlq(app: App, command: DlqCommand) -> CliResult {
    let backend = app.backend();
    match command {
        DlqCommand::List { queue, limit, json } => {
            let dead = backend.dead_letters(queue, limit, 0).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&dead)?);
            } else if dead.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<36}  {:<12} {:<24} {:<20} REASON",
                    "ID", "QUEUE", "TASK", "DIED"
                );
                for d in dead {
                    let reason = d
                        .error
                        .map(|e| format!("{}: {}", e.kind, e.message))
                        .unwrap_or_default();
                    println!(
                        "{:<36}  {:<12} {:<24} {:<20} {}",
                        d.job.id,
                        d.job.queue,
                        d.job.task,
                        d.job.finished_at.map(format_ms).unwrap_or_default(),
                        reason
                    );
                }
            }
        }
        DlqCommand::Groups { queue, json } => {
            let groups = celeriac::bulk::dead_groups(backend.as_ref(), queue).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&groups)?);
            } else if groups.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<8}  {:>6}  {:<12} {:<24} {:<20} {:<20} ERROR",
                    "GROUP", "COUNT", "QUEUE", "TASK", "FIRST", "LAST"
                );
                for g in groups {
                    println!(
                        "{:<8}  {:>6}  {:<12} {:<24} {:<20} {:<20} {}",
                        g.id,
                        g.count,
                        g.queue,
                        g.task,
                        format_ms(g.first_seen),
                        format_ms(g.last_seen),
                        g.fingerprint
                    );
                }
            }
        }
        DlqCommand::Retry {
            group: Some(group),
            yes,
            ..
        } => {
            let count = celeriac::bulk::dead_groups(backend.as_ref(), None)
                .await?
                .into_iter()
                .find(|g| g.id == group)
                .map_or(0, |g| g.count);
            if count == 0 {
                // A mistyped group as much as an empty one: no `nothing to do` here.
                return Err(CliError(format!(
                    "no dead letters in group `{group}` (see `celeriac dlq groups`)"
                )));
            }
            let plan = Plan {
                what: format!(
                    "puts the {} of group {group} back in their queue to run again",
                    counted(count, "dead letter", "dead letters")
                ),
                name: group.clone(),
                count: Some(count),
                none: format!("no dead letters in group `{group}` (see `celeriac dlq groups`)"),
            };
            if !confirm(yes.yes, &plan)? {
                return Ok(());
            }
            let n = celeriac::bulk::retry_dead_group(backend.as_ref(), &group, app.client().now())
                .await?;
            crate::events::audit(
                &app,
                "dlq_retry",
                None,
                format!("retried {n} dead letters of group {group}"),
            )
            .await;
            println!("{n} jobs of group {group} back in their queues");
        }
        DlqCommand::Retry {
            ids, queue, yes, ..
        } => {
            let ids: Vec<JobId> = if ids.is_empty() {
                let mut all = Vec::new();
                loop {
                    let page = backend.dead_letters(queue.clone(), 1000, all.len()).await?;
                    if page.is_empty() {
                        break;
                    }
                    all.extend(page.into_iter().map(|d| d.job.id));
                }
                // Every dead letter: the ids just read are what it touches.
                let plan = Plan {
                    what: format!(
                        "puts the {} {} back in their queues to run again",
                        counted(all.len() as u64, "dead letter", "dead letters"),
                        scope(queue.as_deref())
                    ),
                    name: queue.clone().unwrap_or_else(|| ALL.into()),
                    count: Some(all.len() as u64),
                    none: none_in(queue.as_deref()),
                };
                if !confirm(yes.yes, &plan)? {
                    return Ok(());
                }
                all
            } else {
                ids.iter()
                    .map(|s| s.parse::<JobId>())
                    .collect::<Result<_, _>>()?
            };
            let bar = progress_bar(ids.len() as u64, "retrying dead letters");
            let mut retried = 0;
            for chunk in ids.chunks(200) {
                retried += backend
                    .retry_dead(Some(chunk.to_vec()), app.client().now())
                    .await?;
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            crate::events::audit(
                &app,
                "dlq_retry",
                None,
                format!("retried {retried} dead letters"),
            )
            .await;
            println!("{retried} jobs back in their queues");
        }
        DlqCommand::Purge { queue, yes } => {
            let count: u64 = backend
                .stats()
                .await?
                .iter()
                .filter(|s| queue.as_ref().is_none_or(|q| *q == s.queue))
                .map(|s| s.count(JobState::Dead))
                .sum();
            let plan = Plan {
                what: format!(
                    "deletes the {} {} for good",
                    counted(count, "dead letter", "dead letters"),
                    scope(queue.as_deref())
                ),
                name: queue.clone().unwrap_or_else(|| ALL.into()),
                count: Some(count),
                none: none_in(queue.as_deref()),
            };
            if !confirm(yes.yes, &plan)? {
                return Ok(());
            }
            let n = backend.purge_dead(queue.clone()).await?;
            crate::events::audit(
                &app,
                "dlq_purge",
                queue.as_deref(),
                format!("deleted {n} dead letters"),
            )
            .await;
            println!("deleted {n} dead letters");
        }
    }
    Ok(())
}
