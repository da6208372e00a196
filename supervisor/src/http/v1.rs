//! The HTTP API, version 1 (`/v1/…`): an adapter over the API core (`api.rs`), like the
//! socket's front ends. Bodies are the socket's JSON API types (`caxton_ipc::json_api`), so a
//! run's events over SSE are the lines a script reads on `api.sock`. The OpenAPI document
//! (`openapi.json`, served at `/v1/openapi.json`) describes every route.
//!
//! **Who may send:** a holder of a configured bearer token (`auth.rs`), within the token's
//! rights: `agents` (run and read those), `read` (status, health, every agent), `memory`
//! (search memory), `admin` (everything, every token's runs and conversations). No token is
//! 401, a token without the right 403. A token sees only its own runs and conversations; for
//! another's it gets 404, as for an unknown one. **Hostile senders:** bodies are capped at
//! `[http] max_body_bytes` (413) and must arrive within `[http] body_timeout` (408); a token has
//! at most `max_concurrent_runs` runs going (429); malformed JSON and unknown fields are 400;
//! a client that goes away mid-stream or mid-wait has its run cancelled, as on the socket.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use caxton_ipc::api::{ApiRequest, ApiResponse, ErrorBody, ErrorKind};
use caxton_ipc::conversation::ConversationOp;
use caxton_ipc::json_api;
use caxton_ipc::memory::{MemoryRequest, SearchMode, SearchQuery};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{
    ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::auth::{Token, Tokens};
use crate::api::{self, Reply};
use crate::run_records::{Origin, Record, RunRecords, RunView, Start};
use crate::service::Service;

/// A response body: whole, or a stream of server-sent events.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// An event stream with nothing to say sends a comment this often, so a dead client is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events buffered between a run and its SSE client.
pub const EVENT_BUFFER: usize = 256;
/// Default and most runs or conversations one list returns.
const DEFAULT_LIST: usize = 50;
const MAX_LIST: usize = 1000;

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the API face shares across requests.
pub struct Face {
    pub svc: Arc<Service>,
    /// The supervisor's main runtime: the API core runs there (this listener has its own).
    pub main: tokio::runtime::Handle,
    pub tokens: Tokens,
    pub records: Arc<RunRecords>,
    pub mcp_sessions: super::mcp::Sessions,
}

impl Face {
    pub fn new(svc: Arc<Service>, main: tokio::runtime::Handle) -> Face {
        let http = &svc.config().http;
        Face {
            tokens: Tokens::new(&http.tokens),
            records: Arc::new(RunRecords::new(http.run_retention, http.max_retained_runs)),
            mcp_sessions: Default::default(),
            svc,
            main,
        }
    }

    /// Runs `fut` on the main runtime; dropping the returned future aborts it.
    async fn on_main<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, ErrorBody> {
        struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
        impl<T> Drop for AbortOnDrop<T> {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut task = AbortOnDrop(self.main.spawn(fut));
        (&mut task.0).await.map_err(|e| {
            ErrorBody::new(
                ErrorKind::Internal,
                format!("the request's task failed: {e}"),
            )
        })
    }

    /// One request to the API core, answered with one response.
    async fn core(&self, caller_token: &Token, req: ApiRequest) -> ApiResponse {
        let svc = self.svc.clone();
        let caller = caller_token.caller();
        let reply = self
            .on_main(async move {
                match api::handle(&svc, caller, req).await {
                    Reply::One(one) => *one,
                    Reply::Run(_) => ApiResponse::Error(ErrorBody::new(
                        ErrorKind::Internal,
                        "a run where one answer was expected",
                    )),
                }
            })
            .await;
        reply.unwrap_or_else(ApiResponse::Error)
    }
}

/// A route of the API: its metrics label, and the methods it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    OpenApi,
    Agents,
    Agent,
    Runs,
    Run,
    RunCancel,
    Conversations,
    Conversation,
    ConversationClose,
    MemorySearch,
    Status,
    Health,
}

impl Route {
    /// Every route with its OpenAPI path template (checked against `openapi.json` in tests).
    pub const ALL: [(Route, &'static str); 12] = [
        (Route::OpenApi, "/v1/openapi.json"),
        (Route::Agents, "/v1/agents"),
        (Route::Agent, "/v1/agents/{name}"),
        (Route::Runs, "/v1/runs"),
        (Route::Run, "/v1/runs/{run_id}"),
        (Route::RunCancel, "/v1/runs/{run_id}/cancel"),
        (Route::Conversations, "/v1/conversations"),
        (Route::Conversation, "/v1/conversations/{id}"),
        (Route::ConversationClose, "/v1/conversations/{id}/close"),
        (Route::MemorySearch, "/v1/memory/search"),
        (Route::Status, "/v1/status"),
        (Route::Health, "/v1/health"),
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::OpenApi => "v1_openapi",
            Route::Agents => "v1_agents",
            Route::Agent => "v1_agent",
            Route::Runs => "v1_runs",
            Route::Run => "v1_run",
            Route::RunCancel => "v1_run_cancel",
            Route::Conversations => "v1_conversations",
            Route::Conversation => "v1_conversation",
            Route::ConversationClose => "v1_conversation_close",
            Route::MemorySearch => "v1_memory_search",
            Route::Status => "v1_status",
            Route::Health => "v1_health",
        }
    }

    pub fn methods(self) -> &'static [Method] {
        match self {
            Route::Runs => &[Method::GET, Method::POST],
            Route::Conversation => &[Method::GET, Method::DELETE],
            Route::RunCancel | Route::ConversationClose | Route::MemorySearch => &[Method::POST],
            _ => &[Method::GET],
        }
    }

    /// The route of `path` and its one parameter (a name or an id).
    pub fn of(path: &str) -> Option<(Route, Option<&str>)> {
        let rest = path.strip_prefix("/v1/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        Some(match parts.as_slice() {
            ["openapi.json"] => (Route::OpenApi, None),
            ["agents"] => (Route::Agents, None),
            ["agents", name] if !name.is_empty() => (Route::Agent, Some(*name)),
            ["runs"] => (Route::Runs, None),
            ["runs", id] if !id.is_empty() => (Route::Run, Some(*id)),
            ["runs", id, "cancel"] if !id.is_empty() => (Route::RunCancel, Some(*id)),
            ["conversations"] => (Route::Conversations, None),
            ["conversations", id] if !id.is_empty() => (Route::Conversation, Some(*id)),
            ["conversations", id, "close"] if !id.is_empty() => {
                (Route::ConversationClose, Some(*id))
            }
            ["memory", "search"] => (Route::MemorySearch, None),
            ["status"] => (Route::Status, None),
            ["health"] => (Route::Health, None),
            _ => return None,
        })
    }
}

/// An empty body.
pub fn empty() -> Body {
    Full::new(Bytes::new()).boxed_unsync()
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An error response: the socket API's `{"error": {"kind", "message"}}`.
pub fn error(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Response<Body> {
    let body = json_api::Response::from(ApiResponse::Error(ErrorBody::new(kind, message)));
    let mut resp = json(status, &body);
    match status {
        StatusCode::UNAUTHORIZED => {
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"caxton\""),
            );
        }
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    resp
}

/// The HTTP status of an API core error.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest
        | ErrorKind::Template
        | ErrorKind::InvalidAgent
        | ErrorKind::Replay => StatusCode::BAD_REQUEST,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Busy | ErrorKind::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Delegation => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Toolhost | ErrorKind::Memory | ErrorKind::Tool | ErrorKind::Llm => {
            StatusCode::BAD_GATEWAY
        }
        ErrorKind::Cancelled => StatusCode::CONFLICT,
        ErrorKind::WorkerCrashed | ErrorKind::LimitExceeded | ErrorKind::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// A core response as HTTP: errors with their status, the rest 200.
fn answer(resp: ApiResponse) -> Response<Body> {
    match resp {
        ApiResponse::Error(e) => error(status_of(e.kind), e.kind, e.message),
        other => json(StatusCode::OK, &json_api::Response::from(other)),
    }
}

fn forbidden(what: &str, token: &Token) -> Response<Body> {
    error(
        StatusCode::FORBIDDEN,
        ErrorKind::PermissionDenied,
        format!(
            "token `{}` may not {what}; give it the right in its [[http.tokens]] table",
            token.name
        ),
    )
}

/// `?a=1&b=2` as a map (no percent-decoding: the parameters are numbers and booleans).
fn query(req: &Request<Incoming>) -> BTreeMap<&str, &str> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

// The error is the response itself, made at most once per request.
#[allow(clippy::result_large_err)]
fn limit_of(q: &BTreeMap<&str, &str>) -> Result<usize, Response<Body>> {
    match q.get("limit") {
        None => Ok(DEFAULT_LIST),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIST).contains(&n) => Ok(n),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                format!("limit={v}: give a number from 1 to {MAX_LIST}"),
            )),
        },
    }
}

/// Reads a JSON body within the size and time limits.
pub async fn body_json<T: serde::de::DeserializeOwned>(
    face: &Face,
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let bytes = body_bytes(face, req).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            format!("the request body is not the JSON this endpoint takes: {e}"),
        )
    })
}

/// Reads a request body within `[http] max_body_bytes` (413) and `body_timeout` (408).
#[allow(clippy::result_large_err)]
pub async fn body_bytes(face: &Face, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let max = face.svc.config().http.max_body_bytes;
    let body_timeout = face.svc.config().http.body_timeout;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BadRequest,
            format!("the request body is larger than [http] max_body_bytes = {max}"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let collected =
        tokio::time::timeout(body_timeout, Limited::new(req.into_body(), max).collect());
    let bytes = match collected.await {
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                ErrorKind::BadRequest,
                format!(
                    "the request body did not arrive within {}s",
                    body_timeout.as_secs_f64()
                ),
            ));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                format!("the request body could not be read: {e}"),
            ));
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    Ok(bytes)
}

/// Answers one request under `/v1/`; returns its route for the metrics (`None`: unknown path).
pub async fn respond(face: &Face, req: Request<Incoming>) -> (Option<Route>, Response<Body>) {
    let Some((route, param)) = Route::of(req.uri().path()) else {
        return (
            None,
            error(
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                format!(
                    "no such endpoint: {}; the API is described at /v1/openapi.json",
                    req.uri().path()
                ),
            ),
        );
    };
    if !route.methods().contains(req.method()) {
        let allow = route
            .methods()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadRequest,
            format!("{} takes {allow}", route_path(route)),
        );
        if let Ok(v) = HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(ALLOW, v);
        }
        return (Some(route), resp);
    }
    if route == Route::OpenApi {
        let mut resp =
            Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())).boxed_unsync());
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return (Some(route), resp);
    }
    let token = match face.tokens.authenticate(req.headers()) {
        Ok(t) => t,
        Err(why) => {
            return (
                Some(route),
                error(
                    StatusCode::UNAUTHORIZED,
                    ErrorKind::PermissionDenied,
                    why.message(),
                ),
            );
        }
    };
    let param = param.unwrap_or_default().to_string();
    let resp = match route {
        Route::OpenApi => unreachable!("answered above"),
        Route::Agents => agents(face, token).await,
        Route::Agent => {
            if token.config.read || token.config.may_run(&param) {
                answer(
                    face.core(token, ApiRequest::ShowAgent { name: param })
                        .await,
                )
            } else {
                forbidden(&format!("read agent `{param}`"), token)
            }
        }
        Route::Runs if req.method() == Method::POST => start_run(face, token, req).await,
        Route::Runs => match limit_of(&query(&req)) {
            Ok(limit) => {
                let runs: Vec<RunView> = face
                    .records
                    .list(|r| token.owns(&r.owner), limit)
                    .iter()
                    .map(|r| r.view(false))
                    .collect();
                json(StatusCode::OK, &serde_json::json!({ "runs": runs }))
            }
            Err(resp) => resp,
        },
        Route::Run => match own_record(face, token, &param) {
            Ok(record) => {
                let events = query(&req).get("events").is_none_or(|v| *v != "false");
                json(
                    StatusCode::OK,
                    &serde_json::json!({ "run": record.view(events) }),
                )
            }
            Err(resp) => resp,
        },
        Route::RunCancel => match own_record(face, token, &param) {
            Ok(record) => cancel(&record).await,
            Err(resp) => resp,
        },
        Route::Conversations => match limit_of(&query(&req)) {
            Ok(limit) => {
                let op = ConversationOp::List {
                    limit: limit as u32,
                };
                answer(face.core(token, ApiRequest::Conversation(op)).await)
            }
            Err(resp) => resp,
        },
        Route::Conversation => {
            let op = if req.method() == Method::DELETE {
                ConversationOp::Delete { id: param }
            } else {
                ConversationOp::Show { id: param }
            };
            conversation_answer(face.core(token, ApiRequest::Conversation(op)).await)
        }
        Route::ConversationClose => {
            let op = ConversationOp::Close { id: param };
            conversation_answer(face.core(token, ApiRequest::Conversation(op)).await)
        }
        Route::MemorySearch => {
            if token.config.memory || token.config.admin {
                match body_json::<SearchBody>(face, req).await {
                    Ok(body) => answer(
                        face.core(
                            token,
                            ApiRequest::Memory(MemoryRequest::Search(body.into())),
                        )
                        .await,
                    ),
                    Err(resp) => resp,
                }
            } else {
                forbidden("search memory", token)
            }
        }
        Route::Status | Route::Health => {
            if token.config.read || token.config.admin {
                let req = if route == Route::Status {
                    ApiRequest::Status
                } else {
                    ApiRequest::Health
                };
                answer(face.core(token, req).await)
            } else {
                forbidden("read the service's status", token)
            }
        }
    };
    (Some(route), resp)
}

fn route_path(route: Route) -> &'static str {
    Route::ALL
        .iter()
        .find(|(r, _)| *r == route)
        .map_or("this endpoint", |(_, p)| p)
}

/// A conversation's answer: another token's conversation is "not found", as an unknown one.
fn conversation_answer(resp: ApiResponse) -> Response<Body> {
    match resp {
        ApiResponse::Error(e) if e.kind == ErrorKind::PermissionDenied => error(
            StatusCode::NOT_FOUND,
            ErrorKind::NotFound,
            "no such conversation of this token",
        ),
        other => answer(other),
    }
}

/// `GET /v1/agents`: every agent for a token that may read the service, else those it may run.
async fn agents(face: &Face, token: &Token) -> Response<Body> {
    match face.core(token, ApiRequest::ListAgents).await {
        ApiResponse::Agents(mut list) => {
            if !(token.config.read || token.config.admin) {
                list.retain(|a| token.config.may_run(&a.name));
            }
            answer(ApiResponse::Agents(list))
        }
        other => answer(other),
    }
}

/// The record of a run this token may see, or 404.
#[allow(clippy::result_large_err)]
fn own_record(face: &Face, token: &Token, run_id: &str) -> Result<Arc<Record>, Response<Body>> {
    face.records
        .get(run_id)
        .filter(|r| token.owns(&r.owner))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                format!(
                    "no run `{run_id}` of this token: runs started over HTTP are kept for [http] run_retention after they end"
                ),
            )
        })
}

async fn cancel(record: &Record) -> Response<Body> {
    if !record.cancel() {
        return json(
            StatusCode::CONFLICT,
            &serde_json::json!({
                "error": {"kind": "bad_request", "message": "the run has already ended"},
                "run": record.view(false),
            }),
        );
    }
    // The pump ends the record at once; this only waits for it to see the request.
    let _ = tokio::time::timeout(Duration::from_secs(5), record.ended()).await;
    json(
        StatusCode::OK,
        &serde_json::json!({ "run": record.view(false) }),
    )
}

/// The body of `POST /v1/memory/search`: the socket's search query with defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    query: String,
    #[serde(default)]
    mode: SearchMode,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    entity_types: Vec<String>,
    #[serde(default = "ten")]
    limit: u32,
    #[serde(default)]
    offset: u32,
    #[serde(default)]
    min_similarity: f32,
    #[serde(default)]
    with_observations: bool,
}

fn ten() -> u32 {
    10
}

impl From<SearchBody> for SearchQuery {
    fn from(b: SearchBody) -> SearchQuery {
        SearchQuery {
            query: b.query,
            mode: b.mode,
            scopes: b.scopes,
            entity_types: b.entity_types,
            limit: b.limit,
            offset: b.offset,
            min_similarity: b.min_similarity,
            with_observations: b.with_observations,
        }
    }
}

/// Does the client ask for server-sent events?
fn wants_events(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Why a run was not launched.
pub enum NotLaunched {
    /// The token may not run it (403).
    Forbidden(String),
    /// The token has `max_concurrent_runs` going (429).
    TooMany(String),
    /// The core refused it before it started (unknown agent, busy, draining, …).
    Refused(ErrorBody),
}

impl NotLaunched {
    fn response(self, token: &Token) -> Response<Body> {
        match self {
            NotLaunched::Forbidden(what) => forbidden(&what, token),
            NotLaunched::TooMany(m) => error(StatusCode::TOO_MANY_REQUESTS, ErrorKind::Busy, m),
            NotLaunched::Refused(e) => error(status_of(e.kind), e.kind, e.message),
        }
    }
}

/// Starts a run for `token` (checking its right and taking one of its run slots) and records
/// it; `live` gets its responses as they come. Shared by the API and A2A.
pub async fn launch(
    face: &Face,
    token: &Token,
    run: json_api::RunRequest,
    origin_tag: Option<String>,
    live: Option<mpsc::Sender<ApiResponse>>,
) -> Result<Arc<Record>, NotLaunched> {
    let allowed = match &run.capability {
        Some(_) => token.config.may_run_any(),
        None => token.config.may_run(&run.agent),
    };
    if !allowed {
        return Err(NotLaunched::Forbidden(match &run.capability {
            Some(c) => format!("run by capability (`{c}`): that needs agents = [\"*\"]"),
            None => format!("run agent `{}`", run.agent),
        }));
    }
    if run.replay.is_some() && !token.config.admin {
        // A recording decides every LLM reply, and so which tools are called with what.
        return Err(NotLaunched::Forbidden(
            "replay a recording (that takes admin: a recording decides the run's tool calls)"
                .into(),
        ));
    }
    let Some(permit) = token.run_slot() else {
        return Err(NotLaunched::TooMany(format!(
            "token `{}` has {} runs going, its max_concurrent_runs; retry when one ends",
            token.name, token.config.max_concurrent_runs
        )));
    };
    tracing::info!(token = %token.name, agent = %run.agent, stream = live.is_some(), "HTTP run requested");
    let svc = face.svc.clone();
    let records = face.records.clone();
    let caller = token.caller();
    let origin = Origin {
        owner: token.name.clone(),
        requested: run.agent.clone(),
        input: run.input.clone(),
        tag: origin_tag,
    };
    let request = ApiRequest::from(json_api::Request::Run(run));
    let started = face
        .on_main(async move {
            match api::handle(&svc, caller, request).await {
                Reply::Run(rx) => records.start(rx, origin, live, permit).await,
                Reply::One(one) => Start::Refused(match *one {
                    ApiResponse::Error(e) => e,
                    other => ErrorBody::new(
                        ErrorKind::Internal,
                        format!("a run answered with {other:?}"),
                    ),
                }),
            }
        })
        .await;
    match started {
        Ok(Start::Started(record)) => Ok(record),
        // Another token's conversation is one this token does not know of.
        Ok(Start::Refused(e)) if e.kind == ErrorKind::PermissionDenied => {
            Err(NotLaunched::Refused(ErrorBody::new(
                ErrorKind::NotFound,
                "no such conversation of this token",
            )))
        }
        Ok(Start::Refused(e)) | Err(e) => Err(NotLaunched::Refused(e)),
    }
}

/// Waits for a run to end; a client that goes away meanwhile (this future is dropped) cancels
/// it, as on the socket.
pub async fn wait_end(record: Arc<Record>) -> Arc<Record> {
    struct CancelOnDrop(Option<Arc<Record>>);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            if let Some(r) = &self.0 {
                r.cancel();
            }
        }
    }
    let mut guard = CancelOnDrop(Some(record));
    if let Some(r) = &guard.0 {
        r.ended().await;
    }
    guard.0.take().unwrap_or_else(|| unreachable!("set above"))
}

/// The `traceparent` header, if any.
pub fn traceparent(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `POST /v1/runs`: starts a run; streams its events (`Accept: text/event-stream`) or waits
/// for its end and answers with the run.
async fn start_run(face: &Face, token: &Token, req: Request<Incoming>) -> Response<Body> {
    let stream = wants_events(&req);
    // W3C trace context: the header, unless the body names a parent itself.
    let traceparent = traceparent(&req);
    let mut run: json_api::RunRequest = match body_json(face, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if run.traceparent.is_none() {
        run.traceparent = traceparent;
    }
    let (live, events) = if stream {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let record = match launch(face, token, run, None, live).await {
        Ok(r) => r,
        Err(e) => return e.response(token),
    };
    match events {
        Some(rx) => sse(rx),
        None => {
            let record = wait_end(record).await;
            json(
                StatusCode::OK,
                &serde_json::json!({ "run": record.view(false) }),
            )
        }
    }
}

/// The SSE event name of a response: the event's kind (`started`, `finished`, …) or `error`.
fn event_name(value: &serde_json::Value) -> String {
    let first_key = |v: &serde_json::Value| {
        v.as_object()
            .and_then(|o| o.keys().next().cloned())
            .or_else(|| v.as_str().map(str::to_string))
    };
    match first_key(value).as_deref() {
        Some("event") => value.get("event").and_then(first_key).unwrap_or_default(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// One response as an SSE message: `event: <kind>` and `data: <the socket's JSON line>`.
pub fn sse_message(resp: ApiResponse) -> Bytes {
    let value = serde_json::to_value(json_api::Response::from(resp)).unwrap_or_default();
    let name = event_name(&value);
    // JSON text has no raw newlines, so it is one `data:` line.
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

/// A stream of server-sent events from a run's live responses; it ends after the terminal
/// event. Dropping it (the client went away) closes `rx`, which cancels the run.
fn sse(rx: mpsc::Receiver<ApiResponse>) -> Response<Body> {
    sse_stream(rx, sse_message)
}

/// An SSE response whose messages are `rx`'s items rendered by `render`, with a keep-alive
/// comment after [`KEEP_ALIVE`] of silence; it ends when `rx` does. Dropping it (the client went
/// away) closes `rx`.
pub fn sse_stream<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
    render: fn(T) -> Bytes,
) -> Response<Body> {
    let stream = futures_util::stream::unfold(Some(rx), move |state| async move {
        let mut rx = state?;
        match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
            Ok(Some(item)) => Some((Ok(Frame::data(render(item))), Some(rx))),
            Ok(None) => None,
            Err(_) => Some((
                Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n"))),
                Some(rx),
            )),
        }
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document_and_back() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (route, path) in Route::ALL {
            let item = paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} is not in openapi.json"));
            for m in route.methods() {
                let m = m.as_str().to_ascii_lowercase();
                assert!(item.get(&m).is_some(), "{path} {m} is not in openapi.json");
            }
            let concrete = path
                .replace("{name}", "x")
                .replace("{run_id}", "x")
                .replace("{id}", "x");
            assert_eq!(Route::of(&concrete).map(|r| r.0), Some(route), "{path}");
        }
        assert_eq!(
            paths.len(),
            Route::ALL.len(),
            "openapi.json has paths no route serves"
        );
        for bad in [
            "/v1/",
            "/v1/runs/",
            "/v1/runs/x/y",
            "/v1/agents//",
            "/v2/agents",
        ] {
            assert!(Route::of(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_sse_message_is_the_socket_line_named_by_its_kind() {
        let msg = sse_message(ApiResponse::Event(caxton_ipc::api::RunEvent::TurnStarted {
            turn: 2,
        }));
        assert_eq!(
            &msg[..],
            b"event: turn_started\ndata: {\"event\":{\"turn_started\":{\"turn\":2}}}\n\n"
        );
        let msg = sse_message(ApiResponse::Error(ErrorBody::new(ErrorKind::Busy, "full")));
        assert!(msg.starts_with(b"event: error\ndata: {\"error\":"));
    }
}
