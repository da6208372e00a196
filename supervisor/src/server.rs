//! The public API socket: accept loop with connection caps, peer-credential check, protocol
//! sniffing (bincode frames or JSON lines), the Hello exchange, request deadlines, and request
//! dispatch.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use caxton_ipc::api::{ApiRequest, ApiResponse, ErrorBody, ErrorKind};
use caxton_ipc::frame::{self, FrameError, MAX_FRAME_LEN};
use caxton_ipc::handshake::{self, Hello, HelloReply, Role};
use caxton_ipc::json;
use caxton_ipc::peers::{Caps, Peer, PeerTable, Ticket};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{ReadHalf, WriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::runs;
use crate::service::Service;

/// Time a new connection has to send its first message (its Hello, or a JSON client's first
/// request line).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one response may take to be written; a client that stops reading is dropped after it.
pub const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered between a run and a slow client.
const EVENT_BUFFER: usize = 256;
/// Roles served on the public socket.
const CLIENT_ROLES: &[Role] = &[Role::Cli, Role::Script];
/// Refused connections given their busy answer at once; more are closed without one.
const MAX_REFUSING: usize = 64;
/// Time a refused connection gets to say hello, read its busy answer and close.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections until `stop` turns true. Each is admitted under the `[api]` caps (in
/// total and per uid; a waiting connection may be evicted to make room, see `caxton_ipc::peers`);
/// a refused one gets the busy answer.
pub async fn accept_loop(
    svc: Arc<Service>,
    listener: UnixListener,
    mut stop: watch::Receiver<bool>,
) {
    let table = PeerTable::new(Caps {
        total: svc.config.api.max_connections,
        per_peer: svc.config.api.max_connections_per_uid,
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
                svc.stats
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
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
async fn refuse_busy(mut stream: UnixStream, message: String) {
    let error = ApiResponse::Error(ErrorBody::new(ErrorKind::Busy, message));
    let welcome = HelloReply::Welcome(Hello::new(Role::Supervisor));
    let answer = async {
        let (rd, mut wr) = stream.split();
        let mut rd = BufReader::new(rd);
        let first = *rd.fill_buf().await.ok()?.first()?;
        if json::is_json_start(first) {
            if String::from_utf8_lossy(rd.buffer())
                .trim_start()
                .starts_with("{\"hello\"")
            {
                json::read_line(&mut rd, 4096).await.ok()?;
                wr.write_all(&json::to_line(&welcome)).await.ok()?;
            }
            wr.write_all(&json::to_line(&error)).await.ok()?;
        } else {
            let _: Hello = frame::read_async(&mut rd, 4096).await.ok()?;
            frame::write_async(&mut wr, &welcome).await.ok()?;
            rd.fill_buf().await.ok()?;
            frame::write_async(&mut wr, &error).await.ok()?;
        }
        let _ = wr.shutdown().await;
        let mut sink = [0u8; 4096];
        while rd.read(&mut sink).await.ok()? > 0 {}
        Some(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer).await;
}

/// Wire format of a connection, chosen from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Frames,
    Json,
}

struct Conn<'a> {
    mode: Mode,
    rd: BufReader<ReadHalf<'a>>,
    wr: WriteHalf<'a>,
}

/// Writes one message in the connection's format, within [`CLIENT_WRITE_TIMEOUT`].
async fn send_to<T: serde::Serialize>(
    mode: Mode,
    wr: &mut WriteHalf<'_>,
    msg: &T,
) -> Result<(), FrameError> {
    let write = async {
        match mode {
            Mode::Frames => frame::write_async(wr, msg).await,
            Mode::Json => {
                wr.write_all(&json::to_line(msg))
                    .await
                    .map_err(FrameError::Io)?;
                wr.flush().await.map_err(FrameError::Io)
            }
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

impl Conn<'_> {
    async fn send(&mut self, resp: &ApiResponse) -> Result<(), FrameError> {
        send_to(self.mode, &mut self.wr, resp).await
    }

    /// Refuses the connection before its handshake: frame clients read a `HelloReply`, JSON clients
    /// an error object.
    async fn refuse(&mut self, kind: ErrorKind, message: String) {
        match self.mode {
            Mode::Frames => {
                let _ = frame::write_async(&mut self.wr, &HelloReply::Rejected { reason: message })
                    .await;
            }
            Mode::Json => self.error(kind, message).await,
        }
    }

    async fn error(&mut self, kind: ErrorKind, message: impl Into<String>) {
        let _ = self
            .send(&ApiResponse::Error(ErrorBody::new(kind, message)))
            .await;
    }

    /// Reads the next request; `Ok(None)` when the client closed the connection.
    async fn next_request(&mut self) -> Result<Option<ApiRequest>, BadRequest> {
        match self.mode {
            Mode::Frames => match frame::read_async(&mut self.rd, MAX_FRAME_LEN).await {
                Ok(r) => Ok(Some(r)),
                Err(FrameError::Closed) => Ok(None),
                // After a bad frame the byte stream cannot be trusted.
                Err(e) => Err(BadRequest::fatal(format!("bad request frame: {e}"))),
            },
            Mode::Json => loop {
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
                return serde_json::from_slice(&line).map(Some).map_err(|e| BadRequest {
                    message: format!(
                        "invalid JSON request: {e}; expected one object per line such as {{\"run\":{{\"agent\":\"NAME\",\"input\":\"TEXT\"}}}} or \"status\" (see the README's Socket API)"
                    ),
                    fatal: false,
                });
            },
        }
    }

    /// Waits for the next request within the idle timeout, then for all of it within the request
    /// timeout. `Ok(None)`: the client closed the connection or stayed idle.
    async fn next_request_in_time(
        &mut self,
        idle: Duration,
        whole: Duration,
    ) -> Result<Option<ApiRequest>, BadRequest> {
        match tokio::time::timeout(idle, self.rd.fill_buf()).await {
            Err(_) | Ok(Ok([]) | Err(_)) => return Ok(None),
            Ok(Ok(_)) => {}
        }
        tokio::time::timeout(whole, self.next_request())
            .await
            .unwrap_or_else(|_| {
                Err(BadRequest::fatal(format!(
                    "the request did not arrive whole within {}s of its first byte; the connection is closed",
                    whole.as_secs()
                )))
            })
    }
}

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

async fn connection(svc: Arc<Service>, mut stream: UnixStream, ticket: Ticket) {
    let cred = stream.peer_cred();
    let (rd, wr) = stream.split();
    let mut rd = BufReader::new(rd);
    let first_message = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let first = tokio::select! {
        r = tokio::time::timeout_at(first_message, rd.fill_buf()) => match r {
            Ok(Ok([])) | Err(_) => return,
            Ok(Ok(buf)) => buf[0],
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "connection failed before its first byte");
                return;
            }
        },
        () = ticket.evicted() => return,
    };
    let mode = if json::is_json_start(first) {
        Mode::Json
    } else {
        Mode::Frames
    };
    let mut conn = Conn { mode, rd, wr };

    match cred {
        Ok(c) if allowed(&svc, c.uid(), c.gid()) => {}
        Ok(c) => {
            svc.stats
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(uid = c.uid(), gid = c.gid(), pid = ?c.pid(), "connection refused: peer not allowed");
            conn.refuse(
                ErrorKind::PermissionDenied,
                format!("uid {} / gid {} may not use this socket; the operator can add them to [api] allowed_uids or allowed_gids", c.uid(), c.gid()),
            )
            .await;
            return;
        }
        Err(e) => {
            conn.refuse(
                ErrorKind::PermissionDenied,
                format!("cannot read the peer's credentials: {e}"),
            )
            .await;
            return;
        }
    }

    let shaken = tokio::select! {
        r = tokio::time::timeout_at(first_message, handshake_ok(&mut conn)) => r.unwrap_or(false),
        () = ticket.evicted() => false,
    };
    if !shaken {
        return;
    }
    let (idle, whole) = (svc.config.api.idle_timeout, svc.config.api.request_timeout);
    loop {
        ticket.waiting();
        let next = tokio::select! {
            r = conn.next_request_in_time(idle, whole) => r,
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
                conn.error(ErrorKind::BadRequest, bad.message).await;
                if bad.fatal {
                    return;
                }
                continue;
            }
        };
        if dispatch(&svc, &mut conn, req).await.is_err() {
            return;
        }
    }
}

/// The Hello exchange: required for frames, optional (but checked when sent) for JSON.
async fn handshake_ok(conn: &mut Conn<'_>) -> bool {
    let hello: Hello = match conn.mode {
        Mode::Frames => match frame::read_async(&mut conn.rd, 4096).await {
            Ok(h) => h,
            Err(e) => {
                if !e.is_disconnect() {
                    tracing::debug!(error = %e, "bad hello");
                    conn.error(ErrorKind::BadRequest, format!("bad hello: {e}"))
                        .await;
                }
                return false;
            }
        },
        Mode::Json => {
            // Peek at the first line: a {"hello": …} object is consumed, anything else is a request.
            let Ok(buf) = conn.rd.fill_buf().await else {
                return false;
            };
            let text = String::from_utf8_lossy(buf);
            if !text.trim_start().starts_with("{\"hello\"") {
                return true;
            }
            let line = match json::read_line(&mut conn.rd, 4096).await {
                Ok(Some(l)) => l,
                _ => return false,
            };
            #[derive(serde::Deserialize)]
            struct JsonHello {
                hello: Hello,
            }
            match serde_json::from_slice::<JsonHello>(&line) {
                Ok(h) => h.hello,
                Err(e) => {
                    conn.error(ErrorKind::BadRequest, format!("bad hello: {e}"))
                        .await;
                    return false;
                }
            }
        }
    };
    match handshake::check_peer(&hello, CLIENT_ROLES, "caxton serve") {
        Ok(()) => {
            let welcome = HelloReply::Welcome(Hello::new(Role::Supervisor));
            send_to(conn.mode, &mut conn.wr, &welcome).await.is_ok()
        }
        Err(reason) => {
            let _ = send_to(conn.mode, &mut conn.wr, &HelloReply::Rejected { reason }).await;
            false
        }
    }
}

fn allowed(svc: &Service, uid: u32, gid: u32) -> bool {
    let me = nix::unistd::getuid().as_raw();
    uid == me
        || uid == 0
        || svc.config.api.allowed_uids.contains(&uid)
        || svc.config.api.allowed_gids.contains(&gid)
}

/// Handles one request; `Err` means the connection is finished.
async fn dispatch(
    svc: &Arc<Service>,
    conn: &mut Conn<'_>,
    req: ApiRequest,
) -> Result<(), FrameError> {
    let resp = match req {
        ApiRequest::Run(run) => return relay_run(svc, conn, run).await,
        ApiRequest::ListAgents => ApiResponse::Agents(svc.registry().summaries()),
        ApiRequest::ShowAgent { name } => svc.show(&name),
        ApiRequest::ValidateAgent { file_name, source } => svc.validate(&file_name, &source),
        ApiRequest::Status => ApiResponse::Status(svc.status()),
        ApiRequest::Health => ApiResponse::Health(svc.health()),
        ApiRequest::ListTools
        | ApiRequest::InstallTool(_)
        | ApiRequest::RemoveTool { .. }
        | ApiRequest::CallTool { .. } => svc.tool_request(req).await,
        ApiRequest::Memory(m) => svc.memory_api(m).await,
    };
    conn.send(&resp).await
}

/// Streams a run's responses to the client. If the client hangs up, returning drops the receiver,
/// which the run notices (`Sender::closed`): it kills and reaps its worker and ends.
async fn relay_run(
    svc: &Arc<Service>,
    conn: &mut Conn<'_>,
    run: caxton_ipc::api::RunRequest,
) -> Result<(), FrameError> {
    let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(runs::execute(svc.clone(), run, tx));
    let mut watching = conn.rd.buffer().is_empty();
    let Conn { mode, rd, wr } = conn;
    loop {
        tokio::select! {
            resp = rx.recv() => {
                let Some(resp) = resp else { return Ok(()) };
                send_to(*mode, wr, &resp).await?;
                // The run has answered: stop watching for a hang-up (the client closing now is
                // normal) while the worker is reaped.
                let ended = match &resp {
                    ApiResponse::Event(e) => e.is_terminal(),
                    _ => true,
                };
                if ended {
                    return Ok(());
                }
            }
            gone = hangup(rd.get_ref().as_ref()), if watching => {
                if gone {
                    tracing::info!("client hung up during a run; cancelling it");
                    return Err(FrameError::Closed);
                }
                watching = false;
            }
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
    let mut byte = [0u8; 1];
    loop {
        if stream.readable().await.is_err() {
            return true;
        }
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            nix::sys::socket::recv(
                stream.as_raw_fd(),
                &mut byte,
                nix::sys::socket::MsgFlags::MSG_PEEK,
            )
            .map_err(std::io::Error::from)
        });
        match peeked {
            Ok(0) => return peer_closed(stream),
            Ok(_) => return false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return true,
        }
    }
}
