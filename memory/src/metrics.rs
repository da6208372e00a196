//! The memory service's metric families (`caxton_memory_*`), rendered for the supervisor's
//! scrape on its `Metrics` request.

use std::path::Path;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const REQUESTS: &str = "caxton_memory_requests_total";
pub const REQUEST_DURATION: &str = "caxton_memory_request_duration_seconds";
pub const SEARCH_DURATION: &str = "caxton_memory_search_duration_seconds";
pub const EMBEDDING_DURATION: &str = "caxton_memory_embedding_duration_seconds";
pub const EMBEDDED_TEXTS: &str = "caxton_memory_embedded_texts_total";
pub const QUERY_CACHE: &str = "caxton_memory_query_cache_lookups_total";
const DATABASE_SIZE: &str = "caxton_memory_database_size_bytes";

/// Installs the memory service's recorder and describes its families.
pub fn install() -> caxton_telemetry::Recorder {
    let recorder = caxton_telemetry::install();
    describe_counter!(
        REQUESTS,
        "Requests to the memory service, by request and outcome (ok or the error kind)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer one memory request, by request."
    );
    describe_histogram!(
        SEARCH_DURATION,
        Unit::Seconds,
        "Time of one search (semantic, keyword, hybrid, or the MCP search_nodes), by mode."
    );
    describe_histogram!(
        EMBEDDING_DURATION,
        Unit::Seconds,
        "Time the embedding model took for one call (one or more texts)."
    );
    describe_counter!(EMBEDDED_TEXTS, "Texts run through the embedding model.");
    describe_counter!(
        QUERY_CACHE,
        "Lookups of a query's embedding in the cache, by result (hit, miss)."
    );
    describe_gauge!(
        DATABASE_SIZE,
        Unit::Bytes,
        "Size of the memory database with its write-ahead log."
    );
    recorder
}

/// The memory service's metrics, the database's size read now.
pub fn render(database: &Path) -> String {
    let size: u64 = ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let mut p = database.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(p).ok().map(|m| m.len())
        })
        .sum();
    metrics::gauge!(DATABASE_SIZE).set(size as f64);
    caxton_telemetry::install().render()
}

/// Records a search's time in [`SEARCH_DURATION`] when dropped, however the search ends, and
/// spans it in the trace.
#[must_use]
pub struct SearchTimer {
    mode: &'static str,
    started: std::time::Instant,
    /// The search's span in the trace of the request, if traced.
    _span: tracing::span::EnteredSpan,
}

pub fn time_search(mode: &'static str) -> SearchTimer {
    SearchTimer {
        mode,
        started: std::time::Instant::now(),
        _span: tracing::info_span!("search", otel.name = "search", caxton.mode = mode).entered(),
    }
}

impl Drop for SearchTimer {
    fn drop(&mut self) {
        metrics::histogram!(SEARCH_DURATION, "mode" => self.mode)
            .record(self.started.elapsed().as_secs_f64());
    }
}
