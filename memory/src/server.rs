//! The memory socket: one task per connection, `Hello` first, then request/response frames.
//!
//! Who may do what is decided here, from facts the caller cannot forge:
//! - the **supervisor** is the peer whose pid (SO_PEERCRED) is this process's parent; it may do
//!   everything, including registering a run's grant under a random token;
//! - a **worker** may only `Attach` with a registered token, and is then bound to that run's
//!   grant: its writes go to the grant's write scope and its reads cover the grant's read scopes,
//!   whatever scope its requests name.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

use caxton_config::MemoryConfig;
use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::audit::{AuditEntry, AuditError, AuditWriter};
use caxton_ipc::connection::MemoryProtocol;
use caxton_ipc::error::Chain;
use caxton_ipc::frame;
use caxton_ipc::handshake::Role;
use caxton_ipc::memory::{MemoryGrant, MemoryRequest, MemoryResponse, check_scope};
use caxton_ipc::peers::{PeerTable, Ticket};
use caxton_ipc::service::BindError;
use caxton_ipc::trace::TraceParent;
use tokio::net::UnixStream;

use crate::embed::EmbedError;
use crate::graph::{NewEntity, Store, StoreError};
use crate::tools::{self, Access, ToolError};

/// Largest request a worker may send (tool arguments); the supervisor may send full frames (imports).
pub const MAX_WORKER_REQUEST: u32 = 1024 * 1024;
/// Most texts in one `Embed` request.
const MAX_EMBED_TEXTS: usize = 256;

/// Why a request was refused or failed. The peer receives it as an [`ErrorBody`]: its
/// [`RequestError::kind`] and its whole chain of causes, made in one place ([`error_response`]).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A frame that is too large or not a request; the connection is closed after the answer.
    #[error("memory request refused")]
    BadFrame(#[source] frame::FrameError),
    #[error("this connection is already attached")]
    AlreadyAttached,
    #[error("unknown memory token: only a worker of a running run may attach")]
    UnknownToken,
    #[error("attach with the run's memory token first")]
    NotAttached,
    /// A request this caller may not make (`what` names it).
    #[error("{what} is not allowed on this connection")]
    NotAllowed { what: &'static str },
    /// `check_scope`'s explanation of what is wrong with the scope and what to use.
    #[error("{reason}")]
    InvalidScope { reason: String },
    #[error("embed at most {MAX_EMBED_TEXTS} texts per request ({count} sent)")]
    TooManyTexts { count: usize },
    #[error("cannot embed the texts")]
    Embed(#[source] EmbedError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The call's record could not be written, so its result is withheld: an unaudited call
    /// must not look answered.
    #[error("memory tool `{tool}`: the result is withheld until the audit log can be written")]
    Audit {
        tool: String,
        #[source]
        source: AuditError,
    },
    #[error(
        "memory request took longer than {}s ([memory] request_timeout); a write may still complete",
        timeout.as_secs()
    )]
    Timeout { timeout: Duration },
    /// The request's task panicked or was cancelled.
    #[error("memory request failed")]
    Task(#[source] tokio::task::JoinError),
}

impl RequestError {
    /// The kind of error the peer is told.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RequestError::BadFrame(_)
            | RequestError::AlreadyAttached
            | RequestError::InvalidScope { .. }
            | RequestError::TooManyTexts { .. } => ErrorKind::BadRequest,
            RequestError::UnknownToken
            | RequestError::NotAttached
            | RequestError::NotAllowed { .. } => ErrorKind::PermissionDenied,
            RequestError::Store(e) => e.kind(),
            RequestError::Tool(e) => e.kind(),
            // The run cannot go on without its audit trail: the worker stops on this kind.
            RequestError::Audit { .. } => ErrorKind::Memory,
            RequestError::Timeout { .. } => ErrorKind::Timeout,
            RequestError::Embed(_) | RequestError::Task(_) => ErrorKind::Internal,
        }
    }
}

/// The one place a typed error becomes the wire's [`ErrorBody`]: its kind and its chain.
fn error_response(e: &RequestError) -> MemoryResponse {
    MemoryResponse::Error(ErrorBody::new(e.kind(), Chain(e).to_string()))
}

fn scope_checked(scope: &str) -> Result<(), RequestError> {
    check_scope(scope).map_err(|reason| RequestError::InvalidScope { reason })
}

pub struct Service {
    pub store: Arc<Store>,
    pub config: MemoryConfig,
    /// `[workers] service_idle_timeout`: how long a connection may wait between requests.
    pub idle_timeout: Duration,
    grants: Mutex<HashMap<String, MemoryGrant>>,
    parent: u32,
    /// Every memory-tool call of a worker, hash-chained like the toolhost's tool-call log.
    audit: Mutex<AuditWriter>,
}

/// What a connection is allowed to do.
#[derive(Clone)]
enum Caller {
    Supervisor,
    /// A worker before `Attach`.
    Unattached,
    Worker(MemoryGrant),
}

impl Service {
    pub fn new(
        store: Arc<Store>,
        config: MemoryConfig,
        idle_timeout: Duration,
        audit: AuditWriter,
    ) -> Service {
        Service {
            store,
            config,
            idle_timeout,
            audit: Mutex::new(audit),
            grants: Mutex::new(HashMap::new()),
            parent: nix::unistd::getppid().as_raw() as u32,
        }
    }
}

/// Binds `socket`, prints `ready`, and serves until killed.
pub async fn serve(service: Arc<Service>, socket: &Path) -> Result<(), BindError> {
    let listener = caxton_ipc::service::bind_and_announce(socket)?;
    tracing::info!(socket = %socket.display(), database = %service.store.path().display(), "memory service ready");
    let table = PeerTable::new(caxton_ipc::service::PRIVATE_CAPS);
    let parent = service.parent;
    caxton_ipc::service::accept_loop(listener, table, parent, |stream, ticket| {
        connection(service.clone(), stream, ticket)
    })
    .await;
    Ok(())
}

async fn connection(
    service: Arc<Service>,
    stream: UnixStream,
    ticket: Ticket,
) -> Result<(), frame::FrameError> {
    let peer_pid = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .map_or(0, |p| p as u32);
    let parent = service.parent;
    let check = |hello: &caxton_ipc::handshake::Hello| {
        if hello.role == Role::Supervisor && peer_pid != parent {
            tracing::warn!(
                peer_pid,
                "a supervisor connection from another process refused"
            );
            return Err(format!(
                "caxton-memory accepts supervisor connections only from the caxton process that started it (pid {parent}); this peer is pid {peer_pid}"
            ));
        }
        Ok(())
    };
    let Some(mut conn) =
        caxton_ipc::service::accept::<MemoryProtocol>(stream, &ticket, check).await
    else {
        return Ok(());
    };
    let mut caller = match conn.peer().role {
        Role::Supervisor => Caller::Supervisor,
        _ => Caller::Unattached,
    };
    if !matches!(caller, Caller::Supervisor) {
        conn.reader.set_max_in(MAX_WORKER_REQUEST);
    }
    loop {
        let req = match caxton_ipc::service::next_request(&mut conn, &ticket, service.idle_timeout)
            .await
        {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e @ (frame::FrameError::TooLarge { .. } | frame::FrameError::Decode(_))) => {
                // Tell the peer why, then close: the stream may be out of step after a bad frame.
                let refused = RequestError::BadFrame(e);
                tracing::warn!(error = %Chain(&refused), "closing a memory connection after a bad frame");
                let _ = conn.send(&error_response(&refused)).await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let MemoryRequest::Attach { token } = &req {
            let resp = match attach(&service, &caller, token) {
                Ok(grant) => {
                    tracing::debug!(run_id = %grant.run_id, agent = %grant.agent, "worker attached");
                    caller = Caller::Worker(grant);
                    // Answered with the memory tools' specs, which the worker needs first.
                    MemoryResponse::Tools(tools::specs())
                }
                Err(e) => error_response(&e),
            };
            conn.send(&resp).await?;
            continue;
        }
        // A run's requests are served in a span naming the run (every log line carries it).
        let span = match &caller {
            Caller::Worker(g) => tracing::info_span!("run", run_id = %g.run_id, agent = %g.agent),
            _ => tracing::Span::none(),
        };
        let frame_trace = (conn.reader.last_trace()).and_then(|t| TraceParent::parse(t.as_str()));
        let resp = handle(&service, &caller, req, frame_trace)
            .instrument(span)
            .await;
        conn.send(&resp).await?;
    }
}

fn attach(service: &Service, caller: &Caller, token: &str) -> Result<MemoryGrant, RequestError> {
    if !matches!(caller, Caller::Unattached) {
        return Err(RequestError::AlreadyAttached);
    }
    service
        .grants
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(token)
        .cloned()
        .ok_or(RequestError::UnknownToken)
}

/// Runs one request on a blocking thread under the request deadline.
/// Answers one request; `trace` is the caller's span (from the frame), which the request's
/// span hangs from.
async fn handle(
    service: &Arc<Service>,
    caller: &Caller,
    req: MemoryRequest,
    trace: Option<TraceParent>,
) -> MemoryResponse {
    // Grants are bookkeeping, answered here.
    match (&req, caller) {
        (MemoryRequest::Register { token, grant }, Caller::Supervisor) => {
            for s in grant.read.iter().chain([&grant.write]) {
                if let Err(e) = scope_checked(s) {
                    return error_response(&e);
                }
            }
            service
                .grants
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(token.clone(), grant.clone());
            return MemoryResponse::Ok;
        }
        (MemoryRequest::Revoke { token }, Caller::Supervisor) => {
            service
                .grants
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(token);
            return MemoryResponse::Ok;
        }
        (MemoryRequest::Register { .. } | MemoryRequest::Revoke { .. }, _) => {
            return error_response(&RequestError::NotAllowed {
                what: "registering grants",
            });
        }
        (MemoryRequest::Tools, _) => return MemoryResponse::Tools(tools::specs()),
        (MemoryRequest::Ping, _) => return MemoryResponse::Ok,
        (MemoryRequest::Metrics, Caller::Supervisor) => {
            return MemoryResponse::Metrics(crate::metrics::render(service.store.path()));
        }
        (MemoryRequest::Metrics, _) => {
            return error_response(&RequestError::NotAllowed { what: "metrics" });
        }
        _ => {}
    }
    let name = request_name(&req);
    let started = std::time::Instant::now();
    let svc = service.clone();
    let caller = caller.clone();
    let timeout = service.config.request_timeout;
    let span = tracing::info_span!(
        "memory request",
        otel.name = %format_args!("memory {name}"),
        otel.kind = "server",
        caxton.request = name,
        gen_ai.tool.name = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    caxton_telemetry::traces::set_parent(&span, trace.as_ref());
    if let MemoryRequest::CallTool { name, .. } = &req {
        span.record("gen_ai.tool.name", name.as_str());
    }
    // The blocking thread works inside the request's spans (log and trace).
    let inner = tracing::Span::current();
    let in_span = span.clone();
    let work = tokio::task::spawn_blocking(move || {
        inner.in_scope(|| in_span.in_scope(|| execute(&svc, &caller, req)))
    });
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(RequestError::Task(e)),
        Err(_) => Err(RequestError::Timeout { timeout }),
    };
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.kind().as_str(),
    };
    if let Err(e) = &result {
        // The error may quote what was asked: only with content capture.
        let description = caxton_telemetry::traces::capture_content().then(|| Chain(e).to_string());
        caxton_telemetry::traces::fail(&span, &outcome, description.as_deref());
    }
    metrics::counter!(crate::metrics::REQUESTS, "request" => name, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(crate::metrics::REQUEST_DURATION, "request" => name)
        .record(started.elapsed().as_secs_f64());
    result.unwrap_or_else(|e| error_response(&e))
}

fn execute(
    service: &Service,
    caller: &Caller,
    req: MemoryRequest,
) -> Result<MemoryResponse, RequestError> {
    let store = &service.store;
    Ok(match (caller, req) {
        (Caller::Worker(g), MemoryRequest::CallTool { name, arguments }) => {
            let access = Access {
                write: &g.write,
                read: &g.read,
            };
            let started = std::time::Instant::now();
            let result = tools::call(store, &access, &name, &arguments);
            let detail = match &result {
                Ok(_) => String::new(),
                Err(e) => Chain(e).to_string(),
            };
            let outcome = if result.is_ok() { "ok" } else { "tool_error" };
            let entry = AuditEntry {
                run_id: &g.run_id,
                agent: &g.agent,
                tool: &name,
                server: "memory",
                arguments: &arguments,
                outcome,
                detail: &detail,
                duration_us: started.elapsed().as_micros() as u64,
                memory_peak_bytes: 0,
            };
            audited(service, &entry)?;
            MemoryResponse::ToolOutput(result?)
        }
        (
            Caller::Worker(g),
            MemoryRequest::Recall {
                query,
                limit,
                min_similarity,
            },
        ) => MemoryResponse::Recalled(store.recall(
            &g.read,
            &query,
            limit.min(50),
            min_similarity,
        )?),
        (
            Caller::Worker(g),
            MemoryRequest::StoreInteraction {
                run_id,
                input,
                answer,
            },
        ) => {
            let cap = service.config.max_observation_bytes;
            let entity = NewEntity {
                name: format!("interaction {run_id}"),
                entity_type: "interaction".into(),
                observations: vec![
                    clip(&format!("{} was asked: {input}", g.agent), cap),
                    clip(&format!("{} answered: {answer}", g.agent), cap),
                ],
            };
            store.create_entities(&g.write, &[entity])?;
            MemoryResponse::Ok
        }
        (Caller::Supervisor, MemoryRequest::Store(s)) => {
            scope_checked(&s.scope)?;
            store.store_entity(&s.scope, &s.name, &s.entity_type, &s.observations)?;
            MemoryResponse::Ok
        }
        (Caller::Supervisor, MemoryRequest::Search(q)) => {
            let scopes = all_scopes(store, &q.scopes)?;
            MemoryResponse::Search(store.search(&q, &scopes)?)
        }
        (Caller::Supervisor, MemoryRequest::Show { scope, names }) => {
            let scopes = match scope {
                Some(s) => vec![s],
                None => all_scopes(store, &[]).unwrap_or_default(),
            };
            MemoryResponse::Graph(store.open_nodes(&scopes, &names)?)
        }
        (Caller::Supervisor, MemoryRequest::Stats { integrity_check }) => {
            MemoryResponse::Stats(store.stats(integrity_check)?)
        }
        (
            Caller::Supervisor,
            MemoryRequest::Export {
                scopes,
                offset,
                limit,
            },
        ) => {
            let scopes = all_scopes(store, &scopes)?;
            let (graph, more) = store.read_graph(&scopes, offset, limit)?;
            MemoryResponse::ExportPage { graph, more }
        }
        (
            Caller::Supervisor,
            MemoryRequest::Import {
                graph,
                replace_scopes,
            },
        ) => {
            let scopes = graph
                .entities
                .iter()
                .map(|e| &e.scope)
                .chain(graph.relations.iter().map(|r| &r.scope))
                .chain(&replace_scopes);
            for s in scopes {
                scope_checked(s)?;
            }
            MemoryResponse::Imported(store.import(&graph, &replace_scopes)?)
        }
        (Caller::Supervisor, MemoryRequest::Prune(p)) => {
            MemoryResponse::Pruned(store.prune(&p, &service.config)?)
        }
        (Caller::Supervisor, MemoryRequest::Embed { texts }) => {
            if texts.len() > MAX_EMBED_TEXTS {
                return Err(RequestError::TooManyTexts { count: texts.len() });
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            MemoryResponse::Embeddings(store.embedder.embed(&refs).map_err(RequestError::Embed)?)
        }
        (Caller::Supervisor, MemoryRequest::ConversationCreate { info }) => {
            store.conversation_create(&info)?;
            MemoryResponse::Ok
        }
        (Caller::Supervisor, MemoryRequest::ConversationLoad { id, max_entries }) => {
            let ttl = service.config.conversation_ttl.as_millis() as u64;
            MemoryResponse::Conversation(Box::new(store.conversation_load(
                &id,
                max_entries,
                ttl,
            )?))
        }
        (
            Caller::Supervisor,
            MemoryRequest::ConversationAppend {
                id,
                entries,
                state,
                holder,
            },
        ) => {
            store.conversation_append(&id, &entries, state, &holder)?;
            MemoryResponse::Ok
        }
        (
            Caller::Supervisor,
            MemoryRequest::ConversationList {
                owner_uid,
                owner_token,
                limit,
            },
        ) => MemoryResponse::Conversations(store.conversation_list(
            owner_uid,
            owner_token.as_deref(),
            limit,
        )?),
        (Caller::Supervisor, MemoryRequest::ConversationClose { id }) => {
            store.conversation_close(&id)?;
            MemoryResponse::Ok
        }
        (Caller::Supervisor, MemoryRequest::ConversationDelete { id }) => {
            store.conversation_delete(&id)?;
            MemoryResponse::Ok
        }
        (Caller::Unattached, _) => return Err(RequestError::NotAttached),
        (_, other) => {
            return Err(RequestError::NotAllowed {
                what: request_name(&other),
            });
        }
    })
}

/// Appends a memory-tool call to the audit log. When the record cannot be written the call's
/// result is withheld (as the toolhost does): an unaudited call must not look answered.
fn audited(service: &Service, entry: &AuditEntry<'_>) -> Result<(), RequestError> {
    let now_ms = crate::db::now_ms();
    let mut audit = service.audit.lock().unwrap_or_else(|p| p.into_inner());
    audit.append(entry, now_ms).map_err(|source| {
        tracing::error!(path = %audit.path().display(), error = %Chain(&source), "cannot write the memory audit log; withholding the result");
        RequestError::Audit {
            tool: entry.tool.to_string(),
            source,
        }
    })
}

fn request_name(r: &MemoryRequest) -> &'static str {
    match r {
        MemoryRequest::Register { .. } => "register",
        MemoryRequest::Revoke { .. } => "revoke",
        MemoryRequest::Attach { .. } => "attach",
        MemoryRequest::Tools => "tools",
        MemoryRequest::CallTool { .. } => "call_tool",
        MemoryRequest::Recall { .. } => "recall",
        MemoryRequest::StoreInteraction { .. } => "store_interaction",
        MemoryRequest::Store(_) => "store",
        MemoryRequest::Search(_) => "search",
        MemoryRequest::Show { .. } => "show",
        MemoryRequest::Stats { .. } => "stats",
        MemoryRequest::Export { .. } => "export",
        MemoryRequest::Import { .. } => "import",
        MemoryRequest::Prune(_) => "prune",
        MemoryRequest::Embed { .. } => "embed",
        MemoryRequest::Ping => "ping",
        MemoryRequest::Metrics => "metrics",
        MemoryRequest::ConversationCreate { .. } => "conversation_create",
        MemoryRequest::ConversationLoad { .. } => "conversation_load",
        MemoryRequest::ConversationAppend { .. } => "conversation_append",
        MemoryRequest::ConversationList { .. } => "conversation_list",
        MemoryRequest::ConversationClose { .. } => "conversation_close",
        MemoryRequest::ConversationDelete { .. } => "conversation_delete",
    }
}

/// `scopes` checked, or every scope in the database when empty (the supervisor's view).
fn all_scopes(store: &Store, scopes: &[String]) -> Result<Vec<String>, RequestError> {
    if !scopes.is_empty() {
        for s in scopes {
            scope_checked(s)?;
        }
        return Ok(scopes.to_vec());
    }
    Ok(store.scopes()?)
}

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// How often configured retention rules are applied.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Applies the configured retention rules every hour.
pub async fn retention(service: Arc<Service>) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    loop {
        tick.tick().await;
        let svc = service.clone();
        let req = caxton_ipc::memory::PruneRequest {
            scope: None,
            older_than_ms: None,
            max_entities: None,
            dry_run: false,
        };
        let conversations = service.clone();
        let expired = tokio::task::spawn_blocking(move || {
            let c = &conversations.config;
            conversations.store.conversation_retention(
                c.conversation_ttl.as_millis() as u64,
                c.conversation_retention.as_millis() as u64,
            )
        })
        .await;
        match expired {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(conversations = n, "retention deleted old conversations")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %Chain(&e), "conversation retention failed"),
            Err(e) => tracing::warn!(error = %Chain(&e), "conversation retention task failed"),
        }
        let done = tokio::task::spawn_blocking(move || svc.store.prune(&req, &svc.config)).await;
        match done {
            Ok(Ok(r)) if r.entities > 0 => {
                tracing::info!(
                    entities = r.entities,
                    observations = r.observations,
                    relations = r.relations,
                    "retention pruned memory"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %Chain(&e), "retention failed"),
            Err(e) => tracing::warn!(error = %Chain(&e), "retention task failed"),
        }
    }
}
