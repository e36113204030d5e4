//! Batch commands as the `aerospike` crate sends them (the "batch index" protocol of servers 6.0
//! and later): one AS_MSG whose batch-index field holds rows of (index, digest, row header, fields,
//! operations), where a row may repeat the previous row's header. Each row becomes an ordinary
//! record command for `execute.rs`; the answer is a stream of per-row messages carrying the row
//! index, closed by a message marked last.

use std::sync::atomic::Ordering;

use crate::aerospike::execute::execute;
use crate::aerospike::message::{
    HEADER_SIZE, Header, INFO3_LAST, MessageError, Reader, Reply, Request, ResultCode,
    encode_reply, read_fields, read_ops,
};
use crate::aerospike::node::Node;
use crate::aerospike::proto::{TYPE_MESSAGE, push_frame};

/// Row type: repeat the previous row's header, fields and operations.
const ROW_REPEAT: u8 = 0x1;
/// Row type flag: read, write and info attributes follow.
const ROW_INFO: u8 = 0x2;
/// Row type flag: a 16-bit generation follows.
const ROW_GEN: u8 = 0x4;
/// Row type flag: a 32-bit TTL follows.
const ROW_TTL: u8 = 0x8;
/// Row type flag: the info4 (transaction) attribute follows.
const ROW_INFO4: u8 = 0x10;

/// Answers flush into a new proto frame once this many bytes are pending.
const FRAME_TARGET: usize = 128 * 1024;

/// One row of a batch: its index in the client's list and the command it stands for.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) index: u32,
    pub(crate) request: Request,
}

/// Parses the batch-index field of a batch command into rows.
pub(crate) fn parse_rows(field: &[u8]) -> Result<Vec<Row>, MessageError> {
    let mut reader = Reader::new(field);
    let count = reader.u32("batch row count")?;
    let _flags = reader.u8("batch flags")?;
    let mut rows: Vec<Row> = Vec::with_capacity(count.min(10_000) as usize);
    for _ in 0..count {
        let index = reader.u32("batch row index")?;
        let digest: [u8; 20] = reader
            .bytes(20, "batch row digest")?
            .try_into()
            .map_err(|_| MessageError::BadDigest(0))?;
        let kind = reader.u8("batch row type")?;
        let mut request = if kind == ROW_REPEAT {
            match rows.last() {
                Some(previous) => previous.request.clone(),
                None => return Err(MessageError::BadSize("a repeat row without a predecessor")),
            }
        } else {
            parse_row_body(&mut reader, kind)?
        };
        request.digest = Some(digest);
        rows.push(Row { index, request });
    }
    Ok(rows)
}

/// Parses a row's own header, fields and operations.
fn parse_row_body(reader: &mut Reader<'_>, kind: u8) -> Result<Request, MessageError> {
    let mut header = Header::default();
    if kind & ROW_INFO != 0 {
        header.info1 = reader.u8("batch row read attributes")?;
        header.info2 = reader.u8("batch row write attributes")?;
        header.info3 = reader.u8("batch row info attributes")?;
    } else {
        // The original batch-read row (type 0) carries only read attributes.
        header.info1 = reader.u8("batch row read attributes")?;
    }
    if kind & ROW_INFO4 != 0 {
        header.info4 = reader.u8("batch row transaction attributes")?;
    }
    if kind & ROW_GEN != 0 {
        header.generation = u32::from(reader.u16("batch row generation")?);
    }
    if kind & ROW_TTL != 0 {
        header.record_ttl = reader.u32("batch row ttl")?;
    }
    header.n_fields = reader.u16("batch row field count")?;
    header.n_ops = reader.u16("batch row operation count")?;
    let mut request = Request {
        header,
        ..Request::default()
    };
    read_fields(reader, header.n_fields, &mut request)?;
    request.ops = read_ops(reader, header.n_ops)?;
    Ok(request)
}

/// Runs a batch command and returns the complete answer: proto frames of per-row messages, the
/// last of them an empty message marked last.
pub(crate) fn answer(node: &Node, batch: &Request) -> Vec<u8> {
    node.batches.fetch_add(1, Ordering::Relaxed);
    let Some(field) = batch.batch.as_deref() else {
        return error_answer(ResultCode::ParameterError);
    };
    let rows = match parse_rows(field) {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(node = %node.identity.name, %error, "malformed batch command");
            return error_answer(ResultCode::ParameterError);
        }
    };
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for row in &rows {
        let mut request = row.request.clone();
        if batch.has_filter {
            request.has_filter = true;
        }
        let reply = execute(node, &request);
        encode_reply(&mut pending, &reply, 0, row.index);
        if pending.len() >= FRAME_TARGET {
            push_frame(&mut out, TYPE_MESSAGE, &pending);
            pending.clear();
        }
    }
    encode_reply(&mut pending, &Reply::code(ResultCode::Ok), INFO3_LAST, 0);
    push_frame(&mut out, TYPE_MESSAGE, &pending);
    out
}

/// A whole-batch failure: a single message marked last carrying `code`.
pub(crate) fn error_answer(code: ResultCode) -> Vec<u8> {
    let mut body = Vec::with_capacity(HEADER_SIZE);
    encode_reply(&mut body, &Reply::code(code), INFO3_LAST, 0);
    let mut out = Vec::new();
    push_frame(&mut out, TYPE_MESSAGE, &body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aerospike::message::{FIELD_NAMESPACE, FIELD_SET, INFO1_GET_ALL, INFO1_READ};

    fn row_prefix(out: &mut Vec<u8>, index: u32, digest: u8) {
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&[digest; 20]);
    }

    #[test]
    fn parses_full_and_repeated_rows() {
        let mut field = Vec::new();
        field.extend_from_slice(&2u32.to_be_bytes());
        field.push(0x8);
        row_prefix(&mut field, 0, 1);
        field.push(ROW_INFO | ROW_TTL);
        field.extend_from_slice(&[INFO1_READ | INFO1_GET_ALL, 0, 0]);
        field.extend_from_slice(&0u32.to_be_bytes());
        field.extend_from_slice(&2u16.to_be_bytes());
        field.extend_from_slice(&0u16.to_be_bytes());
        for (kind, data) in [
            (FIELD_NAMESPACE, b"test".as_slice()),
            (FIELD_SET, b"s".as_slice()),
        ] {
            field.extend_from_slice(&(data.len() as u32 + 1).to_be_bytes());
            field.push(kind);
            field.extend_from_slice(data);
        }
        row_prefix(&mut field, 1, 2);
        field.push(ROW_REPEAT);

        let rows = parse_rows(&field).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].index, 1);
        assert_eq!(rows[1].request.digest, Some([2u8; 20]));
        assert_eq!(rows[1].request.namespace, "test");
        assert_eq!(rows[1].request.header.info1, INFO1_READ | INFO1_GET_ALL);
    }

    #[test]
    fn a_repeat_row_needs_a_predecessor() {
        let mut field = Vec::new();
        field.extend_from_slice(&1u32.to_be_bytes());
        field.push(0);
        row_prefix(&mut field, 0, 1);
        field.push(ROW_REPEAT);
        assert!(parse_rows(&field).is_err());
    }
}
