//! The tool-call audit log: every call is recorded by the toolhost, and `caxton audit verify`
//! detects an edited or deleted record.

use std::process::Command;

use caxton_ipc::api::RunEvent;
use caxton_ipc::audit::AuditRecord;
use caxton_tests::{Daemon, Options, bin};

fn records(d: &Daemon) -> Vec<AuditRecord> {
    std::fs::read_to_string(d.dir.path().join("state/audit/tool-calls.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(d: &Daemon) -> (Option<i32>, String) {
    let out = Command::new(bin("caxton"))
        .args(["audit", "verify", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_tool_call_is_recorded_and_tampering_is_detected() {
    let d = Daemon::start(Options::default()).unwrap();
    let mut run_ids = Vec::new();
    for i in 0..5 {
        let out = d.run("calculator", &format!("{i} + 10")).unwrap();
        assert!(out.answer().is_some());
        run_ids.extend(out.events.iter().filter_map(|e| match e {
            RunEvent::Started { run_id, .. } => Some(run_id.clone()),
            _ => None,
        }));
    }
    // A failed call is recorded too.
    let failed = d
        .call_tool(
            "calculate",
            r#"{"expression": "1/0"}"#,
            std::time::Duration::from_secs(5),
        )
        .unwrap()
        .unwrap();
    assert!(failed.is_error);
    let recs = records(&d);
    assert_eq!(recs.len(), 6);
    for (rec, run_id) in recs.iter().zip(&run_ids) {
        assert_eq!(
            (
                &rec.run_id,
                rec.agent.as_str(),
                rec.tool.as_str(),
                rec.outcome.as_str()
            ),
            (run_id, "calculator", "calculate", "ok")
        );
        assert_eq!(rec.args_sha256.len(), 64);
    }
    assert_eq!(recs[5].outcome, "tool_error");
    assert!(
        recs[5].detail.contains("not a finite number"),
        "{:?}",
        recs[5]
    );
    let (code, text) = verify(&d);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("ok: 6 records"), "{text}");

    // Edit one record: its hash no longer matches.
    let path = d.dir.path().join("state/audit/tool-calls.log");
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        original.replacen("\"outcome\":\"tool_error\"", "\"outcome\":\"ok\"", 1),
    )
    .unwrap();
    let (code, text) = verify(&d);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("line 6") && text.contains("modified"),
        "{text}"
    );

    // Delete one record: the chain breaks where it was.
    let lines: Vec<&str> = original.lines().collect();
    let without_third: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&path, without_third).unwrap();
    let (code, text) = verify(&d);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("line 3") && text.contains("deleted"),
        "{text}"
    );
}

#[test]
fn the_chain_continues_across_a_toolhost_restart() {
    let d = Daemon::start(Options::default()).unwrap();
    assert!(d.run("calculator", "1+1").unwrap().answer().is_some());
    let caxton_ipc::api::ServiceState::Running { pid, .. } = d.status().unwrap().toolhost else {
        panic!()
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_status(
        "a new toolhost",
        |s| matches!(s.toolhost, caxton_ipc::api::ServiceState::Running { pid: p, .. } if p != pid),
    )
    .unwrap();
    assert!(d.run("calculator", "2+2").unwrap().answer().is_some());
    let recs = records(&d);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].prev, recs[0].hash);
    assert_eq!(verify(&d).0, Some(0));
}
