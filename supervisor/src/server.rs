//! The public API socket: accept loop with a connection cap, peer-credential check, protocol
//! sniffing (bincode frames or JSON lines), the Hello exchange, and request dispatch.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use caxton_ipc::api::{ApiRequest, ApiResponse, ErrorBody, ErrorKind};
use caxton_ipc::frame::{self, FrameError, MAX_FRAME_LEN};
use caxton_ipc::handshake::{self, Hello, HelloReply, Role};
use caxton_ipc::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{ReadHalf, WriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::runs;
use crate::service::Service;

/// Connections served at once; more are answered "busy" and closed.
pub const MAX_CONNECTIONS: usize = 512;
/// Time a new connection has to send its first bytes and its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an idle connection may wait between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Time one response may take to be written; a client that stops reading is dropped after it.
pub const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered between a run and a slow client.
const EVENT_BUFFER: usize = 256;
/// Roles served on the public socket.
const CLIENT_ROLES: &[Role] = &[Role::Cli, Role::Script];

/// Accepts connections until `stop` turns true.
pub async fn accept_loop(
    svc: Arc<Service>,
    listener: UnixListener,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let svc = svc.clone();
        let permit = slots.clone().try_acquire_owned();
        tokio::spawn(async move {
            let Ok(_permit) = permit else {
                svc.stats
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
                reject_early(
                    stream,
                    ErrorBody::new(
                        ErrorKind::Busy,
                        format!("busy: {MAX_CONNECTIONS} connections are open already"),
                    ),
                )
                .await;
                return;
            };
            connection(svc, stream).await;
        });
    }
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
    async fn next_request(&mut self) -> Result<Option<ApiRequest>, String> {
        match self.mode {
            Mode::Frames => match frame::read_async(&mut self.rd, MAX_FRAME_LEN).await {
                Ok(r) => Ok(Some(r)),
                Err(FrameError::Closed) => Ok(None),
                Err(e) => Err(format!("bad request frame: {e}")),
            },
            Mode::Json => loop {
                let line = match json::read_line(&mut self.rd, MAX_FRAME_LEN as usize).await {
                    Ok(Some(l)) => l,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(format!("bad request line: {e}")),
                };
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line).map(Some).map_err(|e| {
                    format!(
                        "invalid JSON request: {e}; expected one object per line such as {{\"run\":{{\"agent\":\"NAME\",\"input\":\"TEXT\"}}}} or \"status\" (see the README's Socket API)"
                    )
                });
            },
        }
    }
}

async fn reject_early(mut stream: UnixStream, err: ErrorBody) {
    // The client's format is unknown before it speaks; a frame client (the CLI) reads a HelloReply.
    let _ = frame::write_async(
        &mut stream,
        &HelloReply::Rejected {
            reason: err.message,
        },
    )
    .await;
}

async fn connection(svc: Arc<Service>, mut stream: UnixStream) {
    let cred = stream.peer_cred();
    let (rd, wr) = stream.split();
    let mut rd = BufReader::new(rd);
    let first = match tokio::time::timeout(HELLO_TIMEOUT, rd.fill_buf()).await {
        Ok(Ok([])) | Err(_) => return,
        Ok(Ok(buf)) => buf[0],
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection failed before its first byte");
            return;
        }
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

    if !handshake_ok(&mut conn).await {
        return;
    }
    loop {
        let req = match tokio::time::timeout(IDLE_TIMEOUT, conn.next_request()).await {
            Err(_) | Ok(Ok(None)) => return,
            Ok(Ok(Some(r))) => r,
            Ok(Err(message)) => {
                tracing::debug!(%message, "bad request");
                conn.error(ErrorKind::BadRequest, message).await;
                // After a bad frame the byte stream cannot be trusted; a bad JSON line can be skipped.
                if mode == Mode::Frames {
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
        Mode::Frames => match tokio::time::timeout(
            HELLO_TIMEOUT,
            frame::read_async(&mut conn.rd, MAX_FRAME_LEN),
        )
        .await
        {
            Ok(Ok(h)) => h,
            Err(_) => return false,
            Ok(Err(e)) => {
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
            let Ok(Ok(buf)) = tokio::time::timeout(HELLO_TIMEOUT, conn.rd.fill_buf()).await else {
                return false;
            };
            let text = String::from_utf8_lossy(buf);
            if !text.trim_start().starts_with("{\"hello\"") {
                return true;
            }
            let line = match json::read_line(&mut conn.rd, MAX_FRAME_LEN as usize).await {
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
