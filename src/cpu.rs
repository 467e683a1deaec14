//! The one gate all pixel work goes through: a bounded queue (full → 503 with Retry-After) in
//! front of a fixed number of worker permits, each job on a blocking thread so the async
//! workers never decode. A panicking job becomes an error and a count, never a dead process.
//! Jobs run to completion once started even if the caller goes away, so a shared result (the
//! cache's coalesced fill) is never cancelled by one impatient client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a job did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    #[error("the processing queue is full")]
    QueueFull,
    #[error("the request deadline passed while waiting for a worker")]
    Deadline,
    #[error("a pixel job panicked: {0}")]
    Panicked(String),
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct GateStats {
    pub jobs: AtomicU64,
    pub panics: AtomicU64,
    pub rejected: AtomicU64,
    pub busy: AtomicUsize,
    pub waiting: AtomicUsize,
    /// Signalled whenever `busy` or `waiting` changes (gauges, tests).
    pub changed: tokio::sync::Notify,
}

impl GateStats {
    fn add(&self, counter: &AtomicUsize, up: bool) {
        if up {
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
        self.changed.notify_waiters();
    }

    /// Waits until `cond(busy, waiting)` holds.
    pub async fn wait_until(&self, cond: impl Fn(usize, usize) -> bool) {
        loop {
            let changed = self.changed.notified();
            if cond(
                self.busy.load(Ordering::Relaxed),
                self.waiting.load(Ordering::Relaxed),
            ) {
                return;
            }
            changed.await;
        }
    }
}

/// Bounded queue + worker permits.
pub struct CpuGate {
    /// Workers plus queue slots: a request that cannot get one is turned away at once.
    admission: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    pub stats: Arc<GateStats>,
    pub workers_total: usize,
}

impl CpuGate {
    pub fn new(workers: usize, queue: usize) -> CpuGate {
        let workers = workers.max(1);
        CpuGate {
            admission: Arc::new(Semaphore::new(workers + queue)),
            workers: Arc::new(Semaphore::new(workers)),
            stats: Arc::new(GateStats::default()),
            workers_total: workers,
        }
    }

    /// Runs `job` on a blocking thread once a worker is free, unless the queue is full or the
    /// deadline passes first.
    pub async fn run<T, F>(&self, deadline: Instant, job: F) -> Result<T, GateError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_timed(deadline, job).await.map(|(v, _)| v)
    }

    /// [`CpuGate::run`], also saying how long the job waited for a worker.
    pub async fn run_timed<T, F>(
        &self,
        deadline: Instant,
        job: F,
    ) -> Result<(T, std::time::Duration), GateError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot: OwnedSemaphorePermit = match self.admission.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(GateError::QueueFull);
            }
        };
        self.stats.add(&self.stats.waiting, true);
        let queued = Instant::now();
        let worker =
            tokio::time::timeout_at(deadline.into(), self.workers.clone().acquire_owned()).await;
        self.stats.add(&self.stats.waiting, false);
        let waited = queued.elapsed();
        let worker = match worker {
            Ok(Ok(w)) => w,
            _ => return Err(GateError::Deadline),
        };
        let stats = self.stats.clone();
        stats.add(&stats.busy, true);
        stats.jobs.fetch_add(1, Ordering::Relaxed);
        let handle = tokio::task::spawn_blocking(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            // Permits are released when the work is done, not when the caller stops waiting.
            drop(worker);
            drop(slot);
            stats.add(&stats.busy, false);
            out
        });
        match handle.await {
            Ok(Ok(v)) => Ok((v, waited)),
            Ok(Err(panic)) => {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(GateError::Panicked(msg))
            }
            Err(e) => Err(GateError::Panicked(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Starts a job that holds the worker until released; returns once it is running.
    async fn hold_worker(
        gate: &Arc<CpuGate>,
    ) -> (
        tokio::task::JoinHandle<Result<i32, GateError>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let g = gate.clone();
        let job = tokio::spawn(async move {
            g.run(far(), move || {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                1
            })
            .await
        });
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        (job, release_tx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_overflow_is_refused_and_slots_come_back() {
        let gate = Arc::new(CpuGate::new(1, 1));
        let (first, release_tx) = hold_worker(&gate).await;
        let g = gate.clone();
        let second = tokio::spawn(async move { g.run(far(), || 2).await });
        // The second job holds the only queue slot once it is waiting for the worker.
        gate.stats.wait_until(|_, waiting| waiting == 1).await;
        assert_eq!(gate.run(far(), || 3).await, Err(GateError::QueueFull));
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(1));
        assert_eq!(second.await.unwrap(), Ok(2));
        assert_eq!(gate.run(far(), || 4).await, Ok(4));
        assert_eq!(gate.stats.rejected.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_gate_survives() {
        let gate = CpuGate::new(1, 0);
        let r: Result<(), _> = gate.run(far(), || panic!("boom")).await;
        assert_eq!(r, Err(GateError::Panicked("boom".into())));
        assert_eq!(gate.stats.panics.load(Ordering::Relaxed), 1);
        assert_eq!(gate.run(far(), || 5).await, Ok(5));
    }

    #[tokio::test]
    async fn the_deadline_bounds_the_wait() {
        let gate = Arc::new(CpuGate::new(1, 1));
        let (first, release_tx) = hold_worker(&gate).await;
        let past = Instant::now();
        assert_eq!(gate.run(past, || ()).await, Err(GateError::Deadline));
        release_tx.send(()).unwrap();
        first.await.unwrap().unwrap();
    }
}
