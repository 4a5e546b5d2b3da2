//! Tower middleware (feature `tower`, on by default): wrap any `tower::Service` (an axum
//! router, an HTTP client, a task handler) in Celeriac's protections.

pub mod breaker;
pub mod rate_limit;
