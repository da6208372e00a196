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
    // The size the result will have inside the JSON-RPC answer (control characters escaped),
    // starting with the longest the `# columns:` line can be.
    let mut size = json_len(b"# columns: \n")
        + names
            .iter()
            .zip(&declared)
            .map(|(n, d)| json_len(n.as_bytes()) + d.as_ref().map_or(7, String::len) + 3)
            .sum::<usize>();
    if size > MAX_OUTPUT_BYTES {
        return Err(format!(
            "the result's column names alone are over {} KiB; select fewer columns, or name them \
             with AS",
            MAX_OUTPUT_BYTES / 1024
        ));
    }
    let mut seen: Vec<Option<&'static str>> = vec![None; names.len()];
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(&names).map_err(write_error)?;
    csv.flush().map_err(write_error)?;
    // Bytes of whole rows written so far: a row that crosses the cap is cut off at the end.
    let mut kept = csv.get_ref().len();
    size += json_len(csv.get_ref());
    let mut shown = 0;
    let mut cut = None;
    let mut rows = stmt.query([]).map_err(fail)?;
    while let Some(row) = rows.next().map_err(fail)? {
        if shown == max_rows {
            cut = Some(format!("{max_rows} rows"));
            break;
        }
        let mut fields = Vec::with_capacity(names.len());
        let mut classes = seen.clone();
        for (i, seen) in classes.iter_mut().enumerate() {
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
        let row_size = json_len(&csv.get_ref()[kept..]);
        if size + row_size > MAX_OUTPUT_BYTES {
            cut = Some(format!("{} KiB", MAX_OUTPUT_BYTES / 1024));
            break;
        }
        size += row_size;
        kept = csv.get_ref().len();
        seen = classes;
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
    let text = format!("{rounded:?}");
    match text.find('e') {
        // `1e16` is `1.0e16`: a real keeps its decimal point.
        Some(e) if !text.contains('.') => format!("{}.0{}", &text[..e], &text[e..]),
        _ => text,
    }
}

/// How many bytes `bytes` take as a JSON string's content: `"` and `\\` and the short-escaped
/// control characters take two, the other control characters six (`\u0001`).
fn json_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum()
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
        if json_len(out.as_bytes()) > MAX_OUTPUT_BYTES {
            out.push_str(&format!(
                "# truncated: the listing is capped at {} KiB; query sqlite_schema for the rest\n",
                MAX_OUTPUT_BYTES / 1024
            ));
            return Ok(out);
        }
        if kind == "table" {
            // A table that cannot be read (an unknown virtual-table module) is listed all the same.
            let count = conn
                .query_row(&format!("SELECT count(*) FROM {quoted}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_or_else(
                    |e| format!("rows unknown: {}", fail(e)),
                    |n| format!("{n} rows"),
                );
            out.push_str(&format!("table {name} ({count}{from})\n"));
        } else {
            out.push_str(&format!("view {name}\n"));
        }
        let columns = (|| {
            let mut cols =
                conn.prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1)")?;
            let rows = cols.query_map([name], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })();
        match columns {
            Err(e) => out.push_str(&format!("  (columns unknown: {})\n", fail(e))),
            Ok(columns) => {
                for (col, ty, not_null, pk) in columns {
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
