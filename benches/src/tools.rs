//! Tool-call benchmarks, side by side in one run: the same `calc` tool called
//! - through the toolhost socket into a pooled WASM instance (what a worker does),
//! - as a native process MCP server over stdio (how desktop MCP clients run tools),
//! - in-process, parsing the same JSON-RPC line (the floor);
//!
//! plus instantiation per call (warm cache), the cold compile, and idle memory per loaded tool.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use caxton_ipc::connection::{Client, ToolhostProtocol};
use caxton_ipc::tool::ToolManifest;
use caxton_ipc::toolhost::{CallToolRequest, ToolhostRequest, ToolhostResponse};
use caxton_tests::repo_root;
use caxton_toolhost::policy::Policy;
use caxton_toolhost::wasm::WasmRuntime;

use crate::own_toolhost::{OwnToolhost, grant};
use crate::{ms, rss_kib, summary};

const SAMPLES: usize = 5000;
const WINDOW: Duration = Duration::from_secs(3);
const LINE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"calculate","arguments":{"expression":"2+3"}}}"#;

/// A worker's connection to the toolhost, attached to a run granted `calculate`.
struct Toolhost(Client<ToolhostProtocol, UnixStream>);

impl Toolhost {
    fn connect(host: &OwnToolhost) -> anyhow::Result<Toolhost> {
        Ok(Toolhost(host.worker(grant(&["calculate"], &[]))?))
    }

    fn call(&mut self) -> anyhow::Result<()> {
        let req = ToolhostRequest::CallTool(CallToolRequest {
            run_id: "bench".into(),
            agent: "bench".into(),
            tool: "calculate".into(),
            arguments: r#"{"expression":"2+3"}"#.into(),
            timeout_ms: 10_000,
        });
        match self.0.call(&req)? {
            ToolhostResponse::ToolOutput(o) if o.content == "5" => Ok(()),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
}

/// The `calc` server as a native child process speaking MCP over its stdin/stdout.
struct Stdio1 {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: String,
}

impl Stdio1 {
    fn start(binary: &std::path::Path) -> anyhow::Result<Stdio1> {
        let mut child = Command::new(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Stdio1 {
            child,
            stdin,
            stdout,
            line: String::new(),
        })
    }

    fn call(&mut self) -> anyhow::Result<()> {
        self.stdin.write_all(LINE.as_bytes())?;
        self.stdin.write_all(b"\n")?;
        self.stdin.flush()?;
        self.line.clear();
        self.stdout.read_line(&mut self.line)?;
        anyhow::ensure!(self.line.contains(r#""text":"5""#), "{}", self.line);
        Ok(())
    }
}

impl Drop for Stdio1 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn latencies(mut call: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..500 {
        call()?;
    }
    (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            call().map(|()| t.elapsed())
        })
        .collect()
}

/// Calls/s over `WINDOW` with `n` clients, each on its own thread with its own connection.
fn rate<C: Send>(
    n: usize,
    connect: impl Fn() -> anyhow::Result<C> + Sync,
    call: impl Fn(&mut C) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut clients = (0..n)
        .map(|_| connect())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    std::thread::scope(|s| {
        for c in clients.iter_mut() {
            let (done, stop, call) = (&done, &stop, &call);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    call(c).expect("call");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(WINDOW);
        stop.store(true, Ordering::Relaxed);
    });
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Builds the `calc` tool server natively (for the stdio comparison).
fn native_calc() -> anyhow::Result<std::path::PathBuf> {
    let tools = repo_root().join("tools");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "calc",
            "--manifest-path",
        ])
        .arg(tools.join("Cargo.toml"))
        .status()?;
    anyhow::ensure!(status.success(), "cannot build the native calc server");
    Ok(tools.join("target/release/calc"))
}

fn calc_package() -> (ToolManifest, &'static [u8]) {
    let (manifest, wasm) = caxton_toolhost::BUILTIN_PACKAGES[0];
    let manifest = ToolManifest::parse(manifest).expect("the calc manifest");
    assert_eq!(manifest.name, "calc");
    (manifest, wasm)
}

/// Cold compile, warm (cached) load, instantiation per call, and idle memory per loaded tool,
/// all measured in this process with the toolhost's own code.
fn wasm_internals() -> anyhow::Result<Internals> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cache = tempfile::tempdir()?;
    let (manifest, wasm) = calc_package();
    let policy = || Policy::resolve(&manifest, None, Duration::from_secs(10));
    rt.block_on(async {
        let runtime = WasmRuntime::new(&cache.path().join("modules"))?;
        let t = Instant::now();
        let server = runtime.load("calc", wasm, policy()).await?;
        let cold = t.elapsed();
        let t = Instant::now();
        let _again = runtime.load("calc", wasm, policy()).await?;
        let warm = t.elapsed();
        let mut inst = Vec::new();
        for _ in 0..1000 {
            let t = Instant::now();
            server.probe_instance().await?;
            inst.push(t.elapsed());
        }
        let mut direct = Vec::new();
        // CAXTON_BENCH_DIRECT_CALLS=N makes this loop longer, to profile it (perf record).
        let calls = std::env::var("CAXTON_BENCH_DIRECT_CALLS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(SAMPLES);
        for i in 0..(calls + 500) {
            let t = Instant::now();
            let out = server
                .call(
                    "calculate",
                    serde_json::json!({"expression": "2+3"}),
                    Duration::from_secs(10),
                )
                .await?;
            anyhow::ensure!(out.text == "5");
            if i >= 500 {
                direct.push(t.elapsed());
            }
        }
        let me = std::process::id();
        let before = rss_kib(me);
        let mut loaded = Vec::new();
        for i in 0..LOADED {
            loaded.push(runtime.load(&format!("calc{i}"), wasm, policy()).await?);
        }
        let after = rss_kib(me);
        Ok(Internals {
            cold,
            warm,
            instantiate: summary(inst),
            direct: summary(direct),
            per_tool_kib: (after.saturating_sub(before)) as f64 / LOADED as f64,
        })
    })
}

const LOADED: usize = 50;

struct Internals {
    cold: Duration,
    warm: Duration,
    instantiate: (Duration, Duration, Duration),
    /// `ToolServer::call` in-process: the WASM exchange without socket, framing or audit.
    direct: (Duration, Duration, Duration),
    per_tool_kib: f64,
}

/// Runs everything and returns the Markdown section.
/// The tool-call section, against a toolhost of its own (see `own_toolhost.rs`).
pub fn report() -> anyhow::Result<String> {
    let host = OwnToolhost::start("")?;
    let mut out = String::new();
    let native = native_calc()?;
    let floor_server = calc::server();
    let floor = latencies(|| {
        let reply = floor_server.handle(LINE, &mut calc::call).expect("a reply");
        anyhow::ensure!(reply.contains(r#""text":"5""#));
        Ok(())
    })?;
    let floor_rate = rate(
        1,
        || Ok(calc::server()),
        |s| {
            s.handle(LINE, &mut calc::call).expect("a reply");
            Ok(())
        },
    )?;
    let mut th = Toolhost::connect(&host)?;
    let wasm = latencies(|| th.call())?;
    let wasm_1 = rate(1, || Toolhost::connect(&host), Toolhost::call)?;
    let wasm_16 = rate(16, || Toolhost::connect(&host), Toolhost::call)?;
    let mut sp = Stdio1::start(&native)?;
    let stdio = latencies(|| sp.call())?;
    drop(sp);
    let stdio_1 = rate(1, || Stdio1::start(&native), Stdio1::call)?;
    let stdio_16 = rate(16, || Stdio1::start(&native), Stdio1::call)?;
    let internals = wasm_internals()?;

    let (f, w, s) = (summary(floor), summary(wasm), summary(stdio));
    out.push_str("\n## Tool calls: `calculate {\"expression\": \"2+3\"}` (µs)\n\n");
    out.push_str(
        "| path | samples | p50 | p99 | max | calls/s, 1 client | calls/s, 16 clients |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|\n");
    let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    out.push_str(&format!(
        "| in-process: the same JSON-RPC line handled by calc's code (floor) | {SAMPLES} | {} | {} | {} | {:.0} | |\n",
        us(f.0), us(f.1), us(f.2), floor_rate
    ));
    let d = internals.direct;
    out.push_str(&format!(
        "| in-process: the toolhost's `ToolServer::call` into a pooled WASM instance (no socket, no audit) | {SAMPLES} | {} | {} | {} | | |\n",
        us(d.0), us(d.1), us(d.2)
    ));
    out.push_str(&format!(
        "| **Caxton**: worker socket → toolhost → pooled WASM instance → back (audited) | {SAMPLES} | {} | {} | {} | {:.0} | {:.0} |\n",
        us(w.0), us(w.1), us(w.2), wasm_1, wasm_16
    ));
    out.push_str(&format!(
        "| native `calc` process, MCP over stdio pipes (desktop-client style) | {SAMPLES} | {} | {} | {} | {:.0} | {:.0} (16 processes) |\n",
        us(s.0), us(s.1), us(s.2), stdio_1, stdio_16
    ));
    out.push_str(&format!(
        "\nTargets: p99 < 1 ms (Caxton: {} ms); ≥ 100,000 calls/s aggregate (Caxton: {:.0}/s with 16 clients); ≥ 10× faster than the stdio server (Caxton's p50 is {:.2}× the stdio p50).\n",
        ms(w.1),
        wasm_16,
        s.0.as_secs_f64() / w.0.as_secs_f64()
    ));
    out.push_str("\n## WASM instances (ms)\n\n");
    out.push_str("| what | p50 | p99 | max | target |\n|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| load `calc`, cold: compile + first instance + MCP handshake | {} | | | |\n",
        ms(internals.cold)
    ));
    out.push_str(&format!(
        "| load `calc`, warm: compiled-code cache + first instance + MCP handshake | {} | | | < 100 (seed's startup) |\n",
        ms(internals.warm)
    ));
    let (p50, p99, max) = internals.instantiate;
    out.push_str(&format!(
        "| a fresh instance per call, cache warm: instantiate + `_start` + MCP `initialize` (1000 samples) | {} | {} | {} | < 1 |\n",
        ms(p50),
        ms(p99),
        ms(max)
    ));
    out.push_str(&format!(
        "\nIdle memory per loaded tool: {:.0} KiB RSS (calc loaded {LOADED} times in one process, each with its compiled code and one idle pooled instance; target < 1 MB).\n",
        internals.per_tool_kib
    ));
    Ok(out)
}
