//! `celeriac dlq`: listing, retrying and deleting dead letters.

use crate::args::DlqCommand;
use crate::support::{format_ms, progress_bar, CliError, CliResult};
use celeriac::{App, JobId, QueueAdmin};

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
            group: Some(group), ..
        } => {
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
        DlqCommand::Retry { ids, queue, .. } => {
            let ids: Vec<JobId> = if ids.is_empty() {
                let mut all = Vec::new();
                loop {
                    let page = backend.dead_letters(queue.clone(), 1000, all.len()).await?;
                    if page.is_empty() {
                        break;
                    }
                    all.extend(page.into_iter().map(|d| d.job.id));
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
            if !yes {
                return Err(CliError(
                    "refusing to delete dead letters without --yes".into(),
                ));
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
