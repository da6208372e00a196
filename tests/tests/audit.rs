//! The tool-call audit log: every call is recorded by the toolhost, the log rotates by size with
//! the chain running on across its files, and `caxton audit verify` detects an edited or deleted
//! record or file.

use std::process::Command;

use caxton_ipc::api::RunEvent;
use caxton_ipc::audit::AuditRecord;
use caxton_tests::{Daemon, Options, bin};

fn records(d: &Daemon) -> Vec<AuditRecord> {
    d.audit_records()
}

fn verify(d: &Daemon) -> (Option<i32>, String) {
    verify_args(d, &[])
}

fn verify_args(d: &Daemon, extra: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = Command::new(bin("caxton"))
        .args(["audit", "verify", "--config"])
        .arg(&d.config)
        .args(extra)
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
    kill_toolhost(&d);
    assert!(d.run("calculator", "2+2").unwrap().answer().is_some());
    let recs = records(&d);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].prev, recs[0].hash);
    assert_eq!(verify(&d).0, Some(0));
}

fn kill_toolhost(d: &Daemon) {
    d.kill_and_wait_restarted(caxton_tests::Service::Toolhost);
}

#[test]
fn the_log_rotates_by_size_and_verify_checks_the_whole_set() {
    const MAX: u64 = 2048;
    let d = Daemon::start(Options::with_config(format!(
        "\n[toolhost]\naudit_max_bytes = {MAX}\naudit_keep = 3\n"
    )))
    .unwrap();
    let call = |i: u64| {
        let out = d
            .call_tool(
                "calculate",
                &format!(r#"{{"expression": "{i} + 1"}}"#),
                std::time::Duration::from_secs(10),
            )
            .unwrap()
            .unwrap();
        assert!(!out.is_error, "{}", out.content);
    };
    // About four records per file: enough calls to rotate several times and delete some.
    for i in 0..30 {
        call(i);
    }
    // A restarted toolhost continues the chain in the rotated set.
    kill_toolhost(&d);
    for i in 30..36 {
        call(i);
    }
    const CALLS: u64 = 36;

    let log = d.audit_log();
    let rotated = |n: u64| caxton_ipc::audit::rotated_path(&log, n);
    for n in 1..=3 {
        let len = std::fs::metadata(rotated(n)).unwrap().len();
        assert!(
            len > 0 && len <= MAX,
            "{}: {len} bytes",
            rotated(n).display()
        );
    }
    assert!(
        !rotated(4).exists(),
        "audit_keep = 3 left a fourth rotated file"
    );
    let recs = records(&d);
    let kept = recs.len() as u64;
    assert!(kept < CALLS, "nothing was deleted: {kept} records");
    assert_eq!(
        recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (CALLS - kept + 1..=CALLS).collect::<Vec<_>>()
    );
    for pair in recs.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash, "record {}", pair[1].seq);
    }

    let (code, text) = verify(&d);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "ok: {kept} records in 4 files (starts after {} deleted records), chain head {}",
            CALLS - kept,
            recs.last().unwrap().hash
        )),
        "{text}"
    );
    for n in 1..=3 {
        assert!(text.contains(&rotated(n).display().to_string()), "{text}");
    }

    // A rotated file named explicitly is checked alone.
    let (code, text) = verify_args(&d, &["--file".as_ref(), rotated(2).as_os_str()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("records (starts after"), "{text}");

    // An edit in a rotated file breaks the set.
    let second = std::fs::read_to_string(rotated(2)).unwrap();
    std::fs::write(
        rotated(2),
        second.replacen("\"outcome\":\"ok\"", "\"outcome\":\"tool_error\"", 1),
    )
    .unwrap();
    let (code, text) = verify(&d);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("{}:line 1", rotated(2).display())) && text.contains("modified"),
        "{text}"
    );

    // So does a whole rotated file gone: the next one does not follow.
    std::fs::remove_file(rotated(2)).unwrap();
    let (code, text) = verify(&d);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("{}:line 1", rotated(1).display()))
            && text.contains("between the files"),
        "{text}"
    );
}
