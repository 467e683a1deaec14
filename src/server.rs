//! Listening and connections: HTTP/1.1 and HTTP/2 on one listener (hyper-util's auto
//! builder), a connection cap in total and per client address, an idle timeout that closes
//! connections with no request in flight (new ones that never send one included, HTTP/1 and
//! HTTP/2 alike), a header read timeout, and graceful shutdown (stop accepting, let
//! in-flight requests finish, bounded by `shutdown_timeout`). [`run`] is the one startup
//! path: the binary and the tests call it.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{Config, Network};
use crate::handler;
use crate::state::{StartError, State};

/// Open connections per client address, capped; an entry leaves with its last connection.
struct PerAddress {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerAddress`]; freed on drop.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn enter(table: &Arc<PerAddress>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= table.cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// When a connection last started or finished a request, and how many are in flight: what
/// the idle timeout watches. Bytes do not count, so a client dripping header bytes or
/// sending HTTP/2 PINGs is as idle as a silent one.
struct Activity {
    born: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            let at = self.born + Duration::from_millis(last) + idle;
            tokio::time::sleep_until(at.into()).await;
            if self.in_flight.load(Ordering::Relaxed) == 0
                && self.last_ms.load(Ordering::Relaxed) == last
            {
                return;
            }
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                // Busy: look again one period from now.
                self.touch();
            }
        }
    }
}

/// A request in flight, from its headers until its response body is sent or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The address connections are counted under: IPv4-mapped IPv6 as the IPv4 it is.
fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_trusted(ip: IpAddr, proxies: &[Network]) -> bool {
    proxies.iter().any(|n| n.contains(ip))
}

/// The sockets pixgate serves on, bound before anything else starts (a port in use fails
/// fast, and port 0 is known before `ready`).
pub struct Listeners {
    pub api: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `listen` and `metrics_listen`.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let api = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::MetricsListen { addr, source })?,
            ),
            None => None,
        };
        Ok(Listeners { api, metrics })
    }
}

/// What `ready` is told once pixgate serves: where, and the state requests will see.
pub struct Ready<'a> {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub state: &'a Arc<State>,
}

/// The one startup path (`pixgate serve` and the tests): builds the state (policy,
/// watermark), serves until `shutdown` completes, then drains connections. `ready` is
/// called once the policy watcher and the admin listener are up, so whatever it announces
/// (`listening on`) is true of everything a client may do next.
pub async fn run(
    listeners: Listeners,
    config: Config,
    ready: impl FnOnce(Ready<'_>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if config.keys.is_empty() {
        tracing::info!("signing is off: any signature segment is accepted (use `insecure`)");
    }
    let state = Arc::new(State::start(config).await?);
    match &state.policy {
        Some(p) => {
            tracing::info!(file = %p.file().display(), generation = p.generation(), "policy loaded")
        }
        None => tracing::warn!(
            "no policy file ({} absent or policy_file = \"\"): every request is allowed without limits",
            crate::config::DEFAULT_POLICY_FILE
        ),
    }
    let Listeners { api, metrics } = listeners;
    let addr = api.local_addr().map_or(state.config.listen, |a| a);
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(at) = metrics_addr {
        tracing::info!(addr = %at, "metrics on http://{at}/metrics");
    }
    let announce = |state: &Arc<State>| {
        let c = &state.config;
        let root = c
            .local_root
            .as_deref()
            .map_or("-".into(), |r| r.display().to_string());
        tracing::info!(local_root = %root, workers = c.workers, "ready");
        ready(Ready {
            addr,
            metrics_addr,
            state,
        });
    };
    serve(api, metrics, state, announce, shutdown).await;
    Ok(())
}

/// Accepts and serves connections until `shutdown`, then drains them.
async fn serve(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    state: Arc<State>,
    ready: impl FnOnce(&Arc<State>),
    shutdown: impl Future<Output = ()>,
) {
    let config = &state.config;
    let shutdown_timeout = config.shutdown_timeout;
    let header_timeout = config.header_read_timeout;
    let idle_timeout = config.keep_alive_timeout;
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let per_address = Arc::new(PerAddress {
        cap: config.max_connections_per_ip.unwrap_or(usize::MAX),
        open: Mutex::new(HashMap::new()),
    });
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
    ready(&state);
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
        let ip = client_address(peer.ip());
        // Proxies in front (nginx) carry many clients each: only the total cap holds them.
        let slot = if is_trusted(ip, &config.trusted_proxies) {
            None
        } else {
            match PerAddress::enter(&per_address, ip) {
                Some(s) => Some(s),
                None => {
                    tracing::debug!(%peer, "connection refused: its address is at max_connections_per_ip");
                    state
                        .metrics
                        .connections_closed
                        .with_label_values(&["per_ip"])
                        .inc();
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let metrics_state = state.clone();
        let state = state.clone();
        let activity = Activity::new();
        let watched = activity.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            let in_flight = watched.begin();
            async move {
                let resp = handler::handle(state, req, peer).await;
                Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let m = &metrics_state.metrics;
            m.connections_open.inc();
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                // Nothing in flight: dropping the connection loses no request.
                () = activity.idle_for(idle_timeout) => {
                    tracing::debug!(%peer, "closing an idle connection");
                    m.connections_closed.with_label_values(&["idle"]).inc();
                }
            }
            m.connections_open.dec();
            drop(slot);
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
