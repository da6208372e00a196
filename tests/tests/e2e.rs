//! A run end to end through every process, event order, isolation, and process hygiene.

use caxton_ipc::api::{ErrorKind, RunEvent, RunRequest};
use caxton_tests::{Daemon, Options, fd_count, process_exists, zombie_children};

#[test]
fn a_run_calls_a_wasm_tool_and_answers_with_events_in_order() {
    let d = Daemon::start(Options::default()).unwrap();
    let out = d.run("calculator", "What is (2 + 3) * 7?").unwrap();
    assert_eq!(out.answer(), Some("The result is 35."), "{out:?}");
    let kinds: Vec<&str> = out
        .events
        .iter()
        .map(|e| match e {
            RunEvent::Started { .. } => "started",
            RunEvent::TurnStarted { .. } => "turn",
            RunEvent::LlmCall { .. } => "llm",
            RunEvent::LlmReply { .. } => "llm_reply",
            RunEvent::ToolCall { .. } => "tool_call",
            RunEvent::ToolResult { .. } => "tool_result",
            RunEvent::Finished { .. } => "finished",
            RunEvent::Failed { .. } => "failed",
            other => panic!("unexpected event without stream or record: {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "started",
            "turn",
            "llm",
            "llm_reply",
            "tool_call",
            "tool_result",
            "turn",
            "llm",
            "llm_reply",
            "finished"
        ]
    );
    match &out.events[5] {
        RunEvent::ToolResult {
            tool, ok, output, ..
        } => {
            assert_eq!(tool, "calculate");
            assert!(*ok);
            assert_eq!(output, "35");
        }
        other => panic!("{other:?}"),
    }
    match out.events.last().unwrap() {
        RunEvent::Finished { usage, .. } => {
            assert_eq!((usage.turns, usage.llm_calls, usage.tool_calls), (2, 2, 1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn templates_fill_parameters_and_vars_and_refuse_missing_values() {
    let d = Daemon::start(Options::with_agents(&[
        "agents/greeter.toml",
        "tests/agents/needs-context.toml",
    ]))
    .unwrap();
    let out = d.run("greeter", "Ada").unwrap();
    assert_eq!(
        out.answer(),
        Some("(scripted provider, agent greeter) You said: Greet this person: Ada")
    );
    let missing = d.run("needs-context", "q").unwrap();
    // A missing placeholder fails the run.
    missing.expect_failure(ErrorKind::Template, &["{{context}}", "--var context="]);
    let mut req = RunRequest::new("needs-context", "q");
    req.vars.insert("context".into(), "Q3 sales".into());
    let out = d.run_req(req).unwrap();
    assert_eq!(
        out.answer(),
        Some("(scripted provider, agent needs-context) You said: Context: Q3 sales. Request: q")
    );
}

#[test]
fn a_tool_outside_the_allowlist_is_refused_and_reported_to_the_llm() {
    let d = Daemon::start(Options::default()).unwrap();
    let out = d.run("greeter", "use-forbidden-tool").unwrap();
    let result = out.events.iter().find_map(|e| match e {
        RunEvent::ToolResult { ok, output, .. } => Some((*ok, output.clone())),
        _ => None,
    });
    let (ok, output) = result.expect("the refused call is reported");
    assert!(!ok);
    assert!(
        output.contains("not allowed for agent `greeter`"),
        "{output}"
    );
    assert_eq!(out.answer().unwrap(), format!("tool said: {output}"));
}

#[test]
fn concurrent_runs_of_different_agents_do_not_see_each_others_data() {
    let d = Daemon::start(Options::default()).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let d = &d;
                s.spawn(move || {
                    if i % 2 == 0 {
                        let out = d
                            .run("calculator", &format!("What is {i} * 1000?"))
                            .unwrap();
                        assert_eq!(
                            out.answer(),
                            Some(format!("The result is {}.", i * 1000).as_str()),
                            "{out:?}"
                        );
                    } else {
                        let out = d.run("greeter", &format!("person-{i}")).unwrap();
                        let answer = out.answer().unwrap().to_string();
                        assert!(
                            answer.ends_with(&format!("Greet this person: person-{i}")),
                            "{answer}"
                        );
                        for j in 0..8 {
                            if j != i {
                                assert!(!answer.contains(&format!("person-{j}")));
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn every_run_gets_a_fresh_worker_that_is_gone_afterwards_with_no_leaks() {
    let d = Daemon::start(Options::default()).unwrap();
    // Warm up, then measure the supervisor's descriptors.
    d.run("calculator", "1+1").unwrap();
    // Measure with the pool of pre-spawned workers full, before and after.
    let full = |s: &caxton_ipc::api::StatusReport| s.workers.is_empty() && s.ready_workers == 2;
    d.wait_status("a full pool of ready workers", full).unwrap();
    let fds_before = fd_count(d.pid());
    let mut pids = std::collections::HashSet::new();
    for i in 0..200 {
        let out = d.run("calculator", &format!("{i} + 1")).unwrap();
        assert_eq!(
            out.answer(),
            Some(format!("The result is {}.", i + 1).as_str())
        );
        let pid = out.worker_pid().unwrap();
        assert!(pids.insert(pid), "worker pid {pid} reused within the test");
    }
    assert_eq!(pids.len(), 200);
    let status = d
        .wait_status("no running workers and a full pool", full)
        .unwrap();
    assert_eq!(status.counters.runs_finished, 201);
    for pid in &pids {
        assert!(
            !process_exists(*pid),
            "worker {pid} still exists after its run"
        );
    }
    assert!(
        zombie_children(d.pid()).is_empty(),
        "zombies: {:?}",
        zombie_children(d.pid())
    );
    let fds_after = fd_count(d.pid());
    assert!(
        fds_after <= fds_before + 2,
        "supervisor fds grew from {fds_before} to {fds_after} over 200 runs"
    );
}
