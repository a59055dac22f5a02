//! Fraud controls before money moves: a per-payment limit, velocity limits per user
//! and per instrument, holds for new instruments and new payees, and a risk score.
//!
//! Every amount rule is money, not minor units: limits are set in one reference
//! currency (`RiskConfig::currency`, USD by default) and each payment is valued in it
//! at the FX mid rate in force, so 1,000 JPY and 1,000 BHD weigh what they are worth.
//! A payment no rate values goes to review ("no_rate"): it is never unlimited.
//!
//! Each rule either blocks or sends to review. A payment is blocked only when a
//! blocking rule fires; any number of review rules together still mean a review.

use std::time::Duration;

use ledger_core::money::{format_amount, Currency};

use super::kinds::Decision;

#[derive(Clone, Copy, Debug)]
pub struct RiskConfig {
    /// The currency every amount limit below is in (minor units of it), and in which
    /// payments are valued at the mid rate to compare them with the limits.
    pub currency: Currency,
    /// Largest single payment: above it a payment is blocked.
    pub amount_max: u64,
    /// Payments a user may start per hour, and per day (blocked above).
    pub user_per_hour: usize,
    pub user_per_day: usize,
    /// Amount a user may move per hour and per day: above it, review.
    pub user_amount_per_hour: u64,
    pub user_amount_per_day: u64,
    /// Payments per instrument per hour and per day, and its amount per day: above, review.
    pub instrument_per_hour: usize,
    pub instrument_per_day: usize,
    pub instrument_amount_per_day: u64,
    /// An instrument younger than this is new.
    pub new_instrument_age: Duration,
    /// Above this amount, a new instrument or a new payee sends a payment to review.
    pub new_threshold: u64,
    /// A review not decided by then cancels the payment.
    pub review_timeout: Duration,
}

impl Default for RiskConfig {
    fn default() -> RiskConfig {
        RiskConfig {
            currency: Currency::USD,
            amount_max: 1_000_000,
            user_per_hour: 30,
            user_per_day: 200,
            user_amount_per_hour: 1_000_000,
            user_amount_per_day: 2_000_000,
            instrument_per_hour: 10,
            instrument_per_day: 50,
            instrument_amount_per_day: 1_000_000,
            new_instrument_age: Duration::from_secs(24 * 3600),
            new_threshold: 50_000,
            review_timeout: Duration::from_secs(24 * 3600),
        }
    }
}

/// What the rules look at. Amounts are minor units of `RiskConfig::currency`; `None`
/// where no rate values the payment in it.
#[derive(Clone, Debug, Default)]
pub struct RiskInput {
    pub amount: Option<u64>,
    /// The currency of the payment, named in the reason when it cannot be valued.
    pub currency: Option<Currency>,
    /// The user's earlier payments.
    pub user: Earlier,
    /// The instrument's earlier payments (none for wallet funding).
    pub instrument: Earlier,
    /// When the funding instrument was added, if one is used.
    pub instrument_added_ns: Option<u64>,
    /// Whether the sender has completed a payment to this receiver before (true for
    /// payments to oneself).
    pub known_payee: bool,
    pub now_ns: u64,
}

/// Earlier payments in one window: how many, and their total value (`None` if one of
/// them has no value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub count: usize,
    pub total: Option<u64>,
}

impl Default for Window {
    fn default() -> Window {
        Window { count: 0, total: Some(0) }
    }
}

/// What the rules know of earlier payments: whether there is any, and the last hour
/// and the last day of them (kept as sums by `activity`, so no list is walked per
/// assessment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Earlier {
    pub any: bool,
    pub hour: Window,
    pub day: Window,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub score: u32,
    pub decision: Decision,
    pub reasons: Vec<String>,
}

pub(super) const HOUR_NS: u64 = 3_600_000_000_000;
pub(super) const DAY_NS: u64 = 24 * HOUR_NS;

/// What a rule that fires asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Effect {
    Review,
    Block,
}

/// The rules' findings: reasons with their points, and whether any rule blocks.
#[derive(Default)]
struct Findings {
    score: u32,
    reasons: Vec<String>,
    block: bool,
}

impl Findings {
    fn add(&mut self, effect: Effect, points: u32, reason: String) {
        self.score = self.score.saturating_add(points);
        self.block |= effect == Effect::Block;
        self.reasons.push(reason);
    }
}

/// The sum of `amount` and the values in `window`; `None` if one of them has no value.
fn total(window: &Window, amount: Option<u64>) -> Option<u64> {
    Some(amount?.saturating_add(window.total?))
}

/// Whether a payment of `amount` (in the risk currency) is large enough for the rules
/// on new instruments and new payees.
pub fn is_large(config: &RiskConfig, amount: Option<u64>) -> bool {
    amount.is_some_and(|amount| amount > config.new_threshold)
}

pub fn assess(config: &RiskConfig, input: &RiskInput) -> Assessment {
    let mut found = Findings::default();
    let reference = config.currency;
    let money = |minor: u64| format!("{} {}", format_amount(u128::from(minor), reference), reference.code());
    let (hour, day) = (&input.user.hour, &input.user.day);
    let (instrument_hour, instrument_day) = (&input.instrument.hour, &input.instrument.day);
    match input.amount {
        Some(amount) if amount > config.amount_max => found.add(
            Effect::Block,
            100,
            format!("amount_over_limit: {} is over the limit of {} a payment", money(amount), money(config.amount_max)),
        ),
        Some(_) => {}
        None => {
            let code = input.currency.map_or("its currency", |c| c.code());
            found.add(Effect::Review, 50, format!("no_rate: no rate values {code} in {}", reference.code()));
        }
    }
    if hour.count >= config.user_per_hour {
        found.add(Effect::Block, 100, format!("velocity_user_hour: {} payments in the last hour", hour.count));
    }
    if day.count >= config.user_per_day {
        found.add(Effect::Block, 100, format!("velocity_user_day: {} payments in the last day", day.count));
    }
    let sums = [
        ("velocity_amount_hour", "by this user in an hour", hour, config.user_amount_per_hour, true),
        ("velocity_amount_day", "by this user in a day", day, config.user_amount_per_day, true),
        (
            "velocity_instrument_amount_day",
            "with this instrument in a day",
            instrument_day,
            config.instrument_amount_per_day,
            input.instrument.any,
        ),
    ];
    for (rule, what, window, limit, applies) in sums {
        if !applies || input.amount.is_none() {
            continue;
        }
        match total(window, input.amount) {
            Some(sum) if sum > limit => {
                found.add(Effect::Review, 60, format!("{rule}: {} {what}, over {}", money(sum), money(limit)))
            }
            Some(_) => {}
            None => found.add(
                Effect::Review,
                60,
                format!("{rule}: an earlier payment {what} has no rate to value it in {}", reference.code()),
            ),
        }
    }
    if instrument_hour.count >= config.instrument_per_hour {
        let count = instrument_hour.count;
        found.add(Effect::Review, 60, format!("velocity_instrument_hour: {count} payments in the last hour"));
    }
    if instrument_day.count >= config.instrument_per_day {
        let count = instrument_day.count;
        found.add(Effect::Review, 60, format!("velocity_instrument_day: {count} payments in the last day"));
    }
    let large = is_large(config, input.amount);
    if let Some(added) = input.instrument_added_ns {
        let age = input.now_ns.saturating_sub(added);
        if age < config.new_instrument_age.as_nanos() as u64 && large {
            found.add(Effect::Review, 60, "new_instrument".into());
        }
    }
    if !input.known_payee && large {
        found.add(Effect::Review, 50, "new_payee".into());
    }
    let decision = match (found.block, found.reasons.is_empty()) {
        (true, _) => Decision::Block,
        (false, false) => Decision::Review,
        (false, true) => Decision::Allow,
    };
    Assessment { score: found.score, decision, reasons: found.reasons }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Earlier {
        /// The windows ending at `now_ns` of (time, value) of earlier payments, from a
        /// plain list.
        pub(crate) fn of(now_ns: u64, payments: impl IntoIterator<Item = (u64, Option<u64>)>) -> Earlier {
            let (hour, day) = (now_ns.saturating_sub(HOUR_NS), now_ns.saturating_sub(DAY_NS));
            let add = |window: &mut Window, value: Option<u64>| {
                window.count += 1;
                window.total = match (window.total, value) {
                    (Some(sum), Some(value)) => Some(sum.saturating_add(value)),
                    _ => None,
                };
            };
            let mut earlier = Earlier::default();
            for (at, value) in payments {
                earlier.any = true;
                if at >= day {
                    add(&mut earlier.day, value);
                }
                if at >= hour {
                    add(&mut earlier.hour, value);
                }
            }
            earlier
        }
    }

    const NOW: u64 = 100 * DAY_NS;

    fn base() -> RiskInput {
        RiskInput { amount: Some(1_000), known_payee: true, now_ns: NOW, ..RiskInput::default() }
    }

    fn decide(input: &RiskInput) -> (Decision, Vec<String>) {
        let assessed = assess(&RiskConfig::default(), input);
        (assessed.decision, assessed.reasons)
    }

    #[test]
    fn each_rule_reviews_or_blocks() {
        assert_eq!(decide(&base()), (Decision::Allow, vec![]));
        let big = RiskInput { amount: Some(1_000_001), ..base() };
        let (decision, reasons) = decide(&big);
        assert_eq!(decision, Decision::Block);
        assert_eq!(reasons[0], "amount_over_limit: 10000.01 USD is over the limit of 10000.00 USD a payment");
        assert_eq!(decide(&RiskInput { amount: Some(1_000_000), ..base() }).0, Decision::Allow, "the limit itself");
        let new_payee = RiskInput { amount: Some(60_000), known_payee: false, ..base() };
        assert_eq!(decide(&new_payee), (Decision::Review, vec!["new_payee".to_string()]));
        let new_instrument = RiskInput { amount: Some(60_000), instrument_added_ns: Some(NOW - HOUR_NS), ..base() };
        assert_eq!(decide(&new_instrument).0, Decision::Review);
        let busy = RiskInput { user: Earlier::of(NOW, vec![(NOW - 60_000_000_000, Some(10)); 30]), ..base() };
        assert_eq!(decide(&busy).0, Decision::Block);
        let card = RiskInput { instrument: Earlier::of(NOW, vec![(NOW - 60_000_000_000, Some(10)); 10]), ..base() };
        assert_eq!(decide(&card).1, ["velocity_instrument_hour: 10 payments in the last hour"]);
        let heavy =
            RiskInput { amount: Some(600_000), user: Earlier::of(NOW, [(NOW - 1_000, Some(500_000))]), ..base() };
        let (decision, reasons) = decide(&heavy);
        assert_eq!(decision, Decision::Review);
        assert_eq!(reasons[0], "velocity_amount_hour: 11000.00 USD by this user in an hour, over 10000.00 USD");
        let yesterday = RiskInput { user: Earlier::of(NOW, vec![(NOW - 2 * DAY_NS, Some(10)); 300]), ..base() };
        assert_eq!(decide(&yesterday).0, Decision::Allow, "old payments do not count");
    }

    #[test]
    fn review_reasons_never_add_up_to_a_block() {
        // A new card paying 600.00 to a new payee: two review rules, 110 points.
        let input = RiskInput {
            amount: Some(60_000),
            known_payee: false,
            instrument_added_ns: Some(NOW - HOUR_NS),
            instrument: Earlier::of(NOW, vec![(NOW - 1_000, Some(995_000)); 10]),
            user: Earlier::of(NOW, vec![(NOW - 1_000, Some(995_000)); 2]),
            ..base()
        };
        let assessed = assess(&RiskConfig::default(), &input);
        assert!(assessed.reasons.len() >= 5, "{:?}", assessed.reasons);
        assert!(assessed.score >= 100);
        assert_eq!(assessed.decision, Decision::Review);
    }

    #[test]
    fn a_payment_no_rate_values_goes_to_review() {
        let jpy = Currency::parse("JPY").expect("JPY");
        let unvalued = RiskInput { amount: None, currency: Some(jpy), known_payee: false, ..base() };
        assert_eq!(decide(&unvalued), (Decision::Review, vec!["no_rate: no rate values JPY in USD".to_string()]));
        let after_unvalued = RiskInput { user: Earlier::of(NOW, [(NOW - 1_000, None)]), ..base() };
        let (decision, reasons) = decide(&after_unvalued);
        assert_eq!(decision, Decision::Review);
        assert!(reasons[0].starts_with("velocity_amount_hour: an earlier payment"), "{reasons:?}");
    }

    proptest::proptest! {
        /// The windows count and sum exactly the payments a filter of the list by time
        /// would keep (the rules read only these figures).
        #[test]
        fn windows_hold_what_the_list_filtered_by_time_holds(
            earlier in proptest::collection::vec((0u64..2 * DAY_NS, proptest::option::of(0u64..u64::MAX / 4)), 0..50),
        ) {
            let list: Vec<(u64, Option<u64>)> = earlier.iter().map(|(t, v)| (NOW - t, *v)).collect();
            let windows = Earlier::of(NOW, list.iter().copied());
            for (window, since) in [(windows.hour, NOW - HOUR_NS), (windows.day, NOW - DAY_NS)] {
                let kept: Vec<_> = list.iter().filter(|(t, _)| *t >= since).collect();
                let sum = kept.iter().try_fold(0u64, |sum, (_, value)| Some(sum.saturating_add((*value)?)));
                proptest::prop_assert_eq!(window, Window { count: kept.len(), total: sum });
            }
            proptest::prop_assert_eq!(windows.any, !list.is_empty());
        }

        /// Only a blocking rule blocks: without the per-payment limit and the counts
        /// per user, any mix of the other rules is at most a review.
        #[test]
        fn only_blocking_rules_block(
            amount in 0u64..=1_000_000,
            earlier in proptest::collection::vec((0u64..2 * DAY_NS, proptest::option::of(0u64..5_000_000)), 0..29),
            instrument in proptest::collection::vec((0u64..2 * DAY_NS, proptest::option::of(0u64..5_000_000)), 0..80),
            added in proptest::option::of(0u64..2 * DAY_NS),
            known_payee: bool,
        ) {
            let input = RiskInput {
                amount: Some(amount),
                currency: None,
                user: Earlier::of(NOW, earlier.iter().map(|(t, v)| (NOW - t, *v))),
                instrument: Earlier::of(NOW, instrument.iter().map(|(t, v)| (NOW - t, *v))),
                instrument_added_ns: added.map(|a| NOW - a),
                known_payee,
                now_ns: NOW,
            };
            let assessed = assess(&RiskConfig::default(), &input);
            proptest::prop_assert_ne!(assessed.decision, Decision::Block);
            proptest::prop_assert_eq!(assessed.decision == Decision::Allow, assessed.reasons.is_empty());
        }
    }
}
