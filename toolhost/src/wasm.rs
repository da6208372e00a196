//! WASM tool servers under wasmtime: one compiled module per server, a pool of live guest instances,
//! and the MCP request/response exchange over each guest's stdin/stdout pipes.
//!
//! Every guest runs in its own `Store` with a memory limit and epoch interruption (it yields to the
//! runtime every tick, so a runaway guest can be torn down); every call has a wall-clock deadline,
//! after which the instance is discarded and replaced by a fresh one on the next call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use wasmtime::{
    Config, Engine, InstancePre, Linker, Module, Store, StoreLimits, StoreLimitsBuilder,
    UpdateDeadline,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::mcp;
use crate::module_cache::{ModuleCache, Origin};
use caxton_ipc::toolhost::ToolSpec;

/// How often the epoch advances; a guest yields to the runtime at least this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Linear memory a guest may grow to.
pub const MAX_GUEST_MEMORY: usize = 64 * 1024 * 1024;
/// Longest line a guest may write on stdout (one JSON-RPC message).
pub const MAX_GUEST_LINE: usize = 1024 * 1024;
/// Bytes of guest stderr kept for error messages.
pub const GUEST_STDERR_CAP: usize = 16 * 1024;
/// Buffer of the in-memory stdio pipes.
const PIPE_BUF: usize = 64 * 1024;
/// Live instances of one tool server at most (= concurrent calls to it).
pub const MAX_INSTANCES_PER_SERVER: usize = 16;
/// Deadline for a new instance to answer `initialize` and `tools/list`.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(10);

/// Errors of one guest exchange or call.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("tool server `{server}` did not answer within {}ms; the instance was discarded", .after.as_millis())]
    Timeout { server: String, after: Duration },
    #[error("tool server `{server}` stopped: {detail}")]
    Exited { server: String, detail: String },
    #[error("tool server `{server}` broke the protocol: {detail}")]
    Protocol { server: String, detail: String },
    #[error("tool server `{server}` answered with an error: {message}")]
    Rpc { server: String, message: String },
    #[error("cannot instantiate tool server `{server}`: {detail}")]
    Instantiate { server: String, detail: String },
}

/// Store data of one guest.
pub struct GuestState {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// The wasmtime engine, the WASI linker and the epoch ticker, shared by every tool server.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: Option<ModuleCache>,
}

impl WasmRuntime {
    /// The engine and linker; compiled modules are cached in `cache_dir` when it is private.
    pub fn new(cache_dir: &std::path::Path) -> anyhow::Result<WasmRuntime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        p1::add_to_linker_async(&mut linker, |s: &mut GuestState| &mut s.wasi)?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                }
            })?;
        let cache = ModuleCache::open(cache_dir, &engine);
        Ok(WasmRuntime {
            engine,
            linker,
            cache,
        })
    }

    /// Compiles a module, starts one instance and asks it for its tools.
    pub async fn load(&self, name: &str, wasm: &[u8]) -> anyhow::Result<Arc<ToolServer>> {
        let started = Instant::now();
        let compiled = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, wasm),
            None => Module::new(&self.engine, wasm).map(|m| (m, Origin::Compiled)),
        };
        let (module, origin) =
            compiled.map_err(|e| anyhow::anyhow!("cannot compile tool server `{name}`: {e:#}"))?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| {
            anyhow::anyhow!(
                "tool server `{name}` needs imports the toolhost does not provide: {e:#}"
            )
        })?;
        let mut server = ToolServer {
            name: name.to_string(),
            pre,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(MAX_INSTANCES_PER_SERVER),
            tools: Vec::new(),
        };
        let mut first = tokio::time::timeout(STARTUP_DEADLINE, server.start_instance())
            .await
            .map_err(|_| GuestError::Timeout {
                server: name.into(),
                after: STARTUP_DEADLINE,
            })??;
        let listed = tokio::time::timeout(STARTUP_DEADLINE, first.request("tools/list", json!({})))
            .await
            .map_err(|_| GuestError::Timeout {
                server: name.into(),
                after: STARTUP_DEADLINE,
            })??;
        server.tools = parse_tools(name, &listed)?;
        server.lock_idle().push(first);
        tracing::info!(
            server = name,
            tools = server.tools.len(),
            load_us = started.elapsed().as_micros() as u64,
            cached = origin == Origin::Cached,
            "tool server loaded"
        );
        Ok(Arc::new(server))
    }
}

fn parse_tools(server: &str, listed: &Value) -> Result<Vec<ToolSpec>, GuestError> {
    let protocol = |detail: String| GuestError::Protocol {
        server: server.into(),
        detail,
    };
    let tools = listed
        .get("tools")
        .and_then(Value::as_array)
        .ok_or_else(|| protocol("tools/list result has no `tools` array".into()))?;
    tools
        .iter()
        .map(|t| {
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| protocol("a tool has no name".into()))?;
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

/// One tool server: a compiled module and its pool of live instances.
pub struct ToolServer {
    pub name: String,
    pre: InstancePre<GuestState>,
    idle: Mutex<Vec<GuestInstance>>,
    slots: Semaphore,
    pub tools: Vec<ToolSpec>,
}

impl ToolServer {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<GuestInstance>> {
        // A poisoned pool only means a panic elsewhere while pushing/popping; the Vec is intact.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn start_instance(&self) -> Result<GuestInstance, GuestError> {
        let mut inst = GuestInstance::spawn(&self.name, &self.pre)?;
        inst.request("initialize", mcp::initialize_params()).await?;
        inst.notify("notifications/initialized").await?;
        Ok(inst)
    }

    /// Calls `tool` with JSON `arguments`; returns the MCP result's text and its `isError` flag.
    pub async fn call(
        &self,
        tool: &str,
        arguments: Value,
        deadline: Duration,
    ) -> Result<(String, bool), GuestError> {
        let work = async {
            // Beyond MAX_INSTANCES_PER_SERVER calls wait here, within the call's deadline. The
            // semaphore is never closed, so acquiring cannot fail.
            let _permit = self.slots.acquire().await.map_err(|_| GuestError::Exited {
                server: self.name.clone(),
                detail: "its call slots were closed".into(),
            })?;
            // An instance whose guest has stopped since its last call is never handed out.
            let pooled = loop {
                match self.lock_idle().pop() {
                    Some(i) if i.task.is_finished() => continue,
                    other => break other,
                }
            };
            let mut inst = match pooled {
                Some(i) => i,
                None => self.start_instance().await?,
            };
            let result = inst
                .request("tools/call", json!({"name": tool, "arguments": arguments}))
                .await;
            // A JSON-RPC error leaves the instance healthy; anything else discards it.
            if matches!(result, Ok(_) | Err(GuestError::Rpc { .. })) {
                self.lock_idle().push(inst);
            }
            result
        };
        // Dropping `work` on timeout drops the instance it holds, which aborts the guest.
        let value =
            tokio::time::timeout(deadline, work)
                .await
                .map_err(|_| GuestError::Timeout {
                    server: self.name.clone(),
                    after: deadline,
                })??;
        Ok(mcp::tool_result_text(&value))
    }
}

/// A live guest: its stdin writer, stdout reader, and the task running `_start`.
struct GuestInstance {
    server: String,
    stdin: DuplexStream,
    stdout: BufReader<DuplexStream>,
    stderr: MemoryOutputPipe,
    task: JoinHandle<wasmtime::Result<()>>,
    next_id: u64,
}

impl Drop for GuestInstance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GuestInstance {
    fn spawn(server: &str, pre: &InstancePre<GuestState>) -> Result<GuestInstance, GuestError> {
        let (host_stdin, guest_stdin) = tokio::io::duplex(PIPE_BUF);
        let (guest_stdout, host_stdout) = tokio::io::duplex(PIPE_BUF);
        let stderr = MemoryOutputPipe::new(GUEST_STDERR_CAP);
        let wasi = WasiCtxBuilder::new()
            .stdin(AsyncStdinStream::new(guest_stdin))
            .stdout(AsyncStdoutStream::new(PIPE_BUF, guest_stdout))
            .stderr(stderr.clone())
            .args(&[server])
            .build_p1();
        let limits = StoreLimitsBuilder::new()
            .memory_size(MAX_GUEST_MEMORY)
            .instances(1)
            .build();
        let mut store = Store::new(pre.module().engine(), GuestState { wasi, limits });
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let pre = pre.clone();
        let task = tokio::spawn(async move {
            let instance = pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        });
        Ok(GuestInstance {
            server: server.to_string(),
            stdin: host_stdin,
            stdout: BufReader::new(host_stdout),
            stderr,
            task,
            next_id: 0,
        })
    }

    async fn notify(&mut self, method: &str) -> Result<(), GuestError> {
        let mut line = mcp::notification(method, json!({}));
        line.push('\n');
        self.send(line.as_bytes()).await
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), GuestError> {
        if self.stdin.write_all(bytes).await.is_err() {
            return Err(self.exited().await);
        }
        Ok(())
    }

    /// Sends one request and reads lines until its response.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, GuestError> {
        self.next_id += 1;
        let id = self.next_id;
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
                    return Err(GuestError::Protocol {
                        server: self.server.clone(),
                        detail: format!("stdout {e}"),
                    });
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match mcp::parse_line(&line) {
                Ok(mcp::Incoming::Response { id: got, result }) if got == id => {
                    return result.map_err(|message| GuestError::Rpc {
                        server: self.server.clone(),
                        message,
                    });
                }
                Ok(_) => continue,
                Err(detail) => {
                    return Err(GuestError::Protocol {
                        server: self.server.clone(),
                        detail,
                    });
                }
            }
        }
    }

    /// Explains why the guest's pipes closed: its exit status or trap, and its stderr tail.
    async fn exited(&mut self) -> GuestError {
        let outcome = match tokio::time::timeout(Duration::from_millis(200), &mut self.task).await {
            Ok(Ok(Ok(()))) => "exited".to_string(),
            Ok(Ok(Err(e))) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(code) => format!("exited with status {}", code.0),
                None => format!("trapped: {e:#}"),
            },
            Ok(Err(join)) => format!("its task failed: {join}"),
            Err(_) => "closed its stdout".to_string(),
        };
        let stderr = self.stderr.contents();
        let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(1024)..]);
        let detail = if tail.trim().is_empty() {
            outcome
        } else {
            format!("{outcome}; stderr: {}", tail.trim())
        };
        GuestError::Exited {
            server: self.server.clone(),
            detail,
        }
    }
}
