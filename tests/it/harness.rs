//! Starts the real pixgate server in-process on `127.0.0.1:0` (through `server::run`, as the
//! binary does) and talks to it over real HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::HeaderMap;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pixgate::config::{self, RawConfig};
use pixgate::server;

pub struct Pixgate {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The server's own state: caches and counters, for assertions.
    pub state: std::sync::Arc<pixgate::state::State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), pixgate::state::StartError>>>,
}

/// Test defaults: loopback sources allowed (the origin is on 127.0.0.1), short timeouts.
pub fn test_config() -> RawConfig {
    RawConfig {
        listen: "127.0.0.1:0".into(),
        allow_loopback_sources: true,
        download_timeout: 2.0,
        request_timeout: 20.0,
        log_level: "warn".into(),
        // Tests that are not about policies run without one (the shipped policy would
        // rate-limit their bursts); tests/it/policy.rs sets its own.
        policy_file: Some(String::new()),
        ..RawConfig::default()
    }
}

impl Pixgate {
    /// Starts pixgate through `server::run`, the binary's own startup path, with the API and
    /// metrics listeners on ports the OS picks; returns once it is ready.
    pub async fn start(mut raw: RawConfig) -> Pixgate {
        raw.metrics_listen = "127.0.0.1:0".into();
        let cfg = config::from_raw(raw).expect("valid test config");
        let listeners = server::Listeners::bind(&cfg).await.expect("loopback binds");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let done = tokio::spawn(server::run(
            listeners,
            cfg,
            move |r: server::Ready<'_>| {
                let _ = ready_tx.send((r.addr, r.metrics_addr, r.state.clone()));
            },
            async move {
                let _ = rx.await;
            },
        ));
        // Edits and signals the test sends next need the policy watcher in place.
        let Ok((addr, metrics_addr, state)) = ready_rx.await else {
            panic!("pixgate did not start: {:?}", done.await);
        };
        Pixgate {
            addr,
            metrics_addr: metrics_addr.expect("the metrics listener is on"),
            state,
            shutdown: Some(tx),
            done: Some(done),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> Reply {
        get(&self.url(path), &[]).await
    }

    /// The `/metrics` text, fetched over HTTP from the metrics listener.
    pub async fn metrics(&self) -> String {
        let r = get(&format!("http://{}/metrics", self.metrics_addr), &[]).await;
        assert_eq!(r.status, 200);
        String::from_utf8(r.body.to_vec()).unwrap()
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap().unwrap();
        }
    }
}

impl Drop for Pixgate {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

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
    send(method, url, headers, Empty::<Bytes>::new()).await
}

/// `POST` with a body.
pub async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    send(
        "POST",
        url,
        headers,
        http_body_util::Full::new(Bytes::from(body)),
    )
    .await
}

async fn send<B>(method: &str, url: &str, headers: &[(&str, &str)], body: B) -> Reply
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = Client::builder(TokioExecutor::new()).build_http::<B>();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        client.request(req.body(body).unwrap()),
    )
    .await
    .expect("pixgate answered within 60 s")
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

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    request("GET", url, headers).await
}

/// Starts the real `pixgate serve --listen 127.0.0.1:0` binary and returns it with the
/// address from its `listening on ADDR` line (readiness is that line, not a delay).
pub fn spawn_binary_server() -> (std::process::Child, String) {
    spawn_binary(&[("PIXGATE_LOG_LEVEL", "warn")], false)
}

/// [`spawn_binary_server`] with extra environment; with `capture_stderr` the log is left in
/// `child.stderr` for the test to read.
pub fn spawn_binary(env: &[(&str, &str)], capture_stderr: bool) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pixgate"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        // Several binaries run at once in the tests: no fixed metrics port.
        .env("PIXGATE_METRICS_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(if capture_stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(addr) = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string)
    else {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        panic!("unexpected first line `{line}`; stderr: {err}");
    };
    (child, addr)
}
