//! `caxton-benches metrics`: what being watched costs. Side by side in alternating blocks:
//! end-to-end run latency and throughput at concurrency 64 with tracing off and nobody scraping,
//! with every span exported to a loopback OTLP sink, with a scrape every second (Prometheus's
//! usual is 15 s) and every 100 ms, and (with `BENCH_REFERENCE_BINS=DIR`) on a build from
//! before traces; then the time of one scrape of the whole service (three processes) idle and
//! while 64 clients keep it busy.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use caxton_tests::{Daemon, Options};

use crate::{SCRIPTED_LOCAL, ms, summary};

/// Blocks per mode (`BENCH_BLOCKS` overrides: more, shorter blocks average out the machine's
/// drift between them); 1,600 sequential runs per mode in all.
const BLOCKS: usize = 4;
const RUNS_PER_MODE: usize = 1600;
const SCRAPES: usize = 200;

/// One `GET /metrics`: its time and the body's size.
fn scrape(addr: SocketAddr) -> anyhow::Result<(Duration, usize)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut reply = Vec::with_capacity(64 * 1024);
    s.read_to_end(&mut reply)?;
    let took = t.elapsed();
    anyhow::ensure!(
        reply.get(8..13) == Some(b" 200 ".as_slice()),
        "scrape failed: {}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );
    Ok((took, reply.len()))
}

/// Scrapes `addr` every `every` until `stop`.
fn scraper(addr: SocketAddr, every: Duration, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let _ = scrape(addr);
        std::thread::sleep(every);
    }
}

fn http_addr(d: &Daemon) -> anyhow::Result<SocketAddr> {
    let log = d.log_text();
    let addr = log
        .lines()
        .find(|l| l.contains("HTTP listener"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        .ok_or_else(|| anyhow::anyhow!("no HTTP listener in the log"))?;
    Ok(addr.parse()?)
}

/// Runs `f` with a scraper every `every` (none for `None`).
fn with_scraper<T>(addr: SocketAddr, every: Option<Duration>, f: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        if let Some(every) = every {
            let stop = &stop;
            s.spawn(move || scraper(addr, every, stop));
        }
        let out = f();
        stop.store(true, Ordering::Relaxed);
        out
    })
}

/// A loopback OTLP/HTTP sink: answers every export with an empty 200 (what a collector on the
/// machine costs the daemon, without decoding work of its own on these 2 cores); counts the
/// export requests and their bytes.
struct Sink {
    port: u16,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    fn start() -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let (requests, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, b) = (requests.clone(), bytes.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, b) = (r.clone(), b.clone());
                std::thread::spawn(move || serve_exports(stream, &r, &b));
            }
        });
        Ok(Sink {
            port,
            requests,
            bytes,
        })
    }
}

/// Keep-alive HTTP/1.1: reads each request's head and `Content-Length` body, answers 200.
fn serve_exports(stream: TcpStream, requests: &AtomicU64, bytes: &AtomicU64) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(length as u64, Ordering::Relaxed);
        let reply =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// One run over the JSON API (which an older build speaks too: the frame protocol gained a
/// field with traces), timed from connect to the terminal event.
pub(crate) fn run_once(d: &Daemon) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut stream = std::os::unix::net::UnixStream::connect(&d.socket)?;
    stream.write_all(b"{\"run\":{\"agent\":\"calculator\",\"input\":\"What is 6 * 7?\"}}\n")?;
    let mut lines = BufReader::new(stream).lines();
    loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("the daemon closed before the run ended"))??;
        if line.contains("\"finished\"") {
            let elapsed = t.elapsed();
            anyhow::ensure!(line.contains("The result is 42."), "bad run: {line}");
            return Ok(elapsed);
        }
        anyhow::ensure!(
            !line.contains("\"failed\"") && !line.contains("\"error\""),
            "bad run: {line}"
        );
    }
}

/// Runs per second with `concurrency` clients looping for the throughput window.
fn throughput(d: &Daemon, concurrency: usize) -> (f64, u64, u64) {
    crate::throughput_of(concurrency, || run_once(d))
}

/// One daemon of the comparison.
fn daemon(extra: &str, bin_dir: Option<std::path::PathBuf>) -> anyhow::Result<Daemon> {
    let d = Daemon::start(Options {
        agents: vec!["agents/calculator.toml".into()],
        rules: None,
        faults: false,
        extra_config: format!(
            "[workers]\nmax_concurrent = 64\nqueue_capacity = 256\n[http]\nlisten = \"127.0.0.1:0\"\n{SCRIPTED_LOCAL}{extra}"
        ),
        env: std::env::var("BENCH_CAXTON_LOG")
            .map(|l| vec![("CAXTON_LOG".to_string(), l)])
            .unwrap_or_default(),
        bin_dir,
        ..Options::default()
    })?;
    for _ in 0..200 {
        run_once(&d)?;
    }
    Ok(d)
}

pub fn report() -> anyhow::Result<String> {
    let blocks = crate::bench_blocks(BLOCKS, RUNS_PER_MODE);
    let runs_per_block = RUNS_PER_MODE / blocks;
    let sink = Sink::start()?;
    let d = daemon("", None)?;
    let traced = daemon(
        &format!(
            "\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}\"\n",
            sink.port
        ),
        None,
    )?;
    // The build before traces, when given: what having them, switched off, costs.
    let reference = match std::env::var_os("BENCH_REFERENCE_BINS") {
        Some(dir) => Some((
            std::path::PathBuf::from(&dir).display().to_string(),
            daemon("", Some(dir.into()))?,
        )),
        None => None,
    };
    let addr = http_addr(&d)?;
    let mut modes: Vec<(String, &Daemon, Option<Duration>)> = vec![
        ("tracing off, nobody scrapes".into(), &d, None),
        (
            "tracing on, exported to a loopback collector".into(),
            &traced,
            None,
        ),
        (
            "tracing off, scraped every 1 s".into(),
            &d,
            Some(Duration::from_secs(1)),
        ),
        (
            "tracing off, scraped every 100 ms".into(),
            &d,
            Some(Duration::from_millis(100)),
        ),
    ];
    if let Some((dir, r)) = &reference {
        modes.push((format!("build without traces ({dir})"), r, None));
    }
    let mut latency: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..blocks {
        for (i, (_, daemon, every)) in modes.iter().enumerate() {
            let block = with_scraper(http_addr(daemon)?, *every, || {
                (0..runs_per_block)
                    .map(|_| run_once(daemon))
                    .collect::<anyhow::Result<Vec<_>>>()
            })?;
            latency[i].extend(block);
        }
    }
    for _ in 0..2 {
        for (i, (_, daemon, every)) in modes.iter().enumerate() {
            let (rate, _, errors) =
                with_scraper(http_addr(daemon)?, *every, || throughput(daemon, 64));
            anyhow::ensure!(errors == 0, "{errors} failed runs");
            rates[i].push(rate);
        }
    }
    // The traced daemon's spans have all been sent (its batch delay is 5 s).
    std::thread::sleep(Duration::from_secs(6));
    let exported = (
        sink.requests.load(Ordering::Relaxed),
        sink.bytes.load(Ordering::Relaxed),
    );
    let idle: Vec<_> = (0..SCRAPES)
        .map(|_| scrape(addr))
        .collect::<anyhow::Result<_>>()?;
    let size = idle.last().map_or(0, |s| s.1);
    let idle = summary(idle.into_iter().map(|s| s.0).collect());
    let stop = AtomicBool::new(false);
    let busy = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                throughput(&d, 64);
            }
        });
        // Let the load build up first.
        std::thread::sleep(Duration::from_millis(500));
        let scrapes: anyhow::Result<Vec<_>> = (0..SCRAPES / 2)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                scrape(addr).map(|s| s.0)
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        scrapes
    })?;
    let busy = summary(busy);
    if let Ok(keep) = std::env::var("BENCH_KEEP_LOG") {
        std::fs::copy(&d.log, keep)?;
    }

    let mut out = String::new();
    writeln!(
        out,
        "\n## Metrics and traces: what being watched costs\n\nRuns over the JSON API. Daemons side by side (`[http] listen`, calculator agent, scripted LLM, 1 WASM tool call per run): one without `[telemetry]`, one exporting every span over OTLP/HTTP to a loopback sink{}; the modes alternate, {blocks} blocks of {runs_per_block} sequential runs each, then 2 throughput windows each. The traced daemon made {} export requests, {} KB of spans.\n",
        if reference.is_some() {
            ", and one of the build given in BENCH_REFERENCE_BINS"
        } else {
            ""
        },
        exported.0,
        exported.1 / 1024
    )?;
    writeln!(
        out,
        "| mode | runs | e2e p50 ms | e2e p99 ms | p50 vs the first | runs/s at c64 (2 windows) |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    let base = summary(latency[0].clone()).0;
    for (i, (name, _, _)) in modes.iter().enumerate() {
        let (p50, p99, _) = summary(latency[i].clone());
        writeln!(
            out,
            "| {name} | {} | {} | {} | {:+.1}% | {} |",
            latency[i].len(),
            ms(p50),
            ms(p99),
            (p50.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0,
            rates[i]
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        )?;
    }
    writeln!(
        out,
        "\n| one scrape of `/metrics` (supervisor + toolhost + memory service, {size} bytes) | samples | p50 ms | p99 ms | max ms | target |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| idle | {SCRAPES} | {} | {} | {} | |",
        ms(idle.0),
        ms(idle.1),
        ms(idle.2)
    )?;
    writeln!(
        out,
        "| while 64 clients run agents | {} | {} | {} | {} | ≤ 5 |",
        SCRAPES / 2,
        ms(busy.0),
        ms(busy.1),
        ms(busy.2)
    )?;
    Ok(out)
}
