//! `caxton-memory`: the memory service (the library is in lib.rs).
//!
//! Usage (normally only the supervisor runs it):
//! `caxton-memory serve --socket PATH [--config FILE | --config -]` opens the database, binds PATH, prints
//! `ready` on stdout and serves. A database it cannot use is a startup error that names the file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use caxton_ipc::error::Chain;
use caxton_memory::{embed, graph, server};

fn main() -> ExitCode {
    let result = run();
    caxton_telemetry::traces::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain = Chain(e.as_ref());
            tracing::error!(error = %chain, "caxton-memory failed");
            eprintln!("caxton-memory: {chain}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let usage = "usage: caxton-memory serve --socket PATH [--config FILE | --config -]";
    let mut args = std::env::args_os().skip(1);
    if args.next().and_then(|c| c.into_string().ok()).as_deref() != Some("serve") {
        anyhow::bail!("{usage}");
    }
    let (socket, config) =
        caxton_ipc::service::parse_flags(args).map_err(|e| anyhow::anyhow!("{e}; {usage}"))?;
    Ok((socket.context(usage)?, config))
}

fn run() -> anyhow::Result<()> {
    let (socket, config_path) = parse_args()?;
    caxton_ipc::service::private_umask();
    let config = caxton_config::for_service(config_path.as_deref())?;
    // Logging starts once the config is read (an error before goes to stderr only), and before
    // the runtime (the trace exporter's HTTP client makes its own).
    caxton_telemetry::init_logging("caxton-memory", Some(&config.telemetry));
    let threads = config
        .memory
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet (the runtime starts below), so nothing reads the
        // environment concurrently. Candle sizes its pool once, from this variable.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", threads.to_string()) };
    }
    let database = config.memory_database();
    let embedder =
        embed::LazyEmbedder::new(config.embedding_model_dir(), config.memory.query_cache);
    if !embedder.installed() {
        tracing::warn!(dir = %embedder.dir().display(), "the embedding model is not installed: semantic search is off and new observations wait for it (run scripts/install-models.sh)");
    }
    let store = Arc::new(graph::Store::open(
        &database,
        config.memory.pool_size,
        embedder,
        graph::Limits {
            max_observation_bytes: config.memory.max_observation_bytes,
            max_result_bytes: config.memory.max_result_bytes,
        },
        threads,
    )?);
    caxton_memory::metrics::install();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let audit = caxton_ipc::audit::AuditWriter::open(
        &config.memory_audit_log_path(),
        config.toolhost.audit_rotation(),
    )?;
    let service = Arc::new(server::Service::new(
        store.clone(),
        config.memory.clone(),
        config.workers.service_idle_timeout,
        audit,
    ));
    rt.block_on(async move {
        // Observations stored while the model was missing get their vectors now.
        let s = store.clone();
        tokio::task::spawn_blocking(move || match s.backfill() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                observations = n,
                "embedded observations stored without a vector"
            ),
            Err(e) => tracing::warn!(error = %Chain(&e), "backfill of embeddings failed"),
        });
        if !config.memory.retention.is_empty() {
            tokio::spawn(server::retention(service.clone()));
        }
        server::serve(service, &socket).await
    })?;
    Ok(())
}
