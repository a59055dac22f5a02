//! What the risk rules need to know of earlier payments, bounded in memory whatever
//! the history and whatever the load:
//!
//! - per user and per instrument, the payments assessed in the last day
//!   (`risk::DAY_NS`, the longest window of a rule) as counts and sums per currency in
//!   time buckets: a minute wide for the last hour ([`MINUTE_NS`]), a quarter of an hour
//!   wide for the last day ([`QUARTER_NS`]). Buckets are sparse (a quiet user holds
//!   none), so a key holds at most 61 minute and 97 quarter buckets however many
//!   payments it makes. Beside them, the last [`TAIL_MAX`] payments assessed are kept
//!   one by one, so that a payment assessed again (its event was not written the first
//!   time) counts once and a payment's own amount is not counted against it. A payment
//!   that leaves the tail is added to its buckets.
//!
//!   A rule's window is read as its exact payments in the tail plus every bucket that
//!   overlaps the window: a window reaches back at most one bucket further than its
//!   length (a minute for the hour, a quarter of an hour for the day), never less. So
//!   a rule may count a payment made up to a minute before its hour, which only makes it
//!   stricter. After the clock goes back, the hour is read from the quarter buckets. A
//!   payment counted by its assessment and then not made is taken out of its tail entry
//!   or its buckets ([`Activity::forget`]). A payment counted on the tail, pushed out of
//!   it by [`TAIL_MAX`] later assessments of the same key, then assessed again, counts
//!   twice: stricter, never looser.
//! - the pairs (sender, receiver) that completed a payment, at most [`PAYEES_MAX`],
//!   the oldest forgotten first: a forgotten payee is new again, which only sends a
//!   large payment to review.
//!
//! All of it is a cache of the payments' index on disk (`store`), whose rows are written
//! before the append that makes them true: a user's or an instrument's last day is read
//! from it the first time the rules need it (outside the lock the assessments share, a
//! few reads at a time: [`LastDay`], [`Activity::install_user`]), and a payee unknown
//! in memory is looked up there. So a restart changes no decision a rule would make (up to those bounds),
//! without reading any payment at start. The keys in memory are bounded by
//! [`WINDOWS_BYTES_MAX`] per map (users, instruments): past it, the keys not assessed for
//! [`IDLE_NS`] are dropped, to be read again from the index when next needed. A key with
//! nothing in the last day is dropped each time the map has doubled.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::mem::size_of;

use ledger_core::money::Currency;

use super::risk::{Earlier, Window, DAY_NS, HOUR_NS};
use crate::sweep::Sweep;

/// Payee pairs remembered (about 80 bytes each, with their order).
pub const PAYEES_MAX: usize = 1_000_000;
/// Payments kept one by one per key: the last this many assessed.
pub const TAIL_MAX: usize = 16;
/// Width of the buckets of the last hour, in nanoseconds.
pub const MINUTE_NS: u64 = 60_000_000_000;
/// Width of the buckets of the last day, in nanoseconds.
pub const QUARTER_NS: u64 = 15 * MINUTE_NS;
/// Bytes of keys, tails and buckets per map (users, instruments), estimated from their
/// lengths; past it, idle keys are dropped.
pub const WINDOWS_BYTES_MAX: usize = 64 << 20;
/// A key not assessed for this many nanoseconds may be dropped past the byte budget.
pub const IDLE_NS: u64 = MINUTE_NS;
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

impl Recent {
    fn same(&self, payment: u128, at: u64) -> bool {
        (self.payment, self.at) == (payment, at)
    }
}

/// A count and, per currency, the sum of amounts (minor units) of some payments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sums {
    count: usize,
    amounts: Vec<(Currency, u128)>,
}

impl Sums {
    fn add_amount(&mut self, count: usize, currency: Currency, amount: u128) {
        self.count += count;
        match self.amounts.iter_mut().find(|(c, _)| *c == currency) {
            Some((_, sum)) => *sum = sum.saturating_add(amount),
            None => self.amounts.push((currency, amount)),
        }
    }

    fn add(&mut self, recent: &Recent) {
        self.add_amount(1, recent.currency, u128::from(recent.amount));
    }

    fn merge(&mut self, other: &Sums) {
        self.count += other.count;
        for (currency, amount) in &other.amounts {
            self.add_amount(0, *currency, *amount);
        }
    }

    fn sub(&mut self, recent: &Recent) {
        self.count = self.count.saturating_sub(1);
        if let Some((_, sum)) = self.amounts.iter_mut().find(|(currency, _)| *currency == recent.currency) {
            *sum = sum.saturating_sub(u128::from(recent.amount));
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

/// The payments created in `[start, start + width)` that left a key's tail.
struct Bucket {
    start: u64,
    sums: Sums,
}

/// Sparse buckets of one width, in time order.
struct Buckets {
    width: u64,
    buckets: VecDeque<Bucket>,
}

impl Buckets {
    fn new(width: u64) -> Buckets {
        Buckets { width, buckets: VecDeque::new() }
    }

    /// Where the bucket of `at` is, or would be inserted, and its start.
    fn find(&self, at: u64) -> (usize, u64) {
        let start = at - at % self.width;
        (self.buckets.partition_point(|b| b.start < start), start)
    }

    fn add(&mut self, recent: &Recent) {
        let (index, start) = self.find(recent.at);
        match self.buckets.get_mut(index) {
            Some(bucket) if bucket.start == start => bucket.sums.add(recent),
            _ => {
                let mut sums = Sums::default();
                sums.add(recent);
                self.buckets.insert(index, Bucket { start, sums });
            }
        }
    }

    /// Takes `recent`, which was added, out of its bucket.
    fn sub(&mut self, recent: &Recent) {
        let (index, start) = self.find(recent.at);
        if let Some(bucket) = self.buckets.get_mut(index).filter(|b| b.start == start) {
            bucket.sums.sub(recent);
            if bucket.sums.count == 0 {
                self.buckets.remove(index);
            }
        }
    }

    /// Drops the buckets that end at or before `before`; the end of the last dropped.
    fn drop_before(&mut self, before: u64) -> Option<u64> {
        let mut end = None;
        while let Some(bucket) = self.buckets.front().filter(|b| b.start.saturating_add(self.width) <= before) {
            end = Some(bucket.start.saturating_add(self.width));
            self.buckets.pop_front();
        }
        end
    }

    /// Adds to `sums` every bucket that overlaps `[since, ∞)`.
    fn since(&self, since: u64, sums: &mut Sums) {
        let from = self.buckets.partition_point(|b| b.start.saturating_add(self.width) <= since);
        for bucket in self.buckets.range(from..) {
            sums.merge(&bucket.sums);
        }
    }

    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// One key's last day: its last payments assessed one by one, the others in buckets.
pub(super) struct List {
    /// The last payments assessed, the earliest assessed first.
    tail: VecDeque<Recent>,
    /// Payments that left the tail, by the minute, for the last hour.
    minutes: Buckets,
    /// Every payment that left the tail created at or after this is in `minutes` (those
    /// before it are in `quarters` only, their minutes dropped).
    minutes_from: u64,
    /// Payments that left the tail, by the quarter of an hour, for the last day.
    quarters: Buckets,
    /// When the key was last assessed or read from the index.
    touched: u64,
}

/// Estimated bytes of a bucket with one currency.
const BUCKET_BYTES: usize = size_of::<Bucket>() + size_of::<(Currency, u128)>();

impl List {
    fn new(now_ns: u64) -> List {
        List {
            tail: VecDeque::new(),
            minutes: Buckets::new(MINUTE_NS),
            minutes_from: 0,
            quarters: Buckets::new(QUARTER_NS),
            touched: now_ns,
        }
    }

    /// Estimated bytes held, the list's own and its map slot's beside.
    fn bytes(&self) -> usize {
        size_of::<List>()
            + 64
            + self.tail.len() * size_of::<Recent>()
            + (self.minutes.len() + self.quarters.len()) * BUCKET_BYTES
    }

    /// A payment that left the tail goes to its buckets, unless it left the day.
    fn seal(&mut self, recent: Recent, now_ns: u64) {
        if recent.at.saturating_add(DAY_NS) < now_ns {
            return;
        }
        self.quarters.add(&recent);
        if recent.at >= self.minutes_from {
            self.minutes.add(&recent);
        }
    }

    /// Drops what left the day before `now_ns`, and the minutes that left the hour.
    fn advance(&mut self, now_ns: u64) {
        self.tail.retain(|r| r.at.saturating_add(DAY_NS) >= now_ns);
        self.quarters.drop_before(now_ns.saturating_sub(DAY_NS));
        if let Some(end) = self.minutes.drop_before(now_ns.saturating_sub(HOUR_NS)) {
            self.minutes_from = self.minutes_from.max(end);
        }
    }

    fn push(&mut self, recent: Recent, now_ns: u64, tail_max: usize) {
        self.advance(now_ns);
        self.touched = now_ns;
        // A payment assessed again (its event was not written the first time) once.
        if let Some(again) = self.tail.iter().position(|r| r.same(recent.payment, recent.at)) {
            self.tail.remove(again);
        }
        self.tail.push_back(recent);
        while self.tail.len() > tail_max {
            if let Some(oldest) = self.tail.pop_front() {
                self.seal(oldest, now_ns);
            }
        }
    }

    /// Takes out `recent`, which was counted.
    fn forget(&mut self, recent: &Recent) {
        if let Some(index) = self.tail.iter().position(|r| r.same(recent.payment, recent.at)) {
            self.tail.remove(index);
            return;
        }
        self.quarters.sub(recent);
        if recent.at >= self.minutes_from {
            self.minutes.sub(recent);
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
        let (day_since, hour_since) = (now_ns.saturating_sub(DAY_NS), now_ns.saturating_sub(HOUR_NS));
        let (mut day, mut hour) = (Sums::default(), Sums::default());
        self.quarters.since(day_since, &mut day);
        if self.minutes_from <= hour_since {
            self.minutes.since(hour_since, &mut hour);
        } else {
            // The clock went back past the minutes kept: the hour from the quarters.
            self.quarters.since(hour_since, &mut hour);
        }
        for recent in self.tail.iter().filter(|r| !r.same(payment, at)) {
            if recent.at >= day_since {
                day.add(recent);
            }
            if recent.at >= hour_since {
                hour.add(recent);
            }
        }
        Earlier { any: day.count > 0, hour: hour.window(value), day: day.window(value) }
    }
}

/// A key's last day as read from the index, not yet in memory.
pub(super) struct LastDay(List);

impl LastDay {
    /// Reads a key's last day from `read`, which visits its payments newest first: the
    /// newest `tail_max` one by one, the others in their buckets.
    pub(super) fn read<E>(
        tail_max: usize,
        now_ns: u64,
        read: impl FnOnce(&mut dyn FnMut(Recent)) -> Result<(), E>,
    ) -> Result<LastDay, E> {
        let mut list = List::new(now_ns);
        let mut newest = Vec::new();
        read(&mut |recent| {
            if newest.len() < tail_max {
                newest.push(recent);
            } else {
                list.seal(recent, now_ns);
            }
        })?;
        newest.reverse();
        list.tail = newest.into();
        list.advance(now_ns);
        Ok(LastDay(list))
    }
}

/// Recent payments per key, a day long, within a byte budget.
struct Windows<K> {
    lists: HashMap<K, List>,
    tail_max: usize,
    /// Estimated bytes of `lists`.
    bytes: usize,
    bytes_max: usize,
    /// Idle keys are dropped when `bytes` passes this (at least `bytes_max`).
    evict_above: usize,
    /// When to drop the keys with nothing in the last day.
    sweep: Sweep,
    /// How many times keys were dropped: a last day read from the index outside the
    /// lock is put in only if none was dropped meanwhile ([`Activity::install_user`]).
    removals: u64,
}

impl<K: Hash + Eq> Windows<K> {
    fn new(tail_max: usize, bytes_max: usize) -> Windows<K> {
        Windows {
            lists: HashMap::new(),
            tail_max: tail_max.max(1),
            bytes: 0,
            bytes_max,
            evict_above: bytes_max,
            sweep: Sweep::new(SWEEP_KEYS_MIN),
            removals: 0,
        }
    }

    /// Changes `key`'s list (made if missing) by `change`, keeping the bytes counted.
    fn change(&mut self, key: K, now_ns: u64, change: impl FnOnce(&mut List)) {
        let (list, before) = match self.lists.entry(key) {
            Entry::Occupied(entry) => {
                let list = entry.into_mut();
                let before = list.bytes();
                (list, before)
            }
            Entry::Vacant(entry) => (entry.insert(List::new(now_ns)), 0),
        };
        change(list);
        self.bytes = (self.bytes + list.bytes()).saturating_sub(before);
        self.maintain(now_ns);
    }

    /// Drops keys idle for a day each time the map has doubled, and keys idle for
    /// [`IDLE_NS`] when past the byte budget.
    fn maintain(&mut self, now_ns: u64) {
        let over = self.bytes > self.evict_above;
        if !over && !self.sweep.due(self.lists.len()) {
            return;
        }
        let keep_for = if over { IDLE_NS } else { DAY_NS };
        let held = self.lists.len();
        self.lists.retain(|_, list| list.touched.saturating_add(keep_for) > now_ns);
        if self.lists.len() < held {
            self.removals += 1;
        }
        self.bytes = self.lists.values().map(List::bytes).sum();
        self.sweep.swept(self.lists.len());
        // Keys all busy past the budget: the next eviction when a quarter more is held.
        self.evict_above = self.bytes_max.max(self.bytes + self.bytes / 4);
    }

    fn push(&mut self, key: K, recent: Recent, now_ns: u64) {
        let tail_max = self.tail_max;
        self.change(key, now_ns, |list| list.push(recent, now_ns, tail_max));
    }

    /// Whether `key`'s list is in memory (possibly empty).
    fn has(&self, key: &K) -> bool {
        self.lists.contains_key(key)
    }

    /// Puts `key`'s last day in memory, read by `read` from the index newest first.
    fn load<E>(
        &mut self,
        key: K,
        now_ns: u64,
        read: impl FnOnce(&mut dyn FnMut(Recent)) -> Result<(), E>,
    ) -> Result<(), E> {
        let LastDay(list) = LastDay::read(self.tail_max, now_ns, read)?;
        self.change(key, now_ns, |slot| *slot = list);
        Ok(())
    }

    /// Puts `key`'s last day, read outside the lock, in memory unless the key is there
    /// already (what is there is as new). Refused (false) when the key is missing and
    /// keys were dropped since the read began (`removals_seen`): a payment of the key
    /// may have been counted and dropped meanwhile, so the caller reads again under
    /// the lock. With no key dropped, a payment assessed since the read began found
    /// the key missing too and is putting its own read in.
    fn install(&mut self, key: K, LastDay(list): LastDay, now_ns: u64, removals_seen: u64) -> bool {
        if self.lists.contains_key(&key) {
            return true;
        }
        if self.removals != removals_seen {
            return false;
        }
        self.change(key, now_ns, |slot| *slot = list);
        true
    }

    fn forget(&mut self, key: K, recent: &Recent, now_ns: u64) {
        if self.lists.contains_key(&key) {
            self.change(key, now_ns, |list| list.forget(recent));
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
        let Some(list) = self.lists.get_mut(key) else { return Earlier::default() };
        let before = list.bytes();
        let earlier = list.earlier(payment, at, now_ns, value);
        self.bytes = (self.bytes + list.bytes()).saturating_sub(before);
        earlier
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
    pub(super) fn new() -> Activity {
        Activity::with_limits(TAIL_MAX, WINDOWS_BYTES_MAX, PAYEES_MAX)
    }

    fn with_limits(tail_max: usize, bytes_max: usize, payees_max: usize) -> Activity {
        Activity {
            by_user: Windows::new(tail_max, bytes_max),
            by_instrument: Windows::new(tail_max, bytes_max),
            payees: BoundedSet::new(payees_max),
        }
    }

    /// How many payments each key keeps one by one (for [`LastDay::read`]).
    pub(super) fn tail_max(&self) -> usize {
        self.by_user.tail_max
    }

    /// A count that changes whenever keys are dropped from memory (for the installs).
    pub(super) fn removals(&self) -> (u64, u64) {
        (self.by_user.removals, self.by_instrument.removals)
    }

    /// Puts `user`'s last day, read by [`LastDay::read`] after [`Activity::removals`]
    /// gave `removals_seen`, in memory; false when it must be read again under the lock.
    pub(super) fn install_user(
        &mut self,
        user: u128,
        last_day: LastDay,
        now_ns: u64,
        removals_seen: (u64, u64),
    ) -> bool {
        self.by_user.install(user, last_day, now_ns, removals_seen.0)
    }

    /// As [`Activity::install_user`], for a funding instrument.
    pub(super) fn install_instrument(
        &mut self,
        instrument: &str,
        last_day: LastDay,
        now_ns: u64,
        removals_seen: (u64, u64),
    ) -> bool {
        self.by_instrument.install(instrument.to_string(), last_day, now_ns, removals_seen.1)
    }

    pub(super) fn has_user(&self, user: u128) -> bool {
        self.by_user.has(&user)
    }

    pub(super) fn has_instrument(&self, instrument: &str) -> bool {
        self.by_instrument.has(&instrument.to_string())
    }

    /// The user's last day, read from the index by `read` newest first, in memory.
    pub(super) fn load_user<E>(
        &mut self,
        user: u128,
        now_ns: u64,
        read: impl FnOnce(&mut dyn FnMut(Recent)) -> Result<(), E>,
    ) -> Result<(), E> {
        self.by_user.load(user, now_ns, read)
    }

    pub(super) fn load_instrument<E>(
        &mut self,
        instrument: &str,
        now_ns: u64,
        read: impl FnOnce(&mut dyn FnMut(Recent)) -> Result<(), E>,
    ) -> Result<(), E> {
        self.by_instrument.load(instrument.to_string(), now_ns, read)
    }

    /// A payment of `sender` (with `instrument`, unless empty) was assessed.
    pub(super) fn assessed(&mut self, sender: u128, instrument: &str, recent: Recent, now_ns: u64) {
        self.by_user.push(sender, recent, now_ns);
        if !instrument.is_empty() {
            self.by_instrument.push(instrument.to_string(), recent, now_ns);
        }
    }

    /// A payment counted by its assessment (as `recent`) that was then not made after all.
    pub(super) fn forget(&mut self, sender: u128, instrument: &str, recent: &Recent, now_ns: u64) {
        self.by_user.forget(sender, recent, now_ns);
        if !instrument.is_empty() {
            self.by_instrument.forget(instrument.to_string(), recent, now_ns);
        }
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

    fn usd(_: Currency, minor: u64) -> Option<u64> {
        Some(minor)
    }

    #[test]
    fn a_busy_key_holds_a_bounded_tail_and_sparse_buckets() {
        let mut activity = Activity::new();
        // One payment a second for two days.
        let start = 10 * DAY_NS;
        for second in 0..2 * 86_400u64 {
            let at = start + second * 1_000_000_000;
            activity.assessed(1, "card", recent(at), at);
            if second % 3_600 == 0 {
                let list = &activity.by_user.lists[&1];
                assert!(list.tail.len() <= TAIL_MAX);
                assert!(list.minutes.len() <= 61, "minutes: {}", list.minutes.len());
                assert!(list.quarters.len() <= 97, "quarters: {}", list.quarters.len());
            }
        }
        let now = start + 2 * DAY_NS - 1_000_000_000;
        let earlier = activity.user_earlier(1, 0, now + 1, now, &usd);
        // The hour and the day counted up to one bucket further back, never less.
        assert!((3_601..=3_601 + 60).contains(&earlier.hour.count), "hour: {}", earlier.hour.count);
        assert!((86_401..=86_401 + 900).contains(&earlier.day.count), "day: {}", earlier.day.count);
        assert_eq!(earlier.day.total, Some(100 * earlier.day.count as u64));
        assert!(activity.by_user.bytes < 20_000, "bytes: {}", activity.by_user.bytes);
    }

    #[test]
    fn users_with_nothing_in_the_last_day_are_swept() {
        let mut activity = Activity::new();
        for user in 0..5_000u128 {
            activity.assessed(user, "card", recent(0), 0);
        }
        let later = 2 * DAY_NS;
        for user in 10_000..14_000u128 {
            activity.assessed(user, "", recent(later), later);
        }
        assert!(activity.by_user.lists.len() < 5_000, "stale users were swept: {}", activity.by_user.lists.len());
        assert!(!activity.has_user(4_999));
        assert_eq!(activity.user_earlier(13_999, 0, 0, later, &usd).day.count, 1);
    }

    #[test]
    fn past_the_byte_budget_idle_keys_are_dropped_and_busy_ones_kept() {
        let budget = 200_000;
        let mut activity = Activity::with_limits(TAIL_MAX, budget, PAYEES_MAX);
        let mut now = DAY_NS;
        // A new user a second, and user 7 each time: about 60 keys busy within a minute.
        for user in 100..20_100u128 {
            now += 1_000_000_000;
            activity.assessed(user, "", recent(now), now);
            activity.assessed(7, "", recent(now + 1), now);
            assert!(activity.by_user.bytes <= budget + 1_000, "bytes: {}", activity.by_user.bytes);
        }
        let held = activity.by_user.lists.len();
        assert!(held < 20_000 && held > 50, "held: {held}");
        assert!(!activity.has_user(100), "an idle key was dropped");
        assert!(activity.has_user(20_099), "a busy key was kept");
        assert_eq!(activity.user_earlier(7, 0, 0, now, &usd).day.count, 20_000, "the busy key kept all it counted");
        let counted: usize = activity.by_user.lists.values().map(List::bytes).sum();
        assert_eq!(activity.by_user.bytes, counted, "bytes kept equal bytes held");
    }

    #[test]
    fn a_last_day_read_outside_the_lock_goes_in_only_where_nothing_newer_can_be_missed() {
        let day = |payments: &[u64]| {
            LastDay::read(TAIL_MAX, DAY_NS, |visit| {
                payments.iter().rev().for_each(|at| visit(recent(*at)));
                Ok::<_, ()>(())
            })
            .expect("read")
        };
        let mut activity = Activity::new();
        // Missing, nothing dropped since the read began: it goes in.
        let seen = activity.removals();
        assert!(activity.install_user(1, day(&[HOUR, 2 * HOUR]), DAY_NS, seen));
        assert_eq!(activity.user_earlier(1, 0, 0, DAY_NS, &usd).day.count, 2);
        // Another read of the same key finished second: what is in memory stays.
        activity.assessed(1, "", recent(3 * HOUR), DAY_NS);
        assert!(activity.install_user(1, day(&[HOUR]), DAY_NS, seen));
        assert_eq!(activity.user_earlier(1, 0, 0, DAY_NS, &usd).day.count, 3);
        // Keys dropped while a read ran: refused, to be read again under the lock.
        let seen = activity.removals();
        for user in 10..5_000u128 {
            activity.assessed(user, "", recent(0), 3 * DAY_NS);
        }
        assert_ne!(activity.removals(), seen, "the sweep dropped keys");
        assert!(!activity.install_user(2, day(&[HOUR]), 3 * DAY_NS, seen));
        assert!(!activity.has_user(2));
        assert!(activity.install_instrument("card", day(&[HOUR]), 3 * DAY_NS, seen), "no instrument was dropped");
    }

    #[test]
    fn payees_are_bounded_and_the_oldest_is_forgotten() {
        let mut activity = Activity::with_limits(TAIL_MAX, WINDOWS_BYTES_MAX, 3);
        for receiver in 1..=4 {
            activity.completed(7, receiver);
            activity.completed(7, receiver);
        }
        assert!(!activity.known_payee(7, 1), "the oldest was forgotten");
        assert!((2..=4).all(|r| activity.known_payee(7, r)));
        assert_eq!(activity.payees.order.len(), 3);
    }

    #[test]
    fn a_payment_not_made_after_its_assessment_is_forgotten_in_the_tail_or_its_buckets() {
        for tail_max in [1, TAIL_MAX] {
            let mut activity = Activity::with_limits(tail_max, WINDOWS_BYTES_MAX, PAYEES_MAX);
            let first = recent(HOUR);
            activity.assessed(1, "card", first, HOUR);
            activity.assessed(1, "card", recent(2 * HOUR), 2 * HOUR);
            activity.forget(1, "card", &first, 2 * HOUR);
            let now = 2 * HOUR + 1;
            for earlier in
                [activity.user_earlier(1, 0, 0, now, &usd), activity.instrument_earlier("card", 0, 0, now, &usd)]
            {
                assert_eq!((earlier.day.count, earlier.day.total), (1, Some(100)), "tail of {tail_max}");
            }
        }
    }

    #[test]
    fn a_key_read_from_the_index_equals_the_key_assessed() {
        let payments: Vec<Recent> = (0..100).map(|n| recent(DAY_NS + n * 60_000_000_000)).collect();
        let now = DAY_NS + 100 * 60_000_000_000;
        let mut assessed = Activity::new();
        for payment in &payments {
            assessed.assessed(1, "", *payment, payment.at);
        }
        let mut loaded = Activity::new();
        loaded
            .load_user(1, now, |visit| {
                payments.iter().rev().for_each(|p| visit(*p));
                Ok::<(), ()>(())
            })
            .expect("read");
        let asked = payments[99];
        assert_eq!(
            loaded.user_earlier(1, asked.payment, asked.at, now, &usd),
            assessed.user_earlier(1, asked.payment, asked.at, now, &usd)
        );
    }

    #[test]
    fn a_payment_assessed_again_counts_once() {
        let mut activity = Activity::new();
        activity.assessed(1, "card", recent(5 * HOUR), 5 * HOUR);
        activity.assessed(1, "card", Recent { amount: 0, ..recent(5 * HOUR) }, 5 * HOUR + 1);
        let earlier = activity.user_earlier(1, 0, 0, 5 * HOUR + 2, &usd);
        assert_eq!((earlier.day.count, earlier.day.total), (1, Some(0)));
        let card = activity.instrument_earlier("card", 0, 0, 5 * HOUR + 2, &usd);
        assert_eq!((card.day.count, card.day.total), (1, Some(0)));
    }

    /// The rules' view computed from a plain list: the payments of the last day and of
    /// the last hour (each reaching `wider` further back) but `except`, each currency's
    /// total valued once.
    fn model_earlier(
        list: &[Recent],
        except: Option<(u128, u64)>,
        now: u64,
        wider: (u64, u64),
        value: &dyn Fn(Currency, u64) -> Option<u64>,
    ) -> Earlier {
        let window = |since: u64| {
            let mut sums = Sums::default();
            for recent in list.iter().filter(|r| r.at >= since && Some((r.payment, r.at)) != except) {
                sums.add(recent);
            }
            sums.window(value)
        };
        let day = window(now.saturating_sub(DAY_NS + wider.1));
        Earlier { any: day.count > 0, hour: window(now.saturating_sub(HOUR_NS + wider.0)), day }
    }

    /// Whether window `a` counts no more than `b` (a total without value is the largest).
    fn at_most(a: &Window, b: &Window) -> bool {
        a.count <= b.count
            && match (a.total, b.total) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(a), Some(b)) => a <= b,
            }
    }

    fn within(low: &Earlier, got: &Earlier, high: &Earlier) -> bool {
        low.any <= got.any
            && got.any <= high.any
            && at_most(&low.hour, &got.hour)
            && at_most(&got.hour, &high.hour)
            && at_most(&low.day, &got.day)
            && at_most(&got.day, &high.day)
    }

    proptest::proptest! {
        /// Whatever the order of assessments, payments assessed again, payments
        /// forgotten, reads, and the clock going back: with a tail that holds every
        /// payment the view equals the plain list filtered by time; with a tail of two,
        /// it counts at least that, and at most the list over windows one bucket wider
        /// (a minute for the hour, a quarter for the day, a quarter for the hour once
        /// the clock went back).
        #[test]
        fn windows_count_the_list_filtered_by_time_up_to_a_bucket(
            steps in proptest::collection::vec((0u8..5, 0u64..3 * HOUR, 0u128..30, 0usize..3, 0u64..1_000_000), 1..150),
        ) {
            let currencies = [Currency::USD, Currency::parse("EUR").expect("EUR"), Currency::parse("GBP").expect("GBP")];
            // USD is the risk currency, EUR is worth two, GBP has no rate.
            let value = |currency: Currency, minor: u64| match currency.code() {
                "USD" => Some(minor),
                "EUR" => Some(minor.saturating_mul(2)),
                _ => None,
            };
            let mut exact = Activity::with_limits(usize::MAX, WINDOWS_BYTES_MAX, PAYEES_MAX);
            let mut bucketed = Activity::with_limits(2, WINDOWS_BYTES_MAX, PAYEES_MAX);
            // `model` drops what left the day, as a read does; `all` keeps it.
            let (mut model, mut all): (Vec<Recent>, Vec<Recent>) = (Vec::new(), Vec::new());
            let mut now = 10 * DAY_NS;
            let mut went_back = false;
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
                        for activity in [&mut exact, &mut bucketed] {
                            activity.assessed(1, "card", recent, now);
                        }
                        model.retain(|r| r.at.saturating_add(DAY_NS) >= now && !r.same(recent.payment, recent.at));
                        all.retain(|r| !r.same(recent.payment, recent.at));
                        model.push(recent);
                        all.push(recent);
                        last = Some(recent);
                    }
                    // The last payment assessed is not made after all.
                    2 => if let Some(gone) = last.take() {
                        for activity in [&mut exact, &mut bucketed] {
                            activity.forget(1, "card", &gone, now);
                        }
                        model.retain(|r| !r.same(gone.payment, gone.at));
                        all.retain(|r| !r.same(gone.payment, gone.at));
                    },
                    3 => {
                        now = now.saturating_sub(span / 8);
                        went_back |= span >= 8;
                    }
                    // Time passes (up to six hours) before a read.
                    _ => now += 2 * span,
                }
                let asked = last.map_or((id, now), |r| if step == 4 { (id, now) } else { (r.payment, r.at) });
                // A read drops what left the day too.
                model.retain(|r| r.at.saturating_add(DAY_NS) >= now);
                let expected = model_earlier(&model, Some(asked), now, (0, 0), &value);
                let got = exact.user_earlier(1, asked.0, asked.1, now, &value);
                proptest::prop_assert_eq!(&got, &expected);
                proptest::prop_assert_eq!(&exact.instrument_earlier("card", asked.0, asked.1, now, &value), &expected);
                let wider = (if went_back { QUARTER_NS } else { MINUTE_NS }, QUARTER_NS);
                let high = model_earlier(&all, None, now, wider, &value);
                for got in [
                    bucketed.user_earlier(1, asked.0, asked.1, now, &value),
                    bucketed.instrument_earlier("card", asked.0, asked.1, now, &value),
                ] {
                    proptest::prop_assert!(within(&expected, &got, &high), "{:?} <= {:?} <= {:?}", expected, got, high);
                }
            }
        }
    }
}
