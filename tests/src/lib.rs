//! Test harness: start the real `caxton serve` (which starts the real toolhost and workers) in a
//! temporary runtime directory, wait until it is ready, talk to it over its real socket, and kill
//! it on drop, printing its log when the test failed.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use caxton_ipc::api::{
    ApiRequest, ApiResponse, ErrorBody, ErrorKind, RunEvent, RunRequest, ServiceState, StatusReport,
};
use caxton_ipc::frame::{self, MAX_FRAME_LEN};
use caxton_ipc::handshake::{Hello, HelloReply, Role};
use caxton_ipc::toolhost::ToolOutput;

pub mod fake_llm;
pub mod fuzz;
pub mod http;

/// How long a daemon may take to become ready (a cold debug toolhost compiles its modules).
pub const READY_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline for conditions tests wait on.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(30);

/// Directory holding the built binaries: `$CAXTON_BIN_DIR`, else the cargo target dir of this test.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAXTON_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test-binary> → target/<profile>; a bench binary sits in target/<profile>.
    let exe = std::env::current_exe().expect("current_exe");
    let here = exe.parent().expect("the executable has a directory");
    let dir = if here.ends_with("deps") {
        here.parent().unwrap_or(here)
    } else {
        here
    }
    .to_path_buf();
    for b in ["caxton", "caxton-worker", "caxton-toolhost"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: build the binaries first with `cargo build --workspace --bins`",
            dir.join(b).display()
        );
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repo")
        .to_path_buf()
}

/// The compiled-module cache the test daemons share: private to this user (mode 0700, as the
/// toolhost requires), beside this crate's build output.
fn shared_module_cache() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("OUT_DIR")).join("module-cache");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct Options {
    /// Agent files copied into the agents directory (paths relative to the repo root).
    pub agents: Vec<PathBuf>,
    /// Extra TOML appended to the server config.
    pub extra_config: String,
    /// Scripted rules file for the `scripted` provider (relative to the repo root), if not the built-in.
    pub rules: Option<PathBuf>,
    /// Enable the worker's fault-injection hook.
    pub faults: bool,
    /// Extra environment for the daemon.
    pub env: Vec<(String, String)>,
    /// Keep the real embedded model as the `local` provider. Otherwise, with `rules` set,
    /// `local` (the default provider of agents) is the scripted provider with those rules, so
    /// the example agents answer deterministically.
    pub local_model: bool,
    /// Give the toolhost a module cache of its own. Otherwise every test daemon shares one
    /// (`state/cache/modules` is a link to it), so the built-in tool servers are compiled once per
    /// build rather than once per daemon: each compile costs seconds of CPU.
    pub private_module_cache: bool,
    /// Start `caxton serve` the way systemd socket activation does: `systemd-socket-activate`
    /// binds the API socket and execs the daemon (same pid) on the first connection, passing the
    /// socket as fd 3 with `LISTEN_FDS=1`.
    pub socket_activated: bool,
    /// Start `caxton` (and so its children) from this directory instead of [`bin_dir`]: the
    /// benchmarks run an older build beside this one.
    pub bin_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agents: vec![
                "agents/calculator.toml".into(),
                "agents/greeter.toml".into(),
                "tests/agents/slow.toml".into(),
            ],
            extra_config: String::new(),
            rules: Some("tests/agents/rules.toml".into()),
            faults: true,
            env: Vec::new(),
            local_model: false,
            private_module_cache: false,
            socket_activated: false,
            bin_dir: None,
        }
    }
}

impl Options {
    /// The default options with `extra` appended to the server config.
    pub fn with_config(extra: impl Into<String>) -> Options {
        Options {
            extra_config: extra.into(),
            ..Options::default()
        }
    }

    /// The default options with only these agent files.
    pub fn with_agents(agents: &[&str]) -> Options {
        Options {
            agents: agents.iter().map(Into::into).collect(),
            ..Options::default()
        }
    }
}

/// A running `caxton serve`.
pub struct Daemon {
    child: Option<Child>,
    /// The `caxton` binary it runs.
    caxton: PathBuf,
    /// Started (and restarted) through `systemd-socket-activate`.
    socket_activated: bool,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    pub fn start(opts: Options) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("cx").tempdir_in("/tmp")?;
        let agents = dir.path().join("agents");
        std::fs::create_dir(&agents)?;
        for a in &opts.agents {
            let src = repo_root().join(a);
            std::fs::copy(
                &src,
                agents.join(src.file_name().context("agent file name")?),
            )
            .with_context(|| format!("copy {}", src.display()))?;
        }
        let mut config = format!(
            "runtime_dir = \"{}\"\nagents_dir = \"{}\"\nstate_dir = \"{}\"\n",
            dir.path().join("run").display(),
            agents.display(),
            dir.path().join("state").display()
        );
        config.push_str(&opts.extra_config);
        if let Some(rules) = &opts.rules {
            let rules = repo_root().join(rules);
            config.push_str(&format!(
                "\n[providers.scripted]\nkind = \"scripted\"\nrules = \"{}\"\n",
                rules.display()
            ));
            if !opts.local_model && !opts.extra_config.contains("[providers.local]") {
                config.push_str(&format!(
                    "\n[providers.local]\nkind = \"scripted\"\nrules = \"{}\"\n",
                    rules.display()
                ));
            }
        }
        let config_path = dir.path().join("caxton.toml");
        std::fs::write(&config_path, config)?;
        if !opts.private_module_cache {
            let cache = dir.path().join("state/cache");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&cache)?;
            std::os::unix::fs::symlink(shared_module_cache()?, cache.join("modules"))?;
        }
        let mut d = Daemon {
            caxton: opts
                .bin_dir
                .as_ref()
                .map_or_else(|| bin("caxton"), |d| d.join("caxton")),
            socket_activated: opts.socket_activated,
            child: None,
            socket: dir.path().join("run/api.sock"),
            log: dir.path().join("serve.log"),
            config: config_path,
            dir,
        };
        d.spawn(opts.faults, &opts.env)?;
        d.wait_ready()?;
        Ok(d)
    }

    fn spawn(&mut self, faults: bool, env: &[(String, String)]) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = if self.socket_activated {
            std::fs::create_dir_all(self.socket.parent().context("socket directory")?)?;
            // The activator exited with the daemon it became, and left its socket's file; a
            // socket unit would have kept the socket open instead.
            let _ = std::fs::remove_file(&self.socket);
            let mut c = Command::new("systemd-socket-activate");
            c.arg("--listen").arg(&self.socket).arg(&self.caxton);
            c
        } else {
            Command::new(&self.caxton)
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("CAXTON_LOG_FORMAT", "text")
            .env("CAXTON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        if faults {
            cmd.env("CAXTON_WORKER_FAULTS", "1");
        } else {
            cmd.env_remove("CAXTON_WORKER_FAULTS");
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        self.child = Some(cmd.spawn().context("spawn caxton serve")?);
        Ok(())
    }

    /// Polls health until ready (or the daemon exits, or the deadline passes).
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "caxton serve exited with {status} before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            // Ready; or serving runs with a memory service that cannot start (a corrupt
            // database, say: the tests of that case check what the daemon says about it).
            if let Ok(ApiResponse::Health(h)) =
                self.connect().and_then(|mut c| c.call(&ApiRequest::Health))
                && (h.ready
                    || (matches!(h.toolhost, ServiceState::Running { .. })
                        && matches!(h.memory, Some(ServiceState::Restarting { .. }))))
            {
                return Ok(());
            }
            if started.elapsed() > READY_DEADLINE {
                bail!(
                    "caxton serve not ready after {READY_DEADLINE:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's temporary directory (config, state, runtime).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the memory service's socket.
    pub fn memory_socket(&self) -> PathBuf {
        self.dir.path().join("run/private/memory.sock")
    }

    /// One operator request to the memory service, through the daemon's API socket.
    pub fn memory(
        &self,
        req: caxton_ipc::memory::MemoryRequest,
    ) -> anyhow::Result<Result<caxton_ipc::memory::MemoryResponse, ErrorBody>> {
        match self.connect()?.call(&ApiRequest::Memory(req))? {
            ApiResponse::Memory(r) => Ok(Ok(r)),
            ApiResponse::Error(e) => Ok(Err(e)),
            other => bail!("unexpected {other:?}"),
        }
    }

    /// The entities `names` of `scope` with their relations (`MemoryRequest::Show`); panics on
    /// any other answer.
    pub fn memory_graph(&self, scope: &str, names: &[String]) -> caxton_ipc::memory::Graph {
        let req = caxton_ipc::memory::MemoryRequest::Show {
            scope: Some(scope.into()),
            names: names.to_vec(),
        };
        match self.memory(req) {
            Ok(Ok(caxton_ipc::memory::MemoryResponse::Graph(g))) => g,
            other => panic!("show {names:?} in {scope}: {other:?}"),
        }
    }

    /// The pid of a service process (the toolhost, or the memory service); panics when it is not
    /// running.
    pub fn service_pid(&self, service: Service) -> u32 {
        let status = self.status().expect("status");
        let state = match service {
            Service::Toolhost => Some(status.toolhost),
            Service::Memory => status.memory,
        };
        match state {
            Some(ServiceState::Running { pid, .. }) => pid,
            other => panic!("the {service:?} is not running: {other:?}"),
        }
    }

    /// Waits until `service` runs again under a pid other than `old` (it was restarted).
    pub fn wait_restarted(&self, service: Service, old: u32) -> StatusReport {
        let restarted = |state: Option<&ServiceState>| matches!(state, Some(ServiceState::Running { pid, .. }) if *pid != old);
        self.wait_status(&format!("the {service:?} restarted"), |s| match service {
            Service::Toolhost => restarted(Some(&s.toolhost)),
            Service::Memory => restarted(s.memory.as_ref()),
        })
        .expect("the service restarted")
    }

    /// SIGKILLs `service` and waits until it is restarted; returns its old pid.
    pub fn kill_and_wait_restarted(&self, service: Service) -> u32 {
        let old = self.service_pid(service);
        signal_pid(old, nix::sys::signal::Signal::SIGKILL);
        self.wait_restarted(service, old);
        old
    }

    /// Path of the toolhost's socket.
    pub fn toolhost_socket(&self) -> PathBuf {
        self.dir.path().join("run/private/toolhost.sock")
    }

    /// Calls one tool as the operator (`ApiRequest::CallTool`: the supervisor relays it to the
    /// toolhost, which audits it as agent `operator`). Workers can no longer call the toolhost
    /// without their run's token.
    pub fn call_tool(
        &self,
        tool: &str,
        arguments: &str,
        timeout: Duration,
    ) -> anyhow::Result<Result<ToolOutput, ErrorBody>> {
        let req = ApiRequest::CallTool {
            tool: tool.into(),
            arguments: arguments.into(),
            timeout_ms: Some(timeout.as_millis() as u64),
        };
        match self.connect()?.call(&req)? {
            ApiResponse::ToolOutput(o) => Ok(Ok(o)),
            ApiResponse::Error(e) => Ok(Err(e)),
            other => bail!("unexpected {other:?}"),
        }
    }

    /// Starts `caxton serve` again on the same directory (after it exited or was killed).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut old) = self.child.take() {
            let _ = old.wait();
        }
        self.spawn(false, &[])?;
        self.wait_ready()
    }

    /// Stops the daemon with SIGTERM, waits for it to exit and starts it again.
    pub fn stop_and_restart(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(20)).unwrap();
        self.restart().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn connect(&self) -> anyhow::Result<Conn> {
        Conn::connect(&self.socket)
    }

    /// Where the daemon's HTTP listener is (`[http] listen = "127.0.0.1:0"` takes any free
    /// port), from its log.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        let log = self.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("HTTP listener"))
            .unwrap_or_else(|| panic!("no HTTP listener in the log:\n{log}"));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line}"));
        addr.parse().unwrap()
    }

    /// Runs an agent and collects its whole response stream.
    pub fn run(&self, agent: &str, input: &str) -> anyhow::Result<RunOutcome> {
        self.run_req(RunRequest::new(agent, input))
    }

    /// Runs an agent asking for its answer's text as it streams (`Token` events).
    pub fn run_streamed(&self, agent: &str, input: &str) -> anyhow::Result<RunOutcome> {
        let mut req = RunRequest::new(agent, input);
        req.stream = true;
        self.run_req(req)
    }

    /// Starts a run of `agent` and reads its events until its worker is inside its LLM call;
    /// returns the connection (the rest of the run is read from it) and the worker's pid.
    pub fn run_until_llm_call(&self, agent: &str, input: &str) -> (Conn, u32) {
        let mut c = self.connect().unwrap();
        let pid = c.start_run(agent, input).unwrap();
        c.wait_for_llm_call().unwrap();
        (c, pid)
    }

    pub fn run_req(&self, req: RunRequest) -> anyhow::Result<RunOutcome> {
        let mut c = self.connect()?;
        c.send(&ApiRequest::Run(req))?;
        c.collect_run()
    }

    pub fn status(&self) -> anyhow::Result<StatusReport> {
        match self.connect()?.call(&ApiRequest::Status)? {
            ApiResponse::Status(s) => Ok(s),
            other => bail!("unexpected {other:?}"),
        }
    }

    /// Waits until `cond` holds on the status report.
    pub fn wait_status(
        &self,
        what: &str,
        cond: impl Fn(&StatusReport) -> bool,
    ) -> anyhow::Result<StatusReport> {
        let started = Instant::now();
        loop {
            if let Ok(s) = self.status()
                && cond(&s)
            {
                return Ok(s);
            }
            if started.elapsed() > WAIT_DEADLINE {
                bail!("timed out waiting for {what}; status: {:?}", self.status());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Path of the current tool-call audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("state/audit/tool-calls.log")
    }

    /// The records of the tool-call audit log: its rotated files (oldest first), then the
    /// current one.
    pub fn audit_records(&self) -> Vec<caxton_ipc::audit::AuditRecord> {
        caxton_ipc::audit::log_files(&self.audit_log())
            .expect("the audit directory can be listed")
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("an audit record"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Runs the `caxton` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("caxton"))
            .args(args)
            .env("CAXTON_SOCKET", &self.socket)
            .output()
            .expect("run caxton")
    }

    /// Runs the `caxton` CLI against this daemon, asserts that it succeeded and returns its
    /// standard output.
    #[track_caller]
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "caxton {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the `caxton` CLI against this daemon, asserts that it exited with `code` and returns
    /// its standard error.
    #[track_caller]
    pub fn cli_err(&self, args: &[&str], code: i32) -> String {
        let out = self.cli(args);
        assert_eq!(out.status.code(), Some(code), "caxton {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)
            .expect("signal daemon");
    }

    /// Waits for the daemon to exit, returning its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let started = Instant::now();
        let child = self.child.as_mut().context("no child")?;
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(s);
            }
            if started.elapsed() > deadline {
                bail!("daemon still running after {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- caxton serve log ({}) -----\n{}\n-----",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// A client connection speaking frames.
pub struct Conn {
    pub stream: UnixStream,
}

impl Conn {
    /// Connects and completes the Hello exchange.
    pub fn connect(socket: &Path) -> anyhow::Result<Conn> {
        let mut c = Conn::raw(socket)?;
        frame::write_sync(&mut c.stream, &Hello::new(Role::Cli))?;
        match frame::read_sync::<HelloReply>(&mut c.stream, MAX_FRAME_LEN)? {
            HelloReply::Welcome(_) => Ok(c),
            HelloReply::Rejected { reason } => bail!("rejected: {reason}"),
        }
    }

    /// Connects without a handshake.
    pub fn raw(socket: &Path) -> anyhow::Result<Conn> {
        let stream =
            UnixStream::connect(socket).with_context(|| format!("connect {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn { stream })
    }

    pub fn send(&mut self, req: &ApiRequest) -> anyhow::Result<()> {
        Ok(frame::write_sync(&mut self.stream, req)?)
    }

    pub fn recv(&mut self) -> anyhow::Result<ApiResponse> {
        Ok(frame::read_sync(&mut self.stream, MAX_FRAME_LEN)?)
    }

    pub fn call(&mut self, req: &ApiRequest) -> anyhow::Result<ApiResponse> {
        self.send(req)?;
        self.recv()
    }

    pub fn write_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Reads until the peer closes; returns everything.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.stream.read_to_end(&mut out);
        out
    }

    /// Starts a run of `agent` and returns its worker's pid (from the `Started` event).
    pub fn start_run(&mut self, agent: &str, input: &str) -> anyhow::Result<u32> {
        self.send(&ApiRequest::Run(RunRequest::new(agent, input)))?;
        match self.recv()? {
            ApiResponse::Event(RunEvent::Started { worker_pid, .. }) => Ok(worker_pid),
            other => bail!("expected the Started event, got {other:?}"),
        }
    }

    /// Reads events until the worker reports its LLM call (it is connected to the toolhost by then).
    pub fn wait_for_llm_call(&mut self) -> anyhow::Result<()> {
        loop {
            match self.recv()? {
                ApiResponse::Event(RunEvent::LlmCall { .. }) => return Ok(()),
                ApiResponse::Event(e) if !e.is_terminal() => continue,
                other => bail!("the run ended before its LLM call: {other:?}"),
            }
        }
    }

    /// Reads responses until the run's terminal event (or an error response).
    pub fn collect_run(&mut self) -> anyhow::Result<RunOutcome> {
        let mut events = Vec::new();
        loop {
            match self.recv()? {
                ApiResponse::Event(e) => {
                    let terminal = e.is_terminal();
                    events.push(e);
                    if terminal {
                        return Ok(RunOutcome {
                            events,
                            error: None,
                        });
                    }
                }
                ApiResponse::Error(e) => {
                    return Ok(RunOutcome {
                        events,
                        error: Some(e),
                    });
                }
                other => bail!("unexpected response during a run: {other:?}"),
            }
        }
    }
}

/// Everything a run sent back.
#[derive(Debug)]
pub struct RunOutcome {
    pub events: Vec<RunEvent>,
    /// An error response instead of a run (unknown agent, busy…).
    pub error: Option<ErrorBody>,
}

impl RunOutcome {
    pub fn answer(&self) -> Option<&str> {
        self.events.iter().find_map(|e| match e {
            RunEvent::Finished { answer, .. } => Some(answer.as_str()),
            _ => None,
        })
    }

    pub fn failure(&self) -> Option<&ErrorBody> {
        self.error.as_ref().or_else(|| {
            self.events.iter().find_map(|e| match e {
                RunEvent::Failed { error, .. } => Some(error),
                _ => None,
            })
        })
    }

    /// The failure of a run that must have failed with `kind`, with a message containing each of
    /// `parts`.
    #[track_caller]
    pub fn expect_failure(&self, kind: ErrorKind, parts: &[&str]) -> &ErrorBody {
        let err = self
            .failure()
            .unwrap_or_else(|| panic!("the run did not fail: {self:?}"));
        assert_error(err, kind, parts);
        err
    }

    /// The streamed answer text (the `Token` events), joined.
    pub fn streamed_text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::Token { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Each tool call: (call id, tool, arguments).
    pub fn tool_calls(&self) -> Vec<(&str, &str, &str)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::ToolCall {
                    call_id,
                    tool,
                    arguments,
                } => Some((call_id.as_str(), tool.as_str(), arguments.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Each tool result: (call id, tool, ok, output).
    pub fn tool_results(&self) -> Vec<(&str, &str, bool, &str)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::ToolResult {
                    call_id,
                    tool,
                    ok,
                    output,
                    ..
                } => Some((call_id.as_str(), tool.as_str(), *ok, output.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Each retry of an LLM call: (provider, attempt, error).
    pub fn retries(&self) -> Vec<(&str, u32, &str)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::LlmRetry {
                    provider,
                    attempt,
                    error,
                    ..
                } => Some((provider.as_str(), *attempt, error.as_str())),
                _ => None,
            })
            .collect()
    }

    pub fn run_id(&self) -> Option<&str> {
        self.events.iter().find_map(|e| match e {
            RunEvent::Started { run_id, .. } => Some(run_id.as_str()),
            _ => None,
        })
    }

    pub fn worker_pid(&self) -> Option<u32> {
        self.events.iter().find_map(|e| match e {
            RunEvent::Started { worker_pid, .. } => Some(*worker_pid),
            _ => None,
        })
    }
}

/// Asserts that `text` contains each of `parts`, showing `text` when one is missing.
#[track_caller]
pub fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} is not in:\n{text}");
    }
}

/// Asserts that `err` is of `kind` with a message containing each of `parts`.
#[track_caller]
pub fn assert_error(err: &ErrorBody, kind: ErrorKind, parts: &[&str]) {
    assert_eq!(err.kind, kind, "{err:?}");
    assert_contains(&err.message, parts);
}

/// A service process the daemon supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Toolhost,
    Memory,
}

/// Sends `sig` to process `pid` (which must exist).
pub fn signal_pid(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal");
}

/// True while a process exists (zombies included).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Children of `pid`: (pid, command name, state letter).
pub fn children(pid: u32) -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().unwrap_or("").to_string();
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push((child, comm, state));
        }
    }
    out
}

/// Children of `pid` that are zombies.
pub fn zombie_children(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|(_, _, state)| state == "Z")
        .map(|(p, _, _)| p)
        .collect()
}

/// Number of open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A minimal HTTP/1.1 server on 127.0.0.1 for the egress tests: `route(path)` gives the status,
/// extra header lines and body of each answer. It serves until the test process ends.
pub struct HttpServer {
    pub port: u16,
}

impl HttpServer {
    pub fn start(route: fn(&str) -> (u16, String, String)) -> HttpServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (status, headers, body) = route(&path);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes());
                });
            }
        });
        HttpServer { port }
    }
}

/// The SHA-256 of an HTTP API token as `[[http.tokens]] sha256` holds it, from
/// `caxton token hash`.
pub fn token_sha256(token: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new(bin("caxton"))
        .args(["token", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("caxton token hash");
    writeln!(child.stdin.take().expect("piped"), "{token}").expect("write the token");
    let out = child.wait_with_output().expect("caxton token hash");
    assert!(out.status.success(), "caxton token hash failed");
    String::from_utf8(out.stdout)
        .expect("hex")
        .trim()
        .to_string()
}
