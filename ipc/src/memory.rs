//! Messages to `caxton-memory`, the process that owns the knowledge graph (SQLite) and computes
//! embeddings. Workers and the supervisor connect to its socket (`Hello`, then request/response
//! frames). A worker's connection is bound to the grant the supervisor registered for its run
//! (`Attach`), so the scopes it may touch are decided by the service, never by the worker.

use serde::{Deserialize, Serialize};

use crate::api::ErrorBody;
use crate::toolhost::ToolSpec;

/// How a worker reaches the memory service for its run (in the `WorkerJob`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryAccess {
    pub socket: String,
    /// The run's token, registered with its grant by the supervisor; revoked when the run ends.
    pub token: String,
}

/// Dimensions of an All-MiniLM-L6-v2 embedding.
pub const EMBEDDING_DIMS: usize = 384;

/// The scopes one run may touch. `write` is where new memories go by default; `read` lists every
/// scope it may read (it includes `write`). Scopes are `agent:<name>`, `workspace:<name>` or `global`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryGrant {
    pub agent: String,
    /// The run the grant is for (its memory-tool calls are audited under it).
    pub run_id: String,
    pub write: String,
    pub read: Vec<String>,
}

/// An entity as the MCP memory server shapes it, plus its scope and timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    pub name: String,
    pub entity_type: String,
    pub scope: String,
    /// In the order they were added. Empty when observations were not asked for.
    pub observations: Vec<Observation>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub text: String,
    pub created_ms: u64,
}

/// A directed, typed edge between two entities of one scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Relation {
    pub from: String,
    pub relation_type: String,
    pub to: String,
    pub scope: String,
    pub created_ms: u64,
}

/// A slice of the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    pub entities: Vec<Entity>,
    pub relations: Vec<Relation>,
}

/// How `Search` ranks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    /// Embedding similarity of observations (and entity names) to the query.
    Semantic,
    /// SQLite FTS5 (bm25) over names, types and observations.
    Keyword,
    /// Both, fused by reciprocal rank.
    #[default]
    Hybrid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchQuery {
    pub query: String,
    pub mode: SearchMode,
    /// Scopes to search; empty = every scope the caller may read.
    pub scopes: Vec<String>,
    /// Only entities of these types; empty = any.
    pub entity_types: Vec<String>,
    pub limit: u32,
    pub offset: u32,
    /// Semantic hits below this cosine similarity are dropped.
    pub min_similarity: f32,
    /// Include each hit's observations (otherwise names, types and the best-matching one).
    pub with_observations: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub name: String,
    pub entity_type: String,
    pub scope: String,
    /// The ranking score: cosine similarity in semantic mode, -bm25 in keyword mode, the
    /// reciprocal-rank fusion of both in hybrid mode.
    pub score: f32,
    /// Cosine similarity of the best observation, when the semantic search found this entity.
    pub similarity: Option<f32>,
    /// The observation that matched best, if one did.
    pub matched: Option<String>,
    pub observations: Vec<Observation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// Hits beyond this page exist.
    pub more: bool,
    /// True when results were cut to stay under the response size cap.
    pub truncated: bool,
}

/// One page of entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub offset: u32,
    pub limit: u32,
}

/// A new memory from the CLI or the API: an entity (created if needed) and observations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRequest {
    pub scope: String,
    pub name: String,
    pub entity_type: String,
    pub observations: Vec<String>,
}

/// What `prune` removes. `None` fields fall back to the configured retention of each scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneRequest {
    /// One scope, or every scope when `None`.
    pub scope: Option<String>,
    /// Entities not updated for this long go.
    pub older_than_ms: Option<u64>,
    /// Keep at most this many entities per scope (the most recently updated).
    pub max_entities: Option<u64>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    pub entities: u64,
    pub observations: u64,
    pub relations: u64,
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeStats {
    pub scope: String,
    pub entities: u64,
    pub observations: u64,
    pub relations: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    pub database: String,
    pub schema_version: u32,
    pub file_bytes: u64,
    pub scopes: Vec<ScopeStats>,
    /// Observations still waiting for an embedding (the model was missing when they were stored).
    pub unembedded: u64,
    pub model: String,
    pub model_loaded: bool,
    pub indexed_vectors: u64,
    /// `PRAGMA integrity_check`, when asked for.
    pub integrity: Option<String>,
    pub resident_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub entities: u64,
    pub observations: u64,
    pub relations: u64,
    /// Relations left out because an end is missing from the file and the database.
    pub skipped: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryRequest {
    /// Supervisor only: allow a run's worker to attach with `token`.
    Register {
        token: String,
        grant: MemoryGrant,
    },
    /// Supervisor only: the run is over.
    Revoke {
        token: String,
    },
    /// Worker: bind this connection to the grant registered under `token`. Answered with
    /// `Tools`, the memory tools' specs.
    Attach {
        token: String,
    },
    /// The memory tools (MCP memory server names and shapes, plus `semantic_search`).
    Tools,
    /// Worker: call a memory tool with JSON arguments; answers `ToolOutput` (JSON text).
    CallTool {
        name: String,
        arguments: String,
    },
    /// Worker: the memories relevant to a run's input, for its prompt context.
    Recall {
        query: String,
        limit: u32,
        min_similarity: f32,
    },
    /// Worker: store a finished interaction (`auto_store`).
    StoreInteraction {
        run_id: String,
        input: String,
        answer: String,
    },
    Store(StoreRequest),
    Search(SearchQuery),
    /// Entities by name, with their observations and the relations among them.
    Show {
        scope: Option<String>,
        names: Vec<String>,
    },
    Stats {
        integrity_check: bool,
    },
    /// A page of the graph of `scopes` (every scope when empty) with timestamps, for export:
    /// entities in creation order, each relation on the page of its `from` entity.
    Export {
        scopes: Vec<String>,
        offset: u32,
        limit: u32,
    },
    /// Writes a graph as it is, timestamps included; `replace_scopes` are emptied first (in the
    /// same transaction). Large files are sent in several requests, relations after entities.
    Import {
        graph: Graph,
        replace_scopes: Vec<String>,
    },
    Prune(PruneRequest),
    /// Embedding vectors of `texts` (at most 256), for checks and benchmarks.
    Embed {
        texts: Vec<String>,
    },
    /// The supervisor's health check: answered `Ok` at once by the connection's task.
    Ping,
    /// Supervisor: start a conversation (refused if the id is taken).
    ConversationCreate {
        info: crate::conversation::ConversationInfo,
    },
    /// Supervisor: a conversation with its newest `max_entries` entries (one idle past
    /// `[memory] conversation_ttl` is marked expired first).
    ConversationLoad {
        id: String,
        max_entries: u32,
    },
    /// Supervisor: a run's entries, and the state and holder it leaves the conversation in.
    ConversationAppend {
        id: String,
        entries: Vec<crate::conversation::Entry>,
        state: crate::conversation::ConversationState,
        holder: String,
    },
    /// Supervisor: conversations, newest first (only `owner_uid`'s and `owner_token`'s when
    /// set).
    ConversationList {
        owner_uid: Option<u32>,
        #[serde(default)]
        owner_token: Option<String>,
        limit: u32,
    },
    /// Supervisor: mark a conversation completed (it can be read, not continued).
    ConversationClose {
        id: String,
    },
    /// Supervisor: delete a conversation and its entries.
    ConversationDelete {
        id: String,
    },
    /// Supervisor only: the memory service's metrics in the Prometheus text format.
    Metrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryResponse {
    Ok,
    Tools(Vec<ToolSpec>),
    ToolOutput(String),
    /// Memories as text lines for a prompt, best first.
    Recalled(Vec<String>),
    Search(SearchResults),
    Graph(Graph),
    Stats(MemoryStats),
    ExportPage {
        graph: Graph,
        more: bool,
    },
    Imported(ImportReport),
    Pruned(PruneReport),
    Embeddings(Vec<Vec<f32>>),
    Conversation(Box<crate::conversation::Conversation>),
    Conversations(Vec<crate::conversation::ConversationInfo>),
    Error(ErrorBody),
    /// The answer to `Metrics`: exposition text of the memory service's own families.
    Metrics(String),
}

/// The export file: `{"format": "caxton-memory", "version": 1, "entities": […], "relations": […]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFile {
    pub format: String,
    pub version: u32,
    #[serde(flatten)]
    pub graph: Graph,
}

pub const EXPORT_FORMAT: &str = "caxton-memory";
pub const EXPORT_VERSION: u32 = 1;

/// Reads the MCP memory server's JSONL file (`{"type":"entity","name","entityType","observations"}`
/// and `{"type":"relation","from","to","relationType"}` lines) into a graph in `scope`, stamped
/// `now_ms`. Blank lines and unknown `type`s are skipped, as the server does; an entity repeated
/// by name is merged.
pub fn parse_mcp_jsonl(text: &str, scope: &str, now_ms: u64) -> Result<Graph, String> {
    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "lowercase")]
    enum Line {
        Entity {
            name: String,
            #[serde(rename = "entityType")]
            entity_type: String,
            #[serde(default)]
            observations: Vec<String>,
        },
        Relation {
            from: String,
            to: String,
            #[serde(rename = "relationType")]
            relation_type: String,
        },
    }
    let mut graph = Graph::default();
    let mut by_name: std::collections::HashMap<String, usize> = Default::default();
    for (n, raw) in text.split('\n').enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| format!("line {}: {e}", n + 1))?;
        if !matches!(
            value.get("type").and_then(|t| t.as_str()),
            Some("entity" | "relation")
        ) {
            continue;
        }
        match serde_json::from_value::<Line>(value).map_err(|e| format!("line {}: {e}", n + 1))? {
            Line::Entity {
                name,
                entity_type,
                observations,
            } => {
                let i = *by_name.entry(name.clone()).or_insert_with(|| {
                    graph.entities.push(Entity {
                        name,
                        entity_type,
                        scope: scope.to_string(),
                        observations: vec![],
                        created_ms: now_ms,
                        updated_ms: now_ms,
                    });
                    graph.entities.len() - 1
                });
                let e = &mut graph.entities[i];
                for text in observations {
                    if !e.observations.iter().any(|o| o.text == text) {
                        e.observations.push(Observation {
                            text,
                            created_ms: now_ms,
                        });
                    }
                }
            }
            Line::Relation {
                from,
                to,
                relation_type,
            } => graph.relations.push(Relation {
                from,
                relation_type,
                to,
                scope: scope.to_string(),
                created_ms: now_ms,
            }),
        }
    }
    Ok(graph)
}

/// Names of the memory tools an agent may list in `tools`.
pub const TOOL_NAMES: &[&str] = &[
    "create_entities",
    "create_relations",
    "add_observations",
    "delete_entities",
    "delete_observations",
    "delete_relations",
    "read_graph",
    "search_nodes",
    "open_nodes",
    "semantic_search",
];

/// Checks a scope's spelling: `global`, `agent:<name>` or `workspace:<name>`.
pub fn check_scope(scope: &str) -> Result<(), String> {
    let ok_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 128
            && n.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match scope.split_once(':') {
        None if scope == "global" => Ok(()),
        Some(("agent" | "workspace", name)) if ok_name(name) => Ok(()),
        _ => Err(format!(
            "invalid memory scope `{scope}`: use `global`, `agent:<name>` or `workspace:<name>` (names: letters, digits, - _ .)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_jsonl_lines() {
        let text = "{\"type\":\"entity\",\"name\":\"A\",\"entityType\":\"person\",\"observations\":[\"x\"]}\n\n\
                    {\"type\":\"other\"}\n\
                    {\"type\":\"entity\",\"name\":\"A\",\"entityType\":\"person\",\"observations\":[\"x\",\"y\"]}\n\
                    {\"type\":\"relation\",\"from\":\"A\",\"to\":\"B\",\"relationType\":\"knows\"}";
        let g = parse_mcp_jsonl(text, "global", 7).expect("parse");
        assert_eq!(g.entities.len(), 1);
        assert_eq!(g.entities[0].observations.len(), 2);
        assert_eq!(g.relations[0].relation_type, "knows");
        let err = parse_mcp_jsonl("{\"type\":\"entity\"}\nnot json", "global", 0).expect_err("bad");
        assert!(err.starts_with("line 1"), "{err}");
    }

    #[test]
    fn scopes() {
        assert!(check_scope("global").is_ok());
        assert!(check_scope("agent:calc-1").is_ok());
        assert!(check_scope("workspace:team.x").is_ok());
        for bad in [
            "",
            "agent",
            "agent:",
            "agents:x",
            "global:x",
            "agent:a b",
            "workspace:../x",
        ] {
            assert!(check_scope(bad).is_err(), "{bad}");
        }
    }
}
