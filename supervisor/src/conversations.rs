//! Conversations as the supervisor sees them: who may read or continue one (its owner's uid,
//! the service's own uid, root), which agent a message goes to (the holder, after handoffs),
//! the history a run is given (within `[memory] history_tokens`), and the entries a run adds.
//! The memory service stores them; every read and write goes through here.
//!
//! History: each earlier run becomes a user message (its input) and an assistant message (the
//! tool results and delegations it completed, then its answer, or why it failed), so a run after
//! a failure sees what completed before it and need not repeat it. The oldest runs are dropped
//! first until the estimate (characters / 3, plus 4 per message) fits the budget.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caxton_ipc::agent::AgentSpec;
use caxton_ipc::api::{ApiResponse, ErrorBody, ErrorKind, RunEvent};
use caxton_ipc::conversation::{
    self, Conversation, ConversationInfo, ConversationOp, ConversationState, Entry, EntryKind,
};
use caxton_ipc::memory::{MemoryRequest, MemoryResponse};
use caxton_ipc::toolhost::ChatMessage;

use crate::service::Service;

/// Who sent a request, as the transport proved it, never as the request claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A client of the API socket: the peer's uid from SO_PEERCRED.
    Local { uid: u32 },
    /// An HTTP client: the name of the bearer token it presented, and whether that token is an
    /// admin.
    Token { name: Arc<str>, admin: bool },
}

impl Caller {
    /// The service's own uid, root, or an admin token: sees every conversation.
    fn is_operator(&self) -> bool {
        match self {
            Caller::Local { uid } => *uid == 0 || *uid == nix::unistd::getuid().as_raw(),
            Caller::Token { admin, .. } => *admin,
        }
    }

    /// May this caller read or continue `info`?
    fn may_use(&self, info: &ConversationInfo) -> bool {
        self.is_operator()
            || match self {
                Caller::Local { uid } => *uid == info.owner_uid && info.owner_token.is_none(),
                Caller::Token { name, .. } => info.owner_token.as_deref() == Some(&**name),
            }
    }

    /// Who a conversation this caller starts belongs to: a uid, and a token's name for an HTTP
    /// client (whose uid is the service's own).
    fn owner(&self) -> (u32, Option<String>) {
        match self {
            Caller::Local { uid } => (*uid, None),
            Caller::Token { name, .. } => (nix::unistd::getuid().as_raw(), Some(name.to_string())),
        }
    }
}

/// Entries loaded to build a run's history (the newest): more than `history_tokens` can hold
/// for runs of a few tool calls each.
const HISTORY_ENTRIES: u32 = 400;
/// Deadline of one conversation request to the memory service.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of entry text one run appends (the append is one frame to the memory service);
/// tool calls and results past it are left out of the record, the answer never.
const APPEND_BYTES: usize = 4 * 1024 * 1024;
/// Most characters of one tool result or delegation answer in the history.
const RESULT_CHARS: usize = 2000;

/// A conversation a run takes part in.
#[derive(Debug)]
pub struct Opened {
    pub id: String,
    /// The agent that answers: the conversation's holder.
    pub agent: Arc<AgentSpec>,
    /// This run's number in the conversation (1 for the first).
    pub turn: u32,
    /// What the run is given of the earlier runs.
    pub history: Vec<ChatMessage>,
}

async fn request(svc: &Service, req: &MemoryRequest) -> Result<MemoryResponse, ErrorBody> {
    let link = svc.memory_grants().map_err(|e| {
        ErrorBody::new(
            e.kind,
            format!(
                "conversations are kept by the memory service, and {}",
                e.message
            ),
        )
    })?;
    match link.request(req, TIMEOUT).await {
        Ok(MemoryResponse::Error(e)) => Err(e),
        Ok(r) => Ok(r),
        Err(e) => Err(ErrorBody::new(
            ErrorKind::Memory,
            format!("the memory service cannot serve conversations: {e}"),
        )),
    }
}

/// Loads conversation `id` for `caller`, refusing one that is not theirs.
async fn load(
    svc: &Service,
    caller: &Caller,
    id: &str,
    max: u32,
) -> Result<Conversation, ErrorBody> {
    conversation::check_id(id).map_err(|m| ErrorBody::new(ErrorKind::BadRequest, m))?;
    let req = MemoryRequest::ConversationLoad {
        id: id.to_string(),
        max_entries: max,
    };
    let conv = match request(svc, &req).await? {
        MemoryResponse::Conversation(c) => *c,
        other => {
            return Err(ErrorBody::new(
                ErrorKind::Internal,
                format!("unexpected answer to a conversation load: {other:?}"),
            ));
        }
    };
    if !caller.may_use(&conv.info) {
        return Err(ErrorBody::new(
            ErrorKind::PermissionDenied,
            format!(
                "conversation `{id}` was started by another user; only they and the service's operator may read or continue it"
            ),
        ));
    }
    Ok(conv)
}

/// Starts (`"new"`) or continues conversation `which` for a run that named `agent`.
pub async fn open(
    svc: &Service,
    caller: &Caller,
    agent: Arc<AgentSpec>,
    which: &str,
) -> Result<Opened, ErrorBody> {
    if which == caxton_ipc::api::NEW_CONVERSATION {
        let id = format!(
            "conv-{}",
            crate::runs::random_hex().map_err(|e| ErrorBody::new(
                ErrorKind::Internal,
                format!("no randomness for a conversation id: {e}")
            ))?
        );
        let now = crate::runs::now_ms();
        let (owner_uid, owner_token) = caller.owner();
        let info = ConversationInfo {
            id: id.clone(),
            state: ConversationState::Active,
            owner_uid,
            owner_token,
            holder: agent.name.clone(),
            turns: 0,
            created_ms: now,
            updated_ms: now,
        };
        request(svc, &MemoryRequest::ConversationCreate { info }).await?;
        return Ok(Opened {
            id,
            agent,
            turn: 1,
            history: Vec::new(),
        });
    }
    let conv = load(svc, caller, which, HISTORY_ENTRIES).await?;
    if !conv.info.state.open() {
        return Err(ErrorBody::new(
            ErrorKind::BadRequest,
            format!(
                "conversation `{which}` is {}: it can be read (`caxton conversation show {which}`), not continued; start another with --conversation new",
                conv.info.state.as_str()
            ),
        ));
    }
    let holder = if conv.info.holder == agent.name {
        agent
    } else {
        svc.registry().get(&conv.info.holder).ok_or_else(|| {
            ErrorBody::new(
                ErrorKind::NotFound,
                format!(
                    "conversation `{which}` is held by agent `{}`, which is not loaded",
                    conv.info.holder
                ),
            )
        })?
    };
    Ok(Opened {
        id: conv.info.id.clone(),
        agent: holder,
        turn: conv.info.turns + 1,
        history: history(&conv.entries, svc.config().memory.history_tokens),
    })
}

/// The chat messages that stand for earlier runs, newest kept within `budget` tokens.
pub fn history(entries: &[Entry], budget: u32) -> Vec<ChatMessage> {
    // Runs in order, each its entries.
    let mut runs: Vec<(&str, Vec<&Entry>)> = Vec::new();
    for e in entries {
        match runs.last_mut() {
            Some((id, list)) if *id == e.run_id => list.push(e),
            _ => runs.push((&e.run_id, vec![e])),
        }
    }
    let mut turns: Vec<[ChatMessage; 2]> = runs
        .iter()
        .map(|(_, list)| {
            let input = list
                .iter()
                .find(|e| e.kind == EntryKind::User)
                .map_or(String::new(), |e| e.content.clone());
            let mut said = String::new();
            for e in list {
                let name = e.name.as_deref().unwrap_or("?");
                let line = match e.kind {
                    EntryKind::User | EntryKind::ToolCall => continue,
                    EntryKind::ToolResult => {
                        format!("[{name} gave: {}]", cut(&e.content, RESULT_CHARS))
                    }
                    EntryKind::ToolError => {
                        format!("[{name} failed: {}]", cut(&e.content, RESULT_CHARS))
                    }
                    EntryKind::Handoff => {
                        format!("[handed the conversation to {name}: {}]", e.content)
                    }
                    EntryKind::Failure => {
                        format!("[this request failed: {}]", cut(&e.content, RESULT_CHARS))
                    }
                    EntryKind::Answer => e.content.clone(),
                };
                if !said.is_empty() {
                    said.push('\n');
                }
                said.push_str(&line);
            }
            [
                ChatMessage::User { content: input },
                ChatMessage::Assistant {
                    content: Some(said),
                    tool_calls: vec![],
                },
            ]
        })
        .collect();
    let cost = |t: &[ChatMessage; 2]| -> u64 {
        t.iter()
            .map(|m| match m {
                ChatMessage::User { content } => content.len() as u64 / 3 + 4,
                ChatMessage::Assistant { content, .. } => {
                    content.as_deref().map_or(0, str::len) as u64 / 3 + 4
                }
                _ => 4,
            })
            .sum()
    };
    let mut total: u64 = turns.iter().map(cost).sum();
    let mut drop = 0;
    while total > u64::from(budget) && drop < turns.len() {
        total -= cost(&turns[drop]);
        drop += 1;
    }
    turns.drain(..drop);
    turns.into_iter().flatten().collect()
}

/// `text` cut to its first `chars` characters, marked with `…` when cut.
pub fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// What a run adds to its conversation, noted from its own events as they pass.
#[derive(Debug)]
pub struct Log {
    pub id: String,
    run_id: String,
    agent: String,
    version: String,
    entries: Mutex<Vec<Entry>>,
    /// Tool names by call id, for the results.
    calls: Mutex<BTreeMap<String, String>>,
}

impl Log {
    pub fn new(opened: &Opened, run_id: &str, input: &str) -> Log {
        let log = Log {
            id: opened.id.clone(),
            run_id: run_id.to_string(),
            agent: opened.agent.name.clone(),
            version: opened.agent.version.clone(),
            entries: Mutex::new(Vec::new()),
            calls: Mutex::new(BTreeMap::new()),
        };
        log.push(EntryKind::User, None, input.to_string(), &opened.agent.name);
        log
    }

    fn push(&self, kind: EntryKind, name: Option<String>, content: String, agent: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // One append carries at most MAX_APPEND_ENTRIES, each cut to MAX_ENTRY_BYTES (the memory
        // service cuts it too): keep the last place for the run's end.
        let ends = matches!(kind, EntryKind::Answer | EntryKind::Failure);
        let bytes: usize = entries.iter().map(|e| e.content.len()).sum();
        if !ends
            && (entries.len() + 1 >= conversation::MAX_APPEND_ENTRIES
                || bytes + content.len() > APPEND_BYTES)
        {
            return;
        }
        let content = conversation::bounded(&content).into_owned();
        entries.push(Entry {
            at_ms: crate::runs::now_ms(),
            run_id: self.run_id.clone(),
            agent: agent.to_string(),
            version: self.version.clone(),
            kind,
            name,
            content,
        });
    }

    /// Notes one of the run's own events.
    pub fn note(&self, event: &RunEvent) {
        match event {
            RunEvent::ToolCall {
                call_id,
                tool,
                arguments,
            } => {
                self.calls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(call_id.clone(), tool.clone());
                self.push(
                    EntryKind::ToolCall,
                    Some(tool.clone()),
                    arguments.clone(),
                    &self.agent,
                );
            }
            RunEvent::ToolResult {
                tool, ok, output, ..
            } => {
                let kind = if *ok {
                    EntryKind::ToolResult
                } else {
                    EntryKind::ToolError
                };
                self.push(kind, Some(tool.clone()), output.clone(), &self.agent);
            }
            RunEvent::Handoff { to, reason, .. } => {
                self.push(
                    EntryKind::Handoff,
                    Some(to.clone()),
                    reason.clone(),
                    &self.agent,
                );
            }
            _ => {}
        }
    }

    /// Writes the run's entries with its end: the answer (by `answered_by`, the holder after
    /// a handoff) or the failure.
    pub async fn finish(&self, svc: &Service, terminal: &RunEvent, holder: &str) {
        let state = match terminal {
            RunEvent::Finished { answer, .. } => {
                self.push(EntryKind::Answer, None, answer.clone(), holder);
                ConversationState::Active
            }
            RunEvent::Failed { error, .. } => {
                self.push(EntryKind::Failure, None, error.message.clone(), &self.agent);
                ConversationState::Failed
            }
            _ => return,
        };
        let entries = std::mem::take(&mut *self.entries.lock().unwrap_or_else(|p| p.into_inner()));
        let req = MemoryRequest::ConversationAppend {
            id: self.id.clone(),
            entries,
            state,
            holder: holder.to_string(),
        };
        if let Err(e) = request(svc, &req).await {
            tracing::warn!(conversation = %self.id, error = %e.message, "cannot record the run in its conversation");
        }
    }
}

/// `caxton conversation …`: only on the caller's own conversations (all for the operator).
pub async fn api(svc: &Service, caller: Caller, op: ConversationOp) -> ApiResponse {
    let caller = &caller;
    let done = async {
        Ok(match op {
            ConversationOp::List { limit } => {
                let (owner_uid, owner_token) = match caller {
                    _ if caller.is_operator() => (None, None),
                    Caller::Local { uid } => (Some(*uid), None),
                    Caller::Token { name, .. } => (None, Some(name.to_string())),
                };
                let req = MemoryRequest::ConversationList {
                    owner_uid,
                    owner_token,
                    limit,
                };
                match request(svc, &req).await? {
                    MemoryResponse::Conversations(c) => ApiResponse::Conversations(c),
                    other => unexpected(other),
                }
            }
            ConversationOp::Show { id } => ApiResponse::Conversation(Box::new(
                load(svc, caller, &id, conversation::MAX_LOAD_ENTRIES).await?,
            )),
            ConversationOp::Close { id } => {
                load(svc, caller, &id, 0).await?;
                request(svc, &MemoryRequest::ConversationClose { id }).await?;
                ApiResponse::Done
            }
            ConversationOp::Delete { id } => {
                load(svc, caller, &id, 0).await?;
                request(svc, &MemoryRequest::ConversationDelete { id }).await?;
                ApiResponse::Done
            }
        })
    };
    done.await.unwrap_or_else(ApiResponse::Error)
}

fn unexpected(other: MemoryResponse) -> ApiResponse {
    ApiResponse::Error(ErrorBody::new(
        ErrorKind::Internal,
        format!("unexpected answer from the memory service: {other:?}"),
    ))
}
