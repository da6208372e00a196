//! The toolhost's socket server: one task per connection, Hello first, then request/response frames.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use caxton_ipc::api::ErrorBody;
use caxton_ipc::frame::{self, MAX_FRAME_LEN};
use caxton_ipc::handshake::{self, Hello, HelloReply, Role};
use caxton_ipc::peers::{PeerTable, Ticket};
use caxton_ipc::service;
use caxton_ipc::toolhost::{ChatReply, ChatRequest, ToolhostRequest, ToolhostResponse};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::host::Host;
use crate::llm::Progress;

/// Binds `socket` (replacing a stale file), prints `ready` on stdout, and serves until killed.
pub async fn serve(host: Arc<Host>, socket: &Path, idle: Duration) -> anyhow::Result<()> {
    let listener = service::bind_and_announce(socket).map_err(anyhow::Error::msg)?;
    let catalog = host.catalog();
    tracing::info!(socket = %socket.display(), tools = catalog.tools.len(), providers = catalog.providers.len(), "toolhost ready");
    let table = PeerTable::new(service::PRIVATE_CAPS);
    service::accept_loop(listener, table, service::parent_pid(), |stream, ticket| {
        connection(host.clone(), stream, ticket, idle)
    })
    .await;
    Ok(())
}

async fn connection(
    host: Arc<Host>,
    mut stream: UnixStream,
    ticket: Ticket,
    idle: Duration,
) -> Result<(), frame::FrameError> {
    let Some(hello) = service::read_hello(&mut stream, &ticket).await else {
        return Ok(());
    };
    if let Err(reason) = handshake::check_peer(
        &hello,
        &[Role::Worker, Role::Supervisor, Role::Cli],
        "caxton-toolhost",
    ) {
        frame::write_async(&mut stream, &HelloReply::Rejected { reason }).await?;
        return Ok(());
    }
    frame::write_async(
        &mut stream,
        &HelloReply::Welcome(Hello::new(Role::Toolhost)),
    )
    .await?;
    loop {
        let Some(req) =
            service::next_request::<ToolhostRequest>(&mut stream, &ticket, MAX_FRAME_LEN, idle)
                .await?
        else {
            return Ok(());
        };
        let resp = match req {
            ToolhostRequest::Ping => ToolhostResponse::Pong,
            ToolhostRequest::Catalog => ToolhostResponse::Catalog(host.catalog()),
            ToolhostRequest::Tools { names } => ToolhostResponse::Tools(host.tools(&names)),
            ToolhostRequest::CallTool(call) => {
                into_response(host.call_tool(&call).await, ToolhostResponse::ToolOutput)
            }
            ToolhostRequest::Chat(chat) => match chat_streaming(&host, &mut stream, &chat).await? {
                Some(reply) => into_response(reply, ToolhostResponse::Chat),
                None => return Ok(()),
            },
            ToolhostRequest::ListPackages => ToolhostResponse::Packages(host.packages()),
            ToolhostRequest::InstallPackage(req) => into_response(host.install(&req).await, |i| {
                ToolhostResponse::Installed(Box::new(i))
            }),
            ToolhostRequest::RemovePackage { name } => {
                into_response(host.remove(&name).await, |()| ToolhostResponse::Removed)
            }
        };
        frame::write_async(&mut stream, &resp).await?;
    }
}

/// Runs a chat while writing its progress frames as they come. The client sends nothing while a
/// chat runs, so anything readable (normally EOF: the worker exited or was killed) cancels it:
/// dropping the chat future drops the provider's HTTP request or stops the local generation.
/// `None` = cancelled.
async fn chat_streaming(
    host: &Host,
    stream: &mut UnixStream,
    chat: &ChatRequest,
) -> Result<Option<Result<ChatReply, ErrorBody>>, frame::FrameError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let progress = Progress::new(tx, chat.stream);
    let reply = host.chat(chat, &progress);
    tokio::pin!(reply);
    let (mut rd, mut wr) = stream.split();
    let mut probe = [0u8; 1];
    let result = loop {
        tokio::select! {
            biased;
            Some(p) = rx.recv() => {
                frame::write_async(&mut wr, &ToolhostResponse::ChatProgress(p)).await?;
            }
            r = &mut reply => break r,
            _ = rd.read(&mut probe) => {
                tracing::info!(run_id = %chat.run_id, agent = %chat.agent, provider = %chat.provider, "chat cancelled: the worker went away");
                return Ok(None);
            }
        }
    };
    while let Ok(p) = rx.try_recv() {
        frame::write_async(&mut wr, &ToolhostResponse::ChatProgress(p)).await?;
    }
    Ok(Some(result))
}

fn into_response<T>(r: Result<T, ErrorBody>, ok: fn(T) -> ToolhostResponse) -> ToolhostResponse {
    r.map_or_else(ToolhostResponse::Error, ok)
}
