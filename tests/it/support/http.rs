//! A real HTTP client (hyper) for tests: one request, fully read, optionally from a chosen
//! loopback address (to be a client other than 127.0.0.1), async or blocking.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::HeaderMap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The stable `code` of a JSON error body.
    pub fn code(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.split("\"code\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_string()
    }
}

pub async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    send(None, method, url, headers, Empty::<Bytes>::new()).await
}

/// `POST` with a body.
pub async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    send(
        None,
        "POST",
        url,
        headers,
        http_body_util::Full::new(Bytes::from(body)),
    )
    .await
}

/// One request on a fresh client: from `from` when given (bound before connecting), with
/// `body`, within 60 s.
pub async fn send<B>(
    from: Option<IpAddr>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: B,
) -> Reply
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_local_address(from);
    let client = Client::builder(TokioExecutor::new()).build::<_, B>(connector);
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        client.request(req.body(body).unwrap()),
    )
    .await
    .expect("the server answered within 60 s")
    .expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// [`send`] from a synchronous test, on a runtime of its own.
pub fn blocking(
    from: Option<IpAddr>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(send(
            from,
            method,
            url,
            headers,
            http_body_util::Full::new(Bytes::from(body)),
        ))
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    request("GET", url, headers).await
}
