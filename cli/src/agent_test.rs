//! `caxton agent test FILE`: an agent's test cases, run through the daemon like any request, so
//! agents can be put under CI.
//!
//! A test file is TOML:
//!
//! ```toml
//! agent = "calculator"                 # default agent of the cases
//!
//! [[case]]
//! name = "multiplies"
//! input = "What is (2 + 3) * 7?"
//! replay = "calculator-multiplies.json" # answer the LLM calls from this recording (optional)
//! expect_tools = ["calculate"]          # the tools called, in order (optional)
//! expect_delegations = ["adder"]        # the agents delegated to, in call order (optional)
//! answer_matches = ["\\b35\\b"]          # regexes the answer must match (optional)
//! ```
//!
//! A case without `replay` runs against the agent's configured provider (deterministic with the
//! `scripted` one). `expect_error` (a regex) expects the run to fail with a matching message.
//! With `--update`, each case that names a recording is run live and its recording rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use caxton_ipc::api::{RunEvent, RunRequest};
use regex::Regex;
use serde::Deserialize;

use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::run_cli::{self, Collected};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    agent: Option<String>,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    agent: Option<String>,
    input: String,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    /// Recording that answers the LLM calls, relative to the test file.
    replay: Option<PathBuf>,
    expect_tools: Option<Vec<String>>,
    /// The agents delegated (or handed off) to, in the order of the calls.
    expect_delegations: Option<Vec<String>>,
    #[serde(default)]
    answer_matches: Vec<String>,
    expect_error: Option<String>,
}

/// Runs every case of `file`; exit 0 when all pass.
pub fn run(socket: &Path, file: &Path, update: bool) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the test file {}", file.display()))?;
    let tests: TestFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("invalid test file {}: {e}", file.display()))?;
    anyhow::ensure!(
        !tests.cases.is_empty(),
        "{} has no [[case]] tables",
        file.display()
    );
    let base = file.parent().unwrap_or(Path::new("."));
    let (mut passed, mut failed) = (0, 0);
    for case in &tests.cases {
        let agent = case
            .agent
            .as_deref()
            .or(tests.agent.as_deref())
            .with_context(|| format!("case `{}` names no agent (set `agent`)", case.name))?;
        match run_case(socket, base, agent, case, update)? {
            Ok(note) => {
                passed += 1;
                println!("ok    {} ({note})", case.name);
            }
            Err(problems) => {
                failed += 1;
                println!("FAIL  {}", case.name);
                for p in problems {
                    println!("      {p}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILED })
}

/// One case: `Ok(summary)` or the list of what did not hold.
fn run_case(
    socket: &Path,
    base: &Path,
    agent: &str,
    case: &Case,
    update: bool,
) -> anyhow::Result<Result<String, Vec<String>>> {
    let recording = case.replay.as_ref().map(|p| base.join(p));
    let replay = match (&recording, update) {
        (Some(path), false) => Some(run_cli::read_recording(path)?),
        _ => None,
    };
    let mut req = RunRequest::new(agent, &case.input);
    req.vars = case.vars.clone();
    req.record = update && recording.is_some();
    req.replay = replay;
    let collected = match run_cli::collect(socket, req, &mut |_| Ok(()))? {
        Ok(c) => c,
        Err(e) => return Ok(Err(vec![format!("the run was refused: {}", e.message)])),
    };
    let problems = check(case, &collected)?;
    if problems.is_empty()
        && let (Some(path), true) = (&recording, update)
    {
        run_cli::write_recording(path, &collected.recording(agent, &case.input))?;
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let calls = collected.tool_calls();
    let source = match (&recording, update) {
        (Some(p), false) => format!("replayed {}", p.display()),
        (Some(p), true) => format!("recorded to {}", p.display()),
        (None, _) => "live".to_string(),
    };
    Ok(Ok(format!("{source}; tools: [{}]", calls.join(", "))))
}

/// What the case expects and the run did not do.
fn check(case: &Case, run: &Collected) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let compile =
        |p: &str| Regex::new(p).with_context(|| format!("case `{}`: bad pattern `{p}`", case.name));
    match (run.terminal(), &case.expect_error) {
        (Some(RunEvent::Finished { answer, .. }), None) => {
            for p in &case.answer_matches {
                if !compile(p)?.is_match(answer) {
                    problems.push(format!(
                        "the answer does not match /{p}/: {}",
                        run_cli::one_line(answer, 300)
                    ));
                }
            }
        }
        (Some(RunEvent::Failed { error, .. }), Some(p)) => {
            if !compile(p)?.is_match(&error.message) {
                problems.push(format!(
                    "the run failed, but not with /{p}/: {}",
                    error.message
                ));
            }
        }
        (Some(RunEvent::Failed { error, .. }), None) => {
            problems.push(format!("the run failed: {}", error.message));
        }
        (Some(RunEvent::Finished { answer, .. }), Some(p)) => problems.push(format!(
            "expected a failure matching /{p}/, but it answered: {}",
            run_cli::one_line(answer, 300)
        )),
        _ => problems.push("the run ended without a terminal event".into()),
    }
    if let Some(expected) = &case.expect_tools {
        let called = run.tool_calls();
        if called != expected.iter().map(String::as_str).collect::<Vec<_>>() {
            problems.push(format!(
                "expected tool calls [{}], the run called [{}]",
                expected.join(", "),
                called.join(", ")
            ));
        }
    }
    if let Some(expected) = &case.expect_delegations {
        let delegated = run.delegations();
        if &delegated != expected {
            problems.push(format!(
                "expected delegations to [{}], the run delegated to [{}]",
                expected.join(", "),
                delegated.join(", ")
            ));
        }
    }
    Ok(problems)
}
