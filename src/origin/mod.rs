//! Fetching source bytes, bounded in bytes, time, redirects and addresses. HTTP(S) through a
//! pooled hyper client (rustls) whose connector resolves names itself and checks every address
//! it is about to connect to — after DNS, on every redirect hop — against the address guard,
//! so an allowed name that resolves (or redirects) to 127.0.0.1 or 169.254.169.254 is refused
//! before any packet is sent. `local:///` reads files under the configured root only.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper::header::{CONTENT_LENGTH, ETAG, LAST_MODIFIED, LOCATION, USER_AGENT};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::request::url::Source;

pub mod guard;
pub use guard::AddressGuard;

/// Why a source could not be had.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OriginError {
    #[error("source URL is not in the allow-list")]
    NotAllowed,
    /// The address and the block that refused it.
    #[error("source address {0} is refused")]
    BlockedAddress(String),
    #[error("source is unreachable: {0}")]
    Unreachable(String),
    #[error("origin answered {0}")]
    ClientError(u16),
    #[error("origin answered {0}")]
    ServerError(u16),
    #[error("bad origin response: {0}")]
    BadResponse(String),
    #[error("origin did not deliver the source within {0:?}")]
    Timeout(Duration),
    #[error("source is larger than {0} bytes")]
    TooLarge(u64),
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("local file not found")]
    NotFound,
}

/// Fetched source bytes and what the origin said about them.
#[derive(Debug, Clone)]
pub struct SourceBytes {
    pub bytes: Bytes,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// What identifies this version of the source for ETags: the origin's ETag when it sent
    /// one, else a hash of the bytes (Last-Modified alone has one-second granularity).
    pub identity: String,
}

impl SourceBytes {
    pub fn new(bytes: Bytes, etag: Option<String>, last_modified: Option<String>) -> SourceBytes {
        use sha2::Digest;
        let identity = match &etag {
            Some(e) => format!("etag:{e}"),
            None => format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
        };
        SourceBytes {
            bytes,
            etag,
            last_modified,
            identity,
        }
    }
}

impl crate::cache::Weighted for SourceBytes {
    fn weight(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// The connector error that says "refused by the guard", found again in hyper's error chain.
#[derive(Debug)]
struct Blocked(guard::Refusal);

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "address {} is blocked", self.0)
    }
}
impl std::error::Error for Blocked {}

/// A TCP connector that resolves names and connects only to addresses the guard allows.
#[derive(Clone)]
pub struct GuardedConnector {
    guard: Arc<AddressGuard>,
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            let mut last_err = None;
            let mut blocked = None;
            for addr in addrs {
                if let Err(refusal) = guard.check(addr.ip()) {
                    blocked = Some(refusal);
                    continue;
                }
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(TokioIo::new(s));
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            match (last_err, blocked) {
                (Some(e), _) => Err(e),
                (None, Some(refusal)) => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    Blocked(refusal),
                )),
                (None, None) => Err(io::Error::new(io::ErrorKind::NotFound, "no address")),
            }
        })
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<GuardedConnector>, Empty<Bytes>>;

/// The source fetcher.
pub struct Origin {
    client: HttpsClient,
    local_root: Option<PathBuf>,
    allowed_sources: Vec<String>,
    timeout: Duration,
    max_bytes: u64,
    max_redirects: usize,
    user_agent: String,
}

impl Origin {
    pub fn new(cfg: &Config) -> Origin {
        let guard = Arc::new(AddressGuard {
            allow_loopback: cfg.allow_loopback_sources,
            allow_private: cfg.allow_private_sources,
            allow_link_local: cfg.allow_link_local_sources,
            allowed_networks: cfg.allowed_source_networks.clone(),
        });
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring supports the default protocol versions")
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(GuardedConnector { guard });
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .build(https);
        Origin {
            client,
            local_root: cfg.local_root.clone(),
            allowed_sources: cfg.allowed_sources.clone(),
            timeout: cfg.download_timeout,
            max_bytes: cfg.max_src_file_size.unwrap_or(u64::MAX),
            max_redirects: cfg.max_redirects,
            user_agent: cfg.user_agent.clone(),
        }
    }

    /// Fetches `source`, within the download timeout (over the whole body) and size limit.
    /// `max_bytes` may lower the configured limit (`msfs`).
    pub async fn fetch(
        &self,
        source: &Source,
        max_bytes: Option<u64>,
    ) -> Result<SourceBytes, OriginError> {
        let limit = max_bytes.map_or(self.max_bytes, |m| m.min(self.max_bytes));
        match source {
            Source::Local(path) => self.read_local(path, limit).await,
            // An upload's bytes come with the request; there is nothing to fetch.
            Source::Upload(_) => Err(OriginError::NotFound),
            Source::Http(url) => {
                if !crate::request::url::source_allowed(url, &self.allowed_sources) {
                    return Err(OriginError::NotAllowed);
                }
                tokio::time::timeout(self.timeout, self.fetch_http(url, limit))
                    .await
                    .map_err(|_| OriginError::Timeout(self.timeout))?
            }
        }
    }

    async fn fetch_http(&self, url: &str, limit: u64) -> Result<SourceBytes, OriginError> {
        let mut url = url.to_string();
        for _ in 0..=self.max_redirects {
            let uri: Uri = url
                .parse()
                .map_err(|_| OriginError::Unreachable(format!("unparseable URL {url}")))?;
            let req = hyper::Request::get(uri.clone())
                .header(USER_AGENT, &self.user_agent)
                .body(Empty::new())
                .map_err(|e| OriginError::Unreachable(e.to_string()))?;
            let resp = self
                .client
                .request(req)
                .await
                .map_err(classify_client_error)?;
            let status = resp.status();
            if status.is_redirection() {
                let loc = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        OriginError::BadResponse(format!("{status} without Location"))
                    })?;
                url = resolve_location(&uri, loc)?;
                continue;
            }
            if status.is_client_error() {
                return Err(OriginError::ClientError(status.as_u16()));
            }
            if !status.is_success() {
                return Err(OriginError::ServerError(status.as_u16()));
            }
            let header = |name| {
                resp.headers()
                    .get(name)
                    .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                    .map(str::to_string)
            };
            let etag = header(ETAG);
            let last_modified = header(LAST_MODIFIED);
            if let Some(len) = header(CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok()) {
                if len > limit {
                    return Err(OriginError::TooLarge(limit));
                }
            }
            let mut body = resp.into_body();
            let mut buf = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| OriginError::BadResponse(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    if buf.len() as u64 + data.len() as u64 > limit {
                        return Err(OriginError::TooLarge(limit));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            return Ok(SourceBytes::new(buf.freeze(), etag, last_modified));
        }
        Err(OriginError::TooManyRedirects(self.max_redirects))
    }

    async fn read_local(&self, path: &str, limit: u64) -> Result<SourceBytes, OriginError> {
        let root = self.local_root.as_deref().ok_or(OriginError::NotFound)?;
        let full = local_path(root, path).ok_or(OriginError::NotFound)?;
        let meta = tokio::fs::metadata(&full)
            .await
            .map_err(|_| OriginError::NotFound)?;
        if !meta.is_file() {
            return Err(OriginError::NotFound);
        }
        if meta.len() > limit {
            return Err(OriginError::TooLarge(limit));
        }
        let bytes = tokio::fs::read(&full)
            .await
            .map_err(|_| OriginError::NotFound)?;
        let last_modified = meta.modified().ok().map(httpdate_from);
        Ok(SourceBytes::new(Bytes::from(bytes), None, last_modified))
    }
}

/// A `local:///` path resolved under `root`: no `..`, and no symlink out of the root.
pub fn local_path(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = root.join(rel).canonicalize().ok()?;
    full.starts_with(root).then_some(full)
}

/// Maps hyper client errors: a guard refusal, a timeout-free connect failure, or a broken
/// response.
fn classify_client_error(e: hyper_util::client::legacy::Error) -> OriginError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<Blocked>() {
            return OriginError::BlockedAddress(b.0.to_string());
        }
        // io::Error's `source()` skips the error it wraps; look inside.
        let inner = s.downcast_ref::<io::Error>().and_then(|io| io.get_ref());
        if let Some(b) = inner.and_then(|i| i.downcast_ref::<Blocked>()) {
            return OriginError::BlockedAddress(b.0.to_string());
        }
        source = s.source();
    }
    if e.is_connect() {
        OriginError::Unreachable(format!("{e:?}"))
    } else {
        OriginError::BadResponse(format!("{e:?}"))
    }
}

/// Resolves a `Location` header against the URL that sent it.
fn resolve_location(base: &Uri, loc: &str) -> Result<String, OriginError> {
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    let resolved = if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_string()
    } else if let Some(rest) = loc.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if loc.starts_with('/') {
        format!("{scheme}://{authority}{loc}")
    } else if loc.contains("://") {
        return Err(OriginError::Unreachable(format!(
            "redirect to unsupported scheme: {loc}"
        )));
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{loc}")
    };
    Ok(resolved)
}

/// An HTTP date (IMF-fixdate) from a file time.
fn httpdate_from(t: std::time::SystemTime) -> String {
    httpdate::fmt_http_date(t.max(std::time::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_times_are_http_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784111777);
        assert_eq!(super::httpdate_from(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let before = std::time::UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(
            super::httpdate_from(before),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    use super::*;

    #[test]
    fn local_paths_stay_under_the_root() {
        let root = std::env::temp_dir().join(format!("pixgate-local-{}", std::process::id()));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.png"), b"x").unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(
            local_path(&root, "/sub/a.png"),
            Some(root.join("sub/a.png"))
        );
        assert_eq!(local_path(&root, "/sub/../sub/a.png"), None);
        assert_eq!(local_path(&root, "/../etc/passwd"), None);
        assert_eq!(local_path(&root, "/missing.png"), None);
        std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
        assert_eq!(local_path(&root, "/escape"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn redirects_resolve_relative_locations() {
        let base: Uri = "http://a.com:8080/x/y.jpg".parse().unwrap();
        let r = |l| resolve_location(&base, l).unwrap();
        assert_eq!(r("/z.jpg"), "http://a.com:8080/z.jpg");
        assert_eq!(r("z.jpg"), "http://a.com:8080/x/z.jpg");
        assert_eq!(r("//b.com/q"), "http://b.com/q");
        assert_eq!(r("https://c.com/"), "https://c.com/");
        assert!(resolve_location(&base, "file:///etc/passwd").is_err());
    }
}
