//! Running a statement and writing its result as a bounded table; the schema listing.

use rusqlite::types::ValueRef;

use crate::guard::Guard;
use crate::{MAX_OUTPUT_BYTES, Source};

/// Most tables and views `sql_schema` lists.
const MAX_SCHEMA_TABLES: usize = 200;
/// Most bytes of a blob shown (as hex).
const BLOB_SHOWN: usize = 32;

/// Runs `sql` on the source and returns the result: a `# columns:` line with each column's type,
/// the rows as CSV (header first; NULL is an empty field), and a last line with the row count or
/// `# truncated: …`.
pub(crate) fn run(
    source: &Source,
    guard: &Guard,
    sql: &str,
    max_rows: usize,
) -> Result<String, String> {
    let fail = |e: rusqlite::Error| guard.explain(&e, &source.path);
    let mut stmt = source.conn.prepare(sql).map_err(fail)?;
    guard.check_read_only(&stmt)?;
    let names: Vec<String> = stmt
        .column_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(crate::guard::refusal("a statement that returns no rows"));
    }
    let declared: Vec<Option<String>> = stmt
        .columns()
        .iter()
        .map(|c| c.decl_type().map(str::to_ascii_uppercase))
        .collect();
    let mut seen: Vec<Option<&'static str>> = vec![None; names.len()];
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(&names).map_err(write_error)?;
    csv.flush().map_err(write_error)?;
    // Bytes of whole rows written so far: a row that crosses the cap is cut off at the end.
    let mut kept = csv.get_ref().len();
    let mut shown = 0;
    let mut cut = None;
    let mut rows = stmt.query([]).map_err(fail)?;
    while let Some(row) = rows.next().map_err(fail)? {
        if shown == max_rows {
            cut = Some(format!("{max_rows} rows"));
            break;
        }
        let mut fields = Vec::with_capacity(names.len());
        for (i, seen) in seen.iter_mut().enumerate() {
            let value = row.get_ref(i).map_err(fail)?;
            let class = storage_class(value);
            if class != "NULL" {
                *seen = match *seen {
                    None => Some(class),
                    Some(c) if c == class => Some(c),
                    Some(_) => Some("mixed"),
                };
            }
            fields.push(field(value));
        }
        csv.write_record(&fields).map_err(write_error)?;
        csv.flush().map_err(write_error)?;
        if csv.get_ref().len() > MAX_OUTPUT_BYTES {
            cut = Some(format!("{} KiB", MAX_OUTPUT_BYTES / 1024));
            break;
        }
        kept = csv.get_ref().len();
        shown += 1;
    }
    let types: Vec<String> = names
        .iter()
        .zip(declared)
        .zip(&seen)
        .map(|((name, declared), seen)| {
            let ty = declared.unwrap_or_else(|| seen.unwrap_or("NULL").to_string());
            format!("{name} {ty}")
        })
        .collect();
    let mut bytes = csv.into_inner().map_err(|e| write_error(e.into_error()))?;
    bytes.truncate(kept);
    let body = String::from_utf8(bytes).map_err(|e| format!("the result is not UTF-8: {e}"))?;
    let tail = match cut {
        None => format!("# {shown} row{}\n", if shown == 1 { "" } else { "s" }),
        Some(limit) => format!(
            "# truncated: only the first {shown} rows are shown; the query returned more (the \
             output is capped at {limit}). Aggregate, add WHERE or LIMIT, or ask for more rows \
             with max_rows (at most {})\n",
            crate::MAX_ROWS
        ),
    };
    Ok(format!("# columns: {}\n{body}{tail}", types.join(", ")))
}

/// SQLite's storage class of a value.
fn storage_class(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "INTEGER",
        ValueRef::Real(_) => "REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "BLOB",
    }
}

/// A value as a CSV field: NULL is empty, a real has at most 15 significant digits (as the
/// `sqlite3` shell prints it) and keeps a decimal point, a blob is hex.
fn field(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => String::new(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => real(x),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => {
            let hex: String = b
                .iter()
                .take(BLOB_SHOWN)
                .map(|x| format!("{x:02x}"))
                .collect();
            if b.len() > BLOB_SHOWN {
                format!("x'{hex}…' ({} bytes)", b.len())
            } else {
                format!("x'{hex}'")
            }
        }
    }
}

fn real(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let rounded: f64 = format!("{x:.14e}").parse().unwrap_or(x);
    format!("{rounded:?}")
}

fn write_error(e: impl std::fmt::Display) -> String {
    format!("cannot write the result: {e}")
}

/// `sql_schema`: each table and view with its columns (name, declared type, NOT NULL, primary
/// key) and, for tables, the row count.
pub(crate) fn schema(source: &Source, guard: &Guard) -> Result<String, String> {
    let fail = |e: rusqlite::Error| guard.explain(&e, &source.path);
    let conn = &source.conn;
    let mut stmt = conn
        .prepare(
            "SELECT type, name FROM sqlite_schema WHERE type IN ('table', 'view') \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )
        .map_err(fail)?;
    let objects: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(fail)?
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    if objects.is_empty() {
        return Ok(format!("`{}` has no tables or views", source.path));
    }
    let mut out = String::new();
    for (kind, name) in objects.iter().take(MAX_SCHEMA_TABLES) {
        let quoted = crate::data::quote(name);
        let from = source
            .loaded
            .iter()
            .find(|(t, _)| t == name)
            .map(|(_, f)| format!(", from {f}"))
            .unwrap_or_default();
        if kind == "table" {
            let count: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {quoted}"), [], |r| r.get(0))
                .map_err(fail)?;
            out.push_str(&format!("table {name} ({count} rows{from})\n"));
        } else {
            out.push_str(&format!("view {name}\n"));
        }
        let mut cols = conn
            .prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1)")
            .map_err(fail)?;
        let rows = cols
            .query_map([name], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(fail)?;
        for row in rows {
            let (col, ty, not_null, pk) = row.map_err(fail)?;
            let ty = if ty.is_empty() {
                "(no type)".into()
            } else {
                ty
            };
            out.push_str(&format!(
                "  {col} {ty}{}{}\n",
                if pk > 0 { " PRIMARY KEY" } else { "" },
                if not_null { " NOT NULL" } else { "" }
            ));
        }
    }
    if objects.len() > MAX_SCHEMA_TABLES {
        out.push_str(&format!(
            "# truncated: {MAX_SCHEMA_TABLES} of {} tables and views shown\n",
            objects.len()
        ));
    }
    Ok(out)
}
