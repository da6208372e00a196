//! `caxton top`: a live view of the service for people. Every interval it asks the daemon for
//! its status and shows what changed since the last one: runs per second, the share that failed,
//! tokens and cost per minute, for the service and per agent, with each agent's p50 and p95 over
//! its last ended runs, and the runs in progress as trees (a delegated run under its parent). On
//! a terminal the screen is redrawn; otherwise each view is printed as plain text after the
//! last. A daemon that goes away (a restart) is said so, and watched again when it is back; its
//! counters start again, which the rates take into account.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use caxton_ipc::api::{AgentTotals, ApiRequest, ApiResponse, StatusReport, WorkerInfo};

use crate::client::Client;

/// What `caxton top` does.
#[derive(Debug, Clone, Copy)]
pub struct TopOptions {
    pub interval: Duration,
    /// Views to show before exiting (a "no answer" notice counts as one); `None` = until
    /// interrupted.
    pub iterations: Option<u32>,
}

/// A status connection that is opened again when the daemon went away (a restart in the
/// middle of watching it is shown, not fatal).
struct Watch<'a> {
    socket: &'a Path,
    client: Option<Client>,
}

impl Watch<'_> {
    fn status(&mut self) -> anyhow::Result<StatusReport> {
        let client = match &mut self.client {
            Some(c) => c,
            None => self.client.insert(Client::connect(self.socket)?),
        };
        match client.call(&ApiRequest::Status) {
            Ok(ApiResponse::Status(s)) => Ok(s),
            Ok(other) => anyhow::bail!("unexpected answer to a status request: {other:?}"),
            Err(e) => {
                self.client = None;
                Err(e.into())
            }
        }
    }
}

pub fn top(socket: &Path, options: TopOptions) -> anyhow::Result<u8> {
    let terminal = std::io::stdout().is_terminal();
    let mut watch = Watch {
        socket,
        client: None,
    };
    // The first answer must come: a wrong socket is an error, as for every command.
    let mut before = watch.status()?;
    let mut shown = 0;
    while options.iterations.is_none_or(|n| shown < n) {
        std::thread::sleep(options.interval);
        let mut out = std::io::stdout().lock();
        let now = match watch.status() {
            Ok(now) => now,
            Err(e) => {
                // Counted as a view, so `-n` ends even while the daemon stays away.
                writeln!(out, "(no answer from the daemon: {e:#}; trying again)")?;
                out.flush()?;
                shown += 1;
                continue;
            }
        };
        let view = render(&before, &now);
        if terminal {
            // Home and clear, then the view.
            write!(out, "\x1b[H\x1b[2J{view}")?;
        } else {
            writeln!(out, "{view}")?;
        }
        out.flush()?;
        before = now;
        shown += 1;
    }
    Ok(0)
}

/// Rates between two status reports of the same daemon.
struct Rates {
    runs_per_s: f64,
    /// Share of the runs that ended in the interval that failed, in percent.
    failed_pct: f64,
    tokens_per_min: f64,
    usd_per_min: f64,
}

fn rates(
    seconds: f64,
    (started, finished, failed): (u64, u64, u64),
    tokens: u64,
    usd: f64,
) -> Rates {
    let ended = finished + failed;
    Rates {
        runs_per_s: started as f64 / seconds,
        failed_pct: if ended == 0 {
            0.0
        } else {
            failed as f64 * 100.0 / ended as f64
        },
        tokens_per_min: tokens as f64 * 60.0 / seconds,
        usd_per_min: usd * 60.0 / seconds,
    }
}

/// The view of what happened between `before` and `now`.
pub fn render(before: &StatusReport, now: &StatusReport) -> String {
    // A restarted daemon starts its counters again: compare against zero then.
    let restarted = now.pid != before.pid || now.uptime_ms < before.uptime_ms;
    let seconds = if restarted {
        now.uptime_ms as f64 / 1000.0
    } else {
        now.uptime_ms.saturating_sub(before.uptime_ms) as f64 / 1000.0
    }
    .max(0.001);
    let empty = AgentTotals::default();
    let old: BTreeMap<&str, &AgentTotals> = if restarted {
        BTreeMap::new()
    } else {
        before
            .by_agent
            .iter()
            .map(|a| (a.agent.as_str(), a))
            .collect()
    };
    let mut out = String::new();
    let describe = caxton_supervisor::service::describe_state;
    let _ = writeln!(
        out,
        "caxton {} pid {} · up {} · workers {}/{} running, {} ready · queue {}/{}{}",
        now.version,
        now.pid,
        humantime::format_duration(Duration::from_secs(now.uptime_ms / 1000)),
        now.workers.len(),
        now.max_workers,
        now.ready_workers,
        now.queue_depth,
        now.queue_capacity,
        if now.draining { " · DRAINING" } else { "" }
    );
    let _ = writeln!(
        out,
        "toolhost {} · memory {}",
        describe(&now.toolhost),
        now.memory.as_ref().map_or("disabled".into(), describe)
    );
    let (c, b) = (&now.counters, &before.counters);
    let d = |n: u64, o: u64| if restarted { n } else { n.saturating_sub(o) };
    let all = rates(
        seconds,
        (
            d(c.runs_started, b.runs_started),
            d(c.runs_finished, b.runs_finished),
            d(c.runs_failed, b.runs_failed),
        ),
        d(
            c.prompt_tokens + c.completion_tokens,
            b.prompt_tokens + b.completion_tokens,
        ),
        (c.cost_usd - if restarted { 0.0 } else { b.cost_usd }).max(0.0),
    );
    let _ = writeln!(
        out,
        "all agents: {:.1} runs/s · {:.1}% failed · {:.0} tokens/min · ${:.4}/min (over {seconds:.1}s)\n",
        all.runs_per_s, all.failed_pct, all.tokens_per_min, all.usd_per_min
    );
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>7} {:>8} {:>8} {:>11} {:>10} {:>8}",
        "AGENT", "RUNS/S", "FAILED", "P50 ms", "P95 ms", "TOKENS/MIN", "USD/MIN", "RUNNING"
    );
    for a in &now.by_agent {
        let o = old.get(a.agent.as_str()).copied().unwrap_or(&empty);
        let r = rates(
            seconds,
            (
                a.runs_started.saturating_sub(o.runs_started),
                a.runs_finished.saturating_sub(o.runs_finished),
                a.runs_failed.saturating_sub(o.runs_failed),
            ),
            (a.prompt_tokens + a.completion_tokens)
                .saturating_sub(o.prompt_tokens + o.completion_tokens),
            (a.cost_usd - o.cost_usd).max(0.0),
        );
        let (p50, p95) = percentiles(&a.recent_ms);
        let running = now.workers.iter().filter(|w| w.agent == a.agent).count();
        let _ = writeln!(
            out,
            "{:<20} {:>8.1} {:>6.1}% {:>8} {:>8} {:>11.0} {:>10.4} {:>8}",
            a.agent,
            r.runs_per_s,
            r.failed_pct,
            p50.map_or("-".into(), |v| v.to_string()),
            p95.map_or("-".into(), |v| v.to_string()),
            r.tokens_per_min,
            r.usd_per_min,
            running
        );
    }
    let _ = writeln!(
        out,
        "(P50/P95: of each agent's last {} ended runs)",
        caxton_ipc::api::RECENT_DURATIONS
    );
    if !now.workers.is_empty() {
        let _ = writeln!(out, "\nRUNNING");
        tree(&mut out, &now.workers, None, 0);
    }
    out
}

/// The runs whose parent is `parent`, each followed by its own children, indented.
fn tree(out: &mut String, workers: &[WorkerInfo], parent: Option<&str>, depth: usize) {
    for w in workers
        .iter()
        .filter(|w| w.parent_run_id.as_deref() == parent)
    {
        let _ = writeln!(
            out,
            "{}{} {}  {}  pid {}  {:.1}s  {} llm, {} tool calls, {} tokens",
            "  ".repeat(depth),
            if depth == 0 { "▶" } else { "└" },
            w.agent,
            w.run_id,
            w.pid,
            w.age_ms as f64 / 1000.0,
            w.usage.llm_calls,
            w.usage.tool_calls,
            w.usage.prompt_tokens + w.usage.completion_tokens,
        );
        tree(out, workers, Some(&w.run_id), depth + 1);
    }
    // A child whose parent has no worker right now (between turns) is shown at the top level.
    if parent.is_none() {
        for w in workers.iter().filter(|w| {
            w.parent_run_id
                .as_deref()
                .is_some_and(|p| !workers.iter().any(|o| o.run_id == p))
        }) {
            let _ = writeln!(
                out,
                "└ {}  {} (of {})  pid {}  {:.1}s",
                w.agent,
                w.run_id,
                w.parent_run_id.as_deref().unwrap_or(""),
                w.pid,
                w.age_ms as f64 / 1000.0
            );
        }
    }
}

/// The 50th and 95th percentiles (nearest rank) of `ms`.
fn percentiles(ms: &[u64]) -> (Option<u64>, Option<u64>) {
    if ms.is_empty() {
        return (None, None);
    }
    let mut sorted = ms.to_vec();
    sorted.sort_unstable();
    let at =
        |p: f64| sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1];
    (Some(at(0.5)), Some(at(0.95)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentiles(&[]), (None, None));
        assert_eq!(percentiles(&[7]), (Some(7), Some(7)));
        let v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentiles(&v), (Some(50), Some(95)));
    }

    #[test]
    fn rates_are_per_second_and_per_minute_and_the_error_share_of_ended_runs() {
        let r = rates(2.0, (10, 6, 2), 1200, 0.5);
        assert_eq!(r.runs_per_s, 5.0);
        assert_eq!(r.failed_pct, 25.0);
        assert_eq!(r.tokens_per_min, 36_000.0);
        assert_eq!(r.usd_per_min, 15.0);
        assert_eq!(rates(1.0, (0, 0, 0), 0, 0.0).failed_pct, 0.0);
    }
}
