//! What the risk rules need to know of earlier payments, bounded in memory whatever
//! the history:
//!
//! - per user and per instrument, the payments assessed in the last day
//!   (`risk::DAY_NS`, the longest window of a rule), at most as many as the largest
//!   count limit of the rules that read the list (the oldest are dropped first). A
//!   payment is counted when it is assessed, under the same lock as the reading, so
//!   each assessment sees every earlier one: a list that long already trips its count
//!   rule, and dropping more cannot change a decision. A key whose payments all left
//!   the day is swept away;
//! - the pairs (sender, receiver) that completed a payment, at most [`PAYEES_MAX`],
//!   the oldest forgotten first: a forgotten payee is new again, which only sends a
//!   large payment to review.
//!
//! All of it is a cache of the payments' index on disk (`store`): a user's or an
//! instrument's list is read from it the first time the rules need it (the last day,
//! as many as the largest count limit), and a payee unknown in memory is looked up
//! there. So a restart changes no decision a rule would make (up to those bounds),
//! without reading any payment at start.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

use ledger_core::money::Currency;

use super::risk::{RiskConfig, DAY_NS};
use crate::sweep::Sweep;

/// Payee pairs remembered (about 80 bytes each, with their order).
pub const PAYEES_MAX: usize = 1_000_000;
/// No sweep of idle users or instruments below this many.
const SWEEP_KEYS_MIN: usize = 1_024;

/// An earlier payment as the risk rules see it: which, when (created), in what currency
/// and how much (0 for a blocked payment, which moved no money). Valued in the risk
/// currency when assessed, at the rate in force then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Recent {
    pub payment: u128,
    pub at: u64,
    pub currency: Currency,
    pub amount: u64,
}

/// Recent payments per key, a day long and at most `per_key_max` per key.
struct Windows<K> {
    lists: HashMap<K, VecDeque<Recent>>,
    per_key_max: usize,
    /// When to drop the keys with nothing in the last day.
    sweep: Sweep,
}

impl<K: Hash + Eq> Windows<K> {
    fn new(per_key_max: usize) -> Windows<K> {
        Windows { lists: HashMap::new(), per_key_max: per_key_max.max(1), sweep: Sweep::new(SWEEP_KEYS_MIN) }
    }

    fn push(&mut self, key: K, recent: Recent, now_ns: u64) {
        let within_day = |r: &Recent| r.at.saturating_add(DAY_NS) >= now_ns;
        let list = self.lists.entry(key).or_default();
        // Kept in time order, so what left the day is at the front.
        while list.front().is_some_and(|r| !within_day(r)) {
            list.pop_front();
        }
        // A payment assessed again (its event was not written the first time) once: it
        // has the same time, so it is among the entries of that time.
        let (from, to) = (list.partition_point(|r| r.at < recent.at), list.partition_point(|r| r.at <= recent.at));
        if let Some(again) = (from..to).find(|&i| list[i].payment == recent.payment) {
            list.remove(again);
        }
        let at = list.partition_point(|r| r.at <= recent.at);
        list.insert(at, recent);
        while list.len() > self.per_key_max {
            list.pop_front();
        }
        if self.sweep.due(self.lists.len()) {
            self.lists.retain(|_, list| list.back().is_some_and(within_day));
            self.sweep.swept(self.lists.len());
        }
    }

    fn get(&self, key: &K) -> Option<&VecDeque<Recent>> {
        self.lists.get(key)
    }

    /// Whether `key`'s list is in memory (possibly empty).
    fn has(&self, key: &K) -> bool {
        self.lists.contains_key(key)
    }

    /// Puts `key`'s list, read from the index (oldest first), in memory.
    fn load(&mut self, key: K, recent: Vec<Recent>) {
        let mut list: VecDeque<Recent> = recent.into();
        while list.len() > self.per_key_max {
            list.pop_front();
        }
        self.lists.insert(key, list);
    }
}

/// Pairs in a set, the oldest forgotten past `max`.
struct BoundedSet<T> {
    set: HashSet<T>,
    order: VecDeque<T>,
    max: usize,
}

impl<T: Hash + Eq + Copy> BoundedSet<T> {
    fn new(max: usize) -> BoundedSet<T> {
        BoundedSet { set: HashSet::new(), order: VecDeque::new(), max: max.max(1) }
    }

    fn insert(&mut self, value: T) {
        if self.set.insert(value) {
            self.order.push_back(value);
            while self.order.len() > self.max {
                if let Some(oldest) = self.order.pop_front() {
                    self.set.remove(&oldest);
                }
            }
        }
    }

    fn contains(&self, value: &T) -> bool {
        self.set.contains(value)
    }
}

pub(super) struct Activity {
    by_user: Windows<u128>,
    by_instrument: Windows<String>,
    payees: BoundedSet<(u128, u128)>,
}

impl Activity {
    pub(super) fn new(config: &RiskConfig) -> Activity {
        Activity::with_payees_max(config, PAYEES_MAX)
    }

    fn with_payees_max(config: &RiskConfig, payees_max: usize) -> Activity {
        Activity {
            by_user: Windows::new(config.user_per_day.max(config.user_per_hour)),
            by_instrument: Windows::new(config.instrument_per_day.max(config.instrument_per_hour)),
            payees: BoundedSet::new(payees_max),
        }
    }

    pub(super) fn has_user(&self, user: u128) -> bool {
        self.by_user.has(&user)
    }

    pub(super) fn has_instrument(&self, instrument: &str) -> bool {
        self.by_instrument.has(&instrument.to_string())
    }

    /// The user's last day, read from the index, as memory's list of them.
    pub(super) fn load_user(&mut self, user: u128, recent: Vec<Recent>) {
        self.by_user.load(user, recent);
    }

    pub(super) fn load_instrument(&mut self, instrument: &str, recent: Vec<Recent>) {
        self.by_instrument.load(instrument.to_string(), recent);
    }

    /// A payment of `sender` (with `instrument`, unless empty) was assessed.
    pub(super) fn assessed(&mut self, sender: u128, instrument: &str, recent: Recent, now_ns: u64) {
        self.by_user.push(sender, recent, now_ns);
        if !instrument.is_empty() {
            self.by_instrument.push(instrument.to_string(), recent, now_ns);
        }
    }

    /// A payment counted by its assessment that was then not made after all.
    pub(super) fn forget(&mut self, sender: u128, instrument: &str, payment: u128) {
        if let Some(list) = self.by_user.lists.get_mut(&sender) {
            list.retain(|r| r.payment != payment);
        }
        if let Some(list) = self.by_instrument.lists.get_mut(instrument) {
            list.retain(|r| r.payment != payment);
        }
    }

    pub(super) fn completed(&mut self, sender: u128, receiver: u128) {
        self.payees.insert((sender, receiver));
    }

    pub(super) fn by_user(&self, user: u128) -> impl Iterator<Item = &Recent> {
        self.by_user.get(&user).into_iter().flatten()
    }

    pub(super) fn by_instrument(&self, instrument: &str) -> impl Iterator<Item = &Recent> {
        self.by_instrument.get(&instrument.to_string()).into_iter().flatten()
    }

    pub(super) fn known_payee(&self, sender: u128, receiver: u128) -> bool {
        self.payees.contains(&(sender, receiver))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = DAY_NS / 24;

    fn recent(at: u64) -> Recent {
        Recent { payment: u128::from(at) + 1_000_000, at, currency: Currency::USD, amount: 100 }
    }

    #[test]
    fn lists_keep_a_day_and_at_most_the_largest_count_limit() {
        let config = RiskConfig { user_per_hour: 3, user_per_day: 5, ..RiskConfig::default() };
        let mut activity = Activity::new(&config);
        for n in 0..50 {
            activity.assessed(1, "", recent(n), n);
        }
        let kept: Vec<u64> = activity.by_user(1).map(|r| r.at).collect();
        assert_eq!(kept, [45, 46, 47, 48, 49], "the newest, up to the day limit");
        activity.assessed(1, "", recent(DAY_NS + 100), DAY_NS + 100);
        assert_eq!(activity.by_user(1).count(), 1, "older than a day is gone");
    }

    #[test]
    fn users_with_nothing_in_the_last_day_are_swept() {
        let mut activity = Activity::new(&RiskConfig::default());
        for user in 0..5_000u128 {
            activity.assessed(user, "card", recent(0), 0);
        }
        let later = 2 * DAY_NS;
        for user in 10_000..14_000u128 {
            activity.assessed(user, "", recent(later), later);
        }
        assert!(activity.by_user.lists.len() < 5_000, "stale users were swept: {}", activity.by_user.lists.len());
        assert_eq!(activity.by_user(4_999).count(), 0);
        assert_eq!(activity.by_user(13_999).count(), 1);
    }

    #[test]
    fn payees_are_bounded_and_the_oldest_is_forgotten() {
        let mut activity = Activity::with_payees_max(&RiskConfig::default(), 3);
        for receiver in 1..=4 {
            activity.completed(7, receiver);
            activity.completed(7, receiver);
        }
        assert!(!activity.known_payee(7, 1), "the oldest was forgotten");
        assert!((2..=4).all(|r| activity.known_payee(7, r)));
        assert_eq!(activity.payees.order.len(), 3);
    }

    #[test]
    fn a_payment_not_made_after_its_assessment_is_forgotten() {
        let mut activity = Activity::new(&RiskConfig::default());
        activity.assessed(1, "card", recent(HOUR), HOUR);
        activity.assessed(1, "card", recent(2 * HOUR), 2 * HOUR);
        activity.forget(1, "card", recent(HOUR).payment);
        assert_eq!(activity.by_user(1).map(|r| r.at).collect::<Vec<_>>(), [2 * HOUR]);
        assert_eq!(activity.by_instrument("card").map(|r| r.at).collect::<Vec<_>>(), [2 * HOUR]);
    }

    #[test]
    fn a_payment_assessed_again_counts_once() {
        let mut activity = Activity::new(&RiskConfig::default());
        activity.assessed(1, "card", recent(5 * HOUR), 5 * HOUR);
        activity.assessed(1, "card", Recent { amount: 0, ..recent(5 * HOUR) }, 5 * HOUR + 1);
        assert_eq!(activity.by_user(1).map(|r| r.amount).collect::<Vec<_>>(), [0]);
        assert_eq!(activity.by_instrument("card").map(|r| r.amount).collect::<Vec<_>>(), [0]);
    }
}
