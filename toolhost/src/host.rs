//! The toolhost's state: loaded tool servers indexed by tool name, and the providers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::audit::{AuditEntry, AuditWriter};
use caxton_ipc::config::ServerConfig;
use caxton_ipc::toolhost::{CallToolRequest, Catalog, ChatReply, ChatRequest, ToolOutput};

use crate::providers::Providers;
use crate::wasm::{ToolServer, WasmRuntime};

pub struct Host {
    _runtime: WasmRuntime,
    servers: Vec<Arc<ToolServer>>,
    by_tool: BTreeMap<String, Arc<ToolServer>>,
    providers: Providers,
    tool_timeout: Duration,
    /// `None` only for `caxton-toolhost catalog`, which never calls a tool.
    audit: Option<Mutex<AuditWriter>>,
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
    /// Loads the built-in tool servers, those in the configured tools directory, and the providers.
    pub async fn load(config: &ServerConfig, purpose: Purpose) -> anyhow::Result<Host> {
        let runtime = WasmRuntime::new(&config.module_cache_dir())?;
        let mut servers = Vec::new();
        for (name, wasm) in crate::BUILTIN_SERVERS {
            servers.push(runtime.load(name, wasm).await?);
        }
        if let Some(dir) = &config.toolhost.tools_dir {
            let entries = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read tools_dir {}", dir.display()))?;
            let mut paths: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                .collect();
            paths.sort();
            for path in paths {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let wasm = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                servers.push(
                    runtime
                        .load(&name, &wasm)
                        .await
                        .with_context(|| format!("tool server {}", path.display()))?,
                );
            }
        }
        let mut by_tool = BTreeMap::new();
        for server in &servers {
            for tool in &server.tools {
                if let Some(prev) = by_tool.insert(tool.name.clone(), server.clone()) {
                    anyhow::bail!(
                        "tool `{}` is offered by both `{}` and `{}`; tool names must be unique",
                        tool.name,
                        prev.name,
                        server.name
                    );
                }
            }
        }
        let providers = Providers::from_config(&config.providers())?;
        let audit = match purpose {
            Purpose::Catalog => None,
            Purpose::Serve => {
                let path = config.audit_log_path();
                let writer = AuditWriter::open(&path)
                    .with_context(|| format!("cannot open the audit log {}", path.display()))?;
                Some(Mutex::new(writer))
            }
        };
        Ok(Host {
            _runtime: runtime,
            servers,
            by_tool,
            providers,
            tool_timeout: config.toolhost.tool_timeout,
            audit,
        })
    }

    pub fn catalog(&self) -> Catalog {
        Catalog {
            tools: self
                .servers
                .iter()
                .flat_map(|s| s.tools.iter().cloned())
                .collect(),
            providers: self.providers.infos(),
        }
    }

    /// Calls a tool and appends the call to the audit log, whatever its outcome. If the audit
    /// record cannot be written, the result is withheld (fail closed).
    pub async fn call_tool(&self, req: &CallToolRequest) -> Result<ToolOutput, ErrorBody> {
        let started = Instant::now();
        let result = self.call_tool_unaudited(req).await;
        let duration_us = started.elapsed().as_micros() as u64;
        let (outcome, detail) = match &result {
            Ok(out) if out.is_error => ("tool_error", out.content.as_str()),
            Ok(_) => ("ok", ""),
            Err(e) => ("failed", e.message.as_str()),
        };
        let entry = AuditEntry {
            run_id: &req.run_id,
            agent: &req.agent,
            tool: &req.tool,
            arguments: &req.arguments,
            outcome,
            detail,
            duration_us,
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let Some(audit) = &self.audit else {
            return Err(ErrorBody::new(
                ErrorKind::Internal,
                "tool calls are not served in catalog mode",
            ));
        };
        let mut audit = audit.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = audit.append(&entry, now_ms) {
            tracing::error!(path = %audit.path().display(), error = %e, "cannot write the audit log; withholding the tool result");
            return Err(ErrorBody::new(
                ErrorKind::Tool,
                format!(
                    "tool `{}`: the audit log {} cannot be written ({e}); tool results are withheld until it can",
                    req.tool,
                    audit.path().display()
                ),
            ));
        }
        drop(audit);
        match &result {
            Ok(out) => {
                tracing::debug!(run = %req.run_id, agent = %req.agent, tool = %req.tool, is_error = out.is_error, duration_us, "tool call")
            }
            Err(e) => {
                tracing::warn!(run = %req.run_id, agent = %req.agent, tool = %req.tool, duration_us, error = %e.message, "tool call failed")
            }
        }
        result.map(|out| ToolOutput { duration_us, ..out })
    }

    async fn call_tool_unaudited(&self, req: &CallToolRequest) -> Result<ToolOutput, ErrorBody> {
        let server = self.by_tool.get(&req.tool).ok_or_else(|| {
            ErrorBody::new(
                ErrorKind::NotFound,
                format!("no tool server offers a tool named `{}`", req.tool),
            )
        })?;
        let arguments: serde_json::Value = serde_json::from_str(&req.arguments).map_err(|e| {
            ErrorBody::new(
                ErrorKind::BadRequest,
                format!("arguments of tool `{}` are not valid JSON: {e}", req.tool),
            )
        })?;
        if !arguments.is_object() {
            return Err(ErrorBody::new(
                ErrorKind::BadRequest,
                format!("arguments of tool `{}` must be a JSON object", req.tool),
            ));
        }
        let deadline = Duration::from_millis(req.timeout_ms).min(self.tool_timeout);
        match server.call(&req.tool, arguments, deadline).await {
            Ok((content, is_error)) => Ok(ToolOutput {
                content,
                is_error,
                duration_us: 0,
            }),
            Err(e) => Err(ErrorBody::new(ErrorKind::Tool, e.to_string())),
        }
    }

    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatReply, ErrorBody> {
        self.providers.chat(req).await
    }
}
