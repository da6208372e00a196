//! The toolhost's socket server: one task per connection, Hello first, then request/response frames.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use caxton_ipc::api::ErrorBody;
use caxton_ipc::frame::{self, MAX_FRAME_LEN};
use caxton_ipc::handshake::{self, Hello, HelloReply, Role};
use caxton_ipc::toolhost::{ChatReply, ChatRequest, ToolhostRequest, ToolhostResponse};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

use crate::host::Host;
use crate::llm::Progress;

/// Connections served at once; more are refused at accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a new connection has to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `socket` (replacing a stale file), prints `ready` on stdout, and serves until killed.
pub async fn serve(host: Arc<Host>, socket: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot remove stale socket {}", socket.display()));
        }
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("cannot bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of {}", socket.display()))?;
    let catalog = host.catalog();
    tracing::info!(socket = %socket.display(), tools = catalog.tools.len(), providers = catalog.providers.len(), "toolhost ready");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready")
            .and_then(|_| out.flush())
            .context("cannot report readiness on stdout")?;
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                max = MAX_CONNECTIONS,
                "connection refused: too many connections"
            );
            continue;
        };
        let host = host.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(host, stream).await
                && !e.is_disconnect()
            {
                tracing::warn!(error = %e, "toolhost connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn connection(host: Arc<Host>, mut stream: UnixStream) -> Result<(), frame::FrameError> {
    let hello: Hello =
        match tokio::time::timeout(HELLO_TIMEOUT, frame::read_async(&mut stream, MAX_FRAME_LEN))
            .await
        {
            Ok(r) => r?,
            Err(_) => return Ok(()),
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
        let req: ToolhostRequest = match frame::read_async(&mut stream, MAX_FRAME_LEN).await {
            Ok(r) => r,
            Err(frame::FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let resp = match req {
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
