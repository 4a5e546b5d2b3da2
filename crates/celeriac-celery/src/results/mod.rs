//! Celery's Redis result backend (`celery.backends.redis.RedisBackend`), wire-compatible with
//! Celery 5.x.
//!
//! - [`ResultBackend`]: task records `celery-task-meta-<id>` ([`ResultMeta`]): stored with
//!   `SETEX` + `PUBLISH` of the same JSON in one Lua script that never replaces a SUCCESS
//!   ([`ResultBackend::store`]); read with [`ResultBackend::get`] (absent = PENDING); awaited
//!   with [`ResultBackend::wait`] / [`ResultBackend::subscribe`] (subscribe, then GET, then
//!   publishes; no polling); deleted with [`ResultBackend::forget`].
//! - [`State`]: Celery's states and their classes (ready, exception, propagate).
//! - [`ExceptionInfo`]: exceptions as stored (`exc_type`, `exc_message`, `exc_module`), built
//!   only as pairs that Python resolves to exception classes.
//! - The chord join: [`ResultBackend::chord_part_return`] (worker side, Celery 5.1–5.6 or 5.7
//!   bookkeeping, see [`ChordGeneration`]) and [`ResultBackend::init_chord`] (producer side).
//! - [`json`]: the crate's [`crate::pyjson`] (Python-compatible JSON), under its former path.
//!
//! ```no_run
//! # async fn demo() -> Result<(), celeriac_celery::results::Error> {
//! use celeriac_celery::results::{ResultBackend, ResultMeta};
//! use std::time::Duration;
//!
//! let backend = ResultBackend::connect("redis://127.0.0.1:6379/1").await?;
//! backend.store(&ResultMeta::success("4a1c…", serde_json::json!(5))).await?;
//! let meta = backend.wait("4a1c…", Duration::from_secs(10)).await?;
//! assert_eq!(meta.result, serde_json::json!(5));
//! # Ok(())
//! # }
//! ```

mod backend;
mod chord;
mod error;
mod exception;
mod meta;
mod state;

#[doc(no_inline)]
pub use crate::pyjson as json;
pub use crate::pyjson::py_repr;
pub use backend::{
    KeyPrefixStyle, ResultBackend, ResultBackendBuilder, ResultWaiter, Stored,
    DEFAULT_CHORD_JOIN_TIMEOUT, DEFAULT_RESULT_EXPIRES,
};
pub use chord::{ChordFailure, ChordGeneration, ChordPart, ChordPartOutcome, ChordRelease};
pub use error::{Error, Result};
pub use exception::{
    ExceptionInfo, PythonClass, BUILTIN_EXCEPTIONS, CELERY_EXCEPTIONS, CUSTOM_MODULE,
};
pub use meta::{format_date, parse_date, ExtendedMeta, ResultMeta};
pub use state::State;
