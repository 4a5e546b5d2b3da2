//! The cases, grouped by area. Each is a plain `async fn` over the backend traits; the
//! [`suite!`](crate::suite) macro turns every one of them into a test. A new case must also
//! be added to the list in that macro, or no backend runs it.

mod breakers;
mod cache;
mod cancel;
mod completion;
mod coordinator;
mod dead_letters;
mod expiry;
mod kv;
mod leases;
mod limits;
mod ordering;
mod queues;
mod rate_limits;
mod results;
mod retention;
mod unique;
mod worker;
mod workflow_store;
mod workflows;

pub use breakers::*;
pub use cache::*;
pub use cancel::*;
pub use completion::*;
pub use coordinator::*;
pub use dead_letters::*;
pub use expiry::*;
pub use kv::*;
pub use leases::*;
pub use limits::*;
pub use ordering::*;
pub use queues::*;
pub use rate_limits::*;
pub use results::*;
pub use retention::*;
pub use unique::*;
pub use worker::*;
pub use workflow_store::*;
pub use workflows::*;
