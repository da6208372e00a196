//! Agent TOML files: parsing, validation, and diagnostics with file, line, column and a hint.
//!
//! Every diagnostic about a key starts with its path (`` `limits.max_turns`: 0 is outside 1–100 ``);
//! serde and TOML errors are mapped back to the key at their span (see `keys`) and reworded from
//! the format's schema: what the key expects, what was found, and the right form as the hint.
//!
//! The format is the seed's (`name`, `version`, `description`, `capabilities`, `tools`,
//! `system_prompt`, `user_prompt_template`, `documentation`, `[memory]`, `[parameters]`) plus
//! `[llm]`, `[limits]` and `[delegation]`. Unknown keys are errors. A prompt key written after `[parameters]`
//! belongs to `parameters` in TOML; that trap is detected and explained.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use caxton_ipc::agent::{
    AgentSpec, DelegationSpec, HistoryPolicy, LimitsSpec, LlmSpec, MAX_DEPTH_CAP,
    MAX_DESCENDANTS_CAP, MAX_FAN_OUT_CAP, MemorySpec, RoutingStrategy, ToolChoicePlan,
};
use caxton_ipc::api::Diagnostic;
use caxton_ipc::template;
use caxton_ipc::toolhost::{Catalog, ToolChoice};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use keys::{KeyPath, Kind, Resolved, Segment};

mod keys;

/// Largest agent file accepted (1 MiB); larger ones are refused before reading.
pub const MAX_AGENT_FILE_BYTES: u64 = 1024 * 1024;
/// Default `[limits] max_turns`.
pub const DEFAULT_MAX_TURNS: u32 = 8;
/// Highest `[limits] max_turns` accepted.
pub const MAX_MAX_TURNS: u32 = 100;
/// Default `[limits] max_tool_calls`.
pub const DEFAULT_MAX_TOOL_CALLS: u32 = 32;
/// Provider used when an agent's `[llm]` names none: the embedded model, which needs no key.
pub const DEFAULT_PROVIDER: &str = "local";
/// Keys that belong at the top of the file and are often swallowed by a preceding `[parameters]`.
const TOP_LEVEL_TEXT_KEYS: &[&str] = &[
    "system_prompt",
    "user_prompt_template",
    "documentation",
    "description",
];
/// Hint for a worker limit outside what the server allows.
const LIMIT_HINT: &str =
    "ask for at most the server's [workers] value, or leave the key out to get exactly that";
/// Memory scopes.
const SCOPES: &[&str] = &["agent", "workspace", "global"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: Spanned<String>,
    version: Option<String>,
    description: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    tools: Vec<Spanned<String>>,
    system_prompt: Option<Spanned<String>>,
    user_prompt_template: Option<Spanned<String>>,
    documentation: Option<String>,
    memory: Option<RawMemory>,
    parameters: Option<BTreeMap<String, toml::Value>>,
    llm: Option<RawLlm>,
    limits: Option<RawLimits>,
    delegation: Option<RawDelegation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelegation {
    #[serde(default)]
    agents: Vec<Spanned<String>>,
    #[serde(default)]
    capabilities: Vec<Spanned<String>>,
    strategy: Option<Spanned<String>>,
    max_depth: Option<Spanned<u32>>,
    max_fan_out: Option<Spanned<u32>>,
    max_descendants: Option<Spanned<u32>>,
    #[serde(default)]
    allow_recursion: bool,
    #[serde(default)]
    handoff: Vec<Spanned<String>>,
    history: Option<Spanned<String>>,
    #[serde(default)]
    remote: Vec<Spanned<RawRemote>>,
}

/// One `[[delegation.remote]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    name: String,
    card: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    #[serde(default)]
    enabled: bool,
    scope: Option<Spanned<String>>,
    workspace: Option<Spanned<String>>,
    #[serde(default)]
    read: Vec<Spanned<String>>,
    #[serde(default)]
    auto_store: bool,
    search_limit: Option<u32>,
    min_similarity: Option<Spanned<f32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLlm {
    provider: Option<Spanned<String>>,
    model: Option<String>,
    temperature: Option<Spanned<f32>>,
    top_p: Option<Spanned<f32>>,
    seed: Option<u64>,
    max_tokens: Option<u32>,
    #[serde(default)]
    stop: Vec<String>,
    #[serde(default)]
    fallback: Vec<Spanned<String>>,
    tool_choice: Option<Spanned<RawToolChoice>>,
}

/// `tool_choice = "auto"` (every turn) or `tool_choice = ["calculate", "none"]` (per turn).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawToolChoice {
    Every(String),
    PerTurn(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_turns: Option<Spanned<u32>>,
    max_tool_calls: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    tool_timeout: Option<Duration>,
    max_tokens: Option<Spanned<u64>>,
    max_cost_usd: Option<Spanned<f64>>,
    memory_mb: Option<Spanned<u32>>,
    cpu_time: Option<Spanned<String>>,
    open_files: Option<Spanned<u32>>,
}

/// What an agent is validated against.
#[derive(Debug, Clone)]
pub struct ValidationContext<'a> {
    /// Tools and providers of the toolhost; `None` skips those checks.
    pub catalog: Option<&'a Catalog>,
    pub default_timeout: Duration,
    pub default_tool_timeout: Duration,
    /// The server's worker limits: an agent's defaults, and the most it may ask for.
    pub worker_caps: WorkerCaps,
}

/// The server's `[workers]` resource limits of a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCaps {
    pub memory_mb: u32,
    pub cpu_time: Duration,
    pub open_files: u32,
}

impl WorkerCaps {
    pub fn of(workers: &caxton_config::WorkersConfig) -> WorkerCaps {
        WorkerCaps {
            memory_mb: workers.memory_mb,
            cpu_time: workers.cpu_time,
            open_files: workers.open_files,
        }
    }
}

impl Default for WorkerCaps {
    fn default() -> Self {
        WorkerCaps::of(&caxton_config::WorkersConfig::default())
    }
}

/// Reads and validates one agent file.
pub fn load_file(path: &Path, ctx: &ValidationContext<'_>) -> Result<AgentSpec, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let whole = |message: String, hint: Option<&str>| {
        vec![Diagnostic {
            file: file.clone(),
            line: 0,
            column: 0,
            message,
            hint: hint.map(str::to_string),
        }]
    };
    let meta =
        std::fs::metadata(path).map_err(|e| whole(format!("cannot read the file: {e}"), None))?;
    if meta.len() > MAX_AGENT_FILE_BYTES {
        return Err(whole(
            format!(
                "file is {} bytes; agent files may be at most {MAX_AGENT_FILE_BYTES} bytes",
                meta.len()
            ),
            Some("move long documentation elsewhere and keep the agent definition small"),
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| whole(format!("cannot read the file: {e}"), None))?;
    parse(&file, &bytes, ctx)
}

/// Parses and validates agent file contents; `file` names it in diagnostics.
pub fn parse(
    file: &str,
    bytes: &[u8],
    ctx: &ValidationContext<'_>,
) -> Result<AgentSpec, Vec<Diagnostic>> {
    let diag = |offset: Option<usize>, src: &str, message: String, hint: Option<String>| {
        let (line, column) = offset.map(|o| line_col(src, o)).unwrap_or((0, 0));
        Diagnostic {
            file: file.to_string(),
            line,
            column,
            message,
            hint,
        }
    };
    if bytes.len() as u64 > MAX_AGENT_FILE_BYTES {
        return Err(vec![diag(
            None,
            "",
            format!(
                "file is {} bytes; agent files may be at most {MAX_AGENT_FILE_BYTES} bytes",
                bytes.len()
            ),
            Some("move long documentation elsewhere and keep the agent definition small".into()),
        )]);
    }
    let src = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            return Err(vec![diag(
                None,
                "",
                format!(
                    "not UTF-8 text (invalid byte at offset {}); is this really an agent TOML file?",
                    e.valid_up_to()
                ),
                Some("save the agent file as UTF-8 text".into()),
            )]);
        }
    };
    // Parsed once into a document with spans: syntax errors are found here, serde errors are
    // mapped back to the key they are about, and list items are found by index.
    let (doc, syntax_errors) = DeTable::parse_recoverable(src);
    let read = match syntax_errors.first() {
        Some(e) => Err(syntax_problem(doc.get_ref(), src, e)),
        None => RawAgent::deserialize(toml::de::Deserializer::from(doc.clone()))
            .map_err(|e| serde_problem(doc.get_ref(), e)),
    };
    let raw = match read {
        Ok(raw) => raw,
        Err(found) => {
            // A missing prompt may sit inside [parameters]: say that rather than "missing".
            if let Some((key, offset)) = parameters_trap(src) {
                return Err(vec![diag(
                    Some(offset),
                    src,
                    trap_message(&key),
                    Some(trap_hint()),
                )]);
            }
            return Err(vec![diag(found.offset, src, found.message, found.hint)]);
        }
    };
    let doc = doc.into_inner();
    let mut problems = Vec::new();
    let mut problem = |offset: usize, key: KeyPath, message: String, hint: Option<String>| {
        problems.push(diag(Some(offset), src, format!("`{key}`: {message}"), hint))
    };

    let name = raw.name.get_ref().clone();
    if !valid_agent_name(&name) {
        problem(
            raw.name.span().start,
            KeyPath::of(&["name"]),
            format!("bad agent name `{name}`"),
            Some(
                "start with a letter; use letters, digits, `-` and `_`; at most 64 characters"
                    .into(),
            ),
        );
    }
    let parameters = raw.parameters.unwrap_or_default();
    for key in TOP_LEVEL_TEXT_KEYS {
        if parameters.contains_key(*key) {
            let path = KeyPath::of(&["parameters", key]);
            let offset = keys::key_span(&doc, &path)
                .map(|s| s.start)
                .or_else(|| parameters_trap(src).map(|t| t.1))
                .unwrap_or(0);
            problem(offset, path, trap_detail(key), Some(trap_hint()));
        }
    }
    let system_prompt = match raw.system_prompt {
        Some(p) if !p.get_ref().trim().is_empty() => p,
        Some(p) => {
            problem(
                p.span().start,
                KeyPath::of(&["system_prompt"]),
                "the prompt is empty".into(),
                Some("say who the agent is and what it does".into()),
            );
            p
        }
        None => {
            if !parameters.contains_key("system_prompt") {
                problem(
                    0,
                    KeyPath::of(&["system_prompt"]),
                    "required key is missing".into(),
                    Some(
                        "add system_prompt = '''…''' near the top of the file, before any [table]"
                            .into(),
                    ),
                );
            }
            Spanned::new(0..0, String::new())
        }
    };
    let user_prompt_template = raw
        .user_prompt_template
        .unwrap_or_else(|| Spanned::new(0..0, "{{request}}".to_string()));
    for (key, text) in [
        ("system_prompt", &system_prompt),
        ("user_prompt_template", &user_prompt_template),
    ] {
        if let Err(e) = template::placeholders(text.get_ref()) {
            // The span covers the quoted value; the opening quote(s) precede the text.
            let base = text.span().start + quote_len(src, text.span().start);
            problem(
                base + e.offset(),
                KeyPath::of(&[key]),
                e.to_string(),
                Some("placeholders look like {{request}} or {{name}}".into()),
            );
        }
    }

    let memory = match raw.memory {
        None => MemorySpec::default(),
        Some(m) => {
            let scope = m.scope.map(|s| {
                if !SCOPES.contains(&s.get_ref().as_str()) {
                    problem(
                        s.span().start,
                        KeyPath::of(&["memory", "scope"]),
                        format!("unknown memory scope `{}`", s.get_ref()),
                        Some(format!("use one of: {}", SCOPES.join(", "))),
                    );
                }
                s.into_inner()
            });
            let min_similarity = m.min_similarity.map(|v| {
                if !(0.0..=1.0).contains(v.get_ref()) {
                    problem(
                        v.span().start,
                        KeyPath::of(&["memory", "min_similarity"]),
                        format!("{} is outside 0.0–1.0", v.get_ref()),
                        Some("0.0 recalls anything, 1.0 only near-identical memories; the default is 0.7".into()),
                    );
                }
                v.into_inner()
            });
            let mut read = Vec::new();
            for (i, r) in m.read.into_iter().enumerate() {
                if !SCOPES.contains(&r.get_ref().as_str()) {
                    problem(
                        r.span().start,
                        KeyPath::of(&["memory", "read"]).index(i),
                        format!("unknown memory scope `{}`", r.get_ref()),
                        Some(format!("use scope kinds: {}", SCOPES.join(", "))),
                    );
                }
                read.push(r.into_inner());
            }
            let workspace = m.workspace.map(|w| {
                if let Err(e) =
                    caxton_ipc::memory::check_scope(&format!("workspace:{}", w.get_ref()))
                {
                    problem(
                        w.span().start,
                        KeyPath::of(&["memory", "workspace"]),
                        format!("bad workspace name `{}`: {e}", w.get_ref()),
                        Some("name the workspace with letters, digits, `-`, `_` and `.`, e.g. workspace = \"team\"".into()),
                    );
                }
                w.into_inner()
            });
            let d = MemorySpec::default();
            MemorySpec {
                enabled: m.enabled,
                workspace: workspace.unwrap_or(d.workspace),
                read,
                scope: scope.unwrap_or(d.scope),
                auto_store: m.auto_store,
                search_limit: m.search_limit.unwrap_or(d.search_limit),
                min_similarity: min_similarity.unwrap_or(d.min_similarity),
            }
        }
    };

    let (delegation, delegation_tools) = match raw.delegation {
        None => (DelegationSpec::default(), Vec::new()),
        Some(d) => check_delegation(d, &name, &raw.tools, &mut problem),
    };

    let raw_llm = raw.llm.unwrap_or_default();
    let provider_written = raw_llm.provider.is_some();
    let mut check_provider = |p: &Spanned<String>, key: KeyPath, written: bool| {
        if let Some(cat) = ctx.catalog
            && !cat.providers.iter().any(|x| &x.name == p.get_ref())
        {
            let known: Vec<_> = cat.providers.iter().map(|x| x.name.as_str()).collect();
            let message = if written {
                format!("unknown LLM provider `{}`", p.get_ref())
            } else {
                format!(
                    "not set, and the default provider `{}` is not configured",
                    p.get_ref()
                )
            };
            problem(
                p.span().start,
                key,
                message,
                Some(format!("configured providers: {}", known.join(", "))),
            );
        }
    };
    let provider = raw_llm
        .provider
        .unwrap_or_else(|| Spanned::new(0..0, DEFAULT_PROVIDER.to_string()));
    check_provider(
        &provider,
        KeyPath::of(&["llm", "provider"]),
        provider_written,
    );
    for (i, f) in raw_llm.fallback.iter().enumerate() {
        check_provider(f, KeyPath::of(&["llm", "fallback"]).index(i), true);
    }
    let temperature = raw_llm.temperature.map(|t| {
        if !(0.0..=2.0).contains(t.get_ref()) {
            problem(
                t.span().start,
                KeyPath::of(&["llm", "temperature"]),
                format!("{} is outside 0.0–2.0", t.get_ref()),
                Some(
                    "0.0 is the most deterministic; most models work best between 0.0 and 1.0"
                        .into(),
                ),
            );
        }
        t.into_inner()
    });
    let top_p = raw_llm.top_p.map(|t| {
        if !(*t.get_ref() > 0.0 && *t.get_ref() <= 1.0) {
            problem(
                t.span().start,
                KeyPath::of(&["llm", "top_p"]),
                format!("{} is outside (0.0, 1.0]", t.get_ref()),
                Some("use a value above 0.0 and at most 1.0 (1.0 keeps every token)".into()),
            );
        }
        t.into_inner()
    });
    let tool_choice = match raw_llm.tool_choice {
        None => ToolChoicePlan::default(),
        Some(choice) => {
            let at = choice.span().start;
            let key = KeyPath::of(&["llm", "tool_choice"]);
            let mut check = |c: &str, key: KeyPath| {
                let parsed = ToolChoice::parse(c);
                if let ToolChoice::Tool(name) = &parsed
                    && !raw.tools.iter().any(|t| t.get_ref() == name)
                    && !delegation_tools.contains(name)
                {
                    // A turn's item has its own position in the document.
                    let offset = keys::value_span(&doc, &key).map_or(at, |s| s.start);
                    problem(
                        offset,
                        key,
                        format!("`{name}` is not in this agent's `tools`"),
                        Some("use `auto`, `required`, `none`, or one of the agent's tools".into()),
                    );
                }
                parsed
            };
            match choice.into_inner() {
                RawToolChoice::Every(c) => ToolChoicePlan {
                    turns: vec![],
                    then: check(&c, key),
                },
                RawToolChoice::PerTurn(list) => ToolChoicePlan {
                    turns: list
                        .iter()
                        .enumerate()
                        .map(|(i, c)| check(c, key.index(i)))
                        .collect(),
                    then: ToolChoice::Auto,
                },
            }
        }
    };
    let llm = LlmSpec {
        provider: provider.into_inner(),
        model: raw_llm.model,
        temperature,
        top_p,
        seed: raw_llm.seed,
        max_tokens: raw_llm.max_tokens,
        stop: raw_llm.stop,
        fallback: raw_llm
            .fallback
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        tool_choice,
    };

    let raw_limits = raw.limits.unwrap_or_default();
    let max_tokens = raw_limits.max_tokens.map(|t| {
        if *t.get_ref() == 0 {
            problem(
                t.span().start,
                KeyPath::of(&["limits", "max_tokens"]),
                "0 allows no LLM call".into(),
                Some("give the most tokens the whole run may use, or leave it out for no token budget".into()),
            );
        }
        t.into_inner()
    });
    let max_cost_usd = raw_limits.max_cost_usd.map(|c| {
        if !(c.get_ref().is_finite() && *c.get_ref() > 0.0) {
            problem(
                c.span().start,
                KeyPath::of(&["limits", "max_cost_usd"]),
                format!("{} must be a positive number of dollars", c.get_ref()),
                Some(
                    "give dollars, e.g. max_cost_usd = 0.5, or leave it out for no cost budget"
                        .into(),
                ),
            );
        }
        c.into_inner()
    });
    let caps = ctx.worker_caps;
    let memory_mb = match raw_limits.memory_mb {
        Some(m)
            if *m.get_ref() < caxton_config::MIN_WORKER_MEMORY_MB
                || *m.get_ref() > caps.memory_mb =>
        {
            problem(
                m.span().start,
                KeyPath::of(&["limits", "memory_mb"]),
                format!(
                    "{} is outside {}–{} (the server's [workers] memory_mb)",
                    m.get_ref(),
                    caxton_config::MIN_WORKER_MEMORY_MB,
                    caps.memory_mb
                ),
                Some(LIMIT_HINT.into()),
            );
            caps.memory_mb
        }
        Some(m) => m.into_inner(),
        None => caps.memory_mb,
    };
    let open_files = match raw_limits.open_files {
        Some(n)
            if *n.get_ref() < caxton_config::MIN_WORKER_OPEN_FILES
                || *n.get_ref() > caps.open_files =>
        {
            problem(
                n.span().start,
                KeyPath::of(&["limits", "open_files"]),
                format!(
                    "{} is outside {}–{} (the server's [workers] open_files)",
                    n.get_ref(),
                    caxton_config::MIN_WORKER_OPEN_FILES,
                    caps.open_files
                ),
                Some(LIMIT_HINT.into()),
            );
            caps.open_files
        }
        Some(n) => n.into_inner(),
        None => caps.open_files,
    };
    let cpu_time = match raw_limits.cpu_time {
        Some(t) => match humantime::parse_duration(t.get_ref()) {
            Ok(d) if d >= Duration::from_secs(1) && d <= caps.cpu_time => d,
            Ok(d) => {
                problem(
                    t.span().start,
                    KeyPath::of(&["limits", "cpu_time"]),
                    format!(
                        "{} is outside 1s–{} (the server's [workers] cpu_time)",
                        humantime::format_duration(d),
                        humantime::format_duration(caps.cpu_time)
                    ),
                    Some(LIMIT_HINT.into()),
                );
                caps.cpu_time
            }
            Err(e) => {
                problem(
                    t.span().start,
                    KeyPath::of(&["limits", "cpu_time"]),
                    format!("\"{}\" is not a duration: {e}", t.get_ref()),
                    Some("write a duration such as \"30s\" or \"2m\"".into()),
                );
                caps.cpu_time
            }
        },
        None => caps.cpu_time,
    };
    let max_turns = match raw_limits.max_turns {
        Some(t) if *t.get_ref() == 0 || *t.get_ref() > MAX_MAX_TURNS => {
            problem(
                t.span().start,
                KeyPath::of(&["limits", "max_turns"]),
                format!("{} is outside 1–{MAX_MAX_TURNS}", t.get_ref()),
                Some(format!(
                    "use 1–{MAX_MAX_TURNS}, or leave it out for the default, {DEFAULT_MAX_TURNS}"
                )),
            );
            DEFAULT_MAX_TURNS
        }
        Some(t) => t.into_inner(),
        None => DEFAULT_MAX_TURNS,
    };
    let limits = LimitsSpec {
        max_turns,
        max_tool_calls: raw_limits.max_tool_calls.unwrap_or(DEFAULT_MAX_TOOL_CALLS),
        timeout_ms: raw_limits
            .timeout
            .unwrap_or(ctx.default_timeout)
            .as_millis() as u64,
        tool_timeout_ms: raw_limits
            .tool_timeout
            .unwrap_or(ctx.default_tool_timeout)
            .as_millis() as u64,
        max_tokens,
        max_cost_usd,
        memory_mb,
        cpu_time_ms: cpu_time.as_millis() as u64,
        open_files,
    };

    let mut tools = Vec::new();
    for (i, t) in raw.tools.into_iter().enumerate() {
        let key = KeyPath::of(&["tools"]).index(i);
        let memory_tool = caxton_ipc::memory::TOOL_NAMES.contains(&t.get_ref().as_str());
        if memory_tool && !memory.enabled {
            problem(
                t.span().start,
                key.clone(),
                format!(
                    "`{}` is a memory tool, and memory is off for this agent",
                    t.get_ref()
                ),
                Some("add `[memory]` with `enabled = true` (and the scope it should use)".into()),
            );
        }
        if let Some(cat) = ctx.catalog
            && !memory_tool
            && !cat.tools.iter().any(|x| &x.name == t.get_ref())
        {
            let known: Vec<_> = cat.tools.iter().map(|x| x.name.as_str()).collect();
            problem(
                t.span().start,
                key.clone(),
                format!("unknown tool `{}`", t.get_ref()),
                Some(format!("available tools: {}", known.join(", "))),
            );
        }
        if tools.contains(t.get_ref()) {
            problem(
                t.span().start,
                key,
                format!("tool `{}` is listed twice", t.get_ref()),
                Some("list each tool once".into()),
            );
        }
        tools.push(t.into_inner());
    }

    if !problems.is_empty() {
        problems.sort_by_key(|d| (d.line, d.column));
        return Err(problems);
    }
    Ok(AgentSpec {
        name,
        version: raw.version.unwrap_or_else(|| "0.0.0".into()),
        description: raw.description.unwrap_or_default(),
        capabilities: raw.capabilities,
        tools,
        system_prompt: system_prompt.into_inner(),
        user_prompt_template: user_prompt_template.into_inner(),
        documentation: raw.documentation,
        memory,
        parameters: parameters
            .into_iter()
            .map(|(k, v)| (k, value_text(v)))
            .collect(),
        llm,
        limits,
        delegation,
        source: file.to_string(),
    })
}

/// `[delegation]`: targets well named and listed once, limits within their caps, tool names
/// that fit the providers' 64 characters and do not shadow the agent's own tools. Returns the
/// spec and its tools' names (which `tool_choice` may name).
fn check_delegation(
    d: RawDelegation,
    agent: &str,
    tools: &[Spanned<String>],
    problem: &mut impl FnMut(usize, KeyPath, String, Option<String>),
) -> (DelegationSpec, Vec<String>) {
    let defaults = DelegationSpec::default();
    let mut names = Vec::new();
    let allow_recursion = d.allow_recursion;
    let mut targets = |list: Vec<Spanned<String>>, key: &str, tool: fn(&str) -> String| {
        let mut out: Vec<String> = Vec::new();
        for (i, t) in list.into_iter().enumerate() {
            let path = KeyPath::of(&["delegation", key]).index(i);
            let at = t.span().start;
            let tool_name = tool(t.get_ref());
            if !valid_agent_name(t.get_ref()) {
                problem(
                    at,
                    path.clone(),
                    format!("bad name `{}`", t.get_ref()),
                    Some("start with a letter; use letters, digits, `-` and `_`".into()),
                );
            } else if tool_name.len() > 64 {
                problem(
                    at,
                    path.clone(),
                    format!(
                        "its tool name `{tool_name}` is longer than the 64 characters LLM providers accept"
                    ),
                    Some("use a shorter name".into()),
                );
            }
            if out.contains(t.get_ref()) {
                problem(
                    at,
                    path.clone(),
                    format!("`{}` is listed twice", t.get_ref()),
                    Some("list each once".into()),
                );
            }
            if t.get_ref() == agent && (key == "handoff" || (key == "agents" && !allow_recursion)) {
                problem(
                    at,
                    path.clone(),
                    format!("agent `{agent}` delegates to itself"),
                    Some("set `allow_recursion = true` under [delegation] if it really should (the depth limit still holds)".into()),
                );
            }
            if tools.iter().any(|x| *x.get_ref() == tool_name) {
                problem(
                    at,
                    path,
                    format!("its tool `{tool_name}` has the name of one of the agent's `tools`"),
                    Some("rename the tool or the target".into()),
                );
            }
            names.push(tool_name);
            out.push(t.into_inner());
        }
        out
    };
    let agents = targets(d.agents, "agents", DelegationSpec::tool_name_for_agent);
    let capabilities = targets(
        d.capabilities,
        "capabilities",
        DelegationSpec::tool_name_for_capability,
    );
    let handoff = targets(d.handoff, "handoff", DelegationSpec::tool_name_for_handoff);
    let history = match d.history {
        None => defaults.history,
        Some(h) => HistoryPolicy::parse(h.get_ref()).unwrap_or_else(|| {
            problem(
                h.span().start,
                KeyPath::of(&["delegation", "history"]),
                format!("unknown history policy `{}`", h.get_ref()),
                Some(format!("use one of: {}", HistoryPolicy::NAMES.join(", "))),
            );
            defaults.history
        }),
    };
    let strategy = match d.strategy {
        None => defaults.strategy,
        Some(s) => RoutingStrategy::parse(s.get_ref()).unwrap_or_else(|| {
            problem(
                s.span().start,
                KeyPath::of(&["delegation", "strategy"]),
                format!("unknown strategy `{}`", s.get_ref()),
                Some(format!("use one of: {}", RoutingStrategy::NAMES.join(", "))),
            );
            defaults.strategy
        }),
    };
    let mut bounded = |v: Option<Spanned<u32>>, key: &str, cap: u32, default: u32| match v {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > cap => {
            problem(
                n.span().start,
                KeyPath::of(&["delegation", key]),
                format!("{} is outside 1–{cap}", n.get_ref()),
                Some(format!(
                    "use 1–{cap}, or leave it out for the default, {default}"
                )),
            );
            default
        }
        Some(n) => n.into_inner(),
        None => default,
    };
    let spec = DelegationSpec {
        agents,
        capabilities,
        strategy,
        max_depth: bounded(d.max_depth, "max_depth", MAX_DEPTH_CAP, defaults.max_depth),
        max_fan_out: bounded(
            d.max_fan_out,
            "max_fan_out",
            MAX_FAN_OUT_CAP,
            defaults.max_fan_out,
        ),
        max_descendants: bounded(
            d.max_descendants,
            "max_descendants",
            MAX_DESCENDANTS_CAP,
            defaults.max_descendants,
        ),
        allow_recursion: d.allow_recursion,
        handoff,
        history,
        remote: Vec::new(),
    };
    let mut spec = spec;
    for (i, r) in d.remote.into_iter().enumerate() {
        let at = r.span().start;
        let path = KeyPath::of(&["delegation", "remote"]).index(i);
        let r = r.into_inner();
        let tool_name = DelegationSpec::tool_name_for_agent(&r.name);
        let problem_here = |m: String, hint: &str| (at, path.clone(), m, Some(hint.to_string()));
        let found = if !valid_agent_name(&r.name) {
            Some(problem_here(
                format!("bad name `{}`", r.name),
                "start with a letter; use letters, digits, `-` and `_`",
            ))
        } else if spec.agents.contains(&r.name) || spec.remote.iter().any(|x| x.name == r.name) {
            Some(problem_here(
                format!(
                    "`{}` is named twice among the agents and remote agents",
                    r.name
                ),
                "give the remote agent a name of its own here",
            ))
        } else if tools.iter().any(|x| *x.get_ref() == tool_name) {
            Some(problem_here(
                format!("its tool `{tool_name}` has the name of one of the agent's `tools`"),
                "rename the tool or the remote agent",
            ))
        } else if !url::Url::parse(&r.card).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            Some(problem_here(
                format!("card = \"{}\" is not an http(s) URL", r.card),
                "give the URL of its Agent Card, like \"https://agents.example.com/a2a/forecaster/.well-known/agent-card.json\"",
            ))
        } else {
            None
        };
        match found {
            Some((at, path, m, hint)) => problem(at, path, m, hint),
            None => {
                names.push(tool_name);
                spec.remote.push(caxton_ipc::agent::RemoteAgent {
                    name: r.name,
                    card: r.card,
                    description: r.description,
                });
            }
        }
    }
    (spec, names)
}

/// A problem found while reading the document, before the semantic checks.
#[derive(Debug)]
struct Problem {
    offset: Option<usize>,
    message: String,
    hint: Option<String>,
}

/// Keys an agent might write to grant its tools something, which only the operator can.
const GRANT_KEYS: &[&str] = &["grants", "permissions", "dirs", "http", "env", "secrets"];
/// Provider settings that belong in the server's config, never in an agent file.
const PROVIDER_SETTING_KEYS: &[&str] = &["api_key", "api_key_env", "base_url", "key", "headers"];

/// A TOML syntax error, named by the key it is at when one can be found.
fn syntax_problem(doc: &DeTable<'_>, src: &str, e: &toml::de::Error) -> Problem {
    let span = e.span().unwrap_or(0..0);
    let detail = e.message().trim();
    let key = keys::locate(doc, span.clone()).or_else(|| keys::locate_by_line(src, span.start));
    let (detail, hint) = if detail.starts_with("duplicate key") {
        (
            format!("{detail}: it is already defined above"),
            "a key or [table] may appear only once in its table; merge the two",
        )
    } else {
        (
            detail.to_string(),
            "check the TOML syntax here: each line is `key = value` or a [table] header, strings are quoted, lists use [ ]",
        )
    };
    Problem {
        offset: Some(span.start),
        message: match key {
            Some(k) => format!("`{k}`: {detail}"),
            None => detail,
        },
        hint: Some(hint.to_string()),
    }
}

/// A serde error (unknown key, wrong type, missing key), reworded around the key it is about.
fn serde_problem(doc: &DeTable<'_>, e: toml::de::Error) -> Problem {
    let detail = e.message().trim().to_string();
    let span = e.span();
    let offset = span.as_ref().map(|s| s.start);
    let located = span
        .and_then(|s| keys::locate(doc, s))
        .unwrap_or_else(KeyPath::root);
    if let Some(field) = backticked_after(&detail, "missing field ") {
        return missing_key(located.key(field), offset);
    }
    if let Some(field) = backticked_after(&detail, "unknown field ") {
        // The span is the unknown key's own; make sure the path ends with it.
        let path = if located.last_key() == Some(field) {
            located
        } else {
            located.key(field)
        };
        return unknown_key(&path, offset, &detail);
    }
    match keys::resolve(&located) {
        Resolved::Known(at, kind, spec) if !at.is_root() => {
            let found = keys::lookup(doc, &at);
            let mut message = match found {
                Some(v) => format!(
                    "`{at}`: expected {}, found {}",
                    kind.expected(),
                    keys::describe(v)
                ),
                None => format!("`{at}`: expected {} ({detail})", kind.expected()),
            };
            if let (Kind::Duration, Some(DeValue::String(text))) = (kind, found)
                && let Err(why) = humantime::parse_duration(text)
            {
                message.push_str(&format!(" ({why})"));
            }
            // An item of a list is shown fixed within its list: `tools = ["a", "5"]`.
            let mut whole = at.clone();
            while matches!(whole.segments().last(), Some(Segment::Index(_))) {
                whole = whole.parent();
            }
            let hint = spec.map(|spec| {
                let form = keys::right_form(spec, keys::lookup(doc, &whole));
                match whole.table_header() {
                    Some(table) => format!("write {form} under {table}"),
                    None => format!("write {form}"),
                }
            });
            Problem {
                offset,
                message,
                hint,
            }
        }
        _ => Problem {
            offset,
            message: if located.is_root() {
                detail
            } else {
                format!("`{located}`: {detail}")
            },
            hint: None,
        },
    }
}

/// The text between backticks right after `prefix` at the start of `message`.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message
        .strip_prefix(prefix)?
        .strip_prefix('`')?
        .split('`')
        .next()
}

fn missing_key(path: KeyPath, offset: Option<usize>) -> Problem {
    let form = match keys::resolve(&path) {
        Resolved::Known(_, _, Some(spec)) => keys::right_form(spec, None),
        _ => format!("`{path} = …`"),
    };
    Problem {
        offset,
        message: format!("`{path}`: required key is missing"),
        hint: Some(format!(
            "every agent needs `name` and `system_prompt`: add {form} near the top of the file, before any [table]"
        )),
    }
}

fn unknown_key(path: &KeyPath, offset: Option<usize>, detail: &str) -> Problem {
    let Resolved::Unknown(table, known, key) = keys::resolve(path) else {
        return Problem {
            offset,
            message: format!("`{path}`: {detail}"),
            hint: None,
        };
    };
    let place = match path.table_header() {
        Some(header) => format!("in {header}"),
        None => "at the top level".to_string(),
    };
    let names: Vec<&str> = known.iter().map(|k| k.name).collect();
    let keys_here = match path.table_header() {
        Some(header) => format!("keys of {header}: {}", names.join(", ")),
        None => format!("top-level keys: {}", names.join(", ")),
    };
    let hint = if PROVIDER_SETTING_KEYS.contains(&key.as_str()) {
        "keys and endpoints never go in an agent file: configure the provider in caxton.toml [providers.<name>] (the key from `api_key_env`) and name it here with `provider = \"<name>\"`".to_string()
    } else if GRANT_KEYS.contains(&key.as_str()) {
        "an agent cannot grant tools anything: directories, HTTP origins, environment and secrets are granted by the operator in caxton.toml [tools.<package>]".to_string()
    } else if let Some(k) = keys::closest(&key, names.iter().copied()) {
        format!("did you mean `{k}`? {keys_here}")
    } else if let Some((other, k)) = keys::other_table_with(&key, &table) {
        let there = match other {
            Some(t) => format!("in [{t}]"),
            None => "at the top level, above the first [table] header".to_string(),
        };
        if k == key {
            format!("`{k}` belongs {there}")
        } else {
            format!("did you mean `{k}`? it belongs {there}")
        }
    } else {
        format!("check the spelling; {keys_here}")
    };
    Problem {
        offset,
        message: format!("`{path}`: unknown key {place}"),
        hint: Some(hint),
    }
}

fn valid_agent_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Template text of a parameter value: strings verbatim, anything else as TOML.
fn value_text(v: toml::Value) -> String {
    match v {
        toml::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Finds a top-level text key (like `system_prompt`) written after a `[parameters]` header.
/// Returns the key and its byte offset.
fn parameters_trap(src: &str) -> Option<(String, usize)> {
    let mut offset = 0;
    let mut in_parameters = false;
    for line in src.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_parameters = trimmed.starts_with("[parameters]");
        } else if in_parameters {
            for key in TOP_LEVEL_TEXT_KEYS {
                if let Some(rest) = trimmed.strip_prefix(key)
                    && rest.trim_start().starts_with('=')
                {
                    return Some((key.to_string(), offset + (line.len() - trimmed.len())));
                }
            }
        }
        offset += line.len();
    }
    None
}

fn trap_message(key: &str) -> String {
    format!(
        "`{}`: {}",
        KeyPath::of(&["parameters", key]),
        trap_detail(key)
    )
}

fn trap_detail(key: &str) -> String {
    format!(
        "`{key}` is inside [parameters]: in TOML, every key after a [parameters] header belongs to that table"
    )
}

fn trap_hint() -> String {
    "move system_prompt, user_prompt_template and documentation above the first [table] header (or put [parameters] last)".into()
}

/// Length of the opening quote at `offset` (`"`, `'`, `"""` or `'''`).
fn quote_len(src: &str, offset: usize) -> usize {
    let rest = &src[offset.min(src.len())..];
    if rest.starts_with("\"\"\"") || rest.starts_with("'''") {
        // A newline right after a multi-line opener is trimmed by TOML.
        3 + usize::from(rest[3..].starts_with('\n'))
    } else if rest.starts_with('"') || rest.starts_with('\'') {
        1
    } else {
        0
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(src.len());
    let before = &src[..src.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line as u32, col as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_ipc::toolhost::{ProviderInfo, ToolSpec};

    fn catalog() -> Catalog {
        Catalog {
            tools: vec![ToolSpec {
                name: "calculate".into(),
                description: String::new(),
                input_schema: "{}".into(),
                server: "calc".into(),
            }],
            providers: vec![
                ProviderInfo {
                    name: "scripted".into(),
                    kind: "scripted".into(),
                    default_model: "m".into(),
                },
                ProviderInfo {
                    name: "local".into(),
                    kind: "local".into(),
                    default_model: "smollm2".into(),
                },
            ],
        }
    }

    fn check(src: &str) -> Result<AgentSpec, Vec<Diagnostic>> {
        let cat = catalog();
        let ctx = ValidationContext {
            catalog: Some(&cat),
            default_timeout: Duration::from_secs(60),
            default_tool_timeout: Duration::from_secs(10),
            worker_caps: WorkerCaps::default(),
        };
        parse("a.toml", src.as_bytes(), &ctx)
    }

    #[test]
    fn a_key_in_an_agent_file_is_refused_with_where_it_belongs() {
        let errs = check(
            "name = \"x\"\nsystem_prompt = \"s\"\n[llm]\nprovider = \"openai\"\napi_key = \"sk-1\"\n",
        )
        .unwrap_err();
        assert!(errs[0].message.contains("api_key"), "{errs:?}");
        assert!(
            errs[0]
                .hint
                .as_deref()
                .unwrap_or("")
                .contains("[providers.<name>]"),
            "{errs:?}"
        );
    }

    #[test]
    fn delegation_targets_and_limits_are_checked() {
        let a = check(
            "name = \"boss\"\nsystem_prompt = \"s\"\n[delegation]\nagents = [\"adder\"]\ncapabilities = [\"math\"]\nstrategy = \"best_match\"\n[llm]\ntool_choice = [\"delegate_to_adder\", \"none\"]\n",
        )
        .unwrap();
        assert_eq!(
            a.delegation.tool_names(),
            ["delegate_to_adder", "delegate_capability_math"]
        );
        assert_eq!(a.delegation.strategy, RoutingStrategy::BestMatch);
        assert_eq!(a.delegation.max_depth, 3);
        let errors = check(
            "name = \"boss\"\nsystem_prompt = \"s\"\ntools = [\"calculate\"]\n[delegation]\nagents = [\"boss\", \"9x\", \"adder\", \"adder\"]\nstrategy = \"random\"\nmax_depth = 9\nmax_fan_out = 0\n",
        )
        .unwrap_err();
        let messages: Vec<&str> = errors.iter().map(|d| d.message.as_str()).collect();
        for expected in [
            "`delegation.agents[0]`: agent `boss` delegates to itself",
            "`delegation.agents[1]`: bad name `9x`",
            "`delegation.agents[3]`: `adder` is listed twice",
            "`delegation.strategy`: unknown strategy `random`",
            "`delegation.max_depth`: 9 is outside 1–8",
            "`delegation.max_fan_out`: 0 is outside 1–16",
        ] {
            assert!(messages.contains(&expected), "{expected}: {messages:#?}");
        }
    }

    #[test]
    fn remote_agents_are_named_once_with_a_card_url() {
        let a = check(
            "name = \"boss\"\nsystem_prompt = \"s\"\n[[delegation.remote]]\nname = \"far\"\ncard = \"https://x.example/a2a/far/.well-known/agent-card.json\"\ndescription = \"Far away.\"\n",
        )
        .unwrap();
        assert_eq!(a.delegation.remote[0].name, "far");
        assert_eq!(a.delegation.tool_names(), ["delegate_to_far"]);
        assert_eq!(
            a.delegation.target_of_tool("delegate_to_far"),
            Some((
                caxton_ipc::agent::DelegateTarget::Remote("far".into()),
                false
            ))
        );
        let errors = check(
            "name = \"boss\"\nsystem_prompt = \"s\"\n[delegation]\nagents = [\"adder\"]\n[[delegation.remote]]\nname = \"adder\"\ncard = \"https://x/c\"\n[[delegation.remote]]\nname = \"9x\"\ncard = \"https://x/c\"\n[[delegation.remote]]\nname = \"far\"\ncard = \"ftp://x/c\"\n",
        )
        .unwrap_err();
        let messages: Vec<&str> = errors.iter().map(|d| d.message.as_str()).collect();
        for expected in [
            "`delegation.remote[0]`: `adder` is named twice among the agents and remote agents",
            "`delegation.remote[1]`: bad name `9x`",
            "`delegation.remote[2]`: card = \"ftp://x/c\" is not an http(s) URL",
        ] {
            assert!(messages.contains(&expected), "{expected}: {messages:#?}");
        }
    }

    #[test]
    fn tool_choice_and_budgets_are_checked() {
        let errs = check(
            "name = \"x\"\nsystem_prompt = \"s\"\ntools = [\"calculate\"]\n[llm]\ntool_choice = [\"calculate\", \"word_count\"]\ntop_p = 1.5\n[limits]\nmax_tokens = 0\nmax_cost_usd = -1.0\n",
        )
        .unwrap_err();
        let all: Vec<_> = errs.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            all,
            [
                "`llm.tool_choice[1]`: `word_count` is not in this agent's `tools`",
                "`llm.top_p`: 1.5 is outside (0.0, 1.0]",
                "`limits.max_tokens`: 0 allows no LLM call",
                "`limits.max_cost_usd`: -1 must be a positive number of dollars",
            ]
        );
        // The turn's own item is pointed at, not the list.
        assert_eq!((errs[0].line, errs[0].column), (5, 29));
        let a = check(
            "name = \"x\"\nsystem_prompt = \"s\"\ntools = [\"calculate\"]\n[llm]\ntool_choice = [\"calculate\", \"none\"]\n",
        )
        .unwrap();
        assert_eq!(a.llm.provider, "local");
        assert_eq!(
            a.llm.tool_choice.for_turn(1),
            caxton_ipc::toolhost::ToolChoice::Tool("calculate".into())
        );
        assert_eq!(
            a.llm.tool_choice.for_turn(2),
            caxton_ipc::toolhost::ToolChoice::None
        );
        assert_eq!(
            a.llm.tool_choice.for_turn(3),
            caxton_ipc::toolhost::ToolChoice::Auto
        );
    }

    #[test]
    fn a_good_agent_loads() {
        let a = check("name = \"calc\"\ntools = [\"calculate\"]\nsystem_prompt = \"You add.\"\n[parameters]\nunit = \"m\"\nn = 3\n").unwrap();
        assert_eq!(a.tools, vec!["calculate"]);
        assert_eq!(a.user_prompt_template, "{{request}}");
        assert_eq!(a.parameters["n"], "3");
        assert_eq!(a.llm.provider, "local", "the embedded model is the default");
    }

    #[test]
    fn the_parameters_trap_is_explained() {
        let errs = check("name = \"x\"\n[parameters]\nk = 1\n\nsystem_prompt = '''\nhi\n'''\n")
            .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("inside [parameters]"), "{errs:?}");
        assert_eq!((errs[0].line, errs[0].column), (5, 1));
    }

    #[test]
    fn unknown_tool_and_provider_have_positions() {
        let errs = check("name = \"x\"\nsystem_prompt = \"s\"\ntools = [\"calculate\", \"nope\"]\n[llm]\nprovider = \"gpt\"\n").unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!((errs[0].line, errs[0].column), (3, 23));
        assert!(errs[0].hint.as_deref().unwrap().contains("calculate"));
        assert!(errs[1].message.contains("unknown LLM provider `gpt`"));
    }

    #[test]
    fn unknown_keys_and_wrong_types() {
        let errs = check("name = \"x\"\nsystem_prompt = \"s\"\ntemprature = 3\n").unwrap_err();
        assert_eq!(
            errs[0].message,
            "`temprature`: unknown key at the top level"
        );
        assert_eq!(
            errs[0].hint.as_deref(),
            Some("did you mean `temperature`? it belongs in [llm]")
        );
        assert_eq!((errs[0].line, errs[0].column), (3, 1));
        let errs = check("name = 5\nsystem_prompt = \"s\"\n").unwrap_err();
        assert_eq!(
            errs[0].message,
            "`name`: expected a string, found the number 5"
        );
        assert_eq!(errs[0].hint.as_deref(), Some("write `name = \"5\"`"));
        assert_eq!((errs[0].line, errs[0].column), (1, 8));
    }

    /// The one diagnostic `src` gets: (message, hint, line, column).
    fn one(src: &str) -> (String, String, u32, u32) {
        let errs = check(src).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let d = &errs[0];
        (
            d.message.clone(),
            d.hint.clone().unwrap_or_default(),
            d.line,
            d.column,
        )
    }

    const HEAD: &str = "name = \"x\"\nsystem_prompt = \"s\"\n";

    #[test]
    fn a_wrong_type_names_the_key_and_shows_the_right_form() {
        let (m, h, l, c) = one(&format!("{HEAD}capabilities = \"help\"\n"));
        assert_eq!(
            m,
            "`capabilities`: expected a list of strings, found the string \"help\""
        );
        assert_eq!(h, "write `capabilities = [\"help\"]`");
        assert_eq!((l, c), (3, 16));

        let (m, h, l, c) = one(&format!("{HEAD}[limits]\ntimeout = 30\n"));
        assert_eq!(
            m,
            "`limits.timeout`: expected a duration such as \"30s\" or \"2m\", found the number 30"
        );
        assert_eq!(h, "write `timeout = \"30s\"` under [limits]");
        assert_eq!((l, c), (4, 11));

        let (m, h, ..) = one(&format!("{HEAD}[limits]\ntimeout = \"30\"\n"));
        assert!(
            m.starts_with("`limits.timeout`: expected a duration")
                && m.contains("time unit needed"),
            "{m}"
        );
        assert_eq!(h, "write `timeout = \"30s\"` under [limits]");

        let (m, h, ..) = one(&format!("{HEAD}[limits]\nmax_turns = \"8\"\n"));
        assert_eq!(
            m,
            "`limits.max_turns`: expected a whole number from 0 to 4294967295, found the string \"8\""
        );
        assert_eq!(h, "write `max_turns = 8` under [limits]");

        let (m, ..) = one(&format!("{HEAD}[limits]\nmax_turns = -1\n"));
        assert_eq!(
            m,
            "`limits.max_turns`: expected a whole number from 0 to 4294967295, found the number -1"
        );

        let (m, h, ..) = one(&format!("{HEAD}[memory]\nenabled = \"true\"\n"));
        assert_eq!(
            m,
            "`memory.enabled`: expected true or false, found the string \"true\""
        );
        assert_eq!(h, "write `enabled = true` under [memory]");

        let (m, ..) = one(&format!("{HEAD}[memory]\nsearch_limit = 2024-01-01\n"));
        assert_eq!(
            m,
            "`memory.search_limit`: expected a whole number from 0 to 4294967295, found the date-time 2024-01-01"
        );

        let (m, h, ..) = one(&format!("{HEAD}llm = {{ temperature = \"hot\" }}\n"));
        assert_eq!(
            m,
            "`llm.temperature`: expected a number, found the string \"hot\""
        );
        assert_eq!(h, "write `temperature = 0.2` under [llm]");
    }

    #[test]
    fn lists_tables_and_tool_choice_have_their_own_wording() {
        let (m, h, l, c) = one(&format!("{HEAD}tools = [\"calculate\",\n  5]\n"));
        assert_eq!(m, "`tools[1]`: expected a string, found the number 5");
        assert_eq!(h, "write `tools = [\"calculate\", \"5\"]`");
        assert_eq!((l, c), (4, 3));

        let (m, h, ..) = one(&format!("{HEAD}memory = true\n"));
        assert_eq!(m, "`memory`: expected a table, found the boolean true");
        assert!(h.contains("`[memory]` on a line of its own"), "{h}");

        let (m, ..) = one(&format!("{HEAD}[[limits]]\nmax_turns = 3\n"));
        assert_eq!(m, "`limits`: expected a table, found a list of tables");

        let (m, h, ..) = one(&format!("{HEAD}[llm]\ntool_choice = [\"none\", 5]\n"));
        assert!(
            m.starts_with(
                "`llm.tool_choice`: expected \"auto\", \"required\", \"none\" or a tool name"
            ) && m.ends_with("found a list containing the number 5"),
            "{m}"
        );
        assert!(h.contains("tool_choice = [\"calculate\", \"none\"]"), "{h}");
    }

    #[test]
    fn unknown_keys_name_their_table_and_the_closest_key() {
        let (m, h, l, c) = one(&format!("{HEAD}[llm]\nmodle = \"m\"\n"));
        assert_eq!(m, "`llm.modle`: unknown key in [llm]");
        assert!(
            h.starts_with("did you mean `model`? keys of [llm]: provider, model,"),
            "{h}"
        );
        assert_eq!((l, c), (4, 1));

        let (m, h, ..) = one(&format!("{HEAD}max_turns = 3\n"));
        assert_eq!(m, "`max_turns`: unknown key at the top level");
        assert_eq!(h, "`max_turns` belongs in [limits]");

        let (m, h, ..) = one(&format!("{HEAD}[limits]\ndescription = \"d\"\n"));
        assert_eq!(m, "`limits.description`: unknown key in [limits]");
        assert_eq!(
            h,
            "`description` belongs at the top level, above the first [table] header"
        );

        let (m, h, ..) = one(&format!("{HEAD}[llm.extra]\nk = 1\n"));
        assert_eq!(m, "`llm.extra`: unknown key in [llm]");
        assert!(h.starts_with("check the spelling; keys of [llm]:"), "{h}");

        let (m, h, ..) = one(&format!("{HEAD}[grants.files]\ndirs = []\n"));
        assert_eq!(m, "`grants`: unknown key at the top level");
        assert!(h.starts_with("an agent cannot grant tools anything"), "{h}");
    }

    #[test]
    fn missing_keys_and_syntax_errors_name_their_key() {
        let (m, h, l, c) = one("system_prompt = \"s\"\ncapabilities = []\n");
        assert_eq!(m, "`name`: required key is missing");
        assert!(h.contains("`name = \"my-agent\"`"), "{h}");
        assert_eq!((l, c), (1, 1));

        let (m, ..) = one("name = \"x\"\n");
        assert_eq!(m, "`system_prompt`: required key is missing");

        let (m, h, l, c) = one(&format!("{HEAD}[llm]\nseed = 1\n[llm]\nseed = 2\n"));
        assert!(m.starts_with("`llm`: duplicate key"), "{m}");
        assert!(h.contains("merge the two"), "{h}");
        assert_eq!((l, c), (5, 2));

        let (m, _, l, _) = one(&format!("{HEAD}name = \"y\"\n"));
        assert!(m.starts_with("`name`: duplicate key"), "{m}");
        assert_eq!(l, 3);

        let (m, ..) = one(&format!("{HEAD}[limits]\nmax_turns = \"8\n"));
        assert!(m.starts_with("`limits.max_turns`: "), "{m}");

        let (m, ..) = one("this is not toml {\n");
        assert!(m.starts_with("`this`: "), "{m}");
    }

    #[test]
    fn every_semantic_problem_names_its_key() {
        let errs = check(
            "name = \"9x\"\nsystem_prompt = \" \"\nuser_prompt_template = \"{{a\"\ntools = [\"calculate\", \"calculate\", \"nope\", \"semantic_search\"]\n[memory]\nscope = \"team\"\nworkspace = \"../w\"\nread = [\"global\", \"x\"]\nmin_similarity = 2.0\n[llm]\nprovider = \"gpt\"\nfallback = [\"local\", \"nope\"]\ntemperature = 3.0\n[limits]\nmax_turns = 0\nmemory_mb = 1\nopen_files = 1\ncpu_time = \"soon\"\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = errs
            .iter()
            .map(|d| {
                let rest = d.message.strip_prefix('`').expect("starts with the key");
                rest.split("`: ").next().expect("key, then the problem")
            })
            .collect();
        assert_eq!(
            keys,
            [
                "name",
                "system_prompt",
                "user_prompt_template",
                "tools[1]",
                "tools[2]",
                "tools[3]",
                "memory.scope",
                "memory.workspace",
                "memory.read[1]",
                "memory.min_similarity",
                "llm.provider",
                "llm.fallback[1]",
                "llm.temperature",
                "limits.max_turns",
                "limits.memory_mb",
                "limits.open_files",
                "limits.cpu_time",
            ],
            "{errs:#?}"
        );
        // cpu_time out of range, and the default provider when it is not configured.
        let errs = check(&format!("{HEAD}[limits]\ncpu_time = \"1h\"\n")).unwrap_err();
        assert!(
            errs[0]
                .message
                .starts_with("`limits.cpu_time`: 1h is outside 1s–"),
            "{errs:?}"
        );
        let ctx = ValidationContext {
            catalog: Some(&Catalog {
                tools: vec![],
                providers: vec![],
            }),
            default_timeout: Duration::from_secs(1),
            default_tool_timeout: Duration::from_secs(1),
            worker_caps: WorkerCaps::default(),
        };
        let errs = parse("a.toml", HEAD.as_bytes(), &ctx).unwrap_err();
        assert_eq!(
            errs[0].message,
            "`llm.provider`: not set, and the default provider `local` is not configured"
        );
    }

    /// The schema in `keys` lists exactly the keys serde accepts, table by table.
    #[test]
    fn the_schema_matches_the_format() {
        let accepted = |src: &str| -> Vec<String> {
            let e = toml::from_str::<RawAgent>(src).expect_err("an unknown key");
            let m = e.message().to_string();
            let (_, list) = m.split_once("expected ").expect("a list of keys");
            list.split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, k)| k.to_string())
                .collect()
        };
        let names = |keys: &[keys::KeySpec]| -> Vec<String> {
            let mut v: Vec<String> = keys.iter().map(|k| k.name.to_string()).collect();
            v.sort();
            v
        };
        let mut top = accepted("name = \"x\"\nzzz = 1\n");
        top.sort();
        assert_eq!(top, names(keys::AGENT_KEYS));
        for (table, keys) in [
            ("memory", keys::MEMORY_KEYS),
            ("llm", keys::LLM_KEYS),
            ("limits", keys::LIMITS_KEYS),
            ("delegation", keys::DELEGATION_KEYS),
        ] {
            let mut got = accepted(&format!("name = \"x\"\n[{table}]\nzzz = 1\n"));
            got.sort();
            assert_eq!(got, names(keys), "[{table}]");
        }
    }

    /// Every key of the format: its example is accepted, and a value of another type is refused
    /// with a message that names the key and a hint that shows the example's form.
    #[test]
    fn every_key_names_itself_when_its_type_is_wrong() {
        let mut entries: Vec<(Option<&str>, &keys::KeySpec)> = Vec::new();
        for spec in keys::AGENT_KEYS {
            entries.push((None, spec));
            if let Kind::Table(inner) = spec.kind {
                entries.extend(inner.iter().map(|k| (Some(spec.name), k)));
            }
        }
        let doc = |table: Option<&str>, key: &str, value: &str| {
            let mut src = String::new();
            if key != "name" {
                src.push_str("name = \"x\"\n");
            }
            if key != "system_prompt" {
                src.push_str("system_prompt = \"s\"\n");
            }
            if key == "tool_choice" {
                src.push_str("tools = [\"calculate\"]\n");
            }
            match (table, key) {
                (Some(t), k) => src.push_str(&format!("[{t}]\n{k} = {value}\n")),
                (None, k)
                    if matches!(
                        keys::AGENT_KEYS
                            .iter()
                            .find(|s| s.name == k)
                            .map(|s| s.kind),
                        Some(Kind::Table(_) | Kind::Parameters)
                    ) =>
                {
                    src.push_str(&format!("[{k}]\n{value}\n"))
                }
                (None, k) => src.push_str(&format!("{k} = {value}\n")),
            }
            src
        };
        for (table, spec) in entries {
            let path = match table {
                Some(t) => KeyPath::of(&[t, spec.name]),
                None => KeyPath::of(&[spec.name]),
            };
            let good = doc(table, spec.name, spec.example);
            assert!(check(&good).is_ok(), "{path}: {good}\n{:?}", check(&good));
            if matches!(spec.kind, Kind::Parameters) {
                continue;
            }
            let wrong = match spec.kind {
                Kind::Bool => "\"yes\"",
                Kind::U32 | Kind::U64 | Kind::Float => "\"many\"",
                _ => "{ a = 1 }",
            };
            let src = match (table, spec.kind) {
                (None, Kind::Table(_)) => doc(None, "description", "\"d\"")
                    .replace("description = \"d\"", &format!("{} = 5", spec.name)),
                _ => doc(table, spec.name, wrong),
            };
            let errs = check(&src).unwrap_err();
            assert_eq!(errs.len(), 1, "{path}: {errs:?}");
            let prefix = format!("`{path}`: expected ");
            assert!(errs[0].message.starts_with(&prefix), "{path}: {errs:?}");
            let hint = errs[0].hint.as_deref().unwrap_or("");
            assert!(hint.contains(spec.name), "{path}: {hint}");
            assert_ne!(errs[0].line, 0, "{path}: a position");
        }
    }

    #[test]
    fn bad_names_templates_and_garbage() {
        assert!(
            check("name = \"9x\"\nsystem_prompt = \"s\"\n").unwrap_err()[0]
                .message
                .contains("bad agent name")
        );
        let errs = check("name = \"x\"\nsystem_prompt = \"s\"\nuser_prompt_template = \"a {{b\"\n")
            .unwrap_err();
        assert_eq!((errs[0].line, errs[0].column), (3, 27));
        assert!(
            check("name = \"x\"\n").unwrap_err()[0]
                .message
                .contains("system_prompt")
        );
        let cat = catalog();
        let ctx = ValidationContext {
            catalog: Some(&cat),
            default_timeout: Duration::from_secs(1),
            default_tool_timeout: Duration::from_secs(1),
            worker_caps: WorkerCaps::default(),
        };
        assert!(
            parse("g", &[0xff, 0xfe, 0], &ctx).unwrap_err()[0]
                .message
                .contains("UTF-8")
        );
    }
}
