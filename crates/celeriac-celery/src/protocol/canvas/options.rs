//! The mapping of signature options onto an outgoing message (§5.2).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::ApplyContext;
use crate::protocol::builder::Route;
use crate::protocol::error::{show, ProtocolError, Result};
use crate::protocol::headers::{as_u32, TaskHeaders, TimeLimit};
use crate::protocol::message::{Embed, TaskMessage};
use crate::protocol::signature::Signature;
use crate::protocol::time::parse_iso8601;

fn bad(field: &str, expected: &str, got: &Value) -> ProtocolError {
    ProtocolError::signature(
        format!("options.{field}"),
        format!("must be {expected}, got {}", show(got)),
    )
}

fn opt_str<'a>(o: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(key, "a string", other)),
    }
}

fn opt_secs(o: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(bad(key, "a number of seconds", other)),
    }
}

fn after(now: DateTime<Utc>, secs: f64) -> DateTime<Utc> {
    let ms = (secs * 1000.0).clamp(-1e15, 1e15) as i64;
    now.checked_add_signed(chrono::Duration::milliseconds(ms))
        .unwrap_or(now)
}

fn opt_time(
    o: &Map<String, Value>,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_iso8601(s)
            .map(Some)
            .ok_or_else(|| bad(key, "an ISO 8601 date-time", &Value::String(s.clone()))),
        Some(Value::Number(n)) => Ok(n.as_f64().map(|s| after(now, s))),
        Some(other) => Err(bad(key, "an ISO 8601 date-time or seconds", other)),
    }
}

/// The message for a plain signature (§5.2 mapping of options).
pub(super) fn message_from_signature(
    sig: &Signature,
    ctx: &ApplyContext,
) -> Result<(TaskMessage, Route)> {
    let o = &sig.options;
    let id = opt_str(o, "task_id")?.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let mut args = Vec::with_capacity(sig.args.len() + 1);
    if let (Some(r), false) = (&ctx.parent_result, sig.immutable) {
        args.push(r.clone());
    }
    args.extend(sig.args.iter().cloned());
    let u32_opt = |key: &str| match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_u32(v)
            .map(Some)
            .ok_or_else(|| bad(key, "a non-negative integer", v)),
    };
    let parent_id = ctx
        .parent
        .as_ref()
        .map(|p| p.id.clone())
        .or(opt_str(o, "parent_id")?.map(str::to_owned));
    let root_id = opt_str(o, "root_id")?
        .map(str::to_owned)
        .or_else(|| {
            ctx.parent
                .as_ref()
                .map(|p| p.root_id.clone().unwrap_or_else(|| p.id.clone()))
        })
        .unwrap_or_else(|| id.clone());
    let eta = match opt_time(o, "eta", ctx.now)? {
        Some(eta) => Some(eta),
        None => opt_secs(o, "countdown")?.map(|s| after(ctx.now, s)),
    };
    let stamped_headers = match o.get("stamped_headers") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        Some(other) => return Err(bad("stamped_headers", "a list of strings", other)),
    };
    let extra = match o.get("headers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(h)) => h.clone(),
        Some(other) => return Err(bad("headers", "an object", other)),
    };
    let present = |key: &str| o.get(key).is_some_and(|v| !v.is_null());
    let list = |key: &str| -> Result<Option<Vec<Signature>>> {
        if present(key) {
            Signature::list_from_value(o.get(key), &format!("options.{key}")).map(Some)
        } else {
            Ok(None)
        }
    };
    let headers = TaskHeaders {
        lang: Some("rust".into()),
        task: sig.task.clone(),
        id,
        shadow: opt_str(o, "shadow")?.map(str::to_owned),
        eta,
        expires: opt_time(o, "expires", ctx.now)?,
        group: opt_str(o, "group_id")?.map(str::to_owned),
        group_index: u32_opt("group_index")?,
        retries: u32_opt("retries")?.unwrap_or(0),
        timelimit: TimeLimit {
            hard: opt_secs(o, "time_limit")?,
            soft: opt_secs(o, "soft_time_limit")?,
        },
        root_id: Some(root_id),
        parent_id,
        ignore_result: Some(
            o.get("ignore_result")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
        stamped_headers,
        extra,
        ..TaskHeaders::default()
    };
    let embed = Embed {
        callbacks: list("link")?,
        errbacks: list("link_error")?,
        chain: list("chain")?,
        chord: match o.get("chord") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Signature::from_value(v, "options.chord")?),
        },
    };
    let queue = opt_str(o, "queue")?
        .unwrap_or(&ctx.default_queue)
        .to_owned();
    let exchange = opt_str(o, "exchange")?.unwrap_or_default().to_owned();
    let routing_key = match (exchange.is_empty(), opt_str(o, "routing_key")?) {
        (false, Some(rk)) => rk.to_owned(),
        _ => queue.clone(),
    };
    let priority = match o.get("priority") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            as_u32(v)
                .ok_or_else(|| bad("priority", "an integer 0..=9", v))?
                .min(9) as u8,
        ),
    };
    let route = Route {
        exchange,
        routing_key,
        queue,
        priority,
    };
    Ok((
        TaskMessage {
            headers,
            args,
            kwargs: sig.kwargs.clone(),
            embed,
        },
        route,
    ))
}
