//! Framing of the Aerospike wire protocol. Every message in both directions is an 8-byte "proto"
//! header (version 2, a message type, a 48-bit body length) followed by the body. This module only
//! cuts and builds frames; what a body means belongs to `info.rs` and `message.rs`. It must never
//! trust a length it has not bounded: a corrupt header must close the connection, not allocate
//! gigabytes.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The only protocol version Aerospike has ever spoken on the client port.
pub(crate) const PROTO_VERSION: u8 = 2;
/// Body is an info request or answer: newline-separated text.
pub(crate) const TYPE_INFO: u8 = 1;
/// Body is a security (login/admin) command; this server runs without security.
pub(crate) const TYPE_ADMIN: u8 = 2;
/// Body is an AS_MSG: a record command or its reply.
pub(crate) const TYPE_MESSAGE: u8 = 3;
/// Body is a zlib-compressed AS_MSG.
pub(crate) const TYPE_COMPRESSED: u8 = 4;

/// The largest body the server reads. Real servers accept up to 128 MiB on the client port; the
/// record-size limit, not this, is what rejects large records.
pub(crate) const MAX_BODY: u64 = 128 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed by the client")]
    Closed,
    /// The socket failed, or closed in the middle of a frame.
    #[error("reading a frame: {0}")]
    Io(#[from] std::io::Error),
    /// The header names a protocol version other than 2.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// The header announces a body larger than [`MAX_BODY`].
    #[error("a frame of {0} bytes is larger than the server accepts")]
    TooLarge(u64),
}

/// One frame as read from a client.
#[derive(Debug)]
pub(crate) struct Frame {
    /// The message type (`TYPE_*`).
    pub(crate) kind: u8,
    /// The body, without the proto header.
    pub(crate) body: Vec<u8>,
}

/// Reads one frame. A clean end of stream before the first header byte is [`FrameError::Closed`].
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Frame, FrameError> {
    let mut header = [0u8; 8];
    let first = reader.read(&mut header).await?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    reader.read_exact(&mut header[first..]).await?;
    let (version, kind, len) = split_header(header);
    if version != PROTO_VERSION {
        return Err(FrameError::Version(version));
    }
    if len > MAX_BODY {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; usize::try_from(len).map_err(|_| FrameError::TooLarge(len))?];
    reader.read_exact(&mut body).await?;
    Ok(Frame { kind, body })
}

/// Splits a proto header into version, type and body length.
pub(crate) fn split_header(header: [u8; 8]) -> (u8, u8, u64) {
    let word = u64::from_be_bytes(header);
    (header[0], header[1], word & 0x0000_FFFF_FFFF_FFFF)
}

/// The proto header for a body of `len` bytes of type `kind`.
pub(crate) fn header(kind: u8, len: usize) -> [u8; 8] {
    let len = (len as u64) & 0x0000_FFFF_FFFF_FFFF;
    let word = (u64::from(PROTO_VERSION) << 56) | (u64::from(kind) << 48) | len;
    word.to_be_bytes()
}

/// Appends a whole frame (header and body) to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.extend_from_slice(&header(kind, body.len()));
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let bytes = header(TYPE_MESSAGE, 0x0102_0304);
        assert_eq!(bytes[0], 2);
        assert_eq!(bytes[1], 3);
        assert_eq!(split_header(bytes), (2, 3, 0x0102_0304));
    }

    #[tokio::test]
    async fn reads_a_frame_and_reports_a_clean_close() {
        let mut wire = Vec::new();
        push_frame(&mut wire, TYPE_INFO, b"node\n");
        let mut reader = wire.as_slice();
        let frame = read_frame(&mut reader).await.unwrap();
        assert_eq!(frame.kind, TYPE_INFO);
        assert_eq!(frame.body, b"node\n");
        assert!(matches!(
            read_frame(&mut reader).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn rejects_foreign_versions_and_huge_bodies() {
        let mut wire = header(TYPE_INFO, 1).to_vec();
        wire[0] = 1;
        assert!(matches!(
            read_frame(&mut wire.as_slice()).await,
            Err(FrameError::Version(1))
        ));
        let huge = header(TYPE_MESSAGE, (MAX_BODY + 1) as usize);
        assert!(matches!(
            read_frame(&mut huge.as_slice()).await,
            Err(FrameError::TooLarge(_))
        ));
    }
}
