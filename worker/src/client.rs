//! The worker's blocking connections to the service processes: `caxton-toolhost` (tool specs,
//! tool calls, LLM chats) and `caxton-memory` (memory tools, recall, storing the interaction).
//! Each attaches with its run's token (the grant the supervisor registered for this run) and
//! attaches again after reopening a connection the service closed while it was idle.

use std::fmt;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::connection::{Client, HandshakeError, MemoryProtocol, Protocol, ToolhostProtocol};
use caxton_ipc::frame::{FrameError, TraceContext};
use caxton_ipc::handshake::Role;
use caxton_ipc::memory::{MemoryAccess, MemoryRequest, MemoryResponse};
use caxton_ipc::toolhost::{
    CallToolRequest, ChatProgress, ChatReply, ChatRequest, ToolOutput, ToolSpec, ToolhostRequest,
    ToolhostResponse,
};
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName, traits::Stream as _};

use crate::Session;

/// How long to keep trying to connect while a service is (re)starting.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(3);

/// A service process the worker talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Toolhost,
    Memory,
}

impl Service {
    /// The error kind of this service being unreachable or lost.
    pub fn kind(self) -> ErrorKind {
        match self {
            Service::Toolhost => ErrorKind::Toolhost,
            Service::Memory => ErrorKind::Memory,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Toolhost => "toolhost",
            Service::Memory => "memory service",
        })
    }
}

/// Why a request to a service got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The socket could not be connected to, or the service refused our hello.
    #[error("cannot reach the {service} at {socket}")]
    Unreachable {
        service: Service,
        socket: String,
        #[source]
        source: ConnectError,
    },
    /// The connection broke (the service died or restarted, or sent bad bytes).
    #[error("lost the {service} connection ({socket})")]
    Lost {
        service: Service,
        socket: String,
        #[source]
        source: FrameError,
    },
    /// The request does not fit one frame (checked before anything is written, so the
    /// connection is still usable).
    #[error(
        "the request to the {service} is {len} bytes, over the {max}-byte frame limit; \
         with a long conversation, lower [limits] max_turns or have tools return less"
    )]
    TooLarge {
        service: Service,
        len: usize,
        max: u32,
    },
    /// The service answered with an error of its own (an LLM failure, a tool's failure, a
    /// refused attach …): its kind and message are kept as they came.
    #[error("{error}")]
    Remote { service: Service, error: ErrorBody },
    /// The service answered with a response that does not fit the request.
    #[error("unexpected {service} response to {asked}: {got}")]
    Unexpected {
        service: Service,
        asked: &'static str,
        got: String,
    },
}

impl ServiceError {
    /// The wire kind: the service's for an unreachable or lost service, the service's own for its
    /// errors.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Unreachable { service, .. } | ServiceError::Lost { service, .. } => {
                service.kind()
            }
            ServiceError::TooLarge { .. } => ErrorKind::LimitExceeded,
            ServiceError::Remote { error, .. } => error.kind,
            ServiceError::Unexpected { .. } => ErrorKind::Internal,
        }
    }
}

/// Why a connection to a service could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket path is unusable or nothing accepts connections on it.
    #[error(transparent)]
    Socket(#[from] std::io::Error),
    /// The hello exchange failed or the service refused us.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

/// A protocol the worker attaches to with its run's token.
trait Attachable: Protocol<Response: fmt::Debug> {
    const SERVICE: Service;
    fn attach(token: &str) -> Self::Request;
    /// The error in a response, if it is one.
    fn error(resp: Self::Response) -> Result<Self::Response, ErrorBody>;
    /// The tool specs an attach is answered with.
    fn attached(resp: Self::Response) -> Result<Vec<ToolSpec>, Self::Response>;
}

impl Attachable for ToolhostProtocol {
    const SERVICE: Service = Service::Toolhost;
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
    fn attached(resp: ToolhostResponse) -> Result<Vec<ToolSpec>, ToolhostResponse> {
        match resp {
            ToolhostResponse::Tools(tools) => Ok(tools),
            other => Err(other),
        }
    }
}

impl Attachable for MemoryProtocol {
    const SERVICE: Service = Service::Memory;
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
    fn attached(resp: MemoryResponse) -> Result<Vec<ToolSpec>, MemoryResponse> {
        match resp {
            MemoryResponse::Tools(tools) => Ok(tools),
            other => Err(other),
        }
    }
}

/// One attached connection; its errors name the service.
struct Connection<P: Attachable> {
    conn: Client<P, Stream>,
    socket: String,
    token: String,
    /// Watched while we wait for the service (its `Stop` ends the run).
    session: Session,
}

/// The trace context a request is sent with (the worker span it is made under).
pub type Trace<'a> = Option<&'a TraceContext>;

impl<P: Attachable> Connection<P> {
    /// Connects (retrying briefly while the socket is absent or refusing), shakes hands and
    /// attaches with `token`; returns the tool specs the attach was answered with.
    fn open(
        socket: &str,
        token: &str,
        session: &Session,
    ) -> Result<(Self, Vec<ToolSpec>), ServiceError> {
        let unreachable = |source: ConnectError| ServiceError::Unreachable {
            service: P::SERVICE,
            socket: socket.to_string(),
            source,
        };
        let started = Instant::now();
        let stream = loop {
            let name = Path::new(socket)
                .to_fs_name::<GenericFilePath>()
                .map_err(|e| unreachable(e.into()))?;
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
                Err(e) => return Err(unreachable(e.into())),
            }
        };
        // The attach goes right behind the hello: one round trip for both. It carries the run's
        // trace context, so the service's log lines for the run name its trace.
        let attach_trace = session.spans().run_context();
        let conn = Client::<P, _>::connect_with(
            stream,
            Role::Worker,
            &P::attach(token),
            attach_trace.as_ref(),
        )
        .map_err(|e| unreachable(e.into()))?;
        let mut c = Connection {
            conn,
            socket: socket.to_string(),
            token: token.to_string(),
            session: session.clone(),
        };
        let tools = P::attached(c.answer()?)
            .map_err(|other| unexpected(P::SERVICE, "an attach", &other))?;
        Ok((c, tools))
    }

    /// True when the service has closed this connection while it was idle (its idle timeout, an
    /// eviction, or a restart): the socket reads as end-of-file with nothing sent.
    fn closed_by_peer(&self) -> bool {
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
    fn reopen_if_closed(&mut self) -> Result<(), ServiceError> {
        if self.closed_by_peer() {
            eprintln!(
                "caxton-worker: the {} closed an idle connection; reconnecting",
                P::SERVICE
            );
            *self = Connection::open(&self.socket, &self.token, &self.session)?.0;
        }
        Ok(())
    }

    fn lost(&self, source: FrameError) -> ServiceError {
        ServiceError::Lost {
            service: P::SERVICE,
            socket: self.socket.clone(),
            source,
        }
    }

    fn send(&mut self, msg: &P::Request, trace: Trace<'_>) -> Result<(), ServiceError> {
        self.conn.send_traced(msg, trace).map_err(|e| match e {
            FrameError::MessageTooLarge { len, max } => ServiceError::TooLarge {
                service: P::SERVICE,
                len,
                max,
            },
            e => self.lost(e),
        })
    }

    /// Reads the next message, watching the supervisor while it has not arrived.
    fn recv(&mut self) -> Result<P::Response, ServiceError> {
        let Stream::UdSocket(socket) = self.conn.io();
        (self.session.wait_for(socket.as_fd())).map_err(|e| self.lost(FrameError::Io(e.into())))?;
        self.conn.recv().map_err(|e| self.lost(e))
    }

    /// Sends one request and reads its response; a service-side error comes back as
    /// [`ServiceError::Remote`].
    fn exchange(
        &mut self,
        req: &P::Request,
        trace: Trace<'_>,
    ) -> Result<P::Response, ServiceError> {
        self.send(req, trace)?;
        self.answer()
    }

    /// Reads the answer to the request sent last; a service-side error comes back as
    /// [`ServiceError::Remote`].
    fn answer(&mut self) -> Result<P::Response, ServiceError> {
        P::error(self.recv()?).map_err(|error| ServiceError::Remote {
            service: P::SERVICE,
            error,
        })
    }

    /// [`Connection::exchange`] on a connection reopened first if the service closed it.
    fn request(&mut self, req: &P::Request, trace: Trace<'_>) -> Result<P::Response, ServiceError> {
        self.reopen_if_closed()?;
        self.exchange(req, trace)
    }
}

/// A response that does not answer `asked`.
fn unexpected(service: Service, asked: &'static str, got: &impl fmt::Debug) -> ServiceError {
    ServiceError::Unexpected {
        service,
        asked,
        got: format!("{got:?}"),
    }
}

pub struct ToolhostClient {
    conn: Connection<ToolhostProtocol>,
    tools: Vec<ToolSpec>,
}

impl ToolhostClient {
    /// Connects and attaches with the run's toolhost token.
    pub fn connect(
        socket: &str,
        token: &str,
        session: &Session,
    ) -> Result<ToolhostClient, ServiceError> {
        let (conn, tools) = Connection::open(socket, token, session)?;
        Ok(ToolhostClient { conn, tools })
    }

    /// The specs of the tools the run's grant allows (the toolhost's answer to the attach).
    pub fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }

    /// Calls a tool. A failure the tool reports itself is an `Ok` output with `is_error`; one
    /// the toolhost reports for it is [`ServiceError::Remote`].
    pub fn call_tool(
        &mut self,
        req: CallToolRequest,
        trace: Trace<'_>,
    ) -> Result<ToolOutput, ServiceError> {
        match self.conn.request(&ToolhostRequest::CallTool(req), trace)? {
            ToolhostResponse::ToolOutput(out) => Ok(out),
            other => Err(unexpected(Service::Toolhost, "a tool call", &other)),
        }
    }

    /// Sends a chat and reads its progress frames (handed to `on_progress`, whose error ends
    /// the chat) up to the reply.
    pub fn chat<E: From<ServiceError>>(
        &mut self,
        req: ChatRequest,
        trace: Trace<'_>,
        mut on_progress: impl FnMut(ChatProgress) -> Result<(), E>,
    ) -> Result<ChatReply, E> {
        self.conn.reopen_if_closed()?;
        self.conn.send(&ToolhostRequest::Chat(req), trace)?;
        loop {
            match self.conn.recv()? {
                ToolhostResponse::ChatProgress(p) => on_progress(p)?,
                ToolhostResponse::Chat(reply) => return Ok(reply),
                ToolhostResponse::Error(error) => {
                    return Err(ServiceError::Remote {
                        service: Service::Toolhost,
                        error,
                    }
                    .into());
                }
                other => return Err(unexpected(Service::Toolhost, "a chat", &other).into()),
            }
        }
    }
}

pub struct MemoryClient {
    conn: Connection<MemoryProtocol>,
    tools: Vec<ToolSpec>,
}

impl MemoryClient {
    /// Connects and attaches with the run's memory token (the service then applies the run's
    /// grant).
    pub fn connect(access: &MemoryAccess, session: &Session) -> Result<MemoryClient, ServiceError> {
        let (conn, tools) = Connection::open(&access.socket, &access.token, session)?;
        Ok(MemoryClient { conn, tools })
    }

    /// The specs of the memory tools (the service's answer to the attach).
    pub fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }

    /// The memories relevant to `query`, as prompt lines, best first.
    pub fn recall(
        &mut self,
        query: &str,
        limit: u32,
        min_similarity: f32,
        trace: Trace<'_>,
    ) -> Result<Vec<String>, ServiceError> {
        let req = MemoryRequest::Recall {
            query: query.to_string(),
            limit,
            min_similarity,
        };
        match self.conn.request(&req, trace)? {
            MemoryResponse::Recalled(lines) => Ok(lines),
            other => Err(unexpected(Service::Memory, "a recall", &other)),
        }
    }

    /// Stores a finished interaction (`auto_store`).
    pub fn store_interaction(
        &mut self,
        run_id: &str,
        input: &str,
        answer: &str,
        trace: Trace<'_>,
    ) -> Result<(), ServiceError> {
        // Any answer but an error means stored.
        self.conn
            .request(
                &MemoryRequest::StoreInteraction {
                    run_id: run_id.to_string(),
                    input: input.to_string(),
                    answer: answer.to_string(),
                },
                trace,
            )
            .map(drop)
    }

    /// Calls a memory tool; its failure is [`ServiceError::Remote`].
    pub fn call_tool(
        &mut self,
        name: &str,
        arguments: &str,
        trace: Trace<'_>,
    ) -> Result<String, ServiceError> {
        let req = MemoryRequest::CallTool {
            name: name.to_string(),
            arguments: arguments.to_string(),
        };
        match self.conn.request(&req, trace)? {
            MemoryResponse::ToolOutput(content) => Ok(content),
            other => Err(unexpected(Service::Memory, "a tool call", &other)),
        }
    }
}
