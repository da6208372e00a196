//! The toolhost process: WASM MCP tool servers under wasmtime, and the LLM providers of
//! `caxton-llm`, served to workers over a Unix socket. Started and supervised by `caxton serve`;
//! never trusts a guest.
//!
//! Usage (normally only the supervisor runs it):
//! `caxton-toolhost serve --socket PATH [--config FILE | --config -]` binds PATH, prints `ready` on stdout, serves.
//! `caxton-toolhost catalog [--config FILE | --config -]` prints the tools and providers as JSON and exits
//! (used by `caxton agent validate` offline).

pub mod egress;
pub mod host;
pub mod mcp;
pub mod module_cache;
pub mod pipe;
pub mod policy;
pub mod runs;
pub mod server;
pub mod wasm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
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
];

enum Command {
    Serve { socket: PathBuf },
    Catalog,
}

fn parse_args() -> anyhow::Result<(Command, Option<PathBuf>)> {
    let mut args = std::env::args_os().skip(1);
    let cmd = args.next().context(
        "usage: caxton-toolhost serve --socket PATH [--config FILE | --config -] | catalog [--config FILE | --config -]",
    )?;
    let (socket, config) = caxton_ipc::service::parse_flags(args).map_err(anyhow::Error::msg)?;
    let cmd = match cmd.to_str() {
        Some("serve") => Command::Serve {
            socket: socket.context("serve needs --socket PATH")?,
        },
        Some("catalog") => Command::Catalog,
        _ => anyhow::bail!(
            "unknown command {}; expected serve or catalog",
            cmd.to_string_lossy()
        ),
    };
    Ok((cmd, config))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    caxton_ipc::logging::init("caxton-toolhost");
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "caxton-toolhost failed");
            eprintln!("caxton-toolhost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let (cmd, config_path) = parse_args()?;
    caxton_ipc::service::private_umask();
    // TLS for guests' HTTP requests (and providers) uses ring; install it once, process-wide.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = caxton_config::for_service(config_path.as_deref())?;
    apply_local_threads(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let purpose = match cmd {
            Command::Catalog => host::Purpose::Catalog,
            Command::Serve { .. } => host::Purpose::Serve,
        };
        let host = Arc::new(host::Host::load(&config, purpose).await?);
        match cmd {
            Command::Catalog => {
                let catalog = host.catalog();
                println!("{}", serde_json::to_string_pretty(&catalog)?);
                Ok(())
            }
            Command::Serve { socket } => {
                server::serve(host, &socket, config.workers.service_idle_timeout).await
            }
        }
    })
}

/// Candle sizes its compute pool once, from `CANDLE_NUM_THREADS`: a `threads` setting of a `local`
/// provider is applied by setting it here, before any thread exists (the largest one wins when
/// several local providers disagree, since they share the pool). An explicit environment value wins.
fn apply_local_threads(config: &ServerConfig) {
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
        // SAFETY: called from `run` before the tokio runtime or any other thread is started, so
        // nothing can read the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", n.to_string()) };
    }
}
