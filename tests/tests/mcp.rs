//! The MCP face, end to end: the official MCP Python SDK (PyPI `mcp`) as a client of
//! `caxton mcp` over stdio and of `/mcp` over Streamable HTTP, in both protocol eras
//! (`tests/mcp_client.py`); the official conformance suite (npm
//! `@modelcontextprotocol/conformance`) against `/mcp`; and raw requests for the errors a
//! broken or hostile client gets, DNS-rebinding protection, and cancellation.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caxton_tests::http::{Sse, json_of, wait_no_workers};
use caxton_tests::{Daemon, Options, assert_contains, bin, repo_root, token_sha256};
use serde_json::{Value, json};

const TOKEN: &str = "mcp-token-3b7d";
const NARROW: &str = "mcp-narrow-8e21";

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
        token_sha256(TOKEN),
        token_sha256(NARROW)
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

/// Runs the official conformance suite's `scenario` against `url`: (passed, its output).
fn conformance(url: &str, scenario: &str) -> (bool, String) {
    let node = repo_root().join("target/node/node_modules/.bin");
    let out = Command::new(node.join("conformance"))
        .args(["server", "--url", url, "--scenario", scenario])
        .env(
            "PATH",
            format!(
                "{}:{}",
                node.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("the conformance suite (scripts/setup.sh installs it into target/node)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_official_conformance_suite_passes_against_slash_mcp() {
    let d = daemon(true);
    let url = format!("http://{}/mcp", d.http_addr());
    let mut failed = Vec::new();
    for scenario in [
        "server-initialize",
        "ping",
        "logging-set-level",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-error",
        "tools-call-with-progress",
        "server-sse-multiple-streams",
        "dns-rebinding-protection",
    ] {
        let (ok, text) = conformance(&url, scenario);
        if !ok {
            failed.push(format!("--- {scenario}\n{text}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// One POST to `/mcp` with curl: (status, headers, body).
fn post(addr: SocketAddr, headers: &[String], body: &str) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-i",
        "--max-time",
        "30",
        "-H",
        "Content-Type: application/json",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .args(["--data-binary", body])
        .arg(format!("http://{addr}/mcp"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// A session of `token`: its id.
fn session(addr: SocketAddr, token: &str) -> String {
    let (status, head, body) = post(addr, &[bearer(token)], INIT);
    assert_eq!(status, 200, "{body}");
    head.lines()
        .find_map(|l| l.strip_prefix("mcp-session-id: "))
        .unwrap_or_else(|| panic!("no session id in {head}"))
        .trim()
        .to_string()
}

#[test]
fn slash_mcp_refuses_what_it_should() {
    let d = daemon(false);
    let addr = d.http_addr();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    // No token (and no anonymous access configured): 401.
    assert_eq!(post(addr, &[], INIT).0, 401);
    // DNS rebinding: a foreign Host or Origin is refused before anything else.
    for h in ["Host: evil.example", "Origin: http://evil.example"] {
        let (status, _, body) = post(addr, &[bearer(TOKEN), h.to_string()], INIT);
        assert_eq!(status, 403, "{h}: {body}");
    }
    let (status, _, _) = post(
        addr,
        &[bearer(TOKEN), "Origin: http://localhost:3000".into()],
        INIT,
    );
    assert_eq!(status, 200);
    // Sessions: needed, checked, per token.
    assert_eq!(post(addr, &[bearer(TOKEN)], list).0, 400);
    let sid = session(addr, TOKEN);
    let with = |token: &str, sid: &str| vec![bearer(token), format!("Mcp-Session-Id: {sid}")];
    assert_eq!(post(addr, &with(TOKEN, "nope"), list).0, 404);
    assert_eq!(
        post(addr, &with(NARROW, &sid), list).0,
        404,
        "another token's session"
    );
    let (status, _, body) = post(addr, &with(TOKEN, &sid), list);
    assert_eq!(status, 200);
    assert!(json_of(&body)["result"]["tools"].as_array().unwrap().len() >= 5);
    // A narrow token sees only what it may run.
    let narrow = session(addr, NARROW);
    let (_, _, body) = post(addr, &with(NARROW, &narrow), list);
    let names: Vec<Value> = json_of(&body)["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("slow")]);
    // Versions, JSON, methods, notifications.
    let mut old = with(TOKEN, &sid);
    old.push("MCP-Protocol-Version: 1999-01-01".into());
    assert_eq!(post(addr, &old, list).0, 400);
    let (status, _, body) = post(addr, &with(TOKEN, &sid), "{oops");
    assert_eq!(
        (status, json_of(&body)["error"]["code"].clone()),
        (400, json!(-32700))
    );
    let (status, _, _) = post(
        addr,
        &with(TOKEN, &sid),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(status, 202);
    let get = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &bearer(TOKEN),
        ])
        .arg(format!("http://{addr}/mcp"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&get.stdout), "405");
    // Ending a session.
    let delete = |token: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-X",
                "DELETE",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args([
                "-H",
                &bearer(token),
                "-H",
                &format!("Mcp-Session-Id: {sid}"),
            ])
            .arg(format!("http://{addr}/mcp"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(delete(NARROW), "404");
    assert_eq!(delete(TOKEN), "204");
    assert_eq!(post(addr, &with(TOKEN, &sid), list).0, 404);
}

/// The state of the newest run of the `desktop` token, as the HTTP API shows it.
fn newest_run(addr: SocketAddr) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "-H", &bearer(TOKEN)])
        .arg(format!("http://{addr}/v1/runs?limit=1"))
        .output()
        .unwrap();
    json_of(&String::from_utf8_lossy(&out.stdout))["runs"][0].clone()
}

fn wait_cancelled(d: &Daemon, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let run = newest_run(addr);
        if run["state"] == "cancelled" {
            wait_no_workers(d);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the call's run was not cancelled: {run}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_cancelled_or_abandoned_call_cancels_its_run() {
    let d = daemon(false);
    let addr = d.http_addr();
    let sid = session(addr, TOKEN);
    let call = r#"{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"slow","arguments":{"request":"wait"},"_meta":{"progressToken":7}}}"#;
    let headers = [bearer(TOKEN), format!("Mcp-Session-Id: {sid}")];
    // A call streaming its progress, until its first progress notification.
    let started = || {
        let mut stream = Sse::post(addr, "/mcp", &headers, call);
        loop {
            let (_, msg) = stream.next().expect("no progress before the end");
            if msg["method"] == "notifications/progress" {
                return stream;
            }
        }
    };
    // notifications/cancelled from the client, on another request of the session.
    let mut stream = started();
    assert_eq!(newest_run(addr)["state"], "running");
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"c1","reason":"changed my mind"}}"#;
    assert_eq!(post(addr, &headers, cancel).0, 202);
    wait_cancelled(&d, addr);
    // The stream ends without a result (a cancelled request gets no answer).
    let rest = stream.rest();
    assert!(
        rest.iter().all(|(_, m)| m.get("result").is_none()),
        "{rest:?}"
    );

    // A client that closes its connection mid-call.
    drop(started());
    wait_cancelled(&d, addr);
    assert_contains(&d.log_text(), &["token=desktop"]);
}

/// `tests/mcp_client.py` (the official MCP SDK) over `transport` in `mode`.
fn sdk(d: &Daemon, transport: &str, mode: &str) {
    let (where_, credential) = match transport {
        "stdio" => (
            bin("caxton").display().to_string(),
            d.socket.display().to_string(),
        ),
        _ => (format!("http://{}/mcp", d.http_addr()), TOKEN.to_string()),
    };
    caxton_tests::http::python_sdk(
        "tests/mcp_client.py",
        &[transport, &where_, &credential, mode],
    );
    // The cancelled call's run was cancelled, and no worker is left.
    wait_no_workers(d);
}

#[test]
fn the_official_sdk_uses_caxton_mcp_on_stdio_in_both_eras() {
    let d = daemon(false);
    sdk(&d, "stdio", "auto");
    sdk(&d, "stdio", "legacy");
}

#[test]
fn the_official_sdk_uses_slash_mcp_in_both_eras() {
    let d = daemon(false);
    sdk(&d, "http", "auto");
    sdk(&d, "http", "legacy");
}

#[test]
fn anonymous_access_is_for_this_machine_only() {
    let d = daemon(true);
    let addr = d.http_addr();
    // No token: the anonymous token, from this machine.
    let (status, head, body) = post(addr, &[], INIT);
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("mcp-session-id"), "{head}");
    // What a proxy on this machine forwarded is not this machine's: a token is needed.
    for forwarded in [
        "X-Forwarded-For: 203.0.113.9",
        "Forwarded: for=203.0.113.9",
        "X-Real-IP: 203.0.113.9",
    ] {
        let (status, _, body) = post(addr, &[forwarded.to_string()], INIT);
        assert_eq!(status, 401, "{forwarded}: {body}");
    }
    // A token still works through a proxy.
    let (status, _, _) = post(
        addr,
        &[bearer(TOKEN), "X-Forwarded-For: 203.0.113.9".into()],
        INIT,
    );
    assert_eq!(status, 200);
}
