//! The `caxton` command, as a library: `caxton serve` starts the supervisor
//! (`caxton_supervisor::serve`); every other command is a client of its API socket. The binary
//! (`main.rs`) only calls [`cli::main`]. `anyhow` lives here, at the binary's edge.

pub mod agent_test;
pub mod cli;
pub mod client;
pub mod conversation_cli;
pub mod mcp_cli;
pub mod memory_cli;
pub mod run_cli;
pub mod tool_cli;
pub mod top;
