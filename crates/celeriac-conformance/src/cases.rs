//! The cases, one module per store capability, named as the traits' files are named in core
//! and in both backends: [`broker`], [`results`], [`workflows`], [`coordinator`], [`kv`],
//! [`rate_limits`], [`breakers`], [`processes`], [`events`], [`history`], [`health`],
//! [`alerts`]. Each is a plain `async fn` over the backend traits.
//!
//! Every case file ends with the list of its cases, which the [`suite!`](crate::suite) macro
//! expands into tests; a new case goes into the list of its own file.

pub mod alerts;
pub mod breakers;
pub mod broker;
pub mod coordinator;
pub mod events;
pub mod health;
pub mod history;
pub mod kv;
pub mod processes;
pub mod rate_limits;
pub mod results;
pub mod workflows;

pub use alerts::*;
pub use breakers::*;
pub use broker::*;
pub use coordinator::*;
pub use events::*;
pub use health::*;
pub use history::*;
pub use kv::*;
pub use processes::*;
pub use rate_limits::*;
pub use results::*;
pub use workflows::*;
