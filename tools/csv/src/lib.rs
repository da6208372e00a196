//! `csv`: an MCP tool server for tabular data given as CSV text. `csv_describe` infers column
//! types and computes statistics, `csv_filter` selects rows and columns, sorts and limits, and
//! `csv_aggregate` groups rows and computes count/sum/mean/min/max. Built for `wasm32-wasip1` and
//! embedded in `caxton-toolhost`; it also runs natively for debugging:
//! `echo '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' | cargo run -p csv-tool --bin csv`.
//!
//! Conventions shared by the tools: the first row is the header; fields are trimmed; a *number*
//! is a field that parses as a finite decimal (`-3`, `2.5`, `1e6`); an empty field is *missing*.
//! Results that are tables are CSV text (comma-separated), so they can be passed on to another
//! call; a result cut at [`MAX_OUTPUT_ROWS`] or [`MAX_OUTPUT_BYTES`] ends with a `# truncated` line.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use mcp_guest::{Server, ToolResult, opt_str_arg, str_arg};
use serde_json::{Map, Value, json};
use tabular::Op;

/// Most data rows a tool writes; longer results are cut, with a note saying so.
pub const MAX_OUTPUT_ROWS: usize = 10_000;
/// Most bytes of CSV a tool writes (the host takes at most 1 MiB per message).
pub const MAX_OUTPUT_BYTES: usize = 400_000;
/// How many of the most frequent values `csv_describe` lists for a text column.
pub const TOP_VALUES: usize = 5;

/// The server's description: name, version and tools.
pub fn server() -> Server {
    Server::new("csv", env!("CARGO_PKG_VERSION"))
        .tool(
            "csv_describe",
            "Describe CSV data: the row count and, for each column, its inferred type (number, text or empty) and \
             missing values; for number columns count/min/max/mean/median/sum/stddev, for text columns the distinct \
             count and the 5 most frequent values. Returns JSON. Start here to learn the column names and types.",
            schema(json!({})),
        )
        .tool(
            "csv_filter",
            "Select the rows of CSV data that match all conditions (applied in order), optionally keep only some \
             columns, sort and limit. Returns CSV text. Ops: = != < <= > >= contains. < <= > >= compare numbers \
             when the value is a number and text otherwise (e.g. ISO dates); rows with an empty field never match \
             them. = and != compare numerically when both sides are numbers; contains ignores case.",
            schema(
                json!({
                    "where": {
                        "type": "array",
                        "description": "conditions that must all hold, e.g. [{\"column\": \"price\", \"op\": \">\", \"value\": 10}]",
                        "items": condition_schema()
                    },
                    "columns": {"type": "array", "items": {"type": "string"}, "description": "columns to keep, in this order (default: all)"},
                    "sort_by": {"type": "string", "description": "column to sort by (numerically if all its values are numbers)"},
                    "descending": {"type": "boolean", "description": "sort from largest to smallest (default false)"},
                    "limit": {"type": "integer", "minimum": 0, "description": "at most this many rows, after sorting"}
                }),
            ),
        )
        .tool(
            "csv_aggregate",
            "Group the rows of CSV data by one or more columns and compute aggregates per group: count, sum, mean, \
             min, max. Returns CSV text with the group columns then one column per aggregate (named like sum_price \
             unless `as` is given), sorted by the group columns or by `sort_by`. Without group_by, aggregates the \
             whole table into one row. Empty fields are skipped.",
            schema(
                json!({
                    "group_by": {"type": "array", "items": {"type": "string"}, "description": "columns whose values form the groups"},
                    "aggregates": {
                        "type": "array",
                        "description": "what to compute per group (default: [{\"fn\": \"count\"}])",
                        "items": {
                            "type": "object",
                            "properties": {
                                "column": {"type": "string", "description": "input column; optional for count (then rows are counted)"},
                                "fn": {"type": "string", "enum": ["count", "sum", "mean", "min", "max"]},
                                "as": {"type": "string", "description": "output column name"}
                            },
                            "required": ["fn"]
                        }
                    },
                    "sort_by": {"type": "string", "description": "output column to sort by, e.g. sum_price"},
                    "descending": {"type": "boolean"},
                    "limit": {"type": "integer", "minimum": 0, "description": "at most this many groups, after sorting"}
                }),
            ),
        )
}

/// Runs one tool call.
pub fn call(tool: &str, args: &Value) -> ToolResult {
    let run: fn(&Table, &Value) -> ToolResult = match tool {
        "csv_describe" => |table, _| Ok(describe(table)),
        "csv_filter" => filter,
        "csv_aggregate" => aggregate,
        other => return Err(format!("unknown tool `{other}`")),
    };
    let table = Table::parse(str_arg(args, "csv")?, delimiter(args)?)?;
    run(&table, args)
}

/// The input schema of a tool: `csv` (required), `delimiter` and the tool's own `properties`.
fn schema(properties: Value) -> Value {
    let mut all = json!({
        "csv": {"type": "string", "description": "CSV text; the first row is the header"},
        "delimiter": {"type": "string", "description": "field separator, one character (default `,`; `tab` for tab-separated)"}
    });
    if let (Some(all), Value::Object(own)) = (all.as_object_mut(), properties) {
        all.extend(own);
    }
    json!({"type": "object", "properties": all, "required": ["csv"]})
}

fn condition_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "column": {"type": "string"},
            "op": {"type": "string", "enum": ["=", "!=", "<", "<=", ">", ">=", "contains"]},
            "value": {"type": ["string", "number", "boolean"]}
        },
        "required": ["column", "op", "value"]
    })
}

// ---------------------------------------------------------------------------------------------
// The table

/// A parsed CSV: the column names and the data rows, every row exactly as wide as the header.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names; blank header cells are named `column_N` (N counts from 1).
    pub headers: Vec<String>,
    /// Data rows, fields trimmed.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Parses CSV text whose first row is the header. Blank lines are skipped; a row with a
    /// different number of fields than the header is an error naming the row.
    pub fn parse(text: &str, delimiter: u8) -> Result<Table, String> {
        let mut rows = Vec::new();
        let headers = read_rows(text, delimiter, |record| {
            rows.push(record.iter().map(str::to_string).collect());
            Ok(())
        })?;
        Ok(Table { headers, rows })
    }

    /// The index of the column called `name`, or an error listing the columns there are.
    pub fn column(&self, name: &str) -> Result<usize, String> {
        self.headers.iter().position(|h| h == name).ok_or_else(|| {
            let hint = match self.headers.iter().find(|h| h.eq_ignore_ascii_case(name)) {
                Some(h) => format!(" (names are case-sensitive: did you mean `{h}`?)"),
                None => String::new(),
            };
            format!(
                "unknown column `{name}`{hint}; the columns are: {}",
                self.headers.join(", ")
            )
        })
    }

    /// The fields of column `c`, top to bottom.
    fn cells(&self, c: usize) -> impl Iterator<Item = &str> {
        self.rows.iter().map(move |row| row[c].as_str())
    }
}

/// Reads CSV text whose first row is the header, by the rules of [`Table::parse`], without
/// keeping it: `row` gets each data row (fields trimmed, exactly as wide as the header) in turn.
/// Returns the column names.
pub fn read_rows(
    text: &str,
    delimiter: u8,
    mut row: impl FnMut(&csv::StringRecord) -> Result<(), String>,
) -> Result<Vec<String>, String> {
    let text = drop_blanks_before_quotes(text, delimiter);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let header = match records.next() {
        None => {
            return Err(
                "the CSV is empty: its first line must be the header (the column names)".into(),
            );
        }
        Some(record) => record.map_err(read_error)?,
    };
    let headers = column_names(&header)?;
    for (i, record) in records.enumerate() {
        let record = record.map_err(read_error)?;
        if record.len() != headers.len() {
            let line = record.position().map_or(0, csv::Position::line);
            return Err(format!(
                "data row {} (line {line}) has {} fields but the header has {} columns ({}); \
                 quote fields that contain the delimiter, e.g. \"Smith, J\"",
                i + 1,
                record.len(),
                headers.len(),
                headers.join(", ")
            ));
        }
        row(&record)?;
    }
    Ok(headers)
}

/// Removes the blanks between a delimiter and an opening quote (`1, "Smith, J"`). RFC 4180 reads
/// such a quote as part of an unquoted field, which splits the field at the delimiter inside it;
/// hand-written CSV often has these blanks. Quoted content is left as it is.
fn drop_blanks_before_quotes(text: &str, delimiter: u8) -> Cow<'_, str> {
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let delimiter = char::from(delimiter);
    if delimiter == ' ' || !text.contains(" \"") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut blanks = String::new();
    let mut state = State::FieldStart;
    for c in text.chars() {
        let ends_field = c == delimiter || c == '\n';
        state = match state {
            State::FieldStart if c == ' ' => {
                blanks.push(c);
                continue;
            }
            State::FieldStart if c == '"' => {
                blanks.clear();
                State::Quoted
            }
            State::FieldStart => {
                out.push_str(&blanks);
                blanks.clear();
                if ends_field {
                    State::FieldStart
                } else {
                    State::Unquoted
                }
            }
            State::Quoted if c == '"' => State::QuoteInQuoted,
            State::Quoted => State::Quoted,
            State::QuoteInQuoted if c == '"' => State::Quoted,
            State::Unquoted | State::QuoteInQuoted if ends_field => State::FieldStart,
            State::Unquoted | State::QuoteInQuoted => State::Unquoted,
        };
        out.push(c);
    }
    out.push_str(&blanks);
    Cow::Owned(out)
}

/// The header's names: blank ones become `column_N`; a name may appear only once.
fn column_names(header: &csv::StringRecord) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let name = if name.is_empty() {
            format!("column_{}", i + 1)
        } else {
            name.to_string()
        };
        if let Some(first) = names.iter().position(|n| *n == name) {
            return Err(format!(
                "the header names column `{name}` twice (columns {} and {}); give the columns distinct names",
                first + 1,
                i + 1
            ));
        }
        names.push(name);
    }
    Ok(names)
}

fn read_error(e: csv::Error) -> String {
    format!("cannot read the CSV: {e}")
}

/// The `delimiter` argument: one ASCII character, or `tab`; default `,`.
fn delimiter(args: &Value) -> Result<u8, String> {
    match opt_str_arg(args, "delimiter")? {
        None => Ok(b','),
        Some("tab" | "\\t" | "\t") => Ok(b'\t'),
        Some(d) if d.len() == 1 && d.is_ascii() && !matches!(d, "\"" | "\n" | "\r") => {
            Ok(d.as_bytes()[0])
        }
        Some(d) => Err(format!(
            "`delimiter` must be one ASCII character such as `,` `;` `|` or `tab`, not `{d}`"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// A field's number: a finite decimal such as `-3`, `2.5` or `1e6` (surrounding spaces allowed),
/// or `None` for anything else, including `inf` and `NaN`.
pub fn parse_number(field: &str) -> Option<f64> {
    let t = field.trim();
    if t.is_empty() || !t.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '-' | '+' | '.'))
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// `x` rounded to 12 significant digits, hiding binary floating-point noise (0.1 + 0.2).
fn round_significant(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        x
    } else {
        format!("{x:.11e}").parse().unwrap_or(x)
    }
}

/// Formats a number for output: integers without a fraction, others to 12 significant digits.
pub fn format_number(x: f64) -> String {
    let x = round_significant(x);
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A number as JSON, rounded like [`format_number`]: integers as JSON integers.
fn json_number(x: f64) -> Value {
    let x = round_significant(x);
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// Summary statistics of a list of numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub count: usize,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub median: f64,
    pub sum: f64,
    /// The sample standard deviation (divided by n − 1); `None` for a single value.
    pub stddev: Option<f64>,
}

impl Stats {
    /// The statistics of `values`, or `None` if there are none.
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let sum: f64 = sorted.iter().sum();
        let mean = sum / n as f64;
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let stddev = (n > 1).then(|| {
            let squares: f64 = sorted.iter().map(|x| (x - mean).powi(2)).sum();
            (squares / (n - 1) as f64).sqrt()
        });
        Some(Stats {
            count: n,
            min,
            max,
            mean,
            median,
            sum,
            stddev,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// csv_describe

/// The type `csv_describe` infers for a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Every non-empty field is a number (and there is at least one).
    Number,
    /// Some non-empty field is not a number.
    Text,
    /// Every field is empty.
    Empty,
}

impl ColumnType {
    /// The type of a column with these fields.
    pub fn infer<'a>(cells: impl IntoIterator<Item = &'a str>) -> ColumnType {
        let mut kind = ColumnType::Empty;
        for cell in cells.into_iter().filter(|c| !c.is_empty()) {
            if parse_number(cell).is_none() {
                return ColumnType::Text;
            }
            kind = ColumnType::Number;
        }
        kind
    }

    fn name(self) -> &'static str {
        match self {
            ColumnType::Number => "number",
            ColumnType::Text => "text",
            ColumnType::Empty => "empty",
        }
    }
}

/// `csv_describe`: the row count and a description of each column, as JSON with one line per
/// column (compact, yet easy to read).
fn describe(table: &Table) -> String {
    let columns: Vec<String> = table
        .headers
        .iter()
        .enumerate()
        .map(|(c, name)| describe_column(name, &table.cells(c).collect::<Vec<_>>()).to_string())
        .collect();
    format!(
        "{{\"rows\": {}, \"columns\": [\n  {}\n]}}",
        table.rows.len(),
        columns.join(",\n  ")
    )
}

/// One column's description: name, type, non-empty `count`, `empty`, and type-specific facts.
fn describe_column(name: &str, cells: &[&str]) -> Value {
    let present: Vec<&str> = cells.iter().copied().filter(|c| !c.is_empty()).collect();
    let kind = ColumnType::infer(present.iter().copied());
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    out.insert("type".into(), json!(kind.name()));
    out.insert("count".into(), json!(present.len()));
    out.insert("empty".into(), json!(cells.len() - present.len()));
    match kind {
        ColumnType::Number => {
            let numbers: Vec<f64> = present.iter().filter_map(|c| parse_number(c)).collect();
            if let Some(s) = Stats::of(&numbers) {
                out.insert("min".into(), json_number(s.min));
                out.insert("max".into(), json_number(s.max));
                out.insert("mean".into(), json_number(s.mean));
                out.insert("median".into(), json_number(s.median));
                out.insert("sum".into(), json_number(s.sum));
                out.insert("stddev".into(), s.stddev.map_or(Value::Null, json_number));
            }
        }
        ColumnType::Text => describe_text(&present, &mut out),
        ColumnType::Empty => {}
    }
    Value::Object(out)
}

/// A text column's distinct count and most frequent values, and a note when most of its values
/// are numbers (a few stray ones like `n/a` keep it from being a number column).
fn describe_text(present: &[&str], out: &mut Map<String, Value>) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for value in present {
        *counts.entry(value).or_default() += 1;
    }
    out.insert("distinct".into(), json!(counts.len()));
    let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<Value> = ranked
        .iter()
        .take(TOP_VALUES)
        .map(|(value, count)| json!({"value": value, "count": count}))
        .collect();
    out.insert("top".into(), json!(top));
    let numeric = present.iter().filter(|c| parse_number(c).is_some()).count();
    if numeric * 2 > present.len() {
        let mut others: Vec<&str> = ranked
            .iter()
            .map(|(value, _)| *value)
            .filter(|v| parse_number(v).is_none())
            .collect();
        others.sort_unstable();
        others.truncate(3);
        out.insert(
            "note".into(),
            json!(format!(
                "{numeric} of {} values are numbers; the others (such as `{}`) make this a text column",
                present.len(),
                others.join("`, `")
            )),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// csv_filter

/// `csv_filter`: matching rows, projected, sorted and limited, as CSV.
fn filter(table: &Table, args: &Value) -> ToolResult {
    let conditions = parse_conditions(table, args.get("where"))?;
    let columns = match args.get("columns") {
        None | Some(Value::Null) => (0..table.headers.len()).collect(),
        Some(v) => column_list(table, v, "columns")?,
    };
    let sort_by = opt_str_arg(args, "sort_by")?
        .map(|name| table.column(name))
        .transpose()?;
    let descending = opt_bool(args, "descending")?.unwrap_or(false);
    let limit = opt_usize(args, "limit")?;

    let mut rows = Vec::new();
    for (i, row) in table.rows.iter().enumerate() {
        if row_matches(table, &conditions, row, i + 1)? {
            rows.push(row);
        }
    }
    if let Some(c) = sort_by {
        sort_rows(&mut rows, &[c], descending);
    }
    if let Some(n) = limit {
        rows.truncate(n);
    }
    let headers = columns.iter().map(|&c| table.headers[c].as_str());
    let total = rows.len();
    write_csv(
        headers,
        rows.iter()
            .map(|row| columns.iter().map(|&c| row[c].as_str())),
        total,
    )
}

/// One `where` condition, its column resolved against the header.
#[derive(Debug, Clone)]
struct Condition {
    column: usize,
    op: Op,
    /// The value as text (trimmed).
    value: String,
    /// The value as a number, if it is one.
    number: Option<f64>,
    /// The value in lower case, for `contains`.
    lower: String,
}

impl Condition {
    /// Whether the condition holds for `field`, the field of data row `row`.
    fn holds(&self, field: &str, row: usize, column: &str) -> Result<bool, String> {
        match self.op {
            Op::Eq => Ok(self.equals(field)),
            Op::Ne => Ok(!self.equals(field)),
            Op::Contains => Ok(field.to_lowercase().contains(&self.lower)),
            op => Ok(self
                .compare(field, row, column)?
                .is_some_and(|o| op.accepts(o))),
        }
    }

    /// Same text, or the same number written differently (`5` and `5.0`).
    fn equals(&self, field: &str) -> bool {
        field == self.value
            || matches!((parse_number(field), self.number), (Some(a), Some(b)) if a == b)
    }

    /// How `field` compares with the value: as numbers if the value is a number, else as text.
    /// `None` for an empty field, which no ordering condition matches.
    fn compare(&self, field: &str, row: usize, column: &str) -> Result<Option<Ordering>, String> {
        if field.is_empty() {
            return Ok(None);
        }
        let Some(value) = self.number else {
            return Ok(Some(field.cmp(&self.value)));
        };
        match parse_number(field) {
            Some(x) => Ok(x.partial_cmp(&value)),
            None => Err(format!(
                "data row {row}: column `{column}` holds `{field}`, which is not a number, so `{column} {} {}` \
                 cannot be tested. If a few rows hold such values, exclude them with a condition before this \
                 one (conditions apply in order), e.g. {}; if the column holds text, compare it with text \
                 or use `contains`",
                self.op.symbol(),
                self.value,
                json!({"column": column, "op": "!=", "value": field})
            )),
        }
    }
}

/// The `where` argument: a list of conditions (or one condition object); absent means none.
fn parse_conditions(table: &Table, arg: Option<&Value>) -> Result<Vec<Condition>, String> {
    match arg {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v @ Value::Object(_)) => Ok(vec![parse_condition(table, v, 0)?]),
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, v)| parse_condition(table, v, i)).collect()
        }
        Some(_) => Err(
            "`where` must be a list of conditions like [{\"column\": \"price\", \"op\": \">\", \"value\": 10}]".into(),
        ),
    }
}

fn parse_condition(table: &Table, v: &Value, i: usize) -> Result<Condition, String> {
    let at = |e: String| format!("`where` condition {}: {e}", i + 1);
    if !v.is_object() {
        return Err(at(
            "must be an object like {\"column\": \"price\", \"op\": \">\", \"value\": 10}".into(),
        ));
    }
    let column = table
        .column(str_arg(v, "column").map_err(at)?)
        .map_err(at)?;
    let op = Op::parse(str_arg(v, "op").map_err(at)?).map_err(at)?;
    let value = match v.get("value") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => return Err(at("`value` must be a string, number or boolean".into())),
    };
    Ok(Condition {
        column,
        op,
        number: parse_number(&value),
        lower: value.to_lowercase(),
        value,
    })
}

/// Whether every condition holds for `row` (data row number `n`), tested in order.
fn row_matches(
    table: &Table,
    conditions: &[Condition],
    row: &[String],
    n: usize,
) -> Result<bool, String> {
    for c in conditions {
        if !c.holds(&row[c.column], n, &table.headers[c.column])? {
            return Ok(false);
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// csv_aggregate

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggFn {
    Count,
    Sum,
    Mean,
    Min,
    Max,
}

impl AggFn {
    fn parse(name: &str) -> Result<AggFn, String> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "count" => AggFn::Count,
            "sum" => AggFn::Sum,
            "mean" | "avg" | "average" => AggFn::Mean,
            "min" => AggFn::Min,
            "max" => AggFn::Max,
            _ => {
                return Err(format!(
                    "unknown fn `{name}`; use one of count, sum, mean, min, max"
                ));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Mean => "mean",
            AggFn::Min => "min",
            AggFn::Max => "max",
        }
    }
}

/// One requested aggregate: the function, its input column and its output column name.
#[derive(Debug, Clone)]
struct Aggregate {
    func: AggFn,
    /// `None` only for `count`, which then counts rows.
    column: Option<usize>,
    name: String,
}

/// The running state of one aggregate over one group.
#[derive(Debug, Clone)]
struct Acc {
    count: usize,
    sum: f64,
    min: f64,
    max: f64,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Adds data row `row` (number `n`); a non-number in a numeric aggregate is an error.
    fn add(
        &mut self,
        agg: &Aggregate,
        table: &Table,
        row: &[String],
        n: usize,
    ) -> Result<(), String> {
        let Some(c) = agg.column else {
            self.count += 1;
            return Ok(());
        };
        let field = row[c].as_str();
        if field.is_empty() {
            return Ok(());
        }
        self.count += 1;
        if agg.func == AggFn::Count {
            return Ok(());
        }
        let x = parse_number(field).ok_or_else(|| {
            format!(
                "data row {n}: column `{}` holds `{field}`, which is not a number, so `{}` cannot use it; \
                 aggregate a number column (csv_describe shows the types) or drop such rows with csv_filter first",
                table.headers[c],
                agg.func.name()
            )
        })?;
        self.sum += x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        Ok(())
    }

    /// The aggregate's value: empty for mean/min/max of no numbers.
    fn result(&self, func: AggFn) -> String {
        match func {
            AggFn::Count => self.count.to_string(),
            AggFn::Sum => format_number(self.sum),
            _ if self.count == 0 => String::new(),
            AggFn::Mean => format_number(self.sum / self.count as f64),
            AggFn::Min => format_number(self.min),
            AggFn::Max => format_number(self.max),
        }
    }
}

/// `csv_aggregate`: one row per group with its aggregates, sorted, as CSV.
fn aggregate(table: &Table, args: &Value) -> ToolResult {
    let keys = match args.get("group_by") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => column_list(table, v, "group_by")?,
    };
    let aggregates = parse_aggregates(table, args.get("aggregates"))?;
    let headers: Vec<String> = keys
        .iter()
        .map(|&k| table.headers[k].clone())
        .chain(aggregates.iter().map(|a| a.name.clone()))
        .collect();
    if let Some(dup) = headers
        .iter()
        .enumerate()
        .find_map(|(i, h)| headers[..i].contains(h).then_some(h))
    {
        return Err(format!(
            "the output would have two columns named `{dup}`; give an aggregate another name with `as`"
        ));
    }

    let mut rows: Vec<Vec<String>> = group(table, &keys, &aggregates)?
        .into_iter()
        .map(|g| {
            let values = g
                .accs
                .iter()
                .zip(&aggregates)
                .map(|(acc, a)| acc.result(a.func));
            g.key
                .into_iter()
                .map(str::to_string)
                .chain(values)
                .collect()
        })
        .collect();

    let descending = opt_bool(args, "descending")?.unwrap_or(false);
    match opt_str_arg(args, "sort_by")? {
        Some(name) => {
            let c = headers.iter().position(|h| h == name).ok_or_else(|| {
                format!(
                    "`sort_by`: unknown output column `{name}`; the output columns are: {}",
                    headers.join(", ")
                )
            })?;
            sort_rows(&mut rows, &[c], descending);
        }
        None => sort_rows(&mut rows, &(0..keys.len()).collect::<Vec<_>>(), descending),
    }
    if let Some(n) = opt_usize(args, "limit")? {
        rows.truncate(n);
    }
    let total = rows.len();
    write_csv(headers.iter().map(String::as_str), rows.iter(), total)
}

/// One group of rows: its key (the group columns' values) and its aggregates' running state.
struct Group<'t> {
    key: Vec<&'t str>,
    accs: Vec<Acc>,
}

/// Groups the rows by the `keys` columns, in order of first appearance, accumulating
/// `aggregates`. Without keys there is exactly one group, even for a table without rows.
fn group<'t>(
    table: &'t Table,
    keys: &[usize],
    aggregates: &[Aggregate],
) -> Result<Vec<Group<'t>>, String> {
    let new_group = |key| Group {
        key,
        accs: vec![Acc::new(); aggregates.len()],
    };
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Vec<&str>, usize> = HashMap::new();
    if keys.is_empty() {
        groups.push(new_group(Vec::new()));
        index.insert(Vec::new(), 0);
    }
    for (i, row) in table.rows.iter().enumerate() {
        let key: Vec<&str> = keys.iter().map(|&k| row[k].as_str()).collect();
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push(new_group(key));
            groups.len() - 1
        });
        for (acc, agg) in groups[g].accs.iter_mut().zip(aggregates) {
            acc.add(agg, table, row, i + 1)?;
        }
    }
    Ok(groups)
}

/// The `aggregates` argument: a list (or one object); absent means `[{"fn": "count"}]`.
fn parse_aggregates(table: &Table, arg: Option<&Value>) -> Result<Vec<Aggregate>, String> {
    match arg {
        None | Some(Value::Null) => {
            Ok(vec![Aggregate { func: AggFn::Count, column: None, name: "count".into() }])
        }
        Some(v @ Value::Object(_)) => Ok(vec![parse_aggregate(table, v, 0)?]),
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().enumerate().map(|(i, v)| parse_aggregate(table, v, i)).collect()
        }
        Some(_) => Err(
            "`aggregates` must be a non-empty list like [{\"column\": \"price\", \"fn\": \"sum\"}, {\"fn\": \"count\"}]"
                .into(),
        ),
    }
}

fn parse_aggregate(table: &Table, v: &Value, i: usize) -> Result<Aggregate, String> {
    let at = |e: String| format!("aggregate {}: {e}", i + 1);
    if !v.is_object() {
        return Err(at(
            "must be an object like {\"column\": \"price\", \"fn\": \"sum\"}".into(),
        ));
    }
    let func = AggFn::parse(str_arg(v, "fn").map_err(at)?).map_err(at)?;
    let column_name = opt_str_arg(v, "column").map_err(at)?;
    let column = column_name
        .map(|c| table.column(c))
        .transpose()
        .map_err(at)?;
    let default_name = match column_name {
        None if func == AggFn::Count => "count".to_string(),
        None => return Err(at(format!("`{}` needs a `column`", func.name()))),
        Some(c) => format!("{}_{c}", func.name()),
    };
    let name = opt_str_arg(v, "as")
        .map_err(at)?
        .map_or(default_name, str::to_string);
    Ok(Aggregate { func, column, name })
}

// ---------------------------------------------------------------------------------------------
// Shared helpers: arguments, sorting, output

/// A list of column names (or a single name) resolved to column indices.
fn column_list(table: &Table, v: &Value, arg: &str) -> Result<Vec<usize>, String> {
    let names: Vec<&str> = match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| format!("`{arg}` must list column names as strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(format!("`{arg}` must be a list of column names")),
    };
    if names.is_empty() {
        return Err(format!("`{arg}` is empty; name at least one column"));
    }
    names
        .into_iter()
        .map(|n| table.column(n).map_err(|e| format!("`{arg}`: {e}")))
        .collect()
}

/// An optional boolean argument.
fn opt_bool(args: &Value, name: &str) -> Result<Option<bool>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("argument `{name}` must be true or false")),
    }
}

/// An optional non-negative integer argument.
fn opt_usize(args: &Value, name: &str) -> Result<Option<usize>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("argument `{name}` must be a non-negative integer")),
    }
}

/// Sorts rows by the `keys` columns in turn (stable). A column whose non-empty fields are all
/// numbers sorts numerically, any other as text ignoring case; empty fields always go last.
fn sort_rows<R: AsRef<[String]>>(rows: &mut [R], keys: &[usize], descending: bool) {
    let numeric: Vec<bool> = keys
        .iter()
        .map(|&k| rows.iter().all(|r| is_number_or_empty(&r.as_ref()[k])))
        .collect();
    rows.sort_by(|a, b| {
        keys.iter()
            .zip(&numeric)
            .map(|(&k, &num)| compare_fields(&a.as_ref()[k], &b.as_ref()[k], num, descending))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
}

fn is_number_or_empty(field: &str) -> bool {
    field.is_empty() || parse_number(field).is_some()
}

/// Orders two fields of one column; `numeric` says all its non-empty fields are numbers.
fn compare_fields(a: &str, b: &str, numeric: bool, descending: bool) -> Ordering {
    let ordering = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ if numeric => parse_number(a)
            .unwrap_or(0.0)
            .total_cmp(&parse_number(b).unwrap_or(0.0)),
        _ => {
            let lower = |s: &str| s.chars().flat_map(char::to_lowercase).collect::<Vec<_>>();
            lower(a).cmp(&lower(b)).then_with(|| a.cmp(b))
        }
    };
    if descending {
        ordering.reverse()
    } else {
        ordering
    }
}

/// Writes the header and rows as CSV, within [`MAX_OUTPUT_ROWS`] and [`MAX_OUTPUT_BYTES`]. When
/// rows are left out, a last line `# truncated: …` says how many of the `total` are shown.
fn write_csv<H, R, F>(headers: H, rows: impl Iterator<Item = R>, total: usize) -> ToolResult
where
    H: IntoIterator<Item: AsRef<[u8]>>,
    R: IntoIterator<Item = F>,
    F: AsRef<[u8]>,
{
    tabular::write_csv_capped(
        Some(headers),
        rows,
        total,
        (MAX_OUTPUT_ROWS, MAX_OUTPUT_BYTES),
        "narrow it with conditions, `columns` or `limit`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALES: &str = "region,product,units,price,date\n\
        North,apple,10,1.5,2024-01-05\n\
        South,pear,4,2.25,2024-02-11\n\
        North,pear,7,2,2024-03-01\n\
        East,apple,,1.25,2024-01-20\n\
        South,apple,12,1.5,2024-02-28\n";

    fn run(tool: &str, args: Value) -> ToolResult {
        call(tool, &args)
    }

    fn ok(tool: &str, args: Value) -> String {
        run(tool, args).unwrap_or_else(|e| panic!("{tool} failed: {e}"))
    }

    fn err(tool: &str, args: Value) -> String {
        run(tool, args).expect_err("expected an error")
    }

    fn describe_json(csv: &str) -> Value {
        serde_json::from_str(&ok("csv_describe", json!({"csv": csv}))).unwrap()
    }

    #[test]
    fn lists_three_tools() {
        let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let reply = server().handle(line, &mut call).unwrap();
        let v: Value = serde_json::from_str(&reply).unwrap();
        let names: Vec<&str> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["csv_describe", "csv_filter", "csv_aggregate"]);
        for tool in v["result"]["tools"].as_array().unwrap() {
            assert_eq!(tool["inputSchema"]["required"][0], "csv");
        }
    }

    #[test]
    fn parses_quotes_trims_and_skips_blank_lines() {
        let t = Table::parse(
            "name , note\n\"Smith, J\", \"said \"\"hi\"\"\"\n\n Lee ,x\n",
            b',',
        )
        .unwrap();
        assert_eq!(t.headers, ["name", "note"]);
        assert_eq!(t.rows, [["Smith, J", "said \"hi\""], ["Lee", "x"]]);
    }

    #[test]
    fn blanks_before_opening_quotes_are_dropped() {
        assert_eq!(
            drop_blanks_before_quotes("a, \"b, c\"\n", b','),
            "a,\"b, c\"\n"
        );
        // Inside quotes, in unquoted fields and with a space delimiter nothing changes.
        let untouched = "\"x, \"\"y\"\"\", 5 \"in\"";
        assert_eq!(drop_blanks_before_quotes(untouched, b','), untouched);
        assert_eq!(drop_blanks_before_quotes("a \"b\"", b' '), "a \"b\"");
        let t = Table::parse("id, name\n1, \"Smith, J\"\n2,  \"Lee\"  \n", b',').unwrap();
        assert_eq!(t.rows, [["1", "Smith, J"], ["2", "Lee"]]);
        let t = Table::parse("a;b\n1; \"x;y\"\n", b';').unwrap();
        assert_eq!(t.rows, [["1", "x;y"]]);
    }

    #[test]
    fn names_blank_headers_and_rejects_duplicates() {
        let t = Table::parse("a,,c\n1,2,3\n", b',').unwrap();
        assert_eq!(t.headers, ["a", "column_2", "c"]);
        let e = Table::parse("a,b,a\n1,2,3\n", b',').unwrap_err();
        assert!(e.contains("`a` twice (columns 1 and 3)"), "{e}");
    }

    #[test]
    fn ragged_rows_name_the_row_and_line() {
        let e = Table::parse("a,b\n1,2\n3\n", b',').unwrap_err();
        assert!(
            e.contains("data row 2 (line 3) has 1 fields but the header has 2 columns (a, b)"),
            "{e}"
        );
        let e = err("csv_describe", json!({"csv": "a,b\n1,2,3\n"}));
        assert!(e.contains("data row 1"), "{e}");
    }

    #[test]
    fn empty_input_and_bad_arguments() {
        assert!(err("csv_describe", json!({"csv": ""})).contains("the CSV is empty"));
        assert!(err("csv_describe", json!({})).contains("missing string argument `csv`"));
        assert!(
            err("csv_describe", json!({"csv": "a\n1", "delimiter": ";;"}))
                .contains("one ASCII character")
        );
        assert!(err("csv_nope", json!({"csv": "a\n1"})).contains("unknown tool"));
    }

    #[test]
    fn delimiters() {
        let v: Value = serde_json::from_str(&ok(
            "csv_describe",
            json!({"csv": "a;b\n1;2\n", "delimiter": ";"}),
        ))
        .unwrap();
        assert_eq!(v["columns"][1]["name"], "b");
        let v: Value = serde_json::from_str(&ok(
            "csv_describe",
            json!({"csv": "a\tb\n1\t2\n", "delimiter": "tab"}),
        ))
        .unwrap();
        assert_eq!(v["columns"][1]["sum"], 2);
        let v: Value = serde_json::from_str(&ok(
            "csv_describe",
            json!({"csv": "a\tb\n1\t2\n", "delimiter": "\t"}),
        ))
        .unwrap();
        assert_eq!(v["columns"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(" 2.5 "), Some(2.5));
        assert_eq!(parse_number("-3"), Some(-3.0));
        assert_eq!(parse_number("1e3"), Some(1000.0));
        assert_eq!(parse_number(".5"), Some(0.5));
        for not in [
            "", "abc", "inf", "NaN", "infinity", "1,000", "12kg", "1e999",
        ] {
            assert_eq!(parse_number(not), None, "{not}");
        }
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(4.0), "4");
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(2.0 / 3.0), "0.666666666667");
        assert_eq!(format_number(1e20), "100000000000000000000");
    }

    #[test]
    fn stats() {
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(
            (s.count, s.min, s.max, s.sum, s.mean, s.median),
            (4, 1.0, 4.0, 10.0, 2.5, 2.5)
        );
        assert!((s.stddev.unwrap() - 1.290_994_448_7).abs() < 1e-9);
        let one = Stats::of(&[7.0]).unwrap();
        assert_eq!((one.median, one.stddev), (7.0, None));
        assert_eq!(Stats::of(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn column_types() {
        assert_eq!(ColumnType::infer(["1", "", "2.5"]), ColumnType::Number);
        assert_eq!(ColumnType::infer(["1", "x"]), ColumnType::Text);
        assert_eq!(ColumnType::infer(["", ""]), ColumnType::Empty);
    }

    #[test]
    fn describes_number_text_and_empty_columns() {
        let v = describe_json("n,t,e\n1,x,\n3,y,\n,x,\n8,z,\n");
        assert_eq!(v["rows"], 4);
        let n = &v["columns"][0];
        assert_eq!(n["type"], "number");
        assert_eq!(
            (n["count"].as_u64(), n["empty"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(
            (n["min"].as_i64(), n["max"].as_i64(), n["sum"].as_i64()),
            (Some(1), Some(8), Some(12))
        );
        assert_eq!(
            (n["mean"].as_i64(), n["median"].as_i64()),
            (Some(4), Some(3))
        );
        assert!((n["stddev"].as_f64().unwrap() - 3.605_551_275_46).abs() < 1e-9);
        let t = &v["columns"][1];
        assert_eq!(t["type"], "text");
        assert_eq!(t["distinct"], 3);
        assert_eq!(t["top"][0], json!({"value": "x", "count": 2}));
        assert_eq!(t["top"][1], json!({"value": "y", "count": 1}));
        assert!(t.get("note").is_none());
        let e = &v["columns"][2];
        assert_eq!(
            (e["type"].as_str(), e["count"].as_u64(), e["empty"].as_u64()),
            (Some("empty"), Some(0), Some(4))
        );
    }

    #[test]
    fn describe_explains_mostly_numeric_text_columns() {
        let v = describe_json("p\n1\n2\nn/a\n4\n");
        assert_eq!(v["columns"][0]["type"], "text");
        let note = v["columns"][0]["note"].as_str().unwrap();
        assert!(
            note.contains("3 of 4 values are numbers") && note.contains("`n/a`"),
            "{note}"
        );
    }

    #[test]
    fn describe_top_values_are_capped() {
        let csv = "c\n".to_string() + &(0..20).map(|i| format!("v{i}\n")).collect::<String>();
        let v = describe_json(&csv);
        assert_eq!(v["columns"][0]["distinct"], 20);
        assert_eq!(v["columns"][0]["top"].as_array().unwrap().len(), TOP_VALUES);
    }

    #[test]
    fn filter_by_conditions() {
        let out = ok(
            "csv_filter",
            json!({"csv": SALES, "where": [{"column": "region", "op": "=", "value": "North"}, {"column": "units", "op": ">", "value": 8}]}),
        );
        assert_eq!(
            out,
            "region,product,units,price,date\nNorth,apple,10,1.5,2024-01-05\n"
        );
    }

    #[test]
    fn filter_ops() {
        let units = |op: &str, value: Value| {
            let out = ok(
                "csv_filter",
                json!({"csv": SALES, "where": [{"column": "units", "op": op, "value": value}], "columns": ["units"]}),
            );
            out.lines().skip(1).collect::<Vec<_>>().join(" ")
        };
        assert_eq!(units("<", json!(7)), "4");
        assert_eq!(units("<=", json!("7")), "4 7");
        assert_eq!(units(">=", json!(10)), "10 12");
        assert_eq!(units("=", json!(7.0)), "7");
        assert_eq!(units("==", json!("7")), "7");
        assert_eq!(units("!=", json!(7)), "10 4 \"\" 12");
        assert_eq!(units("contains", json!(1)), "10 12");
        let e = err(
            "csv_filter",
            json!({"csv": SALES, "where": [{"column": "units", "op": "~", "value": 1}]}),
        );
        assert!(e.contains("unknown op `~`; use one of"), "{e}");
    }

    #[test]
    fn filter_contains_ignores_case_and_text_comparison_orders_dates() {
        let out = ok(
            "csv_filter",
            json!({"csv": SALES, "where": [{"column": "product", "op": "contains", "value": "PE"}], "columns": ["product"]}),
        );
        assert_eq!(out, "product\npear\npear\n");
        let out = ok(
            "csv_filter",
            json!({"csv": SALES, "where": [{"column": "date", "op": ">=", "value": "2024-02-01"}, {"column": "date", "op": "<", "value": "2024-03-01"}], "columns": ["date"]}),
        );
        assert_eq!(out, "date\n2024-02-11\n2024-02-28\n");
    }

    #[test]
    fn filter_numeric_op_on_text_is_a_clear_error_that_order_can_avoid() {
        let csv = "item,price\na,3\nb,n/a\nc,12\n";
        let e = err(
            "csv_filter",
            json!({"csv": csv, "where": [{"column": "price", "op": ">", "value": 5}]}),
        );
        assert!(
            e.contains("data row 2: column `price` holds `n/a`, which is not a number"),
            "{e}"
        );
        assert!(
            e.contains(r#"{"column":"price","op":"!=","value":"n/a"}"#),
            "{e}"
        );
        let out = ok(
            "csv_filter",
            json!({"csv": csv, "where": [{"column": "price", "op": "!=", "value": "n/a"}, {"column": "price", "op": ">", "value": 5}]}),
        );
        assert_eq!(out, "item,price\nc,12\n");
    }

    #[test]
    fn filter_unknown_columns_list_the_columns() {
        let e = err(
            "csv_filter",
            json!({"csv": SALES, "where": [{"column": "Units", "op": ">", "value": 1}]}),
        );
        assert!(e.contains("`where` condition 1: unknown column `Units` (names are case-sensitive: did you mean `units`?)"), "{e}");
        assert!(
            e.contains("the columns are: region, product, units, price, date"),
            "{e}"
        );
        let e = err(
            "csv_filter",
            json!({"csv": SALES, "columns": ["region", "cost"]}),
        );
        assert!(e.contains("`columns`: unknown column `cost`"), "{e}");
        let e = err("csv_filter", json!({"csv": SALES, "sort_by": "zzz"}));
        assert!(e.contains("unknown column `zzz`"), "{e}");
        let e = err(
            "csv_filter",
            json!({"csv": SALES, "where": [{"column": "units", "op": ">"}]}),
        );
        assert!(
            e.contains("`value` must be a string, number or boolean"),
            "{e}"
        );
        let e = err("csv_filter", json!({"csv": SALES, "where": "units > 3"}));
        assert!(e.contains("`where` must be a list of conditions"), "{e}");
    }

    #[test]
    fn filter_sorts_projects_and_limits() {
        let out = ok(
            "csv_filter",
            json!({"csv": SALES, "columns": ["units", "product"], "sort_by": "units", "descending": true, "limit": 3}),
        );
        assert_eq!(out, "units,product\n12,apple\n10,apple\n7,pear\n");
        // Empty fields sort last either way; numbers sort as numbers (10 after 7).
        let out = ok(
            "csv_filter",
            json!({"csv": SALES, "columns": ["units"], "sort_by": "units"}),
        );
        assert_eq!(out, "units\n4\n7\n10\n12\n\"\"\n");
        let out = ok(
            "csv_filter",
            json!({"csv": "w\nbeta\nAlpha\ngamma\n", "sort_by": "w"}),
        );
        assert_eq!(out, "w\nAlpha\nbeta\ngamma\n");
        let out = ok("csv_filter", json!({"csv": SALES, "limit": 0}));
        assert_eq!(out, "region,product,units,price,date\n");
        assert!(
            err("csv_filter", json!({"csv": SALES, "limit": -1})).contains("non-negative integer")
        );
    }

    #[test]
    fn filter_output_quotes_fields() {
        let out = ok(
            "csv_filter",
            json!({"csv": "a,b\n\"x, y\",\"say \"\"hi\"\"\"\n"}),
        );
        assert_eq!(out, "a,b\n\"x, y\",\"say \"\"hi\"\"\"\n");
    }

    #[test]
    fn output_is_truncated_with_a_note() {
        let csv = "n\n".to_string()
            + &(0..MAX_OUTPUT_ROWS + 5)
                .map(|i| format!("{i}\n"))
                .collect::<String>();
        let out = ok("csv_filter", json!({"csv": csv}));
        assert_eq!(out.lines().count(), 1 + MAX_OUTPUT_ROWS + 1);
        let last = out.lines().last().unwrap();
        assert!(
            last.starts_with(&format!(
                "# truncated: {MAX_OUTPUT_ROWS} of {} rows shown",
                MAX_OUTPUT_ROWS + 5
            )),
            "{last}"
        );

        let wide = "t\n".to_string() + &format!("{}\n", "x".repeat(1000)).repeat(1000);
        let out = ok("csv_filter", json!({"csv": wide}));
        assert!(out.len() < MAX_OUTPUT_BYTES + 300, "{}", out.len());
        assert!(out.lines().last().unwrap().contains("of 1000 rows shown"));
    }

    #[test]
    fn aggregate_groups_and_sorts_by_keys() {
        let out = ok(
            "csv_aggregate",
            json!({"csv": SALES, "group_by": ["region"], "aggregates": [
                {"fn": "count"}, {"column": "units", "fn": "sum"}, {"column": "units", "fn": "mean"},
                {"column": "price", "fn": "min"}, {"column": "price", "fn": "max", "as": "top_price"},
                {"column": "units", "fn": "count"}
            ]}),
        );
        assert_eq!(
            out,
            "region,count,sum_units,mean_units,min_price,top_price,count_units\n\
             East,1,0,,1.25,1.25,0\n\
             North,2,17,8.5,1.5,2,2\n\
             South,2,16,8,1.5,2.25,2\n"
        );
    }

    #[test]
    fn aggregate_by_several_keys_with_sort_and_limit() {
        let out = ok(
            "csv_aggregate",
            json!({"csv": SALES, "group_by": ["product", "region"], "aggregates": [{"column": "units", "fn": "sum"}],
                   "sort_by": "sum_units", "descending": true, "limit": 2}),
        );
        assert_eq!(
            out,
            "product,region,sum_units\napple,South,12\napple,North,10\n"
        );
        let out = ok(
            "csv_aggregate",
            json!({"csv": SALES, "group_by": "product"}),
        );
        assert_eq!(out, "product,count\napple,3\npear,2\n");
    }

    #[test]
    fn aggregate_sorts_numeric_keys_numerically() {
        let out = ok(
            "csv_aggregate",
            json!({"csv": "y,v\n10,1\n9,2\n10,3\n", "group_by": ["y"], "aggregates": [{"column": "v", "fn": "avg"}]}),
        );
        assert_eq!(out, "y,mean_v\n9,2\n10,2\n");
    }

    #[test]
    fn aggregate_without_groups_totals_the_table() {
        let out = ok(
            "csv_aggregate",
            json!({"csv": SALES, "aggregates": [{"column": "units", "fn": "sum"}, {"column": "price", "fn": "mean"}]}),
        );
        assert_eq!(out, "sum_units,mean_price\n33,1.7\n");
        let out = ok(
            "csv_aggregate",
            json!({"csv": "a\n", "aggregates": [{"fn": "count"}, {"column": "a", "fn": "max"}]}),
        );
        assert_eq!(out, "count,max_a\n0,\n");
    }

    #[test]
    fn aggregate_errors() {
        let e = err(
            "csv_aggregate",
            json!({"csv": SALES, "group_by": ["region"], "aggregates": [{"column": "product", "fn": "sum"}]}),
        );
        assert!(e.contains("data row 1: column `product` holds `apple`, which is not a number, so `sum` cannot use it"), "{e}");
        let e = err(
            "csv_aggregate",
            json!({"csv": SALES, "aggregates": [{"fn": "sum"}]}),
        );
        assert!(e.contains("aggregate 1: `sum` needs a `column`"), "{e}");
        let e = err(
            "csv_aggregate",
            json!({"csv": SALES, "aggregates": [{"column": "units", "fn": "median"}]}),
        );
        assert!(
            e.contains("unknown fn `median`; use one of count, sum, mean, min, max"),
            "{e}"
        );
        let e = err(
            "csv_aggregate",
            json!({"csv": SALES, "group_by": ["regio"]}),
        );
        assert!(
            e.contains("`group_by`: unknown column `regio`; the columns are:"),
            "{e}"
        );
        let e = err(
            "csv_aggregate",
            json!({"csv": SALES, "group_by": ["region"], "aggregates": [{"fn": "count", "as": "region"}]}),
        );
        assert!(e.contains("two columns named `region`"), "{e}");
        let e = err(
            "csv_aggregate",
            json!({"csv": SALES, "group_by": ["region"], "sort_by": "units"}),
        );
        assert!(
            e.contains("unknown output column `units`; the output columns are: region, count"),
            "{e}"
        );
        let e = err("csv_aggregate", json!({"csv": SALES, "aggregates": []}));
        assert!(e.contains("non-empty list"), "{e}");
    }

    #[test]
    fn serves_a_call_over_mcp() {
        let line = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "csv_aggregate", "arguments": {"csv": SALES, "group_by": ["product"]}}})
        .to_string();
        let reply: Value =
            serde_json::from_str(&server().handle(&line, &mut call).unwrap()).unwrap();
        assert_eq!(reply["result"]["isError"], false);
        assert_eq!(
            reply["result"]["content"][0]["text"],
            "product,count\napple,3\npear,2\n"
        );
    }
}
