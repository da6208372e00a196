//! `sql`: read-only SQL with SQLite itself, compiled into the guest. `sql_query` runs one
//! statement against a SQLite database file, or against CSV/JSON files loaded as tables;
//! `sql_schema` lists the tables, their columns and types, and row counts. The guest sees only the
//! directory the operator granted (a read-only WASI preopen at `/data`).
//!
//! Read-only by construction, in layers, none of them a check of the SQL text:
//! - the grant is read-only (the manifest asks for a read-only `/data`; a read-write grant disables
//!   the package), so the runtime refuses every write to the host's files;
//! - a database file is opened `SQLITE_OPEN_READ_ONLY` and `immutable`, with `query_only` on;
//! - an authorizer allows only reads (`SELECT`, reading columns, functions, recursive CTEs and a
//!   list of read-only pragmas without a value) and denies everything else as it is compiled:
//!   writes, DDL, `ATTACH`, transactions, `ANALYZE`…; a compiled statement that would still write
//!   (`VACUUM INTO`) is refused by `sqlite3_stmt_readonly`;
//! - one statement per call (a second one is refused), `ATTACH` limited to zero databases, SQLite
//!   built without extension loading;
//! - a budget inside the guest (virtual-machine steps and wall time, through SQLite's progress
//!   handler) and a heap limit, below the host's epoch deadline and memory limit.

mod data;
mod guard;
mod output;
mod vfs;

use std::path::Path;

use mcp_guest::{Server, ToolResult, grant, str_arg};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};

pub use guard::{HEAP_LIMIT, STEP_BUDGET, TIME_BUDGET};

/// The guest directory this tool asks for (tool.toml); the operator maps it to a host directory.
pub const ROOT: &str = "/data";
/// Rows `sql_query` returns when the call does not say.
pub const DEFAULT_ROWS: usize = 200;
/// Most rows `sql_query` returns, whatever the call asks.
pub const MAX_ROWS: usize = 10_000;
/// Most bytes of result text (the host takes at most 1 MiB per message).
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Longest SQL statement accepted.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// The server's description: name, version and tools.
pub fn server() -> Server {
    let path = json!({"type": "string", "description": "absolute path inside the granted directory: a SQLite database file (e.g. /data/shop.db), a CSV/TSV/JSON/JSONL file (loaded as one table named after the file), or a directory (each of its CSV/JSON files is a table)"});
    Server::new("sql", env!("CARGO_PKG_VERSION"))
        .tool(
            "sql_query",
            "Run one read-only SQL statement (SQLite dialect: SELECT or WITH … SELECT, joins, aggregates, window functions, JSON functions) and return the result as CSV with column types. Writes, ATTACH and extensions are refused.",
            json!({"type": "object", "properties": {
                "path": path,
                "sql": {"type": "string", "description": "one SQL statement, e.g. SELECT region, sum(units) FROM sales GROUP BY region"},
                "max_rows": {"type": "integer", "minimum": 1, "maximum": MAX_ROWS, "description": "most rows to return (default 200)"}
            }, "required": ["path", "sql"]}),
        )
        .tool(
            "sql_schema",
            "List the tables and views at a path: columns with their types, and row counts.",
            json!({"type": "object", "properties": {"path": path}, "required": ["path"]}),
        )
}

/// Runs one call. Paths must be inside [`ROOT`].
pub fn call(tool: &str, args: &Value) -> ToolResult {
    let path = str_arg(args, "path")?;
    grant::inside(path, ROOT)?;
    match tool {
        "sql_query" => {
            let sql = str_arg(args, "sql")?;
            let max_rows = max_rows(args)?;
            query(Path::new(path), sql, max_rows)
        }
        "sql_schema" => schema(Path::new(path)),
        other => Err(format!("unknown tool `{other}`")),
    }
}

/// `sql_query` on `path` (no root check: the caller did it, or a test names a file of its own).
pub fn query(path: &Path, sql: &str, max_rows: usize) -> ToolResult {
    if sql.len() > MAX_SQL_BYTES {
        return Err(format!(
            "the statement is {} bytes; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        ));
    }
    let source = Source::open(path)?;
    let guard = guard::Guard::install(&source.conn)?;
    output::run(&source, &guard, sql, max_rows.min(MAX_ROWS))
}

/// `sql_schema` on `path`.
pub fn schema(path: &Path) -> ToolResult {
    let source = Source::open(path)?;
    let guard = guard::Guard::install(&source.conn)?;
    output::schema(&source, &guard)
}

/// What a path holds, opened: a database file, or data files loaded into an in-memory database.
pub(crate) struct Source {
    pub conn: Connection,
    /// The path as the call named it.
    pub path: String,
    /// For loaded data: each table and the file it came from.
    pub loaded: Vec<(String, String)>,
}

impl Source {
    fn open(path: &Path) -> Result<Source, String> {
        vfs::install();
        guard::limit_heap();
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| explain_io(&shown, &e))?;
        let (conn, loaded) = if meta.is_dir() {
            data::load_dir(path)?
        } else if data::Format::of(path).is_some() {
            data::load_files(&[path.to_path_buf()])?
        } else {
            let conn = open_database(path, &shown)?;
            for table in virtual_tables(&conn, &shown)? {
                // Connecting a virtual table (R-tree, FTS5…) prepares statements on its shadow
                // tables, writes among them, which the guard's authorizer would refuse although
                // they never run on a read-only connection: connect them before the guard. One
                // that cannot be connected (an unknown module) fails, and explains itself, when a
                // query uses it.
                let _ = conn.prepare(&format!("SELECT * FROM {} LIMIT 0", data::quote(&table)));
            }
            (conn, Vec::new())
        };
        Ok(Source {
            conn,
            path: shown,
            loaded,
        })
    }
}

/// Longest database path the VFS takes whole (it cuts longer ones at 512 bytes).
const MAX_PATH_BYTES: usize = 480;

/// The database's virtual tables, read in the one pass over its schema that also refuses a schema
/// whose text is not UTF-8 (a hostile or damaged file): the names and types of its columns would
/// not be either, and the SQLite binding cannot return those.
fn virtual_tables(conn: &Connection, shown: &str) -> Result<Vec<String>, String> {
    let damaged = |e: rusqlite::Error| guard::explain(&e, shown, 0);
    let mut stmt = conn
        .prepare("SELECT name, tbl_name, sql, type = 'table' FROM sqlite_schema")
        .map_err(damaged)?;
    let mut rows = stmt.query([]).map_err(damaged)?;
    let mut virtual_tables = Vec::new();
    while let Some(row) = rows.next().map_err(damaged)? {
        let mut text = [""; 3];
        for (i, slot) in text.iter_mut().enumerate() {
            if let rusqlite::types::ValueRef::Text(t) = row.get_ref(i).map_err(damaged)? {
                *slot = std::str::from_utf8(t).map_err(|_| {
                    format!(
                        "`{shown}` is damaged, or not a SQLite database this tool can read: its \
                         schema is not UTF-8 text"
                    )
                })?;
            }
        }
        let is_table: bool = row.get(3).map_err(damaged)?;
        let create = "CREATE VIRTUAL TABLE";
        if is_table
            && text[2]
                .get(..create.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(create))
        {
            virtual_tables.push(text[0].to_string());
        }
    }
    Ok(virtual_tables)
}

/// Opens a SQLite database file read-only. `immutable`: SQLite takes no locks and reads no
/// journal (WASI has neither locks nor shared memory); a database in WAL mode is read as of its
/// last checkpoint.
fn open_database(path: &Path, shown: &str) -> Result<Connection, String> {
    if shown.len() > MAX_PATH_BYTES {
        return Err(format!(
            "the path is {} bytes long; a database path may have at most {MAX_PATH_BYTES}",
            shown.len()
        ));
    }
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 16), &mut head))
        .map_err(|e| explain_io(shown, &e))?;
    // An empty file is an empty database to SQLite; anything else must start with the magic.
    if !head.is_empty() && head != b"SQLite format 3\0" {
        return Err(format!(
            "`{shown}` is not a SQLite database (its first bytes are not \"SQLite format 3\"); \
             CSV, TSV, JSON and JSONL files are read by their extension (.csv .tsv .json .jsonl .ndjson)"
        ));
    }
    let uri = format!("file:{}?mode=ro&immutable=1", uri_path(shown));
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open `{shown}` as a SQLite database: {e}"))
}

/// `path` percent-encoded for a `file:` URI (`?`, `#`, `%` and anything unusual).
fn uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `max_rows` argument: 1..=MAX_ROWS, default DEFAULT_ROWS.
fn max_rows(args: &Value) -> Result<usize, String> {
    match args.get("max_rows") {
        None | Some(Value::Null) => Ok(DEFAULT_ROWS),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(n.min(MAX_ROWS as u64) as usize),
            _ => Err(format!(
                "`max_rows` must be a whole number from 1 to {MAX_ROWS}, not {v}"
            )),
        },
    }
}

/// A file-system error the model can act on.
pub(crate) fn explain_io(path: &str, e: &std::io::Error) -> String {
    grant::explain_io(path, ROOT, "sql", e)
}

#[cfg(test)]
mod tests;
