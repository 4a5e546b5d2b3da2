//! Real `redis-server` processes for tests: standalone (optionally with a password, an ACL
//! user, TLS, AOF or an eviction policy), a 3-master Cluster, and a Sentinel setup.
//!
//! Core concepts:
//! - every server binds `127.0.0.1` on a free port, lives in its own temporary directory
//!   (config, log, AOF, TLS certificates) and is killed when its handle is dropped, also when
//!   a test panics; the shared Redis on port 6379 is never touched;
//! - [`RedisServer`] is one process: [`kill`](RedisServer::kill),
//!   [`pause`](RedisServer::pause)/[`resume`](RedisServer::resume) (SIGSTOP/SIGCONT) and
//!   [`restart`](RedisServer::restart) (same port, directory and options) simulate outages;
//!   [`overfill`](RedisServer::overfill) writes past its `maxmemory`, so that it evicts or
//!   refuses writes, and [`info_field`](RedisServer::info_field) reads a field of its `INFO`;
//! - [`RedisCluster`] is three masters covering all 16384 slots, [`RedisSentinel`] a master,
//!   a replica and one sentinel watching them as `mymaster`;
//! - [`resp`] is a tiny RESP2 client over plain TCP, enough for test assertions and for the
//!   testkit's own admin commands.
//!
//! With the `browser` feature, [`Browser`] is a headless Chromium driven over WebDriver, with
//! its own `chromedriver` per test (Debian's `chromium` and `chromium-driver`).
//!
//! `redis-server` (and `redis-cli` for TLS checks) must be on `PATH`; `scripts/test` installs
//! them. The servers run in the foreground of the test process. They persist with RDB
//! snapshots that never fall due within a test ([`Persistence::Snapshots`]), so the Redis
//! backend accepts them and a kill still loses their data; an append-only file or no
//! persistence at all is chosen with [`RedisServerBuilder::persistence`].
//!
//! ```no_run
//! # async fn demo() -> celeriac_testkit::Result<()> {
//! use celeriac_testkit::RedisServer;
//!
//! let server = RedisServer::builder().password("s3cret").start().await?;
//! assert!(server.url().starts_with("redis://:s3cret@127.0.0.1:"));
//!
//! let mut conn = server.connect().await?; // authenticated with the password
//! conn.command(&["SET", "greeting", "hello"]).await?;
//! let value = conn.command(&["GET", "greeting"]).await?;
//! assert_eq!(value.as_text().as_deref(), Some("hello"));
//! // The process is killed and its directory removed when `server` is dropped.
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "browser")]
mod browser;
mod cluster;
mod error;
#[cfg(feature = "fuzz")]
pub mod fuzz;
mod memory;
pub mod resp;
mod sentinel;
mod server;
mod tls;

#[cfg(feature = "browser")]
pub use browser::Browser;
pub use cluster::RedisCluster;
pub use error::{Error, Result};
pub use sentinel::RedisSentinel;
pub use server::{Persistence, RedisServer, RedisServerBuilder};
