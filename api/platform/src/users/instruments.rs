//! Linked payment instruments: checks of bank accounts, cards and digital wallets,
//! what may be shown of them, and the card vault port with its sandbox.

use super::UsersError;
use crate::FieldError;

/// Checks an ABA routing number: 9 digits, weights 3-7-1, sum a multiple of 10.
pub fn check_routing_number(routing: &str) -> Result<(), FieldError> {
    let digits: Vec<u32> = routing.chars().filter_map(|c| c.to_digit(10)).collect();
    if routing.len() != 9 || digits.len() != 9 {
        return Err(FieldError::new("routing_number", "9 digits"));
    }
    let sum: u32 = digits.iter().zip([3, 7, 1].iter().cycle()).map(|(d, w)| d * w).sum();
    if !sum.is_multiple_of(10) {
        return Err(FieldError::new("routing_number", "the checksum does not match; check the number"));
    }
    Ok(())
}

pub fn check_account_number(number: &str) -> Result<(), FieldError> {
    if !(4..=17).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new("account_number", "4 to 17 digits"));
    }
    Ok(())
}

/// Digits of a card number given with optional spaces or dashes; checked with Luhn.
pub fn card_digits(number: &str) -> Result<String, FieldError> {
    if number.len() > 40 {
        return Err(FieldError::new("number", "not a card number"));
    }
    let digits: String = number.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new("number", "12 to 19 digits"));
    }
    if !luhn(&digits) {
        return Err(FieldError::new("number", "fails the Luhn check; check the number"));
    }
    Ok(digits)
}

pub fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The card network, from the number's prefix.
pub fn card_brand(digits: &str) -> &'static str {
    // ok: display-only: the brand is a label; a number too short for a prefix matches
    // no brand's range and shows as "card".
    let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    match () {
        _ if digits.starts_with('4') => "visa",
        _ if (51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4)) => "mastercard",
        _ if prefix(2) == 34 || prefix(2) == 37 => "amex",
        _ if prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)) => "discover",
        _ if (3528..=3589).contains(&prefix(4)) => "jcb",
        _ if prefix(2) == 62 => "unionpay",
        _ if prefix(2) == 36 || (300..=305).contains(&prefix(3)) => "diners",
        _ => "card",
    }
}

/// Expiry: month 1–12, not before `(year, month)` now, at most 20 years ahead.
pub fn check_expiry(month: u32, year: u32, now: (i64, i64)) -> Result<(), UsersError> {
    if !(1..=12).contains(&month) {
        return Err(FieldError::new("exp_month", "1 to 12").into());
    }
    let (y, m) = (i64::from(year), i64::from(month));
    if (y, m) < now {
        return Err(UsersError::InvalidRequest("the card has expired"));
    }
    if y > now.0 + 20 {
        return Err(FieldError::new("exp_year", "too far ahead").into());
    }
    Ok(())
}

pub fn check_cvv(cvv: &str, brand: &str) -> Result<(), FieldError> {
    let len = if brand == "amex" { 4 } else { 3 };
    if cvv.len() != len || !cvv.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new("cvv", format!("{len} digits")));
    }
    Ok(())
}

pub const WALLET_PROVIDERS: [&str; 6] = ["paypal", "apple_pay", "google_pay", "venmo", "alipay", "wechat_pay"];

pub fn check_wallet(provider: &str, handle: &str) -> Result<(), FieldError> {
    if !WALLET_PROVIDERS.contains(&provider) {
        return Err(FieldError::new("provider", format!("one of {}", WALLET_PROVIDERS.join(", "))));
    }
    if super::profile::check_email(handle).is_err()
        && (handle.is_empty() || super::profile::check_phone(handle).is_err())
    {
        return Err(FieldError::new("handle", "an email address or an E.164 phone number"));
    }
    Ok(())
}

/// `••••6789`.
pub fn mask_tail(text: &str) -> String {
    let tail: String = text.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("••••{tail}")
}

/// `a•••@example.com`, or a phone's last four.
pub fn mask_handle(handle: &str) -> String {
    match handle.split_once('@') {
        Some((local, domain)) => format!("{}•••@{domain}", local.chars().next().unwrap_or('•')),
        None => mask_tail(handle),
    }
}

/// The card vault: the only place a card number goes. It answers a token the
/// platform keeps instead of the number.
pub trait CardVault: Send + Sync {
    fn tokenize(&self, digits: &str, exp_month: u32, exp_year: u32, cvv: &str) -> Result<String, String>;
}

/// The sandbox vault: accepts every valid card except the test number that a card
/// network's sandbox declines (4000 0000 0000 0002), keeps nothing, answers a random
/// token.
pub struct SandboxVault;

pub const SANDBOX_DECLINED_CARD: &str = "4000000000000002";

impl CardVault for SandboxVault {
    fn tokenize(&self, digits: &str, _exp_month: u32, _exp_year: u32, _cvv: &str) -> Result<String, String> {
        if digits == SANDBOX_DECLINED_CARD {
            return Err("the card issuer declined the card".into());
        }
        let bytes: [u8; 16] = crate::random::bytes().map_err(|_| "the vault is unavailable".to_string())?;
        Ok(format!("tok_{}", ledger_core::chain::to_hex(&bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_numbers() {
        for good in ["021000021", "011000015", "122105155"] {
            assert_eq!(check_routing_number(good), Ok(()), "{good}");
        }
        for bad in ["021000022", "12345678", "02100002a", "0210000210"] {
            assert!(check_routing_number(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cards() {
        assert_eq!(card_digits("4242 4242 4242 4242").as_deref(), Ok("4242424242424242"));
        assert!(card_digits("4242 4242 4242 4241").is_err());
        assert!(card_digits("4242").is_err() && card_digits("4242x42424242424").is_err());
        assert_eq!(card_brand("4242424242424242"), "visa");
        assert_eq!(card_brand("5555555555554444"), "mastercard");
        assert_eq!(card_brand("2223003122003222"), "mastercard");
        assert_eq!(card_brand("378282246310005"), "amex");
        assert_eq!(card_brand("6011111111111117"), "discover");
        assert!(luhn("378282246310005") && luhn("6011111111111117") && !luhn("6011111111111118"));
        assert!(check_expiry(12, 2026, (2026, 11)).is_ok());
        assert!(check_expiry(10, 2026, (2026, 11)).is_err() && check_expiry(13, 2030, (2026, 11)).is_err());
        assert!(
            check_cvv("123", "visa").is_ok() && check_cvv("1234", "amex").is_ok() && check_cvv("12", "visa").is_err()
        );
        assert!(SandboxVault.tokenize(SANDBOX_DECLINED_CARD, 1, 2030, "123").is_err());
        let token = SandboxVault.tokenize("4242424242424242", 1, 2030, "123").expect("token");
        assert!(token.starts_with("tok_") && !token.contains("4242"));
    }

    #[test]
    fn wallets_and_masks() {
        assert!(check_wallet("paypal", "ada@example.com").is_ok() && check_wallet("venmo", "+14155552671").is_ok());
        assert!(check_wallet("bitcoin", "ada@example.com").is_err() && check_wallet("paypal", "ada").is_err());
        assert_eq!(mask_tail("123456789"), "••••6789");
        assert_eq!(mask_handle("ada@example.com"), "a•••@example.com");
    }
}
