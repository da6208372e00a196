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

/// Ask a provider for the next step of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub run_id: String,
    pub agent: String,
    pub provider: String,
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call (already filtered to the agent's allowlist).
    pub tools: Vec<ToolSpec>,
    pub timeout_ms: u64,
}

/// The provider's answer: text, tool calls, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatReply {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Call one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallToolRequest {
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolhostResponse {
    Catalog(Catalog),
    Tools(Vec<ToolSpec>),
    ToolOutput(ToolOutput),
    Chat(ChatReply),
    Packages(Vec<crate::tool::ToolPackageInfo>),
    Installed(Box<crate::tool::ToolPackageInfo>),
    Removed,
    Error(ErrorBody),
}
