//! The public API: requests a client sends to `caxton serve`, and the responses and run events it gets back.
//!
//! The same types travel as bincode frames (the `caxton` CLI) or as newline-delimited JSON (scripts);
//! see the README's "Socket API" section for the JSON shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::AgentSpec;

/// Run an agent once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Name of a loaded agent.
    pub agent: String,
    /// The user's request; fills `{{request}}` in the agent's templates.
    pub input: String,
    /// Extra template values (`{{name}}`), overriding the agent's `[parameters]`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Wall-clock limit for this run; capped by the agent's `[limits] timeout`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Stream the answer's text as [`RunEvent::Token`] events.
    #[serde(default)]
    pub stream: bool,
    /// Emit every LLM exchange as [`RunEvent::LlmExchange`] (what `--record` writes).
    #[serde(default)]
    pub record: bool,
    /// Answer every LLM call from this recording instead of a provider; a request that differs
    /// from the recorded one fails the run with the difference.
    #[serde(default)]
    pub replay: Option<crate::recording::Recording>,
    /// Leave the events of delegated (descendant) runs out of the stream; their answers and
    /// usage still reach the parent and the final usage.
    #[serde(default)]
    pub hide_children: bool,
    /// Start (`"new"`) or continue (its id) a conversation: the run gets its history, and
    /// what the run did is added to it.
    #[serde(default)]
    pub conversation: Option<String>,
    /// Run an agent that declares this capability instead of the named one (`agent` is then
    /// ignored), picked by `strategy`.
    #[serde(default)]
    pub capability: Option<String>,
    /// `round_robin` (default), `least_loaded` or `best_match`.
    #[serde(default)]
    pub strategy: Option<String>,
    /// A W3C `traceparent` (`00-<trace id>-<span id>-<flags>`): the run's spans join the
    /// caller's trace under that span. Ignored when tracing is off or the value is malformed.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// `RunRequest::conversation` that starts a new conversation.
pub const NEW_CONVERSATION: &str = "new";

impl RunRequest {
    /// A plain run of `agent` on `input`.
    pub fn new(agent: impl Into<String>, input: impl Into<String>) -> RunRequest {
        RunRequest {
            agent: agent.into(),
            input: input.into(),
            vars: BTreeMap::new(),
            timeout_ms: None,
            stream: false,
            record: false,
            replay: None,
            hide_children: false,
            conversation: None,
            capability: None,
            strategy: None,
            traceparent: None,
        }
    }
}

/// A request on the public API socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiRequest {
    /// Run an agent; answered by a stream of [`ApiResponse::Event`] ending in a terminal event.
    Run(RunRequest),
    /// List loaded agents.
    ListAgents,
    /// Show one loaded agent.
    ShowAgent { name: String },
    /// Validate an agent file's text against the running service's tools and providers.
    ValidateAgent { file_name: String, source: String },
    /// Service status: uptime, workers, queue, toolhost, counters.
    Status,
    /// Liveness and readiness.
    Health,
    /// The loaded tool packages.
    ListTools,
    /// Install (or with `replace`, upgrade) a tool package.
    InstallTool(crate::toolhost::InstallToolRequest),
    /// Remove an installed tool package.
    RemoveTool { name: String },
    /// Call one tool directly, as the operator (audited with agent `operator`).
    CallTool {
        tool: String,
        /// JSON text of the arguments object.
        arguments: String,
        timeout_ms: Option<u64>,
    },
    /// An operator request to the memory service (`caxton memory …`): store, search, show,
    /// stats, export, import, prune, embed. Grant and worker requests are refused here.
    Memory(crate::memory::MemoryRequest),
    /// `caxton conversation …`.
    Conversation(crate::conversation::ConversationOp),
    /// The whole service's metrics (supervisor, toolhost, memory service) in the Prometheus
    /// text exposition format, as `/metrics` serves them.
    Metrics,
}

/// A response on the public API socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiResponse {
    Event(RunEvent),
    Agents(Vec<AgentSummary>),
    Agent(Box<AgentSpec>),
    Validation(ValidationReport),
    Status(StatusReport),
    Health(HealthReport),
    Tools(Vec<crate::tool::ToolPackageInfo>),
    ToolInstalled(Box<crate::tool::InstalledPackage>),
    ToolRemoved {
        name: String,
    },
    ToolOutput(crate::toolhost::ToolOutput),
    Memory(crate::memory::MemoryResponse),
    Conversation(Box<crate::conversation::Conversation>),
    Conversations(Vec<crate::conversation::ConversationInfo>),
    /// A conversation was closed or deleted.
    Done,
    Error(ErrorBody),
    /// Exposition text (Prometheus text format 0.0.4).
    Metrics(String),
}

/// What kind of failure an error is; scripts match on this, people read `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was malformed or not understood.
    BadRequest,
    /// A replayed run asked the LLM something its recording does not hold.
    Replay,
    /// The peer's credentials are not allowed on this socket.
    PermissionDenied,
    /// The named agent (or thing) does not exist.
    NotFound,
    /// Every worker slot and every queue place is taken; retry later.
    Busy,
    /// The service is draining for shutdown and accepts no new runs.
    ShuttingDown,
    /// The run exceeded its wall-clock limit and its worker was killed.
    Timeout,
    /// The worker process died (signal, panic, non-zero exit) without finishing.
    WorkerCrashed,
    /// The toolhost was unreachable or failed.
    Toolhost,
    /// The memory service was unreachable or failed.
    Memory,
    /// A tool call failed.
    Tool,
    /// The LLM provider failed.
    Llm,
    /// The agent's templates could not be rendered (for example a placeholder with no value).
    Template,
    /// A limit of the agent (`max_turns`, `max_tool_calls`) was reached before an answer.
    LimitExceeded,
    /// The agent definition is invalid.
    InvalidAgent,
    /// The client went away and the run was cancelled.
    Cancelled,
    /// A delegation to another agent was refused before its run started: depth, cycle, fan-out,
    /// descendants, an unknown or unroutable target, or no budget left to give it.
    Delegation,
    /// Anything else; a bug if seen.
    Internal,
}

/// The largest run input (`RunRequest::input`) the supervisor accepts: with the agent
/// definition and the variables it must fit one worker-job frame.
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;

/// An error with its kind and a message that says what failed, where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorKind {
    /// The snake_case name scripts see (`limit_exceeded`, `llm`, …).
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl ErrorBody {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorBody {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Counters of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunUsage {
    pub turns: u32,
    pub llm_calls: u32,
    pub tool_calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Priced with the providers' configured prices (0 for unpriced providers).
    #[serde(default)]
    pub cost_usd: f64,
    pub wall_ms: u64,
    /// Set when the run delegated: its own usage (the fields above) plus its descendants',
    /// per agent and per model. Absent for a run that delegated nothing.
    #[serde(default)]
    pub tree: Option<Box<TreeUsage>>,
}

/// What part of a delegation tree used: runs, calls, tokens and cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    pub runs: u32,
    pub llm_calls: u32,
    pub tool_calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

impl Spent {
    pub fn add(&mut self, other: &Spent) {
        self.runs += other.runs;
        self.llm_calls += other.llm_calls;
        self.tool_calls += other.tool_calls;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_usd += other.cost_usd;
    }

    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// What one event of a run spends (its start is one run), with the model
    /// (`provider/model`) for an LLM reply.
    pub fn of_event(event: &RunEvent) -> Option<(Option<String>, Spent)> {
        match event {
            RunEvent::Started { .. } => Some((
                None,
                Spent {
                    runs: 1,
                    ..Spent::default()
                },
            )),
            RunEvent::LlmReply {
                provider,
                model,
                prompt_tokens,
                completion_tokens,
                cost_usd,
                ..
            } => Some((
                Some(format!("{provider}/{model}")),
                Spent {
                    llm_calls: 1,
                    prompt_tokens: *prompt_tokens,
                    completion_tokens: *completion_tokens,
                    cost_usd: *cost_usd,
                    ..Spent::default()
                },
            )),
            RunEvent::ToolCall { .. } => Some((
                None,
                Spent {
                    tool_calls: 1,
                    ..Spent::default()
                },
            )),
            _ => None,
        }
    }
}

/// A run's usage together with all its descendants' (killed ones included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TreeUsage {
    /// Descendant runs.
    pub descendants: u32,
    /// The run and its descendants.
    pub total: Spent,
    /// The same, per agent name.
    pub by_agent: BTreeMap<String, Spent>,
    /// The same, per model as the provider reported it (`provider/model`).
    pub by_model: BTreeMap<String, Spent>,
}

impl RunUsage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// This run's own usage (without descendants) as one run's [`Spent`].
    pub fn own(&self) -> Spent {
        Spent {
            runs: 1,
            llm_calls: self.llm_calls,
            tool_calls: self.tool_calls,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cost_usd: self.cost_usd,
        }
    }

    /// The whole tree's usage: the tree total when the run delegated, else its own.
    pub fn total(&self) -> Spent {
        match &self.tree {
            Some(t) => t.total.clone(),
            None => self.own(),
        }
    }

    /// Adds what one event reports (LLM replies and tool calls); used to follow a run live.
    pub fn count(&mut self, event: &RunEvent) {
        match event {
            RunEvent::TurnStarted { turn } => self.turns = *turn,
            RunEvent::LlmReply {
                prompt_tokens,
                completion_tokens,
                cost_usd,
                ..
            } => {
                self.llm_calls += 1;
                self.prompt_tokens += prompt_tokens;
                self.completion_tokens += completion_tokens;
                self.cost_usd += cost_usd;
            }
            RunEvent::ToolCall { .. } => self.tool_calls += 1,
            _ => {}
        }
    }
}

/// Something that happened during a run, streamed to the client in order.
///
/// A run's stream always ends with exactly one terminal event: `Finished` or `Failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEvent {
    /// A worker process was started for the run.
    Started {
        run_id: String,
        agent: String,
        worker_pid: u32,
    },
    /// The agent loop began turn `turn` (1-based).
    TurnStarted { turn: u32 },
    /// The worker asked the LLM provider for the next step.
    /// (`model: None` = the provider's default)
    LlmCall {
        turn: u32,
        provider: String,
        model: Option<String>,
    },
    /// Answer text as the model produces it (only when the run request asked to `stream`).
    Token { text: String },
    /// An LLM call failed and is retried on the same provider after `wait_ms`.
    LlmRetry {
        provider: String,
        attempt: u32,
        error: String,
        wait_ms: u64,
    },
    /// A provider failed for good and the agent's next fallback provider is tried.
    LlmFallback {
        from: String,
        to: String,
        error: String,
    },
    /// An LLM call answered: who answered and what it cost.
    LlmReply {
        turn: u32,
        provider: String,
        model: String,
        prompt_tokens: u64,
        completion_tokens: u64,
        cost_usd: f64,
        /// Tool calls the model asked for.
        tool_calls: u32,
    },
    /// Memories added to the prompt context (`[memory] enabled`), as the lines the LLM sees.
    MemoryRecalled { memories: Vec<String> },
    /// The interaction was stored in memory after the answer (`[memory] auto_store`); `error`
    /// says why it was not.
    MemoryStored {
        entity: String,
        error: Option<String>,
    },
    /// One LLM request and its reply, for `--record` (only when the run request asked to `record`).
    LlmExchange(Box<crate::recording::Exchange>),
    /// The LLM asked for a tool call; `arguments` is JSON text.
    ToolCall {
        call_id: String,
        tool: String,
        arguments: String,
    },
    /// A tool call finished; `output` is the tool's text (or the error when `ok` is false).
    ToolResult {
        call_id: String,
        tool: String,
        ok: bool,
        output: String,
        duration_us: u64,
    },
    /// An event of a descendant run (a delegation), tagged with its place in the tree. Its
    /// terminal event does not end the stream: only the root run's own does.
    Child(Box<ChildEvent>),
    /// A delegation by capability chose an agent: the strategy, and each candidate's score
    /// (`best_match`: cosine similarity; `least_loaded`: runs in progress; `round_robin`: its turn).
    Routed {
        call_id: String,
        capability: String,
        strategy: String,
        chosen: String,
        candidates: Vec<RouteCandidate>,
    },
    /// The run belongs to conversation `id` (its `turn`-th run); `agent` holds the conversation
    /// and answers (after a handoff, not necessarily the agent the request named).
    Conversation {
        id: String,
        turn: u32,
        agent: String,
    },
    /// The agent handed the conversation to `to`, which answers the user from here on.
    Handoff {
        call_id: String,
        from: String,
        to: String,
        reason: String,
    },
    /// Terminal: the agent answered.
    Finished {
        run_id: String,
        answer: String,
        usage: RunUsage,
    },
    /// Terminal: the run failed; `usage` is what it used until then.
    Failed {
        run_id: String,
        error: ErrorBody,
        #[serde(default)]
        usage: RunUsage,
    },
}

/// An event of a delegated run, and where the run sits in its tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildEvent {
    pub run_id: String,
    pub parent_run_id: String,
    /// The parent's tool call this run answers.
    pub call_id: String,
    pub agent: String,
    /// 1 for a child of the root run, 2 for a grandchild, …
    pub depth: u32,
    pub event: RunEvent,
}

/// One agent a capability could have been routed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteCandidate {
    pub agent: String,
    pub score: f64,
}

impl RunEvent {
    /// True for the event that ends a run's stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, RunEvent::Finished { .. } | RunEvent::Failed { .. })
    }
}

/// One line of `caxton agent list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: Vec<String>,
    pub tools: Vec<String>,
    pub provider: String,
    pub source: String,
    /// Set when this is the version loaded before, kept serving because its file now fails to
    /// load or its name is now defined twice: what is wrong. (Never skipped when empty: the
    /// frames are bincode, which has no field names to tell a missing field by.)
    #[serde(default)]
    pub problem: Option<String>,
}

/// A problem found in an agent file, with its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line and column; 0 when the problem has no position (for example an unreadable file).
    pub line: u32,
    pub column: u32,
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )?;
        } else {
            write!(f, "{}: {}", self.file, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// The result of validating an agent file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The agent's name when the file is valid.
    pub agent: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// A worker process currently running a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub run_id: String,
    pub agent: String,
    /// The run that delegated this one; `None` for a run a client started.
    #[serde(default)]
    pub parent_run_id: Option<String>,
    pub pid: u32,
    pub age_ms: u64,
    /// What the run has used so far.
    pub usage: RunUsage,
}

/// A run that ended, as `caxton status` lists the most recent ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub agent: String,
    /// `finished`, or the failure's kind (`timeout`, `limit_exceeded`, `llm`, …).
    pub outcome: String,
    pub usage: RunUsage,
    /// Seconds since the Unix epoch when it ended.
    pub ended_unix: u64,
}

/// State of a supervised child service (the toolhost, the memory service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Starting,
    Running {
        pid: u32,
        since_ms: u64,
    },
    /// The process exists but has not answered the supervisor's pings for `silent_ms`; it is
    /// restarted once that reaches `[health] restart_unresponsive_after`.
    Unresponsive {
        pid: u32,
        since_ms: u64,
        silent_ms: u64,
    },
    Restarting {
        attempt: u32,
        last_exit: String,
    },
    Stopped,
}

/// Cumulative counters since the service started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub runs_started: u64,
    pub runs_finished: u64,
    pub runs_failed: u64,
    pub runs_timed_out: u64,
    pub workers_crashed: u64,
    pub busy_rejections: u64,
    pub toolhost_restarts: u64,
    pub connections_rejected: u64,
    pub llm_calls: u64,
    pub tool_calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

/// `caxton status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub uptime_ms: u64,
    pub agents: u32,
    pub workers: Vec<WorkerInfo>,
    pub max_workers: u32,
    /// Pre-spawned workers waiting for a run.
    pub ready_workers: u32,
    pub queue_depth: u32,
    pub queue_capacity: u32,
    pub toolhost: ServiceState,
    /// `None` when the memory service is disabled (`[memory] enabled = false`).
    pub memory: Option<ServiceState>,
    pub memory_restarts: u64,
    pub draining: bool,
    pub counters: Counters,
    /// The most recent ended runs, newest first.
    pub recent_runs: Vec<RunSummary>,
    /// What is wrong in the agents directory: files skipped or failing, names defined twice.
    #[serde(default)]
    pub agent_problems: Vec<Diagnostic>,
    /// Totals per agent since the service started (`caxton top` shows their rates).
    #[serde(default)]
    pub by_agent: Vec<AgentTotals>,
}

/// One agent's runs since the service started, delegated ones included.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentTotals {
    pub agent: String,
    pub runs_started: u64,
    pub runs_finished: u64,
    pub runs_failed: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// Wall times in milliseconds of its last ended runs (at most [`RECENT_DURATIONS`]),
    /// oldest first.
    pub recent_ms: Vec<u64>,
}

/// Run durations kept per agent for [`AgentTotals::recent_ms`].
pub const RECENT_DURATIONS: usize = 128;

/// `caxton health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The process answers.
    pub live: bool,
    /// Everything can be served right now: not draining, and the toolhost and the memory
    /// service (when enabled) are running and answer their pings.
    pub ready: bool,
    pub detail: String,
    pub toolhost: ServiceState,
    /// `None` when the memory service is disabled.
    pub memory: Option<ServiceState>,
}
