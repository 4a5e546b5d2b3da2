//! Body serializers: JSON and msgpack are read; pickle, YAML and raw bodies are refused.

use serde_json::Value;

use super::error::{ProtocolError, Result};
use crate::pyjson;

/// The JSON content type (Celery's default and the only one Python workers accept by default).
pub const JSON: &str = "application/json";
/// The msgpack content type.
pub const MSGPACK: &str = "application/x-msgpack";
/// Pickle's content type (always refused).
pub const PICKLE: &str = "application/x-python-serialize";
/// YAML's content type (always refused).
pub const YAML: &str = "application/x-yaml";

/// A body serializer, from an envelope's `content-type`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContentType {
    /// `application/json`.
    Json,
    /// `application/x-msgpack`.
    Msgpack,
    /// `application/x-python-serialize` (pickle): refused.
    Pickle,
    /// `application/x-yaml`: refused.
    Yaml,
    /// Anything else (`application/data`, `text/plain`, unknown): refused.
    Other(String),
}

impl ContentType {
    /// Reads a `content-type` value; parameters (`; charset=utf-8`) and case are ignored.
    pub fn parse(content_type: &str) -> ContentType {
        let base = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            JSON | "json" => ContentType::Json,
            MSGPACK | "application/msgpack" | "msgpack" => ContentType::Msgpack,
            PICKLE | "pickle" => ContentType::Pickle,
            YAML | "yaml" => ContentType::Yaml,
            _ => ContentType::Other(content_type.to_owned()),
        }
    }

    /// The MIME string written into envelopes.
    pub fn as_str(&self) -> &str {
        match self {
            ContentType::Json => JSON,
            ContentType::Msgpack => MSGPACK,
            ContentType::Pickle => PICKLE,
            ContentType::Yaml => YAML,
            ContentType::Other(s) => s,
        }
    }
}

/// Deserializes a (decoded, decompressed) body of the given content type into a JSON value.
/// Both are read under [`pyjson`]'s policy (Python's `NaN`/`Infinity` and big integers become
/// strings); kombu's `__type__` wrappers are kept (see [`pyjson::unwrap_kombu_types`]).
///
/// # Errors
/// [`ProtocolError::RefusedContentType`] for pickle, YAML and anything but JSON and msgpack,
/// saying why; [`ProtocolError::BodyJson`] / [`ProtocolError::BodyMsgpack`] for bodies that do
/// not parse.
pub fn deserialize(content_type: &str, body: &[u8]) -> Result<Value> {
    match ContentType::parse(content_type) {
        ContentType::Json => pyjson::parse(body).map_err(|source| ProtocolError::BodyJson {
            what: "message body",
            source,
        }),
        ContentType::Msgpack => {
            // As deep as a JSON body may nest (serde_json's limit), not rmp's 1,024: each
            // level is a frame of recursion on the worker's stack. The value holds arrays and
            // maps only, which rmp's limit counts.
            let mut de = rmp_serde::Deserializer::from_read_ref(body);
            de.set_max_depth(celeriac_core::nesting::MAX_DEPTH);
            serde::Deserialize::deserialize(&mut de)
                .map(|v: pyjson::Lenient| v.0)
                .map_err(ProtocolError::BodyMsgpack)
        }
        ContentType::Pickle => Err(ProtocolError::RefusedContentType {
            content_type: content_type.to_owned(),
            reason: "this is pickle, and unpickling untrusted data can run arbitrary code; \
                     send the task with serializer=\"json\" (Celery's default)",
        }),
        ContentType::Yaml => Err(ProtocolError::RefusedContentType {
            content_type: content_type.to_owned(),
            reason: "YAML bodies are not supported (Python's YAML loaders can build arbitrary \
                     objects, so this worker accepts only JSON and msgpack); send the task with \
                     serializer=\"json\"",
        }),
        ContentType::Other(_) => Err(ProtocolError::RefusedContentType {
            content_type: content_type.to_owned(),
            reason: "only application/json and application/x-msgpack task bodies are supported",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_bodies_nest_as_deep_as_json_ones_and_no_deeper() {
        let limit = celeriac_core::nesting::MAX_DEPTH;
        for (depth, fits) in [(limit - 1, true), (limit + 1, false), (100_000, false)] {
            // `depth` one-element arrays around a 1, written by hand (a value that deep would
            // overflow the stack of the encoder).
            let mut body = vec![0x91; depth];
            body.push(0x01);
            let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let from_msgpack = deserialize(MSGPACK, &body);
            let from_json = deserialize("application/json", text.as_bytes());
            assert_eq!(from_msgpack.is_ok(), fits, "msgpack, {depth} deep");
            assert_eq!(from_json.is_ok(), fits, "json, {depth} deep");
            if let (Ok(a), Ok(b)) = (from_msgpack, from_json) {
                assert_eq!(a, b);
            }
        }
    }
}
