//! The knowledge graph over the database and the vector index: every read and write the service
//! offers, each in one transaction. Scopes arrive here already checked against the caller's grant
//! (`server.rs`); this layer validates sizes and shapes and keeps the index in step with commits.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use caxton_config::MemoryConfig;
use caxton_ipc::api::ErrorKind;
use caxton_ipc::error::Chain;
use caxton_ipc::memory::{
    Entity, Graph, ImportReport, MemoryStats, Observation, PruneReport, PruneRequest, Relation,
    ScopeStats, SearchHit, SearchMode, SearchQuery, SearchResults,
};
use rusqlite::{OptionalExtension, params, params_from_iter};

use crate::db::{self, Conn, DbError, Pool, now_ms};
use crate::embed::{EmbedError, LazyEmbedder};
use crate::index::{self, SlotMeta, VectorIndex};

/// Longest entity name, type or relation type (bytes).
pub const MAX_NAME_BYTES: usize = 256;
/// Most items (entities, relations, observations) in one write.
pub const MAX_ITEMS: usize = 1000;
/// Largest page of `read_graph` and search results.
pub const MAX_PAGE: u32 = 200;
/// Reciprocal-rank-fusion constant for hybrid ranking (the usual 60).
const RRF_K: f32 = 60.0;

pub struct Limits {
    pub max_observation_bytes: usize,
    pub max_result_bytes: usize,
}

pub struct Store {
    pool: Pool,
    path: PathBuf,
    index: RwLock<VectorIndex>,
    pub embedder: LazyEmbedder,
    limits: Limits,
    threads: usize,
}

/// An entity to create, in the MCP memory server's shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewEntity {
    pub name: String,
    #[serde(rename = "entityType")]
    pub entity_type: String,
    #[serde(default)]
    pub observations: Vec<String>,
}

/// A relation to create or delete, in the MCP memory server's shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RelationKey {
    pub from: String,
    pub to: String,
    #[serde(rename = "relationType")]
    pub relation_type: String,
}

/// What a store operation can fail with. [`StoreError::kind`] tells the caller's side apart:
/// a bad request, an entity that is not there, a busy database, or a failure of the service.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (at start).
    #[error(transparent)]
    Open(#[from] DbError),
    /// A name, type or observation that is blank.
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} `{start}…` is {bytes} bytes; the limit is {MAX_NAME_BYTES}")]
    NameTooLong {
        what: &'static str,
        /// The first characters of the name, to recognise it by.
        start: String,
        bytes: usize,
    },
    #[error(
        "an observation of {bytes} bytes exceeds the limit of {limit} bytes ([memory] max_observation_bytes); split it into several observations"
    )]
    ObservationTooLarge { bytes: usize, limit: usize },
    #[error("{count} {what} in one request; the limit is {MAX_ITEMS}")]
    TooMany { what: &'static str, count: usize },
    /// An entity a write needs is not in the scope (the MCP memory server's wording).
    #[error("Entity with name {name} not found in scope {scope}")]
    EntityNotFound { name: String, scope: String },
    /// A relation names an entity that is not in the scope.
    #[error("Entity with name {name} not found in scope {scope}; create it before relating it")]
    RelationEndNotFound { name: String, scope: String },
    /// Another writer held the database past the busy timeout.
    #[error("memory database busy: cannot {what}; retry later")]
    Busy {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed; `what` is its purpose.
    #[error("memory database: cannot {what}")]
    Sql {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("memory database: no connection available")]
    Pool(#[source] r2d2::Error),
    #[error("no conversation `{id}`")]
    ConversationNotFound { id: String },
    #[error("conversation `{id}` exists already")]
    ConversationExists { id: String },
    #[error("{0}")]
    BadConversation(String),
    /// `what` could not be embedded (the model is missing or failed).
    #[error("cannot embed {what}")]
    Embed {
        what: &'static str,
        #[source]
        source: Box<EmbedError>,
    },
    /// An entity inserted (or found) a moment ago in the same transaction is gone: a bug.
    #[error("an imported entity vanished: {name} in scope {scope}")]
    Vanished { name: String, scope: String },
}

impl StoreError {
    /// The kind of error the caller is told.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Empty { .. }
            | StoreError::NameTooLong { .. }
            | StoreError::ObservationTooLarge { .. }
            | StoreError::TooMany { .. } => ErrorKind::BadRequest,
            StoreError::EntityNotFound { .. }
            | StoreError::RelationEndNotFound { .. }
            | StoreError::ConversationNotFound { .. } => ErrorKind::NotFound,
            StoreError::ConversationExists { .. } | StoreError::BadConversation(_) => {
                ErrorKind::BadRequest
            }
            StoreError::Busy { .. } => ErrorKind::Busy,
            StoreError::Open(_)
            | StoreError::Sql { .. }
            | StoreError::Pool(_)
            | StoreError::Embed { .. }
            | StoreError::Vanished { .. } => ErrorKind::Internal,
        }
    }

    /// A statement's failure: [`StoreError::Busy`] when the database stayed locked, else
    /// [`StoreError::Sql`].
    fn sql(what: &'static str, source: rusqlite::Error) -> StoreError {
        match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy { what, source }
            }
            _ => StoreError::Sql { what, source },
        }
    }

    /// True for a foreign-key violation (the entity was deleted under the statement).
    fn is_foreign_key_violation(&self) -> bool {
        matches!(
            self,
            StoreError::Sql {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
        )
    }
}

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

/// Names a failed statement by its purpose.
pub(crate) trait SqlContext<T> {
    fn ctx(self, what: &'static str) -> Result<T>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, what: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::sql(what, source))
    }
}

/// `?, ?, ?` for `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// An observation waiting for its vector to enter the index after the commit.
struct Pending {
    observation: i64,
    entity: i64,
    scope: String,
    entity_type: String,
    vector: Vec<f32>,
}

impl Store {
    pub fn open(
        database: &Path,
        pool_size: u32,
        embedder: LazyEmbedder,
        limits: Limits,
        threads: usize,
    ) -> Result<Store> {
        let pool = db::open(database, pool_size)?;
        let store = Store {
            pool,
            path: database.to_owned(),
            index: RwLock::new(VectorIndex::default()),
            embedder,
            limits,
            threads,
        };
        store.load_index()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> Result<Conn> {
        self.pool.get().map_err(StoreError::Pool)
    }

    /// Reads every stored vector into the index (at start).
    fn load_index(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let conn = self.conn()?;
        let what = "load the stored vectors";
        let mut stmt = conn
            .prepare(
                "SELECT o.id, o.entity_id, e.scope, e.entity_type, o.embedding
                 FROM observations o JOIN entities e ON e.id = o.entity_id
                 WHERE o.embedding IS NOT NULL",
            )
            .ctx(what)?;
        let mut rows = stmt.query([]).ctx(what)?;
        let mut idx = self.index.write().unwrap_or_else(|p| p.into_inner());
        let mut bad_blobs = 0u64;
        while let Some(r) = rows.next().ctx(what)? {
            let blob: Vec<u8> = r.get(4).ctx(what)?;
            let Some(v) = index::from_blob(&blob) else {
                bad_blobs += 1;
                continue;
            };
            let scope: String = r.get(2).ctx(what)?;
            let ty: String = r.get(3).ctx(what)?;
            let meta = SlotMeta {
                observation: r.get(0).ctx(what)?,
                entity: r.get(1).ctx(what)?,
                scope: idx.intern(&scope),
                entity_type: idx.intern(&ty),
            };
            idx.insert(meta, &v);
        }
        if bad_blobs > 0 {
            tracing::warn!(
                bad_blobs,
                "observations with a malformed embedding were left out of the index"
            );
        }
        tracing::info!(
            vectors = idx.len(),
            ms = started.elapsed().as_millis() as u64,
            "vector index loaded"
        );
        Ok(())
    }

    fn apply(&self, added: Vec<Pending>, removed: &[i64]) {
        let mut idx = self.index.write().unwrap_or_else(|p| p.into_inner());
        for o in removed {
            idx.remove(*o);
        }
        for p in added {
            let meta = SlotMeta {
                observation: p.observation,
                entity: p.entity,
                scope: idx.intern(&p.scope),
                entity_type: idx.intern(&p.entity_type),
            };
            idx.insert(meta, &p.vector);
        }
    }

    /// Vectors for `texts`, or `None` when the model is not installed (the observations are then
    /// stored without one and embedded by [`Store::backfill`] once it is).
    fn embed_for_storage(&self, texts: &[&str]) -> Result<Option<Vec<Vec<f32>>>> {
        if texts.is_empty() {
            return Ok(Some(Vec::new()));
        }
        if !self.embedder.installed() {
            tracing::warn!(dir = %self.embedder.dir().display(), "storing observations without embeddings: the model is not installed");
            return Ok(None);
        }
        self.embedder
            .embed(texts)
            .map(Some)
            .map_err(|source| StoreError::Embed {
                what: "the observations",
                source: Box::new(source),
            })
    }

    fn check_name(&self, what: &'static str, s: &str) -> Result<()> {
        if s.trim().is_empty() {
            return Err(StoreError::Empty { what });
        }
        if s.len() > MAX_NAME_BYTES {
            return Err(StoreError::NameTooLong {
                what,
                start: s.chars().take(40).collect(),
                bytes: s.len(),
            });
        }
        Ok(())
    }

    fn check_observation(&self, text: &str) -> Result<()> {
        if text.trim().is_empty() {
            return Err(StoreError::Empty {
                what: "an observation",
            });
        }
        if text.len() > self.limits.max_observation_bytes {
            return Err(StoreError::ObservationTooLarge {
                bytes: text.len(),
                limit: self.limits.max_observation_bytes,
            });
        }
        Ok(())
    }

    /// Checks a new entity: its name, type, and observations.
    fn check_entity(&self, name: &str, entity_type: &str, observations: &[String]) -> Result<()> {
        self.check_name("an entity name", name)?;
        self.check_name("an entity type", entity_type)?;
        Self::check_count("observations", observations.len())?;
        observations
            .iter()
            .try_for_each(|o| self.check_observation(o))
    }

    fn check_count(what: &'static str, count: usize) -> Result<()> {
        if count > MAX_ITEMS {
            return Err(StoreError::TooMany { what, count });
        }
        Ok(())
    }

    /// Creates entities that do not exist yet in `scope` (existing names are skipped, as the MCP
    /// memory server does); returns the ones created.
    pub fn create_entities(&self, scope: &str, items: &[NewEntity]) -> Result<Vec<NewEntity>> {
        Self::check_count("entities", items.len())?;
        for e in items {
            self.check_entity(&e.name, &e.entity_type, &e.observations)?;
        }
        let texts: Vec<&str> = items
            .iter()
            .flat_map(|e| e.observations.iter().map(String::as_str))
            .collect();
        let vectors = self.embed_for_storage(&texts)?;
        let now = now_ms();
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        let mut created = Vec::new();
        let mut pending = Vec::new();
        let mut k = 0;
        for e in items {
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO entities (scope, name, entity_type, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![scope, e.name, e.entity_type, now as i64],
                )
                .ctx("insert an entity")?;
            let base = k;
            k += e.observations.len();
            if inserted == 0 {
                continue;
            }
            let entity = tx.last_insert_rowid();
            let mut seen = HashSet::new();
            let mut kept = Vec::new();
            for (j, text) in e.observations.iter().enumerate() {
                if !seen.insert(text.as_str()) {
                    continue;
                }
                let v = vectors.as_ref().map(|v| &v[base + j]);
                let id = insert_observation(&tx, entity, text, now, v)?;
                if let Some(v) = v {
                    pending.push(Pending {
                        observation: id,
                        entity,
                        scope: scope.to_string(),
                        entity_type: e.entity_type.clone(),
                        vector: v.clone(),
                    });
                }
                kept.push(text.clone());
            }
            created.push(NewEntity {
                name: e.name.clone(),
                entity_type: e.entity_type.clone(),
                observations: kept,
            });
        }
        tx.commit().ctx("commit")?;
        self.apply(pending, &[]);
        Ok(created)
    }

    /// Adds observations to existing entities of `scope`, skipping ones they already have.
    /// An unknown entity fails the whole request and nothing is stored.
    pub fn add_observations(
        &self,
        scope: &str,
        items: &[(String, Vec<String>)],
    ) -> Result<Vec<(String, Vec<String>)>> {
        Self::check_count("entries", items.len())?;
        for (name, contents) in items {
            self.check_name("an entity name", name)?;
            Self::check_count("observations", contents.len())?;
            for o in contents {
                self.check_observation(o)?;
            }
        }
        // Find what is new before embedding, so only new texts pay for a vector.
        let mut conn = self.conn()?;
        let mut plan = Vec::new();
        for (name, contents) in items {
            let (entity, ty) = conn
                .query_row(
                    "SELECT id, entity_type FROM entities WHERE scope = ?1 AND name = ?2",
                    params![scope, name],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
                .ctx("look up an entity")?
                .ok_or_else(|| StoreError::EntityNotFound {
                    name: name.clone(),
                    scope: scope.to_string(),
                })?;
            let have = observation_texts(&conn, entity)?;
            let mut new: Vec<String> = Vec::new();
            for c in contents {
                if !have.contains(c) && !new.contains(c) {
                    new.push(c.clone());
                }
            }
            plan.push((name.clone(), entity, ty, new));
        }
        let texts: Vec<&str> = plan
            .iter()
            .flat_map(|p| p.3.iter().map(String::as_str))
            .collect();
        let vectors = self.embed_for_storage(&texts)?;
        let now = now_ms();
        let tx = write_tx(&mut conn)?;
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut k = 0;
        for (name, entity, ty, new) in plan {
            let mut added = Vec::new();
            for text in new {
                // Re-checked inside the transaction: a concurrent request may have added it.
                let exists: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM observations WHERE entity_id = ?1 AND text = ?2)",
                        params![entity, text],
                        |r| r.get(0),
                    )
                    .ctx("look for an existing observation")?;
                let v = vectors.as_ref().map(|v| &v[k]);
                k += 1;
                if exists {
                    continue;
                }
                let id = insert_observation(&tx, entity, &text, now, v).map_err(|e| {
                    if e.is_foreign_key_violation() {
                        StoreError::EntityNotFound {
                            name: name.clone(),
                            scope: scope.to_string(),
                        }
                    } else {
                        e
                    }
                })?;
                if let Some(v) = v {
                    pending.push(Pending {
                        observation: id,
                        entity,
                        scope: scope.to_string(),
                        entity_type: ty.clone(),
                        vector: v.clone(),
                    });
                }
                added.push(text);
            }
            if !added.is_empty() {
                tx.execute(
                    "UPDATE entities SET updated_ms = ?1 WHERE id = ?2",
                    params![now as i64, entity],
                )
                .ctx("update an entity's time")?;
            }
            out.push((name, added));
        }
        tx.commit().ctx("commit")?;
        self.apply(pending, &[]);
        Ok(out)
    }

    /// `caxton memory store`: creates the entity if it is missing and adds the observations it
    /// does not have yet, in one transaction (a failure leaves nothing behind).
    pub fn store_entity(
        &self,
        scope: &str,
        name: &str,
        entity_type: &str,
        observations: &[String],
    ) -> Result<()> {
        self.check_entity(name, entity_type, observations)?;
        let mut texts: Vec<&str> = Vec::new();
        for o in observations {
            if !texts.contains(&o.as_str()) {
                texts.push(o);
            }
        }
        let vectors = self.embed_for_storage(&texts)?;
        let now = now_ms();
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        tx.execute(
            "INSERT OR IGNORE INTO entities (scope, name, entity_type, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![scope, name, entity_type, now as i64],
        )
        .ctx("insert an entity")?;
        let (entity, ty) = tx
            .query_row(
                "SELECT id, entity_type FROM entities WHERE scope = ?1 AND name = ?2",
                params![scope, name],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .ctx("look up an entity")?;
        let have = observation_texts(&tx, entity)?;
        let mut pending = Vec::new();
        for (k, text) in texts.iter().enumerate() {
            if have.contains(*text) {
                continue;
            }
            let v = vectors.as_ref().map(|v| &v[k]);
            let id = insert_observation(&tx, entity, text, now, v)?;
            if let Some(v) = v {
                pending.push(Pending {
                    observation: id,
                    entity,
                    scope: scope.to_string(),
                    entity_type: ty.clone(),
                    vector: v.clone(),
                });
            }
        }
        tx.execute(
            "UPDATE entities SET updated_ms = ?1 WHERE id = ?2",
            params![now as i64, entity],
        )
        .ctx("update an entity's time")?;
        tx.commit().ctx("commit")?;
        self.apply(pending, &[]);
        Ok(())
    }

    /// Creates relations between existing entities of `scope`; existing ones are skipped.
    pub fn create_relations(&self, scope: &str, items: &[RelationKey]) -> Result<Vec<RelationKey>> {
        Self::check_count("relations", items.len())?;
        for r in items {
            self.check_name("a relation's `from`", &r.from)?;
            self.check_name("a relation's `to`", &r.to)?;
            self.check_name("a relation type", &r.relation_type)?;
        }
        let now = now_ms() as i64;
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        let mut created = Vec::new();
        for r in items {
            let from = entity_id(&tx, scope, &r.from)?;
            let to = entity_id(&tx, scope, &r.to)?;
            let (Some(from), Some(to)) = (from, to) else {
                let missing = if from.is_none() { &r.from } else { &r.to };
                return Err(StoreError::RelationEndNotFound {
                    name: missing.clone(),
                    scope: scope.to_string(),
                });
            };
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO relations (from_id, relation_type, to_id, created_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![from, r.relation_type, to, now],
                )
                .ctx("insert a relation")?;
            if n > 0 {
                created.push(r.clone());
            }
        }
        tx.commit().ctx("commit")?;
        Ok(created)
    }

    /// Deletes entities (with their observations and every relation touching them).
    pub fn delete_entities(&self, scope: &str, names: &[String]) -> Result<u64> {
        Self::check_count("names", names.len())?;
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        let mut removed = Vec::new();
        let mut n = 0;
        for name in names {
            let Some(id) = entity_id(&tx, scope, name)? else {
                continue;
            };
            removed.extend(observation_ids(&tx, id)?);
            n += tx
                .execute("DELETE FROM entities WHERE id = ?1", [id])
                .ctx("delete an entity")? as u64;
        }
        tx.commit().ctx("commit")?;
        self.apply(Vec::new(), &removed);
        Ok(n)
    }

    /// Deletes the given observations of each entity (unknown entities are ignored).
    pub fn delete_observations(&self, scope: &str, items: &[(String, Vec<String>)]) -> Result<u64> {
        Self::check_count("entries", items.len())?;
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        let mut removed = Vec::new();
        let now = now_ms() as i64;
        for (name, texts) in items {
            let Some(entity) = entity_id(&tx, scope, name)? else {
                continue;
            };
            let before = removed.len();
            for t in texts {
                let mut stmt = tx
                    .prepare_cached(
                        "DELETE FROM observations WHERE entity_id = ?1 AND text = ?2 RETURNING id",
                    )
                    .ctx("delete an observation")?;
                let ids = stmt
                    .query_map(params![entity, t], |r| r.get::<_, i64>(0))
                    .ctx("delete an observation")?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .ctx("delete an observation")?;
                removed.extend(ids);
            }
            if removed.len() > before {
                tx.execute(
                    "UPDATE entities SET updated_ms = ?1 WHERE id = ?2",
                    params![now, entity],
                )
                .ctx("update an entity's time")?;
            }
        }
        tx.commit().ctx("commit")?;
        self.apply(Vec::new(), &removed);
        Ok(removed.len() as u64)
    }

    pub fn delete_relations(&self, scope: &str, items: &[RelationKey]) -> Result<u64> {
        Self::check_count("relations", items.len())?;
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        let mut n = 0;
        for r in items {
            n += tx
                .execute(
                    "DELETE FROM relations WHERE relation_type = ?3
                     AND from_id = (SELECT id FROM entities WHERE scope = ?1 AND name = ?2)
                     AND to_id = (SELECT id FROM entities WHERE scope = ?1 AND name = ?4)",
                    params![scope, r.from, r.relation_type, r.to],
                )
                .ctx("delete a relation")? as u64;
        }
        tx.commit().ctx("commit")?;
        Ok(n)
    }

    /// A page of the graph of `scopes`: entities in creation order, with their observations, and
    /// the relations that start at them (so each relation appears on exactly one page).
    /// Returns the graph and whether more entities follow.
    pub fn read_graph(&self, scopes: &[String], offset: u32, limit: u32) -> Result<(Graph, bool)> {
        let conn = self.conn()?;
        let limit = limit.clamp(1, MAX_PAGE);
        let ids: Vec<i64> = {
            let q = format!(
                "SELECT id FROM entities WHERE scope IN ({}) ORDER BY id LIMIT ? OFFSET ?",
                marks(scopes.len())
            );
            let mut stmt = conn.prepare(&q).ctx("list a page of entities")?;
            let mut args: Vec<rusqlite::types::Value> =
                scopes.iter().map(|s| s.clone().into()).collect();
            args.push(i64::from(limit + 1).into());
            args.push(i64::from(offset).into());
            stmt.query_map(params_from_iter(args), |r| r.get(0))
                .ctx("list a page of entities")?
                .collect::<rusqlite::Result<_>>()
                .ctx("list a page of entities")?
        };
        let more = ids.len() > limit as usize;
        let ids = &ids[..ids.len().min(limit as usize)];
        let entities = load_entities(&conn, ids, true)?;
        let relations = strip(relations_of(&conn, ids, RelationEnds::From)?);
        Ok((
            Graph {
                entities,
                relations,
            },
            more,
        ))
    }

    /// The MCP `search_nodes`: entities whose name, type or an observation contains `query`,
    /// case-insensitively, plus the relations touching them.
    pub fn search_nodes(
        &self,
        scopes: &[String],
        query: &str,
        offset: u32,
        limit: u32,
    ) -> Result<(Graph, bool)> {
        let _timer = crate::metrics::time_search("search_nodes");
        let conn = self.conn()?;
        let limit = limit.clamp(1, MAX_PAGE);
        let q = format!(
            "SELECT e.id FROM entities e WHERE e.scope IN ({}) AND (
                 instr(caxton_lower(e.name), ?1) OR instr(caxton_lower(e.entity_type), ?1)
                 OR EXISTS (SELECT 1 FROM observations o WHERE o.entity_id = e.id AND instr(caxton_lower(o.text), ?1)))
             ORDER BY e.id LIMIT ?2 OFFSET ?3",
            (0..scopes.len())
                .map(|i| format!("?{}", i + 4))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut args: Vec<rusqlite::types::Value> = vec![
            query.to_lowercase().into(),
            i64::from(limit + 1).into(),
            i64::from(offset).into(),
        ];
        args.extend(scopes.iter().map(|s| s.clone().into()));
        let ids: Vec<i64> = conn
            .prepare(&q)
            .ctx("search entity names and observations")?
            .query_map(params_from_iter(args), |r| r.get(0))
            .ctx("search entity names and observations")?
            .collect::<rusqlite::Result<_>>()
            .ctx("search entity names and observations")?;
        let more = ids.len() > limit as usize;
        let ids = &ids[..ids.len().min(limit as usize)];
        Ok((
            Graph {
                entities: load_entities(&conn, ids, true)?,
                relations: strip(relations_of(&conn, ids, RelationEnds::Either)?),
            },
            more,
        ))
    }

    /// The MCP `open_nodes`: the named entities of `scopes` and the relations touching them.
    pub fn open_nodes(&self, scopes: &[String], names: &[String]) -> Result<Graph> {
        Self::check_count("names", names.len())?;
        let conn = self.conn()?;
        let q = format!(
            "SELECT id FROM entities WHERE scope IN ({}) AND name IN ({}) ORDER BY id",
            marks(scopes.len()),
            marks(names.len())
        );
        let args = scopes.iter().chain(names).cloned();
        let ids: Vec<i64> = conn
            .prepare(&q)
            .ctx("look up entities by name")?
            .query_map(params_from_iter(args), |r| r.get(0))
            .ctx("look up entities by name")?
            .collect::<rusqlite::Result<_>>()
            .ctx("look up entities by name")?;
        Ok(Graph {
            entities: load_entities(&conn, &ids, true)?,
            relations: strip(relations_of(&conn, &ids, RelationEnds::Either)?),
        })
    }

    /// Semantic, keyword or hybrid search over `scopes` (already narrowed to what the caller may read).
    pub fn search(&self, q: &SearchQuery, scopes: &[String]) -> Result<SearchResults> {
        let _timer = crate::metrics::time_search(match q.mode {
            SearchMode::Semantic => "semantic",
            SearchMode::Keyword => "keyword",
            SearchMode::Hybrid => "hybrid",
        });
        let limit = q.limit.clamp(1, MAX_PAGE) as usize;
        let wanted = q.offset as usize + limit;
        // Candidates per list: enough that grouping observations into entities still fills a page.
        let depth = (wanted * 4).max(64);
        let semantic = match q.mode {
            SearchMode::Keyword => None,
            SearchMode::Semantic => Some(self.semantic(q, scopes, depth)?),
            SearchMode::Hybrid => match self.semantic(q, scopes, depth) {
                Ok(hits) => Some(hits),
                Err(e) if !self.embedder.installed() => {
                    tracing::warn!(error = %Chain(&e), "hybrid search without its semantic half");
                    None
                }
                Err(e) => return Err(e),
            },
        };
        let keyword = match q.mode {
            SearchMode::Semantic => None,
            _ => Some(self.keyword(q, scopes, depth)?),
        };
        let similarity: HashMap<i64, f32> = semantic
            .iter()
            .flatten()
            .map(|(id, score, _)| (*id, *score))
            .collect();
        // Each list: (entity id, score, best observation), best first.
        let ranked: Vec<(i64, f32, Option<String>)> = match (semantic, keyword) {
            (Some(s), None) => s,
            (None, Some(k)) => k,
            (Some(s), Some(k)) => {
                let mut fused: HashMap<i64, (f32, Option<String>)> = HashMap::new();
                for list in [&s, &k] {
                    for (rank, (id, _, m)) in list.iter().enumerate() {
                        let e = fused.entry(*id).or_insert((0.0, None));
                        e.0 += 1.0 / (RRF_K + rank as f32 + 1.0);
                        if e.1.is_none() {
                            e.1 = m.clone();
                        }
                    }
                }
                let mut v: Vec<_> = fused.into_iter().map(|(id, (s, m))| (id, s, m)).collect();
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                v
            }
            (None, None) => Vec::new(),
        };
        let more = ranked.len() > wanted;
        let page: Vec<_> = ranked
            .into_iter()
            .skip(q.offset as usize)
            .take(limit)
            .collect();
        let conn = self.conn()?;
        let ids: Vec<i64> = page.iter().map(|p| p.0).collect();
        let entities = load_entities(&conn, &ids, q.with_observations)?;
        let by_id: HashMap<i64, Entity> = ids.iter().copied().zip(entities).collect();
        let mut hits = Vec::new();
        let mut size = 0usize;
        let mut truncated = false;
        for (id, score, matched) in page {
            let Some(e) = by_id.get(&id) else { continue };
            let hit = SearchHit {
                name: e.name.clone(),
                entity_type: e.entity_type.clone(),
                scope: e.scope.clone(),
                score,
                similarity: similarity.get(&id).copied(),
                matched,
                observations: e.observations.clone(),
            };
            size += hit.name.len()
                + hit.matched.as_ref().map_or(0, String::len)
                + hit
                    .observations
                    .iter()
                    .map(|o| o.text.len() + 16)
                    .sum::<usize>()
                + 64;
            if size > self.limits.max_result_bytes && !hits.is_empty() {
                truncated = true;
                break;
            }
            hits.push(hit);
        }
        Ok(SearchResults {
            hits,
            more: more || truncated,
            truncated,
        })
    }

    fn scope_filter(&self, scopes: &[String], types: &[String]) -> (Vec<u32>, Option<Vec<u32>>) {
        let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
        let s = scopes.iter().filter_map(|s| idx.lookup(s)).collect();
        let t = (!types.is_empty()).then(|| types.iter().filter_map(|t| idx.lookup(t)).collect());
        (s, t)
    }

    /// Entities by the cosine similarity of their best observation: an int8 scan for candidates,
    /// then exact scores from the stored vectors.
    fn semantic(
        &self,
        q: &SearchQuery,
        scopes: &[String],
        depth: usize,
    ) -> Result<Vec<(i64, f32, Option<String>)>> {
        let query = self
            .embedder
            .embed_query(&q.query)
            .map_err(|source| StoreError::Embed {
                what: "the query for semantic search",
                source: Box::new(source),
            })?;
        Ok(self
            .semantic_vector(&query, scopes, &q.entity_types, q.min_similarity, depth)?
            .into_iter()
            .map(|(id, score, text)| (id, score, Some(text)))
            .collect())
    }

    /// The search itself, given the query vector (the benchmark calls this to time it apart
    /// from the embedding). Returns (entity, exact cosine, best observation), best first.
    pub fn semantic_vector(
        &self,
        query: &[f32],
        scopes: &[String],
        types: &[String],
        min_similarity: f32,
        depth: usize,
    ) -> Result<Vec<(i64, f32, String)>> {
        let (scope_ids, type_ids) = self.scope_filter(scopes, types);
        let keep = |m: &SlotMeta| {
            scope_ids.contains(&m.scope)
                && type_ids.as_ref().is_none_or(|t| t.contains(&m.entity_type))
        };
        let candidates = {
            let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
            idx.scan(query, depth, &keep, self.threads)
        };
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached("SELECT embedding, text FROM observations WHERE id = ?1")
            .ctx("read the stored vectors of the candidates")?;
        let mut best: HashMap<i64, (f32, String)> = HashMap::new();
        for c in candidates {
            let Some((blob, text)) = stmt
                .query_row([c.meta.observation], |r| {
                    Ok((r.get::<_, Option<Vec<u8>>>(0)?, r.get::<_, String>(1)?))
                })
                .optional()
                .ctx("read the stored vectors of the candidates")?
            else {
                continue; // deleted since the scan
            };
            let Some(v) = blob.as_deref().and_then(index::from_blob) else {
                continue;
            };
            let score = index::dot(query, &v);
            if score < min_similarity {
                continue;
            }
            let e = best
                .entry(c.meta.entity)
                .or_insert((f32::MIN, String::new()));
            if score > e.0 {
                *e = (score, text);
            }
        }
        let mut out: Vec<_> = best.into_iter().map(|(id, (s, t))| (id, s, t)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Entities by FTS5 bm25 over names, types and observations (best first; score = -bm25).
    fn keyword(
        &self,
        q: &SearchQuery,
        scopes: &[String],
        depth: usize,
    ) -> Result<Vec<(i64, f32, Option<String>)>> {
        let Some(fts) = fts_query(&q.query) else {
            return Ok(Vec::new());
        };
        let conn = self.conn()?;
        let types_clause = if q.entity_types.is_empty() {
            String::new()
        } else {
            format!(" AND e.entity_type IN ({})", marks(q.entity_types.len()))
        };
        let scope_marks = marks(scopes.len());
        let sql_text = format!(
            "SELECT e.id, bm25(observations_fts) AS rank, o.text FROM observations_fts
               JOIN observations o ON o.id = observations_fts.rowid JOIN entities e ON e.id = o.entity_id
               WHERE observations_fts MATCH ? AND e.scope IN ({scope_marks}){types_clause}
             UNION ALL
             SELECT e.id, bm25(entities_fts) AS rank, NULL FROM entities_fts JOIN entities e ON e.id = entities_fts.rowid
               WHERE entities_fts MATCH ? AND e.scope IN ({scope_marks}){types_clause}
             ORDER BY rank LIMIT ?"
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        for _ in 0..2 {
            args.push(fts.clone().into());
            args.extend(scopes.iter().map(|s| s.clone().into()));
            args.extend(q.entity_types.iter().map(|s| s.clone().into()));
        }
        args.push((depth as i64).into());
        let rows: Vec<(i64, f64, Option<String>)> = conn
            .prepare(&sql_text)
            .ctx("run a keyword search")?
            .query_map(params_from_iter(args), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .ctx("run a keyword search")?
            .collect::<rusqlite::Result<_>>()
            .ctx("run a keyword search")?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (id, rank, text) in rows {
            if seen.insert(id) {
                out.push((id, -rank as f32, text));
            }
        }
        Ok(out)
    }

    /// Lines for a prompt: the memories most relevant to `query` in `scopes`.
    pub fn recall(
        &self,
        scopes: &[String],
        query: &str,
        limit: u32,
        min_similarity: f32,
    ) -> Result<Vec<String>> {
        let mode = if self.embedder.installed() {
            SearchMode::Semantic
        } else {
            SearchMode::Keyword
        };
        let res = self.search(
            &SearchQuery {
                query: query.to_string(),
                mode,
                scopes: scopes.to_vec(),
                entity_types: vec![],
                limit: limit.max(1),
                offset: 0,
                min_similarity,
                with_observations: false,
            },
            scopes,
        )?;
        Ok(res
            .hits
            .into_iter()
            .map(|h| match h.matched {
                Some(m) => format!("{} ({}): {m}", h.name, h.entity_type),
                None => format!("{} ({})", h.name, h.entity_type),
            })
            .collect())
    }

    /// Whole graph of `scopes` (every scope when empty), for export.
    pub fn export(&self, scopes: &[String]) -> Result<Graph> {
        let conn = self.conn()?;
        let (q, args): (String, Vec<String>) = if scopes.is_empty() {
            ("SELECT id FROM entities ORDER BY id".into(), vec![])
        } else {
            (
                format!(
                    "SELECT id FROM entities WHERE scope IN ({}) ORDER BY id",
                    marks(scopes.len())
                ),
                scopes.to_vec(),
            )
        };
        let ids: Vec<i64> = conn
            .prepare(&q)
            .ctx("list the entities to export")?
            .query_map(params_from_iter(args), |r| r.get(0))
            .ctx("list the entities to export")?
            .collect::<rusqlite::Result<_>>()
            .ctx("list the entities to export")?;
        let mut entities = Vec::with_capacity(ids.len());
        let mut relations = Vec::new();
        for chunk in ids.chunks(500) {
            entities.extend(load_entities(&conn, chunk, true)?);
            relations.extend(relations_of(&conn, chunk, RelationEnds::From)?);
        }
        // Creation order across chunks (relation ids grow with creation, and import keeps the
        // file's order, so export → import → export is identical).
        relations.sort_by_key(|r| r.0);
        let relations = relations.into_iter().map(|r| r.1).collect();
        Ok(Graph {
            entities,
            relations,
        })
    }

    /// Writes a graph as it is, timestamps included (import). `replace_scopes` are emptied
    /// first, in the same transaction. Relations whose ends are missing are skipped and counted.
    pub fn import(&self, graph: &Graph, replace_scopes: &[String]) -> Result<ImportReport> {
        for e in &graph.entities {
            self.check_name("an entity name", &e.name)?;
            self.check_name("an entity type", &e.entity_type)?;
            for o in &e.observations {
                self.check_observation(&o.text)?;
            }
        }
        let mut report = ImportReport::default();
        let mut conn = self.conn()?;
        // Only observations not already stored need a vector.
        let mut new_texts: Vec<(usize, usize)> = Vec::new();
        {
            let mut existing: HashMap<(String, String), HashSet<String>> = HashMap::new();
            for e in &graph.entities {
                if let Some(id) = entity_id(&conn, &e.scope, &e.name)? {
                    existing.insert(
                        (e.scope.clone(), e.name.clone()),
                        observation_texts(&conn, id)?,
                    );
                }
            }
            for (i, e) in graph.entities.iter().enumerate() {
                let have = existing
                    .get(&(e.scope.clone(), e.name.clone()))
                    .filter(|_| !replace_scopes.contains(&e.scope));
                for (j, o) in e.observations.iter().enumerate() {
                    if have.is_none_or(|h| !h.contains(&o.text)) {
                        new_texts.push((i, j));
                    }
                }
            }
        }
        let texts: Vec<&str> = new_texts
            .iter()
            .map(|&(i, j)| graph.entities[i].observations[j].text.as_str())
            .collect();
        let vectors = self.embed_for_storage(&texts)?;
        let vector_of: HashMap<(usize, usize), &Vec<f32>> = match &vectors {
            Some(v) => new_texts.iter().copied().zip(v.iter()).collect(),
            None => HashMap::new(),
        };
        let tx = write_tx(&mut conn)?;
        let mut removed = Vec::new();
        {
            let scopes: BTreeSet<&String> = replace_scopes.iter().collect();
            for s in scopes {
                let ids: Vec<i64> = tx
                    .prepare("SELECT o.id FROM observations o JOIN entities e ON e.id = o.entity_id WHERE e.scope = ?1")
                    .ctx("list a replaced scope's observations")?
                    .query_map([s], |r| r.get(0))
                    .ctx("list a replaced scope's observations")?
                    .collect::<rusqlite::Result<_>>()
                    .ctx("list a replaced scope's observations")?;
                removed.extend(ids);
                tx.execute("DELETE FROM entities WHERE scope = ?1", [s])
                    .ctx("empty a replaced scope")?;
            }
        }
        let mut pending = Vec::new();
        for (i, e) in graph.entities.iter().enumerate() {
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO entities (scope, name, entity_type, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![e.scope, e.name, e.entity_type, e.created_ms as i64, e.updated_ms as i64],
                )
                .ctx("insert an entity")?;
            report.entities += n as u64;
            let id = entity_id(&tx, &e.scope, &e.name)?.ok_or_else(|| StoreError::Vanished {
                name: e.name.clone(),
                scope: e.scope.clone(),
            })?;
            let ty: String = tx
                .query_row(
                    "SELECT entity_type FROM entities WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .ctx("read an entity's type")?;
            let mut have = observation_texts(&tx, id)?;
            for (j, o) in e.observations.iter().enumerate() {
                if !have.insert(o.text.clone()) {
                    continue;
                }
                let v = vector_of.get(&(i, j)).copied();
                let oid = insert_observation(&tx, id, &o.text, o.created_ms, v)?;
                report.observations += 1;
                if let Some(v) = v {
                    pending.push(Pending {
                        observation: oid,
                        entity: id,
                        scope: e.scope.clone(),
                        entity_type: ty.clone(),
                        vector: v.clone(),
                    });
                }
            }
        }
        for r in &graph.relations {
            let (Some(from), Some(to)) = (
                entity_id(&tx, &r.scope, &r.from)?,
                entity_id(&tx, &r.scope, &r.to)?,
            ) else {
                report.skipped += 1;
                continue;
            };
            report.relations += tx
                .execute(
                    "INSERT OR IGNORE INTO relations (from_id, relation_type, to_id, created_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![from, r.relation_type, to, r.created_ms as i64],
                )
                .ctx("insert a relation")? as u64;
        }
        tx.commit().ctx("commit")?;
        self.apply(pending, &removed);
        Ok(report)
    }

    /// Bulk load of new entities with one observation each, whose vectors were computed
    /// elsewhere (the benchmarks build 1M-entity stores this way), in one transaction.
    pub fn load_with_vectors(
        &self,
        scope: &str,
        items: &[(String, String, String, Vec<f32>)],
    ) -> Result<()> {
        let now = now_ms();
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        let mut pending = Vec::with_capacity(items.len());
        for (name, ty, text, vector) in items {
            tx.prepare_cached(
                "INSERT INTO entities (scope, name, entity_type, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
            )
            .ctx("insert an entity")?
            .execute(params![scope, name, ty, now as i64])
            .ctx("insert an entity")?;
            let entity = tx.last_insert_rowid();
            let observation = insert_observation(&tx, entity, text, now, Some(vector))?;
            pending.push(Pending {
                observation,
                entity,
                scope: scope.to_string(),
                entity_type: ty.clone(),
                vector: vector.clone(),
            });
        }
        tx.commit().ctx("commit")?;
        self.apply(pending, &[]);
        Ok(())
    }

    /// Embeds observations stored without a vector (the model was missing then). Returns how many.
    pub fn backfill(&self) -> Result<u64> {
        if !self.embedder.installed() {
            return Ok(0);
        }
        let mut total = 0;
        loop {
            let conn = self.conn()?;
            let rows: Vec<(i64, i64, String, String, String)> = conn
                .prepare(
                    "SELECT o.id, o.entity_id, e.scope, e.entity_type, o.text FROM observations o
                     JOIN entities e ON e.id = o.entity_id WHERE o.embedding IS NULL LIMIT 256",
                )
                .ctx("find observations without a vector")?
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .ctx("find observations without a vector")?
                .collect::<rusqlite::Result<_>>()
                .ctx("find observations without a vector")?;
            drop(conn);
            if rows.is_empty() {
                return Ok(total);
            }
            let texts: Vec<&str> = rows.iter().map(|r| r.4.as_str()).collect();
            let vectors = self
                .embedder
                .embed(&texts)
                .map_err(|source| StoreError::Embed {
                    what: "the observations stored without a vector",
                    source: Box::new(source),
                })?;
            let mut conn = self.conn()?;
            let tx = write_tx(&mut conn)?;
            let mut pending = Vec::new();
            for (r, v) in rows.into_iter().zip(vectors) {
                let n = tx
                    .execute(
                        "UPDATE observations SET embedding = ?1 WHERE id = ?2 AND embedding IS NULL",
                        params![index::to_blob(&v), r.0],
                    )
                    .ctx("store an observation's vector")?;
                if n > 0 {
                    pending.push(Pending {
                        observation: r.0,
                        entity: r.1,
                        scope: r.2,
                        entity_type: r.3,
                        vector: v,
                    });
                }
            }
            tx.commit().ctx("commit")?;
            total += pending.len() as u64;
            self.apply(pending, &[]);
        }
    }

    /// Removes entities by age and count, per scope: the request's values, else the scope's
    /// configured retention.
    pub fn prune(&self, req: &PruneRequest, config: &MemoryConfig) -> Result<PruneReport> {
        let mut conn = self.conn()?;
        let scopes: Vec<String> = match &req.scope {
            Some(s) => vec![s.clone()],
            None => conn
                .prepare("SELECT DISTINCT scope FROM entities")
                .ctx("list the scopes")?
                .query_map([], |r| r.get(0))
                .ctx("list the scopes")?
                .collect::<rusqlite::Result<_>>()
                .ctx("list the scopes")?,
        };
        let now = now_ms();
        let tx = write_tx(&mut conn)?;
        let mut victims: Vec<i64> = Vec::new();
        for scope in &scopes {
            let rule = config.retention_for(scope);
            let ttl = req
                .older_than_ms
                .or_else(|| rule.and_then(|r| r.ttl).map(|d| d.as_millis() as u64));
            let max = req
                .max_entities
                .or_else(|| rule.and_then(|r| r.max_entities));
            if let Some(ttl) = ttl {
                let cutoff = now.saturating_sub(ttl) as i64;
                let ids: Vec<i64> = tx
                    .prepare("SELECT id FROM entities WHERE scope = ?1 AND updated_ms < ?2")
                    .ctx("find entities past their time to live")?
                    .query_map(params![scope, cutoff], |r| r.get(0))
                    .ctx("find entities past their time to live")?
                    .collect::<rusqlite::Result<_>>()
                    .ctx("find entities past their time to live")?;
                victims.extend(ids);
            }
            if let Some(max) = max {
                let ids: Vec<i64> = tx
                    .prepare("SELECT id FROM entities WHERE scope = ?1 ORDER BY updated_ms DESC, id DESC LIMIT -1 OFFSET ?2")
                    .ctx("find entities over the scope's cap")?
                    .query_map(params![scope, max as i64], |r| r.get(0))
                    .ctx("find entities over the scope's cap")?
                    .collect::<rusqlite::Result<_>>()
                    .ctx("find entities over the scope's cap")?;
                victims.extend(ids);
            }
        }
        victims.sort_unstable();
        victims.dedup();
        let mut report = PruneReport {
            dry_run: req.dry_run,
            ..Default::default()
        };
        let mut removed = Vec::new();
        for id in &victims {
            let obs = observation_ids(&tx, *id)?;
            report.observations += obs.len() as u64;
            report.relations += tx
                .query_row(
                    "SELECT COUNT(*) FROM relations WHERE from_id = ?1 OR to_id = ?1",
                    [id],
                    |r| r.get::<_, i64>(0),
                )
                .ctx("count an entity's relations")? as u64;
            removed.extend(obs);
            if !req.dry_run {
                tx.execute("DELETE FROM entities WHERE id = ?1", [id])
                    .ctx("delete an entity")?;
            }
        }
        report.entities = victims.len() as u64;
        if req.dry_run {
            tx.rollback().ctx("roll back the dry run")?;
        } else {
            tx.commit().ctx("commit")?;
            self.apply(Vec::new(), &removed);
        }
        Ok(report)
    }

    /// Every scope that holds an entity.
    pub fn scopes(&self) -> Result<Vec<String>> {
        let conn = self.conn()?;
        conn.prepare("SELECT DISTINCT scope FROM entities ORDER BY scope")
            .ctx("list the scopes")?
            .query_map([], |r| r.get(0))
            .ctx("list the scopes")?
            .collect::<rusqlite::Result<_>>()
            .ctx("list the scopes")
    }

    pub fn stats(&self, integrity_check: bool) -> Result<MemoryStats> {
        let conn = self.conn()?;
        let per: Vec<ScopeStats> = conn
            .prepare(
                "SELECT e.scope, COUNT(*),
                        (SELECT COUNT(*) FROM observations o JOIN entities x ON x.id = o.entity_id WHERE x.scope = e.scope),
                        (SELECT COUNT(*) FROM relations r JOIN entities x ON x.id = r.from_id WHERE x.scope = e.scope)
                 FROM entities e GROUP BY e.scope ORDER BY e.scope",
            )
            .ctx("count entities per scope")?
            .query_map([], |r| {
                Ok(ScopeStats {
                    scope: r.get(0)?,
                    entities: r.get::<_, i64>(1)? as u64,
                    observations: r.get::<_, i64>(2)? as u64,
                    relations: r.get::<_, i64>(3)? as u64,
                })
            })
            .ctx("count entities per scope")?
            .collect::<rusqlite::Result<_>>()
            .ctx("count entities per scope")?;
        let unembedded: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM observations WHERE embedding IS NULL",
                [],
                |r| r.get(0),
            )
            .ctx("count observations without a vector")?;
        let integrity = if integrity_check {
            let lines: Vec<String> = conn
                .prepare("PRAGMA integrity_check")
                .ctx("check integrity")?
                .query_map([], |r| r.get(0))
                .ctx("check integrity")?
                .collect::<rusqlite::Result<_>>()
                .ctx("check integrity")?;
            Some(lines.join("\n"))
        } else {
            None
        };
        let file_bytes = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                std::fs::metadata(p).ok()
            })
            .map(|m| m.len())
            .sum();
        Ok(MemoryStats {
            database: self.path.display().to_string(),
            schema_version: db::SCHEMA_VERSION,
            file_bytes,
            scopes: per,
            unembedded: unembedded as u64,
            model: self.embedder.dir().display().to_string(),
            model_loaded: self.embedder.loaded(),
            indexed_vectors: self.index.read().unwrap_or_else(|p| p.into_inner()).len() as u64,
            integrity,
            resident_bytes: resident_bytes(),
        })
    }
}

/// Resident set size of this process, from /proc.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// An FTS5 query matching any of the words of `text` (each quoted, so no operator syntax leaks in).
fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(32)
        .map(|w| format!("\"{w}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" OR "))
}

/// Starts a write transaction that takes the write lock at once (`BEGIN IMMEDIATE`).
///
/// A deferred transaction that reads first and writes later must upgrade its read lock; in WAL
/// mode, when another connection committed in between, that upgrade fails with SQLITE_BUSY at
/// once, without the busy handler, and the request would fail with "database is locked".
/// Taking the write lock first makes concurrent writers wait (up to the busy timeout) instead.
pub(crate) fn write_tx(conn: &mut rusqlite::Connection) -> Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .ctx("begin a write transaction")
}

fn insert_observation(
    tx: &rusqlite::Connection,
    entity: i64,
    text: &str,
    created_ms: u64,
    vector: Option<&Vec<f32>>,
) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO observations (entity_id, text, created_ms, embedding) VALUES (?1, ?2, ?3, ?4)",
    )
    .ctx("insert an observation")?
    .execute(params![
        entity,
        text,
        created_ms as i64,
        vector.map(|v| index::to_blob(v))
    ])
    .ctx("insert an observation")?;
    Ok(tx.last_insert_rowid())
}

fn entity_id(c: &rusqlite::Connection, scope: &str, name: &str) -> Result<Option<i64>> {
    c.prepare_cached("SELECT id FROM entities WHERE scope = ?1 AND name = ?2")
        .ctx("look up an entity")?
        .query_row(params![scope, name], |r| r.get(0))
        .optional()
        .ctx("look up an entity")
}

fn observation_ids(c: &rusqlite::Connection, entity: i64) -> Result<Vec<i64>> {
    c.prepare_cached("SELECT id FROM observations WHERE entity_id = ?1")
        .ctx("list an entity's observations")?
        .query_map([entity], |r| r.get(0))
        .ctx("list an entity's observations")?
        .collect::<rusqlite::Result<_>>()
        .ctx("list an entity's observations")
}

fn observation_texts(c: &rusqlite::Connection, entity: i64) -> Result<HashSet<String>> {
    c.prepare_cached("SELECT text FROM observations WHERE entity_id = ?1")
        .ctx("read an entity's observations")?
        .query_map([entity], |r| r.get(0))
        .ctx("read an entity's observations")?
        .collect::<rusqlite::Result<_>>()
        .ctx("read an entity's observations")
}

/// Entities by id, in the order given, with their observations (in insertion order) if asked.
fn load_entities(
    c: &rusqlite::Connection,
    ids: &[i64],
    with_observations: bool,
) -> Result<Vec<Entity>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut ent = c
        .prepare_cached(
            "SELECT scope, name, entity_type, created_ms, updated_ms FROM entities WHERE id = ?1",
        )
        .ctx("load entities")?;
    let mut obs = c
        .prepare_cached(
            "SELECT text, created_ms FROM observations WHERE entity_id = ?1 ORDER BY id",
        )
        .ctx("load observations")?;
    for &id in ids {
        let Some(mut e) = ent
            .query_row([id], |r| {
                Ok(Entity {
                    scope: r.get(0)?,
                    name: r.get(1)?,
                    entity_type: r.get(2)?,
                    created_ms: r.get::<_, i64>(3)? as u64,
                    updated_ms: r.get::<_, i64>(4)? as u64,
                    observations: vec![],
                })
            })
            .optional()
            .ctx("load entities")?
        else {
            continue;
        };
        if with_observations {
            e.observations = obs
                .query_map([id], |r| {
                    Ok(Observation {
                        text: r.get(0)?,
                        created_ms: r.get::<_, i64>(1)? as u64,
                    })
                })
                .ctx("load observations")?
                .collect::<rusqlite::Result<_>>()
                .ctx("load observations")?;
        }
        out.push(e);
    }
    Ok(out)
}

fn strip(rels: Vec<(i64, Relation)>) -> Vec<Relation> {
    rels.into_iter().map(|r| r.1).collect()
}

enum RelationEnds {
    /// Relations starting at one of the entities.
    From,
    /// Relations with either end among the entities (the MCP server's rule).
    Either,
}

fn relations_of(
    c: &rusqlite::Connection,
    ids: &[i64],
    ends: RelationEnds,
) -> Result<Vec<(i64, Relation)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let m = marks(ids.len());
    let cond = match ends {
        RelationEnds::From => format!("r.from_id IN ({m})"),
        RelationEnds::Either => format!("r.from_id IN ({m}) OR r.to_id IN ({m})"),
    };
    let q = format!(
        "SELECT f.name, r.relation_type, t.name, f.scope, r.created_ms, r.id FROM relations r
         JOIN entities f ON f.id = r.from_id JOIN entities t ON t.id = r.to_id
         WHERE {cond} ORDER BY r.id"
    );
    let args: Vec<i64> = match ends {
        RelationEnds::From => ids.to_vec(),
        RelationEnds::Either => ids.iter().chain(ids).copied().collect(),
    };
    c.prepare(&q)
        .ctx("load relations")?
        .query_map(params_from_iter(args), |r| {
            Ok((
                r.get(5)?,
                Relation {
                    from: r.get(0)?,
                    relation_type: r.get(1)?,
                    to: r.get(2)?,
                    scope: r.get(3)?,
                    created_ms: r.get::<_, i64>(4)? as u64,
                },
            ))
        })
        .ctx("load relations")?
        .collect::<rusqlite::Result<_>>()
        .ctx("load relations")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn a_locked_database_is_busy_and_other_statement_failures_are_internal() {
        let busy = StoreError::sql("commit", failure(rusqlite::ffi::SQLITE_BUSY));
        assert_eq!(busy.kind(), ErrorKind::Busy);
        assert!(
            Chain(&busy)
                .to_string()
                .starts_with("memory database busy: cannot commit; retry later: "),
            "{}",
            Chain(&busy)
        );
        let full = StoreError::sql("insert an entity", failure(rusqlite::ffi::SQLITE_FULL));
        assert_eq!(full.kind(), ErrorKind::Internal);
        assert!(
            Chain(&full)
                .to_string()
                .starts_with("memory database: cannot insert an entity: "),
            "{}",
            Chain(&full)
        );
        let fk = StoreError::sql(
            "insert an observation",
            failure(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
        );
        assert!(fk.is_foreign_key_violation());
        assert!(!full.is_foreign_key_violation());
    }
}
