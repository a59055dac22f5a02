//! Times in the HTTP API: RFC 3339 in UTC with nanoseconds, as the log keeps them.

use ledger_core::calendar::{civil_from_days, days_from_civil};

use super::error::ApiError;

/// `2026-11-30T01:02:03.123456789Z`; whole seconds are written without a fraction.
pub fn rfc3339(ns: u64) -> String {
    let seconds = (ns / 1_000_000_000) as i64;
    let nanos = ns % 1_000_000_000;
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    let in_day = seconds.rem_euclid(86_400);
    let (hh, mm, ss) = (in_day / 3600, in_day / 60 % 60, in_day % 60);
    let fraction = if nanos == 0 { String::new() } else { format!(".{nanos:09}") };
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{fraction}Z")
}

/// An optional time: `None` for 0 (never).
pub fn rfc3339_opt(ns: u64) -> Option<String> {
    (ns != 0).then(|| rfc3339(ns))
}

/// An RFC 3339 time given as `field` (`2026-11-30T01:02:03Z`, `…T01:02:03.5+01:00`) as
/// nanoseconds since 1970 in UTC; anything else, a leap second, or a time before 1970
/// or past what 64 bits of nanoseconds hold (2554) is an `invalid_request` naming `field`.
pub fn parse_rfc3339(field: &str, text: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::invalid(field, "an RFC 3339 time such as 2026-11-30T01:02:03Z, from 1970 on");
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Result<i64, ApiError> {
        let part = b.get(from..from + len).ok_or_else(bad)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, expected: &[u8]| b.get(i).is_some_and(|c| expected.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":")) {
        return Err(bad());
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    let days = days_from_civil(year, month, day);
    if !(1..=12).contains(&month)
        || civil_from_days(days) != (year, month, day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if at(i, b".") {
        let count = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&count) {
            return Err(bad());
        }
        nanos = digits(i + 1, count)? * 10i64.pow(9 - count as u32);
        i += 1 + count;
    }
    let offset_seconds = match b.get(i..) {
        Some(b"Z" | b"z") => 0,
        Some([sign @ (b'+' | b'-'), _, _, b':', _, _]) => {
            let (h, m) = (digits(i + 1, 2)?, digits(i + 4, 2)?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let magnitude = h * 3600 + m * 60;
            if *sign == b'+' {
                magnitude
            } else {
                -magnitude
            }
        }
        _ => return Err(bad()),
    };
    let seconds =
        i128::from(days) * 86_400 + i128::from(hour * 3600 + minute * 60 + second) - i128::from(offset_seconds);
    let ns = seconds * 1_000_000_000 + i128::from(nanos);
    u64::try_from(ns).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_what_it_writes_and_refuses_the_rest() {
        for ns in [0, 1_764_464_523_000_000_001, 1_764_464_523_500_000_000, u64::MAX] {
            assert_eq!(super::parse_rfc3339("at", &super::rfc3339(ns)).ok(), Some(ns));
        }
        assert_eq!(super::parse_rfc3339("at", "2025-11-30T02:02:03+01:00").ok(), Some(1_764_464_523_000_000_000));
        assert_eq!(super::parse_rfc3339("at", "2025-11-30T00:02:03.5-01:00").ok(), Some(1_764_464_523_500_000_000));
        for bad in [
            "",
            "2025-11-30",
            "2025-11-30T01:02:03",
            "2025-02-30T01:02:03Z",
            "2025-11-30T24:00:00Z",
            "2025-11-30T23:59:60Z",
            "1969-12-31T23:59:59Z",
            "2600-01-01T00:00:00Z",
            "2025-11-30T01:02:03.Z",
            "2025-11-30T01:02:03.1234567890Z",
            "2025-11-30T01:02:03+0100",
            "+025-11-30T01:02:03Z",
            "2025-11-30T01:02:03Zjunk",
        ] {
            let error = super::parse_rfc3339("at", bad).expect_err(bad);
            assert_eq!(error.field.as_deref(), Some("at"), "{bad}");
        }
    }

    #[test]
    fn known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_764_464_523_000_000_001), "2025-11-30T01:02:03.000000001Z");
        assert_eq!(super::rfc3339_opt(0), None);
    }
}
