//! The service's one scrape target. The supervisor's own families are recorded where things
//! happen (admission, the run table, the worker pool) through the `metrics` facade; a scrape
//! ([`scrape`]) sets the gauges that are read rather than counted (queue depth, workers, each
//! process's memory and descriptors), renders them, and appends the toolhost's and the memory
//! service's own renderings as each reported them at its last health check (`services.rs`: the
//! check asks for them, every `[health] ping_interval`). So a scrape never waits for a busy
//! service, and the services' part is at most a ping interval old. A service that is not running
//! or has not reported is left out and shows as `caxton_service_up{service="…"} 0`.
//!
//! Families and labels are documented in the README ("Metrics"); `caxton_telemetry` says why
//! the label values stay bounded.

use std::sync::Arc;
use std::time::Instant;

use caxton_ipc::api::ServiceState;
use caxton_telemetry::Recorder;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

use crate::service::Service;
use crate::services::ServiceProcess;

pub const RUNS_STARTED: &str = "caxton_runs_started_total";
pub const RUNS_FINISHED: &str = "caxton_runs_finished_total";
pub const RUNS_FAILED: &str = "caxton_runs_failed_total";
pub const RUN_DURATION: &str = "caxton_run_duration_seconds";
pub const RUNS_REJECTED: &str = "caxton_runs_rejected_total";
pub const QUEUE_WAIT: &str = "caxton_queue_wait_seconds";
pub const WORKER_SPAWN: &str = "caxton_worker_spawn_seconds";
pub const WORKERS_TAKEN: &str = "caxton_workers_taken_total";
pub const CONNECTIONS_REJECTED: &str = "caxton_api_connections_rejected_total";

/// Installs the supervisor's recorder and describes its families.
pub fn install() -> Recorder {
    let recorder = caxton_telemetry::install();
    describe_gauge!("caxton_build_info", "Always 1; the version in a label.");
    describe_gauge!("caxton_agents_loaded", "Agents loaded and serving.");
    describe_counter!(
        RUNS_STARTED,
        "Runs given a run id (delegated runs too), by agent."
    );
    describe_counter!(RUNS_FINISHED, "Runs that ended with an answer, by agent.");
    describe_counter!(
        RUNS_FAILED,
        "Runs that ended with an error, by agent and error kind."
    );
    describe_histogram!(
        RUN_DURATION,
        Unit::Seconds,
        "Run wall time from its run id to its terminal event, by agent and outcome."
    );
    describe_counter!(
        RUNS_REJECTED,
        "Run requests that ended before they started, by reason (busy, queue_timeout, shutting_down, client_gone)."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time a run waited for a worker slot (0 when one was free)."
    );
    describe_gauge!("caxton_queue_depth", "Runs waiting for a worker slot.");
    describe_gauge!(
        "caxton_queue_capacity",
        "Runs that may wait before new ones are refused busy."
    );
    describe_histogram!(
        WORKER_SPAWN,
        Unit::Seconds,
        "Time to start one worker process (posix_spawn), pre-spawned or on demand."
    );
    describe_counter!(
        WORKERS_TAKEN,
        "Workers given a run, by source (ready: pre-spawned; spawned: started for it)."
    );
    describe_gauge!("caxton_workers_running", "Worker processes serving a run.");
    describe_gauge!(
        "caxton_workers_max",
        "Worker slots ([workers] max_concurrent)."
    );
    describe_gauge!(
        "caxton_workers_ready",
        "Pre-spawned workers waiting for a job."
    );
    describe_counter!(
        CONNECTIONS_REJECTED,
        "Connections to api.sock refused (credentials or caps)."
    );
    describe_gauge!(
        "caxton_service_up",
        "1 when the service process runs and answered its last health check (its metrics are in this scrape), else 0, by service."
    );
    describe_counter!(
        "caxton_service_restarts_total",
        "Times the supervisor started a service process again after it died or hung (attempts), by service."
    );
    describe_gauge!(
        "caxton_process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of each Caxton process, by process (supervisor, toolhost, memory)."
    );
    describe_gauge!(
        "caxton_process_open_fds",
        "Open file descriptors of each Caxton process, by process."
    );
    gauge!("caxton_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    recorder
}

/// A run request refused before it started.
pub fn rejected(reason: &'static str) {
    counter!(RUNS_REJECTED, "reason" => reason).increment(1);
}

/// The whole service's metrics: the supervisor's, then the toolhost's and the memory
/// service's as each reported them at its last health check.
pub fn scrape(svc: &Service, recorder: &Recorder) -> String {
    let started = Instant::now();
    let status = svc.admission();
    gauge!("caxton_agents_loaded").set(svc.registry().agents.len() as f64);
    gauge!("caxton_queue_depth").set(status.queue_depth() as f64);
    gauge!("caxton_queue_capacity").set(f64::from(status.queue_capacity()));
    gauge!("caxton_workers_running").set(svc.runs().running() as f64);
    gauge!("caxton_workers_max").set(f64::from(status.max_concurrent()));
    gauge!("caxton_workers_ready").set(svc.warm().idle() as f64);
    process_gauges("supervisor", Some(std::process::id()));
    let toolhost = service_part("toolhost", svc.toolhost());
    let memory = svc.memory_process().and_then(|m| service_part("memory", m));
    let mut text = recorder.render();
    for part in [toolhost, memory].into_iter().flatten() {
        text.push_str(&part);
    }
    tracing::debug!(
        took_us = started.elapsed().as_micros() as u64,
        bytes = text.len(),
        "metrics scraped"
    );
    text
}

/// A service's gauges, and its last report if it is running and has reported.
fn service_part(name: &'static str, service: &ServiceProcess) -> Option<Arc<str>> {
    let report = service.metrics_report();
    gauge!("caxton_service_up", "service" => name).set(if report.is_some() { 1.0 } else { 0.0 });
    counter!("caxton_service_restarts_total", "service" => name).absolute(service.restarts());
    let pid = match service.state() {
        ServiceState::Running { pid, .. } | ServiceState::Unresponsive { pid, .. } => Some(pid),
        _ => None,
    };
    process_gauges(name, pid);
    report
}

/// A process's memory and descriptors; a process that is not running reads 0.
fn process_gauges(name: &'static str, pid: Option<u32>) {
    let usage = pid.and_then(caxton_telemetry::process_usage);
    gauge!("caxton_process_resident_memory_bytes", "process" => name)
        .set(usage.map_or(0.0, |u| u.resident_bytes as f64));
    gauge!("caxton_process_open_fds", "process" => name)
        .set(usage.and_then(|u| u.open_fds).map_or(0.0, |n| n as f64));
}
