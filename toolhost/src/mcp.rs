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

/// A line from the guest that is not JSON-RPC the toolhost can use, or a guest's stdout that
/// breaks the line protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid JSON-RPC")]
    NotJson(#[source] serde_json::Error),
    #[error("invalid JSON-RPC: not an object")]
    NotObject,
    #[error("invalid JSON-RPC: a response without a numeric id")]
    NoId,
    #[error("invalid JSON-RPC: a response with neither result nor error")]
    NoResult,
    /// A stdout line over the limit (or another framing failure of the line reader).
    #[error("its stdout")]
    Line(#[source] caxton_ipc::json::LineError),
    #[error("its tools/list result has no `tools` array")]
    NoTools,
    #[error("a tool in its tools/list result has no name")]
    ToolWithoutName,
}

/// A JSON-RPC error the tool server answered with: its message and code, as the server gave them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (JSON-RPC error {code})")]
pub struct RpcError {
    pub message: String,
    pub code: i64,
}

/// What one line from the guest is.
#[derive(Debug)]
pub enum Incoming {
    /// A response to request `id`: the result, or the JSON-RPC error.
    Response {
        id: u64,
        result: Result<Value, RpcError>,
    },
    /// A notification or a request from the server; the toolhost ignores these for now.
    Other,
}

/// Parses one line from the guest.
pub fn parse_line(line: &[u8]) -> Result<Incoming, ProtocolError> {
    let v: Value = serde_json::from_slice(line).map_err(ProtocolError::NotJson)?;
    let Some(obj) = v.as_object() else {
        return Err(ProtocolError::NotObject);
    };
    if obj.contains_key("method") {
        return Ok(Incoming::Other);
    }
    let id = obj
        .get("id")
        .and_then(Value::as_u64)
        .ok_or(ProtocolError::NoId)?;
    if let Some(err) = obj.get("error") {
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_string();
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        return Ok(Incoming::Response {
            id,
            result: Err(RpcError { message, code }),
        });
    }
    match obj.get("result") {
        Some(r) => Ok(Incoming::Response {
            id,
            result: Ok(r.clone()),
        }),
        None => Err(ProtocolError::NoResult),
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
            } => assert_eq!(e.to_string(), "nope (JSON-RPC error -32601)"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","method":"notifications/x"}"#).unwrap(),
            Incoming::Other
        ));
        let not_json = parse_line(b"not json").unwrap_err();
        assert!(matches!(not_json, ProtocolError::NotJson(_)));
        assert!(
            caxton_ipc::error::Chain(&not_json)
                .to_string()
                .starts_with("invalid JSON-RPC: expected"),
            "{}",
            caxton_ipc::error::Chain(&not_json)
        );
        assert!(matches!(parse_line(b"[1]"), Err(ProtocolError::NotObject)));
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","id":5}"#),
            Err(ProtocolError::NoResult)
        ));
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
