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

use caxton_ipc::api::ErrorKind;
use caxton_ipc::toolhost::{ChatBudget, ChatReply, ChatRequest, RunGrant};

/// Why a run's grant refuses a request, or a grant cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("tool `{tool}` is not granted to run {run_id} of agent `{agent}`")]
    ToolNotGranted {
        tool: String,
        run_id: String,
        agent: String,
    },
    #[error("run {run_id} of agent `{agent}` has made its {max} tool calls (max_tool_calls)")]
    ToolCallsSpent {
        run_id: String,
        agent: String,
        max: u32,
    },
    #[error(
        "provider `{provider}` is not granted to run {run_id} of agent `{agent}` (granted: {granted})"
    )]
    ProviderNotGranted {
        provider: String,
        run_id: String,
        agent: String,
        granted: String,
    },
    #[error("a run token must be at least 128 random bits (32 hex digits)")]
    ShortToken,
    #[error("{MAX_RUNS} runs are registered already")]
    TooManyRuns,
    #[error("unknown or revoked run token: only the worker of a running run may attach")]
    UnknownToken,
    #[error("run {run_id} of agent `{agent}` has ended: its grant was revoked")]
    Revoked { run_id: String, agent: String },
}

impl GrantError {
    /// The kind of error the caller is told.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GrantError::ToolCallsSpent { .. } => ErrorKind::LimitExceeded,
            GrantError::ShortToken => ErrorKind::BadRequest,
            GrantError::TooManyRuns => ErrorKind::Busy,
            GrantError::ToolNotGranted { .. }
            | GrantError::ProviderNotGranted { .. }
            | GrantError::UnknownToken
            | GrantError::Revoked { .. } => ErrorKind::PermissionDenied,
        }
    }
}

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
    pub fn take_tool_call(&self, tool: &str) -> Result<(), GrantError> {
        if !self.grant.tools.iter().any(|t| t == tool) {
            return Err(GrantError::ToolNotGranted {
                tool: tool.into(),
                run_id: self.grant.run_id.clone(),
                agent: self.grant.agent.clone(),
            });
        }
        let n = self.tool_calls.fetch_add(1, Ordering::Relaxed);
        if n >= self.grant.max_tool_calls {
            return Err(GrantError::ToolCallsSpent {
                run_id: self.grant.run_id.clone(),
                agent: self.grant.agent.clone(),
                max: self.grant.max_tool_calls,
            });
        }
        Ok(())
    }

    /// Checks a chat against the grant: its identity is the run's, its providers the granted
    /// ones, and its budget no more than what the run has left.
    pub fn admit_chat(&self, req: &mut ChatRequest) -> Result<(), GrantError> {
        req.agent = self.grant.agent.clone();
        req.run_id = self.grant.run_id.clone();
        if let Some(p) = std::iter::once(&req.provider)
            .chain(&req.fallback)
            .find(|p| !self.grant.providers.contains(p))
        {
            return Err(GrantError::ProviderNotGranted {
                provider: p.clone(),
                run_id: self.grant.run_id.clone(),
                agent: self.grant.agent.clone(),
                granted: self.grant.providers.join(", "),
            });
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

    pub fn register(&self, token: String, grant: RunGrant) -> Result<(), GrantError> {
        if token.len() < 32 {
            return Err(GrantError::ShortToken);
        }
        let mut runs = self.lock();
        if runs.len() >= MAX_RUNS && !runs.contains_key(&token) {
            return Err(GrantError::TooManyRuns);
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
    pub fn attach(&self, token: &str) -> Result<Arc<Run>, GrantError> {
        self.lock()
            .get(token)
            .cloned()
            .ok_or(GrantError::UnknownToken)
    }

    /// `run` as long as its grant has not been revoked.
    pub fn live(&self, run: &Arc<Run>) -> Result<(), GrantError> {
        match self.lock().get(&run.token) {
            Some(r) if Arc::ptr_eq(r, run) => Ok(()),
            _ => Err(GrantError::Revoked {
                run_id: run.grant.run_id.clone(),
                agent: run.grant.agent.clone(),
            }),
        }
    }
}
