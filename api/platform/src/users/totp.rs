//! TOTP second factor (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps) and base32
//! (RFC 4648, no padding) for the shared secret.

use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use subtle::ConstantTimeEq;

pub const STEP_SECONDS: u64 = 30;
pub const DIGITS: u32 = 6;
/// Steps accepted either side of now, for clock drift.
pub const DRIFT_STEPS: u64 = 1;
pub const SECRET_BYTES: usize = 20;

/// RFC 4648 base32 without padding, as authenticator apps expect the secret.
pub fn base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// The bytes of a base32 text as a person may type it: any case, with spaces or
/// padding; `None` if it is not base32.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text.chars().filter(|c| *c != '=' && *c != ' ').map(|c| c.to_ascii_uppercase()).collect();
    data_encoding::BASE32_NOPAD.decode(cleaned.as_bytes()).ok()
}

/// The code for time step `step`.
pub fn code_at(secret: &[u8], step: u64) -> u32 {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let value = u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    value % 10u32.pow(DIGITS)
}

/// The step of a UNIX time in seconds.
pub fn step_of(unix_seconds: u64) -> u64 {
    unix_seconds / STEP_SECONDS
}

/// The step whose code `code` is, within the drift window around `unix_seconds`.
pub fn matching_step(secret: &[u8], code: &str, unix_seconds: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    let now = step_of(unix_seconds);
    (now.saturating_sub(DRIFT_STEPS)..=now + DRIFT_STEPS).find(|&step| constant_time_eq(code_at(secret, step), wanted))
}

fn constant_time_eq(a: u32, b: u32) -> bool {
    bool::from(a.to_be_bytes().ct_eq(&b.to_be_bytes()))
}

/// The otpauth URI authenticator apps read (as a QR code).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        percent(issuer),
        percent(account),
        base32(secret),
        percent(issuer)
    )
}

/// Everything but RFC 3986's unreserved characters is escaped.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn percent(text: &str) -> String {
    utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_test_vectors() {
        // RFC 6238 appendix B, SHA1 secret "12345678901234567890", 8-digit codes mod 10^6.
        let secret = b"12345678901234567890";
        for (time, code8) in
            [(59u64, 94287082u32), (1111111109, 7081804), (1234567890, 89005924), (2000000000, 69279037)]
        {
            assert_eq!(code_at(secret, step_of(time)), code8 % 1_000_000, "t={time}");
        }
    }

    #[test]
    fn codes_match_within_the_drift_window_only() {
        let secret = b"12345678901234567890";
        let now = 1_234_567_890;
        let code = format!("{:06}", code_at(secret, step_of(now)));
        assert_eq!(matching_step(secret, &code, now), Some(step_of(now)));
        assert_eq!(matching_step(secret, &code, now + 30), Some(step_of(now)));
        assert_eq!(matching_step(secret, &code, now + 300), None);
        assert_eq!(matching_step(secret, "12345", now), None);
        assert_eq!(matching_step(secret, "abcdef", now), None);
    }

    #[test]
    fn base32_round_trips() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        for len in 0..25 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base32_decode(&base32(&bytes)).expect("decode"), bytes);
        }
        assert!(
            otpauth_uri("Ledger", "a b@example.com", b"x").starts_with("otpauth://totp/Ledger:a%20b%40example.com?")
        );
    }
}
