//! [`WorkflowStore`] on Redis: joins and workflow records, one Lua script per atomic command
//! (`lua/arriveJoin-1.lua`, `lua/startWorkflow-1.lua`, `lua/finishWorkflow-1.lua`).
//!
//! Every key of one join or workflow carries the hash tag `{wf:<id>}` and each script touches
//! one key, passed in KEYS, so they run on Redis Cluster. A join is one hash: member outputs
//! under their index, and a count of distinct indexes that bumps only when an index is new, so
//! an arrival answers "complete or not" without reading the members. The outputs come back
//! (`HGETALL`, no `unpack`) only once complete, and are put in index order here.
//!
//! A finished workflow's id is published on `<prefix>:{wf:<id>}:done`, which the pattern every
//! process already listens on for job completions matches, so `workflow_wait` wakes on the
//! same subscription as the job `wait`.

use crate::conn::map_err;
use crate::{keys, num, RedisBackend};
use celeriac_core::backend::{
    JoinArrival, JoinInput, JoinStatus, WorkflowEnd, WorkflowRecord, WorkflowState, WorkflowStore,
};
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::{Error, ErrorKind, Result};
use celeriac_core::job::JobId;
use redis::{AsyncCommands, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The bytes of a string or integer reply element.
fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn unexpected(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::backend(
        ErrorKind::GiveUp,
        format!("the {what} script answered in an unexpected shape: {detail}"),
    )
}

/// Reads the join script's answer (see `lua/arriveJoin-1.lua`).
pub(crate) fn join_status(reply: Value, join: JobId) -> Result<JoinStatus> {
    let Value::Array(items) = reply else {
        return Err(unexpected("join", format!("{reply:?}")));
    };
    let mut items = items.into_iter();
    let tag = items.next().and_then(bytes).unwrap_or_default();
    let body = items
        .next()
        .ok_or_else(|| unexpected("join", "a reply without a body"))?;
    match tag.as_slice() {
        b"w" => {
            let text = bytes(body).unwrap_or_default();
            let arrived = String::from_utf8_lossy(&text)
                .parse()
                .map_err(|_| unexpected("join", "a count that is not a number"))?;
            Ok(JoinStatus::Waiting { arrived })
        }
        b"f" => Ok(JoinStatus::Failed(
            String::from_utf8_lossy(&bytes(body).unwrap_or_default()).into_owned(),
        )),
        b"c" => {
            let Value::Array(flat) = body else {
                return Err(unexpected("join", "outputs that are not a list"));
            };
            let mut total: Option<usize> = None;
            let mut outputs: Vec<(u32, Vec<u8>)> = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
                let field = bytes(field).unwrap_or_default();
                let value = bytes(value).unwrap_or_default();
                // Numeric fields are member outputs; the others are the join's own (`t`, `n`, `x`).
                match std::str::from_utf8(&field)
                    .ok()
                    .and_then(|f| f.parse().ok())
                {
                    Some(index) => outputs.push((index, value)),
                    None if field == b"t" => {
                        total = String::from_utf8_lossy(&value).parse().ok();
                    }
                    None => {}
                }
            }
            outputs.sort_unstable_by_key(|(index, _)| *index);
            let in_order = outputs
                .iter()
                .enumerate()
                .all(|(i, (index, _))| *index as usize == i);
            if total != Some(outputs.len()) || !in_order {
                return Err(Error::backend(
                    ErrorKind::GiveUp,
                    format!(
                        "join {join} is complete but holds {} outputs for a total of {total:?}, \
                         not one per index",
                        outputs.len()
                    ),
                ));
            }
            Ok(JoinStatus::Complete(
                outputs.into_iter().map(|(_, v)| v).collect(),
            ))
        }
        other => Err(unexpected(
            "join",
            format!("tag {:?}", String::from_utf8_lossy(other)),
        )),
    }
}

/// A workflow record from its hash (see `lua/includes/flow.lua` for the fields).
pub(crate) fn record_from_hash(
    id: JobId,
    mut fields: HashMap<String, Vec<u8>>,
) -> Result<WorkflowRecord> {
    let text = |fields: &HashMap<String, Vec<u8>>, k: &str| {
        fields
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let int = |fields: &HashMap<String, Vec<u8>>, k: &str| -> Result<Option<i64>> {
        text(fields, k)
            .map(|t| {
                t.parse::<i64>().map_err(|_| {
                    Error::Codec(format!("workflow {id}: field `{k}` is not a number: {t:?}"))
                })
            })
            .transpose()
    };
    let state = WorkflowState::from_code(
        int(&fields, "s")?
            .ok_or_else(|| Error::Codec(format!("workflow {id}: the record has no state")))?,
    )?;
    Ok(WorkflowRecord {
        id,
        name: text(&fields, "n").unwrap_or_default(),
        state,
        error: text(&fields, "e"),
        created_at: int(&fields, "c")?.unwrap_or(0),
        finished_at: int(&fields, "f")?,
        ttl: Duration::from_millis(int(&fields, "t")?.unwrap_or(0).max(0) as u64),
        result: fields.remove("r"),
    })
}

impl RedisBackend {
    fn prefix(&self) -> &str {
        &self.inner.config.prefix
    }
}

impl WorkflowStore for RedisBackend {
    async fn join_arrive(&self, arrival: JoinArrival, now: UnixMs) -> Result<JoinStatus> {
        self.inner.config.role.allow_queues("join a workflow")?;
        arrival.validate()?;
        let join = arrival.join.to_string();
        let (kind, value): (&[u8], Vec<u8>) = match arrival.input {
            JoinInput::Output(output) => (b"o", output),
            JoinInput::Failed(message) => (b"f", message.into_bytes()),
        };
        let mut inv = self.inner.scripts.arrive_join.prepare_invoke();
        inv.key(keys::join_key(self.prefix(), &join))
            .arg(arrival.index)
            .arg(arrival.total)
            .arg(kind)
            .arg(value)
            .arg(num(now))
            .arg(num(duration_ms(arrival.ttl)));
        let reply: Value = inv.invoke_async(&mut self.conn()).await.map_err(map_err)?;
        join_status(reply, arrival.join)
    }

    async fn workflow_start(&self, record: WorkflowRecord) -> Result<()> {
        self.inner.config.role.allow_queues("start a workflow")?;
        let id = record.id.to_string();
        let mut inv = self.inner.scripts.start_workflow.prepare_invoke();
        inv.key(keys::workflow_key(self.prefix(), &id))
            .arg(record.name)
            .arg(num(record.created_at))
            .arg(num(duration_ms(record.ttl)));
        let _: i64 = inv.invoke_async(&mut self.conn()).await.map_err(map_err)?;
        Ok(())
    }

    async fn workflow_finish(&self, id: JobId, end: WorkflowEnd, now: UnixMs) -> Result<bool> {
        let sid = id.to_string();
        let (kind, value): (&[u8], Vec<u8>) = match end {
            WorkflowEnd::Succeeded(output) => (b"s", output),
            WorkflowEnd::Failed(message) => (b"f", message.into_bytes()),
        };
        let mut inv = self.inner.scripts.finish_workflow.prepare_invoke();
        inv.key(keys::workflow_key(self.prefix(), &sid))
            .arg(&sid)
            .arg(num(now))
            .arg(kind)
            .arg(value)
            .arg(keys::workflow_channel(self.prefix(), &sid));
        let applied: i64 = inv.invoke_async(&mut self.conn()).await.map_err(map_err)?;
        Ok(applied == 1)
    }

    async fn workflow_get(&self, id: JobId) -> Result<Option<WorkflowRecord>> {
        let fields: HashMap<String, Vec<u8>> = self
            .conn()
            .hgetall(keys::workflow_key(self.prefix(), &id.to_string()))
            .await
            .map_err(map_err)?;
        if fields.is_empty() {
            return Ok(None);
        }
        record_from_hash(id, fields).map(Some)
    }

    async fn workflow_wait(&self, id: JobId, timeout: Duration) -> Result<WorkflowRecord> {
        self.wait_until_done(
            id,
            timeout,
            || self.workflow_get(id),
            |r| r.state != WorkflowState::Running,
        )
        .await
    }
}
