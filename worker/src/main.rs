//! `caxton-worker`: runs one agent request and exits (see lib.rs). Started only by `caxton serve`.

use std::process::ExitCode;

fn main() -> ExitCode {
    caxton_worker::main()
}
