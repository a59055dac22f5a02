//! Throttling of failed sign-ins per account key (the normalized email, whether or not
//! an account has it, so the answer never tells an attacker which emails exist) and
//! per source address. In memory: a restart forgets the counts, which only ever lets
//! an attacker try again as often as the limit allows per restart.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dashmap::DashMap;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failures per email within `window` before sign-ins for it are refused.
    pub per_account: usize,
    /// Failures per source address within `window`.
    pub per_source: usize,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { per_account: 5, per_source: 50, window: Duration::from_secs(15 * 60) }
    }
}

/// Keys tracked at most per map; the oldest-looking entries go first when full.
const KEYS_MAX: usize = 1_000_000;

#[derive(Default)]
pub struct Throttle {
    limits: Limits,
    accounts: DashMap<[u8; 32], VecDeque<Instant>>,
    sources: DashMap<String, VecDeque<Instant>>,
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle { limits, ..Throttle::default() }
    }

    fn account_key(email: &str) -> [u8; 32] {
        *blake3::hash(super::profile::normalize_email(email).as_bytes()).as_bytes()
    }

    fn wait(window: Duration, failures: Option<&VecDeque<Instant>>, limit: usize, now: Instant) -> Option<Duration> {
        let failures = failures?;
        let recent: Vec<&Instant> = failures.iter().filter(|t| now.duration_since(**t) < window).collect();
        if recent.len() < limit {
            return None;
        }
        // Allowed again when enough of the recent failures have aged out.
        let oldest_blocking = recent[recent.len() - limit];
        Some(window.saturating_sub(now.duration_since(*oldest_blocking)))
    }

    /// How long a sign-in for `email` from `source` must wait, if it must.
    pub fn check(&self, email: &str, source: &str) -> Option<Duration> {
        let now = Instant::now();
        let account = Self::wait(
            self.limits.window,
            self.accounts.get(&Self::account_key(email)).as_deref(),
            self.limits.per_account,
            now,
        );
        let source = Self::wait(self.limits.window, self.sources.get(source).as_deref(), self.limits.per_source, now);
        account.max(source)
    }

    pub fn failed(&self, email: &str, source: &str) {
        let now = Instant::now();
        let window = self.limits.window;
        let push = |q: &mut VecDeque<Instant>, keep: usize| {
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) || q.len() > keep {
                q.pop_front();
            }
            q.push_back(now);
        };
        if self.accounts.len() >= KEYS_MAX {
            self.accounts.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        if self.sources.len() >= KEYS_MAX {
            self.sources.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        push(&mut self.accounts.entry(Self::account_key(email)).or_default(), self.limits.per_account);
        push(&mut self.sources.entry(source.to_string()).or_default(), self.limits.per_source);
    }

    /// A successful sign-in clears the email's failures (not the source's).
    pub fn succeeded(&self, email: &str) {
        self.accounts.remove(&Self::account_key(email));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_per_account_and_per_source() {
        let throttle = Throttle::new(Limits { per_account: 3, per_source: 5, window: Duration::from_secs(60) });
        for _ in 0..3 {
            assert_eq!(throttle.check("Ada@example.com", "10.0.0.1"), None);
            throttle.failed("ada@example.com", "10.0.0.1");
        }
        let wait = throttle.check("ADA@example.com", "10.0.0.2").expect("throttled by account");
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert_eq!(throttle.check("bob@example.com", "10.0.0.2"), None);
        throttle.failed("c@example.com", "10.0.0.1");
        throttle.failed("d@example.com", "10.0.0.1");
        assert!(throttle.check("e@example.com", "10.0.0.1").is_some(), "throttled by source");
        throttle.succeeded("ada@example.com");
        assert_eq!(throttle.check("ada@example.com", "10.0.0.2"), None);
    }
}
