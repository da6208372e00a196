//! The one way Caxton starts a child process (workers and the toolhost).
//!
//! fork+exec (through tokio's `Command`), the child in its own process group, inherited systemd
//! variables scrubbed, stdin/stdout piped for frames, stderr drained into a bounded tail, and the
//! whole process group killed when the handle is dropped. Every error names the exact command.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caxton_ipc::logging::{Format, forward_line};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

/// Variables systemd passes to the service that must not leak to children
/// (a child would otherwise notify or claim sockets in the service's name).
const SCRUBBED_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];
/// How long [`ManagedChild::stderr_tail`] waits for the drain to reach end of file.
const STDERR_SETTLE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
#[error("cannot start `{command}`")]
pub struct SpawnError {
    pub command: String,
    #[source]
    pub source: std::io::Error,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Bytes of stderr kept (the newest).
    pub stderr_tail: usize,
    /// Deliver SIGKILL to the child if the thread that spawned it dies (for long-lived services).
    pub die_with_parent: bool,
    /// Start from an empty environment plus these inherited variables (and `env`), so nothing the
    /// service was given (provider keys, for one) reaches the child. `None` inherits everything.
    pub inherit_only: Option<&'static [&'static str]>,
    /// Also log each stderr line under this name (for long-lived services whose logs matter).
    pub log_stderr_as: Option<&'static str>,
    /// Resource limits, set on the child before the supervisor sends it anything (workers).
    pub confinement: Option<Confinement>,
}

/// What a confined child may use. Core dumps are always off.
///
/// The supervisor sets these with prlimit(2) on the new child right after it starts, before it
/// writes the child a byte: until then the child runs only its own start-up code, so it meets no
/// input outside them. The worker sets `no_new_privs` on itself as its first act. No `pre_exec`
/// hook is used: a hook makes the standard library fork the whole supervisor instead of
/// spawning with vfork semantics, and copying its page tables (then the copy-on-write faults
/// and TLB shootdowns across its threads) cost the supervisor about 0.5 ms of CPU per run
/// (measured with benches/scripts/cpu-per-run.sh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confinement {
    /// RLIMIT_AS, bytes.
    pub address_space: u64,
    /// RLIMIT_CPU, seconds (soft; the hard limit is one second later, so the soft one's
    /// SIGXCPU is what ends it).
    pub cpu_seconds: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
}

impl Confinement {
    /// Sets the limits on process `pid`.
    pub fn apply_to(&self, pid: u32) -> std::io::Result<()> {
        let limits = [
            (libc::RLIMIT_CORE, 0, 0),
            (libc::RLIMIT_AS, self.address_space, self.address_space),
            (libc::RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 1),
            (libc::RLIMIT_NOFILE, self.open_files, self.open_files),
        ];
        for (resource, soft, hard) in limits {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: `limit` is a valid rlimit for the duration of the call and the old-limit
            // pointer is null, which prlimit allows.
            let rc = unsafe {
                libc::prlimit(pid as libc::pid_t, resource, &limit, std::ptr::null_mut())
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl ChildSpec {
    pub fn new(program: impl Into<PathBuf>, stderr_tail: usize) -> ChildSpec {
        ChildSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stderr_tail,
            die_with_parent: false,
            inherit_only: None,
            log_stderr_as: None,
            confinement: None,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// The command line, for error messages.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A running child: its pipes, its process group, and the tail of its stderr.
pub struct ManagedChild {
    child: Child,
    pub pid: u32,
    pub command: String,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    tail: Arc<Mutex<VecDeque<u8>>>,
    drain: Option<JoinHandle<()>>,
    reaped: bool,
}

/// Starts `spec`.
pub fn spawn(spec: &ChildSpec) -> Result<ManagedChild, SpawnError> {
    let command = spec.command_line();
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(keep) = spec.inherit_only {
        cmd.env_clear();
        for var in keep {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
    }
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if spec.die_with_parent {
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
        // parent; it is the only thing done between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
    }
    let mut child = cmd.spawn().map_err(|source| SpawnError {
        command: command.clone(),
        source,
    })?;
    let pid = child.id().ok_or_else(|| SpawnError {
        command: command.clone(),
        source: std::io::Error::other("the child exited before its pid could be read"),
    })?;
    if let Some(limits) = spec.confinement
        && let Err(source) = limits.apply_to(pid)
    {
        // `kill_on_drop` ends the unconfined child when `child` goes out of scope.
        return Err(SpawnError { command, source });
    }
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(
        spec.stderr_tail.min(64 * 1024),
    )));
    let drain = child.stderr.take().map(|mut stderr| {
        let tail = tail.clone();
        let cap = spec.stderr_tail;
        let log_as = spec.log_stderr_as;
        let format = Format::from_env();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut partial = Vec::new();
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Some(name) = log_as {
                    log_lines(format, name, pid, &mut partial, &buf[..n]);
                }
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                t.extend(&buf[..n]);
                let excess = t.len().saturating_sub(cap);
                t.drain(..excess);
            }
        })
    });
    Ok(ManagedChild {
        pid,
        command,
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        child,
        tail,
        drain,
        reaped: false,
    })
}

impl ManagedChild {
    /// Sends `signal` to the child's whole process group.
    pub fn signal_group(&self, signal: Signal) {
        if !self.reaped {
            // ESRCH (already gone) is fine.
            let _ = killpg(Pid::from_raw(self.pid as i32), signal);
        }
    }

    /// True when the child has already exited (it is reaped then).
    pub fn has_exited(&mut self) -> bool {
        match self.child.try_wait() {
            Ok(Some(_)) => {
                self.reaped = true;
                true
            }
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Waits for the child to exit and reaps it.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.reaped = true;
        Ok(status)
    }

    /// Kills the process group and reaps the child.
    pub async fn kill_and_wait(&mut self) -> std::io::Result<ExitStatus> {
        self.signal_group(Signal::SIGKILL);
        self.wait().await
    }

    /// The last bytes the child wrote to stderr, waiting briefly for the pipe to drain.
    pub async fn stderr_tail(&mut self) -> String {
        if let Some(drain) = self.drain.as_mut()
            && tokio::time::timeout(STDERR_SETTLE, drain).await.is_ok()
        {
            self.drain = None;
        }
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = t.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        // kill_on_drop kills only the child; take its process group down too.
        self.signal_group(Signal::SIGKILL);
        if let Some(drain) = self.drain.take() {
            drain.abort();
        }
    }
}

/// Longest stderr line forwarded to the log; longer ones are cut.
const MAX_LOGGED_LINE: usize = 8192;

/// Forwards complete lines of a child's stderr to our log, once each (see
/// `caxton_ipc::logging::forward_line`), keeping an unfinished line in `partial`.
fn log_lines(format: Format, name: &str, pid: u32, partial: &mut Vec<u8>, chunk: &[u8]) {
    partial.extend_from_slice(chunk);
    while let Some(i) = partial.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = partial.drain(..=i).collect();
        forward_line(format, name, pid, &String::from_utf8_lossy(&line));
    }
    if partial.len() > MAX_LOGGED_LINE {
        let text = String::from_utf8_lossy(&partial[..MAX_LOGGED_LINE]).into_owned();
        forward_line(format, name, pid, &format!("{text}…"));
        partial.clear();
    }
}

/// Says how a child ended: "exited with status 3", "was killed by signal SIGKILL (9)".
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    if let Some(sig) = status.signal() {
        let name = Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        return format!("was killed by signal {name} ({sig}{core})");
    }
    format!("ended with {status}")
}

/// A sibling binary of the running executable (`caxton-worker`, `caxton-toolhost`).
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| Path::new(name).to_path_buf())
}
