//! What the risk rules need to know of earlier payments, bounded in memory whatever
//! the history:
//!
//! - per user and per instrument, the payments assessed in the last day
//!   (`risk::DAY_NS`, the longest window of a rule), at most as many as the largest
//!   count limit of the rules that read the list (the oldest are dropped first). A
//!   payment is counted when it is assessed, under the same lock as the reading, so
//!   each assessment sees every earlier one: a list that long already trips its count
//!   rule, and dropping more cannot change a decision. Beside each list, the count
//!   and the sum per currency of its last day and of its last hour are kept as
//!   payments enter and leave them (the hour's start is an index into the list that
//!   moves forward with the clock), so an assessment reads two sums, not the list; each
//!   currency's total is valued once, at the rate in force then. A key whose payments
//!   all left the day is swept away;
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

use super::risk::{Earlier, RiskConfig, Window, DAY_NS, HOUR_NS};
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

/// A count and, per currency, the sum of amounts (minor units) of some payments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sums {
    count: usize,
    amounts: Vec<(Currency, u128)>,
}

impl Sums {
    fn add(&mut self, recent: &Recent) {
        self.count += 1;
        match self.amounts.iter_mut().find(|(currency, _)| *currency == recent.currency) {
            Some((_, sum)) => *sum += u128::from(recent.amount),
            None => self.amounts.push((recent.currency, u128::from(recent.amount))),
        }
    }

    fn sub(&mut self, recent: &Recent) {
        self.count -= 1;
        if let Some((_, sum)) = self.amounts.iter_mut().find(|(currency, _)| *currency == recent.currency) {
            *sum -= u128::from(recent.amount);
        }
    }

    /// The window the rules read: the count, and each currency's total valued once by
    /// `value` (`None` if a currency with a non-zero total has no value).
    fn window(&self, value: &dyn Fn(Currency, u64) -> Option<u64>) -> Window {
        let mut total = Some(0u64);
        for (currency, sum) in &self.amounts {
            let valued = match u64::try_from(*sum) {
                Ok(0) => Some(0),
                Ok(sum) => value(*currency, sum),
                // Past u64 in any currency: over any limit.
                Err(_) => Some(u64::MAX),
            };
            total = match (total, valued) {
                (Some(total), Some(valued)) => Some(total.saturating_add(valued)),
                _ => None,
            };
        }
        Window { count: self.count, total }
    }
}

/// One key's payments of the last day, in time order, with the sums of the day and of
/// the last hour kept as payments enter and leave them: the rules read two sums, not
/// the list.
#[derive(Default)]
struct List {
    entries: VecDeque<Recent>,
    all: Sums,
    /// `entries[hour_from..]` are the hour before `hour_at`; `hour` sums them.
    hour_from: usize,
    hour: Sums,
    hour_at: u64,
}

impl List {
    fn insert(&mut self, recent: Recent) {
        let at = self.entries.partition_point(|r| r.at <= recent.at);
        self.entries.insert(at, recent);
        self.all.add(&recent);
        // Entries before `hour_from` are older than the hour, those after it are not.
        if recent.at >= self.hour_at.saturating_sub(HOUR_NS) {
            self.hour.add(&recent);
        } else {
            self.hour_from += 1;
        }
    }

    fn remove(&mut self, index: usize) {
        let Some(removed) = self.entries.remove(index) else { return };
        self.all.sub(&removed);
        if index >= self.hour_from {
            self.hour.sub(&removed);
        } else {
            self.hour_from -= 1;
        }
    }

    /// Where `payment`, created at `at`, is in the list.
    fn position(&self, payment: u128, at: u64) -> Option<usize> {
        let (from, to) = (self.entries.partition_point(|r| r.at < at), self.entries.partition_point(|r| r.at <= at));
        (from..to).find(|&i| self.entries[i].payment == payment)
    }

    /// Drops what left the day before `now_ns`, and ends the hour at `now_ns`.
    fn advance(&mut self, now_ns: u64) {
        let day = now_ns.saturating_sub(DAY_NS);
        while self.entries.front().is_some_and(|r| r.at < day) {
            self.remove(0);
        }
        if now_ns < self.hour_at {
            // The clock went back: the hour is found again from the whole list.
            (self.hour_from, self.hour) = (0, self.all.clone());
        }
        self.hour_at = now_ns;
        let hour = now_ns.saturating_sub(HOUR_NS);
        while let Some(recent) = self.entries.get(self.hour_from).copied().filter(|r| r.at < hour) {
            self.hour.sub(&recent);
            self.hour_from += 1;
        }
    }

    /// The rules' view at `now_ns` of every payment but `payment` (created at `at`).
    fn earlier(
        &mut self,
        payment: u128,
        at: u64,
        now_ns: u64,
        value: &dyn Fn(Currency, u64) -> Option<u64>,
    ) -> Earlier {
        self.advance(now_ns);
        let (mut day, mut hour) = (self.all.clone(), self.hour.clone());
        if let Some(index) = self.position(payment, at) {
            let recent = self.entries[index];
            day.sub(&recent);
            if index >= self.hour_from {
                hour.sub(&recent);
            }
        }
        Earlier { any: day.count > 0, hour: hour.window(value), day: day.window(value) }
    }
}

/// Recent payments per key, a day long and at most `per_key_max` per key.
struct Windows<K> {
    lists: HashMap<K, List>,
    per_key_max: usize,
    /// When to drop the keys with nothing in the last day.
    sweep: Sweep,
}

impl<K: Hash + Eq> Windows<K> {
    fn new(per_key_max: usize) -> Windows<K> {
        Windows { lists: HashMap::new(), per_key_max: per_key_max.max(1), sweep: Sweep::new(SWEEP_KEYS_MIN) }
    }

    fn push(&mut self, key: K, recent: Recent, now_ns: u64) {
        let list = self.lists.entry(key).or_default();
        list.advance(now_ns);
        // A payment assessed again (its event was not written the first time) once.
        if let Some(again) = list.position(recent.payment, recent.at) {
            list.remove(again);
        }
        list.insert(recent);
        while list.entries.len() > self.per_key_max {
            list.remove(0);
        }
        if self.sweep.due(self.lists.len()) {
            let within_day = |r: &Recent| r.at.saturating_add(DAY_NS) >= now_ns;
            self.lists.retain(|_, list| list.entries.back().is_some_and(within_day));
            self.sweep.swept(self.lists.len());
        }
    }

    #[cfg(test)]
    fn get(&self, key: &K) -> Option<&VecDeque<Recent>> {
        self.lists.get(key).map(|list| &list.entries)
    }

    /// Whether `key`'s list is in memory (possibly empty).
    fn has(&self, key: &K) -> bool {
        self.lists.contains_key(key)
    }

    /// Puts `key`'s list, read from the index (oldest first), in memory.
    fn load(&mut self, key: K, recent: Vec<Recent>) {
        let mut list = List::default();
        for recent in recent {
            list.insert(recent);
        }
        while list.entries.len() > self.per_key_max {
            list.remove(0);
        }
        self.lists.insert(key, list);
    }

    fn forget(&mut self, key: &K, payment: u128) {
        if let Some(list) = self.lists.get_mut(key) {
            while let Some(index) = list.entries.iter().position(|r| r.payment == payment) {
                list.remove(index);
            }
        }
    }

    fn earlier(
        &mut self,
        key: &K,
        payment: u128,
        at: u64,
        now_ns: u64,
        value: &dyn Fn(Currency, u64) -> Option<u64>,
    ) -> Earlier {
        match self.lists.get_mut(key) {
            Some(list) => list.earlier(payment, at, now_ns, value),
            None => Earlier::default(),
        }
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
        self.by_user.forget(&sender, payment);
        self.by_instrument.forget(&instrument.to_string(), payment);
    }

    pub(super) fn completed(&mut self, sender: u128, receiver: u128) {
        self.payees.insert((sender, receiver));
    }

    /// What the rules know of `user`'s payments but `payment` (created at `at`) at
    /// `now_ns`, each currency's totals valued once by `value`.
    pub(super) fn user_earlier(
        &mut self,
        user: u128,
        payment: u128,
        at: u64,
        now_ns: u64,
        value: &dyn Fn(Currency, u64) -> Option<u64>,
    ) -> Earlier {
        self.by_user.earlier(&user, payment, at, now_ns, value)
    }

    /// As [`Activity::user_earlier`], for a funding instrument.
    pub(super) fn instrument_earlier(
        &mut self,
        instrument: &str,
        payment: u128,
        at: u64,
        now_ns: u64,
        value: &dyn Fn(Currency, u64) -> Option<u64>,
    ) -> Earlier {
        self.by_instrument.earlier(&instrument.to_string(), payment, at, now_ns, value)
    }

    #[cfg(test)]
    fn by_user(&self, user: u128) -> impl Iterator<Item = &Recent> {
        self.by_user.get(&user).into_iter().flatten()
    }

    #[cfg(test)]
    fn by_instrument(&self, instrument: &str) -> impl Iterator<Item = &Recent> {
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

    /// The rules' view computed from a plain list: the payments of the last day and of
    /// the last hour but `payment`, each currency's total valued once.
    fn model_earlier(
        list: &[Recent],
        payment: (u128, u64),
        now: u64,
        value: &dyn Fn(Currency, u64) -> Option<u64>,
    ) -> Earlier {
        let window = |since: u64| {
            let mut sums = Sums::default();
            for recent in list.iter().filter(|r| r.at >= since && (r.payment, r.at) != payment) {
                sums.add(recent);
            }
            sums.window(value)
        };
        let day = window(now.saturating_sub(DAY_NS));
        Earlier { any: day.count > 0, hour: window(now.saturating_sub(HOUR_NS)), day }
    }

    proptest::proptest! {
        /// The sums kept as payments enter and leave the windows equal those of the
        /// plain list filtered by time, whatever the order of assessments, payments
        /// assessed again, payments forgotten, reads, and the clock going back.
        #[test]
        fn windows_kept_equal_the_list_filtered_by_time(
            steps in proptest::collection::vec((0u8..5, 0u64..3 * HOUR, 0u128..30, 0usize..3, 0u64..1_000_000), 1..150),
        ) {
            let currencies = [Currency::USD, Currency::parse("EUR").expect("EUR"), Currency::parse("GBP").expect("GBP")];
            // USD is the risk currency, EUR is worth two, GBP has no rate.
            let value = |currency: Currency, minor: u64| match currency.code() {
                "USD" => Some(minor),
                "EUR" => Some(minor.saturating_mul(2)),
                _ => None,
            };
            let config = RiskConfig { user_per_hour: 10_000, user_per_day: 10_000, ..RiskConfig::default() };
            let mut activity = Activity::new(&config);
            let mut model: Vec<Recent> = Vec::new();
            let mut now = 10 * DAY_NS;
            let mut last: Option<Recent> = None;
            for (step, span, id, currency, amount) in steps {
                match step {
                    // A payment created `span / 2` ago is assessed, a while later.
                    0 | 1 => {
                        now += span / 4;
                        let recent = Recent { payment: id, at: now - span / 2, currency: currencies[currency], amount };
                        let recent = match (step, last) {
                            (1, Some(last)) if last.at + DAY_NS >= now => Recent { amount, ..last },
                            _ => recent,
                        };
                        activity.assessed(1, "card", recent, now);
                        model.retain(|r| r.at.saturating_add(DAY_NS) >= now && (r.payment, r.at) != (recent.payment, recent.at));
                        model.push(recent);
                        last = Some(recent);
                    }
                    2 => {
                        activity.forget(1, "card", id);
                        model.retain(|r| r.payment != id);
                    }
                    3 => now = now.saturating_sub(span / 8),
                    _ => {}
                }
                let asked = last.map_or((id, now), |r| if step == 4 { (id, now) } else { (r.payment, r.at) });
                // A read drops what left the day too.
                model.retain(|r| r.at.saturating_add(DAY_NS) >= now);
                let expected = model_earlier(&model, asked, now, &value);
                let got = activity.user_earlier(1, asked.0, asked.1, now, &value);
                proptest::prop_assert_eq!(got, expected);
                let card = activity.instrument_earlier("card", asked.0, asked.1, now, &value);
                proptest::prop_assert_eq!(card, expected);
            }
        }
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
