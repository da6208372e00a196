//! Key paths of agent files: the key a byte offset of the source is at, and what each key expects.
//!
//! A [`KeyPath`] names a value the way a person reads the file: `capabilities`, `limits.max_turns`,
//! `memory.read[1]`. [`locate`] maps a span (of a serde or TOML error) to the most specific key or
//! value it falls in, walking the parsed document; [`locate_by_line`] is the fallback for syntax
//! errors, where the document is incomplete. [`AGENT_KEYS`] is the format's schema: every key with
//! the kind of value it takes and an example, used to word type errors and suggest keys.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key path: a key of a table, or an index into a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a value sits in an agent file, e.g. `limits.max_turns` or `memory.read[1]`; the empty path
/// is the whole file (the top-level table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The top-level table.
    pub fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    /// A path of keys only: `KeyPath::of(&["limits", "max_turns"])`.
    pub fn of(keys: &[&str]) -> KeyPath {
        KeyPath(
            keys.iter()
                .map(|k| Segment::Key((*k).to_string()))
                .collect(),
        )
    }

    /// This path with `key` appended.
    pub fn key(&self, key: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    /// This path with a list index appended.
    pub fn index(&self, index: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// The last key of the path (`max_turns` of `limits.max_turns`, `read` of `memory.read[1]`).
    pub fn last_key(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
    }

    /// The path without its last segment.
    pub fn parent(&self) -> KeyPath {
        let mut p = self.clone();
        p.0.pop();
        p
    }

    /// The table this path's last key is written in, as a header: `[limits]`, or `None` at the top.
    pub fn table_header(&self) -> Option<String> {
        let last_key = self.0.iter().rposition(|s| matches!(s, Segment::Key(_)))?;
        (last_key > 0).then(|| format!("[{}]", KeyPath(self.0[..last_key].to_vec())))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(k) {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Whether TOML lets `key` be written without quotes.
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether `outer` holds the error span `span`. An empty span (a syntax error "expected …" at one
/// point) is held by a range it falls inside or ends; one at the very start of a range is not, so a
/// point error at offset 0 does not land on the file's first key.
fn covers(outer: &Range<usize>, span: &Range<usize>) -> bool {
    if span.is_empty() {
        outer.start < span.start && span.start <= outer.end
    } else {
        outer.start <= span.start && span.end <= outer.end
    }
}

/// The most specific key path whose key or value holds `span` in the parsed document: the one with
/// the smallest range, and of equal ranges the deepest. `None` when the span is in no key or value.
pub fn locate(doc: &DeTable<'_>, span: Range<usize>) -> Option<KeyPath> {
    struct Best {
        len: usize,
        depth: usize,
        path: KeyPath,
    }
    fn consider(best: &mut Option<Best>, range: Range<usize>, span: &Range<usize>, path: &KeyPath) {
        if !covers(&range, span) {
            return;
        }
        let len = range.len();
        let depth = path.segments().len();
        if best
            .as_ref()
            .is_none_or(|b| len < b.len || (len == b.len && depth > b.depth))
        {
            *best = Some(Best {
                len,
                depth,
                path: path.clone(),
            });
        }
    }
    fn value(best: &mut Option<Best>, v: &DeValue<'_>, span: &Range<usize>, path: &KeyPath) {
        match v {
            DeValue::Table(t) => table(best, t, span, path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = path.index(i);
                    consider(best, item.span(), span, &p);
                    value(best, item.get_ref(), span, &p);
                }
            }
            _ => {}
        }
    }
    fn table(best: &mut Option<Best>, t: &DeTable<'_>, span: &Range<usize>, path: &KeyPath) {
        for (k, v) in t.iter() {
            let p = path.key(k.get_ref());
            consider(best, k.span(), span, &p);
            consider(best, v.span(), span, &p);
            value(best, v.get_ref(), span, &p);
        }
    }
    let mut best = None;
    table(&mut best, doc, &span, &KeyPath::root());
    best.map(|b| b.path)
}

/// The value at `path` in the parsed document.
pub fn lookup<'a, 'i>(doc: &'a DeTable<'i>, path: &KeyPath) -> Option<&'a DeValue<'i>> {
    find(doc, path).map(|(_, v)| v.get_ref())
}

/// The byte range of the value at `path` in the parsed document.
pub fn value_span(doc: &DeTable<'_>, path: &KeyPath) -> Option<Range<usize>> {
    find(doc, path).map(|(_, v)| v.span())
}

/// The byte range of the last key of `path` as written (`None` when the path ends with an index).
pub fn key_span(doc: &DeTable<'_>, path: &KeyPath) -> Option<Range<usize>> {
    find(doc, path).and_then(|(k, _)| k)
}

/// The value at `path`, with the span of the key it was found under (none for a list item).
fn find<'a, 'i>(
    doc: &'a DeTable<'i>,
    path: &KeyPath,
) -> Option<(Option<Range<usize>>, &'a Spanned<DeValue<'i>>)> {
    let in_table = |t: &'a DeTable<'i>, k: &str| {
        t.iter()
            .find(|(key, _)| key.get_ref() == k)
            .map(|(key, v)| (Some(key.span()), v))
    };
    let mut segments = path.segments().iter();
    let mut at = match segments.next()? {
        Segment::Key(k) => in_table(doc, k)?,
        Segment::Index(_) => return None,
    };
    for seg in segments {
        at = match (seg, at.1.get_ref()) {
            (Segment::Key(k), DeValue::Table(t)) => in_table(t, k)?,
            (Segment::Index(i), DeValue::Array(items)) => (None, items.get(*i)?),
            _ => return None,
        };
    }
    Some(at)
}

/// The key a syntax error at `offset` is about, read from the source line by line: the key of a
/// `key = …` line (under the `[table]` header above it) or the table of a `[table]` header line.
/// Used when the document did not parse, so [`locate`] has nothing to walk; multi-line strings are
/// skipped, other multi-line values are not understood (then the answer is `None`).
pub fn locate_by_line(src: &str, offset: usize) -> Option<KeyPath> {
    let mut table = KeyPath::root();
    let mut in_multiline: Option<&str> = None;
    let mut start = 0;
    for line in src.split_inclusive('\n') {
        let end = start + line.len();
        let here = offset >= start && (offset < end || end == src.len());
        let trimmed = line.trim();
        if let Some(delim) = in_multiline {
            if line.contains(delim) {
                in_multiline = None;
            }
            if here {
                return None;
            }
        } else if let Some(header) = trimmed.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let inner = header.split(']').next().unwrap_or(header);
            let keys = split_dotted(inner).unwrap_or_default();
            table = KeyPath(keys.into_iter().map(Segment::Key).collect());
            if here {
                return Some(table);
            }
        } else if !trimmed.is_empty() && !trimmed.starts_with('#') {
            let (key_text, value) = match trimmed.split_once('=') {
                Some((k, v)) => (k, Some(v.trim_start())),
                // No `=`: the leading bare key, which is what TOML read as one.
                None => (
                    trimmed
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                        .next()
                        .unwrap_or(""),
                    None,
                ),
            };
            if let Some(v) = value {
                for delim in ["'''", "\"\"\""] {
                    if v.starts_with(delim) && !v[3..].contains(delim) {
                        in_multiline = Some(delim);
                    }
                }
            }
            if here {
                let keys = split_dotted(key_text)?;
                let mut path = table.clone();
                for k in keys {
                    path = path.key(&k);
                }
                return (!path.is_root()).then_some(path);
            }
        }
        start = end;
    }
    None
}

/// Splits a dotted TOML key (`a."b.c".d`) into its keys; `None` when a part is empty.
fn split_dotted(text: &str) -> Option<Vec<String>> {
    let mut keys = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '.') => keys.push(std::mem::take(&mut current)),
            (None, c) if c.is_whitespace() => {}
            (None, c) => current.push(c),
        }
    }
    keys.push(current);
    keys.iter().all(|k| !k.is_empty()).then_some(keys)
}

/// The kind of value a key takes.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Text,
    TextList,
    Bool,
    U32,
    U64,
    Float,
    /// A duration written as a string with a unit: `"30s"`.
    Duration,
    /// A table with these keys.
    Table(&'static [KeySpec]),
    /// `[parameters]`: any keys, any values.
    Parameters,
    /// Any value (a parameter's).
    Any,
    /// `tool_choice`: a string, or a list of strings (one per turn).
    ToolChoice,
}

impl Kind {
    /// What a value of this kind is, for "expected …".
    pub fn expected(self) -> String {
        match self {
            Kind::Text => "a string".into(),
            Kind::TextList => "a list of strings".into(),
            Kind::Bool => "true or false".into(),
            Kind::U32 => format!("a whole number from 0 to {}", u32::MAX),
            Kind::U64 => "a whole number (0 or more)".into(),
            Kind::Float => "a number".into(),
            Kind::Duration => "a duration such as \"30s\" or \"2m\"".into(),
            Kind::Table(_) | Kind::Parameters => "a table".into(),
            Kind::Any => "a value".into(),
            Kind::ToolChoice => {
                "\"auto\", \"required\", \"none\" or a tool name, or a list of those (one per turn)"
                    .into()
            }
        }
    }
}

/// One key of the agent format.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub name: &'static str,
    pub kind: Kind,
    /// A value of the right kind, as written in TOML.
    pub example: &'static str,
}

const fn key(name: &'static str, kind: Kind, example: &'static str) -> KeySpec {
    KeySpec {
        name,
        kind,
        example,
    }
}

/// `[memory]`.
pub const MEMORY_KEYS: &[KeySpec] = &[
    key("enabled", Kind::Bool, "true"),
    key("scope", Kind::Text, "\"agent\""),
    key("workspace", Kind::Text, "\"default\""),
    key("read", Kind::TextList, "[\"global\"]"),
    key("auto_store", Kind::Bool, "true"),
    key("search_limit", Kind::U32, "5"),
    key("min_similarity", Kind::Float, "0.7"),
];

/// `[llm]`.
pub const LLM_KEYS: &[KeySpec] = &[
    key("provider", Kind::Text, "\"local\""),
    key("model", Kind::Text, "\"smollm2\""),
    key("temperature", Kind::Float, "0.2"),
    key("top_p", Kind::Float, "0.9"),
    key("seed", Kind::U64, "42"),
    key("max_tokens", Kind::U32, "1024"),
    key("stop", Kind::TextList, "[\"END\"]"),
    key("fallback", Kind::TextList, "[\"local\"]"),
    key("tool_choice", Kind::ToolChoice, "\"auto\""),
];

/// `[limits]`.
pub const LIMITS_KEYS: &[KeySpec] = &[
    key("max_turns", Kind::U32, "8"),
    key("max_tool_calls", Kind::U32, "32"),
    key("timeout", Kind::Duration, "\"60s\""),
    key("tool_timeout", Kind::Duration, "\"10s\""),
    key("max_tokens", Kind::U64, "20000"),
    key("max_cost_usd", Kind::Float, "0.5"),
    key("memory_mb", Kind::U32, "512"),
    key("cpu_time", Kind::Duration, "\"30s\""),
    key("open_files", Kind::U32, "64"),
];

/// `[delegation]`.
pub const DELEGATION_KEYS: &[KeySpec] = &[
    key("agents", Kind::TextList, "[\"csv-analyst\"]"),
    key("capabilities", Kind::TextList, "[\"charting\"]"),
    key("strategy", Kind::Text, "\"round_robin\""),
    key("max_depth", Kind::U32, "3"),
    key("max_fan_out", Kind::U32, "4"),
    key("max_descendants", Kind::U32, "20"),
    key("allow_recursion", Kind::Bool, "true"),
    key("handoff", Kind::TextList, "[\"billing\"]"),
    key("history", Kind::Text, "\"task\""),
    key(
        "remote",
        Kind::Any,
        "[{ name = \"forecaster\", card = \"https://agents.example.com/a2a/forecaster/.well-known/agent-card.json\", description = \"Forecasts\" }]",
    ),
];

/// The top level of an agent file.
pub const AGENT_KEYS: &[KeySpec] = &[
    key("name", Kind::Text, "\"my-agent\""),
    key("version", Kind::Text, "\"1.0.0\""),
    key("description", Kind::Text, "\"Adds numbers\""),
    key("capabilities", Kind::TextList, "[\"math\"]"),
    key("tools", Kind::TextList, "[\"calculate\"]"),
    key("system_prompt", Kind::Text, "'''You are …'''"),
    key("user_prompt_template", Kind::Text, "\"{{request}}\""),
    key("documentation", Kind::Text, "'''…'''"),
    key("memory", Kind::Table(MEMORY_KEYS), "enabled = true"),
    key("parameters", Kind::Parameters, "unit = \"m\""),
    key("llm", Kind::Table(LLM_KEYS), "provider = \"local\""),
    key("limits", Kind::Table(LIMITS_KEYS), "max_turns = 8"),
    key(
        "delegation",
        Kind::Table(DELEGATION_KEYS),
        "agents = [\"helper\"]",
    ),
];

/// What a path resolves to in the schema.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The longest prefix of the path the schema knows, and its kind: a value of the wrong shape
    /// below it (a key under a string, an index into a table) is the prefix's problem.
    Known(KeyPath, Kind, Option<&'static KeySpec>),
    /// The path names a key its table does not have: the table's path, its keys, and the key.
    Unknown(KeyPath, &'static [KeySpec], String),
}

/// Resolves a key path against the agent format.
pub fn resolve(path: &KeyPath) -> Resolved {
    let mut kind = Kind::Table(AGENT_KEYS);
    let mut spec: Option<&'static KeySpec> = None;
    let mut at = KeyPath::root();
    for seg in path.segments() {
        match (kind, seg) {
            (Kind::Table(keys), Segment::Key(k)) => match keys.iter().find(|s| s.name == k) {
                Some(s) => {
                    kind = s.kind;
                    spec = Some(s);
                }
                None => return Resolved::Unknown(at, keys, k.clone()),
            },
            (Kind::Parameters, Segment::Key(_)) | (Kind::Any, _) => kind = Kind::Any,
            (Kind::TextList | Kind::ToolChoice, Segment::Index(_)) => kind = Kind::Text,
            _ => return Resolved::Known(at, kind, spec),
        }
        at.0.push(seg.clone());
    }
    Resolved::Known(at, kind, spec)
}

/// Describes a value found in the file, for "found …".
pub fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("the string {}", quoted(s)),
        DeValue::Integer(i) => format!("the number {}", i.as_str()),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the date-time {d}"),
        DeValue::Table(_) => "a table".into(),
        DeValue::Array(items) => {
            if items.is_empty() {
                "an empty list".into()
            } else if let Some(odd) = items.iter().find(|i| !i.get_ref().is_str()) {
                if items.iter().all(|i| i.get_ref().is_table()) {
                    "a list of tables".into()
                } else {
                    format!("a list containing {}", describe(odd.get_ref()))
                }
            } else {
                "a list of strings".into()
            }
        }
    }
}

/// A string as TOML writes it (double quotes, escapes), cut to a readable length.
fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    if s.chars().count() > MAX_CHARS {
        let cut: String = s.chars().take(MAX_CHARS).collect();
        format!("{:?}…", cut)
    } else {
        format!("{s:?}")
    }
}

/// A value's text when it is a scalar: `5`, `1.5`, `true`, `help`.
fn scalar_text(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => Some(i.as_str().to_string()),
        DeValue::Float(f) => Some(f.as_str().to_string()),
        DeValue::Boolean(b) => Some(b.to_string()),
        DeValue::Datetime(d) => Some(d.to_string()),
        DeValue::Array(_) | DeValue::Table(_) => None,
    }
}

/// The right way to write `spec`, reusing what was written where that makes sense:
/// `capabilities = "help"` → `capabilities = ["help"]`, `timeout = 30` → `timeout = "30s"`.
pub fn right_form(spec: &KeySpec, found: Option<&DeValue<'_>>) -> String {
    let name = spec.name;
    let text = found.and_then(scalar_text);
    let value = match (spec.kind, found) {
        (Kind::Text, Some(v)) if !v.is_str() => text.map(|t| format!("{t:?}")),
        (Kind::TextList, Some(DeValue::String(s))) => Some(format!("[{s:?}]")),
        (Kind::TextList, Some(DeValue::Array(items))) => {
            let texts: Option<Vec<String>> = items
                .iter()
                .map(|i| scalar_text(i.get_ref()).map(|t| format!("{t:?}")))
                .collect();
            texts.map(|t| format!("[{}]", t.join(", ")))
        }
        (Kind::Bool, Some(DeValue::String(s))) => ["true", "false"]
            .contains(&s.as_ref())
            .then(|| s.to_string()),
        (Kind::U32 | Kind::U64, Some(DeValue::String(s))) => {
            s.trim().parse::<u64>().ok().map(|n| n.to_string())
        }
        (Kind::Float, Some(DeValue::String(s))) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|_| s.trim().to_string()),
        (Kind::Duration, Some(DeValue::Integer(i))) => Some(format!("\"{}s\"", i.as_str())),
        (Kind::Duration, Some(DeValue::String(s)))
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) =>
        {
            Some(format!("\"{s}s\""))
        }
        (Kind::ToolChoice, _) => {
            return format!(
                "`{name} = \"auto\"` (every turn) or `{name} = [\"calculate\", \"none\"]` (turn by turn)"
            );
        }
        (Kind::Table(_) | Kind::Parameters, _) => {
            return format!(
                "`[{name}]` on a line of its own, with its keys on the lines below (e.g. `{}`)",
                spec.example
            );
        }
        _ => None,
    };
    format!("`{name} = {}`", value.as_deref().unwrap_or(spec.example))
}

/// The key of `keys` closest to `wrong`, if any is close enough to be a likely misspelling.
pub fn closest<'a>(wrong: &str, keys: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wrong = wrong.to_ascii_lowercase();
    keys.into_iter()
        .map(|k| (edit_distance(&wrong, k), k))
        .filter(|(d, k)| *d <= (k.len().max(wrong.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Another table of the agent format than `table` with a key `name` or one close to it: the
/// table's name (`None` for the top level) and the key.
pub fn other_table_with(
    name: &str,
    table: &KeyPath,
) -> Option<(Option<&'static str>, &'static str)> {
    let mut tables: Vec<(Option<&'static str>, &'static [KeySpec])> = vec![(None, AGENT_KEYS)];
    tables.extend(AGENT_KEYS.iter().filter_map(|s| match s.kind {
        Kind::Table(keys) => Some((Some(s.name), keys)),
        _ => None,
    }));
    let here = (!table.is_root()).then(|| table.to_string());
    let lower = name.to_ascii_lowercase();
    tables
        .into_iter()
        .filter(|(t, _)| t.map(str::to_string) != here)
        .filter_map(|(t, keys)| {
            let k = closest(name, keys.iter().map(|s| s.name))?;
            Some((edit_distance(&lower, k), t, k))
        })
        .min_by_key(|(d, _, _)| *d)
        .map(|(_, t, k)| (t, k))
}

/// Edit distance in characters, a swap of two neighbours counting as one edit (`modle` → `model`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between the first i chars of a and the first j of b.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(src: &str) -> DeTable<'_> {
        DeTable::parse(src).expect("test TOML parses").into_inner()
    }

    fn at(src: &str, needle: &str) -> Range<usize> {
        let start = src.find(needle).expect("needle in source");
        start..start + needle.len()
    }

    #[test]
    fn paths_print_as_they_are_written() {
        assert_eq!(
            KeyPath::of(&["limits", "max_turns"]).to_string(),
            "limits.max_turns"
        );
        assert_eq!(
            KeyPath::of(&["memory", "read"]).index(1).to_string(),
            "memory.read[1]"
        );
        assert_eq!(
            KeyPath::of(&["parameters", "a b"]).to_string(),
            "parameters.\"a b\""
        );
        assert_eq!(
            KeyPath::of(&["limits", "max_turns"])
                .table_header()
                .as_deref(),
            Some("[limits]")
        );
        assert_eq!(KeyPath::of(&["name"]).table_header(), None);
        assert_eq!(KeyPath::of(&["tools"]).index(2).table_header(), None);
    }

    #[test]
    fn a_span_maps_to_the_key_it_is_in() {
        let src = "name = \"x\"\ncapabilities = \"help\"\n[limits]\nmax_turns = -1\ntimeout = 30\n\n[memory]\nread = [\"agent\",\n  5]\n[llm]\ntool_choice = [\"a\", \"none\"]\nmodle = 1\n";
        let d = doc(src);
        let path = |needle: &str| locate(&d, at(src, needle)).map(|p| p.to_string());
        assert_eq!(path("\"help\"").as_deref(), Some("capabilities"));
        assert_eq!(path("-1").as_deref(), Some("limits.max_turns"));
        assert_eq!(path("30").as_deref(), Some("limits.timeout"));
        assert_eq!(path("5").as_deref(), Some("memory.read[1]"));
        assert_eq!(path("\"none\"").as_deref(), Some("llm.tool_choice[1]"));
        assert_eq!(
            path("[\"a\", \"none\"]").as_deref(),
            Some("llm.tool_choice")
        );
        assert_eq!(
            path("modle").as_deref(),
            Some("llm.modle"),
            "a key's own span"
        );
        assert_eq!(
            path("[limits]").as_deref(),
            Some("limits"),
            "a table's header"
        );
        // A point at the start of the file (a missing key) is in no key.
        assert_eq!(locate(&d, 0..0), None);
    }

    #[test]
    fn inline_tables_and_dotted_keys_map_too() {
        let src = "name = \"x\"\nllm = { temperature = \"hot\" }\nlimits.max_turns = \"8\"\n";
        let d = doc(src);
        let path = |needle: &str| locate(&d, at(src, needle)).map(|p| p.to_string());
        assert_eq!(path("\"hot\"").as_deref(), Some("llm.temperature"));
        assert_eq!(path("\"8\"").as_deref(), Some("limits.max_turns"));
        let tc = KeyPath::of(&["llm", "temperature"]);
        assert!(lookup(&d, &tc).is_some_and(|v| v.as_str() == Some("hot")));
        assert_eq!(value_span(&d, &tc), Some(at(src, "\"hot\"")));
        assert_eq!(key_span(&d, &tc), Some(at(src, "temperature")));
        assert_eq!(key_span(&d, &KeyPath::of(&["llm", "nope"])), None);
    }

    #[test]
    fn syntax_errors_map_by_line() {
        let src = "name = \"x\"\nsystem_prompt = '''\n[not a header]\n'''\n[llm]\nprovider = \"a\"\nprovider = \"b\"\n[limits\nthis is not toml {\n";
        let line = |needle: &str| {
            locate_by_line(src, src.find(needle).expect("needle")).map(|p| p.to_string())
        };
        assert_eq!(line("name").as_deref(), Some("name"));
        assert_eq!(line("[not a header]"), None, "inside a multi-line string");
        assert_eq!(line("provider = \"b\"").as_deref(), Some("llm.provider"));
        assert_eq!(line("[limits").as_deref(), Some("limits"));
        assert_eq!(line("is not").as_deref(), Some("limits.this"));
        assert_eq!(
            locate_by_line("a.\"b.c\" = 1\n", 0)
                .map(|p| p.to_string())
                .as_deref(),
            Some("a.\"b.c\"")
        );
    }

    #[test]
    fn paths_resolve_against_the_format() {
        let known = |p: &KeyPath| match resolve(p) {
            Resolved::Known(at, kind, _) => (at.to_string(), kind.expected()),
            Resolved::Unknown(..) => panic!("{p} is known"),
        };
        assert_eq!(
            known(&KeyPath::of(&["capabilities"])),
            ("capabilities".into(), "a list of strings".into())
        );
        assert_eq!(
            known(&KeyPath::of(&["tools"]).index(3)),
            ("tools[3]".into(), "a string".into())
        );
        // An index into a table: the table itself has the wrong shape (`[[limits]]`).
        assert_eq!(
            known(&KeyPath::of(&["limits"]).index(0)).0,
            "limits".to_string()
        );
        assert_eq!(known(&KeyPath::of(&["name", "x"])).0, "name".to_string());
        assert_eq!(
            known(&KeyPath::of(&["parameters", "anything"])).0,
            "parameters.anything".to_string()
        );
        match resolve(&KeyPath::of(&["llm", "modle"])) {
            Resolved::Unknown(table, keys, key) => {
                assert_eq!(table.to_string(), "llm");
                assert_eq!(key, "modle");
                assert_eq!(closest(&key, keys.iter().map(|k| k.name)), Some("model"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn misspellings_find_their_key() {
        let top = AGENT_KEYS.iter().map(|k| k.name);
        assert_eq!(closest("system_promt", top.clone()), Some("system_prompt"));
        assert_eq!(closest("zzz", top), None);
        assert_eq!(
            other_table_with("temprature", &KeyPath::root()),
            Some((Some("llm"), "temperature"))
        );
        assert_eq!(
            other_table_with("max_turns", &KeyPath::root()),
            Some((Some("limits"), "max_turns"))
        );
        assert_eq!(
            other_table_with("tools", &KeyPath::of(&["llm"])),
            Some((None, "tools"))
        );
    }
}
