//! Requests a worker (or the supervisor) sends to `caxton-toolhost`: the catalog, tool calls, LLM chats.
//!
//! JSON values (tool arguments, input schemas) travel as JSON text, because bincode is not self-describing.

use serde::{Deserialize, Serialize};

use crate::api::ErrorBody;

/// A tool an agent can call, as its MCP server describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments, as JSON text.
    pub input_schema: String,
    /// The tool server (WASM module) that provides it.
    pub server: String,
}

/// An LLM provider configured in the toolhost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub name: String,
    pub kind: String,
    pub default_model: String,
}

/// What the toolhost offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub tools: Vec<ToolSpec>,
    pub providers: Vec<ProviderInfo>,
}

/// A tool call requested by the LLM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatMessage {
    System {
        content: String,
    },
    User {
        content: String,
    },
    Assistant {
        content: Option<String>,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        call_id: String,
        name: String,
        content: String,
        is_error: bool,
    },
}

/// Whether and which tool the model must call this turn (`tool_choice` in `[llm]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// The model must call some tool.
    Required,
    /// The model must not call tools.
    None,
    /// The model must call this tool.
    Tool(String),
}

impl ToolChoice {
    /// Parses the `[llm] tool_choice` spelling: `auto`, `required`, `none`, or a tool name.
    pub fn parse(s: &str) -> ToolChoice {
        match s {
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            "none" => ToolChoice::None,
            tool => ToolChoice::Tool(tool.to_string()),
        }
    }
}

impl std::fmt::Display for ToolChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolChoice::Auto => f.write_str("auto"),
            ToolChoice::Required => f.write_str("required"),
            ToolChoice::None => f.write_str("none"),
            ToolChoice::Tool(name) => f.write_str(name),
        }
    }
}

/// Ask a provider for the next step of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// On a worker's connection the toolhost sets these two from the run's grant: what the
    /// worker sends here is ignored.
    pub run_id: String,
    pub agent: String,
    pub provider: String,
    /// Providers tried in order when `provider` fails (after its retries); each switch is
    /// reported as [`ChatProgress::Fallback`].
    pub fallback: Vec<String>,
    /// `None` = the provider's configured model.
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Sampling seed (the local provider; passed on where an API accepts one).
    pub seed: Option<u64>,
    /// Completion token cap of this call.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    pub tool_choice: ToolChoice,
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call (already filtered to the agent's allowlist).
    pub tools: Vec<ToolSpec>,
    /// Overall deadline of this chat, including retries and fallbacks.
    pub timeout_ms: u64,
    /// Send [`ChatProgress::Text`] frames as tokens arrive, before the final reply.
    pub stream: bool,
    /// What the run may still spend; the toolhost refuses a call whose prompt alone would
    /// overspend and caps the completion to what is left.
    pub budget: ChatBudget,
}

/// A run's remaining budget, as of this chat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatBudget {
    /// Prompt plus completion tokens left.
    pub tokens_left: Option<u64>,
    /// Dollars left, priced with the answering provider's prices.
    pub usd_left: Option<f64>,
}

/// The provider's answer: text, tool calls, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    /// The provider that answered (differs from the requested one after a fallback).
    pub provider: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Priced with the answering provider's configured prices; 0 when it has none.
    pub cost_usd: f64,
}

/// Sent by the toolhost while a chat is in progress, before its final `Chat` (or `Error`) frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatProgress {
    /// Streamed answer text (only when the request asked for `stream`).
    Text { text: String },
    /// An attempt failed and will be retried after `wait_ms`.
    Retry {
        provider: String,
        attempt: u32,
        error: String,
        wait_ms: u64,
    },
    /// `from` failed for good; `to` is tried next.
    Fallback {
        from: String,
        to: String,
        error: String,
    },
}

/// Call one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallToolRequest {
    /// On a worker's connection the toolhost sets these two from the run's grant (they go into
    /// the audit log): what the worker sends here is ignored. The supervisor's operator calls
    /// name themselves.
    pub run_id: String,
    pub agent: String,
    pub tool: String,
    /// JSON text of the arguments object.
    pub arguments: String,
    pub timeout_ms: u64,
}

/// The tool's result (MCP `CallToolResult`, text content joined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolOutput {
    pub content: String,
    /// The tool reported an error (MCP `isError`); the LLM sees it as a failed call.
    pub is_error: bool,
    pub duration_us: u64,
}

/// Install a tool package: its `tool.toml` text and module bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallToolRequest {
    pub manifest: String,
    pub wasm: Vec<u8>,
    /// Replace an installed package of the same name.
    pub replace: bool,
    /// With `replace`: accept a new version that requests more (directories, write access,
    /// origins, environment, secrets) than the installed one. Without it such a replacement is
    /// refused, since the `[tools.<name>]` grant applies to whatever is installed under the name.
    #[serde(default)]
    pub allow_new_requests: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolhostRequest {
    Catalog,
    /// The specs of the named tools only (what a worker needs for its agent); unknown names are
    /// left out.
    Tools {
        names: Vec<String>,
    },
    CallTool(CallToolRequest),
    Chat(ChatRequest),
    /// The loaded tool packages.
    ListPackages,
    InstallPackage(InstallToolRequest),
    RemovePackage {
        name: String,
    },
    /// The supervisor's health check: answered `Pong` at once by the connection's task.
    Ping,
    /// Supervisor only: what the worker holding `token` may do for one run.
    RegisterRun {
        token: String,
        grant: RunGrant,
    },
    /// Supervisor only: the run is over; connections attached with `token` are refused from now.
    RevokeRun {
        token: String,
    },
    /// Supervisor only: set aside part of what the run under `token` has left, for a delegated
    /// child: per budget the grant has, at most `want` and at most the remainder divided by
    /// `parts` (a turn's delegations share it evenly). It counts as spent until settled.
    /// Answered by `Reserved` with what was set aside.
    ReserveRun {
        token: String,
        want: Allowance,
        parts: u32,
    },
    /// Supervisor only: the child ended; what it reserved and did not use is given back.
    SettleRun {
        token: String,
        reserved: Allowance,
        used: Allowance,
    },
    /// Worker: bind this connection to the run registered under `token`. Until then a worker
    /// may only ping. Answered with `Tools`: the specs of the tools the run's grant allows.
    Attach {
        token: String,
    },
    /// Supervisor only: the toolhost's metrics in the Prometheus text format (`Metrics`).
    Metrics,
    /// Supervisor only: send a task to an A2A agent elsewhere (a remote delegation) and wait
    /// for its answer. Answered by `A2aAnswer` or `Error`.
    A2aSend(A2aSendRequest),
}

/// A delegation to a remote A2A agent, as the supervisor asks the toolhost to make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct A2aSendRequest {
    /// The delegating run and its agent (for the log line), and the call (the message's id).
    pub run_id: String,
    pub agent: String,
    pub call_id: String,
    /// The remote agent's name in the agent file, and its card's URL.
    pub remote: String,
    pub card: String,
    /// The task: the message's text.
    pub task: String,
    /// The whole exchange's deadline.
    pub timeout_ms: u64,
    /// The delegating call's trace context, sent on as `traceparent`.
    pub traceparent: Option<String>,
}

/// A remote A2A agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct A2aAnswer {
    /// The task's id there.
    pub task_id: String,
    /// Its answer: the text of its artifacts (or its final message).
    pub text: String,
}

/// What one run may do in the toolhost, registered by the supervisor under a random token that
/// only the run's worker receives. Every tool call and chat of the worker is checked against it
/// and audited under its identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunGrant {
    pub agent: String,
    pub run_id: String,
    /// The only tools the run may call (memory tools are served by the memory service).
    pub tools: Vec<String>,
    /// The only providers the run may ask: the agent's provider and its fallbacks.
    pub providers: Vec<String>,
    /// Tool calls the run may make.
    pub max_tool_calls: u32,
    /// Prompt plus completion tokens the run may spend.
    pub max_tokens: Option<u64>,
    /// Dollars the run may spend.
    pub max_cost_usd: Option<f64>,
    /// The run must not change anything (shadow runs, to come); carried, not yet enforced by
    /// tools.
    pub read_only: bool,
    /// A delegated run: when its grant is revoked, the toolhost replaces what was reserved for
    /// it in its parent's grant by what it spent by its own count (its children's included).
    pub settle_to: Option<SettleTo>,
    /// The agent's model for its own provider (`None`: the provider's default). Every chat of
    /// the run asks this one, whatever the worker's request says.
    pub model: Option<String>,
}

/// Where a delegated run's spending is settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettleTo {
    /// The parent run's grant token.
    pub token: String,
    /// What `ReserveRun` set aside for this run there.
    pub reserved: Allowance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolhostResponse {
    Catalog(Catalog),
    Tools(Vec<ToolSpec>),
    ToolOutput(ToolOutput),
    Chat(ChatReply),
    /// Progress of a chat; any number precede its `Chat` or `Error` frame.
    ChatProgress(ChatProgress),
    Packages(Vec<crate::tool::ToolPackageInfo>),
    Installed(Box<crate::tool::InstalledPackage>),
    Removed,
    Error(ErrorBody),
    Pong,
    /// A grant was registered, revoked or settled.
    Ok,
    /// What `ReserveRun` set aside.
    Reserved(Allowance),
    /// The answer to `Metrics`: exposition text of the toolhost's own families.
    Metrics(String),
    A2aAnswer(A2aAnswer),
}

/// Amounts of a run's budgets; `None` = not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Allowance {
    pub tool_calls: Option<u32>,
    pub tokens: Option<u64>,
    pub cost_usd: Option<f64>,
}
