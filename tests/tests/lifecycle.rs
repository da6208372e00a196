//! Service lifecycle and limits: saturation, SIGTERM drain, second signal, SIGHUP reload, one
//! instance per runtime directory, peer credentials, and a stdlib-only Python script client.

use std::process::Command;
use std::time::Duration;

use caxton_ipc::api::{ApiRequest, ErrorKind, RunRequest};
use caxton_tests::{Daemon, Options, assert_error, bin, repo_root};
use nix::sys::signal::Signal;

fn slow_request() -> ApiRequest {
    ApiRequest::Run(RunRequest::new("slow", "x"))
}

#[test]
fn beyond_slots_and_queue_requests_get_busy_promptly() {
    let d = Daemon::start(Options::with_config(
        "[workers]\nmax_concurrent = 1\nqueue_capacity = 1\n",
    ))
    .unwrap();
    // One running, one queued.
    let mut running = d.connect().unwrap();
    running.start_run("slow", "x").unwrap();
    let mut queued = d.connect().unwrap();
    // Queued: no Started event until the first run frees its slot.
    queued.send(&slow_request()).unwrap();
    d.wait_status("one queued run", |s| s.queue_depth == 1)
        .unwrap();
    // Everything beyond gets "busy" while the first run is still in its 3 s LLM call.
    for _ in 0..5 {
        let out = d.run("calculator", "1+1").unwrap();
        assert_error(
            &out.error.expect("busy"),
            ErrorKind::Busy,
            &["max_concurrent"],
        );
    }
    let status = d.status().unwrap();
    assert_eq!(
        status.workers.len(),
        1,
        "the first run is still running: busy came before it finished"
    );
    assert_eq!(status.counters.busy_rejections, 5);
    let cli = d.cli(&["agent", "run", "calculator", "--input", "1+1"]);
    assert_eq!(cli.status.code(), Some(4), "busy exits 4");
    // The admitted runs complete.
    assert!(running.collect_run().unwrap().answer().is_some());
    assert!(queued.collect_run().unwrap().answer().is_some());
}

#[test]
fn sigterm_drains_in_flight_runs_then_exits() {
    let mut d = Daemon::start(Options::default()).unwrap();
    let mut c = d.connect().unwrap();
    c.start_run("slow", "x").unwrap();
    d.signal(Signal::SIGTERM);
    // The in-flight run still finishes.
    let out = c.collect_run().unwrap();
    assert_eq!(out.answer(), Some("slow answer to: x"), "{out:?}");
    let status = d.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}");
    assert!(!d.socket.exists(), "the API socket is removed at exit");
    assert!(d.log_text().contains("draining"));
}

#[test]
fn a_second_signal_cuts_the_drain_short() {
    let mut d = Daemon::start(Options::default()).unwrap();
    let mut c = d.connect().unwrap();
    let pid = c.start_run("slow", "x").unwrap();
    d.signal(Signal::SIGTERM);
    d.wait_status("draining", |s| s.draining).ok();
    d.signal(Signal::SIGINT);
    let out = c.collect_run().unwrap();
    let err = out.failure().expect("the run is cut short");
    assert_eq!(err.kind, ErrorKind::ShuttingDown, "{err:?}");
    d.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(!caxton_tests::process_exists(pid));
}

#[test]
fn sighup_reloads_agents() {
    let d = Daemon::start(Options::with_agents(&["agents/calculator.toml"])).unwrap();
    assert_eq!(d.status().unwrap().agents, 1);
    let agents_dir = d.dir.path().join("agents");
    std::fs::copy(
        repo_root().join("agents/greeter.toml"),
        agents_dir.join("greeter.toml"),
    )
    .unwrap();
    std::fs::write(agents_dir.join("broken.toml"), "name = \n").unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_status("two agents", |s| s.agents == 2).unwrap();
    assert!(d.run("greeter", "Bob").unwrap().answer().is_some());
    assert!(d.log_text().contains("broken.toml"));
}

#[test]
fn a_second_instance_on_the_same_runtime_dir_is_refused() {
    let d = Daemon::start(Options::default()).unwrap();
    let out = Command::new(bin("caxton"))
        .args(["serve", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another caxton serve") && stderr.contains(&format!("pid {}", d.pid())),
        "{stderr}"
    );
    assert!(
        d.run("calculator", "1+2").unwrap().answer().is_some(),
        "the first instance is unaffected"
    );
}

#[test]
fn stale_sockets_from_a_killed_instance_are_replaced() {
    let mut d = Daemon::start(Options::default()).unwrap();
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(d.pid() as i32), Signal::SIGKILL).unwrap();
    d.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(
        d.socket.exists(),
        "a SIGKILLed daemon leaves its socket behind"
    );
    // Restart on the same runtime directory: the stale socket is replaced and the service works.
    d.restart().unwrap();
    assert_eq!(
        d.run("calculator", "3*3").unwrap().answer(),
        Some("The result is 9.")
    );
}

#[test]
fn peer_credentials_are_checked() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to connect as another uid");
        return;
    }
    let d = Daemon::start(Options::with_config("[api]\nsocket_mode = \"0666\"\n")).unwrap();
    std::fs::set_permissions(
        d.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let probe = r#"
import json, os, socket, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'"health"\n')
print(s.makefile().readline().strip())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(probe)
        .arg(&d.socket)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("permission_denied") && line.contains("uid 65534"),
        "{line} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The CLI (frames) gets the refusal as the handshake's answer.
    // A copy in the test's own directory, so uid 65534 can execute it wherever the repo lives.
    let cli = d.dir.path().join("caxton-cli");
    std::fs::copy(bin("caxton"), &cli).unwrap();
    let as_nobody =
        "import os, sys; os.setgid(65534); os.setuid(65534); os.execv(sys.argv[1], sys.argv[1:])";
    let out = Command::new("python3")
        .args(["-c", as_nobody])
        .arg(&cli)
        .args(["--socket"])
        .arg(&d.socket)
        .arg("health")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused the connection") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    assert!(d.status().unwrap().counters.connections_rejected >= 1);
}

#[test]
fn a_python_script_runs_an_agent_over_json_with_only_the_standard_library() {
    let d = Daemon::start(Options::default()).unwrap();
    let run_agent = |agent: &str, input: &str| {
        Command::new("python3")
            .arg(repo_root().join("examples/run_agent.py"))
            .args(["--socket"])
            .arg(&d.socket)
            .args([agent, input])
            .output()
            .unwrap()
    };
    let out = run_agent("calculator", "What is 12 * 12?");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "The result is 144.");
    assert!(
        stderr.contains("event tool_call") && stderr.contains("\"calculate\""),
        "{stderr}"
    );
    let out = run_agent("nope", "x");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
}

#[test]
fn a_childs_log_line_appears_once_with_its_own_timestamp_and_who_wrote_it() {
    let d = Daemon::start(Options::default()).unwrap();
    let log = d.log_text();
    let ready: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("toolhost ready") && l.contains("caxton_toolhost"))
        .collect();
    assert_eq!(ready.len(), 1, "{log}");
    let line = ready[0];
    let pid = d.service_pid(caxton_tests::Service::Toolhost);
    assert!(
        line.ends_with(&format!("child=toolhost pid={pid}")),
        "{line}"
    );
    // One timestamp and one level: the child's own, not wrapped in a line of the supervisor's.
    let day = &line[..11];
    assert!(
        day.ends_with('T'),
        "the line starts with its timestamp: {line}"
    );
    assert_eq!(line.matches(day).count(), 1, "{line}");
    assert_eq!(line.matches(" INFO ").count(), 1, "{line}");
    assert!(
        !line.contains("caxton::spawn") && !line.contains("caxton_supervisor::spawn"),
        "{line}"
    );
}
