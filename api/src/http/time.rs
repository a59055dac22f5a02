//! Times in the HTTP API: RFC 3339 in UTC with nanoseconds, as the log keeps them.

use ledger_core::calendar::civil_from_days;

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

#[cfg(test)]
mod tests {
    #[test]
    fn known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_764_464_523_000_000_001), "2025-11-30T01:02:03.000000001Z");
        assert_eq!(super::rfc3339_opt(0), None);
    }
}
