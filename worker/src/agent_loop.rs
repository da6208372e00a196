//! The agent loop of one run: render the prompts, then LLM → tool calls → results → LLM … until a
//! final answer, a limit, or an error. Enforces the agent's tool allowlist and limits.

use std::time::{Duration, Instant};

use caxton_ipc::api::{ErrorBody, ErrorKind, RunEvent, RunUsage};
use caxton_ipc::frame::FrameError;
use caxton_ipc::template;
use caxton_ipc::toolhost::{
    CallToolRequest, ChatMessage, ChatRequest, ToolSpec, ToolhostRequest, ToolhostResponse,
};
use caxton_ipc::worker::WorkerJob;

use crate::toolhost_client::ToolhostClient;

/// Runs the job, emitting progress events; returns the terminal event (not yet emitted).
pub fn run(job: &WorkerJob, emit: &mut dyn FnMut(&RunEvent) -> Result<(), FrameError>) -> RunEvent {
    let started = Instant::now();
    let mut usage = RunUsage::default();
    let outcome = run_inner(job, started, &mut usage, emit);
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

fn run_inner(
    job: &WorkerJob,
    started: Instant,
    usage: &mut RunUsage,
    emit: &mut dyn FnMut(&RunEvent) -> Result<(), FrameError>,
) -> Result<String, ErrorBody> {
    let agent = &job.agent;
    let mut send = |e: RunEvent| {
        emit(&e).map_err(|err| {
            ErrorBody::new(
                ErrorKind::Cancelled,
                format!("the supervisor went away: {err}"),
            )
        })
    };
    let system = render_prompt(job, "system_prompt", &agent.system_prompt)?;
    let user = render_prompt(job, "user_prompt_template", &agent.user_prompt_template)?;
    let deadline = started + Duration::from_millis(job.deadline_ms);
    let remaining_ms = || {
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
    };

    let mut toolhost = ToolhostClient::connect(&job.toolhost_socket)?;
    let tools: Vec<ToolSpec> = if agent.tools.is_empty() {
        Vec::new()
    } else {
        let names = agent.tools.clone();
        match toolhost.request(&ToolhostRequest::Tools { names })? {
            ToolhostResponse::Tools(tools) => tools,
            other => return Err(unexpected(&other)),
        }
    };
    let mut messages = vec![
        ChatMessage::System { content: system },
        ChatMessage::User { content: user },
    ];

    for turn in 1..=agent.limits.max_turns {
        usage.turns = turn;
        send(RunEvent::TurnStarted { turn })?;
        send(RunEvent::LlmCall {
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
            top_p: None,
            seed: None,
            max_tokens: agent.llm.max_tokens,
            stop: vec![],
            tool_choice: Default::default(),
            messages: messages.clone(),
            tools: tools.clone(),
            timeout_ms: remaining_ms(),
            stream: false,
        };
        usage.llm_calls += 1;
        let reply = toolhost.chat(chat, &mut |_| Ok(()))?;
        usage.prompt_tokens += reply.prompt_tokens;
        usage.completion_tokens += reply.completion_tokens;
        if reply.tool_calls.is_empty() {
            return Ok(reply.content.unwrap_or_default());
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
            usage.tool_calls += 1;
            send(RunEvent::ToolCall {
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
                    timeout_ms: agent.limits.tool_timeout_ms.min(remaining_ms()),
                };
                match toolhost.request(&ToolhostRequest::CallTool(req)) {
                    Ok(ToolhostResponse::ToolOutput(out)) => (out.content, out.is_error),
                    Ok(other) => return Err(unexpected(&other)),
                    // The toolhost itself is gone: the run cannot go on.
                    Err(e) if e.kind == ErrorKind::Toolhost => return Err(e),
                    // The tool failed: the LLM sees the failure and may recover.
                    Err(e) => (e.message, true),
                }
            };
            send(RunEvent::ToolResult {
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

fn unexpected(resp: &ToolhostResponse) -> ErrorBody {
    ErrorBody::new(
        ErrorKind::Internal,
        format!("unexpected toolhost response: {resp:?}"),
    )
}
