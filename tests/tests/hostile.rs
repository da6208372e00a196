//! The hostile suite: what a probe acting as a hostile, demanding operator found, kept as
//! permanent tests against the real processes. Frame fuzzing on every socket and pipe,
//! slow-loris and idle floods on the public and private sockets, wedged services, SIGKILLs during
//! concurrent memory writes, concurrent writers, reloads with broken or duplicate agent files,
//! request smuggling through an over-long JSON line, worker confinement, a frozen pre-started
//! worker, shutdown in the middle of a run's start, private state files. Bounded so CI stays
//! quick: each test is seconds, the fuzzer tens of thousands of frames.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use caxton_ipc::api::{ApiRequest, ApiResponse, ErrorKind, RunEvent, RunRequest, ServiceState};
use caxton_ipc::frame;
use caxton_ipc::handshake::{Hello, HelloReply, Role};
use caxton_ipc::memory::{MemoryRequest, MemoryResponse, StoreRequest};
use caxton_ipc::toolhost::{CallToolRequest, ToolhostRequest};
use caxton_tests::fuzz::{self, Rng};
use caxton_tests::{Daemon, Options, Service, WAIT_DEADLINE, bin, children};
use nix::sys::signal::Signal;

fn memory_options(extra_config: &str) -> Options {
    Options {
        agents: vec![
            "tests/agents/memo-a.toml".into(),
            "tests/agents/no-tools.toml".into(),
        ],
        rules: Some("tests/agents/memory-rules.toml".into()),
        extra_config: extra_config.into(),
        ..Options::default()
    }
}

fn assert_serves(d: &Daemon) {
    let out = d.run("calculator", "6 * 7").unwrap();
    assert_eq!(
        out.answer(),
        Some("The result is 42."),
        "the service must keep serving: {out:?}\n{}",
        d.log_text()
    );
}

fn toolhost_pid(d: &Daemon) -> u32 {
    d.service_pid(Service::Toolhost)
}

fn memory_pid(d: &Daemon) -> u32 {
    d.service_pid(Service::Memory)
}

fn signal(pid: u32, sig: Signal) {
    caxton_tests::signal_pid(pid, sig);
}

fn store_req(name: &str, observations: &[String]) -> MemoryRequest {
    MemoryRequest::Store(StoreRequest {
        scope: "global".into(),
        name: name.into(),
        entity_type: "fact".into(),
        observations: observations.to_vec(),
    })
}

/// Every message type of each socket, as encoded payloads to mutate.
fn api_samples() -> Vec<Vec<u8>> {
    use caxton_ipc::api::RunRequest;
    let run = RunRequest {
        agent: "zz-no-such-agent".into(),
        input: "fuzz input".into(),
        vars: [("k".to_string(), "v".to_string())].into(),
        timeout_ms: Some(1000),
        stream: true,
        record: false,
        replay: None,
        hide_children: false,
        conversation: None,
        capability: None,
        strategy: None,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    };
    let reqs = vec![
        ApiRequest::Run(run),
        ApiRequest::ListAgents,
        ApiRequest::ShowAgent { name: "zz".into() },
        ApiRequest::ValidateAgent {
            file_name: "f.toml".into(),
            source: "name = \"x\"".into(),
        },
        ApiRequest::Status,
        ApiRequest::Health,
        ApiRequest::Metrics,
        ApiRequest::ListTools,
        ApiRequest::RemoveTool { name: "zz".into() },
        ApiRequest::CallTool {
            tool: "zz-none".into(),
            arguments: "{}".into(),
            timeout_ms: Some(100),
        },
        ApiRequest::Memory(MemoryRequest::Stats {
            integrity_check: false,
        }),
        ApiRequest::Memory(store_req("fuzz", &["an observation".into()])),
    ];
    let mut out: Vec<Vec<u8>> = reqs.iter().map(fuzz::payload_of).collect();
    out.push(fuzz::payload_of(&Hello::new(Role::Cli)));
    out
}

fn toolhost_samples() -> Vec<Vec<u8>> {
    let reqs = [
        ToolhostRequest::Catalog,
        ToolhostRequest::Tools {
            names: vec!["calculate".into(), "zz".into()],
        },
        ToolhostRequest::CallTool(CallToolRequest {
            run_id: "fuzz".into(),
            agent: "fuzz".into(),
            tool: "zz-none".into(),
            arguments: "{}".into(),
            timeout_ms: 200,
        }),
        ToolhostRequest::ListPackages,
        ToolhostRequest::RemovePackage { name: "zz".into() },
        ToolhostRequest::Ping,
        ToolhostRequest::Metrics,
        ToolhostRequest::Attach {
            token: "0".repeat(32),
        },
        ToolhostRequest::RevokeRun {
            token: "0".repeat(32),
        },
        ToolhostRequest::RegisterRun {
            token: "0".repeat(32),
            grant: caxton_ipc::toolhost::RunGrant {
                agent: "a".into(),
                run_id: "r".into(),
                tools: vec!["calculate".into()],
                providers: vec!["local".into()],
                max_tool_calls: 3,
                max_tokens: Some(10),
                max_cost_usd: Some(0.5),
                read_only: true,
                settle_to: None,
                model: None,
            },
        },
        ToolhostRequest::ReserveRun {
            token: "0".repeat(32),
            want: caxton_ipc::toolhost::Allowance {
                tool_calls: Some(3),
                tokens: Some(100),
                cost_usd: Some(0.1),
            },
            parts: 2,
        },
        ToolhostRequest::SettleRun {
            token: "0".repeat(32),
            reserved: caxton_ipc::toolhost::Allowance::default(),
            used: caxton_ipc::toolhost::Allowance::default(),
        },
    ];
    reqs.iter().map(fuzz::payload_of).collect()
}

fn memory_samples() -> Vec<Vec<u8>> {
    let reqs = [
        MemoryRequest::Attach {
            token: "00ff".into(),
        },
        MemoryRequest::Tools,
        MemoryRequest::Metrics,
        MemoryRequest::CallTool {
            name: "read_graph".into(),
            arguments: "{}".into(),
        },
        MemoryRequest::Recall {
            query: "q".into(),
            limit: 3,
            min_similarity: 0.5,
        },
        MemoryRequest::Revoke { token: "t".into() },
        store_req("x", &["y".into()]),
        MemoryRequest::Ping,
    ];
    reqs.iter().map(fuzz::payload_of).collect()
}

/// Sends `connections` fuzzed connections to `socket`, each a valid Hello (as `role`) and up
/// to four mutated frames of `samples`; returns the number of frames sent.
fn fuzz_socket(
    socket: &Path,
    role: Role,
    samples: &[Vec<u8>],
    connections: usize,
    rng: &mut Rng,
) -> usize {
    let mut sent = 0;
    for i in 0..connections {
        let frames: Vec<Vec<u8>> = (0..1 + rng.below(4))
            .map(|_| {
                let base = &samples[rng.below(samples.len())];
                match rng.below(10) {
                    // Raw garbage without a header now and then.
                    0 => {
                        let n = 1 + rng.below(40);
                        rng.bytes(n)
                    }
                    _ => fuzz::framed(&fuzz::mutate(rng, base)),
                }
            })
            .collect();
        sent += frames.len();
        // Every 50th connection opens with the fatal Hello instead of a valid one.
        let (hello, frames) = if i % 50 == 0 {
            (None, vec![fuzz::fatal_hello()])
        } else {
            (Some(role), frames)
        };
        fuzz::send_frames(socket, hello, &frames).expect("connect");
    }
    sent
}

#[test]
fn fuzzed_frames_on_every_socket_leave_every_process_serving() {
    let d = Daemon::start(memory_options("")).unwrap();
    let (toolhost, memory, supervisor) = (toolhost_pid(&d), memory_pid(&d), d.pid());
    // The probe's frame first, on each socket.
    for socket in [d.socket.clone(), d.toolhost_socket(), d.memory_socket()] {
        fuzz::send_frames(&socket, None, &[fuzz::fatal_hello()]).unwrap();
    }
    let jobs = [
        (d.socket.clone(), Role::Cli, api_samples()),
        (d.toolhost_socket(), Role::Worker, toolhost_samples()),
        (d.memory_socket(), Role::Worker, memory_samples()),
    ];
    let total: usize = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(socket, role, samples)| {
                s.spawn(move || {
                    let mut rng = Rng::from_env(&format!("fuzz {}", socket.display()));
                    fuzz_socket(socket, *role, samples, 3500, &mut rng)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!(total >= 20_000, "only {total} frames sent");
    eprintln!("{total} fuzzed frames sent");
    // Nothing died or restarted.
    let status = d.status().unwrap();
    assert_eq!(d.pid(), supervisor);
    assert!(
        matches!(status.toolhost, ServiceState::Running { pid, .. } if pid == toolhost),
        "{:?}",
        status.toolhost
    );
    assert!(
        matches!(status.memory, Some(ServiceState::Running { pid, .. }) if pid == memory),
        "{:?}",
        status.memory
    );
    assert!(!d.log_text().contains("memory allocation of"));
    let out = d.run("no-tools", "still there?").unwrap();
    assert!(out.answer().is_some(), "{out:?}");
    let out = d.run("memo-a", "remember Fuzz: survived").unwrap();
    assert!(out.answer().is_some(), "{out:?}");
}

#[test]
fn fuzzed_json_lines_get_errors_and_the_socket_keeps_serving() {
    let d = Daemon::start(Options::default()).unwrap();
    let mut rng = Rng::from_env("json fuzz");
    let samples: Vec<String> = [
        r#"{"run":{"agent":"zz-none","input":"hi","vars":{"a":"b"},"timeout_ms":5}}"#,
        r#""status""#,
        r#""metrics""#,
        r#"{"show_agent":{"name":"calculator"}}"#,
        r#"{"memory":{"stats":{"integrity_check":false}}}"#,
        r#"{"hello":{"role":"script","protocol":1,"software":"x","pid":1}}"#,
    ]
    .map(str::to_string)
    .to_vec();
    for _ in 0..2000 {
        let base = samples[rng.below(samples.len())].as_bytes();
        let mut line = fuzz::mutate(&mut rng, base);
        if rng.below(8) == 0 {
            // Deep nesting and huge numbers.
            line = format!("{}1e999999{}", "[".repeat(5000), "]".repeat(5000)).into_bytes();
        }
        line.retain(|b| *b != b'\n');
        let mut text = vec![b'{'];
        text.extend(line);
        text.push(b'\n');
        fuzz::send_frames(&d.socket, None, &[text]).unwrap();
    }
    assert_serves(&d);
}

#[test]
fn fuzzed_worker_pipes_end_runs_cleanly() {
    // The supervisor reading a worker: a "worker" that answers Welcome and then a fuzzed event.
    let mut rng = Rng::from_env("worker pipe fuzz");
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let event = fuzz::payload_of(&RunEvent::Token {
        text: "some text".into(),
    });
    let welcome = frame::encode(&HelloReply::Welcome(Hello::new(Role::Worker))).unwrap();
    for i in 0..40 {
        let mut bytes = welcome.clone();
        bytes.extend(fuzz::framed(&fuzz::mutate(&mut rng, &event)));
        std::fs::write(frames.join(i.to_string()), bytes).unwrap();
    }
    let script = dir.path().join("fuzz-worker");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env python3\nimport os, random, sys\nd = {:?}\nf = random.choice(os.listdir(d))\nsys.stdout.buffer.write(open(os.path.join(d, f), 'rb').read())\nsys.stdout.flush()\n",
            frames.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(Options::with_config(format!(
        "[workers]\nbinary = \"{}\"\nwarm = 0\n",
        script.display()
    )))
    .unwrap();
    for _ in 0..40 {
        let out = d.run("calculator", "1+1").unwrap();
        let terminal = out.events.last();
        assert!(
            out.error.is_some() || terminal.is_some_and(RunEvent::is_terminal),
            "every run ends with one terminal event: {out:?}"
        );
    }
    assert!(d.status().is_ok());
    assert!(!d.log_text().contains("memory allocation of"));

    // The worker reading its job: a fuzzed job must make it exit with a status, never abort.
    let agent = match d
        .connect()
        .unwrap()
        .call(&ApiRequest::ShowAgent {
            name: "calculator".into(),
        })
        .unwrap()
    {
        ApiResponse::Agent(a) => *a,
        other => panic!("{other:?}"),
    };
    let job = fuzz::payload_of(&caxton_ipc::worker::WorkerJob {
        run_id: "r".into(),
        agent,
        input: "in".into(),
        vars: Default::default(),
        toolhost_socket: "/nonexistent".into(),
        toolhost_token: String::new(),
        deadline: caxton_ipc::worker::Monotonic::after(std::time::Duration::from_millis(100)),
        stream: false,
        record: false,
        replay: None,
        memory: None,
        delegation_tools: vec![],
        history: vec![],
        trace: Some(caxton_ipc::trace::JobTrace {
            parent: caxton_ipc::trace::TraceParent {
                trace_id: [1; 16],
                span_id: [2; 8],
                sampled: true,
            },
            capture_content: false,
        }),
    });
    for i in 0..150 {
        let mut input = frame::encode(&Hello::new(Role::Supervisor)).unwrap();
        if i % 10 == 0 {
            input = fuzz::fatal_hello();
        } else {
            input.extend(fuzz::framed(&fuzz::mutate(&mut rng, &job)));
        }
        let mut child = std::process::Command::new(bin("caxton-worker"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(&input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.code().is_some(),
            "the worker must exit, not die by a signal: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Opens `n` JSON connections that each send one byte and then one more every 300 ms.
fn slow_loris(socket: &Path, n: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        let mut conns: Vec<UnixStream> = Vec::new();
        let mut opened = 0;
        while !stop.load(Ordering::Relaxed) {
            while conns.len() < n {
                // Reconnect as fast as connections are closed: the probe's renewal.
                let Ok(mut c) = UnixStream::connect(&socket) else {
                    break;
                };
                let _ = c.write_all(b"{");
                opened += 1;
                conns.push(c);
            }
            conns.retain_mut(|c| c.write_all(b" ").is_ok());
            std::thread::sleep(Duration::from_millis(300));
        }
        opened
    })
}

/// Connects to the public socket as a JSON client (no Hello) and writes `bytes`.
fn send_json(d: &Daemon, bytes: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    s
}

#[test]
fn slow_loris_and_idle_floods_do_not_lock_out_the_public_socket() {
    let d = Daemon::start(Options::with_config(
        "[api]\nmax_connections = 48\nmax_connections_per_uid = 32\nrequest_timeout = \"1s\"\nidle_timeout = \"2s\"\n",
    ))
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let loris = slow_loris(&d.socket, 100, stop.clone());
    // Idle connections past their Hello, as many again.
    let idle: Vec<_> = (0..60).filter_map(|_| d.connect().ok()).collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        // The flood comes from the test's own uid: a newcomer that is still waiting for its first
        // request is as evictable as the flood's connections, and on a loaded machine the flood's
        // renewals can reach it before its request does. Not being locked out means a second
        // attempt gets in.
        let out = (0..3)
            .map(|_| d.cli(&["health"]))
            .find(|out| out.status.code() == Some(0));
        assert!(out.is_some(), "health must answer during the flood");
    }
    assert_serves(&d);
    // Each slow connection is cut at the request deadline (1 s) and renewed, for a while.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.cli(&["health"]).status.code(), Some(0));
    stop.store(true, Ordering::Relaxed);
    let opened = loris.join().unwrap();
    assert!(
        opened > 100,
        "connections were closed and renewed: {opened}"
    );
    // Idle connections are closed after the idle timeout (or were evicted earlier).
    std::thread::sleep(Duration::from_secs(3));
    for mut c in idle {
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            c.stream.read(&mut buf).unwrap_or(0),
            0,
            "an idle connection is closed"
        );
    }
    // A slow request is cut off at the request deadline with an error, not held.
    let mut slow = send_json(&d, b"\"stat");
    let mut text = String::new();
    let _ = slow.read_to_string(&mut text);
    assert!(
        text.contains("bad_request") && text.contains("did not arrive whole"),
        "{text}"
    );
}

#[test]
fn a_client_refused_at_a_cap_gets_the_busy_answer() {
    let d = Daemon::start(Options::with_config(
        "[api]\nmax_connections = 2\nmax_connections_per_uid = 2\n",
    ))
    .unwrap();
    // Two runs in progress hold both places (a connection being served is never evicted).
    let mut runs: Vec<_> = (0..2)
        .map(|_| {
            let mut c = d.connect().unwrap();
            c.start_run("slow", "hold on").unwrap();
            c
        })
        .collect();
    let out = d.cli(&["health"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("busy"),
        "{out:?}"
    );
    let json = send_json(&d, b"\"health\"\n");
    let mut line = String::new();
    BufReader::new(&json).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["error"]["kind"], "busy", "{line}");
    for c in &mut runs {
        let outcome = c.collect_run().unwrap();
        assert!(outcome.answer().is_some(), "{outcome:?}");
    }
    drop(runs);
    let out = d.cli(&["health"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// Counts the connections of `conns` the server has closed (reading past anything it sent).
fn closed(conns: &mut [UnixStream]) -> usize {
    conns
        .iter_mut()
        .filter(|c| {
            let mut c: &UnixStream = c;
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 4096];
            loop {
                match c.read(&mut b) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
                }
            }
        })
        .count()
}

fn hello_to(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    frame::write_sync(&mut s, &Hello::new(Role::Worker)).unwrap();
    match frame::read_sync::<HelloReply>(&mut s, 4096).unwrap() {
        HelloReply::Welcome(_) => s,
        HelloReply::Rejected { reason } => panic!("rejected: {reason}"),
    }
}

#[test]
fn private_sockets_cap_each_peer_and_close_silent_or_idle_connections() {
    let d = Daemon::start(memory_options("[workers]\nservice_idle_timeout = \"1s\"\n")).unwrap();
    let cap = caxton_ipc::service::PRIVATE_CAPS.per_peer;
    for socket in [d.toolhost_socket(), d.memory_socket()] {
        // One process floods the socket with connections that stay idle after their Hello.
        let mut flood: Vec<UnixStream> = Vec::new();
        for _ in 0..(cap * 3) {
            let mut s = UnixStream::connect(&socket).unwrap();
            frame::write_sync(&mut s, &Hello::new(Role::Worker)).unwrap();
            flood.push(s);
        }
        std::thread::sleep(Duration::from_millis(300));
        let open = flood.len() - closed(&mut flood);
        assert!(open <= cap, "{open} connections of one peer stay open");
        // Runs still reach the service.
        let out = d.run("no-tools", "hello").unwrap();
        assert!(out.answer().is_some(), "{out:?}");
        let out = d.run("memo-a", "remember Flood: held").unwrap();
        assert!(out.answer().is_some(), "{out:?}\n{}", d.log_text());
        // And every idle one is closed after the idle timeout.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(closed(&mut flood), flood.len());
        // A connection that never says Hello is closed after the first-message deadline.
        let mut silent = UnixStream::connect(&socket).unwrap();
        silent
            .set_read_timeout(Some(caxton_ipc::service::HELLO_TIMEOUT * 3))
            .unwrap();
        let started = Instant::now();
        let mut b = [0u8; 1];
        assert_eq!(silent.read(&mut b).unwrap(), 0);
        assert!(started.elapsed() < caxton_ipc::service::HELLO_TIMEOUT * 2);
        // An idle connection after Hello is closed after the idle timeout.
        let mut idle = hello_to(&socket);
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(idle.read(&mut b).unwrap(), 0);
    }
    // A worker whose memory connection was closed while its LLM thought reconnects (the
    // scripted LLM takes 2 s here, the idle timeout is 1 s).
    let out = d.run("memo-a", "slowly remember Patience: pays").unwrap();
    assert!(out.answer().is_some(), "{out:?}\n{}", d.log_text());
}

fn fast_health() -> &'static str {
    "[health]\nping_interval = \"200ms\"\nping_timeout = \"500ms\"\nrestart_unresponsive_after = \"3s\"\n"
}

#[test]
fn a_wedged_toolhost_flips_readiness_and_is_restarted() {
    let d = Daemon::start(Options::with_config(fast_health())).unwrap();
    let old = toolhost_pid(&d);
    signal(old, Signal::SIGSTOP);
    d.wait_status(
        "the toolhost marked unresponsive",
        |s| matches!(s.toolhost, ServiceState::Unresponsive { pid, .. } if pid == old),
    )
    .unwrap();
    let out = d.cli(&["health"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not ready") && text.contains("unresponsive"),
        "{text}"
    );
    let status = d.cli(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("unresponsive"));
    d.wait_status(
        "the toolhost restarted",
        |s| matches!(s.toolhost, ServiceState::Running { pid, .. } if pid != old),
    )
    .unwrap();
    assert!(!caxton_tests::process_exists(old) || is_zombie(old));
    assert_eq!(d.cli(&["health"]).status.code(), Some(0));
    assert_serves(&d);
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

#[test]
fn a_wedged_memory_service_fails_fast_and_is_restarted() {
    let d = Daemon::start(memory_options(fast_health())).unwrap();
    let old = memory_pid(&d);
    signal(old, Signal::SIGSTOP);
    d.wait_status("the memory service marked unresponsive", |s| {
        matches!(s.memory, Some(ServiceState::Unresponsive { .. }))
    })
    .unwrap();
    let out = d.cli(&["memory", "stats"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unresponsive"),
        "{out:?}"
    );
    assert_eq!(d.cli(&["health"]).status.code(), Some(4));
    d.wait_status(
        "the memory service restarted",
        |s| matches!(s.memory, Some(ServiceState::Running { pid, .. }) if pid != old),
    )
    .unwrap();
    assert_eq!(d.cli(&["memory", "stats"]).status.code(), Some(0));
    let out = d.run("memo-a", "remember Back: again").unwrap();
    assert!(out.answer().is_some(), "{out:?}");
}

/// Writers that store entities until stopped, recording the names acknowledged.
fn writers(
    d: &Daemon,
    n: usize,
    stop: &AtomicBool,
    tolerate_errors: bool,
) -> (BTreeSet<String>, usize) {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|t| {
                s.spawn(move || {
                    let mut acked = BTreeSet::new();
                    let mut failures = 0;
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let name = format!("writer{t}-{i}");
                        let obs = vec![format!("{name} first"), format!("{name} second")];
                        match d.memory(store_req(&name, &obs)) {
                            Ok(Ok(MemoryResponse::Ok)) => {
                                acked.insert(name);
                            }
                            other => {
                                failures += 1;
                                if !tolerate_errors {
                                    panic!("write {name} failed: {other:?}");
                                }
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    (acked, failures)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).fold(
            (BTreeSet::new(), 0),
            |(mut a, f), (b, g)| {
                a.extend(b);
                (a, f + g)
            },
        )
    })
}

/// Checks that every name in `names` is stored with both its observations, and the database
/// is intact.
fn assert_all_present(d: &Daemon, names: &BTreeSet<String>) {
    let names: Vec<String> = names.iter().cloned().collect();
    for chunk in names.chunks(200) {
        let graph = d.memory_graph("global", chunk);
        let found: BTreeSet<_> = graph.entities.iter().map(|e| e.name.clone()).collect();
        for name in chunk {
            assert!(found.contains(name), "acknowledged write {name} is missing");
        }
        for e in &graph.entities {
            assert_eq!(
                e.observations.len(),
                2,
                "half-applied entity {}: {:?}",
                e.name,
                e.observations
            );
        }
    }
    match d
        .memory(MemoryRequest::Stats {
            integrity_check: true,
        })
        .unwrap()
    {
        Ok(MemoryResponse::Stats(s)) => assert_eq!(s.integrity.as_deref(), Some("ok")),
        other => panic!("stats: {other:?}"),
    }
}

#[test]
fn eight_concurrent_memory_writers_never_fail_or_half_apply() {
    let d = Daemon::start(memory_options("")).unwrap();
    let stop = AtomicBool::new(false);
    let (acked, failures) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(10));
            stop.store(true, Ordering::Relaxed);
        });
        writers(&d, 8, &stop, false)
    });
    assert_eq!(failures, 0);
    assert!(acked.len() > 80, "only {} writes in 10 s", acked.len());
    eprintln!("{} writes acknowledged", acked.len());
    assert_all_present(&d, &acked);
}

#[test]
fn acknowledged_memory_writes_survive_sigkills_of_each_service() {
    let mut d = Daemon::start(memory_options("")).unwrap();
    let stop = AtomicBool::new(false);
    let (acked, _) = std::thread::scope(|s| {
        let d = &d;
        let stop = &stop;
        s.spawn(move || {
            for _ in 0..2 {
                std::thread::sleep(Duration::from_millis(1500));
                let pid = memory_pid(d);
                signal(pid, Signal::SIGKILL);
                d.wait_status(
                    "the memory service restarted",
                    |s| matches!(s.memory, Some(ServiceState::Running { pid: p, .. }) if p != pid),
                )
                .unwrap();
            }
            // The toolhost dying does not touch memory writes.
            signal(toolhost_pid(d), Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(1500));
            stop.store(true, Ordering::Relaxed);
        });
        writers(d, 4, stop, true)
    });
    assert!(!acked.is_empty());
    assert_all_present(&d, &acked);
    // The supervisor itself, killed during writes: the services die with it; after a restart
    // every acknowledged write is there.
    let stop = AtomicBool::new(false);
    let (more, _) = std::thread::scope(|s| {
        let stop = &stop;
        let pid = d.pid();
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(1000));
            signal(pid, Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
        });
        writers(&d, 4, stop, true)
    });
    d.restart().unwrap();
    let mut all = acked;
    all.extend(more);
    assert_all_present(&d, &all);
}

fn agent_file(name: &str, answer: &str) -> String {
    format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"answers {answer}\"\nsystem_prompt = \"You answer {answer}.\"\nuser_prompt_template = \"{{{{request}}}}\"\n\n[llm]\nprovider = \"scripted\"\ntool_choice = \"none\"\n"
    )
}

fn hup_and_wait(d: &Daemon, what: &str, cond: impl Fn(&caxton_ipc::api::StatusReport) -> bool) {
    d.signal(Signal::SIGHUP);
    d.wait_status(what, cond).unwrap();
}

#[test]
fn a_reload_never_loses_a_working_agent_and_nothing_takes_a_name_over() {
    let d = Daemon::start(Options::default()).unwrap();
    let agents = d.dir().join("agents");
    let file = agents.join("zeta.toml");
    std::fs::write(&file, agent_file("zeta", "one")).unwrap();
    hup_and_wait(&d, "zeta loaded", |s| s.agents == 4);
    let description = |d: &Daemon| match d
        .connect()
        .unwrap()
        .call(&ApiRequest::ShowAgent {
            name: "zeta".into(),
        })
        .unwrap()
    {
        ApiResponse::Agent(a) => a.description.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(description(&d), "answers one");

    // A typo: the last good version keeps serving, loudly.
    std::fs::write(&file, "name = \"zeta\"\nversion = 1.0\nsystem_prompt = ").unwrap();
    hup_and_wait(&d, "the problem reported", |s| !s.agent_problems.is_empty());
    let out = d.run("zeta", "still?").unwrap();
    assert!(out.answer().is_some(), "{out:?}");
    assert_eq!(description(&d), "answers one");
    let list = d.cli(&["agent", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("last good version") && text.contains("zeta.toml"),
        "{text}"
    );
    assert!(d.log_text().contains("kept at its last good version"));

    // Fixed: the new version serves.
    std::fs::write(&file, agent_file("zeta", "two")).unwrap();
    hup_and_wait(&d, "fixed", |s| s.agent_problems.is_empty());
    assert_eq!(description(&d), "answers two");

    // A new file that sorts first with the same name takes nothing over; both are reported.
    std::fs::write(agents.join("aaa.toml"), agent_file("zeta", "intruder")).unwrap();
    hup_and_wait(&d, "duplicate reported", |s| s.agent_problems.len() == 2);
    assert_eq!(description(&d), "answers two");
    let status = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("aaa.toml") && text.contains("zeta.toml") && text.contains("several files"),
        "{text}"
    );
}

#[test]
fn an_over_long_json_line_closes_the_connection_and_smuggles_nothing() {
    let d = Daemon::start(Options::default()).unwrap();
    let before = d.status().unwrap().counters.runs_started;
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let reader = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let spaces = vec![b' '; 1024 * 1024];
        for _ in 0..9 {
            if s.write_all(&spaces).is_err() {
                return;
            }
        }
        let _ = s.write_all(b"{\"run\":{\"agent\":\"calculator\",\"input\":\"1+1\"}}\n");
    });
    let mut text = String::new();
    let _ = BufReader::new(reader).read_to_string(&mut text);
    writer.join().unwrap();
    assert!(text.contains("longer than"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(d.status().unwrap().counters.runs_started, before);
}

fn confined_agent(dir: &Path) -> PathBuf {
    let path = dir.join("confined.toml");
    std::fs::write(
        &path,
        "name = \"confined\"\ndescription = \"tight limits\"\nsystem_prompt = \"x\"\n\n[llm]\nprovider = \"scripted\"\n\n[limits]\ntimeout = \"30s\"\nmemory_mb = 128\ncpu_time = \"2s\"\nopen_files = 32\n",
    )
    .unwrap();
    path
}

#[test]
fn workers_are_confined_and_a_worker_over_a_limit_is_named() {
    let d = Daemon::start(Options::default()).unwrap();
    std::fs::copy(
        confined_agent(d.dir()),
        d.dir().join("agents/confined.toml"),
    )
    .unwrap();
    hup_and_wait(&d, "confined loaded", |s| s.agents == 4);
    for (fault, limit) in [
        ("alloc", "memory limit (128 MiB"),
        ("spin", "CPU-time limit (2s"),
        ("fds", "open-file limit (32"),
    ] {
        let out = d.run("confined", &format!("caxton-fault:{fault}")).unwrap();
        out.expect_failure(ErrorKind::WorkerCrashed, &[limit]);
    }
    // A live worker: no_new_privs, no core dumps, and the agent's limits.
    let mut c = d.connect().unwrap();
    let pid = c.start_run("confined", "caxton-fault:hang").unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    // The worker lowers its limits to the agent's once it has read its job.
    let wanted = (128u64 << 20).to_string();
    let started = Instant::now();
    let limits = loop {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        if limits.contains(&wanted) || started.elapsed() > WAIT_DEADLINE {
            break limits;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let row = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(row("Max address space").contains(&wanted), "{limits}");
    assert!(row("Max cpu time").contains("2 3 seconds"), "{limits}");
    assert!(row("Max open files").contains("32 32"), "{limits}");
    assert!(row("Max core file size").contains("0 0"), "{limits}");
}

#[test]
fn a_frozen_ready_worker_does_not_cost_the_run() {
    let d = Daemon::start(Options::default()).unwrap();
    d.wait_status("the ready workers", |s| s.ready_workers == 2)
        .unwrap();
    for (pid, name, _) in children(d.pid()) {
        if name == "caxton-worker" {
            signal(pid, Signal::SIGSTOP);
        }
    }
    let out = d.run("calculator", "2 * 21").unwrap();
    assert_eq!(out.answer(), Some("The result is 42."), "{out:?}");
}

#[test]
fn a_run_still_starting_at_the_drain_deadline_gets_its_terminal_event() {
    // The memory service stopped: a memory agent's run waits while registering its grant.
    let mut d = Daemon::start(memory_options(
        "[workers]\ndrain_timeout = \"1s\"\n[health]\nping_interval = \"1h\"\n",
    ))
    .unwrap();
    signal(memory_pid(&d), Signal::SIGSTOP);
    let mut c = d.connect().unwrap();
    c.send(&ApiRequest::Run(RunRequest::new(
        "memo-a",
        "remember Late: run",
    )))
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    d.signal(Signal::SIGTERM);
    let out = c.collect_run().unwrap();
    out.expect_failure(ErrorKind::ShuttingDown, &["drain deadline"]);
    assert!(d.wait_exit(WAIT_DEADLINE).unwrap().success());

    // A second stop signal says so.
    d.restart().unwrap();
    let mut c = d.connect().unwrap();
    c.start_run("memo-a", "slowly remember Late: again")
        .unwrap();
    d.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    d.signal(Signal::SIGTERM);
    let out = c.collect_run().unwrap();
    out.expect_failure(ErrorKind::ShuttingDown, &["second stop signal"]);
}

#[test]
fn state_files_are_private_whatever_the_umask() {
    // The harness starts the daemon with the test's umask (022 here, or whatever CI has).
    let d = Daemon::start(memory_options("")).unwrap();
    let out = d.run("memo-a", "remember Private: yes").unwrap();
    assert!(out.answer().is_some());
    assert!(d.run("no-tools", "hello").unwrap().answer().is_some());
    let state = d.dir().join("state");
    let mut checked = 0;
    for entry in walk(&state) {
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {mode:o}: readable by others",
            entry.display()
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} state files");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn inputs_come_from_stdin_or_a_file_beyond_the_argument_limit() {
    let d = Daemon::start(Options::default()).unwrap();
    let big = format!("hello {}", "and more ".repeat(40_000));
    assert!(big.len() > 300 * 1024);
    let mut child = std::process::Command::new(bin("caxton"))
        .args(["agent", "run", "greeter", "--input", "-"])
        .env("CAXTON_SOCKET", &d.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = big.clone();
    let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("and more"));
    let file = d.dir().join("input.txt");
    let run_file = |input: &[u8]| {
        std::fs::write(&file, input).unwrap();
        d.cli(&[
            "agent",
            "run",
            "greeter",
            "--input-file",
            file.to_str().unwrap(),
        ])
    };
    let out = run_file(big.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Too big for a run: refused by the CLI with the limit named.
    let out = run_file(&vec![b'x'; caxton_ipc::api::MAX_INPUT_BYTES + 1]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 MiB"));
}

#[test]
fn finished_runs_are_not_logged_as_client_hangups() {
    let d = Daemon::start(Options::default()).unwrap();
    for _ in 0..20 {
        let out = d.cli(&["agent", "run", "calculator", "--input", "2+2"]);
        assert_eq!(out.status.code(), Some(0));
    }
    let log = d.log_text();
    assert!(!log.contains("client hung up during a run"), "{log}");
}

#[test]
fn a_conversation_over_the_frame_limit_is_a_clear_limit_error() {
    let d = Daemon::start(Options::with_agents(&["tests/agents/bigtalk.toml"])).unwrap();
    let input = "1".repeat(caxton_ipc::api::MAX_INPUT_BYTES);
    let out = d.run("bigtalk", &input).unwrap();
    out.expect_failure(ErrorKind::LimitExceeded, &["frame limit", "max_turns"]);
}

/// One raw HTTP/1.1 request on a fresh connection: the reply's status, or `None` when the
/// server closed the connection without one (a head it would not parse, or a request cut short
/// by `hang_up`: shutting down the sending side is going away, and what was asked is dropped).
fn raw_http(addr: std::net::SocketAddr, request: &[u8], hang_up: bool) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.write_all(request);
    if hang_up {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok();
    assert!(status.is_some(), "not an HTTP answer: {text:?}");
    status
}

#[test]
fn fuzzed_http_requests_get_client_errors_and_every_face_keeps_serving() {
    const TOKEN: &str = "fuzz-token-6a1c";
    let d = Daemon::start(Options {
        extra_config: format!(
            "[http]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 65536\n[a2a]\nexpose = [\"*\"]\n[mcp]\nexpose = [\"*\"]\n[[http.tokens]]\nname = \"fuzz\"\nsha256 = \"{}\"\nagents = [\"*\"]\nread = true\nmemory = true\nmax_concurrent_runs = 64\n",
            caxton_tests::token_sha256(TOKEN)
        ),
        ..Options::default()
    })
    .unwrap();
    let addr = d.http_addr();
    let mut rng = Rng::from_env("http fuzz");
    let bodies: [(&str, &str); 6] = [
        (
            "/v1/runs",
            r#"{"agent":"calculator","input":"6 * 7","vars":{"a":"b"},"timeout_ms":5000}"#,
        ),
        (
            "/v1/memory/search",
            r#"{"query":"ship","mode":"hybrid","limit":3}"#,
        ),
        (
            "/a2a/calculator",
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"1 + 1"}]}}}"#,
        ),
        (
            "/a2a/calculator/message:send",
            r#"{"message":{"messageId":"m","parts":[{"text":"2 * 2"}]},"configuration":{"historyLength":1}}"#,
        ),
        (
            "/mcp",
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"f","version":"1"}}}"#,
        ),
        (
            "/mcp",
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"calculator","arguments":{"request":"3 + 4"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
        ),
    ];
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..600 {
        let mutated_head = i % 10 == 9;
        let request = if mutated_head {
            // A mutated head.
            let head = format!(
                "POST /v1/runs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
            );
            fuzz::mutate(&mut rng, head.as_bytes())
        } else {
            let (path, body) = bodies[rng.below(bodies.len())];
            let body = fuzz::mutate(&mut rng, body.as_bytes());
            let mut req = format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: calculator\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend(body);
            req
        };
        if let Some(status) = raw_http(addr, &request, mutated_head) {
            *statuses.entry(status).or_insert(0u32) += 1;
            assert!(
                status < 500 || status == 503,
                "request {i} got {status}: {}",
                String::from_utf8_lossy(&request)
            );
        }
    }
    eprintln!("statuses: {statuses:?}");
    assert!(
        statuses.keys().any(|s| (400..500).contains(s)),
        "{statuses:?}"
    );
    // Every face still answers a good request, and so does the socket.
    for (path, body) in &bodies[..4] {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend(body.as_bytes());
        assert_eq!(raw_http(addr, &req, false), Some(200), "{path}");
    }
    assert_serves(&d);
}
