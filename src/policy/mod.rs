//! Operator policies: a Lua script decides per request whether it is allowed and in which
//! rate-limit bucket; this module loads it (sandboxed, pooled VMs), reloads it live when the
//! folder changes or on SIGHUP (compile, run canned requests, then swap), and enforces the
//! decision with governor.

mod limits;
mod vm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use limits::{Buckets, Limited};
use vm::Vm;
pub use vm::{PolicyError, Script, VmLimits};

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

/// The checked return value of `decide`.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow(Option<Limit>),
    Deny {
        status: u16,
        reason: String,
        retry_after: Option<u64>,
    },
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
            Decision::Deny {
                status,
                reason,
                retry_after,
            } => serde_json::json!({
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
}

/// The outcome of [`Policy::check`].
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow,
    Deny {
        status: u16,
        reason: String,
        retry_after: Option<u64>,
    },
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
    pub errors: AtomicU64,
    /// Requests refused because `decide` failed and `on_error = "deny"`.
    pub failed: AtomicU64,
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

/// A loaded policy with its VM pool and buckets.
pub struct Policy {
    settings: PolicySettings,
    current: RwLock<Arc<Loaded>>,
    generation: AtomicU64,
    /// Idle VMs of the current generation. Each call takes one out, so concurrent requests
    /// never share a VM and the lock is held only for a push or pop.
    pool: Mutex<Vec<Vm>>,
    pool_cap: usize,
    pub buckets: Buckets,
    pub stats: PolicyStats,
}

/// Largest policy or module file, and all of them together.
const MAX_FILE: u64 = 4 << 20;
const MAX_TOTAL: u64 = 32 << 20;

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
    let root = file.parent().unwrap_or(Path::new("."));
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

/// Compiles `script` and runs the canned requests: the whole check a reload does.
pub fn check_script(
    script: &Script,
    limits: VmLimits,
) -> Result<Vec<(PolicyRequest, Decision)>, PolicyError> {
    let vm = Vm::new(script, 0, limits)?;
    canned_requests()
        .into_iter()
        .map(|r| {
            let d = vm.decide(&r).map_err(|e| {
                PolicyError(format!(
                    "{e} (canned request: {} {} from {})",
                    r.method, r.path, r.ip
                ))
            })?;
            Ok((r, d))
        })
        .collect()
}

/// Runs `decide` once in a fresh VM (for `pixgate policy eval`).
pub fn eval_once(
    script: &Script,
    limits: VmLimits,
    req: &PolicyRequest,
) -> Result<Decision, PolicyError> {
    Vm::new(script, 0, limits)?.decide(req)
}

impl Policy {
    /// Loads the file; fails when it does not compile or fails the canned requests.
    pub fn load(settings: PolicySettings) -> Result<Policy, PolicyError> {
        let script = read_script(&settings.file)?;
        check_script(&script, settings.limits)?;
        let pool_cap = std::thread::available_parallelism().map_or(4, |n| n.get() * 2);
        Ok(Policy {
            buckets: Buckets::new(settings.max_buckets),
            settings,
            current: RwLock::new(Arc::new(Loaded {
                script,
                generation: 1,
            })),
            generation: AtomicU64::new(1),
            pool: Mutex::new(Vec::new()),
            pool_cap,
            stats: PolicyStats::default(),
        })
    }

    pub fn file(&self) -> &Path {
        &self.settings.file
    }

    /// Increases by one with every successful reload (1 after the first load).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `decide` in a pooled VM of the current generation.
    pub fn decide(&self, req: &PolicyRequest) -> Result<Decision, PolicyError> {
        let generation = self.generation();
        let vm = loop {
            let popped = self.pool.lock().expect("not poisoned").pop();
            match popped {
                Some(vm) if vm.generation == generation => break vm,
                Some(stale) => drop(stale),
                None => {
                    let current = self.current.read().expect("not poisoned").clone();
                    break Vm::new(&current.script, current.generation, self.settings.limits)?;
                }
            }
        };
        let result = vm.decide(req);
        // A VM that failed may hold half-updated state or be near its memory cap: drop it.
        if result.is_ok() && vm.generation == self.generation() {
            let mut pool = self.pool.lock().expect("not poisoned");
            if pool.len() < self.pool_cap {
                pool.push(vm);
            }
        }
        result
    }

    /// Decides and enforces: the one call the request path makes.
    pub fn check(&self, req: &PolicyRequest) -> Verdict {
        let s = &self.stats;
        match self.decide(req) {
            Err(e) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, on_error = ?self.settings.on_error, "policy failed");
                match self.settings.on_error {
                    OnError::Allow => {
                        s.allowed.fetch_add(1, Ordering::Relaxed);
                        Verdict::Allow
                    }
                    OnError::Deny => {
                        s.failed.fetch_add(1, Ordering::Relaxed);
                        Verdict::Failed(e)
                    }
                }
            }
            Ok(Decision::Deny {
                status,
                reason,
                retry_after,
            }) => {
                s.denied.fetch_add(1, Ordering::Relaxed);
                Verdict::Deny {
                    status,
                    reason,
                    retry_after,
                }
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

    /// Reads, compiles and checks the files again; swaps only when all of that passed.
    /// `Ok(None)`: nothing changed (and `force` was off).
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
        // Compiled outside the lock: requests building VMs keep the running script meanwhile.
        check_script(&script, self.settings.limits)?;
        let mut current = self.current.write().expect("not poisoned");
        let generation = current.generation + 1;
        *current = Arc::new(Loaded { script, generation });
        self.generation.store(generation, Ordering::Release);
        drop(current);
        self.pool.lock().expect("not poisoned").clear();
        Ok(Some(generation))
    }

    /// Reloads on changes in the policy folder and on SIGHUP; sweeps idle buckets. Runs until
    /// the task is aborted.
    pub async fn watch(self: Arc<Self>) {
        use notify::{EventKind, RecursiveMode, Watcher};
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let root = self
            .settings
            .file
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
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
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                Some(()) = rx.recv() => {
                    // Editors save in several steps (truncate, write, rename): wait for the
                    // folder to be quiet for 50 ms, then read it once.
                    while let Ok(Some(())) =
                        tokio::time::timeout(Duration::from_millis(50), rx.recv()).await
                    {}
                    let _ = self.reload(false);
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.reload(true);
                }
                _ = sweep.tick() => self.buckets.sweep(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
