//! In-memory stdio for guests: a byte queue shared by the host and the guest, with wakers.
//!
//! wasmtime-wasi's `AsyncStdinStream`/`AsyncStdoutStream` relay every message through a helper task
//! and a channel (host → duplex → reader task → channel → guest, and back the same way), so one tool
//! call crosses several task wake-ups. Here the host and the guest share one queue per direction:
//! a write appends and wakes the other side directly.
//!
//! Each pipe has two owners: the host's end ([`HostWriter`] or [`HostReader`]) and the guest's
//! ([`GuestStdin`] or [`GuestStdout`], kept in the guest's WASI context). Dropping either owner
//! closes the pipe, so the other side sees end-of-file or a closed stream. The streams the guest
//! opens on its stdio (`p2_stream`, `async_stream`) are views that do not close it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

#[derive(Default)]
struct State {
    buf: VecDeque<u8>,
    closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// One direction: a bounded queue of bytes.
#[derive(Clone)]
struct Pipe {
    state: Arc<Mutex<State>>,
    /// Bytes the writer may queue before it must wait for the reader.
    capacity: usize,
}

impl Pipe {
    fn new(capacity: usize) -> Pipe {
        Pipe {
            state: Arc::default(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent queue (every update is one call).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        wake(s.reader.take());
        wake(s.writer.take());
    }

    /// Queues up to the free space (at least one byte's worth is never refused when empty).
    fn write(&self, data: &[u8]) -> Result<usize, StreamError> {
        let mut s = self.lock();
        if s.closed {
            return Err(StreamError::Closed);
        }
        let room = self.capacity.saturating_sub(s.buf.len());
        let n = data.len().min(room);
        s.buf.extend(&data[..n]);
        if n > 0 {
            wake(s.reader.take());
        }
        Ok(n)
    }

    fn room(&self) -> Result<usize, StreamError> {
        let s = self.lock();
        if s.closed {
            return Err(StreamError::Closed);
        }
        Ok(self.capacity.saturating_sub(s.buf.len()))
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.closed || s.buf.len() < self.capacity {
            return Poll::Ready(());
        }
        s.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Takes up to `max` bytes; `Ok(empty)` when nothing is queued yet, `Err(Closed)` at the end.
    fn read(&self, max: usize) -> Result<Vec<u8>, StreamError> {
        let mut s = self.lock();
        if s.buf.is_empty() {
            return if s.closed {
                Err(StreamError::Closed)
            } else {
                Ok(Vec::new())
            };
        }
        let n = max.min(s.buf.len());
        let out: Vec<u8> = s.buf.drain(..n).collect();
        wake(s.writer.take());
        Ok(out)
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.closed || !s.buf.is_empty() {
            return Poll::Ready(());
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_read_into(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        match self.read(buf.remaining()) {
            Ok(data) if data.is_empty() => match self.poll_readable(cx) {
                // Became readable (or closed) between the two locks: try again at once.
                Poll::Ready(()) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            },
            Ok(data) => {
                buf.put_slice(&data);
                Poll::Ready(Ok(()))
            }
            // End of file: nothing put in `buf`.
            Err(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_write_from(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.write(data) {
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Ok(0) if !data.is_empty() => match self.poll_writable(cx) {
                Poll::Ready(()) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            },
            Ok(n) => Poll::Ready(Ok(n)),
        }
    }
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

/// A guest's stdin and stdout pipes, and stderr's: the host's ends and the guest's.
pub struct GuestStdio {
    pub stdin: HostWriter,
    pub stdout: HostReader,
    pub stderr: HostReader,
    pub guest_stdin: GuestStdin,
    pub guest_stdout: GuestStdout,
    pub guest_stderr: GuestStdout,
}

impl GuestStdio {
    /// Pipes that hold at most `capacity` unread bytes each way.
    pub fn new(capacity: usize) -> GuestStdio {
        let (i, o, e) = (
            Pipe::new(capacity),
            Pipe::new(capacity),
            Pipe::new(capacity),
        );
        GuestStdio {
            stdin: HostWriter(i.clone()),
            stdout: HostReader(o.clone()),
            stderr: HostReader(e.clone()),
            guest_stdin: GuestStdin(i),
            guest_stdout: GuestStdout(o),
            guest_stderr: GuestStdout(e),
        }
    }
}

/// The host's end of a guest's stdin; dropping it is end-of-file for the guest.
pub struct HostWriter(Pipe);

impl Drop for HostWriter {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl AsyncWrite for HostWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_write_from(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.close();
        Poll::Ready(Ok(()))
    }
}

/// The host's end of a guest's stdout or stderr; dropping it makes the guest's writes fail.
pub struct HostReader(Pipe);

impl Drop for HostReader {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl AsyncRead for HostReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.poll_read_into(cx, buf)
    }
}

/// The guest's stdin, as its WASI context holds it.
pub struct GuestStdin(Pipe);

impl Drop for GuestStdin {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl IsTerminal for GuestStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for GuestStdin {
    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(StdinView(self.0.clone()))
    }

    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(StdinView(self.0.clone()))
    }
}

/// A stream the guest opened on its stdin.
struct StdinView(Pipe);

impl AsyncRead for StdinView {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.poll_read_into(cx, buf)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StdinView {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.0.poll_readable(cx)).await;
    }
}

impl InputStream for StdinView {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.0.read(size).map(Bytes::from)
    }
}

/// The guest's stdout or stderr, as its WASI context holds it.
pub struct GuestStdout(Pipe);

impl Drop for GuestStdout {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl IsTerminal for GuestStdout {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStdout {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(StdoutView(self.0.clone()))
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(StdoutView(self.0.clone()))
    }
}

/// A stream the guest opened on its stdout or stderr.
struct StdoutView(Pipe);

impl AsyncWrite for StdoutView {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_write_from(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StdoutView {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.0.poll_writable(cx)).await;
    }
}

impl OutputStream for StdoutView {
    /// Only ever called with at most `check_write` bytes, which all fit.
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let n = self.0.write(&bytes)?;
        if n < bytes.len() {
            return Err(StreamError::trap("wrote more than check_write permitted"));
        }
        Ok(())
    }

    /// Bytes are visible to the host as soon as they are written.
    fn flush(&mut self) -> StreamResult<()> {
        self.0.room().map(drop)
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.0.room()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_both_ways_and_drops_close() {
        let io = GuestStdio::new(16);
        let GuestStdio {
            mut stdin,
            mut stdout,
            stderr: _,
            guest_stdin,
            guest_stdout,
            guest_stderr: _,
        } = io;
        let mut input = guest_stdin.p2_stream();
        assert!(input.read(10).unwrap().is_empty(), "nothing queued yet");
        stdin.write_all(b"hello").await.unwrap();
        input.ready().await;
        assert_eq!(&input.read(10).unwrap()[..], b"hello");

        let mut output = guest_stdout.p2_stream();
        assert_eq!(output.check_write().unwrap(), 16);
        output.write(Bytes::from_static(b"world")).unwrap();
        let mut buf = [0u8; 5];
        stdout.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"world");

        // A full pipe makes the writer wait, and reading frees it.
        output.write(Bytes::from(vec![b'x'; 16])).unwrap();
        assert_eq!(output.check_write().unwrap(), 0);
        let mut big = [0u8; 16];
        stdout.read_exact(&mut big).await.unwrap();
        output.ready().await;
        assert_eq!(output.check_write().unwrap(), 16);

        // The host closing stdin is end-of-file for the guest; the guest's owner going away is
        // end-of-file for the host.
        drop(stdin);
        input.ready().await;
        assert!(matches!(input.read(1), Err(StreamError::Closed)));
        drop(output);
        drop(guest_stdout);
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
