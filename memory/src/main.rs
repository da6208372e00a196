//! `caxton-memory`: the memory service (see lib.rs).

use std::process::ExitCode;

fn main() -> ExitCode {
    caxton_memory::main()
}
