//! The toolhost's state: tool packages (built-in and installed) indexed by tool name, their
//! install/remove, audited tool calls, and the providers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use caxton_config::ServerConfig;
use caxton_ipc::api::ErrorKind;
use caxton_ipc::audit::{AuditEntry, AuditError, AuditWriter, sha256_hex};
use caxton_ipc::error::Chain;
use caxton_ipc::tool::{
    InstalledPackage, ReplacedPackage, ToolGrant, ToolManifest, ToolPackageInfo,
};
use caxton_ipc::toolhost::{
    CallToolRequest, Catalog, ChatReply, ChatRequest, InstallToolRequest, ToolOutput,
};
use caxton_llm::{ChatError, Progress, ProviderDirs, Providers};

use crate::policy::{Policy, requested_beyond};
use crate::wasm::{CallOutcome, LoadError, RuntimeError, ToolServer, WasmError, WasmRuntime};

/// Why the toolhost cannot start: its runtime, providers, audit log or a built-in package.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Providers(#[from] caxton_llm::ConfigError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("built-in tool manifest: {reason}")]
    BuiltinManifest { reason: String },
    /// A built-in package cannot be loaded (an installed one is reported and skipped instead).
    #[error(transparent)]
    Builtin(#[from] PackageError),
}

/// Why one tool package cannot be loaded or served.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `reason` is the manifest check's explanation.
    #[error("{}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error(
        "{} names package `{name}` but lives in directory {}; the directory must have the package's name",
        path.display(),
        dir.display()
    )]
    WrongDirectory {
        path: PathBuf,
        name: String,
        dir: PathBuf,
    },
    #[error("tool package `{name}`")]
    Load {
        name: String,
        #[source]
        source: LoadError,
    },
    #[error("tool `{tool}` is already offered by package `{other}`; tool names must be unique")]
    DuplicateTool { tool: String, other: String },
}

/// Why a package was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("tool.toml: {reason}")]
    Manifest { reason: String },
    #[error("the module of `{name}` is not a WebAssembly binary (it must start with \\0asm)")]
    NotWasm { name: String },
    #[error("`{name}` is a built-in tool package and cannot be replaced")]
    Builtin { name: String },
    #[error(
        "tool package `{name}` is already installed (version {version}); remove it first or install with --replace"
    )]
    Installed { name: String, version: String },
    /// `requests` lists each new request with what the grant gives it.
    #[error(
        "tool package `{name}` {version} requests what the installed version {installed} did not: {requests}. The [tools.{name}] grant in caxton.toml applies to whatever is installed under that name; review it, then install again with --replace --allow-new-requests"
    )]
    NewRequests {
        name: String,
        version: String,
        installed: String,
        requests: String,
    },
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("cannot write tool package `{name}` into {}", dir.display())]
    Write {
        name: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InstallError {
    /// The kind of error the supervisor is told.
    pub fn kind(&self) -> ErrorKind {
        match self {
            InstallError::Write { .. } => ErrorKind::Internal,
            _ => ErrorKind::BadRequest,
        }
    }
}

/// Why a package was not removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("no tool package named `{name}` is installed")]
    NotInstalled { name: String },
    #[error("`{name}` is a built-in tool package and cannot be removed")]
    Builtin { name: String },
    #[error("cannot remove {}", dir.display())]
    Remove {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RemoveError {
    /// The kind of error the supervisor is told.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RemoveError::NotInstalled { .. } => ErrorKind::NotFound,
            RemoveError::Builtin { .. } => ErrorKind::BadRequest,
            RemoveError::Remove { .. } => ErrorKind::Internal,
        }
    }
}

/// Why a tool call has no result (a failure the tool reports itself is a result).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no tool package offers a tool named `{tool}`")]
    NoTool { tool: String },
    #[error("arguments of tool `{tool}` are not valid JSON")]
    ArgumentsNotJson {
        tool: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("arguments of tool `{tool}` must be a JSON object")]
    ArgumentsNotObject { tool: String },
    #[error(transparent)]
    Guest(#[from] WasmError),
    #[error("tool calls are not served in catalog mode")]
    CatalogMode,
    /// The call's record could not be written, so its result is withheld: an unaudited call
    /// must not look answered.
    #[error("tool `{tool}`: tool results are withheld until the audit log can be written")]
    Audit {
        tool: String,
        #[source]
        source: AuditError,
    },
}

impl CallError {
    /// The kind of error the caller is told.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CallError::NoTool { .. } => ErrorKind::NotFound,
            CallError::ArgumentsNotJson { .. } | CallError::ArgumentsNotObject { .. } => {
                ErrorKind::BadRequest
            }
            CallError::Guest(WasmError::Busy { .. }) => ErrorKind::Busy,
            CallError::Guest(_) | CallError::Audit { .. } => ErrorKind::Tool,
            CallError::CatalogMode => ErrorKind::Internal,
        }
    }
}

/// One loaded tool package.
struct Package {
    manifest: ToolManifest,
    builtin: bool,
    module_sha256: String,
    server: Arc<ToolServer>,
}

impl Package {
    fn info(&self) -> ToolPackageInfo {
        let p = &self.server.policy;
        ToolPackageInfo {
            name: self.manifest.name.clone(),
            version: self.manifest.version.clone(),
            description: self.manifest.description.clone(),
            builtin: self.builtin,
            module_sha256: self.module_sha256.clone(),
            tools: self.server.tools.iter().map(|t| t.name.clone()).collect(),
            requests: self.manifest.requests.clone(),
            granted: p.granted.clone(),
            denied: p.denied.clone(),
            problems: p.problems.clone(),
            memory_mb: p.memory_mb,
            timeout_ms: p.timeout.as_millis() as u64,
            max_concurrency: p.max_concurrency,
        }
    }
}

/// The packages in effect, swapped as a whole on install and remove.
#[derive(Default)]
struct Index {
    packages: BTreeMap<String, Arc<Package>>,
    by_tool: BTreeMap<String, Arc<Package>>,
}

impl Index {
    /// Adds `pkg` unless one of its tools is already offered by another package.
    fn add(&mut self, pkg: Arc<Package>) -> Result<(), PackageError> {
        for tool in &pkg.server.tools {
            if let Some(other) = self.by_tool.get(&tool.name) {
                return Err(PackageError::DuplicateTool {
                    tool: tool.name.clone(),
                    other: other.manifest.name.clone(),
                });
            }
        }
        for tool in &pkg.server.tools {
            self.by_tool.insert(tool.name.clone(), pkg.clone());
        }
        self.packages.insert(pkg.manifest.name.clone(), pkg);
        Ok(())
    }

    fn without(&self, name: &str) -> Index {
        let mut next = Index::default();
        for (n, p) in &self.packages {
            if n != name {
                // The packages were unique together, so they are without one of them.
                let _ = next.add(p.clone());
            }
        }
        next
    }
}

pub struct Host {
    runtime: WasmRuntime,
    index: RwLock<Arc<Index>>,
    /// Serialises install and remove.
    changes: tokio::sync::Mutex<()>,
    tools_dir: PathBuf,
    grants: BTreeMap<String, ToolGrant>,
    providers: Providers,
    tool_timeout: Duration,
    /// `None` only for `caxton-toolhost catalog`, which never calls a tool.
    audit: Option<Mutex<AuditWriter>>,
    /// The A2A client for remote delegations (`[a2a] remotes`).
    pub a2a: crate::a2a::Remotes,
}

/// What the host is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Serving workers: every tool call is audited.
    Serve,
    /// Printing the catalog: no tool calls, so no audit log is opened.
    Catalog,
}

impl Host {
    /// Loads the built-in packages, the installed ones, and the providers. A broken installed
    /// package is reported and skipped; a grant that matches no package is reported.
    pub async fn load(config: &ServerConfig, purpose: Purpose) -> Result<Host, HostError> {
        let runtime = WasmRuntime::new(&config.module_cache_dir())?;
        let providers = Providers::from_config(
            &config.providers(),
            ProviderDirs {
                models: &config.models_dir(),
                model_cache: &config.model_cache_dir(),
            },
        )?;
        let audit = match purpose {
            Purpose::Catalog => None,
            Purpose::Serve => {
                let writer =
                    AuditWriter::open(&config.audit_log_path(), config.toolhost.audit_rotation())?;
                Some(Mutex::new(writer))
            }
        };
        let host = Host {
            a2a: crate::a2a::Remotes::from_config(config),
            runtime,
            index: RwLock::new(Arc::new(Index::default())),
            changes: tokio::sync::Mutex::new(()),
            tools_dir: config.tools_dir(),
            grants: config.tools.clone(),
            providers,
            tool_timeout: config.toolhost.tool_timeout,
            audit,
        };
        let mut index = Index::default();
        for (manifest, wasm) in crate::BUILTIN_PACKAGES {
            let manifest = ToolManifest::parse(manifest)
                .map_err(|reason| HostError::BuiltinManifest { reason })?;
            let pkg = host.prepare(manifest, wasm, true).await?;
            index.add(pkg)?;
        }
        for dir in installed_dirs(&host.tools_dir) {
            let loaded = async {
                let (manifest, wasm) = read_package(&dir)?;
                let pkg = host.prepare(manifest, &wasm, false).await?;
                index.add(pkg)
            };
            if let Err(e) = loaded.await {
                tracing::error!(package = %dir.display(), error = %Chain(&e), "tool package not loaded");
            }
        }
        for name in host.grants.keys() {
            if !index.packages.contains_key(name) {
                tracing::error!(
                    tool = %name,
                    "caxton.toml grants [tools.{name}] but no tool package of that name is loaded; the grant has no effect"
                );
            }
        }
        *host.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
        Ok(host)
    }

    /// Resolves the policy of a package, compiles it and starts its first instance.
    async fn prepare(
        &self,
        manifest: ToolManifest,
        wasm: &[u8],
        builtin: bool,
    ) -> Result<Arc<Package>, PackageError> {
        let name = manifest.name.clone();
        let policy = Policy::resolve(&manifest, self.grants.get(&name), self.tool_timeout);
        for problem in &policy.problems {
            tracing::error!(tool = %name, %problem, "tool package disabled: its grant does not match its manifest");
        }
        if !policy.denied.is_empty() {
            tracing::warn!(tool = %name, denied = policy.denied.join(", "), "tool package requests that are not granted will be denied");
        }
        let server = self
            .runtime
            .load(&name, wasm, policy)
            .await
            .map_err(|source| PackageError::Load {
                name: name.clone(),
                source,
            })?;
        Ok(Arc::new(Package {
            manifest,
            builtin,
            module_sha256: sha256_hex(wasm),
            server,
        }))
    }

    fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_index(&self, index: Index) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
    }

    pub fn catalog(&self) -> Catalog {
        let index = self.index();
        Catalog {
            tools: index
                .packages
                .values()
                .flat_map(|p| p.server.tools.iter().cloned())
                .collect(),
            providers: self.providers.infos(),
        }
    }

    /// The specs of the named tools that some package offers.
    pub fn tools(&self, names: &[String]) -> Vec<caxton_ipc::toolhost::ToolSpec> {
        let index = self.index();
        names
            .iter()
            .filter_map(|n| {
                let pkg = index.by_tool.get(n)?;
                pkg.server.tools.iter().find(|t| &t.name == n).cloned()
            })
            .collect()
    }

    /// Every loaded package.
    pub fn packages(&self) -> Vec<ToolPackageInfo> {
        self.index().packages.values().map(|p| p.info()).collect()
    }

    /// Validates, compiles and installs a package into the tools directory, then serves it.
    ///
    /// Grants are keyed by package name, so a replacement gets the `[tools.<name>]` grant the
    /// installed version had. A replacement that requests anything the installed version did
    /// not is refused unless `allow_new_requests` says the operator has reviewed it; the answer
    /// names the replaced version and the new requests with what the grant gives them.
    pub async fn install(
        &self,
        req: &InstallToolRequest,
    ) -> Result<InstalledPackage, InstallError> {
        let manifest = ToolManifest::parse(&req.manifest)
            .map_err(|reason| InstallError::Manifest { reason })?;
        let name = manifest.name.clone();
        if !req.wasm.starts_with(b"\0asm") {
            return Err(InstallError::NotWasm { name });
        }
        let _guard = self.changes.lock().await;
        let current = self.index();
        let mut replaced = None;
        if let Some(existing) = current.packages.get(&name) {
            if existing.builtin {
                return Err(InstallError::Builtin { name });
            }
            if !req.replace {
                return Err(InstallError::Installed {
                    name,
                    version: existing.manifest.version.clone(),
                });
            }
            let beyond = requested_beyond(&existing.manifest.requests, &manifest.requests);
            // What the grant would give the new requests (the package is compiled only once
            // the replacement is accepted).
            let policy = Policy::resolve(&manifest, self.grants.get(&name), self.tool_timeout);
            let new_requests: Vec<String> = beyond
                .iter()
                .map(|r| format!("{r}: {}", policy.gives(r, &name)))
                .collect();
            if !new_requests.is_empty() && !req.allow_new_requests {
                return Err(InstallError::NewRequests {
                    name,
                    version: manifest.version.clone(),
                    installed: existing.manifest.version.clone(),
                    requests: new_requests.join("; "),
                });
            }
            replaced = Some(ReplacedPackage {
                version: existing.manifest.version.clone(),
                module_sha256: existing.module_sha256.clone(),
                new_requests,
            });
        }
        let pkg = self.prepare(manifest, &req.wasm, false).await?;
        let mut next = current.without(&name);
        next.add(pkg.clone())?;
        write_package(&self.tools_dir, &pkg.manifest, &req.manifest, &req.wasm).map_err(
            |source| InstallError::Write {
                name: name.clone(),
                dir: self.tools_dir.clone(),
                source,
            },
        )?;
        self.set_index(next);
        match &replaced {
            None => {
                tracing::info!(tool = %name, version = %pkg.manifest.version, tools = pkg.server.tools.len(), "tool package installed")
            }
            Some(r) => {
                tracing::info!(tool = %name, version = %pkg.manifest.version, replaced = %r.version, new_requests = r.new_requests.join("; "), granted = pkg.server.policy.granted.join(", "), "tool package replaced; its grant applies to the new version")
            }
        }
        Ok(InstalledPackage {
            package: pkg.info(),
            replaced,
        })
    }

    /// Removes an installed package from the tools directory and stops serving it.
    pub async fn remove(&self, name: &str) -> Result<(), RemoveError> {
        let _guard = self.changes.lock().await;
        let current = self.index();
        match current.packages.get(name) {
            None => return Err(RemoveError::NotInstalled { name: name.into() }),
            Some(p) if p.builtin => return Err(RemoveError::Builtin { name: name.into() }),
            Some(_) => {}
        }
        let dir = self.tools_dir.join(name);
        std::fs::remove_dir_all(&dir).map_err(|source| RemoveError::Remove {
            dir: dir.clone(),
            source,
        })?;
        self.set_index(current.without(name));
        tracing::info!(tool = %name, "tool package removed");
        Ok(())
    }

    /// Calls a tool and appends the call to the audit log, whatever its outcome. If the audit
    /// record cannot be written, the result is withheld (fail closed).
    pub async fn call_tool(&self, req: &CallToolRequest) -> Result<ToolOutput, CallError> {
        let started = Instant::now();
        let package = self.index().by_tool.get(&req.tool).cloned();
        let result = self.call_tool_unaudited(package.as_deref(), req).await;
        let took = started.elapsed();
        let duration_us = took.as_micros() as u64;
        let tool_label = crate::metrics::tool_label(&req.tool, package.is_some());
        let outcome_label = match &result {
            Ok(out) if out.is_error => "tool_error",
            Ok(_) => "ok",
            Err(e) => crate::metrics::outcome(e),
        };
        metrics::counter!(crate::metrics::TOOL_CALLS, "tool" => tool_label.clone(), "outcome" => outcome_label)
            .increment(1);
        metrics::histogram!(crate::metrics::TOOL_CALL_DURATION, "tool" => tool_label)
            .record(took.as_secs_f64());
        if let (Err(CallError::Guest(e)), Some(p)) = (&result, &package) {
            let counter = match e {
                WasmError::Timeout { .. } => Some(crate::metrics::TIMEOUTS),
                WasmError::Trapped { .. } => Some(crate::metrics::TRAPS),
                _ => None,
            };
            if let Some(c) = counter {
                metrics::counter!(c, "package" => p.manifest.name.clone()).increment(1);
            }
        }
        let failure = result.as_ref().err().map(|e| Chain(e).to_string());
        // The caller's trace span for this call (see the server), if any.
        if outcome_label != "ok" {
            let description = match (&failure, &result) {
                (Some(f), _) => Some(f.as_str()),
                // A tool's own error text may hold data: only with content capture.
                (None, Ok(out)) if caxton_telemetry::traces::capture_content() => {
                    Some(out.text.as_str())
                }
                _ => None,
            };
            caxton_telemetry::traces::fail(&tracing::Span::current(), outcome_label, description);
        }
        let (outcome, detail, memory_peak_bytes) = match (&result, &failure) {
            (Ok(out), _) if out.is_error => ("tool_error", out.text.as_str(), out.memory_peak),
            (Ok(out), _) => ("ok", "", out.memory_peak),
            (Err(_), failure) => ("failed", failure.as_deref().unwrap_or_default(), 0),
        };
        self.audit(&AuditEntry {
            run_id: &req.run_id,
            agent: &req.agent,
            tool: &req.tool,
            server: package.as_ref().map_or("", |p| p.manifest.name.as_str()),
            arguments: &req.arguments,
            outcome,
            detail,
            duration_us,
            memory_peak_bytes,
        })?;
        match &result {
            Ok(out) if out.is_error => {
                tracing::info!(tool = %req.tool, duration_us, detail = %out.text, "tool call answered with an error")
            }
            Ok(_) => {
                tracing::debug!(tool = %req.tool, duration_us, "tool call")
            }
            Err(_) => {
                tracing::warn!(tool = %req.tool, duration_us, error = detail, "tool call failed")
            }
        }
        result.map(|out| ToolOutput {
            content: out.text,
            is_error: out.is_error,
            duration_us,
        })
    }

    /// Audits a call refused before it reached a tool (not granted to the run, over its
    /// allowance). A record that cannot be written is logged; the refusal stands either way.
    pub fn audit_refused(&self, req: &CallToolRequest, why: &str) {
        let tool_label =
            crate::metrics::tool_label(&req.tool, self.index().by_tool.contains_key(&req.tool));
        metrics::counter!(crate::metrics::TOOL_CALLS, "tool" => tool_label, "outcome" => "refused")
            .increment(1);
        let _ = self.audit(&AuditEntry {
            run_id: &req.run_id,
            agent: &req.agent,
            tool: &req.tool,
            server: "",
            arguments: &req.arguments,
            outcome: "refused",
            detail: why,
            duration_us: 0,
            memory_peak_bytes: 0,
        });
    }

    /// Appends one record to the audit log; an error (logged here) means the result must be
    /// withheld.
    fn audit(&self, entry: &AuditEntry<'_>) -> Result<(), CallError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let Some(audit) = &self.audit else {
            return Err(CallError::CatalogMode);
        };
        let mut audit = audit.lock().unwrap_or_else(|p| p.into_inner());
        audit.append(entry, now_ms).map_err(|source| {
            tracing::error!(path = %audit.path().display(), error = %Chain(&source), "cannot write the audit log; withholding the tool result");
            CallError::Audit {
                tool: entry.tool.to_string(),
                source,
            }
        })
    }

    async fn call_tool_unaudited(
        &self,
        package: Option<&Package>,
        req: &CallToolRequest,
    ) -> Result<CallOutcome, CallError> {
        let package = package.ok_or_else(|| CallError::NoTool {
            tool: req.tool.clone(),
        })?;
        let arguments: serde_json::Value =
            serde_json::from_str(&req.arguments).map_err(|source| CallError::ArgumentsNotJson {
                tool: req.tool.clone(),
                source,
            })?;
        if !arguments.is_object() {
            return Err(CallError::ArgumentsNotObject {
                tool: req.tool.clone(),
            });
        }
        let deadline = Duration::from_millis(req.timeout_ms).min(self.tool_timeout);
        Ok(package.server.call(&req.tool, arguments, deadline).await?)
    }

    /// Answers a chat, reporting streamed text, retries and fallbacks to `progress`.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        progress: &Progress,
    ) -> Result<ChatReply, ChatError> {
        self.providers.chat(req, progress).await
    }
}

/// Package directories under `tools_dir` (those holding a `tool.toml`), sorted.
fn installed_dirs(tools_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(tools_dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("tool.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Reads `dir/tool.toml` and its module; the directory name must be the package name.
fn read_package(dir: &Path) -> Result<(ToolManifest, Vec<u8>), PackageError> {
    let path = dir.join("tool.toml");
    let text = std::fs::read_to_string(&path).map_err(|source| PackageError::Read {
        path: path.clone(),
        source,
    })?;
    let manifest = ToolManifest::parse(&text).map_err(|reason| PackageError::Manifest {
        path: path.clone(),
        reason,
    })?;
    if dir.file_name().is_none_or(|n| n != manifest.name.as_str()) {
        return Err(PackageError::WrongDirectory {
            name: manifest.name,
            path,
            dir: dir.to_owned(),
        });
    }
    let module = dir.join(manifest.module_file());
    let wasm = std::fs::read(&module).map_err(|source| PackageError::Read {
        path: module,
        source,
    })?;
    Ok((manifest, wasm))
}

/// Writes a package atomically: a temporary directory beside the target, then renames.
fn write_package(
    tools_dir: &Path,
    manifest: &ToolManifest,
    manifest_text: &str,
    wasm: &[u8],
) -> std::io::Result<()> {
    std::fs::create_dir_all(tools_dir)?;
    let target = tools_dir.join(&manifest.name);
    let tmp = tools_dir.join(format!(
        ".installing-{}-{}",
        manifest.name,
        std::process::id()
    ));
    let old = tools_dir.join(format!(
        ".removing-{}-{}",
        manifest.name,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp)?;
    std::fs::write(tmp.join("tool.toml"), manifest_text)?;
    std::fs::write(tmp.join(manifest.module_file()), wasm)?;
    let replacing = target.exists();
    if replacing {
        std::fs::rename(&target, &old)?;
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        // Put the installed version back rather than lose it.
        if replacing {
            let _ = std::fs::rename(&old, &target);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}
