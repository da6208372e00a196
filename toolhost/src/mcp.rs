//! The MCP client side of JSON-RPC 2.0: building requests and reading the results a tool server sends.

use serde_json::{Value, json};

/// MCP protocol revision the toolhost speaks.
pub const MCP_PROTOCOL_VERSION: &str = "2025-06-18";

/// A JSON-RPC request line (without the newline).
pub fn request(id: u64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// A JSON-RPC notification line (without the newline).
pub fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

/// The `initialize` parameters the toolhost sends.
pub fn initialize_params() -> Value {
    json!({
        "protocolVersion": MCP_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "caxton-toolhost", "version": env!("CARGO_PKG_VERSION")}
    })
}

/// What one line from the guest is.
#[derive(Debug)]
pub enum Incoming {
    /// A response to request `id`: the result, or the JSON-RPC error message.
    Response {
        id: u64,
        result: Result<Value, String>,
    },
    /// A notification or a request from the server; the toolhost ignores these for now.
    Other,
}

/// Parses one line from the guest.
pub fn parse_line(line: &[u8]) -> Result<Incoming, String> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| format!("invalid JSON-RPC from the tool server: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err("invalid JSON-RPC from the tool server: not an object".into());
    };
    if obj.contains_key("method") {
        return Ok(Incoming::Other);
    }
    let id = obj
        .get("id")
        .and_then(Value::as_u64)
        .ok_or("invalid JSON-RPC from the tool server: response without a numeric id")?;
    if let Some(err) = obj.get("error") {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        return Ok(Incoming::Response {
            id,
            result: Err(format!("{msg} (JSON-RPC error {code})")),
        });
    }
    match obj.get("result") {
        Some(r) => Ok(Incoming::Response {
            id,
            result: Ok(r.clone()),
        }),
        None => Err(
            "invalid JSON-RPC from the tool server: response with neither result nor error".into(),
        ),
    }
}

/// Joins the text items of an MCP `CallToolResult`; returns (text, is_error).
pub fn tool_result_text(result: &Value) -> (String, bool) {
    let is_error = result
        .get("isError")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut text = String::new();
    for item in result
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match item.get("type").and_then(Value::as_str) {
            Some("text") => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(item.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Some(other) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&format!("[{other} content omitted]"));
            }
            None => {}
        }
    }
    if text.is_empty()
        && let Some(s) = result.get("structuredContent")
    {
        text = s.to_string();
    }
    (text, is_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results_errors_and_notifications() {
        match parse_line(br#"{"jsonrpc":"2.0","id":3,"result":{"ok":1}}"#).unwrap() {
            Incoming::Response {
                id: 3,
                result: Ok(v),
            } => assert_eq!(v["ok"], 1),
            other => panic!("{other:?}"),
        }
        match parse_line(br#"{"jsonrpc":"2.0","id":4,"error":{"code":-32601,"message":"nope"}}"#)
            .unwrap()
        {
            Incoming::Response {
                id: 4,
                result: Err(e),
            } => assert!(e.contains("nope")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","method":"notifications/x"}"#).unwrap(),
            Incoming::Other
        ));
        assert!(parse_line(b"not json").is_err());
        assert!(parse_line(b"[1]").is_err());
    }

    #[test]
    fn joins_text_content() {
        let r = json!({"content":[{"type":"text","text":"a"},{"type":"image","data":""},{"type":"text","text":"b"}],"isError":true});
        assert_eq!(
            tool_result_text(&r),
            ("a\n[image content omitted]\nb".to_string(), true)
        );
    }
}
