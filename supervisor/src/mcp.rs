//! The MCP server face, transport-free: each exposed agent is an MCP tool (its input schema
//! from the agent's template variables, its answer the result, its run events progress
//! notifications, `notifications/cancelled` cancels its run). Two transports drive it:
//! Streamable HTTP at `/mcp` on the listener (`http/mcp.rs`, the daemon's API core behind it)
//! and stdio in `caxton mcp` (`cli/src/mcp_cli.rs`, the API socket behind it). What is behind
//! is a [`Backend`]: it lists the agents and runs one.
//!
//! Protocol revisions: 2025-11-25 (and 2025-06-18) with the `initialize` handshake, and
//! 2026-07-28, where each request carries its revision in `_meta` and needs no handshake.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use caxton_ipc::agent::AgentSpec;
use caxton_ipc::json_api::{self, Event};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

/// The handshake revision offered when a client asks for one this server does not speak.
pub const LATEST_HANDSHAKE: &str = "2025-11-25";
/// The stateless revision: no `initialize`, the revision in each request's `_meta`.
pub const STATELESS: &str = "2026-07-28";
/// Every revision this server speaks.
pub const SUPPORTED: [&str; 4] = [STATELESS, LATEST_HANDSHAKE, "2025-06-18", "2025-03-26"];
/// The `_meta` key of a 2026-07-28 request's revision.
pub const VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key of a 2026-07-28 request's client capabilities (required with the revision).
pub const CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";

/// JSON-RPC error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28: the HTTP routing headers disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: a revision this server does not speak (`data.supported` lists those it does).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// The HTTP status of a JSON-RPC error code on the 2026-07-28 wire (200 for the rest).
pub fn http_status(code: i64) -> u16 {
    match code {
        PARSE_ERROR
        | INVALID_REQUEST
        | INVALID_PARAMS
        | HEADER_MISMATCH
        | UNSUPPORTED_PROTOCOL_VERSION => 400,
        METHOD_NOT_FOUND => 404,
        _ => 200,
    }
}

/// What a backend failed with: a message for the client.
pub type BackendError = String;

/// One run's responses: its events, or the error it never started with. Dropping the receiver
/// cancels the run.
pub type RunStream = mpsc::Receiver<json_api::Response>;

/// What the MCP face stands on.
pub trait Backend: Send + Sync + 'static {
    /// The agents offered as tools.
    fn agents(&self) -> impl Future<Output = Result<Vec<Arc<AgentSpec>>, BackendError>> + Send;
    /// Starts a run.
    fn run(
        &self,
        run: json_api::RunRequest,
    ) -> impl Future<Output = Result<RunStream, BackendError>> + Send;
}

/// One client's state: the negotiated revision (handshake revisions) and its calls in progress.
#[derive(Debug, Default)]
pub struct Session {
    version: Mutex<Option<String>>,
    inflight: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl Session {
    /// The revision `initialize` settled on, if any.
    pub fn version(&self) -> Option<String> {
        self.version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<bool>>> {
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// No call in progress.
    pub fn is_idle(&self) -> bool {
        self.inflight().is_empty()
    }

    /// Cancels every call in progress (the client went away).
    pub fn cancel_all(&self) {
        for tx in self.inflight().values() {
            tx.send_replace(true);
        }
    }
}

/// A JSON-RPC error response.
pub fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

const INSTRUCTIONS: &str =
    "Each tool is a Caxton agent: call it with your request; the result is the agent's answer.";

/// Where a request's answers go. On the 2026-07-28 wire every result says it is complete, and
/// the cacheable ones (`tools/list`, `server/discover`) say not to cache them across clients.
struct Out<'a> {
    tx: &'a mpsc::Sender<Value>,
    stateless: bool,
    cacheable: bool,
}

impl Out<'_> {
    async fn send(&self, mut v: Value) -> Result<(), mpsc::error::SendError<Value>> {
        if self.stateless
            && let Some(r) = v.get_mut("result").and_then(Value::as_object_mut)
        {
            r.insert("resultType".into(), json!("complete"));
            if self.cacheable {
                r.insert("ttlMs".into(), json!(0));
                r.insert("cacheScope".into(), json!("private"));
            }
        }
        self.tx.send(v).await
    }

    async fn closed(&self) {
        self.tx.closed().await
    }
}

/// What kind of message a JSON value is.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    /// A response (the server sends no requests, so one is ignored).
    Response,
    /// Not JSON-RPC 2.0: answered with this error.
    Invalid(&'static str),
}

pub fn kind(msg: &Value) -> Kind {
    let Some(obj) = msg.as_object() else {
        return Kind::Invalid("a message is one JSON-RPC 2.0 object (batches are not supported)");
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Kind::Invalid("a message needs \"jsonrpc\": \"2.0\"");
    }
    match (obj.get("method"), obj.get("id")) {
        (Some(Value::String(_)), Some(Value::String(_) | Value::Number(_))) => Kind::Request,
        (Some(Value::String(_)), None) => Kind::Notification,
        (None, Some(_)) if obj.contains_key("result") || obj.contains_key("error") => {
            Kind::Response
        }
        _ => Kind::Invalid("a request needs a \"method\" and an \"id\" (a string or a number)"),
    }
}

/// The revision a request asks for in its `_meta` (2026-07-28 and later), if it does.
pub fn meta_version(msg: &Value) -> Option<&str> {
    msg.get("params")?.get("_meta")?.get(VERSION_META)?.as_str()
}

/// Whether a message is on the 2026-07-28 wire: its `_meta` carries a revision.
pub fn is_stateless(msg: &Value) -> bool {
    msg.get("params")
        .and_then(|p| p.get("_meta"))
        .is_some_and(|m| m.get(VERSION_META).is_some())
}

/// The first check of a 2026-07-28 request: `_meta` carries the revision and the client's
/// capabilities. The error response otherwise.
pub fn envelope_keys(msg: &Value) -> Result<(), Value> {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let meta = &msg["params"]["_meta"];
    let missing: Vec<&str> = [VERSION_META, CAPABILITIES_META]
        .into_iter()
        .filter(|k| meta.get(k).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(error(
            id,
            INVALID_PARAMS,
            format!(
                "params._meta is missing the required envelope key(s): {}",
                missing.join(", ")
            ),
        ))
    }
}

/// The whole envelope check of a 2026-07-28 request: its keys, then its revision (one this
/// server speaks without a handshake). The error response otherwise.
pub fn check_envelope(msg: &Value) -> Result<(), Value> {
    envelope_keys(msg)?;
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    match msg["params"]["_meta"].get(VERSION_META) {
        Some(Value::String(v)) if v == STATELESS => Ok(()),
        Some(Value::String(v)) => Err(json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": UNSUPPORTED_PROTOCOL_VERSION,
            "message": format!("unsupported protocol version {v} on a request without initialize"),
            "data": {"supported": [STATELESS], "requested": v},
        }})),
        _ => Err(error(
            id,
            INVALID_PARAMS,
            format!("{VERSION_META} must be a string"),
        )),
    }
}

/// The MCP server over a backend.
pub struct Server<B> {
    backend: Arc<B>,
    /// Who it says it is (`serverInfo.name`).
    name: String,
}

impl<B: Backend> Server<B> {
    pub fn new(backend: Arc<B>, name: impl Into<String>) -> Server<B> {
        Server {
            backend,
            name: name.into(),
        }
    }

    fn info(&self) -> Value {
        json!({"name": self.name, "title": "Caxton agents", "version": env!("CARGO_PKG_VERSION")})
    }

    fn capabilities() -> Value {
        json!({"tools": {"listChanged": false}, "logging": {}})
    }

    /// Handles one message from the client. What it sends back (progress notifications, then
    /// the response; nothing for a notification) goes to `out`, in order. A call in progress
    /// is cancelled by `notifications/cancelled` or when `out` closes.
    pub async fn handle(&self, session: &Session, msg: Value, out: &mpsc::Sender<Value>) {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        match kind(&msg) {
            Kind::Invalid(why) => {
                let _ = out.send(error(id, INVALID_REQUEST, why)).await;
                return;
            }
            Kind::Response => return,
            Kind::Notification => {
                self.notification(session, &msg);
                return;
            }
            Kind::Request => {}
        }
        let method = msg["method"].as_str().unwrap_or_default().to_string();
        let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
        if !params.is_object() {
            let _ = out
                .send(error(id, INVALID_PARAMS, "params must be an object"))
                .await;
            return;
        }
        let stateless = is_stateless(&msg);
        if stateless && let Err(e) = check_envelope(&msg) {
            let _ = out.send(e).await;
            return;
        }
        // On the 2026-07-28 wire every result says it is complete.
        let out = &Out {
            tx: out,
            stateless,
            cacheable: matches!(method.as_str(), "tools/list" | "server/discover"),
        };
        let reply = match method.as_str() {
            "initialize" => {
                let asked = params["protocolVersion"].as_str().unwrap_or_default();
                // A handshake settles on a handshake revision: the asked one if spoken.
                let version = if SUPPORTED.contains(&asked) && asked != STATELESS {
                    asked
                } else {
                    LATEST_HANDSHAKE
                };
                *session
                    .version
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(version.to_string());
                result(
                    id,
                    json!({
                        "protocolVersion": version,
                        "capabilities": Self::capabilities(),
                        "serverInfo": self.info(),
                        "instructions": INSTRUCTIONS,
                    }),
                )
            }
            "server/discover" => result(
                id,
                json!({
                    "supportedVersions": SUPPORTED,
                    "capabilities": Self::capabilities(),
                    "instructions": INSTRUCTIONS,
                    "_meta": {"io.modelcontextprotocol/serverInfo": self.info()},
                }),
            ),
            // Removed in 2026-07-28.
            "ping" if stateless => error(id, METHOD_NOT_FOUND, "ping is not part of 2026-07-28"),
            "ping" => result(id, json!({})),
            "logging/setLevel" => result(id, json!({})),
            "tools/list" => match self.backend.agents().await {
                Ok(agents) => result(
                    id,
                    json!({"tools": agents.iter().map(|a| tool_of(a)).collect::<Vec<_>>()}),
                ),
                Err(e) => error(id, INTERNAL_ERROR, e),
            },
            "tools/call" => {
                self.call(session, id, &params, out).await;
                return;
            }
            other => error(id, METHOD_NOT_FOUND, format!("method not found: {other}")),
        };
        let _ = out.send(reply).await;
    }

    fn notification(&self, session: &Session, msg: &Value) {
        if msg["method"] == "notifications/cancelled" {
            let key = msg["params"]["requestId"].to_string();
            if let Some(tx) = session.inflight().get(&key) {
                tx.send_replace(true);
            }
        }
        // `notifications/initialized` and the rest need nothing.
    }

    async fn call(&self, session: &Session, id: Value, params: &Value, out: &Out<'_>) {
        // Registered before anything is awaited, so a cancel that comes while the call starts
        // (an agent list, a queue wait) is not lost; an id already in flight is refused.
        let key = id.to_string();
        let (cancel_tx, mut cancelled) = watch::channel(false);
        let taken = {
            let mut inflight = session.inflight();
            let taken = inflight.contains_key(&key);
            if !taken {
                inflight.insert(key.clone(), cancel_tx);
            }
            taken
        };
        if taken {
            let _ = out
                .send(error(
                    id,
                    INVALID_REQUEST,
                    "a request with this id is already in progress",
                ))
                .await;
            return;
        }
        struct Done<'s>(&'s Session, String);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.inflight().remove(&self.1);
            }
        }
        let _done = Done(session, key);
        let name = params["name"].as_str().unwrap_or_default();
        let agents = match self.backend.agents().await {
            Ok(a) => a,
            Err(e) => {
                let _ = out.send(error(id, INTERNAL_ERROR, e)).await;
                return;
            }
        };
        let Some(agent) = agents.iter().find(|a| a.name == name) else {
            let _ = out
                .send(error(id, INVALID_PARAMS, format!("unknown tool: {name}")))
                .await;
            return;
        };
        let tool_error = |text: String| {
            result(
                id.clone(),
                json!({"content": [{"type": "text", "text": text}], "isError": true}),
            )
        };
        let (input, vars) = match arguments(agent, params.get("arguments")) {
            Ok(x) => x,
            Err(why) => {
                let _ = out.send(tool_error(why)).await;
                return;
            }
        };
        let progress = params["_meta"]["progressToken"].clone();
        let run = json_api::RunRequest {
            vars,
            ..json_api::RunRequest::new(&agent.name, input)
        };
        let started = tokio::select! {
            r = self.backend.run(run) => r,
            // Dropping the start drops the run's stream, which cancels it.
            Ok(_) = cancelled.wait_for(|c| *c) => return,
            () = out.closed() => return,
        };
        let mut rx = match started {
            Ok(rx) => rx,
            Err(e) => {
                let _ = out.send(tool_error(e)).await;
                return;
            }
        };
        let mut step = 0u64;
        loop {
            let next = tokio::select! {
                n = rx.recv() => n,
                Ok(_) = cancelled.wait_for(|c| *c) => {
                    // Dropping the stream cancels the run; a cancelled request gets no answer.
                    return;
                }
                () = out.closed() => return,
            };
            let event = match next {
                Some(json_api::Response::Event(e)) => e,
                Some(json_api::Response::Error(e)) => {
                    let _ = out.send(tool_error(e.message)).await;
                    return;
                }
                Some(_) => continue,
                None => {
                    let _ = out
                        .send(tool_error("the run ended without an answer".into()))
                        .await;
                    return;
                }
            };
            match event {
                Event::Finished { answer, usage, .. } => {
                    let _ = out
                        .send(result(
                            id,
                            json!({
                                "content": [{"type": "text", "text": answer}],
                                "isError": false,
                                "_meta": {"caxton/usage": usage},
                            }),
                        ))
                        .await;
                    return;
                }
                Event::Failed { error, .. } => {
                    let _ = out.send(tool_error(error.message)).await;
                    return;
                }
                other => {
                    if progress.is_string() || progress.is_number() {
                        step += 1;
                        let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                            "progressToken": progress,
                            "progress": step,
                            "message": describe(&other),
                        }});
                        if out.send(note).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The template variables of an agent other than `{{request}}`, each with its `[parameters]`
/// default if it has one, and whether its templates use `{{request}}`.
fn variables(agent: &AgentSpec) -> (BTreeMap<String, Option<String>>, bool) {
    let mut vars = BTreeMap::new();
    let mut request = false;
    for text in [&agent.system_prompt, &agent.user_prompt_template] {
        for (name, _) in caxton_ipc::template::placeholders(text).unwrap_or_default() {
            if name == "request" {
                request = true;
            } else {
                let default = agent.parameters.get(&name).cloned();
                vars.insert(name, default);
            }
        }
    }
    (vars, request)
}

/// An agent as an MCP tool: `request` (when its templates use `{{request}}`) and its other
/// template variables are the arguments, required unless `[parameters]` gives a default.
pub fn tool_of(agent: &AgentSpec) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    let (vars, request) = variables(agent);
    if request {
        properties.insert(
            "request".into(),
            json!({"type": "string", "description": "What to ask the agent; fills {{request}}"}),
        );
        required.push(json!("request"));
    }
    for (name, default) in vars {
        let mut p = json!({"type": "string", "description": format!("Fills {{{{{name}}}}} in the agent's prompts")});
        match default {
            Some(d) => p["default"] = json!(d),
            None => required.push(json!(name)),
        }
        properties.insert(name, p);
    }
    json!({
        "name": agent.name,
        "title": agent.name,
        "description": agent.description,
        "inputSchema": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        },
        "annotations": {"readOnlyHint": false, "openWorldHint": true},
    })
}

/// A call's arguments as the run's input and variables; what is wrong with them otherwise.
fn arguments(
    agent: &AgentSpec,
    args: Option<&Value>,
) -> Result<(String, BTreeMap<String, String>), String> {
    let empty = Map::new();
    let args = match args {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err("arguments must be an object".into()),
    };
    let (known, uses_request) = variables(agent);
    let mut input = None;
    let mut vars = BTreeMap::new();
    for (k, v) in args {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if k == "request" && uses_request {
            input = Some(text);
        } else if known.contains_key(k) {
            vars.insert(k.clone(), text);
        } else {
            return Err(format!(
                "unknown argument `{k}`: {} takes {}",
                agent.name,
                uses_request
                    .then_some("request")
                    .into_iter()
                    .chain(known.keys().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let input = match input {
        Some(i) => i,
        None if uses_request => {
            return Err(format!("`request` is required: what to ask {}", agent.name));
        }
        None => String::new(),
    };
    for (name, default) in &known {
        if default.is_none() && !vars.contains_key(name) {
            return Err(format!("`{name}` is required (it fills {{{{{name}}}}})"));
        }
    }
    Ok((input, vars))
}

/// A progress message for one run event.
fn describe(event: &Event) -> String {
    match event {
        Event::Started { agent, run_id, .. } => format!("{agent} started ({run_id})"),
        Event::TurnStarted { turn } => format!("turn {turn}"),
        Event::LlmCall { provider, .. } => format!("asking {provider}"),
        Event::LlmReply {
            completion_tokens, ..
        } => format!("the model answered ({completion_tokens} tokens)"),
        Event::LlmRetry {
            provider, attempt, ..
        } => format!("retrying {provider} (attempt {attempt})"),
        Event::LlmFallback { from, to, .. } => format!("falling back from {from} to {to}"),
        Event::ToolCall { tool, .. } => format!("calling {tool}"),
        Event::ToolResult { tool, ok, .. } => {
            format!("{tool} {}", if *ok { "answered" } else { "failed" })
        }
        Event::Child { agent, event, .. } => format!("{agent}: {}", describe(event)),
        Event::Routed { chosen, .. } => format!("routed to {chosen}"),
        Event::Handoff { to, .. } => format!("handed off to {to}"),
        Event::MemoryRecalled { memories } => format!("recalled {} memories", memories.len()),
        Event::MemoryStored { entity, .. } => format!("remembered {entity}"),
        Event::Conversation { id, .. } => format!("in conversation {id}"),
        Event::Token { .. } | Event::LlmExchange(_) => "working".into(),
        Event::Finished { .. } => "finished".into(),
        Event::Failed { .. } => "failed".into(),
    }
}
