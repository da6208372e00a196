//! The A2A 1.0 face (Agent2Agent, protocol version "1.0"): each agent in `[a2a] expose` is an
//! A2A agent at `/a2a/{name}`, with its Agent Card at `/a2a/{name}/.well-known/agent-card.json`.
//! Both bindings are served at that base: JSON-RPC 2.0 (`POST /a2a/{name}`) and HTTP+JSON
//! (`POST …/message:send`, `…/message:stream`, `GET …/tasks`, `GET …/tasks/{id}`,
//! `POST …/tasks/{id}:cancel`, `GET|POST …/tasks/{id}:subscribe`).
//!
//! A task is a run (its id is the run id; the run is a record in `run_records.rs`, so it is also
//! `/v1/runs/{id}`), and a `contextId` is a conversation: a message without one starts a new
//! conversation (when the memory service runs), a message with one continues it. Task states
//! follow the run: working, completed, failed, canceled. Caxton's own run events travel as
//! `TASK_STATE_WORKING` status updates whose `metadata.caxton` is the socket's event; the answer
//! is the `answer` artifact (streamed in chunks when the run streams tokens).
//!
//! **Who may send:** the cards are public (the operator chose to expose the agent). Everything
//! else needs a bearer token that may run the agent (`auth.rs`); a token sees only its own
//! tasks (another's is "task not found"). **Hostile senders** get the binding's error (JSON-RPC
//! codes -32700, -32600, -32601, -32602, and A2A's -32001…-32009; HTTP+JSON the same reasons in a
//! `google.rpc.Status` body) under the API's body limits, and a stream whose client goes away
//! cancels its run.

use std::time::{Duration, UNIX_EPOCH};

use caxton_ipc::api::{ApiResponse, ErrorKind};
use caxton_ipc::json_api::{self, Event};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::auth::Token;
use super::v1::{self, Body, Face, NotLaunched};
use crate::run_records::{Record, RunState};

/// The protocol version this face speaks.
pub const PROTOCOL_VERSION: &str = "1.0";
/// Default and largest `pageSize` of `ListTasks`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 100;
/// The artifact that carries a task's answer.
const ANSWER: &str = "answer";

/// An A2A error: its JSON-RPC code, its HTTP+JSON status, and the reason both carry.
#[derive(Debug)]
pub struct A2aError {
    code: i64,
    http: StatusCode,
    reason: &'static str,
    message: String,
}

impl A2aError {
    fn new(code: i64, http: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        A2aError {
            code,
            http,
            reason,
            message: message.into(),
        }
    }
    fn parse(m: impl Into<String>) -> Self {
        Self::new(-32700, StatusCode::BAD_REQUEST, "PARSE_ERROR", m)
    }
    fn invalid_request(m: impl Into<String>) -> Self {
        Self::new(-32600, StatusCode::BAD_REQUEST, "INVALID_REQUEST", m)
    }
    fn method_not_found(m: impl Into<String>) -> Self {
        Self::new(-32601, StatusCode::NOT_FOUND, "METHOD_NOT_FOUND", m)
    }
    fn invalid_params(m: impl Into<String>) -> Self {
        Self::new(-32602, StatusCode::BAD_REQUEST, "INVALID_PARAMS", m)
    }
    fn internal(m: impl Into<String>) -> Self {
        Self::new(
            -32603,
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            m,
        )
    }
    fn task_not_found(id: &str) -> Self {
        Self::new(
            -32001,
            StatusCode::NOT_FOUND,
            "TASK_NOT_FOUND",
            format!("no task `{id}` of this token (ended tasks are kept for [http] run_retention)"),
        )
    }
    fn not_cancelable(id: &str) -> Self {
        Self::new(
            -32002,
            StatusCode::BAD_REQUEST,
            "TASK_NOT_CANCELABLE",
            format!("task `{id}` has ended"),
        )
    }
    fn push_not_supported() -> Self {
        Self::new(
            -32003,
            StatusCode::BAD_REQUEST,
            "PUSH_NOTIFICATION_NOT_SUPPORTED",
            "push notifications are not supported: stream (SendStreamingMessage) or poll (GetTask)",
        )
    }
    fn unsupported(m: impl Into<String>) -> Self {
        Self::new(-32004, StatusCode::BAD_REQUEST, "UNSUPPORTED_OPERATION", m)
    }
    fn content_type(m: impl Into<String>) -> Self {
        Self::new(
            -32005,
            StatusCode::BAD_REQUEST,
            "CONTENT_TYPE_NOT_SUPPORTED",
            m,
        )
    }
    fn no_extended_card() -> Self {
        Self::new(
            -32007,
            StatusCode::BAD_REQUEST,
            "EXTENDED_AGENT_CARD_NOT_CONFIGURED",
            "there is no extended agent card: the public card is the whole card",
        )
    }
    fn version(v: &str) -> Self {
        Self::new(
            -32009,
            StatusCode::BAD_REQUEST,
            "VERSION_NOT_SUPPORTED",
            format!("A2A-Version {v} is not supported; this server speaks {PROTOCOL_VERSION}"),
        )
    }

    fn details(&self) -> Value {
        json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": self.reason,
            "domain": "a2a-protocol.org",
        }])
    }

    /// The JSON-RPC error object.
    fn rpc(&self) -> Value {
        json!({"code": self.code, "message": self.message, "data": self.details()})
    }

    /// The HTTP+JSON error response (`google.rpc.Status`).
    fn rest(&self) -> Response<Body> {
        let status = match self.http {
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::INTERNAL_SERVER_ERROR => "INTERNAL",
            _ if self.reason.starts_with("INVALID") || self.reason.starts_with("CONTENT") => {
                "INVALID_ARGUMENT"
            }
            _ => "FAILED_PRECONDITION",
        };
        v1::json(
            self.http,
            &json!({"error": {
                "code": self.http.as_u16(),
                "status": status,
                "message": self.message,
                "details": self.details(),
            }}),
        )
    }
}

/// A failure before the operation: an HTTP answer (401, 403, 429, 503, …) in either binding.
enum Failure {
    Http(Response<Body>),
    A2a(A2aError),
}

impl From<A2aError> for Failure {
    fn from(e: A2aError) -> Self {
        Failure::A2a(e)
    }
}

/// What an operation answers: one JSON value, or a stream of them.
enum Answer {
    One(Value),
    Stream(mpsc::Receiver<Value>),
}

/// Which operation a request is, binding aside.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Send { stream: bool },
    GetTask,
    ListTasks,
    Cancel,
    Subscribe,
}

/// Answers a request under `/a2a/`.
pub async fn respond(face: &Face, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/a2a/") else {
        return not_found(&path);
    };
    let (agent, tail) = rest.split_once('/').map_or((rest, ""), |(a, t)| (a, t));
    let agent = agent.to_string();
    if agent.is_empty()
        || !face.svc.config().a2a.exposes(&agent)
        || face.svc.registry().get(&agent).is_none()
    {
        return not_found(&path);
    }
    let method = req.method().clone();
    if tail == ".well-known/agent-card.json" {
        return if method == Method::GET {
            v1::json(StatusCode::OK, &card(face, &req, &agent))
        } else {
            method_not_allowed("GET")
        };
    }
    if let Some(v) = req
        .headers()
        .get("a2a-version")
        .and_then(|v| v.to_str().ok())
        && v.split('.').next() != Some("1")
    {
        let e = A2aError::version(v);
        return if tail.is_empty() {
            rpc_reply(Value::Null, Err(e))
        } else {
            e.rest()
        };
    }
    let token = match face.tokens.authenticate(req.headers()) {
        Ok(t) => t,
        Err(why) => {
            return v1::error(
                StatusCode::UNAUTHORIZED,
                ErrorKind::PermissionDenied,
                why.message(),
            );
        }
    };
    if !token.config.may_run(&agent) {
        return v1::error(
            StatusCode::FORBIDDEN,
            ErrorKind::PermissionDenied,
            format!("token `{}` may not use agent `{agent}`", token.name),
        );
    }
    let a = At {
        face,
        token,
        agent: &agent,
        traceparent: v1::traceparent(&req),
    };
    if tail.is_empty() {
        if method != Method::POST {
            return method_not_allowed("POST");
        }
        return json_rpc(&a, req).await;
    }
    rest_binding(&a, req, tail, &method).await
}

fn not_found(path: &str) -> Response<Body> {
    v1::error(
        StatusCode::NOT_FOUND,
        ErrorKind::NotFound,
        format!(
            "no A2A agent at {path}: agents listed in [a2a] expose are at /a2a/NAME, their cards at /a2a/NAME/.well-known/agent-card.json"
        ),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = v1::error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::BadRequest,
        format!("this A2A endpoint takes {allow}"),
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// A request's place: the face, the caller's token, the agent.
struct At<'a> {
    face: &'a Face,
    token: &'a Token,
    agent: &'a str,
    traceparent: Option<String>,
}

/// The base URL of an agent's A2A endpoint as the client reaches it.
fn base_url(face: &Face, req: &Request<Incoming>, agent: &str) -> String {
    let root = match &face.svc.config().a2a.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = req
                .headers()
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '@']))
                .unwrap_or("127.0.0.1");
            format!("http://{host}")
        }
    };
    format!("{root}/a2a/{agent}")
}

/// The Agent Card of `agent`: its description, its capabilities as skills, both bindings, and
/// the bearer scheme of the HTTP tokens.
fn card(face: &Face, req: &Request<Incoming>, agent: &str) -> Value {
    let Some(spec) = face.svc.registry().get(agent) else {
        return Value::Null;
    };
    let url = base_url(face, req, agent);
    let skills: Vec<Value> = if spec.capabilities.is_empty() {
        vec![json!({
            "id": spec.name, "name": spec.name, "description": spec.description,
            "tags": [spec.name],
        })]
    } else {
        spec.capabilities
            .iter()
            .map(|c| {
                json!({
                    "id": c, "name": c, "description": spec.description,
                    "tags": [c],
                })
            })
            .collect()
    };
    let mut card = json!({
        "name": spec.name,
        "description": spec.description,
        "version": spec.version,
        "supportedInterfaces": [
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": PROTOCOL_VERSION},
            {"url": url, "protocolBinding": "HTTP+JSON", "protocolVersion": PROTOCOL_VERSION},
        ],
        "capabilities": {"streaming": true, "pushNotifications": false, "extendedAgentCard": false},
        "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {
            "scheme": "Bearer",
            "description": "A token from the server's [[http.tokens]] that may run this agent",
        }}},
        "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
        "defaultInputModes": ["text/plain", "application/json"],
        "defaultOutputModes": ["text/plain"],
        "skills": skills,
    });
    if let Some(doc) = spec
        .documentation
        .as_deref()
        .filter(|d| d.starts_with("http"))
    {
        card["documentationUrl"] = json!(doc);
    }
    card
}

// ---- the JSON-RPC binding ----

fn rpc_reply(id: Value, result: Result<Value, A2aError>) -> Response<Body> {
    let body = match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.rpc()}),
    };
    v1::json(StatusCode::OK, &body)
}

async fn json_rpc(a: &At<'_>, req: Request<Incoming>) -> Response<Body> {
    let bytes = match v1::body_bytes(a.face, req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return rpc_reply(Value::Null, Err(A2aError::parse(format!("not JSON: {e}")))),
    };
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let Some(obj) = body.as_object() else {
        return rpc_reply(
            Value::Null,
            Err(A2aError::invalid_request(
                "a request is one JSON-RPC 2.0 object (batches are not supported)",
            )),
        );
    };
    let method = obj.get("method").and_then(Value::as_str);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0")
        || method.is_none()
        || !matches!(id, Value::String(_) | Value::Number(_))
    {
        return rpc_reply(
            id,
            Err(A2aError::invalid_request(
                "a request needs \"jsonrpc\": \"2.0\", a \"method\" and an \"id\" (a string or a number)",
            )),
        );
    }
    let params = obj.get("params").cloned().unwrap_or_else(|| json!({}));
    let op = match method.unwrap_or_default() {
        "SendMessage" => Op::Send { stream: false },
        "SendStreamingMessage" => Op::Send { stream: true },
        "GetTask" => Op::GetTask,
        "ListTasks" => Op::ListTasks,
        "CancelTask" => Op::Cancel,
        "SubscribeToTask" => Op::Subscribe,
        "CreateTaskPushNotificationConfig"
        | "GetTaskPushNotificationConfig"
        | "ListTaskPushNotificationConfigs"
        | "DeleteTaskPushNotificationConfig" => {
            return rpc_reply(id, Err(A2aError::push_not_supported()));
        }
        "GetExtendedAgentCard" => return rpc_reply(id, Err(A2aError::no_extended_card())),
        other => {
            return rpc_reply(
                id,
                Err(A2aError::method_not_found(format!(
                    "no method `{other}`: SendMessage, SendStreamingMessage, GetTask, ListTasks, CancelTask, SubscribeToTask"
                ))),
            );
        }
    };
    match run_op(a, &op, params).await {
        Err(Failure::Http(resp)) => resp,
        Err(Failure::A2a(e)) => rpc_reply(id, Err(e)),
        Ok(Answer::One(v)) => rpc_reply(id, Ok(v)),
        Ok(Answer::Stream(rx)) => {
            // Each message is a JSON-RPC response with the request's id.
            let (tx, out) = mpsc::channel(v1::EVENT_BUFFER);
            tokio::spawn(forward(
                rx,
                tx,
                move |v| json!({"jsonrpc": "2.0", "id": id, "result": v}),
            ));
            v1::sse_stream(out, data_message)
        }
    }
}

/// One SSE message of JSON.
fn data_message(v: Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// Copies `rx` to `tx` through `wrap` until either side ends.
async fn forward(
    mut rx: mpsc::Receiver<Value>,
    tx: mpsc::Sender<Value>,
    wrap: impl Fn(Value) -> Value,
) {
    loop {
        tokio::select! {
            v = rx.recv() => match v {
                Some(v) => if tx.send(wrap(v)).await.is_err() { return },
                None => return,
            },
            () = tx.closed() => return,
        }
    }
}

// ---- the HTTP+JSON binding ----

async fn rest_binding(
    a: &At<'_>,
    req: Request<Incoming>,
    tail: &str,
    method: &Method,
) -> Response<Body> {
    let (op, id, allow) = match tail {
        "message:send" => (Op::Send { stream: false }, None, "POST"),
        "message:stream" => (Op::Send { stream: true }, None, "POST"),
        "tasks" => (Op::ListTasks, None, "GET"),
        _ => match tail.strip_prefix("tasks/") {
            Some(t) if t.ends_with(":cancel") => (Op::Cancel, t.strip_suffix(":cancel"), "POST"),
            Some(t) if t.ends_with(":subscribe") => {
                (Op::Subscribe, t.strip_suffix(":subscribe"), "GET, POST")
            }
            Some(t) if !t.is_empty() && !t.contains(['/', ':']) => (Op::GetTask, Some(t), "GET"),
            _ => {
                return A2aError::method_not_found(format!(
                    "no A2A route {tail}: message:send, message:stream, tasks, tasks/ID, tasks/ID:cancel, tasks/ID:subscribe"
                ))
                .rest();
            }
        },
    };
    if !allow.split(", ").any(|m| m == method.as_str()) {
        return method_not_allowed(allow);
    }
    let query: serde_json::Map<String, Value> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect()
        })
        .unwrap_or_default();
    let mut params = match (&op, method) {
        (Op::Send { .. }, _) | (Op::Cancel, _) => match v1::body_bytes(a.face, req).await {
            Ok(b) if b.is_empty() => json!({}),
            Ok(b) => match serde_json::from_slice::<Value>(&b) {
                Ok(v) => v,
                Err(e) => return A2aError::parse(format!("not JSON: {e}")).rest(),
            },
            Err(resp) => return resp,
        },
        _ => Value::Object(query),
    };
    if let (Some(id), Some(obj)) = (id, params.as_object_mut()) {
        obj.insert("id".into(), json!(id));
    }
    match run_op(a, &op, params).await {
        Err(Failure::Http(resp)) => resp,
        Err(Failure::A2a(e)) => e.rest(),
        Ok(Answer::One(v)) => v1::json(StatusCode::OK, &v),
        Ok(Answer::Stream(rx)) => v1::sse_stream(rx, data_message),
    }
}

// ---- the operations ----

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    text: Option<String>,
    data: Option<Value>,
    url: Option<String>,
    raw: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    message_id: String,
    #[serde(default)]
    context_id: Option<String>,
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendConfiguration {
    #[serde(default)]
    accepted_output_modes: Vec<String>,
    #[serde(default)]
    history_length: Option<i64>,
    #[serde(default)]
    return_immediately: bool,
    #[serde(default)]
    task_push_notification_config: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendParams {
    message: Message,
    #[serde(default)]
    configuration: Option<SendConfiguration>,
}

/// A number that protobuf JSON may send as a number or as a string.
fn number(v: Option<&Value>) -> Result<Option<i64>, A2aError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| A2aError::invalid_params(format!("{n} is not an integer"))),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| A2aError::invalid_params(format!("\"{s}\" is not an integer"))),
        Some(other) => Err(A2aError::invalid_params(format!(
            "{other} is not an integer"
        ))),
    }
}

fn boolean(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

fn string<'v>(params: &'v Value, key: &str) -> Option<&'v str> {
    params
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn parse<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, A2aError> {
    serde_json::from_value(params).map_err(|e| A2aError::invalid_params(e.to_string()))
}

async fn run_op(a: &At<'_>, op: &Op, params: Value) -> Result<Answer, Failure> {
    if !params.is_object() {
        return Err(A2aError::invalid_params("params must be an object").into());
    }
    match op {
        Op::Send { stream } => send(a, params, *stream).await,
        Op::GetTask => {
            let record = own_task(a, string(&params, "id"))?;
            let history = number(params.get("historyLength"))?;
            Ok(Answer::One(task(&record, history, true)))
        }
        Op::ListTasks => list(a, &params).map(Answer::One).map_err(Failure::from),
        Op::Cancel => {
            let record = own_task(a, string(&params, "id"))?;
            if !record.cancel() {
                return Err(A2aError::not_cancelable(&record.run_id).into());
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), record.ended()).await;
            Ok(Answer::One(task(&record, None, true)))
        }
        Op::Subscribe => {
            let record = own_task(a, string(&params, "id"))?;
            if record.state().ended() {
                return Err(A2aError::unsupported(format!(
                    "task `{}` has ended; read it with GetTask",
                    record.run_id
                ))
                .into());
            }
            // A subscription holds one of the token's run slots while it streams, so one token
            // cannot hold every connection with them.
            let Some(permit) = a.token.run_slot() else {
                return Err(Failure::Http(v1::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorKind::Busy,
                    format!(
                        "token `{}` has {} runs and subscriptions going, its max_concurrent_runs",
                        a.token.name, a.token.config.max_concurrent_runs
                    ),
                )));
            };
            let (tx, rx) = mpsc::channel(v1::EVENT_BUFFER);
            tokio::spawn(async move {
                let _permit = permit;
                subscription(record, tx).await;
            });
            Ok(Answer::Stream(rx))
        }
    }
}

/// A task of this token on this agent, or "task not found".
fn own_task(a: &At<'_>, id: Option<&str>) -> Result<std::sync::Arc<Record>, A2aError> {
    let id = id.ok_or_else(|| A2aError::invalid_params("the task `id` is missing"))?;
    a.face
        .records
        .get(id)
        .filter(|r| a.token.owns(&r.owner) && r.requested == a.agent)
        .ok_or_else(|| A2aError::task_not_found(id))
}

/// The text a message asks: its text parts, and its data parts as JSON, one per line.
fn input_of(message: &Message) -> Result<String, A2aError> {
    let mut pieces = Vec::new();
    for part in &message.parts {
        if let Some(t) = &part.text {
            pieces.push(t.clone());
        } else if let Some(d) = &part.data {
            pieces.push(d.to_string());
        } else if part.url.is_some() || part.raw.is_some() {
            return Err(A2aError::content_type(
                "file parts (url, raw) are not supported: send text or data parts",
            ));
        }
    }
    if pieces.is_empty() {
        return Err(A2aError::invalid_params(
            "the message has no text or data part",
        ));
    }
    Ok(pieces.join("\n"))
}

async fn send(a: &At<'_>, params: Value, stream: bool) -> Result<Answer, Failure> {
    let params: SendParams = parse(params)?;
    let config = params.configuration.unwrap_or_default();
    if config.task_push_notification_config.is_some() {
        return Err(A2aError::push_not_supported().into());
    }
    if !config.accepted_output_modes.is_empty()
        && !config
            .accepted_output_modes
            .iter()
            .any(|m| m.starts_with("text/") || m == "*/*")
    {
        return Err(A2aError::content_type("this agent answers in text/plain").into());
    }
    let message = params.message;
    if message.message_id.is_empty() {
        return Err(A2aError::invalid_params("the message needs a messageId").into());
    }
    if let Some(task_id) = &message.task_id {
        let ended = own_task(a, Some(task_id))?.state().ended();
        return Err(A2aError::unsupported(if ended {
            format!("task `{task_id}` has ended; send the next message with its contextId (without taskId) to continue the conversation")
        } else {
            format!("task `{task_id}` is working and takes no input; wait for it, or cancel it")
        })
        .into());
    }
    let input = input_of(&message)?;
    let memory = a.face.svc.config().memory.enabled;
    let conversation = match &message.context_id {
        Some(c) if !memory => {
            return Err(A2aError::unsupported(format!(
                "contextId `{c}`: conversations need the memory service, which is off"
            ))
            .into());
        }
        Some(c) => Some(c.clone()),
        None => memory.then(|| caxton_ipc::api::NEW_CONVERSATION.to_string()),
    };
    let run = json_api::RunRequest {
        stream,
        conversation,
        traceparent: a.traceparent.clone(),
        ..json_api::RunRequest::new(a.agent, input)
    };
    let (live, events) = if stream {
        let (tx, rx) = mpsc::channel(v1::EVENT_BUFFER);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let record = match v1::launch(a.face, a.token, run, Some(message.message_id), live).await {
        Ok(r) => r,
        Err(NotLaunched::Refused(e)) => {
            return Err(match e.kind {
                ErrorKind::BadRequest | ErrorKind::PermissionDenied | ErrorKind::NotFound => {
                    // A closed, unknown or foreign context.
                    Failure::A2a(A2aError::invalid_params(e.message))
                }
                ErrorKind::Busy | ErrorKind::ShuttingDown => Failure::Http(v1::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.kind,
                    e.message,
                )),
                _ => Failure::A2a(A2aError::internal(e.message)),
            });
        }
        Err(other) => {
            return Err(Failure::Http(match other {
                NotLaunched::Forbidden(m) => {
                    v1::error(StatusCode::FORBIDDEN, ErrorKind::PermissionDenied, m)
                }
                NotLaunched::TooMany(m) => {
                    v1::error(StatusCode::TOO_MANY_REQUESTS, ErrorKind::Busy, m)
                }
                NotLaunched::Refused(_) => unreachable!("matched above"),
            }));
        }
    };
    if let Some(events) = events {
        let (tx, rx) = mpsc::channel(v1::EVENT_BUFFER);
        tokio::spawn(live_stream(record, events, tx));
        return Ok(Answer::Stream(rx));
    }
    let record = if config.return_immediately {
        // Until its context is known (the conversation event follows the start at once).
        let mut watch = record.watch();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while record.conversation().is_none()
                && memory
                && !record.state().ended()
                && watch.changed().await.is_ok()
            {}
        })
        .await;
        record
    } else {
        v1::wait_end(record).await
    };
    Ok(Answer::One(
        json!({ "task": task(&record, config.history_length, true) }),
    ))
}

fn list(a: &At<'_>, params: &Value) -> Result<Value, A2aError> {
    let page_size = match number(params.get("pageSize"))? {
        None | Some(0) => DEFAULT_PAGE,
        Some(n) if n > 0 => (n as usize).min(MAX_PAGE),
        Some(n) => {
            return Err(A2aError::invalid_params(format!(
                "pageSize {n} is negative"
            )));
        }
    };
    let offset = match string(params, "pageToken") {
        None => 0,
        Some(t) => t.parse::<usize>().map_err(|_| {
            A2aError::invalid_params(format!("pageToken `{t}` is not one this server gave"))
        })?,
    };
    let context = string(params, "contextId");
    let status = match params.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "TASK_STATE_UNSPECIFIED" => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => None,
            Some(2) => Some("TASK_STATE_WORKING".into()),
            Some(3) => Some("TASK_STATE_COMPLETED".into()),
            Some(4) => Some("TASK_STATE_FAILED".into()),
            Some(5) => Some("TASK_STATE_CANCELED".into()),
            _ => Some(format!("{n}")),
        },
        Some(other) => return Err(A2aError::invalid_params(format!("status {other}"))),
    };
    let history = number(params.get("historyLength"))?.or(Some(0));
    let artifacts = boolean(params.get("includeArtifacts"));
    let all = a.face.records.list(
        |r| {
            a.token.owns(&r.owner)
                && r.requested == a.agent
                && context.is_none_or(|c| context_of(r) == c)
                && status.as_deref().is_none_or(|s| state_name(r.state()) == s)
        },
        usize::MAX,
    );
    let total = all.len();
    let tasks: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|r| task(r, history, artifacts))
        .collect();
    let next = if offset + tasks.len() < total {
        (offset + tasks.len()).to_string()
    } else {
        String::new()
    };
    Ok(json!({
        "tasks": tasks,
        "nextPageToken": next,
        "pageSize": page_size,
        "totalSize": total,
    }))
}

fn state_name(state: RunState) -> &'static str {
    match state {
        RunState::Running => "TASK_STATE_WORKING",
        RunState::Finished => "TASK_STATE_COMPLETED",
        RunState::Failed => "TASK_STATE_FAILED",
        RunState::Cancelled => "TASK_STATE_CANCELED",
    }
}

/// A task's context: its conversation, or (without the memory service) its own id.
fn context_of(record: &Record) -> String {
    record
        .conversation()
        .unwrap_or_else(|| record.run_id.clone())
}

fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn text_message(id: String, role: &str, context: &str, task: &str, text: &str) -> Value {
    json!({
        "messageId": id, "role": role, "contextId": context, "taskId": task,
        "parts": [{"text": text}],
    })
}

/// A task as A2A shows it: its status, the answer artifact, the history (the request and the
/// answer; the last `history` of them, none for 0, all when unset) and Caxton's usage.
fn task(record: &Record, history: Option<i64>, artifacts: bool) -> Value {
    let view = record.view(false);
    let context = context_of(record);
    let id = &record.run_id;
    let request_id = record
        .tag
        .clone()
        .unwrap_or_else(|| format!("{id}-request"));
    let mut messages = vec![text_message(
        request_id,
        "ROLE_USER",
        &context,
        id,
        &record.input,
    )];
    if let Some(answer) = &view.answer {
        messages.push(text_message(
            format!("{id}-answer"),
            "ROLE_AGENT",
            &context,
            id,
            answer,
        ));
    }
    if let Some(n) = history {
        let keep = usize::try_from(n.max(0)).unwrap_or(0).min(messages.len());
        messages.drain(..messages.len() - keep);
    }
    let mut status = json!({
        "state": state_name(view.state),
        "timestamp": timestamp(view.ended_ms.unwrap_or(view.created_ms)),
    });
    if let Some(e) = &view.error {
        status["message"] = text_message(
            format!("{id}-error"),
            "ROLE_AGENT",
            &context,
            id,
            &e.message,
        );
    }
    let mut task = json!({
        "id": id,
        "contextId": context,
        "status": status,
        "history": messages,
        "metadata": {"caxton": {"agent": view.agent, "usage": view.usage, "error": view.error}},
    });
    if artifacts && let Some(answer) = &view.answer {
        task["artifacts"] = json!([answer_artifact(answer)]);
    }
    task
}

fn answer_artifact(text: &str) -> Value {
    json!({"artifactId": ANSWER, "name": ANSWER, "parts": [{"text": text}]})
}

/// Turns a run's events into A2A stream responses: the task first (once its context is known),
/// Caxton's events as working status updates, the answer as the `answer` artifact (in chunks
/// when tokens stream), then the final status.
struct Converter {
    task_id: String,
    context: Option<String>,
    announced: bool,
    chunks: bool,
}

impl Converter {
    fn new(task_id: String) -> Converter {
        Converter {
            task_id,
            context: None,
            announced: false,
            chunks: false,
        }
    }

    fn context(&self) -> String {
        self.context.clone().unwrap_or_else(|| self.task_id.clone())
    }

    fn status(&self, state: &str, message: Option<Value>, metadata: Option<Value>) -> Value {
        let mut status = json!({"state": state, "timestamp": timestamp(crate::runs::now_ms())});
        if let Some(m) = message {
            status["message"] = m;
        }
        let mut update =
            json!({"taskId": self.task_id, "contextId": self.context(), "status": status});
        if let Some(m) = metadata {
            update["metadata"] = m;
        }
        json!({ "statusUpdate": update })
    }

    fn artifact(&self, text: &str, append: bool, last: bool) -> Value {
        json!({"artifactUpdate": {
            "taskId": self.task_id, "contextId": self.context(),
            "artifact": answer_artifact(text), "append": append, "lastChunk": last,
        }})
    }

    /// The first response: the task, working.
    fn announce(&mut self, record: &Record) -> Value {
        self.announced = true;
        let mut t = task(record, None, false);
        t["contextId"] = json!(self.context());
        t["status"] =
            json!({"state": "TASK_STATE_WORKING", "timestamp": timestamp(record.created_ms)});
        json!({ "task": t })
    }

    /// The responses for one event; `true` once the task has ended.
    fn convert(&mut self, record: &Record, event: Event, out: &mut Vec<Value>) -> bool {
        if let Event::Conversation { id, .. } = &event {
            self.context = Some(id.clone());
        }
        if matches!(event, Event::Started { .. }) {
            return false;
        }
        if !self.announced {
            out.push(self.announce(record));
            if matches!(event, Event::Conversation { .. }) {
                return false;
            }
        }
        match event {
            Event::Token { text } => {
                out.push(self.artifact(&text, self.chunks, false));
                self.chunks = true;
                false
            }
            Event::Finished { answer, usage, .. } => {
                out.push(if self.chunks {
                    self.artifact("", true, true)
                } else {
                    self.artifact(&answer, false, true)
                });
                let meta = json!({"caxton": {"usage": usage}});
                out.push(self.status("TASK_STATE_COMPLETED", None, Some(meta)));
                true
            }
            Event::Failed { error, usage, .. } => {
                let state = if error.kind == json_api::ErrorKind::Cancelled {
                    "TASK_STATE_CANCELED"
                } else {
                    "TASK_STATE_FAILED"
                };
                let context = self.context();
                let message = text_message(
                    format!("{}-error", self.task_id),
                    "ROLE_AGENT",
                    &context,
                    &self.task_id,
                    &error.message,
                );
                let meta = json!({"caxton": {"usage": usage, "error": error}});
                out.push(self.status(state, Some(message), Some(meta)));
                true
            }
            other => {
                let meta = json!({ "caxton": other });
                out.push(self.status("TASK_STATE_WORKING", None, Some(meta)));
                false
            }
        }
    }
}

/// Streams a run started by `SendStreamingMessage` from its live responses. When the client
/// goes away `tx` closes, this ends and drops `events`, which cancels the run.
async fn live_stream(
    record: std::sync::Arc<Record>,
    mut events: mpsc::Receiver<ApiResponse>,
    tx: mpsc::Sender<Value>,
) {
    let mut conv = Converter::new(record.run_id.clone());
    loop {
        let next = tokio::select! {
            n = events.recv() => n,
            () = tx.closed() => return,
        };
        let Some(ApiResponse::Event(event)) = next else {
            return;
        };
        let mut out = Vec::new();
        let ended = conv.convert(&record, event.into(), &mut out);
        for v in out {
            if tx.send(v).await.is_err() {
                return;
            }
        }
        if ended {
            return;
        }
    }
}

/// Streams a running task from its record (`SubscribeToTask`): the task as it is, then its
/// events as they come, to its end. Token chunks are not kept, so the answer comes whole.
async fn subscription(record: std::sync::Arc<Record>, tx: mpsc::Sender<Value>) {
    let mut watch = record.watch();
    let mut conv = Converter::new(record.run_id.clone());
    conv.context = record.conversation();
    let (seen, _) = record.events_from(0);
    let mut next = seen.len();
    if tx.send(conv.announce(&record)).await.is_err() {
        return;
    }
    loop {
        let (events, _) = record.events_from(next);
        next += events.len();
        for event in events {
            let mut out = Vec::new();
            let ended = conv.convert(&record, event, &mut out);
            for v in out {
                if tx.send(v).await.is_err() {
                    return;
                }
            }
            if ended {
                return;
            }
        }
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
        }
    }
}
