//! The toolhost's metric families (`caxton_tool_*` here, `caxton_llm_*` in `caxton-llm`),
//! rendered for the supervisor's scrape on its `Metrics` request.

use metrics::{Unit, describe_counter, describe_histogram};

use crate::host::CallError;
use crate::wasm::WasmError;

pub const TOOL_CALLS: &str = "caxton_tool_calls_total";
pub const TOOL_CALL_DURATION: &str = "caxton_tool_call_duration_seconds";
pub const INSTANCE_STARTS: &str = "caxton_tool_instance_starts_total";
pub const TRAPS: &str = "caxton_tool_traps_total";
pub const TIMEOUTS: &str = "caxton_tool_timeouts_total";

/// Installs the toolhost's recorder and describes its families.
pub fn install() -> caxton_telemetry::Recorder {
    let recorder = caxton_telemetry::install();
    describe_counter!(
        TOOL_CALLS,
        "Tool calls, by tool and outcome (ok, tool_error, refused, timeout, trap, busy, failed, bad_request, not_found); a tool no package offers is counted as `unknown`."
    );
    describe_histogram!(
        TOOL_CALL_DURATION,
        Unit::Seconds,
        "Tool call time in the toolhost (slot, instance, the guest's answer), by tool."
    );
    describe_counter!(
        INSTANCE_STARTS,
        "Guest instances started (instantiate, _start, MCP initialize), by package."
    );
    describe_counter!(TRAPS, "Guest instances that trapped, by package.");
    describe_counter!(
        TIMEOUTS,
        "Tool calls cut off at their deadline, by package."
    );
    caxton_llm::describe_metrics();
    recorder
}

/// The `tool` label of a call: the tool's name when some package offers it, else `unknown`
/// (a request may name anything).
pub fn tool_label(tool: &str, offered: bool) -> String {
    if offered {
        tool.to_string()
    } else {
        "unknown".to_string()
    }
}

/// The `outcome` label of a failed call.
pub fn outcome(e: &CallError) -> &'static str {
    match e {
        CallError::NoTool { .. } => "not_found",
        CallError::ArgumentsNotJson { .. } | CallError::ArgumentsNotObject { .. } => "bad_request",
        CallError::Guest(WasmError::Timeout { .. }) => "timeout",
        CallError::Guest(WasmError::Trapped { .. }) => "trap",
        CallError::Guest(WasmError::Busy { .. }) => "busy",
        CallError::Guest(_) | CallError::Audit { .. } | CallError::CatalogMode => "failed",
    }
}
