//! The memory service: embedding speed, semantic search at 10K/100K/1M entities (with and without
//! the query embedding, recall@10 against an exact f32 scan, side by side with an exact f32 scan
//! and sqlite-vec's `vec0`), write throughput with embeddings, bytes per entity, and the resident
//! memory of the real `caxton-memory` process.
//!
//! `cargo build --release --workspace --bins && cargo run --release -p caxton-benches memory`
//! (`CAXTON_BENCH_MEMORY_SIZES=10000,100000` to skip the 1M store.)
//!
//! Vectors at scale: 4,000 real sentences are embedded, and each stored vector mixes two of them
//! plus noise (normalised), so the space has the structure of real embeddings without embedding
//! a million sentences (~40 minutes here). Queries are real embeddings of separate questions.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use caxton_config::ServerConfig;
use caxton_ipc::memory::{EMBEDDING_DIMS, MemoryRequest, MemoryResponse, SearchMode, SearchQuery};
use caxton_memory::embed::{Embedder, LazyEmbedder};
use caxton_memory::graph::{Limits, NewEntity, Store};
use caxton_tests::{Daemon, Options};

use crate::rss_kib;

const BASE_SENTENCES: usize = 4000;
const QUERIES: usize = 200;
const K: usize = 10;
/// Candidates the int8 scan passes to exact re-ranking (what the service uses for a page of 10).
const DEPTH: usize = 64;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
    /// Roughly normal (sum of uniforms), mean 0, sd 1.
    fn normal(&mut self) -> f32 {
        (0..4)
            .map(|_| (self.next() % 10_000) as f32 / 10_000.0)
            .sum::<f32>()
            * 1.732
            - 3.464
    }
}

const NAMES: &[&str] = &[
    "Alice",
    "Bob",
    "Carol",
    "Dmitri",
    "Eve",
    "Farah",
    "Gustavo",
    "Hiro",
    "Ines",
    "Jamal",
    "Kofi",
    "Lena",
    "Mateo",
    "Nadia",
    "Omar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Viktor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoe",
    "the platform team",
    "the billing service",
    "our CI runner",
    "the staging cluster",
    "the data warehouse",
    "the mobile app",
    "the on-call engineer",
];
const VERBS: &[&str] = &[
    "deployed",
    "reviewed",
    "broke",
    "fixed",
    "migrated",
    "benchmarked",
    "documented",
    "rewrote",
    "paused",
    "audited",
    "scaled",
    "refactored",
    "monitored",
    "rolled back",
    "upgraded",
    "tested",
    "approved",
    "rejected",
    "profiled",
    "archived",
];
const OBJECTS: &[&str] = &[
    "the payment gateway",
    "the login page",
    "the nightly backup",
    "the search index",
    "the invoice generator",
    "the recommendation model",
    "the Kubernetes ingress",
    "the Postgres replica",
    "the feature flag service",
    "the email templates",
    "the GPU nodes",
    "the quarterly report",
    "the marketing site",
    "the customer export",
    "the fraud rules",
    "the rate limiter",
    "the audit log",
    "the onboarding flow",
    "the message queue",
    "the TLS certificates",
    "the cache layer",
    "the mobile release",
    "the analytics pipeline",
];
const WHEN: &[&str] = &[
    "on Monday",
    "after the outage",
    "before the holidays",
    "during the incident review",
    "last sprint",
    "at 3am",
    "for the Q3 launch",
    "while the team was offsite",
    "because latency doubled",
    "after a customer complaint",
    "to cut cloud costs",
    "ahead of the audit",
    "with no downtime",
    "twice this month",
    "without telling anyone",
];
const QUESTIONS: &[&str] = &[
    "Who touched",
    "What happened to",
    "Why did someone change",
    "When was work done on",
    "Which person handled",
    "Is anyone responsible for",
];

fn sentence(r: &mut Rng) -> String {
    format!(
        "{} {} {} {}.",
        r.pick(NAMES),
        r.pick(VERBS),
        r.pick(OBJECTS),
        r.pick(WHEN)
    )
}

fn question(r: &mut Rng) -> String {
    format!(
        "{} {} {}?",
        r.pick(QUESTIONS),
        r.pick(OBJECTS),
        r.pick(WHEN)
    )
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A store on the database `db` with the bench's embedding model and limits, searching with
/// `threads` threads.
fn open_store(db: &Path, model_dir: &Path, threads: usize) -> anyhow::Result<Store> {
    let limits = Limits {
        max_observation_bytes: 4096,
        max_result_bytes: 256 * 1024,
    };
    let embedder = LazyEmbedder::new(model_dir.to_owned(), 1024);
    Ok(Store::open(db, 4, embedder, limits, threads)?)
}

/// Writes the header row of a Markdown table, and the line under it.
fn table_head(out: &mut String, columns: &[&str]) -> std::fmt::Result {
    writeln!(out, "| {} |", columns.join(" | "))?;
    writeln!(out, "|{}", "---|".repeat(columns.len()))
}

fn pct(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

fn exact_top(vectors: &[Vec<f32>], q: &[f32], k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (dot(v, q), i))
        .collect();
    scored.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
    scored.truncate(k);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// sqlite-vec's `vec0` over the same vectors, in a file next to the store.
struct Vec0 {
    conn: rusqlite::Connection,
}

impl Vec0 {
    fn build(path: &Path, vectors: &[Vec<f32>]) -> anyhow::Result<Vec0> {
        // SAFETY: registers sqlite-vec's init function (the documented way with rusqlite) before
        // the connection opens; the function has the signature SQLite expects of an extension.
        unsafe {
            rusqlite::ffi::sqlite3_auto_extension(Some(std::mem::transmute::<
                *const (),
                unsafe extern "C" fn(
                    *mut rusqlite::ffi::sqlite3,
                    *mut *mut std::os::raw::c_char,
                    *const rusqlite::ffi::sqlite3_api_routines,
                ) -> std::os::raw::c_int,
            >(
                sqlite_vec::sqlite3_vec_init as *const (),
            )));
        }
        let mut conn = rusqlite::Connection::open(path)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; CREATE VIRTUAL TABLE v USING vec0(embedding float[{EMBEDDING_DIMS}]);"
        ))?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare("INSERT INTO v (rowid, embedding) VALUES (?1, ?2)")?;
            for (i, v) in vectors.iter().enumerate() {
                let blob: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                stmt.execute(rusqlite::params![i as i64, blob])?;
            }
        }
        tx.commit()?;
        Ok(Vec0 { conn })
    }

    fn knn(&self, q: &[f32], k: usize) -> anyhow::Result<Vec<usize>> {
        let blob: Vec<u8> = q.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid FROM v WHERE embedding MATCH ?1 AND k = ?2 ORDER BY distance",
        )?;
        let rows = stmt
            .query_map(rusqlite::params![blob, k as i64], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().map(|i| i as usize).collect())
    }
}

pub fn report() -> anyhow::Result<String> {
    let mut out = String::new();
    let model_dir = ServerConfig::default().embedding_model_dir();
    let embedder = Embedder::load(&model_dir)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // Embedding speed.
    let base_texts: Vec<String> = (0..BASE_SENTENCES).map(|_| sentence(&mut rng)).collect();
    let refs: Vec<&str> = base_texts.iter().map(String::as_str).collect();
    let t = Instant::now();
    let base = embedder.embed(&refs)?;
    let batched_rate = BASE_SENTENCES as f64 / t.elapsed().as_secs_f64();
    let query_texts: Vec<String> = (0..QUERIES).map(|_| question(&mut rng)).collect();
    let mut query_times = Vec::new();
    let mut queries = Vec::new();
    for q in &query_texts {
        let t = Instant::now();
        queries.push(embedder.embed(&[q.as_str()])?.remove(0));
        query_times.push(t.elapsed());
    }
    let (q50, q99) = pct(query_times);
    let avg_words = base_texts
        .iter()
        .map(|s| s.split_whitespace().count())
        .sum::<usize>() as f64
        / BASE_SENTENCES as f64;
    writeln!(
        out,
        "### Embedding (All-MiniLM-L6-v2, candle, {} threads)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )?;
    table_head(&mut out, &["what", "result", "reference"])?;
    writeln!(
        out,
        "| batched, {BASE_SENTENCES} sentences of {avg_words:.1} words | **{batched_rate:.0} sentences/s** | ~750/s (sentence-transformers' CPU figure) |"
    )?;
    writeln!(
        out,
        "| one short query (cache miss), p50 / p99 | {q50:.1} / {q99:.1} ms | ~18 ms measured before this work |"
    )?;

    // Search at scale.
    let sizes: Vec<usize> = std::env::var("CAXTON_BENCH_MEMORY_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    writeln!(
        out,
        "\n### Semantic search, top-{K} (ms; {QUERIES} queries each, fewer for vec0 at 1M)\n"
    )?;
    table_head(
        &mut out,
        &[
            "entities",
            "search p50 / p99",
            "with query embedding p50 / p99",
            &format!("recall@{K} vs exact"),
            "exact f32 scan p50",
            "sqlite-vec `vec0` p50",
            "vec0 / ours",
            "bytes per entity",
        ],
    )?;
    let dir = tempfile::tempdir_in("/tmp")?;
    let mut service_db = None;
    for &n in &sizes {
        let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(n);
        let mut items = Vec::with_capacity(n.min(50_000));
        let db = dir.path().join(format!("memory-{n}.db"));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let store = open_store(&db, &model_dir, threads)?;
        let load_started = Instant::now();
        for i in 0..n {
            let a = (rng.next() % BASE_SENTENCES as u64) as usize;
            let b = (rng.next() % BASE_SENTENCES as u64) as usize;
            let mut v: Vec<f32> = (0..EMBEDDING_DIMS)
                .map(|d| base[a][d] + 0.6 * base[b][d] + 0.02 * rng.normal())
                .collect();
            normalize(&mut v);
            items.push((
                format!("entity-{i}"),
                "fact".to_string(),
                base_texts[a].clone(),
                v.clone(),
            ));
            vectors.push(v);
            if items.len() == 50_000 || i + 1 == n {
                store.load_with_vectors("global", &items)?;
                items.clear();
            }
        }
        let load_s = load_started.elapsed().as_secs_f64();
        let scopes = vec!["global".to_string()];
        let mut search_times = Vec::new();
        let mut with_embed = Vec::new();
        let mut recall_sum = 0.0;
        for (qi, q) in queries.iter().enumerate() {
            let t = Instant::now();
            let hits = store.semantic_vector(q, &scopes, &[], 0.0, DEPTH)?;
            search_times.push(t.elapsed());
            let got: Vec<i64> = hits.iter().take(K).map(|h| h.0).collect();
            // Entity ids are 1-based in load order.
            let want = exact_top(&vectors, q, K);
            recall_sum += want
                .iter()
                .filter(|&&i| got.contains(&(i as i64 + 1)))
                .count() as f64
                / K as f64;
            // With the embedding of a text not seen before.
            let text = format!("{} (variant {qi})", query_texts[qi]);
            let t = Instant::now();
            let qv = embedder.embed(&[text.as_str()])?.remove(0);
            store.semantic_vector(&qv, &scopes, &[], 0.0, DEPTH)?;
            with_embed.push(t.elapsed());
        }
        let (s50, s99) = pct(search_times);
        let (e50, e99) = pct(with_embed);
        let recall = recall_sum / QUERIES as f64;
        let exact: Vec<Duration> = queries
            .iter()
            .take(if n >= 1_000_000 { 20 } else { 50 })
            .map(|q| {
                let t = Instant::now();
                std::hint::black_box(exact_top(&vectors, q, K));
                t.elapsed()
            })
            .collect();
        let (x50, _) = pct(exact);
        // Storage, after a checkpoint, counted with the WAL.
        drop(store);
        {
            let c = rusqlite::Connection::open(&db)?;
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        }
        let bytes = std::fs::metadata(&db)?.len()
            + std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
        let per_entity = bytes as f64 / n as f64;
        let vec0 = Vec0::build(&dir.path().join(format!("vec0-{n}.db")), &vectors)?;
        let vq = if n >= 1_000_000 { 10 } else { 50 };
        let mut vec0_times = Vec::new();
        let mut vec0_recall = 0.0;
        for q in queries.iter().take(vq) {
            let t = Instant::now();
            let got = vec0.knn(q, K)?;
            vec0_times.push(t.elapsed());
            let want = exact_top(&vectors, q, K);
            vec0_recall += want.iter().filter(|i| got.contains(i)).count() as f64 / K as f64;
        }
        let (v50, _) = pct(vec0_times);
        writeln!(
            out,
            "| {n} | **{s50:.2}** / {s99:.2} | **{e50:.1}** / {e99:.1} | {recall:.4} | {x50:.1} | {v50:.1} (recall {:.2}) | **{:.1}×** | {per_entity:.0} |",
            vec0_recall / vq as f64,
            v50 / s50
        )?;
        eprintln!("memory bench: {n} entities loaded in {load_s:.1}s");
        drop(vec0);
        if n == 100_000 || (service_db.is_none() && n == *sizes.last().unwrap_or(&0)) {
            service_db = Some(db.clone());
        } else {
            let _ = std::fs::remove_file(&db);
        }
        let _ = std::fs::remove_file(dir.path().join(format!("vec0-{n}.db")));
    }

    // Writes with embeddings.
    let wdb = dir.path().join("writes.db");
    let store = open_store(&wdb, &model_dir, 2)?;
    let batch = |from: usize, n: usize, rng: &mut Rng| -> Vec<NewEntity> {
        (from..from + n)
            .map(|i| NewEntity {
                name: format!("w-{i}"),
                entity_type: "fact".into(),
                observations: vec![sentence(rng)],
            })
            .collect()
    };
    let t = Instant::now();
    let mut written = 0;
    while written < 2000 {
        let b = batch(written, 100, &mut rng);
        store.create_entities("global", &b)?;
        written += 100;
    }
    let batched_writes = written as f64 / t.elapsed().as_secs_f64();
    let mut single = Vec::new();
    for i in 0..100 {
        let b = batch(10_000 + i, 1, &mut rng);
        let t = Instant::now();
        store.create_entities("global", &b)?;
        single.push(t.elapsed());
    }
    let (w50, w99) = pct(single);
    drop(store);
    writeln!(out, "\n### Writes with embeddings\n")?;
    table_head(&mut out, &["what", "result"])?;
    writeln!(
        out,
        "| batched (100 entities, one observation each, per request) | **{batched_writes:.0} entities/s** |"
    )?;
    writeln!(
        out,
        "| one entity per request (embedding + transaction + fsync), p50 / p99 | {w50:.1} / {w99:.1} ms |"
    )?;

    // The real service process.
    writeln!(out, "\n### The `caxton-memory` process (RSS, MiB)\n")?;
    table_head(
        &mut out,
        &[
            "database",
            "after start (index loaded, model not yet)",
            "after a semantic search (model loaded)",
            "search through `api.sock` p50 (with embedding)",
            "target",
        ],
    )?;
    let mut dbs = vec![("empty".to_string(), None)];
    if let Some(db) = &service_db {
        let n = db
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_prefix("memory-"))
            .unwrap_or("?")
            .to_string();
        dbs.push((format!("{n} entities"), Some(db.clone())));
    }
    for (label, db) in dbs {
        let extra = match &db {
            Some(p) => format!("[memory]\ndatabase = \"{}\"\n", p.display()),
            None => String::new(),
        };
        let d = Daemon::start(Options {
            agents: vec![],
            rules: None,
            faults: false,
            extra_config: extra,
            env: vec![],
            local_model: false,
            private_module_cache: true,
            socket_activated: false,
            bin_dir: None,
        })?;
        let pid = match d.status()?.memory {
            Some(caxton_ipc::api::ServiceState::Running { pid, .. }) => pid,
            other => anyhow::bail!("memory service not running: {other:?}"),
        };
        let idle = rss_kib(pid);
        let mut times = Vec::new();
        for (i, q) in query_texts.iter().take(50).enumerate() {
            let req = MemoryRequest::Search(SearchQuery {
                query: format!("{q} #{i}"),
                mode: SearchMode::Semantic,
                scopes: vec!["global".into()],
                entity_types: vec![],
                limit: K as u32,
                offset: 0,
                min_similarity: 0.0,
                with_observations: false,
            });
            let t = Instant::now();
            match d.memory(req)? {
                Ok(MemoryResponse::Search(_)) => {}
                other => anyhow::bail!("search failed: {other:?}"),
            }
            times.push(t.elapsed());
        }
        let loaded = rss_kib(pid);
        let (p50, _) = pct(times.split_off(1)); // the first one loads the model
        writeln!(
            out,
            "| {label} | {:.1} | **{:.1}** | {p50:.1} ms | ≤ 150 |",
            idle as f64 / 1024.0,
            loaded as f64 / 1024.0
        )?;
    }
    Ok(out)
}
