//! The toolhost process: WASM MCP tool servers under wasmtime, and the LLM providers of
//! `caxton-llm`, served to workers over a Unix socket. Started and supervised by `caxton serve`;
//! never trusts a guest.
//!
//! Usage (normally only the supervisor runs it):
//! `caxton-toolhost serve --socket PATH [--config FILE | --config -]` binds PATH, prints `ready` on stdout, serves.
//! `caxton-toolhost catalog [--config FILE | --config -]` prints the tools and providers as JSON and exits
//! (used by `caxton agent validate` offline).

pub mod a2a;
pub mod egress;
pub mod host;
pub mod mcp;
pub mod metrics;
pub mod module_cache;
pub mod pipe;
pub mod policy;
pub mod runs;
pub mod server;
pub mod wasm;

use caxton_config::ServerConfig;

/// A tool package compiled into this binary by build.rs: its manifest text and module bytes.
macro_rules! builtin {
    ($name:literal) => {
        (
            include_str!(concat!("../../tools/", $name, "/tool.toml")),
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".wasm")) as &[u8],
        )
    };
}

/// The built-in tool packages: (manifest, module).
pub const BUILTIN_PACKAGES: &[(&str, &[u8])] = &[
    builtin!("calc"),
    builtin!("csv"),
    builtin!("json"),
    builtin!("chart"),
    builtin!("files"),
    builtin!("http_fetch"),
    builtin!("sql"),
];

/// Candle sizes its compute pool once, from `CANDLE_NUM_THREADS`: a `threads` setting of a `local`
/// provider is applied by setting it here, before any thread exists (the largest one wins when
/// several local providers disagree, since they share the pool). An explicit environment value wins.
///
/// Call it before any thread exists: it may set an environment variable.
pub fn apply_local_threads(config: &ServerConfig) {
    use caxton_config::ProviderConfig;
    if std::env::var_os("CANDLE_NUM_THREADS").is_some() {
        return;
    }
    let threads = config
        .providers()
        .values()
        .filter_map(|p| match p {
            ProviderConfig::Local(c) => c.threads,
            _ => None,
        })
        .max();
    if let Some(n) = threads {
        // SAFETY: called from the binary's `run` before the tokio runtime or any other thread is
        // started, so nothing can read the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", n.to_string()) };
    }
}
