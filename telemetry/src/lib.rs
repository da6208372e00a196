//! What the Caxton processes share for being watched.
//!
//! **Metrics.** Code records through the `metrics` facade where things happen (`counter!`,
//! `histogram!`, `gauge!`); each long-lived process — the supervisor, the toolhost, the memory
//! service — installs one Prometheus recorder with [`install`]. The supervisor is the one scrape
//! target: it renders its own metrics and asks each service for its rendering over the private
//! socket, so the families of each process must not overlap (the supervisor's are `caxton_runs_*`,
//! `caxton_queue_*`, `caxton_workers_*`, `caxton_process_*`…, the toolhost's `caxton_tool_*` and
//! `caxton_llm_*`, the memory service's `caxton_memory_*`). Workers record nothing: they live for
//! one run, and everything they do is counted by the process that serves it.
//!
//! Labels stay bounded: agent, tool, provider, model and outcome names come from the validated
//! config and agent files, never from a request as given (an unknown name is counted as
//! `unknown`), and never a run id.

pub mod traces;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upper bounds, in seconds, of the buckets of every duration histogram: from half a
/// millisecond (a tool call, a cached search) to five minutes (a long run).
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Upper bounds, in USD, of the buckets of every cost histogram (`…_usd`): from a
/// hundredth of a cent to ten dollars a call.
pub const COST_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// How often the recorder drains its histograms' samples into their buckets when nobody
/// scrapes (a histogram keeps each sample until then).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// This process's Prometheus recorder.
#[derive(Clone)]
pub struct Recorder {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

/// Installs this process's recorder (once; later calls return the same one) and starts its
/// upkeep thread.
pub fn install() -> Recorder {
    static INSTALLED: OnceLock<PrometheusHandle> = OnceLock::new();
    let handle = INSTALLED.get_or_init(|| {
        // Only an empty bucket list is refused, and neither list is empty.
        let builder = PrometheusBuilder::new()
            .set_buckets(DURATION_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_usd".into()), COST_BUCKETS))
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; then this one renders nothing, which
        // is better than refusing to start over metrics.
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
        handle
    });
    Recorder {
        handle: handle.clone(),
    }
}

impl Recorder {
    /// This process's metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// What the kernel says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessUsage {
    /// Resident set size.
    pub resident_bytes: u64,
    /// Open file descriptors (`None` when `/proc/PID/fd` cannot be read).
    pub open_fds: Option<u64>,
}

/// Reads `/proc/PID/status` and counts `/proc/PID/fd`; `None` if the process is gone.
pub fn process_usage(pid: u32) -> Option<ProcessUsage> {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let resident_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let open_fds = std::fs::read_dir(proc_dir.join("fd"))
        .ok()
        .map(|d| d.count() as u64);
    Some(ProcessUsage {
        resident_bytes: resident_kib * 1024,
        open_fds,
    })
}

/// The exposition text's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Sets up this process's logging (see `caxton_ipc::logging`), and trace export when
/// `telemetry` is given and on. A broken exporter leaves traces off and says why in the log.
pub fn init_logging(
    identifier: &str,
    telemetry: Option<&caxton_config::TelemetryConfig>,
) -> caxton_ipc::logging::Format {
    let layer = telemetry.map_or(Ok(None), |t| traces::layer(t, identifier));
    match layer {
        Ok(layer) => caxton_ipc::logging::init_with(identifier, layer),
        Err(e) => {
            let format = caxton_ipc::logging::init(identifier);
            tracing::error!(error = %e, "traces are off");
            format
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_usage_is_read() {
        let u = process_usage(std::process::id()).expect("this process exists");
        assert!(u.resident_bytes > 1024 * 1024, "{u:?}");
        // stdin, stdout, stderr at least, and the directory being read.
        assert!(u.open_fds.is_some_and(|n| n >= 3), "{u:?}");
        assert_eq!(process_usage(u32::MAX), None);
    }

    #[test]
    fn a_recorded_histogram_renders_with_the_shared_buckets() {
        let recorder = install();
        metrics::histogram!("caxton_test_duration_seconds", "what" => "x").record(0.003);
        metrics::counter!("caxton_test_events_total").increment(2);
        metrics::histogram!("caxton_test_call_cost_usd").record(0.0003);
        let text = recorder.render();
        assert!(
            text.contains(r#"caxton_test_duration_seconds_bucket{what="x",le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"caxton_test_duration_seconds_bucket{what="x",le="0.0025"} 0"#),
            "{text}"
        );
        assert!(text.contains("caxton_test_events_total 2"), "{text}");
        // Costs have buckets of their own.
        assert!(
            text.contains(r#"caxton_test_call_cost_usd_bucket{le="0.0005"} 1"#)
                && text.contains(r#"caxton_test_call_cost_usd_bucket{le="0.0001"} 0"#),
            "{text}"
        );
        // A second install is the same recorder.
        assert!(install().render().contains("caxton_test_events_total 2"));
    }
}
