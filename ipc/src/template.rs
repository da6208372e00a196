//! `{{name}}` templates of agent prompts and scripted rules: syntax check and rendering.
//!
//! A placeholder with no value is an error, never an empty string.

/// A template problem, with the byte offset where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` (no matching `}}}}`)")]
    Unclosed { offset: usize },
    #[error("bad placeholder name `{name}`: use letters, digits, `_` and `-`")]
    BadName { name: String, offset: usize },
    #[error("no value for `{{{{{name}}}}}`")]
    Missing { name: String, offset: usize },
}

impl TemplateError {
    pub fn offset(&self) -> usize {
        match self {
            TemplateError::Unclosed { offset }
            | TemplateError::BadName { offset, .. }
            | TemplateError::Missing { offset, .. } => *offset,
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A piece of a template.
enum Piece<'t> {
    Text(&'t str),
    /// A placeholder's name and the byte offset of its `{{`.
    Slot(&'t str, usize),
}

/// Splits a template into text and placeholders.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(found) = template[pos..].find("{{") {
        let start = pos + found;
        out.push(Piece::Text(&template[pos..start]));
        let inner_start = start + 2;
        let end = template[inner_start..]
            .find("}}")
            .ok_or(TemplateError::Unclosed { offset: start })?
            + inner_start;
        let name = template[inner_start..end].trim();
        if !valid_name(name) {
            return Err(TemplateError::BadName {
                name: name.to_string(),
                offset: start,
            });
        }
        out.push(Piece::Slot(name, start));
        pos = end + 2;
    }
    out.push(Piece::Text(&template[pos..]));
    Ok(out)
}

/// The placeholder names of a template, in order, with their byte offsets.
pub fn placeholders(template: &str) -> Result<Vec<(String, usize)>, TemplateError> {
    Ok(pieces(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Slot(name, at) => Some((name.to_string(), at)),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Fills every placeholder from `value`; with `json_escape`, values are escaped for a JSON string.
pub fn render<'v>(
    template: &str,
    value: impl Fn(&str) -> Option<&'v str>,
    json_escape: bool,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Slot(name, offset) => {
                let v = value(name).ok_or_else(|| TemplateError::Missing {
                    name: name.to_string(),
                    offset,
                })?;
                if json_escape {
                    // Serialising a &str to JSON cannot fail.
                    let quoted = serde_json::Value::from(v).to_string();
                    out.push_str(&quoted[1..quoted.len() - 1]);
                } else {
                    out.push_str(v);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_reports() {
        let v = |n: &str| match n {
            "request" => Some("hi \"there\""),
            _ => None,
        };
        assert_eq!(
            render("Q: {{ request }}!", v, false).unwrap(),
            "Q: hi \"there\"!"
        );
        assert_eq!(
            render("{\"q\":\"{{request}}\"}", v, true).unwrap(),
            "{\"q\":\"hi \\\"there\\\"\"}"
        );
        assert_eq!(
            render("a {{context}}", v, false),
            Err(TemplateError::Missing {
                name: "context".into(),
                offset: 2
            })
        );
        assert_eq!(
            render("a {{x", v, false),
            Err(TemplateError::Unclosed { offset: 2 })
        );
        assert!(matches!(
            render("{{a b}}", v, false),
            Err(TemplateError::BadName { .. })
        ));
        assert_eq!(
            placeholders("{{a}} and {{b}}").unwrap(),
            vec![("a".into(), 0), ("b".into(), 10)]
        );
        assert_eq!(
            render("no placeholders", v, false).unwrap(),
            "no placeholders"
        );
    }
}
