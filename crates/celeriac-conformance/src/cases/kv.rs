//! The [`KvStore`](celeriac_core::KvStore), and the two-level cache over it.

mod cache;
mod store;

pub use cache::*;
pub use store::*;
