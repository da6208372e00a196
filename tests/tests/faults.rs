//! Faults: workers killed, hung or panicking, and the toolhost killed mid-run. Each costs only its
//! own run, with a clear error; the next run succeeds.

use caxton_ipc::api::{ErrorKind, RunRequest};
use caxton_tests::{Daemon, Options, Service, assert_contains, process_exists};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn assert_next_run_succeeds(d: &Daemon) {
    let out = d.run("calculator", "2 * 21").unwrap();
    assert_eq!(out.answer(), Some("The result is 42."), "{out:?}");
}

#[test]
fn a_worker_killed_with_sigkill_mid_run_is_reported() {
    let d = Daemon::start(Options::default()).unwrap();
    // Wait until the worker is inside its (3 s) LLM call, then kill it.
    let (mut c, pid) = d.run_until_llm_call("slow", "hi");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let out = c.collect_run().unwrap();
    out.expect_failure(
        ErrorKind::WorkerCrashed,
        &["agent `slow`", "SIGKILL", &pid.to_string()],
    );
    assert_next_run_succeeds(&d);
    assert_eq!(d.status().unwrap().counters.workers_crashed, 1);
}

#[test]
fn a_worker_that_hangs_past_its_timeout_is_killed() {
    let d = Daemon::start(Options::default()).unwrap();
    let req = RunRequest {
        timeout_ms: Some(500),
        ..RunRequest::new("calculator", "caxton-fault:hang")
    };
    let out = d.run_req(req).unwrap();
    let pid = out.worker_pid().unwrap();
    out.expect_failure(
        ErrorKind::Timeout,
        &["did not finish within 500ms", "killed"],
    );
    assert!(!process_exists(pid), "the hung worker {pid} must be gone");
    assert_next_run_succeeds(&d);
}

#[test]
fn a_worker_that_panics_is_reported_with_its_stderr() {
    let d = Daemon::start(Options::default()).unwrap();
    let out = d.run("calculator", "caxton-fault:panic").unwrap();
    // The exit status, then the tail of the worker's stderr.
    out.expect_failure(
        ErrorKind::WorkerCrashed,
        &["exited with status 101", "injected fault: panic"],
    );
    let out = d.run("calculator", "caxton-fault:exit").unwrap();
    assert_contains(&out.failure().unwrap().message, &["exited with status 3"]);
    assert_next_run_succeeds(&d);
}

#[test]
fn the_toolhost_killed_mid_run_fails_that_run_and_is_restarted() {
    let d = Daemon::start(Options::default()).unwrap();
    let old = d.service_pid(Service::Toolhost);
    let (mut c, _) = d.run_until_llm_call("slow", "hi");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    let out = c.collect_run().unwrap();
    out.expect_failure(ErrorKind::Toolhost, &["toolhost"]);
    let s = d.wait_restarted(Service::Toolhost, old);
    assert_eq!(s.counters.toolhost_restarts, 1);
    assert_next_run_succeeds(&d);
    assert!(
        d.log_text().contains("toolhost died"),
        "the crash is logged"
    );
}

#[test]
fn a_ready_worker_that_died_while_waiting_is_never_given_a_run() {
    let d = Daemon::start(Options::default()).unwrap();
    let ready = d
        .wait_status("a full pool", |s| s.ready_workers == 2)
        .unwrap()
        .ready_workers;
    assert_eq!(ready, 2);
    let waiting: Vec<u32> = caxton_tests::children(d.pid())
        .into_iter()
        .filter(|(_, comm, _)| comm == "caxton-worker")
        .map(|(pid, _, _)| pid)
        .collect();
    assert_eq!(
        waiting.len(),
        2,
        "the ready workers are the supervisor's children"
    );
    for pid in &waiting {
        kill(Pid::from_raw(*pid as i32), Signal::SIGKILL).unwrap();
    }
    let out = d.run("calculator", "7 * 6").unwrap();
    assert_eq!(out.answer(), Some("The result is 42."), "{out:?}");
    assert!(!waiting.contains(&out.worker_pid().unwrap()));
    assert_eq!(d.status().unwrap().counters.workers_crashed, 0);
    d.wait_status("the pool refilled", |s| s.ready_workers == 2)
        .unwrap();
}

#[test]
fn a_cancelled_run_asks_its_worker_to_stop_before_killing_it() {
    // The slow agent's LLM takes 3 s. The client goes away meanwhile: the worker, waiting on its
    // LLM, reads the supervisor's Stop on its session and ends the run itself.
    let d = Daemon::start(Options::default()).unwrap();
    let (c, pid) = d.run_until_llm_call("slow", "take your time");
    drop(c);
    d.wait_status("the run recorded as cancelled", |s| {
        s.recent_runs.iter().any(|r| r.outcome == "cancelled")
    })
    .unwrap();
    assert!(!process_exists(pid));
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("client went away; run stopped"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("was stopped"), "{line}");
    assert_next_run_succeeds(&d);
}

#[test]
fn a_restarted_service_runs_the_config_the_supervisor_validated_not_the_file_as_edited() {
    let d = Daemon::start(Options::default()).unwrap();
    let old = d.service_pid(Service::Toolhost);
    // Someone breaks the file on disk; the running supervisor's config is unchanged.
    std::fs::write(&d.config, "this is [not toml").unwrap();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    d.wait_restarted(Service::Toolhost, old);
    assert_next_run_succeeds(&d);
}
