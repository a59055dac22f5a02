//! Bugs planted on purpose, for the simulator's self-test (`vopr --inject-bug NAME`):
//! a simulator that cannot find a planted bug proves nothing by passing. Compiled in
//! only with the feature `sim`; without it [`injected`] is a constant `false` and the
//! hooks vanish. With it, nothing is injected until [`inject`] is called.

/// A planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Bug {
    /// The store acknowledges appends without syncing them first (found only through
    /// power loss: an acknowledged transfer is missing after the crash).
    LogSyncSkipped = 1,
    /// The read models apply a pending post's amount twice to the balances.
    ReadModelPostTwice = 2,
}

impl Bug {
    pub const ALL: [Bug; 2] = [Bug::LogSyncSkipped, Bug::ReadModelPostTwice];

    pub fn name(self) -> &'static str {
        match self {
            Bug::LogSyncSkipped => "log-sync-skipped",
            Bug::ReadModelPostTwice => "read-model-post-twice",
        }
    }

    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

#[cfg(feature = "sim")]
static INJECTED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Plants `bug` in this process (feature `sim`; for the simulator's self-test only).
#[cfg(feature = "sim")]
pub fn inject(bug: Bug) {
    INJECTED.store(bug as u8, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `bug` is planted: always `false` without the feature `sim`.
#[inline]
pub fn injected(bug: Bug) -> bool {
    #[cfg(feature = "sim")]
    {
        INJECTED.load(std::sync::atomic::Ordering::Relaxed) == bug as u8
    }
    #[cfg(not(feature = "sim"))]
    {
        let _ = bug;
        false
    }
}
