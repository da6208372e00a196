//! The worker process: one agent run, then exit.
//!
//! The supervisor writes a `Hello` and a [`WorkerJob`] frame on our stdin; we answer `Welcome` on
//! stdout, then stream [`RunEvent`] frames on stdout, ending with exactly one terminal event.
//! stdout carries only frames; diagnostics go to stderr (captured by the supervisor).
//! The worker holds no provider secrets and keeps no state after it exits.

pub mod agent_loop;
pub mod client;
pub mod confine;

use std::io::{Read, Write};
use std::process::ExitCode;

use caxton_ipc::api::RunEvent;
use caxton_ipc::frame::{self, FrameError, MAX_FRAME_LEN};
use caxton_ipc::handshake::{self, Hello, HelloReply, Role};
use caxton_ipc::worker::WorkerJob;

/// Exit status when the job could not even be read (the supervisor reports it as a crash).
pub const EXIT_PROTOCOL: u8 = 2;

/// Where events go: the worker's stdout, as frames.
pub struct EventSink<W: Write> {
    out: W,
}

impl<W: Write> EventSink<W> {
    pub fn emit(&mut self, event: &RunEvent) -> Result<(), FrameError> {
        frame::write_sync(&mut self.out, event)
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    match serve_one(stdin, stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caxton-worker: {e}");
            ExitCode::from(EXIT_PROTOCOL)
        }
    }
}

/// Reads the job from `input`, runs it, and streams events to `output`.
pub fn serve_one(mut input: impl Read, output: impl Write) -> Result<(), String> {
    let hello: Hello = frame::read_sync(&mut input, MAX_FRAME_LEN)
        .map_err(|e| format!("cannot read the supervisor's hello: {e}"))?;
    let mut sink = EventSink { out: output };
    if let Err(reason) = handshake::check_peer(&hello, &[Role::Supervisor], "caxton-worker") {
        let _ = frame::write_sync(
            &mut sink.out,
            &HelloReply::Rejected {
                reason: reason.clone(),
            },
        );
        return Err(reason);
    }
    let job: WorkerJob = frame::read_sync(&mut input, MAX_FRAME_LEN)
        .map_err(|e| format!("cannot read the job: {e}"))?;
    frame::write_sync(
        &mut sink.out,
        &HelloReply::Welcome(Hello::new(Role::Worker)),
    )
    .map_err(|e| format!("cannot answer the supervisor: {e}"))?;
    confine::apply(&job.agent.limits)
        .map_err(|e| format!("cannot apply the agent's resource limits: {e}"))?;
    inject_fault(&job.input);
    let terminal = agent_loop::run(&job, &mut |event| sink.emit(event));
    sink.emit(&terminal)
        .map_err(|e| format!("cannot send the final event: {e}"))
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
        Some("hang") => loop {
            std::thread::park();
        },
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
