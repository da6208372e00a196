//! WASM tool servers under wasmtime: one compiled module per server, a pool of live guest instances,
//! and the MCP request/response exchange over each guest's stdin/stdout pipes.
//!
//! Every guest runs in its own `Store` with its package's memory limit and epoch interruption (it
//! yields to the runtime every tick, so a runaway guest can be torn down, and a guest that computes
//! while no call is in progress is trapped); every call has a wall-clock deadline, after which the
//! guest is sent `notifications/cancelled` and the instance is discarded and replaced by a fresh
//! one on the next call. A guest sees only what its [`Policy`] grants: preopened directories,
//! environment values, and the `caxton_http` import for granted origins.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use wasmtime::{
    Config, Engine, InstancePre, Linker, Module, ResourceLimiter, Store, StoreLimits,
    StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::egress::{Egress, EgressError};
use crate::mcp::{self, ProtocolError, RpcError};
use crate::module_cache::{self, ModuleCache};
use crate::pipe::{GuestStdio, HostReader, HostWriter};
use crate::policy::Policy;
use caxton_ipc::error::Chain;
use caxton_ipc::toolhost::ToolSpec;

/// How often the epoch advances; a guest yields to the runtime at least this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Longest line a guest may write on stdout (one JSON-RPC message).
pub const MAX_GUEST_LINE: usize = 1024 * 1024;
/// Bytes of guest stderr kept (the most recent ones) for error messages.
pub const GUEST_STDERR_TAIL: usize = 4 * 1024;
/// Buffer of the in-memory stdio pipes.
const PIPE_BUF: usize = 64 * 1024;
/// Elements a guest's tables may grow to (function tables of real modules hold a few thousand).
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Deadline for a new instance to answer `initialize` and `tools/list`.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
/// Epoch ticks a guest may keep computing after answering before it is trapped (~100 ms).
pub const IDLE_COMPUTE_TICKS: u32 = 10;
/// Time a guest gets to read `notifications/cancelled` before its instance is discarded.
const CANCEL_GRACE: Duration = Duration::from_millis(50);
/// An instance whose linear memory grew past this is discarded after its call instead of kept idle:
/// dropping it gives the memory back (the `sql` tool may grow to 192 MiB for one query), and the
/// next call starts a fresh instance from the compiled code (well under a millisecond).
pub const POOL_MEMORY_MAX: u64 = 32 << 20;

/// Why the wasmtime runtime shared by every tool server cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the wasmtime engine")]
    Engine(#[source] wasmtime::Error),
    #[error("cannot add the WASI and caxton_http imports to the linker")]
    Linker(#[source] wasmtime::Error),
    #[error("cannot start the epoch ticker thread")]
    Ticker(#[source] std::io::Error),
}

/// Why a tool server cannot be loaded: its module, its HTTP capability or its first instance.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot compile tool server `{server}`")]
    Compile {
        server: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error("tool server `{server}` needs imports the toolhost does not provide")]
    Imports {
        server: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error(transparent)]
    Egress(#[from] EgressError),
    /// Its first instance failed to start or to list its tools.
    #[error("cannot start tool server `{server}`")]
    Start {
        server: String,
        #[source]
        source: WasmError,
    },
}

/// Why a call to a tool server (or the start of one of its instances) failed. Each names the
/// server; the instance that failed is discarded, except after a JSON-RPC error answer.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("tool package `{server}` is disabled: {problems}")]
    Disabled { server: String, problems: String },
    #[error("tool server `{server}` is at its concurrency limit ({limit} calls at once) and no call finished within {}ms; retry later", .waited.as_millis())]
    Busy {
        server: String,
        limit: u32,
        waited: Duration,
    },
    #[error("cannot instantiate tool server `{server}`: cannot open its granted directory {}", .dir.display())]
    Preopen {
        server: String,
        dir: PathBuf,
        #[source]
        source: wasmtime::Error,
    },
    #[error("tool server `{server}` did not answer within {}ms; the call was cancelled and the instance discarded{}", .after.as_millis(), stderr_suffix(.stderr))]
    Timeout {
        server: String,
        after: Duration,
        stderr: String,
    },
    /// The guest trapped (or could not be instantiated); the trap is the source.
    #[error("tool server `{server}` stopped: it trapped{}", stderr_note(.stderr))]
    Trapped {
        server: String,
        stderr: String,
        #[source]
        source: Trap,
    },
    #[error("tool server `{server}` stopped: it exited{}{}", .status.map(|s| format!(" with status {s}")).unwrap_or_default(), stderr_suffix(.stderr))]
    Exited {
        server: String,
        status: Option<i32>,
        stderr: String,
    },
    #[error("tool server `{server}` stopped: it closed its stdout{}", stderr_suffix(.stderr))]
    ClosedStdout { server: String, stderr: String },
    #[error("tool server `{server}` stopped: its task failed")]
    Task {
        server: String,
        #[source]
        source: Arc<tokio::task::JoinError>,
    },
    #[error("tool server `{server}` broke the protocol")]
    Protocol {
        server: String,
        #[source]
        source: ProtocolError,
    },
    #[error("tool server `{server}` answered with an error")]
    Rpc {
        server: String,
        #[source]
        source: RpcError,
    },
}

/// A guest's trap, shared so an instance reports the same one each time it is asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct Trap(Arc<dyn std::error::Error + Send + Sync>);

impl From<wasmtime::Error> for Trap {
    fn from(e: wasmtime::Error) -> Trap {
        Trap(Arc::from(e.into_boxed_dyn_error()))
    }
}

/// `; stderr: …` for a message that ends with it.
fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", stderr.trim())
    }
}

/// ` (stderr: …)` for a message followed by its cause.
fn stderr_note(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(" (stderr: {})", stderr.trim())
    }
}

/// Store data of one guest.
pub struct GuestState {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
    /// The package's name, for messages.
    pub server: String,
    /// Its HTTP capability (`None`: nothing granted).
    pub egress: Option<Arc<Egress>>,
    /// The last `caxton_http.fetch` response, until the guest takes it.
    pub http_response: Vec<u8>,
}

impl GuestState {
    /// Whether a call is in progress; outside one a guest may not use host services.
    pub fn in_call(&self) -> bool {
        self.limiter.flags.in_call.load(Ordering::Acquire)
    }

    /// The trace span of the call in progress (`None` when tracing is off).
    pub fn call_trace(&self) -> Option<caxton_ipc::trace::TraceParent> {
        *self
            .limiter
            .flags
            .trace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// What the toolhost and a running guest share: whether a call is in progress, and the peak
/// of its linear memory.
#[derive(Default)]
struct GuestFlags {
    in_call: AtomicBool,
    /// The trace span of the call in progress, for the `traceparent` of its HTTP requests.
    trace: Mutex<Option<caxton_ipc::trace::TraceParent>>,
    idle_ticks: AtomicU32,
    memory_peak: AtomicUsize,
}

/// The store's limits, recording the peak memory the guest asked for and got.
struct GuestLimiter {
    limits: StoreLimits,
    flags: Arc<GuestFlags>,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        if ok {
            self.flags.memory_peak.fetch_max(desired, Ordering::Relaxed);
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The answer of one tool call.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub text: String,
    pub is_error: bool,
    /// Linear memory of the instance that served it (its high-water mark), in bytes.
    pub memory_peak: u64,
}

/// The wasmtime engine, the WASI linker and the epoch ticker, shared by every tool server.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: Option<ModuleCache>,
}

impl WasmRuntime {
    /// The engine and linker; compiled modules are cached in `cache_dir` when it is private.
    pub fn new(cache_dir: &std::path::Path) -> Result<WasmRuntime, RuntimeError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(RuntimeError::Engine)?;
        let mut linker = Linker::new(&engine);
        p1::add_to_linker_async(&mut linker, |s: &mut GuestState| &mut s.wasi)
            .map_err(RuntimeError::Linker)?;
        crate::egress::add_to_linker(&mut linker).map_err(RuntimeError::Linker)?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                }
            })
            .map_err(RuntimeError::Ticker)?;
        let cache = ModuleCache::open(cache_dir, &engine)
            .inspect_err(|e| tracing::warn!(error = %Chain(e), "not using the module cache"))
            .ok();
        Ok(WasmRuntime {
            engine,
            linker,
            cache,
        })
    }

    /// Compiles a module, starts one instance under `policy` and asks it for its tools. A package
    /// whose policy has problems is compiled (so its module is checked) but serves no calls.
    pub async fn load(
        &self,
        name: &str,
        wasm: &[u8],
        policy: Policy,
    ) -> Result<Arc<ToolServer>, LoadError> {
        let started = Instant::now();
        let compiled = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, wasm),
            None => Module::new(&self.engine, wasm).map(|m| (m, module_cache::Origin::Compiled)),
        };
        let (module, origin) = compiled.map_err(|source| LoadError::Compile {
            server: name.into(),
            source,
        })?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|source| LoadError::Imports {
                server: name.into(),
                source,
            })?;
        let egress = Egress::new(name, &policy.http)?;
        let mut server = ToolServer {
            name: name.to_string(),
            pre,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(policy.max_concurrency as usize),
            policy,
            egress,
            tools: Vec::new(),
        };
        let (first, tools) = server
            .first_instance()
            .await
            .map_err(|source| LoadError::Start {
                server: name.into(),
                source,
            })?;
        server.tools = tools;
        server.lock_idle().push(first);
        tracing::info!(
            server = name,
            tools = server.tools.len(),
            load_us = started.elapsed().as_micros() as u64,
            cached = origin == module_cache::Origin::Cached,
            "tool server loaded"
        );
        Ok(Arc::new(server))
    }
}

fn parse_tools(server: &str, listed: &Value) -> Result<Vec<ToolSpec>, WasmError> {
    let protocol = |source: ProtocolError| WasmError::Protocol {
        server: server.into(),
        source,
    };
    let tools = listed
        .get("tools")
        .and_then(Value::as_array)
        .ok_or_else(|| protocol(ProtocolError::NoTools))?;
    tools
        .iter()
        .map(|t| {
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| protocol(ProtocolError::ToolWithoutName))?;
            Ok(ToolSpec {
                name: name.to_string(),
                description: t
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                input_schema: t
                    .get("inputSchema")
                    .cloned()
                    .unwrap_or(json!({"type": "object"}))
                    .to_string(),
                server: server.to_string(),
            })
        })
        .collect()
}

/// One tool server: a compiled module, its policy and its pool of live instances.
pub struct ToolServer {
    pub name: String,
    pre: InstancePre<GuestState>,
    idle: Mutex<Vec<GuestInstance>>,
    /// One permit per concurrent call (`policy.max_concurrency`).
    slots: Semaphore,
    pub policy: Policy,
    egress: Option<Arc<Egress>>,
    pub tools: Vec<ToolSpec>,
}

impl ToolServer {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<GuestInstance>> {
        // A poisoned pool only means a panic elsewhere while pushing/popping; the Vec is intact.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the first instance and asks it for its tools, each step within [`STARTUP_DEADLINE`].
    async fn first_instance(&self) -> Result<(GuestInstance, Vec<ToolSpec>), WasmError> {
        let timeout = || WasmError::Timeout {
            server: self.name.clone(),
            after: STARTUP_DEADLINE,
            stderr: String::new(),
        };
        let mut first = tokio::time::timeout(STARTUP_DEADLINE, self.start_instance())
            .await
            .map_err(|_| timeout())??;
        let listed = tokio::time::timeout(
            STARTUP_DEADLINE,
            first.request("tools/list", json!({}), STARTUP_DEADLINE),
        )
        .await
        .map_err(|_| timeout())??;
        let tools = parse_tools(&self.name, &listed)?;
        Ok((first, tools))
    }

    async fn start_instance(&self) -> Result<GuestInstance, WasmError> {
        metrics::counter!(crate::metrics::INSTANCE_STARTS, "package" => self.name.clone())
            .increment(1);
        let mut inst = GuestInstance::spawn(self)?;
        inst.request("initialize", mcp::initialize_params(), STARTUP_DEADLINE)
            .await?;
        inst.notify("notifications/initialized", json!({})).await?;
        Ok(inst)
    }

    /// Starts one instance (instantiate, `_start`, MCP `initialize`) and discards it: what a call
    /// pays when no pooled instance is idle. For the benchmarks.
    pub async fn probe_instance(&self) -> Result<(), WasmError> {
        self.start_instance().await.map(drop)
    }

    /// Calls `tool` with JSON `arguments` within `deadline` (capped by the package's timeout).
    pub async fn call(
        &self,
        tool: &str,
        arguments: Value,
        deadline: Duration,
    ) -> Result<CallOutcome, WasmError> {
        if !self.policy.problems.is_empty() {
            return Err(WasmError::Disabled {
                server: self.name.clone(),
                problems: self.policy.problems.join("; "),
            });
        }
        let deadline = deadline.min(self.policy.timeout);
        let ends = Instant::now() + deadline;
        // Beyond `max_concurrency` calls wait for a slot, but only within their own deadline.
        let _permit = match tokio::time::timeout_at(ends.into(), self.slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; a timeout means every slot stayed taken.
            Ok(Err(_)) | Err(_) => {
                return Err(WasmError::Busy {
                    server: self.name.clone(),
                    limit: self.policy.max_concurrency,
                    waited: deadline,
                });
            }
        };
        // An instance whose guest has stopped since its last call is never handed out.
        let pooled = loop {
            match self.lock_idle().pop() {
                Some(i) if i.task.is_finished() => continue,
                Some(i) => {
                    // In a call from now on: the idle-compute trap no longer applies.
                    i.flags.idle_ticks.store(0, Ordering::Relaxed);
                    i.flags.in_call.store(true, Ordering::Release);
                    break Some(i);
                }
                None => break None,
            }
        };
        let mut inst = match pooled {
            Some(i) => i,
            None => tokio::time::timeout_at(ends.into(), self.start_instance())
                .await
                .map_err(|_| WasmError::Timeout {
                    server: self.name.clone(),
                    after: deadline,
                    stderr: String::new(),
                })??,
        };
        *inst.flags.trace.lock().unwrap_or_else(|p| p.into_inner()) =
            caxton_telemetry::traces::current();
        let params = json!({"name": tool, "arguments": arguments});
        let left = ends.saturating_duration_since(Instant::now());
        let result = match inst.request("tools/call", params, left).await {
            // Report the call's whole deadline, not what was left of it after startup.
            Err(WasmError::Timeout { server, stderr, .. }) => Err(WasmError::Timeout {
                server,
                after: deadline,
                stderr,
            }),
            other => other,
        };
        let memory_peak = inst.memory_peak();
        // A JSON-RPC error leaves the instance healthy; anything else discards it (dropping an
        // instance aborts its guest). So does a memory that grew past POOL_MEMORY_MAX: a guest's
        // memory never shrinks, and idle it would hold that much of the toolhost's RSS.
        if matches!(result, Ok(_) | Err(WasmError::Rpc { .. })) && memory_peak <= POOL_MEMORY_MAX {
            self.lock_idle().push(inst);
        }
        let (text, is_error) = mcp::tool_result_text(&result?);
        Ok(CallOutcome {
            text,
            is_error,
            memory_peak,
        })
    }
}

/// A live guest: its stdin writer, stdout reader, stderr tail, and the task running `_start`.
struct GuestInstance {
    server: String,
    stdin: HostWriter,
    stdout: BufReader<HostReader>,
    stderr: Arc<Mutex<VecDeque<u8>>>,
    flags: Arc<GuestFlags>,
    task: JoinHandle<wasmtime::Result<()>>,
    /// How the guest's task ended, once `exited` has taken it from `task`.
    exit: Option<Exit>,
    stderr_task: JoinHandle<()>,
    next_id: u64,
}

impl Drop for GuestInstance {
    fn drop(&mut self) {
        self.task.abort();
        self.stderr_task.abort();
    }
}

impl GuestInstance {
    fn spawn(server: &ToolServer) -> Result<GuestInstance, WasmError> {
        let io = GuestStdio::new(PIPE_BUF);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(io.guest_stdin)
            .stdout(io.guest_stdout)
            .stderr(io.guest_stderr)
            .args(&[&server.name]);
        for dir in &server.policy.dirs {
            let perms = if dir.write {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|source| WasmError::Preopen {
                    server: server.name.clone(),
                    dir: dir.host.clone(),
                    source,
                })?;
        }
        for (key, value) in &server.policy.env {
            wasi.env(key, value);
        }
        let flags = Arc::new(GuestFlags {
            in_call: AtomicBool::new(true),
            ..GuestFlags::default()
        });
        let limits = StoreLimitsBuilder::new()
            .memory_size(server.policy.memory_mb as usize * 1024 * 1024)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .memories(1)
            .tables(4)
            .build();
        let state = GuestState {
            wasi: wasi.build_p1(),
            limiter: GuestLimiter {
                limits,
                flags: flags.clone(),
            },
            server: server.name.clone(),
            egress: server.egress.clone(),
            http_response: Vec::new(),
        };
        let mut store = Store::new(server.pre.module().engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        let watch = flags.clone();
        store.epoch_deadline_callback(move |_| {
            if watch.in_call.load(Ordering::Acquire) {
                return Ok(UpdateDeadline::Yield(1));
            }
            if watch.idle_ticks.fetch_add(1, Ordering::Relaxed) >= IDLE_COMPUTE_TICKS {
                wasmtime::bail!("the guest kept computing while no call was in progress");
            }
            Ok(UpdateDeadline::Yield(1))
        });
        let pre = server.pre.clone();
        let task = tokio::spawn(async move {
            let instance = pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_task = tokio::spawn(keep_tail(io.stderr, stderr.clone()));
        Ok(GuestInstance {
            server: server.name.clone(),
            stdin: io.stdin,
            stdout: BufReader::new(io.stdout),
            stderr,
            flags,
            task,
            exit: None,
            stderr_task,
            next_id: 0,
        })
    }

    fn memory_peak(&self) -> u64 {
        self.flags.memory_peak.load(Ordering::Relaxed) as u64
    }

    async fn notify(&mut self, method: &str, params: Value) -> Result<(), WasmError> {
        let mut line = mcp::notification(method, params);
        line.push('\n');
        self.send(line.as_bytes()).await
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), WasmError> {
        if self.stdin.write_all(bytes).await.is_err() {
            return Err(self.exited().await);
        }
        Ok(())
    }

    /// Sends one request and reads lines until its response, within `deadline`. When the deadline
    /// passes, the guest is sent `notifications/cancelled` (MCP) and given a moment to read it;
    /// the caller then discards the instance.
    async fn request(
        &mut self,
        method: &str,
        params: Value,
        deadline: Duration,
    ) -> Result<Value, WasmError> {
        self.next_id += 1;
        let id = self.next_id;
        self.flags.idle_ticks.store(0, Ordering::Relaxed);
        self.flags.in_call.store(true, Ordering::Release);
        let result = match tokio::time::timeout(deadline, self.exchange(id, method, params)).await {
            Ok(r) => r,
            Err(_) => {
                let cancel = json!({"requestId": id, "reason": format!("deadline of {}ms exceeded", deadline.as_millis())});
                let _ = tokio::time::timeout(
                    CANCEL_GRACE,
                    self.notify("notifications/cancelled", cancel),
                )
                .await;
                tokio::time::sleep(CANCEL_GRACE).await;
                Err(WasmError::Timeout {
                    server: self.server.clone(),
                    after: deadline,
                    stderr: self.stderr_tail(),
                })
            }
        };
        self.flags.in_call.store(false, Ordering::Release);
        result
    }

    async fn exchange(&mut self, id: u64, method: &str, params: Value) -> Result<Value, WasmError> {
        let mut line = mcp::request(id, method, params);
        line.push('\n');
        self.send(line.as_bytes()).await?;
        loop {
            let line = match caxton_ipc::json::read_line(&mut self.stdout, MAX_GUEST_LINE).await {
                Ok(Some(line)) => line,
                Ok(None) | Err(caxton_ipc::json::LineError::Io(_)) => {
                    return Err(self.exited().await);
                }
                Err(e @ caxton_ipc::json::LineError::TooLong { .. }) => {
                    return Err(WasmError::Protocol {
                        server: self.server.clone(),
                        source: ProtocolError::Line(e),
                    });
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match mcp::parse_line(&line) {
                Ok(mcp::Incoming::Response { id: got, result }) if got == id => {
                    return result.map_err(|source| WasmError::Rpc {
                        server: self.server.clone(),
                        source,
                    });
                }
                Ok(_) => continue,
                Err(source) => {
                    return Err(WasmError::Protocol {
                        server: self.server.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// The last bytes the guest wrote on stderr, lossily decoded, at most 1 KiB.
    fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let skip = tail.len().saturating_sub(1024);
        let bytes: Vec<u8> = tail.iter().skip(skip).copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Explains why the guest's pipes closed: its exit status or trap, and its stderr tail.
    async fn exited(&mut self) -> WasmError {
        // The task's outcome can be taken only once; a second failure reports the same one.
        let exit = match &self.exit {
            Some(exit) => exit.clone(),
            None => {
                let exit =
                    match tokio::time::timeout(Duration::from_millis(200), &mut self.task).await {
                        Ok(Ok(Ok(()))) => Exit::Status(None),
                        Ok(Ok(Err(e))) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                            Some(code) => Exit::Status(Some(code.0)),
                            None => Exit::Trapped(Trap::from(e)),
                        },
                        Ok(Err(join)) => Exit::Task(Arc::new(join)),
                        Err(_) => return self.closed_stdout(),
                    };
                self.exit = Some(exit.clone());
                exit
            }
        };
        // Give the stderr reader a moment to collect the guest's last words.
        tokio::task::yield_now().await;
        let (server, stderr) = (self.server.clone(), self.stderr_tail());
        match exit {
            Exit::Status(status) => WasmError::Exited {
                server,
                status,
                stderr,
            },
            Exit::Trapped(source) => WasmError::Trapped {
                server,
                stderr,
                source,
            },
            Exit::Task(source) => WasmError::Task { server, source },
        }
    }

    /// The guest closed its stdout but its task is still running.
    fn closed_stdout(&self) -> WasmError {
        WasmError::ClosedStdout {
            server: self.server.clone(),
            stderr: self.stderr_tail(),
        }
    }
}

/// How a guest's task ended.
#[derive(Clone)]
enum Exit {
    /// `_start` returned (`None`) or the guest called `exit` with a status.
    Status(Option<i32>),
    Trapped(Trap),
    /// The task panicked or was cancelled.
    Task(Arc<tokio::task::JoinError>),
}

/// Reads a guest's stderr until it closes, keeping the last [`GUEST_STDERR_TAIL`] bytes.
async fn keep_tail(mut from: HostReader, tail: Arc<Mutex<VecDeque<u8>>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.extend(&buf[..n]);
        let excess = tail.len().saturating_sub(GUEST_STDERR_TAIL);
        tail.drain(..excess);
    }
}
