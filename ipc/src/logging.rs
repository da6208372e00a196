//! How every Caxton process logs, decided once: journald when systemd connected the service's
//! stderr to the journal, readable text on a terminal, JSON lines otherwise
//! (`CAXTON_LOG_FORMAT=text|json|journald` overrides; the level comes from `CAXTON_LOG`, default
//! `info`). The supervisor passes its choice to its children in `CAXTON_LOG_FORMAT`, so a child
//! logs the same way: natively to journald (its own `_PID` and identifier), or in text or JSON on
//! its stderr, which the supervisor forwards line by line once, adding only the child's name and
//! pid ([`forward_line`]).

use std::io::{IsTerminal, Write};

use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The prefix of Caxton's fields in the journal: a span or event field `run_id` is the journal
/// field `CAXTON_RUN_ID`.
pub const FIELD_PREFIX: &str = "CAXTON";

/// Where and how log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Journald,
    Text,
    Json,
}

impl Format {
    /// `CAXTON_LOG_FORMAT`, else what stderr is connected to.
    pub fn from_env() -> Format {
        match std::env::var("CAXTON_LOG_FORMAT").as_deref() {
            Ok("journald") => Format::Journald,
            Ok("text") => Format::Text,
            Ok("json") => Format::Json,
            _ if std::env::var_os("JOURNAL_STREAM").is_some() => Format::Journald,
            _ if std::io::stderr().is_terminal() => Format::Text,
            _ => Format::Json,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Journald => "journald",
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

/// True for a span meant for traces: it names itself with an `otel.name` field (see
/// `caxton_telemetry::traces`). The log output leaves these out.
pub fn is_trace_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.fields().field("otel.name").is_some()
}

/// A layer added beside the log output (the OpenTelemetry layer, when tracing is on).
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Sets up logging for this process under `identifier` (`caxton`, `caxton-toolhost`…) and
/// returns the format in effect (journald falls back to JSON when the journal is unreachable).
pub fn init(identifier: &str) -> Format {
    init_with(identifier, None)
}

/// [`init`], with `extra` beside the log output. `CAXTON_LOG` filters the log output only, so
/// `extra` sees what its own filter selects whatever the log level.
pub fn init_with(identifier: &str, extra: Option<ExtraLayer>) -> Format {
    // Trace spans (see `is_trace_span`) are for the exporter: log lines carry the plain spans.
    let filter = || {
        EnvFilter::try_from_env("CAXTON_LOG")
            .unwrap_or_else(|_| EnvFilter::new("info"))
            .and(filter_fn(|meta| !is_trace_span(meta)))
    };
    let mut format = Format::from_env();
    let mut output: Option<ExtraLayer> = None;
    if format == Format::Journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                output = Some(
                    layer
                        .with_syslog_identifier(identifier.to_string())
                        // Fields become CAXTON_RUN_ID, CAXTON_AGENT…: `journalctl
                        // CAXTON_AGENT=calculator` finds an agent's lines.
                        .with_field_prefix(Some(FIELD_PREFIX.into()))
                        .with_filter(filter())
                        .boxed(),
                );
            }
            Err(e) => {
                eprintln!("{identifier}: journald is not reachable ({e}); logging JSON to stderr");
                format = Format::Json;
            }
        }
    }
    let output = output.unwrap_or_else(|| {
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        match format {
            Format::Text => fmt
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter())
                .boxed(),
            _ => fmt.json().with_filter(filter()).boxed(),
        }
    });
    let layers: Vec<ExtraLayer> = std::iter::once(output).chain(extra).collect();
    tracing_subscriber::registry().with(layers).init();
    format
}

/// Writes one line a child (`name`, `pid`) wrote on its stderr to ours, once, in `format`, with
/// the child's own timestamp, level and fields and its name and pid added: a JSON line gets
/// `"child"` and `"pid"` keys; a text line a `child=… pid=…` suffix; anything else (a panic
/// message) becomes a line of the same format. In journald mode children log to the journal
/// themselves, so what reaches their stderr is only what bypassed logging: it goes to the journal
/// as a warning.
pub fn forward_line(format: Format, name: &str, pid: u32, line: &str) {
    if format == Format::Journald {
        let line = line.trim_end();
        if !line.is_empty() {
            tracing::warn!(child = name, pid, "{line}");
        }
        return;
    }
    if let Some(out) = shape_line(format, name, pid, line) {
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

/// The text/JSON line [`forward_line`] writes (with its newline); `None` for an empty line.
fn shape_line(format: Format, name: &str, pid: u32, line: &str) -> Option<String> {
    let line = line.trim_end();
    if line.is_empty() {
        return None;
    }
    let mut out = match format {
        Format::Json => {
            let mut v = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(o)) => o,
                _ => {
                    let mut o = serde_json::Map::new();
                    o.insert("level".into(), "WARN".into());
                    o.insert("fields".into(), serde_json::json!({ "message": line }));
                    o
                }
            };
            v.insert("child".into(), name.into());
            v.insert("pid".into(), pid.into());
            serde_json::Value::Object(v).to_string()
        }
        _ => format!("{line} child={name} pid={pid}"),
    };
    out.push('\n');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_line_keeps_its_own_timestamp_level_and_fields_once() {
        let line = r#"{"timestamp":"2026-11-28T05:00:00.000Z","level":"INFO","fields":{"message":"toolhost ready","tools":9},"target":"caxton_toolhost::server"}"#;
        let out = shape_line(Format::Json, "toolhost", 7, line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-11-28T05:00:00.000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["fields"]["tools"], 9);
        assert_eq!(
            (v["child"].as_str(), v["pid"].as_u64()),
            (Some("toolhost"), Some(7))
        );
        assert_eq!(out.matches('\n').count(), 1);
        // A line that is not JSON (a panic) becomes a JSON line too.
        let out = shape_line(Format::Json, "memory", 8, "thread 'main' panicked at x").unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["fields"]["message"], "thread 'main' panicked at x");
        // Text: the line as the child wrote it, once, with who wrote it.
        let text = "2026-11-28T05:00:00Z  INFO caxton_memory: ready";
        assert_eq!(
            shape_line(Format::Text, "memory", 8, text).unwrap(),
            format!("{text} child=memory pid=8\n")
        );
        assert!(shape_line(Format::Text, "memory", 8, "  ").is_none());
    }
}
