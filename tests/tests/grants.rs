//! Operator grants against the real toolhost: guests reach only the directories, environment and
//! HTTP origins they were granted; everything else fails closed with a clear error, within the
//! deadline, while the toolhost keeps serving; every attempt is in the audit log. Also: the
//! concurrency limit, MCP cancellation, a guest computing after its answer, a chatty stderr, and a
//! grant that does not match its manifest.

use std::time::{Duration, Instant};

use caxton_ipc::api::ErrorKind;
use caxton_ipc::toolhost::ToolOutput;
use caxton_tests::{Daemon, HttpServer, Options, assert_contains, assert_error};

const GUESTS: &str = concat!(env!("OUT_DIR"), "/guests");
const CALL: Duration = Duration::from_secs(10);

fn route(path: &str) -> (u16, String, String) {
    match path {
        "/ok" => (200, String::new(), "hello from loopback".into()),
        // Redirects to the same server on another (ungranted) origin: `localhost` instead of
        // 127.0.0.1 is a different origin.
        p if p.starts_with("/redirect-to/") => (
            302,
            format!("location: {}\r\n", &p["/redirect-to/".len()..]),
            String::new(),
        ),
        _ => (404, String::new(), "no such page".into()),
    }
}

struct Setup {
    d: Daemon,
    http: HttpServer,
    data: std::path::PathBuf,
}

fn start() -> Setup {
    let http = HttpServer::start(route);
    let port = http.port;
    let base = tempfile::Builder::new()
        .prefix("cxg")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    let data = base.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "granted content").unwrap();
    // A file beside the granted directory: reachable only through `..`.
    std::fs::write(base.join("secret.txt"), "top secret").unwrap();
    let ro = base.join("readonly");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("keep.txt"), "unchanged").unwrap();
    let config = format!(
        r#"
[toolhost]
tools_dir = "{GUESTS}"
tool_timeout = "5s"

[tools.files]
dirs = [{{ path = "/data", host = "{data}", write = true }}]

[tools.snoop]
dirs = [{{ path = "/data", host = "{ro}", write = false }}]
env = {{ GRANTED_VAR = "granted-value" }}
http = [{{ url = "http://127.0.0.1:{port}", private = true }}]

[tools.http_fetch]
http = [{{ url = "http://127.0.0.1:{port}", private = true }}, "http://localhost:{port}"]
"#,
        data = data.display(),
        ro = ro.display(),
    );
    let d = Daemon::start(Options {
        extra_config: config,
        env: vec![("UNGRANTED_VAR".into(), "leaked".into())],
        ..Options::with_agents(&["agents/calculator.toml"])
    })
    .unwrap();
    Setup { d, http, data }
}

fn ok(d: &Daemon, tool: &str, args: &str) -> String {
    let out: ToolOutput = d
        .call_tool(tool, args, CALL)
        .unwrap()
        .unwrap_or_else(|e| panic!("{tool} {args}: {e:?}"));
    assert!(!out.is_error, "{tool} {args}: {}", out.content);
    out.content
}

/// The call fails as a tool error (the model sees it) mentioning `expect`, quickly.
fn refused(d: &Daemon, tool: &str, args: &str, expect: &str) -> String {
    let started = Instant::now();
    let out = d
        .call_tool(tool, args, CALL)
        .unwrap()
        .unwrap_or_else(|e| panic!("{tool} {args}: a tool error was expected, got {e:?}"));
    assert!(
        out.is_error,
        "{tool} {args} must be refused: {}",
        out.content
    );
    assert!(
        out.content.contains(expect),
        "{tool} {args}: `{expect}` not in: {}",
        out.content
    );
    assert!(
        started.elapsed() < CALL,
        "{tool} took {:?}",
        started.elapsed()
    );
    // The toolhost keeps serving other tools.
    assert_eq!(ok(d, "calculate", r#"{"expression": "1+1"}"#), "2");
    out.content
}

fn toolhost_pid(d: &Daemon) -> u32 {
    d.service_pid(caxton_tests::Service::Toolhost)
}

#[test]
fn files_stay_inside_their_grant() {
    let s = start();
    let d = &s.d;
    assert_eq!(
        ok(d, "read_file", r#"{"path": "/data/hello.txt"}"#),
        "granted content"
    );
    ok(
        d,
        "write_file",
        r#"{"path": "/data/out.txt", "content": "written by the tool"}"#,
    );
    assert_eq!(
        std::fs::read_to_string(s.data.join("out.txt")).unwrap(),
        "written by the tool"
    );
    assert!(ok(d, "list_dir", r#"{"path": "/data"}"#).contains("hello.txt"));
    // `..` out of the grant, absolute paths elsewhere, and a symlink pointing out.
    refused(
        d,
        "read_file",
        r#"{"path": "/data/../secret.txt"}"#,
        "access denied",
    );
    refused(
        d,
        "read_file",
        r#"{"path": "/etc/passwd"}"#,
        "access denied",
    );
    std::os::unix::fs::symlink("/etc/passwd", s.data.join("escape")).unwrap();
    refused(
        d,
        "read_file",
        r#"{"path": "/data/escape"}"#,
        "access denied",
    );
    refused(
        d,
        "write_file",
        r#"{"path": "/tmp/planted.txt", "content": "x"}"#,
        "access denied",
    );
    assert!(!std::path::Path::new("/tmp/planted.txt").exists());
    // A read-only grant cannot be written through.
    refused(
        d,
        "snoop_path",
        r#"{"path": "/data/keep.txt", "write": true}"#,
        "refused",
    );
    assert_eq!(
        ok(d, "snoop_path", r#"{"path": "/data/keep.txt"}"#),
        "unchanged"
    );
    refused(
        d,
        "snoop_path",
        r#"{"path": "/data/../data/../../etc/hostname"}"#,
        "refused",
    );
    // Every attempt is audited with its outcome.
    let records = d.audit_records();
    let denied = records
        .iter()
        .filter(|r| r.outcome == "tool_error" && r.detail.contains("access denied"))
        .count();
    assert!(denied >= 4, "{records:#?}");
    assert!(
        records
            .iter()
            .all(|r| r.tool != "read_file" || r.server == "files")
    );
}

#[test]
fn only_granted_environment_is_visible() {
    let s = start();
    let env = ok(&s.d, "snoop_env", "{}");
    assert_eq!(
        env, "GRANTED_VAR=granted-value",
        "the guest's whole environment"
    );
    // The manifest asked for UNGRANTED_VAR, and the service has it, but it was not granted.
    assert!(!env.contains("leaked"));
}

#[test]
fn http_reaches_only_granted_origins() {
    let s = start();
    let d = &s.d;
    let port = s.http.port;
    let pid = toolhost_pid(d);
    // Granted (with private = true for the loopback literal).
    let got = ok(
        d,
        "http_fetch",
        &format!(r#"{{"url": "http://127.0.0.1:{port}/ok"}}"#),
    );
    assert!(got.starts_with("HTTP 200"), "{got}");
    assert!(got.contains("hello from loopback"), "{got}");
    assert!(
        ok(
            d,
            "snoop_fetch",
            &format!(r#"{{"url": "http://127.0.0.1:{port}/ok"}}"#)
        )
        .contains("status 200")
    );
    // An origin nobody granted (no DNS lookup or connection is even attempted).
    refused(
        d,
        "http_fetch",
        r#"{"url": "http://example.com/"}"#,
        "is not granted",
    );
    // The same host on another port is another origin.
    refused(
        d,
        "http_fetch",
        &format!(r#"{{"url": "http://127.0.0.1:{}/ok"}}"#, port + 1),
        "is not granted",
    );
    // A granted name that resolves to a loopback address, granted without `private = true`.
    refused(
        d,
        "http_fetch",
        &format!(r#"{{"url": "http://localhost:{port}/ok"}}"#),
        "resolves to 127.0.0.1",
    );
    // A granted origin that redirects to an ungranted one.
    refused(
        d,
        "http_fetch",
        &format!(
            r#"{{"url": "http://127.0.0.1:{port}/redirect-to/http://127.0.0.1:{}/ok"}}"#,
            port + 1
        ),
        "redirect refused",
    );
    // A Host header would send a granted connection to another site behind the same address.
    refused(
        d,
        "http_fetch",
        &format!(
            r#"{{"url": "http://127.0.0.1:{port}/ok", "headers": {{"HOST": "internal.example"}}}}"#
        ),
        "may not be set by a tool",
    );
    // A private address the grant does not name (a cloud metadata service, say).
    refused(
        d,
        "snoop_fetch",
        r#"{"url": "http://169.254.169.254/latest/meta-data/"}"#,
        "is not granted",
    );
    assert_eq!(toolhost_pid(d), pid, "the toolhost never restarted");
    let records = d.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r.tool == "http_fetch" && r.detail.contains("redirect refused")),
        "{records:#?}"
    );
    assert!(
        d.log_text().contains("http request refused or failed"),
        "a log line for each refusal"
    );
}

#[test]
fn private_addresses_are_allowed_only_for_the_exact_origin_granted_them() {
    // Two loopback servers reached by name: `localhost` resolves to 127.0.0.1, so only the
    // origin granted with `private = true` may reach it, not another port of the same host,
    // directly or by a redirect.
    let (a, b) = (HttpServer::start(route), HttpServer::start(route));
    let (a, b) = (a.port, b.port);
    let d = Daemon::start(Options {
        agents: vec!["agents/calculator.toml".into()],
        extra_config: format!(
            r#"
[tools.http_fetch]
http = [{{ url = "http://localhost:{a}", private = true }}, "http://localhost:{b}"]
"#
        ),
        ..Options::default()
    })
    .unwrap();
    let got = ok(
        &d,
        "http_fetch",
        &format!(r#"{{"url": "http://localhost:{a}/ok"}}"#),
    );
    assert!(got.contains("hello from loopback"), "{got}");
    refused(
        &d,
        "http_fetch",
        &format!(r#"{{"url": "http://localhost:{b}/ok"}}"#),
        "resolves to 127.0.0.1",
    );
    refused(
        &d,
        "http_fetch",
        &format!(r#"{{"url": "http://localhost:{a}/redirect-to/http://localhost:{b}/ok"}}"#),
        "resolves to 127.0.0.1",
    );
}

#[test]
fn calls_beyond_the_concurrency_limit_wait_within_their_deadline() {
    let s = start();
    // nap's manifest allows 2 concurrent calls. Five calls of 1 s arrive together: they all
    // succeed, in three waves, so never more than two ran at once.
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..5)
            .map(|_| scope.spawn(|| s.d.call_tool("nap", r#"{"ms": 1000}"#, CALL).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "five 1 s calls, two at a time, need three waves: {:?}",
        started.elapsed()
    );
    // Two long calls hold both slots; a third with a short deadline is refused as busy when its
    // deadline passes, with the reason.
    std::thread::scope(|scope| {
        let long: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| s.d.call_tool("nap", r#"{"ms": 2000}"#, CALL).unwrap()))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let err =
            s.d.call_tool("nap", r#"{"ms": 10}"#, Duration::from_millis(500))
                .unwrap()
                .expect_err("no slot frees within 500 ms");
        assert_error(
            &err,
            ErrorKind::Busy,
            &["concurrency limit (2 calls at once)"],
        );
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        for h in long {
            assert!(h.join().unwrap().is_ok());
        }
    });
    // The slots free up again.
    assert_eq!(ok(&s.d, "nap", r#"{"ms": 10}"#), "slept");
}

#[test]
fn a_timed_out_call_is_cancelled_over_mcp() {
    let s = start();
    let err =
        s.d.call_tool("mute", "{}", Duration::from_millis(800))
            .unwrap()
            .expect_err("mute never answers");
    // The deadline passed; the guest received notifications/cancelled for the call and said so
    // on stderr, which the error carries.
    assert_contains(
        &err.message,
        &["did not answer within 800ms", "mute: cancelled request"],
    );
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_guest_computing_after_its_answer_is_stopped() {
    let s = start();
    let pid = toolhost_pid(&s.d);
    assert_eq!(ok(&s.d, "afterburn", "{}"), "answered");
    // Let the idle guest be caught, then measure: a guest left spinning would use a whole core.
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    // 2 s of wall time is 200 ticks at 100 Hz; an idle toolhost uses a few.
    assert!(used < 50, "the toolhost used {used} ticks in 2s while idle");
    // The trapped instance is replaced: the tool keeps answering.
    assert_eq!(ok(&s.d, "afterburn", "{}"), "answered");
}

#[test]
fn a_chatty_stderr_never_breaks_a_guest() {
    let s = start();
    // 64 KiB of stderr per call, far beyond what is kept: only a tail is retained.
    for _ in 0..4 {
        assert_eq!(ok(&s.d, "chatter", "{}"), "ok");
    }
}

#[test]
fn a_grant_that_does_not_match_its_manifest_is_loud() {
    let d = Daemon::start(Options {
        extra_config: r#"
[tools.calc]
env = { HOME = "/root" }
[tools.nosuch]
env = { A = "b" }
"#
        .into(),
        ..Options::with_agents(&["agents/calculator.toml"])
    })
    .unwrap();
    assert_contains(
        &d.log_text(),
        &[
            "grant of env HOME is not requested by the manifest",
            "no tool package of that name is loaded",
        ],
    );
    // The package is disabled, and says why, instead of silently denying.
    let err = d
        .call_tool("calculate", r#"{"expression": "1+1"}"#, CALL)
        .unwrap()
        .expect_err("a disabled package serves no calls");
    assert_contains(&err.message, &["tool package `calc` is disabled"]);
    let show = d.cli(&["tool", "show", "calc"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("PROBLEM:"), "{text}");
    let list = d.cli(&["tool", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("DISABLED"));
}
