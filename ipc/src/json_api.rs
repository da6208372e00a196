//! The public JSON API that scripts speak on `api.sock` (newline-delimited JSON), version 1: an
//! explicit type set, mapped to and from the internal API types at the edge, so renaming an
//! internal type or variant can never silently change what scripts send and receive. The
//! golden tests below pin the shapes; the README documents them.
//!
//! The enums (requests, responses, run events, error kinds, memory requests and responses) are
//! spelled out here. The data records inside them (usage, status, health, agent definitions,
//! memory graphs and search results, tool package information, recordings) are the internal
//! structs, pinned by the same golden tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{self, ApiRequest, ApiResponse, ErrorBody, RunEvent};
use crate::memory::{self, MemoryRequest, MemoryResponse};

/// The JSON API's version: what a script's optional `{"hello": …}` line carries as `protocol`.
pub const VERSION: u16 = 1;

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Run(RunRequest),
    ListAgents,
    ShowAgent {
        name: String,
    },
    ValidateAgent {
        file_name: String,
        source: String,
    },
    Status,
    Health,
    ListTools,
    RemoveTool {
        name: String,
    },
    CallTool {
        tool: String,
        arguments: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    Memory(MemoryOp),
    Conversation(crate::conversation::ConversationOp),
    Metrics,
}

/// `{"run": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub agent: String,
    pub input: String,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub record: bool,
    #[serde(default)]
    pub replay: Option<crate::recording::Recording>,
    /// Leave delegated runs' events out of the stream.
    #[serde(default)]
    pub hide_children: bool,
    /// `"new"` or a conversation id.
    #[serde(default)]
    pub conversation: Option<String>,
    /// Run an agent with this capability instead (`agent` is ignored), picked by `strategy`.
    #[serde(default)]
    pub capability: Option<String>,
    #[serde(default)]
    pub strategy: Option<String>,
    /// A W3C `traceparent`: the run joins the caller's trace under that span.
    #[serde(default)]
    pub traceparent: Option<String>,
}

impl RunRequest {
    /// A plain run of `agent` on `input`.
    pub fn new(agent: impl Into<String>, input: impl Into<String>) -> RunRequest {
        RunRequest {
            agent: agent.into(),
            input: input.into(),
            vars: BTreeMap::new(),
            timeout_ms: None,
            stream: false,
            record: false,
            replay: None,
            hide_children: false,
            conversation: None,
            capability: None,
            strategy: None,
            traceparent: None,
        }
    }
}

/// `{"memory": {…}}`: what an operator may ask the memory service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MemoryOp {
    Store(memory::StoreRequest),
    Search(memory::SearchQuery),
    Show {
        scope: Option<String>,
        names: Vec<String>,
    },
    Stats {
        integrity_check: bool,
    },
    Export {
        scopes: Vec<String>,
        offset: u32,
        limit: u32,
    },
    Import {
        graph: memory::Graph,
        replace_scopes: Vec<String>,
    },
    Prune(memory::PruneRequest),
    Embed {
        texts: Vec<String>,
    },
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Event(Event),
    Agents(Vec<api::AgentSummary>),
    Agent(Box<crate::agent::AgentSpec>),
    Validation(api::ValidationReport),
    Status(api::StatusReport),
    Health(api::HealthReport),
    Tools(Vec<crate::tool::ToolPackageInfo>),
    ToolInstalled(Box<crate::tool::InstalledPackage>),
    ToolRemoved {
        name: String,
    },
    ToolOutput(crate::toolhost::ToolOutput),
    Memory(MemoryAnswer),
    Conversation(Box<crate::conversation::Conversation>),
    Conversations(Vec<crate::conversation::ConversationInfo>),
    Done,
    Error(Error),
    /// Prometheus text exposition format.
    Metrics(String),
}

/// `{"error": {"kind": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

/// The kinds of error a script can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadRequest,
    Replay,
    PermissionDenied,
    NotFound,
    Busy,
    ShuttingDown,
    Timeout,
    WorkerCrashed,
    Toolhost,
    Memory,
    Tool,
    Llm,
    Template,
    LimitExceeded,
    InvalidAgent,
    Cancelled,
    Delegation,
    Internal,
}

/// A run's event (`{"event": {…}}`); a run's stream ends with `finished` or `failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Started {
        run_id: String,
        agent: String,
        worker_pid: u32,
    },
    TurnStarted {
        turn: u32,
    },
    LlmCall {
        turn: u32,
        provider: String,
        model: Option<String>,
    },
    Token {
        text: String,
    },
    LlmRetry {
        provider: String,
        attempt: u32,
        error: String,
        wait_ms: u64,
    },
    LlmFallback {
        from: String,
        to: String,
        error: String,
    },
    LlmReply {
        turn: u32,
        provider: String,
        model: String,
        prompt_tokens: u64,
        completion_tokens: u64,
        cost_usd: f64,
        tool_calls: u32,
    },
    MemoryRecalled {
        memories: Vec<String>,
    },
    MemoryStored {
        entity: String,
        error: Option<String>,
    },
    LlmExchange(Box<crate::recording::Exchange>),
    ToolCall {
        call_id: String,
        tool: String,
        arguments: String,
    },
    ToolResult {
        call_id: String,
        tool: String,
        ok: bool,
        output: String,
        duration_us: u64,
    },
    /// An event of a delegated run, tagged with its place in the tree.
    Child {
        run_id: String,
        parent_run_id: String,
        call_id: String,
        agent: String,
        depth: u32,
        event: Box<Event>,
    },
    Routed {
        call_id: String,
        capability: String,
        strategy: String,
        chosen: String,
        candidates: Vec<api::RouteCandidate>,
    },
    Conversation {
        id: String,
        turn: u32,
        agent: String,
    },
    Handoff {
        call_id: String,
        from: String,
        to: String,
        reason: String,
    },
    Finished {
        run_id: String,
        answer: String,
        usage: Usage,
    },
    Failed {
        run_id: String,
        error: Error,
        usage: Usage,
    },
}

/// A run's usage: its own counts, and `tree` (its descendants' added, per agent and model)
/// only when it delegated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub turns: u32,
    pub llm_calls: u32,
    pub tool_calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub wall_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Box<api::TreeUsage>>,
}

impl From<api::RunUsage> for Usage {
    fn from(u: api::RunUsage) -> Usage {
        Usage {
            turns: u.turns,
            llm_calls: u.llm_calls,
            tool_calls: u.tool_calls,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: u.cost_usd,
            wall_ms: u.wall_ms,
            tree: u.tree,
        }
    }
}

/// `{"memory": …}` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryAnswer {
    Ok,
    Search(memory::SearchResults),
    Graph(memory::Graph),
    Stats(memory::MemoryStats),
    ExportPage { graph: memory::Graph, more: bool },
    Imported(memory::ImportReport),
    Pruned(memory::PruneReport),
    Embeddings(Vec<Vec<f32>>),
}

impl From<Request> for ApiRequest {
    fn from(r: Request) -> ApiRequest {
        match r {
            Request::Run(r) => ApiRequest::Run(api::RunRequest {
                agent: r.agent,
                input: r.input,
                vars: r.vars,
                timeout_ms: r.timeout_ms,
                stream: r.stream,
                record: r.record,
                replay: r.replay,
                hide_children: r.hide_children,
                conversation: r.conversation,
                capability: r.capability,
                strategy: r.strategy,
                traceparent: r.traceparent,
            }),
            Request::ListAgents => ApiRequest::ListAgents,
            Request::ShowAgent { name } => ApiRequest::ShowAgent { name },
            Request::ValidateAgent { file_name, source } => {
                ApiRequest::ValidateAgent { file_name, source }
            }
            Request::Status => ApiRequest::Status,
            Request::Health => ApiRequest::Health,
            Request::Metrics => ApiRequest::Metrics,
            Request::ListTools => ApiRequest::ListTools,
            Request::RemoveTool { name } => ApiRequest::RemoveTool { name },
            Request::CallTool {
                tool,
                arguments,
                timeout_ms,
            } => ApiRequest::CallTool {
                tool,
                arguments,
                timeout_ms,
            },
            Request::Conversation(op) => ApiRequest::Conversation(op),
            Request::Memory(m) => ApiRequest::Memory(match m {
                MemoryOp::Store(s) => MemoryRequest::Store(s),
                MemoryOp::Search(q) => MemoryRequest::Search(q),
                MemoryOp::Show { scope, names } => MemoryRequest::Show { scope, names },
                MemoryOp::Stats { integrity_check } => MemoryRequest::Stats { integrity_check },
                MemoryOp::Export {
                    scopes,
                    offset,
                    limit,
                } => MemoryRequest::Export {
                    scopes,
                    offset,
                    limit,
                },
                MemoryOp::Import {
                    graph,
                    replace_scopes,
                } => MemoryRequest::Import {
                    graph,
                    replace_scopes,
                },
                MemoryOp::Prune(p) => MemoryRequest::Prune(p),
                MemoryOp::Embed { texts } => MemoryRequest::Embed { texts },
            }),
        }
    }
}

impl From<ErrorBody> for Error {
    fn from(e: ErrorBody) -> Error {
        use api::ErrorKind as K;
        let kind = match e.kind {
            K::BadRequest => ErrorKind::BadRequest,
            K::Replay => ErrorKind::Replay,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::NotFound => ErrorKind::NotFound,
            K::Busy => ErrorKind::Busy,
            K::ShuttingDown => ErrorKind::ShuttingDown,
            K::Timeout => ErrorKind::Timeout,
            K::WorkerCrashed => ErrorKind::WorkerCrashed,
            K::Toolhost => ErrorKind::Toolhost,
            K::Memory => ErrorKind::Memory,
            K::Tool => ErrorKind::Tool,
            K::Llm => ErrorKind::Llm,
            K::Template => ErrorKind::Template,
            K::LimitExceeded => ErrorKind::LimitExceeded,
            K::InvalidAgent => ErrorKind::InvalidAgent,
            K::Cancelled => ErrorKind::Cancelled,
            K::Delegation => ErrorKind::Delegation,
            K::Internal => ErrorKind::Internal,
        };
        Error {
            kind,
            message: e.message,
        }
    }
}

impl From<RunEvent> for Event {
    fn from(e: RunEvent) -> Event {
        match e {
            RunEvent::Started {
                run_id,
                agent,
                worker_pid,
            } => Event::Started {
                run_id,
                agent,
                worker_pid,
            },
            RunEvent::TurnStarted { turn } => Event::TurnStarted { turn },
            RunEvent::LlmCall {
                turn,
                provider,
                model,
            } => Event::LlmCall {
                turn,
                provider,
                model,
            },
            RunEvent::Token { text } => Event::Token { text },
            RunEvent::LlmRetry {
                provider,
                attempt,
                error,
                wait_ms,
            } => Event::LlmRetry {
                provider,
                attempt,
                error,
                wait_ms,
            },
            RunEvent::LlmFallback { from, to, error } => Event::LlmFallback { from, to, error },
            RunEvent::LlmReply {
                turn,
                provider,
                model,
                prompt_tokens,
                completion_tokens,
                cost_usd,
                tool_calls,
            } => Event::LlmReply {
                turn,
                provider,
                model,
                prompt_tokens,
                completion_tokens,
                cost_usd,
                tool_calls,
            },
            RunEvent::MemoryRecalled { memories } => Event::MemoryRecalled { memories },
            RunEvent::MemoryStored { entity, error } => Event::MemoryStored { entity, error },
            RunEvent::LlmExchange(x) => Event::LlmExchange(x),
            RunEvent::ToolCall {
                call_id,
                tool,
                arguments,
            } => Event::ToolCall {
                call_id,
                tool,
                arguments,
            },
            RunEvent::ToolResult {
                call_id,
                tool,
                ok,
                output,
                duration_us,
            } => Event::ToolResult {
                call_id,
                tool,
                ok,
                output,
                duration_us,
            },
            RunEvent::Child(c) => {
                let api::ChildEvent {
                    run_id,
                    parent_run_id,
                    call_id,
                    agent,
                    depth,
                    event,
                } = *c;
                Event::Child {
                    run_id,
                    parent_run_id,
                    call_id,
                    agent,
                    depth,
                    event: Box::new(event.into()),
                }
            }
            RunEvent::Routed {
                call_id,
                capability,
                strategy,
                chosen,
                candidates,
            } => Event::Routed {
                call_id,
                capability,
                strategy,
                chosen,
                candidates,
            },
            RunEvent::Conversation { id, turn, agent } => Event::Conversation { id, turn, agent },
            RunEvent::Handoff {
                call_id,
                from,
                to,
                reason,
            } => Event::Handoff {
                call_id,
                from,
                to,
                reason,
            },
            RunEvent::Finished {
                run_id,
                answer,
                usage,
            } => Event::Finished {
                run_id,
                answer,
                usage: usage.into(),
            },
            RunEvent::Failed {
                run_id,
                error,
                usage,
            } => Event::Failed {
                run_id,
                error: error.into(),
                usage: usage.into(),
            },
        }
    }
}

impl From<ApiResponse> for Response {
    fn from(r: ApiResponse) -> Response {
        match r {
            ApiResponse::Event(e) => Response::Event(e.into()),
            ApiResponse::Agents(a) => Response::Agents(a),
            ApiResponse::Agent(a) => Response::Agent(a),
            ApiResponse::Validation(v) => Response::Validation(v),
            ApiResponse::Status(s) => Response::Status(s),
            ApiResponse::Health(h) => Response::Health(h),
            ApiResponse::Tools(t) => Response::Tools(t),
            ApiResponse::ToolInstalled(i) => Response::ToolInstalled(i),
            ApiResponse::ToolRemoved { name } => Response::ToolRemoved { name },
            ApiResponse::ToolOutput(o) => Response::ToolOutput(o),
            ApiResponse::Conversation(c) => Response::Conversation(c),
            ApiResponse::Conversations(c) => Response::Conversations(c),
            ApiResponse::Done => Response::Done,
            ApiResponse::Metrics(m) => Response::Metrics(m),
            ApiResponse::Memory(m) => match m {
                MemoryResponse::Ok => Response::Memory(MemoryAnswer::Ok),
                MemoryResponse::Search(s) => Response::Memory(MemoryAnswer::Search(s)),
                MemoryResponse::Graph(g) => Response::Memory(MemoryAnswer::Graph(g)),
                MemoryResponse::Stats(s) => Response::Memory(MemoryAnswer::Stats(s)),
                MemoryResponse::ExportPage { graph, more } => {
                    Response::Memory(MemoryAnswer::ExportPage { graph, more })
                }
                MemoryResponse::Imported(i) => Response::Memory(MemoryAnswer::Imported(i)),
                MemoryResponse::Pruned(p) => Response::Memory(MemoryAnswer::Pruned(p)),
                MemoryResponse::Embeddings(e) => Response::Memory(MemoryAnswer::Embeddings(e)),
                MemoryResponse::Error(e) => Response::Error(e.into()),
                // Worker-only answers never reach the API socket.
                other @ (MemoryResponse::Tools(_)
                | MemoryResponse::ToolOutput(_)
                | MemoryResponse::Recalled(_)
                | MemoryResponse::Conversation(_)
                | MemoryResponse::Conversations(_)
                | MemoryResponse::Metrics(_)) => Response::Error(Error {
                    kind: ErrorKind::Internal,
                    message: format!("unexpected memory answer on the API socket: {other:?}"),
                }),
            },
            ApiResponse::Error(e) => Response::Error(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What scripts send today, parsed into the requests they mean.
    #[test]
    fn golden_requests() {
        let cases: &[(&str, ApiRequest)] = &[
            (
                r#"{"run":{"agent":"calculator","input":"What is 6 * 7?","vars":{"context":"x"},"timeout_ms":30000,"stream":true,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}"#,
                ApiRequest::Run(api::RunRequest {
                    agent: "calculator".into(),
                    input: "What is 6 * 7?".into(),
                    vars: [("context".to_string(), "x".to_string())].into(),
                    timeout_ms: Some(30000),
                    stream: true,
                    record: false,
                    replay: None,
                    hide_children: false,
                    conversation: None,
                    capability: None,
                    strategy: None,
                    traceparent: Some(
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                    ),
                }),
            ),
            (r#""list_agents""#, ApiRequest::ListAgents),
            (
                r#"{"show_agent":{"name":"calculator"}}"#,
                ApiRequest::ShowAgent {
                    name: "calculator".into(),
                },
            ),
            (
                r#"{"validate_agent":{"file_name":"x.toml","source":"name = 1"}}"#,
                ApiRequest::ValidateAgent {
                    file_name: "x.toml".into(),
                    source: "name = 1".into(),
                },
            ),
            (r#""status""#, ApiRequest::Status),
            (r#""health""#, ApiRequest::Health),
            (r#""metrics""#, ApiRequest::Metrics),
            (r#""list_tools""#, ApiRequest::ListTools),
            (
                r#"{"call_tool":{"tool":"calculate","arguments":"{}"}}"#,
                ApiRequest::CallTool {
                    tool: "calculate".into(),
                    arguments: "{}".into(),
                    timeout_ms: None,
                },
            ),
            (
                r#"{"memory":{"store":{"scope":"global","name":"Release train","entity_type":"note","observations":["Releases ship on Tuesdays"]}}}"#,
                ApiRequest::Memory(MemoryRequest::Store(memory::StoreRequest {
                    scope: "global".into(),
                    name: "Release train".into(),
                    entity_type: "note".into(),
                    observations: vec!["Releases ship on Tuesdays".into()],
                })),
            ),
            (
                r#"{"memory":{"search":{"query":"when do we ship?","mode":"hybrid","scopes":[],"entity_types":[],"limit":5,"offset":0,"min_similarity":0.3,"with_observations":false}}}"#,
                ApiRequest::Memory(MemoryRequest::Search(memory::SearchQuery {
                    query: "when do we ship?".into(),
                    mode: memory::SearchMode::Hybrid,
                    scopes: vec![],
                    entity_types: vec![],
                    limit: 5,
                    offset: 0,
                    min_similarity: 0.3,
                    with_observations: false,
                })),
            ),
            (
                r#"{"memory":{"stats":{"integrity_check":true}}}"#,
                ApiRequest::Memory(MemoryRequest::Stats {
                    integrity_check: true,
                }),
            ),
        ];
        for (text, want) in cases {
            let got: Request = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&ApiRequest::from(got), want, "{text}");
        }
        // Grant and worker requests do not exist in the public API.
        for text in [
            r#"{"memory":{"register":{"token":"t","grant":{}}}}"#,
            r#"{"memory":{"attach":{"token":"t"}}}"#,
            r#"{"install_tool":{}}"#,
        ] {
            assert!(serde_json::from_str::<Request>(text).is_err(), "{text}");
        }
    }

    /// What scripts read today, byte for byte.
    #[test]
    fn golden_responses() {
        let usage = api::RunUsage {
            turns: 2,
            llm_calls: 2,
            tool_calls: 1,
            prompt_tokens: 63,
            completion_tokens: 5,
            cost_usd: 0.0,
            wall_ms: 1,
            tree: None,
        };
        let cases: Vec<(ApiResponse, &str)> = vec![
            (
                ApiResponse::Event(RunEvent::Started {
                    run_id: "run-1".into(),
                    agent: "calculator".into(),
                    worker_pid: 41230,
                }),
                r#"{"event":{"started":{"run_id":"run-1","agent":"calculator","worker_pid":41230}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::TurnStarted { turn: 1 }),
                r#"{"event":{"turn_started":{"turn":1}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::LlmCall {
                    turn: 1,
                    provider: "scripted".into(),
                    model: None,
                }),
                r#"{"event":{"llm_call":{"turn":1,"provider":"scripted","model":null}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::LlmReply {
                    turn: 1,
                    provider: "scripted".into(),
                    model: "scripted-rules".into(),
                    prompt_tokens: 30,
                    completion_tokens: 1,
                    cost_usd: 0.0,
                    tool_calls: 1,
                }),
                r#"{"event":{"llm_reply":{"turn":1,"provider":"scripted","model":"scripted-rules","prompt_tokens":30,"completion_tokens":1,"cost_usd":0.0,"tool_calls":1}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::ToolCall {
                    call_id: "call_2".into(),
                    tool: "calculate".into(),
                    arguments: r#"{"expression": "6 * 7"}"#.into(),
                }),
                r#"{"event":{"tool_call":{"call_id":"call_2","tool":"calculate","arguments":"{\"expression\": \"6 * 7\"}"}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::ToolResult {
                    call_id: "call_2".into(),
                    tool: "calculate".into(),
                    ok: true,
                    output: "42".into(),
                    duration_us: 310,
                }),
                r#"{"event":{"tool_result":{"call_id":"call_2","tool":"calculate","ok":true,"output":"42","duration_us":310}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::Token { text: "4".into() }),
                r#"{"event":{"token":{"text":"4"}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::Finished {
                    run_id: "run-1".into(),
                    answer: "The result is 42.".into(),
                    usage: usage.clone(),
                }),
                r#"{"event":{"finished":{"run_id":"run-1","answer":"The result is 42.","usage":{"turns":2,"llm_calls":2,"tool_calls":1,"prompt_tokens":63,"completion_tokens":5,"cost_usd":0.0,"wall_ms":1}}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::Failed {
                    run_id: "run-1".into(),
                    error: ErrorBody::new(api::ErrorKind::Timeout, "too slow"),
                    usage,
                }),
                r#"{"event":{"failed":{"run_id":"run-1","error":{"kind":"timeout","message":"too slow"},"usage":{"turns":2,"llm_calls":2,"tool_calls":1,"prompt_tokens":63,"completion_tokens":5,"cost_usd":0.0,"wall_ms":1}}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::Child(Box::new(api::ChildEvent {
                    run_id: "run-2".into(),
                    parent_run_id: "run-1".into(),
                    call_id: "call_2".into(),
                    agent: "adder".into(),
                    depth: 1,
                    event: RunEvent::TurnStarted { turn: 1 },
                }))),
                r#"{"event":{"child":{"run_id":"run-2","parent_run_id":"run-1","call_id":"call_2","agent":"adder","depth":1,"event":{"turn_started":{"turn":1}}}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::Routed {
                    call_id: "call_2".into(),
                    capability: "math".into(),
                    strategy: "best_match".into(),
                    chosen: "adder".into(),
                    candidates: vec![api::RouteCandidate {
                        agent: "adder".into(),
                        score: 0.5,
                    }],
                }),
                r#"{"event":{"routed":{"call_id":"call_2","capability":"math","strategy":"best_match","chosen":"adder","candidates":[{"agent":"adder","score":0.5}]}}}"#,
            ),
            (
                ApiResponse::Event(RunEvent::Finished {
                    run_id: "run-1".into(),
                    answer: "a".into(),
                    usage: api::RunUsage {
                        tree: Some(Box::new(api::TreeUsage {
                            descendants: 1,
                            total: api::Spent {
                                runs: 2,
                                llm_calls: 3,
                                ..Default::default()
                            },
                            by_agent: [("adder".to_string(), api::Spent::default())].into(),
                            by_model: BTreeMap::new(),
                        })),
                        ..Default::default()
                    },
                }),
                r#"{"event":{"finished":{"run_id":"run-1","answer":"a","usage":{"turns":0,"llm_calls":0,"tool_calls":0,"prompt_tokens":0,"completion_tokens":0,"cost_usd":0.0,"wall_ms":0,"tree":{"descendants":1,"total":{"runs":2,"llm_calls":3,"tool_calls":0,"prompt_tokens":0,"completion_tokens":0,"cost_usd":0.0},"by_agent":{"adder":{"runs":0,"llm_calls":0,"tool_calls":0,"prompt_tokens":0,"completion_tokens":0,"cost_usd":0.0}},"by_model":{}}}}}}"#,
            ),
            (
                ApiResponse::Error(ErrorBody::new(api::ErrorKind::Busy, "busy")),
                r#"{"error":{"kind":"busy","message":"busy"}}"#,
            ),
            (
                ApiResponse::Memory(MemoryResponse::Ok),
                r#"{"memory":"ok"}"#,
            ),
            (
                ApiResponse::Memory(MemoryResponse::Error(ErrorBody::new(
                    api::ErrorKind::Memory,
                    "down",
                ))),
                r#"{"error":{"kind":"memory","message":"down"}}"#,
            ),
            (
                ApiResponse::Metrics("caxton_agents_loaded 2\n".into()),
                r#"{"metrics":"caxton_agents_loaded 2\n"}"#,
            ),
        ];
        for (resp, want) in cases {
            let got = serde_json::to_string(&Response::from(resp)).unwrap();
            assert_eq!(got, want);
        }
    }

    /// Every internal error kind has its public name, the same word.
    #[test]
    fn error_kinds_keep_their_names() {
        for kind in [
            api::ErrorKind::BadRequest,
            api::ErrorKind::Replay,
            api::ErrorKind::PermissionDenied,
            api::ErrorKind::NotFound,
            api::ErrorKind::Busy,
            api::ErrorKind::ShuttingDown,
            api::ErrorKind::Timeout,
            api::ErrorKind::WorkerCrashed,
            api::ErrorKind::Toolhost,
            api::ErrorKind::Memory,
            api::ErrorKind::Tool,
            api::ErrorKind::Llm,
            api::ErrorKind::Template,
            api::ErrorKind::LimitExceeded,
            api::ErrorKind::InvalidAgent,
            api::ErrorKind::Cancelled,
            api::ErrorKind::Delegation,
            api::ErrorKind::Internal,
        ] {
            let public = Error::from(ErrorBody::new(kind, "m")).kind;
            assert_eq!(
                serde_json::to_value(public).unwrap(),
                serde_json::to_value(kind).unwrap()
            );
        }
    }
}
