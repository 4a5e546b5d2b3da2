//! The backend capability traits every store implements, and the values they exchange.
//!
//! Stores never read the clock: every call that depends on time takes `now`.
//!
//! One file per capability, named as the backends' files and the conformance suite's case
//! modules are: [`broker`](Broker), [`admin`](QueueAdmin), [`results`](ResultStore),
//! [`workflows`](WorkflowStore), [`coordinator`](Coordinator), [`kv`](KvStore),
//! [`rate_limits`](RateLimitStore), [`breakers`](BreakerStore),
//! [`processes`](ProcessRegistry), [`events`](EventLog), [`history`](History), [`health`](StoreHealth). A backend implements what it
//! can; the conformance suite says which it passes.

mod admin;
mod breakers;
mod broker;
mod browse;
mod coordinator;
mod events;
mod health;
mod history;
mod kv;
mod processes;
mod rate_limits;
mod results;
mod role;
mod workflows;

pub use admin::*;
pub use breakers::*;
pub use broker::*;
pub use browse::*;
pub use coordinator::*;
pub use events::*;
pub use health::*;
pub use history::*;
pub use kv::*;
pub use processes::*;
pub use rate_limits::*;
pub use results::*;
pub use role::StoreRole;
pub use workflows::*;
