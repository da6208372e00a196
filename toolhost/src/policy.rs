//! What one tool package may do: its manifest's requests intersected with the operator's grant.
//!
//! Deny by default: a request without a grant is denied (and listed as such); a grant without a
//! matching request, a host directory that does not exist, or a secret that cannot be read is a
//! *problem* that disables the package, so a misconfiguration is loud instead of silently
//! denying everything.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use caxton_ipc::error::Chain;
use caxton_ipc::tool::{Requests, ToolGrant, ToolManifest, check_limits};

/// Default linear memory of a guest, in MiB.
pub const DEFAULT_MEMORY_MB: u32 = 64;
/// Default concurrent calls of one tool package (= live instances at most).
pub const DEFAULT_CONCURRENCY: u32 = 16;

/// A granted directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedDir {
    pub guest: String,
    pub host: PathBuf,
    pub write: bool,
}

/// Why a text or URL is not an HTTP origin the toolhost can grant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OriginError {
    #[error("only http and https URLs are supported, not `{scheme}:`")]
    Scheme { scheme: String },
    #[error("`{url}` has no host")]
    NoHost { url: String },
    #[error("`{url}` has no port")]
    NoPort { url: String },
    #[error("`{text}` is not a URL")]
    NotUrl {
        text: String,
        #[source]
        source: url::ParseError,
    },
    #[error("`{text}` must be an origin (scheme://host[:port]) without path, query or user")]
    NotAnOrigin { text: String },
}

/// Why a granted secret cannot be read (a problem that disables the package).
#[derive(Debug, thiserror::Error)]
enum SecretError {
    #[error("environment variable {var} of the service is not set")]
    EnvNotSet { var: String },
    #[error("environment variable {var} of the service is not valid Unicode")]
    EnvNotUnicode { var: String },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("source `{given}` must be `env:VARIABLE` or `file:/path`")]
    UnknownSource { given: String },
}

/// A granted HTTP origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Loopback/private/link-local addresses are allowed for this origin.
    pub private: bool,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl Origin {
    /// The origin of a URL (`http`/`https` only).
    pub fn of(url: &url::Url) -> Result<Origin, OriginError> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(OriginError::Scheme {
                scheme: scheme.into(),
            });
        }
        let host = url
            .host_str()
            .ok_or_else(|| OriginError::NoHost {
                url: url.to_string(),
            })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| OriginError::NoPort {
                url: url.to_string(),
            })?;
        Ok(Origin {
            scheme: scheme.into(),
            host,
            port,
            private: false,
        })
    }

    /// Parses an origin as written in a manifest or grant (`scheme://host[:port]`, no path).
    pub fn parse(text: &str) -> Result<Origin, OriginError> {
        let url = url::Url::parse(text).map_err(|source| OriginError::NotUrl {
            text: text.into(),
            source,
        })?;
        if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
            return Err(OriginError::NotAnOrigin { text: text.into() });
        }
        Origin::of(&url)
    }

    /// The same scheme, host and port.
    pub fn same(&self, other: &Origin) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

/// The resolved policy of one package.
#[derive(Debug, Clone)]
pub struct Policy {
    pub dirs: Vec<GrantedDir>,
    /// Environment of the guest: granted env values and secrets.
    pub env: Vec<(String, String)>,
    pub http: Vec<Origin>,
    pub memory_mb: u32,
    pub timeout: Duration,
    pub max_concurrency: u32,
    /// Human-readable lines of what is granted (secret values never appear).
    pub granted: Vec<String>,
    /// Requested, not granted.
    pub denied: Vec<String>,
    /// Misconfigurations; a package with problems serves no calls.
    pub problems: Vec<String>,
}

impl Policy {
    /// Intersects `manifest` with `grant`. `default_timeout` is the toolhost's `tool_timeout`.
    pub fn resolve(
        manifest: &ToolManifest,
        grant: Option<&ToolGrant>,
        default_timeout: Duration,
    ) -> Policy {
        let empty = ToolGrant::default();
        let grant = grant.unwrap_or(&empty);
        let req = &manifest.requests;
        let mut p = Policy {
            dirs: Vec::new(),
            env: Vec::new(),
            http: Vec::new(),
            memory_mb: 0,
            timeout: default_timeout,
            max_concurrency: 0,
            granted: Vec::new(),
            denied: Vec::new(),
            problems: Vec::new(),
        };
        // Directories.
        for g in &grant.dirs {
            match req.dirs.iter().find(|r| r.path == g.path) {
                None => p.problems.push(format!(
                    "grant of dir {} is not requested by the manifest (requested: {})",
                    g.path,
                    list(req.dirs.iter().map(|d| d.path.as_str()))
                )),
                Some(r) if g.write && !r.write => p.problems.push(format!(
                    "dir {} is granted read-write but the manifest requests it read-only",
                    g.path
                )),
                Some(_) if !g.host.is_dir() => p.problems.push(format!(
                    "dir {} is granted from {}, which is not an existing directory",
                    g.path,
                    g.host.display()
                )),
                Some(_) => {
                    p.granted.push(format!(
                        "dir {} -> {} ({})",
                        g.path,
                        g.host.display(),
                        if g.write { "rw" } else { "ro" }
                    ));
                    p.dirs.push(GrantedDir {
                        guest: g.path.clone(),
                        host: g.host.clone(),
                        write: g.write,
                    });
                }
            }
        }
        for r in &req.dirs {
            if !grant.dirs.iter().any(|g| g.path == r.path) {
                p.denied.push(format!(
                    "dir {} ({})",
                    r.path,
                    if r.write { "rw" } else { "ro" }
                ));
            }
        }
        // HTTP origins.
        // `"*"` asks for whichever origins the operator grants (a general-purpose fetch tool).
        let any_origin = req.http.iter().any(|u| u == "*");
        let requested: Vec<Origin> = req
            .http
            .iter()
            .filter(|u| *u != "*")
            .filter_map(|u| match Origin::parse(u) {
                Ok(o) => Some(o),
                Err(e) => {
                    p.problems
                        .push(format!("manifest http request {}", Chain(&e)));
                    None
                }
            })
            .collect();
        for g in &grant.http {
            match Origin::parse(g.url()) {
                Err(e) => p.problems.push(format!("http grant {}", Chain(&e))),
                Ok(o) if !any_origin && !requested.iter().any(|r| r.same(&o)) => {
                    p.problems.push(format!(
                        "grant of http {o} is not requested by the manifest (requested: {})",
                        list(requested.iter().map(ToString::to_string))
                    ))
                }
                Ok(mut o) => {
                    o.private = g.private();
                    p.granted.push(format!(
                        "http {o}{}",
                        if o.private {
                            " (private addresses allowed)"
                        } else {
                            ""
                        }
                    ));
                    p.http.push(o);
                }
            }
        }
        for r in &requested {
            if !p.http.iter().any(|g| g.same(r)) {
                p.denied.push(format!("http {r}"));
            }
        }
        if any_origin && p.http.is_empty() {
            p.denied
                .push("http (any origin the operator grants; none is)".into());
        }
        // Environment and secrets.
        for (key, value) in &grant.env {
            if req.env.contains(key) {
                p.granted.push(format!("env {key}"));
                p.env.push((key.clone(), value.clone()));
            } else {
                p.problems.push(format!(
                    "grant of env {key} is not requested by the manifest"
                ));
            }
        }
        for key in &req.env {
            if !grant.env.contains_key(key) {
                p.denied.push(format!("env {key}"));
            }
        }
        for (key, source) in &grant.secrets {
            if !req.secrets.contains(key) {
                p.problems.push(format!(
                    "grant of secret {key} is not requested by the manifest"
                ));
                continue;
            }
            match read_secret(source) {
                Ok(value) => {
                    p.granted.push(format!("secret {key} (from {source})"));
                    p.env.push((key.clone(), value));
                }
                Err(e) => p.problems.push(format!("secret {key}: {}", Chain(&e))),
            }
        }
        for key in &req.secrets {
            if !grant.secrets.contains_key(key) {
                p.denied.push(format!("secret {key}"));
            }
        }
        // Limits: the grant overrides the manifest, which overrides the defaults.
        if let Err(e) = check_limits(&grant.limits(), &format!("[tools.{}]", manifest.name)) {
            p.problems.push(e);
        }
        let (m, g) = (manifest.limits, grant.limits());
        p.memory_mb = g.memory_mb.or(m.memory_mb).unwrap_or(DEFAULT_MEMORY_MB);
        p.max_concurrency = g
            .max_concurrency
            .or(m.max_concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY);
        if let Some(ms) = g.timeout_ms.or(m.timeout_ms) {
            p.timeout = Duration::from_millis(ms);
        }
        p
    }
}

/// One thing a manifest requests, for comparing two versions of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Dir {
        path: String,
        write: bool,
    },
    /// An origin in its normal form (`https://api.example.com:443`), or as written when it
    /// does not parse.
    Http(String),
    /// `"*"`: whichever origins the operator grants.
    AnyHttp,
    Env(String),
    Secret(String),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Dir { path, write } => {
                write!(f, "dir {path} ({})", if *write { "rw" } else { "ro" })
            }
            Request::Http(origin) => write!(f, "http {origin}"),
            Request::AnyHttp => f.write_str("http * (any origin the operator grants)"),
            Request::Env(key) => write!(f, "env {key}"),
            Request::Secret(key) => write!(f, "secret {key}"),
        }
    }
}

/// An origin request in its normal form, for comparison.
fn normal_origin(text: &str) -> String {
    Origin::parse(text).map_or_else(|_| text.to_string(), |o| o.to_string())
}

/// What `new` requests beyond `old`: a directory not requested before or now read-write, an
/// origin not requested before (`"*"` before covers any), `"*"` when it was not requested,
/// an environment variable or a secret not requested before.
pub fn requested_beyond(old: &Requests, new: &Requests) -> Vec<Request> {
    let mut beyond = Vec::new();
    for d in &new.dirs {
        if !old
            .dirs
            .iter()
            .any(|o| o.path == d.path && (o.write || !d.write))
        {
            beyond.push(Request::Dir {
                path: d.path.clone(),
                write: d.write,
            });
        }
    }
    let old_any = old.http.iter().any(|u| u == "*");
    let old_origins: Vec<String> = old.http.iter().map(|u| normal_origin(u)).collect();
    for u in &new.http {
        if u == "*" {
            if !old_any {
                beyond.push(Request::AnyHttp);
            }
        } else if !old_any && !old_origins.contains(&normal_origin(u)) {
            beyond.push(Request::Http(normal_origin(u)));
        }
    }
    for key in &new.env {
        if !old.env.contains(key) {
            beyond.push(Request::Env(key.clone()));
        }
    }
    for key in &new.secrets {
        if !old.secrets.contains(key) {
            beyond.push(Request::Secret(key.clone()));
        }
    }
    beyond.dedup();
    beyond
}

impl Policy {
    /// What this policy gives `request`, in words (`granted by [tools.x] (rw)`, `not granted`).
    pub fn gives(&self, request: &Request, name: &str) -> String {
        let by = format!("granted by [tools.{name}]");
        let granted = match request {
            Request::Dir { path, .. } => self.dirs.iter().find(|g| &g.guest == path).map(|g| {
                format!(
                    "{by} from {} ({})",
                    g.host.display(),
                    if g.write { "rw" } else { "read-only" }
                )
            }),
            Request::Http(origin) => self
                .http
                .iter()
                .find(|g| &g.to_string() == origin)
                .map(|g| {
                    if g.private {
                        format!("{by}, private addresses allowed")
                    } else {
                        by.clone()
                    }
                }),
            Request::AnyHttp => (!self.http.is_empty())
                .then(|| format!("{by}: {}", list(self.http.iter().map(ToString::to_string)))),
            Request::Env(key) | Request::Secret(key) => {
                self.env.iter().any(|(k, _)| k == key).then(|| by.clone())
            }
        };
        granted.unwrap_or_else(|| "not granted".into())
    }
}

fn list(items: impl Iterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = items.map(|s| s.as_ref().to_string()).collect();
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

/// Reads a secret from `env:VAR` (the service's environment) or `file:/path`.
fn read_secret(source: &str) -> Result<String, SecretError> {
    if let Some(var) = source.strip_prefix("env:") {
        return std::env::var(var).map_err(|e| match e {
            std::env::VarError::NotPresent => SecretError::EnvNotSet { var: var.into() },
            std::env::VarError::NotUnicode(_) => SecretError::EnvNotUnicode { var: var.into() },
        });
    }
    if let Some(path) = source.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| SecretError::Read {
                path: path.into(),
                source: e,
            });
    }
    Err(SecretError::UnknownSource {
        given: source.into(),
    })
}

/// A publicly routable address; loopback, private, link-local, shared (CGNAT), unspecified,
/// multicast and documentation ranges are not.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // Forms that carry an IPv4 address: IPv4-compatible (::a.b.c.d) and 6to4 (2002::/16).
            if s[..6].iter().all(|&x| x == 0) && !v6.is_loopback() && !v6.is_unspecified() {
                let o = v6.octets();
                return is_public(IpAddr::V4([o[12], o[13], o[14], o[15]].into()));
            }
            if s[0] == 0x2002 {
                let o = v6.octets();
                return is_public(IpAddr::V4([o[2], o[3], o[4], o[5]].into()));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_ipc::tool::{DirGrant, HttpGrant};

    fn manifest() -> ToolManifest {
        ToolManifest::parse(
            r#"
name = "t"
version = "1"
[requests]
dirs = [{ path = "/data", write = false }]
http = ["https://api.example.com"]
env = ["LANG", "TZ"]
secrets = ["TOKEN"]
[limits]
max_concurrency = 2
"#,
        )
        .unwrap()
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let p = Policy::resolve(&manifest(), None, Duration::from_secs(10));
        assert!(p.dirs.is_empty() && p.http.is_empty() && p.env.is_empty());
        assert!(p.problems.is_empty());
        assert_eq!(p.denied.len(), 5, "{:?}", p.denied);
        assert_eq!(p.max_concurrency, 2);
        assert_eq!(p.memory_mb, DEFAULT_MEMORY_MB);
    }

    #[test]
    fn grants_intersect_requests() {
        let dir = std::env::temp_dir();
        let grant = ToolGrant {
            dirs: vec![DirGrant {
                path: "/data".into(),
                host: dir.clone(),
                write: false,
            }],
            http: vec![HttpGrant::Url("https://API.example.com:443".into())],
            env: [("LANG".to_string(), "C".to_string())].into(),
            max_concurrency: Some(4),
            ..ToolGrant::default()
        };
        let p = Policy::resolve(&manifest(), Some(&grant), Duration::from_secs(10));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.dirs[0].host, dir);
        assert_eq!(p.http[0].to_string(), "https://api.example.com:443");
        assert_eq!(p.env, vec![("LANG".into(), "C".into())]);
        assert_eq!(p.denied, vec!["env TZ", "secret TOKEN"]);
        assert_eq!(p.max_concurrency, 4);
    }

    #[test]
    fn mismatched_grants_are_problems() {
        let grant = ToolGrant {
            dirs: vec![
                DirGrant {
                    path: "/data".into(),
                    host: std::env::temp_dir(),
                    write: true,
                },
                DirGrant {
                    path: "/etc".into(),
                    host: "/etc".into(),
                    write: false,
                },
            ],
            http: vec![HttpGrant::Url("https://evil.example".into())],
            env: [("HOME".to_string(), "/root".to_string())].into(),
            secrets: [(
                "TOKEN".to_string(),
                "env:CAXTON_TEST_NO_SUCH_VAR".to_string(),
            )]
            .into(),
            memory_mb: Some(0),
            ..ToolGrant::default()
        };
        let p = Policy::resolve(&manifest(), Some(&grant), Duration::from_secs(10));
        let all = p.problems.join("\n");
        for want in [
            "read-write but the manifest requests it read-only",
            "grant of dir /etc is not requested",
            "grant of http https://evil.example:443 is not requested",
            "grant of env HOME is not requested",
            "CAXTON_TEST_NO_SUCH_VAR of the service is not set",
            "memory_mb must be",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
    }

    fn requests(toml: &str) -> Requests {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn requests_beyond_an_installed_version_are_named() {
        let old = requests(
            r#"
dirs = [{ path = "/data", write = false }]
http = ["https://api.example.com"]
env = ["LANG"]
"#,
        );
        // The same requests, written differently: nothing new.
        let same = requests(
            r#"
dirs = [{ path = "/data" }]
http = ["https://API.example.com:443"]
env = ["LANG"]
"#,
        );
        assert_eq!(requested_beyond(&old, &same), vec![]);
        // Less is not more.
        assert_eq!(requested_beyond(&old, &Requests::default()), vec![]);
        let more = requests(
            r#"
dirs = [{ path = "/data", write = true }, { path = "/cache" }]
http = ["https://api.example.com", "http://localhost:8080", "*"]
env = ["LANG", "TZ"]
secrets = ["TOKEN"]
"#,
        );
        let beyond: Vec<String> = requested_beyond(&old, &more)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            beyond,
            [
                "dir /data (rw)",
                "dir /cache (ro)",
                "http http://localhost:8080",
                "http * (any origin the operator grants)",
                "env TZ",
                "secret TOKEN",
            ]
        );
        // `"*"` before covers any origin after.
        let any = requests(r#"http = ["*"]"#);
        assert_eq!(requested_beyond(&any, &more).len(), 5);
    }

    #[test]
    fn what_a_grant_gives_a_request_is_said() {
        let grant = ToolGrant {
            http: vec![HttpGrant::Detailed {
                url: "https://api.example.com".into(),
                private: true,
            }],
            env: [("LANG".to_string(), "C".to_string())].into(),
            ..ToolGrant::default()
        };
        let p = Policy::resolve(&manifest(), Some(&grant), Duration::from_secs(10));
        let gives = |r: Request| p.gives(&r, "t");
        assert_eq!(
            gives(Request::Http("https://api.example.com:443".into())),
            "granted by [tools.t], private addresses allowed"
        );
        assert_eq!(gives(Request::Env("LANG".into())), "granted by [tools.t]");
        assert_eq!(gives(Request::Secret("TOKEN".into())), "not granted");
        assert_eq!(
            gives(Request::Dir {
                path: "/data".into(),
                write: false
            }),
            "not granted"
        );
        assert_eq!(
            gives(Request::AnyHttp),
            "granted by [tools.t]: https://api.example.com:443"
        );
    }

    #[test]
    fn origins_and_addresses() {
        assert!(Origin::parse("https://a.example/path").is_err());
        assert!(Origin::parse("ftp://a.example").is_err());
        assert_eq!(
            Origin::parse("http://[::1]:8080").unwrap().to_string(),
            "http://::1:8080"
        );
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "2001:0:1::1",
            "fec0::1",
            "198.18.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
