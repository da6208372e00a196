//! `caxton agent run`: sends a run, shows its events as they come, and records or replays its LLM
//! exchanges.
//!
//! On a terminal the answer's tokens are printed as they arrive (stdout), progress goes to stderr,
//! and a summary line with the run's usage ends it. Piped, stdout gets only the final answer.
//! `--json` prints every event as one JSON line instead.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Context;
use caxton_ipc::api::{ApiRequest, ApiResponse, ChildEvent, RunEvent, RunRequest, RunUsage};
use caxton_ipc::recording::{ChildRecording, Exchange, RECORDING_VERSION, Recording};
use std::collections::BTreeMap;

use crate::cli::{EXIT_OK, exit_for, unexpected};
use crate::client::Client;

/// How a run is shown and recorded.
#[derive(Debug, Default)]
pub struct RunDisplay<'a> {
    /// One JSON event per line on stdout.
    pub json: bool,
    /// Write the run's LLM exchanges to this file.
    pub record: Option<&'a Path>,
}

/// Reads a recording written by `--record`.
pub fn read_recording(path: &Path) -> anyhow::Result<Recording> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the recording {}", path.display()))?;
    let rec: Recording = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Caxton recording", path.display()))?;
    anyhow::ensure!(
        rec.version == RECORDING_VERSION,
        "{} is a version {} recording; this caxton reads version {RECORDING_VERSION}",
        path.display(),
        rec.version
    );
    Ok(rec)
}

/// Writes `rec` to `path` atomically (a temporary file renamed over it).
pub fn write_recording(path: &Path, rec: &Recording) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp~");
    let mut text = serde_json::to_string_pretty(rec)?;
    text.push('\n');
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The events of one run, as a client collects them.
#[derive(Debug, Default)]
pub struct Collected {
    pub events: Vec<RunEvent>,
    pub exchanges: Vec<Exchange>,
    /// The delegated runs' exchanges, by their path in the tree (see `Recording::children`).
    pub children: BTreeMap<String, ChildRecording>,
    /// Each delegated run's path, by run id.
    paths: BTreeMap<String, String>,
}

impl Collected {
    /// Follows the tree: a child's path from its `Started` event, its exchanges by that path.
    fn note_child(&mut self, c: &ChildEvent) {
        match &c.event {
            RunEvent::Started { .. } => {
                let path = match self.paths.get(&c.parent_run_id) {
                    Some(parent) => format!("{parent}/{}", c.call_id),
                    None => c.call_id.clone(),
                };
                self.paths.insert(c.run_id.clone(), path);
            }
            RunEvent::LlmExchange(x) => {
                if let Some(path) = self.paths.get(&c.run_id) {
                    self.children
                        .entry(path.clone())
                        .or_insert_with(|| ChildRecording {
                            agent: c.agent.clone(),
                            input: String::new(),
                            exchanges: Vec::new(),
                        })
                        .exchanges
                        .push((**x).clone());
                }
            }
            _ => {}
        }
    }

    /// The recording of the whole tree.
    pub fn recording(&self, agent: &str, input: &str) -> Recording {
        let mut children = self.children.clone();
        // A child's input is its first user message.
        for c in children.values_mut() {
            if let Some(first) = c.exchanges.first() {
                c.input = first
                    .request
                    .messages
                    .iter()
                    .find_map(|m| match m {
                        caxton_ipc::toolhost::ChatMessage::User { content } => {
                            Some(content.clone())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
            }
        }
        Recording {
            version: RECORDING_VERSION,
            agent: agent.to_string(),
            input: input.to_string(),
            exchanges: self.exchanges.clone(),
            children,
        }
    }

    /// The agents the run delegated to (and handed off to), in the order of its calls.
    pub fn delegations(&self) -> Vec<String> {
        use caxton_ipc::agent::{
            DELEGATE_AGENT_PREFIX, DELEGATE_CAPABILITY_PREFIX, HANDOFF_PREFIX,
        };
        let routed = |id: &str| {
            self.events.iter().find_map(|e| match e {
                RunEvent::Routed {
                    call_id, chosen, ..
                } if call_id == id => Some(chosen.clone()),
                _ => None,
            })
        };
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::ToolCall { call_id, tool, .. } => {
                    if let Some(a) = tool
                        .strip_prefix(DELEGATE_AGENT_PREFIX)
                        .or_else(|| tool.strip_prefix(HANDOFF_PREFIX))
                    {
                        Some(a.to_string())
                    } else if tool.starts_with(DELEGATE_CAPABILITY_PREFIX) {
                        Some(routed(call_id).unwrap_or_else(|| "?".into()))
                    } else {
                        None
                    }
                }
                _ => None,
            })
            .collect()
    }

    /// The terminal event, if the run got that far.
    pub fn terminal(&self) -> Option<&RunEvent> {
        self.events.last().filter(|e| e.is_terminal())
    }

    /// Names of the tools the run called, in order.
    pub fn tool_calls(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::ToolCall { tool, .. } => Some(tool.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Sends `req` and reads its events until the terminal one, calling `each` on every event.
/// An `Error` response (refused before the run started) is returned as `Err`.
pub fn collect(
    socket: &Path,
    req: RunRequest,
    each: &mut dyn FnMut(&ApiResponse) -> anyhow::Result<()>,
) -> anyhow::Result<Result<Collected, caxton_ipc::api::ErrorBody>> {
    let mut client = Client::connect(socket)?;
    client.send(&ApiRequest::Run(req))?;
    let mut out = Collected::default();
    loop {
        let resp = client.recv()?;
        each(&resp)?;
        match resp {
            ApiResponse::Event(RunEvent::LlmExchange(x)) => out.exchanges.push(*x),
            ApiResponse::Event(RunEvent::Child(c)) => {
                out.note_child(&c);
                out.events.push(RunEvent::Child(c));
            }
            ApiResponse::Event(e) => {
                let done = e.is_terminal();
                out.events.push(e);
                if done {
                    return Ok(Ok(out));
                }
            }
            ApiResponse::Error(e) => return Ok(Err(e)),
            other => anyhow::bail!("unexpected response from the daemon: {other:?}"),
        }
    }
}

/// `caxton agent run`.
pub fn run(socket: &Path, mut req: RunRequest, display: RunDisplay<'_>) -> anyhow::Result<u8> {
    let stdout_tty = std::io::stdout().is_terminal();
    req.stream = display.json || stdout_tty;
    req.record = display.record.is_some();
    let (agent, input) = (req.agent.clone(), req.input.clone());
    let mut view = View {
        tty: stdout_tty,
        streamed: String::new(),
    };
    let collected = collect(socket, req, &mut |resp| {
        if display.json {
            let mut out = std::io::stdout().lock();
            out.write_all(&caxton_ipc::json::to_line(resp))?;
            out.flush()?;
        } else if let ApiResponse::Event(e) = resp {
            view.show(e);
        }
        Ok(())
    })?;
    let collected = match collected {
        Ok(c) => c,
        Err(e) => {
            if !display.json {
                eprintln!("caxton: {}", e.message);
            }
            return Ok(exit_for(e.kind));
        }
    };
    if let Some(path) = display.record {
        let rec = collected.recording(&agent, &input);
        write_recording(path, &rec)?;
        let delegated: usize = rec.children.values().map(|c| c.exchanges.len()).sum();
        eprintln!(
            "recorded {} LLM exchanges ({delegated} of them by {} delegated runs) to {}",
            rec.exchanges.len() + delegated,
            rec.children.len(),
            path.display()
        );
    }
    match collected.terminal() {
        Some(RunEvent::Failed { error, .. }) => Ok(exit_for(error.kind)),
        Some(_) => Ok(EXIT_OK),
        None => unexpected(ApiResponse::Error(caxton_ipc::api::ErrorBody::new(
            caxton_ipc::api::ErrorKind::Internal,
            "the run ended without a terminal event",
        ))),
    }
}

/// Human output of a run: tokens on stdout as they come (on a terminal), progress on stderr.
struct View {
    tty: bool,
    /// Text streamed during the current LLM call.
    streamed: String,
}

impl View {
    fn show(&mut self, event: &RunEvent) {
        let mut err = std::io::stderr().lock();
        match event {
            RunEvent::Child(c) => {
                self.end_streamed_line();
                show_child(&mut err, c);
            }
            RunEvent::Routed {
                capability,
                strategy,
                chosen,
                candidates,
                ..
            } => {
                let _ = writeln!(
                    err,
                    "  route {capability} ({strategy}) → {chosen} [{}]",
                    scores(candidates)
                );
            }
            RunEvent::Conversation { id, turn, agent } => {
                let _ = writeln!(err, "  conversation {id}, message {turn}, held by {agent}");
            }
            RunEvent::Handoff {
                from, to, reason, ..
            } => {
                let _ = writeln!(
                    err,
                    "  ⇒ {from} hands the conversation to {to}: {}",
                    one_line(reason, 200)
                );
            }
            RunEvent::Started {
                run_id,
                agent,
                worker_pid,
            } => {
                let _ = writeln!(err, "▶ {agent}: run {run_id} in worker pid {worker_pid}");
            }
            RunEvent::TurnStarted { .. } | RunEvent::LlmExchange(_) => {}
            RunEvent::LlmCall {
                turn,
                provider,
                model,
            } => {
                self.streamed.clear();
                let model = model
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default();
                let _ = writeln!(err, "  turn {turn}: asking {provider}{model}");
            }
            RunEvent::Token { text } => {
                self.streamed.push_str(text);
                if self.tty {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                }
            }
            RunEvent::LlmRetry {
                provider,
                attempt,
                error,
                wait_ms,
            } => {
                self.end_streamed_line();
                let _ = writeln!(
                    err,
                    "  ↻ {provider} attempt {attempt} failed ({}); retrying in {wait_ms} ms",
                    one_line(error, 200)
                );
            }
            RunEvent::LlmFallback { from, to, error } => {
                self.end_streamed_line();
                let _ = writeln!(
                    err,
                    "  ⇢ {from} failed ({}); falling back to {to}",
                    one_line(error, 200)
                );
            }
            RunEvent::LlmReply { tool_calls, .. } => {
                if *tool_calls > 0 {
                    self.end_streamed_line();
                }
            }
            RunEvent::ToolCall {
                tool, arguments, ..
            } => {
                let _ = writeln!(err, "  tool {tool} {arguments}");
            }
            RunEvent::MemoryRecalled { memories } => {
                let _ = writeln!(
                    err,
                    "  memory: {} relevant memories in the prompt",
                    memories.len()
                );
                for m in memories {
                    let _ = writeln!(err, "    · {}", one_line(m, 160));
                }
            }
            RunEvent::MemoryStored { entity, error } => match error {
                None => {
                    let _ = writeln!(err, "  memory: stored as `{entity}`");
                }
                Some(e) => {
                    let _ = writeln!(err, "  ✗ memory: not stored: {}", one_line(e, 200));
                }
            },
            RunEvent::ToolResult {
                ok,
                output,
                duration_us,
                ..
            } => {
                let mark = if *ok { "→" } else { "✗" };
                let _ = writeln!(
                    err,
                    "    {mark} {} ({:.1} ms)",
                    one_line(output, 200),
                    *duration_us as f64 / 1000.0
                );
            }
            RunEvent::Finished { answer, usage, .. } => {
                if self.tty && !self.streamed.is_empty() && self.streamed.trim() == answer.trim() {
                    println!();
                } else {
                    self.end_streamed_line();
                    println!("{answer}");
                }
                let _ = writeln!(err, "✓ done in {}", summary(usage));
                tree_summary(&mut err, usage);
            }
            RunEvent::Failed { error, usage, .. } => {
                self.end_streamed_line();
                let _ = writeln!(err, "✗ {}", error.message);
                if usage.llm_calls > 0 || usage.tool_calls > 0 {
                    let _ = writeln!(err, "  used {}", summary(usage));
                }
                tree_summary(&mut err, usage);
            }
        }
    }

    /// Ends a line of streamed text that did not end the run (it preceded tool calls or a retry).
    fn end_streamed_line(&mut self) {
        if self.tty && !self.streamed.is_empty() && !self.streamed.ends_with('\n') {
            println!();
        }
        self.streamed.clear();
    }
}

/// One event of a delegated run, indented by its depth under its parent's lines.
fn show_child(err: &mut impl Write, c: &ChildEvent) {
    let pad = "    ".repeat(c.depth as usize);
    let agent = &c.agent;
    let _ = match &c.event {
        RunEvent::Started {
            run_id, worker_pid, ..
        } => writeln!(
            err,
            "{pad}▶ {agent}: run {run_id} in worker pid {worker_pid} (for {})",
            c.parent_run_id
        ),
        RunEvent::LlmCall {
            turn,
            provider,
            model,
        } => {
            let model = model
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            writeln!(err, "{pad}  turn {turn}: asking {provider}{model}")
        }
        RunEvent::ToolCall {
            tool, arguments, ..
        } => {
            writeln!(err, "{pad}  tool {tool} {}", one_line(arguments, 200))
        }
        RunEvent::ToolResult {
            ok,
            output,
            duration_us,
            ..
        } => writeln!(
            err,
            "{pad}    {} {} ({:.1} ms)",
            if *ok { "→" } else { "✗" },
            one_line(output, 200),
            *duration_us as f64 / 1000.0
        ),
        RunEvent::Routed {
            capability,
            strategy,
            chosen,
            candidates,
            ..
        } => writeln!(
            err,
            "{pad}  route {capability} ({strategy}) → {chosen} [{}]",
            scores(candidates)
        ),
        RunEvent::Finished { answer, usage, .. } => writeln!(
            err,
            "{pad}✓ {agent} answered in {}: {}",
            summary(usage),
            one_line(answer, 200)
        ),
        RunEvent::Failed { error, .. } => {
            writeln!(err, "{pad}✗ {agent}: {}", one_line(&error.message, 300))
        }
        RunEvent::LlmRetry {
            provider,
            attempt,
            error,
            wait_ms,
        } => writeln!(
            err,
            "{pad}  ↻ {provider} attempt {attempt} failed ({}); retrying in {wait_ms} ms",
            one_line(error, 200)
        ),
        RunEvent::LlmFallback { from, to, error } => writeln!(
            err,
            "{pad}  ⇢ {from} failed ({}); falling back to {to}",
            one_line(error, 200)
        ),
        // Grandchildren arrive as their own `Child` events, never nested.
        _ => Ok(()),
    };
}

/// `a 1.000, b 0.000`.
fn scores(candidates: &[caxton_ipc::api::RouteCandidate]) -> String {
    candidates
        .iter()
        .map(|c| format!("{} {:.3}", c.agent, c.score))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The usage of a run's whole tree, per agent and per model, when it delegated.
fn tree_summary(err: &mut impl Write, u: &RunUsage) {
    let Some(tree) = &u.tree else { return };
    let line = |s: &caxton_ipc::api::Spent| {
        let cost = if s.cost_usd > 0.0 {
            format!(", ${:.6}", s.cost_usd)
        } else {
            String::new()
        };
        format!(
            "{} runs, {} LLM calls, {} tool calls, {}+{} tokens{cost}",
            s.runs, s.llm_calls, s.tool_calls, s.prompt_tokens, s.completion_tokens
        )
    };
    let _ = writeln!(
        err,
        "  tree ({} delegated runs): {}",
        tree.descendants,
        line(&tree.total)
    );
    for (agent, s) in &tree.by_agent {
        let _ = writeln!(err, "    agent {agent}: {}", line(s));
    }
    for (model, s) in &tree.by_model {
        let _ = writeln!(err, "    model {model}: {}", line(s));
    }
}

/// `1234 ms: 2 turns, 2 LLM calls, 1 tool call, 63+5 tokens, $0.000120`.
pub fn summary(u: &RunUsage) -> String {
    let plural = |n: u32, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    let cost = if u.cost_usd > 0.0 {
        format!(", ${:.6}", u.cost_usd)
    } else {
        String::new()
    };
    format!(
        "{} ms: {}, {}, {}, {}+{} tokens{cost}",
        u.wall_ms,
        plural(u.turns, "turn"),
        plural(u.llm_calls, "LLM call"),
        plural(u.tool_calls, "tool call"),
        u.prompt_tokens,
        u.completion_tokens
    )
}

pub fn one_line(s: &str, max: usize) -> String {
    let flat = s.replace('\n', " ⏎ ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}
