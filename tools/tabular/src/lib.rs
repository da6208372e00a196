//! What Caxton's data tools share: the comparison operators of `csv_filter` and `json_transform`
//! conditions (`= != < <= > >= contains`), parsed the same way and explained the same way, and
//! CSV output capped in rows and bytes.

use std::cmp::Ordering;

/// How a condition compares a field with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

impl Op {
    /// Parses `=`/`==`, `!=`/`<>`, `<`, `<=`, `>`, `>=` or `contains`.
    pub fn parse(op: &str) -> Result<Op, String> {
        Ok(match op.trim() {
            "=" | "==" => Op::Eq,
            "!=" | "<>" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "contains" => Op::Contains,
            other => {
                return Err(format!(
                    "unknown op `{other}`; use one of = != < <= > >= contains"
                ));
            }
        })
    }

    /// The operator as written in messages.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Contains => "contains",
        }
    }

    /// Whether `field <op> value` holds when the field compares to the value as `ordering`
    /// (`contains` never holds by ordering alone).
    pub fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Op::Eq => ordering.is_eq(),
            Op::Ne => ordering.is_ne(),
            Op::Lt => ordering.is_lt(),
            Op::Le => ordering.is_le(),
            Op::Gt => ordering.is_gt(),
            Op::Ge => ordering.is_ge(),
            Op::Contains => false,
        }
    }

    /// `< <= > >=`: the operators that need an order between field and value.
    pub fn is_ordering(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }
}

/// Writes `headers` (if any) and rows as CSV, at most `max_rows` rows and `max_bytes` bytes. When
/// rows are left out, a last line `# truncated: N of {total} rows shown (…); {hint}` says so.
pub fn write_csv_capped<H, R, F>(
    headers: Option<H>,
    rows: impl Iterator<Item = R>,
    total: usize,
    (max_rows, max_bytes): (usize, usize),
    hint: &str,
) -> Result<String, String>
where
    H: IntoIterator<Item: AsRef<[u8]>>,
    R: IntoIterator<Item = F>,
    F: AsRef<[u8]>,
{
    let fail = |e: &dyn std::fmt::Display| format!("cannot write the CSV: {e}");
    let mut out = csv::Writer::from_writer(Vec::new());
    if let Some(headers) = headers {
        out.write_record(headers).map_err(|e| fail(&e))?;
    }
    out.flush().map_err(|e| fail(&e))?;
    let mut kept = out.get_ref().len();
    let mut shown = 0;
    for row in rows.take(max_rows) {
        out.write_record(row).map_err(|e| fail(&e))?;
        out.flush().map_err(|e| fail(&e))?;
        if out.get_ref().len() > max_bytes {
            break;
        }
        kept = out.get_ref().len();
        shown += 1;
    }
    let mut bytes = out.into_inner().map_err(|e| fail(&e))?;
    bytes.truncate(kept);
    let mut text = String::from_utf8(bytes).map_err(|e| fail(&e))?;
    if shown < total {
        text.push_str(&format!(
            "# truncated: {shown} of {total} rows shown (output is capped at {max_rows} rows and {} KB); {hint}\n",
            max_bytes / 1000
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        assert_eq!(Op::parse(" <> ").unwrap(), Op::Ne);
        assert_eq!(Op::parse("==").unwrap().symbol(), "=");
        assert!(Op::parse("~").unwrap_err().contains("unknown op `~`"));
        assert!(Op::Le.accepts(Ordering::Equal) && !Op::Lt.accepts(Ordering::Equal));
        assert!(Op::Ge.is_ordering() && !Op::Contains.is_ordering());
    }

    #[test]
    fn csv_output_is_capped_and_says_so() {
        let rows = (0..5).map(|i| [i.to_string()]);
        let text = write_csv_capped(Some(["n"]), rows, 5, (3, 1000), "add a limit").unwrap();
        assert_eq!(
            text,
            "n\n0\n1\n2\n# truncated: 3 of 5 rows shown (output is capped at 3 rows and 1 KB); add a limit\n"
        );
        let rows = (0..5).map(|i| [i.to_string()]);
        let bytes = write_csv_capped(None::<[&str; 0]>, rows, 5, (10, 4), "x").unwrap();
        assert!(bytes.starts_with("0\n1\n# truncated: 2 of 5"), "{bytes}");
    }
}
