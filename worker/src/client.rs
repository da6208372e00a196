//! The worker's blocking connections to the service processes: `caxton-toolhost` (tool specs,
//! tool calls, LLM chats) and `caxton-memory` (memory tools, recall, storing the interaction).

use std::path::Path;
use std::time::{Duration, Instant};

use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::frame::{self, MAX_FRAME_LEN};
use caxton_ipc::handshake::{Hello, HelloReply, Role};
use caxton_ipc::memory::{MemoryAccess, MemoryRequest, MemoryResponse};
use caxton_ipc::toolhost::{
    ChatProgress, ChatReply, ChatRequest, ToolhostRequest, ToolhostResponse,
};
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName, traits::Stream as _};

/// How long to keep trying to connect while a service is (re)starting.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(3);

/// One handshaken connection; errors name the service and carry its error kind.
struct Connection {
    stream: Stream,
    socket: String,
    service: &'static str,
    kind: ErrorKind,
}

impl Connection {
    /// Connects and shakes hands, retrying briefly while the socket is absent or refusing.
    fn connect(
        socket: &str,
        service: &'static str,
        kind: ErrorKind,
    ) -> Result<Connection, ErrorBody> {
        let unreachable = |e: String| {
            ErrorBody::new(kind, format!("cannot reach the {service} at {socket}: {e}"))
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
            HelloReply::Welcome(_) => Ok(Connection {
                stream,
                socket: socket.to_string(),
                service,
                kind,
            }),
            HelloReply::Rejected { reason } => Err(unreachable(reason)),
        }
    }

    fn lost(&self, e: frame::FrameError) -> ErrorBody {
        ErrorBody::new(
            self.kind,
            format!(
                "lost the {} connection ({}): {e}",
                self.service, self.socket
            ),
        )
    }

    fn send<T: serde::Serialize>(&mut self, msg: &T) -> Result<(), ErrorBody> {
        frame::write_sync(&mut self.stream, msg).map_err(|e| self.lost(e))
    }

    fn recv<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, ErrorBody> {
        frame::read_sync(&mut self.stream, MAX_FRAME_LEN).map_err(|e| self.lost(e))
    }
}

pub struct ToolhostClient(Connection);

impl ToolhostClient {
    pub fn connect(socket: &str) -> Result<ToolhostClient, ErrorBody> {
        Connection::connect(socket, "toolhost", ErrorKind::Toolhost).map(ToolhostClient)
    }

    /// Sends a chat and reads its progress frames (handed to `on_progress`) up to the reply.
    pub fn chat(
        &mut self,
        req: ChatRequest,
        on_progress: &mut dyn FnMut(ChatProgress) -> Result<(), ErrorBody>,
    ) -> Result<ChatReply, ErrorBody> {
        self.0.send(&ToolhostRequest::Chat(req))?;
        loop {
            match self.0.recv()? {
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
        self.0.send(req)?;
        match self.0.recv()? {
            ToolhostResponse::Error(e) => Err(e),
            other => Ok(other),
        }
    }
}

pub struct MemoryClient(Connection);

impl MemoryClient {
    /// Connects and attaches with the run's token (the service then applies the run's grant).
    pub fn connect(access: &MemoryAccess) -> Result<MemoryClient, ErrorBody> {
        let mut c = MemoryClient(Connection::connect(
            &access.socket,
            "memory service",
            ErrorKind::Memory,
        )?);
        c.request(&MemoryRequest::Attach {
            token: access.token.clone(),
        })?;
        Ok(c)
    }

    /// Sends one request and reads its response; a service-side error comes back as `Err`.
    pub fn request(&mut self, req: &MemoryRequest) -> Result<MemoryResponse, ErrorBody> {
        self.0.send(req)?;
        match self.0.recv()? {
            MemoryResponse::Error(e) => Err(e),
            other => Ok(other),
        }
    }
}
