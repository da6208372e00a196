//! Supervision of the persistent service processes, `caxton-toolhost` and `caxton-memory`: start
//! one, wait for readiness (and, for the toolhost, fetch its catalog), and restart it with
//! exponential backoff when it dies (logging the exit status and stderr tail). A failed first
//! start is fatal for the toolhost (nothing runs without it) and retried for the memory service
//! (agents without memory still run; its state says why it is down).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caxton_config::HealthConfig;
use caxton_ipc::api::ServiceState;
use caxton_ipc::connection::{self, MemoryProtocol, Protocol, ToolhostProtocol};
use caxton_ipc::handshake::Role;
use caxton_ipc::memory::{MemoryRequest, MemoryResponse};
use caxton_ipc::service::ServiceSetup;
use caxton_ipc::toolhost::{Catalog, ToolhostRequest, ToolhostResponse};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use crate::spawn::{self, ChildSpec, ManagedChild};

/// Which service process a [`ServiceProcess`] supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Toolhost,
    Memory,
}

impl Kind {
    /// Its short name: in log lines, and its socket's name (`private/<name>.sock`).
    pub fn short_name(self) -> &'static str {
        match self {
            Kind::Toolhost => "toolhost",
            Kind::Memory => "memory",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Toolhost => "toolhost",
            Kind::Memory => "memory service",
        }
    }
}

/// Time the toolhost has to print `ready` (it compiles its WASM modules first).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// First restart delay; doubles on each consecutive failure.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A toolhost that ran this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Time the toolhost gets to exit after SIGTERM at shutdown.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Deadline of a catalog request.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Spawn(#[from] spawn::SpawnError),
    #[error("`{command}` {how} before it was ready{}", stderr_suffix(.stderr))]
    DiedEarly {
        command: String,
        how: String,
        stderr: String,
    },
    #[error("`{command}` did not report ready within {}s{}", .after.as_secs(), stderr_suffix(.stderr))]
    NotReady {
        command: String,
        after: Duration,
        stderr: String,
    },
    #[error("the {service} at {socket} did not serve the request: {detail}")]
    Request {
        service: &'static str,
        socket: String,
        detail: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{stderr}")
    }
}

/// A supervised service process (the toolhost or the memory service), shared with the rest of
/// the supervisor.
pub struct ServiceProcess {
    kind: Kind,
    spec: ChildSpec,
    /// What each start of the process is given on its stdin.
    setup: ServiceSetup,
    socket: PathBuf,
    state: Mutex<ServiceState>,
    catalog: Mutex<Catalog>,
    restarts: std::sync::atomic::AtomicU64,
    started: Instant,
    /// When the health watcher last finished a round (milliseconds since `started`).
    last_round_ms: std::sync::atomic::AtomicU64,
    /// The service's metrics as its last health check returned them, with the pid that
    /// answered (a restarted process's are never shown as the new one's).
    report: Mutex<Option<(u32, Arc<str>)>>,
}

impl ServiceProcess {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn state(&self) -> ServiceState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Running and answering its pings.
    pub fn is_running(&self) -> bool {
        matches!(self.state(), ServiceState::Running { .. })
    }

    pub fn catalog(&self) -> Catalog {
        self.catalog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The metrics the running process reported at its last health check (at most
    /// `[health] ping_interval` old); `None` while it is not running or has not reported yet.
    pub fn metrics_report(&self) -> Option<Arc<str>> {
        let pid = match self.state() {
            ServiceState::Running { pid, .. } => pid,
            _ => return None,
        };
        let report = self.report.lock().unwrap_or_else(|p| p.into_inner());
        report
            .as_ref()
            .filter(|(from, _)| *from == pid)
            .map(|(_, text)| text.clone())
    }

    fn set_state(&self, s: ServiceState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// Starts the process and supervises it until `stop` turns true; then stops it. A failed
    /// first start is an error for the toolhost; the memory service is retried with backoff.
    pub async fn start(
        kind: Kind,
        program: PathBuf,
        setup: ServiceSetup,
        socket: PathBuf,
        (stderr_tail, health): (usize, HealthConfig),
        stop: watch::Receiver<bool>,
    ) -> Result<(Arc<ServiceProcess>, tokio::task::JoinHandle<()>), ServiceError> {
        let mut spec = ChildSpec::new(program, stderr_tail)
            .arg("serve")
            .arg("--socket")
            .arg(&socket);
        // The config comes on stdin: the one this supervisor validated, not the file as it is now.
        spec = spec.arg("--config").arg("-");
        spec.die_with_parent = true;
        spec.log_stderr_as = Some(kind.short_name());
        let host = Arc::new(ServiceProcess {
            kind,
            spec,
            setup,
            socket,
            state: Mutex::new(ServiceState::Starting),
            catalog: Mutex::new(Catalog {
                tools: vec![],
                providers: vec![],
            }),
            restarts: Default::default(),
            started: Instant::now(),
            last_round_ms: Default::default(),
            report: Mutex::new(None),
        });
        let child = match host.launch().await {
            Ok(c) => Some(c),
            Err(e) if kind == Kind::Memory => {
                tracing::error!(error = %e, "the memory service did not start; retrying with backoff");
                host.set_state(ServiceState::Restarting {
                    attempt: 0,
                    last_exit: e.to_string(),
                });
                None
            }
            Err(e) => return Err(e),
        };
        tokio::spawn(host.clone().watch_health(health, stop.clone()));
        let supervisor = tokio::spawn(host.clone().supervise(child, stop));
        Ok((host, supervisor))
    }

    /// Spawns one toolhost, waits for `ready`, and fetches the catalog.
    async fn launch(&self) -> Result<ManagedChild, ServiceError> {
        let mut child = spawn::spawn(&self.spec)?;
        if let Some(mut stdin) = child.stdin.take()
            && let Err(e) = caxton_ipc::service::write_setup(&mut stdin, &self.setup).await
        {
            // It died at once; the readiness wait below says how.
            tracing::debug!(error = %e, "cannot hand the config to the {}", self.kind.name());
        }
        let stdout = child.stdout.take();
        let ready = async {
            let mut lines = BufReader::new(stdout?).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "ready" {
                    return Some(());
                }
            }
            None
        };
        match tokio::time::timeout(READY_TIMEOUT, ready).await {
            Ok(Some(())) => {}
            Ok(None) => {
                // Its stdout closed without `ready`: it is exiting, or it is kept from being ready.
                let how = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(Ok(status)) => spawn::describe_exit(&status),
                    Ok(Err(e)) => format!("could not be waited for ({e})"),
                    Err(_) => {
                        let _ = child.kill_and_wait().await;
                        "closed its stdout without reporting ready, and was killed".to_string()
                    }
                };
                return Err(ServiceError::DiedEarly {
                    command: child.command.clone(),
                    how,
                    stderr: child.stderr_tail().await,
                });
            }
            Err(_) => {
                let stderr = child.stderr_tail().await;
                let _ = child.kill_and_wait().await;
                return Err(ServiceError::NotReady {
                    command: child.command.clone(),
                    after: READY_TIMEOUT,
                    stderr,
                });
            }
        }
        if self.kind == Kind::Toolhost {
            let catalog = fetch_catalog(&self.socket).await?;
            tracing::info!(
                pid = child.pid,
                tools = catalog.tools.len(),
                providers = catalog.providers.len(),
                "toolhost ready"
            );
            *self.catalog.lock().unwrap_or_else(|p| p.into_inner()) = catalog;
        } else {
            tracing::info!(pid = child.pid, "{} ready", self.kind.name());
        }
        self.set_state(ServiceState::Running {
            pid: child.pid,
            since_ms: self.started.elapsed().as_millis() as u64,
        });
        Ok(child)
    }

    async fn supervise(
        self: Arc<Self>,
        first: Option<ManagedChild>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = BACKOFF_START;
        let mut child = match first {
            Some(c) => c,
            None => match self.relaunch(&mut backoff, &mut stop, String::new()).await {
                Some(c) => c,
                None => return,
            },
        };
        loop {
            let up_since = Instant::now();
            let exited = tokio::select! {
                status = child.wait() => Some(status),
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(status) = exited else {
                self.shutdown(child).await;
                return;
            };
            let how = match status {
                Ok(s) => spawn::describe_exit(&s),
                Err(e) => format!("could not be waited for ({e})"),
            };
            let stderr = child.stderr_tail().await;
            tracing::error!(pid = child.pid, exit = %how, stderr = %stderr, "{} died; restarting", self.kind.name());
            if up_since.elapsed() > STABLE_AFTER {
                backoff = BACKOFF_START;
            }
            child = match self.relaunch(&mut backoff, &mut stop, how).await {
                Some(c) => c,
                None => return,
            };
        }
    }

    /// Starts the process again after `backoff` (doubling it on each failure) until it is ready;
    /// `None` when asked to stop first.
    async fn relaunch(
        &self,
        backoff: &mut Duration,
        stop: &mut watch::Receiver<bool>,
        mut how: String,
    ) -> Option<ManagedChild> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let ServiceState::Restarting { last_exit, .. } = self.state()
                && how.is_empty()
            {
                how = last_exit;
            }
            self.set_state(ServiceState::Restarting {
                attempt,
                last_exit: how.clone(),
            });
            tokio::select! {
                _ = tokio::time::sleep(*backoff) => {}
                _ = stop.wait_for(|s| *s) => { self.set_state(ServiceState::Stopped); return None; }
            }
            *backoff = (*backoff * 2).min(BACKOFF_MAX);
            self.restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.launch().await {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::error!(attempt, error = %e, "{} restart failed", self.kind.name());
                    how = e.to_string();
                }
            }
        }
    }

    async fn shutdown(&self, mut child: ManagedChild) {
        child.signal_group(Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill_and_wait().await;
        }
        self.set_state(ServiceState::Stopped);
        let _ = std::fs::remove_file(&self.socket);
        tracing::info!("{} stopped", self.kind.name());
    }

    /// Pings the service every `ping_interval` while it runs. One unanswered within
    /// `ping_timeout` marks it `Unresponsive` (status, health, and every request to it fails at
    /// once instead of waiting); one unresponsive for `restart_unresponsive_after` is killed,
    /// and `supervise` restarts it. A SIGSTOPped or wedged service is found this way.
    async fn watch_health(self: Arc<Self>, health: HealthConfig, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(health.ping_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // (pid, when it stopped answering)
        let mut silent: Option<(u32, Instant)> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let (pid, since_ms) = match self.state() {
                ServiceState::Running { pid, since_ms }
                | ServiceState::Unresponsive { pid, since_ms, .. } => (pid, since_ms),
                _ => {
                    silent = None;
                    self.note_round();
                    continue;
                }
            };
            let answered = self.ping(pid, health.ping_timeout).await;
            self.note_round();
            if answered {
                if silent.take().is_some() {
                    tracing::info!(pid, "the {} answers again", self.kind.name());
                    self.replace_state_of(pid, ServiceState::Running { pid, since_ms });
                }
                continue;
            }
            let since = match silent {
                Some((p, t)) if p == pid => t,
                _ => {
                    let t = Instant::now()
                        .checked_sub(health.ping_timeout)
                        .unwrap_or_else(Instant::now);
                    tracing::warn!(
                        pid,
                        timeout_ms = health.ping_timeout.as_millis() as u64,
                        "the {} does not answer its ping",
                        self.kind.name()
                    );
                    silent = Some((pid, t));
                    t
                }
            };
            let silent_for = since.elapsed();
            self.replace_state_of(
                pid,
                ServiceState::Unresponsive {
                    pid,
                    since_ms,
                    silent_ms: silent_for.as_millis() as u64,
                },
            );
            if silent_for >= health.restart_unresponsive_after {
                tracing::error!(
                    pid,
                    silent_ms = silent_for.as_millis() as u64,
                    "the {} has been unresponsive past [health] restart_unresponsive_after; killing it to restart it",
                    self.kind.name()
                );
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    Signal::SIGKILL,
                );
                silent = None;
            }
        }
    }

    /// One health check of process `pid`, on a new connection, answered within `timeout`. It
    /// asks for the service's metrics: the answer shows it serves, and is kept for scrapes, so
    /// a scrape never waits for a busy service.
    async fn ping(&self, pid: u32, timeout: Duration) -> bool {
        let report = match self.kind {
            Kind::Toolhost => {
                match exchange::<ToolhostProtocol>(&self.socket, &ToolhostRequest::Metrics, timeout)
                    .await
                {
                    Ok(ToolhostResponse::Metrics(text)) => text,
                    _ => return false,
                }
            }
            Kind::Memory => {
                match exchange::<MemoryProtocol>(&self.socket, &MemoryRequest::Metrics, timeout)
                    .await
                {
                    Ok(MemoryResponse::Metrics(text)) => text,
                    _ => return false,
                }
            }
        };
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some((pid, report.into()));
        true
    }

    /// Sets `state` only if the current state is still about process `pid` (running or
    /// unresponsive): a restart in between must not be overwritten.
    fn replace_state_of(&self, pid: u32, state: ServiceState) {
        let mut current = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(&*current, ServiceState::Running { pid: p, .. } | ServiceState::Unresponsive { pid: p, .. } if *p == pid)
        {
            *current = state;
        }
    }

    fn note_round(&self) {
        self.last_round_ms.store(
            self.started.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// False when the health watcher has stopped making rounds, or the service stayed
    /// unresponsive well past the point where it should have been restarted: the supervisor's
    /// own recovery is not working, so the systemd watchdog should stop being fed.
    pub fn recovering(&self, health: &HealthConfig) -> bool {
        let round = health.ping_interval + health.ping_timeout;
        let last = Duration::from_millis(
            self.last_round_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let fresh = self.started.elapsed().saturating_sub(last) <= round * 3;
        let stuck = matches!(self.state(), ServiceState::Unresponsive { silent_ms, .. }
            if Duration::from_millis(silent_ms) > health.restart_unresponsive_after * 2 + round);
        fresh && !stuck
    }

    /// Re-reads the catalog (after SIGHUP); keeps the old one if the toolhost does not answer.
    pub async fn refresh_catalog(&self) -> Catalog {
        match fetch_catalog(&self.socket).await {
            Ok(c) => {
                *self.catalog.lock().unwrap_or_else(|p| p.into_inner()) = c.clone();
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping the previous toolhost catalog");
                self.catalog()
            }
        }
    }
}

/// Asks the toolhost at `socket` for its tools and providers.
pub async fn fetch_catalog(socket: &Path) -> Result<Catalog, ServiceError> {
    match request(socket, &ToolhostRequest::Catalog, CATALOG_TIMEOUT).await? {
        ToolhostResponse::Catalog(c) => Ok(c),
        other => Err(ServiceError::Request {
            service: Kind::Toolhost.name(),
            socket: socket.display().to_string(),
            detail: format!("unexpected response {other:?}"),
        }),
    }
}

/// Sends one request to the toolhost at `socket` on a new connection and returns its response.
pub async fn request(
    socket: &Path,
    req: &ToolhostRequest,
    timeout: Duration,
) -> Result<ToolhostResponse, ServiceError> {
    exchange::<ToolhostProtocol>(socket, req, timeout).await
}

/// Sends one request to a service process at `socket` on a new connection (Hello as the
/// supervisor first) and returns its response.
pub async fn exchange<P: Protocol>(
    socket: &Path,
    req: &P::Request,
    timeout: Duration,
) -> Result<P::Response, ServiceError> {
    Link::<P>::new(socket).request(req, timeout).await
}

/// Supervisor connections to a service that stay open between requests, for the small requests
/// every run makes (registering and revoking its grant): a new connection per request cost each
/// run two connects, two handshakes and two accepted tasks in the service. Up to
/// [`LINK_CONNECTIONS`] requests are in flight at once, each on its own connection (one queue for
/// all runs had every run wait for the others' round trips under load). A connection the service
/// closed (idle, or it restarted) is replaced and the request sent again on the new one, which is
/// safe because a closed connection's request was never read.
pub struct Link<P: Protocol> {
    socket: PathBuf,
    /// Connections not in use.
    idle: std::sync::Mutex<Vec<LinkConn<P>>>,
    /// One permit per connection in use.
    in_use: tokio::sync::Semaphore,
}

/// Connections a [`Link`] uses at most at once.
const LINK_CONNECTIONS: usize = 4;

type LinkConn<P> =
    connection::AsyncClient<P, tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf>;

impl<P: Protocol> Link<P> {
    pub fn new(socket: impl Into<PathBuf>) -> Link<P> {
        Link {
            socket: socket.into(),
            idle: std::sync::Mutex::new(Vec::with_capacity(LINK_CONNECTIONS)),
            in_use: tokio::sync::Semaphore::new(LINK_CONNECTIONS),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` and returns the answer, within `timeout` in all.
    pub async fn request(
        &self,
        req: &P::Request,
        timeout: Duration,
    ) -> Result<P::Response, ServiceError> {
        let err = |detail: String| ServiceError::Request {
            service: P::SERVER,
            socket: self.socket.display().to_string(),
            detail,
        };
        let work = async {
            let _permit =
                (self.in_use.acquire().await).map_err(|_| err("the link is closed".to_string()))?;
            // Taken out while in use: a request cut off by the timeout drops its connection
            // with it, so no late answer is ever read as the next request's.
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            if let Some(mut conn) = idle
                && let Ok(resp) = Self::call(&mut conn, req).await
            {
                self.put_back(conn);
                return Ok(resp);
            }
            let mut conn = connection::connect_unix::<P>(&self.socket, Role::Supervisor)
                .await
                .map_err(|e| err(e.to_string()))?;
            let resp = Self::call(&mut conn, req)
                .await
                .map_err(|e| err(e.to_string()))?;
            self.put_back(conn);
            Ok(resp)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| err(format!("no answer within {}s", timeout.as_secs())))?
    }

    fn put_back(&self, conn: LinkConn<P>) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }

    /// One request and its answer; the deadline is the caller's, over the whole request.
    async fn call(
        conn: &mut LinkConn<P>,
        req: &P::Request,
    ) -> Result<P::Response, caxton_ipc::frame::FrameError> {
        conn.send(req).await?;
        conn.recv().await
    }
}
