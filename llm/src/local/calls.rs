//! Reading tool calls out of generated text: the arguments of a forced call, and a call the model
//! wrote of its own accord under `tool_choice = auto`.

use caxton_ipc::toolhost::ToolSpec;
use serde_json::Value;

/// How a forced call's arguments are generated. With required properties in the schema, only
/// those are written, in order: each key is prefilled (with a string's opening quote) and the model
/// writes just the value, which ends where the value ends. A small model left to write the whole
/// object tends to copy the schema into it. Without required properties, the model writes the
/// whole object, which ends at its closing brace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsPlan {
    /// (JSON-quoted key, the value is a string).
    keys: Vec<(String, bool)>,
}

impl ArgsPlan {
    pub fn from_schema(schema: &str) -> ArgsPlan {
        let schema: Value = serde_json::from_str(schema).unwrap_or_default();
        let properties = &schema["properties"];
        let keys = schema["required"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .filter(|k| properties.get(*k).is_some())
            .map(|k| {
                let quoted = serde_json::to_string(k).unwrap_or_default();
                (quoted, properties[k]["type"] == "string")
            })
            .collect();
        ArgsPlan { keys }
    }

    /// The model writes the whole object (the schema names no required property).
    pub fn is_free(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the `i`th value is a string.
    pub fn is_string(&self, i: usize) -> bool {
        self.keys[i].1
    }

    /// The text before the `i`th value: `{` or `, `, the key, and a string's opening quote.
    pub fn before_value(&self, i: usize) -> String {
        let (key, string) = &self.keys[i];
        let lead = if i == 0 { "{" } else { ", " };
        let quote = if *string { "\"" } else { "" };
        format!("{lead}{key}: {quote}")
    }

    /// How the arguments start: before the first value, or the object's brace.
    pub fn start(&self) -> String {
        if self.is_free() {
            "{".into()
        } else {
            self.before_value(0)
        }
    }
}

/// Parses a forced call's arguments (the object the generation closed) into compact JSON text.
pub fn parse_arguments(tool: &str, text: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v.to_string()),
        Ok(_) => Err(format!(
            "the arguments generated for `{tool}` are not a JSON object: {}",
            excerpt(text)
        )),
        Err(e) => Err(format!(
            "the arguments generated for `{tool}` are not valid JSON ({e}): {}",
            excerpt(text)
        )),
    }
}

/// A whole answer that is a call to an offered tool — `{"name": …, "arguments": {…}}`, possibly
/// inside `<tool_call>` tags or a one-element array, as SmolLM2's tool-use data writes it —
/// as (name, arguments JSON text).
pub fn parse_call_text(text: &str, tools: &[ToolSpec]) -> Option<(String, String)> {
    let t = text.trim();
    let t = t
        .strip_prefix("<tool_call>")
        .and_then(|t| t.trim_end().strip_suffix("</tool_call>"))
        .unwrap_or(t);
    let value: Value = serde_json::from_str(t.trim()).ok()?;
    let call = match value {
        Value::Array(mut items) if items.len() == 1 => items.pop()?,
        v => v,
    };
    let name = call.get("name")?.as_str()?;
    if !tools.iter().any(|s| s.name == name) {
        return None;
    }
    let arguments = match call.get("arguments")? {
        v @ Value::Object(_) => v.to_string(),
        // Some models write the arguments as a JSON string holding the object.
        Value::String(s) => match serde_json::from_str::<Value>(s).ok()? {
            v @ Value::Object(_) => v.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    Some((name.to_string(), arguments))
}

/// At most 200 characters of generated text, for error messages.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("`{}…`", &text[..cut]),
        None => format!("`{text}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "calculate".into(),
            description: String::new(),
            input_schema: "{}".into(),
            server: "calc".into(),
        }]
    }

    #[test]
    fn forced_arguments_must_be_a_json_object() {
        assert_eq!(
            parse_arguments("calculate", r#"{"expression": "(2 + 3) * 7"}"#).unwrap(),
            r#"{"expression":"(2 + 3) * 7"}"#
        );
        let err = parse_arguments("calculate", r#"{"expression": (2 + 3}"#).unwrap_err();
        assert!(
            err.contains("not valid JSON") && err.contains("(2 + 3"),
            "{err}"
        );
        assert!(parse_arguments("calculate", "[1]").is_err());
    }

    #[test]
    fn a_written_call_to_an_offered_tool_is_recognised() {
        let args = r#"{"expression":"1+1"}"#.to_string();
        for text in [
            r#" {"name": "calculate", "arguments": {"expression": "1+1"}} "#,
            r#"<tool_call>[{"name": "calculate", "arguments": {"expression": "1+1"}}]</tool_call>"#,
            r#"{"name": "calculate", "arguments": "{\"expression\": \"1+1\"}"}"#,
        ] {
            assert_eq!(
                parse_call_text(text, &tools()),
                Some(("calculate".into(), args.clone())),
                "{text}"
            );
        }
        for text in [
            r#"{"name": "other", "arguments": {}}"#,
            r#"The answer is {"name": "calculate"}"#,
            r#"{"name": "calculate", "arguments": 3}"#,
            "35",
        ] {
            assert_eq!(parse_call_text(text, &tools()), None, "{text}");
        }
    }

    #[test]
    fn the_plan_prefills_required_keys_in_order() {
        let plan = ArgsPlan::from_schema(
            r#"{"type":"object","properties":{"expression":{"type":"string"},"n":{"type":"integer"},"x":{}},"required":["expression","n","ghost"]}"#,
        );
        assert_eq!(plan.len(), 2);
        assert_eq!(plan.start(), r#"{"expression": ""#);
        assert!(plan.is_string(0) && !plan.is_string(1));
        assert_eq!(plan.before_value(1), r#", "n": "#);
        for free in [
            r#"{"properties":{"n":{}}}"#,
            r#"{"required":["ghost"]}"#,
            "not json",
        ] {
            let plan = ArgsPlan::from_schema(free);
            assert!(plan.is_free(), "{free}");
            assert_eq!(plan.start(), "{");
        }
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt("abc"), "`abc`");
        let long = "é".repeat(300);
        assert_eq!(excerpt(&long).chars().count(), 203);
    }
}
