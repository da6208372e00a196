//! The worker process: one agent run, then exit.
//!
//! The session with the supervisor runs over our stdin and stdout (`WorkerProtocol`): the
//! supervisor's `Hello` and [`ToWorker::Job`], our `Welcome`. We stream events (ending with
//! exactly one terminal event) and may ask the supervisor things. The worker is one thread: it
//! reads stdin whenever it waits — for the supervisor's reply, or for a service's answer (see
//! [`Session::wait_for`]) — so a `Stop`, or the end of stdin (the supervisor is gone), is seen at
//! once, and answered with a `cancelled` terminal event and the end of the process. stdout
//! carries only frames; diagnostics go to stderr (captured by the supervisor). The worker holds
//! no provider secrets and keeps no state after it exits.

pub mod agent_loop;
pub mod client;
pub mod confine;
pub mod spans;

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::rc::Rc;

use caxton_ipc::api::{ErrorBody, ErrorKind, RunEvent, RunUsage};
use caxton_ipc::connection::{
    AsServer, BlockingReader, BlockingWriter, Duplex, HandshakeError, Server, WorkerProtocol,
};
use caxton_ipc::error::Chain;
use caxton_ipc::frame::FrameError;
use caxton_ipc::worker::{FromWorker, SupervisorReply, ToWorker, WorkerJob, WorkerRequest};
use nix::poll::{PollFd, PollFlags, PollTimeout};

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
    #[error("the supervisor answered out of turn: {0}")]
    Unexpected(String),
}

/// Our side of the session, shared by the agent loop and the service connections (a clone is
/// the same session).
#[derive(Clone)]
pub struct Session(Rc<Inner>);

struct Inner {
    out: RefCell<BlockingWriter<AsServer<WorkerProtocol>, File>>,
    input: RefCell<BlockingReader<AsServer<WorkerProtocol>, File>>,
    /// The terminal event has gone out.
    ended: Cell<bool>,
    next_id: Cell<u64>,
    run_id: String,
    spans: spans::Spans,
}

impl Session {
    fn new(
        conn: Server<WorkerProtocol, Duplex<File, File>>,
        run_id: String,
        trace: Option<caxton_ipc::trace::JobTrace>,
    ) -> Session {
        let (input, out) = conn.split();
        Session(Rc::new(Inner {
            out: RefCell::new(out),
            input: RefCell::new(input),
            ended: Cell::new(false),
            next_id: Cell::new(0),
            run_id,
            spans: spans::Spans::new(trace),
        }))
    }

    /// The run's spans (relayed to the supervisor before the terminal event).
    pub fn spans(&self) -> &spans::Spans {
        &self.0.spans
    }

    /// Sends one event; the terminal one ends the session's output, after the run's spans.
    pub fn emit(&self, event: &RunEvent) -> Result<(), FrameError> {
        if self.0.ended.get() {
            return Err(FrameError::Closed);
        }
        if event.is_terminal() {
            let spans = self.0.spans.take();
            if !spans.is_empty() {
                self.0.out.borrow_mut().send(&FromWorker::Spans(spans))?;
            }
        }
        self.0.ended.set(event.is_terminal());
        self.0
            .out
            .borrow_mut()
            .send(&FromWorker::Event(event.clone()))
    }

    /// Asks the supervisor and waits for its answer.
    pub fn ask(&self, request: WorkerRequest) -> Result<SupervisorReply, SessionError> {
        let id = self.0.next_id.get() + 1;
        self.0.next_id.set(id);
        (self.0.out.borrow_mut())
            .send(&FromWorker::Request { id, request })
            .map_err(SessionError::Send)?;
        loop {
            let (got, reply) = self.next_reply();
            if got == id {
                return Ok(reply);
            }
        }
    }

    /// Waits until `fd` (a service's socket) has something to read or is closed, reading what
    /// the supervisor sends meanwhile: a `Stop` ends the run (see [`Session::next_reply`]).
    pub fn wait_for(&self, fd: BorrowedFd<'_>) -> nix::Result<()> {
        loop {
            let (service, supervisor) = {
                let input = self.0.input.borrow();
                let mut fds = [
                    PollFd::new(fd, PollFlags::POLLIN),
                    PollFd::new(input.get_ref().as_fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if supervisor {
                // Nothing was asked, so a reply is out of turn: dropped.
                self.next_reply();
            } else if service {
                return Ok(());
            }
        }
    }

    /// The supervisor's next reply. `Stop`, a second job, or the end of stdin end the run: the
    /// `cancelled` terminal event goes out (unless one went out already) and the process exits.
    fn next_reply(&self) -> (u64, SupervisorReply) {
        let received = self.0.input.borrow_mut().recv();
        let reason = match received {
            Ok(ToWorker::Reply { id, reply }) => return (id, reply),
            Ok(ToWorker::Stop { reason }) => format!("stopped by the supervisor: {reason}"),
            Ok(ToWorker::Job(_)) => "the supervisor sent a second job".to_string(),
            Err(e) => format!("the supervisor went away ({e})"),
        };
        let _ = self.emit(&RunEvent::Failed {
            run_id: self.0.run_id.clone(),
            error: ErrorBody::new(ErrorKind::Cancelled, reason),
            usage: RunUsage::default(),
        });
        std::process::exit(EXIT_STOPPED.into());
    }
}

/// stdin or stdout as a plain file. Frames are read and written whole through it: `Stdout` is
/// line-buffered and would split a frame whose bytes hold a newline into two writes (two
/// wake-ups of the supervisor), and `Stdin`'s buffer would hide a waiting `Stop` from `poll`.
fn plain(fd: BorrowedFd<'_>) -> std::io::Result<File> {
    fd.try_clone_to_owned().map(File::from)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // First, before any input is read: this process and whatever it might execute can never
    // gain privileges (the supervisor has set its resource limits already).
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        eprintln!("caxton-worker: cannot set no_new_privs: {e}");
        return ExitCode::from(EXIT_PROTOCOL);
    }
    let (stdin, stdout) = match (
        plain(std::io::stdin().as_fd()),
        plain(std::io::stdout().as_fd()),
    ) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("caxton-worker: cannot open stdin and stdout: {e}");
            return ExitCode::from(EXIT_PROTOCOL);
        }
    };
    match serve_one(stdin, stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caxton-worker: {}", Chain(&e));
            ExitCode::from(EXIT_PROTOCOL)
        }
    }
}

/// Accepts the supervisor's session on `input`/`output`, runs the job, and streams its events.
pub fn serve_one(input: File, output: File) -> Result<(), ServeError> {
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
    let session = Session::new(conn, job.run_id.clone(), job.trace);
    let terminal = agent_loop::run(&job, &session);
    session.emit(&terminal).map_err(ServeError::FinalEvent)
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
