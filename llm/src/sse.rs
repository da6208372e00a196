//! Server-sent events (the WHATWG `text/event-stream` format), as both provider kinds stream.
//!
//! [`Decoder`] is a pure, byte-exact parser: it takes the body in whatever pieces the network
//! delivers (a line, an event, even a UTF-8 character may be split between two pieces) and yields
//! complete events. [`EventStream`] drives it from a `reqwest` response. An event larger than the
//! decoder's cap is an error rather than unbounded buffering: a provider never sends one that big,
//! so it is a broken or hostile server.

use std::collections::VecDeque;

use super::AttemptError;

/// Largest single event accepted by [`EventStream`].
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; empty when the server named none (the spec's default "message").
    pub name: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Why the bytes are not a usable event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the event stream is not UTF-8: {excerpt}")]
    NotUtf8 { excerpt: String },
}

/// Incremental event-stream parser.
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    /// Bytes of the line being received (no terminator yet).
    line: Vec<u8>,
    /// The previous piece ended in `\r`: a `\n` at the start of the next one belongs to it.
    after_cr: bool,
    /// At the very start of the stream, where a byte-order mark is skipped.
    at_start: bool,
    name: String,
    data: String,
    has_data: bool,
}

impl Decoder {
    /// A decoder refusing events (and lines) over `max` bytes.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            max,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            name: String::new(),
            data: String::new(),
            has_data: false,
        }
    }

    /// Feeds the next piece of the body; returns the events it completed, in order.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut events = Vec::new();
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..end]);
            self.check_size()?;
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&line)? {
                events.push(event);
            }
            let cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(bytes);
        self.check_size()?;
        Ok(events)
    }

    fn check_size(&self) -> Result<(), SseError> {
        if self.line.len() + self.data.len() > self.max {
            return Err(SseError::TooLarge { max: self.max });
        }
        Ok(())
    }

    /// Applies one complete line; a blank line dispatches the event gathered so far.
    fn process_line(&mut self, mut line: &[u8]) -> Result<Option<Event>, SseError> {
        if std::mem::take(&mut self.at_start) {
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8 {
            excerpt: super::http::excerpt(&String::from_utf8_lossy(line)),
        })?;
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                self.check_size()?;
            }
            "event" => self.name = value.to_string(),
            // `id` and `retry` serve reconnection, which a chat completion never does.
            _ => {}
        }
        Ok(None)
    }

    /// Ends the current event. Per the spec, an event without `data` is not dispatched.
    fn dispatch(&mut self) -> Option<Event> {
        let name = std::mem::take(&mut self.name);
        let data = std::mem::take(&mut self.data);
        std::mem::take(&mut self.has_data).then_some(Event { name, data })
    }
}

/// The events of a streaming response, read as they arrive.
pub struct EventStream {
    response: reqwest::Response,
    decoder: Decoder,
    ready: VecDeque<Event>,
    /// The first bytes of the body, to quote when it turns out not to be an event stream.
    head: Vec<u8>,
    /// Bytes received so far (for "cut off after N bytes" messages).
    pub received: usize,
}

/// How much of the body's start [`EventStream::head`] keeps.
const HEAD_BYTES: usize = 512;

impl EventStream {
    pub fn new(response: reqwest::Response) -> EventStream {
        EventStream {
            response,
            decoder: Decoder::new(MAX_EVENT_BYTES),
            ready: VecDeque::new(),
            head: Vec::new(),
            received: 0,
        }
    }

    /// The start of the body, as text.
    pub fn head(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// Whether the body so far begins like an event stream (or is empty): tells a stream cut
    /// before its first event from a reply in some other format.
    pub fn looks_like_sse(&self) -> bool {
        looks_like_sse(&self.head)
    }

    /// The next event, or `None` at the end of the body. A broken connection is retryable (the
    /// next attempt may well get through); bytes that are not an event stream are not. An event
    /// left unfinished at the end is dropped, as the spec says: the caller then sees a stream
    /// that ended before its terminal event.
    pub async fn next(&mut self) -> Result<Option<Event>, AttemptError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            let chunk = self.response.chunk().await.map_err(|e| {
                AttemptError::retryable(format!(
                    "the response stream broke after {} bytes: {}",
                    self.received,
                    super::http::describe(e)
                ))
            })?;
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            self.received += chunk.len();
            let room = HEAD_BYTES.saturating_sub(self.head.len());
            self.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
            let events = self
                .decoder
                .push(&chunk)
                .map_err(|e| AttemptError::Fatal(format!("bad event stream: {e}")))?;
            self.ready.extend(events);
        }
    }
}

/// True for bytes that begin with an event-stream line (after any byte-order mark and blank
/// lines), or are empty.
fn looks_like_sse(head: &[u8]) -> bool {
    let head = head.strip_prefix("\u{feff}".as_bytes()).unwrap_or(head);
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    let head = &head[start..];
    head.is_empty()
        || [&b"data"[..], b"event", b":", b"id", b"retry"]
            .iter()
            .any(|field| head.starts_with(field) || field.starts_with(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, data: &str) -> Event {
        Event {
            name: name.into(),
            data: data.into(),
        }
    }

    /// Every event of `pieces` fed in order.
    fn decode(pieces: &[&[u8]]) -> Result<Vec<Event>, SseError> {
        let mut d = Decoder::new(1024);
        let mut out = Vec::new();
        for p in pieces {
            out.extend(d.push(p)?);
        }
        Ok(out)
    }

    /// Anthropic's documented shape plus the corner cases: CRLF and lone CR line ends, a comment,
    /// a field without a colon, multi-line data, a value without the optional space, non-ASCII.
    const SAMPLE: &[u8] = b"\xef\xbb\xbfevent: message_start\r\ndata: {\"a\":1}\r\n\r\n\
: keep-alive comment\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
data: line one\rdata:line two\r\rid: 7\nretry: 10\ndata\n\n\
data: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\xa6\x80\n\n\
event: lonely\n\n\
data: [DONE]\n\n";

    fn sample_events() -> Vec<Event> {
        vec![
            ev("message_start", "{\"a\":1}"),
            ev("ping", "{\"type\": \"ping\"}"),
            ev("", "line one\nline two"),
            ev("", ""),
            ev("", "café € 🦀"),
            ev("", "[DONE]"),
        ]
    }

    #[test]
    fn decodes_the_sample_in_one_piece() {
        assert_eq!(decode(&[SAMPLE]).unwrap(), sample_events());
    }

    #[test]
    fn decodes_the_sample_split_at_every_byte_position() {
        for i in 0..=SAMPLE.len() {
            let (a, b) = SAMPLE.split_at(i);
            assert_eq!(decode(&[a, b]).unwrap(), sample_events(), "split at {i}");
        }
    }

    #[test]
    fn decodes_the_sample_one_byte_at_a_time() {
        let pieces: Vec<&[u8]> = SAMPLE.chunks(1).collect();
        assert_eq!(decode(&pieces).unwrap(), sample_events());
    }

    #[test]
    fn decodes_every_pair_of_split_positions() {
        for i in 0..=SAMPLE.len() {
            for j in i..=SAMPLE.len() {
                let got = decode(&[&SAMPLE[..i], &SAMPLE[i..j], &SAMPLE[j..]]).unwrap();
                assert_eq!(got, sample_events(), "split at {i} and {j}");
            }
        }
    }

    #[test]
    fn an_unfinished_event_at_the_end_is_not_dispatched() {
        assert_eq!(
            decode(&[b"data: {\"whole\":true}\n\ndata: {\"cut"]).unwrap(),
            vec![ev("", "{\"whole\":true}")]
        );
        // A complete line without the blank line that ends its event is not an event either.
        assert_eq!(decode(&[b"data: {\"cut\":1}\n"]).unwrap(), vec![]);
    }

    #[test]
    fn an_event_over_the_cap_is_an_error_even_when_split() {
        let mut d = Decoder::new(16);
        d.push(b"data: 0123456789\n").unwrap();
        assert_eq!(
            d.push(b"data: 0123456789\n"),
            Err(SseError::TooLarge { max: 16 })
        );
        // One endless line never completes, and is refused as it grows.
        let mut d = Decoder::new(16);
        d.push(b"data: 01234").unwrap();
        assert_eq!(d.push(b"56789abcdef"), Err(SseError::TooLarge { max: 16 }));
    }

    #[test]
    fn event_stream_starts_are_told_from_other_formats() {
        for sse in [
            &b""[..],
            b"data: {",
            b"\n\nevent: x",
            b": ok",
            b"da",
            b"\xef\xbb\xbfdata:",
        ] {
            assert!(looks_like_sse(sse), "{:?}", String::from_utf8_lossy(sse));
        }
        for other in [&b"{\"id\":1}"[..], b"<html>", b"Internal error"] {
            assert!(
                !looks_like_sse(other),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused() {
        let err = decode(&[b"data: \xff\xfe\n\n"]).unwrap_err();
        assert!(matches!(err, SseError::NotUtf8 { .. }), "{err:?}");
    }
}
