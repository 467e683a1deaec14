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
    /// Results of JSON uploads behind their short-lived URLs (same capacity and lifetime
    /// as the source cache: the source tier).
    pub uploads: Store<String, SourceBytes>,
    /// Bytes of upload bodies held at once, in KiB: uploads are read before the CPU gate,
    /// so this is their back-pressure (503 when full).
    upload_budget: Arc<tokio::sync::Semaphore>,
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
            gate: CpuGate::new(c.workers, c.raw.queue_size, c.raw.memory_budget),
            results: Store::new(
                c.raw.cache_size,
                c.cache_ttl,
                Some(c.cache_tti),
                c.raw.cache_max_entry_fraction,
            ),
            sources: Store::new(c.raw.source_cache_size, c.source_cache_ttl, None, 0.5),
            uploads: Store::new(c.raw.source_cache_size, c.source_cache_ttl, None, 1.0),
            upload_budget: Arc::new(tokio::sync::Semaphore::new(
                kib(c.raw.upload_buffer_size) as usize
            )),
            config,
        })
    }

    /// Fetches `watermark_url` (once, at start, through the origin's rules) and decodes it
    /// into the engine configuration. Nothing to do without one.
    pub async fn fetch_watermark(&mut self) -> Result<(), String> {
        let url = self.config.raw.watermark_url.clone();
        if url.is_empty() {
            return Ok(());
        }
        let source = if let Some(path) = url.strip_prefix("local://") {
            url::Source::Local(path.to_string())
        } else {
            url::Source::Http(url.clone())
        };
        let src = self
            .origin
            .fetch(&source, None)
            .await
            .map_err(|e| format!("watermark_url {url}: {e}"))?;
        let image = pixels::decode_watermark(&src.bytes)
            .map_err(|e| format!("watermark_url {url}: {e}"))?;
        self.config.engine.watermark = Some(Arc::new(image));
        Ok(())
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
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path = parts.uri.path();
    let (accept, inm) = (
        header_text(&parts.headers, ACCEPT),
        header_text(&parts.headers, IF_NONE_MATCH),
    );
    let mut trace = Trace::default();
    let mut route = Route::Other;
    let result = match (&method, path) {
        (&Method::GET | &Method::HEAD, "/health") => {
            route = Route::Health;
            Ok(response::health())
        }
        (&Method::GET | &Method::HEAD, p) if p.starts_with(UPLOAD_RESULT) => {
            route = Route::Upload;
            uploaded_result(&state, &p[UPLOAD_RESULT.len()..]).await
        }
        (&Method::POST, p) if p.starts_with("/upload/") => {
            route = Route::Upload;
            let caller = Caller::new(&state, &parts, peer);
            let work = upload(
                &state,
                &target["/upload".len()..],
                &request_id,
                &parts.headers,
                body,
                caller,
                &mut trace,
            );
            match tokio::time::timeout(state.config.request_timeout, work)
                .instrument(span)
                .await
            {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout),
            }
        }
        (&Method::GET | &Method::HEAD, p) if p != "/" && p != "/favicon.ico" => {
            let info = p.starts_with("/info/");
            route = if info { Route::Info } else { Route::Transform };
            let timeout = state.config.request_timeout;
            let caller = state
                .policy
                .as_ref()
                .map(|_| Caller::new(&state, &parts, peer));
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
    let encodes = s.map_or(0, |s| s.pixels.encodes);
    let cache = trace.cache.map_or("-", Outcome::header);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(id = %request_id, %method, path = %shown, status, bytes, %ms, cache,
                %policy_ms, %fetch_ms, %queue_ms, %decode_ms, %transform_ms, %encode_ms,
                encodes, code, detail, "request")
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

/// A header's value as text, when it is text.
fn header_text(headers: &hyper::HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
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

impl<'a> Caller<'a> {
    fn new(state: &State, parts: &'a hyper::http::request::Parts, peer: SocketAddr) -> Self {
        let header = |name| header_text(&parts.headers, name);
        Caller {
            ip: client::client_ip(peer.ip(), &parts.headers, &state.config.trusted_proxies),
            key: client::api_key(&parts.headers, parts.uri.query()),
            method: parts.method.as_str(),
            path: parts.uri.path(),
            referer: header(REFERER),
            user_agent: header(USER_AGENT),
        }
    }

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
            url::Source::Upload(_) => (None, None),
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
async fn admit(policy: &Policy, view: &PolicyRequest) -> Result<(), Error> {
    match policy.check(view).await {
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
        let verdict = admit(policy, &caller.view(&parsed, choice)).await;
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
        admit(policy, &caller.view(&parsed, choice)).await?;
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
    let (result, _) = process(&state, &parsed, choice, &src, fetch, deadline).await?;
    Ok(result)
}

/// Checks, plans and runs the pixel job for a source in hand; also returns the facts
/// about the source and the result's size.
async fn process(
    state: &Arc<State>,
    parsed: &ParsedRequest,
    choice: FormatChoice,
    src: &SourceBytes,
    fetch: std::time::Duration,
    deadline: Instant,
) -> Result<(CachedResult, Processed), Error> {
    let mut opts = parsed.options.clone();
    opts.format = choice.format();
    opts.animated_format = choice.animated();
    let job = pixels::prepare(&src.bytes, &opts, &state.config.engine)?;
    let input = job.info.clone();
    let bytes = src.bytes.clone();
    let memory = job.memory_estimate();
    let (encoded, queue) = state
        .gate
        .run_timed(deadline, memory, move || {
            job.run_until(&bytes, Some(deadline))
        })
        .await?;
    let encoded = encoded?;
    let result = CachedResult {
        etag: response::etag(&parsed.options.canonical(), encoded.format, &src.identity),
        bytes: encoded.bytes.into(),
        format: encoded.format,
        last_modified: src.last_modified.clone(),
        stages: Stages {
            fetch,
            queue,
            pixels: encoded.timings,
        },
    };
    Ok((
        result,
        Processed {
            input,
            width: encoded.width,
            height: encoded.height,
        },
    ))
}

/// What [`process`] learnt besides the bytes.
struct Processed {
    input: pixels::SourceInfo,
    width: u32,
    height: u32,
}

/// Bytes → KiB, rounded up, as semaphore permits.
fn kib(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u64::from(u32::MAX >> 4)) as u32
}

/// Path prefix of the short-lived URLs of uploaded results.
const UPLOAD_RESULT: &str = "/upload/result/";

/// `POST /upload`: the URL (signature, options) and the policy are checked before the body
/// is read; the body then goes through the same checks and pipeline as a fetched source.
/// Results are not cached (every upload is new); with `Accept: application/json` the answer
/// describes input and output and the result waits at a short-lived URL.
async fn upload(
    state: &Arc<State>,
    target: &str,
    request_id: &str,
    headers: &hyper::HeaderMap,
    body: Incoming,
    caller: Caller<'_>,
    trace: &mut Trace,
) -> Result<Response<Body>, Error> {
    let deadline = Instant::now() + state.config.request_timeout;
    let now = crate::now_unix();
    let c = &state.config;
    let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
    let checked = async {
        let parsed = url::parse_upload(target, &state.url_context(now))?;
        let (choice, vary) = negotiate::negotiate(
            parsed.options.format,
            accept,
            c.raw.auto_format,
            c.raw.enforce_format,
        );
        if let Some(policy) = &state.policy {
            let t = Instant::now();
            let verdict = admit(policy, &caller.view(&parsed, choice)).await;
            trace.policy = Some(t.elapsed());
            verdict?;
        }
        Ok::<_, Error>((parsed, choice, vary))
    }
    .await;
    let (mut parsed, choice, vary) = match checked {
        Ok(c) => c,
        Err(e) => {
            // Refused before the body counts; reading a little of it lets the client see
            // the answer instead of a reset connection.
            crate::upload::linger(body).await;
            return Err(e);
        }
    };
    // 0 means no limit here as everywhere else.
    let no_zero = |v: u64| if v == 0 { u64::MAX } else { v };
    let limit = no_zero(c.raw.max_src_file_size).min(
        parsed
            .options
            .security
            .max_src_file_size
            .map_or(u64::MAX, no_zero),
    );
    // Room for the body before reading it: what it declares, else the limit, never more
    // than the whole budget (a single upload that large still goes through alone).
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let total = kib(c.raw.upload_buffer_size);
    let want = kib(declared.unwrap_or(limit).min(limit)).clamp(1, total.max(1));
    let Ok(_room) = state.upload_budget.clone().try_acquire_many_owned(want) else {
        crate::upload::linger(body).await;
        return Err(crate::cpu::GateError::QueueFull.into());
    };
    let read_start = Instant::now();
    let bytes = crate::upload::read_body(headers, body, limit).await?;
    let src = SourceBytes::new(bytes, None, None);
    parsed.source = url::Source::Upload(src.identity.clone());
    let (result, facts) =
        process(state, &parsed, choice, &src, read_start.elapsed(), deadline).await?;
    trace.format = Some(result.format);
    trace.stages = Some(result.stages);
    let wants_json = accept.is_some_and(|a| {
        a.split(',')
            .any(|t| t.split(';').next().unwrap_or_default().trim() == "application/json")
    });
    if !wants_json {
        let mut resp = response::image(&result, &parsed, 0, now, vary);
        // Customer content answering a POST: no shared cache may keep it.
        resp.headers_mut().insert(
            hyper::header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        return Ok(resp);
    }
    // The routing segment leads the path: nginx routes the upload by it (X-Upload-Route,
    // its own request id) and the result URL by the same segment, so the GET reaches the
    // process that keeps the result. Without nginx, the request id serves.
    let route = headers
        .get("x-upload-route")
        .and_then(|v| v.to_str().ok())
        .filter(|r| crate::upload::valid_route(r))
        .unwrap_or(request_id);
    let id = format!("{route}/{}", crate::upload::result_id());
    let ext = result.format.ext();
    let stored = SourceBytes::new(result.bytes.clone(), None, None);
    let key = crate::upload::result_key(&id);
    let (_, _) = state
        .uploads
        .get_or_fill(key.clone(), async move { Ok(stored) })
        .await;
    if state.uploads.get(&key).await.is_none() {
        // Too large for the tier (or a tier of size 0): a URL that would 404 is no answer.
        return Err(Error::UploadNotKept);
    }
    let doc = serde_json::json!({
        "input": {
            "format": facts.input.format.ext(),
            "width": facts.input.width,
            "height": facts.input.height,
            "bytes": src.bytes.len(),
        },
        "output": {
            "format": ext,
            "width": facts.width,
            "height": facts.height,
            "bytes": result.bytes.len(),
        },
        "url": format!("{UPLOAD_RESULT}{id}.{ext}"),
        "expires_in": state.config.source_cache_ttl.as_secs(),
    });
    let mut resp = response::json(doc.to_string().into_bytes(), 0);
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(resp)
}

/// `GET /upload/result/{request id}/{id}.{ext}`: an uploaded result while the source cache
/// keeps it (at most `source_cache_ttl`, one hour at most; sooner under memory pressure).
async fn uploaded_result(state: &Arc<State>, name: &str) -> Result<Response<Body>, Error> {
    let id = name.split_once('.').map_or(name, |(id, _)| id);
    if !crate::upload::valid_id(id) {
        return Err(Error::NotFound);
    }
    let stored = state
        .uploads
        .get(&crate::upload::result_key(id))
        .await
        .ok_or(Error::NotFound)?;
    let format = pixels::probe::probe(&stored.bytes)
        .map(|i| i.format)
        .map_err(|_| Error::NotFound)?;
    let mut resp = Response::new(Body::new(stored.bytes.clone()));
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(format.mime()),
    );
    h.insert(
        hyper::header::CONTENT_LENGTH,
        HeaderValue::from(stored.bytes.len()),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("script-src 'none'"),
    );
    Ok(resp)
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
