//! The `openai` and `anthropic` provider kinds through the real daemon, against a fake LLM server
//! on loopback (`caxton_tests::fake_llm`): streamed tool calls that really run the tool, the
//! retry policy (cut streams, 429 with Retry-After, 5xx, overload), fatal errors that are not
//! retried (a wrong key, a malformed reply), the attempt deadline against a server that never
//! answers, fallback to a second provider, and the key never appearing anywhere it should not.

use std::time::{Duration, Instant};

use caxton_ipc::api::{ErrorKind, RunEvent};
use caxton_tests::fake_llm::{FakeLlm, Reply, anthropic, openai, pieces};
use caxton_tests::{Daemon, Options, RunOutcome};
use serde_json::{Value, json};

/// The key the fake servers are configured with; it must never leak.
const KEY: &str = "sk-fake-0123456789-provider-test-key";
/// Provider settings of most tests: the key from the environment, fast retries.
const FAST: &str = "api_key_env = \"FAKE_KEY\"\nretries = 2\nbackoff = \"10ms\"\n";
const QUESTION: &str = "What is (2 + 3) * 7?";
const ANSWER: &str = "The result is 35.";
/// The arguments of the `calculate` call that answers QUESTION.
const QUESTION_ARGS: &str = r#"{"expression": "(2 + 3) * 7"}"#;

/// A daemon with `agent` (a `tests/agents/` file) and the given provider tables.
fn daemon(agent: &str, providers: &str) -> Daemon {
    Daemon::start(Options {
        extra_config: providers.to_string(),
        env: vec![("FAKE_KEY".into(), KEY.into())],
        ..Options::with_agents(&[&format!("tests/agents/{agent}.toml")])
    })
    .unwrap()
}

/// An OpenAI-style model's answer to QUESTION: a `calculate` call `call_id`, streamed `chunk` bytes
/// at a time, then ANSWER.
fn openai_answer(call_id: &str, chunk: usize) -> [Reply; 2] {
    [
        openai::tool_call(call_id, "calculate", QUESTION_ARGS, chunk),
        openai::text(ANSWER),
    ]
}

/// A daemon whose `llm-calc` agent has the fake server `llm` as its `primary` provider, of `kind`,
/// with the FAST settings.
fn calc_daemon(llm: &FakeLlm, kind: &str) -> Daemon {
    daemon("llm-calc", &llm.provider_toml("primary", kind, FAST))
}

/// Runs `Say the result.` through `llm-calc` with the fake server `llm` as its `openai` provider;
/// the run must answer ANSWER.
fn say_the_result(llm: &FakeLlm) -> (Daemon, RunOutcome) {
    let d = calc_daemon(llm, "openai");
    let out = d.run("llm-calc", "Say the result.").unwrap();
    assert_eq!(out.answer(), Some(ANSWER), "{out:?}");
    (d, out)
}

/// The run's failure message (panics when it did not fail).
fn failure(out: &RunOutcome) -> String {
    let error = out
        .failure()
        .unwrap_or_else(|| panic!("the run was expected to fail: {out:?}"));
    assert_eq!(error.kind, ErrorKind::Llm, "{error:?}");
    error.message.clone()
}

fn messages(body: &Value) -> &Vec<Value> {
    body["messages"].as_array().expect("a messages array")
}

#[test]
fn openai_streamed_tool_call_split_across_chunks_runs_the_tool_and_answers() {
    let llm = FakeLlm::start();
    // Written 7 bytes at a time: events, JSON strings and the arguments are all split.
    llm.push(openai_answer("call_calc_1", 7));
    let d = calc_daemon(&llm, "openai");
    let out = d.run_streamed("llm-calc", QUESTION).unwrap();
    assert_eq!(out.answer(), Some(ANSWER), "{out:?}");
    assert_eq!(out.streamed_text(), ANSWER);
    assert_eq!(
        out.tool_calls(),
        [("call_calc_1", "calculate", QUESTION_ARGS)]
    );
    assert_eq!(
        out.tool_results(),
        [("call_calc_1", "calculate", true, "35")]
    );
    match out.events.last() {
        Some(RunEvent::Finished { usage, .. }) => {
            assert_eq!((usage.prompt_tokens, usage.completion_tokens), (61, 27));
        }
        other => panic!("{other:?}"),
    }

    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let first = &reqs[0];
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(
        first.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(first.body["model"], "fake-model");
    assert_eq!(first.body["stream"], true);
    assert_eq!(first.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(first.body["tool_choice"], "auto");
    let tools = first.body["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["function"]["name"], "calculate");
    assert!(tools[0]["function"]["parameters"].is_object(), "{tools:?}");
    let sent = messages(&first.body);
    assert_eq!(sent[0]["role"], "system");
    assert_eq!(sent[1], json!({"role": "user", "content": QUESTION}));

    // The second request carries the call and the tool's result.
    let sent = messages(&reqs[1].body);
    let n = sent.len();
    assert_eq!(
        sent[n - 2]["tool_calls"],
        json!([{"id": "call_calc_1", "type": "function",
                "function": {"name": "calculate", "arguments": "{\"expression\": \"(2 + 3) * 7\"}"}}])
    );
    assert_eq!(
        sent[n - 1],
        json!({"role": "tool", "tool_call_id": "call_calc_1", "content": "35"})
    );
}

#[test]
fn ollama_style_calls_all_at_index_zero_with_new_ids_are_separate_calls() {
    let llm = FakeLlm::start();
    let call = |id: &str, expr: &str| {
        openai::chunk(
            json!({"role": "assistant", "content": "", "tool_calls": [{
                "id": id, "index": 0, "type": "function",
                "function": {"name": "calculate", "arguments": format!("{{\"expression\":\"{expr}\"}}")},
            }]}),
            None,
        )
    };
    // As Ollama streams: one chunk per whole call, both at index 0; no usage, and here no
    // `[DONE]` either (the finish_reason and the end of the body complete it).
    llm.push([
        Reply::Sse(vec![
            call("call_a", "1+1"),
            call("call_b", "2*3"),
            openai::chunk(
                json!({"role": "assistant", "content": ""}),
                Some("tool_calls"),
            ),
        ]),
        openai::text("2 and 6."),
    ]);
    let d = calc_daemon(&llm, "openai");
    let out = d.run("llm-calc", "1+1 and 2*3?").unwrap();
    assert_eq!(out.answer(), Some("2 and 6."), "{out:?}");
    assert_eq!(
        out.tool_results(),
        [
            ("call_a", "calculate", true, "2"),
            ("call_b", "calculate", true, "6")
        ]
    );
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2);
    let sent = messages(&reqs[1].body);
    let n = sent.len();
    assert_eq!(sent[n - 3]["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(sent[n - 2]["tool_call_id"], "call_a");
    assert_eq!(sent[n - 1]["tool_call_id"], "call_b");
}

#[test]
fn anthropic_tool_use_round_trip_after_overload_retries() {
    let llm = FakeLlm::start();
    let overloaded =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    llm.push([
        // 529, then the same error as an event of a started stream: both are retried.
        Reply::json(529, &overloaded),
        Reply::Sse(vec![anthropic::event(&overloaded)]),
        anthropic::tool_use(
            "toolu_01",
            "calculate",
            &["{\"expres", "sion\": \"(2 + 3)", " * 7\"}"],
            5,
        ),
        anthropic::text(ANSWER),
    ]);
    let d = calc_daemon(&llm, "anthropic");
    let out = d.run_streamed("llm-calc", QUESTION).unwrap();
    assert_eq!(out.answer(), Some(ANSWER), "{out:?}");
    assert_eq!(out.streamed_text(), format!("Let me calculate.{ANSWER}"));
    let retried = out.retries();
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert!(retried[0].2.contains("529"), "{retried:?}");
    assert!(retried[1].2.contains("Overloaded"), "{retried:?}");
    assert_eq!(out.tool_calls(), [("toolu_01", "calculate", QUESTION_ARGS)]);
    assert_eq!(out.tool_results(), [("toolu_01", "calculate", true, "35")]);

    let reqs = llm.requests();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    let first = &reqs[0];
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(first.header("x-api-key"), Some(KEY));
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(first.header("authorization"), None);
    assert_eq!(first.body["max_tokens"], 1024);
    assert_eq!(first.body["stream"], true);
    assert!(
        first.body["system"]
            .as_str()
            .unwrap()
            .contains("careful calculator")
    );
    assert_eq!(first.body["tools"][0]["name"], "calculate");
    assert!(first.body["tools"][0]["input_schema"].is_object());
    assert_eq!(first.body["tool_choice"], json!({"type": "auto"}));
    assert_eq!(
        messages(&first.body),
        &vec![json!({"role": "user", "content": [{"type": "text", "text": QUESTION}]})]
    );

    let sent = messages(&reqs[3].body);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(
        sent[1],
        json!({"role": "assistant", "content": [
            {"type": "text", "text": "Let me calculate."},
            {"type": "tool_use", "id": "toolu_01", "name": "calculate", "input": {"expression": "(2 + 3) * 7"}},
        ]})
    );
    assert_eq!(
        sent[2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "35", "is_error": false},
        ]})
    );
}

#[test]
fn a_stream_cut_off_mid_event_is_retried() {
    let llm = FakeLlm::start();
    let events = match openai::text(ANSWER) {
        Reply::Sse(events) => events,
        other => unreachable!("{other:?}"),
    };
    let whole = events.concat();
    // The connection dies in the middle of an event; then a body ends cleanly but before the
    // chunk with the finish_reason (and without `[DONE]`).
    let cut = whole.len() / 2;
    let early = pieces(&events[..events.len() - 2].concat(), 16);
    llm.push([
        Reply::CutOff(whole[..cut].to_vec()),
        Reply::Sse(early),
        openai::text(ANSWER),
    ]);
    let (d, out) = say_the_result(&llm);
    assert_eq!(llm.requests().len(), 3);
    let retried = out.retries();
    assert_eq!(
        retried.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        [("primary", 1), ("primary", 2)]
    );
    assert!(retried[0].2.contains("broke"), "{retried:?}");
    assert!(retried[1].2.contains("cut off"), "{retried:?}");
    let log = d.log_text();
    assert!(log.contains("retrying"), "{log}");
}

#[test]
fn malformed_replies_fail_clearly_without_retry() {
    let llm = FakeLlm::start();
    llm.push([
        Reply::raw(200, "application/json", "{\"choices\": [oops"),
        Reply::Sse(vec![b"data: {broken\n\n".to_vec()]),
    ]);
    let d = calc_daemon(&llm, "openai");
    let out = d.run("llm-calc", QUESTION).unwrap();
    let message = failure(&out);
    assert!(
        message.contains("not valid JSON") && message.contains("oops"),
        "{message}"
    );
    assert_eq!(llm.requests().len(), 1, "a malformed reply is not retried");

    let out = d.run("llm-calc", QUESTION).unwrap();
    let message = failure(&out);
    assert!(
        message.contains("not valid JSON") && message.contains("{broken"),
        "{message}"
    );
    assert_eq!(llm.requests().len(), 2);
}

#[test]
fn a_429_is_retried_after_its_retry_after() {
    let llm = FakeLlm::start();
    llm.push([
        Reply::json(
            429,
            &json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
        )
        .with_header("retry-after", "1"),
        openai::text(ANSWER),
    ]);
    let _ = say_the_result(&llm);
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2);
    // The configured backoff is 10 ms: a second's gap is the server's Retry-After.
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(900), "{gap:?}");
}

#[test]
fn a_500_is_retried() {
    let llm = FakeLlm::start();
    llm.push([
        Reply::json(
            500,
            &json!({"error": {"message": "The server had an error", "type": "server_error"}}),
        ),
        openai::text(ANSWER),
    ]);
    let (_d, out) = say_the_result(&llm);
    assert_eq!(llm.requests().len(), 2);
    let retried = out.retries();
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert!(
        retried[0].2.contains("HTTP 500") && retried[0].2.contains("The server had an error"),
        "{retried:?}"
    );
}

#[test]
fn a_server_that_never_answers_fails_within_the_attempt_deadline() {
    let llm = FakeLlm::start();
    llm.push([Reply::Hang]);
    let d = daemon(
        "llm-calc",
        &llm.provider_toml(
            "primary",
            "openai",
            "api_key_env = \"FAKE_KEY\"\nretries = 0\ntimeout = \"1s\"\n",
        ),
    );
    let started = Instant::now();
    let out = d.run("llm-calc", QUESTION).unwrap();
    let elapsed = started.elapsed();
    let message = failure(&out);
    assert!(message.contains("no complete answer within"), "{message}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_eq!(llm.requests().len(), 1);
    // Giving up dropped the request: the server sees its client go away.
    assert!(
        llm.wait_for(Duration::from_secs(5), |l| l.hangs_released() == 1),
        "the hanging request was not dropped"
    );
}

#[test]
fn a_wrong_key_fails_once_and_the_key_appears_nowhere() {
    let llm = FakeLlm::start();
    // The server echoes the key, as OpenAI's real 401 does (partly).
    llm.push([
        Reply::json(
            401,
            &json!({"error": {
                "message": format!("Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys."),
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }}),
        ),
        // Would answer a retry: there must be none.
        openai::text(ANSWER),
    ]);
    let d = calc_daemon(&llm, "openai");
    let out = d.run("llm-calc", QUESTION).unwrap();
    let message = failure(&out);
    assert!(
        message.contains("401")
            && message.contains("Incorrect API key provided")
            && message.contains("[redacted]"),
        "{message}"
    );
    assert_eq!(llm.requests().len(), 1, "a 401 is not retried");
    assert_eq!(llm.pending(), 1);
    assert_eq!(
        llm.requests()[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(!message.contains(KEY), "{message}");
    assert!(
        !format!("{out:?}").contains(KEY),
        "the key is in the events"
    );
    assert!(!d.log_text().contains(KEY), "the key is in the daemon log");
}

#[test]
fn a_failing_provider_falls_back_to_the_next() {
    let primary = FakeLlm::start();
    let unavailable = Reply::json(
        503,
        &json!({"error": {"message": "Service unavailable", "type": "server_error"}}),
    );
    primary.push([unavailable.clone(), unavailable]);
    let secondary = FakeLlm::start();
    secondary.push([anthropic::text(ANSWER)]);
    let config =
        primary.provider_toml(
            "primary",
            "openai",
            "api_key_env = \"FAKE_KEY\"\nretries = 1\nbackoff = \"10ms\"\n",
        ) + &secondary.provider_toml("secondary", "anthropic", "api_key = \"other-key\"\n");
    let d = daemon("llm-fallback", &config);
    let out = d.run("llm-fallback", "Say the result.").unwrap();
    assert_eq!(out.answer(), Some(ANSWER), "{out:?}");
    assert_eq!(primary.requests().len(), 2, "the first try and one retry");
    let reqs = secondary.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("x-api-key"), Some("other-key"));
    assert_eq!(reqs[0].body["model"], "fake-model");
    let fallbacks: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            RunEvent::LlmFallback { from, to, error } => Some((from, to, error)),
            _ => None,
        })
        .collect();
    assert_eq!(fallbacks.len(), 1, "{out:?}");
    assert_eq!(
        (fallbacks[0].0.as_str(), fallbacks[0].1.as_str()),
        ("primary", "secondary")
    );
    assert!(fallbacks[0].2.contains("503"), "{fallbacks:?}");
    assert!(
        out.events.iter().any(|e| matches!(e,
            RunEvent::LlmReply { provider, model, .. } if provider == "secondary" && model == "claude-fake")),
        "{out:?}"
    );
}

#[test]
fn a_cost_budget_caps_the_completion_and_stops_before_the_call_it_cannot_pay() {
    let llm = FakeLlm::start();
    llm.push(openai_answer("call_1", 64));
    // $1000 per million tokens = $0.001 a token, so the budget of $0.20 buys ~200 tokens.
    let priced = format!("{FAST}prompt_usd_per_mtok = 1000.0\ncompletion_usd_per_mtok = 1000.0\n");
    let d = daemon(
        "llm-budget",
        &llm.provider_toml("primary", "openai", &priced),
    );
    let out = d.run("llm-budget", QUESTION).unwrap();
    let error = out.expect_failure(ErrorKind::LimitExceeded, &["max_cost_usd"]);
    assert!(
        error.message.starts_with("budget exceeded:"),
        "{}",
        error.message
    );
    // One call was made and paid: the fake reports 50 prompt + 20 completion tokens, at $0.001.
    let Some(RunEvent::Failed { usage, .. }) = out.events.last() else {
        panic!("{out:?}")
    };
    assert_eq!(usage.llm_calls, 1);
    assert!((usage.cost_usd - 0.070).abs() < 1e-9, "{usage:?}");
    assert!(usage.cost_usd <= 0.2);
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 1, "the unaffordable call is never sent");
    // The first call's completion was capped to what the budget had left after its prompt.
    let cap = reqs[0].body["max_tokens"]
        .as_u64()
        .expect("a max_tokens cap");
    assert!((1..200).contains(&cap), "{cap}");
    // tool_choice naming a tool reaches the wire in OpenAI's shape.
    assert_eq!(
        reqs[0].body["tool_choice"],
        json!({"type": "function", "function": {"name": "calculate"}})
    );
}

#[test]
fn a_cancelled_run_drops_its_http_request() {
    let llm = FakeLlm::start();
    llm.push([Reply::Hang]);
    let slow = format!("{FAST}timeout = \"60s\"\n");
    let d = daemon("llm-calc", &llm.provider_toml("primary", "openai", &slow));
    let (c, _) = d.run_until_llm_call("llm-calc", QUESTION);
    assert!(
        llm.wait_for(Duration::from_secs(10), |l| l.requests().len() == 1),
        "the request reached the server"
    );
    // The client goes away: the run is cancelled, its worker killed, and the toolhost drops the
    // provider request instead of waiting out its 60 s attempt deadline.
    drop(c);
    assert!(
        llm.wait_for(Duration::from_secs(10), |l| l.hangs_released() == 1),
        "the server saw the request dropped"
    );
    assert!(
        d.log_text()
            .contains("chat cancelled: the worker went away")
    );
}
