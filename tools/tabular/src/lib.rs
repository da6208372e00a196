//! What Caxton's data tools share: the comparison operators of `csv_filter` and `json_transform`
//! conditions (`= != < <= > >= contains`), parsed the same way and explained the same way.

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
}
