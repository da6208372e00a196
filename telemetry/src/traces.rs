//! OpenTelemetry traces: one trace per run across every process.
//!
//! The supervisor, the toolhost and the memory service each export their own spans over OTLP/HTTP
//! (protobuf) with a batch processor on its own thread ([`layer`]). Spans are `tracing` spans
//! that carry an `otel.name` field; [`layer`] exports exactly those (through
//! `tracing-opentelemetry`), and the log output leaves them out (`caxton_ipc::logging::is_trace_span`), so log lines
//! keep their plain `run` span and trace spans carry no log noise. With `[telemetry]` off no
//! layer wants them and they cost a disabled-callsite check.
//!
//! Context crosses processes as a W3C `traceparent` ([`TraceParent`]): in the frame header of
//! each request to the toolhost and the memory service, in the worker's job, in a caller's run
//! request, and on provider and tool-egress HTTP requests ([`current`]). Workers have no network:
//! they send their finished spans to the supervisor, which hands them to the same batch
//! processor ([`relay`]) — not through the tracer, because the SDK assigns its own span ids and
//! the worker's ids are already in the frames it sent.
//!
//! Span names and attributes follow the OpenTelemetry GenAI semantic conventions as of
//! `opentelemetry-semantic-conventions` 0.33 (semconv 1.38, "development" status).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use caxton_config::TelemetryConfig;
use caxton_ipc::logging::{ExtraLayer, is_trace_span};
use caxton_ipc::trace::{
    AttrValue, MAX_ATTRIBUTE_LEN, MAX_RELAYED_SPANS, MAX_SPAN_ATTRIBUTES, RelayedSpan, SpanKind,
    TraceParent,
};
use opentelemetry::trace::{
    SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue, Value};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;

/// What [`layer`] set up in this process.
struct Installed {
    provider: SdkTracerProvider,
    /// The provider's batch processor, also fed directly by [`relay`].
    batch: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
    capture_content: bool,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The batch processor, shared between the provider and [`relay`] (the provider wants to own
/// its processors).
#[derive(Debug)]
struct Shared(Arc<BatchSpanProcessor>);

impl SpanProcessor for Shared {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.0.on_start(span, cx);
    }
    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    // The resource was set on the processor before it was shared.
}

/// Sets up export for this process (`executable` is its name, `caxton-toolhost`…) and returns
/// the layer to add beside the log output; `None` when `[telemetry]` is off. Call it before any
/// async runtime starts (the exporter's blocking HTTP client makes its own).
pub fn layer(config: &TelemetryConfig, executable: &str) -> Result<Option<ExtraLayer>, String> {
    let Some(url) = config.traces_url()? else {
        return Ok(None);
    };
    // The exporter's HTTP client is the workspace's reqwest, built without a default TLS
    // provider: it needs one installed even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Headers (a collector's key) come from OTEL_EXPORTER_OTLP_HEADERS, which the exporter reads.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new(
            opentelemetry_semantic_conventions::resource::PROCESS_EXECUTABLE_NAME,
            executable.to_string(),
        ))
        .with_attribute(KeyValue::new(
            opentelemetry_semantic_conventions::resource::PROCESS_PID,
            i64::from(std::process::id()),
        ))
        .build();
    // Queue size, batch size and delay follow the OTEL_BSP_* variables.
    let mut batch = BatchSpanProcessor::builder(exporter).build();
    batch.set_resource(&resource);
    let batch = Arc::new(batch);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Shared(batch.clone()))
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(resource)
        .build();
    let scope = InstrumentationScope::builder("caxton")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let tracer = provider.tracer_with_scope(scope.clone());
    let installed = Installed {
        provider,
        batch,
        scope,
        capture_content: config.capture_content,
    };
    if INSTALLED.set(installed).is_err() {
        return Err("tracing is already set up in this process".into());
    }
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_target(false)
        .with_level(false)
        .with_filter(filter_fn(is_trace_span));
    Ok(Some(Box::new(layer)))
}

/// Sends what is still queued and stops the exporter (at the end of `main`).
pub fn shutdown() {
    if let Some(i) = INSTALLED.get() {
        let _ = i.provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}

/// Whether this process exports traces.
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}

/// Whether spans may carry prompts, answers and tool payloads (`[telemetry] capture_content`).
pub fn capture_content() -> bool {
    INSTALLED.get().is_some_and(|i| i.capture_content)
}

/// Makes `span` (a trace span not yet entered) a child of `parent`, a span in another
/// process. Nothing happens when tracing is off or `parent` is `None`.
pub fn set_parent(span: &tracing::Span, parent: Option<&TraceParent>) {
    let Some(parent) = parent.filter(|_| enabled()) else {
        return;
    };
    let flags = if parent.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        flags,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(Context::new().with_remote_span_context(remote));
}

/// Marks `span` failed: `error.type` is `kind` and the status is `ERROR`, with `description`
/// when given. The span must declare `error.type`, `otel.status_code` and (for a description)
/// `otel.status_description` as empty fields; a disabled span ignores it.
pub fn fail(span: &tracing::Span, kind: &str, description: Option<&str>) {
    span.record("error.type", kind)
        .record("otel.status_code", "ERROR");
    if let Some(d) = description {
        span.record("otel.status_description", d);
    }
}

/// The context of `span` to pass to another process; `None` when tracing is off or the span is
/// not exported.
pub fn context_of(span: &tracing::Span) -> Option<TraceParent> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        sampled: sc.is_sampled(),
    })
}

/// The context of the innermost trace span this code runs in (for a `traceparent` header).
pub fn current() -> Option<TraceParent> {
    if !enabled() {
        return None;
    }
    context_of(&tracing::Span::current())
}

/// Exports a worker's spans in the trace of its run, `run` being the run span's context: each
/// gets the run's trace id, and a span whose parent is neither the run span nor another of the
/// batch hangs from the run span. At most [`MAX_RELAYED_SPANS`]; returns how many were dropped.
pub fn relay(run: &TraceParent, spans: Vec<RelayedSpan>) -> usize {
    let Some(i) = INSTALLED.get() else {
        return spans.len();
    };
    if !run.sampled {
        return 0;
    }
    let dropped = spans.len().saturating_sub(MAX_RELAYED_SPANS);
    let known: std::collections::HashSet<[u8; 8]> = spans
        .iter()
        .take(MAX_RELAYED_SPANS)
        .map(|s| s.span_id)
        .collect();
    for span in spans.into_iter().take(MAX_RELAYED_SPANS) {
        if span.span_id == [0; 8] || span.span_id == run.span_id {
            continue;
        }
        let parent = if span.parent_span_id == run.span_id || known.contains(&span.parent_span_id) {
            span.parent_span_id
        } else {
            run.span_id
        };
        i.batch.on_end(span_data(run, parent, span, &i.scope));
    }
    dropped
}

fn span_data(
    run: &TraceParent,
    parent: [u8; 8],
    span: RelayedSpan,
    scope: &InstrumentationScope,
) -> SpanData {
    let at = |nanos: u64| UNIX_EPOCH + Duration::from_nanos(nanos);
    let start = at(span.start_unix_nanos);
    let end = at(span.end_unix_nanos.max(span.start_unix_nanos));
    let mut attributes: Vec<KeyValue> = span
        .attributes
        .into_iter()
        .take(MAX_SPAN_ATTRIBUTES)
        .map(|(k, v)| KeyValue::new(k, value(v)))
        .collect();
    let status = match span.error {
        Some(e) => {
            let error_type = opentelemetry_semantic_conventions::attribute::ERROR_TYPE;
            if !attributes.iter().any(|kv| kv.key.as_str() == error_type) {
                attributes.push(KeyValue::new(error_type, "error"));
            }
            Status::error(cut(e))
        }
        None => Status::Unset,
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(run.trace_id),
            SpanId::from_bytes(span.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from_bytes(parent),
        parent_span_is_remote: parent == run.span_id,
        span_kind: match span.kind {
            SpanKind::Internal => opentelemetry::trace::SpanKind::Internal,
            SpanKind::Client => opentelemetry::trace::SpanKind::Client,
        },
        name: Cow::Owned(cut(span.name)),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

fn value(v: AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => Value::from(cut(s)),
        AttrValue::Int(n) => Value::from(n),
        AttrValue::Float(x) => Value::from(x),
        AttrValue::Bool(b) => Value::from(b),
    }
}

/// `s` cut to [`MAX_ATTRIBUTE_LEN`] bytes at a char boundary.
fn cut(mut s: String) -> String {
    if s.len() > MAX_ATTRIBUTE_LEN {
        let mut end = MAX_ATTRIBUTE_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Nanoseconds since the Unix epoch, for a relayed span's times.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use opentelemetry_semantic_conventions::attribute as semconv;

    /// The attribute names written as literals in `tracing` spans (a field name must be a
    /// literal there) are the conventions' own.
    // The crate marks the GenAI constants deprecated since the conventions moved to their own
    // repository (semantic-conventions-genai); the names are unchanged.
    #[allow(deprecated)]
    #[test]
    fn the_span_attribute_names_are_the_semantic_conventions() {
        for (literal, constant) in [
            ("gen_ai.operation.name", semconv::GEN_AI_OPERATION_NAME),
            ("gen_ai.agent.name", semconv::GEN_AI_AGENT_NAME),
            ("gen_ai.conversation.id", semconv::GEN_AI_CONVERSATION_ID),
            ("gen_ai.request.model", semconv::GEN_AI_REQUEST_MODEL),
            ("gen_ai.response.model", semconv::GEN_AI_RESPONSE_MODEL),
            ("gen_ai.provider.name", semconv::GEN_AI_PROVIDER_NAME),
            (
                "gen_ai.usage.input_tokens",
                semconv::GEN_AI_USAGE_INPUT_TOKENS,
            ),
            (
                "gen_ai.usage.output_tokens",
                semconv::GEN_AI_USAGE_OUTPUT_TOKENS,
            ),
            ("gen_ai.tool.name", semconv::GEN_AI_TOOL_NAME),
            ("gen_ai.tool.call.id", semconv::GEN_AI_TOOL_CALL_ID),
            ("gen_ai.tool.type", semconv::GEN_AI_TOOL_TYPE),
            (
                "gen_ai.tool.call.arguments",
                semconv::GEN_AI_TOOL_CALL_ARGUMENTS,
            ),
            ("gen_ai.tool.call.result", semconv::GEN_AI_TOOL_CALL_RESULT),
            ("gen_ai.input.messages", semconv::GEN_AI_INPUT_MESSAGES),
            ("gen_ai.output.messages", semconv::GEN_AI_OUTPUT_MESSAGES),
            ("error.type", semconv::ERROR_TYPE),
            ("http.request.method", semconv::HTTP_REQUEST_METHOD),
            (
                "http.response.status_code",
                semconv::HTTP_RESPONSE_STATUS_CODE,
            ),
            ("server.address", semconv::SERVER_ADDRESS),
        ] {
            assert_eq!(literal, constant);
        }
    }
}
