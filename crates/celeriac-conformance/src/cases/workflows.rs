//! The [`WorkflowStore`](celeriac_core::WorkflowStore) (joins and records) and workflows run end to end by workers.

mod runs;
mod store;

pub use runs::*;
pub use store::*;
