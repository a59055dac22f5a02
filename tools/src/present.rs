//! What a person reads and types: amounts in major units with their currency, times as
//! RFC 3339 in the chosen UTC offset, and standard output that may close early.

use ledger_core::calendar::{civil_from_days, days_from_civil};
use ledger_core::money::{format_amount, parse_amount, Currency};

/// Exit status when the program ran but the outcome is a failure (a payment failed or
/// was cancelled, a lookup found nothing, the server refused the call).
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a usage error: a flag or value the command does not accept (clap's too).
pub const EXIT_USAGE: u8 = 2;
/// Exit status of a payment still on its way when `--wait-secs` ran out.
pub const EXIT_PENDING: u8 = 3;
/// Exit status of a payment held for review by the risk checks.
pub const EXIT_IN_REVIEW: u8 = 4;

/// `println!` for command output. When the reader of standard output has gone (`ledgerctl
/// … | head`), the process exits quietly with status 0: the reader asked for no more.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            $crate::present::stdout_closed();
        }
    }};
}

/// Standard output cannot be written (its reader closed it): stop quietly.
pub fn stdout_closed() -> ! {
    std::process::exit(0)
}

/// A currency code from the server or a flag.
pub fn currency(flag: &str, code: &str) -> Result<Currency, String> {
    Currency::parse(code).map_err(|e| format!("{flag} {code:?}: {e}"))
}

/// Signed minor units (as the server sends them) in major units: "-84950" USD → "-849.50".
pub fn major(minor: &str, currency: Currency) -> Result<String, String> {
    let value: i128 = minor.parse().map_err(|_| format!("the server sent amount {minor:?}: not an integer"))?;
    let text = format_amount(value.unsigned_abs(), currency);
    Ok(if value < 0 { format!("-{text}") } else { text })
}

/// How people read an amount: "849.50 USD", or with `--minor` "84950 USD" (minor units).
pub fn money(minor: &str, code: &str, minor_units: bool) -> Result<String, String> {
    if minor.is_empty() || code.is_empty() {
        return Ok(format!("{minor} {code}").trim().to_string());
    }
    if minor_units {
        return Ok(format!("{minor} {code}"));
    }
    Ok(format!("{} {code}", major(minor, currency("currency", code)?)?))
}

/// An amount flag as minor units: major units ("2.50") by default, an integer count of
/// minor units with `--minor`.
pub fn amount_flag(flag: &str, text: &str, currency: Currency, minor_units: bool) -> Result<String, String> {
    if minor_units {
        let value: u128 =
            text.parse().map_err(|_| format!("{flag} {text:?}: with --minor, an integer count of minor units"))?;
        return Ok(value.to_string());
    }
    parse_amount(text, currency)
        .map(|minor| minor.to_string())
        .map_err(|e| format!("{flag} {text:?}: {e} (in {currency}, e.g. 2.50; --minor for minor units)"))
}

/// Minutes east of UTC from `+HH:MM`, `-HH:MM` or `Z`.
pub fn parse_offset(text: &str) -> Result<i32, String> {
    if text == "Z" {
        return Ok(0);
    }
    let bad = || format!("--utc-offset {text}: expected +HH:MM, -HH:MM or Z");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (hours, minutes) = rest.split_once(':').ok_or_else(bad)?;
    let hours: i32 = hours.parse().map_err(|_| bad())?;
    let minutes: i32 = minutes.parse().map_err(|_| bad())?;
    if !(0..60).contains(&minutes) || !(0..=18).contains(&hours) {
        return Err(bad());
    }
    Ok(sign * (hours * 60 + minutes))
}

/// `+HH:MM` (or `Z`) of an offset in minutes.
pub fn offset_text(offset_minutes: i32) -> String {
    if offset_minutes == 0 {
        return "Z".into();
    }
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let minutes = offset_minutes.unsigned_abs();
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A date (`YYYY-MM-DD`) as days since 1970-01-01, refusing 2026-02-30 and the like.
fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let (year, month, day): (i64, i64, i64) = (year.parse().ok()?, month.parse().ok()?, day.parse().ok()?);
    let days = days_from_civil(year, month, day);
    let valid = (1..=12).contains(&month) && (1..=31).contains(&day) && civil_from_days(days) == (year, month, day);
    valid.then_some(days)
}

/// `HH:MM[:SS[.fraction]]` as nanoseconds into the day.
fn parse_clock(text: &str) -> Option<i64> {
    let (clock, fraction) = match text.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (text, None),
    };
    let fields: Vec<&str> = clock.split(':').collect();
    let number = |s: &str, max: i64| s.parse::<i64>().ok().filter(|v| s.len() == 2 && (0..=max).contains(v));
    let (hours, minutes, seconds) = match fields.as_slice() {
        [h, m] => (number(h, 23)?, number(m, 59)?, 0),
        [h, m, s] => (number(h, 23)?, number(m, 59)?, number(s, 59)?),
        _ => return None,
    };
    let nanos = match fraction {
        None => 0,
        Some(f) if (1..=9).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<i64>().ok()? * 10_i64.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
    };
    Some(((hours * 60 + minutes) * 60 + seconds) * 1_000_000_000 + nanos)
}

/// Nanoseconds since the epoch from an RFC 3339 time (`2026-11-29T12:00Z`, seconds and
/// the offset optional: without one, `offset_minutes`), a bare date (midnight at
/// `offset_minutes`), or a plain count of nanoseconds.
pub fn parse_time(flag: &str, text: &str, offset_minutes: i32) -> Result<u64, String> {
    if let Ok(ns) = text.parse::<u64>() {
        return Ok(ns);
    }
    let bad = || format!("{flag} {text}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]");
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let days = parse_date(date).ok_or_else(bad)?;
    let (clock_ns, offset) = match rest {
        None => (0, offset_minutes),
        Some(rest) => {
            let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
                Some(at) => (&rest[..at], Some(&rest[at..])),
                None => (rest, None),
            };
            let offset = match zone {
                None => offset_minutes,
                Some("Z" | "z") => 0,
                Some(zone) => parse_offset(zone).map_err(|_| bad())?,
            };
            (parse_clock(clock).ok_or_else(bad)?, offset)
        }
    };
    let ns = i128::from(days) * 86_400_000_000_000 + i128::from(clock_ns) - i128::from(offset) * 60_000_000_000;
    u64::try_from(ns).map_err(|_| bad())
}

/// An instant as RFC 3339 in the offset, to the second (`2026-11-29T13:00:00+01:00`);
/// a fraction of a second is shown only when there is one (milliseconds).
pub fn time_text(ns: u64, offset_minutes: i32) -> String {
    let local = i128::from(ns) + i128::from(offset_minutes) * 60_000_000_000;
    let seconds = local.div_euclid(1_000_000_000) as i64;
    let millis = (local.rem_euclid(1_000_000_000) / 1_000_000) as i64;
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    let in_day = seconds.rem_euclid(86_400);
    let (hh, mm, ss) = (in_day / 3600, in_day / 60 % 60, in_day % 60);
    let fraction = if millis == 0 { String::new() } else { format!(".{millis:03}") };
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{fraction}{}", offset_text(offset_minutes))
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> Result<u64, String> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970".to_string())?;
    u64::try_from(since.as_nanos()).map_err(|_| "the system clock is past 2554".to_string())
}

/// `YYYY-MM-DD` of an instant, in the offset's calendar.
pub fn date_of(ns: u64, offset_minutes: i32) -> String {
    let seconds = (ns / 1_000_000_000) as i64 + i64::from(offset_minutes) * 60;
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").expect("USD")
    }

    #[test]
    fn dates_and_offsets() {
        assert_eq!(parse_offset("+02:00"), Ok(120));
        assert_eq!(parse_offset("-05:30"), Ok(-330));
        assert!(parse_offset("02:00").is_err());
        assert_eq!(parse_time("--from", "1970-01-02", 0), Ok(86_400_000_000_000));
        assert_eq!(parse_time("--from", "2026-03-01", 60), Ok(1_772_319_600_000_000_000));
        assert!(parse_time("--from", "2026-02-30", 0).is_err());
        assert_eq!(parse_time("--from", "123", 0), Ok(123));
        assert_eq!(date_of(1_772_319_600_000_000_000, 60), "2026-03-01");
        assert_eq!(date_of(1_772_319_600_000_000_000, 0), "2026-02-28");
    }

    #[test]
    fn rfc3339_in_and_out() {
        let noon = parse_time("--as-of", "2026-11-29T12:00Z", 120).expect("noon");
        assert_eq!(parse_time("--as-of", "2026-11-29T14:00:00+02:00", 0), Ok(noon));
        assert_eq!(parse_time("--as-of", "2026-11-29T14:00", 120), Ok(noon), "no zone: --utc-offset");
        assert_eq!(parse_time("--as-of", "2026-11-29", 0), Ok(noon - 12 * 3_600_000_000_000));
        assert_eq!(parse_time("--as-of", "2026-11-29T12:00:00.5Z", 0), Ok(noon + 500_000_000));
        for bad in ["2026-11-29T25:00Z", "2026-11-29T12Z", "2026-11-29T12:00+2", "29/11/2026", "2026-1-29"] {
            assert!(parse_time("--as-of", bad, 0).is_err(), "{bad}");
        }
        assert_eq!(time_text(noon, 0), "2026-11-29T12:00:00Z");
        assert_eq!(time_text(noon, -330), "2026-11-29T06:30:00-05:30");
        assert_eq!(time_text(noon + 250_000_000, 60), "2026-11-29T13:00:00.250+01:00");
    }

    #[test]
    fn amounts_in_major_units() {
        assert_eq!(money("84950", "USD", false), Ok("849.50 USD".into()));
        assert_eq!(money("-5", "USD", false), Ok("-0.05 USD".into()));
        assert_eq!(money("84950", "USD", true), Ok("84950 USD".into()));
        assert_eq!(money("1200", "JPY", false), Ok("1200 JPY".into()));
        assert!(money("12.5", "USD", false).is_err(), "the server's minor units are integers");
        assert_eq!(amount_flag("--amount", "2.50", usd(), false), Ok("250".into()));
        assert_eq!(amount_flag("--amount", "250", usd(), true), Ok("250".into()));
        assert!(amount_flag("--amount", "2.505", usd(), false).is_err());
        assert!(amount_flag("--amount", "2.50", usd(), true).is_err());
    }
}
