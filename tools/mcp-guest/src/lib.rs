//! The MCP side of a Caxton tool server written in Rust: JSON-RPC 2.0 over stdin/stdout, one
//! message per line. A tool server describes its tools and supplies one function that runs a call;
//! this crate answers `initialize`, `ping`, `tools/list` and `tools/call`, ignores notifications
//! (including `notifications/cancelled`: a call is answered or its instance is discarded), and
//! reports unknown methods and unparsable lines as JSON-RPC errors.
//!
//! ```no_run
//! use serde_json::json;
//! let server = mcp_guest::Server::new("echo", "0.1.0")
//!     .tool("echo", "Echo the text back.", json!({"type": "object",
//!         "properties": {"text": {"type": "string"}}, "required": ["text"]}));
//! server.serve(|_tool, args| mcp_guest::str_arg(args, "text").map(str::to_string));
//! ```

use std::io::{BufRead, Write};

pub mod grant;

use serde_json::{Value, json};

/// The MCP protocol revision these servers speak.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// A tool's answer: `Ok(text)` is a result, `Err(text)` a tool error the model sees (`isError`).
pub type ToolResult = Result<String, String>;

/// A tool server's name, version and tools.
pub struct Server {
    name: String,
    version: String,
    tools: Vec<Value>,
}

impl Server {
    pub fn new(name: &str, version: &str) -> Server {
        Server {
            name: name.into(),
            version: version.into(),
            tools: Vec::new(),
        }
    }

    /// Adds a tool; `input_schema` is its arguments' JSON Schema.
    pub fn tool(mut self, name: &str, description: &str, input_schema: Value) -> Server {
        self.tools
            .push(json!({"name": name, "description": description, "inputSchema": input_schema}));
        self
    }

    /// Reads requests from stdin and answers on stdout until stdin closes or stdout fails.
    pub fn serve(&self, mut call: impl FnMut(&str, &Value) -> ToolResult) {
        let stdin = std::io::stdin();
        let mut out = std::io::stdout().lock();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if let Some(reply) = self.handle(&line, &mut call) {
                // A failed write means the host went away: stop.
                if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
                    break;
                }
            }
        }
    }

    /// Answers one line; `None` for notifications and blank lines. Public so a server can be
    /// tested, or called in-process, without pipes.
    pub fn handle(
        &self,
        line: &str,
        call: &mut impl FnMut(&str, &Value) -> ToolResult,
    ) -> Option<String> {
        if line.trim().is_empty() {
            return None;
        }
        let msg: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return Some(error(Value::Null, -32700, &format!("parse error: {e}"))),
        };
        let id = msg.get("id").cloned()?;
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        Some(match method {
            "initialize" => ok(
                id,
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": self.name, "version": self.version}
                }),
            ),
            "ping" => ok(id, json!({})),
            "tools/list" => ok(id, json!({"tools": self.tools})),
            "tools/call" => {
                let name = params.get("name").and_then(Value::as_str).unwrap_or("");
                let empty = json!({});
                let args = params.get("arguments").unwrap_or(&empty);
                let known = self.tools.iter().any(|t| t["name"] == name);
                let result = if known {
                    call(name, args)
                } else {
                    Err(format!("unknown tool `{name}`"))
                };
                ok(id, tool_result(result))
            }
            _ => error(id, -32601, &format!("method not found: {method}")),
        })
    }
}

/// The MCP `CallToolResult` of a tool's answer.
pub fn tool_result(result: ToolResult) -> Value {
    let (text, is_error) = match result {
        Ok(text) => (text, false),
        Err(text) => (text, true),
    };
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

/// A required string argument, or a clear error naming it.
pub fn str_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, String> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("argument `{name}` must be a string")),
        None => Err(format!("missing string argument `{name}`")),
    }
}

/// An optional string argument (absent or null is `None`; another type is an error).
pub fn opt_str_arg<'a>(args: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("argument `{name}` must be a string")),
    }
}

fn ok(id: Value, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

fn error(id: Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Server {
        Server::new("t", "1").tool("echo", "echo", json!({"type": "object"}))
    }

    fn echo(_: &str, args: &Value) -> ToolResult {
        str_arg(args, "text").map(str::to_string)
    }

    /// The test server's answer to one request line (a request always gets one).
    fn answer(line: &str) -> String {
        server().handle(line, &mut echo).expect("an answer")
    }

    #[test]
    fn answers_the_mcp_methods() {
        assert!(
            answer(r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#).contains(PROTOCOL_VERSION)
        );
        assert!(
            answer(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
                .contains(r#""name":"echo""#)
        );
        let call = answer(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
        );
        let v: Value = serde_json::from_str(&call).unwrap();
        assert_eq!(v["result"]["content"][0]["text"], "hi");
        assert_eq!(v["result"]["isError"], false);
    }

    #[test]
    fn errors_are_reported_not_fatal() {
        assert!(
            server()
                .handle(
                    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                    &mut echo
                )
                .is_none()
        );
        assert!(answer("not json").contains("-32700"));
        assert!(answer(r#"{"jsonrpc":"2.0","id":1,"method":"nope"}"#).contains("-32601"));
        assert!(
            answer(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo"}}"#)
                .contains("missing string argument")
        );
        assert!(
            answer(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"zap"}}"#)
                .contains("unknown tool")
        );
    }
}
