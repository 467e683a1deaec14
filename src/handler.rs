//! The request path, top to bottom: route → parse URL and verify signature → fetch source →
//! probe and plan → pixel job through the CPU gate → response. Every failure is an [`Error`]
//! turned into a response in one place; one log line per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{ACCEPT, HeaderValue, IF_NONE_MATCH, REFERER, SERVER, USER_AGENT};
use hyper::{Method, Request, Response};
use tracing::Instrument;

use crate::cache::{Outcome, Store};
use crate::client;
use crate::config::Config;
use crate::cpu::CpuGate;
use crate::error::Error;
use crate::metrics::{Metrics, Route, Stage};
use crate::negotiate::{self, FormatChoice};
use crate::origin::{Origin, OriginError, SourceBytes};
use crate::pixels;
use crate::policy::{Policy, PolicyError, PolicyRequest, Verdict};
use crate::request::url::{self, ParsedRequest, UrlContext};
use crate::response::{self, Body, CachedResult, Stages};

/// Everything a request needs, built once at startup.
pub struct State {
    pub config: Config,
    pub origin: Origin,
    pub gate: CpuGate,
    /// Encoded results by (canonical options, format decision, source URL).
    pub results: Store<[u8; 32], CachedResult>,
    /// Fetched sources by URL.
    pub sources: Store<String, SourceBytes>,
    /// The operator's Lua policy; `None` allows everything.
    pub policy: Option<Arc<Policy>>,
    pub metrics: Metrics,
}

impl State {
    /// Fails when the policy script does not load.
    pub fn new(config: Config) -> Result<State, PolicyError> {
        let c = &config;
        let policy = match &c.policy {
            Some(settings) => Some(Arc::new(Policy::load(settings.clone())?)),
            None => None,
        };
        Ok(State {
            policy,
            metrics: Metrics::new(),
            origin: Origin::new(c),
            gate: CpuGate::new(c.workers, c.raw.queue_size),
            results: Store::new(
                c.raw.cache_size,
                c.cache_ttl,
                Some(c.cache_tti),
                c.raw.cache_max_entry_fraction,
            ),
            sources: Store::new(c.raw.source_cache_size, c.source_cache_ttl, None, 0.5),
            config,
        })
    }

    /// The `/metrics` text: this state's metrics with its gate, caches and policy counters.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&crate::metrics::Sources {
            gate: &self.gate.stats,
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
            ],
            policy: self.policy.as_deref(),
        })
    }

    fn url_context(&self, now_unix: i64) -> UrlContext<'_> {
        self.config.url_context(now_unix)
    }

    /// The source, from the source cache or the origin (one fetch for concurrent callers).
    async fn source(self: &Arc<Self>, req: &ParsedRequest) -> Result<Arc<SourceBytes>, Error> {
        let state = self.clone();
        let source = req.source.clone();
        let (src, _) = self
            .sources
            .get_or_fill(source.url(), async move {
                let r = state.origin.fetch(&source, None).await;
                state
                    .metrics
                    .fetch(r.as_ref().map(|s| s.bytes.len() as u64));
                Ok(r?)
            })
            .await;
        let src = src?;
        // A per-request `msfs` below the server's limit applies to cached sources too.
        if let Some(limit) = req.options.security.max_src_file_size {
            if src.bytes.len() as u64 > limit {
                return Err(OriginError::TooLarge(limit).into());
            }
        }
        Ok(src)
    }
}

/// What the log line and the metrics say about a request beyond its status.
#[derive(Debug, Default, Clone, Copy)]
struct Trace {
    /// Set on the request that produced the result (a miss).
    stages: Option<Stages>,
    policy: Option<std::time::Duration>,
    cache: Option<Outcome>,
    format: Option<crate::format::Format>,
}

fn ms(d: Option<std::time::Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.1}", d.as_secs_f64() * 1000.0),
    )
}

/// Serves one request from `peer`.
pub async fn handle(state: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let start = Instant::now();
    let _in_flight = state.metrics.in_flight();
    let request_id = request_id(req.headers().get("x-request-id"));
    // Every line logged while serving (policy, origin, fill) carries the id.
    let span = tracing::info_span!("request", id = %request_id);
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path = req.uri().path();
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let (accept, inm) = (header(ACCEPT), header(IF_NONE_MATCH));
    let mut trace = Trace::default();
    let mut route = Route::Other;
    let result = match (&method, path) {
        (&Method::GET | &Method::HEAD, "/health") => {
            route = Route::Health;
            Ok(response::health())
        }
        (&Method::GET | &Method::HEAD, p) if p != "/" && p != "/favicon.ico" => {
            let info = p.starts_with("/info/");
            route = if info { Route::Info } else { Route::Transform };
            let timeout = state.config.request_timeout;
            let caller = state.policy.as_ref().map(|_| Caller {
                ip: client::client_ip(peer.ip(), req.headers(), &state.config.trusted_proxies),
                key: client::api_key(req.headers(), req.uri().query()),
                method: method.as_str(),
                path,
                referer: header(REFERER),
                user_agent: header(USER_AGENT),
            });
            let work = async {
                if info {
                    describe(&state, &target["/info".len()..], caller).await
                } else {
                    transform(
                        &state,
                        &target,
                        accept.as_deref(),
                        inm.as_deref(),
                        caller,
                        &mut trace,
                    )
                    .await
                }
            };
            match tokio::time::timeout(timeout, work).instrument(span).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout),
            }
        }
        _ => Err(Error::NotFound),
    };
    let (mut resp, error) = match result {
        Ok(r) => (r, None),
        Err(e) => (response::error(&e), Some(e)),
    };
    let code = error.as_ref().map_or("", Error::code);
    if !code.is_empty() {
        state.metrics.error(code);
    }
    let detail = error.as_ref().map(|e| e.to_string()).unwrap_or_default();
    let status = resp.status().as_u16();
    let bytes = hyper::body::Body::size_hint(resp.body())
        .exact()
        .unwrap_or(0);
    if method == Method::HEAD {
        // Headers (Content-Length included) as for GET, no body.
        let (parts, _) = resp.into_parts();
        resp = Response::from_parts(parts, Body::default());
    }
    let h = resp.headers_mut();
    h.insert(SERVER, HeaderValue::from_static("pixgate"));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-request-id", v);
    }
    if let Some(o) = trace.cache {
        h.insert("x-cache", HeaderValue::from_static(o.header()));
    }
    let elapsed = start.elapsed();
    record(&state.metrics, route, status, elapsed, bytes, &trace);
    let shown: String = target.chars().take(300).collect();
    let ms = format!("{:.1}", elapsed.as_secs_f64() * 1000.0);
    let s = trace.stages;
    let (policy_ms, fetch_ms, queue_ms) = (
        self::ms(trace.policy),
        self::ms(s.map(|s| s.fetch)),
        self::ms(s.map(|s| s.queue)),
    );
    let (decode_ms, transform_ms, encode_ms) = (
        self::ms(s.map(|s| s.pixels.decode)),
        self::ms(s.map(|s| s.pixels.transform)),
        self::ms(s.map(|s| s.pixels.encode)),
    );
    let cache = trace.cache.map_or("-", Outcome::header);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(id = %request_id, %method, path = %shown, status, bytes, %ms, cache,
                %policy_ms, %fetch_ms, %queue_ms, %decode_ms, %transform_ms, %encode_ms,
                code, detail, "request")
        };
    }
    if status >= 500 {
        line!(warn);
    } else {
        line!(info);
    }
    resp
}

/// Counts a finished request.
fn record(
    m: &Metrics,
    route: Route,
    status: u16,
    elapsed: std::time::Duration,
    bytes: u64,
    t: &Trace,
) {
    m.request(route, status, elapsed, bytes);
    if let Some(p) = t.policy {
        m.stage(Stage::Policy, p);
    }
    if let Some(s) = t.stages {
        m.stage(Stage::Fetch, s.fetch);
        m.stage(Stage::Queue, s.queue);
        m.stage(Stage::Decode, s.pixels.decode);
        m.stage(Stage::Transform, s.pixels.transform);
        m.stage(Stage::Encode, s.pixels.encode);
    }
    if let (Some(f), 200..=299) = (t.format, status) {
        m.image(f);
    }
}

/// The cache key of a result: equivalent URLs share it (canonical options), the `Accept`
/// header enters only as the format decision.
fn result_key(req: &ParsedRequest, choice: FormatChoice) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [req.options.canonical(), choice.key(), req.source.url()] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

/// The request as the policy needs it, gathered while the headers are at hand.
pub struct Caller<'a> {
    pub ip: std::net::IpAddr,
    pub key: Option<String>,
    pub method: &'a str,
    pub path: &'a str,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

impl Caller<'_> {
    /// The `req` table's contents for a parsed URL.
    pub fn view(self, parsed: &ParsedRequest, choice: FormatChoice) -> PolicyRequest {
        let o = &parsed.options;
        let scaled = |v: u32| {
            (v > 0).then(|| (f64::from(v) * o.dpr).round().min(f64::from(u32::MAX)) as u32)
        };
        let (source_host, source_url) = match &parsed.source {
            url::Source::Http(u) => (
                u.parse::<hyper::Uri>()
                    .ok()
                    .and_then(|u| u.host().map(str::to_ascii_lowercase)),
                Some(u.clone()),
            ),
            url::Source::Local(_) => (None, Some(parsed.source.url())),
        };
        PolicyRequest {
            tenant: parsed.signer.tenant().map(str::to_string),
            key: self.key,
            ip: self.ip.to_string(),
            method: self.method.to_string(),
            path: self.path.to_string(),
            source_host,
            source_url,
            format: choice.format().map(|f| f.ext().to_string()),
            width: scaled(o.width),
            height: scaled(o.height),
            referer: self.referer,
            user_agent: self.user_agent,
        }
    }
}

/// Runs the policy; `Ok` when the request may proceed.
fn admit(policy: &Policy, view: &PolicyRequest) -> Result<(), Error> {
    match policy.check(view) {
        Verdict::Allow => Ok(()),
        Verdict::Deny {
            status,
            reason,
            retry_after,
        } => Err(Error::Denied {
            status,
            reason,
            retry_after,
        }),
        Verdict::Limited(l) => Err(Error::Limited(l)),
        Verdict::Failed(e) => Err(Error::PolicyFailed(e)),
    }
}

async fn transform(
    state: &Arc<State>,
    target: &str,
    accept: Option<&str>,
    if_none_match: Option<&str>,
    caller: Option<Caller<'_>>,
    trace: &mut Trace,
) -> Result<Response<Body>, Error> {
    let now = crate::now_unix();
    let c = &state.config;
    let parsed = url::parse(target, &state.url_context(now))?;
    let (choice, vary) = negotiate::negotiate(
        parsed.options.format,
        accept,
        c.raw.auto_format,
        c.raw.enforce_format,
    );
    // Before the cache: limits count hits too.
    if let (Some(policy), Some(caller)) = (&state.policy, caller) {
        let t = Instant::now();
        let verdict = admit(policy, &caller.view(&parsed, choice));
        trace.policy = Some(t.elapsed());
        verdict?;
    }
    let key = result_key(&parsed, choice);
    let ttl = c.raw.ttl;
    if let Some(hit) = state.results.get(&key).await {
        trace.cache = Some(Outcome::Hit);
        trace.format = Some(hit.format);
        if if_none_match.is_some_and(|inm| response::none_match(inm, &hit.etag)) {
            return Ok(response::not_modified(&hit, &parsed, ttl, now, vary));
        }
        return Ok(response::image(&hit, &parsed, ttl, now, vary));
    }
    if let Some(inm) = if_none_match {
        // The ETag needs the source identity and the output format, not the pixels: a
        // revalidation costs at most a fetch (often a source-cache hit).
        let src = state.source(&parsed).await?;
        let mut opts = parsed.options.clone();
        opts.format = choice.format();
        opts.animated_format = choice.animated();
        let job = pixels::prepare(&src.bytes, &opts, &c.engine)?;
        let tag = response::etag(&parsed.options.canonical(), job.format, &src.identity);
        if response::none_match(inm, &tag) {
            let r = CachedResult {
                bytes: Default::default(),
                format: job.format,
                etag: tag,
                last_modified: src.last_modified.clone(),
                stages: Stages::default(),
            };
            return Ok(response::not_modified(&r, &parsed, ttl, now, vary));
        }
    }
    let (result, outcome) = state
        .results
        .get_or_fill(key, fill(state.clone(), parsed.clone(), choice))
        .await;
    trace.cache = Some(outcome);
    let r = result?;
    trace.format = Some(r.format);
    if outcome == Outcome::Miss {
        trace.stages = Some(r.stages);
    }
    Ok(response::image(&r, &parsed, ttl, now, vary))
}

/// `/info`: the same URL grammar, signature and policy as a transform; the answer is JSON
/// from the source's header (the source cache spares the origin a second fetch when the
/// image itself is requested next).
async fn describe(
    state: &Arc<State>,
    target: &str,
    caller: Option<Caller<'_>>,
) -> Result<Response<Body>, Error> {
    let now = crate::now_unix();
    let parsed = url::parse(target, &state.url_context(now))?;
    let choice = FormatChoice::SourceDefault;
    if let (Some(policy), Some(caller)) = (&state.policy, caller) {
        admit(policy, &caller.view(&parsed, choice))?;
    }
    let src = state.source(&parsed).await?;
    let info = crate::info::describe(&src.bytes, &parsed.options, &state.config.engine)?;
    Ok(response::json(info.to_json(), state.config.raw.ttl))
}

/// Produces a result: source → checks and plan → pixel job through the gate. Runs as its own
/// task (see `cache`), under its own deadline.
async fn fill(
    state: Arc<State>,
    parsed: ParsedRequest,
    choice: FormatChoice,
) -> Result<CachedResult, Error> {
    let deadline = Instant::now() + state.config.request_timeout;
    let fetch_start = Instant::now();
    let src = state.source(&parsed).await?;
    let fetch = fetch_start.elapsed();
    let mut opts = parsed.options.clone();
    opts.format = choice.format();
    opts.animated_format = choice.animated();
    let job = pixels::prepare(&src.bytes, &opts, &state.config.engine)?;
    let bytes = src.bytes.clone();
    let (encoded, queue) = state
        .gate
        .run_timed(deadline, move || job.run_until(&bytes, Some(deadline)))
        .await?;
    let encoded = encoded?;
    Ok(CachedResult {
        etag: response::etag(&parsed.options.canonical(), encoded.format, &src.identity),
        bytes: encoded.bytes.into(),
        format: encoded.format,
        last_modified: src.last_modified.clone(),
        stages: Stages {
            fetch,
            queue,
            pixels: encoded.timings,
        },
    })
}

/// The client's `X-Request-ID` when it is sane (`[A-Za-z0-9_-]{1,64}`), else a new one.
fn request_id(given: Option<&HeaderValue>) -> String {
    if let Some(v) = given.and_then(|v| v.to_str().ok()) {
        if !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return v.to_string();
        }
    }
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded per process from the OS; hashing a counter gives distinct,
    // unpredictable 64-bit ids without another dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_echoed_only_when_sane() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(request_id(Some(&v("abc-123_X"))), "abc-123_X");
        assert_ne!(request_id(Some(&v("a b"))), "a b");
        assert_ne!(request_id(Some(&v(&"x".repeat(65)))), "x".repeat(65));
        let a = request_id(None);
        let b = request_id(None);
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
