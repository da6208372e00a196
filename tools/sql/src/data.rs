//! CSV, TSV, JSON and JSON Lines files loaded as tables of an in-memory SQLite database, one table
//! per file, named after the file; column types inferred from the values. Each file is read twice
//! from its text, once for the columns and their types and once to insert the rows, one row at a
//! time: besides the text, only SQLite's copy of the data is held (under its heap limit).

use std::path::{Path, PathBuf};

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, Statement};
use serde::de::{Deserializer as _, Error as _, SeqAccess, Visitor};
use serde_json::{Map, Value};

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
        // Followed like a path given directly (the runtime keeps both inside the grant).
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
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
        let format = Format::of(file).expect("only data files are loaded");
        load(&mut conn, &name, &text, format).map_err(|e| format!("`{shown}`: {e}"))?;
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

/// An identifier quoted for SQL.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What a column's values are: INTEGER if every value is a whole number, REAL if every value is
/// a number, TEXT otherwise (and for a column with no values).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
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

    /// The kind of a column holding values of kinds `self` and `other`.
    fn widen(&mut self, other: Kind) {
        if other > *self {
            *self = other;
        }
    }
}

/// Loads `text` as table `table`: the columns and their kinds first, then the rows.
fn load(conn: &mut Connection, table: &str, text: &str, format: Format) -> Result<(), String> {
    let (columns, kinds) = match format {
        Format::Delimited(d) => {
            let mut kinds: Vec<Kind> = Vec::new();
            let columns = csv_tool::read_rows(text, d, |record| {
                kinds.resize(record.len(), Kind::Empty);
                for (kind, field) in kinds.iter_mut().zip(record) {
                    kind.widen(field_kind(field));
                }
                Ok(())
            })?;
            let kinds = if kinds.is_empty() {
                vec![Kind::Empty; columns.len()]
            } else {
                kinds
            };
            (columns, kinds)
        }
        Format::Json | Format::JsonLines => {
            let mut columns: Vec<String> = Vec::new();
            let mut kinds: Vec<Kind> = Vec::new();
            each_object(text, format, |object| {
                for (key, value) in object {
                    let at = match columns.iter().position(|c| c == &key) {
                        Some(at) => at,
                        None => {
                            columns.push(key);
                            kinds.push(Kind::Empty);
                            columns.len() - 1
                        }
                    };
                    kinds[at].widen(json_kind(&value));
                }
                Ok(())
            })?;
            if columns.is_empty() {
                return Err(
                    "there are no rows (or the rows have no fields) to make a table of".into(),
                );
            }
            (columns, kinds)
        }
    };
    for (i, c) in columns.iter().enumerate() {
        if let Some(other) = columns[..i].iter().find(|o| o.eq_ignore_ascii_case(c)) {
            return Err(format!(
                "columns `{other}` and `{c}` differ only in case, and SQL names ignore case: \
                 rename one of them"
            ));
        }
    }
    let fail = |e: rusqlite::Error| crate::guard::explain(&e, table, 0);
    let defs: Vec<String> = columns
        .iter()
        .zip(&kinds)
        .map(|(c, k)| format!("{} {}", quote(c), k.sql()))
        .collect();
    let tx = conn.transaction().map_err(fail)?;
    tx.execute(
        &format!("CREATE TABLE {} ({})", quote(table), defs.join(", ")),
        [],
    )
    .map_err(fail)?;
    {
        let marks = vec!["?"; columns.len()].join(", ");
        let mut insert = tx
            .prepare(&format!("INSERT INTO {} VALUES ({marks})", quote(table)))
            .map_err(fail)?;
        let put = |row: Vec<Sql>, insert: &mut Statement<'_>| {
            insert
                .execute(rusqlite::params_from_iter(row))
                .map(drop)
                .map_err(fail)
        };
        match format {
            Format::Delimited(d) => {
                csv_tool::read_rows(text, d, |record| {
                    let row = record
                        .iter()
                        .zip(&kinds)
                        .map(|(field, kind)| csv_value(field, *kind))
                        .collect();
                    put(row, &mut insert)
                })?;
            }
            Format::Json | Format::JsonLines => {
                each_object(text, format, |mut object| {
                    let row = columns
                        .iter()
                        .zip(&kinds)
                        .map(|(c, kind)| json_value(object.remove(c).unwrap_or(Value::Null), *kind))
                        .collect();
                    put(row, &mut insert)
                })?;
            }
        }
    }
    tx.commit().map_err(fail)
}

/// A CSV field's kind. A number with a leading zero (`007`, `0123.5`) is text, so codes keep their
/// digits; so is a whole number too big for 64 bits (an id), which a REAL would round.
fn field_kind(field: &str) -> Kind {
    let digits = field.trim_start_matches(['-', '+']).as_bytes();
    if field.is_empty() {
        Kind::Empty
    } else if digits.len() > 1 && digits[0] == b'0' && digits[1].is_ascii_digit() {
        Kind::Text
    } else if field.parse::<i64>().is_ok() {
        Kind::Integer
    } else if digits.iter().all(u8::is_ascii_digit) {
        Kind::Text
    } else if csv_tool::parse_number(field).is_some() {
        Kind::Real
    } else {
        Kind::Text
    }
}

/// A CSV field as a value of a column of `kind` (an empty field is NULL).
fn csv_value(field: &str, kind: Kind) -> Sql {
    match kind {
        _ if field.is_empty() => Sql::Null,
        Kind::Integer => field
            .parse()
            .map_or_else(|_| Sql::Text(field.into()), Sql::Integer),
        Kind::Real => {
            csv_tool::parse_number(field).map_or_else(|| Sql::Text(field.into()), Sql::Real)
        }
        Kind::Empty | Kind::Text => Sql::Text(field.into()),
    }
}

/// A JSON value's kind: booleans are whole numbers (1 and 0); a whole number beyond 64 bits is
/// text, as are strings, arrays and objects.
fn json_kind(value: &Value) -> Kind {
    match value {
        Value::Null => Kind::Empty,
        Value::Bool(_) => Kind::Integer,
        Value::Number(n) if n.is_i64() => Kind::Integer,
        Value::Number(n) if n.is_u64() => Kind::Text,
        Value::Number(_) => Kind::Real,
        _ => Kind::Text,
    }
}

/// A JSON value as a value of a column of `kind`: nested arrays and objects are kept as JSON
/// text (SQLite's JSON functions read them).
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

fn not_rows() -> String {
    "a JSON file must hold an array of objects, one per row".into()
}

/// Calls `f` with each object of a JSON array (`.json`) or each line's object (`.jsonl`), one at a
/// time.
fn each_object(
    text: &str,
    format: Format,
    mut f: impl FnMut(Map<String, Value>) -> Result<(), String>,
) -> Result<(), String> {
    let mut row = |i: usize, item: Value| match item {
        Value::Object(map) => f(map),
        _ => Err(format!("row {} is not an object: {}", i + 1, not_rows())),
    };
    if format == Format::JsonLines {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let item = serde_json::from_str(line)
                .map_err(|e| format!("line {}: not valid JSON: {e}", i + 1))?;
            row(i, item)?;
        }
        return Ok(());
    }
    /// Visits the top-level array element by element.
    struct Rows<'f, F>(&'f mut F);
    impl<'de, F: FnMut(usize, Value) -> Result<(), String>> Visitor<'de> for Rows<'_, F> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of objects, one per row")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while let Some(item) = seq.next_element::<Value>()? {
                (self.0)(i, item).map_err(A::Error::custom)?;
                i += 1;
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_seq(Rows(&mut row))
        .and_then(|()| de.end())
        .map_err(|e| match e.to_string() {
            // A row's own refusal already says what a file must hold.
            text if e.is_data() && text.contains(&not_rows()) => text,
            text if e.is_data() => format!("{text}; {}", not_rows()),
            text => format!("not valid JSON: {text}"),
        })
}
