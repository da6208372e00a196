//! The toolhost's socket server: one task per connection, the handshake, then requests served
//! according to who is asking.
//!
//! - The **supervisor** is the peer whose pid (SO_PEERCRED) is this process's parent. It alone
//!   may administer packages, read the catalog, register and revoke runs, and make operator
//!   tool calls (audited under the identity it gives).
//! - A **worker** may only ping until it attaches with its run's token; its connection is then
//!   bound to that run's grant (`runs.rs`): only the granted tools and providers, within the
//!   run's budget, audited under the run's agent and id whatever the requests say.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::connection::ToolhostProtocol;
use caxton_ipc::error::Chain;
use caxton_ipc::frame::FrameError;
use caxton_ipc::handshake::Role;
use caxton_ipc::peers::{PeerTable, Ticket};
use caxton_ipc::service::{self, BindError, PrivateConn};
use caxton_ipc::toolhost::{ChatReply, ChatRequest, ToolhostRequest, ToolhostResponse};
use caxton_ipc::trace::TraceParent;
use caxton_llm::{ChatError, Progress};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing::field::Empty;

use crate::host::{CallError, Host, InstallError, RemoveError};
use crate::runs::{GrantError, Run, Runs};

/// Why a request was refused or failed. The peer receives it as an [`ErrorBody`]: its
/// [`RequestError::kind`] and its whole chain of causes, made in one place ([`error_response`]).
/// A chat's failure comes from `caxton-llm` as an [`ErrorBody`] already and is passed on as is.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("attach with the run's token first")]
    NotAttached,
    #[error("this connection is already bound")]
    AlreadyBound,
    /// A request a worker may not make (`what` names it).
    #[error("a worker may not send {what} to the toolhost")]
    NotAllowed { what: &'static str },
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(transparent)]
    Remove(#[from] RemoveError),
    #[error(transparent)]
    Chat(#[from] ChatError),
}

impl RequestError {
    /// The kind of error the peer is told.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RequestError::NotAttached
            | RequestError::AlreadyBound
            | RequestError::NotAllowed { .. } => ErrorKind::PermissionDenied,
            RequestError::Grant(e) => e.kind(),
            RequestError::Call(e) => e.kind(),
            RequestError::Install(e) => e.kind(),
            RequestError::Remove(e) => e.kind(),
            RequestError::Chat(e) => e.kind(),
        }
    }
}

/// The one place a typed error becomes the wire's [`ErrorBody`]: its kind and its chain.
fn error_response(e: impl Into<RequestError>) -> ToolhostResponse {
    let e = e.into();
    ToolhostResponse::Error(ErrorBody::new(e.kind(), Chain(&e).to_string()))
}

/// Binds `socket` (replacing a stale file), prints `ready` on stdout, and serves until killed.
pub async fn serve(host: Arc<Host>, socket: &Path, idle: Duration) -> Result<(), BindError> {
    let listener = service::bind_and_announce(socket)?;
    let catalog = host.catalog();
    tracing::info!(socket = %socket.display(), tools = catalog.tools.len(), providers = catalog.providers.len(), "toolhost ready");
    let table = PeerTable::new(service::PRIVATE_CAPS);
    let parent = service::parent_pid();
    let runs = Arc::new(Runs::default());
    service::accept_loop(listener, table, parent, |stream, ticket| {
        connection(host.clone(), runs.clone(), stream, ticket, (parent, idle))
    })
    .await;
    Ok(())
}

/// Who is on a connection, and so what it may do.
enum Caller {
    Supervisor,
    /// A worker before `Attach`.
    Unattached,
    /// An attached worker: its run's grant, and the span its requests are served in (every
    /// log line carries the run's id and agent).
    Run(Arc<Run>, tracing::Span),
}

async fn connection(
    host: Arc<Host>,
    runs: Arc<Runs>,
    stream: UnixStream,
    ticket: Ticket,
    (parent, idle): (u32, Duration),
) -> Result<(), FrameError> {
    let peer_pid = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .map_or(0, |p| p as u32);
    let check = |hello: &caxton_ipc::handshake::Hello| {
        if hello.role == Role::Supervisor && peer_pid != parent {
            return Err(format!(
                "caxton-toolhost accepts supervisor connections only from the caxton process that started it (pid {parent}); this peer is pid {peer_pid}"
            ));
        }
        Ok(())
    };
    let Some(mut conn) = service::accept::<ToolhostProtocol>(stream, &ticket, check).await else {
        return Ok(());
    };
    let mut caller = match conn.peer().role {
        Role::Supervisor => Caller::Supervisor,
        _ => Caller::Unattached,
    };
    loop {
        let Some(req) = service::next_request(&mut conn, &ticket, idle).await? else {
            return Ok(());
        };
        if let Caller::Run(run, _) = &caller
            && let Err(e) = runs.live(run)
        {
            conn.send(&error_response(e)).await?;
            return Ok(());
        }
        // The trace context the request came with: its spans hang from the caller's.
        let frame_trace = (conn.reader.last_trace()).and_then(|t| TraceParent::parse(t.as_str()));
        // A run's requests, and the supervisor's calls and chats on behalf of one, are served
        // in a span naming the run.
        let span = match (&caller, &req) {
            (Caller::Run(_, span), _) => span.clone(),
            (Caller::Supervisor, ToolhostRequest::CallTool(c)) => {
                tracing::info_span!("run", run_id = %c.run_id, agent = %c.agent)
            }
            (Caller::Supervisor, ToolhostRequest::Chat(c)) => {
                tracing::info_span!("run", run_id = %c.run_id, agent = %c.agent)
            }
            _ => tracing::Span::none(),
        };
        let served = async {
            Ok::<_, FrameError>(Some(match (&caller, req) {
            (_, ToolhostRequest::Ping) => ToolhostResponse::Pong,
            (Caller::Unattached, ToolhostRequest::Attach { token }) => match runs.attach(&token) {
                Ok(run) => {
                    // The answer carries the specs of the tools the grant allows: the worker
                    // needs them before its first turn, and this saves it a round trip.
                    let tools = ToolhostResponse::Tools(host.tools(&run.grant.tools));
                    let span = tracing::info_span!("run", run_id = %run.grant.run_id, agent = %run.grant.agent, trace_id = tracing::field::Empty);
                    if let Some(tp) = &frame_trace {
                        span.record("trace_id", tp.trace_hex());
                    }
                    span.in_scope(|| tracing::debug!(peer_pid, "worker attached"));
                    caller = Caller::Run(run, span);
                    tools
                }
                Err(e) => {
                    tracing::warn!(
                        peer_pid,
                        "attach with an unknown or revoked run token refused"
                    );
                    error_response(e)
                }
            },
            (Caller::Unattached, _) => error_response(RequestError::NotAttached),
            (_, ToolhostRequest::Attach { .. }) => error_response(RequestError::AlreadyBound),

            // A run: only what its grant allows, under its identity.
            (Caller::Run(run, _), ToolhostRequest::Tools { names }) => {
                let granted: Vec<String> = names
                    .into_iter()
                    .filter(|n| run.grant.tools.contains(n))
                    .collect();
                ToolhostResponse::Tools(host.tools(&granted))
            }
            (Caller::Run(run, _), ToolhostRequest::CallTool(mut call)) => {
                call.agent = run.grant.agent.clone();
                call.run_id = run.grant.run_id.clone();
                match run.take_tool_call(&call.tool) {
                    Ok(()) => {
                        let span = call_span(&call.tool, frame_trace);
                        let out = host.call_tool(&call).instrument(span).await;
                        into_response(out, ToolhostResponse::ToolOutput)
                    }
                    Err(e) => {
                        // Refused calls are audited too: the attempt is a fact worth keeping.
                        host.audit_refused(&call, &Chain(&e).to_string());
                        error_response(e)
                    }
                }
            }
            (Caller::Run(run, _), ToolhostRequest::Chat(mut chat)) => {
                match run.admit_chat(&mut chat) {
                    Err(e) => error_response(e),
                    Ok(()) => match traced_chat(&host, &mut conn, &chat, frame_trace).await? {
                        Some(reply) => {
                            if let Ok(r) = &reply {
                                run.spent(r);
                            }
                            into_response(reply, ToolhostResponse::Chat)
                        }
                        None => return Ok(None),
                    },
                }
            }
            (Caller::Run(..), other) => error_response(RequestError::NotAllowed {
                what: request_name(&other),
            }),

            // The supervisor: administration and operator calls.
            (Caller::Supervisor, ToolhostRequest::RegisterRun { token, grant }) => {
                into_response(runs.register(token, grant), |()| ToolhostResponse::Ok)
            }
            (Caller::Supervisor, ToolhostRequest::RevokeRun { token }) => {
                runs.revoke(&token);
                ToolhostResponse::Ok
            }
            (Caller::Supervisor, ToolhostRequest::ReserveRun { token, want, parts }) => {
                match runs.get(&token) {
                    Some(run) => ToolhostResponse::Reserved(run.reserve(want, parts)),
                    None => error_response(RequestError::Grant(GrantError::UnknownToken)),
                }
            }
            (
                Caller::Supervisor,
                ToolhostRequest::SettleRun {
                    token,
                    reserved,
                    used,
                },
            ) => {
                // A run that ended meanwhile has nothing left to settle.
                if let Some(run) = runs.get(&token) {
                    run.settle(reserved, used);
                }
                ToolhostResponse::Ok
            }
            (Caller::Supervisor, ToolhostRequest::A2aSend(req)) => {
                // The supervisor sends nothing more on this connection: anything readable
                // (its close, when the delegating run ends) drops the outbound request.
                let mut probe = [0u8; 1];
                tokio::select! {
                    r = host.a2a.send(&req) => match r {
                        Ok(answer) => ToolhostResponse::A2aAnswer(answer),
                        Err(e) => ToolhostResponse::Error(e),
                    },
                    _ = conn.reader.get_mut().read(&mut probe) => {
                        tracing::info!(remote = %req.remote, "A2A delegation cancelled: the delegating run ended");
                        return Ok(None);
                    }
                }
            }
            (Caller::Supervisor, ToolhostRequest::Metrics) => {
                ToolhostResponse::Metrics(caxton_telemetry::install().render())
            }
            (Caller::Supervisor, ToolhostRequest::Catalog) => {
                ToolhostResponse::Catalog(host.catalog())
            }
            (Caller::Supervisor, ToolhostRequest::Tools { names }) => {
                ToolhostResponse::Tools(host.tools(&names))
            }
            (Caller::Supervisor, ToolhostRequest::CallTool(call)) => {
                let span = call_span(&call.tool, frame_trace);
                let out = host.call_tool(&call).instrument(span).await;
                into_response(out, ToolhostResponse::ToolOutput)
            }
            (Caller::Supervisor, ToolhostRequest::Chat(chat)) => {
                match traced_chat(&host, &mut conn, &chat, frame_trace).await? {
                    Some(reply) => into_response(reply, ToolhostResponse::Chat),
                    None => return Ok(None),
                }
            }
            (Caller::Supervisor, ToolhostRequest::ListPackages) => {
                ToolhostResponse::Packages(host.packages())
            }
            (Caller::Supervisor, ToolhostRequest::InstallPackage(req)) => {
                into_response(host.install(&req).await, |i| {
                    ToolhostResponse::Installed(Box::new(i))
                })
            }
            (Caller::Supervisor, ToolhostRequest::RemovePackage { name }) => {
                into_response(host.remove(&name).await, |()| ToolhostResponse::Removed)
            }
        }))
        }
        .instrument(span)
        .await?;
        let Some(resp) = served else {
            return Ok(());
        };
        conn.send(&resp).await?;
    }
}

fn request_name(r: &ToolhostRequest) -> &'static str {
    match r {
        ToolhostRequest::Catalog => "catalog",
        ToolhostRequest::Tools { .. } => "tools",
        ToolhostRequest::CallTool(_) => "call_tool",
        ToolhostRequest::Chat(_) => "chat",
        ToolhostRequest::ListPackages => "list_packages",
        ToolhostRequest::InstallPackage(_) => "install_package",
        ToolhostRequest::RemovePackage { .. } => "remove_package",
        ToolhostRequest::Ping => "ping",
        ToolhostRequest::RegisterRun { .. } => "register_run",
        ToolhostRequest::RevokeRun { .. } => "revoke_run",
        ToolhostRequest::ReserveRun { .. } => "reserve_run",
        ToolhostRequest::SettleRun { .. } => "settle_run",
        ToolhostRequest::Attach { .. } => "attach",
        ToolhostRequest::Metrics => "metrics",
        ToolhostRequest::A2aSend(_) => "a2a_send",
    }
}

/// Runs a chat while writing its progress frames as they come. The client sends nothing while a
/// chat runs, so anything readable (normally EOF: the worker exited or was killed) cancels it:
/// dropping the chat future drops the provider's HTTP request or stops the local generation.
/// `None` = cancelled.
/// The toolhost's span for a tool call (`call_tool {tool}`), under the caller's span; the call
/// records its outcome on it.
fn call_span(tool: &str, parent: Option<TraceParent>) -> tracing::Span {
    let span = tracing::info_span!(
        "call_tool",
        otel.name = %format_args!("call_tool {tool}"),
        otel.kind = "server",
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = tool,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    caxton_telemetry::traces::set_parent(&span, parent.as_ref());
    span
}

/// [`chat_streaming`] in the toolhost's span for a chat, under the caller's span; each provider
/// attempt is a span inside it (see `caxton_llm`).
async fn traced_chat(
    host: &Host,
    conn: &mut PrivateConn<ToolhostProtocol>,
    chat: &ChatRequest,
    parent: Option<TraceParent>,
) -> Result<Option<Result<ChatReply, ChatError>>, FrameError> {
    let span = tracing::info_span!(
        "chat",
        otel.name = "toolhost chat",
        otel.kind = "server",
        gen_ai.operation.name = "chat",
        caxton.provider = %chat.provider,
        caxton.fallbacks = chat.fallback.len(),
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    caxton_telemetry::traces::set_parent(&span, parent.as_ref());
    let served = chat_streaming(host, conn, chat)
        .instrument(span.clone())
        .await;
    if let Ok(Some(Err(e))) = &served {
        caxton_telemetry::traces::fail(&span, "llm", Some(&Chain(e).to_string()));
    }
    served
}

async fn chat_streaming(
    host: &Host,
    conn: &mut PrivateConn<ToolhostProtocol>,
    chat: &ChatRequest,
) -> Result<Option<Result<ChatReply, ChatError>>, FrameError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let progress = Progress::new(tx, chat.stream);
    let reply = host.chat(chat, &progress);
    tokio::pin!(reply);
    let mut probe = [0u8; 1];
    let result = loop {
        tokio::select! {
            biased;
            Some(p) = rx.recv() => {
                conn.writer.send(&ToolhostResponse::ChatProgress(p)).await?;
            }
            r = &mut reply => break r,
            _ = conn.reader.get_mut().read(&mut probe) => {
                tracing::info!(provider = %chat.provider, "chat cancelled: the worker went away");
                return Ok(None);
            }
        }
    };
    while let Ok(p) = rx.try_recv() {
        conn.writer.send(&ToolhostResponse::ChatProgress(p)).await?;
    }
    Ok(Some(result))
}

fn into_response<T, E: Into<RequestError>>(
    r: Result<T, E>,
    ok: fn(T) -> ToolhostResponse,
) -> ToolhostResponse {
    r.map_or_else(error_response, ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::WasmError;

    fn body(e: impl Into<RequestError>) -> ErrorBody {
        match error_response(e) {
            ToolhostResponse::Error(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_refusal_reaches_the_peer_with_its_kind_and_chain() {
        assert_eq!(
            body(GrantError::ToolCallsSpent {
                run_id: "r1".into(),
                agent: "a".into(),
                max: 3,
            }),
            ErrorBody::new(
                ErrorKind::LimitExceeded,
                "run r1 of agent `a` has made its 3 tool calls (max_tool_calls)"
            )
        );
        assert_eq!(
            body(RequestError::NotAllowed { what: "catalog" }).kind,
            ErrorKind::PermissionDenied
        );
        let busy = CallError::Guest(WasmError::Busy {
            server: "calc".into(),
            limit: 2,
            waited: Duration::from_millis(1500),
        });
        assert_eq!(body(busy).kind, ErrorKind::Busy);
        let bad_json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let b = body(CallError::ArgumentsNotJson {
            tool: "calculate".into(),
            source: bad_json,
        });
        assert_eq!(b.kind, ErrorKind::BadRequest);
        assert!(
            b.message
                .starts_with("arguments of tool `calculate` are not valid JSON: EOF"),
            "{}",
            b.message
        );
        assert_eq!(
            body(RemoveError::NotInstalled { name: "x".into() }).kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            body(InstallError::NotWasm { name: "x".into() }).message,
            "the module of `x` is not a WebAssembly binary (it must start with \\0asm)"
        );
    }
}
