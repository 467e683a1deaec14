//! `pixgate health`: one `GET` of a server's health URL over plain HTTP/1.1, judged healthy
//! only on `200` with the body `ok`, within a deadline.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("not an http:// URL with a host and port")]
    BadUrl,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(String),
    #[error("answered {status} `{body}`")]
    Answer { status: u16, body: String },
}

/// `Ok` when `url` answers 200 `ok` within `timeout`.
pub async fn check(url: &str, timeout: Duration) -> Result<(), Unhealthy> {
    tokio::time::timeout(timeout, get(url))
        .await
        .unwrap_or(Err(Unhealthy::Timeout(timeout)))
}

async fn get(url: &str) -> Result<(), Unhealthy> {
    let uri: hyper::Uri = url.parse().map_err(|_| Unhealthy::BadUrl)?;
    if uri.scheme_str() != Some("http") {
        return Err(Unhealthy::BadUrl);
    }
    let authority = uri.authority().ok_or(Unhealthy::BadUrl)?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(Unhealthy::Connect)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| Unhealthy::Http(e.to_string()))?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::USER_AGENT, "pixgate-health")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Unhealthy::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Unhealthy::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    // A health answer is two bytes; anything long is not ours.
    let body = Limited::new(resp.into_body(), 4096)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    if status == 200 && body.trim() == "ok" {
        Ok(())
    } else {
        Err(Unhealthy::Answer {
            status,
            body: body.chars().take(200).collect(),
        })
    }
}
