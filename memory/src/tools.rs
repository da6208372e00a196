//! Memory as tools: the MCP memory server's knowledge-graph tools, same names, argument shapes
//! and result texts (pretty JSON, or its fixed success sentences), plus `semantic_search`.
//! Differences, each deliberate:
//! - every tool takes an optional `scope`; writes go to the run's write scope, reads cover every
//!   scope it may read, and entities carry `scope` when that is more than one;
//! - `read_graph` and `search_nodes` are paginated (`offset`, `limit`; `nextOffset` when more);
//! - `create_relations` refuses relations to entities that do not exist.

use caxton_ipc::api::ErrorKind;
use caxton_ipc::memory::{Graph, SearchMode, SearchQuery};
use caxton_ipc::toolhost::ToolSpec;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::graph::{MAX_PAGE, NewEntity, RelationKey, Store, StoreError};

/// Default page size of `read_graph` and `search_nodes`.
const DEFAULT_PAGE: u32 = 50;
/// Default number of `semantic_search` results.
const DEFAULT_RESULTS: u32 = 10;

/// Why a memory-tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool}: invalid arguments")]
    Arguments {
        tool: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{tool}: missing required argument `{field}`")]
    MissingArgument { tool: String, field: &'static str },
    #[error("{tool}: this agent may not write memory scope `{scope}` (it writes `{writes}`)")]
    WriteDenied {
        tool: String,
        scope: String,
        writes: String,
    },
    #[error("{tool}: this agent may not read memory scope `{scope}` (it reads: {})", reads.join(", "))]
    ReadDenied {
        tool: String,
        scope: String,
        reads: Vec<String>,
    },
    /// Not one of the memory tools (the MCP memory server's wording).
    #[error("Tool {0} not found")]
    UnknownTool(String),
    /// The store refused or failed; its message is the tool's (the MCP memory server's texts).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ToolError {
    /// The kind of error the caller is told.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ToolError::Arguments { .. } | ToolError::MissingArgument { .. } => {
                ErrorKind::BadRequest
            }
            ToolError::WriteDenied { .. } | ToolError::ReadDenied { .. } => {
                ErrorKind::PermissionDenied
            }
            ToolError::UnknownTool(_) => ErrorKind::NotFound,
            ToolError::Store(e) => e.kind(),
        }
    }
}

/// The scopes a call may use, as the service resolved them from the caller's grant.
pub struct Access<'a> {
    pub write: &'a str,
    pub read: &'a [String],
}

fn relation_schema(description: Option<&str>) -> Value {
    let mut v = json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "from": {"type": "string", "description": "The name of the entity where the relation starts"},
                "to": {"type": "string", "description": "The name of the entity where the relation ends"},
                "relationType": {"type": "string", "description": "The type of the relation"}
            },
            "required": ["from", "to", "relationType"]
        }
    });
    if let Some(d) = description {
        v["description"] = json!(d);
    }
    v
}

fn schema(properties: Value, required: &[&str]) -> String {
    let mut props = properties;
    props["scope"] = json!({
        "type": "string",
        "description": "Memory scope (global, agent:<name>, workspace:<name>); default: this agent's scope"
    });
    json!({"type": "object", "properties": props, "required": required}).to_string()
}

fn page_props(mut v: Value) -> Value {
    v["offset"] = json!({"type": "integer", "minimum": 0, "description": "Entities to skip (for the next page)"});
    v["limit"] = json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "description": "Entities per page"});
    v
}

/// The tool specs, in the MCP server's order.
pub fn specs() -> Vec<ToolSpec> {
    let spec = |name: &str, description: &str, input_schema: String| ToolSpec {
        name: name.into(),
        description: description.into(),
        input_schema,
        server: "memory".into(),
    };
    vec![
        spec(
            "create_entities",
            "Create multiple new entities in the knowledge graph",
            schema(
                json!({"entities": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string", "description": "The name of the entity"},
                    "entityType": {"type": "string", "description": "The type of the entity"},
                    "observations": {"type": "array", "items": {"type": "string"}, "description": "An array of observation contents associated with the entity"}
                }, "required": ["name", "entityType", "observations"]}}}),
                &["entities"],
            ),
        ),
        spec(
            "create_relations",
            "Create multiple new relations between entities in the knowledge graph. Relations should be in active voice",
            schema(json!({"relations": relation_schema(None)}), &["relations"]),
        ),
        spec(
            "add_observations",
            "Add new observations to existing entities in the knowledge graph",
            schema(
                json!({"observations": {"type": "array", "items": {"type": "object", "properties": {
                    "entityName": {"type": "string", "description": "The name of the entity to add the observations to"},
                    "contents": {"type": "array", "items": {"type": "string"}, "description": "An array of observation contents to add"}
                }, "required": ["entityName", "contents"]}}}),
                &["observations"],
            ),
        ),
        spec(
            "delete_entities",
            "Delete multiple entities and their associated relations from the knowledge graph",
            schema(
                json!({"entityNames": {"type": "array", "items": {"type": "string"}, "description": "An array of entity names to delete"}}),
                &["entityNames"],
            ),
        ),
        spec(
            "delete_observations",
            "Delete specific observations from entities in the knowledge graph",
            schema(
                json!({"deletions": {"type": "array", "items": {"type": "object", "properties": {
                    "entityName": {"type": "string", "description": "The name of the entity containing the observations"},
                    "observations": {"type": "array", "items": {"type": "string"}, "description": "An array of observations to delete"}
                }, "required": ["entityName", "observations"]}}}),
                &["deletions"],
            ),
        ),
        spec(
            "delete_relations",
            "Delete multiple relations from the knowledge graph",
            schema(
                json!({"relations": relation_schema(Some("An array of relations to delete"))}),
                &["relations"],
            ),
        ),
        spec(
            "read_graph",
            "Read the knowledge graph, one page of entities at a time (use nextOffset for the next page)",
            schema(page_props(json!({})), &[]),
        ),
        spec(
            "search_nodes",
            "Search for nodes in the knowledge graph based on a query",
            schema(
                page_props(
                    json!({"query": {"type": "string", "description": "The search query to match against entity names, types, and observation content"}}),
                ),
                &["query"],
            ),
        ),
        spec(
            "open_nodes",
            "Open specific nodes in the knowledge graph by their names",
            schema(
                json!({"names": {"type": "array", "items": {"type": "string"}, "description": "An array of entity names to retrieve"}}),
                &["names"],
            ),
        ),
        spec(
            "semantic_search",
            "Find entities whose observations mean something close to the query (embedding similarity, combined with keyword matches), best first",
            schema(
                json!({
                    "query": {"type": "string", "description": "What to look for, in natural language"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "description": "Results to return (default 10)"},
                    "offset": {"type": "integer", "minimum": 0},
                    "minSimilarity": {"type": "number", "minimum": 0, "maximum": 1, "description": "Drop semantic matches below this cosine similarity (default 0.3)"},
                    "entityTypes": {"type": "array", "items": {"type": "string"}, "description": "Only entities of these types"},
                    "mode": {"type": "string", "enum": ["hybrid", "semantic", "keyword"]}
                }),
                &["query"],
            ),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Args {
    scope: Option<String>,
    entities: Option<Vec<NewEntity>>,
    relations: Option<Vec<RelationKey>>,
    observations: Option<Vec<ObservationArg>>,
    entity_names: Option<Vec<String>>,
    deletions: Option<Vec<DeletionArg>>,
    names: Option<Vec<String>>,
    query: Option<String>,
    offset: Option<u32>,
    limit: Option<u32>,
    min_similarity: Option<f32>,
    entity_types: Option<Vec<String>>,
    mode: Option<SearchMode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObservationArg {
    entity_name: String,
    contents: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeletionArg {
    entity_name: String,
    observations: Vec<String>,
}

fn need<T>(v: Option<T>, tool: &str, field: &'static str) -> Result<T, ToolError> {
    v.ok_or_else(|| ToolError::MissingArgument {
        tool: tool.to_string(),
        field,
    })
}

fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Calls tool `name` with JSON `arguments` for a caller with `access`; returns the result text.
pub fn call(
    store: &Store,
    access: &Access,
    name: &str,
    arguments: &str,
) -> Result<String, ToolError> {
    let args: Args = serde_json::from_str(if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    })
    .map_err(|source| ToolError::Arguments {
        tool: name.to_string(),
        source,
    })?;
    let write = || -> Result<&str, ToolError> {
        match args.scope.as_deref() {
            None => Ok(access.write),
            Some(s) if s == access.write => Ok(access.write),
            Some(s) => Err(ToolError::WriteDenied {
                tool: name.to_string(),
                scope: s.to_string(),
                writes: access.write.to_string(),
            }),
        }
    };
    let read = || -> Result<Vec<String>, ToolError> {
        match args.scope.as_deref() {
            None => Ok(access.read.to_vec()),
            Some(s) if access.read.iter().any(|r| r == s) => Ok(vec![s.to_string()]),
            Some(s) => Err(ToolError::ReadDenied {
                tool: name.to_string(),
                scope: s.to_string(),
                reads: access.read.to_vec(),
            }),
        }
    };
    let show_scope = |scopes: &[String]| scopes.len() > 1;
    match name {
        "create_entities" => {
            let created =
                store.create_entities(write()?, &need(args.entities, name, "entities")?)?;
            Ok(pretty(&created))
        }
        "create_relations" => {
            let created =
                store.create_relations(write()?, &need(args.relations, name, "relations")?)?;
            Ok(pretty(&created))
        }
        "add_observations" => {
            let items: Vec<(String, Vec<String>)> = need(args.observations, name, "observations")?
                .into_iter()
                .map(|o| (o.entity_name, o.contents))
                .collect();
            let added = store.add_observations(write()?, &items)?;
            let out: Vec<Value> = added
                .into_iter()
                .map(|(n, a)| json!({"entityName": n, "addedObservations": a}))
                .collect();
            Ok(pretty(&out))
        }
        "delete_entities" => {
            store.delete_entities(write()?, &need(args.entity_names, name, "entityNames")?)?;
            Ok("Entities deleted successfully".into())
        }
        "delete_observations" => {
            let items: Vec<(String, Vec<String>)> = need(args.deletions, name, "deletions")?
                .into_iter()
                .map(|d| (d.entity_name, d.observations))
                .collect();
            store.delete_observations(write()?, &items)?;
            Ok("Observations deleted successfully".into())
        }
        "delete_relations" => {
            store.delete_relations(write()?, &need(args.relations, name, "relations")?)?;
            Ok("Relations deleted successfully".into())
        }
        "read_graph" | "search_nodes" => {
            let scopes = read()?;
            let offset = args.offset.unwrap_or(0);
            let limit = args.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
            let (graph, more) = if name == "read_graph" {
                store.read_graph(&scopes, offset, limit)?
            } else {
                store.search_nodes(&scopes, &need(args.query, name, "query")?, offset, limit)?
            };
            let next = more.then_some(offset + graph.entities.len() as u32);
            Ok(graph_text(&graph, show_scope(&scopes), next))
        }
        "open_nodes" => {
            let scopes = read()?;
            let graph = store.open_nodes(&scopes, &need(args.names, name, "names")?)?;
            Ok(graph_text(&graph, show_scope(&scopes), None))
        }
        "semantic_search" => {
            let scopes = read()?;
            let q = SearchQuery {
                query: need(args.query, name, "query")?,
                mode: args.mode.unwrap_or_default(),
                scopes: scopes.clone(),
                entity_types: args.entity_types.unwrap_or_default(),
                limit: args.limit.unwrap_or(DEFAULT_RESULTS).clamp(1, MAX_PAGE),
                offset: args.offset.unwrap_or(0),
                min_similarity: args.min_similarity.unwrap_or(0.3),
                with_observations: false,
            };
            let res = store.search(&q, &scopes)?;
            let results: Vec<Value> = res
                .hits
                .iter()
                .map(|h| {
                    let mut v = json!({"name": h.name, "entityType": h.entity_type, "score": (f64::from(h.score) * 1000.0).round() / 1000.0});
                    if let Some(sim) = h.similarity {
                        v["similarity"] = json!((f64::from(sim) * 1000.0).round() / 1000.0);
                    }
                    if let Some(m) = &h.matched {
                        v["observation"] = json!(m);
                    }
                    if show_scope(&scopes) {
                        v["scope"] = json!(h.scope);
                    }
                    v
                })
                .collect();
            let mut out = json!({"results": results});
            if res.more {
                out["nextOffset"] = json!(q.offset + res.hits.len() as u32);
            }
            Ok(pretty(&out))
        }
        other => Err(ToolError::UnknownTool(other.to_string())),
    }
}

/// A graph as the MCP server prints it: `{entities: [{name, entityType, observations}],
/// relations: [{from, to, relationType}]}`.
fn graph_text(g: &Graph, with_scope: bool, next_offset: Option<u32>) -> String {
    let entities: Vec<Value> = g
        .entities
        .iter()
        .map(|e| {
            let mut v = json!({
                "name": e.name,
                "entityType": e.entity_type,
                "observations": e.observations.iter().map(|o| o.text.as_str()).collect::<Vec<_>>(),
            });
            if with_scope {
                v["scope"] = json!(e.scope);
            }
            v
        })
        .collect();
    let relations: Vec<Value> = g
        .relations
        .iter()
        .map(|r| json!({"from": r.from, "to": r.to, "relationType": r.relation_type}))
        .collect();
    let mut out = json!({"entities": entities, "relations": relations});
    if let Some(n) = next_offset {
        out["nextOffset"] = json!(n);
    }
    pretty(&out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use caxton_ipc::error::Chain;

    use super::*;
    use crate::embed::LazyEmbedder;
    use crate::graph::Limits;

    /// A store without the embedding model (keyword search only), observations up to 64 bytes.
    fn store(dir: &Path) -> Store {
        Store::open(
            &dir.join("memory.db"),
            2,
            LazyEmbedder::new(dir.join("no-model"), 8),
            Limits {
                max_observation_bytes: 64,
                max_result_bytes: 64 * 1024,
            },
            1,
        )
        .expect("open")
    }

    #[test]
    fn errors_have_the_kind_callers_tell_apart_and_say_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let read = vec!["agent:a".to_string(), "global".to_string()];
        let access = Access {
            write: "agent:a",
            read: &read,
        };
        let fail = |tool: &str, args: &str| {
            let e = call(&store, &access, tool, args).expect_err(args);
            (e.kind(), Chain(&e).to_string())
        };
        call(
            &store,
            &access,
            "create_entities",
            r#"{"entities":[{"name":"Alice","entityType":"person","observations":["likes tea"]}]}"#,
        )
        .expect("create");

        // Arguments: the JSON error is the cause, after the tool's name.
        let (kind, text) = fail("create_entities", "{not json");
        assert_eq!(kind, ErrorKind::BadRequest);
        assert!(
            text.starts_with("create_entities: invalid arguments: key must be a string at line 1"),
            "{text}"
        );
        assert_eq!(
            fail("open_nodes", "{}"),
            (
                ErrorKind::BadRequest,
                "open_nodes: missing required argument `names`".into()
            )
        );
        // Scopes outside the grant.
        assert_eq!(
            fail("read_graph", r#"{"scope":"agent:b"}"#),
            (
                ErrorKind::PermissionDenied,
                "read_graph: this agent may not read memory scope `agent:b` (it reads: agent:a, global)".into()
            )
        );
        assert_eq!(
            fail("delete_entities", r#"{"scope":"global","entityNames":["x"]}"#),
            (
                ErrorKind::PermissionDenied,
                "delete_entities: this agent may not write memory scope `global` (it writes `agent:a`)".into()
            )
        );
        // Input the store refuses.
        assert_eq!(
            fail(
                "create_entities",
                r#"{"entities":[{"name":" ","entityType":"t","observations":[]}]}"#
            ),
            (
                ErrorKind::BadRequest,
                "an entity name must not be empty".into()
            )
        );
        let long = format!(
            r#"{{"observations":[{{"entityName":"Alice","contents":["{}"]}}]}}"#,
            "x".repeat(100)
        );
        let (kind, text) = fail("add_observations", &long);
        assert_eq!(kind, ErrorKind::BadRequest);
        assert!(
            text.starts_with("an observation of 100 bytes exceeds the limit of 64 bytes ([memory] max_observation_bytes)"),
            "{text}"
        );
        // Entities that are not there.
        assert_eq!(
            fail(
                "add_observations",
                r#"{"observations":[{"entityName":"Nobody","contents":["x"]}]}"#
            ),
            (
                ErrorKind::NotFound,
                "Entity with name Nobody not found in scope agent:a".into()
            )
        );
        let (kind, text) = fail(
            "create_relations",
            r#"{"relations":[{"from":"Alice","to":"Nobody","relationType":"knows"}]}"#,
        );
        assert_eq!(kind, ErrorKind::NotFound);
        assert!(
            text.contains("Nobody not found in scope agent:a; create it before relating it"),
            "{text}"
        );
        assert_eq!(
            fail("forget_everything", "{}"),
            (
                ErrorKind::NotFound,
                "Tool forget_everything not found".into()
            )
        );
        // Semantic search without the model: what is missing, where, and how to install it.
        let (kind, text) = fail("semantic_search", r#"{"query":"tea","mode":"semantic"}"#);
        assert_eq!(kind, ErrorKind::Internal);
        let model_dir = dir.path().join("no-model");
        assert_eq!(
            text,
            format!(
                "cannot embed the query for semantic search: the embedding model is not installed: \
                 model.safetensors is missing in {} (run scripts/install-models.sh, or set [memory] model_dir)",
                model_dir.display()
            )
        );
        // Keyword search needs no model.
        let found = call(
            &store,
            &access,
            "semantic_search",
            r#"{"query":"tea","mode":"keyword"}"#,
        )
        .expect("keyword search");
        assert!(found.contains("Alice"), "{found}");
    }
}
