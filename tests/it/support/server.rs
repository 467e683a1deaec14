//! The real pixgate server in-process on `127.0.0.1:0`, started through `server::run` (the
//! binary's own startup path), with a test configuration.

use std::net::SocketAddr;

use pixgate::config::{self, RawConfig};
use pixgate::server;

use super::http::{Reply, get};

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
