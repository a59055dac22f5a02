//! Period reports of the ledger over HTTP (`GET /ledger/reports`), for role tokens and
//! for a user's own accounts, over `ledger.v1.Ledger/GetReport`; amounts in minor units
//! as in the rest of the ledger routes (`ledger.rs`).

use axum::extract::State as Shared;
use axum::Json;
use ledger_proto::api::v1 as wire;
use ledger_proto::api::v1::ledger_server::Ledger as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, Params};
use super::ledger::{or_empty, renamed};
use super::time::{parse_rfc3339, rfc3339};
use super::{call, State};

/// Whose report, over which period.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Exactly one of `account_id` and `owner_id` (a report per account of the owner).
    pub account_id: Option<String>,
    pub owner_id: Option<String>,
    /// RFC 3339, a whole quarter hour: the period's start.
    pub from: String,
    /// RFC 3339, a whole quarter hour: the period's end (excluded), at most 3700 days after `from`.
    pub to: String,
    /// Days run from midnight to midnight at this offset from UTC, in minutes (whole
    /// quarter hours within 18 hours either way); default 0.
    pub utc_offset_minutes: Option<String>,
    /// Also total every account in this currency at the period's mid rates.
    pub convert_to: Option<String>,
}

/// One day of a report (minor units; balances are net posted, credits minus debits).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerReportDay {
    /// The day's first instant within the report.
    pub start: String,
    pub opening: String,
    /// Posted credits (money in).
    pub credits: String,
    /// Posted debits (money out).
    pub debits: String,
    /// Posted movements.
    pub count: u64,
    pub closing: String,
}

/// An account's totals over the period (minor units, signed decimal strings).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerAccountReport {
    pub account_id: String,
    pub currency: String,
    pub opening: String,
    pub credits: String,
    pub debits: String,
    pub count: u64,
    pub closing: String,
    pub days: Vec<LedgerReportDay>,
}

/// Every report valued in one currency (minor units of `currency`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerConvertedTotals {
    pub currency: String,
    pub opening: String,
    pub credits: String,
    pub debits: String,
    pub closing: String,
    pub rates_used: Vec<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct LedgerReport {
    pub reports: Vec<LedgerAccountReport>,
    pub converted: Option<LedgerConvertedTotals>,
}

/// Posted totals over a period, day by day in a UTC offset's days, per account. Who
/// may ask is as for `GET /ledger/history`.
#[utoipa::path(get, path = "/ledger/reports", operation_id = "ledger_reports", tag = "ledger", security(("bearer" = [])),
    params(ReportQuery),
    responses((status = 200, body = LedgerReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "An owner with more than 1,000 accounts: ask per account"), (status = 422, body = ErrorBody)))]
pub async fn reports(
    Shared(state): Shared<State>,
    caller: Caller,
    Params(q): Params<ReportQuery>,
) -> Result<Json<LedgerReport>, ApiError> {
    let utc_offset_minutes = match q.utc_offset_minutes.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<i32>()
            .map_err(|_| ApiError::invalid("utc_offset_minutes", "a whole number of minutes, e.g. 60 or -330"))?,
    };
    let request = caller.grpc(wire::GetReportRequest {
        account_id: or_empty(q.account_id),
        owner_id: or_empty(q.owner_id),
        from_ns: parse_rfc3339("from", &q.from)?,
        to_ns: parse_rfc3339("to", &q.to)?,
        utc_offset_minutes,
        min_position: 0,
        convert_to: or_empty(q.convert_to),
    });
    let answer = call(state.ledger.get_report(request))
        .await
        .map_err(|e| renamed(e, &[("to_ns", "to"), ("from_ns", "from")]))?;
    Ok(Json(LedgerReport {
        reports: answer
            .reports
            .into_iter()
            .map(|r| LedgerAccountReport {
                account_id: r.account_id,
                currency: r.currency,
                opening: r.opening,
                credits: r.credits,
                debits: r.debits,
                count: r.count,
                closing: r.closing,
                days: r
                    .days
                    .into_iter()
                    .map(|d| LedgerReportDay {
                        start: rfc3339(d.start_ns),
                        opening: d.opening,
                        credits: d.credits,
                        debits: d.debits,
                        count: d.count,
                        closing: d.closing,
                    })
                    .collect(),
            })
            .collect(),
        converted: answer.converted.map(|c| LedgerConvertedTotals {
            currency: c.currency,
            opening: c.opening,
            credits: c.credits,
            debits: c.debits,
            closing: c.closing,
            rates_used: c.rates_used,
        }),
    }))
}
