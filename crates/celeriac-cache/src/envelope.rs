//! The envelope a cached value is stored in: the serialized value (compressed above a
//! threshold) with its creation time, logical and hard expiry, tags, load time and schema
//! version. The store's own TTL is the hard expiry.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | magic `0xCE` |
//! | 1 | layout version (1) |
//! | 1 | format: 0 JSON, 1 MessagePack, 2 postcard |
//! | 1 | flags: bit 0 compressed (LZ4), bit 1 negative (the loader found nothing) |
//! | 4 | schema version |
//! | 8 × 3 | created, fresh until, stale until (ms since the epoch) |
//! | 4 | how long the load took (ms), for early refresh |
//! | 2 | tag count, then per tag 2 bytes of length and the tag |
//! | rest | the value |
//!
//! A compressed value is an LZ4 block with its uncompressed size in front (4 bytes). That
//! size is checked before anything is allocated: it must be no more than LZ4 can produce
//! from the block (about 255 bytes per byte) and no more than the reader's maximum
//! ([`MAX_VALUE_BYTES`], or a smaller one given to [`Envelope::from_bytes_within`]), so a
//! value whose prefix lies costs the reader at most a bounded multiple of its own size.

use celeriac_core::clock::UnixMs;
use celeriac_core::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest value, uncompressed, that an envelope is read with (512 MiB, the largest
/// string Redis stores): a compressed value claiming more is refused before anything is
/// allocated. [`Envelope::from_bytes_within`] takes a smaller maximum.
pub const MAX_VALUE_BYTES: usize = 512 * 1024 * 1024;

/// The most bytes one byte of an LZ4 block can decompress to: a match's length is extended
/// by 255 per extra byte. A block of `n` bytes yields less than `n * LZ4_MAX_RATIO + 64`.
const LZ4_MAX_RATIO: usize = 255;

const MAGIC: u8 = 0xCE;
const LAYOUT: u8 = 1;
const COMPRESSED: u8 = 1;
const NEGATIVE: u8 = 2;

/// How cached values are serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// JSON: readable with `redis-cli`, from other languages.
    #[default]
    Json,
    /// MessagePack: smaller, fast.
    MsgPack,
    /// postcard: the most compact, Rust only.
    Postcard,
}

impl Format {
    fn code(self) -> u8 {
        match self {
            Format::Json => 0,
            Format::MsgPack => 1,
            Format::Postcard => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self> {
        match code {
            0 => Ok(Format::Json),
            1 => Ok(Format::MsgPack),
            2 => Ok(Format::Postcard),
            other => Err(Error::Codec(format!("unknown cache format {other}"))),
        }
    }

    /// Serializes a value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>> {
        let r = match self {
            Format::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
            Format::MsgPack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
            Format::Postcard => postcard::to_allocvec(value).map_err(|e| e.to_string()),
        };
        r.map_err(Error::Codec)
    }

    /// Deserializes a value.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        let r = match self {
            Format::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Format::MsgPack => {
                // rmp's own depth limit counts arrays and maps, not enums and options.
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                de.set_max_depth(MAX_DEPTH);
                celeriac_core::nesting::deserialize(&mut de, MAX_DEPTH).map_err(|e| e.to_string())
            }
            Format::Postcard => {
                let mut de = postcard::Deserializer::from_bytes(bytes);
                celeriac_core::nesting::deserialize(&mut de, MAX_DEPTH).map_err(|e| match e {
                    // The only custom error the format can raise here is the depth limit's
                    // (a value's own checks give theirs too; both are "does not decode").
                    postcard::Error::SerdeDeCustom => {
                        format!("{e} (or nested deeper than {MAX_DEPTH} levels)")
                    }
                    e => e.to_string(),
                })
            }
        };
        r.map_err(Error::Codec)
    }
}

/// How deep a MessagePack or postcard value may nest (serde_json's limit for JSON): deeper
/// is an error (see `celeriac_core::nesting`), where MessagePack's own limit (1,024, and enums and options not
/// counted) would overflow a thread's stack first and postcard has none.
const MAX_DEPTH: usize = 128;

/// The bytes of an envelope before its tags: magic, layout, format, flags (1 each), schema
/// (4), created, fresh until, stale until (8 each), load time (4) and tag count (2).
const HEADER_BYTES: usize = 38;

/// The times and tags of a cached value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// When it was loaded.
    pub created: UnixMs,
    /// Fresh until then (the logical expiry).
    pub fresh_until: UnixMs,
    /// May be served stale until then (the hard expiry).
    pub stale_until: UnixMs,
    /// How long loading it took, in milliseconds (early refresh scales with it).
    pub load_ms: u32,
    /// Its tags.
    pub tags: Vec<String>,
}

/// A stored value: its meta data, and the serialized value (`None` for a cached "not found").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Times and tags.
    pub meta: Meta,
    /// The schema version it was written with.
    pub schema: u32,
    /// The format of `value`.
    pub format: Format,
    /// The serialized value, uncompressed; `None` when the loader found nothing.
    pub value: Option<Vec<u8>>,
}

impl Envelope {
    /// The envelope's encoded length with its value uncompressed: the header, the tags and
    /// the serialized value (what [`Envelope::to_bytes`] gives below the compression
    /// threshold). The L1 weighs its entries by it: it holds values decoded, so their
    /// compressed size would understate what they take.
    pub fn size(&self) -> usize {
        let tags: usize = self
            .meta
            .tags
            .iter()
            .take(usize::from(u16::MAX))
            .map(|t| 2 + t.len().min(usize::from(u16::MAX)))
            .sum();
        HEADER_BYTES + tags + self.value.as_ref().map_or(0, Vec::len)
    }

    /// The bytes to store, compressing the value when it is at least `compress_at` bytes.
    pub fn to_bytes(&self, compress_at: usize) -> Vec<u8> {
        let mut flags = 0;
        let body: std::borrow::Cow<'_, [u8]> = match &self.value {
            None => {
                flags |= NEGATIVE;
                std::borrow::Cow::Borrowed(&[])
            }
            Some(v) if v.len() >= compress_at => {
                flags |= COMPRESSED;
                std::borrow::Cow::Owned(lz4_flex::compress_prepend_size(v))
            }
            Some(v) => std::borrow::Cow::Borrowed(v),
        };
        let tags_len: usize = self.meta.tags.iter().map(|t| 2 + t.len()).sum();
        let mut out = Vec::with_capacity(HEADER_BYTES + tags_len + body.len());
        out.extend_from_slice(&[MAGIC, LAYOUT, self.format.code(), flags]);
        out.extend_from_slice(&self.schema.to_le_bytes());
        out.extend_from_slice(&self.meta.created.to_le_bytes());
        out.extend_from_slice(&self.meta.fresh_until.to_le_bytes());
        out.extend_from_slice(&self.meta.stale_until.to_le_bytes());
        out.extend_from_slice(&self.meta.load_ms.to_le_bytes());
        let tags = self.meta.tags.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(tags as u16).to_le_bytes());
        for tag in self.meta.tags.iter().take(tags) {
            let t = &tag.as_bytes()[..tag.len().min(usize::from(u16::MAX))];
            out.extend_from_slice(&(t.len() as u16).to_le_bytes());
            out.extend_from_slice(t);
        }
        out.extend_from_slice(&body);
        out
    }

    /// Reads stored bytes, with values of up to [`MAX_VALUE_BYTES`].
    ///
    /// # Errors
    /// [`Error::Codec`] naming what is wrong: not an envelope, an unknown layout, a truncated
    /// record, a value that does not decompress or whose size prefix claims too much.
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope> {
        Self::from_bytes_within(bytes, MAX_VALUE_BYTES)
    }

    /// Reads stored bytes whose value, uncompressed, is at most `max_value` bytes (and at
    /// most [`MAX_VALUE_BYTES`]). The memory it takes is bounded by the input: no more than
    /// a few hundred times its length, whatever the bytes say.
    ///
    /// # Errors
    /// As [`Envelope::from_bytes`].
    pub fn from_bytes_within(bytes: &[u8], max_value: usize) -> Result<Envelope> {
        let mut r = Reader { bytes, at: 0 };
        let head = r.take(4)?;
        if head[0] != MAGIC {
            return Err(Error::Codec("not a cache envelope".into()));
        }
        if head[1] != LAYOUT {
            return Err(Error::Codec(format!(
                "cache envelope layout {} is unknown",
                head[1]
            )));
        }
        let format = Format::from_code(head[2])?;
        let flags = head[3];
        let schema = u32::from_le_bytes(r.array()?);
        let created = i64::from_le_bytes(r.array()?);
        let fresh_until = i64::from_le_bytes(r.array()?);
        let stale_until = i64::from_le_bytes(r.array()?);
        let load_ms = u32::from_le_bytes(r.array()?);
        let n = u16::from_le_bytes(r.array()?);
        // Each tag takes at least its two bytes of length: a count the bytes cannot hold
        // reserves no more than they can.
        let mut tags = Vec::with_capacity(usize::from(n).min(r.left() / 2));
        for _ in 0..n {
            let len = u16::from_le_bytes(r.array()?);
            let t = r.take(usize::from(len))?;
            tags.push(String::from_utf8_lossy(t).into_owned());
        }
        let body = &bytes[r.at..];
        let value = if flags & NEGATIVE != 0 {
            None
        } else if flags & COMPRESSED != 0 {
            Some(decompress(body, max_value.min(MAX_VALUE_BYTES))?)
        } else if body.len() > max_value {
            return Err(Error::Codec(format!(
                "cached value has {} bytes, more than the {max_value} a value may have",
                body.len()
            )));
        } else {
            Some(body.to_vec())
        };
        Ok(Envelope {
            meta: Meta {
                created,
                fresh_until,
                stale_until,
                load_ms,
                tags,
            },
            schema,
            format,
            value,
        })
    }
}

/// An LZ4 block with its size in front, checked against what the block can hold and
/// against `max` before the output is allocated.
fn decompress(body: &[u8], max: usize) -> Result<Vec<u8>> {
    let Some((size, block)) = body.split_first_chunk::<4>() else {
        return Err(Error::Codec(
            "cached value is compressed but has no size prefix".into(),
        ));
    };
    let size = u32::from_le_bytes(*size) as usize;
    let possible = block.len().saturating_mul(LZ4_MAX_RATIO).saturating_add(64);
    if size > possible {
        return Err(Error::Codec(format!(
            "cached value claims {size} bytes uncompressed, more than its {} compressed bytes \
             can hold",
            block.len()
        )));
    }
    if size > max {
        return Err(Error::Codec(format!(
            "cached value claims {size} bytes uncompressed, more than the {max} a value may have"
        )));
    }
    let value = lz4_flex::block::decompress(block, size)
        .map_err(|e| Error::Codec(format!("cached value does not decompress: {e}")))?;
    if value.len() != size {
        return Err(Error::Codec(format!(
            "cached value decompresses to {} bytes, not the {size} its prefix says",
            value.len()
        )));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| Error::Codec("cache envelope is truncated".into()))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recursive cached value type.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Nest {
        End,
        In(Option<Box<Nest>>),
    }

    #[test]
    fn every_format_refuses_a_value_nested_past_the_limit() {
        // Past the limit however a format counts (one or two levels per nesting).
        let mut deep = Nest::End;
        for _ in 0..1000 {
            deep = Nest::In(Some(Box::new(deep)));
        }
        let mut shallow = Nest::End;
        for _ in 0..(MAX_DEPTH / 4) {
            shallow = Nest::In(Some(Box::new(shallow)));
        }
        for format in [Format::Json, Format::MsgPack, Format::Postcard] {
            let bytes = format.encode(&shallow).expect("encode");
            assert_eq!(format.decode::<Nest>(&bytes).expect("decode"), shallow);
            let bytes = format.encode(&deep).expect("encode");
            let decoded = format.decode::<Nest>(&bytes);
            assert!(
                matches!(decoded, Err(Error::Codec(_))),
                "{format:?}: decoded {}",
                decoded.is_ok()
            );
        }
        let err = Format::Postcard
            .decode::<Nest>(&Format::Postcard.encode(&deep).expect("encode"))
            .expect_err("too deep")
            .to_string();
        assert!(err.contains("nested deeper than 128"), "{err}");
    }

    fn sample(value: Option<Vec<u8>>) -> Envelope {
        Envelope {
            meta: Meta {
                created: 1_700_000_000_000,
                fresh_until: 1_700_000_060_000,
                stale_until: 1_700_000_360_000,
                load_ms: 12,
                tags: vec!["product:7".into(), "catalog".into()],
            },
            schema: 3,
            format: Format::MsgPack,
            value,
        }
    }

    #[test]
    fn size_is_the_uncompressed_encoding() {
        for value in [None, Some(vec![]), Some(vec![7; 10]), Some(vec![0; 5000])] {
            let e = sample(value);
            assert_eq!(
                e.size(),
                e.to_bytes(usize::MAX).len(),
                "{:?}",
                e.value.as_ref().map(Vec::len)
            );
        }
        // Compressed, the stored bytes are fewer than what the value takes decoded.
        let big = sample(Some(vec![0; 5000]));
        assert!(big.to_bytes(1024).len() < big.size());
    }

    #[test]
    fn envelopes_round_trip_with_and_without_compression() {
        for compress_at in [0, 1 << 20] {
            for value in [None, Some(vec![]), Some(b"x".repeat(5000))] {
                let e = sample(value);
                let bytes = e.to_bytes(compress_at);
                assert_eq!(Envelope::from_bytes(&bytes).expect("decodes"), e);
            }
        }
        let big = sample(Some(b"abc".repeat(10_000)));
        assert!(
            big.to_bytes(1024).len() < 2_000,
            "repetitive values compress"
        );
    }

    #[test]
    fn damaged_envelopes_are_errors_not_panics() {
        let bytes = sample(Some(b"hello".to_vec())).to_bytes(1 << 20);
        for cut in 0..40 {
            assert!(Envelope::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Envelope::from_bytes(b"{\"json\": 1}").is_err());
        let mut other = bytes.clone();
        other[1] = 9;
        let err = Envelope::from_bytes(&other)
            .expect_err("layout 9")
            .to_string();
        assert!(err.contains("layout 9"), "{err}");
    }

    #[test]
    fn formats_round_trip() {
        for f in [Format::Json, Format::MsgPack, Format::Postcard] {
            let bytes = f.encode(&("a", 7u32, vec![1.5f64])).expect("encodes");
            let back: (String, u32, Vec<f64>) = f.decode(&bytes).expect("decodes");
            assert_eq!(back, ("a".to_string(), 7, vec![1.5]));
        }
    }
}
