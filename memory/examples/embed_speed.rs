//! Times single-query embeddings (for profiling): `cargo run --release -p caxton-memory --example embed_speed`.

fn main() -> anyhow::Result<()> {
    let dir = caxton_config::ServerConfig::default().embedding_model_dir();
    let e = caxton_memory::embed::Embedder::load(&dir)?;
    let mut times = Vec::new();
    for i in 0..300 {
        let text = format!("Who touched the payment gateway, case {i}?");
        let t = std::time::Instant::now();
        std::hint::black_box(e.embed(&[text.as_str()])?);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!("p50 {:.2} ms, p99 {:.2} ms", times[150], times[296]);
    Ok(())
}
