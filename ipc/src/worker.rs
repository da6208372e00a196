//! The session between the supervisor and one `caxton-worker`, over the worker's stdin and stdout
//! (`connection::WorkerProtocol`): after the handshake the supervisor sends the job; the worker
//! streams events and may ask the supervisor things; the supervisor answers, and may ask the
//! worker to stop. stdin stays open for the whole run: its end means the supervisor is gone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::AgentSpec;
use crate::api::{ErrorBody, RunEvent, RunUsage};

/// Everything a worker needs for its one run; sent once, after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerJob {
    pub run_id: String,
    pub agent: AgentSpec,
    pub input: String,
    pub vars: BTreeMap<String, String>,
    /// Path of the toolhost's socket.
    pub toolhost_socket: String,
    /// The token the worker attaches to the toolhost with: its run's grant (tools, providers,
    /// budget, identity), registered by the supervisor for this run only.
    pub toolhost_token: String,
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
    /// The agent's delegation targets as tools (the targets' descriptions, resolved by the
    /// supervisor when the run starts).
    pub delegation_tools: Vec<crate::toolhost::ToolSpec>,
    /// Earlier runs of its conversation (or what its parent passes down), as chat messages
    /// placed between the system prompt and the request.
    pub history: Vec<crate::toolhost::ChatMessage>,
}

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    /// The run to do: the first message after the handshake, sent once.
    Job(Box<WorkerJob>),
    /// The answer to the worker's request `id`.
    Reply { id: u64, reply: SupervisorReply },
    /// Stop at once: the worker abandons what it is waiting for, sends a `cancelled` terminal
    /// event with its usage so far, and exits. The supervisor kills the process group if it has
    /// not ended after a grace period.
    Stop { reason: String },
}

/// Worker → supervisor: events of the run (ending with exactly one terminal event), and requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    Event(RunEvent),
    /// A question for the supervisor, answered by `ToWorker::Reply` with the same `id`.
    Request {
        id: u64,
        request: WorkerRequest,
    },
}

/// What a worker may ask the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerRequest {
    /// How much of the run's wall-clock limit is left, as the supervisor counts it.
    TimeLeft,
    /// The delegations of one turn, run in parallel (each a fresh worker process); answered by
    /// [`SupervisorReply::Delegated`] once all have ended. The supervisor decides from the
    /// run's own agent whether each target is allowed, and splits what the run has left of its
    /// budget evenly among them.
    Delegate { calls: Vec<DelegationCall> },
}

/// One delegation: the LLM's tool call and the target it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegationCall {
    pub call_id: String,
    pub target: crate::agent::DelegateTarget,
    /// The task text: the child's input.
    pub task: String,
    /// A handoff: the child answers the user in the parent's place (and holds the
    /// conversation from then on); `reason` says why.
    pub handoff: Option<String>,
}

/// How one delegation ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegationResult {
    pub call_id: String,
    /// The agent that ran it (`None` when it was refused before an agent was chosen).
    pub agent: Option<String>,
    pub run_id: Option<String>,
    /// The child's answer, or why there is none (refused, crashed, timed out, over budget).
    pub outcome: Result<String, ErrorBody>,
    /// What the child and its own descendants used (charged to the parent's budget).
    pub usage: RunUsage,
}

/// The supervisor's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorReply {
    TimeLeft {
        ms: u64,
    },
    /// One result per call, in the request's order.
    Delegated {
        results: Vec<DelegationResult>,
    },
    /// The request was refused, with the reason.
    Refused {
        reason: String,
    },
}
