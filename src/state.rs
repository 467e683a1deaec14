//! What every request shares, built once at startup: configuration, origin, CPU gate,
//! caches, policy and metrics; its construction (the policy loaded, the watermark fetched),
//! the source lookup through the source cache, and the `/metrics` text.

use std::sync::Arc;

use crate::cache::Store;
use crate::config::Config;
use crate::cpu::CpuGate;
use crate::error::{self, Error};
use crate::metrics::Metrics;
use crate::origin::{Origin, OriginError, SourceBytes};
use crate::pixels;
use crate::policy::{Policy, PolicyError};
use crate::request::url::{ParsedRequest, Source, UrlContext};
use crate::response::CachedResult;

/// Everything a request needs, built once at startup.
pub struct State {
    pub config: Config,
    pub origin: Origin,
    pub gate: CpuGate,
    /// Encoded results by (canonical options, format decision, source URL).
    pub results: Store<[u8; 32], CachedResult, Error>,
    /// Fetched sources by URL.
    pub sources: Store<String, SourceBytes, Error>,
    /// Results of JSON uploads behind their short-lived URLs (same capacity and lifetime
    /// as the source cache: the source tier).
    pub uploads: Store<String, SourceBytes, Error>,
    /// Bytes of upload bodies held at once, in KiB: uploads are read before the CPU gate,
    /// so this is their back-pressure (503 when full).
    pub upload_budget: Arc<tokio::sync::Semaphore>,
    /// The operator's Lua policy; `None` allows everything.
    pub policy: Option<Arc<Policy>>,
    pub metrics: Metrics,
}

/// Why the server cannot start with this configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the policy does not load: {0}")]
    Policy(#[from] PolicyError),
    #[error("watermark_url {url}: {reason}")]
    Watermark { url: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen for metrics on {addr}: {source} (set metrics_listen, or \"\" to disable)"
    )]
    MetricsListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl StartError {
    /// The exit status of `pixgate serve`: 2 for a configuration the operator must fix, 1
    /// for the machine (a port in use).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Policy(_) | StartError::Watermark { .. } => 2,
            StartError::Listen { .. } | StartError::MetricsListen { .. } => 1,
        }
    }
}

impl State {
    /// The state for `config`: the policy compiled, the watermark fetched (once, through the
    /// origin's rules) and decoded into the engine configuration.
    pub async fn start(config: Config) -> Result<State, StartError> {
        let mut state = State::new(config)?;
        if let Some(url) = state.config.watermark_url().map(str::to_string) {
            let image =
                state
                    .fetch_watermark(&url)
                    .await
                    .map_err(|reason| StartError::Watermark {
                        url: url.clone(),
                        reason,
                    })?;
            state.config.engine.watermark = Some(Arc::new(image));
        }
        Ok(state)
    }

    fn new(config: Config) -> Result<State, PolicyError> {
        let c = &config;
        let policy = match &c.policy {
            Some(settings) => Some(Arc::new(Policy::load(settings.clone())?)),
            None => None,
        };
        Ok(State {
            policy,
            metrics: {
                let m = Metrics::new();
                crate::error::preregister(&m);
                m
            },
            origin: Origin::new(c),
            gate: CpuGate::new(c.workers, c.queue_size, c.memory_budget),
            results: Store::new(
                c.cache_size,
                c.cache_ttl,
                Some(c.cache_tti),
                c.cache_max_entry_fraction,
            ),
            sources: Store::new(c.source_cache_size, c.source_cache_ttl, None, 0.5),
            uploads: Store::new(c.source_cache_size, c.source_cache_ttl, None, 1.0),
            upload_budget: Arc::new(tokio::sync::Semaphore::new(
                kib(c.upload_buffer_size) as usize
            )),
            config,
        })
    }

    async fn fetch_watermark(&self, url: &str) -> Result<image::RgbaImage, String> {
        let source = match url.strip_prefix("local://") {
            Some(path) => Source::Local(path.to_string()),
            None => Source::Http(url.to_string()),
        };
        let src = self
            .origin
            .fetch(&source, None)
            .await
            .map_err(|e| e.to_string())?;
        pixels::decode_watermark(&src.bytes).map_err(|e| e.to_string())
    }

    /// The `/metrics` text: this state's metrics with its gate, caches and policy counters.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&crate::metrics::Sources {
            gate: &self.gate.stats,
            memory_budget: self.gate.memory_budget(),
            caches: [
                (
                    "result",
                    &self.results.stats,
                    self.results.weighted_size(),
                    self.results.entry_count(),
                ),
                (
                    "source",
                    &self.sources.stats,
                    self.sources.weighted_size(),
                    self.sources.entry_count(),
                ),
                (
                    "upload",
                    &self.uploads.stats,
                    self.uploads.weighted_size(),
                    self.uploads.entry_count(),
                ),
            ],
            policy: self.policy.as_deref(),
        })
    }

    pub fn url_context(&self, now_unix: i64) -> UrlContext<'_> {
        self.config.url_context(now_unix)
    }

    /// The source, from the source cache or the origin (one fetch for concurrent callers).
    pub async fn source(self: &Arc<Self>, req: &ParsedRequest) -> Result<Arc<SourceBytes>, Error> {
        let state = self.clone();
        let source = req.source.clone();
        let (src, _) = self
            .sources
            .get_or_fill(source.url(), async move {
                let r = state.origin.fetch(&source, None).await;
                state.metrics.fetch(
                    r.as_ref()
                        .map(|s| s.bytes.len() as u64)
                        .map_err(error::fetch_outcome),
                );
                Ok(r?)
            })
            .await;
        let src = src?;
        // A per-request `msfs` below the server's limit applies to cached sources too.
        if let Some(limit) = self.config.source_size_limit(&req.options)
            && src.bytes.len() as u64 > limit
        {
            return Err(OriginError::TooLarge(limit).into());
        }
        Ok(src)
    }
}

/// Bytes → KiB, rounded up, as semaphore permits.
pub fn kib(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u64::from(u32::MAX >> 4)) as u32
}
