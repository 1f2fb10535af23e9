//! Kafka's framing: every request and response is a 4-byte big-endian size, then that many
//! bytes. A request starts with its header (API key, API version, correlation id, client id,
//! and tagged fields in flexible versions); a response with the correlation id (and tagged
//! fields in flexible versions, except ApiVersions, whose response header is always v0 so that
//! a client can read the answer to a version it guessed wrong).
//!
//! Everything here is untrusted input: sizes are checked before anything is allocated for
//! them, and a frame that cannot be parsed is an error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a connection's frames cannot be read on; each closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request of {size} bytes exceeds the limit of {max} bytes (kafka_request_bytes_max)")]
    TooLarge { size: usize, max: usize },
    #[error("invalid frame size {0}: a request is 8 bytes or more")]
    BadSize(i32),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("reading from the connection failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The smallest request: API key, API version and correlation id.
const FIXED_HEADER_BYTES: usize = 8;

/// Reads one frame. `Ok(None)`: the client closed the connection between frames.
///
/// # Errors
/// A size out of range (checked before the frame is read, so a client cannot make the node
/// allocate more than `max` bytes), or an I/O error (a frame cut short among them).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut size = [0u8; 4];
    // The first byte tells a clean close from a frame cut short.
    match reader.read(&mut size[..1]).await? {
        0 => return Ok(None),
        _ => reader.read_exact(&mut size[1..]).await?,
    };
    let size = i32::from_be_bytes(size);
    if size < FIXED_HEADER_BYTES as i32 {
        return Err(FrameError::BadSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    // Read into spare capacity: zeroing the buffer first would touch every byte once more.
    let mut frame = BytesMut::with_capacity(size);
    while frame.len() < size {
        let missing = size - frame.len();
        let mut rest = (&mut frame).limit(missing);
        if reader.read_buf(&mut rest).await? == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(Some(frame.freeze()))
}

/// A request's header, and its body still encoded.
#[derive(Debug, Clone)]
pub struct Request {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The body: a slice of the frame.
    pub body: Bytes,
}

impl Request {
    /// Parses a frame's header. An API key this crate does not know leaves the header after
    /// the correlation id unread (the caller refuses the request anyway).
    ///
    /// # Errors
    /// [`FrameError::Malformed`] when the header cannot be decoded.
    pub fn parse(mut frame: Bytes) -> Result<Self, FrameError> {
        if frame.len() < FIXED_HEADER_BYTES {
            return Err(FrameError::Malformed(format!(
                "a request header is at least {FIXED_HEADER_BYTES} bytes, got {}",
                frame.len()
            )));
        }
        let mut fixed = &frame[..FIXED_HEADER_BYTES];
        let api_key = fixed.get_i16();
        let api_version = fixed.get_i16();
        let correlation_id = fixed.get_i32();
        let Ok(known) = ApiKey::try_from(api_key) else {
            frame.advance(FIXED_HEADER_BYTES);
            return Ok(Self {
                api_key,
                api_version,
                correlation_id,
                client_id: None,
                body: frame,
            });
        };
        let header_version = request_header_version(known, api_version);
        let header = RequestHeader::decode(&mut frame, header_version)
            .map_err(|e| FrameError::Malformed(format!("request header: {e}")))?;
        Ok(Self {
            api_key,
            api_version,
            correlation_id,
            client_id: header.client_id.map(|id| id.to_string()),
            body: frame,
        })
    }
}

/// The request header version of `api_key` at `version`. ApiVersions is special: a client
/// may send a version newer than the broker knows, and its header must still be read (v2 from
/// ApiVersions v3 on).
fn request_header_version(api_key: ApiKey, version: i16) -> i16 {
    if api_key == ApiKey::ApiVersions {
        return if version >= 3 { 2 } else { 1 };
    }
    api_key.request_header_version(version)
}

/// The response header version of `api_key` at `version` (always 0 for ApiVersions).
pub fn response_header_version(api_key: ApiKey, version: i16) -> i16 {
    if api_key == ApiKey::ApiVersions {
        return 0;
    }
    api_key.response_header_version(version)
}

/// A whole response frame: size, header (correlation id, and an empty tagged-field section in
/// header v1), then `body` encoded at `version`.
///
/// # Errors
/// The body cannot be encoded at `version` (a field this version cannot carry holds a value):
/// a bug of the handler, which the caller logs before closing the connection.
pub fn response<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, FrameError> {
    let header_version = response_header_version(api_key, version);
    let body_bytes = body.compute_size(version).map_err(|e| {
        FrameError::Malformed(format!("sizing a {api_key:?} v{version} response: {e}"))
    })?;
    let header_bytes = 4 + usize::from(header_version >= 1);
    let mut frame = BytesMut::with_capacity(4 + header_bytes + body_bytes);
    frame.put_i32((header_bytes + body_bytes) as i32);
    frame.put_i32(correlation_id);
    if header_version >= 1 {
        // No tagged fields.
        frame.put_u8(0);
    }
    body.encode(&mut frame, version).map_err(|e| {
        FrameError::Malformed(format!("encoding a {api_key:?} v{version} response: {e}"))
    })?;
    Ok(frame.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_whole_and_sizes_checked_first() {
        let mut input: &[u8] = &[0, 0, 0, 8, 0, 18, 0, 0, 0, 0, 0, 7];
        let frame = read_frame(&mut input, 100).await.unwrap().unwrap();
        assert_eq!(frame.len(), 8);
        assert!(read_frame(&mut input, 100).await.unwrap().is_none());

        let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut huge, 1 << 20).await,
            Err(FrameError::TooLarge { size, .. }) if size == i32::MAX as usize
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut negative, 100).await,
            Err(FrameError::BadSize(-1))
        ));
        let mut cut: &[u8] = &[0, 0, 0, 20, 1, 2];
        assert!(matches!(
            read_frame(&mut cut, 100).await,
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn headers_parse_by_their_version() {
        // Metadata v1 (header v1): key 3, version 1, correlation 7, client id "ab".
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 7, 0, 2, b'a', b'b', 9]);
        let request = Request::parse(frame).unwrap();
        assert_eq!(
            (request.api_key, request.api_version, request.correlation_id),
            (3, 1, 7)
        );
        assert_eq!(request.client_id.as_deref(), Some("ab"));
        assert_eq!(&request.body[..], &[9]);
        // A client id longer than the frame.
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 7, 0, 9, b'a']);
        assert!(matches!(
            Request::parse(frame),
            Err(FrameError::Malformed(_))
        ));
        // An unknown API key keeps the rest as the body.
        let frame = Bytes::from_static(&[0x7f, 0, 0, 1, 0, 0, 0, 7, 1]);
        let request = Request::parse(frame).unwrap();
        assert_eq!((request.api_key, request.body.len()), (0x7f00, 1));
    }
}
