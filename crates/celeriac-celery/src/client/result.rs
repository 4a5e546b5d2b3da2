//! [`AsyncResult`] and [`GroupResult`]: reading what the workers stored.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::error::{ClientError, Result, TaskFailure};
use super::Client;
use crate::results::json::unwrap_kombu;
use crate::results::{ResultMeta, State};

/// The result of one task, by id (Python's `AsyncResult`).
#[derive(Debug, Clone)]
pub struct AsyncResult {
    /// The task id.
    pub id: String,
    client: Client,
}

impl AsyncResult {
    pub(crate) fn new(client: Client, id: String) -> Self {
        AsyncResult { id, client }
    }

    /// The stored record, `None` while there is none (PENDING).
    ///
    /// # Errors
    /// [`ClientError::Setting`] without a result backend; [`ClientError::Backend`].
    pub async fn meta(&self) -> Result<Option<ResultMeta>> {
        let backend = self.client.require_backend("reading a result")?;
        Ok(backend.get(&self.id).await?)
    }

    /// The state: the stored status, PENDING when there is no record.
    ///
    /// # Errors
    /// As [`AsyncResult::meta`].
    pub async fn state(&self) -> Result<State> {
        Ok(self.meta().await?.map_or(State::Pending, |m| m.status))
    }

    /// Whether the task is SUCCESS, FAILURE or REVOKED.
    ///
    /// # Errors
    /// As [`AsyncResult::meta`].
    pub async fn ready(&self) -> Result<bool> {
        Ok(self.state().await?.is_ready())
    }

    /// Deletes the stored record (`AsyncResult.forget()`); whether there was one.
    ///
    /// # Errors
    /// As [`AsyncResult::meta`].
    pub async fn forget(&self) -> Result<bool> {
        let backend = self.client.require_backend("forgetting a result")?;
        Ok(backend.forget(&self.id).await?)
    }

    /// Waits for a ready record and returns it as stored, whatever its state: subscribes to
    /// the result channel, reads the key, then waits for a publish (no polling).
    ///
    /// # Errors
    /// [`ClientError::Timeout`], [`ClientError::Backend`], [`ClientError::Setting`].
    pub async fn wait(&self, timeout: Duration) -> Result<ResultMeta> {
        let backend = self.client.require_backend("waiting for a result")?;
        Ok(backend.wait(&self.id, timeout).await?)
    }

    /// Waits for the task to finish and returns its value (kombu type tags unwrapped) as `T`.
    ///
    /// # Errors
    /// [`ClientError::TaskFailed`] for FAILURE (Python class, message, traceback),
    /// [`ClientError::Revoked`] for REVOKED, [`ClientError::Timeout`],
    /// [`ClientError::Decode`] when the value does not deserialize into `T`.
    pub async fn get<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        let meta = self.wait(timeout).await?;
        value_of(&self.id, meta)
    }
}

fn value_of<T: DeserializeOwned>(id: &str, meta: ResultMeta) -> Result<T> {
    match meta.status {
        State::Success => {
            let value = unwrap_kombu(&meta.result);
            serde_json::from_value(value.clone()).map_err(|e| {
                let mut shown = value.to_string();
                if shown.len() > 200 {
                    let cut = (0..=200).rev().find(|i| shown.is_char_boundary(*i));
                    shown.truncate(cut.unwrap_or(0));
                    shown.push('…');
                }
                ClientError::Decode {
                    task_id: id.to_owned(),
                    result: shown,
                    reason: e.to_string(),
                }
            })
        }
        State::Revoked => Err(ClientError::Revoked {
            task_id: id.to_owned(),
            reason: meta
                .exception()
                .map_or_else(|| meta.result.to_string(), |e| e.message()),
        }),
        _ => {
            let exception = meta.exception().unwrap_or_else(|| {
                crate::results::ExceptionInfo::runtime_error(format!(
                    "{} without an exception record: {}",
                    meta.status, meta.result
                ))
            });
            Err(ClientError::TaskFailed(Box::new(TaskFailure::new(
                id,
                exception,
                meta.traceback,
            ))))
        }
    }
}

/// The results of a group's members, in member order (Python's `GroupResult`).
#[derive(Debug, Clone)]
pub struct GroupResult {
    /// The group id.
    pub id: String,
    /// One result per member, in order.
    pub results: Vec<AsyncResult>,
}

impl GroupResult {
    pub(crate) fn new(id: String, results: Vec<AsyncResult>) -> Self {
        GroupResult { id, results }
    }

    /// The member task ids, in order.
    pub fn ids(&self) -> Vec<&str> {
        self.results.iter().map(|r| r.id.as_str()).collect()
    }

    /// Whether every member is ready.
    ///
    /// # Errors
    /// As [`AsyncResult::meta`].
    pub async fn ready(&self) -> Result<bool> {
        for r in &self.results {
            if !r.ready().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Waits for every member (all within `timeout`) and returns their values in member
    /// order; the first member that failed (in order) fails the call, as Python's `get()`.
    ///
    /// # Errors
    /// As [`AsyncResult::get`].
    pub async fn get<T: DeserializeOwned>(&self, timeout: Duration) -> Result<Vec<T>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut values = Vec::with_capacity(self.results.len());
        for r in &self.results {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            values.push(r.get(left).await?);
        }
        Ok(values)
    }

    /// Deletes every member's record.
    ///
    /// # Errors
    /// As [`AsyncResult::forget`].
    pub async fn forget(&self) -> Result<()> {
        for r in &self.results {
            r.forget().await?;
        }
        Ok(())
    }
}

/// What [`Client::apply`] started.
#[derive(Debug, Clone)]
pub enum Applied {
    /// A task, chain or chord: the result of the task, of the chain's last task, of the
    /// chord's body.
    Task(AsyncResult),
    /// A group: its members' results.
    Group(GroupResult),
}

impl Applied {
    /// The single result (not for a group).
    pub fn into_task(self) -> Option<AsyncResult> {
        match self {
            Applied::Task(r) => Some(r),
            Applied::Group(_) => None,
        }
    }

    /// The group's results (only for a group).
    pub fn into_group(self) -> Option<GroupResult> {
        match self {
            Applied::Group(g) => Some(g),
            Applied::Task(_) => None,
        }
    }

    /// The id: the task's (or chain's last, or chord body's) id, or the group id.
    pub fn id(&self) -> &str {
        match self {
            Applied::Task(r) => &r.id,
            Applied::Group(g) => &g.id,
        }
    }
}
