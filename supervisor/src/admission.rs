//! Admission: which runs may start, and when. Owns the worker slots, the bounded queue in front
//! of them, the count of runs in flight that a drain waits for, and the drain itself (no new
//! runs; then, past its deadline, every run still in flight stopped with the reason).
//!
//! Rules, in order, for a run that arrives:
//! 1. While draining, it is refused (`shutting_down`).
//! 2. A free slot: it starts at once.
//! 3. Else, if fewer than `queue_capacity` runs wait, it waits in the queue until a slot frees,
//!    its wall-clock limit passes (`timeout`), its client goes away (`cancelled`) or the service
//!    stops (`shutting_down`).
//! 4. Else it is refused at once (`busy`).
//!
//! Delegated (child) runs never take a worker slot and never wait: a parent holds its slot
//! while it waits for its children, so a child that waited for a slot could wait for ever
//! once every slot is held by a waiting parent. A child takes one of `[workers] max_delegated`
//! child places at once or is refused (`delegation`, a tool error its parent's LLM sees). A
//! slot therefore stands for one tree: its root and at most its root agent's
//! `max_descendants` (≤ 256) descendants, all bounded by `max_delegated` across trees.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use caxton_ipc::api::{ErrorBody, ErrorKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Why the drain stopped waiting for in-flight runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// `[workers] drain_timeout` passed.
    DrainDeadline(Duration),
    /// A second SIGTERM/SIGINT asked to stop at once.
    SecondSignal,
}

impl Abort {
    /// The failure message of a run cut short by the shutdown.
    pub fn message(self, agent: &str) -> String {
        match self {
            Abort::DrainDeadline(d) => format!(
                "agent `{agent}`: the service shut down and stopped the run after its drain deadline ({}s, [workers] drain_timeout)",
                d.as_secs()
            ),
            Abort::SecondSignal => format!(
                "agent `{agent}`: the service was told to stop at once (a second stop signal during the drain) and stopped the run"
            ),
        }
    }
}

/// Why a run was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Busy,
    /// Waited its whole limit in the queue.
    Timeout(Duration),
    ClientGone,
    ShuttingDown,
}

impl Refusal {
    /// The error the caller gets, naming the agent and the knobs.
    pub fn error(&self, agent: &str, admission: &Admission) -> ErrorBody {
        match self {
            Refusal::Busy => ErrorBody::new(
                ErrorKind::Busy,
                format!(
                    "busy: all {} worker slots are in use and {} runs are already queued; retry later, or raise [workers] max_concurrent / queue_capacity",
                    admission.max_concurrent, admission.queue_capacity
                ),
            ),
            Refusal::Timeout(limit) => ErrorBody::new(
                ErrorKind::Timeout,
                format!(
                    "agent `{agent}`: waited {}ms in the queue for a worker slot without getting one",
                    limit.as_millis()
                ),
            ),
            Refusal::ClientGone => ErrorBody::new(
                ErrorKind::Cancelled,
                "the client went away while the run was queued",
            ),
            Refusal::ShuttingDown => ErrorBody::new(
                ErrorKind::ShuttingDown,
                "the service is shutting down and accepts no new runs",
            ),
        }
    }
}

/// The admission state of the service.
#[derive(Debug)]
pub struct Admission {
    /// One permit per worker that may run at once (`[workers] max_concurrent`); closed when the
    /// drain gives up, so queued runs are refused rather than started.
    slots: Arc<Semaphore>,
    max_concurrent: u32,
    /// Runs waiting for a slot now.
    queued: AtomicUsize,
    /// Most runs that may wait (`[workers] queue_capacity`).
    queue_capacity: u32,
    /// Runs in flight (queued or running), watched by the drain.
    in_flight: watch::Sender<usize>,
    /// Set when the drain starts: no new runs.
    draining: AtomicBool,
    /// Set when the drain stops waiting: every run still in flight ends now, with the reason.
    abort: watch::Sender<Option<Abort>>,
    /// One permit per delegated run in progress (`[workers] max_delegated`).
    children: Arc<Semaphore>,
    max_delegated: u32,
}

/// A run counted in flight, from its arrival to its end; the drain waits for these.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Admission);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n -= 1);
    }
}

/// Leaves the queue count when waiting ends.
struct Queued<'a>(&'a Admission);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    pub fn new(max_concurrent: u32, queue_capacity: u32, max_delegated: u32) -> Admission {
        Admission {
            children: Arc::new(Semaphore::new(max_delegated as usize)),
            max_delegated,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1) as usize)),
            max_concurrent,
            queued: AtomicUsize::new(0),
            queue_capacity,
            in_flight: watch::channel(0).0,
            draining: AtomicBool::new(false),
            abort: watch::channel(None).0,
        }
    }

    /// Counts a run in flight (before the draining check, so a drain that starts now waits for
    /// it); `Err` while draining.
    pub fn arrive(&self) -> Result<InFlight<'_>, Refusal> {
        self.in_flight.send_modify(|n| *n += 1);
        let flight = InFlight(self);
        if self.draining.load(Ordering::SeqCst) {
            return Err(Refusal::ShuttingDown);
        }
        Ok(flight)
    }

    /// A worker slot for a run that may wait up to `limit`, and not after `gone` resolves (its
    /// client went away).
    pub async fn admit(
        &self,
        limit: Duration,
        gone: impl Future<Output = ()>,
    ) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.queue_capacity as usize {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Busy);
        }
        let _queued = Queued(self);
        let acquire = async {
            tokio::select! {
                p = self.slots.clone().acquire_owned() => p.map_err(|_| Refusal::ShuttingDown),
                () = gone => Err(Refusal::ClientGone),
            }
        };
        tokio::time::timeout(limit, acquire)
            .await
            .unwrap_or(Err(Refusal::Timeout(limit)))
    }

    /// A place for a delegated run, now or never (see the module's rules); `None` when all
    /// `max_delegated` are taken or the service is draining.
    pub fn admit_child(&self) -> Option<OwnedSemaphorePermit> {
        if self.draining.load(Ordering::SeqCst) {
            return None;
        }
        self.children.clone().try_acquire_owned().ok()
    }

    pub fn max_delegated(&self) -> u32 {
        self.max_delegated
    }

    /// Runs waiting for a slot now.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn queue_capacity(&self) -> u32 {
        self.queue_capacity
    }

    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent
    }

    pub fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts the drain: no new runs from now on.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Waits until no run is in flight.
    pub async fn drained(&self) {
        let mut watch = self.in_flight.subscribe();
        let _ = watch.wait_for(|n| *n == 0).await;
    }

    /// Stops waiting: every run still in flight ends now, whatever its phase, with `why`; queued
    /// runs are refused.
    pub fn abort(&self, why: Abort) {
        self.abort.send_replace(Some(why));
        self.slots.close();
    }

    /// Why the drain stopped waiting, if it did.
    pub fn aborting(&self) -> Option<Abort> {
        *self.abort.borrow()
    }

    /// Resolves when the drain stops waiting, with the reason.
    pub async fn aborted(&self) -> Abort {
        let mut rx = self.abort.subscribe();
        let abort = match rx.wait_for(Option::is_some).await {
            Ok(a) => *a,
            Err(_) => None,
        };
        match abort {
            Some(a) => a,
            // The sender lives as long as the service: never closed while a run waits.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks `a` for a slot for a client that stays, waiting at most `limit`.
    async fn admit_staying(
        a: &Admission,
        limit: Duration,
    ) -> Result<OwnedSemaphorePermit, Refusal> {
        a.admit(limit, std::future::pending()).await
    }

    #[tokio::test]
    async fn slots_then_queue_then_busy() {
        let a = Admission::new(1, 1, 1);
        let _f1 = a.arrive().unwrap();
        let first = admit_staying(&a, Duration::from_secs(1)).await.unwrap();
        // The second waits in the queue; the third is refused at once.
        let second = admit_staying(&a, Duration::from_secs(5));
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut second)
                .await
                .is_err()
        );
        assert_eq!(a.queue_depth(), 1);
        assert_eq!(
            admit_staying(&a, Duration::from_secs(1)).await.unwrap_err(),
            Refusal::Busy
        );
        drop(first);
        let _second = second.await.unwrap();
        assert_eq!(a.queue_depth(), 0);
    }

    #[tokio::test]
    async fn a_queued_run_times_out_or_is_cancelled() {
        let a = Admission::new(1, 4, 1);
        let _held = admit_staying(&a, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            admit_staying(&a, Duration::from_millis(20))
                .await
                .unwrap_err(),
            Refusal::Timeout(Duration::from_millis(20))
        );
        assert_eq!(
            a.admit(Duration::from_secs(5), async {}).await.unwrap_err(),
            Refusal::ClientGone
        );
    }

    #[tokio::test]
    async fn the_drain_refuses_newcomers_and_the_abort_stops_the_queue() {
        let a = Admission::new(1, 4, 1);
        let flight = a.arrive().unwrap();
        let _held = admit_staying(&a, Duration::from_secs(1)).await.unwrap();
        a.start_drain();
        assert_eq!(a.arrive().unwrap_err(), Refusal::ShuttingDown);
        assert_eq!(a.in_flight(), 1);
        a.abort(Abort::SecondSignal);
        assert_eq!(a.aborted().await, Abort::SecondSignal);
        assert_eq!(
            admit_staying(&a, Duration::from_secs(1)).await.unwrap_err(),
            Refusal::ShuttingDown
        );
        drop(flight);
        a.drained().await;
    }
}
