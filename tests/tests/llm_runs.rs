//! What a run does with its LLM: streamed tokens, tool_choice, budgets, usage in the final event
//! and in `caxton status`, record and replay, `caxton agent test`, and keys kept from workers.
//! The provider here is the scripted one (tests/agents/rules.toml), standing in for `local`.

use caxton_ipc::api::{ApiRequest, ApiResponse, ErrorKind, RunEvent, RunRequest, StatusReport};
use caxton_ipc::recording::Recording;
use caxton_tests::{Daemon, Options, assert_contains};

#[test]
fn streamed_tokens_add_up_to_the_answer_and_usage_is_reported() {
    let d = Daemon::start(Options::with_agents(&["agents/calculator.toml"])).unwrap();
    let out = d
        .run_streamed("calculator", "What is (2 + 3) * 7?")
        .unwrap();
    assert_eq!(out.answer(), Some("The result is 35."), "{out:?}");
    assert_eq!(out.streamed_text(), "The result is 35.");
    let tokens = out
        .events
        .iter()
        .filter(|e| matches!(e, RunEvent::Token { .. }))
        .count();
    assert!(tokens >= 4, "streamed word by word: {tokens} token events");
    let replies: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            RunEvent::LlmReply {
                provider,
                tool_calls,
                prompt_tokens,
                ..
            } => Some((provider.as_str(), *tool_calls, *prompt_tokens)),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!((replies[0].0, replies[0].1), ("local", 1));
    assert_eq!((replies[1].0, replies[1].1), ("local", 0));
    let RunEvent::Finished { usage, .. } = out.events.last().unwrap() else {
        panic!("{out:?}")
    };
    assert_eq!((usage.llm_calls, usage.tool_calls, usage.turns), (2, 1, 2));
    assert_eq!(usage.prompt_tokens, replies[0].2 + replies[1].2);
    assert!(usage.completion_tokens > 0);

    // `caxton agent run --json`: one event per line, tokens included, usage in the last.
    let cli = d.cli(&[
        "agent",
        "run",
        "calculator",
        "--input",
        "What is (2 + 3) * 7?",
        "--json",
    ]);
    assert!(cli.status.success(), "{cli:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&cli.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["event"]["token"]["text"].is_string()),
        "{lines:?}"
    );
    let last = &lines.last().unwrap()["event"]["finished"];
    assert_eq!(last["answer"], "The result is 35.");
    assert_eq!(last["usage"]["llm_calls"], 2);

    // Without `stream`, no token events.
    let out = d.run("calculator", "What is 6 * 7?").unwrap();
    assert_eq!(out.answer(), Some("The result is 42."));
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, RunEvent::Token { .. }))
    );

    // `caxton status` has the totals and the recent runs with their usage.
    let status: StatusReport = d.status().unwrap();
    assert_eq!(status.counters.llm_calls, 6);
    assert_eq!(status.counters.tool_calls, 3);
    assert!(status.counters.prompt_tokens >= usage.prompt_tokens);
    assert_eq!(status.recent_runs.len(), 3);
    assert_eq!(status.recent_runs[0].outcome, "finished");
    assert_eq!(status.recent_runs[0].usage.llm_calls, 2);
    assert_contains(
        &d.cli_ok(&["status"]),
        &["usage:    6 LLM calls, 3 tool calls", "recent runs"],
    );
}

#[test]
fn tool_choice_none_keeps_the_model_from_calling_tools() {
    let d = Daemon::start(Options::with_agents(&["tests/agents/no-tools.toml"])).unwrap();
    let out = d.run("no-tools", "What is 2 + 2?").unwrap();
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, RunEvent::ToolCall { .. })),
        "{out:?}"
    );
    assert!(out.answer().unwrap().contains("You said"), "{out:?}");
}

#[test]
fn a_token_budget_stops_the_run_before_the_call_that_would_pass_it() {
    let d = Daemon::start(Options::with_agents(&["tests/agents/budgeted.toml"])).unwrap();
    let out = d.run("budgeted", "What is (2 + 3) * 7?").unwrap();
    let err = out.expect_failure(ErrorKind::LimitExceeded, &["max_tokens"]);
    assert!(
        err.message.starts_with("budget exceeded:"),
        "{}",
        err.message
    );
    let RunEvent::Failed { usage, .. } = out.events.last().unwrap() else {
        panic!("{out:?}")
    };
    // The first call ran (and its tool call); the second was refused before it was made.
    assert_eq!((usage.llm_calls, usage.tool_calls), (1, 1), "{usage:?}");
    assert!(usage.total_tokens() <= 150, "{usage:?}");
    let replies = out
        .events
        .iter()
        .filter(|e| matches!(e, RunEvent::LlmReply { .. }))
        .count();
    assert_eq!(replies, 1);
    let status = d.status().unwrap();
    assert_eq!(status.recent_runs[0].outcome, "limit_exceeded");
    assert_eq!(status.recent_runs[0].usage.llm_calls, 1);
}

#[test]
fn a_recorded_run_replays_without_a_provider_and_divergence_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("calc.json");
    let rec_arg = recording.to_str().unwrap();
    {
        let d = Daemon::start(Options::with_agents(&["agents/calculator.toml"])).unwrap();
        let out = d.cli(&[
            "agent",
            "run",
            "calculator",
            "--input",
            "What is (2 + 3) * 7?",
            "--record",
            rec_arg,
        ]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "The result is 35.\n");
    }
    let rec: Recording =
        serde_json::from_str(&std::fs::read_to_string(&recording).unwrap()).unwrap();
    assert_eq!(rec.exchanges.len(), 2);
    assert_eq!(rec.input, "What is (2 + 3) * 7?");
    assert_eq!(rec.exchanges[0].reply.tool_calls[0].name, "calculate");

    // A daemon whose providers cannot answer this at all: only the recording can.
    let d = Daemon::start(Options {
        rules: Some("tests/agents/empty-rules.toml".into()),
        ..Options::with_agents(&["agents/calculator.toml"])
    })
    .unwrap();
    let live = d.run("calculator", "What is (2 + 3) * 7?").unwrap();
    assert!(live.failure().is_some(), "{live:?}");
    let out = d.cli(&["agent", "run", "calculator", "--replay", rec_arg]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "The result is 35.\n");

    // Another input: the first request already differs, and the difference is shown.
    let out = d.cli(&[
        "agent",
        "run",
        "calculator",
        "--replay",
        rec_arg,
        "--input",
        "What is (2 + 4) * 7?",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replay diverged at LLM call 1"), "{err}");
    assert!(
        err.contains("What is (2 + 3) * 7?") && err.contains("What is (2 + 4) * 7?"),
        "{err}"
    );

    // A replayed run over the socket API, as a script would send it.
    let mut c = d.connect().unwrap();
    let mut req = RunRequest::new("calculator", "What is (2 + 3) * 7?");
    req.replay = Some(rec);
    let resp = c.call(&ApiRequest::Run(req.clone())).unwrap();
    assert!(matches!(resp, ApiResponse::Event(RunEvent::Started { .. })));
    let out = c.collect_run().unwrap();
    assert_eq!(out.answer(), Some("The result is 35."), "{out:?}");
}

#[test]
fn agent_test_runs_cases_against_recordings_and_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Options::with_agents(&[
        "agents/calculator.toml",
        "agents/greeter.toml",
    ]))
    .unwrap();
    let file = dir.path().join("calculator.test.toml");
    std::fs::write(
        &file,
        r#"
agent = "calculator"

[[case]]
name = "multiplies"
input = "What is (2 + 3) * 7?"
replay = "multiplies.json"
expect_tools = ["calculate"]
answer_matches = ['\b35\b']

[[case]]
name = "greets"
agent = "greeter"
input = "Ada"
expect_tools = []
answer_matches = ["Ada"]
"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    // No recording yet: the case says so.
    let out = d.cli(&["agent", "test", path]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("multiplies.json"),
        "{out:?}"
    );
    // --update records it from the provider; then the cases pass against it.
    let out = d.cli(&["agent", "test", path, "--update"]);
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("multiplies.json").is_file());
    assert_contains(
        &d.cli_ok(&["agent", "test", path]),
        &["ok    multiplies (replayed", "2 passed, 0 failed"],
    );

    // A case whose expectations do not hold fails with what differed.
    std::fs::write(
        &file,
        r#"
agent = "calculator"
[[case]]
name = "wrong"
input = "What is (2 + 3) * 7?"
replay = "multiplies.json"
expect_tools = ["calculate", "calculate"]
answer_matches = ["36"]
"#,
    )
    .unwrap();
    let out = d.cli(&["agent", "test", path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_contains(
        &stdout,
        &[
            "FAIL  wrong",
            "does not match /36/",
            "expected tool calls [calculate, calculate], the run called [calculate]",
            "0 passed, 1 failed",
        ],
    );
}

#[test]
fn a_worker_never_holds_a_provider_key() {
    const KEY: &str = "sk-caxton-test-0123456789abcdef";
    let d = Daemon::start(Options {
        extra_config: "[providers.hosted]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key_env = \"CAXTON_TEST_KEY\"\n".into(),
        env: vec![("CAXTON_TEST_KEY".into(), KEY.into())],
        ..Options::with_agents(&["tests/agents/slow.toml"])
    })
    .unwrap();
    let (mut c, pid) = d.run_until_llm_call("slow", "hello");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let has_key = |bytes: &[u8]| bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes());
    assert!(!has_key(&environ), "the worker's environment holds the key");
    assert!(
        !has_key(&cmdline),
        "the worker's command line holds the key"
    );
    assert!(
        !String::from_utf8_lossy(&environ).contains("CAXTON_TEST_KEY"),
        "the worker's environment names the key variable"
    );
    let out = c.collect_run().unwrap();
    assert!(out.answer().is_some(), "{out:?}");
    // Neither the run's events nor the daemon's log carry it either.
    assert!(!format!("{out:?}").contains(KEY));
    assert!(!d.log_text().contains(KEY));
}

#[test]
fn the_embedded_model_runs_the_calculator_end_to_end() {
    let model = caxton_config::ServerConfig::default()
        .models_dir()
        .join(caxton_config::LOCAL_MODEL_FILE);
    if !model.is_file() {
        eprintln!(
            "SKIPPED: model not installed at {}, run scripts/setup.sh",
            model.display()
        );
        return;
    }
    let d = Daemon::start(Options {
        local_model: true,
        ..Options::with_agents(&["agents/calculator.toml"])
    })
    .unwrap();
    let out = d.run_streamed("calculator", "What is 12 * 7 + 3?").unwrap();
    let answer = out.answer().unwrap_or_else(|| panic!("{out:?}"));
    // Turn 1 is forced to call `calculate` with JSON arguments for its schema; turn 2 answers.
    let calls = out.tool_calls();
    let (_, tool, arguments) = calls.first().unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(*tool, "calculate");
    let args: serde_json::Value = serde_json::from_str(arguments).unwrap();
    assert!(args["expression"].is_string(), "{args}");
    assert_eq!(
        out.streamed_text().trim(),
        answer.trim(),
        "the answer was streamed"
    );
    let RunEvent::Finished { usage, .. } = out.events.last().unwrap() else {
        panic!("{out:?}")
    };
    assert_eq!((usage.llm_calls, usage.tool_calls), (2, 1));
    assert!(
        usage.prompt_tokens > 50 && usage.completion_tokens > 0,
        "{usage:?}"
    );
    let replies: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            RunEvent::LlmReply {
                provider, model, ..
            } => Some((provider.clone(), model.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(replies[0].0, "local");
    assert!(replies[0].1.contains("smollm2"), "{replies:?}");
}
