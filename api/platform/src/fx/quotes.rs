//! Quotes are durable: each one given is a `QuoteGiven` event on `fx-quotes`, appended
//! before the quote is answered, so a restart keeps every live quote until it expires.
//!
//! - At start only the quotes that can still be live are read: the stream is read
//!   backwards from its end and reading stops at quotes older than [`QUOTE_TTL_MAX`]
//!   (plus a minute, as concurrent appends may land slightly out of time order), so a
//!   start costs what an hour of quotes holds, never the whole history.
//! - What a live quote was used for is found from the rest of the log: the conversions
//!   booked (`fx-conversions`) mark it executed, and the payments rebuilt at start mark
//!   the ones a payment took ([`super::Fx::taken_by`]).
//! - Converting at most once does not rest on that memory alone: the conversion's ledger
//!   transfers have ids derived from the quote (`booking`), so a second booking of one
//!   quote, from a payment or an execution, is answered by the ledger as existing.
//! - In memory, quotes are forgotten once expired (swept each time the map has doubled,
//!   from [`QUOTES_SWEEP_MIN`]): at most [`QUOTES_LIVE_MAX`] are kept, and a new quote
//!   past that is refused as busy until older ones expire. Executing a quote again
//!   answers the same conversion while the quote is live; after, it is unknown.

use std::str::FromStr;

use ledger_core::money::Currency;
use ledger_proto::events::v1 as ev;
use prost::Message;
use rust_decimal::Decimal;

use super::{Amounts, FxError, QuoteState};
use crate::engine::{Direction, EventStore};

pub const QUOTES_STREAM: &str = "fx-quotes";
/// The longest a quote may stay live (`--fx-quote-ttl-secs` is at most this).
pub const QUOTE_TTL_MAX_SECS: u64 = 3_600;
const QUOTE_TTL_MAX_NS: u64 = QUOTE_TTL_MAX_SECS * 1_000_000_000;
/// Live quotes kept in memory at once (a few hundred bytes each).
pub const QUOTES_LIVE_MAX: usize = 1_000_000;
/// Quotes in memory below which expired ones are not swept.
pub const QUOTES_SWEEP_MIN: usize = 10_000;
/// How far out of time order concurrent appends may land in the stream.
const ORDER_SLACK_NS: u64 = 60 * 1_000_000_000;
/// Events read at a time at start.
const LOAD_PAGE_EVENTS: usize = 1_024;

impl QuoteState {
    pub(super) fn given(&self) -> ev::QuoteGiven {
        ev::QuoteGiven {
            quote_id: self.id.clone(),
            user_id: self.user.to_string(),
            from_currency: self.from.code().into(),
            to_currency: self.to.code().into(),
            from_amount: self.amounts.from,
            to_amount: self.amounts.to,
            fee: self.amounts.fee,
            rate: self.amounts.rate.normalize().to_string(),
            spread: self.amounts.spread,
            mid_rate: self.mid.normalize().to_string(),
            spread_bps: self.spread_bps,
            rates_used: self.rates_used.clone(),
            quoted_at_ns: self.quoted_at,
            expires_at_ns: self.expires_at,
        }
    }

    /// The quote a `QuoteGiven` event records; a field that does not parse is corrupt.
    fn from_given(given: ev::QuoteGiven) -> Result<QuoteState, FxError> {
        let corrupt = |field: &str| FxError::Corrupt(format!("{QUOTES_STREAM}: quote {}: bad {field}", given.quote_id));
        let currency = |code: &str, field: &str| Currency::parse(code).map_err(|_| corrupt(field));
        let decimal = |text: &str, field: &str| Decimal::from_str(text).map_err(|_| corrupt(field));
        Ok(QuoteState {
            id: given.quote_id.clone(),
            user: given.user_id.parse().map_err(|_| corrupt("user_id"))?,
            from: currency(&given.from_currency, "from_currency")?,
            to: currency(&given.to_currency, "to_currency")?,
            amounts: Amounts {
                from: given.from_amount,
                to: given.to_amount,
                fee: given.fee,
                rate: decimal(&given.rate, "rate")?,
                spread: given.spread,
            },
            mid: decimal(&given.mid_rate, "mid_rate")?,
            spread_bps: given.spread_bps,
            quoted_at: given.quoted_at_ns,
            expires_at: given.expires_at_ns,
            rates_used: given.rates_used,
            executed: None,
            used_by: None,
        })
    }
}

/// The quotes on `fx-quotes` still live at `now_ns`, newest first.
pub(super) fn load_live(store: &dyn EventStore, now_ns: u64) -> Result<Vec<QuoteState>, FxError> {
    let Some(head) = store.stream_head(QUOTES_STREAM)? else { return Ok(Vec::new()) };
    let oldest_live = now_ns.saturating_sub(QUOTE_TTL_MAX_NS + ORDER_SLACK_NS);
    let mut live = Vec::new();
    let mut from = head.revision;
    loop {
        let records = store.read_stream(QUOTES_STREAM, from, Direction::Backwards, LOAD_PAGE_EVENTS)?;
        for record in &records {
            let event = ev::FxEvent::decode(record.payload.as_slice())
                .map_err(|e| FxError::Corrupt(format!("{QUOTES_STREAM} revision {}: {e}", record.revision)))?;
            let Some(ev::fx_event::Kind::QuoteGiven(given)) = event.kind else {
                return Err(FxError::Corrupt(format!("{QUOTES_STREAM} revision {}: not a quote", record.revision)));
            };
            if given.quoted_at_ns < oldest_live {
                return Ok(live);
            }
            let quote = QuoteState::from_given(given)?;
            if quote.expires_at >= now_ns {
                live.push(quote);
            }
        }
        match records.last() {
            Some(last) if last.revision > 0 => from = last.revision - 1,
            _ => return Ok(live),
        }
    }
}
