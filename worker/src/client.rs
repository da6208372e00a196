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

    /// True when the service has closed this connection while it was idle (its idle timeout, an
    /// eviction, or a restart): the socket reads as end-of-file with nothing sent.
    fn closed_by_peer(&self) -> bool {
        use std::os::fd::AsFd;
        let Stream::UdSocket(s) = &self.stream;
        let fd = s.as_fd();
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        if !matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(1)
        ) {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(
            nix::sys::socket::recv(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &mut byte,
                nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ),
            Ok(0)
        )
    }

    /// Connects again if the service closed the connection while it was idle; `true` when it did.
    fn reopen_if_closed(&mut self) -> Result<bool, ErrorBody> {
        if !self.closed_by_peer() {
            return Ok(false);
        }
        tracing_note(self.service);
        *self = Connection::connect(&self.socket, self.service, self.kind)?;
        Ok(true)
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
        frame::write_sync(&mut self.stream, msg).map_err(|e| match e {
            frame::FrameError::MessageTooLarge { len, max } => ErrorBody::new(
                ErrorKind::LimitExceeded,
                format!(
                    "the request to the {} is {len} bytes, over the {max}-byte frame limit; \
                     with a long conversation, lower [limits] max_turns or have tools return less",
                    self.service
                ),
            ),
            e => self.lost(e),
        })
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
        self.0.reopen_if_closed()?;
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
        self.0.reopen_if_closed()?;
        self.0.send(req)?;
        match self.0.recv()? {
            ToolhostResponse::Error(e) => Err(e),
            other => Ok(other),
        }
    }
}

pub struct MemoryClient {
    conn: Connection,
    token: String,
}

impl MemoryClient {
    /// Connects and attaches with the run's token (the service then applies the run's grant).
    pub fn connect(access: &MemoryAccess) -> Result<MemoryClient, ErrorBody> {
        let mut c = MemoryClient {
            conn: Connection::connect(&access.socket, "memory service", ErrorKind::Memory)?,
            token: access.token.clone(),
        };
        c.attach()?;
        Ok(c)
    }

    fn attach(&mut self) -> Result<(), ErrorBody> {
        let attach = MemoryRequest::Attach {
            token: self.token.clone(),
        };
        self.exchange(&attach).map(drop)
    }

    /// Sends one request and reads its response; a service-side error comes back as `Err`. A
    /// connection the service closed while idle is opened and attached again first.
    pub fn request(&mut self, req: &MemoryRequest) -> Result<MemoryResponse, ErrorBody> {
        if self.conn.reopen_if_closed()? {
            self.attach()?;
        }
        self.exchange(req)
    }

    fn exchange(&mut self, req: &MemoryRequest) -> Result<MemoryResponse, ErrorBody> {
        self.conn.send(req)?;
        match self.conn.recv()? {
            MemoryResponse::Error(e) => Err(e),
            other => Ok(other),
        }
    }
}

/// Says on stderr (kept in the supervisor's tail of this worker) that a connection was reopened.
fn tracing_note(service: &str) {
    eprintln!("caxton-worker: the {service} closed an idle connection; reconnecting");
}
