//! systemd integration and environment hygiene: READY/WATCHDOG/STOPPING over a real NOTIFY_SOCKET,
//! children never inherit systemd's variables, and workers never see provider keys.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use caxton_tests::{Daemon, Options};
use nix::sys::signal::Signal;

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// Reads notifications until one contains `what`.
fn expect_notification(sock: &UnixDatagram, what: &str) -> String {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no `{what}` notification"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == what) {
                return msg;
            }
        }
    }
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut d = Daemon::start(Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "200000".into()),
        ],
        ..Options::default()
    })
    .unwrap();
    let ready = expect_notification(&sock, "READY=1");
    assert!(ready.contains("STATUS=serving 3 agents"), "{ready}");
    expect_notification(&sock, "WATCHDOG=1");

    let toolhost = d.service_pid(caxton_tests::Service::Toolhost);
    let env = environ(toolhost);
    assert!(!env.is_empty(), "cannot read the toolhost's environment");
    assert!(
        !env.iter()
            .any(|v| v.starts_with("NOTIFY_SOCKET=") || v.starts_with("WATCHDOG_USEC=")),
        "{env:?}"
    );

    d.signal(Signal::SIGTERM);
    expect_notification(&sock, "STOPPING=1");
    assert!(d.wait_exit(Duration::from_secs(20)).unwrap().success());
}

#[test]
fn a_worker_never_sees_the_services_provider_keys() {
    let d = Daemon::start(Options {
        env: vec![
            ("OPENAI_API_KEY".into(), "sk-test-secret-123".into()),
            ("ANTHROPIC_API_KEY".into(), "sk-ant-456".into()),
        ],
        ..Options::default()
    })
    .unwrap();
    // Read the worker's environment while it waits for its (3 s) LLM call.
    let (mut c, pid) = d.run_until_llm_call("slow", "x");
    let env = environ(pid);
    assert!(
        env.iter().any(|v| v.starts_with("PATH=")),
        "environment unreadable: {env:?}"
    );
    assert!(
        !env.iter()
            .any(|v| v.contains("sk-test-secret-123") || v.contains("sk-ant-456")),
        "{env:?}"
    );
    assert!(c.collect_run().unwrap().answer().is_some());
}
