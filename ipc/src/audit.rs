//! The tool-call audit log: one JSON record per line, each carrying the SHA-256 of the previous
//! record, so an edited, inserted or deleted record breaks the chain. The log is rotated by size
//! (`NAME` → `NAME.1` → `NAME.2` …, the highest number the oldest) and the chain runs on across
//! the files. The toolhost appends ([`AuditWriter`]); `caxton audit verify` checks one file
//! ([`verify`]) or the whole set, oldest file first ([`verify_set`]).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
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
    /// `ok`, `tool_error` (the tool reported an error), `failed` (the call did not complete) or
    /// `refused` (not granted to the run, or over its allowance: no tool saw it).
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

/// Default size at which an audit log is rotated (`[toolhost] audit_max_bytes`).
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of rotated audit files kept (`[toolhost] audit_keep`; 0 keeps all).
pub const DEFAULT_AUDIT_KEEP: u32 = 8;

/// When the current file is rotated, and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// An append that would take a non-empty current file past this size rotates it first. A
    /// record is never split, so a file holds at least one record whatever this is.
    pub max_bytes: u64,
    /// Rotated files kept (`NAME.1` … `NAME.<keep>`); at a rotation, older ones are deleted, each
    /// with a log line. 0 keeps them all.
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: DEFAULT_AUDIT_MAX_BYTES,
            keep: DEFAULT_AUDIT_KEEP,
        }
    }
}

/// What went wrong with the files of an audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create the audit directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the audit log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the audit log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the audit log {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list the audit directory {path}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot rotate the audit log: renaming {from} to {to} failed")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot delete the rotated audit log {path}")]
    Delete {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Appends records to an audit log, continuing the chain of the existing files and rotating the
/// current file by size.
#[derive(Debug)]
pub struct AuditWriter {
    /// The current file; `None` after a failed rotation, so the next append reopens from what
    /// is on disk.
    file: Option<File>,
    path: PathBuf,
    rotation: Rotation,
    /// Size of the current file (only this writer appends to it).
    len: u64,
    seq: u64,
    last_hash: String,
}

impl AuditWriter {
    /// Opens (or creates, mode 0600 in a 0700 directory) the log at `path`. The chain continues
    /// from the last record of the current file or, when that is empty (a crash between a
    /// rotation's rename and the next record), of the newest rotated file.
    pub fn open(path: &Path, rotation: Rotation) -> Result<AuditWriter, AuditError> {
        let mut writer = AuditWriter {
            file: None,
            path: path.to_owned(),
            rotation,
            len: 0,
            seq: 0,
            last_hash: GENESIS.to_string(),
        };
        writer.reopen()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reopen(&mut self) -> Result<(), AuditError> {
        let path = &self.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::service::create_private_dir(dir).map_err(|source| AuditError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })?;
        let len = drop_torn_tail(&mut file).map_err(|source| AuditError::Write {
            path: path.clone(),
            source,
        })?;
        let last = if len == 0 {
            last_rotated_record(path)?
        } else {
            last_record(&mut file).map_err(|source| AuditError::Read {
                path: path.clone(),
                source,
            })?
        };
        (self.seq, self.last_hash) = match last {
            Some(r) => (r.seq, r.hash),
            None => (0, GENESIS.to_string()),
        };
        self.file = Some(file);
        self.len = len;
        Ok(())
    }

    /// Appends one record (one `write` of one line), rotating the current file first if the
    /// record would take it past [`Rotation::max_bytes`].
    pub fn append(&mut self, entry: &AuditEntry<'_>, time_ms: u64) -> Result<(), AuditError> {
        if self.file.is_none() {
            self.reopen()?;
        }
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
        let mut line =
            serde_json::to_vec(&record).map_err(|e| self.write_error(io::Error::other(e)))?;
        line.push(b'\n');
        if self.len > 0
            && self.len.saturating_add(line.len() as u64) > self.rotation.max_bytes
            && let Err(e) = self.rotate()
        {
            // Whatever step failed, the files on disk still form one chain; start again from
            // them at the next append.
            self.file = None;
            return Err(e);
        }
        let Some(file) = self.file.as_mut() else {
            // `reopen` or `rotate` above left a file, or returned.
            return Err(self.write_error(io::Error::other("no current audit file")));
        };
        if let Err(e) = file.write_all(&line) {
            // Never leave a torn record behind: the next one would not chain.
            let _ = file.set_len(self.len);
            return Err(self.write_error(e));
        }
        self.len += line.len() as u64;
        self.seq = record.seq;
        self.last_hash = record.hash;
        Ok(())
    }

    fn write_error(&self, source: io::Error) -> AuditError {
        AuditError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Renames the current file to `NAME.1` (shifting the rotated files up, deleting those
    /// beyond [`Rotation::keep`]) and starts an empty one. Every intermediate state on disk is
    /// a set that verifies, and [`AuditWriter::open`] continues the chain from any of them.
    fn rotate(&mut self) -> Result<(), AuditError> {
        if let Some(file) = &self.file {
            file.sync_all().map_err(|e| self.write_error(e))?;
        }
        let keep = u64::from(self.rotation.keep);
        // Oldest (highest number) first, so each rename's target has already moved on or gone.
        for (n, from) in rotated_files(&self.path)?.into_iter().rev() {
            if keep != 0 && n >= keep {
                let through = File::open(&from)
                    .and_then(|mut f| last_record(&mut f))
                    .ok()
                    .flatten()
                    .map_or(0, |r| r.seq);
                std::fs::remove_file(&from).map_err(|source| AuditError::Delete {
                    path: from.clone(),
                    source,
                })?;
                tracing::info!(path = %from.display(), records_through = through, audit_keep = keep, "deleted the oldest rotated audit log ([toolhost] audit_keep)");
            } else {
                let to = rotated_path(&self.path, n + 1);
                rename(&from, &to)?;
            }
        }
        let first = rotated_path(&self.path, 1);
        rename(&self.path, &first)?;
        self.file = None;
        sync_dir(&self.path);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|source| AuditError::Open {
                path: self.path.clone(),
                source,
            })?;
        sync_dir(&self.path);
        tracing::info!(path = %self.path.display(), rotated_to = %first.display(), last_seq = self.seq, max_bytes = self.rotation.max_bytes, "rotated the audit log");
        self.file = Some(file);
        self.len = 0;
        Ok(())
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), AuditError> {
    std::fs::rename(from, to).map_err(|source| AuditError::Rename {
        from: from.to_owned(),
        to: to.to_owned(),
        source,
    })
}

/// Makes the renames in the log's directory durable. Best effort: a failure leaves the files
/// as they were before the rename after a power loss, which still verifies.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the audit directory");
    }
}

/// `NAME.n`, the `n`th newest rotated file of the log at `current`.
pub fn rotated_path(current: &Path, n: u64) -> PathBuf {
    let mut name = current.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The `n` of a rotated file `NAME.n` (`n` ≥ 1, written without leading zeros); `None` for
/// any other name (a current log).
pub fn rotated_index(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let (_, suffix) = name.rsplit_once('.')?;
    let n: u64 = suffix.parse().ok()?;
    (n >= 1 && n.to_string() == suffix).then_some(n)
}

/// The rotated files of the log at `current`, newest first (`NAME.1`, `NAME.2`, …; numbers
/// may skip after a crash during a rotation).
fn rotated_files(current: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let Some(name) = current.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let dir = match current.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let list_err = |source| AuditError::List {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list_err(e)),
    };
    let prefix = format!("{name}.");
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_err)?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if file_name.starts_with(&prefix)
            && let Some(n) = rotated_index(Path::new(file_name))
            && file_name.len() == prefix.len() + n.to_string().len()
        {
            files.push((n, dir.join(file_name)));
        }
    }
    files.sort();
    Ok(files)
}

/// The files of the log at `current`, oldest first: the rotated ones, then the current one
/// if it exists.
pub fn log_files(current: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut files: Vec<PathBuf> = rotated_files(current)?
        .into_iter()
        .rev()
        .map(|(_, p)| p)
        .collect();
    if current.exists() {
        files.push(current.to_owned());
    }
    Ok(files)
}

/// The last record of the newest rotated file that has one.
fn last_rotated_record(current: &Path) -> Result<Option<AuditRecord>, AuditError> {
    for (_, path) in rotated_files(current)? {
        let mut file = File::open(&path).map_err(|source| AuditError::Open {
            path: path.clone(),
            source,
        })?;
        if let Some(r) =
            last_record(&mut file).map_err(|source| AuditError::Read { path, source })?
        {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Cuts an unfinished last line (a write torn by a crash) so new records chain after the last
/// complete one; `verify` still checks everything before it. Returns the file's length.
fn drop_torn_tail(file: &mut File) -> io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(0);
    }
    let start = len.saturating_sub(TAIL_SCAN);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(len);
    }
    let keep = match tail.iter().rposition(|b| *b == b'\n') {
        Some(i) => start + i as u64 + 1,
        None if start == 0 => 0,
        None => return Ok(len), // one line longer than the scan window: leave it for `verify` to report
    };
    file.set_len(keep)?;
    Ok(keep)
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
    /// Records before the first one checked (0 when it starts the chain): a rotated file, or
    /// a set whose oldest files were deleted by rotation.
    pub starts_after: u64,
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

/// The chain as checked so far, carried from one file to the next.
#[derive(Debug, Default)]
struct Chain {
    /// `seq` and `hash` of the last record.
    last: Option<(u64, String)>,
    starts_after: u64,
    records: u64,
}

impl Chain {
    /// Checks the records of one file, continuing the chain; `previous_file` names the file the
    /// chain comes from, for an error at the boundary. Returns the file's record count.
    fn check_file(
        &mut self,
        reader: impl BufRead,
        previous_file: Option<&str>,
    ) -> Result<u64, VerifyError> {
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
            let at_boundary = previous_file.filter(|_| records == 0);
            let why = || match at_boundary {
                Some(f) => format!(
                    " (the last record of {f}): records are missing between the files, or a file was removed or reordered"
                ),
                None => ": a record was deleted, inserted or reordered here".into(),
            };
            match &self.last {
                None if record.seq == 1 && record.prev != GENESIS => {
                    return Err(err("the first record does not start the chain".into()));
                }
                None if record.seq != 1 && record.prev == GENESIS => {
                    return Err(err(format!(
                        "record {} claims to start the chain, which only record 1 does",
                        record.seq
                    )));
                }
                None => self.starts_after = record.seq.saturating_sub(1),
                Some((seq, hash)) if record.prev != *hash => {
                    return Err(err(format!(
                        "record {} does not follow record {seq}{}",
                        record.seq,
                        why()
                    )));
                }
                Some((seq, _)) if record.seq != seq + 1 => {
                    return Err(err(format!(
                        "record {} follows record {seq}: sequence gap",
                        record.seq
                    )));
                }
                Some(_) => {}
            }
            records += 1;
            self.last = Some((record.seq, record.hash));
        }
        self.records += records;
        Ok(records)
    }

    fn head(&self) -> String {
        self.last
            .as_ref()
            .map_or_else(|| GENESIS.to_string(), |(_, h)| h.clone())
    }
}

/// Checks every record's hash and its link to the previous one, in one file.
pub fn verify(reader: impl BufRead) -> Result<Verified, VerifyError> {
    let mut chain = Chain::default();
    chain.check_file(reader, None)?;
    Ok(Verified {
        records: chain.records,
        starts_after: chain.starts_after,
        head: chain.head(),
    })
}

/// One file of a verified set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedFile {
    pub path: PathBuf,
    pub records: u64,
}

/// What a successful verification of a whole log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSet {
    /// Oldest first.
    pub files: Vec<VerifiedFile>,
    /// The records of every file, and how far the chain was checked.
    pub total: Verified,
}

/// Why the set of files of a log did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifySetError {
    #[error(transparent)]
    Files(#[from] AuditError),
    #[error("{}:{error}", path.display())]
    Broken { path: PathBuf, error: VerifyError },
}

/// Checks the log at `current` with its rotated files as one chain: the oldest rotated file,
/// …, `NAME.1`, then `current`. The oldest file may start after records deleted by rotation
/// ([`Verified::starts_after`]); a break anywhere after it, including between two files, is an
/// error naming the file and line.
pub fn verify_set(current: &Path) -> Result<VerifiedSet, VerifySetError> {
    let paths = log_files(current)?;
    if paths.is_empty() {
        // Neither the log nor a rotated file: report the log itself as missing.
        return Err(AuditError::Open {
            path: current.to_owned(),
            source: io::Error::from(io::ErrorKind::NotFound),
        }
        .into());
    }
    let mut chain = Chain::default();
    let mut files = Vec::with_capacity(paths.len());
    let mut previous: Option<String> = None;
    for path in paths {
        let file = File::open(&path).map_err(|source| AuditError::Open {
            path: path.clone(),
            source,
        })?;
        let records = chain
            .check_file(io::BufReader::new(file), previous.as_deref())
            .map_err(|error| VerifySetError::Broken {
                path: path.clone(),
                error,
            })?;
        if records > 0 {
            previous = Some(path.display().to_string());
        }
        files.push(VerifiedFile { path, records });
    }
    Ok(VerifiedSet {
        files,
        total: Verified {
            records: chain.records,
            starts_after: chain.starts_after,
            head: chain.head(),
        },
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
        let mut w = AuditWriter::open(&path, Rotation::default()).unwrap();
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
        let mut w = AuditWriter::open(&path, Rotation::default()).unwrap();
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
        let mut w = AuditWriter::open(&path, Rotation::default()).unwrap();
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

    /// A record of `entry("calc")` with a one-digit `seq`, in bytes.
    fn record_len() -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.log");
        AuditWriter::open(&path, Rotation::default())
            .unwrap()
            .append(&entry("calc"), 1000)
            .unwrap();
        std::fs::metadata(&path).unwrap().len()
    }

    /// Room for three records in a file (records differ by a byte or two).
    fn three_per_file(keep: u32) -> Rotation {
        let len = record_len();
        Rotation {
            max_bytes: 3 * len + len / 2,
            keep,
        }
    }

    fn write_rotating(path: &Path, n: u64, rotation: Rotation) {
        let mut w = AuditWriter::open(path, rotation).unwrap();
        for i in 0..n {
            w.append(&entry("calc"), 1000 + i).unwrap();
        }
    }

    fn rotating_log(n: u64, rotation: Rotation) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/tool-calls.log");
        write_rotating(&path, n, rotation);
        (dir, path)
    }

    fn records_of(path: &Path) -> Vec<AuditRecord> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `seq`s per file, oldest file first, with the files' names.
    fn layout(path: &Path) -> Vec<(String, Vec<u64>)> {
        log_files(path)
            .unwrap()
            .iter()
            .map(|f| {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                (name, records_of(f).iter().map(|r| r.seq).collect())
            })
            .collect()
    }

    fn names_and_seqs(v: &[(&str, &[u64])]) -> Vec<(String, Vec<u64>)> {
        v.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect()
    }

    #[test]
    fn the_log_rotates_before_an_append_would_pass_the_size_and_keep_zero_keeps_every_file() {
        let rotation = three_per_file(0);
        let (_d, path) = rotating_log(10, rotation);
        assert_eq!(
            layout(&path),
            names_and_seqs(&[
                ("tool-calls.log.3", &[1, 2, 3]),
                ("tool-calls.log.2", &[4, 5, 6]),
                ("tool-calls.log.1", &[7, 8, 9]),
                ("tool-calls.log", &[10]),
            ])
        );
        for f in log_files(&path).unwrap() {
            let meta = std::fs::metadata(&f).unwrap();
            assert!(meta.len() <= rotation.max_bytes, "{}", f.display());
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", f.display());
        }
    }

    #[test]
    fn the_chain_runs_on_across_the_files() {
        let (_d, path) = rotating_log(10, three_per_file(0));
        let all: Vec<AuditRecord> = log_files(&path)
            .unwrap()
            .iter()
            .flat_map(|f| records_of(f))
            .collect();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(all[0].prev, GENESIS);
        for pair in all.windows(2) {
            assert_eq!(pair[1].prev, pair[0].hash, "record {}", pair[1].seq);
        }
        let v = verify_set(&path).unwrap();
        assert_eq!(
            v.files.iter().map(|f| f.records).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        assert_eq!(
            v.total,
            Verified {
                records: 10,
                starts_after: 0,
                head: all[9].hash.clone()
            }
        );
    }

    #[test]
    fn rotated_files_beyond_keep_are_deleted_and_the_set_starts_after_them() {
        let (_d, path) = rotating_log(10, three_per_file(2));
        assert_eq!(
            layout(&path),
            names_and_seqs(&[
                ("tool-calls.log.2", &[4, 5, 6]),
                ("tool-calls.log.1", &[7, 8, 9]),
                ("tool-calls.log", &[10]),
            ])
        );
        let v = verify_set(&path).unwrap();
        assert_eq!((v.total.records, v.total.starts_after), (7, 3));

        // A lower keep (the config changed) deletes every file beyond it at the next rotation.
        write_rotating(&path, 3, three_per_file(1));
        assert_eq!(
            layout(&path),
            names_and_seqs(&[
                ("tool-calls.log.1", &[10, 11, 12]),
                ("tool-calls.log", &[13])
            ])
        );
        let v = verify_set(&path).unwrap();
        assert_eq!((v.total.records, v.total.starts_after), (4, 9));
    }

    #[test]
    fn reopening_after_a_rotation_continues_the_chain() {
        let rotation = three_per_file(0);
        let (_d, path) = rotating_log(7, rotation);
        write_rotating(&path, 3, rotation);
        assert_eq!(
            layout(&path),
            names_and_seqs(&[
                ("tool-calls.log.3", &[1, 2, 3]),
                ("tool-calls.log.2", &[4, 5, 6]),
                ("tool-calls.log.1", &[7, 8, 9]),
                ("tool-calls.log", &[10]),
            ])
        );
        assert_eq!(verify_set(&path).unwrap().total.records, 10);
    }

    #[test]
    fn a_crash_between_the_rename_and_the_first_append_leaves_a_set_that_verifies() {
        let rotation = three_per_file(0);
        let (_d, path) = rotating_log(6, rotation);
        let six = records_of(&path).pop().unwrap();
        // The rotation got as far as the renames: no current file.
        std::fs::rename(rotated_path(&path, 1), rotated_path(&path, 2)).unwrap();
        std::fs::rename(&path, rotated_path(&path, 1)).unwrap();
        let v = verify_set(&path).unwrap();
        assert_eq!((v.files.len(), v.total.records), (2, 6));
        assert_eq!(v.total.head, six.hash);
        // … or as far as creating the new file: an empty current file.
        File::create(&path).unwrap();
        let v = verify_set(&path).unwrap();
        assert_eq!((v.files.len(), v.total.records), (3, 6));
        // … or the first append was torn.
        std::fs::write(&path, b"{\"seq\":7,\"time_ms\":").unwrap();

        write_rotating(&path, 1, rotation);
        let seven = records_of(&path);
        assert_eq!(seven.len(), 1);
        assert_eq!((seven[0].seq, &seven[0].prev), (7, &six.hash));
        assert_eq!(verify_set(&path).unwrap().total.records, 7);
    }

    #[test]
    fn a_crash_while_shifting_the_rotated_files_leaves_a_set_that_verifies() {
        let rotation = three_per_file(0);
        let (_d, path) = rotating_log(7, rotation);
        // .2 became .3, but .1 was not yet renamed to .2: the numbers skip.
        std::fs::rename(rotated_path(&path, 2), rotated_path(&path, 3)).unwrap();
        assert_eq!(verify_set(&path).unwrap().total.records, 7);
        write_rotating(&path, 3, rotation);
        assert_eq!(
            layout(&path),
            names_and_seqs(&[
                ("tool-calls.log.4", &[1, 2, 3]),
                ("tool-calls.log.2", &[4, 5, 6]),
                ("tool-calls.log.1", &[7, 8, 9]),
                ("tool-calls.log", &[10]),
            ])
        );
        assert_eq!(verify_set(&path).unwrap().total.records, 10);
    }

    #[test]
    fn a_record_larger_than_the_maximum_gets_a_file_of_its_own() {
        let (_d, path) = rotating_log(
            3,
            Rotation {
                max_bytes: 10,
                keep: 0,
            },
        );
        assert_eq!(
            layout(&path),
            names_and_seqs(&[
                ("tool-calls.log.2", &[1]),
                ("tool-calls.log.1", &[2]),
                ("tool-calls.log", &[3]),
            ])
        );
        assert_eq!(verify_set(&path).unwrap().total.records, 3);
    }

    #[test]
    fn tampering_in_a_rotated_file_is_detected() {
        let (_d, path) = rotating_log(10, three_per_file(0));
        let second = rotated_path(&path, 2);
        let text = std::fs::read_to_string(&second).unwrap();
        std::fs::write(
            &second,
            text.replacen("\"time_ms\":1004,", "\"time_ms\":1999,", 1),
        )
        .unwrap();
        let Err(VerifySetError::Broken { path: bad, error }) = verify_set(&path) else {
            panic!("the edit was not detected")
        };
        assert_eq!((bad, error.line), (second.clone(), 2));
        assert!(error.message.contains("modified"), "{error}");
        // The file checked alone says the same.
        assert_eq!(check(&second).unwrap_err().line, 2);
    }

    #[test]
    fn a_gap_between_files_is_detected() {
        let (_d, path) = rotating_log(10, three_per_file(0));
        // The last record of .2 removed: .1 does not follow it.
        let second = rotated_path(&path, 2);
        let text = std::fs::read_to_string(&second).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&second, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
        let Err(VerifySetError::Broken { path: bad, error }) = verify_set(&path) else {
            panic!("the gap was not detected")
        };
        assert_eq!((bad, error.line), (rotated_path(&path, 1), 1));
        assert!(
            error.message.contains("does not follow record 5")
                && error.message.contains("tool-calls.log.2")
                && error.message.contains("between the files"),
            "{error}"
        );

        // A whole file removed.
        std::fs::remove_file(&second).unwrap();
        let Err(VerifySetError::Broken { path: bad, error }) = verify_set(&path) else {
            panic!("the missing file was not detected")
        };
        assert_eq!((bad, error.line), (rotated_path(&path, 1), 1));
        assert!(error.message.contains("tool-calls.log.3"), "{error}");
    }

    #[test]
    fn a_rotated_file_verifies_alone_after_the_records_before_it() {
        let (_d, path) = rotating_log(10, three_per_file(0));
        let v = check(&rotated_path(&path, 2)).unwrap();
        assert_eq!((v.records, v.starts_after), (3, 3));
    }

    #[test]
    fn rotated_names_are_recognised() {
        let p = Path::new("/s/audit/tool-calls.log");
        assert_eq!(rotated_index(p), None);
        assert_eq!(rotated_index(&rotated_path(p, 12)), Some(12));
        assert_eq!(rotated_index(Path::new("tool-calls.log.0")), None);
        assert_eq!(rotated_index(Path::new("tool-calls.log.01")), None);
        assert_eq!(rotated_index(Path::new("tool-calls.log.x")), None);
    }
}
