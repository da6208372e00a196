//! Trace context and relayed spans: what crosses a process boundary for OpenTelemetry.
//!
//! A [`TraceParent`] is the W3C `traceparent` value (version 00): it travels in the frame header
//! between Caxton processes (see [`crate::frame::TraceContext`]), in a caller's run request,
//! and as an HTTP header to providers and tool egress. Workers have no network and no exporter:
//! they record their spans as [`RelayedSpan`]s and send them to the supervisor, which exports
//! them inside the run's trace (see `caxton_telemetry::traces`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most spans one worker may relay for its run; more are dropped (and counted on the run span).
pub const MAX_RELAYED_SPANS: usize = 512;
/// Most attributes on one relayed span.
pub const MAX_SPAN_ATTRIBUTES: usize = 32;
/// Longest attribute value kept on a relayed span (longer text is cut at a char boundary).
pub const MAX_ATTRIBUTE_LEN: usize = 16 * 1024;

/// A W3C trace context: the trace, the parent span in it, and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`); a `;tracestate` suffix, as
    /// the frame header carries it, is ignored. All-zero ids and version `ff` are invalid, as the
    /// W3C recommendation says; a later version is read by its first four fields.
    pub fn parse(text: &str) -> Option<TraceParent> {
        let text = text.split(';').next()?.trim();
        let mut parts = text.split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") {
            return None;
        }
        let version = u8::from_str_radix(version, 16).ok()?;
        if version == 0 && parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?;
        let span_id: [u8; 8] = hex(span)?;
        let [flags]: [u8; 1] = hex(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The same trace, with `span_id` as the parent.
    pub fn with_span(self, span_id: [u8; 8]) -> TraceParent {
        TraceParent { span_id, ..self }
    }

    /// The trace id as 32 lowercase hex digits (what the logs and `TRACE_ID` show).
    pub fn trace_hex(&self) -> String {
        to_hex(&self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a worker's spans hang from: the supervisor's run span (`invoke_agent`), and whether the
/// spans may carry prompts and tool payloads (`[telemetry] capture_content`). Sent in the job
/// whenever the run is traced; for an unsampled run the worker records nothing and only passes
/// the context on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTrace {
    pub parent: TraceParent,
    pub capture_content: bool,
}

/// The kind of a relayed span, as OpenTelemetry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    Internal,
    Client,
}

/// An attribute value on a relayed span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> AttrValue {
        AttrValue::Str(s.to_string())
    }
}
impl From<String> for AttrValue {
    fn from(s: String) -> AttrValue {
        AttrValue::Str(s)
    }
}
impl From<u64> for AttrValue {
    fn from(n: u64) -> AttrValue {
        AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<u32> for AttrValue {
    fn from(n: u32) -> AttrValue {
        AttrValue::Int(n.into())
    }
}
impl From<f64> for AttrValue {
    fn from(x: f64) -> AttrValue {
        AttrValue::Float(x)
    }
}
impl From<bool> for AttrValue {
    fn from(b: bool) -> AttrValue {
        AttrValue::Bool(b)
    }
}

/// One finished span a worker recorded, in the trace of its run (the supervisor supplies the
/// trace id: a worker cannot place spans in another trace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayedSpan {
    pub span_id: [u8; 8],
    pub parent_span_id: [u8; 8],
    pub name: String,
    pub kind: SpanKind,
    /// Wall-clock start and end, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(String, AttrValue)>,
    /// Set when the span's operation failed: the error's description.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_bad_ones_are_refused() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(text).unwrap();
        assert!(tp.sampled);
        assert_eq!(tp.to_string(), text);
        assert_eq!(tp.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // The frame header's form, with a tracestate behind `;`.
        assert_eq!(TraceParent::parse(&format!("{text};k=v")), Some(tp));
        let unsampled = TraceParent::parse(&text.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        // A later version may add fields; version 00 may not.
        assert!(TraceParent::parse(&format!("cc{}-extra", &text[2..])).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
