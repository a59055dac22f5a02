//! The system clock: the one place the engine and the services read the wall clock.

use ledger_core::clock::Clock;

/// Nanoseconds since 1970-01-01 UTC by the system clock. A clock set before 1970 or
/// past the year 2554 is a broken machine, not a time: the process stops.
pub fn now_ns() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the system clock is set after 1970-01-01");
    u64::try_from(since_epoch.as_nanos()).expect("the system clock is before the year 2554")
}

/// [`Clock`] over the system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        now_ns()
    }
}
