//! The key group file: a 7-byte header — magic `SZCK`, format version (u16, big-endian), codec
//! byte — followed by a zstd-compressed MessagePack encoding of a [`KeyGroupCheckpoint`].
//!
//! MessagePack (with field names) because the state holds `serde_json::Value` attributes and
//! optional fields, which need a self-describing format; postcard or bincode could not read
//! them back. The checksum is the sha256 of the whole file, recorded in the manifest; [`decode`]
//! refuses a file whose size, checksum, magic, version or codec is not what it expects, naming
//! the file. Pure: no I/O here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::KeyGroupState;
use crate::history::HistoryRecord;

/// First bytes of every key group file.
pub const MAGIC: [u8; 4] = *b"SZCK";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Codec byte: MessagePack (named fields), zstd-compressed.
pub const CODEC_MSGPACK_ZSTD: u8 = 1;
/// Length of the header.
pub const HEADER_LEN: usize = 7;
/// zstd level: fast, and the state compresses well at it.
pub const ZSTD_LEVEL: i32 = 3;

/// Everything one key group needs to resume: what a checkpoint stores per key group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyGroupCheckpoint {
    /// The key group (source partition index).
    pub key_group: u32,
    /// Next offset to consume, per source topic name, consistent with `state`.
    pub offsets: BTreeMap<String, i64>,
    /// The engine's state of the key group.
    pub state: KeyGroupState,
    /// Embedded history backend only: this key group's history records. Empty with Aerospike.
    #[serde(with = "records")]
    pub history: Vec<HistoryRecord>,
}

impl KeyGroupCheckpoint {
    /// Open sessions in the state (all keys).
    pub fn open_sessions(&self) -> u64 {
        self.state.open.values().map(|s| s.len() as u64).sum()
    }
}

/// Why a key group file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Serializing the state failed.
    #[error("encoding key group {key_group}: {message}")]
    Encode {
        /// The key group.
        key_group: u32,
        /// What failed.
        message: String,
    },
    /// The file is not what the manifest says (size or checksum differs).
    #[error("checkpoint file {file} is corrupt: {message}")]
    Checksum {
        /// The file.
        file: String,
        /// What differed.
        message: String,
    },
    /// The header is not one this build reads.
    #[error("checkpoint file {file} has an unreadable header: {message}")]
    Header {
        /// The file.
        file: String,
        /// What was wrong.
        message: String,
    },
    /// Decompressing or deserializing the body failed.
    #[error("checkpoint file {file} cannot be decoded: {message}")]
    Decode {
        /// The file.
        file: String,
        /// What failed.
        message: String,
    },
}

/// The file bytes of `checkpoint`.
pub fn encode(checkpoint: &KeyGroupCheckpoint) -> Result<Vec<u8>, FormatError> {
    let fail = |message: String| FormatError::Encode {
        key_group: checkpoint.key_group,
        message,
    };
    let body = rmp_serde::to_vec_named(checkpoint).map_err(|e| fail(e.to_string()))?;
    let mut file = Vec::with_capacity(HEADER_LEN + body.len() / 3);
    file.extend_from_slice(&MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    file.push(CODEC_MSGPACK_ZSTD);
    zstd::stream::copy_encode(body.as_slice(), &mut file, ZSTD_LEVEL)
        .map_err(|e| fail(format!("compressing: {e}")))?;
    Ok(file)
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Reads the file `file` (named in errors) after checking its size and sha256 against what the
/// manifest recorded, then its header.
pub fn decode(
    file: &str,
    bytes: &[u8],
    expected_len: u64,
    expected_sha256: &str,
) -> Result<KeyGroupCheckpoint, FormatError> {
    if bytes.len() as u64 != expected_len {
        return Err(FormatError::Checksum {
            file: file.to_owned(),
            message: format!("{} bytes, the manifest says {expected_len}", bytes.len()),
        });
    }
    let actual = sha256_hex(bytes);
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(FormatError::Checksum {
            file: file.to_owned(),
            message: format!("sha256 {actual}, the manifest says {expected_sha256}"),
        });
    }
    let header = |message: String| FormatError::Header {
        file: file.to_owned(),
        message,
    };
    let Some((head, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(header(format!("only {} bytes", bytes.len())));
    };
    if head[..4] != MAGIC {
        return Err(header(format!("magic {:?}, expected SZCK", &head[..4])));
    }
    let version = u16::from_be_bytes([head[4], head[5]]);
    if version != FORMAT_VERSION {
        return Err(header(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    if head[6] != CODEC_MSGPACK_ZSTD {
        return Err(header(format!("unknown codec {}", head[6])));
    }
    let decode_error = |message: String| FormatError::Decode {
        file: file.to_owned(),
        message,
    };
    let raw = zstd::stream::decode_all(body).map_err(|e| decode_error(e.to_string()))?;
    rmp_serde::from_slice(&raw).map_err(|e| decode_error(e.to_string()))
}

/// History records as `[key, stored bytes (MessagePack bin), expires_at_ms]` triples: the stored
/// bytes as one binary value instead of an array of integers.
mod records {
    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    use crate::history::HistoryRecord;

    #[derive(serde::Serialize)]
    struct Out<'a>(&'a str, #[serde(with = "bin")] &'a [u8], u64);

    #[derive(serde::Deserialize)]
    struct In(
        String,
        #[serde(deserialize_with = "bin::deserialize")] Vec<u8>,
        u64,
    );

    pub fn serialize<S: Serializer>(
        records: &[HistoryRecord],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(records.len()))?;
        for record in records {
            seq.serialize_element(&Out(&record.key, &record.stored, record.expires_at_ms))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<HistoryRecord>, D::Error> {
        let records: Vec<In> = serde::Deserialize::deserialize(deserializer)?;
        Ok(records
            .into_iter()
            .map(|In(key, stored, expires_at_ms)| HistoryRecord {
                key,
                stored,
                expires_at_ms,
            })
            .collect())
    }

    mod bin {
        use super::*;

        pub fn serialize<S: Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(bytes)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<u8>, D::Error> {
            deserializer.deserialize_byte_buf(BytesVisitor)
        }

        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(byte) = seq.next_element()? {
                    bytes.push(byte);
                }
                Ok(bytes)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::KeyMeta;
    use crate::session::Session;

    /// A checkpoint with open sessions, timers, metadata and binary history.
    pub(crate) fn sample(key_group: u32) -> KeyGroupCheckpoint {
        let mut state = KeyGroupState {
            key_group,
            ..KeyGroupState::default()
        };
        state.watermark.max_event_time = Some(1_763_776_800_000);
        let session: Session = serde_json::from_value(serde_json::json!({
            "key": "user-1",
            "events": {},
            "attributes": {},
        }))
        .unwrap();
        state
            .open
            .insert("user-1".into(), vec![session.clone(), session]);
        state.timers.insert((1_763_776_900_000, "user-1".into()));
        state.meta.insert(
            "user-1".into(),
            KeyMeta {
                open_bytes: 512,
                rejected_events: 1,
                deadline: 1_763_776_900_000,
            },
        );
        state.counters.records = 42;
        KeyGroupCheckpoint {
            key_group,
            offsets: BTreeMap::from([("pageviews".into(), 1234), ("async".into(), 7)]),
            state,
            history: vec![HistoryRecord {
                key: format!("ns/job/{key_group}/user-0"),
                stored: (0..=255u8).cycle().take(3000).collect(),
                expires_at_ms: 1_763_800_000_000,
            }],
        }
    }

    #[test]
    fn a_checkpoint_round_trips_with_its_header() {
        let checkpoint = sample(7);
        let bytes = encode(&checkpoint).unwrap();
        assert_eq!(&bytes[..4], b"SZCK");
        assert_eq!(u16::from_be_bytes([bytes[4], bytes[5]]), FORMAT_VERSION);
        assert_eq!(bytes[6], CODEC_MSGPACK_ZSTD);
        let sha = sha256_hex(&bytes);
        assert_eq!(sha.len(), 64);
        let back = decode("kg-00007.bin", &bytes, bytes.len() as u64, &sha).unwrap();
        assert_eq!(back, checkpoint);
        assert_eq!(back.open_sessions(), 2);
    }

    #[test]
    fn history_bytes_are_stored_as_binary_not_as_integer_arrays() {
        let mut checkpoint = sample(1);
        checkpoint.history[0].stored = vec![0xAB; 100_000];
        let raw = rmp_serde::to_vec_named(&checkpoint).unwrap();
        assert!(raw.len() < 101_000, "{} bytes", raw.len());
    }

    #[test]
    fn corruption_is_refused_with_the_file_name() {
        let bytes = encode(&sample(3)).unwrap();
        let sha = sha256_hex(&bytes);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        let error = decode("chk-1/kg-00003.bin", &flipped, bytes.len() as u64, &sha).unwrap_err();
        assert!(matches!(error, FormatError::Checksum { .. }), "{error}");
        assert!(error.to_string().contains("chk-1/kg-00003.bin"), "{error}");

        let short = decode("f", &bytes[..10], bytes.len() as u64, &sha).unwrap_err();
        assert!(short.to_string().contains("manifest says"), "{short}");
    }

    #[test]
    fn unknown_magic_version_or_codec_is_refused() {
        let bytes = encode(&sample(3)).unwrap();
        for (at, value, expect) in [
            (0, b'X', "magic"),
            (5, 9, "format version"),
            (6, 9, "codec"),
        ] {
            let mut bad = bytes.clone();
            bad[at] = value;
            let sha = sha256_hex(&bad);
            let error = decode("kg.bin", &bad, bad.len() as u64, &sha).unwrap_err();
            assert!(matches!(error, FormatError::Header { .. }), "{error}");
            assert!(error.to_string().contains(expect), "{error}");
        }
    }
}
