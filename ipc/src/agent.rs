//! A validated agent definition as the supervisor hands it to a worker.
//!
//! Parsing and validation of the TOML file live in the supervisor (`supervisor/src/agent_file.rs`);
//! this is the checked result that crosses the process boundary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::toolhost::ToolChoice;

/// Memory settings of an agent (`[memory]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySpec {
    pub enabled: bool,
    /// Where this agent's memories go: `agent` (private to it), `workspace` or `global`.
    pub scope: String,
    /// The workspace's name, for `scope = "workspace"` or `read = ["workspace"]`.
    pub workspace: String,
    /// Further scope kinds it may read (never write): `agent`, `workspace`, `global`.
    pub read: Vec<String>,
    pub auto_store: bool,
    pub search_limit: u32,
    pub min_similarity: f32,
}

impl Default for MemorySpec {
    /// Memory off; when turned on: private to the agent, 5 memories of similarity ≥ 0.7 recalled.
    fn default() -> Self {
        MemorySpec {
            enabled: false,
            scope: "agent".into(),
            workspace: "default".into(),
            read: vec![],
            auto_store: false,
            search_limit: 5,
            min_similarity: 0.7,
        }
    }
}

impl MemorySpec {
    /// The concrete scope for a kind: `agent` is always this agent's own.
    pub fn resolve(&self, agent: &str, kind: &str) -> String {
        match kind {
            "agent" => format!("agent:{agent}"),
            "workspace" => format!("workspace:{}", self.workspace),
            _ => "global".to_string(),
        }
    }

    /// The grant the memory service enforces for a run of `agent`.
    pub fn grant(&self, agent: &str, run_id: &str) -> crate::memory::MemoryGrant {
        let write = self.resolve(agent, &self.scope);
        let mut read = vec![write.clone()];
        for kind in &self.read {
            let s = self.resolve(agent, kind);
            if !read.contains(&s) {
                read.push(s);
            }
        }
        crate::memory::MemoryGrant {
            agent: agent.to_string(),
            run_id: run_id.to_string(),
            write,
            read,
        }
    }
}

/// LLM settings of an agent (`[llm]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmSpec {
    /// Name of a provider configured in the toolhost.
    pub provider: String,
    /// Model name passed to the provider; `None` = the provider's default.
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    /// Completion token cap of each LLM call.
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    /// Providers to try, in order, when `provider` fails.
    pub fallback: Vec<String>,
    pub tool_choice: ToolChoicePlan,
}

/// `tool_choice` per turn: `"auto"` (or any single value) applies to every turn; a list gives
/// turn 1, turn 2, … and later turns are `auto`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolChoicePlan {
    pub turns: Vec<ToolChoice>,
    /// For turns after the list.
    pub then: ToolChoice,
}

impl ToolChoicePlan {
    /// The choice for `turn` (1-based).
    pub fn for_turn(&self, turn: u32) -> ToolChoice {
        self.turns
            .get(turn.saturating_sub(1) as usize)
            .unwrap_or(&self.then)
            .clone()
    }
}

/// Limits of one run of an agent (`[limits]`). Budgets are checked before each LLM or tool call,
/// so a run stops before it would spend past them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsSpec {
    pub max_turns: u32,
    pub max_tool_calls: u32,
    pub timeout_ms: u64,
    /// Per tool call deadline.
    pub tool_timeout_ms: u64,
    /// Prompt plus completion tokens of the whole run.
    pub max_tokens: Option<u64>,
    /// Cost of the whole run, priced by the providers' configured prices.
    pub max_cost_usd: Option<f64>,
    /// The worker process's address space (RLIMIT_AS), in MiB.
    pub memory_mb: u32,
    /// The worker process's CPU time (RLIMIT_CPU), in milliseconds (applied in whole seconds).
    pub cpu_time_ms: u64,
    /// The worker process's open file descriptors (RLIMIT_NOFILE).
    pub open_files: u32,
}

/// A validated agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSpec {
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: Vec<String>,
    /// The only tools this agent may call.
    pub tools: Vec<String>,
    pub system_prompt: String,
    pub user_prompt_template: String,
    pub documentation: Option<String>,
    pub memory: MemorySpec,
    /// `[parameters]`, each value rendered as template text (strings verbatim, others as TOML).
    pub parameters: BTreeMap<String, String>,
    pub llm: LlmSpec,
    pub limits: LimitsSpec,
    /// The file it was loaded from.
    pub source: String,
}
