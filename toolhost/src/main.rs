//! `caxton-toolhost`: hosts WASM MCP tool servers and LLM providers for workers (see lib.rs).
//!
//! Usage (normally only the supervisor runs it):
//! `caxton-toolhost serve --socket PATH [--config FILE | --config -]` binds PATH, prints `ready` on stdout, serves.
//! `caxton-toolhost catalog [--config FILE | --config -]` prints the tools and providers as JSON and exits
//! (used by `caxton agent validate` offline).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use caxton_ipc::error::Chain;
use caxton_toolhost::{host, server};

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

fn main() -> ExitCode {
    let result = run();
    caxton_telemetry::traces::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let error = Chain(e.as_ref()).to_string();
            tracing::error!(%error, "caxton-toolhost failed");
            eprintln!("caxton-toolhost: {error}");
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
    // Logging starts once the config is read (an error before goes to stderr only), and before
    // the runtime (the trace exporter's HTTP client makes its own).
    let serving = matches!(cmd, Command::Serve { .. });
    caxton_telemetry::init_logging("caxton-toolhost", serving.then_some(&config.telemetry));
    caxton_toolhost::apply_local_threads(&config);
    if matches!(cmd, Command::Serve { .. }) {
        caxton_toolhost::metrics::install();
    }
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
        release_freed_memory();
        match cmd {
            Command::Catalog => {
                let catalog = host.catalog();
                println!("{}", serde_json::to_string_pretty(&catalog)?);
                Ok(())
            }
            Command::Serve { socket } => {
                server::serve(host, &socket, config.workers.service_idle_timeout).await?;
                Ok(())
            }
        }
    })
}

/// Gives the memory freed since start back to the system. Compiling the tool packages (cranelift)
/// allocates tens of MiB that are freed once the modules are built, but glibc keeps freed memory
/// in its arenas: without this the idle toolhost held ~35 MiB more than it uses.
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks and trims glibc's own heaps, under their locks; it has no
    // preconditions.
    unsafe { nix::libc::malloc_trim(0) };
}
