//! Celery task messages: the kombu envelope, protocol v2, signatures and serializers.
//!
//! Pure code, no I/O. The layers, outside in:
//! - [`Envelope`]: the JSON object on a Redis list (`body`, `content-type`, `headers`,
//!   `properties`); base64 and zlib compression are undone on decode and redone on encode.
//! - [`serializer`]: JSON and msgpack bodies, read under [`crate::pyjson`]'s policy for
//!   Python's `NaN`/`Infinity`/big integers; pickle and YAML are refused with a reason.
//! - [`TaskMessage`]: protocol v2 typed headers ([`TaskHeaders`]) and the
//!   `[args, kwargs, embed]` body; a builder for producers and the retry message.
//! - [`Signature`] and [`canvas`]: Python's signature dicts, chains (stored reversed),
//!   groups, chords, links, and the mapping of signature options onto messages.
//!
//! ```
//! use celeriac_celery::protocol::{Envelope, Route, TaskMessage};
//! use serde_json::json;
//!
//! let msg = TaskMessage::new("tasks.add").args(vec![json!(2), json!(3)]);
//! let raw = msg.to_envelope(Route::queue("celery")).encode();
//! let back = TaskMessage::decode(&Envelope::decode(&raw)?)?;
//! assert_eq!(back.args, vec![json!(2), json!(3)]);
//! # Ok::<(), celeriac_celery::protocol::ProtocolError>(())
//! ```

mod builder;
pub mod canvas;
mod compression;
mod envelope;
mod error;
mod headers;
pub mod kombu_json;
mod message;
pub mod serializer;
mod signature;
pub mod time;

pub use crate::pyjson::repr;
pub use crate::pyjson::unwrap_kombu_types;
pub use builder::{origin, Route};
pub use canvas::{ApplyContext, ChordSetup, Dispatch, ParentTask};
pub use compression::{Compression, ZLIB};
pub use envelope::{DeliveryInfo, Envelope, Properties};
pub use error::{ProtocolError, Result, MAX_DECOMPRESSED_BODY};
pub use headers::{TaskHeaders, TimeLimit};
pub use message::{Embed, TaskMessage};
pub use signature::{Signature, SubtaskType};
