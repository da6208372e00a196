//! The SQLite database: opening (WAL, foreign keys, busy timeout, full sync), versioned schema
//! migrations, and a clear error for a file that is not a usable database.
//!
//! Schema (v1): `entities` (unique per scope and name), `observations` (text, creation time, the
//! embedding as 384 little-endian f16, NULL until computed), `relations` (between two entities of
//! one scope; deleting an entity cascades to its observations and relations), and two external-
//! content FTS5 tables kept in sync by triggers for keyword search.

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::functions::FunctionFlags;

pub type Pool = r2d2::Pool<SqliteConnectionManager>;
pub type Conn = r2d2::PooledConnection<SqliteConnectionManager>;

/// Each entry migrates from version `index` to `index + 1`, inside one transaction.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE entities (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    UNIQUE (scope, name)
);
CREATE INDEX entities_by_age ON entities (scope, updated_ms);
CREATE TABLE observations (
    id INTEGER PRIMARY KEY,
    entity_id INTEGER NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    text TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    embedding BLOB
);
CREATE INDEX observations_by_entity ON observations (entity_id);
CREATE TABLE relations (
    id INTEGER PRIMARY KEY,
    from_id INTEGER NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    relation_type TEXT NOT NULL,
    to_id INTEGER NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    created_ms INTEGER NOT NULL,
    UNIQUE (from_id, relation_type, to_id)
);
CREATE INDEX relations_by_target ON relations (to_id);
CREATE VIRTUAL TABLE observations_fts USING fts5 (
    text, content = 'observations', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER observations_fts_insert AFTER INSERT ON observations BEGIN
    INSERT INTO observations_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER observations_fts_delete AFTER DELETE ON observations BEGIN
    INSERT INTO observations_fts (observations_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE VIRTUAL TABLE entities_fts USING fts5 (
    name, entity_type, content = 'entities', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER entities_fts_insert AFTER INSERT ON entities BEGIN
    INSERT INTO entities_fts (rowid, name, entity_type) VALUES (new.id, new.name, new.entity_type);
END;
CREATE TRIGGER entities_fts_delete AFTER DELETE ON entities BEGIN
    INSERT INTO entities_fts (entities_fts, rowid, name, entity_type) VALUES ('delete', old.id, old.name, old.entity_type);
END;
CREATE TRIGGER entities_fts_update AFTER UPDATE OF name, entity_type ON entities BEGIN
    INSERT INTO entities_fts (entities_fts, rowid, name, entity_type) VALUES ('delete', old.id, old.name, old.entity_type);
    INSERT INTO entities_fts (rowid, name, entity_type) VALUES (new.id, new.name, new.entity_type);
END;
"#,
    r#"
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    owner_uid INTEGER NOT NULL,
    holder TEXT NOT NULL,
    state TEXT NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX conversations_by_age ON conversations (updated_ms);
CREATE TABLE conversation_entries (
    conversation TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    content TEXT NOT NULL,
    PRIMARY KEY (conversation, seq)
) WITHOUT ROWID;
"#,
    // Conversations started over HTTP belong to a bearer token (by name).
    r#"
ALTER TABLE conversations ADD COLUMN owner_token TEXT;
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a connection waits for another writer before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn init_connection(c: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    c.busy_timeout(BUSY_TIMEOUT)?;
    // FULL: a commit is on disk before the write is acknowledged (WAL makes that one fsync).
    // A 1 MiB page cache per connection (SQLite's default is 2 MiB): the kernel caches the file
    // anyway, and the pool's connections would otherwise hold several copies of hot pages.
    c.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA cache_size = -1024;",
    )?;
    // Case-insensitive substring matching for `search_nodes` (SQLite's lower() is ASCII-only).
    c.create_scalar_function(
        "caxton_lower",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(ctx.get::<String>(0)?.to_lowercase()),
    )
}

/// Why the database cannot be opened; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the memory directory {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the memory database {}", path.display())]
    CreateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SQLite refuses the file (not a database, damaged, unreadable).
    #[error(
        "cannot use the memory database {} (if it is damaged: stop caxton, move it aside for \
         recovery, and start with an empty one or restore a backup from `caxton memory export`)",
        path.display()
    )]
    Unusable {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the memory database {} cannot use WAL journaling (journal_mode is {mode})",
        path.display()
    )]
    NoWal { path: PathBuf, mode: String },
    #[error(
        "the memory database {} has schema v{found}, newer than this caxton-memory (v{SCHEMA_VERSION}); run the newer caxton",
        path.display()
    )]
    NewerSchema { path: PathBuf, found: u32 },
    #[error("the memory database {}: migration v{from} → v{} failed", path.display(), from + 1)]
    Migration {
        path: PathBuf,
        from: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot open a connection pool on the memory database {}", path.display())]
    Pool {
        path: PathBuf,
        #[source]
        source: r2d2::Error,
    },
}

/// Opens (creating if needed) the database at `path` and migrates it to [`SCHEMA_VERSION`].
pub fn open(path: &Path, pool_size: u32) -> Result<Pool, DbError> {
    if let Some(dir) = path.parent() {
        caxton_ipc::service::create_private_dir(dir).map_err(|source| DbError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
    }
    // Private whatever the umask: every scope of every agent is in this file. SQLite gives its
    // -wal and -shm files the database file's mode.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| DbError::CreateFile {
                path: path.to_owned(),
                source,
            })?;
    }
    let unusable = |source| DbError::Unusable {
        path: path.to_owned(),
        source,
    };
    // One plain connection first: WAL mode, the schema check and the migrations, with errors that
    // name the file. Only then the pool.
    {
        let mut c = rusqlite::Connection::open(path).map_err(unusable)?;
        init_connection(&mut c).map_err(unusable)?;
        let mode: String = c
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(unusable)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        migrate(&mut c, path)?;
    }
    let manager = SqliteConnectionManager::file(path).with_init(init_connection);
    r2d2::Pool::builder()
        .max_size(pool_size.max(1))
        .connection_timeout(BUSY_TIMEOUT)
        .build(manager)
        .map_err(|source| DbError::Pool {
            path: path.to_owned(),
            source,
        })
}

fn migrate(c: &mut rusqlite::Connection, path: &Path) -> Result<(), DbError> {
    let version: u32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| DbError::Unusable {
            path: path.to_owned(),
            source,
        })?;
    if version > SCHEMA_VERSION {
        return Err(DbError::NewerSchema {
            path: path.to_owned(),
            found: version,
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let from = from as u32;
        let step = |source| DbError::Migration {
            path: path.to_owned(),
            from,
            source,
        };
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(step)?;
        tx.execute_batch(sql).map_err(step)?;
        tx.pragma_update(None, "user_version", from + 1)
            .map_err(step)?;
        tx.commit().map_err(step)?;
        tracing::info!(version = from + 1, "memory schema migrated");
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_ipc::error::Chain;

    #[test]
    fn creates_migrates_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/memory.db");
        let pool = open(&path, 2).expect("open");
        let c = pool.get().expect("conn");
        let v: u32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, SCHEMA_VERSION);
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .expect("fk");
        assert_eq!(fk, 1);
        drop(c);
        drop(pool);
        open(&path, 2).expect("reopen");
    }

    #[test]
    fn the_database_and_its_directory_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/memory.db");
        use nix::sys::stat::{Mode, umask};
        // The other tests of this binary work in their own temporary directories, so a
        // permissive umask for a moment does not change what they check.
        let old = umask(Mode::from_bits_truncate(0o022));
        let pool = open(&path, 1).expect("open");
        umask(old);
        drop(pool);
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        let wal = path.with_extension("db-wal");
        if wal.exists() {
            assert_eq!(mode(&wal), 0o600);
        }
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("memory.db");
        std::fs::write(&path, vec![0x5a; 8192]).expect("write");
        let err = open(&path, 2).expect_err("must fail");
        assert!(matches!(err, DbError::Unusable { .. }), "{err:?}");
        let err = Chain(&err).to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("not a database"), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("memory.db");
        {
            let c = rusqlite::Connection::open(&path).expect("open");
            c.pragma_update(None, "user_version", 99).expect("set");
        }
        let err = open(&path, 2).expect_err("must fail");
        assert!(
            matches!(err, DbError::NewerSchema { found: 99, .. }),
            "{err:?}"
        );
        let text = Chain(&err).to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("v99"),
            "{text}"
        );
    }
}
