//! One request, top to bottom: [`handle`] gives it an id, a deadline and a route, runs the
//! route's function and finishes it (headers every answer carries, the request log line, the
//! metrics). The image routes share [`admit`]: parse and verify the URL, negotiate the
//! format, ask the policy. Failures are [`Error`]s; `Error::response` answers them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{ACCEPT, HeaderValue, IF_NONE_MATCH, SERVER};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response};
use tracing::Instrument;

use crate::cache::Outcome;
use crate::client::Caller;
use crate::error::Error;
use crate::metrics::{Metrics, Stage};
use crate::negotiate::{self, FormatChoice};
use crate::origin::SourceBytes;
use crate::pixels;
use crate::request::options::Options;
use crate::request::url::{self, ParsedRequest};
use crate::response::{self, Body, CachedResult, Stages};
use crate::router::{self, Route};
use crate::state::{State, kib};
use crate::upload;

/// What the log line and the metrics say about a request beyond its status.
#[derive(Debug, Default, Clone, Copy)]
struct Trace {
    /// Set on the request that produced the result (a miss).
    stages: Option<Stages>,
    policy: Option<Duration>,
    cache: Option<Outcome>,
    format: Option<crate::format::Format>,
    /// The format decision (`x:webp` named by the URL, `n:avif` negotiated from `Accept`,
    /// `s` the source's own), once the request is admitted.
    variant: Option<FormatChoice>,
}

/// Serves one request from `peer`.
pub async fn handle(state: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let start = Instant::now();
    let _in_flight = state.metrics.in_flight();
    let request_id = request_id(req.headers().get("x-request-id"));
    // Every line logged while serving (policy, origin, fill) carries the id.
    let span = tracing::info_span!("request", id = %request_id);
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let route = router::route(&parts.method, &target);
    let mut trace = Trace::default();
    let work = serve(&state, route, &parts, body, peer, &request_id, &mut trace);
    let result = match tokio::time::timeout(state.config.request_timeout, work)
        .instrument(span)
        .await
    {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout),
    };
    let served = Served {
        method: &parts.method,
        target: &target,
        id: &request_id,
        route,
        start,
    };
    finish(&state, &served, result, &trace)
}

/// What the request's last line says about it besides its outcome.
struct Served<'a> {
    method: &'a Method,
    target: &'a str,
    id: &'a str,
    route: Route<'a>,
    start: Instant,
}

async fn serve(
    state: &Arc<State>,
    route: Route<'_>,
    parts: &Parts,
    body: Incoming,
    peer: SocketAddr,
    request_id: &str,
    trace: &mut Trace,
) -> Result<Response<Body>, Error> {
    match route {
        Route::Health => Ok(response::health()),
        Route::Version => Ok(response::version()),
        Route::Transform(target) => transform(state, target, parts, peer, trace).await,
        Route::Info(target) => describe(state, target, parts, peer, trace).await,
        Route::Upload(target) => upload(state, target, parts, body, peer, request_id, trace).await,
        Route::UploadResult(name) => uploaded_result(state, name).await,
        Route::NotFound => Err(Error::NotFound),
    }
}

/// A request that passed [`admit`].
struct Admitted {
    parsed: ParsedRequest,
    choice: FormatChoice,
    /// The answer depends on `Accept` (`Vary: Accept`).
    vary: bool,
    now: i64,
}

/// Which URL grammar a route speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grammar {
    /// `/{signature}/{options}/{source}`, the format negotiated from `Accept`.
    Transform,
    /// The same, answered as JSON about the source: no format to negotiate.
    Info,
    /// `/{signature}/{options}`: the body is the source.
    Upload,
}

/// What every image route does first: parse and verify the URL, negotiate the format, ask
/// the policy (timed; before any cache, so limits count hits too).
async fn admit(
    state: &State,
    grammar: Grammar,
    target: &str,
    parts: &Parts,
    peer: SocketAddr,
    trace: &mut Trace,
) -> Result<Admitted, Error> {
    let now = crate::now_unix();
    let c = &state.config;
    let ctx = state.url_context(now);
    let parsed = match grammar {
        Grammar::Upload => url::parse_upload(target, &ctx)?,
        Grammar::Transform | Grammar::Info => url::parse(target, &ctx)?,
    };
    let (choice, vary) = match grammar {
        Grammar::Info => (FormatChoice::SourceDefault, false),
        Grammar::Transform | Grammar::Upload => negotiate::negotiate(
            parsed.options.format,
            header(parts, ACCEPT),
            c.auto_format,
            c.enforce_format,
        ),
    };
    if let Some(policy) = &state.policy {
        let caller = Caller::new(parts, peer, &c.trusted_proxies);
        let t = Instant::now();
        let verdict = policy.check(&caller.policy_request(&parsed, choice)).await;
        trace.policy = Some(t.elapsed());
        Error::from_verdict(verdict)?;
    }
    trace.variant = Some(choice);
    Ok(Admitted {
        parsed,
        choice,
        vary,
        now,
    })
}

async fn transform(
    state: &Arc<State>,
    target: &str,
    parts: &Parts,
    peer: SocketAddr,
    trace: &mut Trace,
) -> Result<Response<Body>, Error> {
    let a = admit(state, Grammar::Transform, target, parts, peer, trace).await?;
    let (parsed, ttl) = (&a.parsed, state.config.ttl);
    let key = response::result_key(parsed, a.choice);
    let if_none_match = header(parts, IF_NONE_MATCH);
    if let Some(hit) = state.results.get(&key).await {
        trace.cache = Some(Outcome::Hit);
        trace.format = Some(hit.format);
        if if_none_match.is_some_and(|inm| response::none_match(inm, &hit.etag)) {
            return Ok(response::not_modified(&hit, parsed, ttl, a.now, a.vary));
        }
        return Ok(response::image(&hit, parsed, ttl, a.now, a.vary));
    }
    if let Some(inm) = if_none_match {
        // The ETag needs the source identity and the output format, not the pixels: a
        // revalidation costs at most a fetch (often a source-cache hit).
        let src = state.source(parsed).await?;
        let job = pixels::prepare(
            &src.bytes,
            &job_options(parsed, a.choice),
            &state.config.engine,
        )?;
        let tag = result_etag(parsed, job.format, &src);
        if response::none_match(inm, &tag) {
            let r = CachedResult {
                bytes: Default::default(),
                format: job.format,
                etag: tag,
                last_modified: src.last_modified.clone(),
                stages: Stages::default(),
            };
            return Ok(response::not_modified(&r, parsed, ttl, a.now, a.vary));
        }
    }
    let (result, outcome) = state
        .results
        .get_or_fill(key, fill(state.clone(), a.parsed.clone(), a.choice))
        .await;
    trace.cache = Some(outcome);
    let r = result?;
    trace.format = Some(r.format);
    if outcome == Outcome::Miss {
        trace.stages = Some(r.stages);
    }
    Ok(response::image(&r, parsed, ttl, a.now, a.vary))
}

/// `/info`: the same URL grammar, signature and policy as a transform; the answer is JSON
/// from the source's header (the source cache spares the origin a second fetch when the
/// image itself is requested next).
async fn describe(
    state: &Arc<State>,
    target: &str,
    parts: &Parts,
    peer: SocketAddr,
    trace: &mut Trace,
) -> Result<Response<Body>, Error> {
    let a = admit(state, Grammar::Info, target, parts, peer, trace).await?;
    let src = state.source(&a.parsed).await?;
    let info = crate::info::describe(&src.bytes, &a.parsed.options, &state.config.engine)?;
    Ok(response::json(info.to_json(), state.config.ttl))
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

/// The options a job runs with: the URL's, with the negotiated formats.
fn job_options(parsed: &ParsedRequest, choice: FormatChoice) -> Options {
    let mut opts = parsed.options.clone();
    opts.format = choice.format();
    opts.animated_format = choice.animated();
    opts
}

/// The ETag of the result of `parsed` in `format` from `src`.
fn result_etag(parsed: &ParsedRequest, format: crate::Format, src: &SourceBytes) -> String {
    response::etag(&parsed.options.canonical(), format, &src.identity)
}

/// Checks, plans and runs the pixel job for a source in hand; also returns the facts
/// about the source and the result's size.
async fn process(
    state: &Arc<State>,
    parsed: &ParsedRequest,
    choice: FormatChoice,
    src: &SourceBytes,
    fetch: Duration,
    deadline: Instant,
) -> Result<(CachedResult, upload::Facts), Error> {
    let job = pixels::prepare(
        &src.bytes,
        &job_options(parsed, choice),
        &state.config.engine,
    )?;
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
    let facts = upload::Facts {
        input,
        input_bytes: src.bytes.len(),
        width: encoded.width,
        height: encoded.height,
    };
    let result = CachedResult {
        etag: result_etag(parsed, encoded.format, src),
        bytes: encoded.bytes.into(),
        format: encoded.format,
        last_modified: src.last_modified.clone(),
        stages: Stages {
            fetch,
            queue,
            pixels: encoded.timings,
        },
    };
    Ok((result, facts))
}

/// `POST /upload`: the URL (signature, options) and the policy are checked before the body
/// is read; the body then goes through the same checks and pipeline as a fetched source.
/// Results are not cached (every upload is new); with `Accept: application/json` the answer
/// describes input and output and the result waits at a short-lived URL.
async fn upload(
    state: &Arc<State>,
    target: &str,
    parts: &Parts,
    body: Incoming,
    peer: SocketAddr,
    request_id: &str,
    trace: &mut Trace,
) -> Result<Response<Body>, Error> {
    let deadline = Instant::now() + state.config.request_timeout;
    let mut a = match admit(state, Grammar::Upload, target, parts, peer, trace).await {
        Ok(a) => a,
        Err(e) => {
            // Refused before the body counts; reading a little of it lets the client see
            // the answer instead of a reset connection.
            upload::linger(body).await;
            return Err(e);
        }
    };
    let limit = state.config.source_size_limit(&a.parsed.options);
    let Some(_room) = reserve(state, &parts.headers, limit) else {
        upload::linger(body).await;
        return Err(crate::cpu::GateError::QueueFull.into());
    };
    let read_start = Instant::now();
    let bytes = upload::read_body(&parts.headers, body, limit.unwrap_or(u64::MAX)).await?;
    let src = SourceBytes::new(bytes, None, None);
    a.parsed.source = url::Source::Upload(src.identity.clone());
    let (result, facts) = process(
        state,
        &a.parsed,
        a.choice,
        &src,
        read_start.elapsed(),
        deadline,
    )
    .await?;
    trace.format = Some(result.format);
    trace.stages = Some(result.stages);
    if !upload::wants_json(header(parts, ACCEPT)) {
        // Customer content answering a POST: no shared cache may keep it.
        return Ok(response::private(response::image(
            &result, &a.parsed, 0, a.now, a.vary,
        )));
    }
    // The routing segment leads the path: nginx routes the upload by it (X-Upload-Route,
    // its own request id) and the result URL by the same segment, so the GET reaches the
    // process that keeps the result. Without nginx, the request id serves.
    let route = header(parts, "x-upload-route")
        .filter(|r| upload::valid_route(r))
        .unwrap_or(request_id);
    let id = format!("{route}/{}", upload::result_id());
    let key = upload::result_key(&id);
    let stored = SourceBytes::new(result.bytes.clone(), None, None);
    let _ = state
        .uploads
        .get_or_fill(key.clone(), async move { Ok(stored) })
        .await;
    if state.uploads.get(&key).await.is_none() {
        // Too large for the tier (or a tier of size 0): a URL that would 404 is no answer.
        return Err(Error::UploadNotKept);
    }
    let url = format!("{}{id}.{}", router::UPLOAD_RESULT, result.format.ext());
    let doc = upload::describe(&facts, &result, &url, state.config.source_cache_ttl);
    Ok(response::private(response::json(doc.into_bytes(), 0)))
}

/// Room in the upload budget for a body before reading it: what it declares, else the
/// limit, never more than the whole budget (a single upload that large still goes through
/// alone). `None`: the budget is full.
fn reserve(
    state: &State,
    headers: &hyper::HeaderMap,
    limit: Option<u64>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let limit = limit.unwrap_or(u64::MAX);
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let total = kib(state.config.upload_buffer_size);
    let want = kib(declared.unwrap_or(limit).min(limit)).clamp(1, total.max(1));
    state
        .upload_budget
        .clone()
        .try_acquire_many_owned(want)
        .ok()
}

/// `GET /upload/result/{route}/{id}.{ext}`: an uploaded result while the source cache
/// keeps it (at most `source_cache_ttl`, one hour at most; sooner under memory pressure).
async fn uploaded_result(state: &Arc<State>, name: &str) -> Result<Response<Body>, Error> {
    let id = name.split_once('.').map_or(name, |(id, _)| id);
    if !upload::valid_id(id) {
        return Err(Error::NotFound);
    }
    let stored = state
        .uploads
        .get(&upload::result_key(id))
        .await
        .ok_or(Error::NotFound)?;
    let format = pixels::probe::probe(&stored.bytes)
        .map(|i| i.format)
        .map_err(|_| Error::NotFound)?;
    Ok(response::stored(stored.bytes.clone(), format))
}

/// A header's value, when it is text.
fn header(parts: &Parts, name: impl hyper::header::AsHeaderName) -> Option<&str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Stamps the headers every answer carries, writes the request's log line and counts it.
fn finish(
    state: &State,
    served: &Served<'_>,
    result: Result<Response<Body>, Error>,
    trace: &Trace,
) -> Response<Body> {
    let (mut resp, error) = match result {
        Ok(r) => (r, None),
        Err(e) => (e.response(state.config.development_errors), Some(e)),
    };
    if let Some(e) = &error {
        e.count(&state.metrics);
    }
    let status = resp.status().as_u16();
    let bytes = hyper::body::Body::size_hint(resp.body())
        .exact()
        .unwrap_or(0);
    if *served.method == Method::HEAD {
        // Headers (Content-Length included) as for GET, no body.
        let (parts, _) = resp.into_parts();
        resp = Response::from_parts(parts, Body::default());
    }
    let h = resp.headers_mut();
    h.insert(SERVER, HeaderValue::from_static("pixgate"));
    if let Ok(v) = HeaderValue::from_str(served.id) {
        h.insert("x-request-id", v);
    }
    if let Some(o) = trace.cache {
        h.insert("x-cache", HeaderValue::from_static(o.header()));
    }
    let elapsed = served.start.elapsed();
    record(&state.metrics, served.route, status, elapsed, bytes, trace);
    log_line(served, status, bytes, elapsed, trace, error.as_ref());
    resp
}

/// Counts a finished request.
fn record(m: &Metrics, route: Route<'_>, status: u16, elapsed: Duration, bytes: u64, t: &Trace) {
    m.request(route.label(), status, elapsed, bytes);
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

/// The request's one log line: status, size, time per stage, and the error's code and
/// detail (at the error's level).
fn log_line(
    served: &Served<'_>,
    status: u16,
    bytes: u64,
    elapsed: Duration,
    trace: &Trace,
    error: Option<&Error>,
) {
    let ms = |d: Option<Duration>| {
        d.map_or_else(
            || "-".into(),
            |d| format!("{:.1}", d.as_secs_f64() * 1000.0),
        )
    };
    let (method, id) = (served.method, served.id);
    let shown: String = served.target.chars().take(300).collect();
    let s = trace.stages;
    let (total_ms, policy_ms) = (ms(Some(elapsed)), ms(trace.policy));
    let (fetch_ms, queue_ms) = (ms(s.map(|s| s.fetch)), ms(s.map(|s| s.queue)));
    let (decode_ms, transform_ms, encode_ms) = (
        ms(s.map(|s| s.pixels.decode)),
        ms(s.map(|s| s.pixels.transform)),
        ms(s.map(|s| s.pixels.encode)),
    );
    let encodes = s.map_or(0, |s| s.pixels.encodes);
    let cache = trace.cache.map_or("-", Outcome::header);
    let format = trace.format.map_or("-", |f| f.ext());
    let variant = trace.variant.map_or_else(|| "-".into(), FormatChoice::key);
    let code = error.map_or("", Error::code);
    let detail = error.map(|e| e.to_string()).unwrap_or_default();
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(id = %id, %method, path = %shown, status, bytes, format, %variant,
                ms = %total_ms, cache,
                %policy_ms, %fetch_ms, %queue_ms, %decode_ms, %transform_ms, %encode_ms,
                encodes, code, detail, "request")
        };
    }
    if error.is_some_and(|e| e.log_level() == tracing::Level::WARN) {
        line!(warn);
    } else {
        line!(info);
    }
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
