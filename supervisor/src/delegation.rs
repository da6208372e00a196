//! Delegation: a running agent hands a task to another agent and gets its answer back as a
//! tool result. Every child is a fresh worker process, started by the supervisor; the worker
//! only asks (`WorkerRequest::Delegate`, one request for a turn's delegations), and the
//! supervisor decides, from the parent run's own agent and never from the request, whether
//! each target is allowed.
//!
//! Rules, checked in this order for each delegation of a turn (a refusal is a `delegation`
//! tool error for the parent, naming the agents and the limit):
//! 1. The turn's first `max_fan_out` delegations are considered; the rest are refused.
//! 2. The target is one the parent's `[delegation]` names; a capability is routed to one
//!    agent that declares it (`round_robin`, `least_loaded`, `best_match`; a `Routed` event
//!    says which and why). An agent already in the chain is a cycle, refused unless the
//!    parent's `allow_recursion`.
//! 3. Depth: the child's depth (root = 0) may not pass the smallest `max_depth` along its
//!    chain (at most `caxton_ipc::agent::MAX_DEPTH_CAP`).
//! 4. Descendants: the whole tree may have at most the root agent's `max_descendants`.
//! 5. A child place (`[workers] max_delegated`), now or never: children never wait for a
//!    slot, so a tree can never wait on itself (see `admission.rs`).
//! 6. Budget: the toolhost sets aside, from what the parent's grant has left, an even share
//!    per admitted child of its tool calls, tokens and cost (`ReserveRun`), counted as spent
//!    by the parent until the child's grant is revoked, when the toolhost replaces it by what
//!    that grant spent by its own count (`RunGrant::settle_to`). The child's limits are the
//!    smaller of its own and that share; its turns the smaller of its own and the parent's
//!    turns left; its wall clock ends no later than the parent's. A tree therefore never
//!    spends more than its root's budget.
//!
//! The children of a turn run in parallel. The parent's stream carries their events tagged
//! with their place in the tree (`RunEvent::Child`) unless the request hides them; every
//! event of a descendant is also counted into each ancestor's [`TreeUsage`], so a run's final
//! usage includes its descendants', killed ones too. Dropping a run (its client left, its
//! deadline passed, the service stopped) drops its children's futures, whose worker process
//! groups are killed on drop: no descendant outlives its root.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caxton_ipc::agent::HistoryPolicy;
use caxton_ipc::agent::{AgentSpec, DelegateTarget, DelegationSpec, RoutingStrategy};
use caxton_ipc::api::{
    ApiResponse, ChildEvent, ErrorBody, ErrorKind, RouteCandidate, RunEvent, RunRequest, RunUsage,
    Spent, TreeUsage,
};
use caxton_ipc::memory::{MemoryRequest, MemoryResponse};
use caxton_ipc::toolhost::{
    Allowance, ChatMessage, SettleTo, ToolSpec, ToolhostRequest, ToolhostResponse,
};
use caxton_ipc::worker::{DelegationCall, DelegationResult};
use tokio::sync::mpsc;

use crate::run_span::RunSpan;
use crate::runs::Run;
use crate::service::Service;

/// Where a run sits in its delegation tree.
#[derive(Debug, Clone)]
pub struct Lineage {
    /// The run that delegated this one (`None` for a root run).
    pub parent_run_id: Option<String>,
    /// The call ids from the root down to this run, joined by `/` (empty for the root): its
    /// key in a recording.
    pub path: String,
    /// Agents from the root to this run.
    pub chain: Vec<String>,
    /// The smallest `max_depth` along the chain.
    pub max_depth: u32,
    pub tree: Arc<Tree>,
}

/// What the runs of one tree share.
#[derive(Debug)]
pub struct Tree {
    descendants: AtomicU32,
    /// The root agent's `max_descendants`.
    max_descendants: u32,
}

impl Lineage {
    /// A run started by a client.
    pub fn root(agent: &AgentSpec) -> Lineage {
        Lineage {
            parent_run_id: None,
            path: String::new(),
            chain: vec![agent.name.clone()],
            max_depth: agent.delegation.max_depth,
            tree: Arc::new(Tree {
                descendants: AtomicU32::new(0),
                max_descendants: agent.delegation.max_descendants,
            }),
        }
    }

    fn child(&self, parent_run_id: &str, call_id: &str, agent: &AgentSpec) -> Lineage {
        let mut chain = self.chain.clone();
        chain.push(agent.name.clone());
        let path = if self.path.is_empty() {
            call_id.to_string()
        } else {
            format!("{}/{call_id}", self.path)
        };
        Lineage {
            parent_run_id: Some(parent_run_id.to_string()),
            path,
            chain,
            max_depth: self.max_depth.min(agent.delegation.max_depth),
            tree: self.tree.clone(),
        }
    }

    /// 0 for the root, 1 for its children, …
    pub fn depth(&self) -> u32 {
        (self.chain.len() - 1) as u32
    }

    /// `a → b → c`, with `next` appended.
    fn path_to(&self, next: &str) -> String {
        let mut p = self.chain.join(" → ");
        p.push_str(" → ");
        p.push_str(next);
        p
    }
}

/// Where a run's events go: the client's stream (a descendant's wrapped in `RunEvent::Child`)
/// and the usage trees of its ancestors.
#[derive(Debug, Clone)]
pub struct Sink {
    tx: mpsc::Sender<ApiResponse>,
    /// Set for a descendant run.
    tag: Option<Arc<Tag>>,
    /// Descendants' events go to the client (the request did not hide them).
    forward: bool,
    /// Each ancestor's descendants' usage, which this run's events count into.
    ancestors: Vec<Arc<Mutex<TreeUsage>>>,
    /// A root run's conversation, which notes the run's own events.
    log: Option<Arc<crate::conversations::Log>>,
}

#[derive(Debug)]
struct Tag {
    run_id: String,
    parent_run_id: String,
    call_id: String,
    agent: String,
    depth: u32,
}

/// The client went away.
#[derive(Debug)]
pub struct Gone;

impl Sink {
    /// The sink of a run a client started (in a conversation when `log` is set).
    pub fn root(
        tx: mpsc::Sender<ApiResponse>,
        hide_children: bool,
        log: Option<Arc<crate::conversations::Log>>,
    ) -> Sink {
        Sink {
            tx,
            tag: None,
            forward: !hide_children,
            ancestors: Vec::new(),
            log,
        }
    }

    pub async fn send(&self, event: RunEvent) -> Result<(), Gone> {
        let Some(tag) = &self.tag else {
            if let Some(log) = &self.log {
                log.note(&event);
            }
            return self
                .tx
                .send(ApiResponse::Event(event))
                .await
                .map_err(|_| Gone);
        };
        for tree in &self.ancestors {
            count(
                &mut tree.lock().unwrap_or_else(|p| p.into_inner()),
                &tag.agent,
                &event,
            );
        }
        if !self.forward {
            return Ok(());
        }
        let wrapped = RunEvent::Child(Box::new(ChildEvent {
            run_id: tag.run_id.clone(),
            parent_run_id: tag.parent_run_id.clone(),
            call_id: tag.call_id.clone(),
            agent: tag.agent.clone(),
            depth: tag.depth,
            event,
        }));
        self.tx
            .send(ApiResponse::Event(wrapped))
            .await
            .map_err(|_| Gone)
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// Counts one event of a descendant run of `agent` into `tree`.
fn count(tree: &mut TreeUsage, agent: &str, event: &RunEvent) {
    let Some((model, spent)) = Spent::of_event(event) else {
        return;
    };
    tree.descendants += spent.runs;
    tree.total.add(&spent);
    tree.by_agent
        .entry(agent.to_string())
        .or_default()
        .add(&spent);
    if let Some(m) = model {
        tree.by_model.entry(m).or_default().add(&spent);
    }
}

/// What a run knows of its tree while it runs: its descendants' usage (counted from their
/// events) and its own per model (from its own `LlmReply` events).
#[derive(Debug, Default)]
pub struct TreeAccount {
    descendants: Arc<Mutex<TreeUsage>>,
    own_by_model: Mutex<BTreeMap<String, Spent>>,
    /// The agent a successful handoff gave the run's conversation to.
    handed_to: Mutex<Option<String>>,
}

impl TreeAccount {
    /// The agent the run handed its conversation to, if it did.
    pub fn handed_to(&self) -> Option<String> {
        self.handed_to
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts one of the run's own events (its LLM replies, per model).
    pub fn own_event(&self, event: &RunEvent) {
        if let Some((Some(model), spent)) = Spent::of_event(event) {
            self.own_by_model
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(model)
                .or_default()
                .add(&spent);
        }
    }

    /// `usage` (the run's own, as its worker reported it) with its tree, when it had descendants.
    pub fn complete(&self, agent: &str, usage: &mut RunUsage) {
        let descendants = self
            .descendants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if descendants.descendants == 0 {
            return;
        }
        let own = usage.own();
        let mut tree = descendants;
        tree.total.add(&own);
        tree.by_agent
            .entry(agent.to_string())
            .or_default()
            .add(&own);
        for (model, spent) in self
            .own_by_model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            tree.by_model.entry(model.clone()).or_default().add(spent);
        }
        usage.tree = Some(Box::new(tree));
    }
}

/// Picks agents for capabilities: a round-robin counter per capability and a cache of the
/// candidates' description embeddings (for `best_match`).
#[derive(Debug, Default)]
pub struct Router {
    turns: Mutex<HashMap<String, u64>>,
    /// (agent, text) → embedding.
    embeddings: Mutex<HashMap<(String, String), Vec<f32>>>,
}

/// Most entries in the embedding cache before it is emptied.
const MAX_CACHED_EMBEDDINGS: usize = 4096;
/// Deadline of embedding a task for `best_match`.
const EMBED_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of a reservation or settlement with the toolhost.
const BUDGET_TIMEOUT: Duration = Duration::from_secs(5);

/// The text `best_match` compares a task with: what the agent says it does.
fn profile(agent: &AgentSpec) -> String {
    let mut text = agent.description.clone();
    if let Some(doc) = &agent.documentation {
        text.push('\n');
        text.push_str(doc);
    }
    text
}

impl Router {
    /// The agent for `capability` among `candidates` (sorted by name, at least one), and every
    /// candidate's score.
    async fn pick(
        &self,
        svc: &Service,
        strategy: RoutingStrategy,
        capability: &str,
        task: &str,
        candidates: &[Arc<AgentSpec>],
    ) -> Result<(usize, Vec<RouteCandidate>), String> {
        let scored = |scores: Vec<f64>| -> Vec<RouteCandidate> {
            candidates
                .iter()
                .zip(scores)
                .map(|(a, score)| RouteCandidate {
                    agent: a.name.clone(),
                    score,
                })
                .collect()
        };
        match strategy {
            RoutingStrategy::RoundRobin => {
                let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
                let turn = turns.entry(capability.to_string()).or_insert(0);
                let i = (*turn % candidates.len() as u64) as usize;
                *turn += 1;
                let scores = (0..candidates.len())
                    .map(|j| if j == i { 1.0 } else { 0.0 })
                    .collect();
                Ok((i, scored(scores)))
            }
            RoutingStrategy::LeastLoaded => {
                let loads: Vec<f64> = candidates
                    .iter()
                    .map(|a| svc.runs().running_of(&a.name) as f64)
                    .collect();
                let i = loads
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i);
                Ok((i, scored(loads)))
            }
            RoutingStrategy::ContractNet => {
                Err("contract_net is run by the delegation itself".into())
            }
            RoutingStrategy::BestMatch => {
                let vectors = self.profiles(svc, candidates).await?;
                let query = embed(svc, vec![task.to_string()]).await?;
                let q = query
                    .first()
                    .ok_or("the memory service returned no embedding")?;
                let scores: Vec<f64> = vectors
                    .iter()
                    .map(|v| v.iter().zip(q).map(|(a, b)| f64::from(a * b)).sum())
                    .collect();
                let i = scores
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i);
                Ok((i, scored(scores)))
            }
        }
    }

    /// The candidates' profile embeddings, from the cache or the memory service.
    async fn profiles(
        &self,
        svc: &Service,
        candidates: &[Arc<AgentSpec>],
    ) -> Result<Vec<Vec<f32>>, String> {
        let keys: Vec<(String, String)> = candidates
            .iter()
            .map(|a| (a.name.clone(), profile(a)))
            .collect();
        let missing: Vec<(String, String)> = {
            let cache = self.embeddings.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter()
                .filter(|k| !cache.contains_key(*k))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let vectors = embed(svc, missing.iter().map(|k| k.1.clone()).collect()).await?;
            let mut cache = self.embeddings.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() + missing.len() > MAX_CACHED_EMBEDDINGS {
                cache.clear();
            }
            cache.extend(missing.into_iter().zip(vectors));
        }
        let cache = self.embeddings.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .map(|k| {
                cache
                    .get(k)
                    .cloned()
                    .ok_or_else(|| "an embedding went missing".into())
            })
            .collect()
    }
}

/// Embeds `texts` with the memory service's model.
async fn embed(svc: &Service, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
    let link = svc.memory_grants().map_err(|e| {
        format!(
            "best_match routing embeds with the memory service's model, and {}",
            e.message
        )
    })?;
    let n = texts.len();
    match link
        .request(&MemoryRequest::Embed { texts }, EMBED_TIMEOUT)
        .await
    {
        Ok(MemoryResponse::Embeddings(v)) if v.len() == n => Ok(v),
        Ok(MemoryResponse::Error(e)) => {
            Err(format!("the memory service cannot embed: {}", e.message))
        }
        Ok(other) => Err(format!(
            "unexpected answer from the memory service: {other:?}"
        )),
        Err(e) => Err(format!("the memory service cannot embed: {e}")),
    }
}

/// The delegation targets of `agent` as tools for its LLM, described from the registry.
pub fn tools_for(svc: &Service, agent: &AgentSpec) -> Vec<ToolSpec> {
    if agent.delegation.is_empty() {
        return Vec::new();
    }
    let registry = svc.registry();
    // No description on `task`: small models copy a description into the value.
    let schema = r#"{"type":"object","properties":{"task":{"type":"string"}},"required":["task"]}"#;
    let mut tools = Vec::new();
    for name in &agent.delegation.agents {
        let description = match registry.get(name) {
            Some(a) if !a.description.is_empty() => format!(
                "Delegate a task to agent `{name}`: {} Its answer is this tool's result.",
                a.description
            ),
            Some(_) => {
                format!("Delegate a task to agent `{name}`; its answer is this tool's result.")
            }
            None => format!("Delegate a task to agent `{name}` (not loaded at the moment)."),
        };
        tools.push(ToolSpec {
            name: DelegationSpec::tool_name_for_agent(name),
            description,
            input_schema: schema.to_string(),
            server: "caxton".into(),
        });
    }
    for name in &agent.delegation.handoff {
        let description = match registry.get(name) {
            Some(a) if !a.description.is_empty() => format!(
                "Hand the conversation to agent `{name}` ({}): it answers the user in your place, and the next messages go to it.",
                a.description
            ),
            _ => format!(
                "Hand the conversation to agent `{name}`: it answers the user in your place, and the next messages go to it."
            ),
        };
        tools.push(ToolSpec {
            name: DelegationSpec::tool_name_for_handoff(name),
            description,
            input_schema: r#"{"type":"object","properties":{"reason":{"type":"string","description":"Why the other agent should take over."}},"required":["reason"]}"#.to_string(),
            server: "caxton".into(),
        });
    }
    for remote in &agent.delegation.remote {
        let what = if remote.description.is_empty() {
            String::new()
        } else {
            format!(": {}", remote.description)
        };
        tools.push(ToolSpec {
            name: DelegationSpec::tool_name_for_agent(&remote.name),
            description: format!(
                "Delegate a task to agent `{}`, which runs elsewhere{what} Its answer is this tool's result.",
                remote.name
            ),
            input_schema: schema.to_string(),
            server: "caxton".into(),
        });
    }
    for cap in &agent.delegation.capabilities {
        let who: Vec<String> = registry
            .agents_with_capability(cap)
            .iter()
            .map(|a| a.name.clone())
            .collect();
        tools.push(ToolSpec {
            name: DelegationSpec::tool_name_for_capability(cap),
            description: format!(
                "Delegate a task to an agent with the capability `{cap}` ({}); its answer is this tool's result.",
                if who.is_empty() {
                    "none loaded at the moment".to_string()
                } else {
                    who.join(", ")
                }
            ),
            input_schema: schema.to_string(),
            server: "caxton".into(),
        });
    }
    tools
}

/// The parent run a turn's delegations come from.
pub struct Parent<'a> {
    pub run: Run<'a>,
    /// The parent's toolhost grant, which the children's budgets are taken from.
    pub toolhost_token: &'a str,
    /// Turns the parent has used so far.
    pub turns_used: u32,
    pub record: bool,
}

/// A delegation that passed the checks: its agent, its lineage and its child place.
struct Admitted {
    call: DelegationCall,
    agent: Arc<AgentSpec>,
    lineage: Lineage,
    _place: tokio::sync::OwnedSemaphorePermit,
    /// Undoes the descendant count if the child never starts.
    counted: Option<Arc<Tree>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(tree) = self.counted.take() {
            tree.descendants.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn refused(call: &DelegationCall, agent: Option<&str>, message: String) -> DelegationResult {
    DelegationResult {
        call_id: call.call_id.clone(),
        agent: agent.map(str::to_string),
        run_id: None,
        outcome: Err(ErrorBody::new(ErrorKind::Delegation, message)),
        usage: RunUsage::default(),
    }
}

/// Runs one turn's delegations (in parallel) and returns one result per call, in order.
pub async fn run_batch(parent: &Parent<'_>, calls: Vec<DelegationCall>) -> Vec<DelegationResult> {
    let fan_out = parent.run.agent.delegation.max_fan_out as usize;
    let mut results: Vec<Option<DelegationResult>> = vec![None; calls.len()];
    let mut admitted = Vec::new();
    let mut remote = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        if i >= fan_out {
            results[i] = Some(refused(
                &call,
                None,
                format!(
                    "agent `{}` asked for {} delegations in one turn; max_fan_out = {fan_out} ([delegation] in {})",
                    parent.run.agent.name,
                    i + 1,
                    parent.run.agent.source
                ),
            ));
            continue;
        }
        if let DelegateTarget::Remote(name) = &call.target {
            match admit_remote(parent, call.clone(), name) {
                Ok(r) => remote.push((i, r)),
                Err(r) => results[i] = Some(*r),
            }
            continue;
        }
        match admit(parent, call).await {
            Ok(a) => admitted.push((i, a)),
            Err(r) => results[i] = Some(*r),
        }
    }
    // Budgets are set aside one after the other, each an even share of what is left.
    let mut ready = Vec::new();
    let n = admitted.len();
    for (j, (i, a)) in admitted.into_iter().enumerate() {
        match reserve(parent, &a.agent, (n - j) as u32).await {
            Ok(share) => ready.push((i, a, share)),
            Err(message) => results[i] = Some(refused(&a.call, Some(&a.agent.name), message)),
        }
    }
    let children = ready
        .into_iter()
        .map(|(i, a, share)| async move { (i, run_child(parent, a, share).await) });
    let remotes = remote
        .into_iter()
        .map(|(i, r)| async move { (i, run_remote(parent, r).await) });
    let (local, far) = futures_util::future::join(
        futures_util::future::join_all(children),
        futures_util::future::join_all(remotes),
    )
    .await;
    for (i, r) in local.into_iter().chain(far) {
        results[i] = Some(r);
    }
    results.into_iter().flatten().collect()
}

/// Resolves a delegation's target and checks it against the parent's rules (1–5 of the
/// module's list).
async fn admit(
    parent: &Parent<'_>,
    call: DelegationCall,
) -> Result<Admitted, Box<DelegationResult>> {
    let me = &parent.run.agent;
    let spec = &me.delegation;
    let no =
        |call: &DelegationCall, agent: Option<&str>, m: String| Box::new(refused(call, agent, m));
    let registry = parent.run.svc.registry();
    let agent = match &call.target {
        DelegateTarget::Agent(name) => {
            let (listed, may, table) = match call.handoff {
                Some(_) => (&spec.handoff, "hand the conversation to", "handoff"),
                None => (&spec.agents, "delegate to", "agents"),
            };
            if !listed.contains(name) {
                return Err(no(
                    &call,
                    Some(name),
                    format!(
                        "agent `{}` may not {may} agent `{name}` (its [delegation] {table} in {} does not name it)",
                        me.name, me.source
                    ),
                ));
            }
            match registry.get(name) {
                Some(a) => a,
                None => {
                    return Err(no(
                        &call,
                        Some(name),
                        format!(
                            "agent `{name}` is not loaded; `caxton agent list` shows the loaded agents"
                        ),
                    ));
                }
            }
        }
        DelegateTarget::Remote(name) => {
            return Err(no(
                &call,
                Some(name),
                "a remote delegation reached the local admission".into(),
            ));
        }
        DelegateTarget::Capability(cap) => {
            if !spec.capabilities.contains(cap) {
                return Err(no(
                    &call,
                    None,
                    format!(
                        "agent `{}` may not delegate by capability `{cap}` (its [delegation] capabilities in {} do not name it)",
                        me.name, me.source
                    ),
                ));
            }
            let mut candidates = registry.agents_with_capability(cap);
            if !spec.allow_recursion {
                candidates.retain(|a| !parent.run.lineage.chain.contains(&a.name));
            }
            if candidates.is_empty() {
                return Err(no(
                    &call,
                    None,
                    format!(
                        "no loaded agent outside the chain {} has the capability `{cap}`",
                        parent.run.lineage.chain.join(" → ")
                    ),
                ));
            }
            let picked = if spec.strategy == RoutingStrategy::ContractNet {
                contract_net(parent, &call, cap, &candidates).await
            } else {
                parent
                    .run
                    .svc
                    .router()
                    .pick(parent.run.svc, spec.strategy, cap, &call.task, &candidates)
                    .await
            };
            let (i, scores) = match picked {
                Ok(p) => p,
                Err(e) => {
                    return Err(no(
                        &call,
                        None,
                        format!("cannot route capability `{cap}`: {e}"),
                    ));
                }
            };
            let chosen = candidates[i].clone();
            let _ = parent
                .run
                .sink
                .send(RunEvent::Routed {
                    call_id: call.call_id.clone(),
                    capability: cap.clone(),
                    strategy: spec.strategy.as_str().into(),
                    chosen: chosen.name.clone(),
                    candidates: scores,
                })
                .await;
            chosen
        }
    };
    checked(parent, call, agent)
}

/// Checks a delegation to `agent` against the chain, the depth, the child places and the
/// tree's descendants (rules 2–5 of the module's list).
fn checked(
    parent: &Parent<'_>,
    call: DelegationCall,
    agent: Arc<AgentSpec>,
) -> Result<Admitted, Box<DelegationResult>> {
    let me = &parent.run.agent;
    let spec = &me.delegation;
    let no =
        |call: &DelegationCall, agent: Option<&str>, m: String| Box::new(refused(call, agent, m));
    let lineage = &parent.run.lineage;
    if lineage.chain.contains(&agent.name) && !spec.allow_recursion {
        return Err(no(
            &call,
            Some(&agent.name),
            format!(
                "cycle: {} comes back to agent `{}`; set allow_recursion = true under [delegation] in {} to allow it",
                lineage.path_to(&agent.name),
                agent.name,
                me.source
            ),
        ));
    }
    if lineage.depth() + 1 > lineage.max_depth {
        return Err(no(
            &call,
            Some(&agent.name),
            format!(
                "depth limit: {} would be {} deep, and max_depth along this chain is {}",
                lineage.path_to(&agent.name),
                lineage.depth() + 1,
                lineage.max_depth
            ),
        ));
    }
    let Some(place) = parent.run.svc.admission().admit_child() else {
        return Err(no(
            &call,
            Some(&agent.name),
            format!(
                "busy: all {} places for delegated runs are taken ([workers] max_delegated); try again later",
                parent.run.svc.admission().max_delegated()
            ),
        ));
    };
    let tree = &lineage.tree;
    if tree.descendants.fetch_add(1, Ordering::Relaxed) >= tree.max_descendants {
        tree.descendants.fetch_sub(1, Ordering::Relaxed);
        return Err(no(
            &call,
            Some(&agent.name),
            format!(
                "the tree of {} has made its {} delegated runs (max_descendants of its root agent `{}`)",
                lineage.chain.join(" → "),
                tree.max_descendants,
                lineage.chain[0]
            ),
        ));
    }
    Ok(Admitted {
        lineage: lineage.child(parent.run.run_id, &call.call_id, &agent),
        call,
        agent,
        _place: place,
        counted: Some(tree.clone()),
    })
}

impl Sink {
    /// The sink of a child run of `parent`: its events tagged with its place in the tree, and
    /// counted into every ancestor's descendants.
    fn child(parent: &Parent<'_>, run_id: &str, call_id: &str, agent: &str, depth: u32) -> Sink {
        let mut ancestors = parent.run.sink.ancestors.clone();
        ancestors.push(parent.run.account.descendants.clone());
        Sink {
            tx: parent.run.sink.tx.clone(),
            tag: Some(Arc::new(Tag {
                run_id: run_id.to_string(),
                parent_run_id: parent.run.run_id.to_string(),
                call_id: call_id.to_string(),
                agent: agent.to_string(),
                depth,
            })),
            forward: parent.run.sink.forward,
            ancestors,
            log: None,
        }
    }
}

/// A delegation to a remote A2A agent that passed the checks.
struct AdmittedRemote {
    call: DelegationCall,
    remote: caxton_ipc::agent::RemoteAgent,
    depth: u32,
    /// Undoes the descendant count if it never starts.
    counted: Option<Arc<Tree>>,
}

impl Drop for AdmittedRemote {
    fn drop(&mut self) {
        if let Some(tree) = self.counted.take() {
            tree.descendants.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Checks a delegation to a remote agent: listed in the parent's `[[delegation.remote]]`, within
/// the depth and the tree's descendants (it is one run of the tree; what it does over there is
/// the remote's). It takes no worker and no child place.
fn admit_remote(
    parent: &Parent<'_>,
    call: DelegationCall,
    name: &str,
) -> Result<AdmittedRemote, Box<DelegationResult>> {
    let me = &parent.run.agent;
    let no = |call: &DelegationCall, m: String| Box::new(refused(call, Some(name), m));
    let Some(remote) = me
        .delegation
        .remote
        .iter()
        .find(|r| r.name == name)
        .cloned()
    else {
        return Err(no(
            &call,
            format!(
                "agent `{}` may not delegate to remote agent `{name}` (its [[delegation.remote]] in {} does not name it)",
                me.name, me.source
            ),
        ));
    };
    let lineage = &parent.run.lineage;
    if lineage.depth() + 1 > lineage.max_depth {
        return Err(no(
            &call,
            format!(
                "depth limit: {} would be {} deep, and max_depth along this chain is {}",
                lineage.path_to(name),
                lineage.depth() + 1,
                lineage.max_depth
            ),
        ));
    }
    let tree = &lineage.tree;
    if tree.descendants.fetch_add(1, Ordering::Relaxed) >= tree.max_descendants {
        tree.descendants.fetch_sub(1, Ordering::Relaxed);
        return Err(no(
            &call,
            format!(
                "the tree of {} has made its {} delegated runs (max_descendants of its root agent `{}`)",
                lineage.chain.join(" → "),
                tree.max_descendants,
                lineage.chain[0]
            ),
        ));
    }
    Ok(AdmittedRemote {
        call,
        remote,
        depth: lineage.depth() + 1,
        counted: Some(tree.clone()),
    })
}

/// Runs a delegation to a remote A2A agent: the toolhost sends it (to granted origins only)
/// within the parent's deadline; its start and end are events of the tree like a local child's.
async fn run_remote(parent: &Parent<'_>, mut admitted: AdmittedRemote) -> DelegationResult {
    let svc = parent.run.svc;
    let name = admitted.remote.name.clone();
    let run_id = format!("a2a-{:x}-{}", crate::runs::now_ms(), svc.runs().next_seq());
    admitted.counted = None;
    let started = Instant::now();
    let sink = Sink::child(
        parent,
        &run_id,
        &admitted.call.call_id,
        &name,
        admitted.depth,
    );
    let _ = sink
        .send(RunEvent::Started {
            run_id: run_id.clone(),
            agent: name.clone(),
            worker_pid: 0,
        })
        .await;
    let limit = parent.run.deadline.saturating_duration_since(started);
    let req = ToolhostRequest::A2aSend(caxton_ipc::toolhost::A2aSendRequest {
        run_id: parent.run.run_id.to_string(),
        agent: parent.run.agent.name.clone(),
        call_id: admitted.call.call_id.clone(),
        remote: name.clone(),
        card: admitted.remote.card.clone(),
        task: admitted.call.task.clone(),
        timeout_ms: limit.as_millis() as u64,
        traceparent: parent
            .run
            .span
            .child_parent(admitted.call.span_id)
            .map(|t| t.to_string()),
    });
    // A dedicated connection: a remote task may take as long as the parent may wait.
    let answered = crate::services::request(
        svc.toolhost_grants().socket(),
        &req,
        limit + Duration::from_secs(1),
    )
    .await;
    let outcome = match answered {
        Ok(ToolhostResponse::A2aAnswer(a)) => Ok(a.text),
        Ok(ToolhostResponse::Error(e)) => Err(e),
        Ok(other) => Err(ErrorBody::new(
            ErrorKind::Internal,
            format!("the toolhost answered a remote delegation with {other:?}"),
        )),
        Err(e) => Err(ErrorBody::new(
            ErrorKind::Toolhost,
            format!("remote agent `{name}`: {e}"),
        )),
    };
    let usage = RunUsage {
        wall_ms: started.elapsed().as_millis() as u64,
        ..RunUsage::default()
    };
    let terminal = match &outcome {
        Ok(answer) => RunEvent::Finished {
            run_id: run_id.clone(),
            answer: answer.clone(),
            usage: usage.clone(),
        },
        Err(error) => RunEvent::Failed {
            run_id: run_id.clone(),
            error: error.clone(),
            usage: usage.clone(),
        },
    };
    let _ = sink.send(terminal).await;
    DelegationResult {
        call_id: admitted.call.call_id.clone(),
        agent: Some(name),
        run_id: Some(run_id),
        outcome,
        usage,
    }
}

/// Sets aside the child's share of the parent's budget (rule 6), `parts` children still to
/// share it; `Err` when nothing is left.
async fn reserve(parent: &Parent<'_>, agent: &AgentSpec, parts: u32) -> Result<Allowance, String> {
    let want = Allowance {
        tool_calls: Some(agent.limits.max_tool_calls),
        tokens: agent.limits.max_tokens,
        cost_usd: agent.limits.max_cost_usd,
    };
    let req = ToolhostRequest::ReserveRun {
        token: parent.toolhost_token.to_string(),
        want,
        parts,
    };
    let share = match parent
        .run
        .svc
        .toolhost_grants()
        .request(&req, BUDGET_TIMEOUT)
        .await
    {
        Ok(ToolhostResponse::Reserved(share)) => share,
        Ok(ToolhostResponse::Error(e)) => {
            return Err(format!(
                "cannot take the child's budget from the parent's: {}",
                e.message
            ));
        }
        Ok(other) => {
            return Err(format!(
                "unexpected answer to a budget reservation: {other:?}"
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot take the child's budget from the parent's: {e}"
            ));
        }
    };
    let me = &parent.run.agent;
    let spent = |what: &str| {
        Err(format!(
            "agent `{}` has no {what} left to give agent `{}` ([limits] in {})",
            me.name, agent.name, me.source
        ))
    };
    let nothing_left = if share.tokens == Some(0) {
        Some("tokens")
    } else if share.cost_usd.is_some_and(|c| c <= 0.0) {
        Some("cost budget")
    } else {
        None
    };
    if let Some(what) = nothing_left {
        let to = SettleTo {
            token: parent.toolhost_token.to_string(),
            reserved: share,
        };
        release(parent.run.svc, &to).await;
        return spent(what);
    }
    Ok(share)
}

/// Gives back a reservation no child grant will settle (the child never got one).
pub async fn release(svc: &Service, to: &SettleTo) {
    let req = ToolhostRequest::SettleRun {
        token: to.token.clone(),
        reserved: to.reserved,
        used: Allowance::default(),
    };
    if let Err(e) = svc.toolhost_grants().request(&req, BUDGET_TIMEOUT).await {
        tracing::warn!(error = %e, "giving back a child's budget failed (the toolhost restarted?)");
    }
}

/// The child's own limits narrowed to its share of the parent's.
fn narrowed(agent: &AgentSpec, share: Allowance, parent: &Parent<'_>) -> AgentSpec {
    let mut a = agent.clone();
    let l = &mut a.limits;
    if let Some(c) = share.tool_calls {
        l.max_tool_calls = l.max_tool_calls.min(c);
    }
    if let Some(t) = share.tokens {
        l.max_tokens = Some(l.max_tokens.map_or(t, |m| m.min(t)));
    }
    if let Some(c) = share.cost_usd {
        l.max_cost_usd = Some(l.max_cost_usd.map_or(c, |m| m.min(c)));
    }
    let turns_left = parent
        .run
        .agent
        .limits
        .max_turns
        .saturating_sub(parent.turns_used)
        .max(1);
    l.max_turns = l.max_turns.min(turns_left);
    a
}

/// Runs one admitted child in a fresh worker; the toolhost settles its share of the parent's
/// budget when the child's grant is revoked.
///
/// A delegated run whose future is dropped before it ends (its parent's worker died, the
/// client left, the drain aborted): recorded as cancelled when dropped, so every started run
/// ends in the counts.
struct Unended<'a> {
    svc: &'a Service,
    agent: &'a str,
    run_id: &'a str,
    started: Instant,
    ended: bool,
}

impl Drop for Unended<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let cut = RunEvent::Failed {
                run_id: self.run_id.to_string(),
                error: ErrorBody::new(
                    ErrorKind::Cancelled,
                    "the delegated run was cut off with its parent",
                ),
                usage: Default::default(),
            };
            self.svc.runs().record_ended(self.agent, &cut, self.started);
        }
    }
}

async fn run_child(
    parent: &Parent<'_>,
    mut admitted: Admitted,
    share: Allowance,
) -> DelegationResult {
    let svc = parent.run.svc;
    let agent = Arc::new(narrowed(&admitted.agent, share, parent));
    let run_id = svc.runs().start_run(&agent.name);
    // From here the child is a run of the tree (counted in its events).
    admitted.counted = None;
    let now = Instant::now();
    // A child cut off with its parent (its future dropped) still ends in the counts.
    let mut unended = Unended {
        svc,
        agent: &agent.name,
        run_id: &run_id,
        started: now,
        ended: false,
    };
    let deadline = parent
        .run
        .deadline
        .min(now + Duration::from_millis(agent.limits.timeout_ms));
    let limit = deadline.saturating_duration_since(now);
    let account = TreeAccount::default();
    let sink = Sink::child(
        parent,
        &run_id,
        &admitted.call.call_id,
        &agent.name,
        admitted.lineage.depth(),
    );
    let history = match (&admitted.call.handoff, parent.run.agent.delegation.history) {
        // The agent taking over answers the user: it gets the whole conversation.
        (Some(_), _) | (None, HistoryPolicy::Full) => parent.run.history.to_vec(),
        (None, HistoryPolicy::Summary) => summary(parent.run.history),
        (None, HistoryPolicy::Task) => Vec::new(),
    };
    if let Some(reason) = &admitted.call.handoff {
        let _ = parent
            .run
            .sink
            .send(RunEvent::Handoff {
                call_id: admitted.call.call_id.clone(),
                from: parent.run.agent.name.clone(),
                to: agent.name.clone(),
                reason: reason.clone(),
            })
            .await;
    }
    // The toolhost settles the share with what the child's grant spent, by its own count, when
    // the child's grant is revoked (a child's worker cannot misreport it).
    let settle_to = SettleTo {
        token: parent.toolhost_token.to_string(),
        reserved: share,
    };
    let mut req = RunRequest::new(agent.name.clone(), admitted.call.task.clone());
    req.record = parent.record;
    req.replay = parent
        .run
        .replay
        .map(|r| r.for_child(&admitted.lineage.path, &agent.name, &admitted.call.task));
    // Not inside the parent's span: a line has one run id and one agent (the parent's is named).
    let span = tracing::info_span!(parent: None, "run", run_id = %run_id, agent = %agent.name, parent_run_id = %parent.run.run_id, trace_id = tracing::field::Empty);
    // In the trace, a child hangs from the parent worker's span for the call.
    let run_span = RunSpan::start(
        &agent,
        &run_id,
        None,
        parent.run.span.child_parent(admitted.call.span_id).as_ref(),
        &span,
    );
    let run = Run {
        svc,
        agent: &agent,
        run_id: &run_id,
        lineage: &admitted.lineage,
        sink: &sink,
        account: &account,
        limit,
        deadline,
        history: &history,
        announce: &[],
        settle_to: Some(&settle_to),
        replay: parent.run.replay,
        span: &run_span,
    };
    let terminal = tracing::Instrument::instrument(crate::runs::drive_child(run, req), span).await;
    run_span.end(&terminal);
    if admitted.call.handoff.is_some() && matches!(terminal, RunEvent::Finished { .. }) {
        *parent
            .run
            .account
            .handed_to
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(agent.name.clone());
    }
    unended.ended = true;
    svc.runs().record_ended(&agent.name, &terminal, now);
    let _ = sink.send(terminal.clone()).await;
    let (outcome, usage) = match terminal {
        RunEvent::Finished { answer, usage, .. } => (Ok(answer), usage),
        RunEvent::Failed { error, usage, .. } => (Err(error), usage),
        other => (
            Err(ErrorBody::new(
                ErrorKind::Internal,
                format!("a child run ended with {other:?}"),
            )),
            RunUsage::default(),
        ),
    };
    DelegationResult {
        call_id: admitted.call.call_id.clone(),
        agent: Some(agent.name.clone()),
        run_id: Some(run_id.clone()),
        outcome,
        usage,
    }
}

/// The `summary` history policy: the last three earlier exchanges, each message cut to 300
/// characters.
fn summary(history: &[ChatMessage]) -> Vec<ChatMessage> {
    let cut = |t: &str| crate::conversations::cut(t, 300);
    let start = history.len().saturating_sub(6);
    history[start..]
        .iter()
        .map(|m| match m {
            ChatMessage::User { content } => ChatMessage::User {
                content: cut(content),
            },
            ChatMessage::Assistant { content, .. } => ChatMessage::Assistant {
                content: content.as_deref().map(cut),
                tool_calls: vec![],
            },
            other => other.clone(),
        })
        .collect()
}

/// The call for proposals a contract-net candidate answers.
fn call_for_proposals(capability: &str, task: &str) -> String {
    format!(
        "CALL FOR PROPOSALS (capability `{capability}`)\nTask: {task}\n\nDo not do the task now. Answer with only a JSON object: {{\"confidence\": <0 to 1: how well you can do it>, \"estimated_cost_usd\": <what doing it would cost>}}"
    )
}

/// A bid as a candidate answered it: (confidence, estimated cost), or why it is not one.
fn parse_bid(answer: &str) -> Result<(f64, f64), String> {
    #[derive(serde::Deserialize)]
    struct Bid {
        confidence: f64,
        #[serde(default)]
        estimated_cost_usd: f64,
    }
    let (Some(start), Some(end)) = (answer.find('{'), answer.rfind('}')) else {
        return Err("no JSON object in the answer".into());
    };
    let bid: Bid = serde_json::from_str(answer.get(start..=end).unwrap_or(""))
        .map_err(|e| format!("not a bid: {e}"))?;
    if !(0.0..=1.0).contains(&bid.confidence) || !(0.0..).contains(&bid.estimated_cost_usd) {
        return Err("confidence must be 0–1 and estimated_cost_usd at least 0".into());
    }
    Ok((bid.confidence, bid.estimated_cost_usd))
}

/// Contract net: a call for proposals to every candidate (each bid a run of its own, in
/// parallel, with a share of the parent's budget), then the award: the highest confidence,
/// ties to the lower estimated cost, then to the first by name. A candidate without a valid
/// bid scores -1 and cannot win.
async fn contract_net(
    parent: &Parent<'_>,
    call: &DelegationCall,
    capability: &str,
    candidates: &[Arc<AgentSpec>],
) -> Result<(usize, Vec<RouteCandidate>), String> {
    let n = candidates.len();
    let mut bidders = Vec::new();
    let mut problems = Vec::new();
    for (j, agent) in candidates.iter().enumerate() {
        let bid_call = DelegationCall {
            call_id: format!("{}.bid{}", call.call_id, j + 1),
            target: DelegateTarget::Agent(agent.name.clone()),
            task: call_for_proposals(capability, &call.task),
            handoff: None,
            span_id: call.span_id,
        };
        // The award's run keeps a share too: n bids and the task share what is left.
        match checked(parent, bid_call, agent.clone()) {
            Ok(admitted) => match reserve(parent, agent, (n + 1 - j) as u32).await {
                Ok(share) => bidders.push((j, admitted, share)),
                Err(e) => problems.push(format!("{}: {e}", agent.name)),
            },
            Err(r) => problems.push(format!(
                "{}: {}",
                agent.name,
                r.outcome.err().map(|e| e.message).unwrap_or_default()
            )),
        }
    }
    let runs = bidders
        .into_iter()
        .map(|(j, admitted, share)| async move { (j, run_child(parent, admitted, share).await) });
    let mut bids: Vec<Option<(f64, f64)>> = vec![None; n];
    for (j, result) in futures_util::future::join_all(runs).await {
        match result
            .outcome
            .map_err(|e| e.message)
            .and_then(|a| parse_bid(&a))
        {
            Ok(bid) => bids[j] = Some(bid),
            Err(e) => problems.push(format!("{}: {e}", candidates[j].name)),
        }
    }
    let scores = candidates
        .iter()
        .zip(&bids)
        .map(|(a, b)| RouteCandidate {
            agent: a.name.clone(),
            score: b.map_or(-1.0, |b| b.0),
        })
        .collect();
    let best = bids
        .iter()
        .enumerate()
        .filter_map(|(j, b)| b.map(|b| (j, b)))
        .reduce(|best, next| {
            let better = next.1.0 > best.1.0 || (next.1.0 == best.1.0 && next.1.1 < best.1.1);
            if better { next } else { best }
        });
    match best {
        Some((j, _)) => Ok((j, scores)),
        None => Err(format!(
            "no agent with the capability made a valid bid ({})",
            problems.join("; ")
        )),
    }
}

/// `caxton agent run --capability`: the agent for a run a client asked for by capability, and
/// the `routed` event that says why (`round_robin` by default; contract net needs a delegating
/// agent, whose bids are its children).
pub async fn route_request(
    svc: &Service,
    capability: &str,
    strategy: Option<&str>,
    input: &str,
) -> Result<(Arc<AgentSpec>, RunEvent), ErrorBody> {
    let strategy = match strategy.map(|s| (s, RoutingStrategy::parse(s))) {
        None => RoutingStrategy::RoundRobin,
        Some((_, Some(RoutingStrategy::ContractNet))) => {
            return Err(ErrorBody::new(
                ErrorKind::BadRequest,
                "contract_net needs a delegating agent (its bids are that agent's children); use it in an agent's [delegation]",
            ));
        }
        Some((_, Some(s))) => s,
        Some((s, None)) => {
            return Err(ErrorBody::new(
                ErrorKind::BadRequest,
                format!("unknown strategy `{s}`; use round_robin, least_loaded or best_match"),
            ));
        }
    };
    let candidates = svc.registry().agents_with_capability(capability);
    if candidates.is_empty() {
        return Err(ErrorBody::new(
            ErrorKind::NotFound,
            format!(
                "no loaded agent has the capability `{capability}`; `caxton agent list` shows them"
            ),
        ));
    }
    let (i, scores) = svc
        .router()
        .pick(svc, strategy, capability, input, &candidates)
        .await
        .map_err(|e| {
            ErrorBody::new(
                ErrorKind::Delegation,
                format!("cannot route capability `{capability}`: {e}"),
            )
        })?;
    let chosen = candidates[i].clone();
    let routed = RunEvent::Routed {
        call_id: String::new(),
        capability: capability.to_string(),
        strategy: strategy.as_str().into(),
        chosen: chosen.name.clone(),
        candidates: scores,
    };
    Ok((chosen, routed))
}
