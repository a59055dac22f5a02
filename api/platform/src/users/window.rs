//! Counts per key over a sliding window, kept as a few buckets per key rather than an
//! entry per event: memory per key is fixed whatever the rate, and the number of keys
//! is bounded. A count covers the current bucket and the ones before it within the
//! window, so it may include events up to one bucket older than the window: the limit
//! errs on the strict side.

use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Buckets per window.
pub const BUCKETS: usize = 12;

/// One key's buckets: counts per bucket, the newest at `(newest % BUCKETS)`.
#[derive(Clone, Copy, Debug, Default)]
struct Ring {
    counts: [u32; BUCKETS],
    /// The bucket number (time since the window's start / bucket length) of the newest count.
    newest: u64,
}

impl Ring {
    /// Forgets buckets that fell out of the window by `now_bucket`.
    fn advance(&mut self, now_bucket: u64) {
        let gap = now_bucket.saturating_sub(self.newest);
        if gap >= BUCKETS as u64 {
            self.counts = [0; BUCKETS];
        } else {
            for step in 1..=gap {
                self.counts[((self.newest + step) % BUCKETS as u64) as usize] = 0;
            }
        }
        self.newest = self.newest.max(now_bucket);
    }

    fn total(&self) -> u64 {
        self.counts.iter().map(|c| u64::from(*c)).sum()
    }
}

/// Why a count was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The key reached the limit; retry after this long.
    Limit(Duration),
    /// `keys_max` keys are counted within the window, none of them stale.
    Full,
}

/// Events per key within a window, at most `limit` each.
pub struct WindowCounts<K: std::hash::Hash + Eq> {
    limit: u64,
    bucket: Duration,
    keys_max: usize,
    start: Instant,
    keys: DashMap<K, Ring>,
}

impl<K: std::hash::Hash + Eq + Clone> WindowCounts<K> {
    /// `limit` events per `window` and key, for at most `keys_max` keys at once.
    pub fn new(limit: u64, window: Duration, keys_max: usize) -> WindowCounts<K> {
        let bucket = (window / BUCKETS as u32).max(Duration::from_millis(1));
        WindowCounts { limit, bucket, keys_max, start: Instant::now(), keys: DashMap::new() }
    }

    fn bucket_at(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / self.bucket.as_nanos()) as u64
    }

    /// Counts one event for `key` now, unless that would pass the limit.
    pub fn take(&self, key: &K) -> Result<(), Refused> {
        self.take_at(key, Instant::now())
    }

    /// Counts one event for `key` now, whatever the limit (refused only when full).
    pub fn add(&self, key: &K) -> Result<(), Refused> {
        self.count_at(key, Instant::now(), false)
    }

    /// How long until `key` is under its limit again; `None`: it is under it now.
    pub fn wait(&self, key: &K) -> Option<Duration> {
        self.wait_at(key, Instant::now())
    }

    /// Forgets `key`'s counts.
    pub fn clear(&self, key: &K) {
        self.keys.remove(key);
    }

    fn take_at(&self, key: &K, now: Instant) -> Result<(), Refused> {
        self.count_at(key, now, true)
    }

    fn wait_at(&self, key: &K, now: Instant) -> Option<Duration> {
        let now_bucket = self.bucket_at(now);
        let mut ring = *self.keys.get(key)?;
        ring.advance(now_bucket);
        (ring.total() >= self.limit).then(|| self.until_under(&ring, now_bucket, now))
    }

    /// When `ring` (at the limit) is allowed again: when its oldest bucket with a count
    /// leaves the window. Bucket b is counted until bucket b + BUCKETS begins.
    fn until_under(&self, ring: &Ring, now_bucket: u64, now: Instant) -> Duration {
        let oldest = (now_bucket.saturating_sub(BUCKETS as u64 - 1)..=now_bucket)
            .find(|b| ring.counts[(b % BUCKETS as u64) as usize] > 0)
            .unwrap_or(now_bucket);
        let leaves_at = u32::try_from(oldest + BUCKETS as u64)
            .ok()
            .and_then(|n| self.bucket.checked_mul(n))
            .unwrap_or(Duration::MAX);
        leaves_at.saturating_sub(now.saturating_duration_since(self.start))
    }

    fn count_at(&self, key: &K, now: Instant, limited: bool) -> Result<(), Refused> {
        let now_bucket = self.bucket_at(now);
        if !self.keys.contains_key(key) && self.keys.len() >= self.keys_max {
            self.keys.retain(|_, ring| now_bucket.saturating_sub(ring.newest) < BUCKETS as u64);
            if self.keys.len() >= self.keys_max {
                return Err(Refused::Full);
            }
        }
        let mut ring = self.keys.entry(key.clone()).or_default();
        ring.advance(now_bucket);
        if limited && ring.total() >= self.limit {
            return Err(Refused::Limit(self.until_under(&ring, now_bucket, now)));
        }
        let slot = (now_bucket % BUCKETS as u64) as usize;
        ring.counts[slot] = ring.counts[slot].saturating_add(1);
        Ok(())
    }

    /// Keys counted now (stale ones included until the map fills up and is swept).
    pub fn keys(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_at_the_limit_and_forgets_after_the_window() {
        let counts: WindowCounts<&str> = WindowCounts::new(3, Duration::from_secs(60), 10);
        let t0 = counts.start;
        for n in 0..3 {
            assert_eq!(counts.take_at(&"a", t0 + Duration::from_secs(n * 10)), Ok(()));
        }
        let Err(Refused::Limit(wait)) = counts.take_at(&"a", t0 + Duration::from_secs(30)) else {
            panic!("the fourth within the window")
        };
        // The first count (in the bucket [0 s, 5 s)) leaves the window at 60 s.
        assert_eq!(wait, Duration::from_secs(30));
        assert_eq!(counts.take_at(&"b", t0 + Duration::from_secs(30)), Ok(()), "other keys are apart");
        assert_eq!(counts.take_at(&"a", t0 + Duration::from_secs(61)), Ok(()), "the first one aged out");
        assert!(counts.take_at(&"a", t0 + Duration::from_secs(62)).is_err(), "three within the last minute");
        assert_eq!(counts.take_at(&"a", t0 + Duration::from_secs(200)), Ok(()), "all aged out");
    }

    #[test]
    fn counts_added_past_the_limit_wait_and_clear() {
        let counts: WindowCounts<&str> = WindowCounts::new(2, Duration::from_secs(60), 10);
        let t0 = counts.start;
        assert_eq!(counts.wait_at(&"a", t0), None, "never counted");
        for _ in 0..3 {
            counts.count_at(&"a", t0, false).expect("added whatever the limit");
        }
        assert_eq!(counts.wait_at(&"a", t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(counts.wait_at(&"a", t0 + Duration::from_secs(60)), None, "aged out");
        counts.clear(&"a");
        assert_eq!(counts.keys(), 0);
    }

    #[test]
    fn keys_are_bounded_and_stale_ones_make_room() {
        let counts: WindowCounts<u32> = WindowCounts::new(5, Duration::from_secs(60), 4);
        let t0 = counts.start;
        for key in 0..4 {
            counts.take_at(&key, t0).expect("room");
        }
        assert_eq!(counts.take_at(&9, t0 + Duration::from_secs(1)), Err(Refused::Full));
        assert_eq!(counts.take_at(&0, t0 + Duration::from_secs(1)), Ok(()), "a counted key still counts");
        assert_eq!(counts.take_at(&9, t0 + Duration::from_secs(61)), Ok(()), "stale keys were swept");
        assert_eq!(counts.keys(), 1);
    }

    #[test]
    fn memory_per_key_does_not_grow_with_events() {
        let counts: WindowCounts<u8> = WindowCounts::new(u64::MAX, Duration::from_secs(3_600), 1);
        let t0 = counts.start;
        for n in 0..100_000u64 {
            counts.take_at(&1, t0 + Duration::from_millis(n)).expect("no limit");
        }
        assert_eq!(counts.keys.get(&1).map(|r| r.total()), Some(100_000));
        assert_eq!(std::mem::size_of::<Ring>(), 4 * BUCKETS + 8);
    }
}
