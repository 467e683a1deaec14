//! The request path, top to bottom: route → parse URL and verify signature → fetch source →
//! probe and plan → pixel job through the CPU gate → response. Every failure is an [`Error`]
//! turned into a response in one place; one log line per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, SERVER};
use hyper::{Method, Request, Response};

use crate::config::Config;
use crate::cpu::CpuGate;
use crate::error::Error;
use crate::origin::Origin;
use crate::pixels;
use crate::request::url::{self, UrlContext};
use crate::response::{self, Body};

/// Everything a request needs, built once at startup.
pub struct State {
    pub config: Config,
    pub origin: Origin,
    pub gate: CpuGate,
}

impl State {
    pub fn new(config: Config) -> State {
        State {
            origin: Origin::new(&config),
            gate: CpuGate::new(config.workers, config.raw.queue_size),
            config,
        }
    }

    fn url_context(&self, now_unix: i64) -> UrlContext<'_> {
        let c = &self.config;
        UrlContext {
            keys: &c.keys,
            signature_size: c.raw.signature_size,
            trusted_signatures: &c.raw.trusted_signatures,
            presets: &c.presets,
            only_presets: c.raw.only_presets,
            allow_security_options: c.raw.allow_security_options,
            defaults: &c.defaults,
            now_unix,
        }
    }
}

/// Stage timings of one request, for the log line.
#[derive(Debug, Default, Clone, Copy)]
struct Timings {
    fetch: Duration,
    pixels: Duration,
}

/// Serves one request.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let request_id = request_id(req.headers().get("x-request-id"));
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path = req.uri().path();
    let mut timings = Timings::default();
    let result = match (&method, path) {
        (&Method::GET | &Method::HEAD, "/health") => Ok(response::health()),
        (&Method::GET | &Method::HEAD, p) if p != "/" && p != "/favicon.ico" => {
            let timeout = state.config.request_timeout;
            match tokio::time::timeout(timeout, transform(&state, &target, &mut timings)).await {
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
    let shown: String = target.chars().take(300).collect();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let (fetch_ms, pixels_ms) = (ms(timings.fetch), ms(timings.pixels));
    let ms = ms(start.elapsed());
    if status >= 500 {
        tracing::warn!(id = %request_id, %method, path = %shown, status, bytes, %ms, %fetch_ms, %pixels_ms, code, detail, "request");
    } else {
        tracing::info!(id = %request_id, %method, path = %shown, status, bytes, %ms, %fetch_ms, %pixels_ms, code, detail, "request");
    }
    resp
}

async fn transform(state: &State, target: &str, t: &mut Timings) -> Result<Response<Body>, Error> {
    let deadline = Instant::now() + state.config.request_timeout;
    let now = crate::now_unix();
    let parsed = url::parse(target, &state.url_context(now))?;
    let fetch_start = Instant::now();
    let max_bytes = parsed.options.security.max_src_file_size;
    let src = state.origin.fetch(&parsed.source, max_bytes).await;
    t.fetch = fetch_start.elapsed();
    let src = src?;
    let job = pixels::prepare(&src.bytes, &parsed.options, &state.config.engine)?;
    let bytes = src.bytes.clone();
    let pixels_start = Instant::now();
    let encoded = state
        .gate
        .run(deadline, move || job.run_until(&bytes, Some(deadline)))
        .await;
    t.pixels = pixels_start.elapsed();
    let encoded = encoded??;
    Ok(response::image(
        &encoded,
        &parsed,
        &src,
        state.config.raw.ttl,
        now,
    ))
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
