//! One agent run as the supervisor sees it: admission (slots and a bounded queue), a fresh
//! `caxton-worker` process, relaying its events to the client, the wall-clock limit, and a clear
//! error when the worker dies, hangs, or the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_config::WorkersConfig;
use caxton_ipc::agent::{AgentSpec, LimitsSpec};
use caxton_ipc::api::{ApiResponse, ErrorBody, ErrorKind, RunEvent, RunRequest, RunUsage};
use caxton_ipc::connection::{AsyncClient, HandshakeError, WorkerProtocol};
use caxton_ipc::connection::{MemoryProtocol, ToolhostProtocol};
use caxton_ipc::frame::FrameError;
use caxton_ipc::handshake::Role;
use caxton_ipc::memory::{MemoryAccess, MemoryRequest, MemoryResponse};
use caxton_ipc::toolhost::{ChatMessage, RunGrant, SettleTo, ToolhostRequest, ToolhostResponse};
use caxton_ipc::trace::TraceParent;
use caxton_ipc::worker::{
    DelegationResult, FromWorker, Monotonic, SupervisorReply, ToWorker, WorkerJob, WorkerRequest,
};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::admission::{Abort, Refusal};
use crate::conversations::{self, Caller};
use crate::delegation::{self, Lineage, Parent, Sink, TreeAccount};
use crate::run_span::RunSpan;
use crate::run_table::{Count, Registered};
use crate::service::Service;
use crate::services::{Link, ServiceError};
use crate::spawn::{self, ChildSpec, ManagedChild};

/// Environment a worker inherits; everything else (provider keys included) is withheld.
pub const WORKER_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "RUST_BACKTRACE",
    "CAXTON_LOG",
    "CAXTON_WORKER_FAULTS",
];
/// How workers are started: the worker binary with an allowlisted environment, confined to the
/// server's `[workers]` limits (the worker lowers them to its agent's own once it has the job).
pub fn worker_spec(binary: &std::path::Path, workers: &WorkersConfig) -> ChildSpec {
    let mut spec = ChildSpec::new(binary, workers.stderr_tail_bytes);
    spec.inherit_only = Some(WORKER_ENV);
    spec.confinement = Some(spawn::Confinement {
        address_space: u64::from(workers.memory_mb) * 1024 * 1024,
        cpu_seconds: workers.cpu_time.as_secs().max(1),
        open_files: workers.open_files.into(),
    });
    spec
}

/// Time a pre-spawned worker has to take a job before a fresh one is started instead.
const READY_HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a worker has to exit after sending its terminal event before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Runs `req` for `caller` and sends every response (events, or one error) to `tx`.
pub async fn execute(
    svc: Arc<Service>,
    caller: Caller,
    req: RunRequest,
    tx: mpsc::Sender<ApiResponse>,
) {
    // Counted in flight before the draining check, so a drain that starts now waits for this run.
    let _flight = match svc.admission().arrive() {
        Ok(f) => f,
        Err(refused) => {
            crate::metrics::rejected("shutting_down");
            let error = refused.error(&req.agent, svc.admission());
            let _ = tx.send(ApiResponse::Error(error)).await;
            return;
        }
    };
    if req.input.len() > caxton_ipc::api::MAX_INPUT_BYTES {
        let message = format!(
            "the input is {} bytes; a run takes at most {} MiB",
            req.input.len(),
            caxton_ipc::api::MAX_INPUT_BYTES / (1024 * 1024)
        );
        let _ = tx
            .send(ApiResponse::Error(ErrorBody::new(
                ErrorKind::BadRequest,
                message,
            )))
            .await;
        return;
    }
    // Events that follow `Started`: how the agent was chosen, the conversation it answers in.
    let mut announce = Vec::new();
    let agent = match &req.capability {
        Some(capability) => {
            let strategy = req.strategy.as_deref();
            match delegation::route_request(&svc, capability, strategy, &req.input).await {
                Ok((agent, routed)) => {
                    announce.push(routed);
                    agent
                }
                Err(e) => {
                    let _ = tx.send(ApiResponse::Error(e)).await;
                    return;
                }
            }
        }
        None => match svc.registry().get(&req.agent) {
            Some(agent) => agent,
            None => {
                let _ = tx
                    .send(ApiResponse::Error(svc.unknown_agent(&req.agent)))
                    .await;
                return;
            }
        },
    };
    // In a conversation, the message goes to the agent holding it.
    let (agent, conversation) = match req.conversation.as_deref() {
        None => (agent, None),
        Some(which) => match conversations::open(&svc, &caller, agent, which).await {
            Ok(opened) => (opened.agent.clone(), Some(opened)),
            Err(e) => {
                let _ = tx.send(ApiResponse::Error(e)).await;
                return;
            }
        },
    };
    let limit = Duration::from_millis(
        req.timeout_ms
            .map_or(agent.limits.timeout_ms, |t| t.min(agent.limits.timeout_ms)),
    );
    let started = Instant::now();
    let _permit = match svc.admission().admit(limit, tx.closed()).await {
        Ok(p) => {
            metrics::histogram!(crate::metrics::QUEUE_WAIT).record(started.elapsed().as_secs_f64());
            p
        }
        Err(refused) => {
            match refused {
                Refusal::Busy => svc.runs().count(Count::BusyRejection),
                Refusal::Timeout(_) => {
                    crate::metrics::rejected("queue_timeout");
                    svc.runs().count(Count::RunTimedOut)
                }
                Refusal::ShuttingDown => crate::metrics::rejected("shutting_down"),
                Refusal::ClientGone => crate::metrics::rejected("client_gone"),
            }
            let error = refused.error(&agent.name, svc.admission());
            let _ = tx.send(ApiResponse::Error(error)).await;
            return;
        }
    };
    if let Some(c) = &conversation {
        announce.push(RunEvent::Conversation {
            id: c.id.clone(),
            turn: c.turn,
            agent: agent.name.clone(),
        });
    }
    let run_id = svc.runs().start_run(&agent.name);
    let run_started = Instant::now();
    let lineage = Lineage::root(&agent);
    let replay = req.replay.clone();
    let log = conversation
        .as_ref()
        .map(|c| Arc::new(conversations::Log::new(c, &run_id, &req.input)));
    let sink = Sink::root(tx.clone(), req.hide_children, log.clone());
    let account = TreeAccount::default();
    let mut finishing = None;
    // Every log line of the run, here and in what it calls, carries its run id and agent.
    let span = tracing::info_span!("run", run_id = %run_id, agent = %agent.name, trace_id = tracing::field::Empty);
    let caller_trace = req.traceparent.as_deref().and_then(TraceParent::parse);
    let run_span = RunSpan::start(
        &agent,
        &run_id,
        conversation.as_ref().map(|c| c.id.as_str()),
        caller_trace.as_ref(),
        &span,
    );
    let run = Run {
        svc: &svc,
        agent: &agent,
        run_id: &run_id,
        lineage: &lineage,
        sink: &sink,
        account: &account,
        limit,
        deadline: started + limit,
        history: conversation.as_ref().map_or(&[], |c| &c.history),
        announce: &announce,
        settle_to: None,
        replay: replay.as_ref(),
        span: &run_span,
    };
    async {
        let terminal = drive_worker(run, req, &mut finishing).await;
        run_span.end(&terminal);
        // The conversation has the run before the client has its answer: the next message sees it.
        if let Some(log) = &log {
            let holder = account.handed_to().unwrap_or_else(|| agent.name.clone());
            log.finish(&svc, &terminal, &holder).await;
        }
        svc.runs().record_ended(&agent.name, &terminal, run_started);
        if let RunEvent::Failed { error, .. } = &terminal {
            tracing::warn!(kind = %error.kind.as_str(), "run failed: {}", error.message);
        }
        // A client that stopped reading must not hold the slot: the relay gives up on it after
        // CLIENT_WRITE_TIMEOUT and drops the receiver, which ends this send too.
        let _ = tx.send(ApiResponse::Event(terminal)).await;
        // The client has its answer; now the worker exits and is reaped (its slot is held until then).
        if let Some(worker) = finishing {
            worker.reap().await;
        }
    }
    .instrument(span)
    .await;
}

/// A worker that sent its terminal event and still has to exit.
struct Finishing<'a> {
    child: ManagedChild,
    /// Keeps the run in the status table until the worker is gone.
    _registered: Registered<'a>,
}

impl Finishing<'_> {
    async fn reap(self) {
        reap(self.child).await;
    }
}

/// Waits [`EXIT_GRACE`] for a worker that sent its terminal event to exit, then kills it.
async fn reap(mut child: ManagedChild) {
    if tokio::time::timeout(EXIT_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill_and_wait().await;
    }
}

/// A run's grant with a service, revoked when dropped (the run ended, however it ended).
struct GrantGuard {
    link: GrantLink,
    token: String,
}

#[derive(Clone)]
enum GrantLink {
    Toolhost(Arc<Link<ToolhostProtocol>>),
    Memory(Arc<Link<MemoryProtocol>>),
}

impl GrantLink {
    fn socket(&self) -> &std::path::Path {
        match self {
            GrantLink::Toolhost(link) => link.socket(),
            GrantLink::Memory(link) => link.socket(),
        }
    }

    async fn revoke(self, token: String) -> Result<(), ServiceError> {
        match self {
            GrantLink::Toolhost(link) => {
                let req = ToolhostRequest::RevokeRun { token };
                link.request(&req, GRANT_TIMEOUT).await.map(drop)
            }
            GrantLink::Memory(link) => {
                let req = MemoryRequest::Revoke { token };
                link.request(&req, GRANT_TIMEOUT).await.map(drop)
            }
        }
    }
}

impl Drop for GrantGuard {
    fn drop(&mut self) {
        let revoke = self.link.clone().revoke(std::mem::take(&mut self.token));
        tokio::spawn(
            async move {
                if let Err(e) = revoke.await {
                    tracing::debug!(error = %e, "revoking a run's grant failed (the service restarted?)");
                }
            }
            .instrument(tracing::Span::current()),
        );
    }
}

/// Deadline of registering or revoking a run's grant.
const GRANT_TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh random token for a run's grant.
fn new_token(what: &str) -> Result<String, ErrorBody> {
    random_hex().map_err(|e| {
        ErrorBody::new(
            ErrorKind::Internal,
            format!("no randomness for a {what} token: {e}"),
        )
    })
}

/// Registers the run's toolhost grant (its agent's tools, providers and budget) under a fresh
/// random token, which only this run's worker receives.
async fn grant_toolhost(
    svc: &Service,
    agent: &AgentSpec,
    run_id: &str,
    settle_to: Option<&SettleTo>,
) -> Result<GrantGuard, ErrorBody> {
    let token = new_token("toolhost")?;
    let grant = RunGrant {
        agent: agent.name.clone(),
        run_id: run_id.to_string(),
        tools: agent.tools.clone(),
        providers: std::iter::once(&agent.llm.provider)
            .chain(&agent.llm.fallback)
            .cloned()
            .collect(),
        max_tool_calls: agent.limits.max_tool_calls,
        max_tokens: agent.limits.max_tokens,
        max_cost_usd: agent.limits.max_cost_usd,
        read_only: false,
        settle_to: settle_to.cloned(),
        model: agent.llm.model.clone(),
    };
    let link = svc.toolhost_grants().clone();
    let req = ToolhostRequest::RegisterRun {
        token: token.clone(),
        grant,
    };
    match link.request(&req, GRANT_TIMEOUT).await {
        Ok(ToolhostResponse::Ok) => Ok(GrantGuard {
            link: GrantLink::Toolhost(link),
            token,
        }),
        Ok(ToolhostResponse::Error(e)) => Err(e),
        Ok(other) => Err(ErrorBody::new(
            ErrorKind::Toolhost,
            format!("unexpected answer to a run's registration: {other:?}"),
        )),
        Err(e) => Err(ErrorBody::new(
            ErrorKind::Toolhost,
            format!("cannot register the run with the toolhost: {e}"),
        )),
    }
}

/// For an agent with `[memory] enabled`, registers the run's grant (the scopes its `[memory]`
/// allows) under a fresh random token, which only this run's worker receives.
async fn grant_memory(
    svc: &Service,
    agent: &AgentSpec,
    run_id: &str,
) -> Result<Option<GrantGuard>, ErrorBody> {
    if !agent.memory.enabled {
        return Ok(None);
    }
    let link = svc.memory_grants()?.clone();
    let token = new_token("memory")?;
    let req = MemoryRequest::Register {
        token: token.clone(),
        grant: agent.memory.grant(&agent.name, run_id),
    };
    match link.request(&req, GRANT_TIMEOUT).await {
        Ok(MemoryResponse::Error(e)) => Err(e),
        Ok(_) => Ok(Some(GrantGuard {
            link: GrantLink::Memory(link),
            token,
        })),
        Err(e) => Err(ErrorBody::new(ErrorKind::Memory, e.to_string())),
    }
}

/// 128 random bits, hex (run tokens, conversation ids).
pub fn random_hex() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why talking to the worker stopped before its terminal event.
enum Broken {
    /// The pipe broke or carried garbage: the worker died or misbehaved.
    Worker(FrameError),
    /// The client went away.
    ClientGone,
    /// The drain stopped waiting.
    Aborted(Abort),
}

/// The supervisor's side of a worker session: the worker's stdout to read, its stdin to write.
type WorkerConn = AsyncClient<WorkerProtocol, ChildStdout, ChildStdin>;

/// Time a worker gets to end its run after `Stop` before its process group is killed.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Resolves `fut`, unless the drain stops waiting first.
async fn unless_aborted<T>(svc: &Service, fut: impl Future<Output = T>) -> Result<T, Abort> {
    tokio::select! {
        t = fut => Ok(t),
        abort = svc.admission().aborted() => Err(abort),
    }
}

/// One run as the supervisor drives it: a root run a client started, or a delegated child.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub svc: &'a Service,
    pub agent: &'a Arc<AgentSpec>,
    pub run_id: &'a str,
    pub lineage: &'a Lineage,
    /// Where its events go.
    pub sink: &'a Sink,
    /// Its descendants' usage and its own per model.
    pub account: &'a TreeAccount,
    /// Its wall-clock limit, and when it passes.
    pub limit: Duration,
    pub deadline: Instant,
    /// What it is given of its conversation's earlier runs.
    pub history: &'a [ChatMessage],
    /// Events sent right after `Started`: a root run's routing and conversation.
    pub announce: &'a [RunEvent],
    /// A delegated run: where the toolhost settles its spending when its grant ends.
    pub settle_to: Option<&'a SettleTo>,
    /// The root's recording when the tree is replayed (children are answered from it).
    pub replay: Option<&'a caxton_ipc::recording::Recording>,
    /// Its span in the run's trace (the worker's spans are relayed into it).
    pub span: &'a crate::run_span::RunSpan,
}

/// A run's future as a `dyn` one: a run's future contains its children's, so its type would
/// otherwise contain itself.
pub type ChildFuture<'a> = Pin<Box<dyn Future<Output = RunEvent> + Send + 'a>>;

/// Runs a delegated child to its terminal event (its events go to its sink). Its worker is
/// reaped in the background, so the parent has the answer without waiting for the exit; the
/// run leaves the status table now.
pub fn drive_child(run: Run<'_>, req: RunRequest) -> ChildFuture<'_> {
    Box::pin(async move {
        let mut finishing = None;
        let terminal = drive_worker(run, req, &mut finishing).await;
        if let Some(Finishing { child, _registered }) = finishing {
            tokio::spawn(reap(child));
        }
        terminal
    })
}

/// Runs the job in a worker and returns the terminal event (its usage completed with the
/// run's descendants'). On success the worker is left in `finishing`, to be reaped after the
/// answer has gone out.
async fn drive_worker<'a>(
    run: Run<'a>,
    req: RunRequest,
    finishing: &mut Option<Finishing<'a>>,
) -> RunEvent {
    let mut terminal = drive_worker_inner(run, req, finishing).await;
    if let RunEvent::Failed { usage, .. } | RunEvent::Finished { usage, .. } = &mut terminal {
        run.account.complete(&run.agent.name, usage);
    }
    terminal
}

async fn drive_worker_inner<'a>(
    run: Run<'a>,
    req: RunRequest,
    finishing: &mut Option<Finishing<'a>>,
) -> RunEvent {
    let Run {
        svc,
        agent,
        run_id,
        limit,
        deadline,
        ..
    } = run;
    let failed = |kind, message: String| RunEvent::Failed {
        run_id: run_id.to_string(),
        error: ErrorBody::new(kind, message),
        usage: RunUsage::default(),
    };
    let aborted = |abort: Abort| failed(ErrorKind::ShuttingDown, abort.message(&agent.name));
    let granted =
        match unless_aborted(svc, grant_toolhost(svc, agent, run_id, run.settle_to)).await {
            Ok(granted) => granted
                .map_err(|e| failed(e.kind, format!("agent `{}`: {}", agent.name, e.message))),
            Err(abort) => Err(aborted(abort)),
        };
    let toolhost = match granted {
        Ok(t) => t,
        Err(event) => {
            // No grant will settle a delegated run's reservation: give it back now.
            if let Some(to) = run.settle_to {
                delegation::release(svc, to).await;
            }
            return event;
        }
    };
    let memory = match unless_aborted(svc, grant_memory(svc, agent, run_id)).await {
        Err(abort) => return aborted(abort),
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            return failed(
                e.kind,
                format!(
                    "agent `{}` has [memory] enabled, but {}",
                    agent.name, e.message
                ),
            );
        }
    };
    let job = WorkerJob {
        memory: memory.as_ref().map(|g| MemoryAccess {
            socket: g.link.socket().display().to_string(),
            token: g.token.clone(),
        }),
        toolhost_token: toolhost.token.clone(),
        run_id: run_id.to_string(),
        agent: (**agent).clone(),
        input: req.input,
        vars: req.vars,
        toolhost_socket: svc.toolhost().socket().display().to_string(),
        deadline: Monotonic::after(deadline.saturating_duration_since(Instant::now())),
        stream: req.stream,
        record: req.record,
        replay: req.replay,
        delegation_tools: crate::delegation::tools_for(svc, agent),
        history: run.history.to_vec(),
        trace: run.span.job_trace(),
    };
    let start = unless_aborted(
        svc,
        tokio::time::timeout_at(deadline.into(), start_worker(svc, &job)),
    );
    let (mut child, mut conn) = match start.await {
        Err(abort) => return aborted(abort),
        Ok(started) => match started {
            Ok(Ok(started)) => started,
            Ok(Err(StartError::Spawn(e))) => {
                return failed(
                    ErrorKind::Internal,
                    format!("agent `{}`: {e}: {}", agent.name, e.source),
                );
            }
            Ok(Err(StartError::HandOver(mut child, err))) => {
                return crash_report(svc, agent, run_id, &mut child, err.to_string()).await;
            }
            Err(_) => {
                svc.runs().count(Count::RunTimedOut);
                return failed(
                    ErrorKind::Timeout,
                    format!(
                        "agent `{}`: no worker took the job within {}ms",
                        agent.name,
                        limit.as_millis()
                    ),
                );
            }
        },
    };
    let _registered = svc.runs().register(
        run_id,
        &agent.name,
        run.lineage.parent_run_id.as_deref(),
        child.pid,
    );
    tracing::debug!(pid = child.pid, "worker took the job");
    let started = RunEvent::Started {
        run_id: run_id.to_string(),
        agent: agent.name.clone(),
        worker_pid: child.pid,
    };
    if run.sink.send(started).await.is_err() {
        let _ = child.kill_and_wait().await;
        return failed(ErrorKind::Cancelled, "the client went away".into());
    }
    for event in run.announce {
        if run.sink.send(event.clone()).await.is_err() {
            let _ = child.kill_and_wait().await;
            return failed(ErrorKind::Cancelled, "the client went away".into());
        }
    }
    let token = toolhost.token.clone();
    let work = async {
        tokio::select! {
            r = relay(run, &mut conn, &token, req.record) => r,
            () = run.sink.closed() => Err(Broken::ClientGone),
            abort = svc.admission().aborted() => Err(Broken::Aborted(abort)),
        }
    };
    let outcome = tokio::time::timeout_at(deadline.into(), work).await;
    let mut terminal = match outcome {
        Ok(Ok(terminal)) => {
            *finishing = Some(Finishing { child, _registered });
            terminal
        }
        Ok(Err(Broken::ClientGone)) => {
            let stopped = stop_worker(&mut conn, &mut child, "the client went away").await;
            tracing::info!(worker = %stopped.how(), "client went away; run stopped");
            with_usage(
                failed(
                    ErrorKind::Cancelled,
                    "the client went away; the run was cancelled".into(),
                ),
                stopped.usage,
            )
        }
        Ok(Err(Broken::Aborted(abort))) => {
            let stopped = stop_worker(&mut conn, &mut child, "the service is shutting down").await;
            with_usage(aborted(abort), stopped.usage)
        }
        Ok(Err(Broken::Worker(err))) => {
            crash_report(svc, agent, run_id, &mut child, err.to_string()).await
        }
        Err(_) => {
            let stopped = stop_worker(&mut conn, &mut child, "its wall-clock limit passed").await;
            svc.runs().count(Count::RunTimedOut);
            with_usage(
                failed(
                    ErrorKind::Timeout,
                    format!(
                        "agent `{}` did not finish within {}ms (its wall-clock limit); worker pid {} {}",
                        agent.name,
                        limit.as_millis(),
                        child.pid,
                        stopped.how()
                    ),
                ),
                stopped.usage,
            )
        }
    };
    // A failure the supervisor reports itself still says what the run used until then.
    if let RunEvent::Failed { usage, .. } = &mut terminal
        && *usage == RunUsage::default()
    {
        *usage = svc.runs().live_usage(run_id);
    }
    terminal
}

/// `event` (a failure) with `usage` as what the run used.
fn with_usage(mut event: RunEvent, used: RunUsage) -> RunEvent {
    if let RunEvent::Failed { usage, .. } = &mut event {
        *usage = used;
    }
    event
}

/// Why no worker could take a job.
enum StartError {
    Spawn(spawn::SpawnError),
    /// A freshly spawned worker did not accept the job.
    HandOver(Box<ManagedChild>, HandshakeError),
}

/// A worker that has accepted `job`: a pre-spawned one if it takes it, else a freshly spawned one
/// (a ready worker may have died while waiting; it is discarded, never given the run).
async fn start_worker(
    svc: &Service,
    job: &WorkerJob,
) -> Result<(ManagedChild, WorkerConn), StartError> {
    let mut ready = svc.warm().take().map_err(StartError::Spawn)?;
    // A ready worker answers at once; one that does not (stopped, wedged) is replaced rather
    // than allowed to spend the run's time.
    match tokio::time::timeout(READY_HANDOVER_TIMEOUT, hand_over(&mut ready, job)).await {
        Ok(Ok(conn)) => return Ok((ready, conn)),
        Ok(Err(e)) => {
            tracing::info!(pid = ready.pid, error = %e, "a ready worker could not take the job; starting a fresh one");
            let _ = ready.kill_and_wait().await;
        }
        Err(_) => {
            tracing::info!(
                pid = ready.pid,
                timeout_ms = READY_HANDOVER_TIMEOUT.as_millis() as u64,
                "a ready worker did not take the job in time; starting a fresh one"
            );
            let _ = ready.kill_and_wait().await;
        }
    }
    let mut fresh = svc.warm().spawn_now().map_err(StartError::Spawn)?;
    match hand_over(&mut fresh, job).await {
        Ok(conn) => Ok((fresh, conn)),
        Err(e) => Err(StartError::HandOver(Box::new(fresh), e)),
    }
}

/// Opens the session on the worker's stdin and stdout with the job right behind the hello.
/// stdin stays open for the run.
async fn hand_over(
    child: &mut ManagedChild,
    job: &WorkerJob,
) -> Result<WorkerConn, HandshakeError> {
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(HandshakeError::Frame(FrameError::Closed));
    };
    let job = ToWorker::Job(Box::new(job.clone()));
    WorkerConn::connect_with(stdout, stdin, Role::Supervisor, &job).await
}

/// The delegations of one turn in progress, and the id of the request they answer.
type Batch<'a> = Pin<Box<dyn Future<Output = (u64, Vec<DelegationResult>)> + Send + 'a>>;

/// Relays the worker's events to the client until its terminal event, which is returned, and
/// answers its requests; the run's live usage (for `caxton status`) follows the events. A
/// turn's delegations run while the worker's frames keep being read, so a worker that dies
/// meanwhile is noticed at once (and its children are dropped, which kills them).
async fn relay(
    run: Run<'_>,
    conn: &mut WorkerConn,
    toolhost_token: &str,
    record: bool,
) -> Result<RunEvent, Broken> {
    let Run { svc, run_id, .. } = run;
    let (reader, writer) = (&mut conn.reader, &mut conn.writer);
    // Frames are read by their own future into a channel: a frame read is not cancel-safe,
    // and the loop below also waits for the delegations.
    let (frames_tx, mut frames) = mpsc::channel(8);
    let pump = async move {
        loop {
            let got = reader.recv().await;
            let end = got.is_err();
            if frames_tx.send(got).await.is_err() || end {
                break;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::pin!(pump);
    let mut batch: Option<Batch<'_>> = None;
    loop {
        tokio::select! {
            () = &mut pump => {}
            got = frames.recv() => {
                let got = got.unwrap_or(Err(FrameError::Closed));
                match got.map_err(Broken::Worker)? {
                    FromWorker::Event(event) => {
                        if event.is_terminal() {
                            return Ok(event);
                        }
                        svc.runs().count_event(run_id, &event);
                        run.account.own_event(&event);
                        run.sink.send(event).await.map_err(|_| Broken::ClientGone)?;
                    }
                    FromWorker::Spans(spans) => run.span.relay(spans),
                    FromWorker::Request { id, request: WorkerRequest::Delegate { calls } } => {
                        if batch.is_some() {
                            let reply = SupervisorReply::Refused {
                                reason: "a turn's delegations are one request, and one is in progress".into(),
                            };
                            writer.send(&ToWorker::Reply { id, reply }).await.map_err(Broken::Worker)?;
                            continue;
                        }
                        let parent = Parent {
                            run,
                            toolhost_token,
                            turns_used: svc.runs().live_usage(run_id).turns,
                            record,
                        };
                        batch = Some(Box::pin(async move {
                            (id, delegation::run_batch(&parent, calls).await)
                        }));
                    }
                }
            }
            (id, results) = async { batch.as_mut().expect("guarded by the branch's condition").await }, if batch.is_some() => {
                batch = None;
                let reply = SupervisorReply::Delegated { results };
                writer.send(&ToWorker::Reply { id, reply }).await.map_err(Broken::Worker)?;
            }
        }
    }
}

/// How a worker left after `Stop`.
struct Stopped {
    /// What the worker reported it used (default when it said nothing).
    usage: RunUsage,
    /// It ended its run itself; otherwise it was killed after [`STOP_GRACE`].
    graceful: bool,
}

impl Stopped {
    fn how(&self) -> String {
        if self.graceful {
            "was stopped".to_string()
        } else {
            format!(
                "did not stop within {}ms and was killed",
                STOP_GRACE.as_millis()
            )
        }
    }
}

/// Asks the worker to stop, waits [`STOP_GRACE`] for its terminal event, then kills its process
/// group.
async fn stop_worker(conn: &mut WorkerConn, child: &mut ManagedChild, reason: &str) -> Stopped {
    let ended = async {
        conn.send(&ToWorker::Stop {
            reason: reason.to_string(),
        })
        .await
        .ok()?;
        loop {
            if let FromWorker::Event(e) = conn.recv().await.ok()?
                && e.is_terminal()
            {
                return Some(e);
            }
        }
    };
    let terminal = tokio::time::timeout(STOP_GRACE, ended).await.ok().flatten();
    let _ = child.kill_and_wait().await;
    match terminal {
        Some(RunEvent::Failed { usage, .. } | RunEvent::Finished { usage, .. }) => Stopped {
            usage,
            graceful: true,
        },
        _ => Stopped {
            usage: RunUsage::default(),
            graceful: false,
        },
    }
}

/// The terminal event for a worker that died or broke the protocol: how it ended and its stderr.
async fn crash_report(
    svc: &Service,
    agent: &AgentSpec,
    run_id: &str,
    child: &mut ManagedChild,
    err: String,
) -> RunEvent {
    let failed = |kind, message: String| RunEvent::Failed {
        run_id: run_id.to_string(),
        error: ErrorBody::new(kind, message),
        usage: RunUsage::default(),
    };
    let (how, signal) = match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
        Ok(Ok(status)) => (
            spawn::describe_exit(&status),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ),
        Ok(Err(e)) => (format!("could not be waited for ({e})"), None),
        Err(_) => {
            let _ = child.kill_and_wait().await;
            (
                format!("stopped speaking the protocol ({err}) and was killed"),
                None,
            )
        }
    };
    let stderr = child.stderr_tail().await;
    let how = match limit_hit(signal, &stderr, &agent.limits) {
        Some(limit) => format!("exceeded its {limit} and {how}"),
        None => how,
    };
    if let Some(abort) = svc.admission().aborting() {
        return failed(ErrorKind::ShuttingDown, abort.message(&agent.name));
    }
    svc.runs().count(Count::WorkerCrashed);
    let tail = if stderr.is_empty() {
        String::new()
    } else {
        format!("; last stderr:\n{}", last_lines(&stderr, 10))
    };
    failed(
        ErrorKind::WorkerCrashed,
        format!(
            "agent `{}`: worker (pid {}) {how} before finishing the run{tail}",
            agent.name, child.pid
        ),
    )
}

/// The resource limit a dead worker ran into, named with its value and where it is set, from
/// how it ended: SIGXCPU is the CPU-time limit; an allocation failure (Rust aborts with "memory
/// allocation of N bytes failed") is the address-space limit; "Too many open files" is the
/// descriptor limit.
fn limit_hit(signal: Option<i32>, stderr: &str, limits: &LimitsSpec) -> Option<String> {
    if signal == Some(nix::sys::signal::Signal::SIGXCPU as i32) {
        return Some(format!(
            "CPU-time limit ({}s, [limits] cpu_time or [workers] cpu_time)",
            limits.cpu_time_ms.div_ceil(1000)
        ));
    }
    if stderr.contains("memory allocation of") {
        return Some(format!(
            "memory limit ({} MiB of address space, [limits] memory_mb or [workers] memory_mb)",
            limits.memory_mb
        ));
    }
    if stderr.contains("Too many open files") {
        return Some(format!(
            "open-file limit ({} descriptors, [limits] open_files or [workers] open_files)",
            limits.open_files
        ));
    }
    None
}

/// The most telling `n` lines of a crashed worker's stderr: from its panic message if it has one
/// (a backtrace would otherwise push the message out), else the last lines.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<_> = text.lines().collect();
    let start = match lines.iter().rposition(|l| l.contains("panicked at")) {
        Some(i) => i,
        None => lines.len().saturating_sub(n),
    };
    lines[start..lines.len().min(start + n)].join("\n")
}
