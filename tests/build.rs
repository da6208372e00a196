//! Builds the hostile guest tool servers in tests/guests for wasm32-wasip1; the sandbox tests load
//! them through the toolhost's `tools_dir`.

use std::path::PathBuf;
use std::process::Command;

/// The guests, one `.wasm` each.
const GUESTS: &[&str] = &["spin", "hog", "deep", "flood", "mute", "garble"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guests = manifest_dir.join("guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed={}", guests.display());
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
    .arg(guests.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        status.success(),
        "building the hostile guests failed ({status}); is the target installed? rustup target add wasm32-wasip1"
    );
    let dest = out.join("guests");
    std::fs::create_dir_all(&dest).expect("create guests dir");
    for g in GUESTS {
        let built = target_dir
            .join("wasm32-wasip1/release")
            .join(format!("{g}.wasm"));
        std::fs::copy(&built, dest.join(format!("{g}.wasm")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
    }
}
