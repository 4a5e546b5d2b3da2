//! Canvas: turning signatures into task messages (§5.2), chains (§5.3), groups (§5.5) and
//! chords (§5.6), for a worker applying callbacks and chain steps and for a producer building
//! workflows (§11.B).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

mod options;

use options::message_from_signature;

use super::builder::Route;
use super::error::{ProtocolError, Result};
use super::headers::TaskHeaders;
use super::message::{Embed, TaskMessage};
use super::signature::{Signature, SubtaskType};

/// The task that applies a signature (callback, chain step, chord body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentTask {
    /// Its id: the new message's `parent_id`.
    pub id: String,
    /// Its root id: the new message's `root_id` (unless the signature sets one).
    pub root_id: Option<String>,
}

impl ParentTask {
    /// The parent described by a received message's headers.
    pub fn from_headers(headers: &TaskHeaders) -> ParentTask {
        ParentTask {
            id: headers.id.clone(),
            root_id: headers.root_id.clone(),
        }
    }
}

/// What applying a signature needs besides the signature.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyContext {
    /// Now, for `countdown` and `expires` given in seconds.
    pub now: DateTime<Utc>,
    /// The parent's result, prepended to `args` unless the signature is immutable (for a
    /// chord body: the list of header results; for an errback: the failed task's id).
    pub parent_result: Option<Value>,
    /// The task applying it, if any (a producer has none).
    pub parent: Option<ParentTask>,
    /// The queue when the signature names none (Celery's default is `celery`).
    pub default_queue: String,
}

impl ApplyContext {
    /// A producer's context: no parent, no partial argument, default queue `celery`.
    pub fn new(now: DateTime<Utc>) -> ApplyContext {
        ApplyContext {
            now,
            parent_result: None,
            parent: None,
            default_queue: "celery".into(),
        }
    }

    /// A worker's context after the task of `headers` returned `result`.
    pub fn after(headers: &TaskHeaders, result: Value, now: DateTime<Utc>) -> ApplyContext {
        ApplyContext {
            now,
            parent_result: Some(result),
            parent: Some(ParentTask::from_headers(headers)),
            default_queue: "celery".into(),
        }
    }
}

/// A chord's join state the sender must set up before publishing its header tasks: the
/// result backend's `celery-taskset-meta-<group_id>.s` = `size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChordSetup {
    /// The header group id.
    pub group_id: String,
    /// How many header results will report.
    pub size: usize,
    /// The body's task id (what a client waits on).
    pub body_id: String,
}

/// The messages applying a signature produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    /// Messages to publish, each with its route, in order.
    pub messages: Vec<(TaskMessage, Route)>,
    /// For a chord: set the chord size **before** publishing `messages`.
    pub chord: Option<ChordSetup>,
    /// The id whose result is the workflow's result: the task id, the last chain element's
    /// id, the group id, or the chord body's id.
    pub result_id: String,
}

/// Freezes a signature: assigns `options.task_id` (and the ids inside a composite: chain
/// members; group members with `group_id`/`group_index`; chord header and body with the
/// header's `group_id`) where missing. Returns the id of the signature's result (see
/// [`Dispatch::result_id`]). Members that do not parse are left as they are.
pub fn freeze(sig: &mut Signature) -> String {
    match sig.subtask_type {
        Some(SubtaskType::Chain) => {
            let Ok(mut tasks) = sig.tasks() else {
                return own_id(sig);
            };
            let last = tasks.iter_mut().map(freeze).last();
            set_tasks(sig, &tasks);
            last.unwrap_or_else(|| own_id(sig))
        }
        Some(SubtaskType::Group) => {
            let gid = own_id(sig);
            let Ok(mut tasks) = sig.tasks() else {
                return gid;
            };
            for (i, t) in tasks.iter_mut().enumerate() {
                t.options
                    .insert("group_id".into(), Value::String(gid.clone()));
                t.options.insert("group_index".into(), Value::from(i));
                freeze(t);
            }
            set_tasks(sig, &tasks);
            gid
        }
        Some(SubtaskType::Chord) => {
            let Ok((mut header, mut body)) = sig.chord_parts() else {
                return own_id(sig);
            };
            let gid = chord_group_id(sig);
            body.options
                .insert("group_id".into(), Value::String(gid.clone()));
            let body_id = freeze(&mut body);
            for (i, t) in header.iter_mut().enumerate() {
                t.options
                    .insert("group_id".into(), Value::String(gid.clone()));
                t.options.insert("group_index".into(), Value::from(i));
                freeze(t);
            }
            let mut group = Signature::group(header);
            group
                .options
                .insert("task_id".into(), Value::String(gid.clone()));
            sig.kwargs.insert("header".into(), group.to_value());
            sig.kwargs.insert("body".into(), body.to_value());
            // Python's convention: a chord's own `task_id` is its header group id.
            sig.options.insert("task_id".into(), Value::String(gid));
            body_id
        }
        _ => own_id(sig),
    }
}

fn own_id(sig: &mut Signature) -> String {
    if let Some(id) = sig.task_id() {
        return id.to_owned();
    }
    let id = uuid::Uuid::new_v4().to_string();
    sig.options
        .insert("task_id".into(), Value::String(id.clone()));
    id
}

fn set_tasks(sig: &mut Signature, tasks: &[Signature]) {
    sig.kwargs.insert(
        "tasks".into(),
        Value::Array(tasks.iter().map(Signature::to_value).collect()),
    );
}

/// The header group id of a chord: the header group's `task_id`, else the chord's own
/// `task_id` (Python freezes both to the same id), else a new one.
fn chord_group_id(sig: &Signature) -> String {
    sig.kwargs
        .get("header")
        .and_then(|h| h.get("options"))
        .and_then(|o| o.get("task_id"))
        .or_else(|| sig.options.get("task_id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Group options that reach every member.
const INHERITED: [&str; 10] = [
    "queue",
    "exchange",
    "routing_key",
    "priority",
    "countdown",
    "eta",
    "expires",
    "time_limit",
    "soft_time_limit",
    "root_id",
];

fn is_plain(sig: &Signature) -> bool {
    !matches!(
        sig.subtask_type,
        Some(SubtaskType::Chain | SubtaskType::Group | SubtaskType::Chord)
    )
}

impl Embed {
    /// The chain step to send after a success (§5.3): the last element of `embed.chain`,
    /// applied with `ctx` and carrying the rest of the chain. `None` without a chain step.
    ///
    /// # Errors
    /// As [`Signature::dispatch`].
    pub fn dispatch_chain_step(&self, ctx: &ApplyContext) -> Result<Option<Dispatch>> {
        let Some((next, rest)) = self.next_chain_step() else {
            return Ok(None);
        };
        with_rest_of_chain(next, rest).dispatch(ctx).map(Some)
    }
}

/// The steps of a chain as Python prepares them: nested chains flattened, and a group
/// followed by another step upgraded to a chord whose body is that step.
fn chain_steps(tasks: Vec<Signature>) -> Result<Vec<Signature>> {
    let mut flat = Vec::with_capacity(tasks.len());
    for t in tasks {
        if t.subtask_type == Some(SubtaskType::Chain) {
            flat.extend(chain_steps(t.tasks()?)?);
        } else {
            flat.push(t);
        }
    }
    let mut steps: Vec<Signature> = Vec::with_capacity(flat.len());
    let mut it = flat.into_iter().peekable();
    while let Some(step) = it.next() {
        if step.subtask_type == Some(SubtaskType::Group) && it.peek().is_some() {
            if let Some(body) = it.next() {
                // The group itself becomes the header (its options and id kept).
                let mut chord = Signature::chord(Vec::new(), body);
                chord.kwargs.insert("header".into(), step.to_value());
                steps.push(chord);
                continue;
            }
        }
        steps.push(step);
    }
    Ok(steps)
}

/// Puts the rest of a chain (reversed) where it travels: in `options.chain`, or for a chord in
/// its body's `options.chain`; a chain already there runs first.
fn with_rest_of_chain(mut sig: Signature, rest_reversed: Vec<Signature>) -> Signature {
    if sig.subtask_type == Some(SubtaskType::Chord) {
        if let Ok((_, mut body)) = sig.chord_parts() {
            prepend_chain(&mut body, rest_reversed);
            sig.kwargs.insert("body".into(), body.to_value());
            return sig;
        }
    }
    prepend_chain(&mut sig, rest_reversed);
    sig
}

fn prepend_chain(sig: &mut Signature, rest_reversed: Vec<Signature>) {
    let mut chain: Vec<Value> = rest_reversed.iter().map(Signature::to_value).collect();
    if let Some(Value::Array(existing)) = sig.options.get("chain") {
        chain.extend(existing.iter().cloned());
    }
    sig.options.insert("chain".into(), Value::Array(chain));
}

/// Appends `value` (a signature or a list of them) to a list option (`link`, `link_error`).
fn extend_list_option(sig: &mut Signature, key: &str, value: &Value) {
    let mut list = match sig.options.remove(key) {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => Vec::new(),
        Some(one) => vec![one],
    };
    match value {
        Value::Array(items) => list.extend(items.iter().cloned()),
        Value::Null => {}
        one => list.push(one.clone()),
    }
    sig.options.insert(key.to_owned(), Value::Array(list));
}

/// A chain's own options, as Python's `chain.apply_async(**options)` uses them: `link` on the
/// last step, `link_error` on every step, the rest (`queue`, `countdown`, ...) on the first
/// step where it has none of its own.
fn spread_chain_options(options: &Map<String, Value>, steps: &mut [Signature]) {
    for (key, value) in options {
        match key.as_str() {
            "task_id" | "chain" | "chord" | "group_id" | "group_index" => {}
            "link" => {
                if let Some(last) = steps.last_mut() {
                    extend_list_option(last, key, value);
                }
            }
            "link_error" => steps
                .iter_mut()
                .for_each(|s| extend_list_option(s, key, value)),
            _ => {
                if let Some(first) = steps.first_mut() {
                    first
                        .options
                        .entry(key.clone())
                        .or_insert_with(|| value.clone());
                }
            }
        }
    }
}

impl Signature {
    /// Applies the signature: the messages to publish (§5.2–5.6). A plain task gives one
    /// message; a chain its first step carrying the rest reversed (a group followed by a task
    /// becomes a chord, as in Python); a group one message per member with `group` and
    /// `group_index`; a chord its header members with `embed.chord` = the frozen body, plus the
    /// [`ChordSetup`] to write first.
    ///
    /// # Errors
    /// [`ProtocolError::Signature`] for options of the wrong type or malformed members,
    /// [`ProtocolError::UnsupportedCanvas`] for group or chord members that are themselves
    /// chains, groups or chords.
    pub fn dispatch(&self, ctx: &ApplyContext) -> Result<Dispatch> {
        let mut sig = self.clone();
        match sig.subtask_type {
            Some(SubtaskType::Chain) => {
                let mut tasks = chain_steps(sig.tasks()?)?;
                spread_chain_options(&sig.options, &mut tasks);
                let result_id = tasks
                    .iter_mut()
                    .map(freeze)
                    .last()
                    .unwrap_or_else(|| own_id(&mut sig));
                if tasks.is_empty() {
                    return Ok(Dispatch {
                        messages: Vec::new(),
                        chord: None,
                        result_id,
                    });
                }
                let mut rest = tasks.split_off(1);
                let first = tasks.remove(0);
                rest.reverse();
                let mut d = with_rest_of_chain(first, rest).dispatch(ctx)?;
                d.result_id = result_id;
                Ok(d)
            }
            Some(SubtaskType::Group) => {
                let gid = freeze(&mut sig);
                let mut messages = Vec::new();
                for (i, mut member) in sig.tasks()?.into_iter().enumerate() {
                    // Options given to the group apply to every member (as in Python).
                    for key in INHERITED {
                        if let (Some(v), false) =
                            (sig.options.get(key), member.options.contains_key(key))
                        {
                            member.options.insert(key.to_owned(), v.clone());
                        }
                    }
                    if !is_plain(&member) {
                        return Err(ProtocolError::UnsupportedCanvas(format!(
                            "group member {i} is itself a {}; only plain task signatures are supported there",
                            member.subtask_type.as_ref().map_or("", SubtaskType::as_str)
                        )));
                    }
                    messages.push(message_from_signature(&member, ctx)?);
                }
                Ok(Dispatch {
                    messages,
                    chord: None,
                    result_id: gid,
                })
            }
            Some(SubtaskType::Chord) => {
                let body_id = freeze(&mut sig);
                let (header, body) = sig.chord_parts()?;
                let group_id = chord_group_id(&sig);
                if header.is_empty() {
                    let mut body_ctx = ctx.clone();
                    body_ctx.parent_result = Some(Value::Array(Vec::new()));
                    return Ok(Dispatch {
                        messages: vec![message_from_signature(&body, &body_ctx)?],
                        chord: None,
                        result_id: body_id,
                    });
                }
                let mut messages = Vec::new();
                for (i, member) in header.iter().enumerate() {
                    if !is_plain(member) {
                        return Err(ProtocolError::UnsupportedCanvas(format!(
                            "chord header member {i} is itself a {}; only plain task signatures are supported there",
                            member.subtask_type.as_ref().map_or("", SubtaskType::as_str)
                        )));
                    }
                    let mut m = member.clone();
                    m.options.insert("chord".into(), body.to_value());
                    messages.push(message_from_signature(&m, ctx)?);
                }
                let size = header.len();
                Ok(Dispatch {
                    messages,
                    chord: Some(ChordSetup {
                        group_id,
                        size,
                        body_id: body_id.clone(),
                    }),
                    result_id: body_id,
                })
            }
            _ => {
                let (message, route) = message_from_signature(&sig, ctx)?;
                let result_id = message.headers.id.clone();
                Ok(Dispatch {
                    messages: vec![(message, route)],
                    chord: None,
                    result_id,
                })
            }
        }
    }
}
