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

use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::audit::{AuditEntry, AuditWriter};
use caxton_ipc::config::MemoryConfig;
use caxton_ipc::connection::MemoryProtocol;
use caxton_ipc::frame;
use caxton_ipc::handshake::Role;
use caxton_ipc::memory::{MemoryGrant, MemoryRequest, MemoryResponse, check_scope};
use caxton_ipc::peers::{PeerTable, Ticket};
use tokio::net::UnixStream;

use crate::graph::{NewEntity, Store};
use crate::tools::{self, Access};

/// Largest request a worker may send (tool arguments); the supervisor may send full frames (imports).
pub const MAX_WORKER_REQUEST: u32 = 1024 * 1024;

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
pub async fn serve(service: Arc<Service>, socket: &Path) -> anyhow::Result<()> {
    let listener = caxton_ipc::service::bind_and_announce(socket).map_err(anyhow::Error::msg)?;
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
                let body = ErrorBody::new(
                    ErrorKind::BadRequest,
                    format!("memory request refused: {e}"),
                );
                let _ = conn.send(&MemoryResponse::Error(body)).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let MemoryRequest::Attach { token } = &req {
            let resp = match attach(&service, &caller, token) {
                Ok(grant) => {
                    tracing::debug!(agent = %grant.agent, "worker attached");
                    caller = Caller::Worker(grant);
                    MemoryResponse::Ok
                }
                Err(e) => MemoryResponse::Error(e),
            };
            conn.send(&resp).await?;
            continue;
        }
        let resp = handle(&service, &caller, req).await;
        conn.send(&resp).await?;
    }
}

fn attach(service: &Service, caller: &Caller, token: &str) -> Result<MemoryGrant, ErrorBody> {
    if !matches!(caller, Caller::Unattached) {
        return Err(ErrorBody::new(
            ErrorKind::BadRequest,
            "this connection is already attached",
        ));
    }
    service
        .grants
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(token)
        .cloned()
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorKind::PermissionDenied,
                "unknown memory token: only a worker of a running run may attach",
            )
        })
}

fn denied(what: &str) -> MemoryResponse {
    MemoryResponse::Error(ErrorBody::new(
        ErrorKind::PermissionDenied,
        format!("{what} is not allowed on this connection"),
    ))
}

/// Runs one request on a blocking thread under the request deadline.
async fn handle(service: &Arc<Service>, caller: &Caller, req: MemoryRequest) -> MemoryResponse {
    // Grants are bookkeeping, answered here.
    match (&req, caller) {
        (MemoryRequest::Register { token, grant }, Caller::Supervisor) => {
            for s in grant.read.iter().chain([&grant.write]) {
                if let Err(e) = check_scope(s) {
                    return MemoryResponse::Error(ErrorBody::new(ErrorKind::BadRequest, e));
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
            return denied("registering grants");
        }
        (MemoryRequest::Tools, _) => return MemoryResponse::Tools(tools::specs()),
        (MemoryRequest::Ping, _) => return MemoryResponse::Ok,
        _ => {}
    }
    let svc = service.clone();
    let caller = caller.clone();
    let timeout = service.config.request_timeout;
    let work = tokio::task::spawn_blocking(move || execute(&svc, &caller, req));
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => MemoryResponse::Error(ErrorBody::new(
            ErrorKind::Internal,
            format!("memory request failed: {e}"),
        )),
        Err(_) => MemoryResponse::Error(ErrorBody::new(
            ErrorKind::Timeout,
            format!(
                "memory request took longer than {}s ([memory] request_timeout); a write may still complete",
                timeout.as_secs()
            ),
        )),
    }
}

fn execute(service: &Service, caller: &Caller, req: MemoryRequest) -> MemoryResponse {
    let store = &service.store;
    let result: Result<MemoryResponse, ErrorBody> = match (caller, req) {
        (Caller::Worker(g), MemoryRequest::CallTool { name, arguments }) => {
            let access = Access {
                write: &g.write,
                read: &g.read,
            };
            let started = std::time::Instant::now();
            let result = tools::call(store, &access, &name, &arguments);
            let (outcome, detail) = match &result {
                Ok(_) => ("ok", ""),
                Err(e) => ("tool_error", e.message.as_str()),
            };
            let entry = AuditEntry {
                run_id: &g.run_id,
                agent: &g.agent,
                tool: &name,
                server: "memory",
                arguments: &arguments,
                outcome,
                detail,
                duration_us: started.elapsed().as_micros() as u64,
                memory_peak_bytes: 0,
            };
            audited(service, &entry).and(result.map(MemoryResponse::ToolOutput))
        }
        (
            Caller::Worker(g),
            MemoryRequest::Recall {
                query,
                limit,
                min_similarity,
            },
        ) => store
            .recall(&g.read, &query, limit.min(50), min_similarity)
            .map(MemoryResponse::Recalled),
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
            store
                .create_entities(&g.write, &[entity])
                .map(|_| MemoryResponse::Ok)
        }
        (Caller::Supervisor, MemoryRequest::Store(s)) => check_scope(&s.scope)
            .map_err(|e| ErrorBody::new(ErrorKind::BadRequest, e))
            .and_then(|()| store.store_entity(&s.scope, &s.name, &s.entity_type, &s.observations))
            .map(|_| MemoryResponse::Ok),
        (Caller::Supervisor, MemoryRequest::Search(q)) => all_scopes(store, &q.scopes)
            .and_then(|scopes| store.search(&q, &scopes))
            .map(MemoryResponse::Search),
        (Caller::Supervisor, MemoryRequest::Show { scope, names }) => {
            let scopes = match scope {
                Some(s) => vec![s],
                None => all_scopes(store, &[]).unwrap_or_default(),
            };
            store.open_nodes(&scopes, &names).map(MemoryResponse::Graph)
        }
        (Caller::Supervisor, MemoryRequest::Stats { integrity_check }) => {
            store.stats(integrity_check).map(MemoryResponse::Stats)
        }
        (
            Caller::Supervisor,
            MemoryRequest::Export {
                scopes,
                offset,
                limit,
            },
        ) => all_scopes(store, &scopes)
            .and_then(|scopes| store.read_graph(&scopes, offset, limit))
            .map(|(graph, more)| MemoryResponse::ExportPage { graph, more }),
        (
            Caller::Supervisor,
            MemoryRequest::Import {
                graph,
                replace_scopes,
            },
        ) => {
            let bad_scope = graph
                .entities
                .iter()
                .map(|e| &e.scope)
                .chain(graph.relations.iter().map(|r| &r.scope))
                .chain(&replace_scopes)
                .find_map(|s| check_scope(s).err());
            match bad_scope {
                Some(e) => Err(ErrorBody::new(ErrorKind::BadRequest, e)),
                None => store
                    .import(&graph, &replace_scopes)
                    .map(MemoryResponse::Imported),
            }
        }
        (Caller::Supervisor, MemoryRequest::Prune(p)) => {
            store.prune(&p, &service.config).map(MemoryResponse::Pruned)
        }
        (Caller::Supervisor, MemoryRequest::Embed { texts }) => {
            if texts.len() > 256 {
                Err(ErrorBody::new(
                    ErrorKind::BadRequest,
                    "embed at most 256 texts per request",
                ))
            } else {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                store
                    .embedder
                    .embed(&refs)
                    .map(MemoryResponse::Embeddings)
                    .map_err(|e| ErrorBody::new(ErrorKind::Internal, e))
            }
        }
        (Caller::Unattached, _) => Err(ErrorBody::new(
            ErrorKind::PermissionDenied,
            "attach with the run's memory token first",
        )),
        (_, other) => Err(ErrorBody::new(
            ErrorKind::PermissionDenied,
            format!("{} is not allowed on this connection", request_name(&other)),
        )),
    };
    result.unwrap_or_else(MemoryResponse::Error)
}

/// Appends a memory-tool call to the audit log. When the record cannot be written the call's
/// result is withheld (as the toolhost does): an unaudited call must not look answered.
fn audited(service: &Service, entry: &AuditEntry<'_>) -> Result<(), ErrorBody> {
    let now_ms = crate::db::now_ms();
    let mut audit = service.audit.lock().unwrap_or_else(|p| p.into_inner());
    audit.append(entry, now_ms).map_err(|e| {
        let e = anyhow::Error::new(e);
        tracing::error!(path = %audit.path().display(), error = format!("{e:#}"), "cannot write the memory audit log; withholding the result");
        ErrorBody::new(
            ErrorKind::Memory,
            format!(
                "memory tool `{}`: {e:#}; results are withheld until the audit log can be written",
                entry.tool
            ),
        )
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
    }
}

/// `scopes` checked, or every scope in the database when empty (the supervisor's view).
fn all_scopes(store: &Store, scopes: &[String]) -> Result<Vec<String>, ErrorBody> {
    if !scopes.is_empty() {
        for s in scopes {
            check_scope(s).map_err(|e| ErrorBody::new(ErrorKind::BadRequest, e))?;
        }
        return Ok(scopes.to_vec());
    }
    store.scopes()
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
