//! The worker's blocking connections to the service processes: `caxton-toolhost` (tool specs,
//! tool calls, LLM chats) and `caxton-memory` (memory tools, recall, storing the interaction).
//! Each attaches with its run's token (the grant the supervisor registered for this run) and
//! attaches again after reopening a connection the service closed while it was idle.

use std::path::Path;
use std::time::{Duration, Instant};

use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::connection::{Client, MemoryProtocol, Protocol, ToolhostProtocol};
use caxton_ipc::frame::FrameError;
use caxton_ipc::handshake::Role;
use caxton_ipc::memory::{MemoryAccess, MemoryRequest, MemoryResponse};
use caxton_ipc::toolhost::{
    ChatProgress, ChatReply, ChatRequest, ToolhostRequest, ToolhostResponse,
};
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName, traits::Stream as _};

/// How long to keep trying to connect while a service is (re)starting.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(3);

/// A protocol the worker attaches to with its run's token.
trait Attachable: Protocol {
    const SERVICE: &'static str;
    const KIND: ErrorKind;
    fn attach(token: &str) -> Self::Request;
    /// The error in a response, if it is one.
    fn error(resp: Self::Response) -> Result<Self::Response, ErrorBody>;
}

impl Attachable for ToolhostProtocol {
    const SERVICE: &'static str = "toolhost";
    const KIND: ErrorKind = ErrorKind::Toolhost;
    fn attach(token: &str) -> ToolhostRequest {
        ToolhostRequest::Attach {
            token: token.to_string(),
        }
    }
    fn error(resp: ToolhostResponse) -> Result<ToolhostResponse, ErrorBody> {
        match resp {
            ToolhostResponse::Error(e) => Err(e),
            other => Ok(other),
        }
    }
}

impl Attachable for MemoryProtocol {
    const SERVICE: &'static str = "memory service";
    const KIND: ErrorKind = ErrorKind::Memory;
    fn attach(token: &str) -> MemoryRequest {
        MemoryRequest::Attach {
            token: token.to_string(),
        }
    }
    fn error(resp: MemoryResponse) -> Result<MemoryResponse, ErrorBody> {
        match resp {
            MemoryResponse::Error(e) => Err(e),
            other => Ok(other),
        }
    }
}

/// One attached connection; errors name the service and carry its error kind.
struct Connection<P: Attachable> {
    conn: Client<P, Stream>,
    socket: String,
    token: String,
}

impl<P: Attachable> Connection<P> {
    /// Connects (retrying briefly while the socket is absent or refusing), shakes hands and
    /// attaches with `token`.
    fn open(socket: &str, token: &str) -> Result<Self, ErrorBody> {
        let unreachable = |e: String| {
            ErrorBody::new(
                P::KIND,
                format!("cannot reach the {} at {socket}: {e}", P::SERVICE),
            )
        };
        let started = Instant::now();
        let stream = loop {
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
        let conn = Client::<P, _>::connect(stream, Role::Worker)
            .map_err(|e| unreachable(e.to_string()))?;
        let mut c = Connection {
            conn,
            socket: socket.to_string(),
            token: token.to_string(),
        };
        c.exchange(&P::attach(token))?;
        Ok(c)
    }

    /// True when the service has closed this connection while it was idle (its idle timeout, an
    /// eviction, or a restart): the socket reads as end-of-file with nothing sent.
    fn closed_by_peer(&self) -> bool {
        use std::os::fd::AsFd;
        let Stream::UdSocket(s) = self.conn.io();
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

    /// Connects and attaches again if the service closed the connection while it was idle.
    fn reopen_if_closed(&mut self) -> Result<(), ErrorBody> {
        if self.closed_by_peer() {
            eprintln!(
                "caxton-worker: the {} closed an idle connection; reconnecting",
                P::SERVICE
            );
            *self = Connection::open(&self.socket, &self.token)?;
        }
        Ok(())
    }

    fn lost(&self, e: FrameError) -> ErrorBody {
        ErrorBody::new(
            P::KIND,
            format!("lost the {} connection ({}): {e}", P::SERVICE, self.socket),
        )
    }

    fn send(&mut self, msg: &P::Request) -> Result<(), ErrorBody> {
        self.conn.send(msg).map_err(|e| match e {
            FrameError::MessageTooLarge { len, max } => ErrorBody::new(
                ErrorKind::LimitExceeded,
                format!(
                    "the request to the {} is {len} bytes, over the {max}-byte frame limit; \
                     with a long conversation, lower [limits] max_turns or have tools return less",
                    P::SERVICE
                ),
            ),
            e => self.lost(e),
        })
    }

    fn recv(&mut self) -> Result<P::Response, ErrorBody> {
        self.conn.recv().map_err(|e| self.lost(e))
    }

    /// Sends one request and reads its response; a service-side error comes back as `Err`.
    fn exchange(&mut self, req: &P::Request) -> Result<P::Response, ErrorBody> {
        self.send(req)?;
        P::error(self.recv()?)
    }

    /// [`Connection::exchange`] on a connection reopened first if the service closed it.
    fn request(&mut self, req: &P::Request) -> Result<P::Response, ErrorBody> {
        self.reopen_if_closed()?;
        self.exchange(req)
    }
}

pub struct ToolhostClient(Connection<ToolhostProtocol>);

impl ToolhostClient {
    /// Connects and attaches with the run's toolhost token.
    pub fn connect(socket: &str, token: &str) -> Result<ToolhostClient, ErrorBody> {
        Connection::open(socket, token).map(ToolhostClient)
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
        self.0.request(req)
    }
}

pub struct MemoryClient(Connection<MemoryProtocol>);

impl MemoryClient {
    /// Connects and attaches with the run's memory token (the service then applies the run's
    /// grant).
    pub fn connect(access: &MemoryAccess) -> Result<MemoryClient, ErrorBody> {
        Connection::open(&access.socket, &access.token).map(MemoryClient)
    }

    /// Sends one request and reads its response; a service-side error comes back as `Err`.
    pub fn request(&mut self, req: &MemoryRequest) -> Result<MemoryResponse, ErrorBody> {
        self.0.request(req)
    }
}
