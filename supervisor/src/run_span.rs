//! A run's span in its trace: `invoke_agent {agent}` (OpenTelemetry GenAI conventions), child
//! of the caller's span (a `traceparent` in the run request) or, for a delegated run, of the
//! parent worker's `execute_tool` span. The worker's spans hang from it, and it ends with the
//! run's usage and outcome. With tracing off it is a disabled span and [`RunSpan::context`] is
//! `None`.

use caxton_ipc::agent::AgentSpec;
use caxton_ipc::api::RunEvent;
use caxton_ipc::trace::{JobTrace, RelayedSpan, TraceParent};
use caxton_telemetry::traces;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::field::Empty;

pub struct RunSpan {
    span: tracing::Span,
    context: Option<TraceParent>,
    /// Spans relayed from the worker so far (bounded per run, however often it sends them).
    relayed: AtomicUsize,
}

impl RunSpan {
    /// Starts the span now; `log` (the run's log span) gets its trace id.
    pub fn start(
        agent: &AgentSpec,
        run_id: &str,
        conversation: Option<&str>,
        parent: Option<&TraceParent>,
        log: &tracing::Span,
    ) -> RunSpan {
        let span = tracing::info_span!(
            parent: None,
            "invoke_agent",
            otel.name = %format_args!("invoke_agent {}", agent.name),
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = %agent.name,
            gen_ai.conversation.id = conversation,
            gen_ai.request.model = agent.llm.model.as_deref().unwrap_or(""),
            gen_ai.provider.name = %agent.llm.provider,
            caxton.run_id = run_id,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            caxton.cost_usd = Empty,
            caxton.relayed_spans_dropped = Empty,
            error.type = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        traces::set_parent(&span, parent);
        let context = traces::context_of(&span);
        if let Some(c) = &context {
            log.record("trace_id", c.trace_hex());
        }
        RunSpan {
            span,
            context,
            relayed: AtomicUsize::new(0),
        }
    }

    /// The span's context, to pass on (`None` when the run is not traced).
    pub fn context(&self) -> Option<TraceParent> {
        self.context
    }

    /// What the worker needs for its spans. An unsampled run's context goes too: the worker
    /// records nothing, but passes it on so the services do not start traces of their own.
    pub fn job_trace(&self) -> Option<JobTrace> {
        self.context.map(|parent| JobTrace {
            parent,
            capture_content: traces::capture_content(),
        })
    }

    /// The parent of a delegated child's run span: the parent worker's span for the call when
    /// it names one (it is in this run's trace by construction), else this run's span.
    pub fn child_parent(&self, call_span: Option<[u8; 8]>) -> Option<TraceParent> {
        let run = self.context?;
        Some(
            call_span
                .filter(|id| *id != [0; 8])
                .map_or(run, |id| run.with_span(id)),
        )
    }

    /// Exports spans the worker relayed, in this run's trace.
    pub fn relay(&self, spans: Vec<RelayedSpan>) {
        let Some(run) = self.context else {
            return;
        };
        let offered = spans.len();
        let before = self.relayed.fetch_add(offered, Ordering::Relaxed);
        let room = caxton_ipc::trace::MAX_RELAYED_SPANS.saturating_sub(before);
        let taken: Vec<RelayedSpan> = spans.into_iter().take(room).collect();
        let dropped = traces::relay(&run, taken) + offered.saturating_sub(room);
        if dropped > 0 {
            self.span
                .record("caxton.relayed_spans_dropped", dropped as u64);
        }
    }

    /// Ends the span with the run's usage and outcome.
    pub fn end(&self, terminal: &RunEvent) {
        match terminal {
            RunEvent::Finished { usage, .. } | RunEvent::Failed { usage, .. } => {
                // The run's own use: each delegated run's span carries its own.
                self.span
                    .record("gen_ai.usage.input_tokens", usage.prompt_tokens)
                    .record("gen_ai.usage.output_tokens", usage.completion_tokens)
                    .record("caxton.cost_usd", usage.cost_usd);
            }
            _ => {}
        }
        if let RunEvent::Failed { error, .. } = terminal {
            traces::fail(
                &self.span,
                &error.kind.as_str(),
                Some(error.message.as_str()),
            );
        }
    }
}
