//! The one gate all pixel work goes through: a bounded queue (full → 503 with Retry-After) in
//! front of a memory budget and a fixed number of worker permits, each job on a blocking
//! thread so the async workers never decode. A job is admitted once its estimated bytes fit
//! in the budget (so N concurrent worst cases cannot exceed it) and a worker is free, both
//! waited for in arrival order up to the deadline. A panicking job becomes an error and a
//! count, never a dead process. Jobs run once started even if the caller goes away, so a
//! shared result (the cache's coalesced fill) is never cancelled by one impatient client;
//! the job itself stops at its deadline (see `pixels::deadline`), and one that ends late is
//! counted and logged with how late.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a job did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    #[error("the processing queue is full")]
    QueueFull,
    #[error("the request deadline passed while waiting for a worker or for memory")]
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
    /// Bytes of the memory budget held by admitted jobs (their estimates).
    pub reserved_bytes: AtomicU64,
    /// Jobs that finished after their deadline, and by how much in all (µs).
    pub overruns: AtomicU64,
    pub overrun_micros: AtomicU64,
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

/// The memory budget is counted in units of this many bytes (semaphore permits).
const MEMORY_UNIT: u64 = 1 << 20;

/// Bounded queue + memory budget + worker permits.
pub struct CpuGate {
    /// Workers plus queue slots: a request that cannot get one is turned away at once.
    admission: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    /// The memory budget in MiB; each job holds its estimate while it runs.
    memory: Arc<Semaphore>,
    memory_units: u32,
    pub stats: Arc<GateStats>,
    pub workers_total: usize,
}

impl CpuGate {
    /// `memory_budget`: bytes of pixel buffers all running jobs may hold together, by their
    /// estimates.
    pub fn new(workers: usize, queue: usize, memory_budget: u64) -> CpuGate {
        let workers = workers.max(1);
        let units = (memory_budget / MEMORY_UNIT).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        CpuGate {
            admission: Arc::new(Semaphore::new(workers + queue)),
            workers: Arc::new(Semaphore::new(workers)),
            memory: Arc::new(Semaphore::new(units as usize)),
            memory_units: units,
            stats: Arc::new(GateStats::default()),
            workers_total: workers,
        }
    }

    /// The budget, in bytes.
    pub fn memory_budget(&self) -> u64 {
        u64::from(self.memory_units) * MEMORY_UNIT
    }

    /// Runs `job` on a blocking thread once a worker is free, unless the queue is full or the
    /// deadline passes first.
    pub async fn run<T, F>(&self, deadline: Instant, job: F) -> Result<T, GateError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_timed(deadline, 0, job).await.map(|(v, _)| v)
    }

    /// [`CpuGate::run`] for a job estimated to hold `bytes` at its peak (a job larger than
    /// the whole budget runs alone), also saying how long it waited.
    pub async fn run_timed<T, F>(
        &self,
        deadline: Instant,
        bytes: u64,
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
        let units = bytes
            .div_ceil(MEMORY_UNIT)
            .clamp(1, u64::from(self.memory_units)) as u32;
        // Memory first, then a worker: a job waiting for room never idles a worker.
        let permits = tokio::time::timeout_at(deadline.into(), async {
            let memory = self.memory.clone().acquire_many_owned(units).await?;
            let worker = self.workers.clone().acquire_owned().await?;
            Ok::<_, tokio::sync::AcquireError>((memory, worker))
        })
        .await;
        self.stats.add(&self.stats.waiting, false);
        let waited = queued.elapsed();
        let (memory, worker) = match permits {
            Ok(Ok(p)) => p,
            _ => return Err(GateError::Deadline),
        };
        let reserved = u64::from(units) * MEMORY_UNIT;
        let stats = self.stats.clone();
        stats.reserved_bytes.fetch_add(reserved, Ordering::Relaxed);
        stats.add(&stats.busy, true);
        stats.jobs.fetch_add(1, Ordering::Relaxed);
        let handle = tokio::task::spawn_blocking(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let late = Instant::now().saturating_duration_since(deadline);
            if !late.is_zero() {
                stats.overruns.fetch_add(1, Ordering::Relaxed);
                stats
                    .overrun_micros
                    .fetch_add(late.as_micros() as u64, Ordering::Relaxed);
                tracing::warn!(
                    late_ms = (late.as_secs_f64() * 10_000.0).round() / 10.0,
                    "pixel job ended after its deadline"
                );
            } else {
                tracing::debug!(late_ms = 0.0, "pixel job ended");
            }
            // Permits are released when the work is done, not when the caller stops waiting.
            drop(worker);
            drop(memory);
            drop(slot);
            stats.reserved_bytes.fetch_sub(reserved, Ordering::Relaxed);
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
        let gate = Arc::new(CpuGate::new(1, 1, 1 << 30));
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
        let gate = CpuGate::new(1, 0, 1 << 30);
        let r: Result<(), _> = gate.run(far(), || panic!("boom")).await;
        assert_eq!(r, Err(GateError::Panicked("boom".into())));
        assert_eq!(gate.stats.panics.load(Ordering::Relaxed), 1);
        assert_eq!(gate.run(far(), || 5).await, Ok(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_wait_for_room_in_the_memory_budget() {
        // Two workers, but room for one 600 MiB job at a time in a 1 GiB budget.
        let gate = Arc::new(CpuGate::new(2, 4, 1 << 30));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let g = gate.clone();
        let first = tokio::spawn(async move {
            g.run_timed(far(), 600 << 20, move || {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                1
            })
            .await
            .map(|(v, _)| v)
        });
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        assert_eq!(gate.stats.reserved_bytes.load(Ordering::Relaxed), 600 << 20);
        let g = gate.clone();
        let second = tokio::spawn(async move { g.run_timed(far(), 600 << 20, || 2).await });
        gate.stats
            .wait_until(|busy, waiting| busy == 1 && waiting == 1)
            .await;
        // Room is handed out in arrival order (no large job starves behind small ones), and a
        // job that cannot get room before its deadline is refused.
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            gate.run_timed(soon, 600 << 20, || 4).await.map(|(v, _)| v),
            Err(GateError::Deadline)
        );
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(1));
        assert_eq!(second.await.unwrap().unwrap().0, 2);
        // Larger than the whole budget: runs alone rather than never.
        assert_eq!(gate.run_timed(far(), 8 << 30, || 5).await.unwrap().0, 5);
        assert_eq!(gate.stats.reserved_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_deadline_bounds_the_wait() {
        let gate = Arc::new(CpuGate::new(1, 1, 1 << 30));
        let (first, release_tx) = hold_worker(&gate).await;
        let past = Instant::now();
        assert_eq!(gate.run(past, || ()).await, Err(GateError::Deadline));
        release_tx.send(()).unwrap();
        first.await.unwrap().unwrap();
    }
}
