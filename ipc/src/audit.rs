//! The tool-call audit log: one JSON record per line, each carrying the SHA-256 of the previous
//! record, so an edited, inserted or deleted record breaks the chain. The toolhost appends
//! ([`AuditWriter`]); `caxton audit verify` checks ([`verify`]).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest `detail` kept in a record.
pub const MAX_DETAIL: usize = 512;
/// How far back from the end [`AuditWriter::open`] looks for the last record.
const TAIL_SCAN: u64 = 64 * 1024;

/// One tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub run_id: String,
    pub agent: String,
    pub tool: String,
    /// The tool package (WASM module) that served the call; empty if none did.
    #[serde(default)]
    pub server: String,
    /// SHA-256 of the call's arguments (JSON text as received), hex.
    pub args_sha256: String,
    /// `ok`, `tool_error` (the tool reported an error) or `failed` (the call did not complete).
    pub outcome: String,
    /// The error, for anything but `ok` (truncated to [`MAX_DETAIL`]).
    pub detail: String,
    pub duration_us: u64,
    /// Linear memory of the guest instance that served the call (its high-water mark), in bytes;
    /// 0 if no instance did.
    #[serde(default)]
    pub memory_peak_bytes: u64,
    /// `hash` of the previous record ([`GENESIS`] for the first).
    pub prev: String,
    /// SHA-256 of this record serialised with `hash` empty, hex.
    pub hash: String,
}

/// The fields of a record that the caller provides.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub run_id: &'a str,
    pub agent: &'a str,
    pub tool: &'a str,
    pub server: &'a str,
    pub arguments: &'a str,
    pub outcome: &'a str,
    pub detail: &'a str,
    pub duration_us: u64,
    pub memory_peak_bytes: u64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

impl AuditRecord {
    fn compute_hash(&self) -> String {
        let unsealed = AuditRecord {
            hash: String::new(),
            ..self.clone()
        };
        // Serialising a struct of strings and integers cannot fail.
        sha256_hex(&serde_json::to_vec(&unsealed).unwrap_or_default())
    }
}

/// Appends records to an audit log, continuing the chain of an existing file.
#[derive(Debug)]
pub struct AuditWriter {
    file: File,
    path: PathBuf,
    seq: u64,
    last_hash: String,
}

impl AuditWriter {
    /// Opens (or creates, mode 0600 in a 0700 directory) the log at `path`.
    pub fn open(path: &Path) -> io::Result<AuditWriter> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        drop_torn_tail(&mut file)?;
        let (seq, last_hash) = match last_record(&mut file)? {
            Some(r) => (r.seq, r.hash),
            None => (0, GENESIS.to_string()),
        };
        Ok(AuditWriter {
            file,
            path: path.to_owned(),
            seq,
            last_hash,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (one `write` of one line).
    pub fn append(&mut self, entry: &AuditEntry<'_>, time_ms: u64) -> io::Result<()> {
        let mut detail = entry.detail.to_string();
        if detail.len() > MAX_DETAIL {
            let cut = detail.floor_char_boundary(MAX_DETAIL);
            detail.truncate(cut);
        }
        let mut record = AuditRecord {
            seq: self.seq + 1,
            time_ms,
            run_id: entry.run_id.into(),
            agent: entry.agent.into(),
            tool: entry.tool.into(),
            server: entry.server.into(),
            args_sha256: sha256_hex(entry.arguments.as_bytes()),
            outcome: entry.outcome.into(),
            detail,
            duration_us: entry.duration_us,
            memory_peak_bytes: entry.memory_peak_bytes,
            prev: self.last_hash.clone(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        let mut line = serde_json::to_vec(&record).map_err(io::Error::other)?;
        line.push(b'\n');
        let before = self.file.metadata()?.len();
        if let Err(e) = self.file.write_all(&line) {
            // Never leave a torn record behind: the next one would not chain.
            let _ = self.file.set_len(before);
            return Err(e);
        }
        self.seq = record.seq;
        self.last_hash = record.hash;
        Ok(())
    }
}

/// Cuts an unfinished last line (a write torn by a crash) so new records chain after the last
/// complete one; `verify` still checks everything before it.
fn drop_torn_tail(file: &mut File) -> io::Result<()> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(());
    }
    let start = len.saturating_sub(TAIL_SCAN);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(());
    }
    let keep = match tail.iter().rposition(|b| *b == b'\n') {
        Some(i) => start + i as u64 + 1,
        None if start == 0 => 0,
        None => return Ok(()), // one line longer than the scan window: leave it for `verify` to report
    };
    file.set_len(keep)
}

/// The last complete, parseable record of the file, if any.
fn last_record(file: &mut File) -> io::Result<Option<AuditRecord>> {
    let len = file.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(TAIL_SCAN);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(tail
        .split(|b| *b == b'\n')
        .rev()
        .filter(|l| !l.is_empty())
        .find_map(|l| serde_json::from_slice::<AuditRecord>(l).ok()))
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    /// Hash of the last record (publish it elsewhere to detect truncation of the end).
    pub head: String,
}

/// Where and why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct VerifyError {
    pub line: u64,
    pub message: String,
}

/// Checks every record's hash and its link to the previous one.
pub fn verify(reader: impl BufRead) -> Result<Verified, VerifyError> {
    let mut prev: Option<AuditRecord> = None;
    let mut records = 0;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let err = |message: String| VerifyError {
            line: line_no,
            message,
        };
        let line = line.map_err(|e| err(format!("cannot read: {e}")))?;
        if line.is_empty() {
            continue;
        }
        let record: AuditRecord = serde_json::from_slice(&line)
            .map_err(|e| err(format!("not an audit record ({e}); edited or torn write")))?;
        if record.compute_hash() != record.hash {
            return Err(err(format!(
                "record {} was modified: its hash does not match its contents",
                record.seq
            )));
        }
        match &prev {
            None if record.seq == 1 && record.prev != GENESIS => {
                return Err(err("the first record does not start the chain".into()));
            }
            Some(p) if record.prev != p.hash => {
                return Err(err(format!(
                    "record {} does not follow record {}: a record was deleted, inserted or reordered here",
                    record.seq, p.seq
                )));
            }
            Some(p) if record.seq != p.seq + 1 => {
                return Err(err(format!(
                    "record {} follows record {}: sequence gap",
                    record.seq, p.seq
                )));
            }
            _ => {}
        }
        records += 1;
        prev = Some(record);
    }
    Ok(Verified {
        records,
        head: prev.map_or_else(|| GENESIS.to_string(), |p| p.hash),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tool: &str) -> AuditEntry<'_> {
        AuditEntry {
            run_id: "r",
            agent: "a",
            tool,
            server: "calc",
            arguments: "{}",
            outcome: "ok",
            detail: "",
            duration_us: 5,
            memory_peak_bytes: 1 << 20,
        }
    }

    fn write_log(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/tool-calls.log");
        let mut w = AuditWriter::open(&path).unwrap();
        for i in 0..n {
            w.append(&entry(&format!("t{i}")), 1000 + i as u64).unwrap();
        }
        (dir, path)
    }

    fn check(path: &Path) -> Result<Verified, VerifyError> {
        verify(io::BufReader::new(File::open(path).unwrap()))
    }

    #[test]
    fn a_clean_log_verifies_and_reopening_continues_the_chain() {
        let (_d, path) = write_log(3);
        let mut w = AuditWriter::open(&path).unwrap();
        w.append(&entry("more"), 2000).unwrap();
        let v = check(&path).unwrap();
        assert_eq!(v.records, 4);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_chain_goes_on() {
        let (_d, path) = write_log(2);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"time_").unwrap();
        drop(f);
        let mut w = AuditWriter::open(&path).unwrap();
        w.append(&entry("after-crash"), 3000).unwrap();
        assert_eq!(check(&path).unwrap().records, 3);
    }

    #[test]
    fn an_edited_record_is_detected() {
        let (_d, path) = write_log(4);
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "\"tool\":\"t2\"",
            "\"tool\":\"tX\"",
            1,
        );
        std::fs::write(&path, text).unwrap();
        let e = check(&path).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("modified"), "{e}");
    }

    #[test]
    fn a_deleted_record_is_detected() {
        let (_d, path) = write_log(4);
        let lines: Vec<_> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3])).unwrap();
        let e = check(&path).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("deleted"), "{e}");
    }

    #[test]
    fn a_rehashed_forgery_still_breaks_the_chain() {
        let (_d, path) = write_log(3);
        let mut lines: Vec<AuditRecord> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines[1].outcome = "tool_error".into();
        lines[1].hash = lines[1].compute_hash();
        let text: String = lines
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(check(&path).unwrap_err().line, 3);
    }
}
