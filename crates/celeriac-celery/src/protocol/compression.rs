//! Body compression (`headers.compression`): kombu's `application/x-gzip` is a zlib stream.

use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

use super::error::{ProtocolError, Result, MAX_DECOMPRESSED_BODY};

/// The compressor content type kombu writes for zlib ("gzip") compression.
pub const ZLIB: &str = "application/x-gzip";

/// A compression this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// zlib (`application/x-gzip`, aliases `gzip`, `zlib`): despite the name, not gzip.
    Zlib,
}

impl Compression {
    /// Reads a `headers.compression` value.
    ///
    /// # Errors
    /// [`ProtocolError::UnsupportedCompression`] for bz2, lzma, brotli, zstd and unknown names.
    pub fn parse(name: &str) -> Result<Compression> {
        match name.trim().to_ascii_lowercase().as_str() {
            ZLIB | "gzip" | "zlib" | "application/x-zlib" => Ok(Compression::Zlib),
            _ => Err(ProtocolError::UnsupportedCompression(name.to_owned())),
        }
    }

    /// The content type written into `headers.compression`.
    pub fn content_type(self) -> &'static str {
        match self {
            Compression::Zlib => ZLIB,
        }
    }

    /// Decompresses `data`, refusing output beyond [`MAX_DECOMPRESSED_BODY`].
    ///
    /// # Errors
    /// [`ProtocolError::Decompress`] for a corrupt stream,
    /// [`ProtocolError::DecompressedTooLarge`] past the limit.
    pub fn decompress(self, data: &[u8]) -> Result<Vec<u8>> {
        decompress_limited(data, MAX_DECOMPRESSED_BODY)
    }

    /// Compresses `data` (zlib, default level, as Python's `zlib.compress`).
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        let mut enc = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(data);
        enc.finish().unwrap_or_default()
    }
}

/// zlib-decompresses at most `limit` bytes; more is an error, never an allocation.
pub(crate) fn decompress_limited(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(limit).min(1 << 20));
    let mut reader = ZlibDecoder::new(data).take(limit as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(ProtocolError::Decompress)?;
    if out.len() > limit {
        return Err(ProtocolError::DecompressedTooLarge { limit });
    }
    Ok(out)
}
