//! The [`KvStore`](celeriac_core::KvStore), and the two-level cache over it.

mod cache;
mod cache_bounds;
mod store;

pub use cache::*;
pub use cache_bounds::*;
pub use store::*;
