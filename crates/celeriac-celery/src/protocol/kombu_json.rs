//! The task protocol's former JSON helpers, kept as paths: everything lives in
//! [`crate::pyjson`] (reading Python's JSON, `json.dumps` writing, kombu `__type__` tags).

pub use crate::pyjson::{to_python_json_bytes as to_python_json, unwrap_kombu_types};
