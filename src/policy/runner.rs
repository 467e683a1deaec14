//! Where `decide` runs: a few dedicated threads, each with its own VM of the current
//! generation, fed through a bounded queue, never the async runtime. A call is bounded in
//! wall time by its VM (the instruction hook and the budgeted string functions check the
//! call's deadline); a watchdog thread covers what no check can see: it tells a late VM to
//! give up, and replaces a thread that stays stuck (inside C code, say) so the pool keeps
//! its size. The caller waits for its answer with a timeout of its own, so even a stuck
//! thread costs a request its deadline, not the server its runtime.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::vm::{CallClock, Vm, VmLimits};
use super::{Decision, Loaded, PolicyError, PolicyRequest};

/// One request for a decision.
struct Call {
    req: PolicyRequest,
    reply: tokio::sync::oneshot::Sender<Result<Decision, PolicyError>>,
}

struct Worker {
    clock: Arc<CallClock>,
    /// Set by the watchdog when this thread was replaced: it exits after its call.
    retired: AtomicBool,
    /// Set by the watchdog when it gave this thread up as stuck.
    lost: AtomicBool,
    abandoned: AtomicBool,
}

struct Shared {
    rx: Receiver<Call>,
    current: Arc<RwLock<Arc<Loaded>>>,
    limits: VmLimits,
    workers: Mutex<Vec<Arc<Worker>>>,
    /// Threads given up as stuck and still alive.
    stuck: AtomicU64,
    size: usize,
}

/// Counters of the watchdog.
#[derive(Default)]
pub struct RunnerStats {
    /// Calls the watchdog told to stop (late past their deadline).
    pub abandoned: AtomicU64,
    /// Threads replaced because they stayed stuck.
    pub replaced: AtomicU64,
}

pub struct Runner {
    tx: Sender<Call>,
    shared: Arc<Shared>,
    pub stats: Arc<RunnerStats>,
}

/// Calls waiting for a thread; beyond this a request gets `on_error` at once.
const QUEUE: usize = 4096;

impl Runner {
    pub(super) fn start(
        current: Arc<RwLock<Arc<Loaded>>>,
        limits: VmLimits,
        threads: usize,
    ) -> Runner {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let shared = Arc::new(Shared {
            rx,
            current,
            limits,
            workers: Mutex::new(Vec::new()),
            stuck: AtomicU64::new(0),
            size: threads.max(1),
        });
        for _ in 0..shared.size {
            spawn_worker(&shared);
        }
        let stats = Arc::new(RunnerStats::default());
        let weak = Arc::downgrade(&shared);
        let s = stats.clone();
        let _ = std::thread::Builder::new()
            .name("policy-watchdog".into())
            .spawn(move || watchdog(weak, s));
        Runner { tx, shared, stats }
    }

    fn submit(
        &self,
        req: PolicyRequest,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Decision, PolicyError>>, PolicyError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        match self.tx.try_send(Call { req, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(PolicyError(format!(
                "{QUEUE} policy calls are already waiting"
            ))),
            Err(TrySendError::Disconnected(_)) => Err(PolicyError("no policy threads".into())),
        }
    }

    /// A decision within `wait` (which bounds the queue wait and the call together).
    pub async fn decide(
        &self,
        req: PolicyRequest,
        wait: Duration,
    ) -> Result<Decision, PolicyError> {
        let rx = self.submit(req)?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(PolicyError("the policy thread gave the call up".into())),
            Err(_) => Err(PolicyError(format!(
                "no policy decision within {} ms",
                wait.as_millis()
            ))),
        }
    }

    /// [`Runner::decide`] for callers outside an async runtime (benchmarks, tools, tests).
    pub fn decide_blocking(&self, req: PolicyRequest) -> Result<Decision, PolicyError> {
        let rx = self.submit(req)?;
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(PolicyError("the policy thread gave the call up".into())))
    }

    /// Threads serving now (stuck ones not counted).
    pub fn threads(&self) -> usize {
        self.shared.workers.lock().map_or(0, |w| w.len())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Workers exit when the queue closes (this sender is the only one) or at their next
        // idle check.
        if let Ok(w) = self.shared.workers.lock() {
            for worker in w.iter() {
                worker.retired.store(true, Ordering::Relaxed);
            }
        }
    }
}

fn spawn_worker(shared: &Arc<Shared>) {
    let worker = Arc::new(Worker {
        clock: Arc::new(CallClock::default()),
        retired: AtomicBool::new(false),
        lost: AtomicBool::new(false),
        abandoned: AtomicBool::new(false),
    });
    if let Ok(mut w) = shared.workers.lock() {
        w.push(worker.clone());
    }
    let shared = Arc::downgrade(shared);
    let rx = match shared.upgrade() {
        Some(s) => s.rx.clone(),
        None => return,
    };
    let _ = std::thread::Builder::new()
        .name("policy".into())
        .spawn(move || work(shared, rx, worker));
}

fn work(shared: Weak<Shared>, rx: Receiver<Call>, me: Arc<Worker>) {
    let mut vm: Option<Vm> = None;
    while !me.retired.load(Ordering::Relaxed) {
        let call = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(c) => c,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        if call.reply.is_closed() {
            continue;
        }
        let Some(s) = shared.upgrade() else {
            return;
        };
        let loaded = s.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        let limits = s.limits;
        drop(s);
        if vm.as_ref().map(|v| v.generation) != Some(loaded.generation) {
            vm = None;
            match Vm::new(&loaded.script, loaded.generation, limits, me.clock.clone()) {
                Ok(v) => vm = Some(v),
                Err(e) => {
                    let _ = call.reply.send(Err(e));
                    continue;
                }
            }
        }
        let Some(v) = &vm else {
            continue;
        };
        let result = v.decide(&call.req);
        // A VM that failed may hold half-updated state or be near its memory cap: drop it.
        if result.is_err() || me.abandoned.swap(false, Ordering::Relaxed) {
            vm = None;
        }
        let _ = call.reply.send(result);
    }
    if me.lost.load(Ordering::Relaxed)
        && let Some(s) = shared.upgrade()
    {
        // Back from wherever it was stuck: room for another replacement.
        s.stuck.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Looks at every thread's running call a few times a second: past its deadline by its
/// timeout → told to give up; past it by ten times that and a second → given up itself and
/// replaced (as many times as the pool has threads; beyond that, calls wait and time out).
fn watchdog(shared: Weak<Shared>, stats: Arc<RunnerStats>) {
    const TICK: Duration = Duration::from_millis(20);
    loop {
        std::thread::sleep(TICK);
        let Some(s) = shared.upgrade() else {
            return;
        };
        let grace = s.limits.timeout;
        let give_up = s.limits.timeout * 10 + Duration::from_secs(1);
        let now = Instant::now();
        let mut lost = Vec::new();
        if let Ok(workers) = s.workers.lock() {
            for (i, w) in workers.iter().enumerate() {
                let Some(deadline) = w.clock.deadline() else {
                    continue;
                };
                let late = now.saturating_duration_since(deadline);
                if late > grace && !w.abandoned.swap(true, Ordering::Relaxed) {
                    w.clock.abandon();
                    stats.abandoned.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        late_ms = late.as_millis() as u64,
                        "policy call past its deadline: abandoned"
                    );
                }
                if late > give_up {
                    lost.push(i);
                }
            }
        }
        for i in lost.into_iter().rev() {
            let worker = s.workers.lock().ok().map(|mut w| w.remove(i));
            if let Some(w) = worker {
                w.lost.store(true, Ordering::Relaxed);
                w.retired.store(true, Ordering::Relaxed);
            }
            let stuck = s.stuck.fetch_add(1, Ordering::Relaxed) + 1;
            if stuck as usize <= s.size {
                spawn_worker(&s);
                stats.replaced.fetch_add(1, Ordering::Relaxed);
                tracing::error!("a policy thread is stuck past its deadline: replaced");
            } else {
                tracing::error!(
                    "a policy thread is stuck past its deadline and too many already are: not replaced"
                );
            }
        }
    }
}
