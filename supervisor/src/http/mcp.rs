//! MCP Streamable HTTP at `/mcp`: the agents in `[mcp] expose` as tools (`crate::mcp`), run
//! through the same `v1::launch` as the API (so the same rights, slots, records and
//! cancellation).
//!
//! One JSON-RPC message per `POST`. With a handshake revision (2025-11-25, 2025-06-18) the
//! `initialize` answer carries an `Mcp-Session-Id` that later requests must send (400 without
//! it, 404 for one this server does not hold or another token's); `DELETE` ends a session. A
//! 2026-07-28 request (its revision in `_meta`) stands alone: no session. A `tools/call` from a
//! client that accepts `text/event-stream` is answered as a stream: progress notifications,
//! then the result; other requests get JSON. Notifications get 202. There is no
//! server-initiated stream (`GET` is 405).
//!
//! **Who may send:** a token holder, or, with `[mcp] anonymous` on a loopback listener, any
//! local process (as that token). Against DNS rebinding, a request whose `Origin`, or on a
//! loopback listener whose `Host`, is not this machine (or `[mcp] allowed_hosts`) is refused
//! (403). A client that goes away cancels its calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caxton_ipc::agent::AgentSpec;
use caxton_ipc::api::ErrorKind;
use caxton_ipc::json_api;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, HOST, HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use super::v1::{self, Body, Face, NotLaunched};
use crate::mcp::{self, Backend, BackendError, Kind, RunStream, Server, Session};

/// Sessions held at once; past it, new ones are refused (503) until some expire or end.
const MAX_SESSIONS: usize = 1024;
/// Sessions of one token; past it, that token's least recently used one goes.
const MAX_SESSIONS_PER_TOKEN: usize = 64;
/// A session unused this long is forgotten.
const SESSION_IDLE: Duration = Duration::from_secs(3600);
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";
/// Revisions with the `initialize` handshake; a request whose `MCP-Protocol-Version` is another
/// is on the 2026-07-28 path.
const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// A live session: whose it is and when it was last used.
struct Held {
    session: Arc<Session>,
    token: Arc<str>,
    used: Instant,
}

/// The sessions of `/mcp`.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Held>>,
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session of `token`, or `None` when the server holds all it may (or has no
    /// randomness for an id).
    fn create(&self, token: Arc<str>) -> Option<(String, Arc<Session>)> {
        let id = crate::runs::random_hex().ok()?;
        let session = Arc::new(Session::default());
        let mut map = self.map();
        map.retain(|_, h| h.used.elapsed() < SESSION_IDLE);
        // One token cannot crowd the others out: past its share it replaces its own oldest.
        let oldest_own = map
            .iter()
            .filter(|(_, h)| h.token == token && h.session.is_idle())
            .min_by_key(|(_, h)| h.used)
            .map(|(k, _)| k.clone());
        let own = map.values().filter(|h| h.token == token).count();
        if own >= MAX_SESSIONS_PER_TOKEN
            && let Some(oldest) = oldest_own
            && let Some(h) = map.remove(&oldest)
        {
            h.session.cancel_all();
        }
        if map.len() >= MAX_SESSIONS {
            return None;
        }
        map.insert(
            id.clone(),
            Held {
                session: session.clone(),
                token,
                used: Instant::now(),
            },
        );
        Some((id, session))
    }

    /// The session `id` of `token`.
    fn get(&self, id: &str, token: &str) -> Option<Arc<Session>> {
        let mut map = self.map();
        let held = map.get_mut(id).filter(|h| &*h.token == token)?;
        if held.used.elapsed() >= SESSION_IDLE {
            map.remove(id);
            return None;
        }
        held.used = Instant::now();
        Some(held.session.clone())
    }

    fn end(&self, id: &str, token: &str) -> bool {
        let mut map = self.map();
        match map.get(id) {
            Some(h) if &*h.token == token => {
                if let Some(h) = map.remove(id) {
                    h.session.cancel_all();
                }
                true
            }
            _ => false,
        }
    }
}

/// The daemon as an MCP backend for one token.
struct FaceBackend {
    face: Arc<Face>,
    token: Arc<str>,
}

impl Backend for FaceBackend {
    async fn agents(&self) -> Result<Vec<Arc<AgentSpec>>, BackendError> {
        let token = self
            .face
            .tokens
            .by_name(&self.token)
            .ok_or("the token is gone")?;
        let registry = self.face.svc.registry();
        let mcp = &self.face.svc.config().mcp;
        Ok(registry
            .summaries()
            .iter()
            .filter(|a| mcp.exposes(&a.name) && token.config.may_run(&a.name))
            .filter_map(|a| registry.get(&a.name))
            .collect())
    }

    async fn run(&self, run: json_api::RunRequest) -> Result<RunStream, BackendError> {
        let token = self
            .face
            .tokens
            .by_name(&self.token)
            .ok_or("the token is gone")?;
        let (live, mut events) = mpsc::channel(v1::EVENT_BUFFER);
        match v1::launch(&self.face, token, run, None, Some(live)).await {
            Ok(_) => {}
            Err(NotLaunched::Forbidden(m) | NotLaunched::TooMany(m)) => return Err(m),
            Err(NotLaunched::Refused(e)) => return Err(e.message),
        }
        // The public event types; when the caller drops `rx`, this ends and drops `events`,
        // which cancels the run.
        let (tx, rx) = mpsc::channel(v1::EVENT_BUFFER);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    n = events.recv() => n,
                    () = tx.closed() => return,
                };
                let Some(resp) = next else { return };
                let public = json_api::Response::from(resp);
                if tx.send(public).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

fn plain(status: StatusCode, message: &str) -> Response<Body> {
    v1::error(status, ErrorKind::BadRequest, message)
}

/// The host part of a `Host` or `Origin` value, lowercased, without the port.
fn host_of(value: &str) -> String {
    let rest = value
        .split_once("://")
        .map_or(value, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = if rest.starts_with('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        rest.split(':').next().unwrap_or_default()
    };
    host.trim_start_matches('[').to_ascii_lowercase()
}

/// Whether `Host` and `Origin` name this machine (or an allowed host): the DNS-rebinding check.
fn trusted_origin(face: &Face, req: &Request<Incoming>) -> bool {
    let config = face.svc.config();
    let allowed = |host: &str| {
        matches!(host, "localhost" | "127.0.0.1" | "::1")
            || config
                .mcp
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host))
            || config
                .a2a
                .public_url
                .as_deref()
                .is_some_and(|u| host_of(u) == host)
    };
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = header(ORIGIN)
        && !allowed(&host_of(origin))
    {
        return false;
    }
    let loopback = config
        .http
        .listen_addr()
        .ok()
        .flatten()
        .is_none_or(|a| a.ip().is_loopback());
    !loopback || header(HOST).is_some_and(|h| allowed(&host_of(h)))
}

/// A response on the 2026-07-28 wire: an error's HTTP status follows its code.
fn rpc_error_response(reply: Value) -> Response<Body> {
    let code = reply["error"]["code"].as_i64().unwrap_or(0);
    let status = StatusCode::from_u16(mcp::http_status(code)).unwrap_or(StatusCode::OK);
    v1::json(status, &reply)
}

/// A header value as the client encoded it (`=?base64?…?=` for what is not plain ASCII).
fn decode_header(value: &str) -> Option<String> {
    use base64::Engine as _;
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        None => Some(value.to_string()),
        Some(payload) => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
    }
}

/// 2026-07-28: `MCP-Protocol-Version`, `Mcp-Method` and (for `tools/call`) `Mcp-Name` must say
/// what the body says (so proxies can route on them).
fn routing_matches(
    msg: &Value,
    version: Option<&str>,
    (method, name): &(Option<String>, Option<String>),
) -> Result<(), Value> {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let mismatch = |what: &str| {
        Err(mcp::error(
            id.clone(),
            mcp::HEADER_MISMATCH,
            what.to_string(),
        ))
    };
    if version != mcp::meta_version(msg) {
        return mismatch("MCP-Protocol-Version differs from the request's _meta revision");
    }
    if method.as_deref() != msg["method"].as_str() {
        return mismatch("Mcp-Method differs from the request's method");
    }
    if msg["method"] == "tools/call"
        && name.as_deref().and_then(decode_header).as_deref() != msg["params"]["name"].as_str()
    {
        return mismatch("Mcp-Name differs from the tool the request names");
    }
    Ok(())
}

/// Whether a request without a token may be the anonymous one: its `Host` names this machine
/// literally (not an allowed or public name), and no proxy forwarded it (a proxy on this machine
/// would otherwise make the internet's requests look local).
fn from_this_machine(req: &Request<Incoming>) -> bool {
    let forwarded = [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
    ]
    .iter()
    .any(|h| req.headers().contains_key(*h));
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_of);
    !forwarded && matches!(host.as_deref(), Some("localhost" | "127.0.0.1" | "::1"))
}

/// Answers a request to `/mcp`.
pub async fn respond(face: &Arc<Face>, req: Request<Incoming>) -> Response<Body> {
    if !trusted_origin(face, &req) {
        return plain(
            StatusCode::FORBIDDEN,
            "the Host or Origin of this request is not this machine: refused (DNS rebinding protection; see [mcp] allowed_hosts)",
        );
    }
    let method = req.method().clone();
    if method != Method::POST && method != Method::DELETE {
        let mut resp = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "/mcp takes POST (one JSON-RPC message) and DELETE (end a session); this server opens no stream of its own",
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST, DELETE"));
        return resp;
    }
    let token = match face.tokens.authenticate(req.headers()) {
        Ok(t) => t,
        Err(why) => {
            let anonymous = if req.headers().get(hyper::header::AUTHORIZATION).is_none()
                && from_this_machine(&req)
                && let Some(name) = &face.svc.config().mcp.anonymous
            {
                face.tokens.by_name(name)
            } else {
                None
            };
            match anonymous {
                Some(t) => t,
                None => {
                    return v1::error(
                        StatusCode::UNAUTHORIZED,
                        ErrorKind::PermissionDenied,
                        why.message(),
                    );
                }
            }
        }
    };
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let session_id = header(SESSION_HEADER);
    if method == Method::DELETE {
        return match session_id {
            Some(id) if face.mcp_sessions.end(&id, &token.name) => {
                let mut resp = Response::new(v1::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            Some(_) => plain(StatusCode::NOT_FOUND, "no such session"),
            None => plain(StatusCode::BAD_REQUEST, "DELETE /mcp needs Mcp-Session-Id"),
        };
    }
    let header_version = header(VERSION_HEADER);
    // The SDKs' rule: a revision header that is not a handshake revision means 2026-07-28.
    let stateless = header_version
        .as_deref()
        .is_some_and(|v| !HANDSHAKE_VERSIONS.contains(&v));
    if let Some(v) = &header_version
        && !stateless
        && !mcp::SUPPORTED.contains(&v.as_str())
    {
        return plain(
            StatusCode::BAD_REQUEST,
            &format!(
                "MCP-Protocol-Version {v} is not supported; this server speaks {}",
                mcp::SUPPORTED.join(", ")
            ),
        );
    }
    if let Some(accept) = header(ACCEPT.as_str())
        && ![
            "application/json",
            "text/event-stream",
            "*/*",
            "application/*",
        ]
        .iter()
        .any(|t| accept.contains(t))
    {
        return plain(
            StatusCode::NOT_ACCEPTABLE,
            "/mcp answers application/json or text/event-stream",
        );
    }
    let routing = (header(METHOD_HEADER), header(NAME_HEADER));
    let streams = header(ACCEPT.as_str()).is_some_and(|a| a.contains("text/event-stream"));
    let bytes = match v1::body_bytes(face, req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let msg: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return v1::json(
                StatusCode::BAD_REQUEST,
                &mcp::error(Value::Null, mcp::PARSE_ERROR, format!("not JSON: {e}")),
            );
        }
    };
    let kind = mcp::kind(&msg);
    if let Kind::Invalid(why) = kind {
        return v1::json(
            StatusCode::BAD_REQUEST,
            &mcp::error(Value::Null, mcp::INVALID_REQUEST, why),
        );
    }
    if stateless && kind == Kind::Request {
        // 2026-07-28's checks, in its order: the envelope's keys, the routing headers against
        // the body, the revision.
        let checked = mcp::envelope_keys(&msg)
            .and_then(|()| routing_matches(&msg, header_version.as_deref(), &routing))
            .and_then(|()| mcp::check_envelope(&msg));
        if let Err(e) = checked {
            return rpc_error_response(e);
        }
    }
    let is_initialize = msg["method"] == "initialize";
    let (session, new_id) = if stateless {
        (Arc::new(Session::default()), None)
    } else if is_initialize {
        match face.mcp_sessions.create(token.name.clone()) {
            Some((id, s)) => (s, Some(id)),
            None => {
                return v1::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::Busy,
                    "this server holds as many MCP sessions as it may; retry later, or use 2026-07-28 (no session)",
                );
            }
        }
    } else {
        match &session_id {
            None => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "this request needs the Mcp-Session-Id that initialize answered with",
                );
            }
            Some(id) => match face.mcp_sessions.get(id, &token.name) {
                Some(s) => (s, None),
                None => {
                    return plain(
                        StatusCode::NOT_FOUND,
                        "no such session (it ended or expired): initialize again",
                    );
                }
            },
        }
    };
    let server = Server::new(
        Arc::new(FaceBackend {
            face: face.clone(),
            token: token.name.clone(),
        }),
        "caxton",
    );
    let (tx, mut rx) = mpsc::channel::<Value>(v1::EVENT_BUFFER);
    if kind != Kind::Request {
        server.handle(&session, msg, &tx).await;
        let mut resp = Response::new(v1::empty());
        *resp.status_mut() = StatusCode::ACCEPTED;
        return resp;
    }
    let call = msg["method"] == "tools/call";
    let task = tokio::spawn(async move { server.handle(&session, msg, &tx).await });
    let mut resp = if call && streams {
        // Progress notifications as they come, then the result; the stream ends after it.
        v1::sse_stream(rx, |v| {
            Bytes::from(format!("event: message\ndata: {v}\n\n"))
        })
    } else {
        // The response alone (notifications are dropped); a client that goes away drops `rx`,
        // which cancels the call.
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _task = AbortOnDrop(task);
        let mut reply = Value::Null;
        while let Some(v) = rx.recv().await {
            if v.get("id").is_some() {
                reply = v;
                break;
            }
        }
        if stateless {
            rpc_error_response(reply)
        } else {
            v1::json(StatusCode::OK, &reply)
        }
    };
    if let Some(id) = new_id
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        resp.headers_mut().insert(SESSION_HEADER, v);
    }
    resp
}
