//! `json`: an MCP tool server for JSON data. `json_query` evaluates a JSONPath (RFC 9535)
//! expression and `json_transform` runs a pipeline of record steps (select, filter, sort, limit,
//! rename, to_csv) over an array of objects. Built for `wasm32-wasip1` and embedded in
//! `caxton-toolhost`; it also runs natively for debugging:
//! `echo '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' | cargo run -p json-tool --bin json`.
//!
//! JSONPath comes from `serde_json_path`, with the standard functions `length()`, `count()`,
//! `value()`, and `match()`/`search()` registered here on `regex-lite` (the full `regex` crate
//! would make the module about 1 MB larger; `regex-lite` lacks only Unicode classes like `\p{L}`).

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;

use mcp_guest::{Server, ToolResult, opt_str_arg, str_arg};
use serde_json::{Map, Value, json};
use serde_json_path::JsonPath;
use serde_json_path::functions::{LogicalType, ValueType};
use tabular::Op;

/// Most values (query matches or records) a tool writes; more are cut, with a note saying so.
pub const MAX_OUTPUT_VALUES: usize = 10_000;
/// Most bytes a tool writes (the host takes at most 1 MiB per message).
pub const MAX_OUTPUT_BYTES: usize = 400_000;

/// The server's description: name, version and tools.
pub fn server() -> Server {
    Server::new("json", env!("CARGO_PKG_VERSION"))
        .tool(
            "json_query",
            "Evaluate a JSONPath (RFC 9535) expression on a JSON document and return the matched values as a \
             JSON array. Syntax: $ root, .name or ['name'] child, [0] / [-1] index, [1:3] slice, [*] all, \
             ..name descendants, [?@.price < 10 && @.tags] filter (== != < <= > >= && || !), functions \
             length(), count(), value(), match(@.s, 'regex'), search(@.s, 'regex').",
            json!({
                "type": "object",
                "properties": {
                    "json": {"type": "string", "description": "the JSON document as text"},
                    "path": {"type": "string", "description": "JSONPath, e.g. $.store.book[?@.price < 10].title"},
                    "with_paths": {"type": "boolean", "description": "return [{\"path\", \"value\"}] with each match's location (default false)"}
                },
                "required": ["json", "path"]
            }),
        )
        .tool(
            "json_transform",
            "Run steps over a list of records (JSON objects) and return the result as JSON, or CSV when the last \
             step is {\"to_csv\": true}. Steps, applied in order: {\"select\": [fields]}, \
             {\"filter\": {\"field\", \"op\", \"value\"}} or a list of such (ops = != < <= > >= contains), \
             {\"sort\": {\"field\", \"descending\"}}, {\"limit\": n}, {\"rename\": {\"old\": \"new\"}}, \
             {\"to_csv\": true}. Fields may be dotted paths into nested objects (user.name). The input is an \
             array of objects, one object (treated as one record), or the records a JSONPath `path` selects.",
            json!({
                "type": "object",
                "properties": {
                    "json": {"type": "string", "description": "the JSON document as text"},
                    "path": {"type": "string", "description": "optional JSONPath to the records, e.g. $.data.items"},
                    "steps": {
                        "type": "array",
                        "description": "e.g. [{\"filter\": {\"field\": \"price\", \"op\": \">\", \"value\": 10}}, {\"sort\": {\"field\": \"price\", \"descending\": true}}, {\"limit\": 5}, {\"select\": [\"name\", \"price\"]}]",
                        "items": {"type": "object"}
                    }
                },
                "required": ["json", "steps"]
            }),
        )
}

/// Runs one tool call.
pub fn call(tool: &str, args: &Value) -> ToolResult {
    match tool {
        "json_query" => query(args),
        "json_transform" => transform(args),
        other => Err(format!("unknown tool `{other}`")),
    }
}

// ---------------------------------------------------------------------------------------------
// json_query

/// `json_query`: the values `path` matches, as a JSON array.
fn query(args: &Value) -> ToolResult {
    let doc = json_arg(args)?;
    let path = parse_path(str_arg(args, "path")?)?;
    if opt_bool(args, "with_paths")?.unwrap_or(false) {
        let located: Vec<Value> = path
            .query_located(&doc)
            .into_iter()
            .map(|n| json!({"path": n.location().to_string(), "value": n.node()}))
            .collect();
        Ok(render_array(&located, "matches"))
    } else {
        Ok(render_array(&path.query(&doc).all(), "matches"))
    }
}

/// Parses a JSONPath, or explains what is wrong with it and what one looks like.
fn parse_path(text: &str) -> Result<JsonPath, String> {
    JsonPath::parse(text).map_err(|e| {
        let hint = if text.trim_start().starts_with('$') {
            "Examples: `$.store.book[*].title`, `$..price`, `$.items[?@.price < 10].name`, `$['key with spaces']`"
        } else {
            "A JSONPath starts with `$`, the document's root, e.g. `$.items[0].name`"
        };
        format!("`{text}` is not a valid JSONPath (RFC 9535): {e}. {hint}")
    })
}

/// RFC 9535 `match()`: the whole string matches the regular expression.
#[serde_json_path::function(name = "match")]
fn match_func(value: ValueType, pattern: ValueType) -> LogicalType {
    regex_test(&value, &pattern, true)
}

/// RFC 9535 `search()`: some part of the string matches the regular expression.
#[serde_json_path::function]
fn search(value: ValueType, pattern: ValueType) -> LogicalType {
    regex_test(&value, &pattern, false)
}

/// Tests a string value against a pattern; false for a non-string or an invalid pattern, as
/// RFC 9535 says. Like I-Regexp (RFC 9485), `.` does not match `\n` or `\r`.
fn regex_test(value: &ValueType, pattern: &ValueType, whole: bool) -> LogicalType {
    let (Some(Value::String(text)), Some(Value::String(pattern))) =
        (value.as_value(), pattern.as_value())
    else {
        return LogicalType::False;
    };
    with_regex(pattern, whole, |re| re.is_some_and(|re| re.is_match(text))).into()
}

/// Runs `f` with the compiled pattern (`None` if invalid), compiling each pattern once per
/// instance: a filter calls the function once per candidate node.
fn with_regex<T>(pattern: &str, whole: bool, f: impl FnOnce(Option<&regex_lite::Regex>) -> T) -> T {
    type Cache = HashMap<(String, bool), Option<regex_lite::Regex>>;
    thread_local!(static CACHE: RefCell<Cache> = RefCell::new(HashMap::new()));
    CACHE.with_borrow_mut(|cache| {
        if cache.len() > 64 {
            cache.clear();
        }
        let re = cache
            .entry((pattern.to_string(), whole))
            .or_insert_with(|| {
                let source = if whole {
                    format!("(?R)^(?:{pattern})$")
                } else {
                    format!("(?R){pattern}")
                };
                regex_lite::Regex::new(&source).ok()
            });
        f(re.as_ref())
    })
}

// ---------------------------------------------------------------------------------------------
// json_transform

/// `json_transform`: the records after the steps, as JSON (or CSV after `to_csv`).
fn transform(args: &Value) -> ToolResult {
    let doc = json_arg(args)?;
    let (mut records, single) = match opt_str_arg(args, "path")? {
        Some(path) => (select_records(&doc, &parse_path(path)?), false),
        None => match doc {
            Value::Array(items) => (items, false),
            object @ Value::Object(_) => (vec![object], true),
            other => {
                return Err(format!(
                    "`json` must be an array of objects or an object, not {}; use `path` to point at the records",
                    kind(&other)
                ));
            }
        },
    };
    let steps = parse_steps(args.get("steps"))?;
    for (i, step) in steps.iter().enumerate() {
        records = step
            .apply(records)
            .map_err(|e| format!("step {} ({}): {e}", i + 1, step.name()))?;
    }
    if matches!(steps.last(), Some(Step::ToCsv)) {
        return to_csv(&records);
    }
    match (single, records.as_slice()) {
        (true, []) => Ok("null".into()),
        (true, [one]) if one.to_string().len() <= MAX_OUTPUT_BYTES => Ok(one.to_string()),
        (true, [_]) => Err(format!(
            "the result is over {} KB; select fewer fields or query a part with json_query",
            MAX_OUTPUT_BYTES / 1000
        )),
        _ => Ok(render_array(&records, "records")),
    }
}

/// The records at `path`: the elements of the one array it matches, else the matched values.
fn select_records(doc: &Value, path: &JsonPath) -> Vec<Value> {
    match path.query(doc).all().as_slice() {
        [Value::Array(items)] => items.clone(),
        nodes => nodes.iter().map(|v| (*v).clone()).collect(),
    }
}

/// One transform step.
#[derive(Debug, Clone)]
enum Step {
    Select(Vec<String>),
    Filter(Vec<Condition>),
    Sort { field: String, descending: bool },
    Limit(usize),
    Rename(Vec<(String, String)>),
    ToCsv,
}

/// The `steps` argument: a list of one-key objects; `to_csv` only last.
fn parse_steps(arg: Option<&Value>) -> Result<Vec<Step>, String> {
    let Some(Value::Array(items)) = arg else {
        return Err("`steps` must be a list like [{\"filter\": {\"field\": \"price\", \"op\": \">\", \"value\": 10}}, {\"limit\": 5}]".into());
    };
    let steps = items
        .iter()
        .enumerate()
        .map(|(i, v)| Step::parse(v).map_err(|e| format!("step {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(i) = steps.iter().position(|s| matches!(s, Step::ToCsv))
        && i + 1 != steps.len()
    {
        return Err(format!(
            "step {}: to_csv must be the last step (there are {})",
            i + 1,
            steps.len()
        ));
    }
    Ok(steps)
}

impl Step {
    fn parse(v: &Value) -> Result<Step, String> {
        let usage = "must be an object with one key, one of select, filter, sort, limit, rename, to_csv, e.g. {\"limit\": 10}";
        let Some((name, arg)) = v
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
        else {
            return Err(usage.into());
        };
        match name.as_str() {
            "select" => Ok(Step::Select(field_list(arg)?)),
            "filter" => Ok(Step::Filter(parse_conditions(arg)?)),
            "sort" => parse_sort(arg),
            "limit" => arg
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Step::Limit)
                .ok_or_else(|| "limit must be a non-negative integer, e.g. {\"limit\": 10}".into()),
            "rename" => parse_rename(arg),
            "to_csv" if *arg == Value::Bool(true) => Ok(Step::ToCsv),
            "to_csv" => Err("write {\"to_csv\": true}".into()),
            other => Err(format!("unknown step `{other}`; {usage}")),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Step::Select(_) => "select",
            Step::Filter(_) => "filter",
            Step::Sort { .. } => "sort",
            Step::Limit(_) => "limit",
            Step::Rename(_) => "rename",
            Step::ToCsv => "to_csv",
        }
    }

    /// Applies the step. A field that no record has is an error (a typo, most likely).
    fn apply(&self, mut records: Vec<Value>) -> Result<Vec<Value>, String> {
        match self {
            Step::Select(fields) => {
                fields.iter().try_for_each(|f| require_field(&records, f))?;
                records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| select(r, fields, i + 1))
                    .collect()
            }
            Step::Filter(conditions) => {
                conditions
                    .iter()
                    .try_for_each(|c| require_field(&records, &c.field))?;
                let mut kept = Vec::new();
                for (i, record) in records.into_iter().enumerate() {
                    if conditions_hold(conditions, &record, i + 1)? {
                        kept.push(record);
                    }
                }
                Ok(kept)
            }
            Step::Sort { field, descending } => {
                require_field(&records, field)?;
                sort_records(&mut records, field, *descending);
                Ok(records)
            }
            Step::Limit(n) => {
                records.truncate(*n);
                Ok(records)
            }
            Step::Rename(pairs) => {
                for (old, _) in pairs {
                    if !records.iter().any(|r| r.get(old).is_some()) {
                        return Err(no_such_field(&records, old));
                    }
                }
                records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| rename(r, pairs, i + 1))
                    .collect()
            }
            Step::ToCsv => Ok(records),
        }
    }
}

fn field_list(arg: &Value) -> Result<Vec<String>, String> {
    let usage = "select takes a list of field names, e.g. {\"select\": [\"name\", \"price\"]}";
    let Value::Array(items) = arg else {
        return Err(usage.into());
    };
    let fields: Vec<String> = items
        .iter()
        .map(|f| f.as_str().map(str::to_string).ok_or(usage))
        .collect::<Result<_, _>>()?;
    if fields.is_empty() {
        return Err(usage.into());
    }
    Ok(fields)
}

fn parse_sort(arg: &Value) -> Result<Step, String> {
    let usage = "sort takes {\"field\": \"price\", \"descending\": true} or a field name";
    match arg {
        Value::String(field) => Ok(Step::Sort {
            field: field.clone(),
            descending: false,
        }),
        Value::Object(_) => {
            let field = str_arg(arg, "field")
                .map_err(|e| format!("{e}; {usage}"))?
                .to_string();
            let descending = opt_bool(arg, "descending")?.unwrap_or(false);
            Ok(Step::Sort { field, descending })
        }
        _ => Err(usage.into()),
    }
}

fn parse_rename(arg: &Value) -> Result<Step, String> {
    let usage =
        "rename takes an object of old to new names, e.g. {\"rename\": {\"qty\": \"quantity\"}}";
    let Some(map) = arg.as_object().filter(|m| !m.is_empty()) else {
        return Err(usage.into());
    };
    let pairs = map
        .iter()
        .map(|(old, new)| {
            new.as_str()
                .map(|n| (old.clone(), n.to_string()))
                .ok_or(usage)
        })
        .collect::<Result<_, _>>()?;
    Ok(Step::Rename(pairs))
}

/// A record's field: the key itself, else a dotted path into nested objects and arrays
/// (`user.name`, `tags.0`).
pub fn lookup<'a>(record: &'a Value, field: &str) -> Option<&'a Value> {
    if let Some(v) = record.get(field) {
        return Some(v);
    }
    if !field.contains('.') {
        return None;
    }
    field.split('.').try_fold(record, |v, part| match v {
        Value::Object(map) => map.get(part),
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Errs unless some record has `field`.
fn require_field(records: &[Value], field: &str) -> Result<(), String> {
    if records.is_empty() || records.iter().any(|r| lookup(r, field).is_some()) {
        Ok(())
    } else {
        Err(no_such_field(records, field))
    }
}

fn no_such_field(records: &[Value], field: &str) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for key in records
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|m| m.keys())
    {
        if !seen.contains(&key.as_str()) && seen.len() < 40 {
            seen.push(key);
        }
    }
    if seen.is_empty() {
        format!("no record has a field `{field}`: the records are not objects")
    } else {
        format!(
            "no record has a field `{field}`; the fields are: {}",
            seen.join(", ")
        )
    }
}

/// The record with only `fields`, in that order (missing ones null).
fn select(record: &Value, fields: &[String], n: usize) -> Result<Value, String> {
    if !record.is_object() {
        return Err(format!("record {n} is {}, not an object", kind(record)));
    }
    let picked: Map<String, Value> = fields
        .iter()
        .map(|f| (f.clone(), lookup(record, f).cloned().unwrap_or(Value::Null)))
        .collect();
    Ok(Value::Object(picked))
}

/// The record with its keys renamed, in place.
fn rename(record: &Value, pairs: &[(String, String)], n: usize) -> Result<Value, String> {
    let Value::Object(map) = record else {
        return Err(format!("record {n} is {}, not an object", kind(record)));
    };
    let mut out = Map::new();
    for (key, value) in map {
        let name = pairs
            .iter()
            .find(|(old, _)| old == key)
            .map_or(key, |(_, new)| new);
        if out.insert(name.clone(), value.clone()).is_some()
            || (name != key && map.contains_key(name))
        {
            return Err(format!(
                "record {n} would have two fields named `{name}`; rename or drop (select) the other first"
            ));
        }
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Filtering and sorting

/// One filter condition.
#[derive(Debug, Clone)]
struct Condition {
    field: String,
    op: Op,
    value: Value,
}

impl Condition {
    /// Whether the condition holds for `record` (record number `n`). A missing field is null.
    fn holds(&self, record: &Value, n: usize) -> Result<bool, String> {
        let field = lookup(record, &self.field).unwrap_or(&Value::Null);
        match self.op {
            Op::Eq => Ok(loosely_equal(field, &self.value)),
            Op::Ne => Ok(!loosely_equal(field, &self.value)),
            Op::Contains => Ok(contains(field, &self.value)),
            op => Ok(self.compare(field, n)?.is_some_and(|o| op.accepts(o))),
        }
    }

    /// How `field` orders against the value: as numbers when the value is a number (or numeric
    /// text), else as strings. `None` for null, which no ordering condition matches.
    fn compare(&self, field: &Value, n: usize) -> Result<Option<Ordering>, String> {
        if field.is_null() {
            return Ok(None);
        }
        let test = format!("`{} {} {}`", self.field, self.op.symbol(), self.value);
        if let Some(value) = as_number(&self.value) {
            return match as_number(field) {
                Some(x) => Ok(x.partial_cmp(&value)),
                None => Err(format!(
                    "record {n}: field `{}` is {field}, not a number, so {test} cannot be tested; \
                     filter such records out first (conditions apply in order), e.g. {}; if the \
                     field holds text, compare it with text or use `contains`",
                    self.field,
                    json!({"field": self.field, "op": "!=", "value": field})
                )),
            };
        }
        match (field, &self.value) {
            (Value::String(a), Value::String(b)) => Ok(Some(a.as_str().cmp(b))),
            _ => Err(format!(
                "record {n}: field `{}` is {field}, so {test} cannot compare it",
                self.field
            )),
        }
    }
}

/// Parses `filter`'s argument: one condition object or a list of them.
fn parse_conditions(arg: &Value) -> Result<Vec<Condition>, String> {
    match arg {
        Value::Object(_) => Ok(vec![parse_condition(arg)?]),
        Value::Array(items) if !items.is_empty() => items.iter().map(parse_condition).collect(),
        _ => Err(
            "filter takes {\"field\": \"price\", \"op\": \">\", \"value\": 10} or a list of such"
                .into(),
        ),
    }
}

fn parse_condition(v: &Value) -> Result<Condition, String> {
    let example = "e.g. {\"field\": \"price\", \"op\": \">\", \"value\": 10}";
    if !v.is_object() {
        return Err(format!("a condition must be an object, {example}"));
    }
    let field = str_arg(v, "field")
        .map_err(|e| format!("{e}; {example}"))?
        .to_string();
    let op = Op::parse(str_arg(v, "op").map_err(|e| format!("{e}; {example}"))?)?;
    let Some(value) = v.get("value").cloned() else {
        return Err(format!(
            "the condition on `{field}` needs a `value`; {example}"
        ));
    };
    if op.is_ordering() && !matches!(value, Value::Number(_) | Value::String(_)) {
        return Err(format!(
            "`{}` needs a number or string value, not {}",
            op.symbol(),
            kind(&value)
        ));
    }
    Ok(Condition { field, op, value })
}

/// Whether all conditions hold for the record, tested in order.
fn conditions_hold(conditions: &[Condition], record: &Value, n: usize) -> Result<bool, String> {
    for c in conditions {
        if !c.holds(record, n)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A finite number from a JSON number or a numeric string (`"2.5"`).
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t = s.trim();
            let numeric =
                t.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '-' | '+' | '.'));
            if numeric {
                t.parse::<f64>().ok().filter(|x| x.is_finite())
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Equal JSON, or the same number however written (`5`, `5.0`, `"5"`).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (as_number(a), as_number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A string containing the value's text (ignoring case), or an array with an element equal to it.
fn contains(field: &Value, value: &Value) -> bool {
    match field {
        Value::String(s) => {
            let needle = match value {
                Value::String(v) => v.to_lowercase(),
                other => other.to_string(),
            };
            s.to_lowercase().contains(&needle)
        }
        Value::Array(items) => items.iter().any(|item| loosely_equal(item, value)),
        _ => false,
    }
}

/// Sorts records by a field (stable). If every present value is a number (or numeric string) the
/// sort is numeric; otherwise numbers come before strings (ignoring case), then booleans, arrays
/// and objects. Missing and null values always go last.
fn sort_records(records: &mut [Value], field: &str, descending: bool) {
    let numeric = records
        .iter()
        .all(|r| lookup(r, field).is_none_or(|v| v.is_null() || as_number(v).is_some()));
    records.sort_by(|a, b| {
        let (a, b) = (
            lookup(a, field).filter(|v| !v.is_null()),
            lookup(b, field).filter(|v| !v.is_null()),
        );
        let ordering = match (a, b) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(a), Some(b)) if numeric => as_number(a)
                .unwrap_or(0.0)
                .total_cmp(&as_number(b).unwrap_or(0.0)),
            (Some(a), Some(b)) => rank(a).cmp(&rank(b)).then_with(|| compare_same_kind(a, b)),
        };
        if descending {
            ordering.reverse()
        } else {
            ordering
        }
    });
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

fn compare_same_kind(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::String(x), Value::String(y)) => {
            let lower = |s: &str| s.chars().flat_map(char::to_lowercase).collect::<Vec<_>>();
            lower(x).cmp(&lower(y)).then_with(|| x.cmp(y))
        }
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// The values as a compact JSON array within [`MAX_OUTPUT_VALUES`] and [`MAX_OUTPUT_BYTES`]; when
/// values are left out, a line `# truncated: …` after the array says how many are shown.
fn render_array(values: &[impl Display], what: &str) -> String {
    let mut out = String::from("[");
    let mut shown = 0;
    for value in values.iter().take(MAX_OUTPUT_VALUES) {
        let text = value.to_string();
        if out.len() + text.len() + 2 > MAX_OUTPUT_BYTES {
            break;
        }
        if shown > 0 {
            out.push(',');
        }
        out.push_str(&text);
        shown += 1;
    }
    out.push(']');
    if shown < values.len() {
        out.push_str(&format!(
            "\n# truncated: {shown} of {} {what} shown (output is capped at {MAX_OUTPUT_VALUES} values and {} KB); \
             narrow the path, filter, select fewer fields or add a limit",
            values.len(),
            MAX_OUTPUT_BYTES / 1000
        ));
    }
    out
}

/// The records (objects) as CSV: columns are all keys in order of first appearance; null is an
/// empty field, arrays and objects are written as compact JSON.
fn to_csv(records: &[Value]) -> ToolResult {
    let mut columns: Vec<&str> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, record) in records.iter().enumerate() {
        let Value::Object(map) = record else {
            return Err(format!(
                "step to_csv: record {} is {}, not an object; to_csv writes objects as rows",
                i + 1,
                kind(record)
            ));
        };
        for key in map.keys() {
            if seen.insert(key) {
                columns.push(key);
            }
        }
    }
    let headers = (!columns.is_empty()).then_some(&columns);
    let rows = records
        .iter()
        .map(|record| columns.iter().map(|c| csv_field(record.get(c))));
    tabular::write_csv_capped(
        headers,
        rows,
        records.len(),
        (MAX_OUTPUT_VALUES, MAX_OUTPUT_BYTES),
        "filter, select fewer fields or add a limit",
    )
}

fn csv_field(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments

/// The `json` argument: JSON text, or (leniently) a JSON value passed as is.
fn json_arg(args: &Value) -> Result<Value, String> {
    match args.get("json") {
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|e| {
            format!("`json` is not valid JSON: {e}; check its quotes, commas and brackets")
        }),
        None | Some(Value::Null) => {
            Err("missing argument `json` (the JSON document as text)".into())
        }
        Some(value) => Ok(value.clone()),
    }
}

/// An optional boolean argument.
fn opt_bool(args: &Value, name: &str) -> Result<Option<bool>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("`{name}` must be true or false")),
    }
}

/// "a number", "an object", … for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: &str = r#"{"store": {
        "book": [
            {"category": "reference", "author": "Nigel Rees", "title": "Sayings of the Century", "price": 8.95},
            {"category": "fiction", "author": "Evelyn Waugh", "title": "Sword of Honour", "price": 12.99},
            {"category": "fiction", "author": "Herman Melville", "title": "Moby Dick", "isbn": "0-553-21311-3", "price": 8.99},
            {"category": "fiction", "author": "J. R. R. Tolkien", "title": "The Lord of the Rings", "isbn": "0-395-19395-8", "price": 22.99}
        ],
        "bicycle": {"color": "red", "price": 399}
    }}"#;

    const PEOPLE: &str = r#"[
        {"name": "Ann", "age": 34, "city": "Oslo", "tags": ["admin", "dev"], "address": {"zip": "0150"}},
        {"name": "bob", "age": 27, "city": "Bergen", "tags": ["dev"]},
        {"name": "Cid", "age": "41", "city": "Oslo", "tags": []},
        {"name": "Dee", "city": null}
    ]"#;

    fn q(doc: &str, path: &str) -> Value {
        let out = call("json_query", &json!({"json": doc, "path": path}))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e} in {out}"))
    }

    fn t(doc: &str, steps: Value) -> ToolResult {
        call("json_transform", &json!({"json": doc, "steps": steps}))
    }

    fn tv(doc: &str, steps: Value) -> Value {
        let out = t(doc, steps.clone()).unwrap_or_else(|e| panic!("{steps}: {e}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e} in {out}"))
    }

    fn names(v: &Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn lists_two_tools() {
        let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let v: Value = serde_json::from_str(&server().handle(line, &mut call).unwrap()).unwrap();
        let tools: Vec<&str> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(tools, ["json_query", "json_transform"]);
    }

    #[test]
    fn query_basics() {
        assert_eq!(q(STORE, "$.store.bicycle.color"), json!(["red"]));
        assert_eq!(q(STORE, "$['store']['bicycle']['price']"), json!([399]));
        assert_eq!(q(STORE, "$.store.book[0].author"), json!(["Nigel Rees"]));
        assert_eq!(
            q(STORE, "$.store.book[-1].title"),
            json!(["The Lord of the Rings"])
        );
        assert_eq!(q(STORE, "$.store.book[1:3].price"), json!([12.99, 8.99]));
        assert_eq!(
            q(STORE, "$.store.book[*].isbn"),
            json!(["0-553-21311-3", "0-395-19395-8"])
        );
        assert_eq!(q(STORE, "$..price").as_array().unwrap().len(), 5);
        assert_eq!(q(STORE, "$.store.book[0, 2].price"), json!([8.95, 8.99]));
        assert_eq!(q(STORE, "$.store.book[::2].price"), json!([8.95, 8.99]));
        assert_eq!(q(STORE, "$.store.book[\"0\"]"), json!([]));
        assert_eq!(q(STORE, "$.nothing.here"), json!([]));
        assert_eq!(q("[1,2]", "$"), json!([[1, 2]]));
    }

    #[test]
    fn query_filters_and_functions() {
        assert_eq!(
            q(STORE, "$.store.book[?@.price < 10].title"),
            json!(["Sayings of the Century", "Moby Dick"])
        );
        assert_eq!(
            q(
                STORE,
                "$.store.book[?(@.price > 10 && @.category == 'fiction')].price"
            ),
            json!([12.99, 22.99])
        );
        assert_eq!(
            q(STORE, "$.store.book[?@.isbn].author"),
            json!(["Herman Melville", "J. R. R. Tolkien"])
        );
        assert_eq!(
            q(STORE, "$.store.book[?length(@.title) < 10].title"),
            json!(["Moby Dick"])
        );
        assert_eq!(
            q(STORE, "$.store[?count(@.*) > 2]")
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            q(STORE, "$.store.book[?match(@.author, 'J.*')].price"),
            json!([22.99])
        );
        assert_eq!(
            q(STORE, "$.store.book[?match(@.author, 'Rees')].price"),
            json!([])
        );
        assert_eq!(
            q(STORE, "$.store.book[?search(@.author, 'Rees')].price"),
            json!([8.95])
        );
        assert_eq!(
            q(
                STORE,
                "$.store.book[?search(@.title, '[Ss]word|Dick')].price"
            ),
            json!([12.99, 8.99])
        );
        // An invalid pattern matches nothing (RFC 9535), it is not an error.
        assert_eq!(
            q(STORE, "$.store.book[?search(@.title, '(')].price"),
            json!([])
        );
        // regex-lite has no Unicode classes: such a pattern is invalid and matches nothing.
        assert_eq!(
            q(STORE, "$.store.book[?search(@.author, '\\\\p{L}')]"),
            json!([])
        );
        // `.` does not match line breaks (I-Regexp).
        assert_eq!(
            q(r#"["a\nb", "axb"]"#, "$[?match(@, 'a.b')]"),
            json!(["axb"])
        );
    }

    #[test]
    fn query_with_paths() {
        let out = call(
            "json_query",
            &json!({"json": STORE, "path": "$..color", "with_paths": true}),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!([{"path": "$['store']['bicycle']['color']", "value": "red"}])
        );
    }

    #[test]
    fn query_errors_explain() {
        let e = call("json_query", &json!({"json": STORE, "path": "store.book"})).unwrap_err();
        assert!(
            e.contains("is not a valid JSONPath") && e.contains("starts with `$`"),
            "{e}"
        );
        let e = call(
            "json_query",
            &json!({"json": STORE, "path": "$.store[?@.x =]"}),
        )
        .unwrap_err();
        assert!(e.contains("at position") && e.contains("Examples:"), "{e}");
        let e = call("json_query", &json!({"json": "{\"a\": 1,}", "path": "$"})).unwrap_err();
        assert!(
            e.contains("`json` is not valid JSON") && e.contains("line 1"),
            "{e}"
        );
        let e = call("json_query", &json!({"path": "$"})).unwrap_err();
        assert!(e.contains("missing argument `json`"), "{e}");
        let e = call("json_query", &json!({"json": "{}"})).unwrap_err();
        assert!(e.contains("missing string argument `path`"), "{e}");
    }

    #[test]
    fn query_accepts_a_json_value_too() {
        let out = call(
            "json_query",
            &json!({"json": {"a": [1, 2]}, "path": "$.a[1]"}),
        )
        .unwrap();
        assert_eq!(out, "[2]");
    }

    #[test]
    fn transform_filter_sort_limit_select() {
        let v = tv(
            PEOPLE,
            json!([
                {"filter": {"field": "city", "op": "=", "value": "Oslo"}},
                {"sort": {"field": "age", "descending": true}},
                {"limit": 1},
                {"select": ["name", "age"]}
            ]),
        );
        assert_eq!(v, json!([{"name": "Cid", "age": "41"}]));
    }

    #[test]
    fn transform_filter_ops() {
        let f = |op: &str, value: Value| {
            names(&tv(
                PEOPLE,
                json!([{"filter": {"field": "age", "op": op, "value": value}}]),
            ))
            .join(" ")
        };
        assert_eq!(f(">", json!(30)), "Ann Cid");
        assert_eq!(f(">=", json!("34")), "Ann Cid");
        assert_eq!(f("<", json!(34)), "bob");
        assert_eq!(f("<=", json!(34)), "Ann bob");
        assert_eq!(f("=", json!(41)), "Cid");
        assert_eq!(f("==", json!(34.0)), "Ann");
        assert_eq!(f("!=", json!(34)), "bob Cid Dee");
        assert_eq!(f("=", Value::Null), "Dee");
        let g = |field: &str, op: &str, value: Value| {
            names(&tv(
                PEOPLE,
                json!([{"filter": {"field": field, "op": op, "value": value}}]),
            ))
            .join(" ")
        };
        assert_eq!(g("name", "contains", json!("B")), "bob");
        assert_eq!(g("tags", "contains", json!("dev")), "Ann bob");
        assert_eq!(g("name", "<", json!("C")), "Ann");
        assert_eq!(g("address.zip", "=", json!("0150")), "Ann");
        assert_eq!(g("tags.0", "=", json!("dev")), "bob");
    }

    #[test]
    fn transform_filter_list_applies_in_order() {
        let docs = r#"[{"p": "n/a"}, {"p": 5}, {"p": 50}]"#;
        let e = t(
            docs,
            json!([{"filter": {"field": "p", "op": ">", "value": 10}}]),
        )
        .unwrap_err();
        assert!(
            e.contains("step 1 (filter): record 1: field `p` is \"n/a\", not a number"),
            "{e}"
        );
        assert!(
            e.contains(r#"{"field":"p","op":"!=","value":"n/a"}"#),
            "{e}"
        );
        let v = tv(
            docs,
            json!([{"filter": [{"field": "p", "op": "!=", "value": "n/a"}, {"field": "p", "op": ">", "value": 10}]}]),
        );
        assert_eq!(v, json!([{"p": 50}]));
    }

    #[test]
    fn transform_sort_orders() {
        let v = tv(PEOPLE, json!([{"sort": "name"}]));
        assert_eq!(names(&v), ["Ann", "bob", "Cid", "Dee"]);
        let v = tv(PEOPLE, json!([{"sort": {"field": "city"}}]));
        assert_eq!(names(&v), ["bob", "Ann", "Cid", "Dee"]);
        // Numeric strings sort as numbers; missing values go last in either direction.
        let v = tv(
            PEOPLE,
            json!([{"sort": {"field": "age", "descending": true}}]),
        );
        assert_eq!(names(&v), ["Cid", "Ann", "bob", "Dee"]);
        let mixed = r#"[{"v": "b"}, {"v": 2}, {"v": true}, {"v": "A"}, {"v": 10}]"#;
        assert_eq!(
            tv(mixed, json!([{"sort": "v"}])),
            json!([{"v": 2}, {"v": 10}, {"v": "A"}, {"v": "b"}, {"v": true}])
        );
    }

    #[test]
    fn transform_select_keeps_order_and_nests() {
        let v = tv(
            PEOPLE,
            json!([{"limit": 2}, {"select": ["city", "name", "address.zip"]}]),
        );
        assert_eq!(
            v.to_string(),
            r#"[{"city":"Oslo","name":"Ann","address.zip":"0150"},{"city":"Bergen","name":"bob","address.zip":null}]"#
        );
    }

    #[test]
    fn transform_rename() {
        let v = tv(
            PEOPLE,
            json!([{"limit": 1}, {"select": ["name", "age"]}, {"rename": {"name": "who"}}]),
        );
        assert_eq!(v.to_string(), r#"[{"who":"Ann","age":34}]"#);
        let e = t(PEOPLE, json!([{"rename": {"name": "city"}}])).unwrap_err();
        assert!(e.contains("two fields named `city`"), "{e}");
        let e = t(PEOPLE, json!([{"rename": {"nmae": "x"}}])).unwrap_err();
        assert!(e.contains("step 1 (rename): no record has a field `nmae`; the fields are: name, age, city, tags, address"), "{e}");
    }

    #[test]
    fn transform_to_csv() {
        let out = t(
            PEOPLE,
            json!([{"select": ["name", "age", "tags"]}, {"to_csv": true}]),
        )
        .unwrap();
        assert_eq!(
            out,
            "name,age,tags\nAnn,34,\"[\"\"admin\"\",\"\"dev\"\"]\"\nbob,27,\"[\"\"dev\"\"]\"\nCid,41,[]\nDee,,\n"
        );
        let out = t(r#"[{"a": 1}, {"b": "x, y"}]"#, json!([{"to_csv": true}])).unwrap();
        assert_eq!(out, "a,b\n1,\n,\"x, y\"\n");
        assert_eq!(t("[]", json!([{"to_csv": true}])).unwrap(), "");
        let e = t("[1, 2]", json!([{"to_csv": true}])).unwrap_err();
        assert!(e.contains("record 1 is a number, not an object"), "{e}");
        let e = t(PEOPLE, json!([{"to_csv": true}, {"limit": 1}])).unwrap_err();
        assert!(e.contains("to_csv must be the last step"), "{e}");
    }

    #[test]
    fn transform_single_object_and_path() {
        let out = t(r#"{"a": 1, "b": 2}"#, json!([{"select": ["b"]}])).unwrap();
        assert_eq!(out, r#"{"b":2}"#);
        let out = t(
            r#"{"a": 1}"#,
            json!([{"filter": {"field": "a", "op": ">", "value": 5}}]),
        )
        .unwrap();
        assert_eq!(out, "null");
        let args = json!({"json": STORE, "path": "$.store.book", "steps": [{"filter": {"field": "price", "op": ">", "value": 20}}, {"select": ["title"]}]});
        assert_eq!(
            call("json_transform", &args).unwrap(),
            r#"[{"title":"The Lord of the Rings"}]"#
        );
        let args = json!({"json": STORE, "path": "$.store.book[?@.isbn]", "steps": [{"select": ["author"]}]});
        assert_eq!(
            call("json_transform", &args).unwrap(),
            r#"[{"author":"Herman Melville"},{"author":"J. R. R. Tolkien"}]"#
        );
        assert_eq!(t("[]", json!([])).unwrap(), "[]");
    }

    #[test]
    fn transform_errors_explain() {
        let e = t("5", json!([])).unwrap_err();
        assert!(
            e.contains("must be an array of objects or an object, not a number"),
            "{e}"
        );
        let e = call("json_transform", &json!({"json": "[]"})).unwrap_err();
        assert!(e.contains("`steps` must be a list"), "{e}");
        let e = t("[]", json!([{"where": {}}])).unwrap_err();
        assert!(e.contains("step 1: unknown step `where`"), "{e}");
        let e = t("[]", json!([{"limit": 1, "sort": "a"}])).unwrap_err();
        assert!(e.contains("step 1: must be an object with one key"), "{e}");
        let e = t("[]", json!([{"limit": -2}])).unwrap_err();
        assert!(e.contains("limit must be a non-negative integer"), "{e}");
        let e = t(
            "[]",
            json!([{"filter": {"field": "a", "op": "~", "value": 1}}]),
        )
        .unwrap_err();
        assert!(e.contains("unknown op `~`"), "{e}");
        let e = t(
            "[]",
            json!([{"filter": {"field": "a", "op": ">", "value": true}}]),
        )
        .unwrap_err();
        assert!(
            e.contains("`>` needs a number or string value, not a boolean"),
            "{e}"
        );
        let e = t("[]", json!([{"filter": {"field": "a", "op": "="}}])).unwrap_err();
        assert!(e.contains("needs a `value`"), "{e}");
        let e = t(PEOPLE, json!([{"select": ["name", "agee"]}])).unwrap_err();
        assert!(
            e.contains("step 1 (select): no record has a field `agee`; the fields are: name, age"),
            "{e}"
        );
        let e = t(PEOPLE, json!([{"sort": {"field": "zzz"}}])).unwrap_err();
        assert!(
            e.contains("step 1 (sort): no record has a field `zzz`"),
            "{e}"
        );
        let e = t("[1]", json!([{"select": ["a"]}])).unwrap_err();
        assert!(e.contains("the records are not objects"), "{e}");
        let e = t(r#"[{"a": 1}, 2]"#, json!([{"select": ["a"]}])).unwrap_err();
        assert!(e.contains("record 2 is a number, not an object"), "{e}");
        let e = t(
            r#"[{"a": [1]}]"#,
            json!([{"filter": {"field": "a", "op": "<", "value": "x"}}]),
        )
        .unwrap_err();
        assert!(
            e.contains("field `a` is [1], so `a < \"x\"` cannot compare it"),
            "{e}"
        );
    }

    #[test]
    fn output_is_truncated_with_a_note() {
        let many = json!((0..MAX_OUTPUT_VALUES + 3).collect::<Vec<_>>()).to_string();
        let out = call("json_query", &json!({"json": many, "path": "$[*]"})).unwrap();
        let (array, note) = out.split_once('\n').unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<u32>>(array).unwrap().len(),
            MAX_OUTPUT_VALUES
        );
        assert!(
            note.starts_with(&format!(
                "# truncated: {MAX_OUTPUT_VALUES} of {} matches shown",
                MAX_OUTPUT_VALUES + 3
            )),
            "{note}"
        );

        let big = json!(
            (0..500)
                .map(|i| json!({"i": i, "s": "x".repeat(1000)}))
                .collect::<Vec<_>>()
        )
        .to_string();
        let out = t(&big, json!([])).unwrap();
        let (array, note) = out.split_once('\n').unwrap();
        assert!(array.len() <= MAX_OUTPUT_BYTES);
        assert!(serde_json::from_str::<Value>(array).is_ok());
        assert!(note.contains("of 500 records shown"), "{note}");
        let csv = t(&big, json!([{"to_csv": true}])).unwrap();
        assert!(csv.len() < MAX_OUTPUT_BYTES + 300);
        assert!(csv.lines().last().unwrap().contains("of 500 rows shown"));
    }

    #[test]
    fn lookup_paths() {
        let v = json!({"a.b": 1, "a": {"b": 2, "c": [10, 20]}});
        assert_eq!(lookup(&v, "a.b"), Some(&json!(1)));
        assert_eq!(lookup(&v, "a.c.1"), Some(&json!(20)));
        assert_eq!(lookup(&v, "a.c.9"), None);
        assert_eq!(lookup(&v, "z"), None);
    }
}
