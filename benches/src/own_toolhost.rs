//! A toolhost the benchmark starts itself. The benchmark is then the toolhost's parent, the role
//! `caxton serve` has, so it may register a run's grant; the measured calls go over a worker's
//! connection attached with that grant's token, the path every worker takes.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use caxton_ipc::connection::{Client, ToolhostProtocol};
use caxton_ipc::handshake::Role;
use caxton_ipc::toolhost::{RunGrant, ToolhostRequest, ToolhostResponse};
use caxton_tests::bin;

pub struct OwnToolhost {
    child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl OwnToolhost {
    /// Starts `caxton-toolhost serve` with `extra_config` and waits until it is ready.
    pub fn start(extra_config: &str) -> anyhow::Result<OwnToolhost> {
        let dir = tempfile::Builder::new().prefix("cxb").tempdir_in("/tmp")?;
        let socket = dir.path().join("toolhost.sock");
        let config = dir.path().join("caxton.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\n{extra_config}\n",
                dir.path().join("state").display()
            ),
        )?;
        let mut child = Command::new(bin("caxton-toolhost"))
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&config)
            .env("CAXTON_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.trim() == "ready");
        anyhow::ensure!(ready, "caxton-toolhost did not report ready");
        Ok(OwnToolhost {
            child,
            socket,
            _dir: dir,
        })
    }

    /// Registers `grant` (as the toolhost's parent) and opens a worker's connection attached to it.
    pub fn worker(&self, grant: RunGrant) -> anyhow::Result<Client<ToolhostProtocol, UnixStream>> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("{:016x}{n:016x}", std::process::id());
        let mut supervisor = Client::<ToolhostProtocol, _>::connect(
            UnixStream::connect(&self.socket)?,
            Role::Supervisor,
        )?;
        match supervisor.call(&ToolhostRequest::RegisterRun {
            token: token.clone(),
            grant,
        })? {
            ToolhostResponse::Ok => {}
            other => anyhow::bail!("registering the run: {other:?}"),
        }
        let mut worker = Client::<ToolhostProtocol, _>::connect(
            UnixStream::connect(&self.socket)?,
            Role::Worker,
        )?;
        match worker.call(&ToolhostRequest::Attach { token })? {
            ToolhostResponse::Ok => Ok(worker),
            other => anyhow::bail!("attaching: {other:?}"),
        }
    }
}

impl Drop for OwnToolhost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A grant for benchmark calls: `tools` and `providers`, no budget limits.
pub fn grant(tools: &[&str], providers: &[&str]) -> RunGrant {
    RunGrant {
        agent: "bench".into(),
        run_id: "bench".into(),
        tools: tools.iter().map(|t| t.to_string()).collect(),
        providers: providers.iter().map(|p| p.to_string()).collect(),
        max_tool_calls: u32::MAX,
        max_tokens: None,
        max_cost_usd: None,
        read_only: false,
        settle_to: None,
        model: None,
    }
}
