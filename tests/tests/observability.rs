//! Metrics and health endpoints, end to end: a real Prometheus server (Debian's `prometheus`)
//! scrapes a running Caxton through its HTTP listener and a PromQL query returns the runs the
//! test made, counted across the supervisor and the toolhost; `promtool check metrics` accepts
//! the exposition; no secret, prompt or run id reaches it; `/readyz` flips when the toolhost is
//! killed and back when it is restarted; and the listener gives hostile senders nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use caxton_ipc::api::{ErrorKind, RunRequest};
use caxton_tests::{Daemon, Options, Service, bin, signal_pid};

/// The listener on an ephemeral loopback port (the daemon logs which).
const HTTP: &str = "\n[http]\nlisten = \"127.0.0.1:0\"\n";

/// One HTTP/1.0 exchange (the server closes after it): the status, the head and the body.
fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8(reply).unwrap();
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {reply:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(addr, &format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n"))
}

/// `promtool check metrics` on `text`: its complaints, empty when it has none.
fn promtool_check(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup.sh installs Debian's prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said
    } else {
        format!("failed: {said}")
    }
}

/// A Prometheus server scraping `target` every second, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: caxton\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/setup.sh installs Debian's prometheus)");
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() || get(addr, "/-/ready").0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "prometheus did not get ready: {}",
                std::fs::read_to_string(p._dir.path().join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// The value of an instant PromQL query that returns one sample, `None` while it returns
    /// none.
    fn query(&self, promql: &str) -> Option<f64> {
        let (status, _, body) = get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        );
        assert_eq!(status, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let result = v["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{promql}: {body}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` returns `want` (the scrapes run every second).
    fn wait_for(&self, promql: &str, want: f64) {
        let started = Instant::now();
        loop {
            let got = self.query(promql);
            if got == Some(want) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{promql} = {got:?}, want {want}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether the exposition `text` has the sample `expected`: the whole line when it gives a
/// value (so `… 4` is not `… 40`), else a series of that name and labels.
fn has(text: &str, expected: &str) -> bool {
    let valued = expected
        .rsplit_once(' ')
        .is_some_and(|(_, v)| v.parse::<f64>().is_ok());
    if valued {
        text.lines().any(|l| l == expected)
    } else {
        text.contains(expected)
    }
}

/// A provider key that must never appear in the metrics.
const KEY: &str = "sk-observability-secret-0123456789";
/// Words of a prompt that must never appear in the metrics.
const PROMPT: &str = "zebra-prompt-marker";

#[test]
fn prometheus_scrapes_the_whole_service_and_counts_its_runs() {
    let d = Daemon::start(Options {
        extra_config: format!(
            "{HTTP}\n[providers.remote]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"http://127.0.0.1:9\"\napi_key_env = \"OBS_KEY\"\n"
        ),
        env: vec![("OBS_KEY".into(), KEY.into())],
        ..Options::default()
    })
    .unwrap();
    let addr = d.http_addr();
    let mut run_ids = Vec::new();
    for input in ["6 * 7", "1 + 1", "2 * 21"] {
        let out = d.run("calculator", input).unwrap();
        assert!(out.answer().is_some(), "{out:?}");
        run_ids.push(out.run_id().unwrap().to_string());
    }
    // A division by zero: the tool answers with an error.
    let out = d
        .run("calculator", &format!("1 / 0 is what {PROMPT} asks"))
        .unwrap();
    assert!(out.answer().is_some(), "{out:?}");
    let (_, tool, ok, _) = out.tool_results()[0];
    assert_eq!((tool, ok), ("calculate", false), "{out:?}");
    // The toolhost's log line about it names the run and its agent (in the text log too).
    let tagged = format!("run{{run_id={} agent=calculator}}", out.run_id().unwrap());
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("tool call answered with an error") && l.contains(&tagged)),
        "no line with {tagged}:\n{log}"
    );
    // A run whose LLM call does not answer before the run's deadline (which of the two
    // reports it first, the run or the chat, decides the kind).
    let slow = d
        .run_req(RunRequest {
            timeout_ms: Some(300),
            ..RunRequest::new("slow", PROMPT)
        })
        .unwrap();
    let kind = slow.failure().expect("the slow run failed").kind;
    assert!(
        matches!(kind, ErrorKind::Llm | ErrorKind::Timeout),
        "{slow:?}"
    );
    let failed = format!(
        "caxton_runs_failed_total{{agent=\"slow\",error_kind=\"{}\"}} 1",
        kind.as_str()
    );
    // The memory service: a search and a store, as the operator.
    d.cli_ok(&["memory", "store", "Zoo", "-o", "the zebra sleeps standing"]);
    d.cli_ok(&["memory", "search", "where does the zebra sleep"]);

    // The same exposition over the socket and over HTTP, accepted by promtool. The services'
    // part is what they reported at their last health check (every ping_interval).
    let expected = [
        // The supervisor's, the toolhost's (tools and LLM) and the memory service's.
        "caxton_runs_finished_total{agent=\"calculator\"} 4",
        "caxton_tool_calls_total{tool=\"calculate\",outcome=\"ok\"} 3",
        "caxton_tool_calls_total{tool=\"calculate\",outcome=\"tool_error\"} 1",
        "caxton_llm_requests_total{provider=\"local\",model=\"scripted-rules\",outcome=\"ok\"} 8",
        "caxton_memory_database_size_bytes",
        "caxton_process_resident_memory_bytes{process=\"toolhost\"}",
        "caxton_process_open_fds{process=\"memory\"}",
        "caxton_service_up{service=\"toolhost\"} 1",
        &failed,
        "caxton_memory_requests_total{request=\"store\",outcome=\"ok\"} 1",
        "caxton_memory_search_duration_seconds_count{mode=\"hybrid\"} 1",
        "caxton_memory_embedding_duration_seconds_count",
        "caxton_worker_spawn_seconds_count",
        "caxton_tool_instance_starts_total{package=\"calc\"}",
        "caxton_queue_wait_seconds_count 5",
        "caxton_run_duration_seconds_bucket{agent=\"calculator\",outcome=\"finished\",le=\"+Inf\"} 4",
    ];
    let started = Instant::now();
    let text = loop {
        let text = d.cli_ok(&["metrics"]);
        let missing: Vec<_> = expected.iter().filter(|e| !has(&text, e)).collect();
        if missing.is_empty() {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "missing {missing:?} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(promtool_check(&text), "", "{text}");
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert_eq!(promtool_check(&body), "");
    for text in [&text, &body] {
        for family in expected {
            assert!(has(text, family), "no {family} in:\n{text}");
        }
        assert!(!text.contains(KEY), "the provider key is in the metrics");
        assert!(!text.contains(PROMPT), "a prompt is in the metrics");
        for id in &run_ids {
            assert!(!text.contains(id.as_str()), "run id {id} is in the metrics");
        }
    }

    // A real Prometheus scrapes the listener; PromQL sees the runs, counted in two processes.
    let prometheus = Prometheus::start(addr);
    prometheus.wait_for("up{job=\"caxton\"}", 1.0);
    prometheus.wait_for("sum(caxton_runs_finished_total{agent=\"calculator\"})", 4.0);
    prometheus.wait_for(
        "sum(caxton_tool_calls_total{tool=\"calculate\"}) by (tool)",
        4.0,
    );
    // One more run is seen at the next scrape.
    assert!(d.run("calculator", "3 + 4").unwrap().answer().is_some());
    prometheus.wait_for("sum(caxton_runs_started_total)", 6.0);
}

#[test]
fn readiness_flips_when_the_toolhost_dies_and_returns_when_it_is_back() {
    let d = Daemon::start(Options::with_config(HTTP)).unwrap();
    let addr = d.http_addr();
    let (status, _, body) = get(addr, "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (200, "ready: toolhost running; memory running\n")
    );
    let (status, _, body) = get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let old = d.service_pid(Service::Toolhost);
    signal_pid(old, nix::sys::signal::Signal::SIGKILL);
    // Not ready while the toolhost is restarted (its backoff alone is 100 ms); live throughout.
    let started = Instant::now();
    let body = loop {
        let (status, _, body) = get(addr, "/readyz");
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(10), "never unready");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(body.contains("toolhost"), "{body}");
    assert_eq!(get(addr, "/healthz").0, 200);
    let text = loop {
        let (status, _, _) = get(addr, "/readyz");
        if status == 200 {
            break get(addr, "/metrics").2;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never ready again"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        text.contains("caxton_service_restarts_total{service=\"toolhost\"} 1"),
        "{text}"
    );
    assert_ne!(d.service_pid(Service::Toolhost), old);
    assert!(d.run("calculator", "6 * 7").unwrap().answer().is_some());
}

#[test]
fn the_http_listener_gives_hostile_senders_nothing() {
    let d = Daemon::start(Options::with_config(format!("{HTTP}max_connections = 2\n"))).unwrap();
    let addr = d.http_addr();
    // Only GET and HEAD, only its three paths.
    let (status, head, _) = http(
        addr,
        "POST /metrics HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(status, 405);
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );
    assert_eq!(get(addr, "/../../etc/passwd").0, 404);
    assert_eq!(get(addr, "/metrics/../readyz").0, 404);
    let (status, _, body) = http(addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    // A head larger than the listener reads is refused.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(http(addr, &big).0, 431);
    // A client that never finishes its request head is cut off.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    silent.read_to_end(&mut buf).unwrap();
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    // At max_connections, a newcomer is not served until a slot is free: two silent
    // connections hold both slots until the head timeout closes them.
    let _held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let waited = Instant::now();
    assert_eq!(get(addr, "/healthz").0, 200);
    assert!(
        waited.elapsed() >= Duration::from_secs(3),
        "served while both slots were held ({:?})",
        waited.elapsed()
    );
    // The daemon serves on.
    assert!(d.run("calculator", "6 * 7").unwrap().answer().is_some());
    assert_eq!(get(addr, "/readyz").0, 200);
}

/// TCP ports `pid` listens on (its socket inodes matched against /proc/net/tcp{,6}).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().to_string();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(Path::new(table)).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode in column 9.
            if cols.len() > 9 && cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// Runs `caxton serve --config CONFIG`, which must fail; its stderr.
fn serve_fails(config: &Path) -> String {
    let out = Command::new(bin("caxton"))
        .args(["serve", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_listener_is_off_unless_configured_and_a_taken_port_fails_the_start() {
    let d = Daemon::start(Options::default()).unwrap();
    assert_eq!(listening_ports(d.pid()), Vec::<u16>::new());
    assert!(!d.log_text().contains("HTTP listener"));
    // `caxton metrics` works without it.
    assert!(d.cli_ok(&["metrics"]).contains("caxton_agents_loaded 3"));

    // A port someone else holds: the start fails at once, saying which.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("caxton.toml");
    std::fs::write(
        &config,
        format!(
            "runtime_dir = \"{}\"\nstate_dir = \"{}\"\n[http]\nlisten = \"{port}\"\n",
            dir.path().join("run").display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let stderr = serve_fails(&config);
    assert!(
        stderr.contains(&format!(
            "cannot listen on [http] listen = 127.0.0.1:{port}"
        )) && stderr.contains("in use"),
        "{stderr}"
    );
    // A listen address that is not one is refused with the config's name for it.
    std::fs::write(&config, "[http]\nlisten = \"localhost:9464\"\n").unwrap();
    let stderr = serve_fails(&config);
    assert!(
        stderr.contains("[http] listen = \"localhost:9464\""),
        "{stderr}"
    );
}

/// Runs `script` with `sh` in a private mount namespace holding a journald of its own: tmpfs
/// over its sockets and journal directories, so nothing reaches the machine's journal. The
/// script's output is returned.
fn with_private_journald(script: &str) -> String {
    let wrapped = format!(
        r#"set -e
for d in /run/systemd /run/log /var/log/journal; do mkdir -p "$d"; mount -t tmpfs tmpfs "$d"; done
/lib/systemd/systemd-journald >/dev/null 2>&1 &
JOURNALD=$!
trap 'kill $JOURNALD' EXIT
for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
{script}"#
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &wrapped])
        .output()
        .expect("unshare (util-linux)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_runs_log_lines_carry_its_run_id_and_agent_as_journal_fields() {
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents");
    std::fs::create_dir(&agents).unwrap();
    std::fs::copy(
        caxton_tests::repo_root().join("agents/calculator.toml"),
        agents.join("calculator.toml"),
    )
    .unwrap();
    let config = dir.path().join("caxton.toml");
    std::fs::write(
        &config,
        format!(
            "runtime_dir = \"{0}/run\"\nstate_dir = \"{0}/state\"\nagents_dir = \"{1}\"\n[providers.local]\nkind = \"scripted\"\n",
            dir.path().display(),
            agents.display()
        ),
    )
    .unwrap();
    let caxton = bin("caxton");
    let socket = dir.path().join("run/api.sock");
    // One run whose tool answers with an error (logged by the toolhost) and one whose worker
    // exits (logged by the supervisor), then the journal's lines of the calculator agent.
    let out = with_private_journald(&format!(
        r#"CAXTON_LOG_FORMAT=journald CAXTON_WORKER_FAULTS=1 {caxton} serve --config {config} &
SERVE=$!
# The daemon must not outlive the script (it holds the output pipe the test reads to its end).
trap 'kill $SERVE 2>/dev/null || true; kill $JOURNALD' EXIT
# A cold start compiles every built-in tool package (no shared module cache here): up to a
# minute in a debug build on a loaded machine.
for _ in $(seq 1200); do [ -S {socket} ] && break; sleep 0.05; done
{caxton} --socket {socket} agent run calculator --json --input '1 / 0' > {dir}/tool-error.json
{caxton} --socket {socket} agent run calculator --json --input 'caxton-fault:exit' > {dir}/crash.json || true
kill $SERVE; wait $SERVE || true
journalctl --no-pager -o json CAXTON_AGENT=calculator"#,
        caxton = caxton.display(),
        config = config.display(),
        socket = socket.display(),
        dir = dir.path().display(),
    ));
    let run_id = |file: &str| -> String {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        first["event"]["started"]["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no run id in {text}"))
            .to_string()
    };
    let (tool_error, crash) = (run_id("tool-error.json"), run_id("crash.json"));
    let entries: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |identifier: &str, run: &str, message: &str| {
        entries.iter().find(|e| {
            e["SYSLOG_IDENTIFIER"] == identifier
                && e["CAXTON_RUN_ID"] == run
                && e["MESSAGE"].as_str().is_some_and(|m| m.contains(message))
        })
    };
    // The toolhost's line about the tool's error, under the run's id and agent.
    let line = find(
        "caxton-toolhost",
        &tool_error,
        "tool call answered with an error",
    )
    .unwrap_or_else(|| panic!("no toolhost line of {tool_error} in {out}"));
    assert_eq!(line["CAXTON_AGENT"], "calculator");
    assert_eq!(line["CAXTON_TOOL"], "calculate");
    // The supervisor's line about the crashed run.
    let line = find("caxton", &crash, "run failed")
        .unwrap_or_else(|| panic!("no supervisor line of {crash} in {out}"));
    assert_eq!(line["CAXTON_KIND"], "worker_crashed");
}

#[test]
fn caxton_top_shows_rates_per_agent_and_the_runs_in_progress() {
    let d = Daemon::start(Options::default()).unwrap();
    // A run in progress while top looks (the slow agent's LLM takes 3 s).
    let mut slow = d.connect().unwrap();
    slow.start_run("slow", "take your time").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(d.run("calculator", "6 * 7").unwrap().answer().is_some());
            }
        });
        let out = d.cli_ok(&["top", "--interval", "700ms", "-n", "2"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    });
    // Not a terminal: plain views, one after the other, no escape codes.
    assert!(!out.contains('\x1b'), "{out}");
    assert_eq!(out.matches("all agents:").count(), 2, "{out}");
    let calculator: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("calculator "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(calculator.len(), 2, "{out}");
    for row in &calculator {
        let runs_per_s: f64 = row[1].parse().unwrap();
        assert!(runs_per_s > 0.0, "{out}");
        assert_eq!(row[2], "0.0%", "{out}");
        // p50 and p95 of its last runs, in ms.
        assert!(
            row[3].parse::<u64>().is_ok() && row[4].parse::<u64>().is_ok(),
            "{out}"
        );
    }
    assert!(
        out.contains("RUNNING") && out.contains("▶ slow  run-"),
        "{out}"
    );
    let done = slow.collect_run().unwrap();
    assert!(done.answer().is_some(), "{done:?}");
    // A restart in the middle of watching: said so, then watched again.
    let mut d = d;
    let top = Command::new(bin("caxton"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["top", "--interval", "200ms", "-n", "40"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    d.stop_and_restart();
    // It ends by itself after 40 views or notices (8 s).
    let out = top.wait_with_output().unwrap();
    assert!(out.status.success());
    let out = String::from_utf8(out.stdout).unwrap();
    let (before, after) = out
        .rsplit_once("no answer from the daemon")
        .unwrap_or_else(|| panic!("the restart was not noticed:\n{out}"));
    assert!(before.contains("all agents:"), "{out}");
    assert!(after.contains("all agents:"), "not watched again:\n{out}");
    // A daemon that is not there: the usual exit 3 with its hint.
    let err = Command::new(bin("caxton"))
        .args(["--socket", "/nonexistent/api.sock", "top", "-n", "1"])
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(3));
}
