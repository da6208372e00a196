//! Signals for the supervisor: a signal-hook thread forwards SIGTERM, SIGINT and SIGHUP to the runtime.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

/// What a signal asks the service to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM or SIGINT: drain (the second one: stop now).
    Stop,
    /// SIGHUP: reload the agents.
    Reload,
}

/// Starts the forwarding thread.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<Request>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let req = if sig == SIGHUP {
                    Request::Reload
                } else {
                    Request::Stop
                };
                if tx.send(req).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}
