//! The `Hello` exchange that opens every connection: who the peer is and which protocol it speaks.

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;

/// Which kind of process is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Cli,
    Script,
    Supervisor,
    Worker,
    Toolhost,
    Memory,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Role::Cli => "cli",
            Role::Script => "script",
            Role::Supervisor => "supervisor",
            Role::Worker => "worker",
            Role::Toolhost => "toolhost",
            Role::Memory => "memory",
        };
        f.write_str(s)
    }
}

/// First message on every connection, sent by the side that connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub role: Role,
    /// The protocol version the sender speaks (also carried in every frame header).
    pub protocol: u16,
    /// Human-readable software version, for error messages.
    pub software: String,
    pub pid: u32,
}

impl Hello {
    /// A `Hello` for this process in the given role.
    pub fn new(role: Role) -> Self {
        Hello {
            role,
            protocol: PROTOCOL_VERSION,
            software: concat!("caxton ", env!("CARGO_PKG_VERSION")).to_string(),
            pid: std::process::id(),
        }
    }
}

/// The answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelloReply {
    /// The connection is accepted; `hello` describes the accepting side.
    Welcome(Hello),
    /// The connection is refused, with the reason.
    Rejected { reason: String },
}

/// Checks a peer's `Hello` against the roles a listener serves.
pub fn check_peer(hello: &Hello, accepted: &[Role], listener: &str) -> Result<(), String> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version mismatch: {listener} speaks v{PROTOCOL_VERSION}, the peer ({}, {}) speaks v{}",
            hello.role, hello.software, hello.protocol
        ));
    }
    if !accepted.contains(&hello.role) {
        return Err(format!(
            "{listener} does not serve {} connections (it serves: {})",
            hello.role,
            accepted
                .iter()
                .map(Role::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}
