//! Builds the tool servers in `tools/` for wasm32-wasip1 so `caxton-toolhost` can embed them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Tool servers embedded in the toolhost (crate names in `tools/`).
const BUILTIN_TOOLS: &[&str] = &["calc"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let tools = manifest_dir.join("../tools");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    println!(
        "cargo:rerun-if-changed={}",
        tools.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        tools.join("Cargo.lock").display()
    );
    for tool in BUILTIN_TOOLS {
        println!("cargo:rerun-if-changed={}", tools.join(tool).display());
    }
    let target_dir = out.join("wasm-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        "wasm32-wasip1",
        "--manifest-path",
    ])
    .arg(tools.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // The outer build's settings are not meant for the guest build.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    if !status.success() {
        panic!(
            "building the WASM tool servers in {} failed ({status}).\n\
             If the error above says the target is missing, install it with:\n    rustup target add wasm32-wasip1",
            tools.display()
        );
    }
    for tool in BUILTIN_TOOLS {
        let built = target_dir
            .join("wasm32-wasip1/release")
            .join(format!("{tool}.wasm"));
        copy(&built, &out.join(format!("{tool}.wasm")));
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
}
