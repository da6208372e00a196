//! Builds the hostile guest tool servers in tests/guests for wasm32-wasip1; the sandbox tests load
//! them through the toolhost's `tools_dir` (`$OUT_DIR/guests`).

use std::path::PathBuf;

include!("../tools/build_wasm.rs");

/// The guests, one `.wasm` each.
const GUESTS: &[&str] = &["spin", "hog", "deep", "flood", "mute", "garble"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guests = manifest_dir.join("guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed={}", guests.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../tools/build_wasm.rs").display()
    );
    build_wasm_guests(
        &guests.join("Cargo.toml"),
        &out.join("wasm-target"),
        GUESTS,
        &out.join("guests"),
    );
}
