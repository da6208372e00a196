//! `caxton mcp`: an MCP server on stdio, the process desktop MCP clients launch. Each agent
//! the user may run (or those named with `--agent`) is a tool (`caxton_supervisor::mcp`); the
//! daemon behind it is reached over the API socket, speaking its public JSON lines, so the
//! socket's permission check (the user's uid) decides who may use it, and each call is a run
//! on its own connection: cancelling the call closes it, which cancels the run.
//!
//! stdout carries only MCP messages, one per line; diagnostics go to stderr.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use caxton_ipc::agent::AgentSpec;
use caxton_ipc::json_api::{self, Request, Response};
use caxton_supervisor::mcp::{self, Backend, BackendError, RunStream, Server, Session};
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::mpsc;

/// Longest message read from the client or the daemon.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// One JSON-lines connection to the daemon.
struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
}

impl Conn {
    async fn open(socket: &Path) -> Result<Conn, BackendError> {
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            format!(
                "cannot reach caxton serve at {} ({e}); is it running?",
                socket.display()
            )
        })?;
        let (r, w) = stream.into_split();
        Ok(Conn {
            rd: BufReader::new(r),
            wr: w,
        })
    }

    async fn send(&mut self, req: &Request) -> Result<(), BackendError> {
        self.wr
            .write_all(&caxton_ipc::json::to_line(req))
            .await
            .map_err(|e| format!("lost the daemon: {e}"))
    }

    async fn recv(&mut self) -> Result<Option<Response>, BackendError> {
        match caxton_ipc::json::read_line(&mut self.rd, MAX_LINE).await {
            Ok(Some(line)) => serde_json::from_slice(&line)
                .map(Some)
                .map_err(|e| format!("the daemon answered what this caxton cannot read: {e}")),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("lost the daemon: {e}")),
        }
    }

    async fn call(&mut self, req: &Request) -> Result<Response, BackendError> {
        self.send(req).await?;
        match self.recv().await? {
            Some(Response::Error(e)) => Err(e.message),
            Some(r) => Ok(r),
            None => Err("the daemon closed the connection".into()),
        }
    }
}

/// The daemon behind the API socket.
struct SocketBackend {
    socket: PathBuf,
    only: Vec<String>,
}

impl Backend for SocketBackend {
    async fn agents(&self) -> Result<Vec<Arc<AgentSpec>>, BackendError> {
        let mut conn = Conn::open(&self.socket).await?;
        let Response::Agents(list) = conn.call(&Request::ListAgents).await? else {
            return Err("the daemon did not answer with its agents".into());
        };
        let mut agents = Vec::new();
        for a in list {
            if !self.only.is_empty() && !self.only.contains(&a.name) {
                continue;
            }
            if let Response::Agent(spec) = conn.call(&Request::ShowAgent { name: a.name }).await? {
                agents.push(Arc::new(*spec));
            }
        }
        Ok(agents)
    }

    async fn run(&self, run: json_api::RunRequest) -> Result<RunStream, BackendError> {
        if !self.only.is_empty() && !self.only.contains(&run.agent) {
            return Err(format!("`{}` is not offered here", run.agent));
        }
        let mut conn = Conn::open(&self.socket).await?;
        conn.send(&Request::Run(run)).await?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    n = conn.recv() => n,
                    // The call was cancelled: closing the connection cancels the run.
                    () = tx.closed() => return,
                };
                let resp = match next {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(message) => Response::Error(json_api::Error {
                        kind: json_api::ErrorKind::Internal,
                        message,
                    }),
                };
                let end = matches!(
                    resp,
                    Response::Error(_)
                        | Response::Event(
                            json_api::Event::Finished { .. } | json_api::Event::Failed { .. }
                        )
                );
                if tx.send(resp).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// Serves MCP on stdin/stdout until stdin ends.
pub fn mcp(socket: &Path, only: Vec<String>) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(socket.to_path_buf(), only))
}

async fn serve(socket: PathBuf, only: Vec<String>) -> anyhow::Result<u8> {
    // Said once on stderr (desktop clients show it in their server log); the daemon may come
    // up later, and each request tries again.
    if let Err(e) = Conn::open(&socket).await {
        eprintln!("caxton mcp: {e}; serving anyway, each request tries again");
    }
    let server = Arc::new(Server::new(
        Arc::new(SocketBackend { socket, only }),
        "caxton",
    ));
    let session = Arc::new(Session::default());
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(1024);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(msg) = out_rx.recv().await {
            let mut line = msg.to_string().into_bytes();
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    let mut stdin = BufReader::new(tokio::io::stdin());
    loop {
        let line = match caxton_ipc::json::read_line(&mut stdin, MAX_LINE).await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                eprintln!("caxton mcp: {e}; stopping");
                break;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let msg: Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = out_tx
                    .send(mcp::error(
                        Value::Null,
                        mcp::PARSE_ERROR,
                        format!("not JSON: {e}"),
                    ))
                    .await;
                continue;
            }
        };
        let (server, session, out) = (server.clone(), session.clone(), out_tx.clone());
        tokio::spawn(async move { server.handle(&session, msg, &out).await });
    }
    // The client is gone: its calls in progress are cancelled.
    session.cancel_all();
    drop(out_tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    Ok(0)
}
