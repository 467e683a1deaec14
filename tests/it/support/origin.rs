//! A real local origin (hyper on 127.0.0.1:0) serving `tests/fixtures/`, able to misbehave
//! on cue by path prefix, and counting the requests it saw.
//!
//! Routes: `/f/<fixture>` the file; `/drip/<fixture>` one 64-byte chunk every 100 ms;
//! `/stall/<fixture>` headers and 100 bytes, then nothing; `/truncated/<fixture>` full
//! Content-Length, half the body, then the connection is cut; `/huge-length/<fixture>` claims
//! 100 GB; `/status/<code>`; `/redirect/<n>/<fixture>` n hops then the file; `/loop`;
//! `/to?<url>` a redirect to any URL; `/html` an HTML page labelled image/jpeg.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::support::fixtures;

type Body = BoxBody<Bytes, std::io::Error>;

pub struct Origin {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    hit: Arc<tokio::sync::Notify>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Origin {
    /// Starts on `ip`:0 (any 127.x address works on Linux).
    pub async fn start_on(ip: &str) -> Origin {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let hit = Arc::new(tokio::sync::Notify::new());
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let h = hits.clone();
        let n = hit.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => r.unwrap(),
                    _ = &mut rx => break,
                };
                let h = h.clone();
                let n = n.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        n.notify_waiters();
                        route(req, addr)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            hits,
            hit,
            shutdown: Some(tx),
        }
    }

    pub async fn start() -> Origin {
        Origin::start_on("127.0.0.1").await
    }

    /// `http://ADDR/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Waits until the origin has seen at least `n` requests.
    pub async fn wait_hits(&self, n: usize) {
        loop {
            let notified = self.hit.notified();
            if self.hits() >= n {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = full(StatusCode::FOUND, "");
    r.headers_mut().insert("location", to.parse().unwrap());
    r
}

fn file(rel: &str) -> Option<Vec<u8>> {
    let rel = percent_encoding::percent_decode_str(rel)
        .decode_utf8()
        .ok()?;
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    std::fs::read(fixtures().join(rel.as_ref())).ok()
}

async fn route(
    req: Request<hyper::body::Incoming>,
    me: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let (head, rest) = path[1..].split_once('/').unwrap_or((&path[1..], ""));
    let not_found = || full(StatusCode::NOT_FOUND, "no such fixture");
    let resp = match head {
        "f" => match file(rest) {
            Some(b) => {
                let mut r = full(StatusCode::OK, b);
                r.headers_mut()
                    .insert("etag", "\"fixture-v1\"".parse().unwrap());
                r.headers_mut().insert(
                    "last-modified",
                    "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
                );
                r
            }
            None => not_found(),
        },
        "drip" | "stall" | "truncated" => match file(rest) {
            Some(b) => {
                let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(4);
                let len = b.len();
                let mode = head.to_string();
                tokio::spawn(async move {
                    match mode.as_str() {
                        "drip" => {
                            for chunk in b.chunks(64) {
                                if tx.send_data(Bytes::copy_from_slice(chunk)).await.is_err() {
                                    return;
                                }
                                // The misbehaviour under test: an origin that trickles.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        "stall" => {
                            let _ = tx
                                .send_data(Bytes::copy_from_slice(&b[..100.min(len)]))
                                .await;
                            // Hold the connection open without sending more.
                            std::future::pending::<()>().await;
                        }
                        _ => {
                            let _ = tx.send_data(Bytes::copy_from_slice(&b[..len / 2])).await;
                            tx.abort(std::io::Error::other("cut"));
                        }
                    }
                });
                let mut r = Response::new(body.boxed());
                r.headers_mut().insert("content-length", len.into());
                r
            }
            None => not_found(),
        },
        "huge-length" => {
            let (_tx, body) = Channel::<Bytes, std::io::Error>::new(1);
            let mut r = Response::new(body.boxed());
            r.headers_mut()
                .insert("content-length", 100_000_000_000u64.into());
            // Keep the sender alive long enough for the client to read the headers.
            tokio::spawn(async move {
                let _keep = _tx;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
            r
        }
        "status" => {
            let code = rest
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            full(code.unwrap_or(StatusCode::BAD_REQUEST), "status on cue")
        }
        "redirect" => {
            let (n, target) = rest.split_once('/').unwrap_or(("0", ""));
            match n.parse::<u32>() {
                Ok(0) | Err(_) => redirect(&format!("/f/{target}")),
                Ok(n) => redirect(&format!("http://{me}/redirect/{}/{target}", n - 1)),
            }
        }
        "loop" => redirect("/loop"),
        "to" => redirect(req.uri().query().unwrap_or("/")),
        "html" => {
            let mut r = full(
                StatusCode::OK,
                "<html><body><script>alert(1)</script>Not here</body></html>",
            );
            r.headers_mut()
                .insert("content-type", "image/jpeg".parse().unwrap());
            r
        }
        _ => not_found(),
    };
    Ok(resp)
}
