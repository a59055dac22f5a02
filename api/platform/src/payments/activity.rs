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
mod tests;
