//! The toolhost's state: loaded tool servers indexed by tool name, and the providers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use caxton_ipc::api::{ErrorBody, ErrorKind};
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
}

impl Host {
    /// Loads the built-in tool servers, those in the configured tools directory, and the providers.
    pub async fn load(config: &ServerConfig) -> anyhow::Result<Host> {
        let runtime = WasmRuntime::new()?;
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
        Ok(Host {
            _runtime: runtime,
            servers,
            by_tool,
            providers,
            tool_timeout: config.toolhost.tool_timeout,
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

    pub async fn call_tool(&self, req: &CallToolRequest) -> Result<ToolOutput, ErrorBody> {
        let started = Instant::now();
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
        let result = server.call(&req.tool, arguments, deadline).await;
        let duration_us = started.elapsed().as_micros() as u64;
        match result {
            Ok((content, is_error)) => {
                tracing::debug!(run = %req.run_id, agent = %req.agent, tool = %req.tool, is_error, duration_us, "tool call");
                Ok(ToolOutput {
                    content,
                    is_error,
                    duration_us,
                })
            }
            Err(e) => {
                tracing::warn!(run = %req.run_id, agent = %req.agent, tool = %req.tool, duration_us, error = %e, "tool call failed");
                Err(ErrorBody::new(ErrorKind::Tool, e.to_string()))
            }
        }
    }

    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatReply, ErrorBody> {
        self.providers.chat(req).await
    }
}
