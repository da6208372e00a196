//! A minimal MCP server loop for the hostile guests: answers `initialize` and `tools/list`
//! honestly, then hands `tools/call` (and notifications) to the guest's misbehaviour.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

/// Serves MCP on stdio, offering one tool named `name`; `on_call` runs for every `tools/call` and
/// returns the line to answer with (or never returns).
pub fn serve(name: &str, on_call: impl Fn(&Value) -> String) {
    serve_tools(name, &[name], |method, msg| {
        (method == "tools/call").then(|| on_call(&msg["id"]))
    });
}

/// Serves MCP on stdio, offering `tools`; `on_message` gets every `tools/call` request and every
/// notification (method, whole message) and returns the line to answer with, if any.
pub fn serve_tools(
    name: &str,
    tools: &[&str],
    mut on_message: impl FnMut(&str, &Value) -> Option<String>,
) {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else { continue };
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let Some(id) = msg.get("id").cloned() else {
            if let Some(reply) = on_message(method, &msg) {
                let _ = writeln!(out, "{reply}").and_then(|_| out.flush());
            }
            continue;
        };
        let reply = match method {
            "initialize" => Some(json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": name, "version": "0"}}})
            .to_string()),
            "tools/list" => {
                let list: Vec<Value> = tools
                    .iter()
                    .map(|t| json!({"name": t, "description": "a hostile tool", "inputSchema": {"type": "object"}}))
                    .collect();
                Some(json!({"jsonrpc": "2.0", "id": id, "result": {"tools": list}}).to_string())
            }
            "tools/call" => on_message(method, &msg),
            _ => Some(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}}).to_string()),
        };
        if let Some(reply) = reply
            && writeln!(out, "{reply}").and_then(|_| out.flush()).is_err()
        {
            return;
        }
    }
}

/// A `tools/call` result line with one text item.
pub fn text_result(id: &Value, text: &str, is_error: bool) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "content": [{"type": "text", "text": text}], "isError": is_error}})
    .to_string()
}
