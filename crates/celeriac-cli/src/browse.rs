//! `celeriac jobs`: the jobs of a queue by state, a page at a time, and bulk actions on them.

use crate::args::{JobFilterArgs, JobsActionArgs, JobsCommand};
use crate::confirm::{confirm, counted, Plan};
use crate::support::{format_ms, progress_bar, CliError, CliResult};
use celeriac::backend::{JobQuery, SCAN_MAX};
use celeriac::bulk::{bulk, BulkAction};
use celeriac::{App, JobId, QueueAdmin};

fn query(app: &App, f: &JobFilterArgs, newest_first: bool) -> JobQuery {
    let mut q = JobQuery::new(f.queue.clone(), f.state);
    q.task = f.task.clone();
    q.error = f.error.clone();
    q.created_from = f
        .since
        .map(|d| app.client().now() - celeriac::clock::duration_ms(d));
    q.newest_first = newest_first;
    q
}

pub(crate) async fn run(app: App, command: JobsCommand) -> CliResult {
    match command {
        JobsCommand::List {
            filter,
            newest,
            limit,
            cursor,
            json,
        } => list(app, &filter, newest, limit, cursor, json).await,
        JobsCommand::Retry(args) => act(app, args, BulkAction::Retry).await,
        JobsCommand::Cancel(args) => act(app, args, BulkAction::Cancel).await,
        JobsCommand::Delete(args) => act(app, args, BulkAction::Delete).await,
    }
}

async fn list(
    app: App,
    filter: &JobFilterArgs,
    newest: bool,
    limit: usize,
    cursor: Option<String>,
    json: bool,
) -> CliResult {
    if limit == 0 {
        return Err(CliError("--limit must be at least 1".into()));
    }
    let q = query(&app, filter, newest);
    // A filtered listing may need several short pages to fill one.
    let mut jobs = Vec::new();
    let (mut scanned, mut next) = (0, cursor);
    loop {
        let page = app
            .backend()
            .list_jobs(q.clone(), next.take(), limit - jobs.len())
            .await?;
        scanned += page.scanned;
        jobs.extend(page.jobs);
        next = page.next;
        if jobs.len() >= limit || next.is_none() || scanned >= 100_000 {
            break;
        }
    }
    if json {
        let out = serde_json::json!({ "jobs": jobs, "next": next, "scanned": scanned });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if jobs.is_empty() {
        println!("no {} jobs in {} match", filter.state, filter.queue);
    } else {
        println!(
            "{:<36}  {:<24} {:>4} {:>8} {:<20} ERROR",
            "ID", "TASK", "PRI", "ATTEMPTS", "CREATED"
        );
        for j in &jobs {
            let error = j
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .unwrap_or_default();
            println!(
                "{:<36}  {:<24} {:>4} {:>8} {:<20} {}",
                j.job.id,
                j.job.task,
                j.job.priority.get(),
                format!("{}/{}", j.job.attempts, j.job.max_attempts),
                format_ms(j.job.created_at),
                error
            );
        }
    }
    match next {
        Some(c) => println!(
            "\n{} shown, {scanned} examined; more with --cursor {c}",
            jobs.len()
        ),
        None => println!("\n{} shown, {scanned} examined; the end", jobs.len()),
    }
    Ok(())
}

async fn act(app: App, args: JobsActionArgs, action: BulkAction) -> CliResult {
    let only: Vec<JobId> = args
        .ids
        .iter()
        .map(|s| s.parse::<JobId>())
        .collect::<Result<_, _>>()?;
    if action == BulkAction::Retry && args.filter.state != celeriac::JobState::Dead {
        // Said before anything is counted or asked.
        return Err(CliError(format!(
            "only dead letters are retried by hand, not {} jobs: add --state dead",
            args.filter.state
        )));
    }
    let q = query(&app, &args.filter, false);
    let in_state = state_count(&app, &args.filter).await?;
    if only.is_empty() {
        // Everything the filters select: count it, say it, and ask.
        let matching = if q.is_filtered() {
            count_matching(&app, &q).await?
        } else {
            in_state
        };
        let f = &args.filter;
        let (verb, then) = match action {
            BulkAction::Retry => ("puts", " back in the queue to run again"),
            BulkAction::Cancel => ("cancels", ""),
            BulkAction::Delete => ("deletes", " for good"),
        };
        let jobs = counted(matching, "job", "jobs");
        let filtered = if q.is_filtered() {
            " matching the filters"
        } else {
            ""
        };
        let plan = Plan {
            what: format!(
                "{verb} the {jobs} of queue `{}` in state {}{filtered}{then}",
                f.queue, f.state
            ),
            name: f.queue.clone(),
            count: Some(matching),
            none: format!("no {} jobs in queue `{}`{filtered}", f.state, f.queue),
        };
        if !confirm(args.yes.yes, &plan)? {
            return Ok(());
        }
    }
    let bar = progress_bar(0, "working");
    bar.set_message(match action {
        BulkAction::Retry => "retrying",
        BulkAction::Cancel => "cancelling",
        BulkAction::Delete => "deleting",
    });
    bar.set_length(in_state);
    let only = (!only.is_empty()).then_some(only.as_slice());
    let report = bulk(
        app.backend().as_ref(),
        q,
        only,
        action,
        app.client().now(),
        |r| bar.set_position(r.scanned),
    )
    .await?;
    bar.finish_and_clear();
    crate::events::audit(
        &app,
        action.as_str(),
        Some(&args.filter.queue),
        format!(
            "{} {} of {} matching {} jobs ({})",
            action.as_str(),
            report.done,
            report.matched,
            args.filter.state,
            if args.ids.is_empty() {
                "all matching the filters"
            } else {
                "a selection"
            }
        ),
    )
    .await;
    let done = match action {
        BulkAction::Retry => "retried",
        BulkAction::Cancel => "cancelled",
        BulkAction::Delete => "deleted",
    };
    println!(
        "{done} {} of {} matching jobs ({} examined)",
        report.done, report.matched, report.scanned
    );
    Ok(())
}

/// The jobs of the filter's queue in its state, from the store's counts.
async fn state_count(app: &App, f: &JobFilterArgs) -> Result<u64, CliError> {
    Ok(app
        .backend()
        .stats()
        .await?
        .iter()
        .filter(|s| s.queue == f.queue)
        .map(|s| s.count(f.state))
        .sum())
}

/// How many jobs `q` selects now, read a page at a time (what a bulk action would examine).
async fn count_matching(app: &App, q: &JobQuery) -> Result<u64, CliError> {
    let bar = progress_bar(0, "counting");
    let (mut matching, mut cursor) = (0, None);
    loop {
        let page = app
            .backend()
            .list_jobs(q.clone(), cursor.take(), SCAN_MAX)
            .await?;
        matching += page.jobs.len() as u64;
        bar.inc(page.scanned);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    bar.finish_and_clear();
    Ok(matching)
}
