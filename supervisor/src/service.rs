//! The supervisor's shared state (config, registry, toolhost, running workers, counters) and the
//! handlers of the non-run requests.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Deadline of tool package management requests (an install compiles the module).
const TOOL_ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

use caxton_ipc::api::ServiceState;
use caxton_ipc::api::{
    ApiRequest, ApiResponse, Counters, ErrorBody, ErrorKind, HealthReport, RunEvent, RunSummary,
    RunUsage, StatusReport, ValidationReport, WorkerInfo,
};
use caxton_ipc::config::ServerConfig;
use caxton_ipc::memory::{MemoryRequest, MemoryResponse};
use caxton_ipc::toolhost::{CallToolRequest, ToolhostRequest, ToolhostResponse};
use tokio::sync::{Semaphore, watch};

use crate::agent_file::{self, ValidationContext};
use crate::registry::Registry;
use crate::services::ServiceProcess;
use caxton_ipc::connection::MemoryProtocol;

/// A worker that is running a request right now.
#[derive(Debug, Clone)]
pub struct RunningWorker {
    pub agent: String,
    pub pid: u32,
    pub started: Instant,
    /// Followed live from the run's events.
    pub usage: RunUsage,
}

/// Why the drain stopped waiting for in-flight runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// `[workers] drain_timeout` passed.
    DrainDeadline(Duration),
    /// A second SIGTERM/SIGINT asked to stop at once.
    SecondSignal,
}

impl Abort {
    /// The failure message of a run cut short by the shutdown.
    pub fn message(self, agent: &str) -> String {
        match self {
            Abort::DrainDeadline(d) => format!(
                "agent `{agent}`: the service shut down and stopped the run after its drain deadline ({}s, [workers] drain_timeout)",
                d.as_secs()
            ),
            Abort::SecondSignal => format!(
                "agent `{agent}`: the service was told to stop at once (a second stop signal during the drain) and stopped the run"
            ),
        }
    }
}

impl Service {
    /// Resolves when the drain stops waiting, with the reason.
    pub async fn aborted(&self) -> Abort {
        let mut rx = self.abort.subscribe();
        let abort = match rx.wait_for(Option::is_some).await {
            Ok(a) => *a,
            Err(_) => None,
        };
        match abort {
            Some(a) => a,
            // The sender lives as long as the service: never closed while a run waits.
            None => std::future::pending().await,
        }
    }
}

/// Ended runs kept for `caxton status`.
pub const RECENT_RUNS: usize = 20;

/// Cumulative counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub runs_started: AtomicU64,
    pub runs_finished: AtomicU64,
    pub runs_failed: AtomicU64,
    pub runs_timed_out: AtomicU64,
    pub workers_crashed: AtomicU64,
    pub busy_rejections: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub llm_calls: AtomicU64,
    pub tool_calls: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// In nano-dollars, so it adds up atomically.
    pub cost_nano_usd: AtomicU64,
}

impl Stats {
    /// Adds an ended run's usage to the totals.
    pub fn add_usage(&self, u: &RunUsage) {
        let add = |c: &AtomicU64, v: u64| c.fetch_add(v, Ordering::Relaxed);
        add(&self.llm_calls, u.llm_calls.into());
        add(&self.tool_calls, u.tool_calls.into());
        add(&self.prompt_tokens, u.prompt_tokens);
        add(&self.completion_tokens, u.completion_tokens);
        add(&self.cost_nano_usd, (u.cost_usd * 1e9).round() as u64);
    }
}

pub struct Service {
    pub config: ServerConfig,
    pub config_path: Option<PathBuf>,
    pub worker_binary: PathBuf,
    /// Pre-spawned workers, each used for exactly one run.
    pub warm: Arc<crate::warm::WarmWorkers>,
    pub registry: RwLock<Arc<Registry>>,
    pub toolhost: Arc<ServiceProcess>,
    /// The memory service; `None` when `[memory] enabled = false`.
    pub memory: Option<Arc<ServiceProcess>>,
    pub slots: Arc<Semaphore>,
    pub queued: AtomicUsize,
    pub running: Mutex<BTreeMap<String, RunningWorker>>,
    /// Number of runs in flight (admitted or queued), watched by the drain.
    pub in_flight: watch::Sender<usize>,
    pub draining: AtomicBool,
    /// Set when the drain ends without waiting any longer: every run still in flight, whatever
    /// its phase, ends at once with a `shutting_down` failure saying why.
    pub abort: watch::Sender<Option<Abort>>,
    pub stats: Stats,
    /// The last [`RECENT_RUNS`] ended runs, newest first.
    pub recent: Mutex<VecDeque<RunSummary>>,
    pub started: Instant,
    pub run_seq: AtomicU64,
}

impl Service {
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry);
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
                let seq = self.run_seq.fetch_add(1, Ordering::Relaxed) + 1;
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
        let Some(m) = &self.memory else {
            return Err(ErrorBody::new(
                ErrorKind::Memory,
                "the memory service is disabled ([memory] enabled = false in the server config)",
            ));
        };
        match m.state() {
            ServiceState::Running { .. } => Ok(m),
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
        let now = Instant::now();
        let workers = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, w)| WorkerInfo {
                run_id: id.clone(),
                agent: w.agent.clone(),
                pid: w.pid,
                age_ms: now.duration_since(w.started).as_millis() as u64,
                usage: RunUsage {
                    wall_ms: now.duration_since(w.started).as_millis() as u64,
                    ..w.usage.clone()
                },
            })
            .collect();
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            agents: self.registry().agents.len() as u32,
            workers,
            max_workers: self.config.workers.max_concurrent,
            ready_workers: self.warm.idle() as u32,
            queue_depth: self.queued.load(Ordering::Relaxed) as u32,
            queue_capacity: self.config.workers.queue_capacity,
            toolhost: self.toolhost.state(),
            memory: self.memory.as_ref().map(|m| m.state()),
            memory_restarts: self.memory.as_ref().map_or(0, |m| m.restarts()),
            draining: self.draining.load(Ordering::Relaxed),
            counters: Counters {
                runs_started: load(&s.runs_started),
                runs_finished: load(&s.runs_finished),
                runs_failed: load(&s.runs_failed),
                runs_timed_out: load(&s.runs_timed_out),
                workers_crashed: load(&s.workers_crashed),
                busy_rejections: load(&s.busy_rejections),
                toolhost_restarts: self.toolhost.restarts(),
                connections_rejected: load(&s.connections_rejected),
                llm_calls: load(&s.llm_calls),
                tool_calls: load(&s.tool_calls),
                prompt_tokens: load(&s.prompt_tokens),
                completion_tokens: load(&s.completion_tokens),
                cost_usd: load(&s.cost_nano_usd) as f64 / 1e9,
            },
            recent_runs: self
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
            agent_problems: self.registry().problems.clone(),
        }
    }

    /// What a running run has used so far (default once it has left the table).
    pub fn live_usage(&self, run_id: &str) -> RunUsage {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .map(|w| w.usage.clone())
            .unwrap_or_default()
    }

    /// Counts an event of a running run into its live usage.
    pub fn count_event(&self, run_id: &str, event: &RunEvent) {
        if let Some(w) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(run_id)
        {
            w.usage.count(event);
        }
    }

    /// Records an ended run: its usage into the totals, its summary into the recent list.
    pub fn record_ended(&self, agent: &str, terminal: &RunEvent) {
        let (run_id, outcome, usage) = match terminal {
            RunEvent::Finished { run_id, usage, .. } => (run_id, "finished".to_string(), usage),
            RunEvent::Failed {
                run_id,
                error,
                usage,
            } => (run_id, error.kind.as_str(), usage),
            _ => return,
        };
        self.stats.add_usage(usage);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_RUNS {
            recent.pop_back();
        }
        recent.push_front(RunSummary {
            run_id: run_id.clone(),
            agent: agent.to_string(),
            outcome,
            usage: usage.clone(),
            ended_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
    }

    pub fn health(&self) -> HealthReport {
        let draining = self.draining.load(Ordering::Relaxed);
        let toolhost = self.toolhost.state();
        let memory = self.memory.as_ref().map(|m| m.state());
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
            && self.memory.as_ref().is_none_or(|m| m.recovering(health))
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
