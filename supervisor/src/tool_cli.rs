//! `caxton tool install|list|show|remove|call`: tool package management and direct tool calls,
//! through the daemon (which relays to the toolhost, the only process that touches WASM).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use caxton_ipc::api::{ApiRequest, ApiResponse};
use caxton_ipc::tool::{ToolManifest, ToolPackageInfo};
use caxton_ipc::toolhost::InstallToolRequest;
use clap::Subcommand;

use crate::cli::{EXIT_FAILED, EXIT_OK, error_exit, print_json, unexpected};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// Install a tool package: a directory holding `tool.toml` and its module (or the path of
    /// the `tool.toml` itself). The daemon validates and compiles it before serving it.
    Install {
        path: PathBuf,
        /// Replace an installed package of the same name.
        #[arg(long)]
        replace: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the loaded tool packages with their tools and grant status.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one package: its tools, requests, grants, denials, problems and limits.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove an installed tool package.
    Remove { name: String },
    /// Call one tool with JSON arguments, as the operator (the call is audited). Prints the
    /// tool's text; exit 1 when the tool reports an error.
    Call {
        /// The tool's name (not the package's), e.g. `calculate`.
        tool: String,
        /// The arguments object as JSON, e.g. '{"expression": "2+2"}'.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Deadline of the call (capped by the tool's own limit).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
}

pub fn tool(command: ToolCommand, socket: &Path) -> anyhow::Result<u8> {
    match command {
        ToolCommand::Install {
            path,
            replace,
            json,
        } => {
            let req = read_package(&path, replace)?;
            match Client::connect(socket)?.call(&ApiRequest::InstallTool(req))? {
                ApiResponse::ToolInstalled(info) if json => print_json(&info),
                ApiResponse::ToolInstalled(info) => {
                    println!(
                        "installed {} {} ({} tools: {})",
                        info.name,
                        info.version,
                        info.tools.len(),
                        info.tools.join(", ")
                    );
                    print_grant_status(&info);
                    Ok(EXIT_OK)
                }
                other => unexpected(other),
            }
        }
        ToolCommand::List { json } => {
            let packages = list(socket)?;
            if json {
                return print_json(&packages);
            }
            for p in &packages {
                let status = if !p.problems.is_empty() {
                    "DISABLED"
                } else if p.builtin {
                    "built-in"
                } else {
                    "installed"
                };
                println!(
                    "{:<14} {:<8} {:<9} tools={:<40} {}",
                    p.name,
                    p.version,
                    status,
                    p.tools.join(","),
                    p.description
                );
            }
            Ok(EXIT_OK)
        }
        ToolCommand::Show { name, json } => {
            let packages = list(socket)?;
            let Some(p) = packages.iter().find(|p| p.name == name) else {
                let names: Vec<_> = packages.iter().map(|p| p.name.as_str()).collect();
                eprintln!(
                    "caxton: no tool package named `{name}` (loaded: {}); see `caxton tool list`",
                    names.join(", ")
                );
                return Ok(EXIT_FAILED);
            };
            if json {
                return print_json(p);
            }
            println!("name:        {} {}", p.name, p.version);
            println!("description: {}", p.description);
            println!(
                "origin:      {}",
                if p.builtin { "built-in" } else { "installed" }
            );
            println!("module:      sha256 {}", p.module_sha256);
            println!("tools:       {}", p.tools.join(", "));
            println!(
                "limits:      memory={}MiB timeout={}ms max_concurrency={}",
                p.memory_mb, p.timeout_ms, p.max_concurrency
            );
            print_grant_status(p);
            Ok(EXIT_OK)
        }
        ToolCommand::Remove { name } => {
            match Client::connect(socket)?.call(&ApiRequest::RemoveTool { name })? {
                ApiResponse::ToolRemoved { name } => {
                    println!("removed {name}");
                    Ok(EXIT_OK)
                }
                other => unexpected(other),
            }
        }
        ToolCommand::Call {
            tool,
            args,
            timeout,
            json,
        } => {
            let parsed: serde_json::Value = serde_json::from_str(&args)
                .with_context(|| format!("--args is not valid JSON: {args}"))?;
            anyhow::ensure!(
                parsed.is_object(),
                "--args must be a JSON object, like '{{\"text\": \"hi\"}}'"
            );
            let req = ApiRequest::CallTool {
                tool,
                arguments: args,
                timeout_ms: timeout.map(|t| t.as_millis() as u64),
            };
            match Client::connect(socket)?.call(&req)? {
                ApiResponse::ToolOutput(out) => {
                    if json {
                        print_json(&out)?;
                    } else if out.is_error {
                        eprintln!("caxton: the tool reported an error: {}", out.content);
                    } else {
                        println!("{}", out.content);
                    }
                    Ok(if out.is_error { EXIT_FAILED } else { EXIT_OK })
                }
                ApiResponse::Error(e) => error_exit(&e),
                other => unexpected(other),
            }
        }
    }
}

fn list(socket: &Path) -> anyhow::Result<Vec<ToolPackageInfo>> {
    match Client::connect(socket)?.call(&ApiRequest::ListTools)? {
        ApiResponse::Tools(p) => Ok(p),
        ApiResponse::Error(e) => anyhow::bail!("{}", e.message),
        other => anyhow::bail!("unexpected response from the daemon: {other:?}"),
    }
}

fn print_grant_status(p: &ToolPackageInfo) {
    for g in &p.granted {
        println!("granted:     {g}");
    }
    for d in &p.denied {
        println!("denied:      {d} (requested, not granted)");
    }
    for problem in &p.problems {
        println!("PROBLEM:     {problem}");
    }
    if !p.problems.is_empty() {
        println!(
            "the package serves no calls until its [tools.{}] grant in caxton.toml matches its manifest",
            p.name
        );
    }
}

/// Reads a package directory (or its `tool.toml`) into an install request.
fn read_package(path: &Path, replace: bool) -> anyhow::Result<InstallToolRequest> {
    let manifest_path = if path.is_dir() {
        path.join("tool.toml")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read the manifest {}", manifest_path.display()))?;
    let manifest = ToolManifest::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", manifest_path.display()))?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let module = dir.join(manifest.module_file());
    let wasm = std::fs::read(&module)
        .with_context(|| format!("cannot read the module {}", module.display()))?;
    anyhow::ensure!(
        wasm.len() < caxton_ipc::MAX_FRAME_LEN as usize - 64 * 1024,
        "the module {} is {} bytes; modules up to about 8 MiB can be installed",
        module.display(),
        wasm.len()
    );
    Ok(InstallToolRequest {
        manifest: text,
        wasm,
        replace,
    })
}
