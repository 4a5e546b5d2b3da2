//! Tower middleware (feature `tower`, on by default), for axum and any tower stack.

pub mod rate_limit;
