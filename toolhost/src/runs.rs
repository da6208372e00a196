//! Per-run capabilities: the grants the supervisor registers for each run (under a random token
//! that only the run's worker receives), and what each run has spent against them.
//!
//! A worker's connection is bound to its run's grant by `Attach`; from then on the toolhost
//! decides from the grant, never from the worker's requests, which tools and providers it may
//! use, how much it may still spend, and under which agent and run id its calls are audited. A
//! revoked grant (the run ended) refuses everything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::toolhost::{ChatBudget, ChatReply, ChatRequest, RunGrant};

/// Most runs registered at once; more is a supervisor bug, refused rather than grown.
pub const MAX_RUNS: usize = 65_536;

/// One registered run: its grant and its spending so far.
#[derive(Debug)]
pub struct Run {
    pub grant: RunGrant,
    token: String,
    tool_calls: AtomicU32,
    tokens: AtomicU64,
    /// Nano-dollars, so it adds up atomically.
    cost_nano_usd: AtomicU64,
}

impl Run {
    /// Takes one tool call of the run's allowance for `tool`.
    pub fn take_tool_call(&self, tool: &str) -> Result<(), ErrorBody> {
        if !self.grant.tools.iter().any(|t| t == tool) {
            return Err(ErrorBody::new(
                ErrorKind::PermissionDenied,
                format!(
                    "tool `{tool}` is not granted to run {} of agent `{}`",
                    self.grant.run_id, self.grant.agent
                ),
            ));
        }
        let n = self.tool_calls.fetch_add(1, Ordering::Relaxed);
        if n >= self.grant.max_tool_calls {
            return Err(ErrorBody::new(
                ErrorKind::LimitExceeded,
                format!(
                    "run {} of agent `{}` has made its {} tool calls (max_tool_calls)",
                    self.grant.run_id, self.grant.agent, self.grant.max_tool_calls
                ),
            ));
        }
        Ok(())
    }

    /// Checks a chat against the grant: its identity is the run's, its providers the granted
    /// ones, and its budget no more than what the run has left.
    pub fn admit_chat(&self, req: &mut ChatRequest) -> Result<(), ErrorBody> {
        req.agent = self.grant.agent.clone();
        req.run_id = self.grant.run_id.clone();
        if let Some(p) = std::iter::once(&req.provider)
            .chain(&req.fallback)
            .find(|p| !self.grant.providers.contains(p))
        {
            return Err(ErrorBody::new(
                ErrorKind::PermissionDenied,
                format!(
                    "provider `{p}` is not granted to run {} of agent `{}` (granted: {})",
                    self.grant.run_id,
                    self.grant.agent,
                    self.grant.providers.join(", ")
                ),
            ));
        }
        let spent_tokens = self.tokens.load(Ordering::Relaxed);
        let spent_usd = self.cost_nano_usd.load(Ordering::Relaxed) as f64 / 1e9;
        let ours = ChatBudget {
            tokens_left: self
                .grant
                .max_tokens
                .map(|m| m.saturating_sub(spent_tokens)),
            usd_left: self.grant.max_cost_usd.map(|m| m - spent_usd),
        };
        req.budget = ChatBudget {
            tokens_left: min_some(req.budget.tokens_left, ours.tokens_left),
            usd_left: match (req.budget.usd_left, ours.usd_left) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        };
        Ok(())
    }

    /// Adds a chat's usage to the run's spending.
    pub fn spent(&self, reply: &ChatReply) {
        self.tokens.fetch_add(
            reply.prompt_tokens + reply.completion_tokens,
            Ordering::Relaxed,
        );
        self.cost_nano_usd.fetch_add(
            (reply.cost_usd.max(0.0) * 1e9).round() as u64,
            Ordering::Relaxed,
        );
    }
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The registered runs, by token.
#[derive(Debug, Default)]
pub struct Runs {
    by_token: Mutex<HashMap<String, Arc<Run>>>,
}

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Run>>> {
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, token: String, grant: RunGrant) -> Result<(), ErrorBody> {
        if token.len() < 32 {
            return Err(ErrorBody::new(
                ErrorKind::BadRequest,
                "a run token must be at least 128 random bits (32 hex digits)",
            ));
        }
        let mut runs = self.lock();
        if runs.len() >= MAX_RUNS && !runs.contains_key(&token) {
            return Err(ErrorBody::new(
                ErrorKind::Busy,
                format!("{MAX_RUNS} runs are registered already"),
            ));
        }
        runs.insert(
            token.clone(),
            Arc::new(Run {
                grant,
                token,
                tool_calls: AtomicU32::new(0),
                tokens: AtomicU64::new(0),
                cost_nano_usd: AtomicU64::new(0),
            }),
        );
        Ok(())
    }

    pub fn revoke(&self, token: &str) {
        self.lock().remove(token);
    }

    /// The run registered under `token`.
    pub fn attach(&self, token: &str) -> Result<Arc<Run>, ErrorBody> {
        self.lock().get(token).cloned().ok_or_else(|| {
            ErrorBody::new(
                ErrorKind::PermissionDenied,
                "unknown or revoked run token: only the worker of a running run may attach",
            )
        })
    }

    /// `run` as long as its grant has not been revoked.
    pub fn live(&self, run: &Arc<Run>) -> Result<(), ErrorBody> {
        match self.lock().get(&run.token) {
            Some(r) if Arc::ptr_eq(r, run) => Ok(()),
            _ => Err(ErrorBody::new(
                ErrorKind::PermissionDenied,
                format!(
                    "run {} of agent `{}` has ended: its grant was revoked",
                    run.grant.run_id, run.grant.agent
                ),
            )),
        }
    }
}
