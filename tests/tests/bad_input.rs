//! Hostile and malformed input: agent files (the corpus in tests/corpus/agents), unknown agents,
//! broken frames, version mismatches, invalid JSON, clients that vanish. Each gets a clear error;
//! nothing crashes; the service keeps serving.

use std::path::PathBuf;
use std::time::Duration;

use caxton_ipc::api::{ApiRequest, ApiResponse, ErrorKind};
use caxton_ipc::frame::{self, FrameError, MAX_FRAME_LEN, PROTOCOL_VERSION};
use caxton_ipc::handshake::{Hello, HelloReply, Role};
use caxton_tests::{Conn, Daemon, Options, assert_error, bin, repo_root};

/// What a corpus file promises about its first error, in its leading comment lines:
///
/// ```text
/// # expect: <a fragment of the message>
/// # key: <the key path the message starts with, e.g. limits.max_turns or tools[1]>
/// # at: <line>:<column>
/// # hint: <a fragment of the hint>            (optional)
/// ```
///
/// A file that is not UTF-8 cannot carry these: it promises "not UTF-8" and names no key.
struct Expectation {
    path: PathBuf,
    message: String,
    key: Option<String>,
    at: Option<String>,
    hint: Option<String>,
}

fn corpus() -> Vec<Expectation> {
    let dir = repo_root().join("tests/corpus/agents");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let Ok(text) = std::str::from_utf8(&bytes) else {
                return Expectation {
                    path,
                    message: "not UTF-8".into(),
                    key: None,
                    at: None,
                    hint: None,
                };
            };
            let field = |name: &str| {
                text.lines()
                    .take_while(|l| l.starts_with('#'))
                    .find_map(|l| l.strip_prefix(&format!("# {name}: ")))
                    .map(str::to_string)
            };
            let message = field("expect")
                .unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()));
            let key = field("key");
            let at = field("at");
            assert!(
                key.is_some() && at.is_some(),
                "{}: every corpus file names its key and position (`# key:`, `# at:`)",
                path.display()
            );
            Expectation {
                path,
                message,
                key,
                at,
                hint: field("hint"),
            }
        })
        .collect()
}

fn assert_healthy(d: &Daemon) {
    let out = d.run("calculator", "6 * 7").unwrap();
    assert_eq!(
        out.answer(),
        Some("The result is 42."),
        "the service must keep serving: {out:?}"
    );
}

#[test]
fn every_corpus_file_is_rejected_offline_with_position_and_hint() {
    let corpus = corpus();
    assert!(corpus.len() >= 40, "corpus too small: {}", corpus.len());
    for case in corpus {
        let path = case.path.display().to_string();
        let out = std::process::Command::new(bin("caxton"))
            .arg("agent")
            .arg("validate")
            .arg(&case.path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path}: {stderr}");
        assert!(
            !stderr.contains("warning: tools and providers were not checked"),
            "{stderr}"
        );
        let errors: Vec<&str> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("error: "))
            .collect();
        assert!(!errors.is_empty(), "{path}: no error in:\n{stderr}");
        assert!(
            errors.iter().all(|e| e.starts_with(&path)),
            "{path}: every error names the file:\n{stderr}"
        );
        assert!(
            stderr.contains("\n  hint: "),
            "{path}: a hint is given:\n{stderr}"
        );
        if let Some(hint) = &case.hint {
            assert!(
                stderr.contains(hint.as_str()),
                "{path}: expected hint `{hint}` in:\n{stderr}"
            );
        }
        match (&case.key, &case.at) {
            (Some(key), Some(at)) => {
                // The first error is at the promised position, starts with the key, and says
                // what the expectation says.
                let head = format!("{path}:{at}: `{key}`: ");
                let first = errors[0];
                assert!(
                    first.starts_with(&head) && first.contains(&case.message),
                    "{path}: expected `{head}…{}…`, got:\n{stderr}",
                    case.message
                );
                // Every error of the file names its key.
                for e in &errors {
                    let message = e[path.len()..]
                        .trim_start_matches(|c: char| c == ':' || c.is_ascii_digit())
                        .trim_start();
                    assert!(
                        message.starts_with('`') && message[1..].contains("`: "),
                        "{path}: an error that names no key: {e}"
                    );
                }
            }
            _ => assert!(
                errors[0].contains(&case.message),
                "{path}: expected `{}` in:\n{stderr}",
                case.message
            ),
        }
    }
}

#[test]
fn the_example_agents_validate_offline() {
    for entry in std::fs::read_dir(repo_root().join("agents")).unwrap() {
        let path = entry.unwrap().path();
        let out = std::process::Command::new(bin("caxton"))
            .args(["agent", "validate"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_huge_agent_file_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    let mut text = String::from("name = \"x\"\nsystem_prompt = \"s\"\ndocumentation = '''\n");
    text.push_str(&"a".repeat(2 * 1024 * 1024));
    text.push_str("'''\n");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(bin("caxton"))
        .args(["agent", "validate"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent files may be at most"));
}

#[test]
fn broken_agent_files_are_skipped_and_the_rest_keep_serving() {
    let mut agents: Vec<PathBuf> = corpus().into_iter().map(|c| c.path).collect();
    agents.push("agents/calculator.toml".into());
    let d = Daemon::start(Options {
        agents,
        ..Options::default()
    })
    .unwrap();
    let names: Vec<String> = match d.connect().unwrap().call(&ApiRequest::ListAgents).unwrap() {
        ApiResponse::Agents(a) => a.into_iter().map(|a| a.name).collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(names, ["calculator"]);
    let log = d.log_text();
    assert!(
        log.contains("parameters-trap.toml") && log.contains("inside [parameters]"),
        "skipped files are reported:\n{log}"
    );
    assert_healthy(&d);
}

#[test]
fn unknown_agents_get_a_clear_not_found() {
    let d = Daemon::start(Options::default()).unwrap();
    let out = d.run("no-such-agent", "hi").unwrap();
    assert_error(
        &out.error.expect("an error response"),
        ErrorKind::NotFound,
        &["no agent named `no-such-agent`", "calculator"],
    );
    let cli = d.cli(&["agent", "run", "no-such-agent", "--input", "x"]);
    assert_eq!(cli.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&cli.stderr).contains("no agent named"));
}

#[test]
fn hostile_frames_get_clear_errors_and_the_service_keeps_serving() {
    let d = Daemon::start(Options::default()).unwrap();

    // Bad magic: an HTTP request on the socket.
    let mut c = Conn::raw(&d.socket).unwrap();
    c.write_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let reply: ApiResponse = frame::read_sync(&mut c.stream, MAX_FRAME_LEN).unwrap();
    match reply {
        ApiResponse::Error(e) => assert!(e.message.contains("bad frame magic"), "{}", e.message),
        other => panic!("{other:?}"),
    }

    // A frame announcing 4 GiB.
    let mut c = Conn::raw(&d.socket).unwrap();
    let mut head = b"CXTN".to_vec();
    head.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    head.extend_from_slice(&[0, 0, 0xff, 0xff, 0xff, 0xff]);
    c.write_raw(&head).unwrap();
    match frame::read_sync::<ApiResponse>(&mut c.stream, MAX_FRAME_LEN).unwrap() {
        ApiResponse::Error(e) => assert!(e.message.contains("exceeds"), "{}", e.message),
        other => panic!("{other:?}"),
    }

    // A truncated frame, then the client closes: the connection just ends.
    let mut c = Conn::raw(&d.socket).unwrap();
    let hello = frame::encode(&Hello::new(Role::Cli)).unwrap();
    c.write_raw(&hello[..hello.len() - 2]).unwrap();
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.read_to_end().is_empty());

    // Garbage after a good hello.
    let mut c = Conn::connect(&d.socket).unwrap();
    let mut bad = frame::encode(&ApiRequest::Status).unwrap();
    bad[12] = 250; // no such request variant
    c.write_raw(&bad).unwrap();
    match c.recv().unwrap() {
        ApiResponse::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
        other => panic!("{other:?}"),
    }

    assert_healthy(&d);
}

#[test]
fn a_protocol_version_mismatch_is_named_on_both_sides() {
    let d = Daemon::start(Options::default()).unwrap();
    // A client from the future: header and Hello say v99.
    let mut c = Conn::raw(&d.socket).unwrap();
    let mut bytes = frame::encode(&Hello {
        protocol: 99,
        ..Hello::new(Role::Cli)
    })
    .unwrap();
    bytes[4..6].copy_from_slice(&99u16.to_be_bytes());
    c.write_raw(&bytes).unwrap();
    // The server answers in its own version; a v99 reader sees the mismatch.
    let err = frame::read_sync::<ApiResponse>(&mut &c.read_to_end()[..], MAX_FRAME_LEN)
        .map(|r| format!("{r:?}"));
    let text = err.unwrap();
    assert!(
        text.contains("version mismatch") && text.contains("v99"),
        "{text}"
    );
    let mut reply = Vec::new();
    reply.extend_from_slice(b"CXTN");
    reply.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    // Seen from an old/new client: the header's version differs from its own.
    let mut seen = [0u8; 12];
    seen[..6].copy_from_slice(&reply);
    seen[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    assert!(matches!(
        frame::Header::parse(&seen, MAX_FRAME_LEN),
        Err(FrameError::VersionMismatch { .. })
    ));

    // Same header version but a Hello claiming another protocol: rejected with the reason.
    let mut c = Conn::raw(&d.socket).unwrap();
    frame::write_sync(
        &mut c.stream,
        &Hello {
            protocol: 7,
            ..Hello::new(Role::Cli)
        },
    )
    .unwrap();
    match frame::read_sync::<HelloReply>(&mut c.stream, MAX_FRAME_LEN).unwrap() {
        HelloReply::Rejected { reason } => assert!(reason.contains("v7"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // A worker role is not served on the public socket.
    let mut c = Conn::raw(&d.socket).unwrap();
    frame::write_sync(&mut c.stream, &Hello::new(Role::Worker)).unwrap();
    assert!(matches!(
        frame::read_sync::<HelloReply>(&mut c.stream, MAX_FRAME_LEN).unwrap(),
        HelloReply::Rejected { .. }
    ));
    assert_healthy(&d);
}

#[test]
fn invalid_json_gets_an_error_line_and_the_connection_goes_on() {
    use std::io::{BufRead, BufReader, Write};
    let d = Daemon::start(Options::default()).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    s.write_all(b"{\"run\": {\"agent\": \n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["error"]["kind"], "bad_request", "{line}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON request")
    );
    s.write_all(b"{\"nonsense\": 1}\n\"health\"\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("bad_request"), "{line}");
    line.clear();
    r.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["health"]["ready"], true, "{line}");
}

#[test]
fn a_client_that_disconnects_mid_stream_cancels_its_run() {
    let d = Daemon::start(Options::default()).unwrap();
    let mut c = d.connect().unwrap();
    let pid = c.start_run("slow", "x").unwrap();
    drop(c);
    // The worker is killed well before its 3 s LLM call would have ended.
    d.wait_status("the cancelled run to disappear", |s| s.workers.is_empty())
        .unwrap();
    let started = std::time::Instant::now();
    while caxton_tests::process_exists(pid) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !caxton_tests::process_exists(pid),
        "worker {pid} survived its client"
    );
    assert_healthy(&d);
}

#[test]
fn the_cli_says_when_no_daemon_listens() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("caxton"))
        .args(["agent", "run", "calculator", "--input", "1+1"])
        .env("CAXTON_SOCKET", dir.path().join("api.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no Caxton daemon is listening") && stderr.contains("caxton serve"),
        "{stderr}"
    );
    let out = std::process::Command::new(bin("caxton"))
        .args(["agent", "run", "x", "--var", "novalue"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn a_client_that_only_half_closes_still_gets_its_answer() {
    // Like `nc -N`: send the request, shut down the writing side, keep reading.
    let d = Daemon::start(Options::default()).unwrap();
    let mut c = d.connect().unwrap();
    c.send(&ApiRequest::Run(caxton_ipc::api::RunRequest::new(
        "slow", "half",
    )))
    .unwrap();
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let out = c.collect_run().unwrap();
    assert_eq!(out.answer(), Some("slow answer to: half"), "{out:?}");
}
