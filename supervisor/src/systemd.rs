//! systemd integration through `sd_notify`: READY once the sockets are bound, STOPPING when the drain
//! starts, and watchdog pings while the runtime and its recovery of the services work. All are no-ops outside systemd
//! (no `NOTIFY_SOCKET`). Children never inherit `NOTIFY_SOCKET` (see `spawn.rs`). With socket
//! activation (`systemd/caxton.socket`) the API socket is the one systemd passes
//! ([`activated_socket`]); children never inherit it either.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::sys::socket::{SockType, UnixAddr, getsockname, getsockopt, sockopt};
use sd_notify::NotifyState;

/// The API socket systemd passed to this process (socket activation: `LISTEN_PID` is ours and
/// `LISTEN_FDS` counts the descriptors from fd 3, see sd_listen_fds(3)), if any. It must be one
/// listening Unix stream socket; the descriptor is close-on-exec from here on, so no worker or
/// service inherits it.
pub fn activated_socket() -> Result<Option<tokio::net::UnixListener>, String> {
    let fds: Vec<_> = sd_notify::listen_fds()
        .map_err(|e| format!("bad socket activation variables (LISTEN_FDS, LISTEN_PID): {e}"))?
        .collect();
    let fd = match fds.as_slice() {
        [] => return Ok(None),
        [fd] => *fd,
        more => {
            return Err(format!(
                "systemd passed {} sockets (LISTEN_FDS); caxton takes one, the API socket",
                more.len()
            ));
        }
    };
    // SAFETY: systemd passed this descriptor to this process to own (LISTEN_PID is our pid), and
    // nothing else in the process knows of it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // A socket of another family has no Unix address: getsockname fails.
    let unix_stream = getsockname::<UnixAddr>(fd).is_ok()
        && getsockopt(&owned, sockopt::SockType) == Ok(SockType::Stream);
    if !unix_stream || getsockopt(&owned, sockopt::AcceptConn) != Ok(true) {
        return Err(format!(
            "the socket systemd passed (fd {fd}) is not a listening Unix stream socket; \
             caxton.socket needs ListenStream=<path of api.sock>"
        ));
    }
    let listener = std::os::unix::net::UnixListener::from(owned);
    let cannot_use = |e: std::io::Error| format!("cannot use the socket systemd passed: {e}");
    listener.set_nonblocking(true).map_err(cannot_use)?;
    tokio::net::UnixListener::from_std(listener)
        .map(Some)
        .map_err(cannot_use)
}

/// Tells systemd the service is ready (sockets bound, toolhost up, agents loaded).
pub fn ready(agents: usize) {
    let status = format!("serving {agents} agents");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Tells systemd the service is stopping (draining).
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Feeds the watchdog at half its interval while `healthy()` holds: the supervisor's runtime
/// runs this task, and `healthy` says the service processes are watched and recovered (see
/// `Service::watchdog_ok`), so a wedged supervisor, or one whose recovery of a service is not
/// working, stops the pings and systemd restarts the unit. `None` when no watchdog is configured.
pub fn spawn_watchdog(
    healthy: impl Fn() -> bool + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        let mut starved = false;
        loop {
            tick.tick().await;
            if healthy() {
                if starved {
                    tracing::info!("feeding the systemd watchdog again");
                    starved = false;
                }
                notify(&[NotifyState::Watchdog]);
            } else if !starved {
                tracing::error!(
                    "not feeding the systemd watchdog: a service process stays unresponsive past its restart"
                );
                starved = true;
            }
        }
    }))
}

fn notify(state: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
