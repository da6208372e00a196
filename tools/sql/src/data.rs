//! CSV, TSV, JSON and JSON Lines files loaded as tables of an in-memory SQLite database, one table
//! per file, named after the file; column types inferred from the values.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use serde_json::Value;

/// Most bytes of data files loaded in one call (all files together).
pub const MAX_DATA_BYTES: u64 = 32 << 20;
/// Most data files loaded from one directory.
pub const MAX_FILES: usize = 64;

/// How a data file is read, by its extension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Format {
    /// CSV with this delimiter (`.csv` comma, `.tsv` tab); the first row is the header.
    Delimited(u8),
    /// `.json`: an array of objects, one per row (or an object with one such array).
    Json,
    /// `.jsonl`, `.ndjson`: one object per line.
    JsonLines,
}

impl Format {
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "csv" => Format::Delimited(b','),
            "tsv" | "tab" => Format::Delimited(b'\t'),
            "json" => Format::Json,
            "jsonl" | "ndjson" => Format::JsonLines,
            _ => return None,
        })
    }
}

/// Every data file directly inside `dir`, loaded.
pub(crate) fn load_dir(dir: &Path) -> Result<(Connection, Vec<(String, String)>), String> {
    let shown = dir.display().to_string();
    let mut files = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| crate::explain_io(&shown, &e))? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if Format::of(&path).is_some() {
            files.push(path);
        } else {
            others.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    if files.is_empty() {
        others.sort();
        others.truncate(20);
        return Err(format!(
            "`{shown}` holds no CSV, TSV, JSON or JSONL files to load as tables{}; to query a \
             SQLite database, name its file as the path",
            if others.is_empty() {
                String::new()
            } else {
                format!(" (it holds: {})", others.join(", "))
            }
        ));
    }
    if files.len() > MAX_FILES {
        return Err(format!(
            "`{shown}` holds {} data files; at most {MAX_FILES} are loaded at once: name one file, \
             or a directory with fewer",
            files.len()
        ));
    }
    files.sort();
    load_files(&files)
}

/// `files` loaded into a new in-memory database: the connection, and each table with its file.
pub(crate) fn load_files(files: &[PathBuf]) -> Result<(Connection, Vec<(String, String)>), String> {
    crate::guard::limit_heap();
    let mut total = 0;
    for file in files {
        let shown = file.display().to_string();
        total += std::fs::metadata(file)
            .map_err(|e| crate::explain_io(&shown, &e))?
            .len();
    }
    if total > MAX_DATA_BYTES {
        return Err(format!(
            "the data files are {:.1} MiB; at most {} MiB of CSV/JSON are loaded per call: for \
             more data, use a SQLite database file",
            total as f64 / (1 << 20) as f64,
            MAX_DATA_BYTES >> 20
        ));
    }
    let mut conn = Connection::open_in_memory().map_err(|e| format!("SQLite: {e}"))?;
    let mut loaded: Vec<(String, String)> = Vec::new();
    for file in files {
        let shown = file.display().to_string();
        let name = table_name(file);
        if let Some((_, first)) = loaded.iter().find(|(t, _)| t.eq_ignore_ascii_case(&name)) {
            return Err(format!(
                "`{first}` and `{shown}` would both be table `{name}`; name one file as the path"
            ));
        }
        let text = std::fs::read_to_string(file).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => format!("`{shown}` is not UTF-8 text"),
            _ => crate::explain_io(&shown, &e),
        })?;
        let table = match Format::of(file) {
            Some(Format::Delimited(d)) => from_csv(&text, d),
            Some(Format::Json) => from_json(&text),
            Some(Format::JsonLines) => from_json_lines(&text),
            None => unreachable!("only data files are loaded"),
        }
        .map_err(|e| format!("`{shown}`: {e}"))?;
        drop(text);
        table.insert(&mut conn, &name).map_err(|e| {
            format!(
                "cannot load `{shown}`: {}",
                crate::guard::explain(&e, &shown, 0)
            )
        })?;
        loaded.push((name, shown));
    }
    Ok((conn, loaded))
}

/// The table a file becomes: its name without the extension, with characters other than letters,
/// digits and `_` replaced by `_` (`sales-2024.csv` is `sales_2024`).
pub(crate) fn table_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        name = "data".into();
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "t_");
    }
    name
}

/// Rows ready for SQLite: column names, a type per column, and the values.
struct Loaded {
    columns: Vec<String>,
    types: Vec<&'static str>,
    rows: Vec<Vec<Sql>>,
}

impl Loaded {
    fn insert(self, conn: &mut Connection, table: &str) -> rusqlite::Result<()> {
        let defs: Vec<String> = self
            .columns
            .iter()
            .zip(&self.types)
            .map(|(c, t)| format!("{} {t}", quote(c)))
            .collect();
        let tx = conn.transaction()?;
        tx.execute(
            &format!("CREATE TABLE {} ({})", quote(table), defs.join(", ")),
            [],
        )?;
        {
            let marks = vec!["?"; self.columns.len()].join(", ");
            let mut insert =
                tx.prepare(&format!("INSERT INTO {} VALUES ({marks})", quote(table)))?;
            for row in self.rows {
                insert.execute(rusqlite::params_from_iter(row))?;
            }
        }
        tx.commit()
    }
}

/// An identifier quoted for SQL.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What a column's values are: INTEGER if every value is a whole number, REAL if every value is
/// a number, TEXT otherwise (and for a column with no values).
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Kind {
    Empty,
    Integer,
    Real,
    Text,
}

impl Kind {
    fn sql(self) -> &'static str {
        match self {
            Kind::Integer => "INTEGER",
            Kind::Real => "REAL",
            Kind::Empty | Kind::Text => "TEXT",
        }
    }
}

/// A CSV field's kind. A number with a leading zero (`007`, `0123.5`) is text, so codes keep their
/// digits.
fn field_kind(field: &str) -> Kind {
    let digits = field.trim_start_matches(['-', '+']).as_bytes();
    if field.is_empty() {
        Kind::Empty
    } else if digits.len() > 1 && digits[0] == b'0' && digits[1].is_ascii_digit() {
        Kind::Text
    } else if field.parse::<i64>().is_ok() {
        Kind::Integer
    } else if csv_tool::parse_number(field).is_some() {
        Kind::Real
    } else {
        Kind::Text
    }
}

fn from_csv(text: &str, delimiter: u8) -> Result<Loaded, String> {
    let table = csv_tool::Table::parse(text, delimiter)?;
    let kinds: Vec<Kind> = (0..table.headers.len())
        .map(|c| {
            table
                .rows
                .iter()
                .map(|r| field_kind(&r[c]))
                .fold(Kind::Empty, |a, b| if b > a { b } else { a })
        })
        .collect();
    let rows = table
        .rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .zip(&kinds)
                .map(|(field, kind)| match kind {
                    _ if field.is_empty() => Sql::Null,
                    Kind::Integer => field.parse().map_or(Sql::Text(field), Sql::Integer),
                    Kind::Real => {
                        csv_tool::parse_number(&field).map_or(Sql::Text(field), Sql::Real)
                    }
                    Kind::Empty | Kind::Text => Sql::Text(field),
                })
                .collect()
        })
        .collect();
    Ok(Loaded {
        columns: table.headers,
        types: kinds.iter().map(|k| k.sql()).collect(),
        rows,
    })
}

fn from_json(text: &str) -> Result<Loaded, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(map) => {
            let mut arrays = map.into_iter().filter(|(_, v)| v.is_array());
            match (arrays.next(), arrays.next()) {
                (Some((_, Value::Array(items))), None) => items,
                _ => return Err(not_rows()),
            }
        }
        _ => return Err(not_rows()),
    };
    from_objects(items.into_iter().map(Ok))
}

fn from_json_lines(text: &str) -> Result<Loaded, String> {
    from_objects(
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| format!("line {}: not valid JSON: {e}", i + 1))
            }),
    )
}

fn not_rows() -> String {
    "a JSON file must hold an array of objects, one per row (or an object with one such array)"
        .into()
}

/// Objects as rows: the columns are their keys in the order first seen; a missing key is NULL;
/// booleans are 1 and 0; nested arrays and objects are kept as JSON text (SQLite's JSON functions
/// read them).
fn from_objects(items: impl Iterator<Item = Result<Value, String>>) -> Result<Loaded, String> {
    let mut columns: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    for (i, item) in items.enumerate() {
        let Value::Object(map) = item? else {
            return Err(format!("row {} is not an object: {}", i + 1, not_rows()));
        };
        for key in map.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
        objects.push(map);
    }
    if columns.is_empty() {
        return Err("there are no rows (or the rows have no fields) to make a table of".into());
    }
    let kinds: Vec<Kind> = columns
        .iter()
        .map(|c| {
            objects
                .iter()
                .map(|o| match o.get(c) {
                    None | Some(Value::Null) => Kind::Empty,
                    Some(Value::Bool(_)) => Kind::Integer,
                    Some(Value::Number(n)) if n.is_i64() => Kind::Integer,
                    Some(Value::Number(_)) => Kind::Real,
                    Some(_) => Kind::Text,
                })
                .fold(Kind::Empty, |a, b| if b > a { b } else { a })
        })
        .collect();
    let rows = objects
        .into_iter()
        .map(|mut o| {
            columns
                .iter()
                .zip(&kinds)
                .map(|(c, kind)| json_value(o.remove(c).unwrap_or(Value::Null), *kind))
                .collect()
        })
        .collect();
    Ok(Loaded {
        types: kinds.iter().map(|k| k.sql()).collect(),
        columns,
        rows,
    })
}

/// A JSON value as a value of a column of `kind`.
fn json_value(v: Value, kind: Kind) -> Sql {
    match (v, kind) {
        (Value::Null, _) => Sql::Null,
        (Value::Bool(b), Kind::Integer | Kind::Real) => Sql::Integer(b.into()),
        (Value::Number(n), Kind::Integer) => n.as_i64().map_or(Sql::Null, Sql::Integer),
        (Value::Number(n), Kind::Real) => n.as_f64().map_or(Sql::Null, Sql::Real),
        (Value::String(s), _) => Sql::Text(s),
        (other, _) => Sql::Text(other.to_string()),
    }
}
