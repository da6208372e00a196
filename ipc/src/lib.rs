//! Every type that crosses a Caxton process boundary, and the frame codec that carries them.
//!
//! Processes talk over Unix domain sockets (or a child's stdin/stdout) with length-prefixed
//! bincode frames ([`frame`]). The first exchange on every connection is a [`handshake::Hello`].
//! The public API socket also accepts newline-delimited JSON with the same types ([`json`]).

pub mod agent;
pub mod api;
pub mod audit;
pub mod connection;
pub mod conversation;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod json;
pub mod json_api;
pub mod logging;
pub mod memory;
pub mod peers;
pub mod recording;
pub mod service;
pub mod template;
pub mod tool;
pub mod toolhost;
pub mod trace;
pub mod worker;

pub use frame::{FrameError, MAX_FRAME_LEN, PROTOCOL_VERSION};
pub use handshake::{Hello, HelloReply, Role};
