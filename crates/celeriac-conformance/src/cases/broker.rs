//! The [`Broker`](celeriac_core::Broker): enqueue, claim under a lease, fencing, completion, queues, dead letters, cancellation, unique jobs, task limits, the worker over it, retention, the bounds on what is enqueued.

mod bounds;
mod browse;
mod cancel;
mod completion;
mod dead_letters;
mod expiry;
mod leases;
mod ordering;
mod queues;
mod retention;
mod task_limits;
mod unique;
mod worker;

pub use bounds::*;
pub use browse::*;
pub use cancel::*;
pub use completion::*;
pub use dead_letters::*;
pub use expiry::*;
pub use leases::*;
pub use ordering::*;
pub use queues::*;
pub use retention::*;
pub use task_limits::*;
pub use unique::*;
pub use worker::*;
