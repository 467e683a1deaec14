//! Listening and connections: HTTP/1.1 and HTTP/2 on one listener (hyper-util's auto
//! builder), a connection cap, a header read timeout, and graceful shutdown (stop accepting,
//! let in-flight requests finish, bounded by `shutdown_timeout`). Tests call [`run`] with a
//! listener bound to `127.0.0.1:0`.

use std::future::Future;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::handler::{self, State};

/// Serves until `shutdown` completes, then drains connections. Binds `metrics_listen`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let metrics = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let mut state = State::new(config).map_err(std::io::Error::other)?;
    state
        .fetch_watermark()
        .await
        .map_err(std::io::Error::other)?;
    serve(listener, metrics, Arc::new(state), shutdown).await
}

/// [`run`] with listeners bound and a state the caller keeps a handle on (its caches and
/// counters).
pub async fn serve(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = &state.config;
    let shutdown_timeout = config.shutdown_timeout;
    let header_timeout = config.header_read_timeout;
    let connections = Arc::new(Semaphore::new(config.raw.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Reloads the policy on edits and SIGHUP for as long as we serve.
    let watcher = state.policy.clone().map(|p| tokio::spawn(p.watch()));
    let metrics = metrics.map(|l| tokio::spawn(serve_metrics(l, state.clone())));
    tokio::pin!(shutdown);
    loop {
        // Over the cap, connections wait in the kernel's accept queue.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(handler::handle(state, req, peer).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    for task in [watcher, metrics].into_iter().flatten() {
        task.abort();
    }
    tracing::info!("shutting down: draining connections");
    if tokio::time::timeout(shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?shutdown_timeout,
            "shutdown timeout: closing remaining connections"
        );
    }
    Ok(())
}

/// The metrics listener: `GET /metrics` in the Prometheus text format, nothing else.
async fn serve_metrics(listener: TcpListener, state: Arc<State>) {
    use http_body_util::Full;
    use hyper::{Method, Response, StatusCode, header};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let state = state.clone();
            async move {
                let mut r = if req.method() == Method::GET && req.uri().path() == "/metrics" {
                    // moka applies inserts and evictions lazily; settle them so the entry and
                    // byte gauges are current.
                    state.results.run_pending_tasks().await;
                    state.sources.run_pending_tasks().await;
                    let mut r =
                        Response::new(Full::new(bytes::Bytes::from(state.render_metrics())));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static(
                            "text/plain; version=0.0.4; charset=utf-8",
                        ),
                    );
                    r
                } else {
                    let mut r = Response::new(Full::new(bytes::Bytes::from_static(b"not found\n")));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                };
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("no-store"),
                );
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
