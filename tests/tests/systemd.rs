//! systemd integration and environment hygiene: READY/WATCHDOG/STOPPING over a real NOTIFY_SOCKET,
//! socket activation through systemd-socket-activate, the unit files under systemd-analyze,
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

/// The `socket:[N]` identities of the sockets `pid` holds open.
fn sockets_of(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|l| l.display().to_string())
                .filter(|l| l.starts_with("socket:"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_socket_activated_daemon_serves_the_socket_systemd_passed_and_leaves_it_to_systemd() {
    use std::os::unix::fs::MetadataExt;
    // systemd-socket-activate binds the API socket before caxton runs, and execs `caxton serve`
    // (same pid) on the first connection, the harness's health check, with the socket as fd 3.
    let mut d = Daemon::start(Options {
        socket_activated: true,
        bin_dir: None,
        ..Options::default()
    })
    .unwrap();
    let log = d.log_text();
    assert!(
        log.contains("API socket from systemd (socket activation)"),
        "{log}"
    );
    assert!(!log.contains("is not at runtime_dir/api.sock"), "{log}");
    let file = std::fs::metadata(&d.socket).unwrap().ino();
    let out = d.run("calculator", "6 * 7").unwrap();
    assert_eq!(out.answer(), Some("The result is 42."), "{out:?}");

    // Neither the services nor a worker inherit the socket or the activation variables.
    let api = std::fs::read_link(format!("/proc/{}/fd/3", d.pid()))
        .unwrap()
        .display()
        .to_string();
    assert!(api.starts_with("socket:"), "{api}");
    let children: Vec<u32> = caxton_tests::children(d.pid())
        .into_iter()
        .map(|(pid, _, _)| pid)
        .collect();
    assert!(
        children.len() >= 3,
        "toolhost, memory, ready workers: {children:?}"
    );
    for pid in children {
        assert!(
            !sockets_of(pid).contains(&api),
            "pid {pid} holds the API socket"
        );
        assert!(
            !environ(pid).iter().any(|v| v.starts_with("LISTEN_")),
            "pid {pid}: {:?}",
            environ(pid)
        );
    }

    // The socket file is systemd's: caxton leaves it when it stops.
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20)).unwrap();
    assert_eq!(std::fs::metadata(&d.socket).unwrap().ino(), file);
}

/// The unit files as installed, with `ExecStart` pointing at the binary this build made.
fn installed_units() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let units = caxton_tests::repo_root().join("systemd");
    let service = std::fs::read_to_string(units.join("caxton.service")).unwrap();
    let service = service.replace(
        "/usr/local/bin/caxton",
        &caxton_tests::bin("caxton").display().to_string(),
    );
    std::fs::write(dir.path().join("caxton.service"), service).unwrap();
    std::fs::copy(
        units.join("caxton.socket"),
        dir.path().join("caxton.socket"),
    )
    .unwrap();
    dir
}

/// `systemd-analyze ARGS` on the installed units: whether it succeeded, and all it printed.
fn systemd_analyze(args: &[&str]) -> (bool, String) {
    let dir = installed_units();
    let out = std::process::Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify_without_a_warning() {
    let (ok, said) = systemd_analyze(&["verify", "caxton.service", "caxton.socket"]);
    assert!(ok && said.trim().is_empty(), "{said}");
}

#[test]
fn the_service_exposure_stays_at_most_two_as_the_readme_says() {
    let (_, text) = systemd_analyze(&["security", "--offline=true", "caxton.service"]);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for caxton.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(
        level <= 2.0,
        "exposure {level} (README records 1.7):\n{text}"
    );
}

#[test]
fn a_forged_or_wrong_activation_socket_is_refused_with_the_reason() {
    // `exec` keeps the shell's pid, so LISTEN_PID names the daemon, as systemd would.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("caxton.toml");
    std::fs::write(
        &config,
        format!(
            "runtime_dir = \"{0}/run\"\nagents_dir = \"{0}/agents\"\nstate_dir = \"{0}/state\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    let serve = |fds: &str, redirects: &str| {
        let script = format!(
            "LISTEN_PID=$$ LISTEN_FDS={fds} exec {} serve --config {} {redirects}",
            caxton_tests::bin("caxton").display(),
            config.display()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(!out.status.success());
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // A file where the socket should be.
    let said = serve("1", "3</dev/null");
    assert!(
        said.contains("the socket systemd passed (fd 3) is not a listening Unix stream socket"),
        "{said}"
    );
    // More descriptors than the one socket caxton takes.
    let said = serve("2", "3</dev/null 4</dev/null");
    assert!(
        said.contains("systemd passed 2 sockets (LISTEN_FDS); caxton takes one"),
        "{said}"
    );
    // Neither left a socket behind.
    assert!(!dir.path().join("run/api.sock").exists());
}
