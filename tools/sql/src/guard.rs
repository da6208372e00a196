//! What keeps a connection read-only and bounded once its data is in place: `query_only`, the
//! authorizer, per-connection limits, the step and time budget, the heap limit; and the one place
//! that turns SQLite's errors into messages the model can act on.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::{Connection, ErrorCode, Statement};

/// Wall time one call may spend in SQLite, measured inside the guest (the host's deadline, 10 s by
/// the manifest, is the backstop).
pub const TIME_BUDGET: Duration = Duration::from_secs(5);
/// SQLite virtual-machine steps one call may take (a 1M-row aggregate takes about 30 million).
pub const STEP_BUDGET: u64 = 2_000_000_000;
/// SQLite's heap, at most (the manifest gives the guest 192 MiB in all).
pub const HEAP_LIMIT: i64 = 96 << 20;
/// Steps between two looks at the budget.
const CHECK_EVERY: i32 = 10_000;
/// Longest string or blob a query may build.
const MAX_LENGTH: i32 = 16 << 20;

/// Pragmas that only read, whatever their argument (`PRAGMA table_info(t)`).
const READING_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "collation_list",
    "function_list",
    "module_list",
    "pragma_list",
    "compile_options",
];
/// Pragmas that read without a value and write with one (`PRAGMA user_version = 3`).
const GETTER_PRAGMAS: &[&str] = &[
    "user_version",
    "schema_version",
    "application_id",
    "page_count",
    "page_size",
    "freelist_count",
    "encoding",
    "data_version",
    "journal_mode",
    "query_only",
];

/// Why the progress handler stopped a statement.
const RUNNING: u8 = 0;
const OUT_OF_STEPS: u8 = 1;
const OUT_OF_TIME: u8 = 2;

/// Holds SQLite's heap to [`HEAP_LIMIT`] (process-wide; set before any data is loaded).
pub(crate) fn limit_heap() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_hard_heap_limit64 only stores the limit; any value is valid.
        unsafe {
            rusqlite::ffi::sqlite3_hard_heap_limit64(HEAP_LIMIT);
        }
    });
}

/// The guards installed on one connection, and what they saw.
pub(crate) struct Guard {
    /// The first action the authorizer denied, described.
    denied: Arc<Mutex<Option<String>>>,
    /// RUNNING, OUT_OF_STEPS or OUT_OF_TIME.
    stopped: Arc<AtomicU8>,
}

impl Guard {
    /// Makes `conn` read-only and bounded. Called after loaded data is in place: from here on
    /// nothing on this connection may write.
    pub fn install(conn: &Connection) -> Result<Guard, String> {
        let fail = |e: rusqlite::Error| format!("cannot make the connection read-only: {e}");
        conn.pragma_update(None, "query_only", true).map_err(fail)?;
        // No writes to the schema or shadow tables, and no functions with side effects called
        // from a (hostile) file's views, triggers or generated columns. The statement's length is
        // checked by `query`, not by SQLITE_LIMIT_SQL_LENGTH, which would also hold the file's own
        // CREATE statements as SQLite reads them.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
            .map_err(fail)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
            .map_err(fail)?;
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
            .map_err(fail)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_LENGTH)
            .map_err(fail)?;

        let denied = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&denied);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let verdict = authorize(&ctx.action);
            if let Err(what) = verdict {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.get_or_insert(what);
                return Authorization::Deny;
            }
            Authorization::Allow
        }))
        .map_err(fail)?;

        let stopped = Arc::new(AtomicU8::new(RUNNING));
        let flag = Arc::clone(&stopped);
        let started = Instant::now();
        let mut steps: u64 = 0;
        conn.progress_handler(
            CHECK_EVERY,
            Some(move || {
                steps += CHECK_EVERY as u64;
                let why = if steps > STEP_BUDGET {
                    OUT_OF_STEPS
                } else if started.elapsed() > TIME_BUDGET {
                    OUT_OF_TIME
                } else {
                    return false;
                };
                flag.store(why, Ordering::Relaxed);
                true
            }),
        )
        .map_err(fail)?;
        Ok(Guard { denied, stopped })
    }

    /// Refuses a compiled statement that would write (the authorizer has no code for some, such as
    /// `VACUUM INTO`).
    pub fn check_read_only(&self, stmt: &Statement<'_>) -> Result<(), String> {
        if stmt.readonly() {
            Ok(())
        } else {
            Err(refusal("a statement that writes"))
        }
    }

    /// What to tell the model about an error from SQLite on this connection, about `path`.
    pub fn explain(&self, e: &rusqlite::Error, path: &str) -> String {
        if let Some(what) = self
            .denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return refusal(&what);
        }
        explain(e, path, self.stopped.load(Ordering::Relaxed))
    }
}

/// The refusal of `what`, naming the rules.
pub(crate) fn refusal(what: &str) -> String {
    format!(
        "refused: {what} is not allowed. This tool is read-only: one SELECT (or WITH … SELECT) \
         statement per call; no INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, ATTACH, VACUUM, \
         transactions, pragma writes or extensions"
    )
}

/// `Ok` if the authorizer allows `action`, else a description of it.
fn authorize(action: &AuthAction<'_>) -> Result<(), String> {
    use AuthAction as A;
    Err(match action {
        // SQLite is built without extension loading; the function is refused all the same.
        A::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            "loading an extension (load_extension)".into()
        }
        A::Select | A::Read { .. } | A::Function { .. } | A::Recursive => return Ok(()),
        A::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            if READING_PRAGMAS.contains(&name.as_str())
                || (pragma_value.is_none() && GETTER_PRAGMAS.contains(&name.as_str()))
            {
                return Ok(());
            }
            match pragma_value {
                Some(v) => format!("PRAGMA {pragma_name} = {v}"),
                None => format!("PRAGMA {pragma_name}"),
            }
        }
        // CREATE, DROP and ALTER first ask to change the schema table.
        A::Insert { table_name } | A::Update { table_name, .. } | A::Delete { table_name }
            if is_schema_table(table_name) =>
        {
            "a change to the schema (CREATE, DROP, ALTER, ANALYZE)".into()
        }
        A::Insert { table_name } => format!("INSERT into `{table_name}`"),
        A::Update { table_name, .. } => format!("UPDATE of `{table_name}`"),
        A::Delete { table_name } => format!("DELETE from `{table_name}`"),
        A::CreateTable { table_name } | A::CreateTempTable { table_name } => {
            format!("CREATE TABLE `{table_name}`")
        }
        A::CreateIndex { index_name, .. } | A::CreateTempIndex { index_name, .. } => {
            format!("CREATE INDEX `{index_name}`")
        }
        A::CreateView { view_name } | A::CreateTempView { view_name } => {
            format!("CREATE VIEW `{view_name}`")
        }
        A::CreateTrigger { trigger_name, .. } | A::CreateTempTrigger { trigger_name, .. } => {
            format!("CREATE TRIGGER `{trigger_name}`")
        }
        A::CreateVtable { table_name, .. } => format!("CREATE VIRTUAL TABLE `{table_name}`"),
        A::DropTable { table_name } | A::DropTempTable { table_name } => {
            format!("DROP TABLE `{table_name}`")
        }
        A::DropIndex { index_name, .. } | A::DropTempIndex { index_name, .. } => {
            format!("DROP INDEX `{index_name}`")
        }
        A::DropView { view_name } | A::DropTempView { view_name } => {
            format!("DROP VIEW `{view_name}`")
        }
        A::DropTrigger { trigger_name, .. } | A::DropTempTrigger { trigger_name, .. } => {
            format!("DROP TRIGGER `{trigger_name}`")
        }
        A::DropVtable { table_name, .. } => format!("DROP TABLE `{table_name}`"),
        A::AlterTable { table_name, .. } => format!("ALTER TABLE `{table_name}`"),
        A::Attach { .. } => "ATTACH".into(),
        A::Detach { .. } => "DETACH".into(),
        A::Transaction { .. } => "a transaction (BEGIN, COMMIT, ROLLBACK)".into(),
        A::Savepoint { .. } => "SAVEPOINT".into(),
        A::Analyze { .. } => "ANALYZE".into(),
        A::Reindex { .. } => "REINDEX".into(),
        _ => "this statement".into(),
    })
}

/// SQLite's own schema table, by any of its names.
fn is_schema_table(name: &str) -> bool {
    [
        "sqlite_master",
        "sqlite_schema",
        "sqlite_temp_master",
        "sqlite_temp_schema",
    ]
    .iter()
    .any(|t| name.eq_ignore_ascii_case(t))
}

/// An error from SQLite as the model should read it; `stopped` is the progress handler's verdict.
pub(crate) fn explain(e: &rusqlite::Error, path: &str, stopped: u8) -> String {
    use rusqlite::Error as E;
    let code = e.sqlite_error_code();
    match (e, code) {
        (_, Some(ErrorCode::OperationInterrupted)) => match stopped {
            OUT_OF_STEPS => format!(
                "stopped: the query ran past its budget of {STEP_BUDGET} SQLite steps; make it \
                 cheaper (WHERE, LIMIT, an index) or check that a recursive CTE ends"
            ),
            _ => format!(
                "stopped: the query ran past its time budget of {} s; make it cheaper (WHERE, \
                 LIMIT, an index) or check that a recursive CTE ends",
                TIME_BUDGET.as_secs()
            ),
        },
        (_, Some(ErrorCode::OutOfMemory)) => format!(
            "the query needs more memory than this tool may use ({} MiB for SQLite); aggregate \
             or filter more, or return fewer columns",
            HEAP_LIMIT >> 20
        ),
        (_, Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)) => {
            format!("`{path}` is not a SQLite database, or it is damaged (SQLite says: {e})")
        }
        (_, Some(ErrorCode::ReadOnly)) => refusal("a write"),
        (E::MultipleStatement, _) => {
            "refused: one statement per call; send the statements one call at a time".into()
        }
        (E::SqlInputError { msg, .. }, _) if msg.contains("load_extension") => {
            refusal("loading an extension (load_extension)")
        }
        (E::SqlInputError { msg, offset, .. }, _) => {
            format!("SQL error: {msg} (at character {offset} of the statement)")
        }
        (_, Some(ErrorCode::CannotOpen)) => {
            format!("cannot open `{path}`: {e}")
        }
        _ => format!("SQLite: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reading_actions_pass() {
        assert!(authorize(&AuthAction::Select).is_ok());
        assert!(authorize(&AuthAction::Recursive).is_ok());
        let ok_pragma = AuthAction::Pragma {
            pragma_name: "table_info",
            pragma_value: Some("t"),
        };
        assert!(authorize(&ok_pragma).is_ok());
        let getter = AuthAction::Pragma {
            pragma_name: "user_version",
            pragma_value: None,
        };
        assert!(authorize(&getter).is_ok());
        let setter = AuthAction::Pragma {
            pragma_name: "user_version",
            pragma_value: Some("7"),
        };
        assert_eq!(authorize(&setter).unwrap_err(), "PRAGMA user_version = 7");
        let off = AuthAction::Pragma {
            pragma_name: "query_only",
            pragma_value: Some("0"),
        };
        assert!(authorize(&off).is_err());
        assert!(authorize(&AuthAction::Attach { filename: "x" }).is_err());
        assert!(
            authorize(&AuthAction::Insert { table_name: "t" })
                .unwrap_err()
                .contains("INSERT")
        );
    }
}
