//! The agent loop of one run: render the prompts, then LLM → tool calls → results → LLM … until a
//! final answer, a limit, or an error. Enforces the agent's tool allowlist and limits.

use std::time::Instant;

use caxton_ipc::agent::AgentSpec;
use caxton_ipc::api::{ErrorBody, ErrorKind, RunEvent, RunUsage, Spent};
use caxton_ipc::error::Chain;
use caxton_ipc::memory;
use caxton_ipc::recording::{Exchange, RecordedRequest};
use caxton_ipc::template::{self, TemplateError};
use caxton_ipc::toolhost::{
    CallToolRequest, ChatBudget, ChatMessage, ChatProgress, ChatReply, ChatRequest, ToolSpec,
};
use caxton_ipc::worker::WorkerJob;

use caxton_ipc::worker::{DelegationCall, DelegationResult, SupervisorReply, WorkerRequest};

use caxton_ipc::trace::SpanKind;

use crate::client::{MemoryClient, ServiceError, ToolhostClient};
use crate::spans::Span;
use crate::{Session, SessionError};

/// Why a run ended without an answer. It leaves the worker as the terminal event's
/// [`ErrorBody`]: its [`RunError::kind`] and its whole chain (made in [`run`] only).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A prompt template names a variable nobody set, or is malformed.
    #[error("agent `{agent}`: {which}: {error}{}", template_hint(.error))]
    Template {
        agent: String,
        which: &'static str,
        error: TemplateError,
    },
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The toolhost or the memory service failed, or answered with an error the run cannot go
    /// on after.
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("agent `{agent}` reached max_tool_calls = {max} ([limits] in {file})")]
    MaxToolCalls {
        agent: String,
        max: u32,
        file: String,
    },
    #[error(
        "agent `{agent}` reached max_turns = {max} without a final answer ([limits] in {file})"
    )]
    MaxTurns {
        agent: String,
        max: u32,
        file: String,
    },
    /// `spent` says which budget and how much of it is used.
    #[error("budget exceeded: {spent}; stopped before the next {next} ([limits] in {file})")]
    Budget {
        spent: String,
        next: &'static str,
        file: String,
    },
    #[error("replay diverged at LLM call {call}: {what}")]
    ReplayDiverged { call: u32, what: String },
}

impl RunError {
    /// The kind of error the run's terminal event reports.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RunError::Template { .. } => ErrorKind::Template,
            RunError::Session(_) => ErrorKind::Cancelled,
            RunError::Service(e) => e.kind(),
            RunError::MaxToolCalls { .. } | RunError::MaxTurns { .. } | RunError::Budget { .. } => {
                ErrorKind::LimitExceeded
            }
            RunError::ReplayDiverged { .. } => ErrorKind::Replay,
        }
    }

    /// The wire form, for the terminal event.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::new(self.kind(), Chain(self).to_string())
    }
}

/// How to set a missing template variable.
fn template_hint(e: &TemplateError) -> String {
    match e {
        TemplateError::Missing { name, .. } => format!(
            "; pass it with `--var {name}=…` (or \"vars\" in the request), or add it to [parameters]"
        ),
        _ => String::new(),
    }
}

/// Runs the job, emitting progress events on `session`; returns the terminal event (not yet
/// emitted).
pub fn run(job: &WorkerJob, session: &Session) -> RunEvent {
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
            error: error.to_body(),
            usage,
        },
    }
}

/// Renders an agent template from the request, `--var`s and `[parameters]` (in that priority).
pub fn render_prompt(
    job: &WorkerJob,
    which: &'static str,
    template_text: &str,
) -> Result<String, RunError> {
    let lookup = |name: &str| -> Option<&str> {
        if name == "request" {
            return Some(job.input.as_str());
        }
        job.vars
            .get(name)
            .or_else(|| job.agent.parameters.get(name))
            .map(String::as_str)
    };
    template::render(template_text, lookup, false).map_err(|error| RunError::Template {
        agent: job.agent.name.clone(),
        which,
        error,
    })
}

fn run_inner(
    job: &WorkerJob,
    started: Instant,
    usage: &mut RunUsage,
    session: &Session,
) -> Result<String, RunError> {
    let agent = &job.agent;
    let system = render_prompt(job, "system_prompt", &agent.system_prompt)?;
    let user = render_prompt(job, "user_prompt_template", &agent.user_prompt_template)?;
    let deadline = started + job.deadline.remaining();
    let remaining_ms = |deadline: Instant| {
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
    };
    macro_rules! send {
        ($e:expr) => {
            session
                .emit(&$e)
                .map_err(|err| RunError::Session(SessionError::Send(err)))
        };
    }

    let spans = session.spans();
    let mut toolhost = ToolhostClient::connect(&job.toolhost_socket, &job.toolhost_token, session)?;
    let mut memory = (job.memory.as_ref())
        .map(|access| MemoryClient::connect(access, session))
        .transpose()?;
    let is_memory_tool = |name: &str| memory::TOOL_NAMES.contains(&name) && job.memory.is_some();
    let mut tools = tool_specs(agent, &toolhost, memory.as_ref(), &is_memory_tool);
    tools.extend(job.delegation_tools.iter().cloned());
    // What this run's delegations used (their whole trees): charged to its own budgets.
    let mut delegated = Spent::default();
    let mut system = system;
    if let Some(m) = memory.as_mut()
        && agent.memory.search_limit > 0
    {
        let recalled = m.recall(
            &job.input,
            agent.memory.search_limit,
            agent.memory.min_similarity,
            spans.run_context().as_ref(),
        )?;
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
    // The conversation's earlier runs go between the system prompt and the request.
    let mut messages = vec![ChatMessage::System { content: system }];
    messages.extend(job.history.iter().cloned());
    messages.push(ChatMessage::User { content: user });
    let mut replay = job.replay.as_ref().map(|r| r.exchanges.iter());

    for turn in 1..=agent.limits.max_turns {
        usage.turns = turn;
        let mut turn_span = spans.start(format!("turn {turn}"), SpanKind::Internal, None);
        turn_span.set("caxton.turn", turn);
        send!(RunEvent::TurnStarted { turn })?;
        check_budget(agent, usage, &delegated, "LLM call")?;
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
        let mut chat_span = chat_span(spans, agent, &turn_span, &chat);
        let reply = match replay.as_mut() {
            Some(recorded) => replayed(recorded.next(), &chat, usage.llm_calls + 1),
            None => toolhost.chat::<RunError>(chat.clone(), chat_span.context().as_ref(), |p| {
                send!(progress_event(p))
            }),
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                chat_span.fail(&e.kind().as_str(), Chain(&e).to_string());
                return Err(e);
            }
        };
        chat_span
            .set("gen_ai.response.model", reply.model.as_str())
            .set("gen_ai.usage.input_tokens", reply.prompt_tokens)
            .set("gen_ai.usage.output_tokens", reply.completion_tokens)
            .set("caxton.cost_usd", reply.cost_usd)
            .set_content("gen_ai.output.messages", || {
                json_text(&(&reply.content, &reply.tool_calls))
            });
        drop(chat_span);
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
                let stored = m.store_interaction(
                    &job.run_id,
                    &job.input,
                    &answer,
                    turn_span.context().as_ref(),
                );
                send!(RunEvent::MemoryStored {
                    entity: format!("interaction {}", job.run_id),
                    error: stored.err().map(|e| Chain(&e).to_string()),
                })?;
            }
            return Ok(answer);
        }
        messages.push(ChatMessage::Assistant {
            content: reply.content.clone(),
            tool_calls: reply.tool_calls.clone(),
        });
        // The turn's delegations go first, together: the supervisor runs them in parallel.
        let delegations: Vec<_> = reply
            .tool_calls
            .iter()
            .filter_map(|c| Some((c, agent.delegation.target_of_tool(&c.name)?)))
            .collect();
        let mut delegated_results = std::collections::HashMap::new();
        // Each delegation's span, ended with its result (the child's run hangs from it).
        let mut delegation_spans = std::collections::HashMap::new();
        let batch_started = Instant::now();
        if !delegations.is_empty() {
            let mut calls = Vec::new();
            let mut handoffs = Vec::new();
            for (call, (target, handoff)) in delegations {
                take_tool_call(agent, usage, &delegated)?;
                send!(RunEvent::ToolCall {
                    call_id: call.id.clone(),
                    tool: call.name.clone(),
                    arguments: call.arguments.clone(),
                })?;
                let tool_span = tool_span(spans, &turn_span, &call.name, &call.id, &call.arguments);
                let span_id = tool_span.id();
                delegation_spans.insert(call.id.clone(), tool_span);
                let parsed = if handoff {
                    handoffs.push(call.id.clone());
                    reason_of(&call.arguments).map(|reason| (job.input.clone(), Some(reason)))
                } else {
                    task_of(&call.arguments).map(|task| (task, None))
                };
                match parsed {
                    Ok((task, handoff)) => calls.push(DelegationCall {
                        call_id: call.id.clone(),
                        target,
                        task,
                        handoff,
                        span_id,
                    }),
                    Err(e) => {
                        delegated_results.insert(call.id.clone(), (e, true));
                    }
                }
            }
            if !calls.is_empty() {
                let reply = session.ask(WorkerRequest::Delegate { calls })?;
                let SupervisorReply::Delegated { results } = reply else {
                    return Err(RunError::Session(SessionError::Unexpected(format!(
                        "{reply:?}"
                    ))));
                };
                for r in results {
                    delegated.add(&r.usage.total());
                    // A handoff that was taken ends this run with the new holder's answer.
                    if let (true, Ok(answer)) = (handoffs.contains(&r.call_id), &r.outcome) {
                        send!(RunEvent::ToolResult {
                            call_id: r.call_id.clone(),
                            tool: format!("handoff to {}", r.agent.as_deref().unwrap_or("?")),
                            ok: true,
                            output: answer.clone(),
                            duration_us: batch_started.elapsed().as_micros() as u64,
                        })?;
                        return Ok(answer.clone());
                    }
                    delegated_results.insert(r.call_id.clone(), delegation_output(&r));
                }
            }
        }
        for call in reply.tool_calls {
            let mut call_started = Instant::now();
            let mut span = delegation_spans.remove(&call.id);
            let (content, is_error) = if let Some(done) = delegated_results.remove(&call.id) {
                // The turn's delegations ran together: each took as long as the batch.
                call_started = batch_started;
                done
            } else {
                take_tool_call(agent, usage, &delegated)?;
                send!(RunEvent::ToolCall {
                    call_id: call.id.clone(),
                    tool: call.name.clone(),
                    arguments: call.arguments.clone(),
                })?;
                let tool_span = span.insert(tool_span(
                    spans,
                    &turn_span,
                    &call.name,
                    &call.id,
                    &call.arguments,
                ));
                if !agent.tools.contains(&call.name) {
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
                    let trace = tool_span.context();
                    let routed = match memory.as_mut() {
                        Some(m) if is_memory_tool(&call.name) => m
                            .call_tool(&call.name, &call.arguments, trace.as_ref())
                            .map(|content| (content, false)),
                        _ => toolhost
                            .call_tool(req, trace.as_ref())
                            .map(|out| (out.content, out.is_error)),
                    };
                    match routed {
                        Ok(done) => done,
                        // The toolhost or the memory service itself is gone (or answers nonsense):
                        // the run cannot go on.
                        Err(e)
                            if matches!(e.kind(), ErrorKind::Memory | ErrorKind::Toolhost)
                                || matches!(e, ServiceError::Unexpected { .. }) =>
                        {
                            tool_span.fail(&e.kind().as_str(), Chain(&e).to_string());
                            return Err(e.into());
                        }
                        // The tool failed: the LLM sees the failure and may recover.
                        Err(e) => (Chain(&e).to_string(), true),
                    }
                }
            };
            if let Some(span) = &mut span {
                span.set_content("gen_ai.tool.call.result", || content.clone());
                if is_error {
                    // The tool's own words may hold data: only with content capture.
                    let message = if spans.capture_content() {
                        content.clone()
                    } else {
                        "the tool call failed".to_string()
                    };
                    span.fail("tool_error", message);
                }
            }
            drop(span);
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
    Err(RunError::MaxTurns {
        agent: agent.name.clone(),
        max: agent.limits.max_turns,
        file: agent.source.clone(),
    })
}

/// The span of one LLM call (`chat {model}`), under its turn.
fn chat_span<'a>(
    spans: &'a crate::spans::Spans,
    agent: &AgentSpec,
    turn: &Span<'_>,
    chat: &ChatRequest,
) -> Span<'a> {
    let name = match &agent.llm.model {
        Some(model) => format!("chat {model}"),
        None => "chat".to_string(),
    };
    let mut span = spans.start(name, SpanKind::Client, Some(turn));
    span.set("gen_ai.operation.name", "chat")
        .set("gen_ai.provider.name", agent.llm.provider.as_str())
        .set_content("gen_ai.input.messages", || json_text(&chat.messages));
    if let Some(model) = &agent.llm.model {
        span.set("gen_ai.request.model", model.as_str());
    }
    if let Some(t) = chat.temperature {
        span.set("gen_ai.request.temperature", f64::from(t));
    }
    if let Some(m) = chat.max_tokens {
        span.set("gen_ai.request.max_tokens", m);
    }
    span
}

/// The span of one tool call or delegation (`execute_tool {tool}`), under its turn.
fn tool_span<'a>(
    spans: &'a crate::spans::Spans,
    turn: &Span<'_>,
    tool: &str,
    call_id: &str,
    arguments: &str,
) -> Span<'a> {
    let mut span = spans.start(
        format!("execute_tool {tool}"),
        SpanKind::Internal,
        Some(turn),
    );
    span.set("gen_ai.operation.name", "execute_tool")
        .set("gen_ai.tool.name", tool)
        .set("gen_ai.tool.call.id", call_id)
        .set("gen_ai.tool.type", "function")
        .set_content("gen_ai.tool.call.arguments", || arguments.to_string());
    span
}

/// JSON text of a value for a span attribute.
fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Counts one tool call (a delegation is one), unless the run has made all it may: its own
/// and its delegations' together.
fn take_tool_call(
    agent: &AgentSpec,
    usage: &mut RunUsage,
    delegated: &Spent,
) -> Result<(), RunError> {
    if usage.tool_calls + delegated.tool_calls >= agent.limits.max_tool_calls {
        return Err(RunError::MaxToolCalls {
            agent: agent.name.clone(),
            max: agent.limits.max_tool_calls,
            file: agent.source.clone(),
        });
    }
    check_budget(agent, usage, delegated, "tool call")?;
    usage.tool_calls += 1;
    Ok(())
}

/// Stops the run before `next` when a budget of `[limits]` is already spent, by the run itself
/// and its delegations together.
fn check_budget(
    agent: &AgentSpec,
    usage: &RunUsage,
    delegated: &Spent,
    next: &'static str,
) -> Result<(), RunError> {
    let exceeded = |spent: String| {
        Err(RunError::Budget {
            spent,
            next,
            file: agent.source.clone(),
        })
    };
    let tokens = usage.total_tokens() + delegated.total_tokens();
    if let Some(max) = agent.limits.max_tokens
        && tokens >= max
    {
        return exceeded(format!("used {tokens} of max_tokens = {max}"));
    }
    let cost = usage.cost_usd + delegated.cost_usd;
    if let Some(max) = agent.limits.max_cost_usd
        && cost >= max
    {
        return exceeded(format!("spent ${cost:.6} of max_cost_usd = {max}"));
    }
    Ok(())
}

/// The `task` argument of a delegation tool call, or the tool error the LLM sees.
fn task_of(arguments: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Args {
        task: String,
    }
    match serde_json::from_str::<Args>(arguments) {
        Ok(a) if !a.task.trim().is_empty() => Ok(a.task),
        Ok(_) => Err("the delegation's `task` is empty: say what the agent should do".into()),
        Err(e) => Err(format!(
            "a delegation takes {{\"task\": \"…\"}} (the text the agent works on): {e}"
        )),
    }
}

/// The `reason` argument of a handoff tool call, or the tool error the LLM sees.
fn reason_of(arguments: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Args {
        #[serde(default)]
        reason: String,
    }
    serde_json::from_str::<Args>(arguments)
        .map(|a| a.reason)
        .map_err(|e| format!("a handoff takes {{\"reason\": \"…\"}}: {e}"))
}

/// The tool result the LLM sees for a delegation: the child's answer, or an error naming the
/// child agent and the cause.
fn delegation_output(r: &DelegationResult) -> (String, bool) {
    match &r.outcome {
        Ok(answer) => (answer.clone(), false),
        Err(e) => {
            let who = r
                .agent
                .as_deref()
                .map_or_else(String::new, |a| format!(" to agent `{a}`"));
            (
                format!(
                    "delegation{who} failed ({}): {}",
                    e.kind.as_str(),
                    e.message
                ),
                true,
            )
        }
    }
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
) -> Result<ChatReply, RunError> {
    let diverged = |what: String| Err(RunError::ReplayDiverged { call: n, what });
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
    toolhost: &ToolhostClient,
    memory: Option<&MemoryClient>,
    is_memory_tool: &dyn Fn(&str) -> bool,
) -> Vec<ToolSpec> {
    let (from_memory, from_toolhost): (Vec<String>, Vec<String>) =
        agent.tools.iter().cloned().partition(|t| is_memory_tool(t));
    let memory_tools = memory.map_or(&[][..], |m| m.tools());
    let mut specs: Vec<ToolSpec> = (toolhost.tools().iter())
        .filter(|t| from_toolhost.contains(&t.name))
        .chain(
            memory_tools
                .iter()
                .filter(|t| from_memory.contains(&t.name)),
        )
        .cloned()
        .collect();
    specs.sort_by_key(|s| agent.tools.iter().position(|t| *t == s.name));
    specs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Service;
    use caxton_ipc::frame::FrameError;

    #[test]
    fn a_missing_template_value_says_how_to_set_it() {
        let error = template::render("{{city}}", |_| None, false).unwrap_err();
        let e = RunError::Template {
            agent: "weather".into(),
            which: "user_prompt_template",
            error,
        };
        assert_eq!(e.kind(), ErrorKind::Template);
        let body = e.to_body();
        assert!(
            body.message.starts_with(
                "agent `weather`: user_prompt_template: no value for `{{city}}`; pass it with `--var city=…`"
            ),
            "{}",
            body.message
        );
    }

    #[test]
    fn each_run_error_has_its_kind_and_whole_chain() {
        let limits = RunError::Budget {
            spent: "used 10 of max_tokens = 10".into(),
            next: "LLM call",
            file: "agents/a.toml".into(),
        };
        assert_eq!(limits.kind(), ErrorKind::LimitExceeded);
        assert_eq!(
            limits.to_body().message,
            "budget exceeded: used 10 of max_tokens = 10; stopped before the next LLM call ([limits] in agents/a.toml)"
        );
        let lost = RunError::from(ServiceError::Lost {
            service: Service::Toolhost,
            socket: "/run/t.sock".into(),
            source: FrameError::Closed,
        });
        assert_eq!(lost.kind(), ErrorKind::Toolhost);
        assert_eq!(
            lost.to_body().message,
            "lost the toolhost connection (/run/t.sock): connection closed by peer"
        );
        // A service's own error keeps its kind and message.
        let remote = RunError::from(ServiceError::Remote {
            service: Service::Toolhost,
            error: ErrorBody::new(ErrorKind::Llm, "provider `p` failed"),
        });
        assert_eq!(
            remote.to_body(),
            ErrorBody::new(ErrorKind::Llm, "provider `p` failed")
        );
        let gone = RunError::from(SessionError::Send(FrameError::Closed));
        assert_eq!(
            gone.to_body(),
            ErrorBody::new(
                ErrorKind::Cancelled,
                "the supervisor went away: connection closed by peer"
            )
        );
    }
}
