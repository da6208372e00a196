//! The HTTP API (`/v1`), end to end with curl as the client: bearer tokens (401, 403, each
//! right), runs that wait or stream server-sent events (the same events, in the same order, as
//! the socket's JSON lines for the same scripted run), runs read, listed and cancelled by id,
//! a client that goes away cancels its run, conversations owned by their token, memory
//! search, the limits (body size, per-token runs, methods, paths), and the OpenAPI document
//! checked by PyPI's openapi-spec-validator. No token's text reaches the log.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caxton_tests::http::{Sse, call, json_of, wait_no_workers};
use caxton_tests::{Daemon, Options, assert_contains, bin, repo_root, token_sha256};
use serde_json::{Value, json};

const RUNNER: &str = "tok-runner-4f1c9a";
const READER: &str = "tok-reader-77b0e2";
const ADMIN: &str = "tok-admin-0c3d58";
const OTHER: &str = "tok-other-91aa04";

fn daemon() -> Daemon {
    let tokens = format!(
        r#"
[http]
listen = "127.0.0.1:0"
max_body_bytes = 65536
body_timeout = "1s"

[[http.tokens]]
name = "runner"
sha256 = "{}"
agents = ["adder", "slow"]
max_concurrent_runs = 2

[[http.tokens]]
name = "reader"
sha256 = "{}"
read = true

[[http.tokens]]
name = "admin"
sha256 = "{}"
admin = true

[[http.tokens]]
name = "other"
sha256 = "{}"
agents = ["adder", "slow"]
"#,
        token_sha256(RUNNER),
        token_sha256(READER),
        token_sha256(ADMIN),
        token_sha256(OTHER)
    );
    Daemon::start(Options {
        extra_config: tokens,
        ..Options::with_agents(&["tests/agents/adder.toml", "tests/agents/slow.toml"])
    })
    .unwrap()
}

/// A run started with `body` as `token`, its events streamed.
fn stream(addr: SocketAddr, token: &str, body: &str) -> Sse {
    Sse::post(
        addr,
        "/v1/runs",
        &[format!("Authorization: Bearer {token}")],
        body,
    )
}

/// The run id of a `started` message.
fn run_id_of(started: &(String, Value)) -> String {
    assert_eq!(started.0, "started", "{started:?}");
    started.1["event"]["started"]["run_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A run's state as its owner reads it.
fn state_of(addr: SocketAddr, token: &str, run_id: &str) -> Value {
    let (status, body) = call(
        addr,
        "GET",
        &format!("/v1/runs/{run_id}"),
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    json_of(&body)["run"].clone()
}

fn wait_state(addr: SocketAddr, run_id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let run = state_of(addr, ADMIN, run_id);
        if run["state"] == want {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "the run never became {want}: {run}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tokens_decide_who_may_do_what() {
    let d = daemon();
    let addr = d.http_addr();
    let run = r#"{"agent":"adder","input":"2 + 3"}"#;

    // No token, a wrong one, another scheme: 401 with the challenge.
    for auth in [None, Some("not-a-token")] {
        let (status, body) = call(addr, "POST", "/v1/runs", auth, Some(run));
        assert_eq!(status, 401, "{body}");
        assert_eq!(json_of(&body)["error"]["kind"], "permission_denied");
    }
    let head = Command::new("curl")
        .args(["-sS", "-i", "-H", "Authorization: Basic cnVubmVyOng="])
        .arg(format!("http://{addr}/v1/agents"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_lowercase();
    assert_contains(&head, &["401", "www-authenticate: bearer"]);

    // The runner runs what it may, and only that.
    let (status, body) = call(addr, "POST", "/v1/runs", Some(RUNNER), Some(run));
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body)["run"].clone();
    assert_eq!(answer["state"], "finished", "{answer}");
    assert_eq!(answer["answer"], "The result is 5.");
    assert_eq!(answer["owner"], "runner");
    assert_eq!(answer["usage"]["tool_calls"], 1);
    let (status, body) = call(addr, "POST", "/v1/runs", Some(READER), Some(run));
    assert_eq!(status, 403, "{body}");
    assert_contains(&body, &["reader", "may not run agent `adder`"]);
    let by_capability = r#"{"agent":"","input":"2 + 3","capability":"math"}"#;
    let (status, body) = call(addr, "POST", "/v1/runs", Some(RUNNER), Some(by_capability));
    assert_eq!(status, 403, "{body}");
    assert_contains(&body, &["agents = [\\\"*\\\"]"]);
    let (status, body) = call(addr, "POST", "/v1/runs", Some(ADMIN), Some(by_capability));
    assert_eq!(
        (status, json_of(&body)["run"]["agent"].clone()),
        (200, json!("adder")),
        "{body}"
    );

    // Reading the service takes the read right; agents are listed as far as the token may.
    assert_eq!(call(addr, "GET", "/v1/status", Some(RUNNER), None).0, 403);
    let (status, body) = call(addr, "GET", "/v1/status", Some(READER), None);
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body)["status"]["uptime_ms"].is_u64(), "{body}");
    assert_eq!(call(addr, "GET", "/v1/health", Some(READER), None).0, 200);
    let names = |token| {
        let (status, body) = call(addr, "GET", "/v1/agents", Some(token), None);
        assert_eq!(status, 200, "{body}");
        let mut names: Vec<String> = json_of(&body)["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(READER), ["adder", "slow"]);
    assert_eq!(
        call(addr, "GET", "/v1/agents/adder", Some(RUNNER), None).0,
        200
    );
    assert_eq!(
        call(addr, "GET", "/v1/agents/nobody", Some(READER), None).0,
        404
    );
    assert_eq!(
        call(addr, "GET", "/v1/agents/adder", Some(OTHER), None).0,
        200
    );

    // Memory takes the memory right.
    let search = r#"{"query":"anything","limit":3}"#;
    assert_eq!(
        call(
            addr,
            "POST",
            "/v1/memory/search",
            Some(READER),
            Some(search)
        )
        .0,
        403
    );
    let (status, body) = call(addr, "POST", "/v1/memory/search", Some(ADMIN), Some(search));
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body)["memory"].is_object(), "{body}");

    // The OpenAPI document needs no token.
    let (status, body) = call(addr, "GET", "/v1/openapi.json", None, None);
    assert_eq!(
        (status, json_of(&body)["openapi"].clone()),
        (200, json!("3.1.0"))
    );

    // A token's text never reaches the log; its name does.
    let log = d.log_text();
    for secret in [RUNNER, READER, ADMIN, OTHER, "not-a-token"] {
        assert!(!log.contains(secret), "the log holds a token");
    }
    assert_contains(&log, &["token=runner"]);
}

/// A run's socket JSON lines, or SSE data, with what differs between two runs of the same
/// script (ids, pids, times) blanked.
fn normalized(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if ["run_id", "worker_pid", "wall_ms", "duration_us"].contains(&k.as_str()) {
                        *val = Value::Null;
                    } else {
                        walk(val);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

#[test]
fn server_sent_events_are_the_socket_events_in_the_same_order() {
    let d = daemon();
    let addr = d.http_addr();
    let request = r#"{"agent":"adder","input":"6 * 7","stream":true}"#;

    // Over the socket, as a script speaks it: JSON lines.
    let mut sock = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    writeln!(sock, r#"{{"run":{request}}}"#).unwrap();
    let mut socket_lines = Vec::new();
    for line in BufReader::new(sock).lines() {
        let v = json_of(&line.unwrap());
        let end = v["event"].get("finished").is_some() || v["event"].get("failed").is_some();
        socket_lines.push(normalized(v));
        if end {
            break;
        }
    }

    let mut stream = stream(addr, RUNNER, request);
    let messages = stream.rest();
    assert!(stream.child.wait().unwrap().success());
    let names: Vec<&str> = messages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"started"));
    assert_eq!(names.last(), Some(&"finished"), "{names:?}");
    assert!(
        names.contains(&"token") && names.contains(&"tool_result"),
        "{names:?}"
    );
    for (name, data) in &messages {
        assert!(data["event"].get(name).is_some(), "{name} names {data}");
    }
    let sse_lines: Vec<Value> = messages.into_iter().map(|(_, d)| normalized(d)).collect();
    assert_eq!(sse_lines, socket_lines);
}

#[test]
fn runs_are_read_listed_and_cancelled_by_their_owner() {
    let d = daemon();
    let addr = d.http_addr();
    let mut stream = stream(addr, RUNNER, r#"{"agent":"slow","input":"take your time"}"#);
    let id = run_id_of(&stream.next().unwrap());

    let run = state_of(addr, RUNNER, &id);
    assert_eq!(
        (run["state"].clone(), run["agent"].clone()),
        (json!("running"), json!("slow"))
    );
    assert_eq!(run["events"][0]["started"]["run_id"], id.as_str(), "{run}");
    // Another token cannot see or cancel it; an admin can see it.
    for (method, path) in [
        ("GET", format!("/v1/runs/{id}")),
        ("POST", format!("/v1/runs/{id}/cancel")),
    ] {
        let (status, body) = call(addr, method, &path, Some(OTHER), None);
        assert_eq!(status, 404, "{body}");
    }
    let listed = |token| {
        let (status, body) = call(addr, "GET", "/v1/runs?limit=10", Some(token), None);
        assert_eq!(status, 200, "{body}");
        json_of(&body)["runs"].as_array().unwrap().len()
    };
    assert_eq!((listed(RUNNER), listed(OTHER), listed(ADMIN)), (1, 0, 1));
    assert_eq!(
        call(addr, "GET", "/v1/runs?limit=0", Some(RUNNER), None).0,
        400
    );

    let (status, body) = call(
        addr,
        "POST",
        &format!("/v1/runs/{id}/cancel"),
        Some(RUNNER),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["run"]["state"], "cancelled", "{body}");
    // The stream ends with the run's failure, and the worker is gone.
    let rest = stream.rest();
    let (name, data) = rest.last().unwrap();
    assert_eq!(name, "failed");
    assert_eq!(data["event"]["failed"]["error"]["kind"], "cancelled");
    wait_no_workers(&d);
    // Cancelling again is a conflict that shows the run.
    let (status, body) = call(
        addr,
        "POST",
        &format!("/v1/runs/{id}/cancel"),
        Some(RUNNER),
        None,
    );
    assert_eq!(
        (status, json_of(&body)["run"]["state"].clone()),
        (409, json!("cancelled"))
    );
    assert_eq!(
        call(addr, "GET", "/v1/runs/run-nope", Some(ADMIN), None).0,
        404
    );
}

#[test]
fn a_client_that_goes_away_cancels_its_run() {
    let d = daemon();
    let addr = d.http_addr();
    // Streaming: curl is killed after the run started.
    let mut stream = stream(addr, RUNNER, r#"{"agent":"slow","input":"x"}"#);
    let id = run_id_of(&stream.next().unwrap());
    drop(stream);
    let run = wait_state(addr, &id, "cancelled");
    assert_contains(&run["error"]["message"].to_string(), &["client went away"]);
    wait_no_workers(&d);

    // Waiting: curl gives up after a second of the slow run's three.
    let (status, _) = {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "1", "-w", "%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {RUNNER}")])
            .args(["--data-binary", r#"{"agent":"slow","input":"y"}"#])
            .arg(format!("http://{addr}/v1/runs"))
            .output()
            .unwrap();
        (out.status.code(), out.stdout)
    };
    assert_eq!(status, Some(28), "curl's timeout");
    let (_, body) = call(addr, "GET", "/v1/runs", Some(RUNNER), None);
    let runs = json_of(&body)["runs"].clone();
    let waited = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] != id.as_str())
        .unwrap()
        .clone();
    let run = wait_state(addr, waited["run_id"].as_str().unwrap(), "cancelled");
    assert!(run["ended_ms"].is_u64(), "{run}");
    wait_no_workers(&d);
}

#[test]
fn conversations_belong_to_the_token_that_started_them() {
    let d = daemon();
    let addr = d.http_addr();
    let (status, body) = call(
        addr,
        "POST",
        "/v1/runs",
        Some(RUNNER),
        Some(r#"{"agent":"adder","input":"2 + 3","conversation":"new"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let id = json_of(&body)["run"]["conversation"]
        .as_str()
        .unwrap()
        .to_string();
    let next = format!(r#"{{"agent":"adder","input":"4 * 4","conversation":"{id}"}}"#);
    let (status, body) = call(addr, "POST", "/v1/runs", Some(RUNNER), Some(&next));
    assert_eq!(
        (status, json_of(&body)["run"]["state"].clone()),
        (200, json!("finished")),
        "{body}"
    );

    let (status, body) = call(
        addr,
        "GET",
        &format!("/v1/conversations/{id}"),
        Some(RUNNER),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let conv = json_of(&body)["conversation"].clone();
    assert_eq!(
        (
            conv["info"]["turns"].clone(),
            conv["info"]["owner_token"].clone()
        ),
        (json!(2), json!("runner"))
    );

    // Another token: not found, not listed, cannot continue it.
    assert_eq!(
        call(
            addr,
            "GET",
            &format!("/v1/conversations/{id}"),
            Some(OTHER),
            None
        )
        .0,
        404
    );
    let (_, body) = call(addr, "GET", "/v1/conversations", Some(OTHER), None);
    assert_eq!(json_of(&body)["conversations"], json!([]));
    let (status, body) = call(addr, "POST", "/v1/runs", Some(OTHER), Some(&next));
    assert_eq!(
        status, 404,
        "another token's conversation is not found: {body}"
    );
    // The admin sees it; the owner closes it, then it cannot be continued.
    let (_, body) = call(addr, "GET", "/v1/conversations", Some(ADMIN), None);
    assert_eq!(json_of(&body)["conversations"][0]["id"], id.as_str());
    let (status, body) = call(
        addr,
        "POST",
        &format!("/v1/conversations/{id}/close"),
        Some(RUNNER),
        None,
    );
    assert_eq!((status, body.as_str()), (200, "\"done\""));
    assert_eq!(
        call(addr, "POST", "/v1/runs", Some(RUNNER), Some(&next)).0,
        400
    );
    assert_eq!(
        call(
            addr,
            "DELETE",
            &format!("/v1/conversations/{id}"),
            Some(OTHER),
            None
        )
        .0,
        404
    );
    assert_eq!(
        call(
            addr,
            "DELETE",
            &format!("/v1/conversations/{id}"),
            Some(RUNNER),
            None
        )
        .0,
        200
    );
    assert_eq!(
        call(
            addr,
            "GET",
            &format!("/v1/conversations/{id}"),
            Some(RUNNER),
            None
        )
        .0,
        404
    );
}

#[test]
fn hostile_requests_get_the_proper_error_and_the_service_keeps_serving() {
    let d = daemon();
    let addr = d.http_addr();
    let cases: &[(&str, &str, Option<&str>, u16)] = &[
        ("POST", "/v1/runs", Some("{not json"), 400),
        (
            "POST",
            "/v1/runs",
            Some(r#"{"agent":"adder","input":"1","surprise":1}"#),
            400,
        ),
        (
            "POST",
            "/v1/runs",
            Some(r#"{"agent":"nobody","input":"1"}"#),
            403,
        ),
        ("PUT", "/v1/runs", Some("{}"), 405),
        ("GET", "/v1/nowhere", None, 404),
        ("GET", "/v1/runs/x/y/z", None, 404),
    ];
    for (method, path, body, want) in cases {
        let (status, text) = call(addr, method, path, Some(RUNNER), *body);
        assert_eq!(status, *want, "{method} {path}: {text}");
        assert!(json_of(&text)["error"]["message"].is_string(), "{text}");
    }
    // A recording decides a run's tool calls: replaying one takes an admin token.
    let replay = r#"{"agent":"adder","input":"1","replay":{"version":1,"agent":"adder","input":"1","exchanges":[]}}"#;
    let (status, text) = call(addr, "POST", "/v1/runs", Some(RUNNER), Some(replay));
    assert_eq!(status, 403, "{text}");
    assert_contains(&text, &["replay a recording"]);
    // An agent the token may run but that is not loaded: 404 from the core.
    let (status, _) = call(
        addr,
        "POST",
        "/v1/runs",
        Some(ADMIN),
        Some(r#"{"agent":"nobody","input":"1"}"#),
    );
    assert_eq!(status, 404);
    // A body over max_body_bytes (64 KiB here), declared or not.
    let big = format!(r#"{{"agent":"adder","input":"{}"}}"#, "x".repeat(70_000));
    let path = d.dir().join("big.json");
    std::fs::write(&path, &big).unwrap();
    let (status, text) = call(
        addr,
        "POST",
        "/v1/runs",
        Some(RUNNER),
        Some(&format!("@{}", path.display())),
    );
    assert_eq!(status, 413, "{text}");
    let chunked = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Transfer-Encoding: chunked",
        ])
        .args(["-H", &format!("Authorization: Bearer {RUNNER}")])
        .args(["--data-binary", &format!("@{}", path.display())])
        .arg(format!("http://{addr}/v1/runs"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&chunked.stdout), "413");
    // An oversized head: 431.
    let long = "a".repeat(9000);
    let head = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("X-Long: {long}"),
        ])
        .arg(format!("http://{addr}/v1/agents"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout), "431");

    // A slow client: a body promised and never sent whole is cut off at body_timeout (1 s
    // here) with 408, and holds nothing.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    write!(
        slow,
        "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {RUNNER}\r\nContent-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut slow, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 408");

    // Two runs at once is the runner's limit: the third is 429 until one ends.
    let mut a = stream(addr, RUNNER, r#"{"agent":"slow","input":"a"}"#);
    let mut b = stream(addr, RUNNER, r#"{"agent":"slow","input":"b"}"#);
    run_id_of(&a.next().unwrap());
    run_id_of(&b.next().unwrap());
    let (status, text) = call(
        addr,
        "POST",
        "/v1/runs",
        Some(RUNNER),
        Some(r#"{"agent":"adder","input":"1 + 1"}"#),
    );
    assert_eq!(status, 429, "{text}");
    assert_contains(&text, &["max_concurrent_runs"]);
    // Another token is not limited by the runner's runs.
    let (status, text) = call(
        addr,
        "POST",
        "/v1/runs",
        Some(OTHER),
        Some(r#"{"agent":"adder","input":"1 + 1"}"#),
    );
    assert_eq!(status, 200, "{text}");
    drop(a);
    drop(b);
    wait_no_workers(&d);
    let (status, text) = call(
        addr,
        "POST",
        "/v1/runs",
        Some(RUNNER),
        Some(r#"{"agent":"adder","input":"1 + 1"}"#),
    );
    assert_eq!(status, 200, "{text}");
    // The probes still answer, without a token.
    let (status, _) = call(addr, "GET", "/readyz", None, None);
    assert_eq!(status, 200);
}

#[test]
fn the_openapi_document_is_valid_and_served_by_the_daemon() {
    let d = daemon();
    let addr = d.http_addr();
    let (status, doc) = call(addr, "GET", "/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    let check = r#"
import json, sys
from openapi_spec_validator import validate
validate(json.loads(sys.stdin.read()))
print("valid")
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(check)
        .env("PYTHONPATH", repo_root().join("target/python"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "valid",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn caxton_token_new_makes_a_token_the_daemon_accepts() {
    let out = Command::new(bin("caxton"))
        .args(["token", "new", "made", "--agent", "adder"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (token, table) = text.split_once("\n\n").unwrap();
    assert!(
        token.starts_with("caxton_") && token.len() == 7 + 64,
        "{token}"
    );
    assert!(!table.contains(token), "the table holds the token itself");
    let d = Daemon::start(Options {
        extra_config: format!("[http]\nlisten = \"127.0.0.1:0\"\n{table}"),
        ..Options::with_agents(&["tests/agents/adder.toml"])
    })
    .unwrap();
    let (status, body) = call(
        d.http_addr(),
        "POST",
        "/v1/runs",
        Some(token),
        Some(r#"{"agent":"adder","input":"2 + 3"}"#),
    );
    assert_eq!(status, 200, "{body}");
    // A malformed table is refused at start with what to write.
    let bad = Command::new(bin("caxton"))
        .args(["token", "new", "no spaces"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert_contains(
        &String::from_utf8_lossy(&bad.stderr),
        &["a name is 1 to 64 letters"],
    );
}
