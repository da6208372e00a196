//! Agent TOML files: parsing, validation, and diagnostics with file, line, column and a hint.
//!
//! The format is the seed's (`name`, `version`, `description`, `capabilities`, `tools`,
//! `system_prompt`, `user_prompt_template`, `documentation`, `[memory]`, `[parameters]`) plus
//! `[llm]` and `[limits]`. Unknown keys are errors. A prompt key written after `[parameters]`
//! belongs to `parameters` in TOML; that trap is detected and explained.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use caxton_ipc::agent::{AgentSpec, LimitsSpec, LlmSpec, MemorySpec, ToolChoicePlan};
use caxton_ipc::api::Diagnostic;
use caxton_ipc::template;
use caxton_ipc::toolhost::{Catalog, ToolChoice};
use serde::Deserialize;
use toml::Spanned;

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
    pub fn of(workers: &caxton_ipc::config::WorkersConfig) -> WorkerCaps {
        WorkerCaps {
            memory_mb: workers.memory_mb,
            cpu_time: workers.cpu_time,
            open_files: workers.open_files,
        }
    }
}

impl Default for WorkerCaps {
    fn default() -> Self {
        WorkerCaps::of(&caxton_ipc::config::WorkersConfig::default())
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
            None,
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
                None,
            )]);
        }
    };
    let raw: RawAgent = match toml::from_str(src) {
        Ok(raw) => raw,
        Err(e) => {
            let message = e.message().trim().to_string();
            let offset = e.span().map(|s| s.start);
            // A missing prompt may sit inside [parameters]: say that rather than "missing field".
            if let Some(trap) = parameters_trap(src) {
                return Err(vec![diag(
                    Some(trap.1),
                    src,
                    trap_message(&trap.0),
                    Some(trap_hint()),
                )]);
            }
            let grants_itself = [
                "`grants`",
                "`permissions`",
                "`dirs`",
                "`http`",
                "`env`",
                "`secrets`",
            ]
            .iter()
            .any(|k| message.starts_with(&format!("unknown field {k}")));
            let provider_setting = [
                "`api_key`",
                "`api_key_env`",
                "`base_url`",
                "`key`",
                "`headers`",
            ]
            .iter()
            .any(|k| message.starts_with(&format!("unknown field {k}")));
            let hint = if provider_setting {
                Some("keys and endpoints never go in an agent file: configure the provider in caxton.toml [providers.<name>] (the key from `api_key_env`) and name it here with `provider = \"<name>\"`".to_string())
            } else if grants_itself {
                Some("an agent cannot grant tools anything: directories, HTTP origins, environment and secrets are granted by the operator in caxton.toml [tools.<package>]".to_string())
            } else if message.contains("unknown field") {
                Some("check the spelling; the agent format is described in the README (\"Agent files\")".to_string())
            } else if message.contains("invalid type") {
                Some("check the value's type: strings are quoted, lists use [ ], tables use [name] headers".to_string())
            } else if message.contains("missing field") {
                Some("every agent needs at least `name` and `system_prompt`".to_string())
            } else {
                None
            };
            return Err(vec![diag(offset, src, message, hint)]);
        }
    };
    let mut problems = Vec::new();
    let mut problem = |offset: usize, message: String, hint: Option<String>| {
        problems.push(diag(Some(offset), src, message, hint))
    };

    let name = raw.name.get_ref().clone();
    if !valid_agent_name(&name) {
        problem(
            raw.name.span().start,
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
            let offset = parameters_trap(src).map(|t| t.1).unwrap_or(0);
            problem(offset, trap_message(key), Some(trap_hint()));
        }
    }
    let system_prompt = match raw.system_prompt {
        Some(p) if !p.get_ref().trim().is_empty() => p,
        Some(p) => {
            problem(
                p.span().start,
                "`system_prompt` is empty".into(),
                Some("say who the agent is and what it does".into()),
            );
            p
        }
        None => {
            if !parameters.contains_key("system_prompt") {
                problem(
                    0,
                    "missing `system_prompt`".into(),
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
                format!("{key}: {e}"),
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
                        format!("min_similarity {} is outside 0.0–1.0", v.get_ref()),
                        None,
                    );
                }
                v.into_inner()
            });
            let mut read = Vec::new();
            for r in m.read {
                if !SCOPES.contains(&r.get_ref().as_str()) {
                    problem(
                        r.span().start,
                        format!("unknown memory scope `{}` in `read`", r.get_ref()),
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
                        format!("workspace name `{}`: {e}", w.get_ref()),
                        None,
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

    let raw_llm = raw.llm.unwrap_or_default();
    let mut check_provider = |p: &Spanned<String>| {
        if let Some(cat) = ctx.catalog
            && !cat.providers.iter().any(|x| &x.name == p.get_ref())
        {
            let known: Vec<_> = cat.providers.iter().map(|x| x.name.as_str()).collect();
            problem(
                p.span().start,
                format!("unknown LLM provider `{}`", p.get_ref()),
                Some(format!("configured providers: {}", known.join(", "))),
            );
        }
    };
    let provider = raw_llm
        .provider
        .unwrap_or_else(|| Spanned::new(0..0, DEFAULT_PROVIDER.to_string()));
    check_provider(&provider);
    for f in &raw_llm.fallback {
        check_provider(f);
    }
    let temperature = raw_llm.temperature.map(|t| {
        if !(0.0..=2.0).contains(t.get_ref()) {
            problem(
                t.span().start,
                format!("temperature {} is outside 0.0–2.0", t.get_ref()),
                None,
            );
        }
        t.into_inner()
    });
    let top_p = raw_llm.top_p.map(|t| {
        if !(*t.get_ref() > 0.0 && *t.get_ref() <= 1.0) {
            problem(
                t.span().start,
                format!("top_p {} is outside (0.0, 1.0]", t.get_ref()),
                None,
            );
        }
        t.into_inner()
    });
    let tool_choice = match raw_llm.tool_choice {
        None => ToolChoicePlan::default(),
        Some(choice) => {
            let at = choice.span().start;
            let mut check = |c: &str| {
                let parsed = ToolChoice::parse(c);
                if let ToolChoice::Tool(name) = &parsed
                    && !raw.tools.iter().any(|t| t.get_ref() == name)
                {
                    problem(
                        at,
                        format!("tool_choice names `{name}`, which is not in this agent's `tools`"),
                        Some("use `auto`, `required`, `none`, or one of the agent's tools".into()),
                    );
                }
                parsed
            };
            match choice.into_inner() {
                RawToolChoice::Every(c) => ToolChoicePlan {
                    turns: vec![],
                    then: check(&c),
                },
                RawToolChoice::PerTurn(list) => ToolChoicePlan {
                    turns: list.iter().map(|c| check(c)).collect(),
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
                "max_tokens = 0 allows no LLM call".into(),
                None,
            );
        }
        t.into_inner()
    });
    let max_cost_usd = raw_limits.max_cost_usd.map(|c| {
        if !(c.get_ref().is_finite() && *c.get_ref() > 0.0) {
            problem(
                c.span().start,
                format!(
                    "max_cost_usd = {} must be a positive number of dollars",
                    c.get_ref()
                ),
                None,
            );
        }
        c.into_inner()
    });
    let caps = ctx.worker_caps;
    let memory_mb = match raw_limits.memory_mb {
        Some(m)
            if *m.get_ref() < caxton_ipc::config::MIN_WORKER_MEMORY_MB
                || *m.get_ref() > caps.memory_mb =>
        {
            problem(
                m.span().start,
                format!(
                    "[limits] memory_mb = {} is outside {}–{} (the server's [workers] memory_mb)",
                    m.get_ref(),
                    caxton_ipc::config::MIN_WORKER_MEMORY_MB,
                    caps.memory_mb
                ),
                None,
            );
            caps.memory_mb
        }
        Some(m) => m.into_inner(),
        None => caps.memory_mb,
    };
    let open_files = match raw_limits.open_files {
        Some(n)
            if *n.get_ref() < caxton_ipc::config::MIN_WORKER_OPEN_FILES
                || *n.get_ref() > caps.open_files =>
        {
            problem(
                n.span().start,
                format!(
                    "[limits] open_files = {} is outside {}–{} (the server's [workers] open_files)",
                    n.get_ref(),
                    caxton_ipc::config::MIN_WORKER_OPEN_FILES,
                    caps.open_files
                ),
                None,
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
                    format!(
                        "[limits] cpu_time = {} is outside 1s–{} (the server's [workers] cpu_time)",
                        humantime::format_duration(d),
                        humantime::format_duration(caps.cpu_time)
                    ),
                    None,
                );
                caps.cpu_time
            }
            Err(e) => {
                problem(
                    t.span().start,
                    format!(
                        "[limits] cpu_time = \"{}\" is not a duration: {e}",
                        t.get_ref()
                    ),
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
                format!("max_turns = {} is outside 1–{MAX_MAX_TURNS}", t.get_ref()),
                None,
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
    for t in raw.tools {
        let memory_tool = caxton_ipc::memory::TOOL_NAMES.contains(&t.get_ref().as_str());
        if memory_tool && !memory.enabled {
            problem(
                t.span().start,
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
                format!("unknown tool `{}`", t.get_ref()),
                Some(format!("available tools: {}", known.join(", "))),
            );
        }
        if tools.contains(t.get_ref()) {
            problem(
                t.span().start,
                format!("tool `{}` is listed twice", t.get_ref()),
                None,
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
        source: file.to_string(),
    })
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
    fn tool_choice_and_budgets_are_checked() {
        let errs = check(
            "name = \"x\"\nsystem_prompt = \"s\"\ntools = [\"calculate\"]\n[llm]\ntool_choice = [\"calculate\", \"word_count\"]\ntop_p = 1.5\n[limits]\nmax_tokens = 0\nmax_cost_usd = -1.0\n",
        )
        .unwrap_err();
        let all: Vec<_> = errs.iter().map(|d| d.message.as_str()).collect();
        assert!(
            all.iter()
                .any(|m| m.contains("tool_choice names `word_count`")),
            "{all:?}"
        );
        assert!(all.iter().any(|m| m.contains("top_p 1.5")), "{all:?}");
        assert!(all.iter().any(|m| m.contains("max_tokens = 0")), "{all:?}");
        assert!(
            all.iter().any(|m| m.contains("max_cost_usd = -1")),
            "{all:?}"
        );
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
        assert!(errs[0].message.contains("temprature"));
        assert_eq!(errs[0].line, 3);
        let errs = check("name = 5\nsystem_prompt = \"s\"\n").unwrap_err();
        assert!(errs[0].message.contains("invalid type"), "{errs:?}");
        assert_eq!(errs[0].line, 1);
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
