//! `caxton-benches metrics`: what being watched costs. On one daemon with the HTTP listener,
//! side by side in alternating blocks: end-to-end run latency and throughput at concurrency 64
//! with nobody scraping, with a scrape every second (Prometheus's usual is 15 s), and every
//! 100 ms; and the time of one scrape of the whole service (three processes) idle and while 64
//! clients keep it busy.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use caxton_tests::{Daemon, Options};

use crate::{SCRIPTED_LOCAL, ms, run_once, summary, throughput};

const BLOCKS: usize = 4;
const RUNS_PER_BLOCK: usize = 400;
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

pub fn report() -> anyhow::Result<String> {
    let d = Daemon::start(Options {
        agents: vec!["agents/calculator.toml".into()],
        rules: None,
        faults: false,
        extra_config: format!(
            "[workers]\nmax_concurrent = 64\nqueue_capacity = 256\n[http]\nlisten = \"127.0.0.1:0\"\n{SCRIPTED_LOCAL}"
        ),
        env: std::env::var("BENCH_CAXTON_LOG")
            .map(|l| vec![("CAXTON_LOG".to_string(), l)])
            .unwrap_or_default(),
        ..Options::default()
    })?;
    let addr = http_addr(&d)?;
    for _ in 0..200 {
        run_once(&d)?;
    }
    let modes = [
        ("nobody scrapes", None),
        ("scraped every 1 s", Some(Duration::from_secs(1))),
        ("scraped every 100 ms", Some(Duration::from_millis(100))),
    ];
    let mut latency: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..BLOCKS {
        for (i, (_, every)) in modes.iter().enumerate() {
            let block = with_scraper(addr, *every, || {
                (0..RUNS_PER_BLOCK)
                    .map(|_| run_once(&d))
                    .collect::<anyhow::Result<Vec<_>>>()
            })?;
            latency[i].extend(block);
        }
    }
    for _ in 0..2 {
        for (i, (_, every)) in modes.iter().enumerate() {
            let (rate, _, errors) = with_scraper(addr, *every, || throughput(&d, 64));
            anyhow::ensure!(errors == 0, "{errors} failed runs");
            rates[i].push(rate);
        }
    }
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
        "\n## Metrics: what being watched costs\n\nOne daemon (`[http] listen`, calculator agent, scripted LLM, 1 WASM tool call per run); the modes alternate, {BLOCKS} blocks of {RUNS_PER_BLOCK} sequential runs each, then 2 throughput windows each.\n"
    )?;
    writeln!(
        out,
        "| mode | runs | e2e p50 ms | e2e p99 ms | p50 vs nobody | runs/s at c64 (2 windows) |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    let base = summary(latency[0].clone()).0;
    for (i, (name, _)) in modes.iter().enumerate() {
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
