//! `caxton-toolhost`: hosts WASM MCP tool servers and LLM providers for workers (see lib.rs).

use std::process::ExitCode;

fn main() -> ExitCode {
    caxton_toolhost::main()
}
