//! The dashboard over HTTP on a real SQLite file: every page and its JSON twin, the actions,
//! and the guard (roles, cross-site checks, the bind refusal). The browser tests are in
//! `tests/browser.rs`.

mod common;

mod cache_breakers;
mod limits;
mod overview;
mod queues_jobs;
mod security;
mod the_rest;
