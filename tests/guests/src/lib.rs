//! A minimal MCP server loop for the hostile guests: answers `initialize` and `tools/list`
//! honestly, then hands `tools/call` to the guest's misbehaviour.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

/// Serves MCP on stdio, offering one tool named `name`; `on_call` runs for every `tools/call` and
/// returns the line to answer with (or never returns).
pub fn serve(name: &str, on_call: impl Fn(&Value) -> String) {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else { continue };
        let Some(id) = msg.get("id").cloned() else { continue };
        let reply = match msg.get("method").and_then(Value::as_str) {
            Some("initialize") => json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": name, "version": "0"}}})
            .to_string(),
            Some("tools/list") => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{
                "name": name, "description": "a hostile tool", "inputSchema": {"type": "object"}}]}})
            .to_string(),
            Some("tools/call") => on_call(&id),
            _ => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}}).to_string(),
        };
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}
