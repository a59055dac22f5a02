//! Throttling of failed sign-ins per account key (the normalized email, whether or not
//! an account has it, so the answer never tells an attacker which emails exist) and
//! per source address. Counts are kept in buckets per key (`window`: fixed memory per
//! key, at most [`KEYS_MAX`] keys per map). In memory: a restart forgets the counts,
//! which only ever lets an attacker try again as often as the limit allows per restart.

use std::time::Duration;

use super::window::WindowCounts;

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

/// Keys counted at most per map. A failure is counted after a password check, and at
/// most `PASSWORD_HASHES_CONCURRENT_MAX` run at once (tens a second), so a window of
/// 15 minutes sees far fewer keys than this; a failure that finds the map full of live
/// keys is not counted.
pub const KEYS_MAX: usize = 1_000_000;

pub struct Throttle {
    accounts: WindowCounts<[u8; 32]>,
    sources: WindowCounts<String>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new(Limits::default())
    }
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            accounts: WindowCounts::new(limits.per_account as u64, limits.window, KEYS_MAX),
            sources: WindowCounts::new(limits.per_source as u64, limits.window, KEYS_MAX),
        }
    }

    fn account_key(email: &str) -> [u8; 32] {
        *blake3::hash(super::profile::normalize_email(email).as_bytes()).as_bytes()
    }

    /// How long a sign-in for `email` from `source` must wait, if it must.
    pub fn check(&self, email: &str, source: &str) -> Option<Duration> {
        let account = self.accounts.wait(&Self::account_key(email));
        let source = self.sources.wait(&source.to_string());
        account.max(source)
    }

    pub fn failed(&self, email: &str, source: &str) {
        // Refused only when full of live keys: see `KEYS_MAX`.
        let counted = [self.accounts.add(&Self::account_key(email)), self.sources.add(&source.to_string())];
        if counted.iter().any(Result::is_err) {
            tracing::warn!(keys_max = KEYS_MAX, "a failed sign-in was not counted: the throttle's keys are full");
        }
    }

    /// A successful sign-in clears the email's failures (not the source's).
    pub fn succeeded(&self, email: &str) {
        self.accounts.clear(&Self::account_key(email));
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
