//! Checks of personal data from outside. Error messages name the field and never
//! repeat the value.

use ledger_core::calendar::{civil_from_days, days_from_civil};

use crate::FieldError;

/// Longest email address (RFC 5321 path limit).
pub const EMAIL_BYTES_MAX: usize = 254;
pub const NAME_CHARS_MAX: usize = 200;
pub const ADDRESS_CHARS_MAX: usize = 500;

/// The form emails are compared in: trimmed and lower-cased (case-insensitive
/// uniqueness, as users expect, although RFC 5321 lets a local part be case-sensitive).
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

pub fn check_email(email: &str) -> Result<(), FieldError> {
    let email = email.trim();
    if email.is_empty() || email.len() > EMAIL_BYTES_MAX {
        return Err(FieldError::new("email", format!("1 to {EMAIL_BYTES_MAX} bytes")));
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(FieldError::new("email", "must be name@domain"));
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| tld.len() >= 2 && !tld.chars().all(|c| c.is_ascii_digit()));
    if !local_ok {
        return Err(FieldError::new("email", "the part before @ is not valid"));
    }
    if !domain_ok {
        return Err(FieldError::new("email", "the domain is not valid"));
    }
    Ok(())
}

pub fn check_name(field: &'static str, name: &str, required: bool) -> Result<(), FieldError> {
    let trimmed = name.trim();
    if required && trimmed.is_empty() {
        return Err(FieldError::new(field, "required"));
    }
    if trimmed.chars().count() > NAME_CHARS_MAX {
        return Err(FieldError::new(field, format!("at most {NAME_CHARS_MAX} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::new(field, "control characters are not allowed"));
    }
    Ok(())
}

pub fn check_address(address: &str) -> Result<(), FieldError> {
    if address.chars().count() > ADDRESS_CHARS_MAX {
        return Err(FieldError::new("address", format!("at most {ADDRESS_CHARS_MAX} characters")));
    }
    if address.chars().any(|c| c.is_control() && c != '\n') {
        return Err(FieldError::new("address", "control characters other than line breaks are not allowed"));
    }
    Ok(())
}

/// E.164: `+`, then 8 to 15 digits, the first not 0. Empty clears the phone.
pub fn check_phone(phone: &str) -> Result<(), FieldError> {
    if phone.is_empty() {
        return Ok(());
    }
    let digits = phone.strip_prefix('+').ok_or_else(|| FieldError::new("phone", "E.164 form, starting with +"))?;
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return Err(FieldError::new("phone", "E.164 form, + and 8 to 15 digits"));
    }
    Ok(())
}

/// `YYYY-MM-DD`, a real date, in the past and at most 150 years ago. Empty clears it.
pub fn check_date_of_birth(text: &str, today_days: i64) -> Result<(), FieldError> {
    if text.is_empty() {
        return Ok(());
    }
    let parts: Vec<&str> = text.split('-').collect();
    let parse = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<i64>().ok()).flatten()
    };
    let (Some(year), Some(month), Some(day)) = (
        parts.first().and_then(|s| parse(s, 4)),
        parts.get(1).and_then(|s| parse(s, 2)),
        parts.get(2).and_then(|s| parse(s, 2)),
    ) else {
        return Err(FieldError::new("date_of_birth", "YYYY-MM-DD"));
    };
    if parts.len() != 3 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(FieldError::new("date_of_birth", "not a real date"));
    }
    let days = days_from_civil(year, month, day);
    if days > today_days || today_days - days > 150 * 366 {
        return Err(FieldError::new("date_of_birth", "must be in the past 150 years"));
    }
    Ok(())
}

pub fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// (year, month) of a day count since 1970-01-01.
pub fn year_month_of(days: i64) -> (i64, i64) {
    let (year, month, _) = civil_from_days(days);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in ["ada@example.com", "Ada.Lovelace+ledger@mail.example.co.uk", "x_y@sub-domain.example.org"] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a..b@example.com",
            "ada@-x.com",
            "ada @example.com",
            "ada@example.c",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_email("  Ada@Example.COM "), "ada@example.com");
    }

    #[test]
    fn phones_names_and_dates() {
        assert!(check_phone("+14155552671").is_ok() && check_phone("").is_ok());
        assert!(
            check_phone("4155552671").is_err() && check_phone("+0123456789").is_err() && check_phone("+1-415").is_err()
        );
        assert!(check_name("name", " ", true).is_err() && check_name("name", "Ada\u{7}", true).is_err());
        let today = days_from_civil(2026, 11, 26);
        assert!(check_date_of_birth("1990-02-28", today).is_ok());
        assert!(check_date_of_birth("2000-02-29", today).is_ok());
        for bad in ["1990-02-30", "1990-13-01", "2030-01-01", "1800-01-01", "90-01-01", "1990/01/01"] {
            assert!(check_date_of_birth(bad, today).is_err(), "{bad}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        for days in [0, 59, 60, 365, 10_000, 20_000, days_from_civil(2026, 11, 26)] {
            let (y, m) = year_month_of(days);
            assert!(days_from_civil(y, m, 1) <= days && days < days_from_civil(y, m, 1) + days_in_month(y, m));
        }
    }
}
