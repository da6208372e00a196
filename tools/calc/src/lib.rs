//! `calc`: an MCP tool server offering `calculate` (arithmetic expressions) and `word_count`
//! (text statistics). Built for `wasm32-wasip1` and embedded in `caxton-toolhost`; it also runs
//! natively for debugging: `echo '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' | cargo run -p calc`.

use mcp_guest::{Server, ToolResult, str_arg};
use serde_json::{Value, json};

/// The server's description: name, version and tools.
pub fn server() -> Server {
    Server::new("calc", env!("CARGO_PKG_VERSION"))
        .tool(
            "calculate",
            "Evaluate an arithmetic expression with + - * / % ^, parentheses, decimals and sqrt(), abs(), round(). Returns the numeric result.",
            json!({
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "for example (2 + 3) * 7"}},
                "required": ["expression"]
            }),
        )
        .tool(
            "word_count",
            "Count the words, characters and lines of a text.",
            json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"]
            }),
        )
}

/// Runs one tool call.
pub fn call(tool: &str, args: &Value) -> ToolResult {
    match tool {
        "calculate" => eval(str_arg(args, "expression")?).map(format_number),
        "word_count" => {
            let text = str_arg(args, "text")?;
            Ok(format!(
                "{} words, {} characters, {} lines",
                text.split_whitespace().count(),
                text.chars().count(),
                text.lines().count()
            ))
        }
        other => Err(format!("unknown tool `{other}`")),
    }
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Evaluates an arithmetic expression.
pub fn eval(src: &str) -> Result<f64, String> {
    let mut p = Parser {
        s: src.as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = p.expr()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!(
            "unexpected `{}` at position {}",
            p.s[p.i] as char,
            p.i + 1
        ));
    }
    if !v.is_finite() {
        return Err("the result is not a finite number (division by zero?)".into());
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: u32,
}

const MAX_DEPTH: u32 = 64;

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expr(&mut self) -> Result<f64, String> {
        let mut v = self.term()?;
        loop {
            if self.eat(b'+') {
                v += self.term()?;
            } else if self.eat(b'-') {
                v -= self.term()?;
            } else {
                return Ok(v);
            }
        }
    }
    fn term(&mut self) -> Result<f64, String> {
        let mut v = self.unary()?;
        loop {
            if self.eat(b'*') {
                v *= self.unary()?;
            } else if self.eat(b'/') {
                v /= self.unary()?;
            } else if self.eat(b'%') {
                v %= self.unary()?;
            } else {
                return Ok(v);
            }
        }
    }
    /// `^` binds tighter than unary minus and is right-associative: -2^2 = -4, 2^3^2 = 512.
    fn power(&mut self) -> Result<f64, String> {
        let base = self.atom()?;
        if self.eat(b'^') {
            Ok(base.powf(self.unary()?))
        } else {
            Ok(base)
        }
    }
    fn unary(&mut self) -> Result<f64, String> {
        if self.eat(b'-') {
            return Ok(-self.unary()?);
        }
        if self.eat(b'+') {
            return self.unary();
        }
        self.power()
    }
    fn atom(&mut self) -> Result<f64, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("expression nested too deeply".into());
        }
        let v = self.atom_inner();
        self.depth -= 1;
        v
    }
    fn atom_inner(&mut self) -> Result<f64, String> {
        self.ws();
        if self.eat(b'(') {
            let v = self.expr()?;
            if !self.eat(b')') {
                return Err(format!("missing `)` at position {}", self.i + 1));
            }
            return Ok(v);
        }
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_alphabetic() {
            self.i += 1;
        }
        if self.i > start {
            let name = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            let f: fn(f64) -> f64 = match name {
                "sqrt" => f64::sqrt,
                "abs" => f64::abs,
                "round" => f64::round,
                _ => return Err(format!("unknown function `{name}`")),
            };
            if !self.eat(b'(') {
                return Err(format!("`{name}` needs parentheses"));
            }
            let v = self.expr()?;
            if !self.eat(b')') {
                return Err(format!("missing `)` at position {}", self.i + 1));
            }
            return Ok(f(v));
        }
        while self.i < self.s.len() && (self.s[self.i].is_ascii_digit() || self.s[self.i] == b'.') {
            self.i += 1;
        }
        if self.i == start {
            return Err(match self.s.get(self.i) {
                Some(c) => format!("unexpected `{}` at position {}", *c as char, self.i + 1),
                None => "unexpected end of expression".into(),
            });
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        text.parse::<f64>()
            .map_err(|_| format!("bad number `{text}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        assert_eq!(eval("(2 + 3) * 7").unwrap(), 35.0);
        assert_eq!(eval("-2^2").unwrap(), -4.0);
        assert_eq!(eval("2^3^2").unwrap(), 512.0);
        assert_eq!(eval("sqrt(16) + abs(-1.5)").unwrap(), 5.5);
        assert!(eval("1/0").is_err());
        assert!(eval("2 +").is_err());
        assert!(eval(&"(".repeat(200)).is_err());
    }
}
