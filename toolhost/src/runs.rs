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
use caxton_ipc::toolhost::{Allowance, ChatBudget, ChatReply, ChatRequest, RunGrant};

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
        // The model is the agent's too: a worker cannot pick another one to spend on (nor name
        // one, which would become a metrics label).
        req.model = self.grant.model.clone();
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

    /// Sets aside, for a delegated child, at most `want` and at most the remainder divided by
    /// `parts` of each budget the grant limits; the part set aside counts as spent until
    /// [`Run::settle`]. A budget the grant does not limit is given as wanted.
    pub fn reserve(&self, want: Allowance, parts: u32) -> Allowance {
        let parts = parts.max(1);
        let calls = self
            .grant
            .max_tool_calls
            .saturating_sub(self.tool_calls.load(Ordering::Relaxed))
            / parts;
        let calls = want.tool_calls.map_or(calls, |w| w.min(calls));
        self.tool_calls.fetch_add(calls, Ordering::Relaxed);
        let tokens = match self.grant.max_tokens {
            Some(max) => {
                let share =
                    max.saturating_sub(self.tokens.load(Ordering::Relaxed)) / u64::from(parts);
                let t = want.tokens.map_or(share, |w| w.min(share));
                self.tokens.fetch_add(t, Ordering::Relaxed);
                Some(t)
            }
            None => want.tokens,
        };
        let cost_usd = match self.grant.max_cost_usd {
            Some(max) => {
                let spent = self.cost_nano_usd.load(Ordering::Relaxed) as f64 / 1e9;
                let share = ((max - spent).max(0.0)) / f64::from(parts);
                let c = want.cost_usd.map_or(share, |w| w.min(share));
                self.cost_nano_usd
                    .fetch_add((c * 1e9).floor() as u64, Ordering::Relaxed);
                Some(c)
            }
            None => want.cost_usd,
        };
        Allowance {
            tool_calls: Some(calls),
            tokens,
            cost_usd,
        }
    }

    /// A child's run ended: what it reserved is replaced by what it `used` (its whole tree).
    pub fn settle(&self, reserved: Allowance, used: Allowance) {
        let adjust = |counter: &AtomicU64, reserved: u64, used: u64| {
            if used >= reserved {
                counter.fetch_add(used - reserved, Ordering::Relaxed);
            } else {
                let give_back = reserved - used;
                let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(give_back))
                });
            }
        };
        let calls = (
            reserved.tool_calls.unwrap_or(0),
            used.tool_calls.unwrap_or(0),
        );
        if calls.1 >= calls.0 {
            self.tool_calls
                .fetch_add(calls.1 - calls.0, Ordering::Relaxed);
        } else {
            let _ = self
                .tool_calls
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(calls.0 - calls.1))
                });
        }
        let charged_tokens = if self.grant.max_tokens.is_some() {
            reserved.tokens.unwrap_or(0)
        } else {
            0
        };
        adjust(&self.tokens, charged_tokens, used.tokens.unwrap_or(0));
        let nano = |usd: Option<f64>| (usd.unwrap_or(0.0).max(0.0) * 1e9).floor() as u64;
        let charged_usd = if self.grant.max_cost_usd.is_some() {
            nano(reserved.cost_usd)
        } else {
            0
        };
        adjust(&self.cost_nano_usd, charged_usd, nano(used.cost_usd));
    }

    /// What the run has spent, reservations for children included.
    pub fn spent_now(&self) -> Allowance {
        Allowance {
            tool_calls: Some(self.tool_calls.load(Ordering::Relaxed)),
            tokens: Some(self.tokens.load(Ordering::Relaxed)),
            cost_usd: Some(self.cost_nano_usd.load(Ordering::Relaxed) as f64 / 1e9),
        }
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

    /// The run registered under `token`, for the supervisor's reservations.
    pub fn get(&self, token: &str) -> Option<Arc<Run>> {
        self.lock().get(token).cloned()
    }

    /// Ends a run's grant; a delegated run's spending (by the toolhost's own count) replaces
    /// what its parent's grant reserved for it.
    pub fn revoke(&self, token: &str) {
        let (gone, parent) = {
            let mut runs = self.lock();
            let gone = runs.remove(token);
            let parent = gone
                .as_ref()
                .and_then(|r| r.grant.settle_to.as_ref())
                .and_then(|s| runs.get(&s.token).cloned());
            (gone, parent)
        };
        if let (Some(run), Some(parent)) = (gone, parent)
            && let Some(to) = &run.grant.settle_to
        {
            parent.settle(to.reserved, run.spent_now());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_ipc::toolhost::SettleTo;

    fn reply(prompt_tokens: u64, completion_tokens: u64, cost_usd: f64) -> ChatReply {
        ChatReply {
            content: None,
            tool_calls: vec![],
            provider: "p".into(),
            model: "m".into(),
            prompt_tokens,
            completion_tokens,
            cost_usd,
        }
    }

    fn run(max_tokens: Option<u64>) -> Arc<Run> {
        let runs = Runs::default();
        let token = "t".repeat(32);
        runs.register(
            token.clone(),
            RunGrant {
                agent: "a".into(),
                run_id: "r".into(),
                tools: vec![],
                providers: vec![],
                max_tool_calls: 10,
                max_tokens,
                max_cost_usd: Some(1.0),
                read_only: false,
                settle_to: None,
                model: None,
            },
        )
        .unwrap();
        runs.get(&token).unwrap()
    }

    #[test]
    fn children_share_what_is_left_and_settle_to_what_they_used() {
        let r = run(Some(1000));
        r.spent(&reply(90, 10, 0.2));
        // Two children to share 900 tokens, $0.80 and 10 tool calls: the first takes half.
        let first = r.reserve(Allowance::default(), 2);
        assert_eq!(first.tokens, Some(450));
        assert_eq!(first.tool_calls, Some(5));
        assert!((first.cost_usd.unwrap() - 0.4).abs() < 1e-9);
        // A child that wants less gets what it wants.
        let second = r.reserve(
            Allowance {
                tool_calls: Some(1),
                tokens: Some(100),
                cost_usd: None,
            },
            1,
        );
        assert_eq!((second.tokens, second.tool_calls), (Some(100), Some(1)));
        assert_eq!(r.spent_now().tokens, Some(100 + 450 + 100));
        // Settled: the reservations are replaced by what the children used.
        r.settle(
            first,
            Allowance {
                tool_calls: Some(2),
                tokens: Some(300),
                cost_usd: Some(0.1),
            },
        );
        r.settle(second, Allowance::default());
        let now = r.spent_now();
        assert_eq!((now.tokens, now.tool_calls), (Some(400), Some(2)));
        assert!((now.cost_usd.unwrap() - 0.3).abs() < 1e-6);
        // Nothing left: a reservation gets nothing.
        r.spent(&reply(600, 0, 0.0));
        assert_eq!(r.reserve(Allowance::default(), 1).tokens, Some(0));
    }

    #[test]
    fn revoking_a_childs_grant_settles_its_parent_by_the_toolhosts_own_count() {
        let runs = Runs::default();
        let grant = |run_id: &str, settle_to| RunGrant {
            agent: "a".into(),
            run_id: run_id.into(),
            tools: vec![],
            providers: vec![],
            max_tool_calls: 10,
            max_tokens: Some(1000),
            max_cost_usd: None,
            read_only: false,
            settle_to,
            model: None,
        };
        let (parent, child) = ("p".repeat(32), "c".repeat(32));
        runs.register(parent.clone(), grant("p", None)).unwrap();
        let p = runs.get(&parent).unwrap();
        let reserved = p.reserve(Allowance::default(), 1);
        assert_eq!(reserved.tokens, Some(1000));
        let settle_to = Some(SettleTo {
            token: parent.clone(),
            reserved,
        });
        runs.register(child.clone(), grant("c", settle_to)).unwrap();
        // The child spends 120 tokens (whatever its worker will claim).
        runs.get(&child).unwrap().spent(&reply(100, 20, 0.0));
        assert_eq!(p.spent_now().tokens, Some(1000));
        runs.revoke(&child);
        assert_eq!(p.spent_now().tokens, Some(120));
        assert!(runs.get(&child).is_none());
    }

    #[test]
    fn an_unlimited_budget_is_given_as_wanted_and_counts_what_children_used() {
        let r = run(None);
        let share = r.reserve(
            Allowance {
                tool_calls: None,
                tokens: Some(50),
                cost_usd: None,
            },
            1,
        );
        assert_eq!(share.tokens, Some(50));
        r.settle(
            share,
            Allowance {
                tool_calls: Some(0),
                tokens: Some(30),
                cost_usd: Some(0.0),
            },
        );
        assert_eq!(r.spent_now().tokens, Some(30));
    }
}
