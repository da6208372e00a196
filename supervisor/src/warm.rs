//! Pre-spawned workers: a few `caxton-worker` processes started ahead of demand, each waiting for
//! its one job on stdin, so a run does not wait for process creation. Every worker still serves
//! exactly one run and exits; the pool is refilled in the background after each take.

use std::sync::{Arc, Mutex};

use crate::spawn::{self, ChildSpec, ManagedChild, SpawnError};

pub struct WarmWorkers {
    spec: ChildSpec,
    target: usize,
    idle: Mutex<Vec<ManagedChild>>,
}

impl WarmWorkers {
    /// A pool that keeps `target` workers ready (0 = spawn on demand only).
    pub fn new(spec: ChildSpec, target: usize) -> Arc<WarmWorkers> {
        Arc::new(WarmWorkers {
            spec,
            target,
            idle: Mutex::new(Vec::with_capacity(target)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ManagedChild>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Workers ready right now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    /// A fresh worker: a ready one if there is one still alive, else a newly spawned one.
    pub fn take(self: &Arc<Self>) -> Result<ManagedChild, SpawnError> {
        let ready = loop {
            let Some(mut child) = self.lock().pop() else {
                break None;
            };
            // One that died while waiting (killed from outside) is discarded.
            if child.has_exited() {
                continue;
            }
            break Some(child);
        };
        if self.target > 0 {
            let pool = self.clone();
            tokio::spawn(async move { pool.refill() });
        }
        let (source, child) = match ready {
            Some(child) => ("ready", child),
            None => ("spawned", self.spawn_now()?),
        };
        metrics::counter!(crate::metrics::WORKERS_TAKEN, "source" => source).increment(1);
        Ok(child)
    }

    /// A newly spawned worker, bypassing the pool.
    pub fn spawn_now(&self) -> Result<ManagedChild, SpawnError> {
        spawn_timed(&self.spec)
    }

    /// Spawns workers until `target` are ready.
    pub fn refill(&self) {
        while self.idle() < self.target {
            match spawn_timed(&self.spec) {
                Ok(child) => self.lock().push(child),
                Err(e) => {
                    tracing::warn!(error = %e, cause = %e.source, "cannot pre-spawn a worker");
                    return;
                }
            }
        }
    }

    /// Kills the ready workers (at shutdown); dropping a worker kills its process group.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Starts one worker, its start time recorded.
fn spawn_timed(spec: &ChildSpec) -> Result<ManagedChild, SpawnError> {
    let started = std::time::Instant::now();
    let child = spawn::spawn(spec)?;
    metrics::histogram!(crate::metrics::WORKER_SPAWN).record(started.elapsed().as_secs_f64());
    Ok(child)
}
