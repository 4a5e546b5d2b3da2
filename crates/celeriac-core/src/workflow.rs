//! Workflows: chains, groups, chords and maps of task steps, nested freely.
//!
//! ```
//! use celeriac_core::workflow::{chain, chord, group, map, Step};
//! # use celeriac_core::task::{Task, TaskContext, TaskError};
//! # macro_rules! t { ($n:ident, $a:ty, $o:ty) => {
//! #   struct $n; impl Task for $n { const NAME: &'static str = stringify!($n);
//! #   type Args = $a; type Output = $o;
//! #   async fn run(_: TaskContext, _: $a) -> Result<$o, TaskError> { unimplemented!() } } } }
//! # t!(Fetch, String, Vec<u32>); t!(Resize, u32, u32); t!(Report, Vec<u32>, String);
//! # t!(Notify, String, ()); t!(Alert, serde_json::Value, ());
//! // Fetch a list, resize every item in parallel, then report on all of them, then notify.
//! let flow = chain([
//!     Step::of::<Fetch>("album-7".to_string()).into(),
//!     chord([map(Step::piped::<Resize>())], Step::piped::<Report>()),
//!     Step::piped::<Notify>().into(),
//! ])
//! .on_error(Step::piped::<Alert>());
//! assert_eq!(
//!     flow.describe(),
//!     "chain(Fetch, chord(group(map(Resize)), Report), Notify).on_error(Alert)"
//! );
//! # let _ = group([Step::of::<Resize>(1).into()]);
//! ```
//!
//! How a workflow runs: starting it stores a [`WorkflowRecord`](crate::backend::WorkflowRecord)
//! (state running) and enqueues its first jobs. Each job carries its continuation (what to do
//! with its output) in the `celeriac-flow` header. When a worker finishes such a job, it
//! enqueues the next steps with the output as their arguments *before* acknowledging the job,
//! under ids derived from the finished job's id ([`JobId::derive`](crate::job::JobId::derive)):
//! a job delivered twice enqueues the same ids twice, and enqueueing is idempotent by id, so
//! every step runs once per workflow. A group's members meet at a join in the store
//! ([`WorkflowStore::join_arrive`](crate::backend::WorkflowStore::join_arrive)), idempotent per
//! member; the steps after it get ids derived from the join's id, so however many members see
//! the join complete (a member delivered twice sees it again), the callback is enqueued once.
//!
//! One function holds the end of a step, [`end_step`], whoever ends it: the worker after an
//! attempt (or for a task it does not know), the reaper for the jobs a reap ended (their lease
//! ran out), and a cancel for the waiting job it ended. The store hands back what the step
//! needs with the reap or the cancel ([`EndedJob`](crate::backend::EndedJob)).
//!
//! Failure: a step that ends failed, dead or cancelled stops the workflow. The error
//! handlers ([`Flow::on_error`]) around it are enqueued with a description of the failure
//! as their arguments, and the workflow ends failed with an error naming the step (and, in a
//! group, the member). A group member's failure fails the join, so the chord's callback
//! never runs.
//!
//! Definitions are trees built by value, so they cannot contain cycles; [`Flow::validate`]
//! refuses empty chains and groups, steps that take the previous output where there is none,
//! arguments that do not serialize, and nesting deeper than [`MAX_DEPTH`].
//!
//! The files: `build` (what a workflow is: steps and flows), `start` (starting one and
//! following it), `run` (how it runs: continuations and [`end_step`]).

mod build;
mod run;
mod start;

pub use build::{chain, chord, group, map, Flow, Step};
pub use run::{end_step, end_step_within, StepEnd, StepJob};
pub use start::{record_result, Starter, WorkflowHandle};

use crate::job::DEFAULT_RESULT_TTL;
use std::time::Duration;

/// The header that carries a job's place in its workflow.
pub const FLOW_HEADER: &str = "celeriac-flow";

/// The deepest nesting a workflow definition may have.
pub const MAX_DEPTH: usize = 64;

/// How long workflow records and joins are kept after their last change, by default.
pub const DEFAULT_WORKFLOW_TTL: Duration = DEFAULT_RESULT_TTL;

/// A task the tests of both halves of this module build workflows from.
#[cfg(test)]
mod test_tasks {
    use crate::task::{Task, TaskContext, TaskError};

    pub(super) struct Double;
    impl Task for Double {
        const NAME: &'static str = "double";
        type Args = u32;
        type Output = u32;
        async fn run(_: TaskContext, x: u32) -> std::result::Result<u32, TaskError> {
            Ok(x * 2)
        }
    }
}
