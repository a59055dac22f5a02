//! Time as an input. The core never reads the wall clock: whoever needs the time holds
//! a [`Clock`], the engine's system clock in production and a [`ManualClock`] in tests,
//! so expiry of holds, quotes and sessions is tested exactly and without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A source of the current time, in nanoseconds since 1970-01-01 UTC.
pub trait Clock: Send + Sync {
    fn now_ns(&self) -> u64;

    /// How long, in real time, a thread with nothing else to do should sleep before the
    /// time `at_ns` may have come; `None`: sleep until woken by work, because this
    /// clock does not move while the thread sleeps (a simulator's clock moves only
    /// between the steps it drives, and each step wakes the thread itself).
    fn real_wait_until(&self, at_ns: u64) -> Option<Duration> {
        Some(Duration::from_nanos(at_ns.saturating_sub(self.now_ns())))
    }
}

/// A clock that moves only when told to. Starts at the time it is given.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ns: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ns: u64) -> ManualClock {
        ManualClock { now_ns: AtomicU64::new(start_ns) }
    }

    /// Moves the clock forwards by `step_ns`, saturating at the end of time.
    pub fn advance_ns(&self, step_ns: u64) {
        let _ = self.now_ns.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| Some(now.saturating_add(step_ns)));
    }

    pub fn set_ns(&self, now_ns: u64) {
        self.now_ns.store(now_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ns(), 1_000);
        clock.advance_ns(500);
        assert_eq!(clock.now_ns(), 1_500);
        clock.advance_ns(u64::MAX);
        assert_eq!(clock.now_ns(), u64::MAX);
        clock.set_ns(7);
        assert_eq!(clock.now_ns(), 7);
    }
}
