//! The supervisor daemon (`caxton serve`), as a library: the `caxton` binary (cli/) calls
//! [`serve`]; tests and benchmarks drive it through its socket.
//!
//! The supervisor owns the public API socket, the agent registry, admission (worker slots, the
//! queue, the drain) and supervises `caxton-toolhost` and `caxton-memory`. It never runs tool
//! code or calls an LLM: each run happens in a fresh `caxton-worker` process.

pub mod admission;
pub mod agent_file;
pub mod api;
pub mod conversations;
pub mod delegation;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod registry;
pub mod run_records;
pub mod run_span;
pub mod run_table;
pub mod runs;
pub mod server;
pub mod service;
pub mod services;
pub mod signals;
pub mod spawn;
pub mod systemd;
pub mod warm;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use caxton_config::{self as config, ServerConfig};
use caxton_ipc::service::ServiceSetup;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::watch;

use crate::admission::Abort;
use crate::service::Service;
use crate::signals::Request;

/// Why `caxton serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot prepare the runtime directory {path}")]
    RuntimeDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another caxton serve ({holder}) owns {path}; stop it first, or give this one another runtime_dir"
    )]
    AlreadyRunning { path: PathBuf, holder: String },
    #[error("socket activation: {0}")]
    Activation(String),
    #[error("cannot bind the API socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on [http] listen = {addr}")]
    HttpBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid [api] socket_mode `{0}`: expected an octal mode such as \"0660\"")]
    SocketMode(String),
    #[error("invalid [api] socket_group `{0}`: no such group")]
    SocketGroup(String),
    #[error("cannot start the toolhost")]
    Toolhost(#[from] services::ServiceError),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}

/// Time in-flight runs get after the drain deadline to report their cancellation.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// Runs the daemon with `config` (validated; its children get it from here, not from the file)
/// until SIGTERM/SIGINT (drain) or a second one (immediate).
pub async fn serve(config: ServerConfig) -> Result<(), ServeError> {
    let runtime_dir = config.runtime_dir();
    let dir_err = |source| ServeError::RuntimeDir {
        path: runtime_dir.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&runtime_dir)
        .map_err(dir_err)?;
    // Everything created from here on (state files, the children's files) is private.
    caxton_ipc::service::private_umask();
    let _lock = lock_runtime_dir(&runtime_dir)?;
    let private = config::private_dir(&runtime_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&private)
        .map_err(dir_err)?;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
    let api_path = config::api_socket_path(&runtime_dir);
    // Socket activation: systemd holds the API socket, and connections made while caxton is
    // down or restarting wait in its backlog. Its file is systemd's, never removed here.
    let activated = systemd::activated_socket().map_err(ServeError::Activation)?;
    if activated.is_none() {
        // We hold the lock, so a socket file left here belongs to a dead instance.
        remove_if_exists(&api_path).map_err(dir_err)?;
    }
    let mode = parse_mode(&config.api.socket_mode)?;
    // Bound before any child starts, so a taken port fails the start at once.
    let http_listener = match config.http.listen_addr() {
        // The config was checked when it was loaded.
        Err(_) | Ok(None) => None,
        Ok(Some(addr)) => {
            let bound = std::net::TcpListener::bind(addr)
                .map_err(|source| ServeError::HttpBind { addr, source })?;
            let local = bound.local_addr().unwrap_or(addr);
            let tokens = config.http.tokens.len();
            if local.ip().is_loopback() {
                tracing::info!(addr = %local, tokens, "HTTP listener: the API under /v1, /metrics, /healthz, /readyz");
            } else {
                tracing::warn!(addr = %local, tokens, "HTTP listener on a non-loopback address without TLS: anyone who reaches it can read /metrics, /healthz and /readyz (no secrets, but names and figures), and API tokens cross the network in clear; put a TLS-terminating proxy in front (README)");
            }
            Some((local, bound))
        }
    };
    let signals = signals::listen().map_err(ServeError::Signals)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let start = |kind, binary: &Option<PathBuf>, name, setup: &ServerConfig| {
        services::ServiceProcess::start(
            kind,
            binary
                .clone()
                .unwrap_or_else(|| spawn::sibling_binary(name)),
            ServiceSetup {
                config_json: setup.to_json(),
            },
            private.join(format!("{}.sock", kind.short_name())),
            (config.workers.stderr_tail_bytes, config.health.clone()),
            stop_rx.clone(),
        )
    };
    let (toolhost, toolhost_task) = start(
        services::Kind::Toolhost,
        &config.toolhost.binary,
        "caxton-toolhost",
        &config,
    )
    .await?;
    let memory = if config.memory.enabled {
        // The memory service gets no provider settings (they may hold keys).
        let without_providers = ServerConfig {
            providers: Default::default(),
            ..config.clone()
        };
        Some(
            start(
                services::Kind::Memory,
                &config.memory.binary,
                "caxton-memory",
                &without_providers,
            )
            .await?,
        )
    } else {
        None
    };
    let (memory, memory_task) = memory.unzip();
    let worker_binary = config
        .workers
        .binary
        .clone()
        .unwrap_or_else(|| spawn::sibling_binary("caxton-worker"));
    let warm = warm::WarmWorkers::new(
        runs::worker_spec(&worker_binary, &config.workers),
        config.workers.warm as usize,
    );
    warm.refill();
    let svc = Arc::new(Service::new(config, warm, toolhost, memory));
    // The catalog was fetched when the toolhost reported ready.
    svc.load_agents(&svc.toolhost().catalog());

    let from_systemd = activated.is_some();
    let listener = match activated {
        Some(inherited) => {
            let path = inherited
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf));
            tracing::info!(socket = ?path, "API socket from systemd (socket activation); its owner and mode are caxton.socket's");
            if path.as_deref() != Some(api_path.as_path()) {
                tracing::warn!(passed = ?path, expected = %api_path.display(), "the socket systemd passed is not at runtime_dir/api.sock, where clients look for it");
            }
            inherited
        }
        None => {
            let listener =
                tokio::net::UnixListener::bind(&api_path).map_err(|source| ServeError::Bind {
                    path: api_path.clone(),
                    source,
                })?;
            std::fs::set_permissions(&api_path, std::fs::Permissions::from_mode(mode))
                .map_err(dir_err)?;
            if let Some(group) = &svc.config().api.socket_group {
                let gid = resolve_group(group)?;
                nix::unistd::chown(&api_path, None, Some(gid)).map_err(|e| dir_err(e.into()))?;
            }
            listener
        }
    };
    tokio::spawn(svc.clone().beat());
    let http = match http_listener {
        Some((addr, listener)) => {
            let thread = http::spawn(svc.clone(), listener, stop_rx.clone())
                .map_err(|source| ServeError::HttpBind { addr, source })?;
            Some(thread)
        }
        None => None,
    };
    let accept = tokio::spawn(server::accept_loop(svc.clone(), listener, stop_rx.clone()));
    tracing::info!(socket = %api_path.display(), pid = std::process::id(), agents = svc.registry().agents.len(), "caxton ready");

    systemd::ready(svc.registry().agents.len());
    let watched = svc.clone();
    let watchdog = systemd::spawn_watchdog(move || watched.watchdog_ok());

    run_until_stopped(&svc, signals).await;
    if let Some(w) = watchdog {
        w.abort();
    }

    // Stop accepting, then drain.
    let _ = stop_tx.send(true);
    let _ = accept.await;
    if let Some(http) = http {
        let _ = tokio::task::spawn_blocking(move || http.join()).await;
    }
    if !from_systemd {
        let _ = std::fs::remove_file(&api_path);
    }
    let _ =
        tokio::time::timeout(services::STOP_GRACE + Duration::from_secs(1), toolhost_task).await;
    if let Some(task) = memory_task {
        let _ = tokio::time::timeout(services::STOP_GRACE + Duration::from_secs(1), task).await;
    }
    tracing::info!("caxton stopped");
    Ok(())
}

/// Serves signals until a stop: SIGHUP reloads; SIGTERM/SIGINT drains within the drain deadline
/// (a second one cuts the drain short) and then kills what is left.
async fn run_until_stopped(
    svc: &Service,
    mut signals: tokio::sync::mpsc::UnboundedReceiver<Request>,
) {
    while let Some(Request::Reload) = signals.recv().await {
        tracing::info!("SIGHUP: reloading agents");
        svc.reload_agents().await;
    }
    let admission = svc.admission();
    admission.start_drain();
    svc.warm().clear();
    systemd::stopping();
    let deadline = svc.config().workers.drain_timeout;
    tracing::info!(
        in_flight = admission.in_flight(),
        deadline_ms = deadline.as_millis() as u64,
        "draining: no new runs; waiting for in-flight runs"
    );
    let drained = tokio::select! {
        r = tokio::time::timeout(deadline, admission.drained()) => r.is_ok().then_some(()).ok_or(Abort::DrainDeadline(deadline)),
        _ = second_stop(&mut signals) => { tracing::warn!("second stop signal: stopping now"); Err(Abort::SecondSignal) }
    };
    if let Err(abort) = drained {
        // Every run still in flight ends now with a terminal event saying why (its worker asked
        // to stop, then its process group killed); queued runs are refused.
        admission.abort(abort);
        tracing::warn!(
            in_flight = admission.in_flight(),
            "stopping the remaining runs"
        );
        let _ = tokio::time::timeout(ABORT_GRACE, admission.drained()).await;
    }
}

async fn second_stop(signals: &mut tokio::sync::mpsc::UnboundedReceiver<Request>) {
    while let Some(r) = signals.recv().await {
        if r == Request::Stop {
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// Takes the runtime directory's lock file (flock), writing our pid into it.
fn lock_runtime_dir(dir: &Path) -> Result<Flock<File>, ServeError> {
    let path = dir.join("caxton.lock");
    let io_err = |source| ServeError::RuntimeDir {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "pid unknown".to_string(),
                p => format!("pid {p}"),
            };
            return Err(ServeError::AlreadyRunning {
                path: dir.to_owned(),
                holder,
            });
        }
    };
    lock.set_len(0).map_err(io_err)?;
    lock.rewind().map_err(io_err)?;
    write!(lock, "{}", std::process::id()).map_err(io_err)?;
    Ok(lock)
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn parse_mode(text: &str) -> Result<u32, ServeError> {
    let digits = text.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| ServeError::SocketMode(text.to_string()))
}

fn resolve_group(group: &str) -> Result<nix::unistd::Gid, ServeError> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        _ => Err(ServeError::SocketGroup(group.to_string())),
    }
}
