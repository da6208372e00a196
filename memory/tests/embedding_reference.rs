//! The embedder against sentence-transformers' own output for the same model files
//! (tests/data/minilm_reference.json, computed once by tests/data/make_reference.py).
//! Needs the model installed (scripts/install-models.sh); CI installs it.

use std::path::PathBuf;

use caxton_config::ServerConfig;
use caxton_memory::embed::Embedder;

#[derive(serde::Deserialize)]
struct Reference {
    max_seq_length: usize,
    sentences: Vec<String>,
    vectors: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("reference file")).expect("json")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_match_sentence_transformers() {
    let dir = ServerConfig::default().embedding_model_dir();
    let embedder =
        Embedder::load(&dir).unwrap_or_else(|e| panic!("{}", caxton_ipc::error::Chain(&e)));
    let r = reference();
    assert_eq!(r.max_seq_length, caxton_memory::embed::MAX_TOKENS);
    let texts: Vec<&str> = r.sentences.iter().map(String::as_str).collect();
    // One batch (mixed lengths, so padding and masking matter) and one at a time.
    let batched = embedder.embed(&texts).expect("embed");
    let mut worst = 1.0f32;
    for (i, (got, want)) in batched.iter().zip(&r.vectors).enumerate() {
        assert_eq!(got.len(), 384);
        let c = cosine(got, want);
        worst = worst.min(c);
        assert!(
            c >= 0.99,
            "sentence {i} ({:?}): cosine {c}",
            &r.sentences[i]
        );
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        let alone = embedder.embed(&[texts[i]]).expect("embed one");
        assert!(
            cosine(&alone[0], got) > 0.9999,
            "sentence {i}: batch vs alone"
        );
    }
    eprintln!("worst cosine against sentence-transformers: {worst:.6}");
}
