//! The worker's spans: its turns, LLM calls and tool calls, in the run's trace.
//!
//! A worker has no network and exports nothing: it records its spans here and the session sends
//! them to the supervisor just before the terminal event ([`crate::Session::emit`]), which
//! exports them in the run's trace. Each span's id goes in the frame header of the requests
//! made under it, so the toolhost's and the memory service's spans hang from it. Written by
//! hand rather than with the OpenTelemetry SDK: a worker needs ids, times and attributes in a
//! form it can send, not a tracer, a processor and an exporter it would have to bridge.
//! Without a trace in the job, or with an unsampled one, nothing is recorded.

use std::cell::RefCell;
use std::time::SystemTime;

use caxton_ipc::frame::TraceContext;
use caxton_ipc::trace::{AttrValue, JobTrace, RelayedSpan, SpanKind, TraceParent};

/// The run's recorded spans.
pub struct Spans {
    trace: Option<JobTrace>,
    done: RefCell<Vec<RelayedSpan>>,
}

impl Spans {
    pub fn new(trace: Option<JobTrace>) -> Spans {
        Spans {
            trace,
            done: RefCell::new(Vec::new()),
        }
    }

    /// Whether spans may carry prompts, answers and tool payloads.
    pub fn capture_content(&self) -> bool {
        self.trace.is_some_and(|t| t.capture_content)
    }

    /// Starts a span under `parent` (the run's span when `None`); it ends when dropped.
    pub fn start(
        &self,
        name: impl Into<String>,
        kind: SpanKind,
        parent: Option<&Span<'_>>,
    ) -> Span<'_> {
        // An unsampled run records nothing, but its context still goes out (see `context`).
        let Some(trace) = self.trace.filter(|t| t.parent.sampled) else {
            return Span {
                spans: self,
                open: None,
            };
        };
        let parent = parent
            .and_then(|p| p.open.as_ref())
            .map_or(trace.parent.span_id, |p| p.id);
        Span {
            spans: self,
            open: Some(Open {
                id: new_span_id(),
                parent,
                name: name.into(),
                kind,
                start: SystemTime::now(),
                attributes: Vec::new(),
                error: None,
            }),
        }
    }

    /// The context to send with a request made outside any span of ours: the run's span.
    pub fn run_context(&self) -> Option<TraceContext> {
        self.trace.and_then(|t| frame_context(t.parent))
    }

    /// The spans that have ended, taken (to send them).
    pub fn take(&self) -> Vec<RelayedSpan> {
        std::mem::take(&mut *self.done.borrow_mut())
    }
}

/// A span in progress (inert when the run is not traced).
pub struct Span<'a> {
    spans: &'a Spans,
    open: Option<Open>,
}

struct Open {
    id: [u8; 8],
    parent: [u8; 8],
    name: String,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<(String, AttrValue)>,
    error: Option<String>,
}

impl Span<'_> {
    /// Sets an attribute (replacing one of the same key).
    pub fn set(&mut self, key: &str, value: impl Into<AttrValue>) -> &mut Self {
        if let Some(open) = &mut self.open {
            let value = value.into();
            match open.attributes.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => open.attributes.push((key.to_string(), value)),
            }
        }
        self
    }

    /// Sets an attribute only when content capture is on; `value` is not computed otherwise.
    pub fn set_content(&mut self, key: &str, value: impl FnOnce() -> String) -> &mut Self {
        if self.spans.capture_content() {
            self.set(key, value());
        }
        self
    }

    /// Marks the span failed: `error.type` is `kind`, the status says `message`.
    pub fn fail(&mut self, kind: &str, message: impl Into<String>) -> &mut Self {
        self.set("error.type", kind);
        if let Some(open) = &mut self.open {
            open.error = Some(message.into());
        }
        self
    }

    /// This span's id (`None` when not traced).
    pub fn id(&self) -> Option<[u8; 8]> {
        self.open.as_ref().map(|o| o.id)
    }

    /// The frame-header context of requests made under this span. For an unsampled run it is
    /// the run's own (unsampled) context, so the services drop their spans too instead of
    /// starting traces of their own.
    pub fn context(&self) -> Option<TraceContext> {
        let trace = self.spans.trace?;
        match self.id() {
            Some(id) => frame_context(trace.parent.with_span(id)),
            None => frame_context(trace.parent),
        }
    }
}

impl Drop for Span<'_> {
    fn drop(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        self.spans.done.borrow_mut().push(RelayedSpan {
            span_id: open.id,
            parent_span_id: open.parent,
            name: open.name,
            kind: open.kind,
            start_unix_nanos: unix_nanos(open.start),
            end_unix_nanos: unix_nanos(SystemTime::now()),
            attributes: open.attributes,
            error: open.error,
        });
    }
}

fn frame_context(parent: TraceParent) -> Option<TraceContext> {
    // A traceparent is 55 printable bytes: always a valid frame context.
    TraceContext::new(parent.to_string()).ok()
}

/// A random non-zero span id.
fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(capture_content: bool) -> JobTrace {
        JobTrace {
            parent: TraceParent {
                trace_id: [7; 16],
                span_id: [1; 8],
                sampled: true,
            },
            capture_content,
        }
    }

    #[test]
    fn spans_nest_under_the_run_and_end_when_dropped() {
        let spans = Spans::new(Some(trace(false)));
        let turn = spans.start("turn 1", SpanKind::Internal, None);
        let turn_id = turn.id().unwrap();
        {
            let mut chat = spans.start("chat m", SpanKind::Client, Some(&turn));
            chat.set("gen_ai.usage.input_tokens", 3u64)
                .set_content("gen_ai.input.messages", || unreachable!("capture is off"))
                .fail("llm", "provider down");
            let ctx = chat.context().unwrap();
            let parsed = TraceParent::parse(ctx.as_str()).unwrap();
            assert_eq!(parsed.trace_id, [7; 16]);
            assert_eq!(Some(parsed.span_id), chat.id());
        }
        drop(turn);
        let done = spans.take();
        assert_eq!(done.len(), 2);
        let (chat, turn) = (&done[0], &done[1]);
        assert_eq!(
            (turn.parent_span_id, chat.parent_span_id),
            ([1; 8], turn_id)
        );
        assert_eq!(chat.error.as_deref(), Some("provider down"));
        assert!(
            chat.attributes
                .contains(&("error.type".into(), "llm".into()))
        );
        assert!(chat.end_unix_nanos >= chat.start_unix_nanos);
        assert!(spans.take().is_empty());
    }

    #[test]
    fn an_unsampled_run_records_nothing_but_passes_its_context_on() {
        let mut unsampled = trace(false);
        unsampled.parent.sampled = false;
        let spans = Spans::new(Some(unsampled));
        let span = spans.start("turn 1", SpanKind::Internal, None);
        assert_eq!(span.id(), None);
        let ctx = span.context().unwrap();
        assert_eq!(TraceParent::parse(ctx.as_str()), Some(unsampled.parent));
        drop(span);
        assert!(spans.take().is_empty());
    }

    #[test]
    fn nothing_is_recorded_without_a_trace() {
        let spans = Spans::new(None);
        let mut span = spans.start("turn 1", SpanKind::Internal, None);
        span.set("k", "v");
        assert_eq!((span.id(), span.context()), (None, None));
        drop(span);
        assert!(spans.take().is_empty() && spans.run_context().is_none());
    }
}
