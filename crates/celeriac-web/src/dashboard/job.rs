//! One job's page: its timeline, arguments and result (redacted), progress, headers, workflow,
//! the actions that fit its state, and the `celeriac enqueue` command that enqueues it again.

use super::jobs::{job_href, queue_href};
use super::layout::{self, badge, json_block, path_escape, when};
use super::request::{Done, Failure, Form, Outcome, Req};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use celeriac::clock::UnixMs;
use celeriac::workflow::FLOW_HEADER;
use celeriac::{CancelOutcome, EventLog, JobId, JobInfo, JobState, QueueAdmin, ResultStore};
use maud::html;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Arguments and results are shown up to this many characters.
const SHOWN_MAX: usize = 4096;

/// The newest events a job page looks through for the job's own.
const EVENTS_READ: usize = 1000;

/// One moment of a job's life.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Moment {
    pub(crate) at: UnixMs,
    /// What happened, in words.
    pub(crate) what: String,
    /// The event's kind, when it comes from the event stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event: Option<String>,
}

/// The last error.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LastError {
    pub(crate) kind: String,
    pub(crate) message: String,
    /// The attempt (1-based) it happened in.
    pub(crate) attempt: u32,
    /// When, as far as known (the event of the job's end, or its end).
    pub(crate) at: Option<UnixMs>,
}

/// Everything a job page shows (and its JSON twin); arguments and result redacted.
#[derive(Debug, Serialize)]
pub(crate) struct JobView {
    now: UnixMs,
    id: JobId,
    queue: String,
    task: String,
    state: JobState,
    priority: u8,
    attempts: u32,
    max_attempts: u32,
    created_at: UnixMs,
    run_at: UnixMs,
    started_at: Option<UnixMs>,
    finished_at: Option<UnixMs>,
    expires_at: Option<UnixMs>,
    worker: Option<String>,
    lease_until: Option<UnixMs>,
    /// The arguments as JSON, redacted (text cut at 4,096 characters when longer).
    arguments: Value,
    /// Whether the arguments were too long and are cut.
    arguments_cut: bool,
    /// The result as JSON, redacted (cut likewise), when one is kept.
    result: Option<Value>,
    result_cut: bool,
    error: Option<LastError>,
    progress: Option<celeriac::Progress>,
    /// Headers, less the secret-looking ones and the workflow's continuation.
    headers: BTreeMap<String, String>,
    /// How many headers are not shown.
    headers_hidden: usize,
    /// The workflow the job belongs to.
    workflow: Option<JobId>,
    /// The job that enqueued it, in a workflow.
    parent: Option<JobId>,
    /// Its life as far as the store knows, oldest first.
    timeline: Vec<Moment>,
    /// Events read to find the job's own (the newest ones).
    events_read: usize,
    /// `celeriac enqueue` with the same task, arguments and options.
    command: String,
    /// Whether redaction changed the arguments (the command then carries `***`).
    command_redacted: bool,
}

/// A payload or result as JSON, redacted, cut at [`SHOWN_MAX`] characters (as text then).
fn shown(req: &Req, task: &str, encoding: celeriac::Encoding, bytes: &[u8]) -> (Value, bool, bool) {
    let value = match encoding.decode::<Value>(bytes) {
        Ok(v) => v,
        // The raw bytes may hold a secret the redactor would have hidden: never shown.
        Err(_) => {
            return (
                Value::String(format!(
                    "<{} bytes that do not decode as {encoding:?}>",
                    bytes.len()
                )),
                false,
                false,
            )
        }
    };
    let redacted = (req.ctx.redactor)(task, value.clone());
    let changed = redacted != value;
    let text = serde_json::to_string_pretty(&redacted).unwrap_or_default();
    if text.chars().count() > SHOWN_MAX {
        let cut_text: String = text.chars().take(SHOWN_MAX).collect();
        return (Value::String(cut_text), true, changed);
    }
    (redacted, false, changed)
}

/// Whether a header's name looks like it holds a secret.
fn secret_header(name: &str) -> bool {
    let probe = serde_json::json!({ name: "x" });
    super::redact_secrets(probe.clone()) != probe
}

/// Text quoted for a POSIX shell: bare when it is plainly safe, else in single quotes.
pub(crate) fn shell_quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,/:@%+=".contains(c));
    if safe {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The `celeriac enqueue` command that enqueues `info`'s task again with `args`, in its
/// queue with its priority and attempts (and unique key); `--unchecked` when this
/// application does not know the task.
pub(crate) fn enqueue_command(info: &JobInfo, args: &Value, known: bool) -> String {
    let j = &info.job;
    let json = serde_json::to_string(args).unwrap_or_else(|_| "null".into());
    let mut cmd = format!(
        "celeriac enqueue {} --args {} --queue {} --priority {} --max-attempts {}",
        shell_quote(&j.task),
        shell_quote(&json),
        shell_quote(&j.queue),
        j.priority.get(),
        j.max_attempts
    );
    if let Some(u) = &j.unique {
        cmd.push_str(&format!(" --unique {}", shell_quote(&u.key)));
        let lifetime = match u.lifetime {
            celeriac::UniqueFor::UntilStarted => Some("started".to_string()),
            celeriac::UniqueFor::UntilFinished => None,
            celeriac::UniqueFor::Window(d) => {
                Some(format!("window={}", celeriac::duration::format(d)))
            }
            celeriac::UniqueFor::Debounce(d) => {
                Some(format!("debounce={}", celeriac::duration::format(d)))
            }
        };
        if let Some(l) = lifetime {
            cmd.push_str(&format!(" --unique-for {l}"));
        }
    }
    if !known {
        cmd.push_str(" --unchecked");
    }
    cmd
}

/// The moments of a job's life the store knows, with its events, oldest first.
fn timeline(info: &JobInfo, events: &[celeriac::Event]) -> Vec<Moment> {
    let j = &info.job;
    let moment = |at, what: String| Moment {
        at,
        what,
        event: None,
    };
    let mut t = vec![moment(
        j.created_at,
        format!(
            "enqueued in {} (priority {}, up to {} attempts)",
            j.queue,
            j.priority.get(),
            j.max_attempts
        ),
    )];
    if info.state == JobState::Retrying {
        t.push(moment(j.run_at, format!("attempt {} due", j.attempts + 1)));
    } else if j.run_at > j.created_at && j.started_at.is_none() {
        t.push(moment(j.run_at, "due to run (delayed)".into()));
    }
    if let Some(at) = j.started_at {
        t.push(moment(at, "first attempt started".into()));
    }
    for e in events {
        let by = e
            .actor
            .as_deref()
            .map(|a| format!(" (by {a})"))
            .unwrap_or_default();
        t.push(Moment {
            at: e.at,
            what: format!("{}{by}", e.message),
            event: Some(e.kind.clone()),
        });
    }
    if let (JobState::Active, Some(until)) = (info.state, info.lease_until) {
        t.push(moment(
            until,
            format!(
                "attempt {} runs on {}; its lease runs until then",
                j.attempts,
                info.worker.as_deref().unwrap_or("a worker")
            ),
        ));
    }
    if let Some(at) = j.finished_at {
        t.push(moment(at, format!("ended {}", info.state)));
    }
    t.sort_by_key(|m| m.at);
    t
}

async fn load_job(req: &Req, id: &str) -> Outcome<JobView> {
    let missing = || {
        Failure::not_found(format!(
            "no job {id} (it never existed, or its record expired)"
        ))
    };
    let id: JobId = id.parse().map_err(|_| missing())?;
    let store = req.ctx.store();
    let info = req.timed(store.get(id)).await?.ok_or_else(missing)?;
    let events = req.timed(store.events(None, EVENTS_READ)).await?;
    let events_read = events.len();
    let text_id = id.to_string();
    let mine: Vec<celeriac::Event> = events
        .into_iter()
        .filter(|e| {
            e.job == Some(id) || (e.kind.starts_with("admin.") && e.message.contains(&text_id))
        })
        .collect();
    let j = &info.job;
    let (arguments, arguments_cut, command_redacted) = shown(req, &j.task, j.encoding, &j.payload);
    let (result, result_cut) = match &info.result {
        Some(bytes) => {
            let (v, cut, _) = shown(req, &j.task, j.encoding, bytes);
            (Some(v), cut)
        }
        None => (None, false),
    };
    let error = info.error.as_ref().map(|e| {
        // When: the event of the job's end that carries this error, else its end.
        let told = format!("{}: {}", e.kind, e.message);
        let at = mine
            .iter()
            .rev()
            .find(|ev| ev.kind.starts_with("job.") && ev.message == told)
            .map(|ev| ev.at)
            .or(j.finished_at.filter(|_| info.state.is_terminal()));
        LastError {
            kind: e.kind.clone(),
            message: e.message.clone(),
            attempt: e.attempt,
            at,
        }
    });
    let mut headers = BTreeMap::new();
    let mut headers_hidden = 0;
    for (k, v) in &j.headers {
        if k == FLOW_HEADER || secret_header(k) {
            headers_hidden += 1;
        } else {
            headers.insert(k.clone(), v.clone());
        }
    }
    // The command carries the arguments as shown: never what the redactor hid.
    let command_args = if arguments_cut {
        Value::Null
    } else {
        arguments.clone()
    };
    let known = req.ctx.app.registry().get(&j.task).is_some();
    Ok(JobView {
        now: req.ctx.now(),
        id,
        queue: j.queue.clone(),
        task: j.task.clone(),
        state: info.state,
        priority: j.priority.get(),
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        created_at: j.created_at,
        run_at: j.run_at,
        started_at: j.started_at,
        finished_at: j.finished_at,
        expires_at: j.expires_at,
        worker: info.worker.clone(),
        lease_until: info.lease_until,
        command: enqueue_command(&info, &command_args, known),
        command_redacted: command_redacted || arguments_cut,
        arguments,
        arguments_cut,
        result,
        result_cut,
        error,
        progress: info.progress.clone(),
        headers,
        headers_hidden,
        workflow: j.root_id,
        parent: j.parent_id,
        timeline: timeline(&info, &mine),
        events_read,
    })
}

/// The id of the command's `<pre>`, which the copy button names.
const COMMAND_ID: &str = "enqueue-command";

pub(crate) async fn page(req: Req, Path(id): Path<String>) -> Response {
    let data = load_job(&req, &id).await;
    let title = format!("Job {id}");
    req.page(&title, data, |req, v| {
        let api = format!("/api/v1/jobs/{}", v.id);
        let here = layout::back_of(req);
        html! {
            section.summary {
                (badge(v.state.as_str()))
                " " (v.task) " in " a href=(queue_href(req, &v.queue)) { (v.queue) }
                div.actions {
                    @if v.state == JobState::Dead {
                        (layout::action_to(req, &format!("{api}/retry"), "Retry", None, &[], &here))
                    }
                    @if !v.state.is_terminal() {
                        (layout::action_to(req, &format!("{api}/cancel"), "Cancel",
                            Some("Cancel this job?"), &[], &here))
                    }
                    @if v.state != JobState::Active {
                        (layout::action_to(req, &format!("{api}/delete"), "Delete",
                            Some("Delete this job for good?"), &[],
                            &format!("/queues/{}", path_escape(&v.queue))))
                    }
                }
                @if v.state == JobState::Failed {
                    p.help { "A failed job ended with an error its task marked as not worth \
                        retrying, so it is not retried by hand; the command below enqueues it again." }
                }
                table.facts {
                    tbody {
                        tr { th { "Id" } td { code { (v.id) } } }
                        tr { th { "Priority" } td { (v.priority) } }
                        tr { th { "Attempts" } td { (v.attempts) " started of " (v.max_attempts) } }
                        tr { th { "Created" } td { (when(v.created_at, v.now)) } }
                        tr { th { "Run at" } td { (when(v.run_at, v.now)) } }
                        @if let Some(at) = v.started_at { tr { th { "Started" } td { (when(at, v.now)) } } }
                        @if let Some(at) = v.finished_at { tr { th { "Finished" } td { (when(at, v.now)) } } }
                        @if let Some(at) = v.expires_at { tr { th { "Expires" } td { (when(at, v.now)) } } }
                        @if let Some(w) = &v.worker {
                            tr { th { "Worker" } td { (w)
                                @if let Some(l) = v.lease_until { " (lease until " (layout::time(l)) ")" } } }
                        }
                        @if let Some(w) = v.workflow {
                            tr { th { "Workflow" } td { a href=(req.link(&format!("/workflows/{w}"))) { code { (w) } } } }
                        }
                        @if let Some(p) = v.parent {
                            tr { th { "Parent" } td { a href=(job_href(req, p)) { code { (p) } } } }
                        }
                        @if let Some(p) = &v.progress {
                            tr { th { "Progress" } td {
                                progress max="1" value=(p.fraction) { (format!("{:.0} %", p.fraction * 100.0)) }
                                " " (format!("{:.0} %", p.fraction * 100.0))
                                @if let Some(m) = &p.message { " " (m) }
                            } }
                        }
                    }
                }
            }
            @if let Some(e) = &v.error {
                section {
                    h2 { "Last error" }
                    p.notice.bad {
                        strong { (e.kind) } ": " (e.message) " (attempt " (e.attempt)
                        @if let Some(at) = e.at { ", " (when(at, v.now)) }
                        ")"
                    }
                }
            }
            section {
                h2 { "Timeline" }
                ol.timeline {
                    @for m in &v.timeline {
                        li {
                            (when(m.at, v.now)) " — "
                            @if let Some(k) = &m.event { code { (k) } " " }
                            (m.what)
                        }
                    }
                }
                p.help {
                    "The store keeps a job's last error only. Attempts that were retried are \
                     counted in the history, not recorded one by one; the event stream holds the \
                     job's end (failed, dead, cancelled) and actions on it while those events are \
                     kept (this page looks through the newest " (EVENTS_READ) " events)."
                }
            }
            section {
                h2 { "Arguments" }
                (json_block(&v.arguments, SHOWN_MAX))
                @if v.arguments_cut { p.help { "Cut at 4,096 characters." } }
            }
            section {
                h2 { "Result" }
                @match &v.result {
                    Some(r) => (json_block(r, SHOWN_MAX)),
                    None => p.empty { "No result kept." },
                }
            }
            @if !v.headers.is_empty() || v.headers_hidden > 0 {
                section {
                    h2 { "Headers" }
                    table.headers {
                        tbody {
                            @for (k, val) in &v.headers { tr { th { (k) } td { code { (val) } } } }
                        }
                    }
                    @if v.headers_hidden > 0 {
                        p.help { (v.headers_hidden) " not shown (secret-looking, or the workflow's continuation)." }
                    }
                }
            }
            section {
                h2 { "Enqueue it again" }
                pre.cmd id=(COMMAND_ID) { (v.command) }
                button type="button" data-copy=(COMMAND_ID) { "Copy" }
                @if v.command_redacted {
                    p.help { "The arguments are shown redacted: put the real values back in place of \
                        \"***\" before running it." }
                }
            }
        }
    })
}

pub(crate) async fn api(req: Req, Path(id): Path<String>) -> Response {
    Req::json(load_job(&req, &id).await)
}

fn conflict(message: String) -> Failure {
    Failure {
        status: StatusCode::CONFLICT,
        message,
    }
}

pub(crate) async fn act(
    req: Req,
    Path((id, action)): Path<(String, String)>,
    form: Form,
) -> Response {
    let outcome = act_on_job(&req, &id, &action).await;
    req.done(&form, outcome)
}

async fn act_on_job(req: &Req, id: &str, action: &str) -> Outcome<Done> {
    let missing = || {
        Failure::not_found(format!(
            "no job {id} (it never existed, or its record expired)"
        ))
    };
    let id: JobId = id.parse().map_err(|_| missing())?;
    let store = req.ctx.store();
    let now = req.ctx.now();
    let (done, queue) = match action {
        "cancel" => {
            let outcome = req.timed(req.ctx.app.client().cancel(id)).await?;
            let message = match outcome {
                CancelOutcome::Cancelled => format!("cancelled {id}; it will not run"),
                CancelOutcome::Requested => format!(
                    "{id} is running: its worker was asked to stop it; it ends as cancelled"
                ),
                CancelOutcome::AlreadyFinished(state) => {
                    return Err(conflict(format!("{id} had already finished: {state}")))
                }
                CancelOutcome::NotFound => return Err(missing()),
            };
            (Done::counted(message, 1), None)
        }
        "retry" | "delete" => {
            let info = req.timed(store.get(id)).await?.ok_or_else(missing)?;
            let queue = info.job.queue.clone();
            if action == "retry" {
                if info.state != JobState::Dead {
                    return Err(conflict(format!(
                        "{id} is {}: only dead jobs are retried by hand",
                        info.state
                    )));
                }
                let n = req.timed(store.retry_dead(Some(vec![id]), now)).await?;
                (
                    Done::counted(format!("retried {id}: back to pending"), n),
                    Some(queue),
                )
            } else {
                let n = req.timed(store.delete_jobs(&queue, vec![id])).await?;
                if n == 0 {
                    return Err(conflict(format!(
                        "{id} was not deleted: it is running (cancel it first)"
                    )));
                }
                (Done::counted(format!("deleted {id}"), n), Some(queue))
            }
        }
        other => {
            return Err(Failure::not_found(format!(
                "no action `{other}` on a job: retry, cancel or delete"
            )))
        }
    };
    req.audit(
        action,
        queue.as_deref(),
        format!("{action} {id}: {}", done.message),
    )
    .await;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_single_quotes() {
        assert_eq!(shell_quote("emails.send"), "emails.send");
        assert_eq!(shell_quote(r#"{"a":"it's"}"#), r#"'{"a":"it'\''s"}'"#);
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote(""), "''");
    }
}
