//! Delegation: agents that hand tasks to other agents, each child a fresh worker process
//! started by the supervisor. Scripted LLM rules (tests/agents/rules.toml) make every tree
//! deterministic.

use std::time::{Duration, Instant};

use caxton_ipc::api::{ApiRequest, ApiResponse, ChildEvent, ErrorKind, RunEvent, RunRequest};
use caxton_tests::{Daemon, Options, assert_contains, process_exists};

const TEAM: &[&str] = &[
    "tests/agents/boss.toml",
    "tests/agents/adder.toml",
    "tests/agents/napper.toml",
    "tests/agents/hanger.toml",
    "tests/agents/spender.toml",
];

fn team(extra: &[&str]) -> Daemon {
    let mut agents: Vec<&str> = TEAM.to_vec();
    agents.extend_from_slice(extra);
    Daemon::start(Options::with_agents(&agents)).unwrap()
}

/// The events of descendant runs, in stream order.
fn children(events: &[RunEvent]) -> Vec<&ChildEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Child(c) => Some(&**c),
            _ => None,
        })
        .collect()
}

/// (run id, agent, depth, worker pid) of every descendant that started.
fn started(events: &[RunEvent]) -> Vec<(String, String, u32, u32)> {
    children(events)
        .into_iter()
        .filter_map(|c| match &c.event {
            RunEvent::Started { worker_pid, .. } => {
                Some((c.run_id.clone(), c.agent.clone(), c.depth, *worker_pid))
            }
            _ => None,
        })
        .collect()
}

/// The tool results the root run's LLM saw: (tool, ok, output).
fn root_results(events: &[RunEvent]) -> Vec<(String, bool, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::ToolResult {
                tool, ok, output, ..
            } => Some((tool.clone(), *ok, output.clone())),
            _ => None,
        })
        .collect()
}

fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| process_exists(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes still alive: {:?}",
            pids.iter()
                .filter(|p| process_exists(**p))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_delegation_runs_the_child_in_its_own_worker_and_returns_its_answer() {
    let d = team(&[]);
    let out = d.run("boss", "ask adder: 6 * 7").unwrap();
    assert_eq!(
        out.answer(),
        Some("boss heard: The result is 42."),
        "{out:?}"
    );
    let root_pid = out.worker_pid().unwrap();
    let kids = started(&out.events);
    assert_eq!(kids.len(), 1, "{kids:?}");
    let (child_run, agent, depth, child_pid) = &kids[0];
    assert_eq!((agent.as_str(), *depth), ("adder", 1));
    assert_ne!(*child_pid, root_pid, "the child has a worker of its own");
    // The child's own events are in the stream, tagged with its place in the tree.
    let child_events = children(&out.events);
    let RunEvent::Started {
        run_id: root_run, ..
    } = &out.events[0]
    else {
        panic!("{:?}", out.events[0])
    };
    assert!(
        child_events.iter().all(|c| c.parent_run_id == *root_run
            && c.run_id == *child_run
            && c.call_id == "call_2")
    );
    assert!(
        child_events
            .iter()
            .any(|c| matches!(&c.event, RunEvent::ToolCall { tool, .. } if tool == "calculate"))
    );
    assert!(child_events.iter().any(
        |c| matches!(&c.event, RunEvent::Finished { answer, .. } if answer == "The result is 42.")
    ));
    // The root's usage includes the child's: total = own + descendants, per agent and model.
    let Some(RunEvent::Finished { usage, .. }) = out.events.last() else {
        panic!()
    };
    let tree = usage
        .tree
        .as_ref()
        .expect("a run that delegated has a tree");
    assert_eq!(tree.descendants, 1);
    let child_usage = child_events
        .iter()
        .find_map(|c| match &c.event {
            RunEvent::Finished { usage, .. } => Some(usage.clone()),
            _ => None,
        })
        .unwrap();
    let own = usage.own();
    assert_eq!(tree.by_agent["boss"].llm_calls, own.llm_calls);
    assert_eq!(tree.by_agent["adder"].llm_calls, child_usage.llm_calls);
    assert_eq!(tree.by_agent["adder"].tool_calls, 1);
    assert_eq!(tree.total.llm_calls, own.llm_calls + child_usage.llm_calls);
    assert_eq!(
        tree.total.total_tokens(),
        own.total_tokens() + child_usage.total_tokens()
    );
    assert_eq!(tree.total.runs, 2);
    let by_model: u32 = tree.by_model.values().map(|s| s.llm_calls).sum();
    assert_eq!(by_model, tree.total.llm_calls);
    wait_gone(&[root_pid, *child_pid]);
}

#[test]
fn a_turns_delegations_run_in_parallel_each_in_its_own_process() {
    let d = team(&[]);
    let out = d.run("boss", "fan out").unwrap();
    assert!(out.answer().is_some(), "{out:?}");
    let kids = started(&out.events);
    let mut pids: Vec<u32> = kids.iter().map(|k| k.3).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "three distinct worker processes: {kids:?}");
    // Overlapping lifetimes: every child started before any of them finished (each naps 1 s).
    let order: Vec<&str> = children(&out.events)
        .iter()
        .filter_map(|c| match &c.event {
            RunEvent::Started { .. } => Some("start"),
            RunEvent::Finished { .. } | RunEvent::Failed { .. } => Some("end"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["start", "start", "start", "end", "end", "end"]);
    let results = root_results(&out.events);
    let outputs: Vec<&str> = results.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(outputs, ["napped: one", "napped: two", "napped: three"]);
}

#[test]
fn fan_out_past_the_limit_is_refused_for_the_extra_calls_only() {
    let d = team(&[]);
    let out = d.run("boss", "too wide").unwrap();
    let results = root_results(&out.events);
    assert_eq!(results.len(), 4, "{results:?}");
    assert!(results[..3].iter().all(|r| r.1), "{results:?}");
    assert!(!results[3].1);
    assert_contains(
        &results[3].2,
        &[
            "delegation failed (delegation)",
            "max_fan_out = 3",
            "boss.toml",
        ],
    );
    assert_eq!(started(&out.events).len(), 3);
}

#[test]
fn the_depth_limit_refuses_with_the_chain() {
    let d = Daemon::start(Options::with_agents(&["tests/agents/recur.toml"])).unwrap();
    let out = d.run("recur", "go").unwrap();
    let answer = out.answer().expect("the tree answers");
    assert_contains(
        answer,
        &[
            "recur got: recur got: recur got: delegation to agent `recur` failed (delegation)",
            "depth limit: recur → recur → recur → recur would be 3 deep, and max_depth along this chain is 2",
        ],
    );
    let depths: Vec<u32> = started(&out.events).iter().map(|k| k.2).collect();
    assert_eq!(depths, [1, 2]);
}

#[test]
fn a_cycle_is_refused_unless_the_agent_allows_recursion() {
    let d = Daemon::start(Options::with_agents(&[
        "tests/agents/ping.toml",
        "tests/agents/pong.toml",
    ]))
    .unwrap();
    let out = d.run("ping", "hello").unwrap();
    assert_contains(
        out.answer().expect("answers"),
        &[
            "ping got: pong got: delegation to agent `ping` failed (delegation): cycle: ping → pong → ping comes back to agent `ping`",
            "allow_recursion",
        ],
    );
}

#[test]
fn a_crashed_or_hung_child_is_a_tool_error_and_the_parent_goes_on() {
    let d = team(&[]);
    let out = d.run("boss", "child fault panic").unwrap();
    let answer = out.answer().expect("the parent still answers");
    assert_contains(
        answer,
        &[
            "boss heard: delegation to agent `adder` failed (worker_crashed)",
            "agent `adder`",
            "injected fault: panic",
        ],
    );
    let out = d.run("boss", "child hangs").unwrap();
    let answer = out.answer().expect("the parent still answers");
    assert_contains(
        answer,
        &[
            "delegation to agent `hanger` failed (timeout)",
            "did not finish within 2000ms",
        ],
    );
    let pid = started(&out.events)[0].3;
    wait_gone(&[pid]);
    // The killed child is counted in the tree's usage.
    let Some(RunEvent::Finished { usage, .. }) = out.events.last() else {
        panic!()
    };
    let tree = usage.tree.as_ref().expect("a tree");
    assert_eq!((tree.descendants, tree.by_agent["hanger"].runs), (1, 1));
    // A child that runs into its own budget: a limit_exceeded tool error, and the parent,
    // which has budget left, answers.
    let out = d.run("boss", "overspend").unwrap();
    assert_contains(
        out.answer().expect("the parent still answers"),
        &[
            "delegation to agent `spender` failed (limit_exceeded): budget exceeded",
            "max_tokens",
        ],
    );
}

#[test]
fn a_child_killed_with_sigkill_is_a_tool_error_naming_it() {
    let d = team(&[]);
    let mut c = d.connect().unwrap();
    c.send(&ApiRequest::Run(RunRequest::new("boss", "long nap")))
        .unwrap();
    let mut events = Vec::new();
    let child_pid = loop {
        let ApiResponse::Event(e) = c.recv().unwrap() else {
            panic!()
        };
        let pid = match &e {
            RunEvent::Child(ch) => match &ch.event {
                RunEvent::LlmCall { .. } => started(&events).first().map(|k| k.3),
                _ => None,
            },
            _ => None,
        };
        events.push(e);
        if let Some(pid) = pid {
            break pid;
        }
    };
    caxton_tests::signal_pid(child_pid, nix::sys::signal::Signal::SIGKILL);
    let out = c.collect_run().unwrap();
    assert_contains(
        out.answer().expect("the parent still answers"),
        &[
            "delegation to agent `napper` failed (worker_crashed)",
            "SIGKILL",
            &child_pid.to_string(),
        ],
    );
}

#[test]
fn cancelling_the_root_kills_the_whole_tree() {
    let d = Daemon::start(Options::with_agents(&[
        "tests/agents/recur.toml",
        "tests/agents/napper.toml",
    ]))
    .unwrap();
    let mut c = d.connect().unwrap();
    c.send(&ApiRequest::Run(RunRequest::new("recur", "deep nap")))
        .unwrap();
    let mut events = Vec::new();
    loop {
        let ApiResponse::Event(e) = c.recv().unwrap() else {
            panic!()
        };
        let grandchild_calls = matches!(&e, RunEvent::Child(ch) if ch.depth == 2 && matches!(ch.event, RunEvent::LlmCall { .. }));
        events.push(e);
        if grandchild_calls {
            break;
        }
    }
    let mut pids: Vec<u32> = started(&events).iter().map(|k| k.3).collect();
    pids.push(match &events[0] {
        RunEvent::Started { worker_pid, .. } => *worker_pid,
        other => panic!("{other:?}"),
    });
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|p| process_exists(*p)));
    // `caxton status` shows the running tree: each run under the one that delegated it.
    let s = d.status().unwrap();
    assert_eq!(s.workers.len(), 3, "{:?}", s.workers);
    let root = s
        .workers
        .iter()
        .find(|w| w.parent_run_id.is_none())
        .unwrap();
    let child = s
        .workers
        .iter()
        .find(|w| w.parent_run_id.as_ref() == Some(&root.run_id))
        .unwrap();
    let grandchild = s
        .workers
        .iter()
        .find(|w| w.parent_run_id.as_ref() == Some(&child.run_id))
        .unwrap();
    assert_eq!(
        (
            root.agent.as_str(),
            child.agent.as_str(),
            grandchild.agent.as_str()
        ),
        ("recur", "recur", "napper")
    );
    let text = d.cli_ok(&["status"]);
    assert_contains(&text, &["  pid", "    pid", "      pid"]);
    drop(c); // the client goes away: the run is cancelled
    wait_gone(&pids);
    let s = d
        .wait_status("no run left", |s| s.workers.is_empty())
        .unwrap();
    assert!(s.workers.is_empty());
    // Every run of the tree ended in the counts, the children cut off with their parent too.
    let s = d
        .wait_status("every started run ended", |s| {
            let c = &s.counters;
            c.runs_started == 3 && c.runs_finished + c.runs_failed == 3
        })
        .unwrap();
    let napper = s.by_agent.iter().find(|a| a.agent == "napper").unwrap();
    assert_eq!(
        (napper.runs_started, napper.runs_failed),
        (1, 1),
        "{napper:?}"
    );
}

#[test]
fn a_child_gets_only_what_its_parent_has_left_and_the_tree_stays_in_budget() {
    let d = Daemon::start(Options::with_agents(&[
        "tests/agents/thrifty.toml",
        "tests/agents/chatty.toml",
    ]))
    .unwrap();
    let out = d.run("thrifty", "go").unwrap();
    let usage = match out.events.last() {
        Some(RunEvent::Finished { usage, .. } | RunEvent::Failed { usage, .. }) => usage,
        other => panic!("{other:?}"),
    };
    let tree = usage.tree.as_ref().expect("thrifty delegated");
    assert!(
        tree.total.total_tokens() <= 120,
        "the tree spent {} tokens of the root's 120: {tree:?}",
        tree.total.total_tokens()
    );
    // chatty would calculate for ever: it is stopped by the share it was given.
    let chatty_failure = children(&out.events)
        .into_iter()
        .find_map(|c| match &c.event {
            RunEvent::Failed { error, usage, .. } => Some((error.clone(), usage.clone())),
            _ => None,
        })
        .expect("chatty ran out of budget");
    assert_eq!(
        chatty_failure.0.kind,
        ErrorKind::LimitExceeded,
        "{chatty_failure:?}"
    );
    let own_before = usage.own();
    assert!(
        chatty_failure.1.total_tokens() + own_before.total_tokens() <= 120,
        "{chatty_failure:?}"
    );
}

#[test]
fn capability_routing_round_robin_and_least_loaded() {
    let d = Daemon::start(Options::with_agents(&[
        "tests/agents/router-round-robin.toml",
        "tests/agents/router-least-loaded.toml",
        "tests/agents/poet.toml",
        "tests/agents/accountant.toml",
    ]))
    .unwrap();
    let chosen = |out: &caxton_tests::RunOutcome| {
        out.events
            .iter()
            .find_map(|e| match e {
                RunEvent::Routed {
                    chosen, strategy, ..
                } => Some((chosen.clone(), strategy.clone())),
                _ => None,
            })
            .expect("a routing event")
    };
    let picks: Vec<String> = (0..3)
        .map(|_| {
            let out = d.run("router-round-robin", "anything").unwrap();
            assert!(out.answer().unwrap().starts_with("routed: "), "{out:?}");
            let (who, strategy) = chosen(&out);
            assert_eq!(strategy, "round_robin");
            who
        })
        .collect();
    assert_eq!(picks, ["accountant", "poet", "accountant"]);
    // The poet is busy with a slow run of its own: least_loaded picks the accountant.
    let mut busy = d.connect().unwrap();
    busy.start_run("poet", "slowly").unwrap();
    let out = d.run("router-least-loaded", "anything").unwrap();
    assert_eq!(chosen(&out).0, "accountant");
    let _ = busy.collect_run();
    let out = d.run("router-least-loaded", "anything").unwrap();
    assert_eq!(
        chosen(&out).0,
        "accountant",
        "a tie goes to the first by name"
    );
}

#[test]
fn best_match_routes_by_meaning_with_no_shared_word() {
    let d = Daemon::start(Options {
        extra_config: "[memory]\nenabled = true\n".into(),
        ..Options::with_agents(&[
            "tests/agents/router-best-match.toml",
            "tests/agents/poet.toml",
            "tests/agents/accountant.toml",
        ])
    })
    .unwrap();
    for (task, expected) in [
        ("compose a sonnet about autumn leaves", "poet"),
        ("what is the VAT on this receipt", "accountant"),
    ] {
        let out = d.run("router-best-match", task).unwrap();
        let (chosen, candidates) = out
            .events
            .iter()
            .find_map(|e| match e {
                RunEvent::Routed {
                    chosen, candidates, ..
                } => Some((chosen.clone(), candidates.clone())),
                _ => None,
            })
            .expect("a routing event");
        assert_eq!(chosen, expected, "{task}: {candidates:?}");
        assert_eq!(candidates.len(), 2);
        assert_contains(out.answer().unwrap(), &[&format!("{expected} ")]);
    }
}

#[test]
fn more_trees_than_slots_all_finish() {
    let d = Daemon::start(Options {
        extra_config: "[workers]\nmax_concurrent = 2\nqueue_capacity = 16\n".into(),
        ..Options::with_agents(TEAM)
    })
    .unwrap();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                let mut c = caxton_tests::Conn::connect(&socket).unwrap();
                c.send(&ApiRequest::Run(RunRequest::new("boss", "fan out")))
                    .unwrap();
                c.collect_run().unwrap()
            })
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert_eq!(
            root_results(&out.events).iter().filter(|r| r.1).count(),
            3,
            "{out:?}"
        );
    }
}

#[test]
fn hidden_children_still_count_in_the_usage() {
    let d = team(&[]);
    let mut req = RunRequest::new("boss", "ask adder: 2 + 2");
    req.hide_children = true;
    let out = d.run_req(req).unwrap();
    assert_eq!(out.answer(), Some("boss heard: The result is 4."));
    assert!(children(&out.events).is_empty());
    let Some(RunEvent::Finished { usage, .. }) = out.events.last() else {
        panic!()
    };
    assert_eq!(usage.tree.as_ref().unwrap().by_agent["adder"].runs, 1);
}

#[test]
fn the_cli_shows_the_tree_indented() {
    let d = team(&[]);
    let out = d.cli(&["agent", "run", "boss", "--input", "ask adder: 3 * 3"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "boss heard: The result is 9."
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_contains(
        &err,
        &[
            "▶ boss: run",
            "  tool delegate_to_adder {\"task\": \"3 * 3\"}",
            "    ▶ adder: run",
            "      tool calculate",
            "    ✓ adder answered in",
            "tree (1 delegated runs)",
            "agent adder: 1 runs",
        ],
    );
}

#[test]
fn a_recorded_tree_replays_with_no_provider_and_agent_tests_expect_delegations() {
    let d = Daemon::start(Options::with_agents(&[
        "tests/agents/recur.toml",
        "tests/agents/boss.toml",
        "tests/agents/adder.toml",
        "tests/agents/napper.toml",
        "tests/agents/hanger.toml",
    ]))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tree.json");
    let file_arg = file.to_str().unwrap();
    let out = d.cli(&[
        "agent", "run", "boss", "--input", "fan out", "--record", file_arg,
    ]);
    assert!(out.status.success(), "{out:?}");
    let recorded = String::from_utf8_lossy(&out.stdout).to_string();
    assert_contains(
        &String::from_utf8_lossy(&out.stderr),
        &["recorded 5 LLM exchanges (3 of them by 3 delegated runs)"],
    );
    let rec: caxton_ipc::recording::Recording =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let paths: Vec<&str> = rec.children.keys().map(String::as_str).collect();
    assert_eq!(paths, ["call_2_1", "call_2_2", "call_2_3"]);
    // A nested tree records its grandchildren under their paths.
    let nested = dir.path().join("nested.json");
    let out = d.cli(&[
        "agent",
        "run",
        "recur",
        "--input",
        "go",
        "--record",
        nested.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let rec: caxton_ipc::recording::Recording =
        serde_json::from_str(&std::fs::read_to_string(&nested).unwrap()).unwrap();
    let paths: Vec<&str> = rec.children.keys().map(String::as_str).collect();
    assert_eq!(paths, ["call_2", "call_2/call_2"]);

    // Replayed by a daemon whose provider answers nothing: the same tree, the same answer.
    let blind = Daemon::start(Options {
        rules: Some("tests/agents/empty-rules.toml".into()),
        ..Options::with_agents(TEAM)
    })
    .unwrap();
    let out = blind.cli(&["agent", "run", "boss", "--replay", file_arg]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), recorded);
    let replayed = String::from_utf8_lossy(&out.stderr);
    assert_eq!(replayed.matches("▶ napper: run").count(), 3, "{replayed}");

    // `caxton agent test` checks whom a run delegated to, in order.
    let cases = dir.path().join("boss-test.toml");
    std::fs::write(
        &cases,
        "agent = \"boss\"\n\n[[case]]\nname = \"fans out\"\ninput = \"fan out\"\nreplay = \"tree.json\"\nexpect_delegations = [\"napper\", \"napper\", \"napper\"]\nanswer_matches = [\"napped: three\"]\n\n[[case]]\nname = \"wrong team\"\ninput = \"fan out\"\nreplay = \"tree.json\"\nexpect_delegations = [\"adder\"]\n",
    )
    .unwrap();
    let out = blind.cli(&["agent", "test", cases.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_contains(
        &text,
        &[
            "ok    fans out",
            "FAIL  wrong team",
            "expected delegations to [adder], the run delegated to [napper, napper, napper]",
            "1 passed, 1 failed",
        ],
    );
}

#[test]
fn contract_net_awards_the_task_to_the_best_bid() {
    let d = Daemon::start(Options::with_agents(&[
        "tests/agents/router-contract-net.toml",
        "tests/agents/poet.toml",
        "tests/agents/accountant.toml",
    ]))
    .unwrap();
    for (task, winner, scores) in [
        ("write a sonnet", "poet", [-1.0, 0.9]),
        ("check this invoice", "accountant", [0.95, 0.1]),
    ] {
        let out = d.run("router-contract-net", task).unwrap();
        assert_eq!(
            out.answer(),
            Some(
                format!(
                    "routed: {winner} {} {task}",
                    if winner == "poet" {
                        "wrote:"
                    } else {
                        "computed:"
                    }
                )
                .as_str()
            ),
            "{out:?}"
        );
        let (chosen, candidates) = out
            .events
            .iter()
            .find_map(|e| match e {
                RunEvent::Routed {
                    chosen,
                    candidates,
                    strategy,
                    ..
                } if strategy == "contract_net" => Some((chosen.clone(), candidates.clone())),
                _ => None,
            })
            .expect("the award");
        assert_eq!(chosen, winner);
        let got: Vec<(String, f64)> = candidates.into_iter().map(|c| (c.agent, c.score)).collect();
        assert_eq!(
            got,
            [
                ("accountant".to_string(), scores[0]),
                ("poet".to_string(), scores[1])
            ]
        );
        // Two bids and the award, each a run of its own in the tree.
        let runs = started(&out.events);
        assert_eq!(runs.len(), 3, "{runs:?}");
        let bids = children(&out.events)
            .into_iter()
            .filter(|c| c.call_id.contains(".bid"))
            .filter(|c| matches!(c.event, RunEvent::Started { .. }))
            .count();
        assert_eq!(bids, 2);
    }
}

#[test]
fn the_data_team_example_aggregates_then_charts_each_in_its_own_process() {
    let d = Daemon::start(Options::with_agents(&[
        "agents/data-team.toml",
        "agents/csv-analyst.toml",
        "agents/chart-maker.toml",
    ]))
    .unwrap();
    let out = d
        .run(
            "data-team",
            "Total sales per region of this CSV:\nregion,sales\nnorth,120\nsouth,80\nnorth,30\neast,55",
        )
        .unwrap();
    assert_eq!(
        out.answer(),
        Some("Report: drew a bar chart of sales by region"),
        "{out:?}"
    );
    let agents: Vec<String> = started(&out.events).into_iter().map(|k| k.1).collect();
    assert_eq!(agents, ["csv-analyst", "chart-maker"]);
    let chart_call = children(&out.events)
        .into_iter()
        .find_map(|c| match &c.event {
            RunEvent::ToolCall {
                tool, arguments, ..
            } if tool == "chart_svg" => Some(arguments.clone()),
            _ => None,
        })
        .expect("the chart maker drew");
    assert_contains(&chart_call, &["north", "150", "south", "80", "east", "55"]);
}
