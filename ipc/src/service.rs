//! What the service processes (`caxton-toolhost`, `caxton-memory`) do the same way: read their
//! flags, log to stderr, bind their private socket, report readiness on stdout, accept connections
//! within their caps (one task each), and read requests under the first-message, idle and request
//! deadlines.

use std::ffi::OsString;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::connection::{AsyncServer, Protocol};
use crate::frame::FrameError;
use crate::handshake::{Hello, HelloReply};
use crate::peers::{Caps, Peer, PeerTable, Ticket};

/// Makes every file and directory this process (and its children) creates private to its user,
/// whatever umask it was started with: state files hold memories, audit records and tool
/// packages. Files meant to be shared (`api.sock`) get their mode set explicitly.
pub fn private_umask() {
    use nix::sys::stat::{Mode, umask};
    umask(Mode::from_bits_truncate(0o077));
}

/// Creates `dir`, and any parent it is missing, with mode 0700: a state directory private to its
/// user.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// What the supervisor writes on a service process's stdin before anything else, after its
/// `Hello`: the server config it validated (as JSON, `caxton_config::ServerConfig::to_json`), so
/// a service restarted after the file was edited still runs the config the supervisor checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSetup {
    pub config_json: String,
}

/// Why a service could not read its setup.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the supervisor's setup on stdin")]
    Frame(#[from] FrameError),
    #[error("the setup on stdin was refused: {0}")]
    Refused(String),
}

/// Reads the supervisor's `Hello` and the [`ServiceSetup`] from `input` (the service's stdin).
pub fn read_setup(input: &mut impl std::io::Read) -> Result<ServiceSetup, SetupError> {
    let hello: Hello = crate::frame::read_sync(input, crate::connection::MAX_HELLO)?;
    crate::handshake::check_peer(&hello, &[crate::handshake::Role::Supervisor], "a service")
        .map_err(SetupError::Refused)?;
    Ok(crate::frame::read_sync(input, crate::MAX_FRAME_LEN)?)
}

/// Writes our `Hello` and `setup` to a service process's stdin (the supervisor's side).
pub async fn write_setup(
    output: &mut (impl tokio::io::AsyncWrite + Unpin),
    setup: &ServiceSetup,
) -> Result<(), FrameError> {
    crate::frame::write_async(output, &Hello::new(crate::handshake::Role::Supervisor)).await?;
    crate::frame::write_async(output, setup).await
}

/// The flags both service binaries take after their command: `--socket PATH` and
/// `--config FILE`, each optional here (the caller says which it needs).
pub fn parse_flags(
    mut args: impl Iterator<Item = OsString>,
) -> Result<(Option<PathBuf>, Option<PathBuf>), String> {
    let mut socket = None;
    let mut config = None;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
        match flag.to_str() {
            Some("--socket") => socket = Some(PathBuf::from(value)),
            Some("--config") => config = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown argument {}", flag.to_string_lossy())),
        }
    }
    Ok((socket, config))
}

/// Why a service could not start serving on its socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot remove stale socket {}", .socket.display())]
    RemoveStale {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind {}", .socket.display())]
    Bind {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set the mode of {}", .socket.display())]
    Mode {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot report readiness on stdout")]
    Announce(#[source] std::io::Error),
}

/// Binds `socket` (replacing a stale file; mode 0600) and prints `ready` on stdout, which the
/// supervisor waits for.
pub fn bind_and_announce(socket: &Path) -> Result<UnixListener, BindError> {
    let socket_buf = || socket.to_path_buf();
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BindError::RemoveStale {
                socket: socket_buf(),
                source,
            });
        }
    }
    let listener = UnixListener::bind(socket).map_err(|source| BindError::Bind {
        socket: socket_buf(),
        source,
    })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        BindError::Mode {
            socket: socket_buf(),
            source,
        }
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|_| out.flush())
        .map_err(BindError::Announce)?;
    Ok(listener)
}

/// Caps of a private socket: connections from one process (the supervisor is exempt).
pub const PRIVATE_CAPS: Caps = Caps {
    total: 1024,
    per_peer: 64,
};
/// Time a new connection to a private socket has to send its `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a request may take to arrive once its first byte has.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused connections answered at once; more are closed without an answer.
const MAX_REFUSING: usize = 32;
/// Time a refused connection gets to send its `Hello` and read the refusal.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// The pid of the process that started this one: the supervisor, exempt from the caps.
pub fn parent_pid() -> u32 {
    nix::unistd::getppid().as_raw() as u32
}

/// Accepts connections forever. Each is admitted through `table` (keyed by the peer's pid; the
/// process `exempt_pid` is never capped) and served with `serve` in its own task; a refused one
/// gets a `HelloReply::Rejected` saying why, as long as few are being refused at once.
pub async fn accept_loop<F, Fut>(
    listener: UnixListener,
    table: Arc<PeerTable>,
    exempt_pid: u32,
    serve: F,
) where
    F: Fn(UnixStream, Ticket) -> Fut,
    Fut: Future<Output = Result<(), FrameError>> + Send + 'static,
{
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let pid = stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .map_or(0, |p| p as u32);
        let peer = if pid == exempt_pid {
            Peer::Exempt
        } else {
            Peer::Key(pid)
        };
        let ticket = match table.admit(peer) {
            Ok(t) => t,
            Err(refused) => {
                tracing::warn!(pid, reason = %refused, "connection refused");
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream, refused.to_string()).await;
                        drop(permit);
                    });
                }
                continue;
            }
        };
        let work = serve(stream, ticket);
        tokio::spawn(async move {
            if let Err(e) = work.await
                && !e.is_disconnect()
            {
                tracing::warn!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// Reads the peer's `Hello` (briefly) and answers `Rejected`, so it reads a reason instead of a
/// reset.
async fn refuse(mut stream: UnixStream, reason: String) {
    let answer = async {
        let _: Hello = crate::frame::read_async(&mut stream, 4096).await?;
        crate::frame::write_async(&mut stream, &HelloReply::Rejected { reason }).await
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer).await;
}

/// The accepting side of a private socket's connection.
pub type PrivateConn<P> = AsyncServer<P, OwnedReadHalf, OwnedWriteHalf>;

/// Accepts a private connection: its `Hello` within [`HELLO_TIMEOUT`] (and as long as the
/// connection is not evicted), checked against the protocol's roles and `check`; `None` when it
/// did not come or was refused (the peer was told why).
pub async fn accept<P: Protocol>(
    stream: UnixStream,
    ticket: &Ticket,
    check: impl FnOnce(&Hello) -> Result<(), String>,
) -> Option<PrivateConn<P>> {
    let (r, w) = stream.into_split();
    tokio::select! {
        r = tokio::time::timeout(HELLO_TIMEOUT, PrivateConn::<P>::accept(r, w, check)) => match r {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "connection refused at its hello");
                None
            }
            Err(_) => None,
        },
        () = ticket.evicted() => None,
    }
}

/// The next byte `stream` has to read, without consuming it; `None` when its peer closed it.
pub async fn peek_byte(stream: &UnixStream) -> std::io::Result<Option<u8>> {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    loop {
        stream.readable().await?;
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            nix::sys::socket::recv(
                stream.as_raw_fd(),
                &mut byte,
                nix::sys::socket::MsgFlags::MSG_PEEK,
            )
            .map_err(std::io::Error::from)
        });
        match peeked {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(byte[0])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Waits until `stream` has a byte to read or its peer closed it.
pub async fn data_or_close(stream: &UnixStream) -> std::io::Result<()> {
    peek_byte(stream).await.map(drop)
}

/// Reads the next request on a private connection. The connection is evictable while it waits;
/// the request must start within `idle` (`[workers] service_idle_timeout`; workers reconnect on
/// their next request when they find their connection closed) and arrive whole within
/// [`REQUEST_TIMEOUT`] of its first byte. `Ok(None)` when the connection should end quietly:
/// the peer closed it, it stayed idle, or it was evicted. The ticket is marked serving when a
/// request is returned.
pub async fn next_request<P: Protocol>(
    conn: &mut PrivateConn<P>,
    ticket: &Ticket,
    idle: Duration,
) -> Result<Option<P::Request>, FrameError> {
    ticket.waiting();
    let read = async {
        match tokio::time::timeout(idle, data_or_close(conn.reader.get_ref().as_ref())).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => return Err(FrameError::Io(e)),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, conn.recv()).await {
            Err(_) => Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "a request did not arrive whole within {}s of its first byte",
                    REQUEST_TIMEOUT.as_secs()
                ),
            ))),
            Ok(Err(FrameError::Closed)) => Ok(None),
            Ok(r) => r.map(Some),
        }
    };
    let r = tokio::select! {
        r = read => r,
        () = ticket.evicted() => Ok(None),
    };
    ticket.serving();
    r
}
