//! Period reports: posted totals per day for any range and UTC offset.

use redb::ReadableDatabase;

use super::balances::net;
use super::error::ReadModelError;
use super::history::last_at_or_before;
use super::model::{Report, ReportDay, Totals};
use super::rows::{decode_account, decode_bucket, ACCOUNTS, BUCKETS, MOVEMENTS};
use super::{ProjectionError, ReadModels, DAY_NS, QUARTER_HOUR_NS, REPORT_DAYS_MAX};

impl ReadModels {
    /// The report of `account` over `[from_ns, to_ns)`, in days that start at midnight
    /// of UTC offset `offset_minutes`. `from_ns` and `to_ns` must be on quarter hours,
    /// the offset a whole number of quarter hours within ±18 h.
    pub fn report(
        &self,
        account: u128,
        from_ns: u64,
        to_ns: u64,
        offset_minutes: i32,
    ) -> Result<Option<Report>, ProjectionError> {
        check_range(from_ns, to_ns, offset_minutes)?;
        self.guarded(|| {
            let txn = self.db.begin_read()?;
            let accounts = txn.open_table(ACCOUNTS)?;
            let Some(row) = accounts.get(account)? else { return Ok(None) };
            let view = decode_account(account, row.value())?;
            let movements = txn.open_table(MOVEMENTS)?;
            let opening = match from_ns.checked_sub(1) {
                // No movement before the range: the account started from zero.
                Some(before) => match last_at_or_before(&movements, account, before)? {
                    Some(last) => net(&last.after)?,
                    None => 0,
                },
                None => 0,
            };
            let buckets = txn.open_table(BUCKETS)?;
            let mut rows = Vec::new();
            for row in buckets.range((account, from_ns / QUARTER_HOUR_NS)..(account, to_ns / QUARTER_HOUR_NS))? {
                let (key, value) = row?;
                let key = key.value();
                // Below `to_ns / QUARTER_HOUR_NS`, so the product stays below `to_ns`.
                rows.push((key.1 * QUARTER_HOUR_NS, decode_bucket(key, value.value())?));
            }
            let (days, totals, closing) = days(from_ns, to_ns, offset_minutes, opening, rows)?;
            Ok(Some(Report { account, currency: view.currency, opening, totals, closing, days }))
        })
    }
}

fn check_range(from_ns: u64, to_ns: u64, offset_minutes: i32) -> Result<(), ProjectionError> {
    if !from_ns.is_multiple_of(QUARTER_HOUR_NS) || !to_ns.is_multiple_of(QUARTER_HOUR_NS) {
        return Err(ProjectionError::Invalid("from and to must be whole quarter hours".into()));
    }
    if to_ns <= from_ns {
        return Err(ProjectionError::Invalid("to must be after from".into()));
    }
    if offset_minutes % 15 != 0 || offset_minutes.abs() > 18 * 60 {
        return Err(ProjectionError::Invalid("the UTC offset must be whole quarter hours within ±18:00".into()));
    }
    if (to_ns - from_ns) / DAY_NS > REPORT_DAYS_MAX {
        return Err(ProjectionError::Invalid(format!("a report covers at most {REPORT_DAYS_MAX} days")));
    }
    Ok(())
}

/// The report's days from its quarter-hour buckets (start instant, totals; in time
/// order): the days, the period's totals and its closing balance.
fn days(
    from_ns: u64,
    to_ns: u64,
    offset_minutes: i32,
    opening: i128,
    buckets: Vec<(u64, Totals)>,
) -> Result<(Vec<ReportDay>, Totals, i128), ReadModelError> {
    // Local day of instant t: floor((t + offset) / day), in instants: the day that
    // starts at start(t) = floor((t + offset) / day) * day - offset.
    let offset_ns = i128::from(offset_minutes) * 60 * 1_000_000_000;
    let day_start = |t: u64| -> i128 {
        let local = i128::from(t) + offset_ns;
        local.div_euclid(i128::from(DAY_NS)) * i128::from(DAY_NS) - offset_ns
    };
    // Days are clipped to `[from_ns, to_ns)`, so their bounds always fit a u64; the
    // error is for a mistake in the arithmetic above, never a made-up bound.
    let instant = |ns: i128| {
        u64::try_from(ns).map_err(|_| ReadModelError::Overflow { what: format!("report day bound {ns} ns") })
    };
    let signed = |value: u128| {
        i128::try_from(value).map_err(|_| ReadModelError::Overflow { what: format!("a day's total of {value}") })
    };
    let mut days: Vec<ReportDay> = Vec::new();
    let mut totals = Totals::default();
    let mut balance = opening;
    let mut buckets = buckets.into_iter().peekable();
    let mut day = day_start(from_ns);
    while day < i128::from(to_ns) {
        let next_day = day + i128::from(DAY_NS);
        let start_ns = instant(day.max(i128::from(from_ns)))?;
        let end_ns = instant(next_day.min(i128::from(to_ns)))?;
        let mut day_totals = Totals::default();
        while let Some((_, bucket)) = buckets.next_if(|(at, _)| *at < end_ns) {
            day_totals.add(bucket)?;
        }
        let opening = balance;
        balance = signed(day_totals.credits)?
            .checked_sub(signed(day_totals.debits)?)
            .and_then(|change| balance.checked_add(change))
            .ok_or_else(|| ReadModelError::Overflow { what: "a closing balance".into() })?;
        totals.add(day_totals)?;
        days.push(ReportDay { start_ns, opening, totals: day_totals, closing: balance });
        day = next_day;
    }
    Ok((days, totals, balance))
}
