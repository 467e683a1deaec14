//! Operator policies: a Lua script decides per request whether it is allowed and in which
//! rate-limit bucket; this module loads it (sandboxed VMs on threads of their own, see
//! `runner`), reloads it live when the folder changes or on SIGHUP (compile, run the canned
//! requests and the script's own tests off the serving threads within a deadline, then
//! swap), and enforces the decision with governor. A failing `decide` is never a silent
//! "no limit": it is counted, logged with its line, and either refused or served under the
//! fallback limit.

mod limits;
mod pattern;
mod runner;
mod vm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use limits::{Buckets, Limited};
pub use runner::RunnerStats;
use vm::Vm;
pub use vm::{PolicyError, Script, TestCase, VmLimits};

/// What the script sees as `req` (read-only in Lua).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyRequest {
    /// Tenant of the key pair that signed the URL.
    pub tenant: Option<String>,
    /// API key from `X-Api-Key`, `Authorization: Bearer`, or `?key=`.
    pub key: Option<String>,
    /// Client address (forwarded headers honoured only from trusted proxies).
    pub ip: String,
    pub method: String,
    pub path: String,
    pub source_host: Option<String>,
    pub source_url: Option<String>,
    /// Output format when the URL or `Accept` decided it (`webp`, `jpeg`, ...).
    pub format: Option<String>,
    /// Requested output size in pixels (after `dpr`), when the URL sets it.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

/// A rate limit: `rate` requests per `per` seconds, `burst` at once, this request costs `cost`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub bucket: String,
    pub rate: f64,
    pub per: f64,
    pub burst: u32,
    pub cost: u32,
    /// `per / rate`: the time one cell takes to come back.
    pub period: Duration,
}

/// A refusal by `decide`: what the client is answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// 401, 402, 403 or 429.
    pub status: u16,
    /// Written by the operator for clients (e.g. "upgrade your plan").
    pub reason: String,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
}

/// The checked return value of `decide`.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow(Option<Limit>),
    Deny(Refusal),
}

impl Decision {
    /// The decision as `pixgate policy eval` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Decision::Allow(None) => serde_json::json!({ "allow": true }),
            Decision::Allow(Some(l)) => serde_json::json!({
                "allow": true, "bucket": l.bucket, "rate": l.rate, "per": l.per,
                "burst": l.burst, "cost": l.cost,
            }),
            Decision::Deny(Refusal {
                status,
                reason,
                retry_after,
            }) => serde_json::json!({
                "allow": false, "status": status, "reason": reason, "retry_after": retry_after,
            }),
        }
    }
}

/// What happens when `decide` fails at run time (error, budget, bad table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Allow,
    Deny,
}

/// Policy settings from the configuration.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub file: PathBuf,
    pub on_error: OnError,
    pub limits: VmLimits,
    pub max_buckets: usize,
    /// Threads running `decide` (0 = the number of cores).
    pub threads: usize,
    /// With `on_error = "allow"`: requests per second each API key (or client address,
    /// without a key) may make while `decide` fails; `None`: unlimited.
    pub error_rate: Option<f64>,
}

/// How long a reload (reading, compiling, canned requests, the script's tests) may take
/// before it is given up and the running policy kept.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of [`Policy::check`].
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow,
    Deny(Refusal),
    Limited(Limited),
    /// `decide` failed and `on_error = "deny"`.
    Failed(PolicyError),
}

/// Counters of decisions and reloads; `changed` wakes tests waiting for a reload.
#[derive(Default)]
pub struct PolicyStats {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub limited: AtomicU64,
    /// `decide` failed (error, budget, deadline, bad decision).
    pub errors: AtomicU64,
    /// Requests refused because `decide` failed and `on_error = "deny"`.
    pub failed: AtomicU64,
    /// Requests refused by the fallback limit while `decide` failed.
    pub fallback_limited: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    changed: tokio::sync::Notify,
}

impl PolicyStats {
    /// Resolves once `pred` holds (checked after every reload attempt).
    pub async fn wait_until(&self, pred: impl Fn(&PolicyStats) -> bool) {
        loop {
            let notified = self.changed.notified();
            if pred(self) {
                return;
            }
            notified.await;
        }
    }
}

struct Loaded {
    script: Script,
    generation: u64,
}

/// A loaded policy with its threads and buckets.
pub struct Policy {
    settings: PolicySettings,
    current: Arc<RwLock<Arc<Loaded>>>,
    generation: AtomicU64,
    runner: runner::Runner,
    pub buckets: Buckets,
    pub stats: PolicyStats,
    /// When the last "policy failed" line was logged, and how many failures since.
    failure_log: Mutex<(Option<Instant>, u64)>,
}

/// Largest policy or module file, and all of them together.
const MAX_FILE: u64 = 4 << 20;
const MAX_TOTAL: u64 = 32 << 20;

/// The folder `require` reads modules from: the policy file's own (`policy.lua`, a bare
/// name, lives in the current folder).
fn policy_root(file: &Path) -> &Path {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Reads the policy file and every `.lua` file below its folder (the modules `require` may
/// load), so all VMs of one generation run the same code.
pub fn read_script(file: &Path) -> Result<Script, PolicyError> {
    let read = |p: &Path| -> Result<String, PolicyError> {
        let meta =
            std::fs::metadata(p).map_err(|e| PolicyError(format!("{}: {e}", p.display())))?;
        if meta.len() > MAX_FILE {
            return Err(PolicyError(format!(
                "{}: larger than {} bytes",
                p.display(),
                MAX_FILE
            )));
        }
        std::fs::read_to_string(p).map_err(|e| PolicyError(format!("{}: {e}", p.display())))
    };
    let source = read(file)?;
    let root = policy_root(file);
    let mut modules = HashMap::new();
    let mut total = source.len() as u64;
    let mut dirs = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, prefix, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if !stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            let name = format!("{prefix}{stem}");
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && depth < 4 {
                dirs.push((path, format!("{name}."), depth + 1));
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "lua") {
                let text = read(&path)?;
                total += text.len() as u64;
                if total > MAX_TOTAL {
                    return Err(PolicyError(format!(
                        "{}: the policy folder holds more than {MAX_TOTAL} bytes of Lua",
                        root.display()
                    )));
                }
                modules.insert(name, (format!("@{}", path.display()), text));
            }
        }
    }
    Ok(Script {
        name: format!("@{}", file.display()),
        source,
        modules,
    })
}

/// Requests every new script must answer with a valid decision before it replaces the old
/// one: anonymous, keyed, signed, IPv6, an upload, odd sizes.
pub fn canned_requests() -> Vec<PolicyRequest> {
    let base = PolicyRequest {
        ip: "203.0.113.7".into(),
        method: "GET".into(),
        path: "/insecure/rs:fit:300:200/plain/https://img.example.com/a.jpg".into(),
        source_host: Some("img.example.com".into()),
        source_url: Some("https://img.example.com/a.jpg".into()),
        format: Some("webp".into()),
        width: Some(300),
        height: Some(200),
        ..PolicyRequest::default()
    };
    vec![
        base.clone(),
        PolicyRequest {
            key: Some("pixgate-canned-key".into()),
            referer: Some("https://www.example.com/page".into()),
            user_agent: Some("Mozilla/5.0".into()),
            ..base.clone()
        },
        PolicyRequest {
            tenant: Some("default".into()),
            ip: "2001:db8::1".into(),
            format: None,
            width: None,
            height: None,
            ..base.clone()
        },
        PolicyRequest {
            method: "POST".into(),
            path: "/upload/insecure/rs:fit:100:100".into(),
            source_host: None,
            source_url: None,
            width: Some(100),
            height: Some(100),
            ..base.clone()
        },
        PolicyRequest {
            ip: "127.0.0.1".into(),
            path: "/insecure/plain/local:///seeding.jpg".into(),
            source_host: None,
            source_url: Some("local:///seeding.jpg".into()),
            width: Some(8192),
            height: None,
            ..base
        },
    ]
}

/// What [`check_script`] found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Every canned request and the decision it got.
    pub decisions: Vec<(PolicyRequest, Decision)>,
    /// The script's own tests, by name, each with its decision.
    pub tests: Vec<(String, Decision)>,
    /// Lines of `decide` that none of the script's tests ran (with coverage only).
    pub uncovered: Vec<usize>,
    /// `file:line` of `decide`.
    pub decide_at: String,
}

/// Compiles `script`, runs the canned requests and the script's own tests: the whole check
/// a reload does. Fails on the first canned request without a valid decision and on every
/// failing test (all of them named). `coverage` also records which lines of `decide` the
/// tests reached (for `pixgate policy check`).
pub fn check_script(
    script: &Script,
    limits: VmLimits,
    coverage: bool,
) -> Result<CheckReport, PolicyError> {
    let vm = if coverage {
        Vm::with_coverage(script, limits)?
    } else {
        Vm::new(script, 0, limits, Arc::new(vm::CallClock::default()))?
    };
    let mut decisions = Vec::new();
    for r in canned_requests() {
        let d = vm.decide(&r).map_err(|e| {
            PolicyError(format!(
                "{e} (canned request: {} {} from {})",
                r.method, r.path, r.ip
            ))
        })?;
        decisions.push((r, d));
    }
    let cases = vm.tests()?;
    let total = cases.len();
    vm.reset_coverage();
    let mut tests = Vec::new();
    let mut failures = Vec::new();
    for case in cases {
        match vm.decide(&case.request) {
            Ok(d) => {
                if let Some(why) = vm::expectation_failure(&d, &case.expect) {
                    failures.push(format!("test `{}`: {why}", case.name));
                }
                tests.push((case.name, d));
            }
            Err(e) => failures.push(format!("test `{}`: {e}", case.name)),
        }
    }
    if !failures.is_empty() {
        return Err(PolicyError(format!(
            "{} of {total} tests failed: {}",
            failures.len(),
            failures.join("; ")
        )));
    }
    let uncovered = if coverage && !tests.is_empty() {
        vm.uncovered_lines()
    } else {
        Vec::new()
    };
    Ok(CheckReport {
        decisions,
        tests,
        uncovered,
        decide_at: vm.decide_at().to_string(),
    })
}

/// Runs `decide` once in a fresh VM (for `pixgate policy eval`).
pub fn eval_once(
    script: &Script,
    limits: VmLimits,
    req: &PolicyRequest,
) -> Result<Decision, PolicyError> {
    Vm::new(script, 0, limits, Arc::new(vm::CallClock::default()))?.decide(req)
}

/// Runs `work` on a thread of its own and waits at most `timeout` for it; the thread is left
/// behind when it is late (its VM stops at its own deadline). For the tools and reloads.
pub fn within<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    work: impl FnOnce() -> Result<T, PolicyError> + Send + 'static,
) -> Result<T, PolicyError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("policy-check".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| PolicyError(format!("cannot start a thread: {e}")))?;
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(PolicyError(format!(
            "{what} took longer than {} s",
            timeout.as_secs_f64()
        )))
    })
}

impl Policy {
    /// Loads the file; fails when it does not compile or fails the canned requests or its
    /// own tests.
    pub fn load(settings: PolicySettings) -> Result<Policy, PolicyError> {
        let script = read_script(&settings.file)?;
        let (s, limits) = (script.clone(), settings.limits);
        within(RELOAD_TIMEOUT, "loading the policy", move || {
            check_script(&s, limits, false)
        })?;
        let threads = if settings.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            settings.threads
        };
        let current = Arc::new(RwLock::new(Arc::new(Loaded {
            script,
            generation: 1,
        })));
        Ok(Policy {
            buckets: Buckets::new(settings.max_buckets),
            runner: runner::Runner::start(current.clone(), settings.limits, threads),
            settings,
            current,
            generation: AtomicU64::new(1),
            stats: PolicyStats::default(),
            failure_log: Mutex::new((None, 0)),
        })
    }

    pub fn file(&self) -> &Path {
        &self.settings.file
    }

    /// Increases by one with every successful reload (1 after the first load).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Threads serving `decide` now.
    pub fn threads(&self) -> usize {
        self.runner.threads()
    }

    /// The watchdog's counters.
    pub fn runner_stats(&self) -> &RunnerStats {
        &self.runner.stats
    }

    /// How long a request waits for its decision: the call's own timeout, plus room for the
    /// queue and a VM being built after a reload.
    fn wait(&self) -> Duration {
        self.settings.limits.timeout * 4 + Duration::from_millis(100)
    }

    /// Runs `decide` on a policy thread, for callers outside an async runtime.
    pub fn decide_blocking(&self, req: &PolicyRequest) -> Result<Decision, PolicyError> {
        self.runner.decide_blocking(req.clone())
    }

    /// Decides and enforces: the one call the request path makes.
    pub async fn check(&self, req: &PolicyRequest) -> Verdict {
        let decided = self.runner.decide(req.clone(), self.wait()).await;
        self.enforce(req, decided)
    }

    /// [`Policy::check`] outside an async runtime.
    pub fn check_blocking(&self, req: &PolicyRequest) -> Verdict {
        let decided = self.decide_blocking(req);
        self.enforce(req, decided)
    }

    fn enforce(&self, req: &PolicyRequest, decided: Result<Decision, PolicyError>) -> Verdict {
        let s = &self.stats;
        match decided {
            Err(e) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                self.log_failure(&e);
                match self.settings.on_error {
                    OnError::Allow => match self.fallback_limit(req) {
                        Some(l) => match self.buckets.check(&l) {
                            Ok(()) => Verdict::Allow,
                            Err(limited) => {
                                s.fallback_limited.fetch_add(1, Ordering::Relaxed);
                                Verdict::Limited(limited)
                            }
                        },
                        None => Verdict::Allow,
                    },
                    OnError::Deny => {
                        s.failed.fetch_add(1, Ordering::Relaxed);
                        Verdict::Failed(e)
                    }
                }
            }
            Ok(Decision::Deny(refusal)) => {
                s.denied.fetch_add(1, Ordering::Relaxed);
                Verdict::Deny(refusal)
            }
            Ok(Decision::Allow(limit)) => {
                if let Some(l) = limit {
                    if let Err(limited) = self.buckets.check(&l) {
                        s.limited.fetch_add(1, Ordering::Relaxed);
                        return Verdict::Limited(limited);
                    }
                }
                s.allowed.fetch_add(1, Ordering::Relaxed);
                Verdict::Allow
            }
        }
    }

    /// While `decide` fails, each key (or address) gets `error_rate` requests a second.
    fn fallback_limit(&self, req: &PolicyRequest) -> Option<Limit> {
        let rate = self
            .settings
            .error_rate
            .filter(|r| *r > 0.0 && r.is_finite())?;
        let bucket = match &req.key {
            Some(k) => format!("policy-error:key:{k}"),
            None => format!("policy-error:ip:{}", req.ip),
        };
        Some(Limit {
            bucket,
            rate,
            per: 1.0,
            burst: (rate * 2.0).ceil().clamp(1.0, 1e9) as u32,
            cost: 1,
            period: Duration::from_secs_f64(1.0 / rate),
        })
    }

    /// One log line a second at most, with how many failures it stands for.
    fn log_failure(&self, e: &PolicyError) {
        let mut log = self.failure_log.lock().unwrap_or_else(|p| p.into_inner());
        log.1 += 1;
        if log.0.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        let failures = std::mem::take(&mut log.1);
        log.0 = Some(Instant::now());
        drop(log);
        let safe = match (self.settings.on_error, self.settings.error_rate) {
            (OnError::Deny, _) => "refused (503)".to_string(),
            (OnError::Allow, Some(r)) => format!("served within {r}/s per key or address"),
            (OnError::Allow, None) => "served without limit (policy_error_rate = 0)".to_string(),
        };
        tracing::warn!(error = %e, failures, then = %safe, "policy failed");
    }

    /// Reads, compiles and checks the files again (canned requests and the script's own
    /// tests, on a thread of its own within [`RELOAD_TIMEOUT`]); swaps only when all of
    /// that passed. `Ok(None)`: nothing changed (and `force` was off).
    pub fn reload(&self, force: bool) -> Result<Option<u64>, PolicyError> {
        let result = self.try_reload(force);
        match &result {
            Ok(Some(generation)) => {
                self.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation, file = %self.settings.file.display(), "policy loaded");
            }
            Ok(None) => {}
            Err(e) => {
                self.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, generation = self.generation(), "policy reload failed: keeping the running policy");
            }
        }
        self.stats.changed.notify_waiters();
        result
    }

    fn try_reload(&self, force: bool) -> Result<Option<u64>, PolicyError> {
        let script = read_script(&self.settings.file)?;
        let unchanged = self.current.read().expect("not poisoned").script == script;
        if unchanged && !force {
            return Ok(None);
        }
        // Checked on a thread of its own, bounded in time: a script whose top level or tests
        // never end is refused while requests go on with the running one.
        let (s, limits) = (script.clone(), self.settings.limits);
        within(RELOAD_TIMEOUT, "checking the new policy", move || {
            check_script(&s, limits, false)
        })?;
        let mut current = self.current.write().expect("not poisoned");
        let generation = current.generation + 1;
        *current = Arc::new(Loaded { script, generation });
        self.generation.store(generation, Ordering::Release);
        Ok(Some(generation))
    }

    /// [`Policy::reload`] on a blocking thread: the runtime keeps serving meanwhile.
    async fn reload_off_runtime(self: Arc<Self>, force: bool) {
        let _ = tokio::task::spawn_blocking(move || self.reload(force)).await;
    }

    /// Reloads on changes in the policy folder and on SIGHUP; sweeps idle buckets. The file
    /// watcher and the signal handler are installed by this call, before the returned future
    /// first runs: an edit (or SIGHUP) that follows "ready" is never missed. The future runs
    /// until it is dropped or its task aborted. Call it inside the runtime.
    pub fn watch(self: Arc<Self>) -> impl std::future::Future<Output = ()> + Send + 'static {
        use notify::{EventKind, RecursiveMode, Watcher};
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let root = policy_root(&self.settings.file).to_path_buf();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Reading the files during a reload produces access events; only changes count.
            if let Ok(ev) = ev {
                if matches!(
                    ev.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                ) {
                    let _ = tx.try_send(());
                }
            }
        });
        let _watcher = match watcher {
            Ok(mut w) => match w.watch(&root, RecursiveMode::Recursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %root.display(), "cannot watch the policy folder; reload with SIGHUP");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher; reload the policy with SIGHUP");
                None
            }
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        async move {
            let _watcher = _watcher;
            let mut sweep = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    Some(()) = rx.recv() => {
                        // Editors save in several steps (truncate, write, rename): wait for the
                        // folder to be quiet for 50 ms, then read it once.
                        while let Ok(Some(())) =
                            tokio::time::timeout(Duration::from_millis(50), rx.recv()).await
                        {}
                        self.clone().reload_off_runtime(false).await;
                    }
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                        self.clone().reload_off_runtime(true).await;
                    }
                    _ = sweep.tick() => self.buckets.sweep(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
