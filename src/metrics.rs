//! Every metric pixgate exports, declared in one place, and the `/metrics` text. Label values
//! come only from closed sets (routes, status classes, stages, stable error codes, formats,
//! outcomes): never a key, URL, host or address. Counters kept elsewhere as atomics (gate,
//! caches, policy) are copied in at scrape time, so the request path pays nothing for them.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::cache::CacheStats;
use crate::cpu::GateStats;
use crate::format::Format;

/// Request duration buckets: 1 ms (a cache hit) to 30 s (a slow origin plus a big decode).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Stage buckets reach lower: a policy call or a queue wait is microseconds.
const STAGE_BUCKETS: &[f64] = &[
    0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// What a request was for (the `route` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Transform,
    Info,
    Upload,
    Health,
    Other,
}

impl Route {
    const ALL: [Route; 5] = [
        Route::Transform,
        Route::Info,
        Route::Upload,
        Route::Health,
        Route::Other,
    ];
    fn name(self) -> &'static str {
        match self {
            Route::Transform => "transform",
            Route::Info => "info",
            Route::Upload => "upload",
            Route::Health => "health",
            Route::Other => "other",
        }
    }
}

/// How an origin fetch ended (the `outcome` label); `error::fetch_outcome` classifies
/// failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    Ok,
    ClientError,
    ServerError,
    Timeout,
    Blocked,
    TooLarge,
    Error,
}

impl FetchOutcome {
    const ALL: [FetchOutcome; 7] = [
        FetchOutcome::Ok,
        FetchOutcome::ClientError,
        FetchOutcome::ServerError,
        FetchOutcome::Timeout,
        FetchOutcome::Blocked,
        FetchOutcome::TooLarge,
        FetchOutcome::Error,
    ];
    fn name(self) -> &'static str {
        match self {
            FetchOutcome::Ok => "ok",
            FetchOutcome::ClientError => "4xx",
            FetchOutcome::ServerError => "5xx",
            FetchOutcome::Timeout => "timeout",
            FetchOutcome::Blocked => "blocked",
            FetchOutcome::TooLarge => "too_large",
            FetchOutcome::Error => "error",
        }
    }
}

/// Pipeline stages (the `stage` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Policy,
    Fetch,
    Queue,
    Decode,
    Transform,
    Encode,
}

impl Stage {
    const ALL: [Stage; 6] = [
        Stage::Policy,
        Stage::Fetch,
        Stage::Queue,
        Stage::Decode,
        Stage::Transform,
        Stage::Encode,
    ];
    fn name(self) -> &'static str {
        match self {
            Stage::Policy => "policy",
            Stage::Fetch => "fetch",
            Stage::Queue => "queue",
            Stage::Decode => "decode",
            Stage::Transform => "transform",
            Stage::Encode => "encode",
        }
    }
}

/// Counters read from the parts that keep their own, at scrape time.
pub struct Sources<'a> {
    pub gate: &'a GateStats,
    /// The gate's memory budget, bytes.
    pub memory_budget: u64,
    pub caches: [(&'static str, &'a CacheStats, u64, u64); 3],
    pub policy: Option<&'a crate::policy::Policy>,
}

pub struct Metrics {
    registry: Registry,
    /// `[route][status class 1..=5 - 1]`, resolved once: the hot path does no label lookup.
    requests: Vec<[IntCounter; 5]>,
    duration: Vec<Histogram>,
    stages: Vec<Histogram>,
    in_flight: IntGauge,
    /// Connections closed by the server: `per_ip` (at accept, over the address's cap) and
    /// `idle` (nothing in flight for `keep_alive_timeout`).
    pub connections_closed: IntCounterVec,
    pub connections_open: IntGauge,
    response_bytes: IntCounter,
    formats: IntCounterVec,
    errors: IntCounterVec,
    origin_fetches: IntCounterVec,
    origin_bytes: IntCounter,
    // Copied in at scrape time.
    gate_queue: IntGauge,
    gate_busy: IntGauge,
    gate_jobs: IntCounter,
    gate_rejected: IntCounter,
    gate_panics: IntCounter,
    gate_memory_reserved: IntGauge,
    gate_memory_budget: IntGauge,
    gate_overruns: IntCounter,
    gate_overrun_seconds: prometheus::Counter,
    cache_requests: IntCounterVec,
    cache_evictions: IntCounterVec,
    cache_bytes: IntGaugeVec,
    cache_entries: IntGaugeVec,
    policy_decisions: IntCounterVec,
    policy_errors: IntCounter,
    policy_abandoned: IntCounter,
    policy_replaced: IntCounter,
    policy_threads: IntGauge,
    policy_reloads: IntCounterVec,
    policy_generation: IntGauge,
    scrape: Mutex<()>,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram_vec(r: &Registry, name: &str, help: &str, label: &str, b: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(b.to_vec()), &[label])
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let requests_vec = counter_vec(
            &r,
            "pixgate_http_requests_total",
            "Requests answered, by route and status class.",
            &["route", "status_class"],
        );
        let requests = Route::ALL
            .iter()
            .map(|route| {
                ["1xx", "2xx", "3xx", "4xx", "5xx"]
                    .map(|class| requests_vec.with_label_values(&[route.name(), class]))
            })
            .collect();
        let duration_vec = histogram_vec(
            &r,
            "pixgate_http_request_duration_seconds",
            "Time from request head to response head, by route.",
            "route",
            BUCKETS,
        );
        let duration = Route::ALL
            .iter()
            .map(|route| duration_vec.with_label_values(&[route.name()]))
            .collect();
        let stage_vec = histogram_vec(
            &r,
            "pixgate_stage_duration_seconds",
            "Time spent per pipeline stage (policy per request; the others per produced result).",
            "stage",
            STAGE_BUCKETS,
        );
        let stages = Stage::ALL
            .iter()
            .map(|s| stage_vec.with_label_values(&[s.name()]))
            .collect();
        let build = gauge_vec(
            &r,
            "pixgate_build_info",
            "Always 1; the labels say which build runs.",
            &["version", "git_hash"],
        );
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::GIT_HASH])
            .set(1);
        let m = Metrics {
            requests,
            duration,
            stages,
            in_flight: gauge(
                &r,
                "pixgate_http_requests_in_flight",
                "Requests being served now.",
            ),
            connections_closed: counter_vec(
                &r,
                "pixgate_http_connections_closed_total",
                "Connections the server closed: per_ip (address over its cap at accept), idle (no request in flight for keep_alive_timeout).",
                &["reason"],
            ),
            connections_open: gauge(
                &r,
                "pixgate_http_connections_open",
                "Client connections open now.",
            ),
            response_bytes: counter(
                &r,
                "pixgate_http_response_bytes_total",
                "Response body bytes sent.",
            ),
            formats: counter_vec(
                &r,
                "pixgate_output_images_total",
                "Images served, by output format.",
                &["format"],
            ),
            errors: counter_vec(
                &r,
                "pixgate_errors_total",
                "Error responses, by stable error code.",
                &["code"],
            ),
            origin_fetches: counter_vec(
                &r,
                "pixgate_origin_fetches_total",
                "Source fetches (source cache misses), by outcome.",
                &["outcome"],
            ),
            origin_bytes: counter(
                &r,
                "pixgate_origin_fetched_bytes_total",
                "Source bytes fetched.",
            ),
            gate_queue: gauge(
                &r,
                "pixgate_cpu_queue_depth",
                "Pixel jobs waiting for a worker.",
            ),
            gate_busy: gauge(
                &r,
                "pixgate_cpu_busy_workers",
                "Workers running a pixel job.",
            ),
            gate_jobs: counter(&r, "pixgate_cpu_jobs_total", "Pixel jobs started."),
            gate_rejected: counter(
                &r,
                "pixgate_cpu_rejected_total",
                "Pixel jobs refused because the queue was full (503).",
            ),
            gate_panics: counter(
                &r,
                "pixgate_cpu_panics_total",
                "Pixel jobs that panicked (500).",
            ),
            gate_memory_reserved: gauge(
                &r,
                "pixgate_cpu_memory_reserved_bytes",
                "Memory budget held by running pixel jobs (their estimates).",
            ),
            gate_memory_budget: gauge(
                &r,
                "pixgate_cpu_memory_budget_bytes",
                "The memory budget of pixel jobs (memory_budget).",
            ),
            gate_overruns: counter(
                &r,
                "pixgate_cpu_overruns_total",
                "Pixel jobs that ended after their request's deadline.",
            ),
            gate_overrun_seconds: {
                let c = prometheus::Counter::new(
                    "pixgate_cpu_overrun_seconds_total",
                    "How long pixel jobs ran past their deadlines, in all.",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            cache_requests: counter_vec(
                &r,
                "pixgate_cache_requests_total",
                "Cache lookups by cache (result, source) and outcome (hit, miss, coalesced).",
                &["cache", "outcome"],
            ),
            cache_evictions: counter_vec(
                &r,
                "pixgate_cache_evictions_total",
                "Entries removed by the cache, by cause (size, expired).",
                &["cache", "cause"],
            ),
            cache_bytes: gauge_vec(
                &r,
                "pixgate_cache_size_bytes",
                "Bytes held (weighted size).",
                &["cache"],
            ),
            cache_entries: gauge_vec(&r, "pixgate_cache_entries", "Entries held.", &["cache"]),
            policy_decisions: counter_vec(
                &r,
                "pixgate_policy_decisions_total",
                "Policy outcomes: allow, deny, limited (by the policy's bucket or, while decide fails, by policy_error_rate), error (decide failed).",
                &["outcome"],
            ),
            policy_errors: counter(
                &r,
                "pixgate_policy_errors_total",
                "decide() failures (Lua error, budget, memory, bad table).",
            ),
            policy_abandoned: counter(
                &r,
                "pixgate_policy_abandoned_total",
                "decide() calls the watchdog told to stop (past their deadline).",
            ),
            policy_replaced: counter(
                &r,
                "pixgate_policy_threads_replaced_total",
                "Policy threads given up as stuck and replaced.",
            ),
            policy_threads: gauge(&r, "pixgate_policy_threads", "Threads running decide()."),
            policy_reloads: counter_vec(
                &r,
                "pixgate_policy_reloads_total",
                "Policy reload attempts that changed something, by result (ok, failed).",
                &["result"],
            ),
            policy_generation: gauge(
                &r,
                "pixgate_policy_generation",
                "Generation of the running policy (1 after start, +1 per successful reload).",
            ),
            scrape: Mutex::new(()),
            registry: r,
        };
        // Series of the closed sets exist from the start at 0, so rate() and alerts see the
        // first event instead of a series appearing.
        for outcome in FetchOutcome::ALL {
            m.origin_fetches.with_label_values(&[outcome.name()]);
        }
        for f in Format::ALL {
            m.formats.with_label_values(&[f.ext()]);
        }
        for reason in ["per_ip", "idle"] {
            m.connections_closed.with_label_values(&[reason]);
        }
        for outcome in ["allow", "deny", "limited", "error"] {
            m.policy_decisions.with_label_values(&[outcome]);
        }
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        m
    }

    /// A request finished.
    pub fn request(&self, route: Route, status: u16, elapsed: Duration, bytes: u64) {
        let i = Route::ALL.iter().position(|r| *r == route).unwrap_or(0);
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.requests[i][class].inc();
        self.duration[i].observe(elapsed.as_secs_f64());
        self.response_bytes.inc_by(bytes);
    }

    pub fn stage(&self, stage: Stage, took: Duration) {
        let i = Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
        self.stages[i].observe(took.as_secs_f64());
    }

    /// Counts requests in flight for as long as the guard lives (a client hanging up drops
    /// the request future, and the guard with it).
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub fn error(&self, code: &'static str) {
        self.errors.with_label_values(&[code]).inc();
    }

    /// Creates the series of an error code at 0 (dashboards and alerts on a code see its
    /// first occurrence instead of a series appearing).
    pub fn error_series(&self, code: &'static str) {
        self.errors.with_label_values(&[code]);
    }

    pub fn image(&self, format: Format) {
        self.formats.with_label_values(&[format.ext()]).inc();
    }

    /// One origin fetch: its bytes, or how it failed.
    pub fn fetch(&self, result: Result<u64, FetchOutcome>) {
        let outcome = match result {
            Ok(bytes) => {
                self.origin_bytes.inc_by(bytes);
                FetchOutcome::Ok
            }
            Err(o) => o,
        };
        self.origin_fetches
            .with_label_values(&[outcome.name()])
            .inc();
    }

    /// The Prometheus text exposition, with the atomics of `src` copied in.
    pub fn render(&self, src: &Sources<'_>) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let _one_scrape_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let set = |c: &IntCounter, v: u64| {
            c.reset();
            c.inc_by(v);
        };
        self.gate_queue.set(src.gate.waiting.load(Relaxed) as i64);
        self.gate_busy.set(src.gate.busy.load(Relaxed) as i64);
        set(&self.gate_jobs, src.gate.jobs.load(Relaxed));
        set(&self.gate_rejected, src.gate.rejected.load(Relaxed));
        set(&self.gate_panics, src.gate.panics.load(Relaxed));
        self.gate_memory_reserved
            .set(i64::try_from(src.gate.reserved_bytes.load(Relaxed)).unwrap_or(i64::MAX));
        self.gate_memory_budget
            .set(i64::try_from(src.memory_budget).unwrap_or(i64::MAX));
        set(&self.gate_overruns, src.gate.overruns.load(Relaxed));
        self.gate_overrun_seconds.reset();
        self.gate_overrun_seconds
            .inc_by(src.gate.overrun_micros.load(Relaxed) as f64 / 1e6);
        for (name, stats, bytes, entries) in &src.caches {
            for (outcome, v) in [
                ("hit", &stats.hits),
                ("miss", &stats.misses),
                ("coalesced", &stats.coalesced),
            ] {
                set(
                    &self.cache_requests.with_label_values(&[name, outcome]),
                    v.load(Relaxed),
                );
            }
            for (cause, v) in [("size", &stats.evicted), ("expired", &stats.expired)] {
                set(
                    &self.cache_evictions.with_label_values(&[name, cause]),
                    v.load(Relaxed),
                );
            }
            self.cache_bytes
                .with_label_values(&[name])
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
            self.cache_entries
                .with_label_values(&[name])
                .set(i64::try_from(*entries).unwrap_or(i64::MAX));
        }
        if let Some(p) = src.policy {
            let s = &p.stats;
            for (outcome, v) in [
                ("allow", &s.allowed),
                ("deny", &s.denied),
                ("limited", &s.limited),
                ("error", &s.errors),
            ] {
                set(
                    &self.policy_decisions.with_label_values(&[outcome]),
                    v.load(Relaxed),
                );
            }
            set(&self.policy_errors, s.errors.load(Relaxed));
            let w = p.runner_stats();
            set(&self.policy_abandoned, w.abandoned.load(Relaxed));
            set(&self.policy_replaced, w.replaced.load(Relaxed));
            self.policy_threads
                .set(i64::try_from(p.threads()).unwrap_or(i64::MAX));
            set(
                &self.policy_reloads.with_label_values(&["ok"]),
                s.reloads_ok.load(Relaxed),
            );
            set(
                &self.policy_reloads.with_label_values(&["failed"]),
                s.reloads_failed.load(Relaxed),
            );
            self.policy_generation
                .set(i64::try_from(p.generation()).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

pub struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
