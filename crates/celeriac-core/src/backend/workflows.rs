//! [`WorkflowStore`]: chord joins and workflow records, what workflows need from a store.

use crate::clock::UnixMs;
use crate::error::Result;
use crate::job::JobId;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// What one member of a join (the barrier after a group) brings to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinInput {
    /// The member's output, as JSON text.
    Output(Vec<u8>),
    /// The member failed; the message names it and says why.
    Failed(String),
}

/// One member arriving at a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinArrival {
    /// The join's id (deterministic: derived from the workflow step that opened it).
    pub join: JobId,
    /// The member's place in the group, `0..total`.
    pub index: u32,
    /// How many members the group has (at least 1).
    pub total: u32,
    /// What the member brings.
    pub input: JoinInput,
    /// How long the join's record is kept after its last change.
    pub ttl: Duration,
}

impl JoinArrival {
    /// Refuses an arrival whose index does not fit its group.
    pub fn validate(&self) -> Result<()> {
        if self.total == 0 || self.index >= self.total {
            return Err(crate::Error::config(
                "join arrival",
                format!(
                    "index {} does not fit a group of {} members (join {})",
                    self.index, self.total, self.join
                ),
            ));
        }
        Ok(())
    }
}

/// The state of a join after an arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStatus {
    /// Not every member has arrived yet.
    Waiting {
        /// Members arrived so far (each index counts once).
        arrived: u32,
    },
    /// Every member arrived with an output: the outputs in index order.
    Complete(Vec<Vec<u8>>),
    /// A member failed: the first failure's message. The join never completes.
    Failed(String),
}

/// Where a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowState {
    /// Steps are still running or waiting.
    Running,
    /// The last step finished: the workflow's result is its output.
    Succeeded,
    /// A step failed and stopped the workflow.
    Failed,
}

impl WorkflowState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
        }
    }

    /// A stable small number for storage.
    pub fn code(self) -> u8 {
        match self {
            WorkflowState::Running => 0,
            WorkflowState::Succeeded => 1,
            WorkflowState::Failed => 2,
        }
    }

    /// The state for a stored code.
    pub fn from_code(code: i64) -> Result<Self> {
        match code {
            0 => Ok(WorkflowState::Running),
            1 => Ok(WorkflowState::Succeeded),
            2 => Ok(WorkflowState::Failed),
            other => Err(crate::Error::Codec(format!(
                "unknown workflow state code {other}"
            ))),
        }
    }
}

/// A workflow's stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// The workflow's id (also the `root_id` of every job in it).
    pub id: JobId,
    /// A short description of its shape, for people (`chain(fetch, group(3), report)`).
    pub name: String,
    /// Where it is.
    pub state: WorkflowState,
    /// The final output as JSON text, once succeeded.
    pub result: Option<Vec<u8>>,
    /// What stopped it, once failed.
    pub error: Option<String>,
    /// When it started.
    pub created_at: UnixMs,
    /// When it finished.
    pub finished_at: Option<UnixMs>,
    /// How long the record is kept after it finishes.
    pub ttl: Duration,
}

/// How a workflow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowEnd {
    /// With this output (JSON text).
    Succeeded(Vec<u8>),
    /// With this error.
    Failed(String),
}

/// Joins and workflow records: what workflows (chain, group, chord) need from a store.
pub trait WorkflowStore: Send + Sync + 'static {
    /// Records a member's arrival at a join. Idempotent per index: the first input recorded
    /// for an index stays, so a member delivered twice counts once.
    fn join_arrive(
        &self,
        arrival: JoinArrival,
        now: UnixMs,
    ) -> impl Future<Output = Result<JoinStatus>> + Send;

    /// Stores a new workflow record (state running); does nothing if one with its id exists.
    fn workflow_start(&self, record: WorkflowRecord) -> impl Future<Output = Result<()>> + Send;

    /// Ends a running workflow. Only the first end is applied (the returned flag says whether
    /// this one was); waiters are woken. The record is kept for its `ttl` from `now`.
    fn workflow_finish(
        &self,
        id: JobId,
        end: WorkflowEnd,
        now: UnixMs,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The record, or `None` if unknown or expired.
    fn workflow_get(
        &self,
        id: JobId,
    ) -> impl Future<Output = Result<Option<WorkflowRecord>>> + Send;

    /// Waits until the workflow is no longer running, for at most `timeout`.
    ///
    /// # Errors
    /// [`crate::Error::Timeout`] when it is still running, [`crate::Error::NotFound`] when it
    /// is unknown.
    fn workflow_wait(
        &self,
        id: JobId,
        timeout: Duration,
    ) -> impl Future<Output = Result<WorkflowRecord>> + Send;
}
