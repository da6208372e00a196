//! The A2A 1.0 face, end to end: the official A2A Python SDK (PyPI `a2a-sdk`) fetches the
//! cards and sends, streams, gets, lists, cancels, subscribes and continues a context over both
//! bindings (JSON-RPC and HTTP+JSON), as `tests/a2a_client.py`; raw requests check the errors a
//! hostile or broken client gets, that only exposed agents are served, and that a stream whose
//! client goes away cancels its run.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use caxton_tests::http::{Sse, call, json_of, wait_no_workers};
use caxton_tests::{Daemon, Options, assert_contains, repo_root, token_sha256};
use serde_json::{Value, json};

const TOKEN: &str = "a2a-token-5e1f";
const OTHER: &str = "a2a-other-9c2d";
const NARROW: &str = "a2a-narrow-11aa";

fn daemon() -> Daemon {
    let config = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[a2a]
expose = ["adder", "slow"]

[[http.tokens]]
name = "client"
sha256 = "{}"
agents = ["*"]

[[http.tokens]]
name = "other"
sha256 = "{}"
agents = ["adder", "slow"]

[[http.tokens]]
name = "narrow"
sha256 = "{}"
agents = ["slow"]
"#,
        token_sha256(TOKEN),
        token_sha256(OTHER),
        token_sha256(NARROW)
    );
    Daemon::start(Options {
        extra_config: config,
        ..Options::with_agents(&[
            "tests/agents/adder.toml",
            "tests/agents/slow.toml",
            "tests/agents/billing.toml",
        ])
    })
    .unwrap()
}

fn sdk(addr: SocketAddr, binding: &str) {
    caxton_tests::http::python_sdk(
        "tests/a2a_client.py",
        &[&format!("http://{addr}"), TOKEN, OTHER, binding],
    );
}

#[test]
fn the_official_sdk_speaks_to_caxton_over_json_rpc() {
    let d = daemon();
    sdk(d.http_addr(), "JSONRPC");
}

#[test]
fn the_official_sdk_speaks_to_caxton_over_http_json() {
    let d = daemon();
    sdk(d.http_addr(), "HTTP+JSON");
}

fn rpc(addr: SocketAddr, token: Option<&str>, body: &str) -> Value {
    let (status, text) = call(addr, "POST", "/a2a/adder", token, Some(body));
    assert_eq!(status, 200, "{text}");
    json_of(&text)
}

#[test]
fn broken_and_hostile_requests_get_the_bindings_errors() {
    let d = daemon();
    let addr = d.http_addr();
    // The card is public; only exposed, loaded agents have one.
    let (status, card) = call(
        addr,
        "GET",
        "/a2a/adder/.well-known/agent-card.json",
        None,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        json_of(&card)["supportedInterfaces"][0]["protocolVersion"],
        "1.0"
    );
    for hidden in ["billing", "nobody", ""] {
        let path = format!("/a2a/{hidden}/.well-known/agent-card.json");
        assert_eq!(call(addr, "GET", &path, None, None).0, 404, "{path}");
    }
    // No token: 401; a token that may not run the agent: 403.
    let send = r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"2 + 3"}]}}}"#;
    assert_eq!(call(addr, "POST", "/a2a/adder", None, Some(send)).0, 401);
    assert_eq!(
        call(addr, "POST", "/a2a/adder", Some("wrong"), Some(send)).0,
        401
    );
    assert_eq!(
        call(addr, "POST", "/a2a/adder", Some(NARROW), Some(send)).0,
        403
    );
    let ok = rpc(addr, Some(TOKEN), send);
    assert_eq!(ok["id"], 1);
    assert_eq!(
        ok["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{ok}"
    );

    let cases: &[(&str, i64)] = &[
        ("{not json", -32700),
        ("[]", -32600),
        (
            r#"{"jsonrpc":"2.0","method":"GetTask","params":{"id":"x"}}"#,
            -32600,
        ),
        (r#"{"jsonrpc":"1.0","id":2,"method":"GetTask"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":3,"method":"DropTables"}"#, -32601),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"GetTask","params":{"id":"run-none"}}"#,
            -32001,
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"GetTask","params":[1]}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"SendMessage","params":{"message":{"parts":[]}}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"SendMessage","params":{"message":{"messageId":"m","parts":[{"url":"file:///etc/passwd"}]}}}"#,
            -32005,
        ),
        (
            r#"{"jsonrpc":"2.0","id":8,"method":"SendMessage","params":{"message":{"messageId":"m","contextId":"conv-0000","parts":[{"text":"1"}]}}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":9,"method":"CreateTaskPushNotificationConfig","params":{}}"#,
            -32003,
        ),
        (
            r#"{"jsonrpc":"2.0","id":10,"method":"GetExtendedAgentCard","params":{}}"#,
            -32007,
        ),
    ];
    for (body, code) in cases {
        let reply = rpc(addr, Some(TOKEN), body);
        assert_eq!(reply["error"]["code"], *code, "{body} → {reply}");
        assert!(reply["error"]["message"].is_string(), "{reply}");
    }
    // Another token's task is not found; a version this server does not speak is refused.
    let task_id = ok["result"]["task"]["id"].as_str().unwrap();
    let get =
        format!(r#"{{"jsonrpc":"2.0","id":11,"method":"GetTask","params":{{"id":"{task_id}"}}}}"#);
    assert_eq!(rpc(addr, Some(OTHER), &get)["error"]["code"], -32001);
    assert_eq!(rpc(addr, Some(TOKEN), &get)["result"]["id"], task_id);
    let v2 = Command::new("curl")
        .args([
            "-sS",
            "-H",
            "A2A-Version: 2.0",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
        ])
        .args(["--data-binary", &get])
        .arg(format!("http://{addr}/a2a/adder"))
        .output()
        .unwrap();
    assert_eq!(
        json_of(&String::from_utf8_lossy(&v2.stdout))["error"]["code"],
        -32009
    );
    // HTTP+JSON: errors are google.rpc.Status with the A2A reason.
    let (status, body) = call(addr, "GET", "/a2a/adder/tasks/run-none", Some(TOKEN), None);
    assert_eq!(status, 404);
    assert_eq!(
        json_of(&body)["error"]["details"][0]["reason"],
        "TASK_NOT_FOUND"
    );
    let (status, body) = call(
        addr,
        "POST",
        "/a2a/adder/message:send",
        Some(TOKEN),
        Some("{"),
    );
    assert_eq!(
        (
            status,
            json_of(&body)["error"]["details"][0]["reason"].clone()
        ),
        (400, json!("PARSE_ERROR"))
    );
    assert_eq!(
        call(addr, "DELETE", "/a2a/adder/tasks", Some(TOKEN), None).0,
        405
    );
    assert_eq!(
        call(addr, "GET", "/a2a/adder/nowhere", Some(TOKEN), None).0,
        404
    );
    // A task is a run: the HTTP API shows it to the same token.
    let (status, body) = call(
        addr,
        "GET",
        &format!("/v1/runs/{task_id}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(
        (status, json_of(&body)["run"]["answer"].clone()),
        (200, json!("The result is 5."))
    );
    assert_contains(&d.log_text(), &["token=client"]);
}

#[test]
fn a_streaming_client_that_goes_away_cancels_its_task() {
    let d = daemon();
    let addr = d.http_addr();
    let body = r#"{"jsonrpc":"2.0","id":"s","method":"SendStreamingMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"take your time"}]}}}"#;
    let mut stream = Sse::post(
        addr,
        "/a2a/slow",
        &[format!("Authorization: Bearer {TOKEN}")],
        body,
    );
    let (_, first) = stream.next().expect("the stream ended early");
    assert_eq!(first["id"], "s");
    let task = &first["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_WORKING", "{first}");
    let id = task["id"].as_str().unwrap().to_string();
    drop(stream);
    let get = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{{"id":"{id}"}}}}"#);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = call(addr, "POST", "/a2a/slow", Some(TOKEN), Some(&get));
        let state = json_of(&text)["result"]["status"]["state"].clone();
        if state == "TASK_STATE_CANCELED" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task was not cancelled: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_no_workers(&d);
}

#[test]
fn a_cards_urls_follow_the_host_or_the_public_url() {
    let d = daemon();
    let addr = d.http_addr();
    let (_, card) = call(
        addr,
        "GET",
        "/a2a/adder/.well-known/agent-card.json",
        None,
        None,
    );
    let card = json_of(&card);
    for iface in card["supportedInterfaces"].as_array().unwrap() {
        assert_eq!(iface["url"], format!("http://{addr}/a2a/adder"), "{card}");
    }
    assert_eq!(
        card["securityRequirements"],
        json!([{"schemes": {"bearer": {"list": []}}}])
    );
    // Behind a proxy, the configured address.
    let proxied = Daemon::start(Options {
        extra_config: "[http]\nlisten = \"127.0.0.1:0\"\n[a2a]\nexpose = [\"adder\"]\npublic_url = \"https://agents.example.com/\"\n".into(),
        ..Options::with_agents(&["tests/agents/adder.toml"])
    })
    .unwrap();
    let (_, card) = call(
        proxied.http_addr(),
        "GET",
        "/a2a/adder/.well-known/agent-card.json",
        None,
        None,
    );
    assert_eq!(
        json_of(&card)["supportedInterfaces"][0]["url"],
        "https://agents.example.com/a2a/adder"
    );
    // A public_url that is not one is refused at start, saying what to write.
    let bad = Daemon::start(Options {
        extra_config: "[a2a]\npublic_url = \"agents.example.com\"\n".into(),
        ..Options::default()
    });
    let err = format!("{:#}", bad.err().expect("a bad public_url is refused"));
    assert_contains(&err, &["public_url", "https://agents.example.com"]);
}

/// A daemon whose agent `far_caller` delegates to the agent at `card` over A2A; `grant` is its
/// `[[a2a.remotes]]` table (none when empty), `token` the remote's token in its environment.
fn caller(dir: &std::path::Path, card: &str, grant: &str, token: &str) -> Daemon {
    let file = dir.join("far_caller.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"far_caller\"\ndescription = \"Asks an adder elsewhere.\"\nsystem_prompt = \"You delegate.\"\n\n[[delegation.remote]]\nname = \"far_adder\"\ncard = \"{card}\"\ndescription = \"Adds numbers.\"\n"
        ),
    )
    .unwrap();
    Daemon::start(Options {
        extra_config: grant.to_string(),
        env: vec![("CAXTON_TEST_A2A_TOKEN".into(), token.into())],
        ..Options::with_agents(&[file.to_str().unwrap()])
    })
    .unwrap()
}

#[test]
fn an_agent_delegates_to_an_a2a_agent_elsewhere_through_granted_origins_only() {
    let remote = daemon();
    let at = remote.http_addr();
    let card = format!("http://{at}/a2a/adder/.well-known/agent-card.json");
    let grant = format!(
        "[[a2a.remotes]]\norigin = \"http://{at}\"\nprivate = true\ntoken_env = \"CAXTON_TEST_A2A_TOKEN\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = caller(dir.path(), &card, &grant, TOKEN);
    let out = d.run("far_caller", "add two and three").unwrap();
    assert_eq!(out.answer(), Some("far: The result is 5."), "{out:?}");
    // The remote run is a child of the tree, started and finished, named as in the agent file.
    let child: Vec<&caxton_ipc::api::ChildEvent> = out
        .events
        .iter()
        .filter_map(|e| match e {
            caxton_ipc::api::RunEvent::Child(c) => Some(&**c),
            _ => None,
        })
        .collect();
    assert_eq!(child.len(), 2, "{child:?}");
    assert!(child.iter().all(|c| c.agent == "far_adder" && c.depth == 1));
    assert!(matches!(
        child[0].event,
        caxton_ipc::api::RunEvent::Started { .. }
    ));
    assert!(matches!(
        child[1].event,
        caxton_ipc::api::RunEvent::Finished { .. }
    ));
    // Over there it was a task of the token the operator gave, on the task's text.
    let (_, runs) = call(at, "GET", "/v1/runs", Some(TOKEN), None);
    let runs = json_of(&runs)["runs"].clone();
    assert_eq!(runs[0]["agent"], "adder", "{runs}");
    assert_eq!(runs[0]["answer"], "The result is 5.");

    // An origin the operator did not grant is never reached.
    let ungranted = caller(dir.path(), &card, "", TOKEN);
    let out = ungranted.run("far_caller", "add").unwrap();
    assert_contains(out.answer().unwrap(), &["denied", "[a2a] remotes"]);
    let (_, runs) = call(at, "GET", "/v1/runs", Some(TOKEN), None);
    assert_eq!(
        json_of(&runs)["runs"].as_array().unwrap().len(),
        1,
        "it reached the remote"
    );
    // A wrong token is the remote's 401, named.
    let wrong = caller(dir.path(), &card, &grant, "not-the-token");
    let out = wrong.run("far_caller", "add").unwrap();
    assert_contains(out.answer().unwrap(), &["HTTP 401", "token_env"]);
    // A card that is not granted even when its host is (another port): denied after the card.
    let elsewhere = caller(
        dir.path(),
        "http://127.0.0.1:9/a2a/adder/.well-known/agent-card.json",
        &grant,
        TOKEN,
    );
    let out = elsewhere.run("far_caller", "add").unwrap();
    assert_contains(out.answer().unwrap(), &["denied"]);
}

/// The official SDK's A2A server (`tests/a2a_sdk_server.py`) on a free loopback port, killed
/// when dropped.
struct SdkServer {
    child: std::process::Child,
    port: u16,
}

impl SdkServer {
    fn start(token: &str) -> SdkServer {
        use std::io::BufRead as _;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new("python3")
            .arg(repo_root().join("tests/a2a_sdk_server.py"))
            .args([&port.to_string(), token])
            .env("PYTHONPATH", repo_root().join("target/python"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "the SDK server did not start");
        SdkServer { child, port }
    }
}

impl Drop for SdkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_agent_delegates_to_an_agent_of_the_official_sdk_and_passes_its_trace_on() {
    let sdk = SdkServer::start(TOKEN);
    let card = format!("http://127.0.0.1:{}/.well-known/agent-card.json", sdk.port);
    // Tracing on (exported nowhere): the delegation carries the run's trace context.
    let grant = format!(
        "[[a2a.remotes]]\norigin = \"http://127.0.0.1:{}\"\nprivate = true\ntoken_env = \"CAXTON_TEST_A2A_TOKEN\"\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:9\"\n",
        sdk.port
    );
    let dir = tempfile::tempdir().unwrap();
    let d = caller(dir.path(), &card, &grant, TOKEN);
    let out = d.run("far_caller", "add").unwrap();
    let answer = out.answer().unwrap_or_default().to_string();
    let traceparent = answer
        .strip_prefix("far: sdk echo: 2 + 3 [traceparent ")
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{answer:?} {out:?}"));
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [2, 32, 16, 2],
        "{traceparent}"
    );
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{traceparent}");
}
