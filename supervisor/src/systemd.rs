//! systemd integration through `sd_notify`: READY once the sockets are bound, STOPPING when the drain
//! starts, and watchdog pings while the runtime is responsive. All are no-ops outside systemd
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

/// Pings the watchdog at half its interval from the async runtime, so a wedged runtime stops the
/// pings and systemd restarts the service. `None` when no watchdog is configured.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            notify(&[NotifyState::Watchdog]);
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
