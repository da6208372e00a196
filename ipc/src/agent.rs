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
    /// Whom it may delegate to (`[delegation]`); empty targets = it delegates to nobody.
    pub delegation: DelegationSpec,
    /// The file it was loaded from.
    pub source: String,
}

/// Deepest delegation tree by default (`[delegation] max_depth`): the root run is depth 0.
pub const DEFAULT_MAX_DEPTH: u32 = 3;
/// Deepest delegation tree any agent may ask for.
pub const MAX_DEPTH_CAP: u32 = 8;
/// Delegations per turn by default (`[delegation] max_fan_out`).
pub const DEFAULT_MAX_FAN_OUT: u32 = 4;
/// Most delegations one turn may make, whatever an agent asks.
pub const MAX_FAN_OUT_CAP: u32 = 16;
/// Descendant runs of one root run by default (`[delegation] max_descendants`).
pub const DEFAULT_MAX_DESCENDANTS: u32 = 20;
/// Most descendant runs one root run may have, whatever an agent asks.
pub const MAX_DESCENDANTS_CAP: u32 = 256;

/// `[delegation]`: the agents and capabilities an agent may delegate to, and the limits of the
/// tree below it. Each target is offered to the LLM as a tool ([`DelegationSpec::tool_name_for_agent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegationSpec {
    /// Agents by name.
    pub agents: Vec<String>,
    /// Capabilities: one agent that declares it is picked per delegation by `strategy`.
    pub capabilities: Vec<String>,
    pub strategy: RoutingStrategy,
    /// Deepest run below the root (the root is depth 0); the smallest value along a chain wins.
    pub max_depth: u32,
    /// Delegations one turn may make (they run in parallel).
    pub max_fan_out: u32,
    /// Descendant runs of a root run, counted over the whole tree (set by the root's agent).
    pub max_descendants: u32,
    /// May a chain come back to an agent already in it (A → B → A)? Still depth-bounded.
    pub allow_recursion: bool,
    /// Agents it may hand the conversation to: the target answers the user in its place, and
    /// holds the conversation until it hands it on or back.
    pub handoff: Vec<String>,
    /// What of the conversation a delegated child sees.
    pub history: HistoryPolicy,
    /// Agents elsewhere, reached over A2A (`[[delegation.remote]]`).
    #[serde(default)]
    pub remote: Vec<RemoteAgent>,
}

/// An A2A agent elsewhere that an agent may delegate to, by its Agent Card's URL. The toolhost
/// makes the requests, to origins the operator granted (`[a2a] remotes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteAgent {
    /// Its name here: the tool is `delegate_to_{name}`, and events name it.
    pub name: String,
    /// The URL of its Agent Card (`…/.well-known/agent-card.json`).
    pub card: String,
    /// What the LLM is told it does.
    pub description: String,
}

/// What of its parent's conversation a delegated child is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryPolicy {
    /// The task text only.
    Task,
    /// The last three earlier exchanges, each cut to 300 characters.
    Summary,
    /// Everything the parent was given.
    Full,
}

impl HistoryPolicy {
    pub const NAMES: &[&str] = &["task", "summary", "full"];

    pub fn parse(s: &str) -> Option<HistoryPolicy> {
        match s {
            "task" => Some(HistoryPolicy::Task),
            "summary" => Some(HistoryPolicy::Summary),
            "full" => Some(HistoryPolicy::Full),
            _ => None,
        }
    }
}

impl Default for DelegationSpec {
    fn default() -> Self {
        DelegationSpec {
            agents: vec![],
            capabilities: vec![],
            strategy: RoutingStrategy::RoundRobin,
            max_depth: DEFAULT_MAX_DEPTH,
            max_fan_out: DEFAULT_MAX_FAN_OUT,
            max_descendants: DEFAULT_MAX_DESCENDANTS,
            allow_recursion: false,
            handoff: vec![],
            history: HistoryPolicy::Task,
            remote: vec![],
        }
    }
}

/// Prefix of the tool that delegates to an agent by name.
pub const DELEGATE_AGENT_PREFIX: &str = "delegate_to_";
/// Prefix of the tool that delegates to an agent by capability.
pub const DELEGATE_CAPABILITY_PREFIX: &str = "delegate_capability_";
/// Prefix of the tool that hands the conversation to an agent.
pub const HANDOFF_PREFIX: &str = "handoff_to_";

impl DelegationSpec {
    /// The tool through which the LLM delegates to agent `name`.
    pub fn tool_name_for_agent(name: &str) -> String {
        format!("{DELEGATE_AGENT_PREFIX}{name}")
    }

    /// The tool through which the LLM delegates to an agent with `capability`.
    pub fn tool_name_for_capability(capability: &str) -> String {
        format!("{DELEGATE_CAPABILITY_PREFIX}{capability}")
    }

    /// The tool through which the LLM hands the conversation to agent `name`.
    pub fn tool_name_for_handoff(name: &str) -> String {
        format!("{HANDOFF_PREFIX}{name}")
    }

    /// The delegation target a tool name stands for, if it is one of this agent's, and
    /// whether it is a handoff.
    pub fn target_of_tool(&self, tool: &str) -> Option<(DelegateTarget, bool)> {
        if let Some(name) = tool.strip_prefix(DELEGATE_AGENT_PREFIX)
            && self.agents.iter().any(|a| a == name)
        {
            return Some((DelegateTarget::Agent(name.to_string()), false));
        }
        if let Some(cap) = tool.strip_prefix(DELEGATE_CAPABILITY_PREFIX)
            && self.capabilities.iter().any(|c| c == cap)
        {
            return Some((DelegateTarget::Capability(cap.to_string()), false));
        }
        if let Some(name) = tool.strip_prefix(HANDOFF_PREFIX)
            && self.handoff.iter().any(|a| a == name)
        {
            return Some((DelegateTarget::Agent(name.to_string()), true));
        }
        if let Some(name) = tool.strip_prefix(DELEGATE_AGENT_PREFIX)
            && self.remote.iter().any(|r| r.name == name)
        {
            return Some((DelegateTarget::Remote(name.to_string()), false));
        }
        None
    }

    /// Every delegation tool of this agent, in order: agents, capabilities, handoffs, remote agents.
    pub fn tool_names(&self) -> Vec<String> {
        self.agents
            .iter()
            .map(|a| Self::tool_name_for_agent(a))
            .chain(
                self.capabilities
                    .iter()
                    .map(|c| Self::tool_name_for_capability(c)),
            )
            .chain(self.handoff.iter().map(|a| Self::tool_name_for_handoff(a)))
            .chain(
                self.remote
                    .iter()
                    .map(|r| Self::tool_name_for_agent(&r.name)),
            )
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
            && self.capabilities.is_empty()
            && self.handoff.is_empty()
            && self.remote.is_empty()
    }
}

/// Whom a delegation goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DelegateTarget {
    Agent(String),
    Capability(String),
    /// An agent of `[[delegation.remote]]`, by its name there.
    Remote(String),
}

impl std::fmt::Display for DelegateTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DelegateTarget::Agent(a) => write!(f, "agent `{a}`"),
            DelegateTarget::Capability(c) => write!(f, "capability `{c}`"),
            DelegateTarget::Remote(r) => write!(f, "remote agent `{r}`"),
        }
    }
}

/// How one agent is picked among those that declare a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    /// Each in turn (per capability, across the service).
    RoundRobin,
    /// The one with the fewest runs in progress (ties: by name).
    LeastLoaded,
    /// The one whose description and documentation are closest in meaning to the task
    /// (MiniLM embeddings from the memory service, cosine similarity).
    BestMatch,
    /// Contract net: every candidate gets a call for proposals (a short run of its own that
    /// must answer a JSON bid: `confidence` 0–1 and `estimated_cost_usd`), and the task goes
    /// to the highest confidence (ties: the lower cost, then the name).
    ContractNet,
}

impl RoutingStrategy {
    pub const NAMES: &[&str] = &["round_robin", "least_loaded", "best_match", "contract_net"];

    pub fn parse(s: &str) -> Option<RoutingStrategy> {
        match s {
            "round_robin" => Some(RoutingStrategy::RoundRobin),
            "least_loaded" => Some(RoutingStrategy::LeastLoaded),
            "best_match" => Some(RoutingStrategy::BestMatch),
            "contract_net" => Some(RoutingStrategy::ContractNet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoutingStrategy::RoundRobin => "round_robin",
            RoutingStrategy::LeastLoaded => "least_loaded",
            RoutingStrategy::BestMatch => "best_match",
            RoutingStrategy::ContractNet => "contract_net",
        }
    }
}
