//! The supervisor's state (config, agents, service processes, admission, the run table) and the
//! handlers of the non-run requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deadline of tool package management requests (an install compiles the module).
const TOOL_ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

use caxton_config::ServerConfig;
use caxton_ipc::api::ServiceState;
use caxton_ipc::api::{
    ApiRequest, ApiResponse, Counters, ErrorBody, ErrorKind, HealthReport, StatusReport,
    ValidationReport,
};
use caxton_ipc::memory::{MemoryRequest, MemoryResponse};
use caxton_ipc::toolhost::{CallToolRequest, ToolhostRequest, ToolhostResponse};

use crate::admission::Admission;
use crate::agent_file::{self, ValidationContext};
use crate::registry::{AgentRegistry, Registry};
use crate::run_table::RunTable;
use crate::services::{Link, ServiceProcess};
use crate::warm::WarmWorkers;
use caxton_ipc::connection::{MemoryProtocol, ToolhostProtocol};

use crate::delegation::Router;

/// The memory service and the kept-open connection its runs' grants travel on.
struct Memory {
    process: Arc<ServiceProcess>,
    grants: Arc<Link<MemoryProtocol>>,
}

/// The supervisor's state, each part a type that owns its rules.
pub struct Service {
    /// The validated server config (children get their sections of it at start).
    config: ServerConfig,
    /// Pre-spawned workers, each used for exactly one run.
    warm: Arc<WarmWorkers>,
    /// The agents loaded from the agents directory; swapped whole on reload.
    agents: AgentRegistry,
    /// The supervised toolhost.
    toolhost: Arc<ServiceProcess>,
    /// The kept-open connection the runs' toolhost grants travel on.
    toolhost_grants: Arc<Link<ToolhostProtocol>>,
    /// The supervised memory service; `None` when `[memory] enabled = false`.
    memory: Option<Memory>,
    /// Worker slots, the queue, the drain.
    admission: Admission,
    /// Runs with a worker, recent runs, counters.
    runs: RunTable,
    /// Capability routing state.
    router: Router,
    /// The supervisor's Prometheus recorder (`metrics.rs` renders the whole service's).
    recorder: caxton_telemetry::Recorder,
    /// When a task of the main runtime last beat (milliseconds since `started`): the HTTP
    /// listener's thread answers `/healthz` from it.
    heartbeat_ms: std::sync::atomic::AtomicU64,
    started: Instant,
}

/// How often the main runtime beats, and how old its last beat may be for `/healthz`.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(5);

impl Service {
    pub fn new(
        config: ServerConfig,
        warm: Arc<WarmWorkers>,
        toolhost: Arc<ServiceProcess>,
        memory: Option<Arc<ServiceProcess>>,
    ) -> Service {
        Service {
            admission: Admission::new(
                config.workers.max_concurrent,
                config.workers.queue_capacity,
                config.workers.max_delegated,
            ),
            config,
            warm,
            agents: AgentRegistry::default(),
            toolhost_grants: Arc::new(Link::new(toolhost.socket())),
            toolhost,
            memory: memory.map(|process| Memory {
                grants: Arc::new(Link::new(process.socket())),
                process,
            }),
            runs: RunTable::default(),
            router: Router::default(),
            recorder: crate::metrics::install(),
            heartbeat_ms: Default::default(),
            started: Instant::now(),
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn warm(&self) -> &Arc<WarmWorkers> {
        &self.warm
    }

    pub fn toolhost(&self) -> &Arc<ServiceProcess> {
        &self.toolhost
    }

    /// The kept-open connection for registering and revoking runs' toolhost grants.
    pub fn toolhost_grants(&self) -> &Arc<Link<ToolhostProtocol>> {
        &self.toolhost_grants
    }

    /// The same for memory grants, or why the memory service cannot serve.
    pub fn memory_grants(&self) -> Result<&Arc<Link<MemoryProtocol>>, ErrorBody> {
        self.memory().map(|m| &m.grants)
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn runs(&self) -> &RunTable {
        &self.runs
    }

    /// Beats every [`HEARTBEAT_EVERY`] on the main runtime until the process ends.
    pub async fn beat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tick.tick().await;
            self.heartbeat_ms.store(
                self.started.elapsed().as_millis() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// How long ago the main runtime last beat.
    pub fn since_heartbeat(&self) -> Duration {
        let last = self.heartbeat_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }

    /// The whole service's metrics in the Prometheus text format.
    pub fn metrics(&self) -> String {
        crate::metrics::scrape(self, &self.recorder)
    }
}

impl Service {
    /// The agents serving now.
    pub fn registry(&self) -> Arc<Registry> {
        self.agents.current()
    }

    pub fn validation_context(&self) -> ValidationContext<'static> {
        ValidationContext {
            catalog: None,
            default_timeout: self.config.workers.default_timeout,
            default_tool_timeout: self.config.toolhost.tool_timeout,
            worker_caps: crate::agent_file::WorkerCaps::of(&self.config.workers),
        }
    }

    /// SIGHUP: re-reads the toolhost's catalog, then reloads the agents against it.
    pub async fn reload_agents(&self) -> usize {
        let catalog = self.toolhost.refresh_catalog().await;
        self.load_agents(&catalog)
    }

    /// Loads the agents directory against `catalog` and swaps the registry in. Agents whose file
    /// now fails keep their last good version (see `registry.rs`); every problem is logged.
    pub fn load_agents(&self, catalog: &caxton_ipc::toolhost::Catalog) -> usize {
        let ctx = ValidationContext {
            catalog: Some(catalog),
            ..self.validation_context()
        };
        let dir = self.config.agents_dir();
        let registry = Registry::load_dir(&dir, &ctx, &self.registry());
        for p in &registry.problems {
            tracing::error!(file = %p.file, line = p.line, column = p.column, hint = p.hint.as_deref().unwrap_or(""), "agent file problem: {}", p.message);
        }
        for (name, why) in &registry.stale {
            tracing::error!(agent = %name, "agent kept at its last good version: {why}");
        }
        let count = registry.agents.len();
        tracing::info!(dir = %dir.display(), agents = count, stale = registry.stale.len(), problems = registry.problems.len(), "agents loaded");
        self.agents.replace(registry);
        count
    }

    pub fn validate(&self, file_name: &str, source: &str) -> ApiResponse {
        let catalog = self.toolhost.catalog();
        let ctx = ValidationContext {
            catalog: Some(&catalog),
            ..self.validation_context()
        };
        let report = match agent_file::parse(file_name, source.as_bytes(), &ctx) {
            Ok(agent) => ValidationReport {
                agent: Some(agent.name),
                diagnostics: vec![],
            },
            Err(diagnostics) => ValidationReport {
                agent: None,
                diagnostics,
            },
        };
        ApiResponse::Validation(report)
    }

    /// Tool package management and direct tool calls, relayed to the toolhost. After an install
    /// or a removal the catalog is re-read and the agents reloaded against it, so agents that
    /// name the new tools load (and those that lost theirs are reported).
    pub async fn tool_request(&self, req: ApiRequest) -> ApiResponse {
        let (to_toolhost, timeout, changes) = match req {
            ApiRequest::ListTools => (ToolhostRequest::ListPackages, TOOL_ADMIN_TIMEOUT, false),
            ApiRequest::InstallTool(install) => (
                ToolhostRequest::InstallPackage(install),
                TOOL_ADMIN_TIMEOUT,
                true,
            ),
            ApiRequest::RemoveTool { name } => (
                ToolhostRequest::RemovePackage { name },
                TOOL_ADMIN_TIMEOUT,
                true,
            ),
            ApiRequest::CallTool {
                tool,
                arguments,
                timeout_ms,
            } => {
                let limit = self.config.toolhost.tool_timeout;
                let timeout_ms = timeout_ms
                    .unwrap_or(limit.as_millis() as u64)
                    .min(limit.as_millis() as u64);
                let seq = self.runs.next_seq();
                let call = CallToolRequest {
                    run_id: format!("op-{}-{seq}", std::process::id()),
                    agent: "operator".into(),
                    tool,
                    arguments,
                    timeout_ms,
                };
                // The toolhost enforces the call's deadline; this one only bounds a lost answer.
                let wait = Duration::from_millis(timeout_ms) + Duration::from_secs(5);
                (ToolhostRequest::CallTool(call), wait, false)
            }
            other => {
                return ApiResponse::Error(ErrorBody::new(
                    ErrorKind::Internal,
                    format!("not a tool request: {other:?}"),
                ));
            }
        };
        let resp =
            match crate::services::request(self.toolhost.socket(), &to_toolhost, timeout).await {
                Ok(r) => r,
                Err(e) => {
                    return ApiResponse::Error(ErrorBody::new(ErrorKind::Toolhost, e.to_string()));
                }
            };
        if changes && !matches!(resp, ToolhostResponse::Error(_)) {
            self.reload_agents().await;
        }
        match resp {
            ToolhostResponse::Packages(p) => ApiResponse::Tools(p),
            ToolhostResponse::Installed(info) => ApiResponse::ToolInstalled(info),
            ToolhostResponse::Removed => ApiResponse::ToolRemoved {
                name: match to_toolhost {
                    ToolhostRequest::RemovePackage { name } => name,
                    _ => String::new(),
                },
            },
            ToolhostResponse::ToolOutput(out) => ApiResponse::ToolOutput(out),
            ToolhostResponse::Error(e) => ApiResponse::Error(e),
            other => ApiResponse::Error(ErrorBody::new(
                ErrorKind::Toolhost,
                format!("unexpected answer from the toolhost: {other:?}"),
            )),
        }
    }

    /// The memory service, or why it cannot serve.
    pub fn memory_service(&self) -> Result<&Arc<ServiceProcess>, ErrorBody> {
        self.memory().map(|m| &m.process)
    }

    /// The supervised memory process whatever its state; `None` when it is disabled.
    pub fn memory_process(&self) -> Option<&Arc<ServiceProcess>> {
        self.memory.as_ref().map(|m| &m.process)
    }

    fn memory(&self) -> Result<&Memory, ErrorBody> {
        let Some(memory) = &self.memory else {
            return Err(ErrorBody::new(
                ErrorKind::Memory,
                "the memory service is disabled ([memory] enabled = false in the server config)",
            ));
        };
        match memory.process.state() {
            ServiceState::Running { .. } => Ok(memory),
            ServiceState::Unresponsive { silent_ms, .. } => Err(ErrorBody::new(
                ErrorKind::Memory,
                format!(
                    "the memory service is unresponsive (no answer to pings for {:.1}s); it is restarted after [health] restart_unresponsive_after ({}s)",
                    silent_ms as f64 / 1000.0,
                    self.config.health.restart_unresponsive_after.as_secs()
                ),
            )),
            ServiceState::Restarting { attempt, last_exit } => Err(ErrorBody::new(
                ErrorKind::Memory,
                format!(
                    "the memory service is not running (restart attempt {attempt}); it last failed: {last_exit}"
                ),
            )),
            other => Err(ErrorBody::new(
                ErrorKind::Memory,
                format!("the memory service is not running ({other:?})"),
            )),
        }
    }

    /// Sends one request to the memory service as the supervisor.
    pub async fn memory_request(
        &self,
        req: &MemoryRequest,
        timeout: Duration,
    ) -> Result<MemoryResponse, ErrorBody> {
        let m = self.memory_service()?;
        match crate::services::exchange::<MemoryProtocol>(m.socket(), req, timeout).await {
            Ok(MemoryResponse::Error(e)) => Err(e),
            Ok(r) => Ok(r),
            Err(e) => Err(ErrorBody::new(ErrorKind::Memory, e.to_string())),
        }
    }

    /// `caxton memory …` from the public API: operator requests only.
    pub async fn memory_api(&self, req: MemoryRequest) -> ApiResponse {
        let allowed = matches!(
            req,
            MemoryRequest::Store(_)
                | MemoryRequest::Search(_)
                | MemoryRequest::Show { .. }
                | MemoryRequest::Stats { .. }
                | MemoryRequest::Export { .. }
                | MemoryRequest::Import { .. }
                | MemoryRequest::Prune(_)
                | MemoryRequest::Embed { .. }
        );
        if !allowed {
            return ApiResponse::Error(ErrorBody::new(
                ErrorKind::PermissionDenied,
                "grant and worker requests cannot be sent through the API socket",
            ));
        }
        let timeout = self.config.memory.request_timeout + Duration::from_secs(5);
        match self.memory_request(&req, timeout).await {
            Ok(r) => ApiResponse::Memory(r),
            Err(e) => ApiResponse::Error(e),
        }
    }

    pub fn show(&self, name: &str) -> ApiResponse {
        match self.registry().get(name) {
            Some(a) => ApiResponse::Agent(Box::new((*a).clone())),
            None => ApiResponse::Error(self.unknown_agent(name)),
        }
    }

    pub fn unknown_agent(&self, name: &str) -> ErrorBody {
        let registry = self.registry();
        let known: Vec<_> = registry.agents.keys().map(String::as_str).collect();
        ErrorBody::new(
            ErrorKind::NotFound,
            format!(
                "no agent named `{name}` is loaded (loaded: {}); see `caxton agent list`, and check the daemon's log for agent files it skipped",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
    }

    pub fn status(&self) -> StatusReport {
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            agents: self.registry().agents.len() as u32,
            workers: self.runs.workers(),
            max_workers: self.admission.max_concurrent(),
            ready_workers: self.warm.idle() as u32,
            queue_depth: self.admission.queue_depth() as u32,
            queue_capacity: self.admission.queue_capacity(),
            toolhost: self.toolhost.state(),
            memory: self.memory.as_ref().map(|m| m.process.state()),
            memory_restarts: self.memory.as_ref().map_or(0, |m| m.process.restarts()),
            draining: self.admission.is_draining(),
            counters: Counters {
                toolhost_restarts: self.toolhost.restarts(),
                ..self.runs.counters()
            },
            recent_runs: self.runs.recent(),
            agent_problems: self.registry().problems.clone(),
            by_agent: self.runs.by_agent(),
        }
    }

    pub fn health(&self) -> HealthReport {
        let draining = self.admission.is_draining();
        let toolhost = self.toolhost.state();
        let memory = self.memory.as_ref().map(|m| m.process.state());
        let running = |s: &ServiceState| matches!(s, ServiceState::Running { .. });
        let mut problems = Vec::new();
        if draining {
            problems.push("draining for shutdown".to_string());
        }
        if !running(&toolhost) {
            problems.push(format!("toolhost {}", describe_state(&toolhost)));
        }
        if let Some(m) = memory.as_ref().filter(|m| !running(m)) {
            problems.push(format!("memory service {}", describe_state(m)));
        }
        let ready = problems.is_empty();
        let detail = if ready {
            format!("ok: {} agents loaded", self.registry().agents.len())
        } else {
            problems.join("; ")
        };
        HealthReport {
            live: true,
            ready,
            detail,
            toolhost,
            memory,
        }
    }

    /// Whether the systemd watchdog should be fed: the service processes are watched and the
    /// supervisor's own recovery of them works.
    pub fn watchdog_ok(&self) -> bool {
        let health = &self.config.health;
        self.toolhost.recovering(health)
            && self
                .memory
                .as_ref()
                .is_none_or(|m| m.process.recovering(health))
    }
}

/// A service state for a one-line health detail.
pub fn describe_state(s: &ServiceState) -> String {
    match s {
        ServiceState::Starting => "starting".into(),
        ServiceState::Running { pid, .. } => format!("running (pid {pid})"),
        ServiceState::Unresponsive { pid, silent_ms, .. } => format!(
            "unresponsive (pid {pid}, no answer to pings for {:.1}s)",
            *silent_ms as f64 / 1000.0
        ),
        ServiceState::Restarting { attempt, last_exit } => {
            format!("restarting (attempt {attempt}; last: {last_exit})")
        }
        ServiceState::Stopped => "stopped".into(),
    }
}
