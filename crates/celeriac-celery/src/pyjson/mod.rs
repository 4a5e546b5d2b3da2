//! Python-compatible JSON: what Python's `json` module and kombu write, read back without loss
//! where `serde_json` allows, and written byte-for-byte as Python would.
//!
//! One policy for the values standard JSON lacks, used by the task protocol and the result
//! backend alike:
//!
//! | Python writes                      | Rust reads ([`parse`])              |
//! |------------------------------------|-------------------------------------|
//! | `NaN`, `Infinity`, `-Infinity`     | the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | an integer outside `i64`/`u64` (`2**70`) | its decimal digits as a string (`"1180591620717411303424"`) |
//!
//! Text inside strings is never touched. This is the choice that loses least without the
//! `serde_json` features `arbitrary_precision`/`float_roundtrip` (which would change every crate
//! of the workspace): the three non-finite floats stay distinct (a `null` would merge them with
//! `None` and each other) and a big integer keeps every digit (a float would drop the low ones).
//! Typed Rust arguments keep working: in-range numbers are ordinary JSON numbers, and the
//! [`de`] helpers (`#[serde(deserialize_with = "celeriac_celery::pyjson::de::float")]`) read a
//! float or integer field from either form. msgpack bodies follow the same policy
//! ([`Lenient`]). The one ambiguity left: a Python string `"NaN"` and a float `nan` read the
//! same, and Rust writes such a value back as the string.
//!
//! - Reading: [`parse`], [`parse_str`], [`normalize`] (the token rewrite alone).
//! - Writing: [`to_python_json`] (`json.dumps` defaults: `", "`/`": "`, `ensure_ascii`).
//! - kombu ≥ 5.3 `{"__type__": T, "__value__": V}` tags: [`unwrap_kombu_types`],
//!   [`unwrap_kombu`], [`kombu_wrapper`].
//! - Python `repr()` of values: [`repr`] ([`py_repr`], `args_repr`, `kwargs_repr`, `value_repr`).
//!
//! <!-- Full paths: `lib.rs` documents this module too, and rustdoc then resolves from there. -->
//! [`parse`]: crate::pyjson::parse
//! [`de`]: crate::pyjson::de
//! [`Lenient`]: crate::pyjson::Lenient
//! [`parse_str`]: crate::pyjson::parse_str
//! [`normalize`]: crate::pyjson::normalize
//! [`to_python_json`]: crate::pyjson::to_python_json
//! [`unwrap_kombu_types`]: crate::pyjson::unwrap_kombu_types
//! [`unwrap_kombu`]: crate::pyjson::unwrap_kombu
//! [`kombu_wrapper`]: crate::pyjson::kombu_wrapper
//! [`repr`]: crate::pyjson::repr
//! [`py_repr`]: crate::pyjson::py_repr

pub mod de;
mod kombu;
mod read;
pub mod repr;
mod write;

pub use de::Lenient;
pub use kombu::{kombu_wrapper, unwrap_kombu, unwrap_kombu_types};
pub use read::{normalize, normalize_str, parse, parse_str};
pub use repr::py_repr;
pub(crate) use write::{ordered, Ordered};
pub use write::{to_python_json, to_python_json_bytes};
