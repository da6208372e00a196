//! Builds the tool servers in `tools/` for wasm32-wasip1 so `caxton-toolhost` can embed them.

use std::path::PathBuf;

include!("../tools/build_wasm.rs");

/// Tool servers embedded in the toolhost (crate names in `tools/`).
const BUILTIN_TOOLS: &[&str] = &["calc", "csv", "json", "chart", "files", "http_fetch", "sql"];

/// Libraries in `tools/` that the built-in tools depend on.
const SHARED_LIBS: &[&str] = &["mcp-guest", "tabular"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let tools = manifest_dir.join("../tools");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    for watched in [
        "Cargo.toml",
        "Cargo.lock",
        "build_wasm.rs",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", tools.join(watched).display());
    }
    // The tool crates and the libraries they share (not tools/ as a whole: its target/ changes on
    // every build).
    for dir in BUILTIN_TOOLS.iter().chain(SHARED_LIBS) {
        println!("cargo:rerun-if-changed={}", tools.join(dir).display());
    }
    // The tools workspace's own target directory, not one under OUT_DIR: `cargo clippy` and
    // `cargo build` run this script with different OUT_DIRs, and the guests (SQLite among them)
    // then compile once, not once per command. Cargo locks the directory while it builds.
    build_wasm_guests(
        &tools.join("Cargo.toml"),
        &tools.join("target"),
        BUILTIN_TOOLS,
        &out,
    );
}
