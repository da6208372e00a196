//! What the service processes (`caxton-toolhost`, `caxton-memory`) do the same way: read their
//! flags, log to stderr, bind their private socket, report readiness on stdout, and accept connections up to a
//! cap, one task each.

use std::ffi::OsString;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::frame::FrameError;

/// Logs to stderr (stdout carries the readiness line; the supervisor captures stderr): text, or
/// JSON lines with `CAXTON_LOG_FORMAT=json`; the filter comes from `CAXTON_LOG` (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CAXTON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var_os("CAXTON_LOG_FORMAT").is_some_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
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

/// Binds `socket` (replacing a stale file; mode 0600) and prints `ready` on stdout, which the
/// supervisor waits for.
pub fn bind_and_announce(socket: &Path) -> Result<UnixListener, String> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove stale socket {}: {e}",
                socket.display()
            ));
        }
    }
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("cannot bind {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot set the mode of {}: {e}", socket.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|_| out.flush())
        .map_err(|e| format!("cannot report readiness on stdout: {e}"))?;
    Ok(listener)
}

/// Accepts connections forever, serving each with `serve` in its own task; beyond `max` open
/// connections, new ones are closed at once (and logged).
pub async fn accept_loop<F, Fut>(listener: UnixListener, max: usize, serve: F)
where
    F: Fn(UnixStream) -> Fut,
    Fut: Future<Output = Result<(), FrameError>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(max, "connection refused: too many connections");
            continue;
        };
        let work = serve(stream);
        tokio::spawn(async move {
            if let Err(e) = work.await
                && !e.is_disconnect()
            {
                tracing::warn!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}
