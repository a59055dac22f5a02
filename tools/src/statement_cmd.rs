//! `ledgerctl statement`: a user's monthly statement per wallet currency
//! (`Payments.GetStatement`), as a table, CSV, JSON or a self-contained HTML page with
//! a chart of the balance over the month (inline SVG: no external assets, no script).
//!
//! Figures are shown in major units with the currency ("849.50 USD"); JSON also
//! carries each figure in minor units (`*_minor`, integers). Times are RFC 3339 at the
//! statement's offset.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ledger_core::money::{format_amount, Currency};
use ledger_proto::api::v1 as wire;
use serde_json::json;

use crate::client::{status_text, Connection};
use crate::present;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Html,
    Pdf,
}

#[derive(Args)]
pub struct StatementArgs {
    /// The calendar month, YYYY-MM (at --utc-offset) [default: this month].
    #[arg(long)]
    month: Option<String>,
    /// One wallet's currency; without it, every wallet of the user.
    #[arg(long, default_value = "", hide_default_value = true)]
    currency: String,
    /// table (the default), csv, json, html (a page with a balance chart to open in a
    /// browser) or pdf (the same, to print or file; use --out).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Whose statement (admin token only); a session reads its own.
    #[arg(long, default_value = "")]
    user: String,
}

pub async fn run(connection: &Connection, args: StatementArgs) -> Result<bool, String> {
    let offset = connection.offset()?;
    let month = match args.month {
        Some(month) => month,
        // This month in the offset's calendar: the first seven characters of today's date.
        None => present::date_of(present::now_ns()?, offset)[..7].to_string(),
    };
    let format = if connection.json { Format::Json } else { args.format };
    let mut payments = wire::payments_client::PaymentsClient::new(connection.channel().await?);
    let request =
        wire::GetStatementRequest { month, currency: args.currency, utc_offset_minutes: offset, user_id: args.user };
    let response = payments.get_statement(connection.request(request)?).await.map_err(status_text)?.into_inner();
    let statements: Vec<Shown> = response.statements.iter().map(Shown::of).collect::<Result<_, _>>()?;
    let text = match format {
        Format::Table => table(&statements),
        Format::Csv => csv(&statements),
        Format::Json => json_text(&statements)?,
        Format::Html => html(&statements),
        Format::Pdf => pdf::pdf(&statements),
    };
    match args.out {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| format!("--out {}: {e}", path.display()))?;
            eprintln!("statement written to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(true)
}

#[path = "statement_pdf.rs"]
mod pdf;

/// A statement with its figures parsed: the server's minor-unit strings must be numbers.
struct Shown<'a> {
    s: &'a wire::Statement,
    currency: Currency,
    opening: i128,
    money_in: i128,
    money_out: i128,
    fees: i128,
    closing: i128,
    lines: Vec<Line<'a>>,
}

struct Line<'a> {
    l: &'a wire::StatementLine,
    amount_in: i128,
    amount_out: i128,
    fee: i128,
    balance: i128,
    /// The other side of a conversion: amount and currency.
    other: Option<(i128, Currency)>,
}

fn minor(what: &str, text: &str) -> Result<i128, String> {
    text.parse().map_err(|_| format!("the server sent {what} {text:?}, not an amount in minor units"))
}

impl<'a> Shown<'a> {
    fn of(s: &'a wire::Statement) -> Result<Shown<'a>, String> {
        let currency =
            Currency::parse(&s.currency).map_err(|e| format!("the server sent currency {:?}: {e}", s.currency))?;
        let lines = s
            .lines
            .iter()
            .map(|l| {
                let other = if l.fx_other_currency.is_empty() {
                    None
                } else {
                    let c = Currency::parse(&l.fx_other_currency).map_err(|e| format!("fx currency: {e}"))?;
                    Some((minor("fx_other_amount", &l.fx_other_amount)?, c))
                };
                Ok(Line {
                    l,
                    amount_in: minor("amount_in", &l.amount_in)?,
                    amount_out: minor("amount_out", &l.amount_out)?,
                    fee: minor("fee", &l.fee)?,
                    balance: minor("balance", &l.balance)?,
                    other,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Shown {
            s,
            currency,
            opening: minor("opening", &s.opening)?,
            money_in: minor("money_in", &s.money_in)?,
            money_out: minor("money_out", &s.money_out)?,
            fees: minor("fees", &s.fees)?,
            closing: minor("closing", &s.closing)?,
            lines,
        })
    }

    fn money(&self, minor: i128) -> String {
        money(minor, self.currency)
    }

    /// The balance over the month for a chart: the opening at the month's start, each
    /// line's balance from its time on, the closing at its end; and the scale's low
    /// (zero or below) and high (above the low) ends.
    fn balance_points(&self) -> (Vec<(u64, i128)>, i128, i128) {
        let mut points: Vec<(u64, i128)> = vec![(self.s.from_ns, self.opening)];
        points.extend(self.lines.iter().map(|l| (l.l.at_ns, l.balance)));
        points.push((self.s.to_ns, self.closing));
        let low = points.iter().map(|p| p.1).min().unwrap_or(0).min(0);
        let high = points.iter().map(|p| p.1).max().unwrap_or(0).max(low + 1);
        (points, low, high)
    }
}

/// "849.50 USD", "-3.00 USD".
pub fn money(minor: i128, currency: Currency) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{} {}", format_amount(minor.unsigned_abs(), currency), currency.code())
}

fn fx_text(line: &Line<'_>) -> String {
    match line.other {
        Some((amount, currency)) => format!("{} at {}", money(amount, currency), line.l.fx_rate),
        None => String::new(),
    }
}

/// Shown only when not zero.
fn cell(shown: &Shown<'_>, minor: i128) -> String {
    if minor == 0 {
        String::new()
    } else {
        shown.money(minor)
    }
}

fn table(statements: &[Shown<'_>]) -> String {
    let mut out = String::new();
    for shown in statements {
        let s = shown.s;
        let offset = s.utc_offset_minutes;
        let _ = writeln!(
            out,
            "Statement {} for {} (user {}), {} wallet {}",
            s.month, s.holder_name, s.user_id, s.currency, s.account_id
        );
        let _ =
            writeln!(out, "From {} to {}", present::time_text(s.from_ns, offset), present::time_text(s.to_ns, offset));
        let _ = writeln!(out, "Opening balance {}", shown.money(shown.opening));
        let _ = writeln!(
            out,
            "{:<25} {:<40} {:<40} {:<16} {:<20} {:<24} {:>16} {:>16} {:>12} {:>16} FX",
            "TIME", "PAYMENT", "TRANSFER", "KIND", "COUNTERPARTY", "NOTE", "IN", "OUT", "FEE", "BALANCE"
        );
        for line in &shown.lines {
            let l = line.l;
            let _ = writeln!(
                out,
                "{:<25} {:<40} {:<40} {:<16} {:<20} {:<24} {:>16} {:>16} {:>12} {:>16} {}",
                present::time_text(l.at_ns, offset),
                l.payment_id,
                l.transfer_id,
                l.kind,
                l.counterparty_name,
                l.note,
                cell(shown, line.amount_in),
                cell(shown, line.amount_out),
                cell(shown, line.fee),
                shown.money(line.balance),
                fx_text(line)
            );
        }
        let _ = writeln!(
            out,
            "Money in {}, money out {}, fees {}\nClosing balance {}\n",
            shown.money(shown.money_in),
            shown.money(shown.money_out),
            shown.money(shown.fees),
            shown.money(shown.closing)
        );
    }
    out
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// One header, then per statement an opening row, its lines and a closing row.
fn csv(statements: &[Shown<'_>]) -> String {
    let mut out = String::from(
        "currency,time,payment_id,transfer_id,kind,counterparty,note,amount_in,amount_out,fee,balance,fx_rate,fx_other_amount\n",
    );
    for shown in statements {
        let (s, offset) = (shown.s, shown.s.utc_offset_minutes);
        let edge = |kind: &str, at: u64, minor: i128| {
            format!(
                "{},{},,,{kind},,,,,,{},,\n",
                s.currency,
                present::time_text(at, offset),
                field(&shown.money(minor))
            )
        };
        out.push_str(&edge("opening_balance", s.from_ns, shown.opening));
        for line in &shown.lines {
            let l = line.l;
            let cells = [
                s.currency.clone(),
                present::time_text(l.at_ns, offset),
                l.payment_id.clone(),
                l.transfer_id.clone(),
                l.kind.clone(),
                l.counterparty_name.clone(),
                l.note.clone(),
                cell(shown, line.amount_in),
                cell(shown, line.amount_out),
                cell(shown, line.fee),
                shown.money(line.balance),
                l.fx_rate.clone(),
                line.other.map_or(String::new(), |(amount, c)| money(amount, c)),
            ];
            out.push_str(&cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out.push_str(&edge("closing_balance", s.to_ns, shown.closing));
    }
    out
}

/// A figure as JSON: the shown text and, beside it, the minor units as an integer.
fn figure(
    map: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    minor: i128,
    currency: Currency,
) -> Result<(), String> {
    let integer = i64::try_from(minor).map_err(|_| format!("{name}: {minor} minor units do not fit a JSON integer"))?;
    map.insert(name.to_string(), json!(money(minor, currency)));
    map.insert(format!("{name}_minor"), json!(integer));
    Ok(())
}

fn json_text(statements: &[Shown<'_>]) -> Result<String, String> {
    let mut out = Vec::new();
    for shown in statements {
        let (s, c, offset) = (shown.s, shown.currency, shown.s.utc_offset_minutes);
        let mut lines = Vec::new();
        for line in &shown.lines {
            let l = line.l;
            let mut map = serde_json::Map::new();
            map.insert("time".into(), json!(present::time_text(l.at_ns, offset)));
            map.insert("at_ns".into(), json!(l.at_ns));
            map.insert("payment_id".into(), json!(l.payment_id));
            map.insert("transfer_id".into(), json!(l.transfer_id));
            map.insert("kind".into(), json!(l.kind));
            map.insert("counterparty".into(), json!(l.counterparty_name));
            map.insert("note".into(), json!(l.note));
            figure(&mut map, "amount_in", line.amount_in, c)?;
            figure(&mut map, "amount_out", line.amount_out, c)?;
            figure(&mut map, "fee", line.fee, c)?;
            figure(&mut map, "balance", line.balance, c)?;
            let fx = match line.other {
                Some((amount, other)) => {
                    let mut fx = serde_json::Map::new();
                    fx.insert("rate".into(), json!(l.fx_rate));
                    fx.insert("other_currency".into(), json!(other.code()));
                    figure(&mut fx, "other_amount", amount, other)?;
                    serde_json::Value::Object(fx)
                }
                None => serde_json::Value::Null,
            };
            map.insert("fx".into(), fx);
            lines.push(serde_json::Value::Object(map));
        }
        let mut map = serde_json::Map::new();
        for (name, value) in [
            ("user_id", &s.user_id),
            ("holder_name", &s.holder_name),
            ("account_id", &s.account_id),
            ("currency", &s.currency),
            ("month", &s.month),
        ] {
            map.insert(name.into(), json!(value));
        }
        map.insert("from".into(), json!(present::time_text(s.from_ns, offset)));
        map.insert("to".into(), json!(present::time_text(s.to_ns, offset)));
        figure(&mut map, "opening", shown.opening, c)?;
        figure(&mut map, "money_in", shown.money_in, c)?;
        figure(&mut map, "money_out", shown.money_out, c)?;
        figure(&mut map, "fees", shown.fees, c)?;
        figure(&mut map, "closing", shown.closing, c)?;
        map.insert("lines".into(), serde_json::Value::Array(lines));
        out.push(serde_json::Value::Object(map));
    }
    Ok(format!("{}\n", json!({ "statements": out })))
}

/// Text made safe for HTML (element content and attribute values).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CHART_WIDTH: f64 = 720.0;
const CHART_HEIGHT: f64 = 200.0;
const CHART_MARGIN: f64 = 10.0;

/// The balance over the month as a step line: the opening at the month's start, each
/// line's balance from its time on, the closing at the month's end.
fn chart(shown: &Shown<'_>) -> String {
    let s = shown.s;
    let (points, low, high) = shown.balance_points();
    let span = s.to_ns.saturating_sub(s.from_ns).max(1) as f64;
    let x = |at: u64| CHART_MARGIN + (at.saturating_sub(s.from_ns) as f64 / span) * (CHART_WIDTH - 2.0 * CHART_MARGIN);
    let y = |v: i128| {
        CHART_HEIGHT - CHART_MARGIN - ((v - low) as f64 / (high - low) as f64) * (CHART_HEIGHT - 2.0 * CHART_MARGIN)
    };
    let mut path = format!("M{:.1},{:.1}", x(points[0].0), y(points[0].1));
    for pair in points.windows(2) {
        let (_, before) = pair[0];
        let (at, value) = pair[1];
        let _ = write!(path, " L{:.1},{:.1} L{:.1},{:.1}", x(at), y(before), x(at), y(value));
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" height=\"{CHART_HEIGHT}\" viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" role=\"img\" aria-label=\"Balance over {month}\">\
<title>Balance over {month}: from {opening} to {closing}</title>\
<line x1=\"{m}\" y1=\"{zero:.1}\" x2=\"{end}\" y2=\"{zero:.1}\" stroke=\"#bbb\" stroke-width=\"1\"/>\
<path d=\"{path}\" fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"2\"/></svg>",
        month = escape(&s.month),
        opening = escape(&shown.money(shown.opening)),
        closing = escape(&shown.money(shown.closing)),
        m = CHART_MARGIN,
        end = CHART_WIDTH - CHART_MARGIN,
        zero = y(0),
    )
}

fn html(statements: &[Shown<'_>]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>Statement</title><style>\
body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:0.85em}\
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left}td.n{text-align:right;white-space:nowrap}\
.summary td{font-weight:bold}</style></head><body>\n",
    );
    for shown in statements {
        let (s, offset) = (shown.s, shown.s.utc_offset_minutes);
        let _ = write!(
            out,
            "<section><h1>Statement {} &#8212; {} wallet</h1><p>{} (user {}), account {}, from {} to {}</p>\n{}\n",
            escape(&s.month),
            escape(&s.currency),
            escape(&s.holder_name),
            escape(&s.user_id),
            escape(&s.account_id),
            escape(&present::time_text(s.from_ns, offset)),
            escape(&present::time_text(s.to_ns, offset)),
            chart(shown)
        );
        out.push_str("<table><thead><tr><th>Time</th><th>Payment</th><th>Transfer</th><th>Kind</th><th>Counterparty</th><th>Note</th><th>In</th><th>Out</th><th>Fee</th><th>Balance</th><th>FX</th></tr></thead><tbody>\n");
        let _ = writeln!(
            out,
            "<tr class=\"summary\"><td colspan=\"9\">Opening balance</td><td class=\"n\">{}</td><td></td></tr>",
            escape(&shown.money(shown.opening))
        );
        for line in &shown.lines {
            let l = line.l;
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&present::time_text(l.at_ns, offset)),
                escape(&l.payment_id),
                escape(&l.transfer_id),
                escape(&l.kind),
                escape(&l.counterparty_name),
                escape(&l.note),
                escape(&cell(shown, line.amount_in)),
                escape(&cell(shown, line.amount_out)),
                escape(&cell(shown, line.fee)),
                escape(&shown.money(line.balance)),
                escape(&fx_text(line)),
            );
        }
        let _ = writeln!(
            out,
            "<tr class=\"summary\"><td colspan=\"6\">Totals</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td></td><td></td></tr>",
            escape(&shown.money(shown.money_in)),
            escape(&shown.money(shown.money_out)),
            escape(&shown.money(shown.fees))
        );
        let _ = writeln!(out, "<tr class=\"summary\"><td colspan=\"9\">Closing balance</td><td class=\"n\" id=\"closing-{}\">{}</td><td></td></tr>", escape(&s.currency), escape(&shown.money(shown.closing)));
        out.push_str("</tbody></table></section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_figures_and_fields_are_shown_as_people_read_them() {
        let usd = Currency::parse("USD").expect("USD");
        assert_eq!(money(84_950, usd), "849.50 USD");
        assert_eq!(money(-300, usd), "-3.00 USD");
        assert_eq!(money(5, Currency::parse("JPY").expect("JPY")), "5 JPY");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("plain"), "plain");
        assert_eq!(escape("<b>Tom & \"Jerry\"</b>"), "&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;");
    }
}
