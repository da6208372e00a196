//! Hostile WASM guests (tests/guests) against the real toolhost: each misbehaving call fails with a
//! clear error within its deadline, the instance is replaced, and the toolhost keeps serving other
//! tools.

use std::time::{Duration, Instant};

use caxton_ipc::api::{ErrorKind, RunEvent};
use caxton_tests::{Daemon, Options, assert_contains};

const GUESTS: &str = concat!(env!("OUT_DIR"), "/guests");
/// calc, csv, json, chart, files, http_fetch, sql (`caxton_toolhost::BUILTIN_PACKAGES`).
const BUILTIN_PACKAGES: usize = 7;
const DEADLINE: Duration = Duration::from_secs(2);
/// Time beyond the deadline a failed call may take to come back (teardown, a loaded CI machine).
const SLACK: Duration = Duration::from_secs(3);

fn start() -> Daemon {
    Daemon::start(Options {
        agents: vec![
            "agents/calculator.toml".into(),
            "tests/agents/spinner.toml".into(),
        ],
        extra_config: format!(
            "[toolhost]\ntools_dir = \"{GUESTS}\"\ntool_timeout = \"{}s\"\n",
            DEADLINE.as_secs()
        ),
        ..Options::default()
    })
    .unwrap()
}

fn toolhost_pid(d: &Daemon) -> u32 {
    d.service_pid(caxton_tests::Service::Toolhost)
}

/// Calls `tool` twice (the second call gets a fresh instance) and checks the failure each time.
fn assert_contained(d: &Daemon, tool: &str, expect: &str) {
    for attempt in 1..=2 {
        let started = Instant::now();
        let result = d.call_tool(tool, "{}", Duration::from_secs(30)).unwrap();
        let took = started.elapsed();
        let err = result.expect_err(&format!("{tool} must fail"));
        assert_eq!(err.kind, ErrorKind::Tool, "{tool}: {err:?}");
        assert!(
            err.message.contains(expect) && err.message.contains(tool),
            "{tool} (attempt {attempt}): {}",
            err.message
        );
        assert!(took < DEADLINE + SLACK, "{tool} took {took:?}");
        let ok = d
            .call_tool(
                "calculate",
                r#"{"expression": "2+2"}"#,
                Duration::from_secs(5),
            )
            .unwrap()
            .unwrap();
        assert_eq!(ok.content, "4", "other tools keep working after {tool}");
    }
}

#[test]
fn each_hostile_guest_is_contained() {
    let d = start();
    let pid = toolhost_pid(&d);
    assert_contained(&d, "spin", "did not answer within 2000ms");
    assert_contained(&d, "mute", "did not answer within 2000ms");
    assert_contained(&d, "hog", "trapped");
    assert_contained(&d, "deep", "trapped");
    assert_contained(&d, "flood", "longer than");
    assert_contained(&d, "garble", "invalid JSON-RPC");
    assert_eq!(toolhost_pid(&d), pid, "the toolhost never restarted");
    // The audit log records every hostile call as failed, with the reason.
    let log = std::fs::read_to_string(d.dir.path().join("state/audit/tool-calls.log")).unwrap();
    let records: Vec<caxton_ipc::audit::AuditRecord> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for tool in ["spin", "mute", "hog", "deep", "flood", "garble"] {
        let failed: Vec<_> = records.iter().filter(|r| r.tool == tool).collect();
        assert_eq!(failed.len(), 2, "{tool}");
        assert!(
            failed
                .iter()
                .all(|r| r.outcome == "failed" && r.detail.contains(tool)),
            "{failed:?}"
        );
    }
    assert_eq!(d.status().unwrap().counters.toolhost_restarts, 0);
}

#[test]
fn a_runaway_guest_does_not_block_other_calls() {
    let d = start();
    std::thread::scope(|s| {
        let spinning = s.spawn(|| d.call_tool("spin", "{}", Duration::from_secs(30)).unwrap());
        // While `spin` burns its deadline, calculate answers, many times.
        for i in 0..50 {
            let out = d
                .call_tool(
                    "calculate",
                    &format!(r#"{{"expression": "{i}*2"}}"#),
                    Duration::from_secs(5),
                )
                .unwrap()
                .unwrap();
            assert_eq!(out.content, (i * 2).to_string());
        }
        assert!(spinning.join().unwrap().is_err());
    });
}

#[test]
fn an_agent_sees_a_hung_tool_as_a_failed_call_and_still_answers() {
    let d = start();
    let out = d.run("spinner", "go").unwrap();
    let failed = out.events.iter().find_map(|e| match e {
        RunEvent::ToolResult {
            ok: false, output, ..
        } => Some(output.clone()),
        _ => None,
    });
    let output = failed.expect("the spin call is reported as failed");
    // The agent's own [limits] tool_timeout (1s) is below the server's (2s).
    assert!(output.contains("did not answer within 1000ms"), "{output}");
    assert_eq!(out.answer().unwrap(), format!("spin gave: {output}"));
}

#[test]
fn compiled_modules_are_cached_privately_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::start(Options {
        private_module_cache: true,
        ..Options::default()
    })
    .unwrap();
    let cache = d.dir.path().join("state/cache/modules");
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        BUILTIN_PACKAGES,
        "one compiled module per built-in package: {files:?}"
    );
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for file in &files {
        assert!(file.extension().is_some_and(|x| x == "cwasm"));
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(
        d.log_text().contains("cached=false"),
        "first start compiles"
    );

    // Restarts the daemon: its log says `said`, and it serves.
    let restart_saying = |d: &mut Daemon, said: &str| {
        d.stop_and_restart();
        assert_contains(&d.log_text(), &[said]);
        assert_eq!(
            d.run("calculator", "5*5").unwrap().answer(),
            Some("The result is 25.")
        );
    };
    // A restart loads the compiled code instead of compiling again.
    restart_saying(&mut d, "cached=true");
    // A cache directory that others may write is never read.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    restart_saying(&mut d, "not using the module cache");
}
