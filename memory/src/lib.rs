//! The memory process: owns the knowledge-graph database (SQLite through an r2d2 pool) and the
//! All-MiniLM-L6-v2 embedder, and serves workers and the supervisor over a Unix socket. Started
//! and supervised by `caxton serve`; the only process that opens the database.
//!
//! The binary (`main.rs`) parses its arguments, opens the store and serves; see there for its usage.

pub mod conversations;
pub mod db;
pub mod embed;
pub mod graph;
pub mod index;
pub mod metrics;
pub mod server;
pub mod tools;
