//! Backbone benchmarks against the real binaries, printed as a Markdown report.
//!
//! `cargo build --release --workspace --bins && cargo run --release -p caxton-benches > benches/RESULTS.md`
//!
//! Measures, side by side in one run: a bare spawn of `/bin/true` (the floor) against a worker's
//! spawn-to-ready; end-to-end `agent run` latency over the socket (scripted LLM, one WASM tool call);
//! throughput at concurrency 1, 8 and 64; idle memory of the service (supervisor + toolhost); and
//! tool calls (`tools.rs`): WASM through the toolhost against a native stdio MCP server and an
//! in-process call, instantiation per call, cold compile, and idle memory per loaded tool.

mod delegation;
mod faces;
mod local_llm;
mod memory;
mod metrics;
mod own_toolhost;
mod providers;
mod sql;
mod tools;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use caxton_ipc::agent::{AgentSpec, LimitsSpec, LlmSpec, MemorySpec};
use caxton_ipc::api::{ApiRequest, RunRequest, ServiceState};
use caxton_ipc::connection::{Client, Duplex, WorkerProtocol};
use caxton_ipc::handshake::Role;
use caxton_ipc::worker::{FromWorker, ToWorker, WorkerJob};
use caxton_tests::{Daemon, Options, bin};

const LATENCY_SAMPLES: usize = 2000;
const SPAWN_SAMPLES: usize = 1000;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Alternating blocks per mode: `BENCH_BLOCKS` (1 to `runs`) or `default` (more, shorter
/// blocks average out the machine's drift between them).
fn bench_blocks(default: usize, runs: usize) -> usize {
    std::env::var("BENCH_BLOCKS")
        .ok()
        .and_then(|b| b.parse().ok())
        .filter(|b| (1..=runs).contains(b))
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn summary(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        *v.last().expect("samples"),
    )
}

fn bare_spawn() -> Vec<Duration> {
    (0..SPAWN_SAMPLES)
        .map(|_| {
            let t = Instant::now();
            let status = Command::new("/bin/true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .expect("spawn /bin/true");
            assert!(status.success());
            t.elapsed()
        })
        .collect()
}

/// Spawn `caxton-worker`, hand it a job, and time until its `Welcome` arrives (it is ready to run).
fn worker_spawn_to_ready(toolhost_socket: &str) -> Vec<Duration> {
    let agent = AgentSpec {
        name: "bench".into(),
        version: "0".into(),
        description: String::new(),
        capabilities: vec![],
        tools: vec![],
        system_prompt: "s".into(),
        user_prompt_template: "{{request}}".into(),
        documentation: None,
        memory: MemorySpec::default(),
        parameters: Default::default(),
        llm: LlmSpec {
            provider: "scripted".into(),
            ..Default::default()
        },
        limits: LimitsSpec {
            max_turns: 2,
            max_tool_calls: 2,
            timeout_ms: 5000,
            tool_timeout_ms: 1000,
            max_tokens: None,
            max_cost_usd: None,
            memory_mb: 1024,
            cpu_time_ms: 60_000,
            open_files: 256,
        },
        delegation: Default::default(),
        source: "bench".into(),
    };
    let job = WorkerJob {
        run_id: "bench".into(),
        agent,
        input: "hi".into(),
        vars: Default::default(),
        toolhost_socket: toolhost_socket.into(),
        toolhost_token: "bench-no-token".into(),
        deadline: caxton_ipc::worker::Monotonic::after(Duration::from_secs(5)),
        stream: false,
        record: false,
        replay: None,
        memory: None,
        delegation_tools: vec![],
        history: vec![],
        trace: None,
    };
    (0..SPAWN_SAMPLES)
        .map(|_| {
            let t = Instant::now();
            let mut child = Command::new(bin("caxton-worker"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn caxton-worker");
            let io = Duplex {
                reader: child.stdout.take().expect("stdout"),
                writer: child.stdin.take().expect("stdin"),
            };
            // Spawned and answering its session: what a run waits for before its job starts.
            let mut session =
                Client::<WorkerProtocol, _>::connect(io, Role::Supervisor).expect("welcome");
            let elapsed = t.elapsed();
            session
                .send(&ToWorker::Job(Box::new(job.clone())))
                .expect("send the job");
            // Let it finish its run (the scripted echo, which fails without a toolhost) and reap it.
            loop {
                match session.recv() {
                    Ok(FromWorker::Event(e)) if e.is_terminal() => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            drop(session);
            child.wait().expect("wait worker");
            elapsed
        })
        .collect()
}

fn run_once(d: &Daemon) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut c = d.connect()?;
    c.send(&ApiRequest::Run(RunRequest::new(
        "calculator",
        "What is 6 * 7?",
    )))?;
    let out = c.collect_run()?;
    let elapsed = t.elapsed();
    anyhow::ensure!(
        out.answer() == Some("The result is 42."),
        "bad run: {out:?}"
    );
    Ok(elapsed)
}

fn throughput(d: &Daemon, concurrency: usize) -> (f64, u64, u64) {
    throughput_of(concurrency, || run_once(d))
}

/// Runs per second, runs done and runs failed with `concurrency` clients calling `run` in a loop
/// for [`THROUGHPUT_WINDOW`].
fn throughput_of(
    concurrency: usize,
    run: impl Fn() -> anyhow::Result<Duration> + Sync,
) -> (f64, u64, u64) {
    let done = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                while started.elapsed() < THROUGHPUT_WINDOW {
                    match run() {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    (n as f64 / secs, n, errors.load(Ordering::Relaxed))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The `load_us` the toolhost logged for the `calc` server on its latest start (compile or cache
/// load, first instance, MCP initialize and tools/list), and whether it came from the cache.
fn logged_load(d: &Daemon) -> Option<(u64, bool)> {
    let log = d.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("tool server loaded") && l.contains("calc"))?;
    let field = |name: &str| {
        line.split(name)
            .nth(1)?
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .map(str::to_string)
    };
    Some((
        field("load_us=")?.parse().ok()?,
        field("cached=")? == "true",
    ))
}

/// The example agents run on `local` (the embedded model); these benchmarks measure the backbone,
/// so `local` answers from the built-in scripted rules here.
const SCRIPTED_LOCAL: &str = "\n[providers.local]\nkind = \"scripted\"\n";

/// Starts a service on a fresh state directory (cold: compiles), then restarts it (warm: cache).
fn module_load_times() -> anyhow::Result<((u64, bool), (u64, bool))> {
    let mut d = Daemon::start(Options {
        agents: vec!["agents/calculator.toml".into()],
        rules: None,
        faults: false,
        extra_config: SCRIPTED_LOCAL.into(),
        env: vec![],
        local_model: false,
        // Measured as a user runs it: a module cache of its own.
        private_module_cache: true,
        socket_activated: false,
        bin_dir: None,
    })?;
    let cold = logged_load(&d).ok_or_else(|| anyhow::anyhow!("no load line in the log"))?;
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(30))?;
    d.restart()?;
    let warm = logged_load(&d).ok_or_else(|| anyhow::anyhow!("no load line in the log"))?;
    Ok((cold, warm))
}

fn main() -> anyhow::Result<()> {
    // `caxton-benches local` runs only the embedded LLM section (in-process, no daemon).
    if std::env::args().nth(1).as_deref() == Some("local") {
        print!("{}", local_llm::main(std::env::args().nth(2).as_deref())?);
        return Ok(());
    }
    // `caxton-benches memory` runs only the memory service section.
    if std::env::args().nth(1).as_deref() == Some("memory") {
        print!("{}", memory::report()?);
        return Ok(());
    }
    // `caxton-benches providers` runs only the LLM provider overhead section.
    if std::env::args().nth(1).as_deref() == Some("providers") {
        print!("{}", providers::report()?);
        return Ok(());
    }
    // `caxton-benches delegation` runs only the delegation and conversation section.
    if std::env::args().nth(1).as_deref() == Some("delegation") {
        print!("{}", delegation::report()?);
        return Ok(());
    }
    // `caxton-benches metrics` runs only what metrics and their scrapes cost.
    if std::env::args().nth(1).as_deref() == Some("metrics") {
        print!("{}", metrics::report()?);
        return Ok(());
    }
    // `caxton-benches faces` runs only the same run through each face (socket, HTTP, A2A, MCP).
    if std::env::args().nth(1).as_deref() == Some("faces") {
        print!("{}", faces::report()?);
        return Ok(());
    }
    // `caxton-benches sql` runs only the sql tool section.
    if std::env::args().nth(1).as_deref() == Some("sql") {
        print!("{}", sql::report()?);
        return Ok(());
    }
    // `caxton-benches tools` runs only the tool-call section (for quick experiments).
    if std::env::args().nth(1).as_deref() == Some("tools") {
        print!("{}", tools::report()?);
        return Ok(());
    }
    let (cold, warm) = module_load_times()?;
    anyhow::ensure!(
        !cold.1 && warm.1,
        "expected a compile then a cache hit, got {cold:?} {warm:?}"
    );
    let d = Daemon::start(Options {
        agents: vec!["agents/calculator.toml".into()],
        rules: None,
        faults: false,
        extra_config: format!(
            "[workers]\nmax_concurrent = 64\nqueue_capacity = 256\n{SCRIPTED_LOCAL}"
        ),
        env: vec![],
        local_model: false,
        // Measured as a user runs it: a module cache of its own.
        private_module_cache: true,
        socket_activated: false,
        bin_dir: None,
    })?;
    let toolhost_pid = match d.status()?.toolhost {
        ServiceState::Running { pid, .. } => pid,
        other => anyhow::bail!("toolhost not running: {other:?}"),
    };
    let memory_pid = match d.status()?.memory {
        Some(ServiceState::Running { pid, .. }) => pid,
        other => anyhow::bail!("memory service not running: {other:?}"),
    };
    // Idle memory, before any run.
    let idle_sup = rss_kib(d.pid());
    let idle_th = rss_kib(toolhost_pid);
    let idle_mem = rss_kib(memory_pid);

    for _ in 0..200 {
        run_once(&d)?;
    }
    let bare = summary(bare_spawn());
    let toolhost_socket = d
        .dir
        .path()
        .join("run/private/toolhost.sock")
        .display()
        .to_string();
    let worker = summary(worker_spawn_to_ready(&toolhost_socket));
    let e2e = summary(
        (0..LATENCY_SAMPLES)
            .map(|_| run_once(&d))
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let cli = summary(
        (0..200)
            .map(|_| {
                let t = Instant::now();
                let out = d.cli(&["agent", "run", "calculator", "--input", "What is 6 * 7?"]);
                assert!(out.status.success());
                t.elapsed()
            })
            .collect(),
    );
    let tputs: Vec<_> = [1, 8, 64].iter().map(|&c| (c, throughput(&d, c))).collect();
    let after_sup = rss_kib(d.pid());
    let after_th = rss_kib(toolhost_pid);
    let after_mem = rss_kib(memory_pid);
    let status = d.status()?;

    println!("# Benchmark results\n");
    println!(
        "Produced by `cargo build --release --workspace --bins && cargo run --release -p caxton-benches > benches/RESULTS.md`.\n"
    );
    println!("- date: {}", sh("date -u +%Y-%m-%dT%H:%MZ"));
    println!("- commit: {}", sh("git rev-parse --short HEAD"));
    println!(
        "- machine: {} cores, {}, {}",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("free -h | awk '/Mem:/{print $2}'")
    );
    println!("- kernel: {}; {}", sh("uname -r"), sh("rustc --version"));
    println!("- binaries: {}\n", bin("caxton").display());
    println!("## Latency (ms)\n");
    println!("| what | samples | p50 | p99 | max | target |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| bare spawn of `/bin/true` to exit (floor) | {SPAWN_SAMPLES} | {} | {} | {} | |",
        ms(bare.0),
        ms(bare.1),
        ms(bare.2)
    );
    println!(
        "| `caxton-worker` spawn to ready (its Welcome) | {SPAWN_SAMPLES} | {} | {} | {} | ≤ 3× floor: {:.1}× at p50 |",
        ms(worker.0),
        ms(worker.1),
        ms(worker.2),
        worker.0.as_secs_f64() / bare.0.as_secs_f64()
    );
    println!(
        "| end-to-end run over the socket (connect, fresh worker, 2 LLM calls, 1 WASM tool call, answer) | {LATENCY_SAMPLES} | {} | {} | {} | p50 ≤ 5, p99 ≤ 15 |",
        ms(e2e.0),
        ms(e2e.1),
        ms(e2e.2)
    );
    println!(
        "| the same through the `caxton agent run` CLI process | 200 | {} | {} | {} | |",
        ms(cli.0),
        ms(cli.1),
        ms(cli.2)
    );
    println!(
        "| toolhost loading the `calc` server, cold: compile + first instance + MCP handshake | 1 | {:.3} | | | |",
        cold.0 as f64 / 1000.0
    );
    println!(
        "| the same, warm: compiled-module cache + first instance + MCP handshake | 1 | {:.3} | | | < 100 (the seed's startup promise) |",
        warm.0 as f64 / 1000.0
    );
    println!(
        "\n## Throughput (completed runs/s, {}s window each)\n",
        THROUGHPUT_WINDOW.as_secs()
    );
    println!("| concurrency | runs/s | completed | errors | target |");
    println!("|---|---|---|---|---|");
    for (c, (rate, n, errors)) in &tputs {
        println!("| {c} | {rate:.0} | {n} | {errors} | ≥ 1000, no errors |");
    }
    println!("\n## Memory (RSS, MiB)\n");
    println!("| process | idle after start | after the runs above | target |");
    println!("|---|---|---|---|");
    println!(
        "| supervisor (`caxton serve`) | {:.1} | {:.1} | |",
        idle_sup as f64 / 1024.0,
        after_sup as f64 / 1024.0
    );
    println!(
        "| toolhost | {:.1} | {:.1} | |",
        idle_th as f64 / 1024.0,
        after_th as f64 / 1024.0
    );
    println!(
        "| memory service (empty, model not loaded) | {:.1} | {:.1} | |",
        idle_mem as f64 / 1024.0,
        after_mem as f64 / 1024.0
    );
    println!(
        "| **supervisor + toolhost** | **{:.1}** | **{:.1}** | ≤ 50 idle |",
        (idle_sup + idle_th) as f64 / 1024.0,
        (after_sup + after_th) as f64 / 1024.0
    );
    println!(
        "| **all three** | **{:.1}** | **{:.1}** | |",
        (idle_sup + idle_th + idle_mem) as f64 / 1024.0,
        (after_sup + after_th + after_mem) as f64 / 1024.0
    );
    println!(
        "\nCounters after the run: {} runs finished, {} failed, {} busy rejections.",
        status.counters.runs_finished, status.counters.runs_failed, status.counters.busy_rejections
    );
    drop(d);
    print!("{}", tools::report()?);
    print!("{}", sql::report()?);
    Ok(())
}
