//! `caxton`: the supervisor daemon and the command-line client (see lib.rs and cli.rs).

use std::process::ExitCode;

fn main() -> ExitCode {
    caxton::cli::main()
}
