//! Fraud controls before money moves: a per-payment limit, velocity limits per user
//! and per instrument, holds for new instruments and new payees, and a risk score
//! whose decision (allow, review, block) and reasons are recorded with the payment.

use std::time::Duration;

use super::kinds::Decision;

#[derive(Clone, Copy, Debug)]
pub struct RiskConfig {
    /// Largest single payment, in minor units: above it a payment is blocked.
    pub amount_max: u64,
    /// Payments a user may start per hour, and per day (blocked above).
    pub user_per_hour: usize,
    pub user_per_day: usize,
    /// Amount (minor units) a user may move per hour and per day: above it, review.
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

/// What the rules look at.
#[derive(Clone, Debug, Default)]
pub struct RiskInput {
    pub amount: u64,
    /// (time, amount) of the user's earlier payments.
    pub user_recent: Vec<(u64, u64)>,
    /// (time, amount) of the instrument's earlier payments (empty for wallet funding).
    pub instrument_recent: Vec<(u64, u64)>,
    /// When the funding instrument was added, if one is used.
    pub instrument_added_ns: Option<u64>,
    /// Whether the sender has completed a payment to this receiver before (true for
    /// payments to oneself).
    pub known_payee: bool,
    pub now_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub score: u32,
    pub decision: Decision,
    pub reasons: Vec<String>,
}

const HOUR_NS: u64 = 3_600_000_000_000;
const DAY_NS: u64 = 24 * HOUR_NS;

pub fn assess(config: &RiskConfig, input: &RiskInput) -> Assessment {
    let mut score = 0u32;
    let mut reasons = Vec::new();
    let mut add = |points: u32, reason: String| {
        score += points;
        reasons.push(reason);
    };
    let since = |window: u64| input.now_ns.saturating_sub(window);
    if input.amount > config.amount_max {
        add(100, format!("amount_over_limit: {} > {}", input.amount, config.amount_max));
    }
    let last_hour = input.user_recent.iter().filter(|(t, _)| *t >= since(HOUR_NS)).count();
    let last_day: Vec<&(u64, u64)> = input.user_recent.iter().filter(|(t, _)| *t >= since(DAY_NS)).collect();
    if last_hour >= config.user_per_hour {
        add(100, format!("velocity_user_hour: {last_hour} payments in the last hour"));
    }
    if last_day.len() >= config.user_per_day {
        add(100, format!("velocity_user_day: {} payments in the last day", last_day.len()));
    }
    let hour_amount: u64 = input
        .user_recent
        .iter()
        .filter(|(t, _)| *t >= since(HOUR_NS))
        .map(|(_, a)| *a)
        .sum::<u64>()
        .saturating_add(input.amount);
    if hour_amount > config.user_amount_per_hour {
        add(60, format!("velocity_amount_hour: {hour_amount} in an hour"));
    }
    let day_amount: u64 = last_day.iter().map(|(_, a)| *a).sum::<u64>().saturating_add(input.amount);
    if day_amount > config.user_amount_per_day {
        add(60, format!("velocity_amount_day: {day_amount} in a day"));
    }
    let instrument_hour = input.instrument_recent.iter().filter(|(t, _)| *t >= since(HOUR_NS)).count();
    if instrument_hour >= config.instrument_per_hour {
        add(60, format!("velocity_instrument_hour: {instrument_hour} payments in the last hour"));
    }
    let instrument_day: Vec<&(u64, u64)> =
        input.instrument_recent.iter().filter(|(t, _)| *t >= since(DAY_NS)).collect();
    if instrument_day.len() >= config.instrument_per_day {
        add(60, format!("velocity_instrument_day: {} payments in the last day", instrument_day.len()));
    }
    let instrument_amount: u64 = instrument_day.iter().map(|(_, a)| *a).sum::<u64>().saturating_add(input.amount);
    if !input.instrument_recent.is_empty() && instrument_amount > config.instrument_amount_per_day {
        add(60, format!("velocity_instrument_amount_day: {instrument_amount} in a day"));
    }
    if let Some(added) = input.instrument_added_ns {
        let age = input.now_ns.saturating_sub(added);
        if age < config.new_instrument_age.as_nanos() as u64 && input.amount > config.new_threshold {
            add(60, "new_instrument".into());
        }
    }
    if !input.known_payee && input.amount > config.new_threshold {
        add(50, "new_payee".into());
    }
    let decision = match score {
        s if s >= 100 => Decision::Block,
        s if s >= 50 => Decision::Review,
        _ => Decision::Allow,
    };
    Assessment { score, decision, reasons }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_add_up_to_a_decision() {
        let config = RiskConfig::default();
        let now = 100 * DAY_NS;
        let base = RiskInput { amount: 1_000, known_payee: true, now_ns: now, ..RiskInput::default() };
        assert_eq!(assess(&config, &base).decision, Decision::Allow);
        let big = RiskInput { amount: 2_000_000, ..base.clone() };
        assert_eq!(assess(&config, &big).decision, Decision::Block);
        let new_payee = RiskInput { amount: 60_000, known_payee: false, ..base.clone() };
        let assessed = assess(&config, &new_payee);
        assert_eq!(
            (assessed.decision, assessed.reasons.as_slice()),
            (Decision::Review, &["new_payee".to_string()][..])
        );
        let new_instrument = RiskInput { amount: 60_000, instrument_added_ns: Some(now - HOUR_NS), ..base.clone() };
        assert_eq!(assess(&config, &new_instrument).decision, Decision::Review);
        let busy = RiskInput { user_recent: vec![(now - 60_000_000_000, 10); 30], ..base.clone() };
        assert_eq!(assess(&config, &busy).decision, Decision::Block);
        let card = RiskInput { instrument_recent: vec![(now - 60_000_000_000, 10); 10], ..base.clone() };
        assert_eq!(assess(&config, &card).reasons, ["velocity_instrument_hour: 10 payments in the last hour"]);
        let heavy =
            RiskInput { amount: 600_000, user_recent: vec![(now - 1_000, 500_000)], known_payee: true, ..base.clone() };
        let assessed = assess(&config, &heavy);
        assert_eq!(assessed.decision, Decision::Review);
        assert!(assessed.reasons[0].starts_with("velocity_amount_hour"), "{:?}", assessed.reasons);
        let yesterday = RiskInput { user_recent: vec![(now - 2 * DAY_NS, 10); 300], ..base };
        assert_eq!(assess(&config, &yesterday).decision, Decision::Allow, "old payments do not count");
    }
}
