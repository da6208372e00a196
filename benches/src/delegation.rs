//! Delegation and conversations, side by side in one run against one daemon (scripted LLM,
//! `benches/agents/`):
//! - one delegation hop: `b-parent` hands a calculation to `b-child` (two runs, two processes)
//!   against `b-single` doing the same calculation alone; the difference is the cost of a hop;
//! - a tree of depth 2 below the root and fan-out 4 (`b-tree0..2`: 21 worker processes) end to end;
//! - loading a 200-run conversation's history (`conversation show`: API → supervisor → memory
//!   service → SQLite → back), and a run continuing it against the same run outside it.

use std::time::{Duration, Instant};

use caxton_ipc::api::{ApiRequest, ApiResponse, RunEvent, RunRequest};
use caxton_ipc::conversation::ConversationOp;
use caxton_tests::{Daemon, Options};

use crate::{ms, summary};

const HOP_SAMPLES: usize = 300;
const TREE_SAMPLES: usize = 40;
const HISTORY_RUNS: usize = 200;
const LOAD_SAMPLES: usize = 300;

fn run(d: &Daemon, req: RunRequest, expect: &str) -> anyhow::Result<(Duration, Vec<RunEvent>)> {
    let t = Instant::now();
    let mut c = d.connect()?;
    c.send(&ApiRequest::Run(req))?;
    let out = c.collect_run()?;
    let elapsed = t.elapsed();
    anyhow::ensure!(
        out.answer().is_some_and(|a| a.starts_with(expect)),
        "bad run: {out:?}"
    );
    Ok((elapsed, out.events))
}

fn row(name: &str, v: Vec<Duration>) -> String {
    let (p50, p99, max) = summary(v);
    format!("| {name} | {} | {} | {} |\n", ms(p50), ms(p99), ms(max))
}

pub fn report() -> anyhow::Result<String> {
    let agents = [
        "b-single", "b-parent", "b-child", "b-tree0", "b-tree1", "b-tree2",
    ];
    let d = Daemon::start(Options {
        agents: agents
            .iter()
            .map(|a| format!("benches/agents/{a}.toml").into())
            .collect(),
        rules: Some("benches/agents/rules.toml".into()),
        faults: false,
        extra_config: "[workers]\nmax_concurrent = 8\nmax_delegated = 64\n".into(),
        env: vec![],
        local_model: false,
        private_module_cache: true,
        socket_activated: false,
        bin_dir: None,
    })?;
    let single = || RunRequest::new("b-single", "What is 6 * 7?");
    let parent = || RunRequest::new("b-parent", "What is 6 * 7?");
    for _ in 0..30 {
        run(&d, single(), "The result is 42.")?;
        run(&d, parent(), "The result is 42.")?;
    }
    // Alternating, so drift on the machine affects both alike.
    let (mut alone, mut hop) = (Vec::new(), Vec::new());
    for _ in 0..HOP_SAMPLES {
        alone.push(run(&d, single(), "The result is 42.")?.0);
        hop.push(run(&d, parent(), "The result is 42.")?.0);
    }
    let (alone_p50, ..) = summary(alone.clone());
    let (hop_p50, ..) = summary(hop.clone());
    let mut tree = Vec::new();
    let mut processes = 0;
    for _ in 0..TREE_SAMPLES {
        let (t, events) = run(&d, RunRequest::new("b-tree0", "go"), "tree done leaf")?;
        processes = 1 + events
            .iter()
            .filter(
                |e| matches!(e, RunEvent::Child(c) if matches!(c.event, RunEvent::Started { .. })),
            )
            .count();
        tree.push(t);
    }

    // A conversation of 200 runs, then its history loaded.
    let mut req = single();
    req.conversation = Some("new".into());
    let (_, events) = run(&d, req, "The result is 42.")?;
    let id = events
        .iter()
        .find_map(|e| match e {
            RunEvent::Conversation { id, .. } => Some(id.clone()),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("no conversation"))?;
    let in_conversation = || {
        let mut r = single();
        r.conversation = Some(id.clone());
        r
    };
    for _ in 1..HISTORY_RUNS {
        run(&d, in_conversation(), "The result is 42.")?;
    }
    let mut load = Vec::new();
    let mut entries = 0;
    for _ in 0..LOAD_SAMPLES {
        let t = Instant::now();
        let resp = d
            .connect()?
            .call(&ApiRequest::Conversation(ConversationOp::Show {
                id: id.clone(),
            }))?;
        load.push(t.elapsed());
        match resp {
            ApiResponse::Conversation(c) => entries = c.entries.len(),
            other => anyhow::bail!("{other:?}"),
        }
    }
    let (mut plain, mut continued) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        plain.push(run(&d, single(), "The result is 42.")?.0);
        // Each continuation adds a run; the history stays within the token budget.
        continued.push(run(&d, in_conversation(), "The result is 42.")?.0);
    }

    let mut out = String::new();
    out.push_str("### Delegation and conversations\n\n");
    out.push_str("End to end over the socket, milliseconds (scripted LLM; each run a fresh worker process).\n\n");
    out.push_str("| what | p50 | p99 | max |\n|---|---|---|---|\n");
    out.push_str(&row(
        &format!("b-single: one tool call in one run ({HOP_SAMPLES} runs)"),
        alone,
    ));
    out.push_str(&row(
        "b-parent: the same work delegated to b-child (one hop: 2 runs, 2 processes)",
        hop,
    ));
    out.push_str(&row(
        &format!("b-tree0: depth 2 below the root, fan-out 4 ({processes} processes, {TREE_SAMPLES} runs)"),
        tree,
    ));
    out.push_str(&row(
        &format!("load a {HISTORY_RUNS}-run conversation ({entries} entries) over the socket"),
        load,
    ));
    out.push_str(&row("b-single outside a conversation", plain));
    out.push_str(&row(
        "b-single continuing the conversation (history loaded, run appended)",
        continued,
    ));
    out.push_str(&format!(
        "\nAdded per hop (p50 of b-parent − p50 of b-single): {} ms (target ≤ 2 ms).\n",
        ms(hop_p50.saturating_sub(alone_p50))
    ));
    Ok(out)
}
