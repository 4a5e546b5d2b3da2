//! The shop: an axum service on Celeriac that shows the three classic uses of a queue and a
//! cache together — the confirmation e-mail sent without blocking the order, the product
//! listing served from a two-level cache, and every route limited per API key — with a nightly
//! report, photo resizing as a chord, and the dashboard at `/admin`. See README.md.

pub mod catalog;
pub mod cli;
pub mod db;
pub mod deps;
pub mod http;
pub mod load;
pub mod mail;
pub mod orders;
pub mod photos;
pub mod report;
pub mod shop;
pub mod sink;
