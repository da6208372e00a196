//! `caxton memory search|store|show|stats|export|import|prune`: the operator's view of the
//! memory service, through the daemon (which relays to `caxton-memory`, the only process that
//! opens the database). The operator sees and writes every scope.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use caxton_ipc::api::{ApiRequest, ApiResponse};
use caxton_ipc::memory::{
    EXPORT_FORMAT, EXPORT_VERSION, ExportFile, Graph, MemoryRequest, MemoryResponse, PruneRequest,
    SearchMode, SearchQuery, StoreRequest, parse_mcp_jsonl,
};
use clap::{Subcommand, ValueEnum};

use crate::cli::{EXIT_FAILED, EXIT_OK, print_json, unexpected};
use crate::client::Client;

/// Entities per export request.
const EXPORT_PAGE: u32 = 200;
/// Entities per import request (each is one transaction; relations go after all entities).
const IMPORT_CHUNK: usize = 500;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    Hybrid,
    Semantic,
    Keyword,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// Caxton's own export (`caxton memory export`).
    Caxton,
    /// The MCP memory server's `memory.jsonl`.
    McpJsonl,
}

#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Search memories: semantic (embedding similarity), keyword (full text) or both (default).
    Search {
        query: String,
        #[arg(long, value_enum, default_value = "hybrid")]
        mode: Mode,
        /// A scope to search (repeatable): global, agent:NAME, workspace:NAME [default: all].
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Only entities of this type (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Drop semantic matches below this cosine similarity.
        #[arg(long, default_value_t = 0.3)]
        min_similarity: f32,
        /// Print each hit's observations too.
        #[arg(long)]
        observations: bool,
        #[arg(long)]
        json: bool,
    },
    /// Store observations about an entity (created if new) in a scope.
    Store {
        /// The entity's name.
        name: String,
        /// Observation text (repeatable).
        #[arg(long = "observation", short = 'o', required = true)]
        observations: Vec<String>,
        #[arg(long = "type", default_value = "note")]
        entity_type: String,
        #[arg(long, default_value = "global")]
        scope: String,
    },
    /// Show entities by name, with observations and relations.
    Show {
        names: Vec<String>,
        /// Only this scope [default: every scope].
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Counts per scope, database size, model state; `--check` runs SQLite's integrity check.
    Stats {
        #[arg(long)]
        check: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write the graph (all scopes, or the ones named) as JSON, timestamps included.
    Export {
        /// Output file [default: stdout].
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Import a Caxton export, or the MCP memory server's memory.jsonl (into --scope).
    Import {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "caxton")]
        format: ImportFormat,
        /// Target scope of an MCP JSONL import.
        #[arg(long, default_value = "global")]
        scope: String,
        /// Empty the scopes the file contains first (otherwise merge: add what is missing).
        #[arg(long)]
        replace: bool,
    },
    /// Remove entities not updated for a while, or beyond a count, per scope. Without options
    /// the configured retention ([memory.retention]) applies.
    Prune {
        #[arg(long)]
        scope: Option<String>,
        /// Remove entities not updated for this long (e.g. 30d).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Keep at most this many entities per scope (the most recently updated).
        #[arg(long)]
        max_entities: Option<u64>,
        /// Report what would go without removing it.
        #[arg(long)]
        dry_run: bool,
    },
}

fn call(socket: &Path, req: MemoryRequest) -> anyhow::Result<Result<MemoryResponse, ApiResponse>> {
    match Client::connect(socket)?.call(&ApiRequest::Memory(req))? {
        ApiResponse::Memory(r) => Ok(Ok(r)),
        other => Ok(Err(other)),
    }
}

pub fn memory(command: MemoryCommand, socket: &Path) -> anyhow::Result<u8> {
    match command {
        MemoryCommand::Search {
            query,
            mode,
            scopes,
            types,
            limit,
            offset,
            min_similarity,
            observations,
            json,
        } => {
            let q = SearchQuery {
                query,
                mode: match mode {
                    Mode::Hybrid => SearchMode::Hybrid,
                    Mode::Semantic => SearchMode::Semantic,
                    Mode::Keyword => SearchMode::Keyword,
                },
                scopes,
                entity_types: types,
                limit,
                offset,
                min_similarity,
                with_observations: observations,
            };
            match call(socket, MemoryRequest::Search(q))? {
                Ok(MemoryResponse::Search(r)) if json => print_json(&r),
                Ok(MemoryResponse::Search(r)) => {
                    if r.hits.is_empty() {
                        eprintln!("no matches");
                    }
                    // Cosine similarity where the semantic search found the entity (a fused
                    // hybrid score means little to a person), else the ranking score.
                    for h in &r.hits {
                        let score = match h.similarity {
                            Some(s) => format!("{s:.3}"),
                            None => format!("({:.3})", h.score),
                        };
                        println!("{score:>7}  {} ({}) [{}]", h.name, h.entity_type, h.scope);
                        if let Some(m) = &h.matched
                            && h.observations.is_empty()
                        {
                            println!("       {m}");
                        }
                        for o in &h.observations {
                            println!("       - {}", o.text);
                        }
                    }
                    if r.more {
                        eprintln!("(more: --offset {})", offset as usize + r.hits.len());
                    }
                    Ok(EXIT_OK)
                }
                Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
                Err(other) => unexpected(other),
            }
        }
        MemoryCommand::Store {
            name,
            observations,
            entity_type,
            scope,
        } => {
            let n = observations.len();
            let req = MemoryRequest::Store(StoreRequest {
                scope: scope.clone(),
                name: name.clone(),
                entity_type,
                observations,
            });
            match call(socket, req)? {
                Ok(MemoryResponse::Ok) => {
                    println!("stored {n} observation(s) about `{name}` in {scope}");
                    Ok(EXIT_OK)
                }
                Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
                Err(other) => unexpected(other),
            }
        }
        MemoryCommand::Show { names, scope, json } => {
            match call(
                socket,
                MemoryRequest::Show {
                    scope,
                    names: names.clone(),
                },
            )? {
                Ok(MemoryResponse::Graph(g)) if json => print_json(&g),
                Ok(MemoryResponse::Graph(g)) => {
                    for e in &g.entities {
                        println!("{} ({}) [{}]", e.name, e.entity_type, e.scope);
                        for o in &e.observations {
                            println!("  - {}", o.text);
                        }
                    }
                    for r in &g.relations {
                        println!("{} -{}-> {} [{}]", r.from, r.relation_type, r.to, r.scope);
                    }
                    let missing: Vec<_> = names
                        .iter()
                        .filter(|n| !g.entities.iter().any(|e| &e.name == *n))
                        .collect();
                    if missing.is_empty() {
                        Ok(EXIT_OK)
                    } else {
                        eprintln!("caxton: no entity named {missing:?}");
                        Ok(EXIT_FAILED)
                    }
                }
                Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
                Err(other) => unexpected(other),
            }
        }
        MemoryCommand::Stats { check, json } => {
            match call(
                socket,
                MemoryRequest::Stats {
                    integrity_check: check,
                },
            )? {
                Ok(MemoryResponse::Stats(s)) if json => print_json(&s),
                Ok(MemoryResponse::Stats(s)) => {
                    println!(
                        "database:   {} ({} KiB, schema v{})",
                        s.database,
                        s.file_bytes / 1024,
                        s.schema_version
                    );
                    println!(
                        "model:      {} ({})",
                        s.model,
                        if s.model_loaded {
                            "loaded"
                        } else {
                            "not loaded yet"
                        }
                    );
                    println!(
                        "vectors:    {} indexed, {} waiting for the model",
                        s.indexed_vectors, s.unembedded
                    );
                    println!("resident:   {:.1} MiB", s.resident_bytes as f64 / 1048576.0);
                    for sc in &s.scopes {
                        println!(
                            "  {:<28} {:>8} entities {:>8} observations {:>8} relations",
                            sc.scope, sc.entities, sc.observations, sc.relations
                        );
                    }
                    match s.integrity.as_deref() {
                        None => Ok(EXIT_OK),
                        Some("ok") => {
                            println!("integrity:  ok");
                            Ok(EXIT_OK)
                        }
                        Some(problems) => {
                            println!("integrity:  FAILED\n{problems}");
                            Ok(EXIT_FAILED)
                        }
                    }
                }
                Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
                Err(other) => unexpected(other),
            }
        }
        MemoryCommand::Export { output, scopes } => {
            let mut graph = Graph::default();
            let mut offset = 0;
            loop {
                let req = MemoryRequest::Export {
                    scopes: scopes.clone(),
                    offset,
                    limit: EXPORT_PAGE,
                };
                match call(socket, req)? {
                    Ok(MemoryResponse::ExportPage { graph: page, more }) => {
                        offset += page.entities.len() as u32;
                        graph.entities.extend(page.entities);
                        graph.relations.extend(page.relations);
                        if !more {
                            break;
                        }
                    }
                    Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
                    Err(other) => return unexpected(other),
                }
            }
            // Relations in creation order, whatever page their entity was on.
            graph.relations.sort_by_key(|r| r.created_ms);
            let file = ExportFile {
                format: EXPORT_FORMAT.into(),
                version: EXPORT_VERSION,
                graph,
            };
            let text = serde_json::to_string_pretty(&file)? + "\n";
            match output {
                Some(path) => {
                    write_atomically(&path, text.as_bytes())?;
                    eprintln!(
                        "exported {} entities and {} relations to {}",
                        file.graph.entities.len(),
                        file.graph.relations.len(),
                        path.display()
                    );
                }
                None => std::io::stdout().write_all(text.as_bytes())?,
            }
            Ok(EXIT_OK)
        }
        MemoryCommand::Import {
            file,
            format,
            scope,
            replace,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let graph = match format {
                ImportFormat::Caxton => {
                    let f: ExportFile = serde_json::from_str(&text).with_context(|| {
                        format!(
                            "{} is not a Caxton memory export (for the MCP memory server's file, add --format mcp-jsonl)",
                            file.display()
                        )
                    })?;
                    if f.format != EXPORT_FORMAT || f.version > EXPORT_VERSION {
                        anyhow::bail!(
                            "{}: format {} v{} is not one this caxton reads ({EXPORT_FORMAT} v{EXPORT_VERSION})",
                            file.display(),
                            f.format,
                            f.version
                        );
                    }
                    f.graph
                }
                ImportFormat::McpJsonl => parse_mcp_jsonl(&text, &scope, now_ms())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
            };
            import(socket, graph, replace)
        }
        MemoryCommand::Prune {
            scope,
            older_than,
            max_entities,
            dry_run,
        } => {
            let req = MemoryRequest::Prune(PruneRequest {
                scope,
                older_than_ms: older_than.map(|d| d.as_millis() as u64),
                max_entities,
                dry_run,
            });
            match call(socket, req)? {
                Ok(MemoryResponse::Pruned(r)) => {
                    println!(
                        "{} {} entities, {} observations, {} relations",
                        if r.dry_run { "would remove" } else { "removed" },
                        r.entities,
                        r.observations,
                        r.relations
                    );
                    Ok(EXIT_OK)
                }
                Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
                Err(other) => unexpected(other),
            }
        }
    }
}

/// Sends a graph in chunks: entities first (the first chunk empties the replaced scopes), then
/// relations, so every relation finds both ends.
fn import(socket: &Path, graph: Graph, replace: bool) -> anyhow::Result<u8> {
    let mut replace_scopes: Vec<String> = if replace {
        let mut s: Vec<String> = graph
            .entities
            .iter()
            .map(|e| e.scope.clone())
            .chain(graph.relations.iter().map(|r| r.scope.clone()))
            .collect();
        s.sort();
        s.dedup();
        s
    } else {
        vec![]
    };
    let mut chunks: Vec<Graph> = graph
        .entities
        .chunks(IMPORT_CHUNK)
        .map(|c| Graph {
            entities: c.to_vec(),
            relations: vec![],
        })
        .collect();
    chunks.extend(graph.relations.chunks(IMPORT_CHUNK * 4).map(|c| Graph {
        entities: vec![],
        relations: c.to_vec(),
    }));
    if chunks.is_empty() {
        chunks.push(Graph::default());
    }
    let mut total = caxton_ipc::memory::ImportReport::default();
    for chunk in chunks {
        let req = MemoryRequest::Import {
            graph: chunk,
            replace_scopes: std::mem::take(&mut replace_scopes),
        };
        match call(socket, req)? {
            Ok(MemoryResponse::Imported(r)) => {
                total.entities += r.entities;
                total.observations += r.observations;
                total.relations += r.relations;
                total.skipped += r.skipped;
            }
            Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
            Err(ApiResponse::Error(e)) => {
                eprintln!(
                    "caxton: import stopped: {} (imported before that: {} entities, {} observations, {} relations)",
                    e.message, total.entities, total.observations, total.relations
                );
                return Ok(crate::cli::exit_for(e.kind));
            }
            Err(other) => return unexpected(other),
        }
    }
    println!(
        "imported {} entities, {} observations, {} relations",
        total.entities, total.observations, total.relations
    );
    if total.skipped > 0 {
        eprintln!(
            "caxton: skipped {} relations whose entities are in neither the file nor the scope",
            total.skipped
        );
    }
    Ok(EXIT_OK)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes `path` through a temporary file in the same directory and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
