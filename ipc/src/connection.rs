//! Typed connections: a [`Protocol`] pairs a socket's request and response types with the roles
//! allowed to connect, and a connection does the `Hello` exchange once and then sends and
//! receives only that protocol's messages. Every frame read and write of Caxton goes through
//! here (or the frame codec under it).
//!
//! - [`Client`] / [`Server`]: blocking, over one `Read + Write` stream (a Unix socket, or a
//!   child's stdin and stdout joined with [`Duplex`]).
//! - [`AsyncClient`] / [`AsyncServer`]: async, over a reader and a writer half, so a task can
//!   read and write at once (relay events while watching for a hang-up, say).
//!
//! A request type cannot be sent to the wrong socket: a `Client<ToolhostProtocol>` only takes
//! `ToolhostRequest`s.

use std::io::{Read, Write};
use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::frame::{self, FrameError, MAX_FRAME_LEN, TraceContext};
use crate::handshake::{self, Hello, HelloReply, Role};

/// The Hello a server reads: small, whatever the protocol.
pub const MAX_HELLO: u32 = 4096;

/// What one kind of connection carries.
pub trait Protocol {
    /// What the connecting side sends.
    type Request: Serialize + DeserializeOwned + Send + Sync;
    /// What the accepting side answers.
    type Response: Serialize + DeserializeOwned + Send + Sync;
    /// The accepting side, in messages ("caxton serve", "caxton-toolhost").
    const SERVER: &'static str;
    /// The accepting side's role in its `Welcome`.
    const SERVER_ROLE: Role;
    /// The roles that may connect.
    const CLIENTS: &'static [Role];
    /// What a server answers to a hello it cannot read (bad magic, a frame too large…), for
    /// clients that read a response rather than a `HelloReply` then; `None` closes silently.
    fn hello_error(_message: String) -> Option<Self::Response> {
        None
    }
}

/// `api.sock`: the CLI and scripts ↔ the supervisor.
#[derive(Debug)]
pub struct ApiProtocol;
impl Protocol for ApiProtocol {
    type Request = crate::api::ApiRequest;
    type Response = crate::api::ApiResponse;
    const SERVER: &'static str = "caxton serve";
    const SERVER_ROLE: Role = Role::Supervisor;
    const CLIENTS: &'static [Role] = &[Role::Cli, Role::Script];
    fn hello_error(message: String) -> Option<crate::api::ApiResponse> {
        Some(crate::api::ApiResponse::Error(crate::api::ErrorBody::new(
            crate::api::ErrorKind::BadRequest,
            message,
        )))
    }
}

/// A protocol with the default hello handling.
macro_rules! protocol {
    ($(#[$doc:meta])* $name:ident: $req:ty => $resp:ty, served by $server:literal as $role:ident to [$($client:ident),*]) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;
        impl Protocol for $name {
            type Request = $req;
            type Response = $resp;
            const SERVER: &'static str = $server;
            const SERVER_ROLE: Role = Role::$role;
            const CLIENTS: &'static [Role] = &[$(Role::$client),*];
        }
    };
}

protocol!(
    /// `private/toolhost.sock`: workers and the supervisor ↔ the toolhost.
    ToolhostProtocol: crate::toolhost::ToolhostRequest => crate::toolhost::ToolhostResponse,
    served by "caxton-toolhost" as Toolhost to [Worker, Supervisor]
);
protocol!(
    /// `private/memory.sock`: workers and the supervisor ↔ the memory service.
    MemoryProtocol: crate::memory::MemoryRequest => crate::memory::MemoryResponse,
    served by "caxton-memory" as Memory to [Worker, Supervisor]
);
protocol!(
    /// A worker's stdin and stdout: the supervisor (connecting side) ↔ one worker.
    WorkerProtocol: crate::worker::ToWorker => crate::worker::FromWorker,
    served by "caxton-worker" as Worker to [Supervisor]
);

/// Which messages a side sends and receives.
pub trait Side {
    type Out: Serialize;
    type In: DeserializeOwned;
}

/// The connecting side of `P`: sends requests, receives responses.
#[derive(Debug)]
pub struct AsClient<P>(PhantomData<P>);
impl<P: Protocol> Side for AsClient<P> {
    type Out = P::Request;
    type In = P::Response;
}

/// The accepting side of `P`: receives requests, sends responses.
#[derive(Debug)]
pub struct AsServer<P>(PhantomData<P>);
impl<P: Protocol> Side for AsServer<P> {
    type Out = P::Response;
    type In = P::Request;
}

/// Why a connection could not be opened or accepted.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{server} refused the connection: {reason}")]
    Rejected {
        server: &'static str,
        reason: String,
    },
    #[error("the peer's hello was refused: {0}")]
    Refused(String),
    #[error("no hello within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// A reader and a writer joined into one blocking stream (a child's stdin and stdout).
#[derive(Debug)]
pub struct Duplex<R, W> {
    pub reader: R,
    pub writer: W,
}

impl<R: Read, W> Read for Duplex<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

impl<R, W: Write> Write for Duplex<R, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// A blocking connection, as side `S` of its protocol, over `IO`.
#[derive(Debug)]
pub struct Conn<S, IO> {
    io: IO,
    peer: Hello,
    max_in: u32,
    /// The trace context of the last message received, if its frame carried one.
    last_trace: Option<TraceContext>,
    _side: PhantomData<S>,
}

/// The blocking connecting side of `P`.
pub type Client<P, IO> = Conn<AsClient<P>, IO>;
/// The blocking accepting side of `P`.
pub type Server<P, IO> = Conn<AsServer<P>, IO>;

impl<S: Side, IO: Read + Write> Conn<S, IO> {
    pub fn send(&mut self, msg: &S::Out) -> Result<(), FrameError> {
        frame::write_sync(&mut self.io, msg)
    }

    /// Sends `msg` in a frame carrying `trace`.
    pub fn send_traced(
        &mut self,
        msg: &S::Out,
        trace: Option<&TraceContext>,
    ) -> Result<(), FrameError> {
        frame::write_traced_sync(&mut self.io, msg, trace)
    }

    pub fn recv(&mut self) -> Result<S::In, FrameError> {
        let f = frame::read_traced_sync(&mut self.io, self.max_in)?;
        self.last_trace = f.trace;
        Ok(f.msg)
    }

    /// The peer's `Hello`.
    pub fn peer(&self) -> &Hello {
        &self.peer
    }

    /// The trace context of the last message received.
    pub fn last_trace(&self) -> Option<&TraceContext> {
        self.last_trace.as_ref()
    }

    pub fn io(&self) -> &IO {
        &self.io
    }

    /// Lowers (or raises) the largest frame accepted from the peer.
    pub fn set_max_in(&mut self, max: u32) {
        self.max_in = max;
    }
}

impl<S: Side, R: Read, W: Write> Conn<S, Duplex<R, W>> {
    /// Splits a connection over a reader and a writer into its two halves, for a thread that
    /// reads while another writes.
    pub fn split(self) -> (BlockingReader<S, R>, BlockingWriter<S, W>) {
        (
            BlockingReader {
                io: self.io.reader,
                max_in: self.max_in,
                _side: PhantomData,
            },
            BlockingWriter {
                io: self.io.writer,
                _side: PhantomData,
            },
        )
    }
}

/// The receiving half of a split blocking connection.
#[derive(Debug)]
pub struct BlockingReader<S, R> {
    io: R,
    max_in: u32,
    _side: PhantomData<S>,
}

impl<S: Side, R: Read> BlockingReader<S, R> {
    pub fn recv(&mut self) -> Result<S::In, FrameError> {
        frame::read_sync(&mut self.io, self.max_in)
    }

    pub fn get_ref(&self) -> &R {
        &self.io
    }
}

/// The sending half of a split blocking connection.
#[derive(Debug)]
pub struct BlockingWriter<S, W> {
    io: W,
    _side: PhantomData<S>,
}

impl<S: Side, W: Write> BlockingWriter<S, W> {
    /// Sends one message (and flushes it).
    pub fn send(&mut self, msg: &S::Out) -> Result<(), FrameError> {
        frame::write_sync(&mut self.io, msg)
    }
}

impl<P: Protocol, IO: Read + Write> Client<P, IO> {
    /// Sends our `Hello` as `role` on `io` and reads the server's answer.
    pub fn connect(io: IO, role: Role) -> Result<Self, HandshakeError> {
        Self::open(io, role, None, None)
    }

    /// [`Client::connect`] that sends `first` right behind the `Hello`, without waiting for the
    /// welcome, so that opening a connection and making its first request take one round trip
    /// instead of two; `first`'s frame carries `trace`. A server that rejects the hello never
    /// reads `first`.
    pub fn connect_with(
        io: IO,
        role: Role,
        first: &P::Request,
        trace: Option<&TraceContext>,
    ) -> Result<Self, HandshakeError> {
        Self::open(io, role, Some(first), trace)
    }

    fn open(
        mut io: IO,
        role: Role,
        first: Option<&P::Request>,
        trace: Option<&TraceContext>,
    ) -> Result<Self, HandshakeError> {
        frame::write_sync(&mut io, &Hello::new(role))?;
        if let Some(first) = first {
            frame::write_traced_sync(&mut io, first, trace)?;
        }
        match frame::read_sync::<HelloReply>(&mut io, MAX_FRAME_LEN)? {
            HelloReply::Welcome(peer) => Ok(Conn {
                io,
                peer,
                max_in: MAX_FRAME_LEN,
                last_trace: None,
                _side: PhantomData,
            }),
            HelloReply::Rejected { reason } => Err(HandshakeError::Rejected {
                server: P::SERVER,
                reason,
            }),
        }
    }

    /// Sends one request and reads the next message.
    pub fn call(&mut self, req: &P::Request) -> Result<P::Response, FrameError> {
        self.send(req)?;
        self.recv()
    }
}

impl<P: Protocol, IO: Read + Write> Server<P, IO> {
    /// Reads the peer's `Hello`, checks its role and protocol (and `check`), and answers.
    pub fn accept(
        mut io: IO,
        check: impl FnOnce(&Hello) -> Result<(), String>,
    ) -> Result<Self, HandshakeError> {
        let hello: Hello = frame::read_sync(&mut io, MAX_HELLO)?;
        match handshake::check_peer(&hello, P::CLIENTS, P::SERVER).and_then(|()| check(&hello)) {
            Ok(()) => {
                frame::write_sync(&mut io, &HelloReply::Welcome(Hello::new(P::SERVER_ROLE)))?;
                Ok(Conn {
                    io,
                    peer: hello,
                    max_in: MAX_FRAME_LEN,
                    last_trace: None,
                    _side: PhantomData,
                })
            }
            Err(reason) => {
                let _ = frame::write_sync(
                    &mut io,
                    &HelloReply::Rejected {
                        reason: reason.clone(),
                    },
                );
                Err(HandshakeError::Refused(reason))
            }
        }
    }
}

/// An async connection, as side `S` of its protocol, over a reader `R` and a writer `W`.
#[derive(Debug)]
pub struct AsyncConn<S, R, W> {
    pub reader: FrameReader<S, R>,
    pub writer: FrameWriter<S, W>,
    peer: Hello,
}

/// The async connecting side of `P`.
pub type AsyncClient<P, R, W> = AsyncConn<AsClient<P>, R, W>;
/// The async accepting side of `P`.
pub type AsyncServer<P, R, W> = AsyncConn<AsServer<P>, R, W>;

/// The receiving half of an [`AsyncConn`].
#[derive(Debug)]
pub struct FrameReader<S, R> {
    io: R,
    max_in: u32,
    last_trace: Option<TraceContext>,
    _side: PhantomData<S>,
}

/// The sending half of an [`AsyncConn`].
#[derive(Debug)]
pub struct FrameWriter<S, W> {
    io: W,
    _side: PhantomData<S>,
}

impl<S: Side, R: AsyncRead + Unpin> FrameReader<S, R> {
    pub async fn recv(&mut self) -> Result<S::In, FrameError> {
        let f = frame::read_traced_async(&mut self.io, self.max_in).await?;
        self.last_trace = f.trace;
        Ok(f.msg)
    }

    /// The trace context of the last message received.
    pub fn last_trace(&self) -> Option<&TraceContext> {
        self.last_trace.as_ref()
    }

    pub fn get_ref(&self) -> &R {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }

    /// Lowers (or raises) the largest frame accepted from the peer.
    pub fn set_max_in(&mut self, max: u32) {
        self.max_in = max;
    }
}

impl<S: Side, W: AsyncWrite + Unpin> FrameWriter<S, W> {
    pub async fn send(&mut self, msg: &S::Out) -> Result<(), FrameError> {
        frame::write_async(&mut self.io, msg).await
    }

    /// Sends `msg` in a frame carrying `trace`.
    pub async fn send_traced(
        &mut self,
        msg: &S::Out,
        trace: Option<&TraceContext>,
    ) -> Result<(), FrameError> {
        frame::write_traced_async(&mut self.io, msg, trace).await
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.io
    }
}

impl<S: Side, R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AsyncConn<S, R, W> {
    fn new(reader: R, writer: W, peer: Hello) -> Self {
        AsyncConn {
            reader: FrameReader {
                io: reader,
                max_in: MAX_FRAME_LEN,
                last_trace: None,
                _side: PhantomData,
            },
            writer: FrameWriter {
                io: writer,
                _side: PhantomData,
            },
            peer,
        }
    }

    pub async fn send(&mut self, msg: &S::Out) -> Result<(), FrameError> {
        self.writer.send(msg).await
    }

    pub async fn recv(&mut self) -> Result<S::In, FrameError> {
        self.reader.recv().await
    }

    /// The peer's `Hello`.
    pub fn peer(&self) -> &Hello {
        &self.peer
    }

    /// The reader and writer, to close or drain the connection by hand.
    pub fn into_parts(self) -> (R, W) {
        (self.reader.io, self.writer.io)
    }
}

impl<P: Protocol, R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AsyncClient<P, R, W> {
    /// Sends our `Hello` as `role` and reads the server's answer.
    pub async fn connect(reader: R, writer: W, role: Role) -> Result<Self, HandshakeError> {
        Self::open(reader, writer, role, None).await
    }

    /// [`AsyncClient::connect`] that sends `first` right behind the `Hello` (see
    /// [`Client::connect_with`]).
    pub async fn connect_with(
        reader: R,
        writer: W,
        role: Role,
        first: &P::Request,
    ) -> Result<Self, HandshakeError> {
        Self::open(reader, writer, role, Some(first)).await
    }

    async fn open(
        mut reader: R,
        mut writer: W,
        role: Role,
        first: Option<&P::Request>,
    ) -> Result<Self, HandshakeError> {
        frame::write_async(&mut writer, &Hello::new(role)).await?;
        if let Some(first) = first {
            frame::write_async(&mut writer, first).await?;
        }
        match frame::read_async::<HelloReply>(&mut reader, MAX_FRAME_LEN).await? {
            HelloReply::Welcome(peer) => Ok(AsyncConn::new(reader, writer, peer)),
            HelloReply::Rejected { reason } => Err(HandshakeError::Rejected {
                server: P::SERVER,
                reason,
            }),
        }
    }

    /// Sends one request and reads the next message, within `timeout`.
    pub async fn call(
        &mut self,
        req: &P::Request,
        timeout: Duration,
    ) -> Result<P::Response, CallError> {
        let exchange = async {
            self.send(req).await?;
            self.recv().await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout(timeout))?
            .map_err(CallError::Frame)
    }
}

impl<P: Protocol, R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AsyncServer<P, R, W> {
    /// Reads the peer's `Hello` (at most [`MAX_HELLO`] bytes), checks its role and protocol
    /// (and `check`), and answers `Welcome` or `Rejected`.
    pub async fn accept(
        reader: R,
        mut writer: W,
        check: impl FnOnce(&Hello) -> Result<(), String>,
    ) -> Result<Self, HandshakeError> {
        let mut reader = reader;
        let hello: Hello = match frame::read_async(&mut reader, MAX_HELLO).await {
            Ok(h) => h,
            Err(e) => {
                if !e.is_disconnect()
                    && let Some(answer) = P::hello_error(format!("bad hello: {e}"))
                {
                    let _ = frame::write_async(&mut writer, &answer).await;
                }
                return Err(e.into());
            }
        };
        match handshake::check_peer(&hello, P::CLIENTS, P::SERVER).and_then(|()| check(&hello)) {
            Ok(()) => {
                frame::write_async(
                    &mut writer,
                    &HelloReply::Welcome(Hello::new(P::SERVER_ROLE)),
                )
                .await?;
                Ok(AsyncConn::new(reader, writer, hello))
            }
            Err(reason) => {
                let _ = frame::write_async(
                    &mut writer,
                    &HelloReply::Rejected {
                        reason: reason.clone(),
                    },
                )
                .await;
                Err(HandshakeError::Refused(reason))
            }
        }
    }
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {}s", .0.as_secs_f32())]
    Timeout(Duration),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Connects to the Unix socket at `path` and opens an async client connection as `role`.
pub async fn connect_unix<P: Protocol>(
    path: &std::path::Path,
    role: Role,
) -> Result<
    AsyncClient<P, tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf>,
    HandshakeError,
> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| HandshakeError::Frame(FrameError::Io(e)))?;
    let (r, w) = stream.into_split();
    AsyncClient::connect(r, w, role).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toolhost::{ToolhostRequest, ToolhostResponse};

    #[tokio::test]
    async fn a_typed_exchange_and_a_refused_role() {
        let (a, b) = tokio::io::duplex(4096);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let server = tokio::spawn(async move {
            let mut s = AsyncServer::<ToolhostProtocol, _, _>::accept(br, bw, |_| Ok(()))
                .await
                .unwrap();
            assert_eq!(s.peer().role, Role::Worker);
            let req = s.recv().await.unwrap();
            assert_eq!(req, ToolhostRequest::Ping);
            s.send(&ToolhostResponse::Pong).await.unwrap();
        });
        let mut c = AsyncClient::<ToolhostProtocol, _, _>::connect(ar, aw, Role::Worker)
            .await
            .unwrap();
        assert_eq!(c.peer().role, Role::Toolhost);
        let resp = c
            .call(&ToolhostRequest::Ping, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(resp, ToolhostResponse::Pong);
        server.await.unwrap();

        // A CLI may not connect to the toolhost.
        let (a, b) = tokio::io::duplex(4096);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let server = tokio::spawn(async move {
            AsyncServer::<ToolhostProtocol, _, _>::accept(br, bw, |_| Ok(())).await
        });
        let err = AsyncClient::<ToolhostProtocol, _, _>::connect(ar, aw, Role::Cli)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not serve cli"), "{err}");
        assert!(server.await.unwrap().is_err());
    }

    #[test]
    fn blocking_client_and_server_over_a_socket_pair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut s = Server::<ToolhostProtocol, _>::accept(b, |h| {
                if h.pid == 0 {
                    Err("no pid".into())
                } else {
                    Ok(())
                }
            })
            .unwrap();
            let _ = s.recv().unwrap();
            s.send(&ToolhostResponse::Pong).unwrap();
        });
        let mut c = Client::<ToolhostProtocol, _>::connect(a, Role::Worker).unwrap();
        assert_eq!(
            c.call(&ToolhostRequest::Ping).unwrap(),
            ToolhostResponse::Pong
        );
        server.join().unwrap();
    }
}
