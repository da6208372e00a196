//! `caxton tool install|list|show|remove|call`: tool package management and direct tool calls,
//! through the daemon (which relays to the toolhost, the only process that touches WASM).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use caxton_ipc::api::{ApiRequest, ApiResponse};
use caxton_ipc::tool::{InstalledPackage, ToolManifest, ToolPackageInfo};
use caxton_ipc::toolhost::InstallToolRequest;
use clap::Subcommand;

use crate::cli::{EXIT_FAILED, EXIT_OK, error_exit, print_json, unexpected};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// Install a tool package: a directory holding `tool.toml` and its module (or the path of
    /// the `tool.toml` itself). The daemon validates and compiles it before serving it.
    ///
    /// What a package may do comes from the operator's `[tools.<name>]` grant in caxton.toml,
    /// keyed by the package's name: a newly installed package gets whatever that grant gives
    /// the requests in its manifest, and a replacement (`--replace`) gets the same grant the
    /// version it replaces had. So `--replace` is refused when the new manifest requests
    /// anything the installed version did not (a directory, write access, an HTTP origin or
    /// `"*"`, an environment variable, a secret), naming each new request and what the grant
    /// gives it; review the grant, then add `--allow-new-requests`. Every install prints what
    /// is granted to the new version, what it requested and is denied, any problem that
    /// disables it, and, for a replacement, the version it replaced.
    Install {
        /// The package directory (or its `tool.toml`).
        path: PathBuf,
        /// Replace an installed package of the same name; its `[tools.<name>]` grant then
        /// applies to the new version.
        #[arg(long)]
        replace: bool,
        /// With --replace: accept a new version that requests more than the installed one.
        #[arg(long, requires = "replace")]
        allow_new_requests: bool,
        /// Print the installed package, and the version it replaced, as JSON.
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
            allow_new_requests,
            json,
        } => {
            let mut req = read_package(&path, replace)?;
            req.allow_new_requests = allow_new_requests;
            match Client::connect(socket)?.call(&ApiRequest::InstallTool(req))? {
                ApiResponse::ToolInstalled(installed) if json => print_json(&installed),
                ApiResponse::ToolInstalled(installed) => {
                    print_installed(&installed);
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

/// What an install did, and what the new version is granted.
fn print_installed(installed: &InstalledPackage) {
    let p = &installed.package;
    println!(
        "installed {} {} ({} tools: {})",
        p.name,
        p.version,
        p.tools.len(),
        p.tools.join(", ")
    );
    if let Some(r) = &installed.replaced {
        println!(
            "replaced:    {} {} (module sha256 {}); the [tools.{}] grant in caxton.toml applies to {} now",
            p.name, r.version, r.module_sha256, p.name, p.version
        );
        for n in &r.new_requests {
            println!("new request: {n} (not requested by {})", r.version);
        }
    }
    if p.granted.is_empty() {
        println!("granted:     nothing");
    }
    print_grant_status(p);
    println!(
        "limits:      memory={}MiB timeout={}ms max_concurrency={}",
        p.memory_mb, p.timeout_ms, p.max_concurrency
    );
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
        allow_new_requests: false,
    })
}
