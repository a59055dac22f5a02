//! The `ledger.v1.Fx` gRPC service over the platform's [`Fx`].

use std::sync::Arc;

use ledger_core::money::{format_amount, parse_amount, parse_rate, Currency};
use ledger_proto::api::v1 as wire;
use tonic::{Request, Response, Status};

use ledger_platform::fx::{show, Fixed, Fx, QuoteState};
use ledger_platform::users::Users;

use super::status;
use super::users::Principal;
use crate::auth::Tokens;
use crate::convert;
use crate::metrics::Metrics;

pub struct FxService {
    pub fx: Arc<Fx>,
    pub users: Arc<Users>,
    pub tokens: Arc<Tokens>,
    pub metrics: Arc<Metrics>,
}

fn quote_wire(q: &QuoteState) -> wire::Quote {
    wire::Quote {
        quote_id: q.id.clone(),
        from_currency: q.from.code().into(),
        to_currency: q.to.code().into(),
        from_amount: show(q.amounts.from, q.from),
        to_amount: show(q.amounts.to, q.to),
        fee: show(q.amounts.fee, q.from),
        mid_rate: q.mid.normalize().to_string(),
        rate: q.amounts.rate.normalize().to_string(),
        spread_bps: q.spread_bps,
        expires_at_ns: q.expires_at,
        rates_used: q.rates_used.clone(),
    }
}

fn signed(minor: i128, currency: Currency) -> String {
    let text = format_amount(minor.unsigned_abs(), currency);
    if minor < 0 {
        format!("-{text}")
    } else {
        text
    }
}

fn minor(field: &str, text: &str, currency: Currency) -> Result<u64, Status> {
    let value = parse_amount(text, currency).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))?;
    u64::try_from(value).map_err(|_| Status::invalid_argument(format!("{field}: too large")))
}

impl FxService {
    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        Principal::of(&self.users, &self.tokens, request).await
    }

    async fn user<T>(&self, request: &Request<T>) -> Result<u128, Status> {
        self.principal(request).await?.user("quotes and conversions need a user's session")
    }

    async fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.principal(request).await?.admin()
    }

    fn rates(&self) -> wire::ListRatesResponse {
        let rates = self
            .fx
            .rates()
            .into_iter()
            .map(|(base, quote, rate, source, as_of_ns)| wire::Rate {
                base,
                quote,
                rate: rate.normalize().to_string(),
                source,
                as_of_ns,
            })
            .collect();
        wire::ListRatesResponse { rates }
    }
}

#[tonic::async_trait]
impl wire::fx_server::Fx for FxService {
    async fn set_rates(
        &self,
        request: Request<wire::SetRatesRequest>,
    ) -> Result<Response<wire::ListRatesResponse>, Status> {
        let result = async {
            self.admin(&request).await?;
            let mut rates = Vec::new();
            for (i, r) in request.into_inner().rates.into_iter().enumerate() {
                let base = convert::parse_currency(format!("rates[{i}].base"), &r.base)?;
                let quote = convert::parse_currency(format!("rates[{i}].quote"), &r.quote)?;
                let rate = parse_rate(&r.rate).map_err(|e| {
                    Status::invalid_argument(format!("rates[{i}].rate: {e} (a positive decimal such as 1.085)"))
                })?;
                rates.push((base, quote, rate, r.source));
            }
            self.fx.set_rates(rates).await.map_err(status::fx)?;
            Ok(self.rates())
        }
        .await;
        self.metrics.answer("Fx/SetRates", result)
    }

    async fn list_rates(
        &self,
        request: Request<wire::ListRatesRequest>,
    ) -> Result<Response<wire::ListRatesResponse>, Status> {
        let result = async {
            self.principal(&request).await?.reader()?;
            Ok(self.rates())
        }
        .await;
        self.metrics.answer("Fx/ListRates", result)
    }

    async fn get_quote(&self, request: Request<wire::GetQuoteRequest>) -> Result<Response<wire::Quote>, Status> {
        let result = async {
            let user = self.user(&request).await?;
            let r = request.get_ref();
            let from = convert::parse_currency("from_currency", &r.from_currency)?;
            let to = convert::parse_currency("to_currency", &r.to_currency)?;
            let fixed = match (r.from_amount.is_empty(), r.to_amount.is_empty()) {
                (false, true) => Fixed::Sell(minor("from_amount", &r.from_amount, from)?),
                (true, false) => Fixed::Receive(minor("to_amount", &r.to_amount, to)?),
                _ => return Err(Status::invalid_argument("give exactly one of from_amount and to_amount")),
            };
            Ok(quote_wire(&self.fx.quote(user, from, to, fixed).await.map_err(status::fx)?))
        }
        .await;
        self.metrics.answer("Fx/GetQuote", result)
    }

    async fn execute_quote(
        &self,
        request: Request<wire::ExecuteQuoteRequest>,
    ) -> Result<Response<wire::Conversion>, Status> {
        let result = async {
            let user = self.user(&request).await?;
            let r = request.get_ref();
            if r.quote_id.len() > 64 {
                return Err(Status::invalid_argument("quote_id: too long"));
            }
            let receiver = match (r.receiver_user_id.is_empty(), r.receiver_email.is_empty()) {
                (true, true) => user,
                (false, true) => convert::parse_u128("receiver_user_id", &r.receiver_user_id)?,
                (true, false) => self
                    .users
                    .find_by_email(&r.receiver_email)
                    .await
                    .map_err(status::users)?
                    .ok_or_else(|| Status::not_found("no user with that receiver_email"))?,
                _ => return Err(Status::invalid_argument("give at most one of receiver_user_id and receiver_email")),
            };
            if !self.users.exists(receiver).await.map_err(status::users)? {
                return Err(Status::not_found("receiver not found"));
            }
            let (quote, booked) = self.fx.execute(user, &r.quote_id, receiver).await.map_err(status::fx)?;
            Ok(wire::Conversion {
                quote: Some(quote_wire(&quote)),
                receiver_id: booked.receiver_id,
                transfer_ids: booked.transfer_ids,
            })
        }
        .await;
        self.metrics.answer("Fx/ExecuteQuote", result)
    }

    async fn get_position(
        &self,
        request: Request<wire::GetPositionRequest>,
    ) -> Result<Response<wire::Position>, Status> {
        let result = async {
            self.admin(&request).await?;
            let code = if request.get_ref().value_in.is_empty() { "USD" } else { request.get_ref().value_in.as_str() };
            let value_in = convert::parse_currency("value_in", code)?;
            let (positions, revenue, rates_used) = self.fx.position(value_in).await.map_err(status::fx)?;
            Ok(wire::Position {
                currencies: positions
                    .into_iter()
                    .map(|(c, position, revenue, fees)| wire::CurrencyPosition {
                        currency: c.code().into(),
                        position: signed(position, c),
                        fees: signed(fees, c),
                        revenue: signed(revenue, c),
                    })
                    .collect(),
                revenue: signed(revenue, value_in),
                revenue_currency: value_in.code().into(),
                rates_used,
            })
        }
        .await;
        self.metrics.answer("Fx/GetPosition", result)
    }
}
