//! `http_fetch`: HTTP requests through the toolhost's `caxton_http` import. The guest never opens
//! a socket: the host checks the origin against the operator's grant, resolves the name, refuses
//! private addresses unless granted, follows redirects only to granted origins, cuts the body at
//! 1 MiB and applies a deadline. This server only shapes the request and the answer.

use mcp_guest::{Server, ToolResult, opt_str_arg, str_arg};
use serde_json::{Value, json};

/// Characters of the body returned by default (`max_chars` changes it).
pub const DEFAULT_MAX_CHARS: usize = 20_000;

pub fn server() -> Server {
    Server::new("http_fetch", env!("CARGO_PKG_VERSION")).tool(
        "http_fetch",
        "Fetch a URL from an origin the operator granted. Returns the status line, the content type and the body text (cut at max_chars, default 20000).",
        json!({"type": "object", "properties": {
            "url": {"type": "string", "description": "http:// or https:// URL"},
            "method": {"type": "string", "description": "GET (default), POST, PUT, DELETE, HEAD…"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "body": {"type": "string"},
            "max_chars": {"type": "integer", "minimum": 1}
        }, "required": ["url"]}),
    )
}

pub fn call(_tool: &str, args: &Value) -> ToolResult {
    let url = str_arg(args, "url")?;
    let mut request = json!({"url": url, "method": opt_str_arg(args, "method")?.unwrap_or("GET")});
    if let Some(headers) = args.get("headers") {
        if !headers.is_object() {
            return Err("argument `headers` must be an object of strings".into());
        }
        request["headers"] = headers.clone();
    }
    if let Some(body) = opt_str_arg(args, "body")? {
        request["body"] = body.into();
    }
    let max_chars = args
        .get("max_chars")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_MAX_CHARS, |n| n as usize);
    let response = host::fetch(&request.to_string())?;
    let response: Value = serde_json::from_str(&response)
        .map_err(|e| format!("the host's answer is not JSON: {e}"))?;
    if let Some(error) = response.get("error").and_then(Value::as_str) {
        return Err(error.to_string());
    }
    Ok(render(&response, max_chars))
}

/// `HTTP <status> <url>`, the content type, then the body.
fn render(response: &Value, max_chars: usize) -> String {
    let status = response["status"].as_u64().unwrap_or(0);
    let url = response["url"].as_str().unwrap_or("");
    let content_type = response["headers"]["content-type"]
        .as_str()
        .unwrap_or("unknown");
    let body = response["body"].as_str().unwrap_or("");
    let mut text = format!("HTTP {status} {url}\ncontent-type: {content_type}\n\n");
    match body.char_indices().nth(max_chars) {
        Some((cut, _)) => {
            text.push_str(&body[..cut]);
            text.push_str(&format!("\n[body cut at {max_chars} characters]"));
        }
        None => text.push_str(body),
    }
    if response["truncated"].as_bool() == Some(true) {
        text.push_str("\n[the host cut the response at 1 MiB]");
    }
    text
}

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "caxton_http")]
    unsafe extern "C" {
        #[link_name = "fetch"]
        fn host_fetch(ptr: *const u8, len: i32) -> i32;
        #[link_name = "take"]
        fn host_take(ptr: *mut u8, cap: i32) -> i32;
    }

    /// Hands the request JSON to the host and returns its response JSON.
    pub fn fetch(request: &str) -> Result<String, String> {
        let len = i32::try_from(request.len()).map_err(|_| "request too large".to_string())?;
        // SAFETY: the pointer and length describe `request`, which outlives the call; the host
        // only reads that range.
        let n = unsafe { host_fetch(request.as_ptr(), len) };
        let mut buf = vec![0u8; usize::try_from(n).map_err(|_| "the host refused the request")?];
        // SAFETY: `buf` has exactly `n` writable bytes; the host writes at most `cap` of them.
        let got = unsafe { host_take(buf.as_mut_ptr(), n) };
        buf.truncate(usize::try_from(got).unwrap_or(0));
        String::from_utf8(buf).map_err(|_| "the host's answer is not UTF-8".to_string())
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    /// Natively there is no host to mediate requests.
    pub fn fetch(_request: &str) -> Result<String, String> {
        Ok(r#"{"error": "http_fetch runs only inside caxton-toolhost"}"#.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status_type_and_cut_body() {
        let r = json!({"status": 200, "url": "https://x.example/", "headers": {"content-type": "text/plain"},
                       "body": "abcdef", "truncated": false});
        assert_eq!(
            render(&r, 100),
            "HTTP 200 https://x.example/\ncontent-type: text/plain\n\nabcdef"
        );
        assert!(render(&r, 3).ends_with("abc\n[body cut at 3 characters]"));
    }

    #[test]
    fn arguments_are_checked_and_host_errors_become_tool_errors() {
        assert!(
            call("http_fetch", &json!({}))
                .unwrap_err()
                .contains("missing string argument `url`")
        );
        assert!(
            call("http_fetch", &json!({"url": "http://x", "headers": 3}))
                .unwrap_err()
                .contains("headers")
        );
        let e = call("http_fetch", &json!({"url": "http://x"})).unwrap_err();
        assert!(e.contains("only inside caxton-toolhost"), "{e}");
    }
}
