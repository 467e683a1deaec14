//! Rate-limit enforcement: GCRA limiters (governor) keyed by the policy's `bucket`, one keyed
//! limiter per distinct quota, idle buckets swept exactly (a bucket is dropped only when its
//! state is indistinguishable from a fresh one, so eviction never hands out an extra burst).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::Limit;

/// A bucket name longer than this is replaced by its SHA-256 (policies that build buckets from
/// raw header values must not grow memory per byte of input).
const MAX_BUCKET_LEN: usize = 128;
/// Distinct quotas at once; a policy that derives rates from request input would otherwise
/// create a limiter per request.
const MAX_QUOTAS: usize = 4096;

/// Why a request was refused by its bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    /// Until a request of this cost would conform.
    pub retry_after: Duration,
    /// The bucket's burst (what `RateLimit-Limit` reports).
    pub limit: u32,
    /// True when the bucket table was full and the request had no bucket to be counted in.
    pub table_full: bool,
}

type Limiter = DefaultKeyedRateLimiter<String>;

/// The limiters of one process.
pub struct Buckets {
    /// By (cell period in ns, burst).
    by_quota: RwLock<HashMap<(u64, u32), Arc<Limiter>>>,
    max_buckets: usize,
    clock: DefaultClock,
    last_sweep: std::sync::Mutex<std::time::Instant>,
}

impl Buckets {
    pub fn new(max_buckets: usize) -> Buckets {
        Buckets {
            by_quota: RwLock::new(HashMap::new()),
            max_buckets,
            clock: DefaultClock::default(),
            last_sweep: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    /// Takes `cost` cells from the bucket, or says how long until it could.
    pub fn check(&self, limit: &Limit) -> Result<(), Limited> {
        let limiter = self.limiter(limit.period, limit.burst)?;
        let key = bucket_key(&limit.bucket);
        if self.len() >= self.max_buckets {
            // Under a flood of distinct buckets: reclaim refilled ones (at most once a second,
            // a sweep walks the whole table), and if that is not enough, refuse rather than
            // grow (or stop limiting).
            self.sweep_at_most_every(Duration::from_secs(1));
            if self.len() >= self.max_buckets {
                return Err(Limited {
                    retry_after: Duration::from_secs(1),
                    limit: limit.burst,
                    table_full: true,
                });
            }
        }
        let cost = NonZeroU32::new(limit.cost.max(1)).expect("max(1)");
        match limiter.check_key_n(&key, cost) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
                limit: limit.burst,
                table_full: false,
            }),
            // The decision validator refuses cost > burst; a quota change between validation
            // and here cannot happen (both come from the same decision).
            Err(_) => Err(Limited {
                retry_after: Duration::from_secs(1),
                limit: limit.burst,
                table_full: false,
            }),
        }
    }

    fn limiter(&self, period: Duration, burst: u32) -> Result<Arc<Limiter>, Limited> {
        let id = (period.as_nanos().min(u64::MAX as u128) as u64, burst);
        if let Some(l) = self.by_quota.read().expect("not poisoned").get(&id) {
            return Ok(l.clone());
        }
        let mut map = self.by_quota.write().expect("not poisoned");
        if map.len() >= MAX_QUOTAS {
            map.retain(|_, l| !l.is_empty());
        }
        if map.len() >= MAX_QUOTAS && !map.contains_key(&id) {
            return Err(Limited {
                retry_after: Duration::from_secs(1),
                limit: burst,
                table_full: true,
            });
        }
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("period is positive")
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("max(1)"));
        Ok(map
            .entry(id)
            .or_insert_with(|| Arc::new(RateLimiter::keyed(quota)))
            .clone())
    }

    /// Buckets currently held, over all quotas.
    pub fn len(&self) -> usize {
        self.by_quota
            .read()
            .expect("not poisoned")
            .values()
            .map(|l| l.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sweep_at_most_every(&self, interval: Duration) {
        {
            let mut last = self.last_sweep.lock().expect("not poisoned");
            if last.elapsed() < interval {
                return;
            }
            *last = std::time::Instant::now();
        }
        self.sweep();
    }

    /// Drops buckets that have refilled completely and limiters left with none.
    pub fn sweep(&self) {
        let mut map = self.by_quota.write().expect("not poisoned");
        for l in map.values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        map.retain(|_, l| !l.is_empty());
    }
}

fn bucket_key(bucket: &str) -> String {
    if bucket.len() <= MAX_BUCKET_LEN {
        return bucket.to_string();
    }
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(bucket.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(bucket: &str, per_cell_ms: u64, burst: u32, cost: u32) -> Limit {
        Limit {
            bucket: bucket.into(),
            period: Duration::from_millis(per_cell_ms),
            burst,
            cost,
            rate: 1000.0 / per_cell_ms as f64,
            per: 1.0,
        }
    }

    #[test]
    fn burst_then_refusal_with_retry_time() {
        let b = Buckets::new(1000);
        let l = limit("a", 200, 5, 1);
        for _ in 0..5 {
            assert_eq!(b.check(&l), Ok(()));
        }
        let e = b.check(&l).unwrap_err();
        assert!(e.retry_after > Duration::ZERO && e.retry_after <= Duration::from_millis(200));
        assert_eq!(e.limit, 5);
        // Another bucket with the same quota is independent.
        assert_eq!(b.check(&limit("b", 200, 5, 1)), Ok(()));
    }

    #[test]
    fn cost_takes_several_cells() {
        let b = Buckets::new(1000);
        assert_eq!(b.check(&limit("a", 1000, 10, 6)), Ok(()));
        assert!(b.check(&limit("a", 1000, 10, 6)).is_err());
        assert_eq!(b.check(&limit("a", 1000, 10, 4)), Ok(()));
    }

    #[test]
    fn a_changed_quota_is_a_fresh_bucket() {
        let b = Buckets::new(1000);
        assert_eq!(b.check(&limit("a", 1000, 1, 1)), Ok(()));
        assert!(b.check(&limit("a", 1000, 1, 1)).is_err());
        assert_eq!(b.check(&limit("a", 1000, 2, 1)), Ok(()));
    }

    #[test]
    fn full_table_refuses_new_buckets_and_sweeps_refilled_ones() {
        let b = Buckets::new(3);
        for k in ["a", "b", "c"] {
            assert_eq!(b.check(&limit(k, 1000, 5, 1)), Ok(()));
        }
        let e = b.check(&limit("d", 1000, 5, 1)).unwrap_err();
        assert!(e.table_full);
        // Buckets that have refilled carry no information and are swept.
        let fast = Buckets::new(3);
        for k in ["a", "b", "c"] {
            assert_eq!(fast.check(&limit(k, 0, 5, 1)), Ok(()));
        }
        fast.sweep();
        assert!(fast.is_empty());
    }

    #[test]
    fn long_bucket_names_are_hashed() {
        assert_eq!(bucket_key("short"), "short");
        let long = "k".repeat(10_000);
        assert_eq!(bucket_key(&long).len(), "sha256:".len() + 64);
    }
}
