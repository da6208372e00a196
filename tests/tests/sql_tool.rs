//! The built-in `sql` tool against the real toolhost: SQLite compiled to WASM, reading files in a
//! read-only grant. Queries with joins, aggregates and windows; every write form refused with the
//! file unchanged; a query that never ends stopped by the guest's budget; a result too big cut and
//! said so; SQLite's heap held below the guest's memory; paths outside the grant (`..`, absolute,
//! symlinks out) refused; a damaged or hostile file explained; an R-tree table read; CSV/JSON files
//! as tables; a read-write grant disables the package.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caxton_ipc::toolhost::ToolOutput;
use caxton_tests::{Daemon, Options, assert_contains};
use rusqlite::Connection;

const CALL: Duration = Duration::from_secs(20);

struct Setup {
    d: Daemon,
    data: PathBuf,
    base: PathBuf,
}

/// A daemon granting `[tools.sql]` a data directory holding `shop.db`, a damaged copy, CSV and
/// JSON files, and symlinks pointing out of the grant.
fn start() -> Setup {
    let base = tempfile::Builder::new()
        .prefix("cxsql")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    let data = base.join("data");
    std::fs::create_dir_all(data.join("csv")).unwrap();
    let c = Connection::open(data.join("shop.db")).unwrap();
    c.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, region TEXT);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, amount REAL, day TEXT);
         INSERT INTO customers VALUES (1, 'Ada', 'North'), (2, 'Bo', 'South'), (3, 'Cy', 'North');
         INSERT INTO orders VALUES (1, 1, 10.5, '2026-01-01'), (2, 1, 4.5, '2026-01-02'),
                                   (3, 2, 7.25, '2026-01-02'), (4, 3, 1.0, '2026-01-03');
         CREATE VIRTUAL TABLE zones USING rtree(id, minx, maxx);
         INSERT INTO zones VALUES (1, 0, 10), (2, 5, 6);",
    )
    .unwrap();
    drop(c);
    // A file whose schema is not UTF-8 (hostile or damaged).
    let c = Connection::open(data.join("odd.db")).unwrap();
    c.execute_batch(
        "CREATE TABLE t (a);
         PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = 'CREATE TABLE t (' || CAST(x'ff' AS TEXT) || ')';",
    )
    .unwrap();
    drop(c);
    let mut damaged = std::fs::read(data.join("shop.db")).unwrap();
    damaged[100..].fill(0x5A);
    std::fs::write(data.join("damaged.db"), damaged).unwrap();
    std::fs::write(
        data.join("csv/units.csv"),
        "region,units\nNorth,10\nSouth,4\nNorth,7\n",
    )
    .unwrap();
    std::fs::write(
        data.join("csv/managers.json"),
        r#"[{"region": "North", "manager": "Ada"}, {"region": "South", "manager": "Bo"}]"#,
    )
    .unwrap();
    // Outside the grant: a database beside the data directory, reachable only by escaping.
    let c = Connection::open(base.join("secret.db")).unwrap();
    c.execute_batch("CREATE TABLE secret (s TEXT); INSERT INTO secret VALUES ('top secret');")
        .unwrap();
    drop(c);
    std::os::unix::fs::symlink(base.join("secret.db"), data.join("link.db")).unwrap();
    std::os::unix::fs::symlink(&base, data.join("up")).unwrap();
    let config = format!(
        "[tools.sql]\ndirs = [{{ path = \"/data\", host = \"{}\" }}]\n",
        data.display()
    );
    let d = Daemon::start(Options {
        extra_config: config,
        ..Options::with_agents(&["agents/calculator.toml"])
    })
    .unwrap();
    Setup { d, data, base }
}

fn call(d: &Daemon, tool: &str, args: serde_json::Value) -> ToolOutput {
    d.call_tool(tool, &args.to_string(), CALL)
        .unwrap()
        .unwrap_or_else(|e| panic!("{tool} {args}: {e:?}"))
}

fn ok(d: &Daemon, path: &str, sql: &str) -> String {
    let out = call(
        d,
        "sql_query",
        serde_json::json!({"path": path, "sql": sql}),
    );
    assert!(!out.is_error, "{sql}: {}", out.content);
    out.content
}

/// The call is a tool error (the model sees it) containing `expect`.
fn refused(d: &Daemon, tool: &str, args: serde_json::Value, expect: &str) -> String {
    let out = call(d, tool, args.clone());
    assert!(out.is_error, "{args} must fail: {}", out.content);
    assert!(
        out.content.contains(expect),
        "{args}: `{expect}` not in: {}",
        out.content
    );
    out.content
}

/// A process's resident memory, MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// A file's bytes and modification time: "unchanged" means both.
fn fingerprint(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    let meta = std::fs::metadata(path).unwrap();
    (std::fs::read(path).unwrap(), meta.modified().unwrap())
}

#[test]
fn reads_with_joins_aggregates_and_windows() {
    let s = start();
    let d = &s.d;
    assert_eq!(
        ok(
            d,
            "/data/shop.db",
            "SELECT c.region, count(*) AS n, sum(o.amount) AS total FROM orders o \
             JOIN customers c ON c.id = o.customer GROUP BY c.region ORDER BY c.region"
        ),
        "# columns: region TEXT, n INTEGER, total REAL\nregion,n,total\nNorth,3,16.0\nSouth,1,7.25\n# 2 rows\n"
    );
    let windows = ok(
        d,
        "/data/shop.db",
        "SELECT day, sum(amount) OVER (ORDER BY day, id) AS running, \
         row_number() OVER (PARTITION BY day ORDER BY amount DESC) AS nth FROM orders ORDER BY id",
    );
    assert_eq!(
        windows,
        "# columns: day TEXT, running REAL, nth INTEGER\nday,running,nth\n\
         2026-01-01,10.5,1\n2026-01-02,15.0,2\n2026-01-02,22.25,1\n2026-01-03,23.25,1\n# 4 rows\n"
    );
    // An R-tree virtual table (as in GeoPackage files) reads like any table.
    assert!(
        ok(
            d,
            "/data/shop.db",
            "SELECT id FROM zones WHERE minx <= 5.5 AND maxx >= 5.5 ORDER BY id"
        )
        .contains("id\n1\n2\n")
    );
    let schema = call(
        d,
        "sql_schema",
        serde_json::json!({"path": "/data/shop.db"}),
    );
    assert!(!schema.is_error, "{}", schema.content);
    assert_contains(
        &schema.content,
        &[
            "table customers (3 rows)\n  id INTEGER PRIMARY KEY\n  name TEXT NOT NULL\n",
            "table orders (4 rows)\n",
        ],
    );
    // CSV and JSON files in a directory are tables named after them.
    assert_eq!(
        ok(
            d,
            "/data/csv",
            "SELECT u.region, m.manager, sum(u.units) AS units FROM units u \
             JOIN managers m USING (region) GROUP BY u.region ORDER BY u.region"
        ),
        "# columns: region TEXT, manager TEXT, units INTEGER\nregion,manager,units\nNorth,Ada,17\nSouth,Bo,4\n# 2 rows\n"
    );
}

#[test]
fn every_write_form_is_refused_and_the_file_is_unchanged() {
    let s = start();
    let d = &s.d;
    let db = s.data.join("shop.db");
    let before = fingerprint(&db);
    for sql in [
        "INSERT INTO customers VALUES (9, 'Eve', 'West')",
        "UPDATE orders SET amount = 0",
        "DELETE FROM orders",
        "CREATE TABLE t (x)",
        "CREATE TEMP TABLE t (x)",
        "DROP TABLE orders",
        "ALTER TABLE orders ADD COLUMN x",
        "PRAGMA user_version = 7",
        "PRAGMA query_only = 0",
        "PRAGMA journal_mode = WAL",
        "ATTACH '/data/other.db' AS o",
        "VACUUM INTO '/data/copy.db'",
        "VACUUM",
        "BEGIN IMMEDIATE",
        "SELECT load_extension('/data/evil')",
        "WITH x AS (SELECT 1) DELETE FROM orders",
        "SELECT 1; DELETE FROM orders",
    ] {
        let why = refused(
            d,
            "sql_query",
            serde_json::json!({"path": "/data/shop.db", "sql": sql}),
            "refused",
        );
        assert!(
            why.contains("read-only") || why.contains("one statement"),
            "{sql}: {why}"
        );
    }
    assert_eq!(fingerprint(&db), before, "shop.db changed");
    for made in ["other.db", "copy.db", "shop.db-journal", "shop.db-wal"] {
        assert!(!s.data.join(made).exists(), "{made} was created");
    }
    // Loaded CSV tables are just as read-only.
    refused(
        d,
        "sql_query",
        serde_json::json!({"path": "/data/csv", "sql": "DELETE FROM units"}),
        "DELETE from `units` is not allowed",
    );
}

#[test]
fn budgets_stop_runaway_queries_and_big_results_are_cut() {
    let s = start();
    let d = &s.d;
    let started = Instant::now();
    refused(
        d,
        "sql_query",
        serde_json::json!({"path": "/data/shop.db", "sql":
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"}),
        "stopped: the query ran past its",
    );
    // Stopped by the guest's own budget (5 s), before the host's deadline (10 s).
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    // More memory than SQLite may have: an error, not a trapped guest; and the instance that grew
    // is not kept idle, so the toolhost gives that memory back.
    let toolhost = d.service_pid(caxton_tests::Service::Toolhost);
    let random = || ok(d, "/data/shop.db", "SELECT random() AS r");
    let first = random();
    let before = rss_mib(toolhost);
    refused(
        d,
        "sql_query",
        serde_json::json!({"path": "/data/shop.db", "sql":
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) \
             SELECT i FROM n ORDER BY randomblob(1000)"}),
        "needs more memory than this tool may use",
    );
    // The discarded instance's guest is aborted, and its memory unmapped, just after the answer.
    let settled = Instant::now() + Duration::from_secs(10);
    let mut after = rss_mib(toolhost);
    while after >= before + 64 && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(100));
        after = rss_mib(toolhost);
    }
    assert!(
        after < before + 64,
        "the toolhost holds {after} MiB after the query, {before} MiB before"
    );
    // The next call runs in a fresh instance, whose SQLite is seeded anew from the host's random
    // source: random() does not repeat the first instance's sequence.
    assert_ne!(random(), first);
    let big = ok(
        d,
        "/data/shop.db",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
         SELECT i FROM n",
    );
    assert!(
        big.starts_with("# columns: i INTEGER\ni\n1\n2\n"),
        "{}",
        &big[..40]
    );
    assert!(
        big.ends_with("rows are shown; the query returned more (the output is capped at 200 rows). Aggregate, add WHERE or LIMIT, or ask for more rows with max_rows (at most 10000)\n"),
        "{}",
        &big[big.len() - 300..]
    );
    assert!(big.contains("# truncated: only the first 200 rows"));
    // The tool still answers after all that.
    assert!(ok(d, "/data/shop.db", "SELECT count(*) AS n FROM orders").contains("\n4\n"));
}

#[test]
fn paths_outside_the_grant_and_damaged_files_are_refused() {
    let s = start();
    let d = &s.d;
    let secret = s.base.join("secret.db");
    assert!(secret.exists());
    for path in ["/data/../secret.db", "/etc/passwd", "/secret.db"] {
        refused(
            d,
            "sql_query",
            serde_json::json!({"path": path, "sql": "SELECT * FROM secret"}),
            "access denied",
        );
    }
    // Symlinks out of the grant: refused by the runtime, whatever the tool thinks of the path.
    for path in ["/data/link.db", "/data/up/secret.db"] {
        let out = call(
            d,
            "sql_query",
            serde_json::json!({"path": path, "sql": "SELECT * FROM secret"}),
        );
        assert!(out.is_error, "{path}: {}", out.content);
        assert!(
            !out.content.contains("top secret"),
            "{path}: {}",
            out.content
        );
        assert!(
            out.content.contains("access denied") || out.content.contains("cannot open"),
            "{path}: {}",
            out.content
        );
    }
    refused(
        d,
        "sql_query",
        serde_json::json!({"path": "/data/damaged.db", "sql": "SELECT * FROM orders"}),
        "is not a SQLite database, or it is damaged",
    );
    refused(
        d,
        "sql_query",
        serde_json::json!({"path": "/data/missing.db", "sql": "SELECT 1"}),
        "does not exist",
    );
    refused(
        d,
        "sql_query",
        serde_json::json!({"path": "/data/odd.db", "sql": "SELECT * FROM t"}),
        "schema is not UTF-8",
    );
    // The instance is still fine after each of those.
    assert!(ok(d, "/data/shop.db", "SELECT count(*) AS n FROM orders").contains("\n4\n"));
}

#[test]
fn a_read_write_grant_disables_the_package() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let d = Daemon::start(Options {
        extra_config: format!(
            "[tools.sql]\ndirs = [{{ path = \"/data\", host = \"{}\", write = true }}]\n",
            dir.path().display()
        ),
        ..Options::with_agents(&["agents/calculator.toml"])
    })
    .unwrap();
    let err = d
        .call_tool(
            "sql_query",
            r#"{"path": "/data/x.db", "sql": "SELECT 1"}"#,
            CALL,
        )
        .unwrap()
        .expect_err("a disabled package serves no calls");
    assert_contains(&err.message, &["tool package `sql` is disabled"]);
}
