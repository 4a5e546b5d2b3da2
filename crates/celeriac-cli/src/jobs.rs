//! `celeriac enqueue`, `inspect`, `cancel`, `queues`, `pause`, `resume` and `purge`: jobs and
//! queues.

use crate::args::EnqueueArgs;
use crate::confirm::{confirm, counted, thousands, Plan};
use crate::support::{format_ms, CliError, CliResult};
use celeriac::backend::{WorkflowRecord, WorkflowStore};
use celeriac::workflow::FLOW_HEADER;
use celeriac::{
    App, CancelOutcome, Error, JobId, JobInfo, JobOptions, Priority, QueueAdmin, ResultStore,
};

pub(crate) async fn enqueue(app: App, args: EnqueueArgs) -> CliResult {
    let value: serde_json::Value = serde_json::from_str(&args.args)
        .map_err(|e| CliError(format!("--args is not valid JSON: {e}")))?;
    let priority = args.priority.map(Priority::new).transpose()?;
    let opts = JobOptions {
        queue: args.queue,
        priority,
        delay: args.delay,
        expires_in: args.expires,
        max_attempts: args.max_attempts,
        unique: args.unique.map(|key| celeriac::Unique {
            key,
            lifetime: args.unique_for,
        }),
        ..JobOptions::default()
    };
    let registry = (!args.unchecked).then(|| app.registry().as_ref());
    let handle = app
        .client()
        .enqueue_json(registry, &args.task, &value, opts)
        .await
        .map_err(|e| match e {
            Error::Config { setting, message } if setting == "task" => {
                CliError(format!("{message} (pass --unchecked to enqueue it anyway)"))
            }
            other => CliError(other.to_string()),
        })?;
    println!("{}", handle.id());
    if let Some(wait) = args.wait {
        let info = handle.wait(wait).await?;
        print_info(&info);
    }
    Ok(())
}

pub(crate) async fn inspect(app: App, id: &str, json: bool) -> CliResult {
    let id: JobId = id.parse()?;
    let Some(info) = app.backend().get(id).await? else {
        let Some(rec) = app.backend().workflow_get(id).await? else {
            return Err(CliError(format!(
                "no job or workflow {id} (it never existed, or its record expired)"
            )));
        };
        print_workflow(&rec, json)?;
        return Ok(());
    };
    if json {
        let mut v = serde_json::to_value(&info)?;
        if let Some(obj) = v.as_object_mut() {
            let result = info
                .result_text()
                .map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)));
            obj.insert("result".into(), result.unwrap_or(serde_json::Value::Null));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_info(&info);
        // The times above are the fleet's; say how this host's clock stands against it.
        println!(
            "\n{}",
            clock_line(&celeriac_core::StoreClock::fleet_clock(
                app.backend().as_ref()
            ))
        );
    }
    Ok(())
}

fn print_workflow(rec: &WorkflowRecord, json: bool) -> CliResult {
    let result = rec.result.as_deref().map(|bytes| {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into()))
    });
    if json {
        let mut v = serde_json::to_value(rec)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("result".into(), result.unwrap_or(serde_json::Value::Null));
            obj.insert("kind".into(), "workflow".into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let ts = |t: Option<i64>| t.map(format_ms).unwrap_or_else(|| "-".into());
    println!("workflow:    {}", rec.id);
    println!("shape:       {}", rec.name);
    println!("state:       {}", rec.state.as_str());
    println!("created:     {}", format_ms(rec.created_at));
    println!("finished:    {}", ts(rec.finished_at));
    if let Some(r) = result {
        println!("result:      {r}");
    }
    if let Some(e) = &rec.error {
        println!("error:       {e}");
    }
    Ok(())
}

fn print_info(info: &JobInfo) {
    let j = &info.job;
    let ts = |t: Option<i64>| t.map(format_ms).unwrap_or_else(|| "-".into());
    println!("id:          {}", j.id);
    println!("task:        {}", j.task);
    println!("queue:       {}", j.queue);
    println!("state:       {}", info.state);
    println!("priority:    {}", j.priority.get());
    println!("attempts:    {} of {}", j.attempts, j.max_attempts);
    println!("created:     {}", format_ms(j.created_at));
    println!("run at:      {}", format_ms(j.run_at));
    println!("started:     {}", ts(j.started_at));
    println!("finished:    {}", ts(j.finished_at));
    if let Some(e) = j.expires_at {
        println!("expires:     {}", format_ms(e));
    }
    println!("args:        {}", j.encoding.to_json_text(&j.payload));
    if let Some(r) = info.result_text() {
        println!("result:      {r}");
    }
    if let Some(e) = &info.error {
        println!("error:       {e}");
    }
    if let Some(p) = &info.progress {
        println!(
            "progress:    {:.0}%{}",
            p.fraction * 100.0,
            p.message
                .as_deref()
                .map(|m| format!(" {m}"))
                .unwrap_or_default()
        );
    }
    if let Some(w) = &info.worker {
        println!("worker:      {w} (lease until {})", ts(info.lease_until));
    }
    if let Some(w) = j.root_id.filter(|_| j.headers.contains_key(FLOW_HEADER)) {
        println!("workflow:    {w} (celeriac inspect {w})");
    }
    for (k, v) in j.headers.iter().filter(|(k, _)| k.as_str() != FLOW_HEADER) {
        println!("header:      {k}: {v}");
    }
}

pub(crate) async fn queues(app: App, json: bool) -> CliResult {
    let now = app.client().now();
    let figures = celeriac::monitor::queue_figures(app.backend().as_ref(), now).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    if figures.is_empty() {
        println!("no queues yet");
        return Ok(());
    }
    use celeriac::JobState as S;
    println!(
        "{:<24} {:>8} {:>9} {:>9} {:>8} {:>9} {:>8} {:>10} {:>8} {:>9} {:>7} {:>7}",
        "QUEUE",
        "PENDING",
        "LATENCY",
        "SCHEDULED",
        "ACTIVE",
        "RETRYING",
        "DEAD",
        "SUCCEEDED",
        "FAILED",
        "CONSUMERS",
        "OK/MIN",
        "ERR/MIN"
    );
    for f in figures {
        let q = &f.stats;
        let name = if q.paused {
            format!("{} (paused)", q.queue)
        } else {
            q.queue.clone()
        };
        println!(
            "{:<24} {:>8} {:>9} {:>9} {:>8} {:>9} {:>8} {:>10} {:>8} {:>9} {:>7} {:>7}",
            name,
            q.count(S::Pending),
            latency(f.latency_ms),
            q.count(S::Scheduled),
            q.count(S::Active),
            q.count(S::Retrying),
            q.count(S::Dead),
            q.count(S::Succeeded),
            q.count(S::Failed),
            format!("{} ({})", f.consumers, f.slots),
            rate(f.succeeded_per_min),
            rate(f.failed_per_min),
        );
    }
    println!(
        "\nLATENCY: how long the oldest ready job has waited. CONSUMERS: live workers on the \
         queue (their slots).\nOK/MIN, ERR/MIN: attempts that succeeded, and that failed, per \
         minute over the last {} minutes (celeriac stats shows more).\n{}",
        celeriac::monitor::RATE_MINUTES,
        clock_line(&celeriac_core::StoreClock::fleet_clock(
            app.backend().as_ref()
        ))
    );
    Ok(())
}

/// A queue's latency for a table: `-` when nothing waits, else ms, s, m or h.
fn latency(ms: u64) -> String {
    match ms {
        0 => "-".to_string(),
        _ => crate::support::short_ms(ms as f64),
    }
}

/// A rate per minute for a table: `-` for none.
fn rate(per_min: f64) -> String {
    match per_min {
        r if r <= 0.0 => "-".to_string(),
        r if r < 10.0 => format!("{r:.1}"),
        r => format!("{r:.0}"),
    }
}

/// One line on the fleet's clock as this process reads it: where it comes from and how far
/// this host's wall clock is off it.
fn clock_line(clock: &celeriac::clock::FleetClock) -> String {
    // Fleet minus wall: positive when this host's wall clock is behind.
    let off = clock.offset_ms();
    let how = match off {
        // A few milliseconds are the reading's own noise.
        -4..=4 => "in step with it".to_string(),
        o if o > 0 => format!("{:.3} s behind it", o as f64 / 1000.0),
        o => format!("{:.3} s ahead of it", -o as f64 / 1000.0),
    };
    let advice = if off.unsigned_abs() > celeriac::clock::OFFSET_WARNING.as_millis() as u64 {
        " (Celeriac runs on the store's clock, but check this host's time synchronisation)"
    } else {
        ""
    };
    format!(
        "clock: {}, read in {:.1} ms; this host's wall clock is {how}{advice}",
        clock.source().unwrap_or("this host's wall clock"),
        clock.round_trip().as_secs_f64() * 1000.0,
    )
}

/// `celeriac cancel ID`.
pub(crate) async fn cancel(app: App, id: &str) -> CliResult {
    let id: JobId = id.parse()?;
    let outcome = app.client().cancel(id).await?;
    if matches!(outcome, CancelOutcome::Cancelled | CancelOutcome::Requested) {
        crate::events::audit(&app, "cancel", None, format!("cancel {id}: {outcome:?}")).await;
    }
    match outcome {
        CancelOutcome::Cancelled => println!("{id} cancelled; it will not run"),
        CancelOutcome::Requested => {
            println!("{id} is running: its worker was asked to stop it; it ends as cancelled")
        }
        CancelOutcome::AlreadyFinished(state) => println!("{id} had already finished: {state}"),
        CancelOutcome::NotFound => {
            return Err(CliError(format!(
                "no job {id} (it never existed, or its record expired)"
            )))
        }
    }
    Ok(())
}

/// `celeriac pause QUEUE`.
pub(crate) async fn pause(app: App, queue: &str) -> CliResult {
    app.backend().pause(queue).await?;
    crate::events::audit(&app, "pause", Some(queue), format!("paused {queue}")).await;
    println!("paused {queue}");
    Ok(())
}

/// `celeriac resume QUEUE`.
pub(crate) async fn resume(app: App, queue: &str) -> CliResult {
    app.backend().resume(queue).await?;
    crate::events::audit(&app, "resume", Some(queue), format!("resumed {queue}")).await;
    println!("resumed {queue}");
    Ok(())
}

/// `celeriac purge QUEUE [--yes]`: says how many waiting jobs it deletes, and asks first.
pub(crate) async fn purge(app: App, queue: &str, yes: bool) -> CliResult {
    use celeriac::JobState as S;
    let stats = app.backend().stats().await?;
    let q = stats.iter().find(|s| s.queue == queue);
    let [pending, scheduled, retrying] =
        [S::Pending, S::Scheduled, S::Retrying].map(|st| q.map_or(0, |q| q.count(st)));
    let waiting = pending + scheduled + retrying;
    let plan = Plan {
        what: format!(
            "deletes the {} of queue `{queue}` ({} pending, {} scheduled, {} retrying; \
             running jobs stay)",
            counted(waiting, "waiting job", "waiting jobs"),
            thousands(pending),
            thousands(scheduled),
            thousands(retrying),
        ),
        name: queue.to_string(),
        count: Some(waiting),
        none: format!("queue `{queue}` has no waiting jobs"),
    };
    if !confirm(yes, &plan)? {
        return Ok(());
    }
    let n = app.backend().purge(queue).await?;
    crate::events::audit(
        &app,
        "purge",
        Some(queue),
        format!("deleted {n} waiting jobs from {queue}"),
    )
    .await;
    println!("deleted {n} waiting jobs from {queue}");
    Ok(())
}
