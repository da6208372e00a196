//! OpenTelemetry traces, end to end: a real OTLP/HTTP receiver on loopback (decoding the protobuf
//! with the official `opentelemetry-proto` definitions, tests/otlp_receiver.py) receives one trace
//! per run whose spans form the tree supervisor → worker → toolhost / memory service, named and
//! attributed after the GenAI conventions, under the caller's `traceparent`; a delegated run
//! hangs from its parent's call; a failed tool call and a failed LLM call mark their spans; the
//! provider sees the attempt's `traceparent`; no span holds the provider key or a prompt unless
//! content capture is on; and a hostile worker cannot flood the trace or leave its run's trace.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use caxton_ipc::api::{ErrorKind, RunRequest};
use caxton_tests::fake_llm::{FakeLlm, openai};
use caxton_tests::{Daemon, Options, bin, repo_root};
use serde_json::Value;

/// The provider key; it must never reach a span.
const KEY: &str = "sk-fake-0123456789-trace-test-key";
/// A caller's trace context.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The loopback OTLP receiver, writing the spans it decodes to a file.
struct Receiver {
    child: Child,
    port: u16,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spans.jsonl");
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/otlp_receiver.py"))
            .arg(&file)
            // scripts/setup.sh installs opentelemetry-proto there.
            .env("PYTHONPATH", repo_root().join("target/python"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the receiver did not start (run scripts/setup.sh for opentelemetry-proto): {line:?}")
        });
        Receiver {
            child,
            port,
            file,
            _dir: dir,
        }
    }

    /// The daemon config that exports here.
    fn config(&self, extra: &str) -> String {
        format!(
            "\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}\"\n{extra}\n",
            self.port
        )
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The spans of `trace` once `done` holds for them (each process exports on its own).
    fn trace(&self, trace: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let spans: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace)
                .collect();
            if done(&spans) {
                return spans;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "trace {trace} incomplete:\n{}",
                show(&spans)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A traced daemon: spans leave each process within 100 ms.
fn traced(receiver: &Receiver, mut opts: Options, extra: &str) -> Daemon {
    opts.extra_config.push_str(&receiver.config(extra));
    opts.env
        .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
    Daemon::start(opts).unwrap()
}

fn show(spans: &[Value]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} {} <- {} {} [{}] {}",
                s["executable"],
                s["span_id"],
                s["parent_span_id"],
                s["name"],
                s["kind"],
                s["status"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

/// The one span called `name`.
fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    match named(spans, name)[..] {
        [s] => s,
        _ => panic!("not exactly one `{name}`:\n{}", show(spans)),
    }
}

fn has(spans: &[Value], name: &str, n: usize) -> bool {
    named(spans, name).len() >= n
}

/// The span `id` names as its parent.
fn parent<'a>(spans: &'a [Value], child: &Value) -> &'a Value {
    spans
        .iter()
        .find(|s| s["span_id"] == child["parent_span_id"])
        .unwrap_or_else(|| panic!("no parent for {}:\n{}", child["name"], show(spans)))
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// The trace id of the run whose invoke_agent span is for `agent`, the newest first.
fn trace_of(receiver: &Receiver, agent: &str, skip: &HashSet<String>) -> String {
    let started = Instant::now();
    loop {
        if let Some(s) = receiver.spans().into_iter().find(|s| {
            s["name"] == format!("invoke_agent {agent}")
                && !skip.contains(s["trace_id"].as_str().unwrap())
        }) {
            return s["trace_id"].as_str().unwrap().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no run of {agent} traced"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_run_is_one_trace_across_every_process_under_the_callers_context() {
    let receiver = Receiver::start();
    let llm = FakeLlm::start();
    let d = traced(
        &receiver,
        Options {
            extra_config: llm.provider_toml(
                "primary",
                "openai",
                "api_key_env = \"FAKE_KEY\"\nretries = 0\n",
            ),
            env: vec![("FAKE_KEY".into(), KEY.into())],
            ..Options::with_agents(&[
                "tests/agents/llm-calc.toml",
                "tests/agents/boss.toml",
                "tests/agents/adder.toml",
                "agents/team-notes.toml",
            ])
        },
        "",
    );

    // 1. A run under the caller's trace: LLM → tool → LLM.
    llm.push([
        openai::tool_call("call_1", "calculate", r#"{"expression": "6 * 7"}"#, 64),
        openai::text("It is 42."),
    ]);
    let question = "What is six times seven, secretly?";
    let mut req = RunRequest::new("llm-calc", question);
    req.traceparent = Some(format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"));
    let out = d.run_req(req).unwrap();
    assert_eq!(out.answer(), Some("It is 42."), "{out:?}");
    let spans = receiver.trace(CALLER_TRACE, |s| {
        has(s, "invoke_agent llm-calc", 1)
            && has(s, "chat fake-model", 2)
            && has(s, "toolhost chat", 2)
            && has(s, "call_tool calculate", 1)
            && has(s, "turn 2", 1)
    });
    let run = one(&spans, "invoke_agent llm-calc");
    assert_eq!(
        run["parent_span_id"], CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(run["executable"], "caxton");
    assert_eq!(run["service"], "caxton");
    assert_eq!(attr(run, "gen_ai.operation.name"), "invoke_agent");
    assert_eq!(attr(run, "gen_ai.agent.name"), "llm-calc");
    assert_eq!(attr(run, "caxton.run_id"), out.run_id().unwrap());
    // Every other span hangs from another span of the run.
    let ids: HashSet<&Value> = spans.iter().map(|s| &s["span_id"]).collect();
    for s in &spans {
        assert!(
            s == run || ids.contains(&s["parent_span_id"]),
            "{} has no parent in the trace:\n{}",
            s["name"],
            show(&spans)
        );
    }
    // The worker's turns and calls (relayed through the supervisor).
    let tool = one(&spans, "execute_tool calculate");
    assert_eq!(attr(tool, "gen_ai.tool.name"), "calculate");
    assert_eq!(attr(tool, "gen_ai.tool.call.id"), "call_1");
    let turn1 = parent(&spans, tool);
    assert_eq!(turn1["name"], "turn 1");
    assert_eq!(parent(&spans, turn1), run);
    // The toolhost's WASM call under the worker's tool call.
    let wasm = one(&spans, "call_tool calculate");
    assert_eq!(wasm["executable"], "caxton-toolhost");
    assert_eq!(wasm["kind"], "server");
    assert_eq!(parent(&spans, wasm), tool);
    // Each LLM call: worker `chat` → toolhost `toolhost chat` → the provider attempt.
    let attempts = named(&spans, "chat fake-model");
    for attempt in &attempts {
        assert_eq!(attempt["kind"], "client");
        assert_eq!(attr(attempt, "gen_ai.operation.name"), "chat");
        assert_eq!(attr(attempt, "gen_ai.provider.name"), "openai");
        assert_eq!(attr(attempt, "gen_ai.request.model"), "fake-model");
        assert!(attr(attempt, "gen_ai.usage.input_tokens").is_string());
        let served = parent(&spans, attempt);
        assert_eq!(served["name"], "toolhost chat");
        let asked = parent(&spans, served);
        assert_eq!(
            (&asked["name"], &asked["executable"]),
            (&"chat".into(), &"caxton".into())
        );
        assert!(
            parent(&spans, asked)["name"]
                .as_str()
                .unwrap()
                .starts_with("turn ")
        );
    }
    // The provider saw each attempt's traceparent.
    let sent: Vec<String> = llm
        .requests()
        .iter()
        .map(|r| {
            r.header("traceparent")
                .expect("a traceparent header")
                .to_string()
        })
        .collect();
    for attempt in &attempts {
        let expected = format!(
            "00-{CALLER_TRACE}-{}-01",
            attempt["span_id"].as_str().unwrap()
        );
        assert!(sent.contains(&expected), "{expected} not in {sent:?}");
    }

    // 2. A delegation: the child's run hangs from the parent's call.
    let out = d.run("boss", "ask adder: 6 * 7").unwrap();
    assert!(out.answer().is_some(), "{out:?}");
    let mut seen = HashSet::from([CALLER_TRACE.to_string()]);
    let trace = trace_of(&receiver, "boss", &seen);
    let spans = receiver.trace(&trace, |s| {
        has(s, "invoke_agent adder", 1) && has(s, "call_tool calculate", 1)
    });
    let child = one(&spans, "invoke_agent adder");
    let call = parent(&spans, child);
    assert!(
        call["name"].as_str().unwrap().starts_with("execute_tool "),
        "{call}"
    );
    assert_eq!(
        parent(&spans, parent(&spans, call))["name"],
        "invoke_agent boss"
    );
    seen.insert(trace);

    // 3. Memory: the recall (a search that embeds the query) and the store, in the memory
    // service.
    let out = d.run("team-notes", "When do we ship?").unwrap();
    assert!(out.answer().is_some(), "{out:?}");
    let trace = trace_of(&receiver, "team-notes", &seen);
    let spans = receiver.trace(&trace, |s| {
        has(s, "memory recall", 1) && has(s, "memory store_interaction", 1) && has(s, "search", 1)
    });
    let recall = one(&spans, "memory recall");
    assert_eq!(recall["executable"], "caxton-memory");
    assert_eq!(parent(&spans, recall)["name"], "invoke_agent team-notes");
    let store = one(&spans, "memory store_interaction");
    assert_eq!(parent(&spans, store)["name"], "turn 1");
    let search = one(&spans, "search");
    assert_eq!(parent(&spans, search), recall);
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "embed" && parent(&spans, s) == search),
        "the query's embedding is part of the search:\n{}",
        show(&spans)
    );
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "embed" && parent(&spans, s) == store),
        "the stored interaction is embedded:\n{}",
        show(&spans)
    );
    seen.insert(trace);

    // 4. A failed tool call, then a failed LLM call (the fake server has no reply left: 400).
    llm.push([openai::tool_call(
        "call_2",
        "calculate",
        r#"{"expression": "6 *"}"#,
        64,
    )]);
    let out = d.run("llm-calc", "What is six times?").unwrap();
    out.expect_failure(ErrorKind::Llm, &[]);
    let trace = trace_of(&receiver, "llm-calc", &seen);
    let spans = receiver.trace(&trace, |s| {
        has(s, "chat fake-model", 2)
            && has(s, "call_tool calculate", 1)
            && has(s, "invoke_agent llm-calc", 1)
    });
    let error = |s: &Value| s["status"]["code"] == "error";
    let tool = one(&spans, "execute_tool calculate");
    assert!(error(tool), "{tool}");
    assert_eq!(attr(tool, "error.type"), "tool_error");
    assert!(error(one(&spans, "call_tool calculate")));
    let failed: Vec<&Value> = named(&spans, "chat fake-model")
        .into_iter()
        .filter(|s| error(s))
        .collect();
    assert_eq!(failed.len(), 1, "{}", show(&spans));
    assert_eq!(attr(failed[0], "error.type"), "error");
    assert!(
        error(parent(&spans, failed[0])),
        "the toolhost's chat failed too"
    );
    let run = one(&spans, "invoke_agent llm-calc");
    assert!(error(run));
    assert_eq!(attr(run, "error.type"), "llm");
    // The run's log lines name its trace.
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("run failed") && l.contains(&trace)),
        "no log line of the failed run names trace {trace}:\n{log}"
    );
    seen.insert(trace);

    // 5. A malformed traceparent is ignored: the run works and starts a trace of its own.
    llm.push([openai::text("Fine.")]);
    let mut req = RunRequest::new("llm-calc", "hello");
    req.traceparent = Some("00-not-a-trace-01".into());
    assert_eq!(d.run_req(req).unwrap().answer(), Some("Fine."));
    let trace = trace_of(&receiver, "llm-calc", &seen);
    let spans = receiver.trace(&trace, |s| has(s, "invoke_agent llm-calc", 1));
    assert_eq!(one(&spans, "invoke_agent llm-calc")["parent_span_id"], "");
    seen.insert(trace);

    // 6. A caller's unsampled context is followed: nothing of that trace is exported, in any
    // process, and the run works.
    llm.push([openai::text("Quietly.")]);
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let mut req = RunRequest::new("llm-calc", "hello");
    req.traceparent = Some(format!("00-{unsampled}-b7ad6b7169203331-00"));
    assert_eq!(d.run_req(req).unwrap().answer(), Some("Quietly."));
    assert!(
        llm.requests()
            .last()
            .and_then(|r| r.header("traceparent"))
            .is_none_or(|t| t.ends_with("-00")),
        "an unsampled run's provider request does not claim to be sampled"
    );

    // Nothing secret or prompted anywhere: capture is off by default.
    std::thread::sleep(Duration::from_millis(300));
    let everything = std::fs::read_to_string(&receiver.file).unwrap();
    assert!(
        !everything.contains(unsampled),
        "an unsampled run was exported"
    );
    for secret in [KEY, question, "When do we ship?", "6 * 7", "It is 42."] {
        assert!(!everything.contains(secret), "`{secret}` reached a span");
    }
}

#[test]
fn content_capture_puts_prompts_and_tool_payloads_on_spans_only_when_switched_on() {
    let receiver = Receiver::start();
    // The collector's key comes from the standard variable, never from caxton.toml.
    let opts = Options {
        env: vec![(
            "OTEL_EXPORTER_OTLP_HEADERS".into(),
            "authorization=Bearer%20collector-key".into(),
        )],
        ..Options::default()
    };
    let d = traced(&receiver, opts, "capture_content = true");
    let out = d.run("calculator", "What is (2 + 3) * 7?").unwrap();
    assert!(out.answer().is_some(), "{out:?}");
    let trace = trace_of(&receiver, "calculator", &HashSet::new());
    let spans = receiver.trace(&trace, |s| {
        has(s, "execute_tool calculate", 1) && has(s, "turn 2", 1)
    });
    let chats = named(&spans, "chat");
    assert!(
        chats.iter().any(|c| attr(c, "gen_ai.input.messages")
            .as_str()
            .is_some_and(|m| m.contains("What is (2 + 3) * 7?"))),
        "{}",
        show(&spans)
    );
    assert!(
        chats
            .iter()
            .all(|c| attr(c, "gen_ai.output.messages").is_string())
    );
    let tool = one(&spans, "execute_tool calculate");
    assert!(
        attr(tool, "gen_ai.tool.call.arguments")
            .as_str()
            .unwrap()
            .contains("(2 + 3) * 7")
    );
    assert_eq!(attr(tool, "gen_ai.tool.call.result"), "35");
    // Every process sent the header.
    for s in &spans {
        assert_eq!(s["headers"]["authorization"], "Bearer collector-key", "{s}");
    }
}

#[test]
fn a_hostile_worker_cannot_flood_its_trace_or_leave_it() {
    let receiver = Receiver::start();
    let d = traced(
        &receiver,
        Options::with_config(format!(
            "[workers]\nbinary = \"{}\"\nwarm = 0\n",
            bin("hostile-worker").display()
        )),
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = d.run("calculator", dir.path().to_str().unwrap()).unwrap();
    let report: Value = serde_json::from_str(out.answer().expect("the probe's report")).unwrap();
    assert_eq!(report["spans_sent"], 1200, "{report}");
    // Its forged spans went out, in its run's trace only, bounded and re-parented.
    let trace = trace_of(&receiver, "calculator", &HashSet::new());
    let spans = receiver.trace(&trace, |s| {
        has(s, "forged", caxton_ipc::trace::MAX_RELAYED_SPANS)
    });
    std::thread::sleep(Duration::from_millis(500));
    let all = receiver.spans();
    let forged: Vec<&Value> = all.iter().filter(|s| s["name"] == "forged").collect();
    assert_eq!(
        forged.len(),
        caxton_ipc::trace::MAX_RELAYED_SPANS,
        "at most this many per run"
    );
    let run = one(&spans, "invoke_agent calculator");
    let mut by_parent: HashMap<&Value, usize> = HashMap::new();
    for s in &forged {
        assert_eq!(
            s["trace_id"], trace,
            "a worker cannot place spans in another trace"
        );
        *by_parent.entry(&s["parent_span_id"]).or_default() += 1;
        assert!(
            s["attributes"].as_object().unwrap().len()
                <= caxton_ipc::trace::MAX_SPAN_ATTRIBUTES + 1
        );
        for v in s["attributes"].as_object().unwrap().values() {
            assert!(v.as_str().map_or(0, str::len) <= caxton_ipc::trace::MAX_ATTRIBUTE_LEN);
        }
    }
    // Unknown parents hang from the run's span.
    assert_eq!(
        by_parent.keys().copied().collect::<Vec<_>>(),
        [&run["span_id"]]
    );
    // The daemon is fine: the next run works.
    assert!(d.cli_ok(&["health"]).contains("ready"));
}
