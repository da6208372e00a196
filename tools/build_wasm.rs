// Shared by toolhost/build.rs and tests/build.rs through `include!`: builds a cargo workspace of
// WASM guests for wasm32-wasip1 (release) and copies the named modules into `dest`.

/// Builds the workspace at `manifest` for wasm32-wasip1 into `target_dir`, then copies
/// `<name>.wasm` for each of `names` into `dest`. Panics with a clear message on failure.
fn build_wasm_guests(
    manifest: &std::path::Path,
    target_dir: &std::path::Path,
    names: &[&str],
    dest: &std::path::Path,
) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(&cargo);
    cmd.args(["build", "--release", "--locked", "--target", "wasm32-wasip1", "--manifest-path"])
        .arg(manifest)
        // In the workspace's own directory, so its `.cargo/config.toml` applies (tools/ has the C
        // compiler settings for the guests that compile C).
        .current_dir(manifest.parent().expect("a manifest is a file in a directory"))
        .arg("--target-dir")
        .arg(target_dir);
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
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    if !status.success() {
        panic!(
            "building the WASM guests in {} failed ({status}).\n\
             If the error above says the target is missing, install it with:\n    rustup target add wasm32-wasip1",
            manifest.display()
        );
    }
    std::fs::create_dir_all(dest).unwrap_or_else(|e| panic!("cannot create {}: {e}", dest.display()));
    for name in names {
        let built = target_dir.join("wasm32-wasip1/release").join(format!("{name}.wasm"));
        let to = dest.join(format!("{name}.wasm"));
        std::fs::copy(&built, &to)
            .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", built.display(), to.display()));
    }
}
