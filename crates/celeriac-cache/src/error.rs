//! [`CacheError`]: why a cache call that runs a loader, a writer or a warmer has no value
//! for its caller.

use celeriac_core::error::Error;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

/// Why a cache call that runs a loader (or a write-through's writer, or a warmer) has no
/// value for its caller.
///
/// `E` is the loader's or writer's own error type, kept as it is: nothing is turned into
/// text. Calls whose loaders cannot fail ([`Cache::get_with`](super::Cache::get_with), a
/// [`Warmer`](super::Warmer)) use the default, [`Infallible`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CacheError<E = Infallible> {
    /// The loader failed and no stale value could stand in.
    ///
    /// One load serves every read of the key that arrives while it runs in this process
    /// (with the same loader error type, as moka's `try_get_with` does): the loader ran once,
    /// and each of those readers gets this same `Arc`.
    Load {
        /// The cache key (`<app>:<namespace>:<key>`).
        key: String,
        /// The loader's error, shared by every reader of that load.
        error: Arc<E>,
    },
    /// The key has no value: the loader found nothing (`None`), or "not found" is cached for
    /// it ([`CacheBuilder::negative_ttl`](super::CacheBuilder::negative_ttl)).
    NotFound {
        /// The cache key (`<app>:<namespace>:<key>`).
        key: String,
    },
    /// A write-through's writer failed: the store and the cache were left as they were.
    Write {
        /// The cache key (`<app>:<namespace>:<key>`).
        key: String,
        /// The writer's error.
        error: E,
    },
    /// A warmer could not list its keys (the warmer's own error, as text: warmers of every
    /// error type are kept behind one `dyn Warmer`).
    KeyList {
        /// The namespace warmed.
        namespace: String,
        /// The key list's error.
        message: String,
    },
    /// The store failed, or a setting is invalid: the error of `celeriac-core`.
    Store(Error),
}

impl<E> From<Error> for CacheError<E> {
    fn from(e: Error) -> Self {
        CacheError::Store(e)
    }
}

impl<E: fmt::Display> fmt::Display for CacheError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Load { key, error } => write!(f, "loading `{key}` failed: {error}"),
            CacheError::NotFound { key } => {
                write!(f, "loading `{key}` found nothing: the key has no value")
            }
            CacheError::Write { key, error } => {
                write!(f, "writing `{key}` to the store failed: {error}")
            }
            CacheError::KeyList { namespace, message } => {
                write!(
                    f,
                    "the warmer of `{namespace}` could not list its keys: {message}"
                )
            }
            CacheError::Store(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for CacheError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CacheError::Store(e) => Some(e),
            _ => None,
        }
    }
}
