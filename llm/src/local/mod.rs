//! The `local` LLM provider: a GGUF chat model (SmolLM2-135M-Instruct by default, installed from
//! PyPI by `scripts/setup.sh`) run in-process with candle.
//!
//! - Lazy: [`LocalProvider::new`] only records paths (the toolhost idles at ~50 MiB; the model
//!   takes a few hundred). The first call loads it, once; later calls share it. A failed load is
//!   not remembered: every call retries it and reports the failure (a model installed later is
//!   picked up without a restart).
//! - One generation at a time: calls queue on an async mutex. The machine's cores are all busy
//!   with one generation already, so parallel ones would only slow each other, and one KV cache
//!   bounds memory. A call whose future is dropped while queued never runs.
//! - Generation runs on a blocking thread. Text is streamed back through a channel; the attempt's
//!   deadline and a cancel flag (set when the attempt's future is dropped) are checked before
//!   every token, so a cancelled run stops the model within one token.
//! - Q4/Q5 weights are re-quantized to Q8_0 once and cached (`requantize.rs`), because candle's
//!   Q8_0 kernels are ~3× faster.
//!
//! The model is far too small to decide on tool calls itself; forced and required calls are
//! prefilled and only their arguments generated (`engine.rs`).

mod calls;
pub mod engine;
mod requantize;
mod sampler;
mod stream;
mod template;
pub mod tokenizer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use caxton_config::{LOCAL_MODEL_FILE, LocalProviderConfig};
use tokio::sync::{Mutex, mpsc};

use self::engine::{Engine, Job, LoadOptions};
use super::{Attempt, AttemptError, Completion};

pub use self::engine::{LoadReport, Throughput, compute_threads};

pub struct LocalProvider {
    /// The model name reported (and the one requests may name).
    name: String,
    /// Other names a request may use for this model: the file's name, its stem, and the stem
    /// without the quantization suffix (`SmolLM2-135M-Instruct`).
    aliases: Vec<String>,
    slot: Arc<Mutex<Slot>>,
    calls: AtomicU64,
}

/// The model, once loaded, and how to load it.
struct Slot {
    options: LoadOptions,
    engine: Option<Engine>,
}

impl LocalProvider {
    /// Records where the model is; loads nothing.
    pub fn new(cfg: &LocalProviderConfig, models_dir: &Path, cache_dir: &Path) -> LocalProvider {
        let path = cfg
            .model_path
            .clone()
            .unwrap_or_else(|| models_dir.join(LOCAL_MODEL_FILE));
        if let Some(threads) = cfg.threads
            && threads != compute_threads()
        {
            tracing::warn!(
                configured = threads,
                effective = compute_threads(),
                "local provider: candle's pool has another size (CANDLE_NUM_THREADS in the \
                 toolhost's environment wins, and providers sharing the pool take the largest)"
            );
        }
        let stem = file_part(&path, Path::file_stem);
        let name = cfg.model.clone().unwrap_or_else(|| stem.to_lowercase());
        let base = stem.split('.').next().unwrap_or_default().to_string();
        let aliases = vec![base, stem, file_part(&path, Path::file_name)];
        LocalProvider {
            name,
            aliases,
            slot: Arc::new(Mutex::new(Slot {
                options: LoadOptions {
                    path,
                    cache_dir: cache_dir.to_path_buf(),
                    requantize_q8: cfg.requantize_q8,
                    context_tokens: cfg.context_tokens,
                },
                engine: None,
            })),
            calls: AtomicU64::new(0),
        }
    }

    pub fn model_name(&self) -> &str {
        &self.name
    }

    pub async fn complete(&self, a: &Attempt<'_>) -> Result<Completion, AttemptError> {
        self.check_model(a.model)?;
        let cancel = CancelOnDrop::default();
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let limits = engine::Limits {
            deadline: a.deadline,
            cancel: cancel.0.clone(),
        };
        let job = Job::new(a.req, limits, format!("call_{n}"));
        let mut slot = self.slot.clone().lock_owned().await;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let stream = a.req.stream;
        let task = tokio::task::spawn_blocking(move || {
            let send = |text: String| {
                if stream {
                    let _ = tx.send(text);
                }
            };
            slot.run(&job, &send)
        });
        while let Some(text) = rx.recv().await {
            a.progress.text(&text);
        }
        let out = task.await.map_err(|e| {
            AttemptError::Fatal(format!("the local model's generation thread failed: {e}"))
        })??;
        Ok(Completion {
            model: self.name.clone(),
            ..out
        })
    }

    /// This provider serves one model: a request naming another is refused rather than answered
    /// by a different model than it asked for.
    fn check_model(&self, model: &str) -> Result<(), AttemptError> {
        let matches = |n: &String| n.eq_ignore_ascii_case(model);
        if matches(&self.name) || self.aliases.iter().any(matches) {
            return Ok(());
        }
        Err(AttemptError::Fatal(format!(
            "the local provider serves only the model `{}`, not `{model}`",
            self.name
        )))
    }
}

impl Slot {
    /// Loads the model if needed, then runs the turn. Runs on a blocking thread.
    fn run(&mut self, job: &Job, stream: &dyn Fn(String)) -> Result<Completion, AttemptError> {
        // Cancelled or out of time while queued: do not load or run.
        job.limits.check()?;
        let engine = match self.engine.take() {
            Some(engine) => engine,
            None => Engine::load(&self.options).map_err(AttemptError::Fatal)?.0,
        };
        self.engine.insert(engine).run(job, stream)
    }
}

/// Sets the flag when dropped: the attempt's future is gone, so its generation should stop.
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn file_part(path: &Path, part: impl Fn(&Path) -> Option<&std::ffi::OsStr>) -> String {
    part(path).map_or_else(|| "local".into(), |s| s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests;
