//! Passwords: argon2id with the OWASP parameters (19 MiB, 2 passes, 1 lane), a
//! length policy and a built-in list of common breached passwords.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest password accepted, in characters (NIST SP 800-63B asks at least 8; we ask
/// more because second factors are optional).
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Longest password accepted, in bytes (bounds the hashing work an attacker can ask for).
pub const PASSWORD_BYTES_MAX: usize = 256;

/// The most common passwords of public breach corpora at or above the minimum length,
/// and the stems that people pad to reach it. Compared case-insensitively.
const COMMON: &str = include_str!("common_passwords.txt");

/// Memory of one argon2id hash or check, in KiB (19 MiB).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;

fn argon2() -> Result<Argon2<'static>, PasswordError> {
    // OWASP Password Storage Cheat Sheet: m = 19 MiB, t = 2, p = 1. Never other
    // parameters silently: a refusal of these is an error.
    let params = Params::new(ARGON2_MEMORY_KIB, 2, 1, None).map_err(|_| PasswordError::Hash)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password: at least {PASSWORD_CHARS_MIN} characters")]
    TooShort,
    #[error("password: at most {PASSWORD_BYTES_MAX} bytes")]
    TooLong,
    #[error("password: this password is in lists of breached passwords; choose another")]
    Common,
    #[error("password: must not contain the email address's name")]
    ContainsEmail,
    #[error("password hashing failed")]
    Hash,
}

/// Checks a new password against the policy.
pub fn check_policy(password: &str, email: &str) -> Result<(), PasswordError> {
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < PASSWORD_CHARS_MIN {
        return Err(PasswordError::TooShort);
    }
    let lower = password.to_lowercase();
    if is_common(&lower) {
        return Err(PasswordError::Common);
    }
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    if local.len() >= 4 && lower.contains(&local) {
        return Err(PasswordError::ContainsEmail);
    }
    Ok(())
}

fn is_common(lower: &str) -> bool {
    // The whole password, or a common stem padded with digits and symbols.
    let stem = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation() || c == ' ');
    let listed = COMMON.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let only_digits = lower.bytes().all(|b| b.is_ascii_digit());
    let one_character = lower.chars().all(|c| lower.starts_with(c));
    only_digits || one_character || is_sequence(lower) || listed.into_iter().any(|c| c == lower || c == stem)
}

/// "123456789012", "abcdefghijkl": runs of consecutive characters.
fn is_sequence(lower: &str) -> bool {
    let bytes = lower.as_bytes();
    bytes.windows(2).all(|w| w[1] == w[0].wrapping_add(1) || (w[0] == b'9' && w[1] == b'0'))
}

/// The argon2id PHC string of `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let salt: [u8; 16] = crate::random::bytes().map_err(|_| PasswordError::Hash)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| PasswordError::Hash)?;
    argon2()?.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| PasswordError::Hash)
}

/// Whether `password` matches `phc`. Always does the full work, so a wrong password
/// and an unknown user take the same time (callers verify against a dummy hash).
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > PASSWORD_BYTES_MAX {
        return false;
    }
    // Without a hasher nothing verifies: a failure refuses the sign-in.
    match (PasswordHash::new(phc), argon2()) {
        (Ok(parsed), Ok(argon2)) => argon2.verify_password(password.as_bytes(), &parsed).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let phc = hash("correct horse battery staple").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse battery staple", &phc));
        assert!(!verify("correct horse battery stapler", &phc));
        assert!(!verify("x", "not a hash"));
        assert_ne!(hash("correct horse battery staple").expect("hash"), phc, "salted");
    }

    #[test]
    fn policy_refuses_short_long_common_and_email_passwords() {
        let email = "ada.lovelace@example.com";
        assert_eq!(check_policy("short", email), Err(PasswordError::TooShort));
        assert_eq!(check_policy(&"x".repeat(300), email), Err(PasswordError::TooLong));
        for common in ["password1234", "Password123!", "qwertyuiop12", "123456789012", "aaaaaaaaaaaa", "iloveyou2024!!"]
        {
            assert_eq!(check_policy(common, email), Err(PasswordError::Common), "{common}");
        }
        assert_eq!(check_policy("my ada.lovelace secret", email), Err(PasswordError::ContainsEmail));
        assert_eq!(check_policy("violet-anchor-tram-47", email), Ok(()));
    }
}
