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
        for earlier in [activity.user_earlier(1, 0, 0, now, &usd), activity.instrument_earlier("card", 0, 0, now, &usd)]
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
