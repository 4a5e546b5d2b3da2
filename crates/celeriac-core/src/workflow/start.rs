//! Starting a workflow and following it: [`Flow::start`] stores the workflow's record and
//! enqueues its first jobs through anything that can start one (a [`Starter`]: a client or an
//! application), and a [`WorkflowHandle`] reads its state and result.

use super::run::Run;
use super::{Flow, DEFAULT_WORKFLOW_TTL};
use crate::backend::{Broker, WorkflowEnd, WorkflowRecord, WorkflowState, WorkflowStore};
use crate::bounds::Bounds;
use crate::clock::{Clock, UnixMs};
use crate::error::{Error, Result};
use crate::job::JobId;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// What a workflow is started through: a store that keeps workflows, and the clock to start it
/// by. Every [`AsClient`](crate::client::AsClient) over such a store is one (a
/// [`Client`](crate::client::Client), an application).
pub trait Starter {
    /// The store.
    type Backend: Broker + WorkflowStore;
    /// The store, shared with the handles it gives out.
    fn store(&self) -> &Arc<Self::Backend>;
    /// The clock the workflow starts by.
    fn clock(&self) -> &Arc<dyn Clock>;
    /// The bounds its jobs are checked against (a client's own; the defaults otherwise).
    fn bounds(&self) -> Bounds {
        Bounds::default()
    }
}

impl Flow {
    /// Starts the workflow: stores its record and enqueues its first jobs.
    ///
    /// # Errors
    /// An invalid definition (nothing is enqueued), or the store's error.
    pub async fn start<C: Starter>(self, to: &C) -> Result<WorkflowHandle<C::Backend>> {
        self.start_with_id(to, JobId::new()).await
    }

    /// Starts the workflow under a chosen id; starting the same id again does nothing more
    /// (idempotent), so a caller that retries after an error does not run it twice.
    ///
    /// # Errors
    /// As [`Flow::start`].
    pub async fn start_with_id<C: Starter>(
        self,
        to: &C,
        id: JobId,
    ) -> Result<WorkflowHandle<C::Backend>> {
        self.validate()?;
        let backend = to.store().clone();
        let clock = to.clock().clone();
        let now = clock.now_ms();
        backend
            .workflow_start(WorkflowRecord {
                id,
                name: self.describe(),
                state: WorkflowState::Running,
                result: None,
                error: None,
                created_at: now,
                finished_at: None,
                ttl: DEFAULT_WORKFLOW_TTL,
            })
            .await?;
        let mut run = Run::new(&*backend, id, now).within(to.bounds());
        let started = match run
            .start(&self, None, Vec::new(), id, "r".to_string(), None)
            .await
        {
            Ok(()) => run.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            // A first job the definition cannot make (over a bound, say): nothing was
            // enqueued, and the workflow ends failed rather than running with nothing to run.
            if matches!(e, Error::Config { .. } | Error::Codec(_)) {
                let why = WorkflowEnd::Failed(format!("the workflow could not start: {e}"));
                backend.workflow_finish(id, why, now).await?;
            }
            return Err(e);
        }
        Ok(WorkflowHandle { id, backend, clock })
    }
}

/// A handle on a started workflow: its state, result and error.
pub struct WorkflowHandle<B> {
    id: JobId,
    backend: Arc<B>,
    clock: Arc<dyn Clock>,
}

impl<B> Clone for WorkflowHandle<B> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            backend: self.backend.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<B> std::fmt::Debug for WorkflowHandle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkflowHandle({})", self.id)
    }
}

impl<B: WorkflowStore> WorkflowHandle<B> {
    /// A handle on a workflow by id.
    pub fn new(id: JobId, backend: Arc<B>, clock: Arc<dyn Clock>) -> Self {
        Self { id, backend, clock }
    }

    /// The workflow's id: the `root_id` of each of its jobs.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The job id of member `index` (from 0) of the workflow when it is a group, a map, or a
    /// chord (a member of its header); at 0, also the first step of a chain. Ids derive from
    /// the workflow's, so they are known before the jobs exist.
    pub fn member_id(&self, index: usize) -> JobId {
        self.id.derive(&format!("r.{index}"))
    }

    /// The job id of the callback of the workflow when it is a chord whose body is one task:
    /// it derives from the chord's join, which derives from the workflow.
    pub fn callback_id(&self) -> JobId {
        self.id.derive("r.j").derive("n")
    }

    /// The workflow's record now.
    ///
    /// # Errors
    /// [`Error::NotFound`] if unknown or expired.
    pub async fn info(&self) -> Result<WorkflowRecord> {
        self.backend
            .workflow_get(self.id)
            .await?
            .ok_or_else(|| Error::NotFound(self.id.to_string()))
    }

    /// Waits until the workflow ends, for at most `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Result<WorkflowRecord> {
        self.backend.workflow_wait(self.id, timeout).await
    }

    /// Waits for the workflow and decodes its output; a failed workflow is an error naming the
    /// step that failed.
    pub async fn result<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        let rec = self.wait(timeout).await?;
        record_result(&rec)
    }

    /// When the handle's clock says it is now.
    pub fn now(&self) -> UnixMs {
        self.clock.now_ms()
    }
}

/// The output of a finished record, decoded; a failed record's error as an error.
pub fn record_result<T: DeserializeOwned>(rec: &WorkflowRecord) -> Result<T> {
    match rec.state {
        WorkflowState::Succeeded => {
            let bytes = rec.result.as_deref().unwrap_or(b"null");
            serde_json::from_slice(bytes).map_err(|e| Error::Codec(e.to_string()))
        }
        WorkflowState::Failed => Err(Error::backend(
            crate::error::ErrorKind::GiveUp,
            format!(
                "workflow {} failed: {}",
                rec.id,
                rec.error.as_deref().unwrap_or("no error recorded")
            ),
        )),
        WorkflowState::Running => Err(Error::Timeout(rec.id.to_string())),
    }
}
