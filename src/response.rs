//! Building responses: image responses with the headers of API.md §4 (type, length,
//! cache lifetime capped by `exp`, origin's Last-Modified, Content-Disposition, CSP), ETags
//! and the result cache key, JSON documents, private answers. Knows HTTP; decides nothing
//! about images. Error answers are `Error::response`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::format::Format;
use crate::negotiate::FormatChoice;
use crate::request::url::ParsedRequest;

pub type Body = Full<Bytes>;

/// `Cache-Control` for a result: the configured TTL, capped by the URL's expiry.
pub fn cache_control(ttl: u64, expires: Option<i64>, now: i64) -> String {
    let max_age = match expires {
        Some(e) => ttl.min(e.saturating_sub(now).max(0) as u64),
        None => ttl,
    };
    if max_age == 0 {
        "no-cache".into()
    } else {
        format!("max-age={max_age}, public")
    }
}

/// `Content-Disposition`: the `fn` option or the source's file name, with the result's
/// extension. Non-ASCII names get an ASCII fallback plus RFC 5987 `filename*`.
pub fn content_disposition(name: &str, ext: &str, attachment: bool) -> String {
    let kind = if attachment { "attachment" } else { "inline" };
    let full = format!("{name}.{ext}");
    let ascii: String = full
        .chars()
        .map(|c| match c {
            '"' => "%22".to_string(),
            c if c.is_ascii_graphic() || c == ' ' => c.to_string(),
            _ => "_".to_string(),
        })
        .collect();
    if full.is_ascii() && !full.chars().any(|c| c.is_ascii_control()) {
        format!("{kind}; filename=\"{ascii}\"")
    } else {
        let encoded =
            percent_encoding::utf8_percent_encode(&full, percent_encoding::NON_ALPHANUMERIC);
        format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
    }
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Everything needed to answer for a transformed image, as cached.
#[derive(Debug, Clone)]
pub struct CachedResult {
    pub bytes: Bytes,
    pub format: Format,
    pub etag: String,
    pub last_modified: Option<String>,
    /// Stage timings of the fill, for the log line of the request that ran it.
    pub stages: Stages,
}

/// Where the time of one produced result went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    pub fetch: std::time::Duration,
    pub queue: std::time::Duration,
    pub pixels: crate::pixels::Timings,
}

impl crate::cache::Weighted for CachedResult {
    fn weight(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// Strong ETag of a result: (canonical options, output format, source identity, engine
/// revision). Deterministic across processes and restarts.
pub fn etag(canonical: &str, format: Format, source_identity: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [
        "pixgate-etag",
        crate::pixels::ENGINE_REVISION,
        canonical,
        format.ext(),
        source_identity,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    use base64::Engine as _;
    format!(
        "\"{}\"",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18])
    )
}

/// The cache key of a result: equivalent URLs share it (canonical options), the `Accept`
/// header enters only as the format decision.
pub fn result_key(req: &ParsedRequest, choice: FormatChoice) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [req.options.canonical(), choice.key(), req.source.url()] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

/// `If-None-Match` against our ETag, with the weak comparison RFC 9110 prescribes for it
/// (intermediaries may weaken ETags).
pub fn none_match(header: &str, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
}

fn common_headers(
    h: &mut hyper::HeaderMap,
    r: &CachedResult,
    req: &ParsedRequest,
    ttl: u64,
    now: i64,
    vary: bool,
) {
    h.insert(header::ETAG, value(&r.etag));
    h.insert(
        header::CACHE_CONTROL,
        value(&cache_control(ttl, req.options.expires, now)),
    );
    if let Some(lm) = &r.last_modified {
        h.insert(header::LAST_MODIFIED, value(lm));
    }
    if vary {
        h.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
}

/// The response for a transformed image.
pub fn image(
    r: &CachedResult,
    req: &ParsedRequest,
    ttl: u64,
    now: i64,
    vary: bool,
) -> Response<Body> {
    let o = &req.options;
    let name = o.filename.clone().unwrap_or_else(|| req.source.stem());
    let mut resp = Response::new(Full::new(r.bytes.clone()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(r.format.mime()),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.bytes.len()));
    common_headers(h, r, req, ttl, now, vary);
    h.insert(
        header::CONTENT_DISPOSITION,
        value(&content_disposition(
            &name,
            r.format.ext(),
            o.return_attachment,
        )),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("script-src 'none'"),
    );
    resp
}

/// `304 Not Modified` with the headers a cache needs to refresh its copy.
pub fn not_modified(
    r: &CachedResult,
    req: &ParsedRequest,
    ttl: u64,
    now: i64,
    vary: bool,
) -> Response<Body> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    common_headers(resp.headers_mut(), r, req, ttl, now, vary);
    resp
}

/// `GET /health`.
pub fn health() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /version`: what is running, for deploy checks.
pub fn version() -> Response<Body> {
    let body = serde_json::json!({
        "name": "pixgate",
        "version": env!("CARGO_PKG_VERSION"),
        "git": crate::GIT_HASH,
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A JSON document (`/info`), cacheable like an image: it depends only on the URL.
pub fn json(body: Vec<u8>, ttl: u64) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let cc = if ttl == 0 {
        HeaderValue::from_static("no-cache")
    } else {
        HeaderValue::from_str(&format!("public, max-age={ttl}"))
            .unwrap_or(HeaderValue::from_static("no-cache"))
    };
    h.insert(header::CACHE_CONTROL, cc);
    r
}

/// Marks a response as one no shared cache may keep (customer content answering a POST,
/// upload results).
pub fn private(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    r
}

/// Stored bytes of a known format, as they are (an upload's result behind its URL).
pub fn stored(bytes: Bytes, format: Format) -> Response<Body> {
    let mut r = Response::new(Full::new(bytes.clone()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.mime()),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("script-src 'none'"),
    );
    private(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lifetime_is_capped_by_expiry() {
        assert_eq!(cache_control(3600, None, 0), "max-age=3600, public");
        assert_eq!(cache_control(3600, Some(100), 40), "max-age=60, public");
        assert_eq!(cache_control(30, Some(100), 40), "max-age=30, public");
        assert_eq!(cache_control(0, None, 0), "no-cache");
        assert_eq!(cache_control(3600, Some(10), 40), "no-cache");
    }

    #[test]
    fn dispositions() {
        assert_eq!(
            content_disposition("cat", "jpg", false),
            "inline; filename=\"cat.jpg\""
        );
        assert_eq!(
            content_disposition("a\"b", "png", true),
            "attachment; filename=\"a%22b.png\""
        );
        let d = content_disposition("café", "webp", false);
        assert!(
            d.starts_with("inline; filename=\"caf_.webp\"; filename*=UTF-8''caf%C3%A9%2Ewebp"),
            "{d}"
        );
        assert!(HeaderValue::from_str(&d).is_ok());
    }

    #[test]
    fn etags_and_if_none_match() {
        let a = etag("w:300", Format::Webp, "etag:\"x\"");
        assert_eq!(
            a,
            etag("w:300", Format::Webp, "etag:\"x\""),
            "deterministic"
        );
        assert_ne!(a, etag("w:300", Format::Jpeg, "etag:\"x\""));
        assert_ne!(a, etag("w:301", Format::Webp, "etag:\"x\""));
        assert_ne!(a, etag("w:300", Format::Webp, "etag:\"y\""));
        assert!(
            a.starts_with('"') && a.ends_with('"') && a.len() == 26,
            "{a}"
        );
        assert!(none_match(&a, &a));
        assert!(none_match(&format!("\"zzz\", W/{a}"), &a));
        assert!(none_match("*", &a));
        assert!(!none_match("\"zzz\"", &a));
    }
}
