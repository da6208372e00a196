//! The newline-delimited JSON form of the public API, for scripts.
//!
//! A connection whose first byte is `{`, `"` (or ASCII whitespace) speaks JSON: one request per line,
//! one response per line, with the same types as the bincode frames (see the README for the shapes).
//! A `{"hello": {...}}` line is optional; when sent, its protocol version is checked.

use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// True when a connection starting with `byte` speaks JSON rather than frames.
pub fn is_json_start(byte: u8) -> bool {
    byte == b'{' || byte == b'"' || byte.is_ascii_whitespace()
}

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("JSON line longer than {max} bytes")]
    TooLong { max: usize },
    #[error("i/o error on the connection")]
    Io(#[source] std::io::Error),
}

/// Reads one line (without its `\n`) of at most `max` bytes; `None` at end of stream.
///
/// A longer line is an error without buffering more than `max` bytes of it.
pub async fn read_line(
    r: &mut (impl AsyncBufRead + Unpin),
    max: usize,
) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await.map_err(LineError::Io)?;
        if buf.is_empty() {
            return Ok(if line.is_empty() { None } else { Some(line) });
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if line.len() + chunk.len() > max {
            return Err(LineError::TooLong { max });
        }
        line.extend_from_slice(chunk);
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some(line));
        }
    }
}

/// Serialises one response as a JSON line (with its `\n`).
pub fn to_line<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising our own plain data types to JSON cannot fail (string keys, no non-finite floats
    // except in user-chosen temperatures, which serde_json writes as null).
    let mut out = serde_json::to_vec(msg).unwrap_or_else(|e| {
        format!(
            "{{\"error\":{{\"kind\":\"internal\",\"message\":\"cannot encode response: {e}\"}}}}"
        )
        .into_bytes()
    });
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiRequest, ApiResponse, ErrorBody, ErrorKind, RunRequest};

    #[test]
    fn json_shapes_are_stable() {
        let r: ApiRequest = serde_json::from_str(r#"{"run":{"agent":"a","input":"hi"}}"#).unwrap();
        assert_eq!(
            r,
            ApiRequest::Run(RunRequest {
                agent: "a".into(),
                input: "hi".into(),
                vars: Default::default(),
                timeout_ms: None,
                stream: false,
                record: false,
                replay: None,
                hide_children: false,
                conversation: None,
                capability: None,
                strategy: None,
                traceparent: None,
            })
        );
        let r: ApiRequest = serde_json::from_str(r#""status""#).unwrap();
        assert_eq!(r, ApiRequest::Status);
        let line = to_line(&ApiResponse::Error(ErrorBody::new(ErrorKind::Busy, "busy")));
        assert_eq!(
            line,
            b"{\"error\":{\"kind\":\"busy\",\"message\":\"busy\"}}\n"
        );
    }

    #[tokio::test]
    async fn long_lines_are_refused() {
        let data = [b'x'; 100];
        let mut r = tokio::io::BufReader::with_capacity(16, &data[..]);
        assert!(matches!(
            read_line(&mut r, 50).await,
            Err(LineError::TooLong { max: 50 })
        ));
        let mut r = tokio::io::BufReader::with_capacity(16, &b"ab\ncd"[..]);
        assert_eq!(read_line(&mut r, 50).await.unwrap().unwrap(), b"ab");
        assert_eq!(read_line(&mut r, 50).await.unwrap().unwrap(), b"cd");
        assert!(read_line(&mut r, 50).await.unwrap().is_none());
    }
}
