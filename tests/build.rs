//! Builds the hostile guest tool servers in tests/guests for wasm32-wasip1 and lays them out as tool
//! packages (`$OUT_DIR/guests/<name>/{tool.toml,<name>.wasm}`); the sandbox tests load them through
//! the toolhost's `tools_dir`. A guest's manifest is `guests/manifests/<name>.toml` when present,
//! else a minimal one that requests nothing.

use std::path::PathBuf;

include!("../tools/build_wasm.rs");

/// The guests, one `.wasm` each.
const GUESTS: &[&str] = &[
    "spin",
    "hog",
    "deep",
    "flood",
    "mute",
    "garble",
    "snoop",
    "nap",
    "afterburn",
    "chatter",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guests = manifest_dir.join("guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed={}", guests.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../tools/build_wasm.rs").display()
    );
    let modules = out.join("guest-modules");
    build_wasm_guests(
        &guests.join("Cargo.toml"),
        &out.join("wasm-target"),
        GUESTS,
        &modules,
    );
    let packages = out.join("guests");
    for name in GUESTS {
        let dir = packages.join(name);
        std::fs::create_dir_all(&dir).expect("create the package dir");
        let custom = guests.join("manifests").join(format!("{name}.toml"));
        let manifest = std::fs::read_to_string(&custom).unwrap_or_else(|_| {
            format!("name = \"{name}\"\nversion = \"0.0.0\"\ndescription = \"hostile guest\"\n")
        });
        std::fs::write(dir.join("tool.toml"), manifest).expect("write tool.toml");
        std::fs::copy(
            modules.join(format!("{name}.wasm")),
            dir.join(format!("{name}.wasm")),
        )
        .expect("copy the module");
    }
}
