//! Paths inside a granted directory, as the tool servers that read files see them. The runtime
//! enforces the grant (a WASI preopen) whatever the path, symlinks included; these make the
//! refusal of an obviously outside path, and the usual I/O errors, say plainly what happened.

use std::io::ErrorKind;

/// Resolves `.` and `..` lexically (`/data/../etc` is `/etc`).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `Ok` when `path` is absolute and, resolved lexically, inside `root` (the guest path of the
/// grant, such as `/data`); else the refusal.
pub fn inside(path: &str, root: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "`{path}` is not absolute: paths start at a granted directory, like {root}/file.txt"
        ));
    }
    let normal = normalize(path);
    if normal != root && !normal.starts_with(&format!("{root}/")) {
        return Err(format!(
            "access denied: `{path}` is outside the directories granted to this tool ({root})"
        ));
    }
    Ok(())
}

/// An I/O error on `path` the model can act on. `tool` is the package's name, for the grant an
/// operator would write when nothing is granted at `root`. WASI reports a path outside every
/// granted directory as "not capable" or "permission denied", a write to a read-only grant as
/// "read-only" or denied.
pub fn explain_io(path: &str, root: &str, tool: &str, e: &std::io::Error) -> String {
    let text = e.to_string();
    match e.kind() {
        ErrorKind::NotFound if std::fs::metadata(root).is_err() && inside(path, root).is_ok() => {
            format!(
                "no directory is granted to this tool, so `{path}` cannot be reached; an operator grants {root} in caxton.toml: [tools.{tool}] dirs = [{{ path = \"{root}\", host = \"/some/dir\" }}]"
            )
        }
        ErrorKind::NotFound => format!("`{path}` does not exist"),
        ErrorKind::PermissionDenied => format!(
            "access denied: `{path}` is outside the directories granted to this tool, or the grant is read-only ({text})"
        ),
        ErrorKind::ReadOnlyFilesystem => {
            format!("access denied: `{path}` is in a directory granted read-only")
        }
        _ if text.contains("capab") || e.raw_os_error() == Some(76) => format!(
            "access denied: `{path}` is outside the directories granted to this tool ({text})"
        ),
        _ => format!("`{path}`: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_paths_are_refused_plainly() {
        assert_eq!(normalize("/data/a/../b/./c"), "/data/b/c");
        assert_eq!(normalize("/data/../../etc/passwd"), "/etc/passwd");
        for p in ["/etc/passwd", "/data/../secret", "/database", "/"] {
            assert!(
                inside(p, "/data").unwrap_err().starts_with("access denied"),
                "{p}"
            );
        }
        assert!(
            inside("x.txt", "/data")
                .unwrap_err()
                .contains("not absolute")
        );
        assert!(inside("/data", "/data").is_ok() && inside("/data/a/../b", "/data").is_ok());
    }
}
