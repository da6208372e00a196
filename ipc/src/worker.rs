//! The session between the supervisor and one `caxton-worker`, over the worker's stdin and stdout
//! (`connection::WorkerProtocol`): after the handshake the supervisor sends the job; the worker
//! streams events and may ask the supervisor things; the supervisor answers, and may ask the
//! worker to stop. stdin stays open for the whole run: its end means the supervisor is gone.

use std::collections::BTreeMap;
use std::time::Duration;

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
    /// When the run's wall-clock limit passes; the worker stops calling out then.
    pub deadline: Monotonic,
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
    /// Where the worker's spans go in the run's trace; `None` when the run is not traced.
    pub trace: Option<crate::trace::JobTrace>,
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
    /// Finished spans of the run (sent once, before the terminal event, when the job has a
    /// trace); the supervisor exports them in the run's trace.
    Spans(Vec<crate::trace::RelayedSpan>),
}

/// A point on the machine's monotonic clock (`CLOCK_MONOTONIC`), in milliseconds. The
/// supervisor and its workers run on one machine and read the same clock, so a deadline the
/// supervisor sets holds in the worker however long the job took to get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Monotonic(pub u64);

impl Monotonic {
    pub fn now() -> Monotonic {
        // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make every deadline pass.
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
            t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000
        });
        Monotonic(now)
    }

    /// `after` from now.
    pub fn after(after: Duration) -> Monotonic {
        Monotonic(Monotonic::now().0.saturating_add(after.as_millis() as u64))
    }

    /// The time from now until this point (zero once it has passed).
    pub fn remaining(self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(Monotonic::now().0))
    }
}

/// What a worker may ask the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerRequest {
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
    /// The worker's span for this call (`execute_tool`), which the child's run span hangs
    /// from; ignored unless it is in the parent run's trace.
    pub span_id: Option<[u8; 8]>,
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
    /// One result per call, in the request's order.
    Delegated { results: Vec<DelegationResult> },
    /// The request was refused, with the reason.
    Refused { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monotonic_deadline_counts_down_and_stays_at_zero_once_passed() {
        let deadline = Monotonic::after(Duration::from_secs(60));
        let left = deadline.remaining();
        assert!(left <= Duration::from_secs(60) && left >= Duration::from_secs(59));
        assert_eq!(Monotonic(0).remaining(), Duration::ZERO);
    }
}
