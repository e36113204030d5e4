//! A small versioned header followed by (usually zstd-compressed) bytes: the frame of every
//! history value at rest, and of every closed session inside one. Both backends frame values
//! with it, so a value can move between them (and through a checkpoint) unchanged, and anything
//! that was not written by us — a foreign bin, a truncated file, a future format — is reported
//! as [`HistoryError::Corrupt`] instead of being handed to the session engine as garbage.
//!
//! Compression happens with it, on the client (seed 000: "we decided to do it client side
//! instead to avoid sending uncompressed data over the network"): the engine compresses each
//! closed session once, when it changes ([`crate::engine::closed`]), and the worker's backends
//! frame the value without compressing it again. Values written before that (one compressed
//! frame around the whole list) still decode, whatever codec reads them. Creating a zstd context
//! costs more than compressing a typical session, so each thread keeps one compression context
//! (per level) and one decompression context and reuses them. This module must never do I/O.

use std::cell::RefCell;
use std::io::Read;

use sessionizer_crds::session_job::{CompressionCodec, CompressionSpec, DEFAULT_ZSTD_LEVEL};

use super::HistoryError;

/// First bytes of every encoded value.
const MAGIC: [u8; 2] = *b"SZ";
/// The only header version so far.
const VERSION: u8 = 1;
/// Header length: magic, version, codec.
pub const HEADER_LEN: usize = 4;
/// Decoded values larger than this are refused, so a hostile or corrupt frame cannot make the
/// worker allocate without bound (a session is capped far below this).
pub const MAX_DECODED_LEN: u64 = 256 * 1024 * 1024;

const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// Encodes and decodes history values. The default is the CRD's default zstd level
/// ([`DEFAULT_ZSTD_LEVEL`], one of zstd's fast levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Codec {
    /// zstd level, or `None` to store values uncompressed (still with the header).
    zstd_level: Option<i32>,
}

impl Default for Codec {
    fn default() -> Self {
        Self::zstd(DEFAULT_ZSTD_LEVEL)
    }
}

impl Codec {
    /// A codec compressing with zstd at `level` (the CRD allows
    /// [`sessionizer_crds::session_job::MIN_ZSTD_LEVEL`] to
    /// [`sessionizer_crds::session_job::MAX_ZSTD_LEVEL`]; negative levels are zstd's fast levels).
    pub fn zstd(level: i32) -> Self {
        Self {
            zstd_level: Some(level),
        }
    }

    /// A codec that only adds the header.
    pub fn uncompressed() -> Self {
        Self { zstd_level: None }
    }

    /// The codec `spec.history.compression` asks for.
    pub fn from_spec(spec: &CompressionSpec) -> Self {
        match spec.codec {
            CompressionCodec::Zstd => Self::zstd(spec.level),
            CompressionCodec::None => Self::uncompressed(),
        }
    }

    /// The bytes to store for `value`.
    pub fn encode(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, HistoryError> {
        // Compression reserves its own room.
        let body = if self.zstd_level.is_some() {
            0
        } else {
            value.len()
        };
        let mut out = Vec::with_capacity(HEADER_LEN + body);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        match self.zstd_level {
            Some(level) => {
                out.push(CODEC_ZSTD);
                compress_into(value, level, &mut out).map_err(|error| {
                    // Only an invalid level can fail here: a configuration error.
                    HistoryError::Open(format!("compressing history record {key}: {error}"))
                })?;
            }
            None => {
                out.push(CODEC_RAW);
                out.extend_from_slice(value);
            }
        }
        Ok(out)
    }

    /// The value `stored` holds; any codec's output is accepted, whatever this codec's level.
    pub fn decode(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>, HistoryError> {
        let corrupt = |message: String| HistoryError::Corrupt {
            key: key.to_owned(),
            message,
        };
        let Some((header, body)) = stored.split_at_checked(HEADER_LEN) else {
            return Err(corrupt(format!(
                "{} bytes, shorter than the header",
                stored.len()
            )));
        };
        if header[..2] != MAGIC {
            return Err(corrupt(String::from("not a Sessionizer history value")));
        }
        if header[2] != VERSION {
            return Err(corrupt(format!("unknown format version {}", header[2])));
        }
        match header[3] {
            CODEC_RAW => Ok(body.to_vec()),
            CODEC_ZSTD => decompress(body).map_err(corrupt),
            other => Err(corrupt(format!("unknown codec {other}"))),
        }
    }
}

thread_local! {
    /// This thread's compression context and the level it is set to.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    /// This thread's decompression context.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Appends the zstd frame of `value` (with its content size, so decoding allocates once) to `out`,
/// compressing straight into it; `out` is left without the room the worst case needed.
fn compress_into(value: &[u8], level: i32, out: &mut Vec<u8>) -> std::io::Result<()> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let compressor = match &mut *slot {
            Some((current, compressor)) if *current == level => compressor,
            other => &mut other.insert((level, zstd::bulk::Compressor::new(level)?)).1,
        };
        let start = out.len();
        out.reserve(zstd::zstd_safe::compress_bound(value.len()));
        let mut tail = std::io::Cursor::new(&mut *out);
        tail.set_position(start as u64);
        compressor.compress_to_buffer(value, &mut tail)?;
        out.shrink_to_fit();
        Ok(())
    })
}

/// Decodes one zstd frame, refusing more than [`MAX_DECODED_LEN`] bytes.
fn decompress(frame: &[u8]) -> Result<Vec<u8>, String> {
    let too_big = || format!("decodes to more than {MAX_DECODED_LEN} bytes");
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) => {
            if size > MAX_DECODED_LEN {
                return Err(too_big());
            }
            DECOMPRESSOR.with(|slot| {
                let mut slot = slot.borrow_mut();
                let decompressor = match &mut *slot {
                    Some(decompressor) => decompressor,
                    none => none
                        .insert(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?),
                };
                let capacity = usize::try_from(size).map_err(|_| too_big())?;
                let out = decompressor
                    .decompress(frame, capacity)
                    .map_err(|e| format!("zstd: {e}"))?;
                if out.len() != capacity {
                    return Err(format!(
                        "zstd: {} bytes instead of the {capacity} the frame announces",
                        out.len()
                    ));
                }
                Ok(out)
            })
        }
        // A frame without its size (written by a streaming encoder): decode as a stream.
        Ok(None) => {
            let decoder =
                zstd::stream::read::Decoder::new(frame).map_err(|e| format!("zstd: {e}"))?;
            let mut out = Vec::new();
            decoder
                .take(MAX_DECODED_LEN + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("zstd: {e}"))?;
            if out.len() as u64 > MAX_DECODED_LEN {
                return Err(too_big());
            }
            Ok(out)
        }
        Err(_) => Err(String::from("zstd: not a zstd frame")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary() -> Vec<u8> {
        (0..=255u8).cycle().take(5000).collect()
    }

    #[test]
    fn round_trips_binary_values_with_and_without_compression() {
        for codec in [
            Codec::default(),
            Codec::zstd(-7),
            Codec::zstd(3),
            Codec::zstd(19),
            Codec::uncompressed(),
        ] {
            for value in [Vec::new(), vec![0u8], binary()] {
                let stored = codec.encode("k", &value).unwrap();
                assert_eq!(codec.decode("k", &stored).unwrap(), value, "{codec:?}");
            }
        }
    }

    #[test]
    fn reads_frames_written_by_a_streaming_encoder() {
        let mut stored = b"SZ\x01\x01".to_vec();
        zstd::stream::copy_encode(binary().as_slice(), &mut stored, 3).unwrap();
        assert_eq!(Codec::zstd(3).decode("k", &stored).unwrap(), binary());
    }

    #[test]
    fn a_frame_announcing_a_huge_size_is_refused_before_allocating() {
        let mut stored = Codec::zstd(3).encode("k", &binary()).unwrap();
        // Frame header: magic (4), descriptor, then the content size; claim 2^40 bytes.
        let descriptor = stored[HEADER_LEN + 4];
        assert_eq!(descriptor >> 6, 1, "2-byte content size expected");
        stored[HEADER_LEN + 4] = (descriptor & 0x3f) | (3 << 6);
        let size = (1u64 << 40).to_le_bytes();
        let at = HEADER_LEN + 5 + usize::from(descriptor & 0x20 == 0);
        stored.splice(at..at + 2, size);
        let error = Codec::zstd(3).decode("k", &stored).unwrap_err();
        assert!(error.to_string().contains("more than"), "{error}");
    }

    #[test]
    fn compresses_repetitive_values() {
        let value = b"page_view;".repeat(10_000);
        for codec in [Codec::default(), Codec::zstd(3)] {
            let stored = codec.encode("k", &value).unwrap();
            assert!(
                stored.len() < value.len() / 20,
                "{codec:?}: {} bytes",
                stored.len()
            );
        }
    }

    #[test]
    fn any_level_reads_any_other() {
        for level in [-7, DEFAULT_ZSTD_LEVEL, 1, 19] {
            let stored = Codec::zstd(level).encode("k", &binary()).unwrap();
            assert_eq!(
                Codec::uncompressed().decode("k", &stored).unwrap(),
                binary()
            );
            assert_eq!(Codec::zstd(3).decode("k", &stored).unwrap(), binary());
        }
    }

    #[test]
    fn foreign_truncated_and_future_values_are_corrupt() {
        let good = Codec::zstd(3).encode("k", &binary()).unwrap();
        let mut future = good.clone();
        future[2] = 9;
        let mut unknown_codec = good.clone();
        unknown_codec[3] = 7;
        let truncated = good[..good.len() / 2].to_vec();
        for (name, stored) in [
            ("empty", Vec::new()),
            ("foreign", b"{\"json\":true}".to_vec()),
            ("future", future),
            ("unknown codec", unknown_codec),
            ("truncated", truncated),
        ] {
            let error = Codec::zstd(3).decode("user-1", &stored).unwrap_err();
            assert!(
                matches!(&error, HistoryError::Corrupt { key, .. } if key == "user-1"),
                "{name}: {error:?}"
            );
        }
    }
}
