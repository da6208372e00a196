//! Runs started by the network faces (the HTTP API now; A2A and MCP next), kept readable by id
//! while they run and for `[http] run_retention` after (at most `[http] max_retained_runs`
//! ended ones; the oldest go first). Each record belongs to the token that started it.
//!
//! A record is fed by a pump task that reads the run's responses from the API core, keeps its
//! events (up to [`MAX_RECORD_EVENTS`], token chunks left out: the answer has the text), and
//! forwards them to the client that started it when that client streams. Cancelling a run is
//! dropping its receiver, as when a socket client goes away: the run stops its worker.
//!
//! The records live in this process only: a restart forgets them (durable runs are the
//! asynchronous-work issue's).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use caxton_ipc::api::{ApiResponse, ErrorBody, ErrorKind, RunEvent};
use caxton_ipc::json_api;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

/// Events kept per record; later ones still stream to the client but are not kept.
pub const MAX_RECORD_EVENTS: usize = 5000;
/// Bytes of a run's input a record keeps (for A2A's history).
pub const MAX_KEPT_INPUT: usize = 64 * 1024;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Finished,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn ended(self) -> bool {
        self != RunState::Running
    }
}

/// A run as `GET /v1/runs/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub agent: String,
    /// The token that started it.
    pub owner: String,
    pub state: RunState,
    pub conversation: Option<String>,
    pub created_ms: u64,
    pub ended_ms: Option<u64>,
    pub answer: Option<String>,
    pub error: Option<json_api::Error>,
    pub usage: Option<json_api::Usage>,
    /// Present when asked for; at most [`MAX_RECORD_EVENTS`], without token chunks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<json_api::Event>>,
    /// Set when events were left out of `events` for the cap.
    pub events_truncated: bool,
}

#[derive(Debug)]
struct Progress {
    state: RunState,
    conversation: Option<String>,
    ended_ms: Option<u64>,
    events: Vec<json_api::Event>,
    truncated: bool,
    /// The terminal event (`Finished` or `Failed`) once there is one.
    terminal: Option<json_api::Event>,
}

/// Who started a run, and with what.
#[derive(Debug)]
pub struct Origin {
    /// The token's name.
    pub owner: Arc<str>,
    /// The agent the request named (the run's agent may be another: a conversation's holder).
    pub requested: String,
    /// The run's input (kept up to [`MAX_KEPT_INPUT`]).
    pub input: String,
    /// What the face knows the request by (A2A: the message id).
    pub tag: Option<String>,
}

/// One run started by a face.
#[derive(Debug)]
pub struct Record {
    pub run_id: String,
    pub agent: String,
    /// The agent the request named.
    pub requested: String,
    pub owner: Arc<str>,
    pub input: String,
    pub tag: Option<String>,
    pub created_ms: u64,
    progress: Mutex<Progress>,
    /// Turns true when someone asks for the run to stop.
    cancel: watch::Sender<bool>,
    /// Bumped at every change; turns ended with the run.
    changed: watch::Sender<u64>,
}

impl Record {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn state(&self) -> RunState {
        self.progress().state
    }

    /// The conversation it answers in, once its event came.
    pub fn conversation(&self) -> Option<String> {
        self.progress().conversation.clone()
    }

    /// Its kept events from the `from`th on, and whether it has ended.
    pub fn events_from(&self, from: usize) -> (Vec<json_api::Event>, bool) {
        let p = self.progress();
        (
            p.events.get(from..).map(<[_]>::to_vec).unwrap_or_default(),
            p.state.ended(),
        )
    }

    /// Changes whenever the record does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Asks the run to stop; false when it had already ended.
    pub fn cancel(&self) -> bool {
        if self.state().ended() {
            return false;
        }
        self.cancel.send_replace(true);
        true
    }

    /// Waits until the run has ended.
    pub async fn ended(&self) {
        let mut rx = self.changed.subscribe();
        while !self.state().ended() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The run as the API shows it, with its events when `events`.
    pub fn view(&self, events: bool) -> RunView {
        let p = self.progress();
        let (answer, error, usage) = match &p.terminal {
            Some(json_api::Event::Finished { answer, usage, .. }) => {
                (Some(answer.clone()), None, Some(usage.clone()))
            }
            Some(json_api::Event::Failed { error, usage, .. }) => {
                (None, Some(error.clone()), Some(usage.clone()))
            }
            _ => (None, None, None),
        };
        RunView {
            run_id: self.run_id.clone(),
            agent: self.agent.clone(),
            owner: self.owner.to_string(),
            state: p.state,
            conversation: p.conversation.clone(),
            created_ms: self.created_ms,
            ended_ms: p.ended_ms,
            answer,
            error,
            usage,
            events: events.then(|| p.events.clone()),
            events_truncated: p.truncated,
        }
    }

    /// Keeps `event`; returns true when it ended the run.
    fn push(&self, event: &RunEvent) -> bool {
        let mut p = self.progress();
        if p.state.ended() {
            return true;
        }
        if let RunEvent::Conversation { id, .. } = event {
            p.conversation = Some(id.clone());
        }
        let ended = match event {
            RunEvent::Finished { .. } => Some(RunState::Finished),
            RunEvent::Failed { error, .. } if error.kind == ErrorKind::Cancelled => {
                Some(RunState::Cancelled)
            }
            RunEvent::Failed { .. } => Some(RunState::Failed),
            _ => None,
        };
        // Token chunks are in the answer; LLM exchanges (whole prompts, when recorded) stream
        // to the client but are not kept.
        if !matches!(event, RunEvent::Token { .. } | RunEvent::LlmExchange(_)) {
            if p.events.len() < MAX_RECORD_EVENTS || ended.is_some() {
                p.events.push(event.clone().into());
            } else {
                p.truncated = true;
            }
        }
        if let Some(state) = ended {
            p.state = state;
            p.ended_ms = Some(crate::runs::now_ms());
            p.terminal = p.events.last().cloned();
        }
        drop(p);
        self.changed.send_modify(|n| *n += 1);
        ended.is_some()
    }

    /// Ends a run whose responses stopped without a terminal event (it was cancelled here, or
    /// the API core went away), and returns the terminal event it was given.
    fn end_without_terminal(&self, kind: ErrorKind, message: String) -> ApiResponse {
        let terminal = RunEvent::Failed {
            run_id: self.run_id.clone(),
            error: ErrorBody::new(kind, message),
            usage: Default::default(),
        };
        self.push(&terminal);
        ApiResponse::Event(terminal)
    }
}

/// `input`, cut at [`MAX_KEPT_INPUT`] (on a character boundary).
fn kept(mut input: String) -> String {
    if input.len() > MAX_KEPT_INPUT {
        let mut at = MAX_KEPT_INPUT;
        while !input.is_char_boundary(at) {
            at -= 1;
        }
        input.truncate(at);
    }
    input
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<String, Arc<Record>>,
    /// Ended runs, oldest first, with when they ended.
    ended: VecDeque<(Instant, String)>,
}

/// The records, by run id.
#[derive(Debug)]
pub struct RunRecords {
    table: Mutex<Table>,
    retention: Duration,
    max_ended: usize,
}

/// How a run's first response went.
pub enum Start {
    /// It started: its record, and the live events when the caller streams.
    Started(Arc<Record>),
    /// It never started (unknown agent, busy, draining, …).
    Refused(ErrorBody),
}

/// Time a streaming client has to take the next event before its run is cancelled, as on the
/// socket.
const CLIENT_TAKE_TIMEOUT: Duration = crate::server::CLIENT_WRITE_TIMEOUT;

impl RunRecords {
    pub fn new(retention: Duration, max_ended: usize) -> RunRecords {
        RunRecords {
            table: Mutex::new(Table::default()),
            retention,
            max_ended,
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes over a run's responses: waits for its first one, then (if it started) records it
    /// and spawns the pump that keeps the record and feeds `live`. `permit` is held until the
    /// run ends. Must be called on the main runtime (the pump is spawned there).
    pub async fn start(
        self: &Arc<Self>,
        mut rx: mpsc::Receiver<ApiResponse>,
        origin: Origin,
        live: Option<mpsc::Sender<ApiResponse>>,
        permit: OwnedSemaphorePermit,
    ) -> Start {
        let first = match rx.recv().await {
            Some(ApiResponse::Event(e @ RunEvent::Started { .. })) => e,
            Some(ApiResponse::Error(e)) => return Start::Refused(e),
            Some(other) => {
                return Start::Refused(ErrorBody::new(
                    ErrorKind::Internal,
                    format!("a run began with {other:?}"),
                ));
            }
            None => {
                return Start::Refused(ErrorBody::new(
                    ErrorKind::Internal,
                    "the run ended before it started",
                ));
            }
        };
        let RunEvent::Started { run_id, agent, .. } = &first else {
            unreachable!("matched above")
        };
        let record = Arc::new(Record {
            run_id: run_id.clone(),
            agent: agent.clone(),
            owner: origin.owner,
            requested: origin.requested,
            input: kept(origin.input),
            tag: origin.tag,
            created_ms: crate::runs::now_ms(),
            progress: Mutex::new(Progress {
                state: RunState::Running,
                conversation: None,
                ended_ms: None,
                events: Vec::new(),
                truncated: false,
                terminal: None,
            }),
            cancel: watch::Sender::new(false),
            changed: watch::Sender::new(0),
        });
        self.insert(record.clone());
        record.push(&first);
        let live = match live {
            Some(tx) => match tx.send(ApiResponse::Event(first)).await {
                Ok(()) => Some(tx),
                Err(_) => {
                    record.cancel();
                    None
                }
            },
            None => None,
        };
        tokio::spawn(pump(self.clone(), record.clone(), rx, live, permit));
        Start::Started(record)
    }

    fn insert(&self, record: Arc<Record>) {
        let mut t = self.table();
        self.expire(&mut t);
        t.by_id.insert(record.run_id.clone(), record);
    }

    fn mark_ended(&self, run_id: &str) {
        let mut t = self.table();
        t.ended.push_back((Instant::now(), run_id.to_string()));
        self.expire(&mut t);
    }

    /// Drops ended runs past the retention time or the count.
    fn expire(&self, t: &mut Table) {
        while let Some((at, id)) = t.ended.front() {
            if t.ended.len() <= self.max_ended && at.elapsed() < self.retention {
                break;
            }
            let id = id.clone();
            t.ended.pop_front();
            t.by_id.remove(&id);
        }
    }

    /// The record of `run_id`, if kept.
    pub fn get(&self, run_id: &str) -> Option<Arc<Record>> {
        let mut t = self.table();
        self.expire(&mut t);
        t.by_id.get(run_id).cloned()
    }

    /// Records that `may_see` allows, newest first, at most `limit`.
    pub fn list(&self, may_see: impl Fn(&Record) -> bool, limit: usize) -> Vec<Arc<Record>> {
        let mut t = self.table();
        self.expire(&mut t);
        let mut all: Vec<_> = t.by_id.values().filter(|r| may_see(r)).cloned().collect();
        all.sort_by(|a, b| {
            b.created_ms
                .cmp(&a.created_ms)
                .then_with(|| b.run_id.cmp(&a.run_id))
        });
        all.truncate(limit);
        all
    }
}

/// Reads a run's responses into its record (and to its streaming client) until it ends or is
/// cancelled; dropping `rx` then stops the run.
async fn pump(
    records: Arc<RunRecords>,
    record: Arc<Record>,
    mut rx: mpsc::Receiver<ApiResponse>,
    mut live: Option<mpsc::Sender<ApiResponse>>,
    _permit: OwnedSemaphorePermit,
) {
    let mut cancel = record.cancel.subscribe();
    let client_gone = |live: &Option<mpsc::Sender<ApiResponse>>| {
        let live = live.clone();
        async move {
            match live {
                Some(tx) => tx.closed().await,
                None => std::future::pending().await,
            }
        }
    };
    loop {
        let next = tokio::select! {
            r = rx.recv() => r,
            () = async { let _ = cancel.wait_for(|c| *c).await; } => {
                drop(rx);
                let terminal = record.end_without_terminal(ErrorKind::Cancelled, "the run was cancelled".into());
                // A streaming client still gets its stream's end.
                if let Some(tx) = &live {
                    let _ = tokio::time::timeout(CLIENT_TAKE_TIMEOUT, tx.send(terminal)).await;
                }
                break;
            }
            () = client_gone(&live) => {
                drop(rx);
                record.end_without_terminal(ErrorKind::Cancelled, "the client went away".into());
                break;
            }
        };
        let Some(resp) = next else {
            record.end_without_terminal(
                ErrorKind::Internal,
                "the run ended without a terminal event".into(),
            );
            break;
        };
        let ended = match &resp {
            ApiResponse::Event(e) => record.push(e),
            _ => false,
        };
        if let Some(tx) = &live {
            let sent = tokio::time::timeout(CLIENT_TAKE_TIMEOUT, tx.send(resp)).await;
            if !matches!(sent, Ok(Ok(()))) {
                live = None;
                if !ended {
                    drop(rx);
                    record.end_without_terminal(
                        ErrorKind::Cancelled,
                        "the client stopped reading".into(),
                    );
                    break;
                }
            }
        }
        if ended {
            break;
        }
    }
    records.mark_ended(&record.run_id);
}
