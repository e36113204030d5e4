//! The AS_MSG format: the 22-byte message header, the fields (namespace, set, digest, batch
//! index, …) and the operations (bin reads and writes) of a record command, plus the result codes
//! a reply carries. Parsing and encoding live here so the record logic never touches bytes; the
//! numbers are the ones the real server and the `aerospike` crate agree on, never our own.

use crate::aerospike::store::{Bin, Digest};

/// Size of the AS_MSG header that follows the proto header.
pub(crate) const HEADER_SIZE: usize = 22;

/// info1: the command reads.
pub(crate) const INFO1_READ: u8 = 1;
/// info1: read every bin.
pub(crate) const INFO1_GET_ALL: u8 = 1 << 1;
/// info1: the command is a batch (its rows are in a batch-index field).
pub(crate) const INFO1_BATCH: u8 = 1 << 3;
/// info1: read the record header only, no bins.
pub(crate) const INFO1_NOBINDATA: u8 = 1 << 5;
/// info2: the command writes.
pub(crate) const INFO2_WRITE: u8 = 1;
/// info2: the write deletes the record.
pub(crate) const INFO2_DELETE: u8 = 1 << 1;
/// info2: write only if the generation equals the one sent.
pub(crate) const INFO2_GENERATION: u8 = 1 << 2;
/// info2: write only if the generation sent is greater than the record's.
pub(crate) const INFO2_GENERATION_GT: u8 = 1 << 3;
/// info2: fail if the record exists.
pub(crate) const INFO2_CREATE_ONLY: u8 = 1 << 5;
/// info2: answer every operation, writes included.
pub(crate) const INFO2_RESPOND_ALL_OPS: u8 = 1 << 7;
/// info3: last message of a multi-message answer (batch).
pub(crate) const INFO3_LAST: u8 = 1;
/// info3: fail if the record does not exist; merge bins.
pub(crate) const INFO3_UPDATE_ONLY: u8 = 1 << 3;
/// info3: create or replace all bins.
pub(crate) const INFO3_CREATE_OR_REPLACE: u8 = 1 << 4;
/// info3: replace all bins of an existing record only.
pub(crate) const INFO3_REPLACE_ONLY: u8 = 1 << 5;

/// Field: namespace name.
pub(crate) const FIELD_NAMESPACE: u8 = 0;
/// Field: set name.
pub(crate) const FIELD_SET: u8 = 1;
/// Field: RIPEMD-160 digest of set and user key.
pub(crate) const FIELD_DIGEST: u8 = 4;
/// Field: the rows of a batch command.
pub(crate) const FIELD_BATCH_INDEX: u8 = 41;
/// Field: a filter expression.
pub(crate) const FIELD_FILTER_EXP: u8 = 43;

/// Operation: read a bin (or the header, with an empty name).
pub(crate) const OP_READ: u8 = 1;
/// Operation: write a bin (a nil value removes it).
pub(crate) const OP_WRITE: u8 = 2;
/// Operation: add to an integer or float bin.
pub(crate) const OP_INCR: u8 = 5;
/// Operation: append to a string or blob bin.
pub(crate) const OP_APPEND: u8 = 9;
/// Operation: prepend to a string or blob bin.
pub(crate) const OP_PREPEND: u8 = 10;
/// Operation: reset the record's TTL and bump its generation.
pub(crate) const OP_TOUCH: u8 = 11;
/// Operation: delete the record.
pub(crate) const OP_DELETE: u8 = 14;

/// Particle type: no value (removes a bin when written).
pub(crate) const PARTICLE_NULL: u8 = 0;
/// Particle type: 64-bit big-endian signed integer.
pub(crate) const PARTICLE_INTEGER: u8 = 1;
/// Particle type: 64-bit big-endian IEEE float.
pub(crate) const PARTICLE_FLOAT: u8 = 2;
/// Particle type: UTF-8 string.
pub(crate) const PARTICLE_STRING: u8 = 3;
/// Particle type: bytes.
pub(crate) const PARTICLE_BLOB: u8 = 4;

/// A result code of the Aerospike protocol, with the number the real server sends.
///
/// Only the codes this test server produces are listed; the `aerospike` crate maps each number to
/// its own `ResultCode` (`ServerMemError` for [`ResultCode::OutOfSpace`], `FailForbidden` for
/// [`ResultCode::Forbidden`], …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResultCode {
    /// 0: success.
    Ok,
    /// 1: unknown server failure.
    ServerError,
    /// 2: the record does not exist.
    KeyNotFound,
    /// 3: the generation check of the write failed.
    GenerationError,
    /// 4: a malformed request or a bad parameter (for example a TTL above ten years).
    ParameterError,
    /// 5: a create-only write found an existing record.
    KeyExists,
    /// 8: the namespace is in stop-writes (`AS_ERR_OUT_OF_SPACE`; the crate calls it
    /// `ServerMemError`, the C client `AEROSPIKE_ERR_SERVER_FULL`).
    OutOfSpace,
    /// 9: the server timed the command out.
    Timeout,
    /// 11: the partition is unavailable.
    PartitionUnavailable,
    /// 12: an increment or append met a bin of another type.
    BinTypeError,
    /// 13: the record is larger than the namespace's record-size limit.
    RecordTooBig,
    /// 14: too many concurrent commands on one record.
    KeyBusy,
    /// 16: the command uses a feature this server does not implement.
    UnsupportedFeature,
    /// 18: the storage device cannot keep up.
    DeviceOverload,
    /// 20: the namespace does not exist on this server.
    InvalidNamespace,
    /// 22: writes are forbidden right now (clock-skew stop-writes).
    Forbidden,
}

impl ResultCode {
    /// The number sent on the wire.
    pub fn code(self) -> u8 {
        match self {
            ResultCode::Ok => 0,
            ResultCode::ServerError => 1,
            ResultCode::KeyNotFound => 2,
            ResultCode::GenerationError => 3,
            ResultCode::ParameterError => 4,
            ResultCode::KeyExists => 5,
            ResultCode::OutOfSpace => 8,
            ResultCode::Timeout => 9,
            ResultCode::PartitionUnavailable => 11,
            ResultCode::BinTypeError => 12,
            ResultCode::RecordTooBig => 13,
            ResultCode::KeyBusy => 14,
            ResultCode::UnsupportedFeature => 16,
            ResultCode::DeviceOverload => 18,
            ResultCode::InvalidNamespace => 20,
            ResultCode::Forbidden => 22,
        }
    }
}

/// Why a message could not be parsed; the connection is closed after answering
/// [`ResultCode::ParameterError`] where possible.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MessageError {
    /// The message ended before a declared length.
    #[error("message truncated: {what} needs {needed} bytes at offset {at}, {len} available")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Where.
        at: usize,
        /// Total length of the message.
        len: usize,
    },
    /// A field or operation declares a size below its own header.
    #[error("{0} declares an impossible size")]
    BadSize(&'static str),
    /// A name that must be UTF-8 is not.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// The digest field is not 20 bytes.
    #[error("digest field of {0} bytes (expected 20)")]
    BadDigest(usize),
}

/// A bounds-checked reader over a message body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf` at offset 0.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], MessageError> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.buf.len());
        let Some(end) = end else {
            return Err(MessageError::Truncated {
                what,
                needed: n,
                at: self.pos,
                len: self.buf.len(),
            });
        };
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// One byte.
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, MessageError> {
        Ok(self.bytes(1, what)?[0])
    }

    /// A big-endian u16.
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, MessageError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian u32.
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, MessageError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The fixed header of an AS_MSG, request or reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) info1: u8,
    pub(crate) info2: u8,
    pub(crate) info3: u8,
    pub(crate) info4: u8,
    pub(crate) result_code: u8,
    pub(crate) generation: u32,
    /// TTL in a request, void time (seconds since 2010-01-01) in a reply.
    pub(crate) record_ttl: u32,
    /// Server timeout in a request, the row index in a batch reply.
    pub(crate) transaction_ttl: u32,
    pub(crate) n_fields: u16,
    pub(crate) n_ops: u16,
}

/// One operation of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Op {
    /// `OP_*`.
    pub(crate) kind: u8,
    /// The value's particle type.
    pub(crate) particle: u8,
    /// Bin name; empty for header reads and touch.
    pub(crate) name: String,
    /// The value as particle bytes.
    pub(crate) value: Vec<u8>,
}

/// A record command: who it addresses and what it does.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    pub(crate) header: Header,
    pub(crate) namespace: String,
    pub(crate) set: String,
    pub(crate) digest: Option<Digest>,
    /// The batch-index field of a batch command.
    pub(crate) batch: Option<Vec<u8>>,
    /// Whether a filter expression was sent (this server cannot evaluate them).
    pub(crate) has_filter: bool,
    pub(crate) ops: Vec<Op>,
}

/// Parses a whole AS_MSG body (header, fields, operations).
pub(crate) fn parse_request(body: &[u8]) -> Result<Request, MessageError> {
    let mut reader = Reader::new(body);
    let header_size = usize::from(reader.u8("header size")?);
    if header_size < HEADER_SIZE {
        return Err(MessageError::BadSize("the message header"));
    }
    let header = Header {
        info1: reader.u8("info1")?,
        info2: reader.u8("info2")?,
        info3: reader.u8("info3")?,
        info4: reader.u8("info4")?,
        result_code: reader.u8("result code")?,
        generation: reader.u32("generation")?,
        record_ttl: reader.u32("record ttl")?,
        transaction_ttl: reader.u32("transaction ttl")?,
        n_fields: reader.u16("field count")?,
        n_ops: reader.u16("operation count")?,
    };
    reader.bytes(header_size - HEADER_SIZE, "header padding")?;
    let mut request = Request {
        header,
        ..Request::default()
    };
    read_fields(&mut reader, header.n_fields, &mut request)?;
    request.ops = read_ops(&mut reader, header.n_ops)?;
    Ok(request)
}

/// Reads `count` fields into `request`.
pub(crate) fn read_fields(
    reader: &mut Reader<'_>,
    count: u16,
    request: &mut Request,
) -> Result<(), MessageError> {
    for _ in 0..count {
        let size = reader.u32("field size")? as usize;
        let data_len = size
            .checked_sub(1)
            .ok_or(MessageError::BadSize("a field"))?;
        let kind = reader.u8("field type")?;
        let data = reader.bytes(data_len, "field data")?;
        match kind {
            FIELD_NAMESPACE => request.namespace = utf8(data, "the namespace")?,
            FIELD_SET => request.set = utf8(data, "the set name")?,
            FIELD_DIGEST => {
                let digest: Digest = data
                    .try_into()
                    .map_err(|_| MessageError::BadDigest(data.len()))?;
                request.digest = Some(digest);
            }
            FIELD_BATCH_INDEX => request.batch = Some(data.to_vec()),
            FIELD_FILTER_EXP => request.has_filter = true,
            // User key, timeouts, transaction fields: nothing this server acts on.
            _ => {}
        }
    }
    Ok(())
}

/// Reads `count` operations.
pub(crate) fn read_ops(reader: &mut Reader<'_>, count: u16) -> Result<Vec<Op>, MessageError> {
    let mut ops = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let size = reader.u32("operation size")? as usize;
        let kind = reader.u8("operation type")?;
        let particle = reader.u8("particle type")?;
        let _flags = reader.u8("operation flags")?;
        let name_len = usize::from(reader.u8("bin name length")?);
        let value_len = size
            .checked_sub(4 + name_len)
            .ok_or(MessageError::BadSize("an operation"))?;
        let name = utf8(reader.bytes(name_len, "bin name")?, "a bin name")?;
        let value = reader.bytes(value_len, "operation value")?.to_vec();
        ops.push(Op {
            kind,
            particle,
            name,
            value,
        });
    }
    Ok(ops)
}

fn utf8(data: &[u8], what: &'static str) -> Result<String, MessageError> {
    String::from_utf8(data.to_vec()).map_err(|_| MessageError::NotUtf8(what))
}

/// What the server answers to one record command (or one batch row).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) result: ResultCode,
    pub(crate) generation: u32,
    /// Seconds since 2010-01-01 when the record expires; 0 for never.
    pub(crate) void_time: u32,
    /// Bins (or operation results) returned, in order.
    pub(crate) bins: Vec<Bin>,
}

impl Reply {
    /// A reply that carries only a result code.
    pub(crate) fn code(result: ResultCode) -> Self {
        Reply {
            result,
            generation: 0,
            void_time: 0,
            bins: Vec::new(),
        }
    }
}

/// Appends the AS_MSG encoding of `reply` (header and operations, no proto header) to `out`.
/// `info3` and `transaction_ttl` let batch answers mark the last message and carry row indexes.
pub(crate) fn encode_reply(out: &mut Vec<u8>, reply: &Reply, info3: u8, transaction_ttl: u32) {
    out.push(HEADER_SIZE as u8);
    out.push(0); // info1
    out.push(0); // info2
    out.push(info3);
    out.push(0); // info4
    out.push(reply.result.code());
    out.extend_from_slice(&reply.generation.to_be_bytes());
    out.extend_from_slice(&reply.void_time.to_be_bytes());
    out.extend_from_slice(&transaction_ttl.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // no fields
    let n_ops = u16::try_from(reply.bins.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n_ops.to_be_bytes());
    for bin in reply.bins.iter().take(usize::from(n_ops)) {
        let name = bin.name.as_bytes();
        let size = (4 + name.len() + bin.value.len()) as u32;
        out.extend_from_slice(&size.to_be_bytes());
        out.push(OP_READ);
        out.push(bin.particle);
        out.push(0);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&bin.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a request the way the client does, to check the parser against it.
    fn request_bytes(info1: u8, info2: u8, fields: &[(u8, &[u8])], ops: &[Op]) -> Vec<u8> {
        let mut out = vec![HEADER_SIZE as u8, info1, info2, 0, 0, 0];
        out.extend_from_slice(&7u32.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&1000u32.to_be_bytes());
        out.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        out.extend_from_slice(&(ops.len() as u16).to_be_bytes());
        for (kind, data) in fields {
            out.extend_from_slice(&(data.len() as u32 + 1).to_be_bytes());
            out.push(*kind);
            out.extend_from_slice(data);
        }
        for op in ops {
            out.extend_from_slice(&((4 + op.name.len() + op.value.len()) as u32).to_be_bytes());
            out.extend_from_slice(&[op.kind, op.particle, 0, op.name.len() as u8]);
            out.extend_from_slice(op.name.as_bytes());
            out.extend_from_slice(&op.value);
        }
        out
    }

    #[test]
    fn parses_a_put() {
        let op = Op {
            kind: OP_WRITE,
            particle: PARTICLE_STRING,
            name: "greeting".into(),
            value: b"hello".to_vec(),
        };
        let digest = [7u8; 20];
        let body = request_bytes(
            0,
            INFO2_WRITE,
            &[
                (FIELD_NAMESPACE, b"test"),
                (FIELD_SET, b"s"),
                (FIELD_DIGEST, &digest),
            ],
            std::slice::from_ref(&op),
        );
        let request = parse_request(&body).unwrap();
        assert_eq!(request.header.info2, INFO2_WRITE);
        assert_eq!(request.header.generation, 7);
        assert_eq!(request.header.record_ttl, 60);
        assert_eq!(request.namespace, "test");
        assert_eq!(request.set, "s");
        assert_eq!(request.digest, Some(digest));
        assert_eq!(request.ops, vec![op]);
    }

    #[test]
    fn rejects_truncated_messages() {
        let body = request_bytes(INFO1_READ, 0, &[(FIELD_NAMESPACE, b"test")], &[]);
        let error = parse_request(&body[..body.len() - 2]).unwrap_err();
        assert!(matches!(error, MessageError::Truncated { .. }), "{error}");
        let error = parse_request(&body[..10]).unwrap_err();
        assert!(matches!(error, MessageError::Truncated { .. }), "{error}");
    }

    #[test]
    fn encodes_a_reply_with_bins() {
        let reply = Reply {
            result: ResultCode::Ok,
            generation: 3,
            void_time: 99,
            bins: vec![Bin {
                name: "n".into(),
                particle: PARTICLE_INTEGER,
                value: 5i64.to_be_bytes().to_vec(),
            }],
        };
        let mut out = Vec::new();
        encode_reply(&mut out, &reply, INFO3_LAST, 4);
        assert_eq!(out.len(), HEADER_SIZE + 8 + 1 + 8);
        assert_eq!(out[3], INFO3_LAST);
        assert_eq!(out[5], 0);
        assert_eq!(&out[6..10], &3u32.to_be_bytes());
        assert_eq!(&out[10..14], &99u32.to_be_bytes());
        assert_eq!(&out[14..18], &4u32.to_be_bytes());
        assert_eq!(&out[20..22], &1u16.to_be_bytes());
    }
}
