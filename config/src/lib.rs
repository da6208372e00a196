//! The server configuration (`caxton.toml`): its schema, defaults and checks. The supervisor
//! reads and validates the file; its children get the validated config from it.
//!
//! Every section has defaults, so `caxton serve` runs with no file at all. Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default cap on concurrently running workers.
pub const DEFAULT_MAX_WORKERS: u32 = 16;
/// Default number of runs that may wait for a worker slot before new ones get "busy".
pub const DEFAULT_QUEUE_CAPACITY: u32 = 64;
/// Default `[workers] max_delegated`: delegated runs in progress at once.
pub const DEFAULT_MAX_DELEGATED: u32 = 32;
/// Default wall-clock limit of one run when neither the agent nor the request sets one.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time SIGTERM gives in-flight runs before their workers are killed.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default per tool call deadline.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of pre-spawned workers.
pub const DEFAULT_WARM_WORKERS: u32 = 2;
/// Default bytes of a child's stderr kept for error messages.
pub const DEFAULT_STDERR_TAIL: usize = 4096;
/// Default time an idle connection to the toolhost or the memory service is kept.
pub const DEFAULT_SERVICE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default address-space limit of a worker process, in MiB.
pub const DEFAULT_WORKER_MEMORY_MB: u32 = 1024;
/// Default CPU-time limit of a worker process.
pub const DEFAULT_WORKER_CPU_TIME: Duration = Duration::from_secs(300);
/// Default open-file limit of a worker process.
pub const DEFAULT_WORKER_OPEN_FILES: u32 = 256;
/// Smallest worker limits accepted: below these a worker cannot start.
pub const MIN_WORKER_MEMORY_MB: u32 = 64;
pub const MIN_WORKER_OPEN_FILES: u32 = 16;
/// Default cap on connections to `api.sock`, all clients together.
pub const DEFAULT_API_CONNECTIONS: usize = 512;
/// Default cap on connections to `api.sock` from one uid.
pub const DEFAULT_API_CONNECTIONS_PER_UID: usize = 256;
/// Default time an `api.sock` connection may wait between requests.
pub const DEFAULT_API_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time a request on `api.sock` has to arrive whole once its first byte has.
pub const DEFAULT_API_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// `caxton.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the sockets live. Default: `$CAXTON_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/caxton`,
    /// else `/tmp/caxton-$UID`.
    pub runtime_dir: Option<PathBuf>,
    /// Directory of agent TOML files. Default: `./agents`.
    pub agents_dir: Option<PathBuf>,
    /// Persistent state (the tool-call audit log). Default: `$CAXTON_STATE_DIR`, else
    /// `$XDG_STATE_HOME/caxton`, else `$HOME/.local/state/caxton`, else `/var/lib/caxton`.
    pub state_dir: Option<PathBuf>,
    /// Read-only data such as model files. Default: `$CAXTON_DATA_DIR`, else
    /// `$XDG_DATA_HOME/caxton`, else `$HOME/.local/share/caxton`, else `/var/lib/caxton`.
    pub data_dir: Option<PathBuf>,
    pub api: ApiConfig,
    pub workers: WorkersConfig,
    pub toolhost: ToolhostConfig,
    /// LLM providers by name. A `scripted` provider with the built-in rules and a `local` one
    /// with the embedded model always exist unless configured here under those names.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// What the operator grants each tool package (`[tools.<name>]`); everything a tool's
    /// manifest requests is denied unless granted here.
    pub tools: BTreeMap<String, caxton_ipc::tool::ToolGrant>,
    pub memory: MemoryConfig,
    pub health: HealthConfig,
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
    pub a2a: A2aConfig,
    pub mcp: McpConfig,
}

/// `[mcp]`: which agents the HTTP listener serves as MCP tools at `/mcp` (`caxton mcp` on
/// stdio offers every agent its user may run). None unless listed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Agents offered as tools at `/mcp`; `["*"]` for every loaded agent.
    pub expose: Vec<String>,
    /// A token (by name) that requests without one act as, for desktop MCP clients that cannot
    /// send a bearer token. Only on a loopback listener; then any process on this machine has
    /// that token's rights at `/mcp` (requests whose `Host` or `Origin` is not this machine are
    /// refused, so web pages cannot use it).
    pub anonymous: Option<String>,
    /// Host names besides localhost, 127.0.0.1 and [::1] that `/mcp` accepts in `Host` and
    /// `Origin` (the name clients reach a proxy by).
    pub allowed_hosts: Vec<String>,
}

impl McpConfig {
    pub fn exposes(&self, agent: &str) -> bool {
        self.expose.iter().any(|a| a == "*" || a == agent)
    }
}

/// `[a2a]`: which agents the HTTP listener serves over A2A 1.0 (each at `/a2a/{name}`, its
/// Agent Card at `/a2a/{name}/.well-known/agent-card.json`). None unless listed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct A2aConfig {
    /// Agents served over A2A; `["*"]` for every loaded agent. Their cards are public (they
    /// name the agent, its description and skills); running them needs a token.
    pub expose: Vec<String>,
    /// The address clients reach the listener at (`https://agents.example.com`), for the
    /// cards' interface URLs behind a proxy; default: `http://` and the request's `Host`.
    pub public_url: Option<String>,
    /// Origins of A2A agents elsewhere that agents may delegate to (`[[delegation.remote]]`):
    /// nothing else is reached.
    pub remotes: Vec<RemoteGrant>,
}

/// One `[[a2a.remotes]]`: an origin the toolhost may send A2A requests to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteGrant {
    /// `scheme://host[:port]`; the card and the interface it names must both be at it.
    pub origin: String,
    /// It may resolve to a loopback or private address (refused otherwise, after DNS).
    #[serde(default)]
    pub private: bool,
    /// The environment variable of the toolhost holding the bearer token it is sent, if any.
    #[serde(default)]
    pub token_env: Option<String>,
}

impl A2aConfig {
    pub fn exposes(&self, agent: &str) -> bool {
        self.expose.iter().any(|a| a == "*" || a == agent)
    }
}

/// `[telemetry]`: OpenTelemetry traces, exported over OTLP/HTTP (protobuf) by the supervisor,
/// the toolhost and the memory service (workers relay theirs through the supervisor). Off
/// unless `otlp_endpoint` is set. Headers for the collector (an API key) come from the
/// standard environment variable `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,key2=value2`), never
/// from this file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP address, `http://HOST:PORT` (spans go to its `/v1/traces`)
    /// or a full URL ending in the path to post to. Plain HTTP: keep the collector on the
    /// machine or its private network.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of every span.
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0. A caller's sampled `traceparent` is always
    /// followed; its unsampled one never.
    pub sampling_ratio: f64,
    /// Put prompts, answers, tool arguments and tool results on the spans
    /// (`gen_ai.input.messages`, `gen_ai.output.messages`, `gen_ai.tool.call.arguments`,
    /// `gen_ai.tool.call.result`). Off: spans carry names, sizes, tokens and outcomes only.
    pub capture_content: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "caxton".into(),
            sampling_ratio: 1.0,
            capture_content: false,
        }
    }
}

impl TelemetryConfig {
    /// The URL spans are posted to, `None` when tracing is off.
    pub fn traces_url(&self) -> Result<Option<String>, String> {
        let Some(text) = self.otlp_endpoint.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let bad = |why: &str| {
            format!(
                "[telemetry] otlp_endpoint = \"{text}\" {why}; write it as \"http://127.0.0.1:4318\""
            )
        };
        let mut url = url::Url::parse(text).map_err(|e| bad(&format!("is not a URL ({e})")))?;
        if url.scheme() != "http" {
            return Err(bad(
                "is not plain http (export to a collector on this machine or its private network, which forwards over TLS)",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        if url.path() == "/" || url.path().is_empty() {
            url.set_path("/v1/traces");
        }
        Ok(Some(url.to_string()))
    }
}

/// Default `[http] max_connections`.
pub const DEFAULT_HTTP_CONNECTIONS: usize = 64;
/// Most `[http] max_connections` accepted.
pub const MAX_HTTP_CONNECTIONS: usize = 4096;

/// Default `[http] max_body_bytes`: a run's largest input, JSON-escaped, with room to spare.
pub const DEFAULT_HTTP_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Default `[http] run_retention`.
pub const DEFAULT_RUN_RETENTION: Duration = Duration::from_secs(3600);
/// Default `[http] max_retained_runs`.
pub const DEFAULT_RETAINED_RUNS: usize = 1000;
/// Default `max_concurrent_runs` of a token.
pub const DEFAULT_TOKEN_RUNS: usize = 8;

/// `[http]`: the optional HTTP listener. Off unless `listen` is set. `/metrics`, `/healthz`
/// and `/readyz` are open to whoever reaches it; the API under `/v1` needs a bearer token from
/// `tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `HOST:PORT` to listen on, or a bare port for loopback (`"9464"` = `127.0.0.1:9464`).
    /// There is no TLS: keep it on loopback, or put a TLS-terminating reverse proxy in front.
    pub listen: Option<String>,
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Largest request body of the API.
    pub max_body_bytes: usize,
    /// Time a request body has to arrive whole (408 after it).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a finished run started over HTTP stays readable (`GET /v1/runs/{id}`).
    #[serde(with = "humantime_serde")]
    pub run_retention: Duration,
    /// Most finished runs kept for reading; the oldest go first.
    pub max_retained_runs: usize,
    /// The API's bearer tokens (`[[http.tokens]]`); with none, the API answers 401 to all.
    pub tokens: Vec<TokenConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            max_connections: DEFAULT_HTTP_CONNECTIONS,
            max_body_bytes: DEFAULT_HTTP_BODY_BYTES,
            body_timeout: Duration::from_secs(30),
            run_retention: DEFAULT_RUN_RETENTION,
            max_retained_runs: DEFAULT_RETAINED_RUNS,
            tokens: Vec::new(),
        }
    }
}

/// One `[[http.tokens]]`: a bearer token of the HTTP API, stored as the SHA-256 of its text
/// (`caxton token new NAME` makes one and prints this table). What it may do is the union of
/// its rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it: in logs, audit and metrics instead of the token, and the owner of the runs
    /// and conversations it starts.
    pub name: String,
    /// Lowercase hex SHA-256 of the token's text.
    pub sha256: String,
    /// Agents it may run (and read); `["*"]` for all, which capability routing needs.
    #[serde(default)]
    pub agents: Vec<String>,
    /// May read the service: status, the agents list and every agent's definition.
    #[serde(default)]
    pub read: bool,
    /// May search and read memory.
    #[serde(default)]
    pub memory: bool,
    /// May do everything, and see and cancel every token's runs and conversations.
    #[serde(default)]
    pub admin: bool,
    /// Runs it may have going at once (streams and waits included); more are refused (429).
    #[serde(default = "default_token_runs")]
    pub max_concurrent_runs: usize,
}

fn default_token_runs() -> usize {
    DEFAULT_TOKEN_RUNS
}

impl TokenConfig {
    /// May this token run (and read) `agent`?
    pub fn may_run(&self, agent: &str) -> bool {
        self.admin || self.agents.iter().any(|a| a == "*" || a == agent)
    }

    /// May it run any agent (capability routing picks the agent)?
    pub fn may_run_any(&self) -> bool {
        self.admin || self.agents.iter().any(|a| a == "*")
    }

    /// Its name, hash and limit are well-formed.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "[[http.tokens]] name = \"{name}\": a name is 1 to 64 letters, digits, '-', '_' or '.'"
            ));
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Err(format!(
                "[[http.tokens]] `{name}`: sha256 must be 64 lowercase hex digits, the SHA-256 of the token (`caxton token new {name}` makes a token and prints its table)"
            ));
        }
        if !(1..=MAX_HTTP_CONNECTIONS).contains(&self.max_concurrent_runs) {
            return Err(format!(
                "[[http.tokens]] `{name}`: max_concurrent_runs must be between 1 and {MAX_HTTP_CONNECTIONS}"
            ));
        }
        Ok(())
    }
}

impl HttpConfig {
    /// The address to listen on, `None` when the listener is off.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let Some(text) = self.listen.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if let Ok(port) = text.parse::<u16>() {
            return Ok(Some((std::net::Ipv4Addr::LOCALHOST, port).into()));
        }
        text.parse().map(Some).map_err(|_| {
            format!(
                "[http] listen = \"{text}\" is not HOST:PORT with a numeric host (\"127.0.0.1:9464\", \"[::1]:9464\") or a bare port"
            )
        })
    }
}

/// Default interval of the supervisor's pings to the toolhost and the memory service.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(2);
/// Default time a service has to answer a ping.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time a service may stay unresponsive before it is killed and restarted.
pub const DEFAULT_RESTART_UNRESPONSIVE_AFTER: Duration = Duration::from_secs(15);

/// `[health]`: how the supervisor checks that its service processes answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often each service is pinged.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A ping not answered within this makes the service `unresponsive` (status, health).
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// A service unresponsive for this long is killed and restarted.
    #[serde(with = "humantime_serde")]
    pub restart_unresponsive_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            restart_unresponsive_after: DEFAULT_RESTART_UNRESPONSIVE_AFTER,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// File mode of `api.sock`, as an octal string.
    pub socket_mode: String,
    /// Group owning `api.sock` (name or numeric gid); default: the server's group.
    pub socket_group: Option<String>,
    /// Uids allowed to connect besides the server's own uid and root.
    pub allowed_uids: Vec<u32>,
    /// Gids whose members may connect (checked against the peer's primary gid).
    pub allowed_gids: Vec<u32>,
    /// Connections open at once, all clients together. At the cap, the connection that has
    /// waited longest (idle, or sending a request slowly) of the heaviest uid is closed to make
    /// room; when every connection is busy, the newcomer gets a `busy` answer.
    pub max_connections: usize,
    /// Connections open at once from one uid; at the cap, that uid's longest-waiting
    /// connection is closed to make room, or the newcomer gets `busy`.
    pub max_connections_per_uid: usize,
    /// Time a connection may wait between requests before it is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time a request has to arrive whole once its first byte has; a slower one is answered
    /// `bad_request` and the connection closed.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket_mode: "0660".into(),
            socket_group: None,
            allowed_uids: vec![],
            allowed_gids: vec![],
            max_connections: DEFAULT_API_CONNECTIONS,
            max_connections_per_uid: DEFAULT_API_CONNECTIONS_PER_UID,
            idle_timeout: DEFAULT_API_IDLE_TIMEOUT,
            request_timeout: DEFAULT_API_REQUEST_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    pub max_concurrent: u32,
    pub queue_capacity: u32,
    /// Delegated (child) runs in progress at once, across all trees. A delegation past it is
    /// refused at once (a `delegation` tool error for its parent), never queued: a parent
    /// waiting for a child that waits for a slot could deadlock.
    pub max_delegated: u32,
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Path of `caxton-worker`; default: next to the `caxton` binary.
    pub binary: Option<PathBuf>,
    pub stderr_tail_bytes: usize,
    /// Workers pre-spawned ahead of demand (each still serves one run); 0 disables.
    pub warm: u32,
    /// Address space of a worker process (RLIMIT_AS), in MiB; an agent's `[limits] memory_mb`
    /// may lower it.
    pub memory_mb: u32,
    /// CPU time of a worker process (RLIMIT_CPU); an agent's `[limits] cpu_time` may lower it.
    #[serde(with = "humantime_serde")]
    pub cpu_time: Duration,
    /// Open file descriptors of a worker process (RLIMIT_NOFILE); an agent's
    /// `[limits] open_files` may lower it.
    pub open_files: u32,
    /// Time a connection to the toolhost or the memory service may wait between requests
    /// before the service closes it (a worker reconnects on its next request).
    #[serde(with = "humantime_serde")]
    pub service_idle_timeout: Duration,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            max_concurrent: DEFAULT_MAX_WORKERS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_delegated: DEFAULT_MAX_DELEGATED,
            default_timeout: DEFAULT_RUN_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            binary: None,
            stderr_tail_bytes: DEFAULT_STDERR_TAIL,
            warm: DEFAULT_WARM_WORKERS,
            memory_mb: DEFAULT_WORKER_MEMORY_MB,
            cpu_time: DEFAULT_WORKER_CPU_TIME,
            open_files: DEFAULT_WORKER_OPEN_FILES,
            service_idle_timeout: DEFAULT_SERVICE_IDLE_TIMEOUT,
        }
    }
}

pub use caxton_ipc::audit::{DEFAULT_AUDIT_KEEP, DEFAULT_AUDIT_MAX_BYTES};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolhostConfig {
    /// Path of `caxton-toolhost`; default: next to the `caxton` binary.
    pub binary: Option<PathBuf>,
    /// Default deadline of one tool call (an agent's `[limits] tool_timeout` may lower it).
    #[serde(with = "humantime_serde")]
    pub tool_timeout: Duration,
    /// Directory of installed tool packages (`<name>/tool.toml` + module), loaded besides the
    /// built-in ones; `caxton tool install` writes here. Default: `STATE_DIR/tools`.
    pub tools_dir: Option<PathBuf>,
    /// Size in bytes at which the audit log (`STATE_DIR/audit/tool-calls.log`) is rotated to
    /// `tool-calls.log.1` (the older ones shifting to `.2`, `.3`, …) before the append that
    /// would pass it; the hash chain runs on into the new file. At least 1; a record is never
    /// split, so a file holds at least one.
    pub audit_max_bytes: u64,
    /// Rotated audit files kept; at a rotation, older ones are deleted, each with a log line.
    /// 0 keeps them all (the log then grows without bound, in files of `audit_max_bytes`).
    pub audit_keep: u32,
}

impl Default for ToolhostConfig {
    fn default() -> Self {
        ToolhostConfig {
            binary: None,
            tool_timeout: DEFAULT_TOOL_TIMEOUT,
            tools_dir: None,
            audit_max_bytes: DEFAULT_AUDIT_MAX_BYTES,
            audit_keep: DEFAULT_AUDIT_KEEP,
        }
    }
}

impl ToolhostConfig {
    /// How the audit log is rotated.
    pub fn audit_rotation(&self) -> caxton_ipc::audit::Rotation {
        caxton_ipc::audit::Rotation {
            max_bytes: self.audit_max_bytes,
            keep: self.audit_keep,
        }
    }
}

/// Directory (in `DATA_DIR/models`) of the embedding model that `scripts/setup.sh` installs.
pub const EMBEDDING_MODEL_DIR: &str = "all-MiniLM-L6-v2";

/// `[memory]`: the memory service (`caxton-memory`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Start the memory service. Agents with `[memory] enabled = true` fail without it.
    pub enabled: bool,
    /// Path of `caxton-memory`; default: next to the `caxton` binary.
    pub binary: Option<PathBuf>,
    /// The SQLite database. Default: `STATE_DIR/memory/memory.db`.
    pub database: Option<PathBuf>,
    /// Directory holding `model.safetensors` and `tokenizer.json` of All-MiniLM-L6-v2.
    /// Default: `DATA_DIR/models/all-MiniLM-L6-v2`.
    pub model_dir: Option<PathBuf>,
    /// Connections in the SQLite pool.
    pub pool_size: u32,
    /// Longest observation (bytes of UTF-8); longer ones are refused, not cut.
    pub max_observation_bytes: usize,
    /// Deadline of one request inside the service.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Cap on the encoded size of one response (search results, graph pages, exports excepted).
    pub max_result_bytes: usize,
    /// Query embeddings kept in the LRU cache.
    pub query_cache: usize,
    /// Threads for embedding; default: the CPUs available.
    pub threads: Option<usize>,
    /// Retention per scope: the key is a scope (`global`, `agent:calc`), or `agent:*` /
    /// `workspace:*` for every scope of that kind. `caxton memory prune` applies it, and the
    /// service applies it hourly.
    pub retention: BTreeMap<String, RetentionRule>,
    /// A conversation idle this long expires: it can be read, not continued.
    #[serde(with = "humantime_serde")]
    pub conversation_ttl: Duration,
    /// An expired or completed conversation idle this long is deleted (hourly).
    #[serde(with = "humantime_serde")]
    pub conversation_retention: Duration,
    /// History given to a run that continues a conversation, in estimated tokens (characters
    /// / 3); the oldest turns are dropped first.
    pub history_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Entities not updated for this long are removed.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// At most this many entities (the most recently updated are kept).
    pub max_entities: Option<u64>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            enabled: true,
            binary: None,
            database: None,
            model_dir: None,
            pool_size: 8,
            max_observation_bytes: 4096,
            request_timeout: Duration::from_secs(30),
            max_result_bytes: 256 * 1024,
            query_cache: 1024,
            threads: None,
            retention: BTreeMap::new(),
            conversation_ttl: Duration::from_secs(7 * 24 * 3600),
            conversation_retention: Duration::from_secs(30 * 24 * 3600),
            history_tokens: 2000,
        }
    }
}

impl MemoryConfig {
    /// The retention rule for `scope`: an exact key wins over `kind:*`.
    pub fn retention_for(&self, scope: &str) -> Option<&RetentionRule> {
        self.retention.get(scope).or_else(|| {
            let kind = scope.split(':').next().unwrap_or(scope);
            self.retention.get(&format!("{kind}:*"))
        })
    }
}

/// Default per-attempt deadline of an HTTP provider.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(120);
/// Default connect deadline of an HTTP provider.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default retries after the first attempt (on 429, 5xx and connection errors).
pub const DEFAULT_RETRIES: u32 = 2;
/// Default first backoff; doubled per retry, with jitter, capped by `max_backoff`.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// File name of the embedded model that `scripts/setup.sh` installs into `DATA_DIR/models`.
pub const LOCAL_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// One LLM provider (`[providers.<name>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    /// Deterministic replies from a rule file, for tests, demos and reproducible agent checks.
    Scripted(ScriptedProviderConfig),
    /// OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp, LM Studio, OpenRouter…).
    Openai(HttpProviderConfig),
    /// Anthropic Messages API.
    Anthropic(HttpProviderConfig),
    /// A quantized GGUF model run in the toolhost with candle.
    Local(LocalProviderConfig),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedProviderConfig {
    /// Rule file; default: the built-in rules.
    pub rules: Option<PathBuf>,
}

/// A provider reached over HTTP. The key comes from `api_key` (this file) or the toolhost's
/// environment variable `api_key_env`; agents never name keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProviderConfig {
    /// API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    /// Default: the vendor's public API.
    pub base_url: Option<String>,
    /// Model used when an agent names none.
    pub model: String,
    /// The key itself. Prefer `api_key_env`; a config holding a key should be mode 0600.
    pub api_key: Option<String>,
    /// Name of the toolhost's environment variable holding the key.
    pub api_key_env: Option<String>,
    /// Extra request headers (e.g. OpenRouter's `HTTP-Referer`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Deadline of one attempt (connect to last byte).
    #[serde(default = "default_provider_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries after the first attempt, on 429, 5xx and connection errors only.
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Price in USD per million prompt tokens (cost accounting and `max_cost_usd`).
    #[serde(default)]
    pub prompt_usd_per_mtok: f64,
    /// Price in USD per million completion tokens.
    #[serde(default)]
    pub completion_usd_per_mtok: f64,
}

/// The embedded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalProviderConfig {
    /// The GGUF file. Default: `DATA_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
    pub model_path: Option<PathBuf>,
    /// Name reported as the model. Default: the file's stem.
    pub model: Option<String>,
    /// Compute threads; default: the available cores.
    pub threads: Option<usize>,
    /// Context window in tokens (prompt plus completion).
    #[serde(default = "default_context_tokens")]
    pub context_tokens: usize,
    /// Re-quantize Q4/Q5 weights to Q8_0 once at load (cached in `STATE_DIR/cache/models`):
    /// candle's Q8_0 kernels are ~3× faster than its Q4_1 ones.
    #[serde(default = "default_true")]
    pub requantize_q8: bool,
}

impl Default for LocalProviderConfig {
    fn default() -> Self {
        LocalProviderConfig {
            model_path: None,
            model: None,
            threads: None,
            context_tokens: default_context_tokens(),
            requantize_q8: true,
        }
    }
}

fn default_provider_timeout() -> Duration {
    DEFAULT_PROVIDER_TIMEOUT
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_retries() -> u32 {
    DEFAULT_RETRIES
}
fn default_backoff() -> Duration {
    DEFAULT_BACKOFF
}
fn default_max_backoff() -> Duration {
    DEFAULT_MAX_BACKOFF
}
fn default_context_tokens() -> usize {
    2048
}
fn default_true() -> bool {
    true
}

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Scripted(_) => "scripted",
            ProviderConfig::Openai(_) => "openai",
            ProviderConfig::Anthropic(_) => "anthropic",
            ProviderConfig::Local(_) => "local",
        }
    }
}

impl ServerConfig {
    /// The checks beyond the schema: what a config must hold for the service to start.
    fn check(&self) -> Result<(), String> {
        if self.workers.memory_mb < MIN_WORKER_MEMORY_MB
            || self.workers.open_files < MIN_WORKER_OPEN_FILES
            || self.workers.cpu_time < Duration::from_secs(1)
        {
            return Err(format!(
                "[workers] memory_mb must be at least {MIN_WORKER_MEMORY_MB}, open_files at least {MIN_WORKER_OPEN_FILES} and cpu_time at least 1s"
            ));
        }
        if self.api.max_connections == 0 || self.api.max_connections_per_uid == 0 {
            return Err(
                "[api] max_connections and max_connections_per_uid must be at least 1".into(),
            );
        }
        if self.toolhost.audit_max_bytes == 0 {
            return Err("[toolhost] audit_max_bytes must be at least 1".into());
        }
        self.http.listen_addr()?;
        self.telemetry.traces_url()?;
        if !(0.0..=1.0).contains(&self.telemetry.sampling_ratio) {
            return Err("[telemetry] sampling_ratio must be between 0.0 and 1.0".into());
        }
        if self.telemetry.service_name.trim().is_empty() {
            return Err("[telemetry] service_name must not be empty".into());
        }
        if !(1..=MAX_HTTP_CONNECTIONS).contains(&self.http.max_connections) {
            return Err(format!(
                "[http] max_connections must be between 1 and {MAX_HTTP_CONNECTIONS}"
            ));
        }
        if self.http.body_timeout < Duration::from_millis(100) {
            return Err("[http] body_timeout must be at least 100ms".into());
        }
        if self.http.max_body_bytes < 1024 {
            return Err("[http] max_body_bytes must be at least 1024".into());
        }
        if self.http.max_retained_runs == 0 {
            return Err("[http] max_retained_runs must be at least 1".into());
        }
        if let Some(url) = &self.a2a.public_url {
            let parsed = url::Url::parse(url).map_err(|e| {
                format!("[a2a] public_url = \"{url}\" is not a URL ({e}); write it as \"https://agents.example.com\"")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
                return Err(format!(
                    "[a2a] public_url = \"{url}\" must be an http(s) URL without a query"
                ));
            }
        }
        for r in &self.a2a.remotes {
            let parsed = url::Url::parse(&r.origin).map_err(|e| {
                format!("[[a2a.remotes]] origin = \"{}\" is not a URL ({e}); write it as \"https://agents.example.com\"", r.origin)
            })?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.path() != "/"
                || parsed.query().is_some()
            {
                return Err(format!(
                    "[[a2a.remotes]] origin = \"{}\" must be scheme://host[:port], http or https, without a path",
                    r.origin
                ));
            }
        }
        if let Some(anonymous) = &self.mcp.anonymous {
            if !self.http.tokens.iter().any(|t| &t.name == anonymous) {
                return Err(format!(
                    "[mcp] anonymous = \"{anonymous}\" names no [[http.tokens]] token"
                ));
            }
            if self
                .http
                .listen_addr()?
                .is_some_and(|a| !a.ip().is_loopback())
            {
                return Err(
                    "[mcp] anonymous works only when [http] listen is a loopback address".into(),
                );
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let mut hashes = std::collections::BTreeSet::new();
        for token in &self.http.tokens {
            token.check()?;
            if !names.insert(&token.name) {
                return Err(format!(
                    "[[http.tokens]] name `{}` is given twice",
                    token.name
                ));
            }
            if !hashes.insert(&token.sha256) {
                return Err(format!(
                    "[[http.tokens]] `{}` has the same sha256 as another token: make each its own",
                    token.name
                ));
            }
        }
        Ok(())
    }

    /// The validated config as JSON, for the supervisor's children (its paths are absolute or
    /// resolved from the environment the children inherit).
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers, paths and maps with string keys always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A config the supervisor validated and sent (see [`ServerConfig::to_json`]), checked again.
    pub fn from_json(text: &str) -> Result<ServerConfig, ConfigError> {
        let from = || PathBuf::from("(the config sent by caxton serve)");
        let cfg: ServerConfig = serde_json::from_str(text).map_err(|e| ConfigError::Parse {
            path: from(),
            message: e.to_string(),
        })?;
        cfg.check().map_err(|message| ConfigError::Parse {
            path: from(),
            message,
        })?;
        Ok(cfg)
    }

    /// Reads and checks a config file. Relative paths inside it are resolved against its directory.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: ServerConfig = toml_from_str(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        cfg.check().map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.runtime_dir);
        fix(&mut cfg.agents_dir);
        fix(&mut cfg.state_dir);
        fix(&mut cfg.workers.binary);
        fix(&mut cfg.toolhost.binary);
        fix(&mut cfg.toolhost.tools_dir);
        for grant in cfg.tools.values_mut() {
            for dir in &mut grant.dirs {
                if dir.host.is_relative() {
                    dir.host = base.join(&dir.host);
                }
            }
        }
        fix(&mut cfg.data_dir);
        fix(&mut cfg.memory.binary);
        fix(&mut cfg.memory.database);
        fix(&mut cfg.memory.model_dir);
        for p in cfg.providers.values_mut() {
            match p {
                ProviderConfig::Scripted(c) => fix(&mut c.rules),
                ProviderConfig::Local(c) => fix(&mut c.model_path),
                ProviderConfig::Openai(_) | ProviderConfig::Anthropic(_) => {}
            }
        }
        Ok(cfg)
    }

    /// The runtime directory in effect.
    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime_dir.clone().unwrap_or_else(default_runtime_dir)
    }

    /// The state directory in effect.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            dir_from_env("CAXTON_STATE_DIR", "XDG_STATE_HOME", ".local/state/caxton")
        })
    }

    /// The tool-call audit log.
    pub fn audit_log_path(&self) -> PathBuf {
        self.state_dir().join("audit/tool-calls.log")
    }

    /// The memory service's audit log of memory-tool calls (same format, chain of its own).
    pub fn memory_audit_log_path(&self) -> PathBuf {
        self.state_dir().join("audit/memory-calls.log")
    }

    /// The compiled-module cache of the toolhost.
    pub fn module_cache_dir(&self) -> PathBuf {
        self.state_dir().join("cache/modules")
    }

    /// The tool packages directory in effect.
    pub fn tools_dir(&self) -> PathBuf {
        self.toolhost
            .tools_dir
            .clone()
            .unwrap_or_else(|| self.state_dir().join("tools"))
    }

    /// The agents directory in effect.
    pub fn agents_dir(&self) -> PathBuf {
        self.agents_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("agents"))
    }

    /// Providers in effect: the configured ones plus the built-in `scripted` and `local` ones
    /// (unless configured under those names).
    pub fn providers(&self) -> BTreeMap<String, ProviderConfig> {
        let mut all = self.providers.clone();
        all.entry("scripted".into())
            .or_insert_with(|| ProviderConfig::Scripted(ScriptedProviderConfig::default()));
        all.entry("local".into())
            .or_insert_with(|| ProviderConfig::Local(LocalProviderConfig::default()));
        all
    }

    /// Read-only data in effect (model files). Default: `$CAXTON_DATA_DIR`, else
    /// `$XDG_DATA_HOME/caxton`, else `$HOME/.local/share/caxton`, else `/var/lib/caxton`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            dir_from_env("CAXTON_DATA_DIR", "XDG_DATA_HOME", ".local/share/caxton")
        })
    }

    /// Where model files live: `DATA_DIR/models`.
    pub fn models_dir(&self) -> PathBuf {
        self.data_dir().join("models")
    }

    /// The memory database in effect.
    pub fn memory_database(&self) -> PathBuf {
        self.memory
            .database
            .clone()
            .unwrap_or_else(|| self.state_dir().join("memory/memory.db"))
    }

    /// The embedding model directory in effect.
    pub fn embedding_model_dir(&self) -> PathBuf {
        self.memory
            .model_dir
            .clone()
            .unwrap_or_else(|| self.models_dir().join(EMBEDDING_MODEL_DIR))
    }

    /// Re-quantized local models, derived from the files in `models_dir`.
    pub fn model_cache_dir(&self) -> PathBuf {
        self.state_dir().join("cache/models")
    }
}

fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Why a service process has no config.
#[derive(Debug, thiserror::Error)]
pub enum ServiceConfigError {
    #[error("cannot read the config from caxton serve")]
    Setup(#[from] caxton_ipc::service::SetupError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The config a service process (toolhost, memory service) runs with: `--config -`, what
/// `caxton serve` passes, reads the config the supervisor validated from stdin (after its
/// `Hello`); `--config FILE` reads a file (running a service by hand); no flag, the defaults.
pub fn for_service(flag: Option<&Path>) -> Result<ServerConfig, ServiceConfigError> {
    match flag {
        Some(p) if p == Path::new("-") => {
            let setup = caxton_ipc::service::read_setup(&mut std::io::stdin().lock())?;
            Ok(ServerConfig::from_json(&setup.config_json)?)
        }
        Some(p) => Ok(ServerConfig::load(p)?),
        None => Ok(ServerConfig::default()),
    }
}

/// A directory named by the environment: `$own`, else `$xdg/caxton`, else `$HOME/home_rel`, else
/// `/var/lib/caxton` (a variable set to nothing counts as unset).
fn dir_from_env(own: &str, xdg: &str, home_rel: &str) -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env(own)
        .or_else(|| env(xdg).map(|d| d.join("caxton")))
        .or_else(|| env("HOME").map(|d| d.join(home_rel)))
        .unwrap_or_else(|| PathBuf::from("/var/lib/caxton"))
}

/// `$CAXTON_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/caxton`, else `/tmp/caxton-$UID`.
pub fn default_runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAXTON_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("caxton");
    }
    PathBuf::from(format!("/tmp/caxton-{}", nix::unistd::getuid()))
}

/// The public socket path for a runtime directory.
pub fn api_socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("api.sock")
}

/// The private directory (mode 0700) holding internal sockets.
pub fn private_dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("private")
}

/// Default socket path for clients: `$CAXTON_SOCKET` is handled by the CLI; this is the fallback.
pub fn default_api_socket() -> PathBuf {
    api_socket_path(&default_runtime_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validated_config_reaches_a_child_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("caxton.toml");
        std::fs::write(
            &path,
            r#"
state_dir = "state"
[api]
idle_timeout = "90s"
[workers]
memory_mb = 512
[toolhost]
audit_keep = 3
[tools.files]
dirs = [{ path = "/data", host = "data", write = true }]
http = ["https://example.com"]
[memory.retention."agent:*"]
ttl = "90d"
[providers.main]
kind = "openai"
model = "m"
api_key_env = "KEY"
[providers.here]
kind = "local"
threads = 2
"#,
        )
        .unwrap();
        let cfg = ServerConfig::load(&path).unwrap();
        let json = cfg.to_json();
        let back = ServerConfig::from_json(&json).unwrap();
        assert_eq!(back.to_json(), json);
        assert_eq!(back.state_dir, Some(dir.path().join("state")));
        assert_eq!(back.api.idle_timeout, Duration::from_secs(90));
        assert_eq!(back.providers.len(), 2);
        // What the file may not hold, the JSON may not either.
        let bad = json.replace("\"audit_max_bytes\":67108864", "\"audit_max_bytes\":0");
        assert!(ServerConfig::from_json(&bad).is_err());
    }

    #[test]
    fn empty_config_has_defaults() {
        let cfg: ServerConfig = toml_from_str("").unwrap();
        assert_eq!(cfg.workers.max_concurrent, DEFAULT_MAX_WORKERS);
        assert_eq!(cfg.api.socket_mode, "0660");
        assert!(cfg.providers().contains_key("scripted"));
        assert_eq!(cfg.providers()["local"].kind(), "local");
    }

    #[test]
    fn provider_kinds_parse_and_reject_unknown_keys() {
        let cfg: ServerConfig = toml_from_str(
            "[providers.gpt]\nkind = \"openai\"\nmodel = \"gpt-4o-mini\"\napi_key_env = \"OPENAI_API_KEY\"\nretries = 1\ntimeout = \"5s\"\n\
             [providers.claude]\nkind = \"anthropic\"\nmodel = \"claude-x\"\nprompt_usd_per_mtok = 3.0\n",
        )
        .unwrap();
        match &cfg.providers["gpt"] {
            ProviderConfig::Openai(c) => {
                assert_eq!(c.retries, 1);
                assert_eq!(c.timeout, Duration::from_secs(5));
                assert_eq!(c.backoff, DEFAULT_BACKOFF);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cfg.providers["claude"].kind(), "anthropic");
        let err = toml_from_str::<ServerConfig>(
            "[providers.gpt]\nkind = \"openai\"\nmodel = \"m\"\napi_keyy = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.contains("api_keyy"), "{err}");
        let err = toml_from_str::<ServerConfig>("[providers.x]\nkind = \"gemini\"\n").unwrap_err();
        assert!(err.contains("gemini"), "{err}");
    }

    #[test]
    fn the_http_listener_is_off_by_default_and_a_bare_port_is_loopback() {
        let http = |listen: &str| HttpConfig {
            listen: Some(listen.into()),
            ..HttpConfig::default()
        };
        assert_eq!(HttpConfig::default().listen_addr(), Ok(None));
        assert_eq!(
            http("9464").listen_addr(),
            Ok(Some("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(
            http("[::1]:80").listen_addr(),
            Ok(Some("[::1]:80".parse().unwrap()))
        );
        let err = http("localhost:9464").listen_addr().unwrap_err();
        assert!(err.contains("numeric host"), "{err}");
        let cfg = toml_from_str::<ServerConfig>("[http]\nlisten = \"0.0.0.0:x\"\n").unwrap();
        assert!(cfg.check().is_err());
    }

    #[test]
    fn telemetry_is_off_by_default_and_its_endpoint_must_be_plain_http() {
        let telemetry = |text: &str| toml_from_str::<ServerConfig>(text).unwrap();
        assert_eq!(TelemetryConfig::default().traces_url(), Ok(None));
        let on = telemetry("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n");
        assert_eq!(
            on.telemetry.traces_url(),
            Ok(Some("http://127.0.0.1:4318/v1/traces".into()))
        );
        // A full path is posted to as written.
        let full = telemetry("[telemetry]\notlp_endpoint = \"http://c:4318/otlp/v1/traces\"\n");
        assert_eq!(
            full.telemetry.traces_url(),
            Ok(Some("http://c:4318/otlp/v1/traces".into()))
        );
        for bad in ["https://c:4318", "127.0.0.1:4318", "http://"] {
            let cfg = telemetry(&format!("[telemetry]\notlp_endpoint = \"{bad}\"\n"));
            let err = cfg.check().unwrap_err();
            assert!(err.contains("[telemetry] otlp_endpoint"), "{bad}: {err}");
        }
        let ratio = telemetry("[telemetry]\nsampling_ratio = 1.5\n");
        assert!(ratio.check().unwrap_err().contains("sampling_ratio"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_position() {
        let err = toml_from_str::<ServerConfig>("[workers]\nmax_concurent = 3\n").unwrap_err();
        assert!(err.contains("max_concurent"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn the_shipped_systemd_config_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../systemd/caxton.toml"
        ));
        let cfg = ServerConfig::load(path).unwrap();
        assert_eq!(cfg.data_dir(), Path::new("/var/lib/caxton"));
        assert_eq!(
            cfg.models_dir().join(LOCAL_MODEL_FILE),
            Path::new("/var/lib/caxton/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
    }

    #[test]
    fn audit_rotation_defaults_parse_and_zero_size_is_refused() {
        let cfg: ServerConfig = toml_from_str("").unwrap();
        assert_eq!(
            cfg.toolhost.audit_rotation(),
            caxton_ipc::audit::Rotation {
                max_bytes: DEFAULT_AUDIT_MAX_BYTES,
                keep: DEFAULT_AUDIT_KEEP
            }
        );
        let cfg: ServerConfig =
            toml_from_str("[toolhost]\naudit_max_bytes = 4096\naudit_keep = 0\n").unwrap();
        assert_eq!(
            (cfg.toolhost.audit_max_bytes, cfg.toolhost.audit_keep),
            (4096, 0)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("caxton.toml");
        std::fs::write(&path, "[toolhost]\naudit_max_bytes = 0\n").unwrap();
        let err = ServerConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("audit_max_bytes"), "{err}");
    }

    #[test]
    fn durations_are_human() {
        let cfg: ServerConfig = toml_from_str("[workers]\ndefault_timeout = \"1m 30s\"\n").unwrap();
        assert_eq!(cfg.workers.default_timeout, Duration::from_secs(90));
    }
}
