//! The API core: one handler from an API request to its responses, whatever the transport.
//! The socket's front ends (bincode frames and JSON lines, `server.rs`) are adapters over it;
//! an HTTP, A2A or MCP face is another adapter.
//!
//! A run's responses arrive on a channel; a front end that loses its client drops the receiver,
//! which the run notices (it stops its worker and ends).

use std::sync::Arc;

use caxton_ipc::api::{ApiRequest, ApiResponse};
use tokio::sync::mpsc;

use crate::conversations::Caller;
use crate::runs;
use crate::service::Service;

/// Events buffered between a run and a slow client.
const EVENT_BUFFER: usize = 256;

/// What a request is answered with.
#[derive(Debug)]
pub enum Reply {
    /// One response.
    One(Box<ApiResponse>),
    /// A run's events, ending with exactly one terminal event (or one error response if the run
    /// never started).
    Run(mpsc::Receiver<ApiResponse>),
}

/// Handles one request from `caller`.
pub async fn handle(svc: &Arc<Service>, caller: Caller, req: ApiRequest) -> Reply {
    let one = match req {
        ApiRequest::Run(run) => {
            let (tx, rx) = mpsc::channel(EVENT_BUFFER);
            tokio::spawn(runs::execute(svc.clone(), caller, run, tx));
            return Reply::Run(rx);
        }
        ApiRequest::Conversation(op) => crate::conversations::api(svc, caller, op).await,
        ApiRequest::ListAgents => ApiResponse::Agents(svc.registry().summaries()),
        ApiRequest::ShowAgent { name } => svc.show(&name),
        ApiRequest::ValidateAgent { file_name, source } => svc.validate(&file_name, &source),
        ApiRequest::Status => ApiResponse::Status(svc.status()),
        ApiRequest::Health => ApiResponse::Health(svc.health()),
        ApiRequest::Metrics => ApiResponse::Metrics(svc.metrics()),
        ApiRequest::ListTools
        | ApiRequest::InstallTool(_)
        | ApiRequest::RemoveTool { .. }
        | ApiRequest::CallTool { .. } => svc.tool_request(req).await,
        ApiRequest::Memory(m) => svc.memory_api(m).await,
    };
    Reply::One(Box::new(one))
}
