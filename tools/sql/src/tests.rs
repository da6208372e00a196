//! Unit tests on the native target, on files of their own (the root check is `call`'s; these go
//! through `query` and `schema`). The real grant, the WASI sandbox and the host's limits are
//! tested against the toolhost in `tests/tests/sql_tool.rs`.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sql-tool-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A shop database: customers, orders.
fn shop(dir: &Path) -> PathBuf {
    let path = dir.join("shop.db");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, region TEXT);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers(id),
                              amount REAL, day TEXT);
         INSERT INTO customers VALUES (1, 'Ada', 'North'), (2, 'Bo', 'South'), (3, 'Cy', 'North');
         INSERT INTO orders VALUES (1, 1, 10.5, '2026-01-01'), (2, 1, 4.5, '2026-01-02'),
                                   (3, 2, 7.25, '2026-01-02'), (4, 3, 1.0, '2026-01-03');
         CREATE VIEW big AS SELECT * FROM orders WHERE amount > 5;",
    )
    .unwrap();
    path
}

fn ok(path: &Path, sql: &str) -> String {
    query(path, sql, DEFAULT_ROWS).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn err(path: &Path, sql: &str) -> String {
    query(path, sql, DEFAULT_ROWS).expect_err(sql)
}

#[test]
fn joins_aggregates_and_windows() {
    let dir = scratch("joins");
    let db = shop(&dir);
    assert_eq!(
        ok(
            &db,
            "SELECT c.region, count(*) AS n, sum(o.amount) AS total FROM orders o \
             JOIN customers c ON c.id = o.customer GROUP BY c.region ORDER BY c.region"
        ),
        "# columns: region TEXT, n INTEGER, total REAL\nregion,n,total\nNorth,3,16.0\nSouth,1,7.25\n# 2 rows\n"
    );
    let ranked = ok(
        &db,
        "SELECT id, amount, rank() OVER (ORDER BY amount DESC) AS r FROM orders ORDER BY id",
    );
    assert!(
        ranked.contains("1,10.5,1\n2,4.5,3\n3,7.25,2\n4,1.0,4\n"),
        "{ranked}"
    );
    // A real is printed as the sqlite3 shell prints it.
    assert!(ok(&db, "SELECT 0.1 + 0.2 AS x").contains("\n0.3\n"));
    // A trailing semicolon and comment are still one statement.
    assert!(ok(&db, "SELECT 1 AS one; -- done").contains("one\n1\n"));
}

#[test]
fn every_write_form_is_refused_and_the_file_is_unchanged() {
    let dir = scratch("writes");
    let db = shop(&dir);
    let before = std::fs::read(&db).unwrap();
    for (sql, expect) in [
        ("INSERT INTO customers VALUES (9, 'Eve', 'West')", "INSERT"),
        ("UPDATE orders SET amount = 0", "UPDATE"),
        ("DELETE FROM orders", "DELETE"),
        ("CREATE TABLE t (x)", "change to the schema"),
        ("CREATE INDEX i ON orders(day)", "change to the schema"),
        ("CREATE TEMP TABLE t (x)", "refused"),
        ("DROP TABLE orders", "change to the schema"),
        ("DROP VIEW big", "refused"),
        ("ALTER TABLE orders ADD COLUMN x", "refused"),
        ("PRAGMA user_version = 7", "PRAGMA user_version = 7"),
        ("PRAGMA query_only = 0", "PRAGMA query_only = 0"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode"),
        ("ATTACH 'other.db' AS o", "ATTACH"),
        ("VACUUM INTO 'copy.db'", "refused"),
        ("VACUUM", "refused"),
        ("BEGIN", "transaction"),
        ("ANALYZE", "refused"),
        ("REINDEX", "refused"),
        ("SELECT load_extension('libevil')", "load_extension"),
        ("WITH x AS (SELECT 1) DELETE FROM orders", "DELETE"),
        ("SELECT 1; DELETE FROM orders", "refused"),
        ("SELECT 1; SELECT 2", "one statement per call"),
    ] {
        let e = err(&db, sql);
        assert!(e.contains(expect), "{sql}: {e}");
        assert!(e.contains("refused"), "{sql}: {e}");
    }
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(!dir.join("copy.db").exists() && !dir.join("other.db").exists());
    // Reading pragmas are allowed.
    assert!(ok(&db, "PRAGMA table_info(orders)").contains("amount"));
    assert!(ok(&db, "PRAGMA user_version").contains("user_version\n0\n"));
}

#[test]
fn a_query_that_never_ends_is_stopped_by_its_budget() {
    let dir = scratch("budget");
    let db = shop(&dir);
    let started = std::time::Instant::now();
    let e = err(
        &db,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
    );
    assert!(e.starts_with("stopped: the query ran past its"), "{e}");
    assert!(
        started.elapsed() < TIME_BUDGET * 2,
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_huge_result_is_cut_and_says_so() {
    let dir = scratch("huge");
    let db = shop(&dir);
    let sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
               SELECT i, printf('%.200c', 'x') AS pad FROM n";
    let out = ok(&db, sql);
    assert!(
        out.contains("# truncated: only the first 200 rows"),
        "{}",
        &out[out.len() - 300..]
    );
    let out = query(&db, sql, MAX_ROWS).unwrap();
    assert!(out.len() <= MAX_OUTPUT_BYTES + 1024, "{}", out.len());
    assert!(
        out.contains("capped at 256 KiB"),
        "{}",
        &out[out.len() - 300..]
    );
    // Exactly max_rows rows is not a truncation.
    assert!(
        query(&db, "SELECT id FROM orders", 4)
            .unwrap()
            .ends_with("# 4 rows\n")
    );
}

#[test]
fn damaged_and_foreign_files_give_clear_errors() {
    let dir = scratch("damaged");
    let db = shop(&dir);
    let mut bytes = std::fs::read(&db).unwrap();
    // Keep the header, wreck the pages after it.
    for b in &mut bytes[100..] {
        *b = 0xA5;
    }
    let broken = dir.join("broken.db");
    std::fs::write(&broken, &bytes).unwrap();
    let e = err(&broken, "SELECT * FROM orders");
    assert!(e.contains("not a SQLite database, or it is damaged"), "{e}");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    assert!(err(&text, "SELECT 1").contains("is not a SQLite database"));
    assert!(err(&dir.join("missing.db"), "SELECT 1").contains("does not exist"));
    assert!(err(&db, "SELEC 1").starts_with("SQL error"));
    assert!(err(&db, "SELECT nope FROM orders").contains("no such column: nope"));
}

#[test]
fn csv_and_json_files_are_tables() {
    let dir = scratch("data");
    std::fs::write(
        dir.join("sales-2026.csv"),
        "region,units,price,code\nNorth,10,1.5,007\nSouth,4,2.25,010\nNorth,,2,011\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("regions.json"),
        r#"[{"region": "North", "manager": "Ada", "tags": ["a"]}, {"region": "South", "manager": "Bo", "open": true}]"#,
    )
    .unwrap();
    std::fs::write(dir.join("events.jsonl"), "{\"n\": 1}\n\n{\"n\": 2.5}\n").unwrap();
    std::fs::write(dir.join("ignored.txt"), "not data").unwrap();
    let out = ok(
        &dir,
        "SELECT s.region, r.manager, sum(s.units) AS units, max(s.price) AS top \
         FROM sales_2026 s JOIN regions r USING (region) GROUP BY s.region ORDER BY s.region",
    );
    assert_eq!(
        out,
        "# columns: region TEXT, manager TEXT, units INTEGER, top REAL\n\
         region,manager,units,top\nNorth,Ada,10,2.0\nSouth,Bo,4,2.25\n# 2 rows\n"
    );
    // Codes with leading zeros stay text; JSON arrays are JSON text; a missing key is NULL.
    assert!(ok(&dir, "SELECT code FROM sales_2026").contains("\n007\n"));
    assert!(ok(&dir, "SELECT json_extract(tags, '$[0]') AS t FROM regions").contains("\na\n"));
    assert!(ok(&dir, "SELECT sum(n) AS s FROM events").contains("\n3.5\n"));
    let schema = schema(&dir).unwrap();
    assert!(
        schema.contains("table sales_2026 (3 rows, from "),
        "{schema}"
    );
    assert!(
        schema.contains("  units INTEGER\n  price REAL\n  code TEXT\n"),
        "{schema}"
    );
    assert!(schema.contains("  open INTEGER\n"), "{schema}");
    // One file is one table; writes to loaded tables are refused like any other.
    assert!(
        ok(
            &dir.join("regions.json"),
            "SELECT count(*) AS n FROM regions"
        )
        .contains("\n2\n")
    );
    assert!(err(&dir, "DELETE FROM regions").contains("refused"));
    // Bad data names the file.
    std::fs::write(dir.join("bad.json"), "{\"a\": 1}").unwrap();
    assert!(err(&dir.join("bad.json"), "SELECT 1").contains("array of objects"));
}

#[test]
fn schema_lists_tables_views_types_and_counts() {
    let dir = scratch("schema");
    let db = shop(&dir);
    let out = schema(&db).unwrap();
    assert_eq!(
        out,
        "view big\n  id INTEGER\n  customer INTEGER\n  amount REAL\n  day TEXT\n\
         table customers (3 rows)\n  id INTEGER PRIMARY KEY\n  name TEXT NOT NULL\n  region TEXT\n\
         table orders (4 rows)\n  id INTEGER PRIMARY KEY\n  customer INTEGER\n  amount REAL\n  day TEXT\n"
    );
}

#[test]
fn paths_and_arguments_are_checked() {
    for p in ["/etc/passwd", "/data/../secret.db", "/database.db", "/"] {
        let e = call("sql_query", &json!({"path": p, "sql": "SELECT 1"})).unwrap_err();
        assert!(e.starts_with("access denied"), "{p}: {e}");
    }
    assert!(
        call("sql_schema", &json!({"path": "shop.db"}))
            .unwrap_err()
            .contains("not absolute")
    );
    assert!(
        call(
            "sql_query",
            &json!({"path": "/data/x.db", "sql": "SELECT 1", "max_rows": 0})
        )
        .unwrap_err()
        .contains("max_rows")
    );
    assert!(
        call("sql_query", &json!({"path": "/data/x.db"}))
            .unwrap_err()
            .contains("sql")
    );
    assert_eq!(
        data::table_name(Path::new("/d/2026 sales.v2.csv")),
        "t_2026_sales_v2"
    );
}

#[test]
fn files_from_other_tools_are_read_as_they_are() {
    let dir = scratch("foreign");
    let db = dir.join("geo.db");
    let c = Connection::open(&db).unwrap();
    let long_default = "x".repeat(70_000);
    c.execute_batch(&format!(
        "CREATE VIRTUAL TABLE boxes USING rtree(id, minx, maxx);
         INSERT INTO boxes VALUES (1, 0, 10), (2, 5, 6);
         CREATE TABLE wide (a TEXT DEFAULT '{long_default}');
         INSERT INTO wide DEFAULT VALUES;
         CREATE VIEW quoted AS SELECT \"a double-quoted literal\" AS x;"
    ))
    .unwrap();
    drop(c);
    // An R-tree (GeoPackage files have them) connects, though connecting prepares writes.
    assert!(
        ok(
            &db,
            "SELECT id FROM boxes WHERE minx <= 5.5 AND maxx >= 5.5 ORDER BY id"
        )
        .contains("id\n1\n2\n")
    );
    // A schema statement longer than the tool's own statement limit.
    assert!(ok(&db, "SELECT length(a) AS n FROM wide").contains("\n70000\n"));
    // A view written with a double-quoted string literal, as older SQLite allowed.
    assert!(ok(&db, "SELECT x FROM quoted").contains("\na double-quoted literal\n"));
    let listing = schema(&db).unwrap();
    assert!(listing.contains("table boxes (2 rows)"), "{listing}");
    assert!(err(&db, "INSERT INTO boxes VALUES (3, 1, 2)").contains("refused"));
}

#[test]
fn a_schema_that_is_not_utf8_is_refused_not_a_crash() {
    let dir = scratch("utf8");
    let db = dir.join("odd.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE t (a);
         PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = 'CREATE TABLE t (' || CAST(x'ff' AS TEXT) || ')' WHERE name = 't';",
    )
    .unwrap();
    drop(c);
    assert!(err(&db, "SELECT * FROM t").contains("schema is not UTF-8"));
}

#[test]
fn results_are_capped_as_the_host_will_see_them() {
    let dir = scratch("escaped");
    let db = shop(&dir);
    // Control characters take six bytes each once JSON-escaped.
    let out = query(
        &db,
        "SELECT printf('%.200c', char(1)) AS x FROM generate_series(1, 5000)",
        MAX_ROWS,
    );
    let out = match out {
        Ok(out) => out,
        // Builds without the series extension: the same rows from a recursive CTE.
        Err(_) => query(
            &db,
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) \
             SELECT printf('%.200c', char(1)) AS x FROM n",
            MAX_ROWS,
        )
        .unwrap(),
    };
    let escaped = serde_json::to_string(&out).unwrap().len();
    assert!(escaped <= MAX_OUTPUT_BYTES + 1024, "{escaped}");
    assert!(out.contains("# truncated"), "{}", &out[out.len() - 200..]);
    // A count beyond 32 bits is the cap, not zero.
    let many = call(
        "sql_query",
        &json!({"path": "/data/x.db", "sql": "SELECT 1", "max_rows": 4294967296u64}),
    );
    assert!(!many.unwrap_err().contains("max_rows"));
    assert_eq!(
        max_rows(&json!({"max_rows": 4294967296u64})).unwrap(),
        MAX_ROWS
    );
    assert!(ok(&db, "SELECT 1e16 AS x").contains("\n1.0e16\n"));
    // A path the VFS would cut short is refused, not cut.
    let deep = dir
        .join("a".repeat(200))
        .join("b".repeat(200))
        .join("c".repeat(100));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::copy(&db, deep.join("shop.db")).unwrap();
    assert!(err(&deep.join("shop.db"), "SELECT 1").contains("at most 480"));
}

#[test]
fn data_files_with_awkward_columns() {
    let dir = scratch("awkward");
    std::fs::write(dir.join("case.csv"), "Name,name\na,b\n").unwrap();
    assert!(err(&dir.join("case.csv"), "SELECT 1").contains("differ only in case"));
    std::fs::write(
        dir.join("ids.csv"),
        "id,n\n123456789012345678901234,1\n7,2\n",
    )
    .unwrap();
    let out = ok(
        &dir.join("ids.csv"),
        "SELECT typeof(id) AS t, id FROM ids ORDER BY n",
    );
    assert!(out.contains("text,123456789012345678901234\n"), "{out}");
    std::fs::write(
        dir.join("big.json"),
        r#"[{"id": 18446744073709551615}, {"id": 1}]"#,
    )
    .unwrap();
    assert!(ok(&dir.join("big.json"), "SELECT id FROM big").contains("\n18446744073709551615\n"));
    std::fs::write(dir.join("mixed.json"), r#"[{"a": 1}, 2]"#).unwrap();
    let e = err(&dir.join("mixed.json"), "SELECT 1");
    assert!(e.contains("row 2 is not an object"), "{e}");
    std::fs::write(dir.join("broken.json"), r#"[{"a": 1}"#).unwrap();
    assert!(err(&dir.join("broken.json"), "SELECT 1").contains("not valid JSON"));
    std::fs::write(dir.join("header.csv"), "a,b\n").unwrap();
    assert!(
        schema(&dir.join("header.csv"))
            .unwrap()
            .contains("table header (0 rows")
    );
}
