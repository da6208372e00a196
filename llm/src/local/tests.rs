//! Provider-level tests. The ones marked "real model" load the installed GGUF (DATA_DIR/models,
//! as `scripts/setup.sh` installs it) and skip, saying so, when it is absent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use caxton_config::{LOCAL_MODEL_FILE, LocalProviderConfig, ServerConfig};
use caxton_ipc::toolhost::{ChatMessage, ChatProgress, ChatRequest, ToolChoice, ToolSpec};
use tokio::sync::mpsc;

use super::engine::{self, Engine, Job, LoadOptions};
use super::*;
use crate::Progress;
use crate::test_support::request;

/// Real-model tests take turns: run in parallel they would share two cores, and the timing
/// assertions would measure each other.
static REAL_MODEL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The installed model, or `None` after printing why the test is skipped.
fn installed_model() -> Option<PathBuf> {
    let path = ServerConfig::default().models_dir().join(LOCAL_MODEL_FILE);
    if path.is_file() {
        return Some(path);
    }
    eprintln!(
        "SKIPPED: model not installed ({} is absent), run scripts/setup.sh",
        path.display()
    );
    None
}

/// A real-model test's turn: the installed model, a fresh cache directory, and the lock that keeps
/// the other real-model tests waiting until the test ends.
struct RealModel {
    model: PathBuf,
    cache: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl RealModel {
    /// Waits for the real model's turn; `None`, after saying why, when it is not installed.
    async fn turn() -> Option<RealModel> {
        let model = installed_model()?;
        let turn = REAL_MODEL.lock().await;
        Some(RealModel {
            model,
            cache: tempfile::tempdir().unwrap(),
            _turn: turn,
        })
    }

    /// The provider on the model, its converted weights kept in the cache.
    fn provider(&self) -> LocalProvider {
        provider(&self.model, self.cache.path())
    }

    /// The engine loaded directly, with Q8_0 weights kept in the cache and a 2048-token context.
    fn load_engine(&self) -> (Engine, engine::LoadReport) {
        Engine::load(&LoadOptions {
            path: self.model.clone(),
            cache_dir: self.cache.path().to_path_buf(),
            requantize_q8: true,
            context_tokens: 2048,
        })
        .unwrap()
    }
}

fn provider(model: &Path, cache: &Path) -> LocalProvider {
    let cfg = LocalProviderConfig {
        model_path: Some(model.to_path_buf()),
        ..LocalProviderConfig::default()
    };
    LocalProvider::new(&cfg, Path::new("/nonexistent/models"), cache)
}

/// Runs one attempt for `req`; returns its result and the text it streamed.
async fn complete(
    p: &LocalProvider,
    req: &ChatRequest,
) -> (Result<Completion, AttemptError>, String) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let progress = Progress::new(tx, req.stream);
    let a = Attempt {
        req,
        model: p.model_name(),
        deadline: Instant::now() + Duration::from_millis(req.timeout_ms),
        progress: &progress,
    };
    let result = p.complete(&a).await;
    drop(progress);
    let mut streamed = String::new();
    while let Some(ChatProgress::Text { text }) = rx.recv().await {
        streamed.push_str(&text);
    }
    (result, streamed)
}

fn calculate_tool() -> ToolSpec {
    ToolSpec {
        name: "calculate".into(),
        description: "Evaluates an arithmetic expression and returns its value.".into(),
        input_schema: r#"{"type":"object","properties":{"expression":{"type":"string","description":"the arithmetic expression"}},"required":["expression"]}"#.into(),
        server: "calc".into(),
    }
}

/// The calculator agent's first turn (agents/calculator.toml), with the call forced.
fn calculator_request(choice: ToolChoice, tools: Vec<ToolSpec>) -> ChatRequest {
    let mut req = request(
        vec![
            ChatMessage::System {
                content:
                    "You are a careful calculator. For any arithmetic, call the `calculate` tool \
                          with the expression and report its result; never compute in your head."
                        .into(),
            },
            ChatMessage::User {
                content: "What is (2 + 3) * 7?".into(),
            },
        ],
        &[],
    );
    req.tools = tools;
    req.tool_choice = choice;
    req.max_tokens = Some(32);
    req.timeout_ms = 120_000;
    req
}

/// Arguments `{"expression": …}` holding arithmetic. (SmolLM2-135M tends to copy `2 + 3` out of
/// `(2 + 3) * 7`: the model is weak, so the value's correctness is not asserted.)
fn assert_arithmetic(arguments: &str) {
    let args: serde_json::Value = serde_json::from_str(arguments).unwrap();
    let object = args.as_object().unwrap();
    assert_eq!(object.len(), 1, "{arguments}");
    let expression = object["expression"].as_str().unwrap();
    assert!(
        expression.chars().any(|c| c.is_ascii_digit())
            && expression.chars().all(|c| "0123456789+-*/(). ".contains(c)),
        "{arguments}"
    );
}

#[test]
fn model_name_defaults_to_the_lowercased_file_stem() {
    let p = LocalProvider::new(
        &LocalProviderConfig::default(),
        Path::new("/data/models"),
        Path::new("/cache"),
    );
    assert_eq!(p.model_name(), "smollm2-135m-instruct.q4_1");
    assert!(p.check_model("SmolLM2-135M-Instruct.Q4_1").is_ok());
    assert!(p.check_model("SmolLM2-135M-Instruct.Q4_1.gguf").is_ok());
    assert!(p.check_model("smollm2-135m-instruct").is_ok());
    assert!(matches!(
        p.check_model("gpt-4o"),
        Err(AttemptError::Fatal(m)) if m.contains("serves only")
    ));
    let named = LocalProvider::new(
        &LocalProviderConfig {
            model: Some("tiny".into()),
            ..LocalProviderConfig::default()
        },
        Path::new("/data/models"),
        Path::new("/cache"),
    );
    assert_eq!(named.model_name(), "tiny");
}

/// Real model: the tokenizer rebuilt from the GGUF metadata.
#[test]
fn real_gguf_tokenizer_round_trips_and_keeps_specials_whole() {
    let Some(model) = installed_model() else {
        return;
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(model).unwrap());
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader).unwrap();
    let tok = super::tokenizer::GgufTokenizer::from_metadata(&content.metadata).unwrap();
    let text = "Hello, world! What is (2 + 3) * 7?\n\tÜnïcödé ✓ 😀 {\"json\": [1, 2]}";
    let ids = tok.encode(text).unwrap();
    assert_eq!(tok.decode(&ids), text);
    assert!(ids.len() < text.len(), "merges apply: {ids:?}");
    let start = tok.special_id("<|im_start|>").unwrap();
    let end = tok.special_id("<|im_end|>").unwrap();
    assert_eq!((start, end, tok.eos()), (1, 2, 2));
    let ids = tok
        .encode_with_special("<|im_start|>user\nHi<|im_end|>\n")
        .unwrap();
    assert_eq!(ids.first(), Some(&start));
    assert_eq!(ids.iter().filter(|&&id| id == end).count(), 1);
    // SmolLM2 splits numbers into single digits.
    assert_eq!(tok.encode("2025").unwrap().len(), 4);
}

#[tokio::test]
async fn a_missing_model_fails_every_call_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.gguf");
    let p = provider(&missing, dir.path());
    let req = request(
        vec![ChatMessage::User {
            content: "hi".into(),
        }],
        &[],
    );
    for _ in 0..2 {
        match complete(&p, &req).await.0 {
            Err(AttemptError::Fatal(m)) => {
                assert!(m.contains(&missing.display().to_string()), "{m}");
                assert!(m.contains("run scripts/setup.sh"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_file_that_is_not_gguf_is_a_clear_fatal_error() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.gguf");
    std::fs::write(&bogus, b"not a model").unwrap();
    let p = provider(&bogus, dir.path());
    let req = request(vec![], &[]);
    match complete(&p, &req).await.0 {
        Err(AttemptError::Fatal(m)) => assert!(m.contains("not a readable GGUF"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Real model: free text (streamed, exact token counts, seeded sampling reproducible) and a
/// forced call for the calculator's schema, then the same call under `required` with a second
/// tool offered.
#[tokio::test]
async fn real_model_answers_text_and_forced_tool_calls() {
    let Some(real) = RealModel::turn().await else {
        return;
    };
    let p = real.provider();

    let mut req = request(
        vec![ChatMessage::User {
            content: "Name a colour of the sky.".into(),
        }],
        &[],
    );
    req.max_tokens = Some(8);
    req.stream = true;
    req.timeout_ms = 120_000;
    let (result, streamed) = complete(&p, &req).await;
    let c = result.unwrap();
    eprintln!("text answer: {:?} ({c:?})", c.content);
    let text = c.content.clone().unwrap();
    assert!(!text.trim().is_empty());
    assert_eq!(streamed, text);
    assert!(c.tool_calls.is_empty());
    assert!((1..=8).contains(&c.completion_tokens), "{c:?}");
    assert!(c.prompt_tokens > 10, "{c:?}");
    assert_eq!(c.model, "smollm2-135m-instruct.q4_1");

    // A seed makes sampling reproducible.
    req.temperature = Some(0.9);
    req.seed = Some(42);
    req.stream = false;
    let a = complete(&p, &req).await.0.unwrap();
    let b = complete(&p, &req).await.0.unwrap();
    assert_eq!(a.content, b.content);

    let forced = calculator_request(ToolChoice::Tool("calculate".into()), vec![calculate_tool()]);
    let c = complete(&p, &forced).await.0.unwrap();
    eprintln!("forced call: {:?}", c.tool_calls);
    assert_eq!(c.content, None);
    let [call] = c.tool_calls.as_slice() else {
        panic!("{c:?}")
    };
    assert_eq!(call.name, "calculate");
    assert!(call.id.starts_with("call_"));
    assert_arithmetic(&call.arguments);

    let mut weather = calculate_tool();
    weather.name = "get_weather".into();
    weather.description = "Returns the weather forecast for a city.".into();
    weather.input_schema =
        r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#.into();
    let required = calculator_request(ToolChoice::Required, vec![weather, calculate_tool()]);
    let c = complete(&p, &required).await.0.unwrap();
    eprintln!("required call: {:?}", c.tool_calls);
    assert_eq!(c.tool_calls.len(), 1);
    assert_eq!(c.tool_calls[0].name, "calculate");
    assert_arithmetic(&c.tool_calls[0].arguments);

    // The turn after the tool's result: text (or another call) under `auto`.
    let mut after = calculator_request(ToolChoice::Auto, vec![calculate_tool()]);
    after.messages.push(ChatMessage::Assistant {
        content: None,
        tool_calls: c.tool_calls.clone(),
    });
    after.messages.push(ChatMessage::Tool {
        call_id: c.tool_calls[0].id.clone(),
        name: "calculate".into(),
        content: "35".into(),
        is_error: false,
    });
    let c = complete(&p, &after).await.0.unwrap();
    eprintln!("after the result: {:?} {:?}", c.content, c.tool_calls);
    // Text or a call, not both.
    assert!(c.content.is_some() == c.tool_calls.is_empty(), "{c:?}");

    // The Q8_0 copy was written once, and a second load uses it.
    let (_, report) = real.load_engine();
    assert!(!report.converted, "{report:?}");
    assert!(report.weights.starts_with(real.cache.path()), "{report:?}");

    // A conversation longer than the context loses its oldest messages, not the answer.
    let small = LocalProvider::new(
        &LocalProviderConfig {
            model_path: Some(real.model.clone()),
            context_tokens: 64,
            ..LocalProviderConfig::default()
        },
        Path::new("/nonexistent/models"),
        real.cache.path(),
    );
    let mut messages = Vec::new();
    for i in 0..10 {
        messages.push(ChatMessage::User {
            content: format!("Question {i}: what is the weather like in Paris today?"),
        });
        messages.push(ChatMessage::Assistant {
            content: Some(format!("Answer {i}: it is sunny and warm in Paris.")),
            tool_calls: vec![],
        });
    }
    messages.push(ChatMessage::User {
        content: "And tomorrow?".into(),
    });
    let mut long_chat = request(messages, &[]);
    long_chat.max_tokens = Some(8);
    long_chat.timeout_ms = 120_000;
    let c = complete(&small, &long_chat).await.0.unwrap();
    assert!(c.prompt_tokens <= 56, "{c:?}");
    assert!(c.content.is_some(), "{c:?}");
}

/// Real model: a cancel flag or a deadline stops a generation between two tokens, and a dropped
/// attempt frees the model for the next call.
#[tokio::test]
async fn real_model_stops_on_cancel_and_deadline() {
    let Some(real) = RealModel::turn().await else {
        return;
    };
    let mut long = request(
        vec![ChatMessage::User {
            content: "Write a long story about a dragon.".into(),
        }],
        &[],
    );
    long.max_tokens = Some(2000);
    long.timeout_ms = 600_000;
    long.stream = true;

    // The engine: cancelled once its first text is out; then out of time.
    let (mut engine, _) = real.load_engine();
    let limits = engine::Limits {
        deadline: Instant::now() + Duration::from_secs(600),
        cancel: Arc::default(),
    };
    let job = Job::new(&long, limits.clone(), "call_1".into());
    let cancel = || limits.cancel.store(true, Ordering::Relaxed);
    match engine.run(&job, &|_| cancel()) {
        Err(AttemptError::Retryable { message, .. }) => assert_eq!(message, "cancelled"),
        other => panic!("{other:?}"),
    }
    let limits = engine::Limits {
        deadline: Instant::now() + Duration::from_millis(300),
        cancel: Arc::default(),
    };
    match engine.run(&Job::new(&long, limits, "call_2".into()), &|_| {}) {
        Err(AttemptError::Retryable { message, .. }) => assert!(message.contains("deadline")),
        other => panic!("{other:?}"),
    }
    drop(engine);

    // The provider: a dropped attempt does not keep the next one waiting for its 2000 tokens.
    let p = real.provider();
    let mut short = long.clone();
    short.max_tokens = Some(1);
    short.stream = false;
    complete(&p, &short).await.0.unwrap();
    let dropped = tokio::time::timeout(Duration::from_millis(300), complete(&p, &long)).await;
    assert!(dropped.is_err(), "2000 tokens in 300 ms?");
    let started = Instant::now();
    complete(&p, &short).await.0.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the dropped generation kept the model busy for {:?}",
        started.elapsed()
    );
}
