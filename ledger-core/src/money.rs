//! Currencies (ISO 4217) and amounts as integer minor units.
//!
//! An amount is a `u128` count of minor units of one currency. Decimal text is parsed
//! and printed with `rust_decimal`; an input with more fraction digits than the
//! currency allows is an error, never rounded.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Errors of parsing a currency or an amount given by an outside caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code {0:?} (expected an ISO 4217 code such as USD)")]
    UnknownCurrency(String),
    #[error("amount {text:?} is not a decimal number")]
    NotANumber { text: String },
    #[error("amount {text:?} has more than {exponent} fraction digits allowed for {currency}")]
    TooManyDecimals { text: String, currency: Currency, exponent: u8 },
    #[error("amount must be greater than zero, got {text:?}")]
    NotPositive { text: String },
    #[error("amount {text:?} is too large")]
    Overflow { text: String },
}

/// ISO 4217 currencies in circulation with their minor-unit exponents. Precious metals,
/// testing and special codes without a minor unit (XAU, XDR, XTS, XXX, ...) are left out.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
    ("ZWL", 2),
];

const fn pack_code(code: [u8; 3]) -> u32 {
    (code[0] as u32) << 16 | (code[1] as u32) << 8 | code[2] as u32
}

/// `CURRENCIES`' codes packed by `pack_code`, in the same (sorted) order.
static PACKED_CODES: [u32; CURRENCIES.len()] = {
    let mut packed = [0u32; CURRENCIES.len()];
    let mut i = 0;
    while i < CURRENCIES.len() {
        let code = CURRENCIES[i].0.as_bytes();
        packed[i] = pack_code([code[0], code[1], code[2]]);
        i += 1;
    }
    packed
};

/// The index of `code` in the table; a code not in it fails the build.
const fn index_of(code: [u8; 3]) -> u16 {
    let packed = pack_code(code);
    let mut i = 0;
    while i < PACKED_CODES.len() {
        if PACKED_CODES[i] == packed {
            return i as u16;
        }
        i += 1;
    }
    panic!("currency code not in the table")
}

/// A currency in circulation: an index into the ISO 4217 table. `Copy` and two bytes,
/// so it costs nothing to carry on hot paths; only [`Currency::parse`] creates one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Currency(u16);

impl Currency {
    /// The first currency of the table, for placeholder values that are never read as
    /// money (prepared memory, a damaged read-model row).
    pub const FIRST: Currency = Currency(0);

    /// The US dollar: the default reference currency of limits and the FX pivot.
    pub const USD: Currency = Currency(index_of(*b"USD"));

    /// Parses an ISO 4217 alphabetic code (upper case, exactly three letters).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        // Three bytes packed big-endian sort as the codes do: one search over integers
        // instead of string comparisons (this runs for every item of every request).
        let unknown = || MoneyError::UnknownCurrency(code.chars().take(16).collect());
        let &[a, b, c] = code.as_bytes() else { return Err(unknown()) };
        PACKED_CODES.binary_search(&pack_code([a, b, c])).map(|index| Currency(index as u16)).map_err(|_| unknown())
    }

    pub fn code(self) -> &'static str {
        CURRENCIES[self.0 as usize].0
    }

    /// The currency's index in the table (for compact in-memory encodings).
    pub(crate) fn index(self) -> u16 {
        self.0
    }

    /// The currency at `index` in the table, if there is one.
    pub(crate) fn from_index(index: u16) -> Option<Currency> {
        ((index as usize) < CURRENCIES.len()).then_some(Currency(index))
    }

    /// Number of fraction digits of the minor unit (USD 2, JPY 0, BHD 3).
    pub fn exponent(self) -> u8 {
        CURRENCIES[self.0 as usize].1
    }

    /// Every currency of the table, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        (0..CURRENCIES.len()).map(|index| Currency(index as u16))
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Currency::parse(code)
    }
}

/// Largest count of minor units an amount from outside may have: what a `Decimal`
/// mantissa holds (2^96 - 1), so any amount read here can be computed with in
/// `rust_decimal` (rates, fees, valuations) without overflowing on entry.
pub const AMOUNT_MINOR_MAX: u128 = (1 << 96) - 1;

/// Most characters of a decimal text read from outside (an amount or a rate).
pub const DECIMAL_TEXT_MAX: usize = 64;

/// Splits strict decimal text into its whole and fraction digits: one or more ASCII
/// digits, then optionally one '.' and one or more digits. Nothing else: no sign,
/// spaces, exponent, underscores or thousands separators.
fn strict_decimal(text: &str) -> Option<(&str, &str)> {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if text.len() > DECIMAL_TEXT_MAX {
        return None;
    }
    match text.split_once('.') {
        Some((whole, fraction)) if digits(whole) && digits(fraction) => Some((whole, fraction)),
        None if digits(text) => Some((text, "")),
        _ => None,
    }
}

/// Parses a positive decimal amount ("12.34") into minor units of `currency`.
///
/// The grammar is strict: digits, optionally one '.' followed by at most as many
/// digits as the currency's exponent (USD "12.3" and "12.30", never "12.300"; JPY no
/// '.' at all). Anything else (a sign, spaces, "1_000", "1,000", "1e3", ".5", "5.")
/// is not a number; zero is not positive; above [`AMOUNT_MINOR_MAX`] minor units is
/// too large. Nothing is ever rounded.
pub fn parse_amount(text: &str, currency: Currency) -> Result<u128, MoneyError> {
    let shown = || text.chars().take(DECIMAL_TEXT_MAX).collect::<String>();
    if text.starts_with('-') && strict_decimal(&text[1..]).is_some() {
        return Err(MoneyError::NotPositive { text: shown() });
    }
    let (whole, fraction) = strict_decimal(text).ok_or_else(|| MoneyError::NotANumber { text: shown() })?;
    let exponent = usize::from(currency.exponent());
    if fraction.len() > exponent {
        return Err(MoneyError::TooManyDecimals { text: shown(), currency, exponent: currency.exponent() });
    }
    let padding = std::iter::repeat_n(b'0', exponent - fraction.len());
    let mut minor: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()).chain(padding) {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(digit - b'0')))
            .filter(|m| *m <= AMOUNT_MINOR_MAX)
            .ok_or_else(|| MoneyError::Overflow { text: shown() })?;
    }
    if minor == 0 {
        return Err(MoneyError::NotPositive { text: shown() });
    }
    Ok(minor)
}

/// Parses a positive decimal rate ("1.085", "150") under the same strict grammar as
/// amounts, with at most 28 fraction digits (what a `Decimal` holds).
pub fn parse_rate(text: &str) -> Result<Decimal, MoneyError> {
    let shown = || text.chars().take(DECIMAL_TEXT_MAX).collect::<String>();
    let (_, fraction) = strict_decimal(text).ok_or_else(|| MoneyError::NotANumber { text: shown() })?;
    if fraction.len() > RATE_FRACTION_DIGITS_MAX {
        return Err(MoneyError::NotANumber { text: shown() });
    }
    let rate = Decimal::from_str_exact(text).map_err(|_| MoneyError::Overflow { text: shown() })?;
    if rate.is_zero() {
        return Err(MoneyError::NotPositive { text: shown() });
    }
    Ok(rate)
}

/// Most fraction digits of a rate: the scale a `Decimal` holds.
pub const RATE_FRACTION_DIGITS_MAX: usize = 28;

/// Prints minor units as a decimal with the currency's exponent ("1234" USD -> "12.34").
pub fn format_amount(minor_units: u128, currency: Currency) -> String {
    let exponent = usize::from(currency.exponent());
    let digits = minor_units.to_string();
    if exponent == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = exponent + 1);
    let (whole, fraction) = padded.split_at(padded.len() - exponent);
    format!("{whole}.{fraction}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").expect("USD is in the table")
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in CURRENCIES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
    }

    #[test]
    fn exponents_of_well_known_currencies() {
        let exponent = |code| Currency::parse(code).map(Currency::exponent);
        assert_eq!(exponent("USD"), Ok(2));
        assert_eq!(exponent("JPY"), Ok(0));
        assert_eq!(exponent("BHD"), Ok(3));
        assert_eq!(exponent("CLF"), Ok(4));
        assert!(matches!(Currency::parse("usd"), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(Currency::parse("XXX"), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(Currency::parse(""), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(Currency::parse("US"), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(Currency::parse("USDX"), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(Currency::parse("ÜSD"), Err(MoneyError::UnknownCurrency(_))));
        for currency in Currency::all() {
            assert_eq!(Currency::parse(currency.code()), Ok(currency));
        }
    }

    #[test]
    fn parses_exact_amounts() {
        assert_eq!(parse_amount("12.34", usd()), Ok(1234));
        assert_eq!(parse_amount("12.3", usd()), Ok(1230));
        assert_eq!(parse_amount("12", usd()), Ok(1200));
        let jpy = Currency::parse("JPY").expect("JPY");
        assert_eq!(parse_amount("500", jpy), Ok(500));
        let bhd = Currency::parse("BHD").expect("BHD");
        assert_eq!(parse_amount("1.005", bhd), Ok(1005));
    }

    #[test]
    fn rejects_bad_amounts_without_rounding() {
        assert!(matches!(parse_amount("12.345", usd()), Err(MoneyError::TooManyDecimals { .. })));
        let jpy = Currency::parse("JPY").expect("JPY");
        assert!(matches!(parse_amount("1.5", jpy), Err(MoneyError::TooManyDecimals { .. })));
        assert!(matches!(parse_amount("0", usd()), Err(MoneyError::NotPositive { .. })));
        assert!(matches!(parse_amount("0.00", usd()), Err(MoneyError::NotPositive { .. })));
        assert!(matches!(parse_amount("-1", usd()), Err(MoneyError::NotPositive { .. })));
        assert!(matches!(parse_amount("abc", usd()), Err(MoneyError::NotANumber { .. })));
        assert!(matches!(parse_amount("1e5", usd()), Err(MoneyError::NotANumber { .. })));
        assert!(parse_amount("79228162514264337593543950335", usd()).is_err());
    }

    #[test]
    fn the_grammar_is_strict() {
        let bhd = Currency::parse("BHD").expect("BHD");
        let jpy = Currency::parse("JPY").expect("JPY");
        for text in [
            "1_000", "1_000.00", "1,000", "1 000", " 12", "12 ", "+12", "12.", ".5", "1.2.3", "", ".", "١٢", "0x10",
            "1e3", "12.3_4", "NaN", "inf", "--1", "12.-3",
        ] {
            assert!(
                matches!(parse_amount(text, usd()), Err(MoneyError::NotANumber { .. })),
                "{text:?} must not be a number"
            );
        }
        assert!(matches!(parse_amount("12.340", usd()), Err(MoneyError::TooManyDecimals { .. })));
        assert!(matches!(parse_amount("1000.0010", bhd), Err(MoneyError::TooManyDecimals { .. })));
        assert!(matches!(parse_amount("5.0", jpy), Err(MoneyError::TooManyDecimals { .. })));
        assert!(matches!(parse_amount("-0.5", usd()), Err(MoneyError::NotPositive { .. })));
        assert_eq!(parse_amount("007.50", usd()), Ok(750));
        assert_eq!(parse_amount("1000.001", bhd), Ok(1_000_001));
        let max = format_amount(AMOUNT_MINOR_MAX, usd());
        assert_eq!(parse_amount(&max, usd()), Ok(AMOUNT_MINOR_MAX));
        let over = format_amount(AMOUNT_MINOR_MAX + 1, usd());
        assert!(matches!(parse_amount(&over, usd()), Err(MoneyError::Overflow { .. })));
        assert!(matches!(parse_amount(&"9".repeat(65), usd()), Err(MoneyError::NotANumber { .. })));
    }

    #[test]
    fn rates_follow_the_same_grammar() {
        assert_eq!(parse_rate("1.085"), Ok(Decimal::new(1085, 3)));
        assert_eq!(parse_rate("150"), Ok(Decimal::new(150, 0)));
        for text in ["1_000", "1e3", "-1", "+1", " 1", "1.", ".5", "1,5"] {
            assert!(matches!(parse_rate(text), Err(MoneyError::NotANumber { .. })), "{text:?}");
        }
        assert!(matches!(parse_rate("0.000"), Err(MoneyError::NotPositive { .. })));
        assert!(parse_rate(&format!("0.{}1", "0".repeat(28))).is_err());
        assert!(parse_rate(&"9".repeat(40)).is_err());
    }

    #[test]
    fn usd_is_the_usd_of_the_table() {
        assert_eq!(Currency::USD, usd());
    }

    #[test]
    fn formats_amounts() {
        assert_eq!(format_amount(1234, usd()), "12.34");
        assert_eq!(format_amount(5, usd()), "0.05");
        assert_eq!(format_amount(500, Currency::parse("JPY").expect("JPY")), "500");
        assert_eq!(format_amount(1005, Currency::parse("BHD").expect("BHD")), "1.005");
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(minor in 1u128..1_000_000_000_000_000u128, index in 0usize..CURRENCIES.len()) {
            let currency = Currency(index as u16);
            let text = format_amount(minor, currency);
            proptest::prop_assert_eq!(parse_amount(&text, currency), Ok(minor));
        }

        /// Whatever the text, the parser either refuses it or reads exactly what
        /// `format_amount` would print back (the same digits, at most the currency's
        /// fraction digits, nothing else).
        #[test]
        fn anything_accepted_prints_back_the_same(text in "[0-9._ ,+eE-]{0,12}", index in 0usize..CURRENCIES.len()) {
            let currency = Currency(index as u16);
            if let Ok(minor) = parse_amount(&text, currency) {
                let digits = |t: &str| t.trim_start_matches('0').replace('.', "").trim_end_matches('0').to_string();
                proptest::prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                proptest::prop_assert_eq!(digits(&format_amount(minor, currency)), digits(&text));
            }
        }
    }
}
