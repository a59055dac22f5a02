//! `Payments.GetStatement`: a user's monthly statement per wallet, assembled from the
//! read models (the wallet's balances as of the month's edges and its movements in
//! the month, oldest first) and the payments' data (kind, counterparty, note, FX).
//!
//! A line is one posted movement of the wallet: what it added to the posted credits is
//! money in, to the posted debits money out, or a fee when the other account is the
//! platform's fee account. Holds (pending) move no posted money and make no line; a
//! hold posted later makes its line then. The statement is checked to add up
//! (opening + in - out - fees = closing, the closing as the read models hold it)
//! before it is answered.

use std::collections::HashMap;
use std::time::Duration;

use ledger_core::calendar::days_from_civil;
use ledger_core::money::Currency;
use ledger_platform::chart::platform_account;
use ledger_platform::payments::TransferContext;
use ledger_proto::api::v1 as wire;
use projections::read_models::{Balances, HistoryFilter, Movement};
use tonic::{Request, Status};

use super::payments::PaymentsService;
use super::status;
use super::users::Principal;
use crate::auth::Role;
use crate::convert;
use crate::service::model_status;

/// Most movements in one statement (one wallet, one month); a month with more is
/// refused with RESOURCE_EXHAUSTED (use `Ledger.GetHistory`'s pages instead).
pub const STATEMENT_MOVEMENTS_MAX: usize = 10_000;
/// Movements read from the read models per page while a statement is assembled.
const STATEMENT_PAGE_MOVEMENTS: usize = 1_000;
/// How long a statement waits for the read models to reach the log's head.
const READ_MODEL_WAIT: Duration = Duration::from_secs(5);
const NS_PER_SECOND: i128 = 1_000_000_000;

/// `[from_ns, to_ns)` of calendar month "YYYY-MM" at `offset_minutes` east of UTC.
pub fn month_range(month: &str, offset_minutes: i32) -> Result<(u64, u64), Status> {
    let invalid = |why: &str| Status::invalid_argument(format!("month: {why}"));
    let (year, number) = month.split_once('-').ok_or_else(|| invalid("YYYY-MM, for example 2026-11"))?;
    if year.len() != 4 || number.len() != 2 || !(year.bytes().chain(number.bytes())).all(|b| b.is_ascii_digit()) {
        return Err(invalid("YYYY-MM, for example 2026-11"));
    }
    let (year, number): (i64, i64) =
        (year.parse().map_err(|_| invalid("bad year"))?, number.parse().map_err(|_| invalid("bad month"))?);
    if !(1..=12).contains(&number) || year < 1970 {
        return Err(invalid("a month from 1970-01 on, 01 to 12"));
    }
    if offset_minutes % 15 != 0 || offset_minutes.abs() > 18 * 60 {
        return Err(Status::invalid_argument(
            "utc_offset_minutes: a whole number of quarter hours within 18 hours either way",
        ));
    }
    let (next_year, next_month) = if number == 12 { (year + 1, 1) } else { (year, number + 1) };
    let edge = |y: i64, m: i64| -> Result<u64, Status> {
        let seconds = i128::from(days_from_civil(y, m, 1)) * 86_400 - i128::from(offset_minutes) * 60;
        u64::try_from(seconds * NS_PER_SECOND).map_err(|_| invalid("outside the range of the ledger's clock"))
    };
    let from = edge(year, number)?;
    if from == 0 {
        return Err(invalid("outside the range of the ledger's clock"));
    }
    Ok((from, edge(next_year, next_month)?))
}

fn net(balances: &Balances) -> Result<i128, Status> {
    projections::read_models::net(balances).map_err(|e| model_status(e.into()))
}

/// What one wallet's statement is built from.
struct Wallet {
    user: u128,
    account: u128,
    currency: Currency,
}

impl PaymentsService {
    pub(super) async fn statement(
        &self,
        request: Request<wire::GetStatementRequest>,
    ) -> Result<wire::GetStatementResponse, Status> {
        let principal = Principal::of(&self.users, &self.tokens, &request).await?;
        let r = request.into_inner();
        let user = match principal {
            Principal::User(user) if r.user_id.is_empty() => user,
            Principal::User(user) if convert::parse_u128("user_id", &r.user_id)? == user => user,
            Principal::User(_) => return Err(Status::permission_denied("a user reads only their own statement")),
            Principal::Role(Role::Admin) if r.user_id.is_empty() => {
                return Err(Status::invalid_argument("user_id: whose statement (an admin names the user)"))
            }
            Principal::Role(Role::Admin) => convert::parse_u128("user_id", &r.user_id)?,
            Principal::Role(role) => return Err(Status::permission_denied(format!("role {role:?} may not do this"))),
        };
        let (from_ns, to_ns) = month_range(&r.month, r.utc_offset_minutes)?;
        let only: Option<Currency> = match r.currency.as_str() {
            "" => None,
            code => Some(convert::parse_currency("currency", code)?),
        };
        let holder = self.users.party(user).await.map_err(status::users)?;
        let mut wallets: Vec<Wallet> = self
            .users
            .wallets(user)
            .await
            .map_err(status::users)?
            .into_iter()
            .filter(|w| only.is_none_or(|c| c == w.currency))
            .map(|w| Wallet { user, account: w.account_id, currency: w.currency })
            .collect();
        wallets.sort_by(|a, b| a.currency.code().cmp(b.currency.code()));
        if wallets.is_empty() {
            return Err(Status::not_found(match only {
                Some(c) => format!("the user has no {} wallet", c.code()),
                None => "the user has no wallet".to_string(),
            }));
        }
        self.read_your_writes().await?;
        let mut statements = Vec::with_capacity(wallets.len());
        for wallet in wallets {
            let mut statement = self.wallet_statement(&wallet, from_ns, to_ns).await?;
            statement.holder_name = holder.name.clone();
            statement.month = r.month.clone();
            statement.utc_offset_minutes = r.utc_offset_minutes;
            statements.push(statement);
        }
        Ok(wire::GetStatementResponse { statements })
    }

    /// Waits until the read models include everything durable when the call came in.
    async fn read_your_writes(&self) -> Result<(), Status> {
        let head = *self.store.watch_head().borrow();
        if !self.projector.wait_for(head, READ_MODEL_WAIT).await {
            return Err(Status::unavailable("the read models are behind the log; retry"));
        }
        Ok(())
    }

    /// The wallet's posted movements in `[from_ns, to_ns)`, oldest first, at most
    /// [`STATEMENT_MOVEMENTS_MAX`].
    fn month_movements(&self, account: u128, from_ns: u64, to_ns: u64) -> Result<Vec<Movement>, Status> {
        let filter = HistoryFilter { from_ns, to_ns, ..HistoryFilter::default() };
        let (mut movements, mut cursor) = (Vec::new(), None);
        loop {
            let page = self
                .projector
                .models()
                .movements_oldest_first(account, &filter, cursor, STATEMENT_PAGE_MOVEMENTS)
                .map_err(model_status)?;
            movements.extend(page.movements);
            if movements.len() > STATEMENT_MOVEMENTS_MAX {
                return Err(Status::resource_exhausted(format!(
                    "more than {STATEMENT_MOVEMENTS_MAX} movements in the month: read them with Ledger.GetHistory"
                )));
            }
            match page.next {
                Some(next) => cursor = Some(next.timestamp_ns),
                None => return Ok(movements),
            }
        }
    }

    async fn wallet_statement(&self, wallet: &Wallet, from_ns: u64, to_ns: u64) -> Result<wire::Statement, Status> {
        let models = self.projector.models();
        // Not open yet at an edge: nothing on it then.
        let opening =
            models.balances_as_of(wallet.account, Some(from_ns - 1)).map_err(model_status)?.unwrap_or_default();
        let closing = models.balances_as_of(wallet.account, Some(to_ns - 1)).map_err(model_status)?.unwrap_or_default();
        let fee_account = platform_account("fee", wallet.currency);
        let (mut previous, mut lines) = (opening, Vec::new());
        let (mut money_in, mut money_out, mut fees) = (0u128, 0u128, 0u128);
        let mut contexts: HashMap<String, Option<TransferContext>> = HashMap::new();
        for movement in self.month_movements(wallet.account, from_ns, to_ns)? {
            let after = movement.after;
            let added = |now: u128, before: u128| {
                now.checked_sub(before).ok_or_else(|| Status::internal("read model: posted balances went down"))
            };
            let (credit, debit) = (
                added(after.credits_posted, previous.credits_posted)?,
                added(after.debits_posted, previous.debits_posted)?,
            );
            previous = after;
            if credit == 0 && debit == 0 {
                continue;
            }
            let context = match contexts.get(&movement.metadata) {
                Some(known) => known.clone(),
                None => {
                    let found = self
                        .payments
                        .transfer_context(wallet.user, &movement.metadata)
                        .await
                        .map_err(status::payments)?;
                    contexts.insert(movement.metadata.clone(), found.clone());
                    found
                }
            };
            let is_fee = movement.counterparty == fee_account;
            let (line_in, line_out, line_fee) = if is_fee { (credit, 0, debit) } else { (credit, debit, 0) };
            money_in += line_in;
            money_out += line_out;
            fees += line_fee;
            lines.push(line(wallet, &movement, context.as_ref(), (line_in, line_out, line_fee), is_fee, net(&after)?));
        }
        let (opening, closing) = (net(&opening)?, net(&closing)?);
        let total = |v: u128| i128::try_from(v).map_err(|_| Status::internal("statement total out of range"));
        if opening + total(money_in)? - total(money_out)? - total(fees)? != closing {
            tracing::error!(account = %wallet.account, "a statement did not add up; refused");
            return Err(Status::internal("the statement does not add up: rebuild the read models from the log"));
        }
        Ok(wire::Statement {
            user_id: wallet.user.to_string(),
            account_id: wallet.account.to_string(),
            currency: wallet.currency.code().into(),
            from_ns,
            to_ns,
            opening: opening.to_string(),
            money_in: money_in.to_string(),
            money_out: money_out.to_string(),
            fees: fees.to_string(),
            closing: closing.to_string(),
            lines,
            ..wire::Statement::default()
        })
    }
}

/// A statement line: the kind from the payment and the side, the other party's name,
/// the note, and for a conversion the rate and the other side's amount.
fn line(
    wallet: &Wallet,
    movement: &Movement,
    context: Option<&TransferContext>,
    (amount_in, amount_out, fee): (u128, u128, u128),
    is_fee: bool,
    balance: i128,
) -> wire::StatementLine {
    let incoming = amount_in > 0;
    let kind = match context.map(|c| c.kind) {
        _ if is_fee => "fee",
        Some("top_up") => "top_up",
        Some("withdrawal") => "withdrawal",
        Some("refund") if incoming => "refund_received",
        Some("refund") => "refund_sent",
        Some("conversion") => "conversion",
        Some(_) if incoming => "payment_received",
        Some(_) => "payment_sent",
        None => "transfer",
    };
    let fx = context.and_then(|c| c.fx.as_ref());
    let other = fx.map(|fx| if wallet.currency == fx.from { (fx.to, fx.to_amount) } else { (fx.from, fx.from_amount) });
    wire::StatementLine {
        at_ns: movement.timestamp_ns,
        payment_id: context.and_then(|c| c.payment_id).map_or(String::new(), |id| id.to_string()),
        transfer_id: movement.transfer_id.to_string(),
        kind: kind.into(),
        counterparty_name: context.map_or(String::new(), |c| c.counterparty.clone()),
        note: context.map_or(String::new(), |c| c.note.clone()),
        amount_in: amount_in.to_string(),
        amount_out: amount_out.to_string(),
        fee: fee.to_string(),
        balance: balance.to_string(),
        fx_rate: fx.map_or(String::new(), |fx| fx.rate.clone()),
        fx_other_amount: other.map_or(String::new(), |(_, minor)| minor.to_string()),
        fx_other_currency: other.map_or(String::new(), |(c, _)| c.code().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months_at_the_offset() {
        let (from, to) = month_range("2026-11", 0).expect("month");
        assert_eq!(from, 1_793_491_200 * 1_000_000_000, "2026-11-01T00:00:00Z");
        assert_eq!(to, 1_796_083_200 * 1_000_000_000, "2026-12-01T00:00:00Z");
        let (from_plus_one, _) = month_range("2026-11", 60).expect("month");
        assert_eq!(from - from_plus_one, 3_600 * 1_000_000_000, "midnight at +01:00 is an hour earlier in UTC");
        let (_, december_end) = month_range("2026-12", 0).expect("december");
        assert_eq!(december_end, 1_798_761_600 * 1_000_000_000, "2027-01-01T00:00:00Z");
        for bad in ["2026-13", "2026-00", "26-11", "2026/11", "1969-12", "", "2026-1", "２０２６-11"] {
            assert_eq!(month_range(bad, 0).expect_err(bad).code(), tonic::Code::InvalidArgument, "{bad}");
        }
        assert_eq!(month_range("1970-01", 60).expect_err("before 0").code(), tonic::Code::InvalidArgument);
        assert_eq!(month_range("2026-11", 7).expect_err("offset").code(), tonic::Code::InvalidArgument);
        assert_eq!(month_range("2026-11", 19 * 60).expect_err("offset").code(), tonic::Code::InvalidArgument);
    }
}
