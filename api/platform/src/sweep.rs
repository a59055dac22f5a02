//! When to sweep a map of entries that expire: each time it has doubled since the last
//! sweep (and holds at least a minimum), so a sweep's cost is paid once per as many
//! insertions as the map held, and the map stays within about twice its live entries.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct Sweep {
    /// Entries left by the last sweep.
    swept_at: AtomicUsize,
    /// No sweep below this many entries.
    min: usize,
}

impl Sweep {
    pub(crate) const fn new(min: usize) -> Sweep {
        Sweep { swept_at: AtomicUsize::new(0), min }
    }

    /// Whether a map of `len` entries is due a sweep.
    pub(crate) fn due(&self, len: usize) -> bool {
        len >= self.min.max(2 * self.swept_at.load(Ordering::Relaxed))
    }

    /// A sweep left `len` entries.
    pub(crate) fn swept(&self, len: usize) {
        self.swept_at.store(len, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_due_at_the_minimum_then_each_time_the_map_doubles() {
        let sweep = Sweep::new(4);
        assert!(!sweep.due(3));
        assert!(sweep.due(4));
        sweep.swept(3);
        assert!(!sweep.due(5), "3 live after the sweep: next at 6");
        assert!(sweep.due(6));
        sweep.swept(0);
        assert!(!sweep.due(3) && sweep.due(4), "never below the minimum");
    }
}
