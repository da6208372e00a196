//! `caxton-benches faces`: the same scripted run (the calculator agent on "What is 6 * 7?": two
//! LLM turns and a tool call) through each face of one daemon, side by side in alternating
//! blocks: the Unix socket's JSON lines (the reference), the HTTP API waiting for the answer and
//! streaming it as server-sent events, A2A JSON-RPC `SendMessage`, and MCP `tools/call` over
//! Streamable HTTP; then runs/s at concurrency 8 through the socket and through HTTP. Every
//! client opens a fresh connection per run (as the socket's does), so each sample includes
//! the TCP connect on loopback. The memory service is off: an A2A message would otherwise open
//! a conversation, which is more work, not the face's.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caxton_tests::{Daemon, Options, bin};

use crate::{SCRIPTED_LOCAL, ms, summary};

const BLOCKS: usize = 8;
const RUNS_PER_MODE: usize = 1600;
const TOKEN: &str = "bench-token-0b5e7c";
const ANSWER: &str = "The result is 42.";

fn hash(token: &str) -> anyhow::Result<String> {
    let mut child = Command::new(bin("caxton"))
        .args(["token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    writeln!(child.stdin.take().expect("piped"), "{token}")?;
    Ok(String::from_utf8(child.wait_with_output()?.stdout)?
        .trim()
        .to_string())
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`): the whole reply.
fn http(addr: SocketAddr, path: &str, extra: &str, body: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

/// The faces, each a way to run the same request once.
#[derive(Clone, Copy)]
enum Face {
    Socket,
    HttpWait,
    HttpSse,
    A2a,
    Mcp,
}

impl Face {
    const ALL: [Face; 5] = [
        Face::Socket,
        Face::HttpWait,
        Face::HttpSse,
        Face::A2a,
        Face::Mcp,
    ];

    fn name(self) -> &'static str {
        match self {
            Face::Socket => "Unix socket, JSON lines (reference)",
            Face::HttpWait => "HTTP `POST /v1/runs`, waiting",
            Face::HttpSse => "HTTP `POST /v1/runs`, SSE",
            Face::A2a => "A2A JSON-RPC `SendMessage`",
            Face::Mcp => "MCP `tools/call` (Streamable HTTP, JSON)",
        }
    }
}

struct Target<'d> {
    d: &'d Daemon,
    addr: SocketAddr,
    mcp_session: String,
}

/// One run through `face`, timed from connect to the answer.
fn run_once(t: &Target<'_>, face: Face) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let reply = match face {
        Face::Socket => return crate::metrics::run_once(t.d),
        Face::HttpWait => http(
            t.addr,
            "/v1/runs",
            "",
            r#"{"agent":"calculator","input":"What is 6 * 7?"}"#,
        )?,
        Face::HttpSse => http(
            t.addr,
            "/v1/runs",
            "Accept: text/event-stream\r\n",
            r#"{"agent":"calculator","input":"What is 6 * 7?"}"#,
        )?,
        Face::A2a => http(
            t.addr,
            "/a2a/calculator",
            "",
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"What is 6 * 7?"}]}}}"#,
        )?,
        Face::Mcp => http(
            t.addr,
            "/mcp",
            &format!("Mcp-Session-Id: {}\r\n", t.mcp_session),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"calculator","arguments":{"request":"What is 6 * 7?"}}}"#,
        )?,
    };
    let elapsed = started.elapsed();
    anyhow::ensure!(
        reply.contains(ANSWER),
        "{}: bad run: {}",
        face.name(),
        &reply[..reply.len().min(400)]
    );
    Ok(elapsed)
}

pub fn report() -> anyhow::Result<String> {
    let blocks = crate::bench_blocks(BLOCKS, RUNS_PER_MODE);
    let runs_per_block = RUNS_PER_MODE / blocks;
    let d = Daemon::start(Options {
        agents: vec!["agents/calculator.toml".into()],
        rules: None,
        faults: false,
        extra_config: format!(
            "[workers]\nmax_concurrent = 64\nqueue_capacity = 256\n[memory]\nenabled = false\n[http]\nlisten = \"127.0.0.1:0\"\n[a2a]\nexpose = [\"*\"]\n[mcp]\nexpose = [\"*\"]\n[[http.tokens]]\nname = \"bench\"\nsha256 = \"{}\"\nagents = [\"*\"]\nmax_concurrent_runs = 64\n{SCRIPTED_LOCAL}",
            hash(TOKEN)?
        ),
        ..Options::default()
    })?;
    let addr = d.http_addr();
    let init = http(
        addr,
        "/mcp",
        "",
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#,
    )?;
    let mcp_session = init
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("mcp-session-id: ")
                .map(|s| s.trim().to_string())
        })
        .ok_or_else(|| anyhow::anyhow!("no MCP session: {init}"))?;
    let target = Target {
        d: &d,
        addr,
        mcp_session,
    };
    for face in Face::ALL {
        for _ in 0..100 {
            run_once(&target, face)?;
        }
    }
    let mut latency: Vec<Vec<Duration>> = vec![Vec::new(); Face::ALL.len()];
    for _ in 0..blocks {
        for (i, face) in Face::ALL.iter().enumerate() {
            for _ in 0..runs_per_block {
                latency[i].push(run_once(&target, *face)?);
            }
        }
    }
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        for (i, face) in [Face::Socket, Face::HttpWait].iter().enumerate() {
            let (rate, _, errors) = crate::throughput_of(8, || run_once(&target, *face));
            anyhow::ensure!(errors == 0, "{errors} failed runs through {}", face.name());
            rates[i].push(rate);
        }
    }
    let mut out = String::new();
    writeln!(
        out,
        "### The faces: one scripted run through each ({blocks} alternating blocks, {RUNS_PER_MODE} sequential runs per face, a fresh connection per run)\n"
    )?;
    writeln!(
        out,
        "| face | p50 ms | p99 ms | max ms | p50 added to the socket's |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    let base = summary(latency[0].clone()).0;
    for (i, face) in Face::ALL.iter().enumerate() {
        let (p50, p99, max) = summary(latency[i].clone());
        let added = p50.as_secs_f64() * 1000.0 - base.as_secs_f64() * 1000.0;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            face.name(),
            ms(p50),
            ms(p99),
            ms(max),
            if i == 0 {
                "—".to_string()
            } else {
                format!("{added:+.3} ms")
            }
        )?;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    writeln!(
        out,
        "\n| runs/s at concurrency 8 (median of 3 windows) | socket | HTTP, waiting |"
    )?;
    writeln!(out, "|---|---|---|")?;
    writeln!(
        out,
        "| | {:.0} | {:.0} |",
        median(rates[0].clone()),
        median(rates[1].clone())
    )?;
    Ok(out)
}
