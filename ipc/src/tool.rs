//! Tool packages: the manifest a tool ships with (what it is, what it asks for) and the operator's
//! grants in `caxton.toml` (what it gets). Everything a manifest requests is denied unless granted;
//! a grant for something the manifest did not request is a mismatch, reported loudly.
//!
//! ```toml
//! # tool.toml, beside the module
//! name = "files"
//! version = "0.1.0"
//! description = "Read, list and write files in granted directories."
//! module = "files.wasm"                       # default: <name>.wasm
//! [requests]
//! dirs = [{ path = "/data", write = true }]   # guest paths
//! http = ["https://api.example.com"]          # origins: scheme://host[:port]
//! env = ["LANG"]
//! secrets = ["API_TOKEN"]                     # delivered as environment variables
//! [limits]
//! memory_mb = 32
//! timeout_ms = 5000
//! max_concurrency = 4
//! ```
//!
//! ```toml
//! # caxton.toml
//! [tools.files]
//! dirs = [{ path = "/data", host = "/srv/caxton/data", write = false }]
//! [tools.http_fetch]
//! http = ["https://api.example.com", { url = "http://localhost:8080", private = true }]
//! env = { LANG = "C.UTF-8" }
//! secrets = { API_TOKEN = "env:CAXTON_API_TOKEN" }   # or "file:/etc/caxton/token"
//! max_concurrency = 2                                  # limits may be overridden too
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest memory a manifest or grant may set, in MiB.
pub const MAX_MEMORY_MB: u32 = 1024;
/// Most concurrent calls a manifest or grant may set.
pub const MAX_CONCURRENCY: u32 = 256;
/// Longest tool-call deadline a manifest or grant may set, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// `tool.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolManifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// File name of the module beside the manifest; default `<name>.wasm`.
    #[serde(default)]
    pub module: Option<String>,
    #[serde(default)]
    pub requests: Requests,
    #[serde(default)]
    pub limits: Limits,
}

/// What a tool asks for. Nothing here is granted by asking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Requests {
    pub dirs: Vec<DirRequest>,
    /// Origins (`scheme://host[:port]`) the tool wants to reach through the host's HTTP import;
    /// `"*"` asks for whichever origins the operator grants.
    pub http: Vec<String>,
    /// Environment variable names.
    pub env: Vec<String>,
    /// Secret names; a granted secret is visible to the guest as an environment variable.
    pub secrets: Vec<String>,
}

/// A directory the tool wants, by its path inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirRequest {
    pub path: String,
    #[serde(default)]
    pub write: bool,
}

/// Resource limits; unset values take the toolhost's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub memory_mb: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub max_concurrency: Option<u32>,
}

/// `[tools.<name>]` in `caxton.toml`: what the operator grants one tool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolGrant {
    pub dirs: Vec<DirGrant>,
    pub http: Vec<HttpGrant>,
    /// Environment variables and their values.
    pub env: BTreeMap<String, String>,
    /// Secrets and where the service reads them: `env:VAR` or `file:/path`.
    pub secrets: BTreeMap<String, String>,
    pub memory_mb: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub max_concurrency: Option<u32>,
}

/// A requested guest directory mapped to a host directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The guest path, as requested by the manifest.
    pub path: String,
    /// The host directory behind it.
    pub host: PathBuf,
    #[serde(default)]
    pub write: bool,
}

/// An origin the tool may reach: a URL string, or a table that also allows private addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HttpGrant {
    Url(String),
    Detailed {
        url: String,
        /// Allow loopback, private and link-local addresses for this origin (default: refused
        /// after DNS resolution).
        #[serde(default)]
        private: bool,
    },
}

impl HttpGrant {
    pub fn url(&self) -> &str {
        match self {
            HttpGrant::Url(u) | HttpGrant::Detailed { url: u, .. } => u,
        }
    }

    pub fn private(&self) -> bool {
        matches!(self, HttpGrant::Detailed { private: true, .. })
    }
}

impl ToolManifest {
    /// Parses and checks `tool.toml`.
    pub fn parse(text: &str) -> Result<ToolManifest, String> {
        let m: ToolManifest = toml::from_str(text).map_err(|e| e.to_string())?;
        m.check()?;
        Ok(m)
    }

    /// The module's file name.
    pub fn module_file(&self) -> String {
        self.module
            .clone()
            .unwrap_or_else(|| format!("{}.wasm", self.name))
    }

    fn check(&self) -> Result<(), String> {
        check_name(&self.name)?;
        if self.version.trim().is_empty() {
            return Err("`version` must not be empty".into());
        }
        if let Some(module) = &self.module
            && (module.contains('/') || module.starts_with('.') || !module.ends_with(".wasm"))
        {
            return Err(format!(
                "`module` must be a plain file name ending in .wasm beside tool.toml, not `{module}`"
            ));
        }
        for d in &self.requests.dirs {
            if !d.path.starts_with('/') || d.path.split('/').any(|c| c == "..") {
                return Err(format!(
                    "requested dir `{}` must be an absolute guest path without `..`",
                    d.path
                ));
            }
        }
        for key in self.requests.env.iter().chain(&self.requests.secrets) {
            check_env_key(key)?;
        }
        check_limits(&self.limits, "[limits]")
    }
}

impl ToolGrant {
    /// The limit overrides of this grant.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_mb: self.memory_mb,
            timeout_ms: self.timeout_ms,
            max_concurrency: self.max_concurrency,
        }
    }
}

/// Checks limit values against the hard caps.
pub fn check_limits(l: &Limits, place: &str) -> Result<(), String> {
    if let Some(m) = l.memory_mb
        && !(1..=MAX_MEMORY_MB).contains(&m)
    {
        return Err(format!(
            "{place} memory_mb must be 1..={MAX_MEMORY_MB}, not {m}"
        ));
    }
    if let Some(t) = l.timeout_ms
        && !(1..=MAX_TIMEOUT_MS).contains(&t)
    {
        return Err(format!(
            "{place} timeout_ms must be 1..={MAX_TIMEOUT_MS}, not {t}"
        ));
    }
    if let Some(c) = l.max_concurrency
        && !(1..=MAX_CONCURRENCY).contains(&c)
    {
        return Err(format!(
            "{place} max_concurrency must be 1..={MAX_CONCURRENCY}, not {c}"
        ));
    }
    Ok(())
}

/// A tool package name: 1–64 of `a-z 0-9 _ -`, starting with a letter.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tool name `{name}` must be 1-64 characters of a-z, 0-9, `_` or `-`, starting with a letter"
        ))
    }
}

fn check_env_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{key}` is not a valid environment variable name (A-Z, a-z, 0-9, `_`)"
        ))
    }
}

/// A tool package as the toolhost reports it (`caxton tool list|show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPackageInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Compiled into the toolhost (cannot be removed) or installed in the tools directory.
    pub builtin: bool,
    /// sha256 of the module, hex.
    pub module_sha256: String,
    /// The MCP tools it offers.
    pub tools: Vec<String>,
    pub requests: Requests,
    /// What is granted, one line each (`dir /data -> /srv/data (rw)`, `http https://x:443`, …).
    pub granted: Vec<String>,
    /// Requested but not granted: denied at call time.
    pub denied: Vec<String>,
    /// Why the package is disabled (a grant that does not match the manifest, a missing
    /// directory, a secret that cannot be read); empty when it serves calls.
    pub problems: Vec<String>,
    pub memory_mb: u32,
    pub timeout_ms: u64,
    pub max_concurrency: u32,
}

/// The answer to an install: the package as now served and, for `--replace`, what it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub package: ToolPackageInfo,
    pub replaced: Option<ReplacedPackage>,
}

/// The installed version a `--replace` install replaced. The operator's `[tools.<name>]` grant
/// is keyed by the package name, so it now applies to the new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacedPackage {
    pub version: String,
    /// sha256 of the replaced module, hex.
    pub module_sha256: String,
    /// What the new version requests that the replaced one did not, each with what the grant
    /// gives it (`secret TOKEN: granted by [tools.x]`); accepted only with
    /// `allow_new_requests`.
    pub new_requests: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest_parses() {
        let m = ToolManifest::parse(
            r#"
name = "files"
version = "0.1.0"
[requests]
dirs = [{ path = "/data", write = true }]
http = ["https://api.example.com"]
env = ["LANG"]
secrets = ["API_TOKEN"]
[limits]
memory_mb = 32
"#,
        )
        .unwrap();
        assert_eq!(m.module_file(), "files.wasm");
        assert!(m.requests.dirs[0].write);
        assert_eq!(m.limits.memory_mb, Some(32));
    }

    #[test]
    fn bad_manifests_say_why() {
        let cases = [
            ("name = \"Bad Name\"\nversion = \"1\"", "tool name"),
            (
                "name = \"x\"\nversion = \"1\"\nmodule = \"../x.wasm\"",
                "plain file name",
            ),
            (
                "name = \"x\"\nversion = \"1\"\n[requests]\ndirs = [{ path = \"data\" }]",
                "absolute",
            ),
            (
                "name = \"x\"\nversion = \"1\"\n[requests]\nenv = [\"A-B\"]",
                "environment variable",
            ),
            (
                "name = \"x\"\nversion = \"1\"\n[limits]\nmemory_mb = 100000",
                "memory_mb",
            ),
            (
                "name = \"x\"\nversion = \"1\"\n[requests]\nnet = true",
                "unknown field",
            ),
        ];
        for (text, want) in cases {
            let err = ToolManifest::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn http_grants_are_strings_or_tables() {
        let g: ToolGrant = toml::from_str(
            "http = [\"https://a.example\", { url = \"http://localhost:8080\", private = true }]",
        )
        .unwrap();
        assert_eq!(g.http[0].url(), "https://a.example");
        assert!(!g.http[0].private());
        assert!(g.http[1].private());
    }
}
