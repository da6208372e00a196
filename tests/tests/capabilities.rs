//! Per-run capabilities in the toolhost, tested with forged requests straight on the private
//! sockets: a worker that is not attached, one attached with its run's real token (the
//! `hostile-worker` binary, started by the supervisor as the run's worker), an impostor claiming
//! to be the supervisor, and a token replayed after its run ended. Each is refused, the service
//! keeps serving, and the audit log records the run's own identity, never the one requested.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use caxton_ipc::api::{ErrorKind, RunEvent};
use caxton_ipc::connection::{Client, ToolhostProtocol};
use caxton_ipc::handshake::Role;
use caxton_ipc::toolhost::{
    CallToolRequest, InstallToolRequest, RunGrant, ToolhostRequest, ToolhostResponse,
};
use caxton_tests::{Daemon, Options, assert_contains, bin};

fn worker_conn(d: &Daemon) -> Client<ToolhostProtocol, UnixStream> {
    let s = UnixStream::connect(d.toolhost_socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    Client::<ToolhostProtocol, _>::connect(s, Role::Worker).unwrap()
}

fn refused(resp: ToolhostResponse) -> ErrorKind {
    match resp {
        ToolhostResponse::Error(e) => e.kind,
        other => panic!("answered: {other:?}"),
    }
}

#[test]
fn a_worker_holding_its_runs_token_gets_only_its_grant() {
    let d = Daemon::start(Options::with_config(format!(
        "[workers]\nbinary = \"{}\"\nwarm = 0\n",
        bin("hostile-worker").display()
    )))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = d.run("calculator", dir.path().to_str().unwrap()).unwrap();
    let run_id = out
        .events
        .iter()
        .find_map(|e| match e {
            RunEvent::Started { run_id, .. } => Some(run_id.clone()),
            _ => None,
        })
        .expect("started");
    let report: serde_json::Value =
        serde_json::from_str(out.answer().expect("the probe's report")).unwrap();
    // Attached, and answered with the specs of the granted tools only (the toolhost has more).
    assert_eq!(report["attach"], "calculate", "{report}");
    for probe in [
        "install",
        "remove",
        "catalog",
        "register",
        "call_not_granted",
        "chat_not_granted_provider",
        "reserve",
        "settle",
        "metrics",
    ] {
        assert_eq!(report[probe], "permission_denied", "{probe}: {report}");
    }
    // The supervisor decides delegations from the run's own agent (the calculator has no
    // [delegation]), never from the request.
    let delegated = report["delegate_forged"].as_str().unwrap();
    assert_contains(
        delegated,
        &[
            "delegation:agent `calculator` may not delegate to agent `greeter`",
            "delegation:agent `calculator` may not delegate by capability `math`",
            "delegation:agent `calculator` may not hand the conversation to agent `greeter`",
        ],
    );
    // Only the granted tool's spec; the granted call runs, under the run's own identity.
    assert_eq!(report["tools"], "calculate", "{report}");
    assert_eq!(report["call_granted_forged_identity"], "ok:42", "{report}");
    let records = d.audit_records();
    let call = records
        .iter()
        .find(|r| r.tool == "calculate" && r.outcome == "ok")
        .expect("the granted call is audited");
    assert_eq!((call.agent.as_str(), &call.run_id), ("calculator", &run_id));
    let refusal = records
        .iter()
        .find(|r| r.tool == "read_file")
        .expect("the refused call is audited");
    assert_eq!(refusal.outcome, "refused");
    assert_eq!(
        (refusal.agent.as_str(), &refusal.run_id),
        ("calculator", &run_id)
    );
    assert!(
        !records
            .iter()
            .any(|r| r.agent == "someone-else" || r.run_id == "run-forged")
    );

    // The model the worker named reached neither a provider nor the metrics: its chat is
    // counted under the agent's model (the toolhost's part of the metrics is its report at the
    // next health check).
    let started = std::time::Instant::now();
    let metrics = loop {
        let m = d.cli_ok(&["metrics"]);
        if m.contains("caxton_llm_requests_total{provider=\"local\"") {
            break m;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{m}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!metrics.contains("forged-model"), "{metrics}");
    // The run is over: its token is revoked.
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
    d.wait_status("the run ended", |s| s.workers.is_empty())
        .unwrap();
    let mut c = worker_conn(&d);
    let resp = c.call(&ToolhostRequest::Attach { token }).unwrap();
    assert_eq!(refused(resp), ErrorKind::PermissionDenied);
    // The packages are all still there.
    let tools = d.cli(&["tool", "list"]);
    assert!(String::from_utf8_lossy(&tools.stdout).contains("calc"));
}

#[test]
fn unattached_connections_and_impostors_are_refused() {
    let d = Daemon::start(Options::default()).unwrap();
    // A worker that has not attached may do nothing but ping.
    let mut c = worker_conn(&d);
    assert_eq!(
        c.call(&ToolhostRequest::Ping).unwrap(),
        ToolhostResponse::Pong
    );
    let forged = [
        ToolhostRequest::InstallPackage(InstallToolRequest {
            manifest: String::new(),
            wasm: vec![],
            replace: false,
            allow_new_requests: false,
        }),
        ToolhostRequest::RemovePackage {
            name: "calc".into(),
        },
        ToolhostRequest::ListPackages,
        ToolhostRequest::Catalog,
        ToolhostRequest::Tools {
            names: vec!["calculate".into()],
        },
        ToolhostRequest::CallTool(CallToolRequest {
            run_id: "x".into(),
            agent: "calculator".into(),
            tool: "calculate".into(),
            arguments: r#"{"expression": "1+1"}"#.into(),
            timeout_ms: 1000,
        }),
        ToolhostRequest::RegisterRun {
            token: "a".repeat(32),
            grant: RunGrant {
                agent: "x".into(),
                run_id: "x".into(),
                tools: vec!["calculate".into()],
                providers: vec![],
                max_tool_calls: 1,
                max_tokens: None,
                max_cost_usd: None,
                read_only: false,
                settle_to: None,
                model: None,
            },
        },
        ToolhostRequest::RevokeRun {
            token: "a".repeat(32),
        },
        ToolhostRequest::Metrics,
        ToolhostRequest::Attach {
            token: "0123456789abcdef0123456789abcdef".into(),
        },
    ];
    for req in forged {
        let resp = c.call(&req).unwrap();
        assert_eq!(refused(resp), ErrorKind::PermissionDenied, "{req:?}");
    }
    // Claiming to be the supervisor from another process is refused at the handshake.
    let s = UnixStream::connect(d.toolhost_socket()).unwrap();
    let err = Client::<ToolhostProtocol, _>::connect(s, Role::Supervisor).unwrap_err();
    assert!(
        err.to_string()
            .contains("only from the caxton process that started it"),
        "{err}"
    );
    // So is a CLI.
    let s = UnixStream::connect(d.toolhost_socket()).unwrap();
    let err = Client::<ToolhostProtocol, _>::connect(s, Role::Cli).unwrap_err();
    assert!(err.to_string().contains("does not serve cli"), "{err}");
    // Nothing was audited (no tool ran) and the service serves on.
    assert!(d.audit_records().is_empty());
    let out = d.run("calculator", "6 * 7").unwrap();
    assert_eq!(out.answer(), Some("The result is 42."), "{out:?}");
}
