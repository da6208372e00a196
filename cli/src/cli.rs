//! The `caxton` command line: `serve`, `agent run|list|show|validate|test`, `tool …`,
//! `memory …`, `status`, `health`, `audit verify`.
//!
//! Exit codes (also in the README): 0 success; 1 the run or the check failed; 2 usage error;
//! 3 no daemon reachable; 4 busy or shutting down (retry later); 5 the run timed out.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use caxton_config::{self as config, ServerConfig};
use caxton_ipc::api::{ApiRequest, ApiResponse, ErrorBody, ErrorKind, RunRequest};
use caxton_ipc::error::Chain;
use caxton_ipc::toolhost::Catalog;
use clap::{Parser, Subcommand};

use crate::client::{Client, ClientError};
use caxton_supervisor::agent_file::{self, ValidationContext};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the run failed, the agent is invalid, or the thing asked for does not exist.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: bad command line (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: no daemon reachable on the socket.
pub const EXIT_NO_DAEMON: u8 = 3;
/// Exit status: the daemon is busy or shutting down; retry later.
pub const EXIT_BUSY: u8 = 4;
/// Exit status: the run hit its wall-clock limit.
pub const EXIT_TIMEOUT: u8 = 5;

#[derive(Debug, Parser)]
#[command(
    name = "caxton",
    version,
    about = "Caxton: run configuration-defined agents with sandboxed WASM tools"
)]
struct Cli {
    /// Path of the daemon's API socket [default: $CAXTON_RUNTIME_DIR/api.sock, else $XDG_RUNTIME_DIR/caxton/api.sock, else /tmp/caxton-$UID/api.sock]
    #[arg(long, global = true, env = "CAXTON_SOCKET")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the supervisor) in the foreground.
    Serve {
        /// Server configuration file (TOML); without it the built-in defaults apply.
        #[arg(long, env = "CAXTON_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run, list, show and validate agents.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Show uptime, running workers, queue, toolhost state and counters.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the tool-call audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Install, list, show, remove and call WASM tool packages.
    Tool {
        #[command(subcommand)]
        command: crate::tool_cli::ToolCommand,
    },
    /// Search, store, show, export, import and prune memories (the memory service).
    Memory {
        #[command(subcommand)]
        command: crate::memory_cli::MemoryCommand,
    },
    /// List, show, export, close and delete conversations (your own; all for the operator).
    Conversation {
        #[command(subcommand)]
        command: crate::conversation_cli::ConversationCommand,
    },
    /// Check that the daemon is live and ready (exit 0 when ready).
    Health {
        #[arg(long)]
        json: bool,
    },
    /// Print the whole service's metrics (supervisor, toolhost, memory service) in the
    /// Prometheus text format, as the HTTP listener's /metrics serves them.
    Metrics,
    /// Serve the agents as MCP tools on stdin/stdout, for desktop MCP clients (Claude Desktop,
    /// Claude Code, Cursor, VS Code) to launch. Each tool call is a run of that agent.
    Mcp {
        /// Offer only this agent (repeat the flag; default: every agent you may run).
        #[arg(long = "agent")]
        agents: Vec<String>,
    },
    /// Make bearer tokens for the HTTP API ([[http.tokens]] in caxton.toml).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// A live view: runs/s, failures, p50/p95, tokens and cost per minute, per agent, and the
    /// runs in progress as trees. Redrawn on a terminal; plain text otherwise.
    Top {
        /// Time between views.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Stop after this many views, "no answer" notices included (default: until interrupted).
        #[arg(long, short = 'n')]
        iterations: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a new random token: prints the token (first line; shown only this once) and the
    /// [[http.tokens]] table to add to caxton.toml, which holds only its SHA-256.
    New {
        /// The token's name: in logs and metrics in its place, and the owner of what it starts.
        name: String,
        /// An agent it may run (repeat the flag; "*" for every agent).
        #[arg(long = "agent")]
        agents: Vec<String>,
        /// It may read status, health and every agent's definition.
        #[arg(long)]
        read: bool,
        /// It may search memory.
        #[arg(long)]
        memory: bool,
        /// It may do everything, and see every token's runs and conversations.
        #[arg(long)]
        admin: bool,
    },
    /// Print the SHA-256 of a token read from standard input, as [[http.tokens]] sha256 holds it.
    Hash,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of the audit log: detects edited, inserted and deleted records
    /// (exit 0 when intact). Works offline. The current log is checked with its rotated files
    /// (NAME.N … NAME.1, then NAME) as one chain; a rotated file given alone is checked alone.
    Verify {
        /// The log file [default: STATE_DIR/audit/tool-calls.log from the config].
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, env = "CAXTON_CONFIG")]
        config: Option<PathBuf>,
    },
}

// Parsed once per invocation: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Run an agent once and print its answer (tokens as they arrive on a terminal; progress
    /// and a usage summary go to stderr).
    Run {
        /// Name of a loaded agent (see `caxton agent list`); omit it with --capability.
        #[arg(required_unless_present = "capability")]
        name: Option<String>,
        /// Run an agent that declares this capability instead, picked by --strategy.
        #[arg(long, conflicts_with = "name")]
        capability: Option<String>,
        /// How --capability picks: round_robin (default), least_loaded or best_match.
        #[arg(long, requires = "capability")]
        strategy: Option<String>,
        /// Run inside this W3C trace context (`00-<trace id>-<span id>-<flags>`), as a span of
        /// the caller's trace, when the daemon exports traces ([telemetry] in caxton.toml).
        #[arg(long, env = "TRACEPARENT", value_parser = parse_traceparent)]
        traceparent: Option<String>,
        /// The request; fills {{request}} in the agent's prompt template. `-` reads it from
        /// stdin. With --replay it defaults to the recorded input.
        #[arg(long, required_unless_present_any = ["replay", "input_file"])]
        input: Option<String>,
        /// Read the request from FILE (for inputs beyond the command line's length limit).
        #[arg(long, value_name = "FILE", conflicts_with = "input")]
        input_file: Option<PathBuf>,
        /// Extra template value, repeatable: --var context="Q3 sales".
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Print every event as one JSON line on stdout (for scripts).
        #[arg(long)]
        json: bool,
        /// Wall-clock limit for this run (for example 30s); capped by the agent's own limit.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Write every LLM exchange of the run to FILE (JSON), for --replay and `agent test`.
        #[arg(long, value_name = "FILE", conflicts_with = "replay")]
        record: Option<PathBuf>,
        /// Answer every LLM call from a recording instead of a provider (deterministic; a
        /// request that differs from the recorded one fails the run and shows the difference).
        #[arg(long, value_name = "FILE")]
        replay: Option<PathBuf>,
        /// Leave delegated runs' events out (their answers and usage still count).
        #[arg(long)]
        hide_children: bool,
        /// Start (`new`) or continue (its id) a conversation: the run gets its history, and
        /// the message goes to the agent holding it.
        #[arg(long, value_name = "ID|new")]
        conversation: Option<String>,
    },
    /// Run an agent's test cases (input, expected tool calls, answer patterns) against
    /// recordings or its configured provider; exit 0 when all pass.
    Test {
        /// The test file (TOML; see the README's "Testing agents").
        file: PathBuf,
        /// Re-record each case that names a recording, from the live provider.
        #[arg(long)]
        update: bool,
    },
    /// List the loaded agents.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a loaded agent's definition.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Validate an agent file. Works offline (no daemon needed): tools and providers are checked
    /// against what `caxton-toolhost` offers with the given config.
    Validate {
        file: PathBuf,
        /// Server configuration whose tools and providers the agent is checked against.
        #[arg(long, env = "CAXTON_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("`{s}` has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `caxton token …`.
fn token(command: TokenCommand) -> anyhow::Result<u8> {
    use caxton_supervisor::http::auth::hash_hex;
    match command {
        TokenCommand::New {
            name,
            agents,
            read,
            memory,
            admin,
        } => {
            use std::io::Read;
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .context("cannot read /dev/urandom for a token")?;
            let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let token = format!("caxton_{text}");
            let table = caxton_config::TokenConfig {
                name,
                sha256: hash_hex(&token),
                agents,
                read,
                memory,
                admin,
                max_concurrent_runs: caxton_config::DEFAULT_TOKEN_RUNS,
            };
            table.check().map_err(|e| anyhow::anyhow!("{e}"))?;
            #[derive(serde::Serialize)]
            struct Http<'a> {
                tokens: &'a [caxton_config::TokenConfig],
            }
            #[derive(serde::Serialize)]
            struct Snippet<'a> {
                http: Http<'a>,
            }
            let snippet = toml::to_string(&Snippet {
                http: Http {
                    tokens: std::slice::from_ref(&table),
                },
            })
            .context("cannot write the token's table")?;
            println!("{token}");
            println!();
            println!(
                "# The token above is shown only now. Add this to caxton.toml and restart caxton serve:"
            );
            print!("{snippet}");
            Ok(0)
        }
        TokenCommand::Hash => {
            let mut text = String::new();
            std::io::stdin()
                .read_line(&mut text)
                .context("cannot read the token from standard input")?;
            let text = text.trim();
            anyhow::ensure!(!text.is_empty(), "give the token on standard input");
            println!("{}", hash_hex(text));
            Ok(0)
        }
    }
}

/// Entry point of the `caxton` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(config::default_api_socket);
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Agent { command } => agent(command, &socket),
        Command::Status { json } => status(&socket, json),
        Command::Audit {
            command: AuditCommand::Verify { file, config },
        } => audit_verify(file, config.as_deref()),
        Command::Health { json } => health(&socket, json),
        Command::Metrics => metrics(&socket),
        Command::Token { command } => token(command),
        Command::Mcp { agents } => crate::mcp_cli::mcp(&socket, agents),
        Command::Top {
            interval,
            iterations,
        } => crate::top::top(
            &socket,
            crate::top::TopOptions {
                interval,
                iterations,
            },
        ),
        Command::Tool { command } => crate::tool_cli::tool(command, &socket),
        Command::Memory { command } => crate::memory_cli::memory(command, &socket),
        Command::Conversation { command } => {
            crate::conversation_cli::conversation(command, &socket)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = match e.downcast_ref::<ClientError>() {
                Some(ClientError::NoDaemon { .. })
                | Some(ClientError::PermissionDenied { .. })
                | Some(ClientError::Connect { .. }) => EXIT_NO_DAEMON,
                _ => EXIT_FAILED,
            };
            eprintln!("caxton: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<u8> {
    let config = match &config_path {
        Some(p) => ServerConfig::load(p)?,
        None => ServerConfig::default(),
    };
    let format = caxton_telemetry::init_logging("caxton", Some(&config.telemetry));
    // The children log the same way (see caxton_ipc::logging).
    // SAFETY: no other thread exists yet (the runtime starts below), so nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("CAXTON_LOG_FORMAT", format.as_str()) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = rt.block_on(caxton_supervisor::serve(config));
    drop(rt);
    caxton_telemetry::traces::shutdown();
    if let Err(e) = served {
        let chain = Chain(&e).to_string();
        tracing::error!(error = %chain, "caxton serve failed");
        anyhow::bail!("{chain}");
    }
    Ok(EXIT_OK)
}

/// A `--traceparent` value, checked here so a typo is an error rather than a silent new trace.
fn parse_traceparent(text: &str) -> Result<String, String> {
    caxton_ipc::trace::TraceParent::parse(text)
        .map(|_| text.trim().to_string())
        .ok_or_else(|| {
            "not a W3C traceparent: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>".into()
        })
}

/// A run's input from `file`, or from stdin with `None`, checked against the largest input a
/// run takes.
fn read_input(file: Option<&Path>) -> anyhow::Result<String> {
    use std::io::Read;
    let limit = caxton_ipc::api::MAX_INPUT_BYTES;
    let mut bytes = Vec::new();
    let (what, read) = match file {
        Some(f) => (
            f.display().to_string(),
            std::fs::File::open(f).and_then(|h| h.take(limit as u64 + 1).read_to_end(&mut bytes)),
        ),
        None => (
            "stdin".to_string(),
            std::io::stdin()
                .lock()
                .take(limit as u64 + 1)
                .read_to_end(&mut bytes),
        ),
    };
    read.with_context(|| format!("cannot read the input from {what}"))?;
    if bytes.len() > limit {
        anyhow::bail!(
            "the input from {what} is larger than {} MiB, the largest input a run takes",
            limit / (1024 * 1024)
        );
    }
    String::from_utf8(bytes).with_context(|| format!("the input from {what} is not UTF-8 text"))
}

fn agent(command: AgentCommand, socket: &Path) -> anyhow::Result<u8> {
    match command {
        AgentCommand::Run {
            name,
            input,
            input_file,
            vars,
            json,
            timeout,
            record,
            replay,
            hide_children,
            conversation,
            capability,
            strategy,
            traceparent,
        } => {
            let replay = replay
                .as_deref()
                .map(crate::run_cli::read_recording)
                .transpose()?;
            let input = match (input, input_file, &replay) {
                (Some(dash), _, _) if dash == "-" => read_input(None)?,
                (Some(input), _, _) => input,
                (None, Some(file), _) => read_input(Some(&file))?,
                (None, None, Some(rec)) => rec.input.clone(),
                (None, None, None) => {
                    anyhow::bail!(
                        "give --input TEXT, --input - (stdin), --input-file FILE or --replay FILE"
                    )
                }
            };
            let req = RunRequest {
                agent: name.unwrap_or_default(),
                input,
                vars: vars.into_iter().collect(),
                timeout_ms: timeout.map(|t| t.as_millis() as u64),
                stream: false,
                record: false,
                replay,
                hide_children,
                conversation,
                capability,
                strategy,
                traceparent,
            };
            let display = crate::run_cli::RunDisplay {
                json,
                record: record.as_deref(),
            };
            crate::run_cli::run(socket, req, display)
        }
        AgentCommand::Test { file, update } => crate::agent_test::run(socket, &file, update),
        AgentCommand::List { json } => {
            let resp = Client::connect(socket)?.call(&ApiRequest::ListAgents)?;
            match resp {
                ApiResponse::Agents(agents) if json => print_json(&agents),
                ApiResponse::Agents(agents) => {
                    if agents.is_empty() {
                        println!("no agents loaded (the daemon logs the files it skipped)");
                    }
                    for a in agents {
                        let tools = if a.tools.is_empty() {
                            "-".to_string()
                        } else {
                            a.tools.join(",")
                        };
                        println!(
                            "{:<20} {:<8} {:<10} tools={:<24} {}",
                            a.name, a.version, a.provider, tools, a.description
                        );
                        if let Some(problem) = &a.problem {
                            println!("  ! last good version: {problem}");
                        }
                    }
                    if let ApiResponse::Status(s) =
                        Client::connect(socket)?.call(&ApiRequest::Status)?
                    {
                        print_agent_problems(&s.agent_problems);
                    }
                    Ok(EXIT_OK)
                }
                other => unexpected(other),
            }
        }
        AgentCommand::Show { name, json } => {
            let resp = Client::connect(socket)?.call(&ApiRequest::ShowAgent { name })?;
            match resp {
                ApiResponse::Agent(a) if json => print_json(&a),
                ApiResponse::Agent(a) => {
                    println!("name:        {} {}", a.name, a.version);
                    println!("description: {}", a.description);
                    println!("source:      {}", a.source);
                    println!("capabilities: {}", a.capabilities.join(", "));
                    println!("tools:       {}", a.tools.join(", "));
                    println!(
                        "llm:         provider={} model={}",
                        a.llm.provider,
                        a.llm.model.as_deref().unwrap_or("(provider default)")
                    );
                    println!(
                        "limits:      max_turns={} max_tool_calls={} timeout={}ms tool_timeout={}ms",
                        a.limits.max_turns,
                        a.limits.max_tool_calls,
                        a.limits.timeout_ms,
                        a.limits.tool_timeout_ms
                    );
                    for (k, v) in &a.parameters {
                        println!("parameter:   {k} = {v}");
                    }
                    println!(
                        "\nsystem_prompt:\n{}\n\nuser_prompt_template:\n{}",
                        a.system_prompt.trim_end(),
                        a.user_prompt_template.trim_end()
                    );
                    Ok(EXIT_OK)
                }
                ApiResponse::Error(e) => error_exit(&e),
                other => unexpected(other),
            }
        }
        AgentCommand::Validate { file, config, json } => validate(&file, config.as_deref(), json),
    }
}

pub(crate) fn exit_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Busy | ErrorKind::ShuttingDown => EXIT_BUSY,
        ErrorKind::Timeout => EXIT_TIMEOUT,
        _ => EXIT_FAILED,
    }
}

pub(crate) fn error_exit(e: &ErrorBody) -> anyhow::Result<u8> {
    eprintln!("caxton: {}", e.message);
    Ok(exit_for(e.kind))
}

pub(crate) fn unexpected(resp: ApiResponse) -> anyhow::Result<u8> {
    match resp {
        ApiResponse::Error(e) => error_exit(&e),
        other => anyhow::bail!("unexpected response from the daemon: {other:?}"),
    }
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<u8> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(EXIT_OK)
}

/// The agents directory's problems, if any, one per line.
fn print_agent_problems(problems: &[caxton_ipc::api::Diagnostic]) {
    if problems.is_empty() {
        return;
    }
    println!("agent file problems ({}):", problems.len());
    for p in problems {
        println!("  {p}");
    }
}

fn status(socket: &Path, json: bool) -> anyhow::Result<u8> {
    let resp = Client::connect(socket)?.call(&ApiRequest::Status)?;
    let ApiResponse::Status(s) = resp else {
        return unexpected(resp);
    };
    if json {
        return print_json(&s);
    }
    let describe = caxton_supervisor::service::describe_state;
    let toolhost = describe(&s.toolhost);
    let memory = match &s.memory {
        Some(m) => format!("{}; restarts {}", describe(m), s.memory_restarts),
        None => "disabled ([memory] enabled = false)".into(),
    };
    println!(
        "caxton {} pid {}, up {}s{}",
        s.version,
        s.pid,
        s.uptime_ms / 1000,
        if s.draining { ", DRAINING" } else { "" }
    );
    println!("agents:   {}", s.agents);
    println!("toolhost: {toolhost}");
    println!("memory:   {memory}");
    println!(
        "workers:  {} running of {} max, {} ready; queue {}/{}",
        s.workers.len(),
        s.max_workers,
        s.ready_workers,
        s.queue_depth,
        s.queue_capacity
    );
    // Each run under the run that delegated it.
    fn show(s: &caxton_ipc::api::StatusReport, parent: Option<&str>, depth: usize) {
        for w in s
            .workers
            .iter()
            .filter(|w| w.parent_run_id.as_deref() == parent)
        {
            println!(
                "  {}pid {:<8} {:<20} {} ({} ms) {}",
                "  ".repeat(depth),
                w.pid,
                w.agent,
                w.run_id,
                w.age_ms,
                usage_line(&w.usage)
            );
            show(s, Some(&w.run_id), depth + 1);
        }
    }
    show(&s, None, 0);
    let c = &s.counters;
    println!(
        "runs:     {} started, {} finished, {} failed ({} timed out, {} worker crashes), {} busy rejections; toolhost restarts {}",
        c.runs_started,
        c.runs_finished,
        c.runs_failed,
        c.runs_timed_out,
        c.workers_crashed,
        c.busy_rejections,
        c.toolhost_restarts
    );
    println!(
        "usage:    {} LLM calls, {} tool calls, {}+{} tokens, ${:.6}",
        c.llm_calls, c.tool_calls, c.prompt_tokens, c.completion_tokens, c.cost_usd
    );
    print_agent_problems(&s.agent_problems);
    if !s.recent_runs.is_empty() {
        println!("recent runs (newest first):");
        for r in &s.recent_runs {
            println!(
                "  {:<20} {:<28} {:<15} {}",
                r.agent,
                r.run_id,
                r.outcome,
                usage_line(&r.usage)
            );
        }
    }
    Ok(EXIT_OK)
}

/// One run's usage in a status line.
fn usage_line(u: &caxton_ipc::api::RunUsage) -> String {
    crate::run_cli::summary(u)
}

fn audit_verify(file: Option<PathBuf>, config_path: Option<&Path>) -> anyhow::Result<u8> {
    use caxton_ipc::audit::{self, VerifySetError};
    let path = match file {
        Some(f) => f,
        None => {
            // Both logs: the toolhost's tool calls and the memory service's memory-tool calls.
            let config = match config_path {
                Some(p) => ServerConfig::load(p)?,
                None => ServerConfig::default(),
            };
            let memory = config.memory_audit_log_path();
            let code = audit_verify(Some(config.audit_log_path()), None)?;
            if !memory.exists() {
                return Ok(code);
            }
            return Ok(code.max(audit_verify(Some(memory), None)?));
        }
    };
    if audit::rotated_index(&path).is_some() {
        // One rotated file, on its own.
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open the audit log {}", path.display()))?;
        return match audit::verify(std::io::BufReader::new(file)) {
            Ok(v) => {
                println!(
                    "{}: ok: {} records{}, chain head {}",
                    path.display(),
                    v.records,
                    starts_after(v.starts_after, "earlier"),
                    v.head
                );
                Ok(EXIT_OK)
            }
            Err(e) => {
                eprintln!("caxton: {}:{e}", path.display());
                Ok(EXIT_FAILED)
            }
        };
    }
    match audit::verify_set(&path) {
        Ok(set) => {
            for f in &set.files {
                println!("{}: {} records", f.path.display(), f.records);
            }
            let v = &set.total;
            println!(
                "{}: ok: {} records in {} file{}{}, chain head {}",
                path.display(),
                v.records,
                set.files.len(),
                if set.files.len() == 1 { "" } else { "s" },
                starts_after(v.starts_after, "deleted"),
                v.head
            );
            Ok(EXIT_OK)
        }
        Err(VerifySetError::Broken { path, error }) => {
            eprintln!("caxton: {}:{error}", path.display());
            Ok(EXIT_FAILED)
        }
        Err(e @ VerifySetError::Files(_)) => Err(e.into()),
    }
}

/// How a verified chain begins, when not at its first record: after `what` ("deleted",
/// "earlier") records.
fn starts_after(records: u64, what: &str) -> String {
    match records {
        0 => String::new(),
        n => format!(" (starts after {n} {what} records)"),
    }
}

fn health(socket: &Path, json: bool) -> anyhow::Result<u8> {
    let resp = Client::connect(socket)?.call(&ApiRequest::Health)?;
    let ApiResponse::Health(h) = resp else {
        return unexpected(resp);
    };
    if json {
        print_json(&h)?;
    } else {
        println!(
            "{}: {}",
            if h.ready { "ready" } else { "not ready" },
            h.detail
        );
    }
    Ok(if h.ready { EXIT_OK } else { EXIT_BUSY })
}

fn metrics(socket: &Path) -> anyhow::Result<u8> {
    let resp = Client::connect(socket)?.call(&ApiRequest::Metrics)?;
    let ApiResponse::Metrics(text) = resp else {
        return unexpected(resp);
    };
    print!("{text}");
    Ok(EXIT_OK)
}

/// Offline validation: the catalog comes from running `caxton-toolhost catalog` with the config.
fn validate(file: &Path, config_path: Option<&Path>, json: bool) -> anyhow::Result<u8> {
    let config = match config_path {
        Some(p) => ServerConfig::load(p)?,
        None => ServerConfig::default(),
    };
    let (catalog, warning) = match offline_catalog(&config, config_path) {
        Ok(c) => (Some(c), None),
        Err(e) => (
            None,
            Some(format!("tools and providers were not checked: {e:#}")),
        ),
    };
    let ctx = ValidationContext {
        catalog: catalog.as_ref(),
        default_timeout: config.workers.default_timeout,
        default_tool_timeout: config.toolhost.tool_timeout,
        worker_caps: agent_file::WorkerCaps::of(&config.workers),
    };
    let result = agent_file::load_file(file, &ctx);
    if json {
        let report = match &result {
            Ok(a) => caxton_ipc::api::ValidationReport {
                agent: Some(a.name.clone()),
                diagnostics: vec![],
            },
            Err(d) => caxton_ipc::api::ValidationReport {
                agent: None,
                diagnostics: d.clone(),
            },
        };
        print_json(&report)?;
    } else {
        if let Some(w) = &warning {
            eprintln!("warning: {w}");
        }
        match &result {
            Ok(a) => println!(
                "{}: ok: agent `{}` ({} tools, provider {})",
                file.display(),
                a.name,
                a.tools.len(),
                a.llm.provider
            ),
            Err(diags) => {
                for d in diags {
                    eprintln!("error: {d}");
                }
            }
        }
    }
    Ok(if result.is_ok() { EXIT_OK } else { EXIT_FAILED })
}

fn offline_catalog(config: &ServerConfig, config_path: Option<&Path>) -> anyhow::Result<Catalog> {
    let program = config
        .toolhost
        .binary
        .clone()
        .unwrap_or_else(|| caxton_supervisor::spawn::sibling_binary("caxton-toolhost"));
    let mut spec =
        caxton_supervisor::spawn::ChildSpec::new(program, config.workers.stderr_tail_bytes)
            .arg("catalog");
    if let Some(p) = config_path {
        spec = spec.arg("--config").arg(p);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let mut child = caxton_supervisor::spawn::spawn(&spec)?;
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            tokio::time::timeout(
                caxton_supervisor::services::READY_TIMEOUT,
                stdout.read_to_end(&mut out),
            )
            .await
            .context("caxton-toolhost catalog timed out")??;
        }
        let status = child.wait().await?;
        if !status.success() {
            let stderr = child.stderr_tail().await;
            anyhow::bail!(
                "`{}` {}: {stderr}",
                child.command,
                caxton_supervisor::spawn::describe_exit(&status)
            );
        }
        serde_json::from_slice(&out).context("caxton-toolhost printed an unreadable catalog")
    })
}
