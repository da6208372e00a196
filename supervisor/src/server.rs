//! The public API socket: the accept loop with connection caps, the peer-credential check, and
//! the two front ends over the API core (`api.rs`), chosen from the first byte: bincode frames
//! (`ApiProtocol`, the CLI) and newline-delimited JSON (the public `json_api` types, scripts).
//! Each front end only reads requests and writes responses, under the first-message, request,
//! idle and write deadlines.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use caxton_ipc::api::{ApiRequest, ApiResponse, ErrorBody, ErrorKind};
use caxton_ipc::connection::{ApiProtocol, AsyncServer};
use caxton_ipc::frame::{FrameError, MAX_FRAME_LEN};
use caxton_ipc::handshake::{self, Hello, HelloReply, Role};
use caxton_ipc::peers::{Caps, Peer, PeerTable, Ticket};
use caxton_ipc::{json, json_api};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::api::{self, Reply};
use crate::conversations::Caller;
use crate::run_table::Count;
use crate::service::Service;

/// Time a new connection has to send its first message (its Hello, or a JSON client's first
/// request line).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one response may take to be written; a client that stops reading is dropped after it.
pub const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Refused connections given their busy answer at once; more are closed without one.
const MAX_REFUSING: usize = 64;
/// Time a refused connection gets to say hello, read its busy answer and close.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest JSON hello line.
const MAX_JSON_HELLO: usize = 4096;

/// Accepts connections until `stop` turns true. Each is admitted under the `[api]` caps (in
/// total and per uid; a waiting connection may be evicted to make room, see `caxton_ipc::peers`);
/// a refused one gets the busy answer.
pub async fn accept_loop(
    svc: Arc<Service>,
    listener: UnixListener,
    mut stop: watch::Receiver<bool>,
) {
    let table = PeerTable::new(Caps {
        total: svc.config().api.max_connections,
        per_peer: svc.config().api.max_connections_per_uid,
    });
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A peer whose credentials cannot be read is refused in `connection`; it is capped
        // with the others that cannot be read.
        let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
        match table.admit(Peer::Key(uid)) {
            Ok(ticket) => {
                tokio::spawn(connection(svc.clone(), stream, ticket));
            }
            Err(refused) => {
                svc.runs().count(Count::ConnectionRejected);
                tracing::warn!(uid, reason = %refused, "connection refused");
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse_busy(stream, refused.to_string()).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// The busy answer of a connection refused at a cap, in the client's own format: a frame client
/// gets `Welcome` and then `Error { kind: busy }` as the answer to its request (the CLI exits
/// with its busy status), a JSON client an error line. Its input is drained before closing, so it
/// reads the answer rather than a reset.
async fn refuse_busy(stream: UnixStream, message: String) {
    let error = ApiResponse::Error(ErrorBody::new(ErrorKind::Busy, message));
    let answer = async {
        let first = caxton_ipc::service::peek_byte(&stream).await.ok()??;
        let (r, w) = stream.into_split();
        let mut rd = if json::is_json_start(first) {
            let mut conn = JsonConn::new(r, w);
            conn.hello().await.ok()?;
            conn.send(&error).await.ok()?;
            let _ = conn.wr.shutdown().await;
            conn.rd.into_inner()
        } else {
            let mut conn = AsyncServer::<ApiProtocol, _, _>::accept(r, w, |_| Ok(()))
                .await
                .ok()?;
            caxton_ipc::service::data_or_close(conn.reader.get_ref().as_ref())
                .await
                .ok()?;
            conn.send(&error).await.ok()?;
            let (reader, mut writer) = conn.into_parts();
            let _ = writer.shutdown().await;
            reader
        };
        let mut sink = [0u8; 4096];
        while rd.read(&mut sink).await.ok()? > 0 {}
        Some(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer).await;
}

type FramesConn = AsyncServer<ApiProtocol, OwnedReadHalf, OwnedWriteHalf>;

/// A request that could not be read: answered with `bad_request`; after a fatal one the
/// connection is closed.
struct BadRequest {
    message: String,
    fatal: bool,
}

impl BadRequest {
    fn fatal(message: String) -> Self {
        BadRequest {
            message,
            fatal: true,
        }
    }
}

/// The JSON-lines front end: public `json_api` types on the wire, mapped to and from the core's.
struct JsonConn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl JsonConn {
    fn new(r: OwnedReadHalf, w: OwnedWriteHalf) -> Self {
        JsonConn {
            rd: BufReader::new(r),
            wr: w,
        }
    }

    /// The optional `{"hello": …}` first line: consumed and answered when present (its
    /// `protocol` is the JSON API's version); anything else is left as the first request.
    async fn hello(&mut self) -> Result<(), ()> {
        let buf = self.rd.fill_buf().await.map_err(drop)?;
        if !String::from_utf8_lossy(buf)
            .trim_start()
            .starts_with("{\"hello\"")
        {
            return Ok(());
        }
        let line = match json::read_line(&mut self.rd, MAX_JSON_HELLO).await {
            Ok(Some(l)) => l,
            _ => return Err(()),
        };
        #[derive(serde::Deserialize)]
        struct JsonHello {
            hello: Hello,
        }
        let hello = match serde_json::from_slice::<JsonHello>(&line) {
            Ok(h) => h.hello,
            Err(e) => {
                let _ = self.error(format!("bad hello: {e}")).await;
                return Err(());
            }
        };
        let checked = if hello.protocol != json_api::VERSION {
            Err(format!(
                "JSON API version mismatch: caxton serve speaks v{}, the script ({}) speaks v{}",
                json_api::VERSION,
                hello.software,
                hello.protocol
            ))
        } else {
            handshake::check_peer(
                &Hello {
                    protocol: caxton_ipc::PROTOCOL_VERSION,
                    ..hello
                },
                &[Role::Cli, Role::Script],
                "caxton serve",
            )
        };
        let reply = match &checked {
            Ok(()) => HelloReply::Welcome(Hello {
                protocol: json_api::VERSION,
                ..Hello::new(Role::Supervisor)
            }),
            Err(reason) => HelloReply::Rejected {
                reason: reason.clone(),
            },
        };
        self.write_line(&reply).await.map_err(drop)?;
        checked.map_err(drop)
    }

    async fn write_line<T: serde::Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        self.wr
            .write_all(&json::to_line(msg))
            .await
            .map_err(FrameError::Io)?;
        self.wr.flush().await.map_err(FrameError::Io)
    }

    async fn send(&mut self, resp: &ApiResponse) -> Result<(), FrameError> {
        self.write_line(&json_api::Response::from(resp.clone()))
            .await
    }

    async fn error(&mut self, message: String) -> Result<(), FrameError> {
        self.send(&ApiResponse::Error(ErrorBody::new(
            ErrorKind::BadRequest,
            message,
        )))
        .await
    }

    /// Reads the next request line; `Ok(None)` when the client closed the connection.
    async fn next_request(&mut self) -> Result<Option<ApiRequest>, BadRequest> {
        loop {
            let line = match json::read_line(&mut self.rd, MAX_FRAME_LEN as usize).await {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(None),
                // The rest of an over-long line must not be read as further requests.
                Err(e) => {
                    return Err(BadRequest::fatal(format!(
                        "bad request line: {e}; the connection is closed"
                    )));
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice::<json_api::Request>(&line)
                .map(|r| Some(r.into()))
                .map_err(|e| BadRequest {
                    message: format!(
                        "invalid JSON request: {e}; expected one object per line such as {{\"run\":{{\"agent\":\"NAME\",\"input\":\"TEXT\"}}}} or \"status\" (see the README's Socket API)"
                    ),
                    fatal: false,
                });
        }
    }
}

/// A client connection, in the format it chose.
enum Front {
    Frames(FramesConn),
    Json(JsonConn),
}

impl Front {
    /// Writes one response within [`CLIENT_WRITE_TIMEOUT`].
    async fn send(&mut self, resp: &ApiResponse) -> Result<(), FrameError> {
        let write = async {
            match self {
                Front::Frames(c) => c.send(resp).await,
                Front::Json(c) => c.send(resp).await,
            }
        };
        tokio::time::timeout(CLIENT_WRITE_TIMEOUT, write)
            .await
            .unwrap_or_else(|_| {
                Err(FrameError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client stopped reading",
                )))
            })
    }

    /// The socket, to watch for a hang-up.
    fn stream(&self) -> &UnixStream {
        match self {
            Front::Frames(c) => c.reader.get_ref().as_ref(),
            Front::Json(c) => c.rd.get_ref().as_ref(),
        }
    }

    /// True when request bytes are buffered already (a pipelined request).
    fn buffered(&self) -> bool {
        match self {
            Front::Frames(_) => false,
            Front::Json(c) => !c.rd.buffer().is_empty(),
        }
    }

    /// Waits for the next request within `idle`, then for all of it within `whole`.
    /// `Ok(None)`: the client closed the connection or stayed idle.
    async fn next_request(
        &mut self,
        idle: Duration,
        whole: Duration,
    ) -> Result<Option<ApiRequest>, BadRequest> {
        let arrived = match self {
            Front::Json(c) if !c.rd.buffer().is_empty() => true,
            _ => matches!(
                tokio::time::timeout(idle, caxton_ipc::service::data_or_close(self.stream())).await,
                Ok(Ok(()))
            ),
        };
        if !arrived {
            return Ok(None);
        }
        let read = async {
            match self {
                Front::Frames(c) => match c.recv().await {
                    Ok(r) => Ok(Some(r)),
                    Err(FrameError::Closed) => Ok(None),
                    // After a bad frame the byte stream cannot be trusted.
                    Err(e) => Err(BadRequest::fatal(format!("bad request frame: {e}"))),
                },
                Front::Json(c) => c.next_request().await,
            }
        };
        tokio::time::timeout(whole, read).await.unwrap_or_else(|_| {
            Err(BadRequest::fatal(format!(
                "the request did not arrive whole within {}s of its first byte; the connection is closed",
                whole.as_secs()
            )))
        })
    }
}

async fn connection(svc: Arc<Service>, stream: UnixStream, ticket: Ticket) {
    let cred = stream.peer_cred();
    // A peer whose credentials cannot be read is refused below; `u32::MAX` is never used.
    let caller = Caller::Local {
        uid: cred.as_ref().map_or(u32::MAX, |c| c.uid()),
    };
    let first_message = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let first = tokio::select! {
        r = tokio::time::timeout_at(first_message, caxton_ipc::service::peek_byte(&stream)) => match r {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "connection failed before its first byte");
                return;
            }
        },
        () = ticket.evicted() => return,
    };
    // Who may use the socket: checked at the handshake, so the refused client reads why.
    let permitted = match cred {
        Ok(c) if allowed(&svc, c.uid(), c.gid()) => Ok(()),
        Ok(c) => {
            svc.runs().count(Count::ConnectionRejected);
            tracing::warn!(uid = c.uid(), gid = c.gid(), pid = ?c.pid(), "connection refused: peer not allowed");
            Err(format!(
                "uid {} / gid {} may not use this socket; the operator can add them to [api] allowed_uids or allowed_gids",
                c.uid(),
                c.gid()
            ))
        }
        Err(e) => Err(format!("cannot read the peer's credentials: {e}")),
    };
    let (r, w) = stream.into_split();
    let opened = async {
        if json::is_json_start(first) {
            let mut conn = JsonConn::new(r, w);
            if let Err(reason) = &permitted {
                let _ = conn
                    .send(&ApiResponse::Error(ErrorBody::new(
                        ErrorKind::PermissionDenied,
                        reason.clone(),
                    )))
                    .await;
                return None;
            }
            conn.hello().await.ok()?;
            Some(Front::Json(conn))
        } else {
            let conn = FramesConn::accept(r, w, |_| permitted.clone()).await;
            match conn {
                Ok(c) => Some(Front::Frames(c)),
                Err(e) => {
                    tracing::debug!(error = %e, "connection refused at its hello");
                    None
                }
            }
        }
    };
    let opened = tokio::select! {
        r = tokio::time::timeout_at(first_message, opened) => r.ok().flatten(),
        () = ticket.evicted() => None,
    };
    let Some(mut front) = opened else {
        return;
    };
    let (idle, whole) = (
        svc.config().api.idle_timeout,
        svc.config().api.request_timeout,
    );
    loop {
        ticket.waiting();
        let next = tokio::select! {
            r = front.next_request(idle, whole) => r,
            () = ticket.evicted() => {
                tracing::debug!("idle connection evicted to make room");
                return;
            }
        };
        ticket.serving();
        let req = match next {
            Ok(None) => return,
            Ok(Some(r)) => r,
            Err(bad) => {
                tracing::debug!(message = %bad.message, "bad request");
                let _ = front
                    .send(&ApiResponse::Error(ErrorBody::new(
                        ErrorKind::BadRequest,
                        bad.message,
                    )))
                    .await;
                if bad.fatal {
                    return;
                }
                continue;
            }
        };
        let delivered = match api::handle(&svc, caller.clone(), req).await {
            Reply::One(resp) => front.send(&resp).await,
            Reply::Run(rx) => relay_run(&mut front, rx).await,
        };
        if delivered.is_err() {
            return;
        }
    }
}

fn allowed(svc: &Service, uid: u32, gid: u32) -> bool {
    let me = nix::unistd::getuid().as_raw();
    uid == me
        || uid == 0
        || svc.config().api.allowed_uids.contains(&uid)
        || svc.config().api.allowed_gids.contains(&gid)
}

/// Streams a run's responses to the client. If the client hangs up, returning drops the receiver,
/// which the run notices (`Sender::closed`): it stops and reaps its worker and ends.
async fn relay_run(
    front: &mut Front,
    mut rx: mpsc::Receiver<ApiResponse>,
) -> Result<(), FrameError> {
    let mut watching = !front.buffered();
    loop {
        let event = tokio::select! {
            resp = rx.recv() => resp,
            gone = hangup(front.stream()), if watching => {
                if gone {
                    tracing::info!("client hung up during a run; cancelling it");
                    return Err(FrameError::Closed);
                }
                watching = false;
                continue;
            }
        };
        let Some(resp) = event else { return Ok(()) };
        front.send(&resp).await?;
        // The run has answered: stop watching for a hang-up (the client closing now is normal)
        // while the worker is reaped.
        let ended = match &resp {
            ApiResponse::Event(e) => e.is_terminal(),
            _ => true,
        };
        if ended {
            return Ok(());
        }
    }
}

/// After end of file on the read side: `true` when the peer closed the whole connection (POLLHUP),
/// `false` when it only shut down its writing side (`shutdown(SHUT_WR)`) and still reads the answer.
fn peer_closed(stream: &UnixStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP)),
        Err(_) => true,
    }
}

/// Resolves `true` when the peer closed the connection, `false` if it sent data or only
/// half-closed it instead.
async fn hangup(stream: &UnixStream) -> bool {
    match caxton_ipc::service::peek_byte(stream).await {
        Ok(None) => peer_closed(stream),
        Ok(Some(_)) => false,
        Err(_) => true,
    }
}
