//! The frame format (version 2): a fixed 12-byte header (magic, protocol version, flags, body
//! length), an optional W3C trace context, and a bincode payload, with sync and async readers
//! that check the length before allocating and bound every decode by the frame's size.
//!
//! ```text
//! offset 0  4 bytes  magic  b"CXTN"
//! offset 4  2 bytes  protocol version, big endian (2)
//! offset 6  2 bytes  flags, big endian: bit 0 = a trace context follows; other bits must be 0
//! offset 8  4 bytes  body length, big endian (at most the reader's maximum)
//! offset 12 ...      body: [if bit 0: u16 BE length n (≤ 1024), then n bytes of W3C trace
//!                    context text: `traceparent` value, optionally `;` and `tracestate`]
//!                    then the payload: bincode 2 (standard config) of the message
//! ```
//!
//! Version 1 had no flags (the word was reserved, zero) and no context; a v1 peer gets the
//! version-mismatch error, never a decode failure.

use std::io::{self, Read, Write};

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"CXTN";
/// Version of the wire protocol; bump on any incompatible change to a type in this crate.
pub const PROTOCOL_VERSION: u16 = 2;
/// Header flag: a trace context precedes the payload.
pub const FLAG_TRACE_CONTEXT: u16 = 0x0001;
/// Longest trace context a frame may carry.
pub const MAX_TRACE_CONTEXT: usize = 1024;
/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 12;
/// Largest payload any Caxton process accepts by default (8 MiB). Checked before allocating.
pub const MAX_FRAME_LEN: u32 = 8 * 1024 * 1024;
/// What a payload of up to this size may make the decoder allocate from declared lengths.
pub const SMALL_DECODE_LIMIT: usize = 128 * 1024;

/// What can go wrong reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The buffer holds only part of a frame; `needed` more bytes are required at least.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete { needed: usize },
    /// The peer closed the connection cleanly at a frame boundary.
    #[error("connection closed by peer")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    /// The announced payload is larger than this reader accepts.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u32, max: u32 },
    /// The first bytes are not a Caxton frame.
    #[error(
        "bad frame magic {found:02x?} (expected {MAGIC:02x?}): the peer does not speak the Caxton protocol"
    )]
    BadMagic { found: [u8; 4] },
    /// The peer speaks another protocol version.
    #[error(
        "protocol version mismatch: this side speaks v{ours}, the peer speaks v{theirs}; run matching Caxton binaries"
    )]
    VersionMismatch { ours: u16, theirs: u16 },
    /// The payload is not a valid message of the expected type.
    #[error("malformed frame payload")]
    Decode(#[source] bincode::error::DecodeError),
    /// The message could not be encoded.
    #[error("cannot encode message")]
    Encode(#[source] bincode::error::EncodeError),
    /// The message is too large to send.
    #[error("message of {len} bytes exceeds the {max}-byte frame limit")]
    MessageTooLarge { len: usize, max: u32 },
    /// The header sets flags this side does not know.
    #[error("unknown frame flags {flags:#06x}: the peer is newer than this side")]
    UnknownFlags { flags: u16 },
    /// The trace context is malformed (too long, not printable ASCII, or past the body).
    #[error("malformed trace context in the frame: {0}")]
    BadTraceContext(&'static str),
    /// Reading or writing the stream failed.
    #[error("i/o error on the connection")]
    Io(#[source] io::Error),
}

/// A W3C trace context carried in a frame: the `traceparent` value, optionally followed by `;`
/// and the `tracestate` value. Printable ASCII, at most [`MAX_TRACE_CONTEXT`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext(String);

impl TraceContext {
    /// Checks and wraps a context.
    pub fn new(text: impl Into<String>) -> Result<TraceContext, FrameError> {
        let text = text.into();
        if text.len() > MAX_TRACE_CONTEXT {
            return Err(FrameError::BadTraceContext("longer than 1024 bytes"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(FrameError::BadTraceContext("not printable ASCII"));
        }
        Ok(TraceContext(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A received message and the trace context its frame carried, if any.
#[derive(Debug)]
pub struct Frame<T> {
    pub msg: T,
    pub trace: Option<TraceContext>,
}

impl FrameError {
    /// True when the peer simply went away (clean close, truncation, reset or broken pipe).
    pub fn is_disconnect(&self) -> bool {
        match self {
            FrameError::Closed | FrameError::Truncated { .. } => true,
            FrameError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub flags: u16,
    /// Length of the body (trace context and payload).
    pub len: u32,
}

impl Header {
    /// Parses and checks a header: magic first, then version, then the length against `max`.
    pub fn parse(bytes: &[u8; HEADER_LEN], max: u32) -> Result<Header, FrameError> {
        let mut found = [0u8; 4];
        found.copy_from_slice(&bytes[0..4]);
        if found != MAGIC {
            return Err(FrameError::BadMagic { found });
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version != PROTOCOL_VERSION {
            return Err(FrameError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        let flags = u16::from_be_bytes([bytes[6], bytes[7]]);
        if flags & !FLAG_TRACE_CONTEXT != 0 {
            return Err(FrameError::UnknownFlags { flags });
        }
        let len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if len > max {
            return Err(FrameError::TooLarge { len, max });
        }
        Ok(Header {
            version,
            flags,
            len,
        })
    }

    fn encode(flags: u16, len: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        h[6..8].copy_from_slice(&flags.to_be_bytes());
        h[8..12].copy_from_slice(&len.to_be_bytes());
        h
    }
}

/// Encodes `msg` as one complete frame (header and payload), without a trace context.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    encode_traced(msg, None)
}

/// Encodes `msg` as one complete frame carrying `trace`, if given.
pub fn encode_traced<T: Serialize>(
    msg: &T,
    trace: Option<&TraceContext>,
) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER_LEN];
    let mut flags = 0;
    if let Some(t) = trace {
        flags |= FLAG_TRACE_CONTEXT;
        // At most MAX_TRACE_CONTEXT (1024) bytes, checked by TraceContext::new.
        out.extend_from_slice(&(t.0.len() as u16).to_be_bytes());
        out.extend_from_slice(t.0.as_bytes());
    }
    bincode::serde::encode_into_std_write(msg, &mut out, config()).map_err(FrameError::Encode)?;
    let len = out.len() - HEADER_LEN;
    let len32 = u32::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_FRAME_LEN)
        .ok_or(FrameError::MessageTooLarge {
            len,
            max: MAX_FRAME_LEN,
        })?;
    out[..HEADER_LEN].copy_from_slice(&Header::encode(flags, len32));
    Ok(out)
}

/// Decodes one frame from the front of `buf`, returning the message and the bytes consumed.
///
/// Tells "not enough bytes yet" ([`FrameError::Incomplete`]) from "bad bytes" (every other error),
/// so a caller with its own buffer can wait for more data on the first and drop the peer on the rest.
pub fn decode<T: DeserializeOwned>(buf: &[u8], max: u32) -> Result<(T, usize), FrameError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        // Check the magic early so garbage is rejected without waiting for 12 bytes.
        let n = buf.len().min(4);
        if buf[..n] != MAGIC[..n] {
            let mut found = [0u8; 4];
            found[..n].copy_from_slice(&buf[..n]);
            return Err(FrameError::BadMagic { found });
        }
        return Err(FrameError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let header = Header::parse(head, max)?;
    let total = HEADER_LEN + header.len as usize;
    if buf.len() < total {
        return Err(FrameError::Incomplete {
            needed: total - buf.len(),
        });
    }
    let frame = decode_body(header, &buf[HEADER_LEN..total])?;
    Ok((frame.msg, total))
}

/// Splits a body into its trace context (when the header says there is one) and decodes the
/// payload after it.
fn decode_body<T: DeserializeOwned>(header: Header, body: &[u8]) -> Result<Frame<T>, FrameError> {
    if header.flags & FLAG_TRACE_CONTEXT == 0 {
        return Ok(Frame {
            msg: decode_payload(body)?,
            trace: None,
        });
    }
    let Some((len, rest)) = body.split_first_chunk::<2>() else {
        return Err(FrameError::BadTraceContext(
            "the body ends before its length",
        ));
    };
    let n = u16::from_be_bytes(*len) as usize;
    if n > MAX_TRACE_CONTEXT {
        return Err(FrameError::BadTraceContext("longer than 1024 bytes"));
    }
    if rest.len() < n {
        return Err(FrameError::BadTraceContext("longer than the frame"));
    }
    let (text, payload) = rest.split_at(n);
    let text = std::str::from_utf8(text)
        .map_err(|_| FrameError::BadTraceContext("not printable ASCII"))?;
    Ok(Frame {
        trace: Some(TraceContext::new(text)?),
        msg: decode_payload(payload)?,
    })
}

/// Decodes with bincode's allocation limit set to the smallest bucket that holds `payload`.
///
/// bincode allocates a string or byte vector at the length the payload declares before reading
/// it, so without a limit eleven bytes can ask for 2^62 bytes and abort the process. With the
/// serde front end, strings and byte vectors are the only containers allocated from a declared
/// length (sequences and maps pre-allocate through serde's cautious size hint, at most 1 MiB),
/// and their bytes must be in the payload, so a limit at least the payload's length never refuses
/// a real message while bounding what a forged one can claim. The limit is a const generic, hence
/// a few buckets rather than the exact length: a frame can make the reader allocate at most
/// [`SMALL_DECODE_LIMIT`] or 8 times its own length, whichever is larger.
fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    const MEDIUM: usize = 1024 * 1024;
    const LARGE: usize = MAX_FRAME_LEN as usize;
    let decoded = match payload.len() {
        n if n <= SMALL_DECODE_LIMIT => {
            bincode::serde::decode_from_slice(payload, config().with_limit::<SMALL_DECODE_LIMIT>())
        }
        n if n <= MEDIUM => {
            bincode::serde::decode_from_slice(payload, config().with_limit::<MEDIUM>())
        }
        _ => bincode::serde::decode_from_slice(payload, config().with_limit::<LARGE>()),
    };
    let (msg, used) = decoded.map_err(FrameError::Decode)?;
    if used != payload.len() {
        return Err(FrameError::Decode(
            bincode::error::DecodeError::OtherString(format!(
                "{} trailing bytes after the message",
                payload.len() - used
            )),
        ));
    }
    Ok(msg)
}

/// Fills `buf` from `r`, telling a clean close before the first byte from a truncation.
fn read_exact_or_close(
    r: &mut impl Read,
    buf: &mut [u8],
    at_boundary: bool,
) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        got += counted(r.read(&mut buf[got..]), got, buf.len(), at_boundary)?;
    }
    Ok(())
}

/// What one read into a frame's buffer of `len` bytes (`got` filled) adds: its bytes, 0 when it
/// was interrupted, or the error that ends the frame (a clean close before its first byte, a
/// truncation, an I/O error).
fn counted(
    read: io::Result<usize>,
    got: usize,
    len: usize,
    at_boundary: bool,
) -> Result<usize, FrameError> {
    match read {
        Ok(0) if got == 0 && at_boundary => Err(FrameError::Closed),
        Ok(0) => Err(FrameError::Truncated { got, expected: len }),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(FrameError::Io(e)),
    }
}

/// Reads one frame from a blocking stream (its trace context, if any, is dropped).
pub fn read_sync<T: DeserializeOwned>(r: &mut impl Read, max: u32) -> Result<T, FrameError> {
    read_traced_sync(r, max).map(|f| f.msg)
}

/// Reads one frame from a blocking stream, with its trace context.
pub fn read_traced_sync<T: DeserializeOwned>(
    r: &mut impl Read,
    max: u32,
) -> Result<Frame<T>, FrameError> {
    let mut head = [0u8; HEADER_LEN];
    read_exact_or_close(r, &mut head, true)?;
    let header = Header::parse(&head, max)?;
    let mut body = vec![0u8; header.len as usize];
    read_exact_or_close(r, &mut body, false)?;
    decode_body(header, &body)
}

/// Writes one frame to a blocking stream and flushes it.
pub fn write_sync<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    write_traced_sync(w, msg, None)
}

/// Writes one frame carrying `trace` to a blocking stream and flushes it.
pub fn write_traced_sync<T: Serialize>(
    w: &mut impl Write,
    msg: &T,
    trace: Option<&TraceContext>,
) -> Result<(), FrameError> {
    let bytes = encode_traced(msg, trace)?;
    w.write_all(&bytes).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

async fn read_exact_or_close_async(
    r: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
    at_boundary: bool,
) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        got += counted(r.read(&mut buf[got..]).await, got, buf.len(), at_boundary)?;
    }
    Ok(())
}

/// Reads one frame from an async stream (its trace context, if any, is dropped).
pub async fn read_async<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
    max: u32,
) -> Result<T, FrameError> {
    read_traced_async(r, max).await.map(|f| f.msg)
}

/// Reads one frame from an async stream, with its trace context.
pub async fn read_traced_async<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
    max: u32,
) -> Result<Frame<T>, FrameError> {
    let mut head = [0u8; HEADER_LEN];
    read_exact_or_close_async(r, &mut head, true).await?;
    let header = Header::parse(&head, max)?;
    let mut body = vec![0u8; header.len as usize];
    read_exact_or_close_async(r, &mut body, false).await?;
    decode_body(header, &body)
}

/// Writes one frame to an async stream and flushes it.
pub async fn write_async<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    msg: &T,
) -> Result<(), FrameError> {
    write_traced_async(w, msg, None).await
}

/// Writes one frame carrying `trace` to an async stream and flushes it.
pub async fn write_traced_async<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    msg: &T,
    trace: Option<&TraceContext>,
) -> Result<(), FrameError> {
    let bytes = encode_traced(msg, trace)?;
    w.write_all(&bytes).await.map_err(FrameError::Io)?;
    w.flush().await.map_err(FrameError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{Hello, Role};

    #[test]
    fn golden_bytes_of_a_hello_frame() {
        let hello = Hello {
            role: Role::Cli,
            protocol: PROTOCOL_VERSION,
            software: "t".into(),
            pid: 7,
        };
        let bytes = encode(&hello).unwrap();
        // header: magic, v2, no flags, len=5; payload: role variant 0, protocol 2, "t", pid 7.
        assert_eq!(
            bytes,
            [
                b'C', b'X', b'T', b'N', 0, 2, 0, 0, 0, 0, 0, 5, 0, 2, 1, b't', 7
            ]
        );
        let (back, used): (Hello, usize) = decode(&bytes, MAX_FRAME_LEN).unwrap();
        assert_eq!(back, hello);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn golden_bytes_of_a_run_request() {
        use crate::api::{ApiRequest, RunRequest};
        let req = ApiRequest::Run(RunRequest {
            agent: "a".into(),
            input: "hi".into(),
            vars: [("k".to_string(), "v".to_string())].into(),
            timeout_ms: Some(300),
            stream: false,
            record: false,
            replay: None,
            hide_children: false,
            conversation: None,
            capability: None,
            strategy: None,
            traceparent: None,
        });
        let bytes = encode(&req).unwrap();
        assert_eq!(
            &bytes[HEADER_LEN..],
            // variant 0 (Run), "a", "hi", map len 1, "k", "v", Some, 300 as varint (251 + u16 LE),
            // stream false, record false, replay None, hide_children false, conversation None,
            // capability None, strategy None, traceparent None
            &[
                0, 1, b'a', 2, b'h', b'i', 1, 1, b'k', 1, b'v', 1, 251, 44, 1, 0, 0, 0, 0, 0, 0, 0,
                0
            ]
        );
    }

    #[test]
    fn incomplete_is_told_apart_from_garbage() {
        let bytes = encode(&"hello".to_string()).unwrap();
        for cut in 1..bytes.len() {
            match decode::<String>(&bytes[..cut], MAX_FRAME_LEN) {
                Err(FrameError::Incomplete { needed }) => assert!(needed > 0),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert!(matches!(
            decode::<String>(b"GET / HTTP/1.1\r\n", MAX_FRAME_LEN),
            Err(FrameError::BadMagic { .. })
        ));
        assert!(matches!(
            decode::<String>(b"G", MAX_FRAME_LEN),
            Err(FrameError::BadMagic { .. })
        ));
    }

    #[test]
    fn huge_length_is_rejected_before_allocating() {
        let mut head = Header::encode(0, u32::MAX);
        head[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        let err = read_sync::<String>(&mut &head[..], MAX_FRAME_LEN).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len: u32::MAX, .. }),
            "{err:?}"
        );
    }

    /// The frame a hostile probe used to abort `caxton serve`: a Hello whose `software` string
    /// declares 2^62 bytes. Decoding must fail cleanly instead of trying to allocate them.
    #[test]
    fn a_declared_length_beyond_the_payload_is_refused_without_allocating() {
        let mut payload = vec![0u8, 1, 0xfd];
        payload.extend_from_slice(&(1u64 << 62).to_le_bytes());
        payload.push(0);
        let mut bytes = Header::encode(0, payload.len() as u32).to_vec();
        bytes.extend_from_slice(&payload);
        let err = decode::<Hello>(&bytes, MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
        // The same for every bucket: a length just over what the payload could hold.
        for size in [100usize, 200_000, 2_000_000] {
            let text = "x".repeat(size);
            let good = encode(&text).unwrap();
            let (back, _): (String, usize) = decode(&good, MAX_FRAME_LEN).unwrap();
            assert_eq!(back.len(), size);
            let mut payload = vec![0xfdu8];
            payload.extend_from_slice(&(usize::MAX as u64 / 2).to_le_bytes());
            payload.resize(size, b'x');
            let mut bad = Header::encode(0, payload.len() as u32).to_vec();
            bad.extend_from_slice(&payload);
            assert!(matches!(
                decode::<String>(&bad, MAX_FRAME_LEN),
                Err(FrameError::Decode(_))
            ));
        }
    }

    #[test]
    fn golden_bytes_of_a_frame_with_a_trace_context() {
        let ctx =
            TraceContext::new("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let bytes = encode_traced(&1u8, Some(&ctx)).unwrap();
        let mut expected = vec![b'C', b'X', b'T', b'N', 0, 2, 0, 1, 0, 0, 0, 58, 0, 55];
        expected.extend_from_slice(ctx.as_str().as_bytes());
        expected.push(1);
        assert_eq!(bytes, expected);
        let frame: Frame<u8> = read_traced_sync(&mut &bytes[..], MAX_FRAME_LEN).unwrap();
        assert_eq!((frame.msg, frame.trace), (1, Some(ctx)));
        // Readers that do not care get the message alone.
        assert_eq!(
            decode::<u8>(&bytes, MAX_FRAME_LEN).unwrap(),
            (1, bytes.len())
        );
    }

    #[test]
    fn malformed_contexts_and_unknown_flags_are_refused() {
        let ctx = TraceContext::new("00-ab-cd-01").unwrap();
        let good = encode_traced(&7u8, Some(&ctx)).unwrap();
        // A context length past the body.
        let mut bad = good.clone();
        bad[13] = 200;
        assert!(matches!(
            decode::<u8>(&bad, MAX_FRAME_LEN),
            Err(FrameError::BadTraceContext(_))
        ));
        // A flag nobody defined.
        let mut bad = good.clone();
        bad[7] = 0x03;
        assert!(matches!(
            decode::<u8>(&bad, MAX_FRAME_LEN),
            Err(FrameError::UnknownFlags { flags: 3 })
        ));
        assert!(TraceContext::new("x".repeat(2000)).is_err());
        assert!(TraceContext::new("a\nb").is_err());
    }

    #[test]
    fn a_version_1_peer_gets_the_version_error_not_a_decode_failure() {
        // What a v1 CLI sends: its Hello with the v1 header.
        let v1 = [
            b'C', b'X', b'T', b'N', 0, 1, 0, 0, 0, 0, 0, 5, 0, 1, 1, b't', 7,
        ];
        let err = decode::<Hello>(&v1, MAX_FRAME_LEN).unwrap_err();
        assert!(
            matches!(err, FrameError::VersionMismatch { ours: 2, theirs: 1 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("the peer speaks v1"), "{err}");
    }

    #[test]
    fn version_mismatch_is_named() {
        let mut bytes = encode(&1u8).unwrap();
        bytes[5] = 9;
        let err = read_sync::<u8>(&mut &bytes[..], MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(
            err,
            FrameError::VersionMismatch { ours: 2, theirs: 9 }
        ));
        assert!(err.to_string().contains("v9"));
    }

    #[test]
    fn truncated_and_closed_are_distinct() {
        let bytes = encode(&"abc".to_string()).unwrap();
        let err = read_sync::<String>(&mut &bytes[..bytes.len() - 1], MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { .. }));
        let err = read_sync::<String>(&mut &[][..], MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, FrameError::Closed));
    }

    #[test]
    fn trailing_bytes_are_a_decode_error() {
        let mut bytes = encode(&1u8).unwrap();
        bytes.push(0);
        bytes[11] = 2;
        assert!(matches!(
            decode::<u8>(&bytes, MAX_FRAME_LEN),
            Err(FrameError::Decode(_))
        ));
    }

    #[tokio::test]
    async fn async_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(64);
        write_async(&mut a, &vec![1u32, 2, 3]).await.unwrap();
        let v: Vec<u32> = read_async(&mut b, MAX_FRAME_LEN).await.unwrap();
        assert_eq!(v, vec![1, 2, 3]);
        drop(a);
        assert!(matches!(
            read_async::<u8>(&mut b, MAX_FRAME_LEN).await,
            Err(FrameError::Closed)
        ));
    }
}
