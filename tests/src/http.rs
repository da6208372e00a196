//! Helpers for the tests of the network faces (the HTTP API, A2A, MCP): curl as the HTTP client,
//! streams of server-sent events read as they come, the official Python SDKs run as scripts.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Daemon, repo_root};

/// One request with curl on a fresh connection: (status, body). `body` is sent as JSON.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
        "--max-time",
        "60",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl said {text:?}"));
    let status = status
        .parse()
        .unwrap_or_else(|_| panic!("no status in {text:?}"));
    (status, body.to_string())
}

pub fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A POST whose answer is a stream of server-sent events, read by curl as they come; the
/// connection is closed (curl killed) when this is dropped.
pub struct Sse {
    pub child: Child,
    lines: BufReader<ChildStdout>,
}

impl Sse {
    /// POSTs `body` to `path` with `headers` (an `Accept: text/event-stream` is added).
    pub fn post(addr: SocketAddr, path: &str, headers: &[String], body: &str) -> Sse {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-N", "--max-time", "60"])
            .args(["-H", "Accept: application/json, text/event-stream"])
            .args(["-H", "Content-Type: application/json"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let mut child = cmd
            .args(["--data-binary", body])
            .arg(format!("http://{addr}{path}"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        let lines = BufReader::new(child.stdout.take().expect("piped"));
        Sse { child, lines }
    }

    /// Every message to the end of the stream.
    pub fn rest(&mut self) -> Vec<(String, Value)> {
        self.by_ref().collect()
    }
}

/// The messages: (the event name, `message` when it has none; the data as JSON).
impl Iterator for Sse {
    type Item = (String, Value);

    fn next(&mut self) -> Option<(String, Value)> {
        let (mut name, mut data) = (None, None);
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).expect("read the stream") == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if let Some(d) = data.take() {
                    return Some((name.take().unwrap_or_else(|| "message".into()), d));
                }
                continue;
            }
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = Some(json_of(d));
            }
        }
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the daemon has no worker left (a cancelled run's worker is killed).
pub fn wait_no_workers(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.status().expect("status").workers.is_empty() {
        assert!(
            Instant::now() < deadline,
            "a worker outlived its cancelled run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a test script of ours that drives a face with an official Python SDK (from
/// `target/python`, which `scripts/setup.sh` fills); it must succeed and print `ok` last.
pub fn python_sdk(script: &str, args: &[&str]) {
    let out = Command::new("python3")
        .arg(repo_root().join(script))
        .args(args)
        .env("PYTHONPATH", repo_root().join("target/python"))
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{script} {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
