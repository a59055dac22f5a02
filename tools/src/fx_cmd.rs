//! `ledgerctl fx`: rates (list, set, load from a file), quotes, conversions and the
//! platform's position.

use clap::Subcommand;
use ledger_proto::api::v1 as wire;
use serde_json::json;

use crate::client::{status_text, Connection};
use crate::present;

#[derive(Subcommand)]
pub enum FxCommand {
    /// The latest mid rate of every pair.
    Rates,
    /// Set mid rates (admin): `--rate EUR/USD=1.085` (repeatable) and/or `--file` with
    /// lines `base,quote,rate,source` (`#` comments).
    SetRates {
        /// One rate, BASE/QUOTE=RATE (repeatable).
        #[arg(long)]
        rate: Vec<String>,
        /// A CSV file of rates: base,quote,rate[,source] per line.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Where the rates come from, for the record.
        #[arg(long, default_value = "manual")]
        source: String,
    },
    /// A quote: sell --amount of FROM, or receive --receive of TO.
    Quote {
        /// The currency you sell (ISO 4217 code).
        from: String,
        /// The currency you get.
        to: String,
        /// How much FROM to sell, in major units ("100").
        #[arg(long, default_value = "", hide_default_value = true)]
        amount: String,
        /// Or how much TO to receive, in major units.
        #[arg(long, default_value = "", hide_default_value = true)]
        receive: String,
    },
    /// Execute a quote into your own wallet, or to --to-user / --to-email.
    Execute {
        /// The quote's id (from `fx quote`).
        quote_id: String,
        /// Pay the converted money to this user id.
        #[arg(long, default_value = "", hide_default_value = true)]
        to_user: String,
        /// Pay the converted money to this email address.
        #[arg(long, default_value = "", hide_default_value = true)]
        to_email: String,
    },
    /// The platform's position per currency and the spread earned (admin).
    Position {
        /// Value the revenue in this currency.
        #[arg(long, default_value = "USD")]
        value_in: String,
    },
}

fn parse_rate(text: &str, source: &str) -> Result<wire::Rate, String> {
    let bad = || format!("rate {text:?}: expected BASE/QUOTE=RATE");
    let (pair, rate) = text.split_once('=').ok_or_else(bad)?;
    let (base, quote) = pair.split_once('/').ok_or_else(bad)?;
    Ok(wire::Rate {
        base: base.trim().into(),
        quote: quote.trim().into(),
        rate: rate.trim().into(),
        source: source.into(),
        as_of_ns: 0,
    })
}

fn print_rates(rates: &[wire::Rate], json: bool, offset: i32) {
    if json {
        let items: Vec<_> = rates
            .iter()
            .map(|r| json!({"base": r.base, "quote": r.quote, "rate": r.rate, "source": r.source, "as_of_ns": r.as_of_ns}))
            .collect();
        outln!("{}", json!({ "rates": items }));
        return;
    }
    outln!("{:<9} {:>16} {:<12} AS_OF", "PAIR", "RATE", "SOURCE");
    for r in rates {
        let as_of = present::time_text(r.as_of_ns, offset);
        outln!("{:<9} {:>16} {:<12} {as_of}", format!("{}/{}", r.base, r.quote), r.rate, r.source);
    }
}

fn print_quote(q: &wire::Quote, json: bool, offset: i32) {
    if json {
        outln!(
            "{}",
            json!({"quote_id": q.quote_id, "from_currency": q.from_currency, "to_currency": q.to_currency,
                "from_amount": q.from_amount, "to_amount": q.to_amount, "fee": q.fee, "mid_rate": q.mid_rate,
                "rate": q.rate, "spread_bps": q.spread_bps, "expires_at_ns": q.expires_at_ns, "rates_used": q.rates_used})
        );
    } else {
        outln!(
            "quote {}: {} {} -> {} {} at {} (mid {}, spread {} bps), fee {} {}, expires at {}",
            q.quote_id,
            q.from_amount,
            q.from_currency,
            q.to_amount,
            q.to_currency,
            q.rate,
            q.mid_rate,
            q.spread_bps,
            q.fee,
            q.from_currency,
            present::time_text(q.expires_at_ns, offset)
        );
    }
}

pub async fn run(connection: &Connection, command: FxCommand) -> Result<bool, String> {
    let mut fx = wire::fx_client::FxClient::new(connection.channel().await?);
    let json = connection.json;
    let offset = connection.offset()?;
    match command {
        FxCommand::Rates => {
            let rates = fx.list_rates(connection.request(wire::ListRatesRequest {})?).await.map_err(status_text)?;
            print_rates(&rates.into_inner().rates, json, offset);
        }
        FxCommand::SetRates { rate, file, source } => {
            let mut rates = rate.iter().map(|r| parse_rate(r, &source)).collect::<Result<Vec<_>, _>>()?;
            if let Some(path) = file {
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
                    let [base, quote, rate, rest @ ..] = fields.as_slice() else {
                        return Err(format!("{}:{}: expected base,quote,rate[,source]", path.display(), n + 1));
                    };
                    let source = rest.first().copied().unwrap_or(source.as_str());
                    rates.push(wire::Rate {
                        base: (*base).into(),
                        quote: (*quote).into(),
                        rate: (*rate).into(),
                        source: source.into(),
                        as_of_ns: 0,
                    });
                }
            }
            let set = fx.set_rates(connection.request(wire::SetRatesRequest { rates })?).await.map_err(status_text)?;
            print_rates(&set.into_inner().rates, json, offset);
        }
        FxCommand::Quote { from, to, amount, receive } => {
            let request =
                wire::GetQuoteRequest { from_currency: from, to_currency: to, from_amount: amount, to_amount: receive };
            let quote = fx.get_quote(connection.request(request)?).await.map_err(status_text)?.into_inner();
            if connection.quiet {
                outln!("{}", quote.quote_id);
            } else {
                print_quote(&quote, json, offset);
            }
        }
        FxCommand::Execute { quote_id, to_user, to_email } => {
            let request = wire::ExecuteQuoteRequest { quote_id, receiver_user_id: to_user, receiver_email: to_email };
            let done = fx.execute_quote(connection.request(request)?).await.map_err(status_text)?.into_inner();
            if let Some(quote) = &done.quote {
                print_quote(quote, json, offset);
            }
            if !json {
                outln!("paid to user {}; ledger transfers {}", done.receiver_id, done.transfer_ids.join(", "));
            }
        }
        FxCommand::Position { value_in } => {
            let p = fx
                .get_position(connection.request(wire::GetPositionRequest { value_in })?)
                .await
                .map_err(status_text)?;
            let p = p.into_inner();
            if json {
                let items: Vec<_> = p
                    .currencies
                    .iter()
                    .map(|c| json!({"currency": c.currency, "position": c.position, "fees": c.fees}))
                    .collect();
                outln!(
                    "{}",
                    json!({"currencies": items, "revenue": p.revenue, "revenue_currency": p.revenue_currency, "rates_used": p.rates_used})
                );
            } else {
                outln!("{:<9} {:>24} {:>20} {:>20}", "CURRENCY", "POSITION", "SPREAD", "FEES");
                for c in &p.currencies {
                    let money = |amount: &str| format!("{amount} {}", c.currency);
                    outln!(
                        "{:<9} {:>24} {:>20} {:>20}",
                        c.currency,
                        money(&c.position),
                        money(&c.revenue),
                        money(&c.fees)
                    );
                }
                outln!("spread earned: {} {} (at {})", p.revenue, p.revenue_currency, p.rates_used.join("; "));
            }
        }
    }
    Ok(true)
}
