//! Q4/Q5 → Q8_0 re-quantization, done once and cached as a GGUF file.
//!
//! candle has no fast kernels for the legacy 4/5-bit formats (Q4_1 runs ~3× slower than Q8_0 on
//! this machine's AVX2), so the weights of such a model are dequantized and re-quantized to Q8_0:
//! no accuracy is lost beyond the original quantization, at about twice the weight memory. The
//! result goes to `cache_dir/<stem>.q8_0.gguf`, written to a temporary file and renamed into place
//! (a crash never leaves a torn cache). The source's size and modification time are stored in the
//! copy's metadata, so a replaced source file is converted again.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};

/// Metadata keys identifying the source of a cached copy.
const SOURCE_SIZE_KEY: &str = "caxton.requantized.source_size";
const SOURCE_MTIME_KEY: &str = "caxton.requantized.source_mtime_ns";
/// Bumped when the conversion changes, so older caches are redone.
const FORMAT_KEY: &str = "caxton.requantized.format";
const FORMAT: u32 = 1;
/// `general.file_type` of a "mostly Q8_0" model (llama.cpp's `LLAMA_FTYPE_MOSTLY_Q8_0`).
const FILE_TYPE_MOSTLY_Q8_0: u32 = 7;

/// Formats worth converting: the legacy block formats candle runs slowly.
fn is_slow(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
    )
}

/// Whether any tensor of the model is in a slow format.
pub fn worthwhile(content: &Content) -> bool {
    content.tensor_infos.values().any(|t| is_slow(t.ggml_dtype))
}

/// Where the Q8_0 copy of `source` is cached.
pub fn cache_path(source: &Path, cache_dir: &Path) -> PathBuf {
    let stem = source
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    cache_dir.join(format!("{stem}.q8_0.gguf"))
}

/// The Q8_0 copy of `source` and whether it was converted just now (else it was cached).
pub fn q8_copy<R: Read + Seek>(
    source: &Path,
    content: &Content,
    reader: &mut R,
    cache_dir: &Path,
) -> Result<(PathBuf, bool), String> {
    let key = source_key(source)?;
    let target = cache_path(source, cache_dir);
    if cached_key(&target).as_ref() == Some(&key) {
        return Ok((target, false));
    }
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| format!("cannot create {}: {e}", cache_dir.display()))?;
    let tmp = target.with_extension(format!("gguf.tmp-{}", std::process::id()));
    let written = write_converted(content, reader, &key, &tmp);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot rename {} into place: {e}", tmp.display())
    })?;
    Ok((target, true))
}

/// (size, modification time in ns) of the source file, plus the format version.
type SourceKey = (u64, u64, u32);

fn source_key(source: &Path) -> Result<SourceKey, String> {
    let md = std::fs::metadata(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    Ok((md.len(), mtime, FORMAT))
}

/// The source key recorded in a cached copy; none when it is absent or unreadable.
fn cached_key(path: &Path) -> Option<SourceKey> {
    let mut reader = BufReader::new(File::open(path).ok()?);
    let content = Content::read(&mut reader).ok()?;
    let get = |k: &str| content.metadata.get(k);
    Some((
        get(SOURCE_SIZE_KEY)?.to_u64().ok()?,
        get(SOURCE_MTIME_KEY)?.to_u64().ok()?,
        get(FORMAT_KEY)?.to_u32().ok()?,
    ))
}

/// Writes the converted model to `out` and syncs it.
fn write_converted<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
    key: &SourceKey,
    out: &Path,
) -> Result<(), String> {
    let tensors = convert_tensors(content, reader)?;
    let metadata = converted_metadata(content, key);
    let md_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", out.display());
    let file = File::create(out).map_err(|e| fail(&e))?;
    let mut w = BufWriter::new(file);
    gguf_file::write(&mut w, &md_refs, &tensor_refs).map_err(|e| fail(&e))?;
    let file = w.into_inner().map_err(|e| fail(&e))?;
    file.sync_all().map_err(|e| fail(&e))
}

/// Every tensor in file order, the slow ones re-quantized to Q8_0, the others as they are.
fn convert_tensors<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
) -> Result<Vec<(String, QTensor)>, String> {
    let mut infos: Vec<_> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    let cpu = Device::Cpu;
    infos
        .into_iter()
        .map(|(name, info)| {
            let fail = |e: candle_core::Error| format!("tensor {name}: {e}");
            let t = info
                .read(reader, content.tensor_data_offset, &cpu)
                .map_err(fail)?;
            if !is_slow(info.ggml_dtype) {
                return Ok((name.clone(), t));
            }
            let q8 = t
                .dequantize(&cpu)
                .and_then(|f| QTensor::quantize(&f, GgmlDType::Q8_0))
                .map_err(fail)?;
            Ok((name.clone(), q8))
        })
        .collect()
}

/// The source's metadata, sorted, with the file type updated and the source key added. An
/// alignment key is dropped: candle's writer always aligns to 32 bytes, the readers' default.
fn converted_metadata(content: &Content, key: &SourceKey) -> Vec<(String, Value)> {
    let mut md: Vec<(String, Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("caxton.requantized.") && *k != "general.alignment")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in &mut md {
        if k == "general.file_type" {
            *v = Value::U32(FILE_TYPE_MOSTLY_Q8_0);
        }
    }
    md.push((SOURCE_SIZE_KEY.into(), Value::U64(key.0)));
    md.push((SOURCE_MTIME_KEY.into(), Value::U64(key.1)));
    md.push((FORMAT_KEY.into(), Value::U32(key.2)));
    md.sort_by(|a, b| a.0.cmp(&b.0));
    md
}

/// Writes a small GGUF with one Q4_1 and one F32 tensor (tests).
#[cfg(test)]
pub(crate) fn write_test_gguf(path: &Path) {
    use candle_core::Tensor;
    use std::io::Write;
    let cpu = Device::Cpu;
    let w: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
    let w = Tensor::from_vec(w, (2, 32), &cpu).unwrap();
    let q41 = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
    let norm = QTensor::quantize(
        &Tensor::ones(32, candle_core::DType::F32, &cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let arch = Value::String("llama".into());
    let ft = Value::U32(3);
    let mut f = File::create(path).unwrap();
    gguf_file::write(
        &mut f,
        &[("general.architecture", &arch), ("general.file_type", &ft)],
        &[
            ("blk.0.attn_q.weight", &q41),
            ("blk.0.attn_norm.weight", &norm),
        ],
    )
    .unwrap();
    f.flush().unwrap();
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn read(path: &Path) -> (Content, BufReader<File>) {
        let mut r = BufReader::new(File::open(path).unwrap());
        (Content::read(&mut r).unwrap(), r)
    }

    #[test]
    fn converts_once_and_redoes_when_the_source_changes() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("tiny.Q4_1.gguf");
        write_test_gguf(&source);
        let cache = dir.path().join("cache");
        let (content, mut r) = read(&source);
        assert!(worthwhile(&content));

        let (copy, converted) = q8_copy(&source, &content, &mut r, &cache).unwrap();
        assert!(converted);
        assert_eq!(copy, cache.join("tiny.Q4_1.q8_0.gguf"));
        let (q8, mut q8r) = read(&copy);
        assert!(!worthwhile(&q8));
        let infos = &q8.tensor_infos;
        assert_eq!(infos["blk.0.attn_q.weight"].ggml_dtype, GgmlDType::Q8_0);
        assert_eq!(infos["blk.0.attn_norm.weight"].ggml_dtype, GgmlDType::F32);
        assert_eq!(q8.metadata["general.file_type"].to_u32().unwrap(), 7);
        // Same values as the source's dequantized weights, to Q8_0 precision.
        let a = content
            .tensor(&mut r, "blk.0.attn_q.weight", &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let b = q8
            .tensor(&mut q8r, "blk.0.attn_q.weight", &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let diff: f32 = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 0.02, "{diff}");

        // Cached: not converted again.
        let (_, converted) = q8_copy(&source, &content, &mut r, &cache).unwrap();
        assert!(!converted);
        // A changed source (another size) is converted again; no temp file is left behind.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&source)
            .unwrap()
            .write_all(&[0; 32])
            .unwrap();
        let (_, converted) = q8_copy(&source, &content, &mut r, &cache).unwrap();
        assert!(converted);
        let names: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("tiny.Q4_1.q8_0.gguf")]);
    }
}
