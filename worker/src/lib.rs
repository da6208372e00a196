//! The worker process: one agent run, then exit.
//!
//! The session with the supervisor runs over our stdin and stdout (`WorkerProtocol`): the
//! supervisor's `Hello`, our `Welcome`, then its [`ToWorker::Job`]. We stream events (ending
//! with exactly one terminal event) and may ask the supervisor things; a thread reads stdin for
//! the supervisor's replies and for `Stop` (or the end of stdin: the supervisor is gone), on
//! which it sends a `cancelled` terminal event and ends the process. stdout carries only frames;
//! diagnostics go to stderr (captured by the supervisor). The worker holds no provider secrets
//! and keeps no state after it exits.

pub mod agent_loop;
pub mod client;
pub mod confine;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use caxton_ipc::api::{ErrorBody, ErrorKind, RunEvent, RunUsage};
use caxton_ipc::connection::{
    AsServer, BlockingReader, BlockingWriter, Duplex, HandshakeError, Server, WorkerProtocol,
};
use caxton_ipc::error::Chain;
use caxton_ipc::frame::FrameError;
use caxton_ipc::worker::{FromWorker, SupervisorReply, ToWorker, WorkerJob, WorkerRequest};

/// Exit status when the job could not even be read (the supervisor reports it as a crash).
pub const EXIT_PROTOCOL: u8 = 2;
/// Exit status after a `Stop` (or the supervisor going away).
pub const EXIT_STOPPED: u8 = 0;

/// Why the worker could not serve its one run (it then exits with [`EXIT_PROTOCOL`] and the
/// supervisor reports a crash with this on the worker's stderr).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the session")]
    Handshake(#[source] HandshakeError),
    #[error("expected the job, got {got}")]
    NotAJob { got: String },
    #[error("cannot read the job")]
    ReadJob(#[source] FrameError),
    #[error("cannot apply the agent's resource limits")]
    Confine(#[source] nix::Error),
    #[error("cannot send the final event")]
    FinalEvent(#[source] FrameError),
}

/// The supervisor is no longer there to hear the run's events or answer its requests.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the supervisor went away")]
    Send(#[source] FrameError),
    #[error("the supervisor went away")]
    NoReply(#[source] mpsc::RecvError),
    #[error("the supervisor answered out of turn: {0}")]
    Unexpected(String),
}

/// Our side of the session: what the agent loop sends to the supervisor.
pub struct Session<W: Write> {
    /// stdout, shared with the stdin thread (which writes the terminal event on `Stop`).
    out: Arc<Mutex<Outbox<W>>>,
    replies: mpsc::Receiver<(u64, SupervisorReply)>,
    next_id: u64,
}

/// The writing half of the session, and whether the terminal event has gone out.
struct Outbox<W: Write> {
    conn: BlockingWriter<AsServer<WorkerProtocol>, W>,
    ended: bool,
}

impl<W: Write> Outbox<W> {
    fn send(&mut self, msg: &FromWorker) -> Result<(), FrameError> {
        self.conn.send(msg)
    }
}

impl<W: Write> Session<W> {
    /// Sends one event; the terminal one ends the session's output.
    pub fn emit(&mut self, event: &RunEvent) -> Result<(), FrameError> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if out.ended {
            return Err(FrameError::Closed);
        }
        out.ended = event.is_terminal();
        out.send(&FromWorker::Event(event.clone()))
    }

    /// Asks the supervisor and waits for its answer.
    pub fn ask(&mut self, request: WorkerRequest) -> Result<SupervisorReply, SessionError> {
        self.next_id += 1;
        let id = self.next_id;
        self.out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(&FromWorker::Request { id, request })
            .map_err(SessionError::Send)?;
        loop {
            match self.replies.recv() {
                Ok((got, reply)) if got == id => return Ok(reply),
                Ok(_) => continue,
                Err(e) => return Err(SessionError::NoReply(e)),
            }
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // First, before any input is read: this process and whatever it might execute can never
    // gain privileges (the supervisor has set its resource limits already).
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        eprintln!("caxton-worker: cannot set no_new_privs: {e}");
        return ExitCode::from(EXIT_PROTOCOL);
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    match serve_one(stdin, stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caxton-worker: {}", Chain(&e));
            ExitCode::from(EXIT_PROTOCOL)
        }
    }
}

/// Accepts the supervisor's session on `input`/`output`, runs the job, and streams its events.
pub fn serve_one<R, W>(input: R, output: W) -> Result<(), ServeError>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    let mut conn = Server::<WorkerProtocol, _>::accept(
        Duplex {
            reader: input,
            writer: output,
        },
        |_| Ok(()),
    )
    .map_err(ServeError::Handshake)?;
    let job: WorkerJob = match conn.recv() {
        Ok(ToWorker::Job(job)) => *job,
        Ok(other) => {
            return Err(ServeError::NotAJob {
                got: format!("{other:?}"),
            });
        }
        Err(e) => return Err(ServeError::ReadJob(e)),
    };
    confine::apply(&job.agent.limits).map_err(ServeError::Confine)?;
    inject_fault(&job.input);
    let (reader, writer) = conn.split();
    let out = Arc::new(Mutex::new(Outbox {
        conn: writer,
        ended: false,
    }));
    let (replies_tx, replies) = mpsc::channel();
    let run_id = job.run_id.clone();
    let stop_out = out.clone();
    std::thread::spawn(move || read_supervisor(reader, replies_tx, &run_id, &stop_out));
    let mut session = Session {
        out,
        replies,
        next_id: 0,
    };
    let terminal = agent_loop::run(&job, &mut session);
    session.emit(&terminal).map_err(ServeError::FinalEvent)
}

/// The stdin thread: hands replies to the agent loop; on `Stop`, or when stdin ends (the
/// supervisor is gone), sends the `cancelled` terminal event (unless one went out already) and
/// ends the process.
fn read_supervisor<R: Read, W: Write>(
    mut input: BlockingReader<AsServer<WorkerProtocol>, R>,
    replies: mpsc::Sender<(u64, SupervisorReply)>,
    run_id: &str,
    out: &Mutex<Outbox<W>>,
) {
    let reason = loop {
        match input.recv() {
            Ok(ToWorker::Reply { id, reply }) => {
                let _ = replies.send((id, reply));
            }
            Ok(ToWorker::Stop { reason }) => break format!("stopped by the supervisor: {reason}"),
            Ok(ToWorker::Job(_)) => break "the supervisor sent a second job".to_string(),
            Err(e) => break format!("the supervisor went away ({e})"),
        }
    };
    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
    if !out.ended {
        out.ended = true;
        let _ = out.send(&FromWorker::Event(RunEvent::Failed {
            run_id: run_id.to_string(),
            error: ErrorBody::new(ErrorKind::Cancelled, reason),
            usage: RunUsage::default(),
        }));
    }
    drop(out);
    std::process::exit(EXIT_STOPPED.into());
}

/// Test hook: with `CAXTON_WORKER_FAULTS=1` in the environment, an input of `caxton-fault:panic`,
/// `caxton-fault:hang`, `caxton-fault:exit`, `caxton-fault:alloc`, `caxton-fault:spin` or
/// `caxton-fault:fds` makes the worker misbehave on purpose, so the
/// supervisor's crash handling can be tested against the real binary. Off unless the variable is set.
fn inject_fault(input: &str) {
    if std::env::var_os("CAXTON_WORKER_FAULTS").is_none_or(|v| v != "1") {
        return;
    }
    match input.strip_prefix("caxton-fault:") {
        Some("panic") => panic!("injected fault: panic requested by the test input"),
        // Hangs: reads and ignores what the supervisor sends (a `Stop` too, so only a kill ends
        // it), but exits when stdin closes, so a worker whose daemon was killed does not linger.
        Some("hang") => {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(EXIT_STOPPED.into());
        }
        Some("exit") => std::process::exit(3),
        // Resource exhaustion, for the confinement tests: memory until the address-space limit,
        // CPU until the CPU-time limit, descriptors until the open-file limit.
        Some("alloc") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 * 1024 * 1024]);
            }
        }
        Some("spin") => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        Some("fds") => {
            let mut open = Vec::new();
            loop {
                match std::fs::File::open("/dev/null") {
                    Ok(f) => open.push(f),
                    Err(e) => panic!("cannot open another file after {}: {e}", open.len()),
                }
            }
        }
        _ => {}
    }
}
