//! The one error type of the message layer.

/// The largest body accepted after decompression: a compressed bomb stops here.
pub const MAX_DECOMPRESSED_BODY: usize = 16 * 1024 * 1024;

/// What was wrong with a message, naming the field and what was found there.
///
/// The `Display` text is meant to be read by people: a worker dead-letters a message it cannot
/// decode with this text as the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The envelope (the JSON object on the Redis list) is not valid JSON.
    #[error("the message envelope is not valid JSON: {0}")]
    EnvelopeJson(#[source] serde_json::Error),

    /// The envelope is JSON but not an object.
    #[error("the message envelope must be a JSON object, got {0}")]
    EnvelopeNotObject(String),

    /// A field has the wrong JSON type or an invalid value.
    #[error("{place} `{field}` must be {expected}, got {got}")]
    Field {
        /// Where the field lives (`envelope`, `envelope property`, `task message header`, ...).
        place: &'static str,
        /// The field's name or path.
        field: String,
        /// What was expected, as a phrase ("an integer", "a string").
        expected: &'static str,
        /// A short rendering of the value found.
        got: String,
    },

    /// A required field is absent.
    #[error("{place} `{field}` is missing")]
    Missing {
        /// Where the field should be.
        place: &'static str,
        /// The field's name or path.
        field: String,
    },

    /// `properties.body_encoding` names an encoding kombu's Redis transport does not use.
    #[error(
        "envelope property `body_encoding` is {0:?}: only \"base64\" (or no encoding) is supported"
    )]
    UnsupportedBodyEncoding(String),

    /// The base64 body does not decode.
    #[error("the message body is not valid base64 (properties.body_encoding is \"base64\"): {0}")]
    Base64(#[source] base64::DecodeError),

    /// `headers.compression` names a compressor this crate does not implement.
    #[error(
        "message header `compression` is {0:?}: only zlib (\"application/x-gzip\", \"gzip\", \
         \"zlib\") is supported; bz2, lzma, brotli and zstd bodies are refused"
    )]
    UnsupportedCompression(String),

    /// The compressed body is corrupt.
    #[error("the zlib-compressed message body does not decompress: {0}")]
    Decompress(#[source] std::io::Error),

    /// The decompressed body would exceed [`MAX_DECOMPRESSED_BODY`].
    #[error("the message body decompresses to more than {limit} bytes; refused")]
    DecompressedTooLarge {
        /// The limit in bytes.
        limit: usize,
    },

    /// The body's content type is refused (pickle, YAML, raw data, unknown).
    #[error("refusing to deserialize a message body of content type {content_type:?}: {reason}")]
    RefusedContentType {
        /// The `content-type` of the envelope.
        content_type: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A JSON body does not parse (after the NaN/Infinity pre-pass).
    #[error("the {what} is not valid JSON: {source}")]
    BodyJson {
        /// What was being parsed ("task message body", ...).
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A msgpack body does not parse into JSON-like data.
    #[error("the message body is not msgpack that maps to JSON values: {0}")]
    BodyMsgpack(#[source] rmp_serde::decode::Error),

    /// The task message body has the wrong shape.
    #[error("task message body {0}")]
    BodyShape(String),

    /// A signature (canvas dict) is malformed.
    #[error("signature {path}: {reason}")]
    Signature {
        /// Where the signature was found (`embed.chain[1]`, `options.link`, ...).
        path: String,
        /// What was wrong.
        reason: String,
    },

    /// A canvas cannot be dispatched by this crate.
    #[error("canvas not supported: {0}")]
    UnsupportedCanvas(String),
}

/// `Result` with [`ProtocolError`].
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;

/// A short rendering of a JSON value for an error message: JSON text, cut at 80 characters.
pub(crate) fn show(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 80 {
        text
    } else {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    }
}

impl ProtocolError {
    /// A `Field` error for a task message header.
    pub(crate) fn header(field: &str, expected: &'static str, got: &serde_json::Value) -> Self {
        ProtocolError::Field {
            place: "task message header",
            field: field.to_owned(),
            expected,
            got: show(got),
        }
    }

    /// A `Field` error for an envelope property.
    pub(crate) fn property(field: &str, expected: &'static str, got: &serde_json::Value) -> Self {
        ProtocolError::Field {
            place: "envelope property",
            field: field.to_owned(),
            expected,
            got: show(got),
        }
    }

    /// A `Signature` error.
    pub(crate) fn signature(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ProtocolError::Signature {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
