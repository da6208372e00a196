//! The MCP face, end to end: the official MCP Python SDK (PyPI `mcp`) as a client of
//! `caxton mcp` over stdio and of `/mcp` over Streamable HTTP, in both protocol eras
//! (`tests/mcp_client.py`); the official conformance suite (npm
//! `@modelcontextprotocol/conformance`) against `/mcp`; and raw requests for the errors a
//! broken or hostile client gets, DNS-rebinding protection, and cancellation.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caxton_tests::{Daemon, Options, assert_contains, bin, repo_root};
use serde_json::{Value, json};

const TOKEN: &str = "mcp-token-3b7d";
const NARROW: &str = "mcp-narrow-8e21";

fn hash(token: &str) -> String {
    let mut child = Command::new(bin("caxton"))
        .args(["token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// Agents named as the conformance suite's tools, beside the usual ones.
const AGENTS: &[&str] = &[
    "tests/agents/adder.toml",
    "tests/agents/slow.toml",
    "agents/greeter.toml",
    "tests/agents/mcp/test_simple_text.toml",
    "tests/agents/mcp/test_error_handling.toml",
    "tests/agents/mcp/test_tool_with_progress.toml",
];

fn daemon(anonymous: bool) -> Daemon {
    let config = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[mcp]
expose = ["*"]
{}

[[http.tokens]]
name = "desktop"
sha256 = "{}"
agents = ["*"]

[[http.tokens]]
name = "narrow"
sha256 = "{}"
agents = ["slow"]
"#,
        if anonymous {
            "anonymous = \"desktop\""
        } else {
            ""
        },
        hash(TOKEN),
        hash(NARROW)
    );
    Daemon::start(Options {
        extra_config: config,
        ..Options::with_agents(AGENTS)
    })
    .unwrap()
}

/// `caxton mcp` fed `lines`; what it writes, one JSON value per line, until it has answered
/// every request (every line with an id).
fn stdio(d: &Daemon, lines: &[Value]) -> Vec<Value> {
    let expect = lines.iter().filter(|l| l.get("id").is_some()).count();
    let mut child = Command::new(bin("caxton"))
        .args(["--socket"])
        .arg(&d.socket)
        .arg("mcp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    let mut out: Vec<Value> = Vec::new();
    let mut rd = BufReader::new(child.stdout.take().unwrap());
    while out.iter().filter(|r| r.get("id").is_some()).count() < expect {
        let mut line = String::new();
        if rd.read_line(&mut line).unwrap() == 0 {
            break;
        }
        out.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
    }
    drop(stdin);
    let _ = child.wait();
    out
}

fn by_id(replies: &[Value], id: i64) -> Value {
    replies
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no reply {id} in {replies:?}"))
}

#[test]
fn caxton_mcp_on_stdio_serves_agents_as_tools() {
    let d = daemon(false);
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let replies = stdio(
        &d,
        &[
            init,
            json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
            json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"adder","arguments":{"request":"2 + 3"},"_meta":{"progressToken":"p"}}}),
            json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"nobody","arguments":{}}}),
            json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"adder","arguments":{"oops":1}}}),
            json!({"jsonrpc":"2.0","id":6,"method":"no/such"}),
            json!({"jsonrpc":"2.0","id":7,"method":"ping"}),
        ],
    );
    let init = by_id(&replies, 1);
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "caxton");
    let tools = by_id(&replies, 2)["result"]["tools"].clone();
    let adder = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "adder")
        .unwrap()
        .clone();
    assert_contains(&adder["description"].to_string(), &["Adds and multiplies"]);
    assert_eq!(adder["inputSchema"]["required"], json!(["request"]));
    let call = by_id(&replies, 3)["result"].clone();
    assert_eq!(call["isError"], false, "{call}");
    assert_eq!(call["content"][0]["text"], "The result is 5.");
    let progress: Vec<&Value> = replies
        .iter()
        .filter(|r| r["method"] == "notifications/progress")
        .collect();
    assert!(progress.len() >= 3, "{replies:?}");
    assert!(progress.iter().all(|p| p["params"]["progressToken"] == "p"));
    assert_eq!(by_id(&replies, 4)["error"]["code"], -32602);
    let bad_args = by_id(&replies, 5)["result"].clone();
    assert_eq!(bad_args["isError"], true, "{bad_args}");
    assert_contains(
        &bad_args["content"][0]["text"].to_string(),
        &["unknown argument `oops`"],
    );
    assert_eq!(by_id(&replies, 6)["error"]["code"], -32601);
    assert_eq!(by_id(&replies, 7)["result"], json!({}));
}
