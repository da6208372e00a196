//! systemd integration through `sd_notify`: READY once the sockets are bound, STOPPING when the drain
//! starts, and watchdog pings while the runtime and its recovery of the services work. All are no-ops outside systemd
//! (no `NOTIFY_SOCKET`). Children never inherit `NOTIFY_SOCKET` (see `spawn.rs`).

use sd_notify::NotifyState;

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
