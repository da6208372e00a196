//! The run table: the runs with a worker right now (agent, pid, age, usage followed live from
//! their events), the last ended ones, and the service's cumulative counters, all as
//! `caxton status` shows them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use caxton_ipc::api::{
    AgentTotals, Counters, RECENT_DURATIONS, RunEvent, RunSummary, RunUsage, WorkerInfo,
};

/// Ended runs kept for `caxton status`.
pub const RECENT_RUNS: usize = 20;

/// A counter of the service, bumped where the thing happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    RunTimedOut,
    WorkerCrashed,
    BusyRejection,
    ConnectionRejected,
}

/// A run that has a worker right now.
#[derive(Debug, Clone)]
struct Running {
    agent: String,
    /// Set for a delegated run.
    parent_run_id: Option<String>,
    pid: u32,
    started: Instant,
    /// Followed live from the run's events.
    usage: RunUsage,
}

/// Cumulative counters (costs in nano-dollars, so they add up atomically).
#[derive(Debug, Default)]
struct Stats {
    runs_started: AtomicU64,
    runs_finished: AtomicU64,
    runs_failed: AtomicU64,
    runs_timed_out: AtomicU64,
    workers_crashed: AtomicU64,
    busy_rejections: AtomicU64,
    connections_rejected: AtomicU64,
    llm_calls: AtomicU64,
    tool_calls: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cost_nano_usd: AtomicU64,
}

#[derive(Debug, Default)]
pub struct RunTable {
    /// Runs with a worker, by run id.
    running: Mutex<BTreeMap<String, Running>>,
    /// The last [`RECENT_RUNS`] ended runs, newest first.
    recent: Mutex<VecDeque<RunSummary>>,
    stats: Stats,
    /// Totals per agent (names of loaded agents only, so the map stays bounded).
    by_agent: Mutex<BTreeMap<String, AgentTotals>>,
    /// Numbers the run ids of this process.
    seq: AtomicU64,
}

/// Takes a run out of the table of running ones when dropped (the run ended, however it ended).
#[derive(Debug)]
pub struct Registered<'a> {
    table: &'a RunTable,
    run_id: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.table.lock_running().remove(&self.run_id);
    }
}

impl RunTable {
    fn lock_running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn agent_totals(&self, agent: &str, change: impl FnOnce(&mut AgentTotals)) {
        let mut all = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        let totals = match all.get_mut(agent) {
            Some(t) => t,
            None => all.entry(agent.to_string()).or_insert_with(|| AgentTotals {
                agent: agent.to_string(),
                ..AgentTotals::default()
            }),
        };
        change(totals);
    }

    /// Each agent's totals, for `caxton status` and `caxton top`.
    pub fn by_agent(&self) -> Vec<AgentTotals> {
        let all = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        all.values().cloned().collect()
    }

    /// A new run id for a run of `agent` (and the run counted as started).
    pub fn start_run(&self, agent: &str) -> String {
        self.stats.runs_started.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::RUNS_STARTED, "agent" => agent.to_string()).increment(1);
        self.agent_totals(agent, |t| t.runs_started += 1);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("run-{ms:x}-{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// The next number for an operator's request (audited as `op-<pid>-<n>`).
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Enters a run whose worker `pid` took the job; it leaves when the guard drops.
    pub fn register(
        &self,
        run_id: &str,
        agent: &str,
        parent_run_id: Option<&str>,
        pid: u32,
    ) -> Registered<'_> {
        self.lock_running().insert(
            run_id.to_string(),
            Running {
                agent: agent.to_string(),
                parent_run_id: parent_run_id.map(str::to_string),
                pid,
                started: Instant::now(),
                usage: RunUsage::default(),
            },
        );
        Registered {
            table: self,
            run_id: run_id.to_string(),
        }
    }

    /// Counts an event of a running run into its live usage.
    pub fn count_event(&self, run_id: &str, event: &RunEvent) {
        if let Some(r) = self.lock_running().get_mut(run_id) {
            r.usage.count(event);
        }
    }

    /// Runs with a worker right now.
    pub fn running(&self) -> usize {
        self.lock_running().len()
    }

    /// Runs of `agent` with a worker right now.
    pub fn running_of(&self, agent: &str) -> usize {
        self.lock_running()
            .values()
            .filter(|r| r.agent == agent)
            .count()
    }

    /// What a running run has used so far (default once it has left the table).
    pub fn live_usage(&self, run_id: &str) -> RunUsage {
        self.lock_running()
            .get(run_id)
            .map(|r| r.usage.clone())
            .unwrap_or_default()
    }

    pub fn count(&self, what: Count) {
        let c = match what {
            Count::RunTimedOut => &self.stats.runs_timed_out,
            Count::WorkerCrashed => &self.stats.workers_crashed,
            Count::BusyRejection => {
                crate::metrics::rejected("busy");
                &self.stats.busy_rejections
            }
            Count::ConnectionRejected => {
                metrics::counter!(crate::metrics::CONNECTIONS_REJECTED).increment(1);
                &self.stats.connections_rejected
            }
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an ended run (its run id was given at `started`): its outcome and usage into the
    /// totals and the metrics, its summary into the recent list.
    pub fn record_ended(&self, agent: &str, terminal: &RunEvent, started: Instant) {
        let took = started.elapsed().as_secs_f64();
        let (run_id, outcome, usage) = match terminal {
            RunEvent::Finished { run_id, usage, .. } => {
                self.stats.runs_finished.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::RUNS_FINISHED, "agent" => agent.to_string())
                    .increment(1);
                metrics::histogram!(crate::metrics::RUN_DURATION, "agent" => agent.to_string(), "outcome" => "finished")
                    .record(took);
                (run_id, "finished".to_string(), usage)
            }
            RunEvent::Failed {
                run_id,
                error,
                usage,
            } => {
                self.stats.runs_failed.fetch_add(1, Ordering::Relaxed);
                let kind = error.kind.as_str();
                metrics::counter!(crate::metrics::RUNS_FAILED, "agent" => agent.to_string(), "error_kind" => kind.clone())
                    .increment(1);
                metrics::histogram!(crate::metrics::RUN_DURATION, "agent" => agent.to_string(), "outcome" => "failed")
                    .record(took);
                (run_id, kind, usage)
            }
            _ => return,
        };
        let finished = matches!(terminal, RunEvent::Finished { .. });
        self.agent_totals(agent, |t| {
            if finished {
                t.runs_finished += 1;
            } else {
                t.runs_failed += 1;
            }
            t.prompt_tokens += usage.prompt_tokens;
            t.completion_tokens += usage.completion_tokens;
            t.cost_usd += usage.cost_usd;
            if t.recent_ms.len() == RECENT_DURATIONS {
                t.recent_ms.remove(0);
            }
            t.recent_ms.push((took * 1000.0).round() as u64);
        });
        let s = &self.stats;
        let add = |c: &AtomicU64, v: u64| c.fetch_add(v, Ordering::Relaxed);
        add(&s.llm_calls, usage.llm_calls.into());
        add(&s.tool_calls, usage.tool_calls.into());
        add(&s.prompt_tokens, usage.prompt_tokens);
        add(&s.completion_tokens, usage.completion_tokens);
        add(&s.cost_nano_usd, (usage.cost_usd * 1e9).round() as u64);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_RUNS {
            recent.pop_back();
        }
        recent.push_front(RunSummary {
            run_id: run_id.clone(),
            agent: agent.to_string(),
            outcome,
            usage: usage.clone(),
            ended_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
    }

    /// The runs with a worker, for `caxton status`.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let now = Instant::now();
        self.lock_running()
            .iter()
            .map(|(id, w)| WorkerInfo {
                run_id: id.clone(),
                agent: w.agent.clone(),
                parent_run_id: w.parent_run_id.clone(),
                pid: w.pid,
                age_ms: now.duration_since(w.started).as_millis() as u64,
                usage: RunUsage {
                    wall_ms: now.duration_since(w.started).as_millis() as u64,
                    ..w.usage.clone()
                },
            })
            .collect()
    }

    /// The last ended runs, newest first.
    pub fn recent(&self) -> Vec<RunSummary> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The counters (`toolhost_restarts` is the caller's to fill).
    pub fn counters(&self) -> Counters {
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            runs_started: load(&s.runs_started),
            runs_finished: load(&s.runs_finished),
            runs_failed: load(&s.runs_failed),
            runs_timed_out: load(&s.runs_timed_out),
            workers_crashed: load(&s.workers_crashed),
            busy_rejections: load(&s.busy_rejections),
            toolhost_restarts: 0,
            connections_rejected: load(&s.connections_rejected),
            llm_calls: load(&s.llm_calls),
            tool_calls: load(&s.tool_calls),
            prompt_tokens: load(&s.prompt_tokens),
            completion_tokens: load(&s.completion_tokens),
            cost_usd: load(&s.cost_nano_usd) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_ipc::api::{ErrorBody, ErrorKind};

    #[test]
    fn a_run_is_listed_while_registered_and_summarised_when_it_ends() {
        let t = RunTable::default();
        let id = t.start_run("calc");
        {
            let _r = t.register(&id, "calc", None, 42);
            t.count_event(
                &id,
                &RunEvent::ToolCall {
                    call_id: "c".into(),
                    tool: "t".into(),
                    arguments: "{}".into(),
                },
            );
            assert_eq!(t.workers().len(), 1);
            assert_eq!(t.live_usage(&id).tool_calls, 1);
        }
        assert!(t.workers().is_empty());
        t.record_ended(
            "calc",
            &RunEvent::Failed {
                run_id: id.clone(),
                error: ErrorBody::new(ErrorKind::Timeout, "slow"),
                usage: RunUsage {
                    tool_calls: 1,
                    ..RunUsage::default()
                },
            },
            Instant::now(),
        );
        let c = t.counters();
        assert_eq!((c.runs_started, c.runs_failed, c.tool_calls), (1, 1, 1));
        assert_eq!(t.recent()[0].outcome, "timeout");
    }
}
