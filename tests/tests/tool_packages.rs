//! Tool packages through the CLI against the real daemon: install a tool written in C, list,
//! show, call, replace, survive a restart, remove; refuse bad packages; and the built-in suite
//! doing a data analyst's job inside an agent run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use caxton_tests::{Daemon, Options, assert_contains, repo_root};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The arguments of `caxton tool install` with `flags` for the package directory `pkg`.
fn install<'a>(flags: &[&'a str], pkg: &'a Path) -> Vec<&'a str> {
    [&["tool", "install"][..], flags, &[pkg.to_str().unwrap()]].concat()
}

/// Builds the C tool (tools/checksum-c) into a package directory of its own.
fn build_checksum_package() -> PathBuf {
    let src = repo_root().join("tools/checksum-c");
    let dir = tempfile::Builder::new()
        .prefix("cxc")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    for f in ["checksum.c", "Makefile", "tool.toml"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let out = Command::new("make")
        .arg("-s")
        .arg("checksum.wasm")
        .current_dir(&dir)
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "building the C tool failed (scripts/setup.sh installs clang, lld, wasi-libc and libclang-rt-14-dev-wasm32):\n{}",
        stderr(&out)
    );
    dir
}

fn start() -> Daemon {
    Daemon::start(Options::with_agents(&[
        "agents/calculator.toml",
        "tests/agents/hasher.toml",
    ]))
    .unwrap()
}

/// The names of the loaded agents, one per line (`agent list` also prints the agents
/// directory's problems, which name skipped files).
fn agents(d: &Daemon) -> String {
    let list: serde_json::Value =
        serde_json::from_str(&stdout(&d.cli(&["agent", "list", "--json"]))).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string() + "\n")
        .collect()
}

#[test]
fn a_tool_written_in_c_is_installed_called_replaced_and_removed() {
    let mut d = start();
    let pkg = build_checksum_package();
    // The hasher agent names a tool nobody offers yet: it is skipped at start.
    assert!(!agents(&d).contains("hasher"));

    assert_contains(
        &d.cli_ok(&install(&[], &pkg)),
        &["installed checksum 0.1.0 (2 tools: checksum, base64)"],
    );
    assert_contains(
        &d.cli_ok(&["tool", "list"]),
        &["checksum", "installed", "calc", "built-in"],
    );
    assert_contains(
        &d.cli_ok(&["tool", "show", "checksum"]),
        &["memory=16MiB timeout=2000ms max_concurrency=8"],
    );

    // Direct calls, as an operator would.
    assert_contains(
        &d.cli_ok(&["tool", "call", "checksum", "--args", r#"{"text": "abc"}"#]),
        &["sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
    );
    // A tool error exits 1.
    let decode = [
        "tool",
        "call",
        "base64",
        "--args",
        r#"{"text": "!!", "mode": "decode"}"#,
    ];
    assert_contains(&d.cli_err(&decode, 1), &["the tool reported an error"]);

    // The install reloaded the agents: the hasher now loads and runs with the C tool.
    assert!(agents(&d).contains("hasher"), "{}", agents(&d));
    let run = d.run("hasher", "123456789").unwrap();
    assert!(
        run.answer().unwrap().contains("crc32=cbf43926"),
        "{:?}",
        run.answer()
    );

    // Installing again needs --replace.
    assert_contains(&d.cli_err(&install(&[], &pkg), 1), &["already installed"]);
    d.cli_ok(&install(&["--replace"], &pkg));

    // Installed packages survive a restart, loaded from the compiled-code cache.
    d.stop_and_restart();
    assert_contains(&d.cli_ok(&["tool", "list"]), &["checksum"]);
    assert!(agents(&d).contains("hasher"));
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("server=\"checksum\"") && l.contains("cached=true")),
        "{log}"
    );

    // Removal: the files go, the tool goes, the agent that needs it is unloaded.
    d.cli_ok(&["tool", "remove", "checksum"]);
    assert!(!d.dir.path().join("state/tools/checksum").exists());
    assert_contains(
        &d.cli_err(
            &["tool", "call", "checksum", "--args", r#"{"text": "abc"}"#],
            1,
        ),
        &["no tool package offers a tool named `checksum`"],
    );
    assert!(!agents(&d).contains("hasher"));
    // Every call above is in the audit log, the operator's included.
    let records = d.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r.agent == "operator" && r.server == "checksum" && r.outcome == "ok")
    );
    assert!(
        records
            .iter()
            .any(|r| r.agent == "hasher" && r.memory_peak_bytes > 0)
    );
}

/// A copy of the built C package whose manifest is `version` with `requests` (a TOML
/// `[requests]` body).
fn checksum_version(built: &Path, version: &str, requests: &str) -> PathBuf {
    let dir = built.join(format!("v{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(built.join("checksum.wasm"), dir.join("checksum.wasm")).unwrap();
    let manifest = std::fs::read_to_string(built.join("tool.toml"))
        .unwrap()
        .replace("version = \"0.1.0\"", &format!("version = \"{version}\""))
        .replace("[limits]", &format!("[requests]\n{requests}\n\n[limits]"));
    std::fs::write(dir.join("tool.toml"), manifest).unwrap();
    dir
}

#[test]
fn a_replacement_that_requests_more_needs_the_operators_consent() {
    // The operator's grant is keyed by name: `[tools.checksum]` applies to whatever version is
    // installed as `checksum`. It grants LANG and a secret, which 0.1.0 does not request (so
    // 0.1.0 is disabled, loudly) and 0.2.0 does.
    let d = Daemon::start(Options {
        extra_config: r#"
[tools.checksum]
env = { LANG = "C.UTF-8" }
secrets = { CHECKSUM_TOKEN = "env:CAXTON_TEST_CHECKSUM_TOKEN" }
"#
        .into(),
        env: vec![("CAXTON_TEST_CHECKSUM_TOKEN".into(), "s3cret".into())],
        ..Options::with_agents(&["agents/calculator.toml"])
    })
    .unwrap();
    let built = build_checksum_package();
    let v1 = checksum_version(&built, "0.1.0", r#"env = ["LANG"]"#);
    let v2 = checksum_version(
        &built,
        "0.2.0",
        r#"env = ["LANG"]
secrets = ["CHECKSUM_TOKEN"]
dirs = [{ path = "/data", write = true }]"#,
    );
    assert_contains(
        &d.cli_ok(&install(&[], &v1)),
        &[
            "installed checksum 0.1.0",
            "granted:     env LANG",
            "PROBLEM:     grant of secret CHECKSUM_TOKEN is not requested by the manifest",
        ],
    );

    // 0.2.0 asks for the secret (which the grant would hand it) and a directory (which it
    // would not get): refused, each new request named with what the grant gives it.
    assert_contains(
        &d.cli_err(&install(&["--replace"], &v2), 1),
        &[
            "tool package `checksum` 0.2.0 requests what the installed version 0.1.0 did not",
            "dir /data (rw): not granted",
            "secret CHECKSUM_TOKEN: granted by [tools.checksum]",
            "--replace --allow-new-requests",
        ],
    );
    assert_contains(
        &d.cli_ok(&["tool", "show", "checksum"]),
        &["name:        checksum 0.1.0"],
    );
    let on_disk = std::fs::read_to_string(d.dir.path().join("state/tools/checksum/tool.toml"));
    assert!(on_disk.unwrap().contains("version = \"0.1.0\""));

    // The flag alone is a usage error: it only qualifies --replace.
    d.cli_err(&install(&["--allow-new-requests"], &v2), 2);

    // With the operator's consent it is installed, and the output says what replaced what and
    // what the new version gets.
    let text = d.cli_ok(&install(&["--replace", "--allow-new-requests"], &v2));
    assert_contains(
        &text,
        &[
            "installed checksum 0.2.0",
            "replaced:    checksum 0.1.0 (module sha256 ",
            "the [tools.checksum] grant in caxton.toml applies to 0.2.0 now",
            "new request: secret CHECKSUM_TOKEN: granted by [tools.checksum] (not requested by 0.1.0)",
            "new request: dir /data (rw): not granted (not requested by 0.1.0)",
            "granted:     env LANG",
            "granted:     secret CHECKSUM_TOKEN (from env:CAXTON_TEST_CHECKSUM_TOKEN)",
            "denied:      dir /data (rw) (requested, not granted)",
        ],
    );
    assert!(!text.contains("s3cret"), "{text}");

    // Replacing it with a version that requests nothing more needs no flag, and still says
    // which grant applies.
    let v3 = checksum_version(
        &built,
        "0.3.0",
        r#"env = ["LANG"]
secrets = ["CHECKSUM_TOKEN"]"#,
    );
    let installed = d.cli_ok(&install(&["--replace", "--json"], &v3));
    let installed: serde_json::Value = serde_json::from_str(&installed).unwrap();
    assert_eq!(installed["package"]["version"], "0.3.0");
    assert_eq!(installed["replaced"]["version"], "0.2.0");
    assert_eq!(installed["replaced"]["new_requests"], serde_json::json!([]));
    assert!(
        installed["package"]["problems"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{installed}"
    );
    // The tool serves under its new version.
    d.cli_ok(&["tool", "call", "checksum", "--args", r#"{"text": "abc"}"#]);
}

fn write_package(dir: &Path, manifest: &str, module: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tool.toml"), manifest).unwrap();
    std::fs::write(dir.join("bad.wasm"), module).unwrap();
}

#[test]
fn bad_packages_are_refused_with_the_reason() {
    let d = start();
    let base = d.dir.path().join("pkgs");
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "name = \"bad\"\nversion = \"1\"\n",
            b"not wasm at all",
            "not a WebAssembly binary",
        ),
        (
            "name = \"bad\"\nversion = \"1\"\n",
            b"\0asm\x01\0\0\0\x05garbage",
            "cannot compile tool server `bad`",
        ),
        (
            "name = \"bad\"\nversion = \"1\"\nnetwork = true\n",
            b"\0asm\x01\0\0\0",
            "unknown field `network`",
        ),
        (
            "name = \"calc\"\nversion = \"9\"\nmodule = \"bad.wasm\"\n",
            b"\0asm\x01\0\0\0",
            "built-in tool package and cannot be replaced",
        ),
        (
            "name = \"bad\"\nversion = \"1\"\n[limits]\nmemory_mb = 999999\n",
            b"\0asm\x01\0\0\0",
            "memory_mb must be",
        ),
    ];
    for (i, (manifest, module, expect)) in cases.iter().enumerate() {
        let dir = base.join(i.to_string());
        let manifest = if manifest.contains("module") {
            manifest.to_string()
        } else {
            format!("module = \"bad.wasm\"\n{manifest}")
        };
        write_package(&dir, &manifest, module);
        let out = d.cli(&install(&[], &dir));
        assert_ne!(out.status.code(), Some(0), "case {i} must fail");
        assert!(
            stderr(&out).contains(expect),
            "case {i}: `{expect}` not in: {}",
            stderr(&out)
        );
    }
    // A missing directory and a missing module are reported by the CLI itself.
    let out = d.cli(&["tool", "install", "/nonexistent/pkg"]);
    assert_contains(&stderr(&out), &["cannot read the manifest"]);
    // Nothing was installed and the built-ins still serve.
    assert!(!d.dir.path().join("state/tools/bad").exists());
    let calc = d.cli(&[
        "tool",
        "call",
        "calculate",
        "--args",
        r#"{"expression": "6*7"}"#,
    ]);
    assert_eq!(stdout(&calc).trim(), "42");
    let bad_args = d.cli(&["tool", "call", "calculate", "--args", "[1]"]);
    assert_ne!(bad_args.status.code(), Some(0));
    assert!(stderr(&bad_args).contains("must be a JSON object"));
    // A tool whose directory was never granted says so, and how to grant it.
    let ungranted = [
        "tool",
        "call",
        "read_file",
        "--args",
        r#"{"path": "/data/x"}"#,
    ];
    assert_contains(
        &d.cli_err(&ungranted, 1),
        &["no directory is granted to this tool"],
    );
    let builtin = d.cli(&["tool", "remove", "calc"]);
    assert!(stderr(&builtin).contains("built-in tool package and cannot be removed"));
}

#[test]
fn the_analyst_agent_aggregates_charts_and_saves() {
    let base = tempfile::Builder::new()
        .prefix("cxa")
        .tempdir_in("/tmp")
        .unwrap();
    let data = base.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The same directory: read-write for `files`, read-only for `sql`.
    let d = Daemon::start(Options {
        extra_config: format!(
            "[tools.files]\ndirs = [{{ path = \"/data\", host = \"{0}\", write = true }}]\n\
             [tools.sql]\ndirs = [{{ path = \"/data\", host = \"{0}\" }}]\n",
            data.display()
        ),
        ..Options::with_agents(&["tests/agents/analyst.toml"])
    })
    .unwrap();
    // Runs the analyst on `input` and checks the chart it saved (north 300, south 150).
    let analyse = |input: &str| {
        let _ = std::fs::remove_file(data.join("sales.svg"));
        let run = d.run("analyst", input).unwrap();
        let answer = run.answer().unwrap_or_else(|| panic!("{:?}", run.events));
        assert!(
            answer.starts_with("Chart of sales by region: wrote ")
                && answer.ends_with("bytes to /data/sales.svg"),
            "{answer}"
        );
        let svg = std::fs::read_to_string(data.join("sales.svg")).unwrap();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        for label in ["Sales by region", "north", "south", "300", "150"] {
            assert!(svg.contains(label), "`{label}` missing from the chart");
        }
    };
    analyse("region,sales\nnorth,100\nsouth,150\nnorth,200\n");
    // The same job from a SQLite database, in SQL.
    let db = rusqlite::Connection::open(data.join("sales.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE sales (region TEXT, sales INTEGER);
         INSERT INTO sales VALUES ('north', 100), ('south', 150), ('north', 200);",
    )
    .unwrap();
    drop(db);
    analyse(
        "SQL: SELECT region, sum(sales) AS sum_sales FROM sales GROUP BY region ORDER BY region",
    );
    // Six tool calls, each audited under the agent's name.
    let tools: Vec<String> = d
        .audit_records()
        .into_iter()
        .filter(|r| r.agent == "analyst")
        .map(|r| r.tool)
        .collect();
    assert_eq!(
        tools,
        [
            "csv_aggregate",
            "chart_svg",
            "write_file",
            "sql_query",
            "chart_svg",
            "write_file"
        ]
    );
}
