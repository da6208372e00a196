//! The agent loop of one run: render the prompts, then LLM → tool calls → results → LLM … until a
//! final answer, a limit, or an error. Enforces the agent's tool allowlist and limits.

use std::time::{Duration, Instant};

use caxton_ipc::agent::AgentSpec;
use caxton_ipc::api::{ErrorBody, ErrorKind, RunEvent, RunUsage};
use caxton_ipc::memory::{self, MemoryRequest, MemoryResponse};
use caxton_ipc::recording::{Exchange, RecordedRequest};
use caxton_ipc::template;
use caxton_ipc::toolhost::{
    CallToolRequest, ChatBudget, ChatMessage, ChatProgress, ChatReply, ChatRequest, ToolSpec,
    ToolhostRequest, ToolhostResponse,
};
use caxton_ipc::worker::WorkerJob;

use caxton_ipc::worker::{SupervisorReply, WorkerRequest};

use crate::Session;
use crate::client::{MemoryClient, ToolhostClient};

/// Runs the job, emitting progress events on `session`; returns the terminal event (not yet
/// emitted).
pub fn run<W: std::io::Write>(job: &WorkerJob, session: &mut Session<W>) -> RunEvent {
    let started = Instant::now();
    let mut usage = RunUsage::default();
    let outcome = run_inner(job, started, &mut usage, session);
    usage.wall_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(answer) => RunEvent::Finished {
            run_id: job.run_id.clone(),
            answer,
            usage,
        },
        Err(error) => RunEvent::Failed {
            run_id: job.run_id.clone(),
            error,
            usage,
        },
    }
}

/// Renders an agent template from the request, `--var`s and `[parameters]` (in that priority).
pub fn render_prompt(
    job: &WorkerJob,
    which: &str,
    template_text: &str,
) -> Result<String, ErrorBody> {
    let lookup = |name: &str| -> Option<&str> {
        if name == "request" {
            return Some(job.input.as_str());
        }
        job.vars
            .get(name)
            .or_else(|| job.agent.parameters.get(name))
            .map(String::as_str)
    };
    template::render(template_text, lookup, false).map_err(|e| {
        let hint = match &e {
            template::TemplateError::Missing { name, .. } => {
                format!("; pass it with `--var {name}=…` (or \"vars\" in the request), or add it to [parameters]")
            }
            _ => String::new(),
        };
        ErrorBody::new(ErrorKind::Template, format!("agent `{}`: {which}: {e}{hint}", job.agent.name))
    })
}

fn run_inner<W: std::io::Write>(
    job: &WorkerJob,
    started: Instant,
    usage: &mut RunUsage,
    session: &mut Session<W>,
) -> Result<String, ErrorBody> {
    let agent = &job.agent;
    let system = render_prompt(job, "system_prompt", &agent.system_prompt)?;
    let user = render_prompt(job, "user_prompt_template", &agent.user_prompt_template)?;
    let mut deadline = started + Duration::from_millis(job.deadline_ms);
    let remaining_ms = |deadline: Instant| {
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
    };
    macro_rules! send {
        ($e:expr) => {
            session.emit(&$e).map_err(|err| {
                ErrorBody::new(
                    ErrorKind::Cancelled,
                    format!("the supervisor went away: {err}"),
                )
            })
        };
    }

    let mut toolhost = ToolhostClient::connect(&job.toolhost_socket, &job.toolhost_token)?;
    let mut memory = job.memory.as_ref().map(MemoryClient::connect).transpose()?;
    let is_memory_tool = |name: &str| memory::TOOL_NAMES.contains(&name) && job.memory.is_some();
    let tools = tool_specs(agent, &mut toolhost, memory.as_mut(), &is_memory_tool)?;
    let mut system = system;
    if let Some(m) = memory.as_mut()
        && agent.memory.search_limit > 0
    {
        let recalled = match m.request(&MemoryRequest::Recall {
            query: job.input.clone(),
            limit: agent.memory.search_limit,
            min_similarity: agent.memory.min_similarity,
        })? {
            MemoryResponse::Recalled(lines) => lines,
            other => return Err(unexpected_memory(&other)),
        };
        if !recalled.is_empty() {
            system.push_str("\n\nRelevant memories from earlier runs:\n");
            for line in &recalled {
                system.push_str("- ");
                system.push_str(line);
                system.push('\n');
            }
            send!(RunEvent::MemoryRecalled { memories: recalled })?;
        }
    }
    let mut messages = vec![
        ChatMessage::System { content: system },
        ChatMessage::User { content: user },
    ];
    let mut replay = job.replay.as_ref().map(|r| r.exchanges.iter());

    // The supervisor's clock is the one that counts (the job may have waited in a pipe); asked
    // once, since both clocks run at the same rate from here on.
    if let SupervisorReply::TimeLeft { ms } = session.ask(WorkerRequest::TimeLeft)? {
        deadline = deadline.min(Instant::now() + Duration::from_millis(ms));
    }
    for turn in 1..=agent.limits.max_turns {
        usage.turns = turn;
        send!(RunEvent::TurnStarted { turn })?;
        check_budget(agent, usage, "LLM call")?;
        send!(RunEvent::LlmCall {
            turn,
            provider: agent.llm.provider.clone(),
            model: agent.llm.model.clone(),
        })?;
        let chat = ChatRequest {
            run_id: job.run_id.clone(),
            agent: agent.name.clone(),
            provider: agent.llm.provider.clone(),
            fallback: agent.llm.fallback.clone(),
            model: agent.llm.model.clone(),
            temperature: agent.llm.temperature,
            top_p: agent.llm.top_p,
            seed: agent.llm.seed,
            max_tokens: agent.llm.max_tokens,
            stop: agent.llm.stop.clone(),
            tool_choice: agent.llm.tool_choice.for_turn(turn),
            messages: messages.clone(),
            tools: tools.clone(),
            timeout_ms: remaining_ms(deadline),
            stream: job.stream,
            budget: ChatBudget {
                tokens_left: agent
                    .limits
                    .max_tokens
                    .map(|max| max.saturating_sub(usage.total_tokens())),
                usd_left: agent.limits.max_cost_usd.map(|max| max - usage.cost_usd),
            },
        };
        let reply = match replay.as_mut() {
            Some(recorded) => replayed(recorded.next(), &chat, usage.llm_calls + 1)?,
            None => toolhost.chat(chat.clone(), &mut |p| send!(progress_event(p)))?,
        };
        usage.llm_calls += 1;
        usage.prompt_tokens += reply.prompt_tokens;
        usage.completion_tokens += reply.completion_tokens;
        usage.cost_usd += reply.cost_usd;
        send!(RunEvent::LlmReply {
            turn,
            provider: reply.provider.clone(),
            model: reply.model.clone(),
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            cost_usd: reply.cost_usd,
            tool_calls: reply.tool_calls.len() as u32,
        })?;
        if job.record {
            send!(RunEvent::LlmExchange(Box::new(Exchange {
                request: RecordedRequest::of(&chat),
                reply: reply.clone(),
            })))?;
        }
        if reply.tool_calls.is_empty() {
            let answer = reply.content.unwrap_or_default();
            if let Some(m) = memory.as_mut()
                && agent.memory.auto_store
            {
                let stored = m.request(&MemoryRequest::StoreInteraction {
                    run_id: job.run_id.clone(),
                    input: job.input.clone(),
                    answer: answer.clone(),
                });
                send!(RunEvent::MemoryStored {
                    entity: format!("interaction {}", job.run_id),
                    error: stored.err().map(|e| e.message),
                })?;
            }
            return Ok(answer);
        }
        messages.push(ChatMessage::Assistant {
            content: reply.content.clone(),
            tool_calls: reply.tool_calls.clone(),
        });
        for call in reply.tool_calls {
            if usage.tool_calls >= agent.limits.max_tool_calls {
                return Err(ErrorBody::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "agent `{}` reached max_tool_calls = {} ([limits] in {})",
                        agent.name, agent.limits.max_tool_calls, agent.source
                    ),
                ));
            }
            check_budget(agent, usage, "tool call")?;
            usage.tool_calls += 1;
            send!(RunEvent::ToolCall {
                call_id: call.id.clone(),
                tool: call.name.clone(),
                arguments: call.arguments.clone(),
            })?;
            let call_started = Instant::now();
            let (content, is_error) = if !agent.tools.contains(&call.name) {
                (
                    format!(
                        "tool `{}` is not allowed for agent `{}` (allowed: {})",
                        call.name,
                        agent.name,
                        if agent.tools.is_empty() {
                            "none".to_string()
                        } else {
                            agent.tools.join(", ")
                        }
                    ),
                    true,
                )
            } else {
                let req = CallToolRequest {
                    run_id: job.run_id.clone(),
                    agent: agent.name.clone(),
                    tool: call.name.clone(),
                    arguments: call.arguments.clone(),
                    timeout_ms: agent.limits.tool_timeout_ms.min(remaining_ms(deadline)),
                };
                let routed = match memory.as_mut() {
                    Some(m) if is_memory_tool(&call.name) => m
                        .request(&MemoryRequest::CallTool {
                            name: call.name.clone(),
                            arguments: call.arguments.clone(),
                        })
                        .map(|r| match r {
                            MemoryResponse::ToolOutput(content) => {
                                ToolhostResponse::ToolOutput(caxton_ipc::toolhost::ToolOutput {
                                    content,
                                    is_error: false,
                                    duration_us: 0,
                                })
                            }
                            other => ToolhostResponse::Error(unexpected_memory(&other)),
                        }),
                    _ => toolhost.request(&ToolhostRequest::CallTool(req)),
                };
                match routed {
                    Ok(ToolhostResponse::ToolOutput(out)) => (out.content, out.is_error),
                    // The memory service itself is gone: the run cannot go on either.
                    Err(e) if e.kind == ErrorKind::Memory => return Err(e),
                    Ok(other) => return Err(unexpected(&other)),
                    // The toolhost itself is gone: the run cannot go on.
                    Err(e) if e.kind == ErrorKind::Toolhost => return Err(e),
                    // The tool failed: the LLM sees the failure and may recover.
                    Err(e) => (e.message, true),
                }
            };
            send!(RunEvent::ToolResult {
                call_id: call.id.clone(),
                tool: call.name.clone(),
                ok: !is_error,
                output: content.clone(),
                duration_us: call_started.elapsed().as_micros() as u64,
            })?;
            messages.push(ChatMessage::Tool {
                call_id: call.id,
                name: call.name,
                content,
                is_error,
            });
        }
    }
    Err(ErrorBody::new(
        ErrorKind::LimitExceeded,
        format!(
            "agent `{}` reached max_turns = {} without a final answer ([limits] in {})",
            agent.name, agent.limits.max_turns, agent.source
        ),
    ))
}

/// Stops the run before `next` when a budget of `[limits]` is already spent.
fn check_budget(agent: &AgentSpec, usage: &RunUsage, next: &str) -> Result<(), ErrorBody> {
    let exceeded = |what: String| {
        Err(ErrorBody::new(
            ErrorKind::LimitExceeded,
            format!(
                "budget exceeded: {what}; stopped before the next {next} ([limits] in {})",
                agent.source
            ),
        ))
    };
    if let Some(max) = agent.limits.max_tokens
        && usage.total_tokens() >= max
    {
        return exceeded(format!(
            "used {} of max_tokens = {max}",
            usage.total_tokens()
        ));
    }
    if let Some(max) = agent.limits.max_cost_usd
        && usage.cost_usd >= max
    {
        return exceeded(format!(
            "spent ${:.6} of max_cost_usd = {max}",
            usage.cost_usd
        ));
    }
    Ok(())
}

/// The run event for a chat's progress.
fn progress_event(p: ChatProgress) -> RunEvent {
    match p {
        ChatProgress::Text { text } => RunEvent::Token { text },
        ChatProgress::Retry {
            provider,
            attempt,
            error,
            wait_ms,
        } => RunEvent::LlmRetry {
            provider,
            attempt,
            error,
            wait_ms,
        },
        ChatProgress::Fallback { from, to, error } => RunEvent::LlmFallback { from, to, error },
    }
}

/// The recorded reply for LLM call number `n`, when the live request is the recorded one.
fn replayed(
    recorded: Option<&Exchange>,
    live: &ChatRequest,
    n: u32,
) -> Result<ChatReply, ErrorBody> {
    let diverged = |what: String| {
        Err(ErrorBody::new(
            ErrorKind::Replay,
            format!("replay diverged at LLM call {n}: {what}"),
        ))
    };
    let Some(exchange) = recorded else {
        return diverged("the recording has no more LLM calls".into());
    };
    match exchange.request.difference(&RecordedRequest::of(live)) {
        Some(difference) => diverged(difference),
        None => Ok(exchange.reply.clone()),
    }
}

/// The specs of the agent's tools, in its order: memory tools from the memory service, the rest
/// from the toolhost.
fn tool_specs(
    agent: &AgentSpec,
    toolhost: &mut ToolhostClient,
    memory: Option<&mut MemoryClient>,
    is_memory_tool: &dyn Fn(&str) -> bool,
) -> Result<Vec<ToolSpec>, ErrorBody> {
    let (from_memory, from_toolhost): (Vec<String>, Vec<String>) =
        agent.tools.iter().cloned().partition(|t| is_memory_tool(t));
    let mut specs = Vec::new();
    if !from_toolhost.is_empty() {
        match toolhost.request(&ToolhostRequest::Tools {
            names: from_toolhost,
        })? {
            ToolhostResponse::Tools(tools) => specs.extend(tools),
            other => return Err(unexpected(&other)),
        }
    }
    if let Some(m) = memory
        && !from_memory.is_empty()
    {
        match m.request(&MemoryRequest::Tools)? {
            MemoryResponse::Tools(tools) => {
                specs.extend(tools.into_iter().filter(|t| from_memory.contains(&t.name)))
            }
            other => return Err(unexpected_memory(&other)),
        }
    }
    specs.sort_by_key(|s| agent.tools.iter().position(|t| *t == s.name));
    Ok(specs)
}

fn unexpected_memory(resp: &MemoryResponse) -> ErrorBody {
    ErrorBody::new(
        ErrorKind::Internal,
        format!("unexpected memory service response: {resp:?}"),
    )
}

fn unexpected(resp: &ToolhostResponse) -> ErrorBody {
    ErrorBody::new(
        ErrorKind::Internal,
        format!("unexpected toolhost response: {resp:?}"),
    )
}
