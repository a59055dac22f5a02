//! Period reports: posted totals per day for any range and UTC offset.

use redb::ReadableDatabase;

use super::balances::net;
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
        let txn = self.db.begin_read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        let Some(view) = accounts.get(account)?.map(|v| decode_account(account, v.value())) else { return Ok(None) };
        let movements = txn.open_table(MOVEMENTS)?;
        let opening = match from_ns.checked_sub(1) {
            Some(before) => last_at_or_before(&movements, account, before)?.map_or(0, |m| net(&m.after)),
            None => 0,
        };
        // Local day of instant t: floor((t + offset) / day), in instants: the day that
        // starts at start(t) = floor((t + offset) / day) * day - offset.
        let offset_ns = i128::from(offset_minutes) * 60 * 1_000_000_000;
        let day_start = |t: u64| -> i128 {
            let local = i128::from(t) + offset_ns;
            local.div_euclid(i128::from(DAY_NS)) * i128::from(DAY_NS) - offset_ns
        };
        let mut days: Vec<ReportDay> = Vec::new();
        let mut totals = Totals::default();
        let mut balance = opening;
        let buckets = txn.open_table(BUCKETS)?;
        let mut rows = Vec::new();
        for row in buckets.range((account, from_ns / QUARTER_HOUR_NS)..(account, to_ns / QUARTER_HOUR_NS))? {
            let (key, value) = row?;
            rows.push((key.value().1 * QUARTER_HOUR_NS, decode_bucket(value.value())));
        }
        let mut rows = rows.into_iter().peekable();
        let mut day = day_start(from_ns);
        while day < i128::from(to_ns) {
            let next_day = day + i128::from(DAY_NS);
            let start_ns = u64::try_from(day.max(i128::from(from_ns))).unwrap_or(from_ns);
            let end_ns = u64::try_from(next_day.min(i128::from(to_ns))).unwrap_or(to_ns);
            let mut day_totals = Totals::default();
            while let Some((_, bucket)) = rows.next_if(|(at, _)| *at < end_ns) {
                day_totals.add(bucket);
            }
            let opening = balance;
            balance += day_totals.credits as i128 - day_totals.debits as i128;
            totals.add(day_totals);
            days.push(ReportDay { start_ns, opening, totals: day_totals, closing: balance });
            day = next_day;
        }
        Ok(Some(Report { account, currency: view.currency, opening, totals, closing: balance, days }))
    }
}
