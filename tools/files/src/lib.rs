//! `files`: read, list and write files. The guest sees only the directories the operator granted
//! (WASI preopens, read-only or read-write); every other path, including `../` escapes and
//! absolute paths outside a grant, is refused by the runtime, and this server says so plainly.

use std::io::{ErrorKind, Read, Write};

use mcp_guest::{Server, ToolResult, grant, str_arg};
use serde_json::{Value, json};

/// Most bytes `read_file` returns.
pub const MAX_READ: u64 = 512 * 1024;
/// Most bytes `write_file` accepts.
pub const MAX_WRITE: usize = 1024 * 1024;
/// Most entries `list_dir` returns.
pub const MAX_ENTRIES: usize = 1000;
/// The guest directory this tool asks for (tool.toml); the operator maps it to a host directory.
pub const ROOT: &str = "/data";

pub fn server() -> Server {
    let path = json!({"type": "string", "description": "absolute path inside a granted directory, e.g. /data/report.csv"});
    Server::new("files", env!("CARGO_PKG_VERSION"))
        .tool(
            "read_file",
            "Read a UTF-8 text file inside a granted directory (at most 512 KiB are returned).",
            json!({"type": "object", "properties": {"path": path}, "required": ["path"]}),
        )
        .tool(
            "list_dir",
            "List a directory inside a granted directory: one entry per line, `name/` for directories, `name (N bytes)` for files.",
            json!({"type": "object", "properties": {"path": path}, "required": ["path"]}),
        )
        .tool(
            "write_file",
            "Write (or with append=true, append) UTF-8 text to a file inside a directory granted read-write.",
            json!({"type": "object", "properties": {
                "path": path,
                "content": {"type": "string"},
                "append": {"type": "boolean"}
            }, "required": ["path", "content"]}),
        )
}

pub fn call(tool: &str, args: &Value) -> ToolResult {
    let path = str_arg(args, "path")?;
    grant::inside(path, ROOT)?;
    match tool {
        "read_file" => read_file(path),
        "list_dir" => list_dir(path),
        "write_file" => {
            let content = str_arg(args, "content")?;
            let append = args.get("append").and_then(Value::as_bool).unwrap_or(false);
            write_file(path, content, append)
        }
        other => Err(format!("unknown tool `{other}`")),
    }
}

fn read_file(path: &str) -> ToolResult {
    let file = std::fs::File::open(path).map_err(|e| explain(path, &e))?;
    let mut text = String::new();
    file.take(MAX_READ + 1)
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidData => format!("`{path}` is not UTF-8 text"),
            _ => explain(path, &e),
        })?;
    if text.len() as u64 > MAX_READ {
        let cut = text.floor_char_boundary(MAX_READ as usize);
        text.truncate(cut);
        text.push_str("\n[truncated at 512 KiB]");
    }
    Ok(text)
}

fn list_dir(path: &str) -> ToolResult {
    let mut entries: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| explain(path, &e))?
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match e.metadata() {
                Ok(m) if m.is_dir() => format!("{name}/"),
                Ok(m) => format!("{name} ({} bytes)", m.len()),
                Err(_) => name,
            }
        })
        .collect();
    entries.sort();
    let total = entries.len();
    entries.truncate(MAX_ENTRIES);
    if total > MAX_ENTRIES {
        entries.push(format!("[{} more entries not shown]", total - MAX_ENTRIES));
    }
    if entries.is_empty() {
        return Ok(format!("{path} is empty"));
    }
    Ok(entries.join("\n"))
}

fn write_file(path: &str, content: &str, append: bool) -> ToolResult {
    if content.len() > MAX_WRITE {
        return Err(format!(
            "content is {} bytes; at most {MAX_WRITE} can be written at once",
            content.len()
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(|e| explain(path, &e))?;
    file.write_all(content.as_bytes())
        .map_err(|e| explain(path, &e))?;
    Ok(format!(
        "{} {} bytes to {path}",
        if append { "appended" } else { "wrote" },
        content.len()
    ))
}

/// A refusal the model can act on.
fn explain(path: &str, e: &std::io::Error) -> String {
    grant::explain_io(path, ROOT, "files", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_root_are_refused_plainly() {
        for p in ["/etc/passwd", "/data/../secret", "/database", "/"] {
            let e = call("read_file", &json!({"path": p})).unwrap_err();
            assert!(e.starts_with("access denied"), "{p}: {e}");
        }
        assert!(
            call("read_file", &json!({"path": "relative.txt"}))
                .unwrap_err()
                .contains("not absolute")
        );
    }

    #[test]
    fn inside_the_root_the_runtime_answers() {
        // Natively there is no /data: the error comes from the filesystem, not the root check.
        let e = call("read_file", &json!({"path": "/data/no-such-file"})).unwrap_err();
        if std::path::Path::new(ROOT).exists() {
            assert!(e.contains("does not exist"), "{e}");
        } else {
            assert!(e.contains("no directory is granted to this tool"), "{e}");
        }
        assert!(
            call("write_file", &json!({"path": "/data/x"}))
                .unwrap_err()
                .contains("content")
        );
    }
}
