//! The `sql` tool on a 1M-row table, side by side in one run, alternating:
//! - Caxton: a worker's connection → toolhost → the `sql` guest (SQLite compiled to WASM) → back;
//! - the `sqlite3` command-line tool on the same file, one process per query (Debian's native build,
//!   the reference the issue names);
//! - the guest's own SQLite version, native and in-process (rusqlite, bundled): the floor, which
//!   separates the cost of WASM from the difference between SQLite versions.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use caxton_ipc::toolhost::{CallToolRequest, ToolhostRequest, ToolhostResponse};

use crate::own_toolhost::{OwnToolhost, grant};

const ROWS: i64 = 1_000_000;
const SAMPLES: usize = 15;
const REGIONS: [&str; 8] = [
    "north", "south", "east", "west", "centre", "coast", "hills", "islands",
];
const QUERY: &str = "SELECT region, count(*) AS n, sum(amount) AS total, avg(amount) AS mean \
                     FROM sales GROUP BY region ORDER BY region";

/// A database of `ROWS` sales, the same every time.
fn make(path: &Path) -> anyhow::Result<()> {
    let mut c = rusqlite::Connection::open(path)?;
    c.execute_batch("CREATE TABLE sales (id INTEGER PRIMARY KEY, region TEXT, amount REAL)")?;
    let tx = c.transaction()?;
    {
        let mut insert = tx.prepare("INSERT INTO sales (region, amount) VALUES (?1, ?2)")?;
        for i in 0..ROWS {
            let amount = (i * 7919 % 10_000) as f64 / 100.0;
            insert.execute(rusqlite::params![REGIONS[(i % 8) as usize], amount])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The row counts per region in a CSV result (the `n` column), to check every path agrees.
fn counts(csv: &str) -> Vec<String> {
    csv.lines()
        .filter(|l| REGIONS.iter().any(|r| l.starts_with(&format!("{r},"))))
        .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
        .collect()
}

pub fn report() -> anyhow::Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("cxsqlb")
        .tempdir_in("/tmp")?;
    let db = dir.path().join("sales.db");
    make(&db)?;
    let size_mib = std::fs::metadata(&db)?.len() as f64 / (1 << 20) as f64;

    let native =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let run_native = || -> anyhow::Result<String> {
        let mut stmt = native.prepare(QUERY)?;
        let rows = stmt.query_map([], |r| {
            Ok(format!(
                "{},{},{},{}",
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, f64>(3)?
            ))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?.join("\n"))
    };
    let expected = counts(&run_native()?);
    anyhow::ensure!(expected.len() == REGIONS.len(), "{expected:?}");

    let cli_version = Command::new("sqlite3")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string()
        });
    let run_cli = || -> anyhow::Result<String> {
        let out = Command::new("sqlite3")
            .args(["-readonly", "-csv"])
            .arg(&db)
            .arg(QUERY)
            .output()?;
        anyhow::ensure!(out.status.success(), "sqlite3: {out:?}");
        Ok(String::from_utf8(out.stdout)?)
    };

    let host = OwnToolhost::start(&format!(
        "[tools.sql]\ndirs = [{{ path = \"/data\", host = \"{}\" }}]\n",
        dir.path().display()
    ))?;
    let mut worker = host.worker(grant(&["sql_query"], &[]))?;
    let mut run_caxton = || -> anyhow::Result<String> {
        let req = ToolhostRequest::CallTool(CallToolRequest {
            run_id: "bench".into(),
            agent: "bench".into(),
            tool: "sql_query".into(),
            arguments: serde_json::json!({"path": "/data/sales.db", "sql": QUERY}).to_string(),
            timeout_ms: 30_000,
        });
        match worker.call(&req)? {
            ToolhostResponse::ToolOutput(o) if !o.is_error => Ok(o.content),
            other => anyhow::bail!("sql_query: {other:?}"),
        }
    };

    // One warm-up each (page cache, the guest instance), checked against the native answer.
    anyhow::ensure!(counts(&run_caxton()?) == expected, "Caxton disagrees");
    if cli_version.is_some() {
        anyhow::ensure!(counts(&run_cli()?) == expected, "sqlite3 disagrees");
    }
    let (mut caxton, mut cli, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    let time = |f: &mut dyn FnMut() -> anyhow::Result<String>| -> anyhow::Result<Duration> {
        let started = Instant::now();
        f()?;
        Ok(started.elapsed())
    };
    for _ in 0..SAMPLES {
        caxton.push(time(&mut run_caxton)?);
        if cli_version.is_some() {
            cli.push(time(&mut || run_cli())?);
        }
        floor.push(time(&mut || run_native())?);
    }
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let min = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let (c50, f50) = (p50(&mut caxton), p50(&mut floor));
    let mut out = format!(
        "\n## The `sql` tool: a 1M-row aggregate (ms)\n\n`{QUERY}` over {ROWS} rows \
         ({size_mib:.0} MiB file), {SAMPLES} samples per path, alternating.\n\n\
         | path | p50 | min | p50 ÷ sqlite3 CLI | p50 ÷ native in-process |\n|---|---|---|---|---|\n"
    );
    let cli50 = if cli.is_empty() {
        None
    } else {
        Some(p50(&mut cli))
    };
    let ratio = |d: Duration, to: Option<Duration>| {
        to.map_or(String::new(), |t| {
            format!("{:.2}×", d.as_secs_f64() / t.as_secs_f64())
        })
    };
    out.push_str(&format!(
        "| **Caxton**: worker socket → toolhost → `sql` guest (SQLite {} in WASM) → back | {} | {} | {} | {} |\n",
        rusqlite::version(),
        ms(c50),
        ms(min(&caxton)),
        ratio(c50, cli50),
        ratio(c50, Some(f50))
    ));
    match (&cli_version, cli50) {
        (Some(v), Some(c)) => out.push_str(&format!(
            "| `sqlite3 -readonly -csv` command-line tool (native SQLite {v}), a process per query | {} | {} | 1.00× | {} |\n",
            ms(c),
            ms(min(&cli)),
            ratio(c, Some(f50))
        )),
        _ => out.push_str(
            "| `sqlite3` command-line tool | not installed (`apt-get install sqlite3`) | | | |\n",
        ),
    }
    out.push_str(&format!(
        "| SQLite {} native, in-process (rusqlite; the floor) | {} | {} | {} | 1.00× |\n",
        rusqlite::version(),
        ms(f50),
        ms(min(&floor)),
        ratio(f50, cli50)
    ));
    Ok(out)
}
