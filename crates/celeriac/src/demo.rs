//! Demo tasks.
