//! In-memory caches: results (encoded images) and sources (fetched bytes), both moka caches
//! bounded by bytes, with request coalescing: concurrent misses for one key run one fill, as
//! a task of its own, so a client that hangs up does not cancel work others wait for. Errors
//! are never cached: every waiter of a failed fill gets the error, the next request retries.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// How a value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Coalesced,
}

impl Outcome {
    pub fn header(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Coalesced => "COALESCED",
        }
    }
}

/// The error a fill may end with; every waiter gets a clone.
pub trait FillError: Clone + Send + Sync + 'static {
    /// What waiters get when the fill task ended without a result (it panicked).
    fn fill_lost() -> Self;
}

/// Something with a size in bytes, for the weigher.
pub trait Weighted {
    fn weight(&self) -> u64;
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub coalesced: AtomicU64,
    /// Fills that completed with a value too large to keep.
    pub too_large: AtomicU64,
    /// Entries removed to make room, and entries removed because their time was up.
    pub evicted: AtomicU64,
    pub expired: AtomicU64,
}

type Slot<V, E> = watch::Receiver<Option<Result<Arc<V>, E>>>;

/// A byte-bounded moka cache with coalesced fills that fail with `E`.
pub struct Store<K, V, E> {
    cache: moka::future::Cache<K, Arc<V>>,
    inflight: Arc<Mutex<HashMap<K, Slot<V, E>>>>,
    max_entry: u64,
    pub stats: Arc<CacheStats>,
}

/// Removes an in-flight entry when the fill task ends, however it ends.
struct InflightGuard<K: Hash + Eq, V, E> {
    map: Arc<Mutex<HashMap<K, Slot<V, E>>>>,
    key: K,
}

impl<K: Hash + Eq, V, E> Drop for InflightGuard<K, V, E> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&self.key);
        }
    }
}

impl<K, V, E> Store<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Weighted + Send + Sync + 'static,
    E: FillError,
{
    /// `capacity` bytes in all; values over `max_entry_fraction` of it are served but not kept.
    pub fn new(
        capacity: u64,
        ttl: Duration,
        tti: Option<Duration>,
        max_entry_fraction: f64,
    ) -> Self {
        let stats = Arc::new(CacheStats::default());
        let counts = stats.clone();
        let mut b = moka::future::Cache::builder()
            .max_capacity(capacity)
            .eviction_listener(move |_k, _v, cause| {
                use moka::notification::RemovalCause;
                match cause {
                    RemovalCause::Size => counts.evicted.fetch_add(1, Ordering::Relaxed),
                    RemovalCause::Expired => counts.expired.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            })
            // Keys are small next to images; count a fixed overhead for them and the entry.
            .weigher(|_k: &K, v: &Arc<V>| (v.weight() + 256).min(u64::from(u32::MAX)) as u32)
            .time_to_live(ttl);
        if let Some(tti) = tti {
            b = b.time_to_idle(tti);
        }
        Store {
            cache: b.build(),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            max_entry: (capacity as f64 * max_entry_fraction) as u64,
            stats,
        }
    }

    /// A cached value, counted as a hit.
    pub async fn get(&self, key: &K) -> Option<Arc<V>> {
        let v = self.cache.get(key).await;
        if v.is_some() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
        }
        v
    }

    /// The cached value, or the result of `fill` — run once for all concurrent callers with
    /// the same key, in its own task.
    pub async fn get_or_fill<F>(&self, key: K, fill: F) -> (Result<Arc<V>, E>, Outcome)
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        if let Some(v) = self.get(&key).await {
            return (Ok(v), Outcome::Hit);
        }
        let (mut rx, outcome) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(rx) = map.get(&key) {
                (rx.clone(), Outcome::Coalesced)
            } else {
                let (tx, rx) = watch::channel(None);
                map.insert(key.clone(), rx.clone());
                let guard = InflightGuard {
                    map: self.inflight.clone(),
                    key: key.clone(),
                };
                let cache = self.cache.clone();
                let stats = self.stats.clone();
                let max_entry = self.max_entry;
                // The fill logs under the span of the request that started it.
                let fill_task = async move {
                    // A fill that finished between our miss and our registration has
                    // already stored its value: use it rather than fetching again.
                    let result = match cache.get(&key).await {
                        Some(v) => Ok(v),
                        None => fill.await.map(Arc::new),
                    };
                    if let Ok(v) = &result {
                        if v.weight() <= max_entry {
                            cache.insert(key, v.clone()).await;
                        } else {
                            stats.too_large.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Errors are deliberately not cached. The value is in the cache before
                    // the in-flight entry goes, so no request can start a second fill.
                    drop(guard);
                    let _ = tx.send(Some(result));
                };
                tokio::spawn(tracing::Instrument::in_current_span(fill_task));
                (rx, Outcome::Miss)
            }
        };
        match outcome {
            Outcome::Coalesced => self.stats.coalesced.fetch_add(1, Ordering::Relaxed),
            _ => self.stats.misses.fetch_add(1, Ordering::Relaxed),
        };
        let result = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(|| Err(E::fill_lost())),
            // The fill task ended without a result: it panicked.
            Err(_) => Err(E::fill_lost()),
        };
        (result, outcome)
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Applies pending evictions (moka does this lazily); for tests and metrics.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Blob(Vec<u8>);
    impl Weighted for Blob {
        fn weight(&self) -> u64 {
            self.0.len() as u64
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Failed(&'static str);
    impl FillError for Failed {
        fn fill_lost() -> Self {
            Failed("lost")
        }
    }

    fn store(capacity: u64) -> Arc<Store<u32, Blob, Failed>> {
        Arc::new(Store::new(capacity, Duration::from_secs(60), None, 0.5))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_run_one_fill() {
        let s = store(1 << 20);
        let fills = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (s, fills, mut release) = (s.clone(), fills.clone(), release_rx.clone());
            tasks.push(tokio::spawn(async move {
                s.get_or_fill(7, async move {
                    fills.fetch_add(1, Ordering::SeqCst);
                    let _ = release.wait_for(|r| *r).await;
                    Ok(Blob(vec![1; 100]))
                })
                .await
            }));
        }
        // Every caller is either the filler or waiting on it before the fill may finish.
        while s.stats.misses.load(Ordering::SeqCst) + s.stats.coalesced.load(Ordering::SeqCst) < 20
        {
            tokio::task::yield_now().await;
        }
        release_tx.send(true).unwrap();
        for t in tasks {
            assert_eq!(t.await.unwrap().0.unwrap().0.len(), 100);
        }
        assert_eq!(fills.load(Ordering::SeqCst), 1);
        assert_eq!(s.stats.misses.load(Ordering::SeqCst), 1);
        assert_eq!(s.stats.coalesced.load(Ordering::SeqCst), 19);
        let (v, o) = s.get_or_fill(7, async { Ok(Blob(vec![])) }).await;
        assert_eq!((v.unwrap().0.len(), o), (100, Outcome::Hit));
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let s = store(1 << 20);
        let (r, _) = s.get_or_fill(1, async { Err(Failed("origin")) }).await;
        assert_eq!(r.err(), Some(Failed("origin")));
        let (r, o) = s.get_or_fill(1, async { Ok(Blob(vec![0; 3])) }).await;
        assert_eq!((r.unwrap().0.len(), o), (3, Outcome::Miss));
    }

    #[tokio::test]
    async fn capacity_is_respected_and_large_values_are_not_kept() {
        let s = store(10_000);
        for k in 0..50 {
            let _ = s.get_or_fill(k, async { Ok(Blob(vec![0; 1000])) }).await;
        }
        s.run_pending_tasks().await;
        assert!(s.weighted_size() <= 10_000, "{}", s.weighted_size());
        assert!(s.entry_count() < 50);
        let (r, _) = s.get_or_fill(99, async { Ok(Blob(vec![0; 6000])) }).await;
        assert_eq!(r.unwrap().0.len(), 6000, "served");
        assert!(s.get(&99).await.is_none(), "but not kept");
        assert_eq!(s.stats.too_large.load(Ordering::Relaxed), 1);
    }
}
