//! Messages between the supervisor and a `caxton-worker` over the worker's stdin (job) and stdout (events).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::AgentSpec;
use crate::api::RunEvent;

/// Everything a worker needs for its one run; sent once, after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerJob {
    pub run_id: String,
    pub agent: AgentSpec,
    pub input: String,
    pub vars: BTreeMap<String, String>,
    /// Path of the toolhost's socket.
    pub toolhost_socket: String,
    /// Milliseconds the worker has left; it stops calling out when they run out.
    pub deadline_ms: u64,
    /// Stream answer text as `Token` events.
    pub stream: bool,
    /// Emit `LlmExchange` events.
    pub record: bool,
    /// Answer LLM calls from this recording, never from a provider.
    pub replay: Option<crate::recording::Recording>,
    /// Set when the agent has `[memory] enabled = true`.
    pub memory: Option<crate::memory::MemoryAccess>,
}

/// What a worker sends back: events, then exactly one terminal event, then it exits.
pub type WorkerEvent = RunEvent;
