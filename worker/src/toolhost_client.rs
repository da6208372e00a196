//! The worker's blocking connection to `caxton-toolhost`: catalog, tool calls, LLM chats.

use std::path::Path;
use std::time::{Duration, Instant};

use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::frame::{self, MAX_FRAME_LEN};
use caxton_ipc::handshake::{Hello, HelloReply, Role};
use caxton_ipc::toolhost::{
    ChatProgress, ChatReply, ChatRequest, ToolhostRequest, ToolhostResponse,
};
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName, traits::Stream as _};

/// How long to keep trying to connect while the toolhost is (re)starting.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(3);

pub struct ToolhostClient {
    stream: Stream,
    socket: String,
}

impl ToolhostClient {
    /// Connects and shakes hands, retrying briefly while the socket is absent or refusing.
    pub fn connect(socket: &str) -> Result<ToolhostClient, ErrorBody> {
        let unreachable = |e: String| {
            ErrorBody::new(
                ErrorKind::Toolhost,
                format!("cannot reach the toolhost at {socket}: {e}"),
            )
        };
        let started = Instant::now();
        let mut stream = loop {
            let name = Path::new(socket)
                .to_fs_name::<GenericFilePath>()
                .map_err(|e| unreachable(e.to_string()))?;
            match Stream::connect(name) {
                Ok(s) => break s,
                Err(e)
                    if started.elapsed() < CONNECT_PATIENCE
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        ) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(unreachable(e.to_string())),
            }
        };
        frame::write_sync(&mut stream, &Hello::new(Role::Worker))
            .map_err(|e| unreachable(e.to_string()))?;
        match frame::read_sync::<HelloReply>(&mut stream, MAX_FRAME_LEN)
            .map_err(|e| unreachable(e.to_string()))?
        {
            HelloReply::Welcome(_) => Ok(ToolhostClient {
                stream,
                socket: socket.to_string(),
            }),
            HelloReply::Rejected { reason } => Err(unreachable(reason)),
        }
    }

    /// Sends a chat and reads its progress frames (handed to `on_progress`) up to the reply.
    pub fn chat(
        &mut self,
        req: ChatRequest,
        on_progress: &mut dyn FnMut(ChatProgress) -> Result<(), ErrorBody>,
    ) -> Result<ChatReply, ErrorBody> {
        let socket = &self.socket;
        let lost = |e: frame::FrameError| {
            ErrorBody::new(
                ErrorKind::Toolhost,
                format!("lost the toolhost connection ({socket}): {e}"),
            )
        };
        frame::write_sync(&mut self.stream, &ToolhostRequest::Chat(req)).map_err(lost)?;
        loop {
            match frame::read_sync(&mut self.stream, MAX_FRAME_LEN).map_err(lost)? {
                ToolhostResponse::ChatProgress(p) => on_progress(p)?,
                ToolhostResponse::Chat(reply) => return Ok(reply),
                ToolhostResponse::Error(e) => return Err(e),
                other => {
                    return Err(ErrorBody::new(
                        ErrorKind::Internal,
                        format!("unexpected toolhost response to a chat: {other:?}"),
                    ));
                }
            }
        }
    }

    /// Sends one request and reads its response; a toolhost-side error comes back as `Err`.
    pub fn request(&mut self, req: &ToolhostRequest) -> Result<ToolhostResponse, ErrorBody> {
        let socket = &self.socket;
        let lost = |e: frame::FrameError| {
            ErrorBody::new(
                ErrorKind::Toolhost,
                format!("lost the toolhost connection ({socket}): {e}"),
            )
        };
        frame::write_sync(&mut self.stream, req).map_err(lost)?;
        match frame::read_sync(&mut self.stream, MAX_FRAME_LEN).map_err(lost)? {
            ToolhostResponse::Error(e) => Err(e),
            other => Ok(other),
        }
    }
}
