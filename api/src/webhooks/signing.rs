//! Signing secrets and the `Ledger-Signature` header.
//!
//! An endpoint's secret is derived, never stored: `whsec_` + hex of
//! `blake3::keyed_hash(blake3::derive_key("ledgerd webhook signing v1", master key),
//! endpoint id)`. The header is Stripe's shape: `t=<unix seconds>,v1=<hex
//! HMAC-SHA256(secret, "<t>.<body>")>`, keyed with the whole secret string.

use ring::hmac;

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The blake3 key-derivation context of the signing key (changing it changes every secret).
const SIGNING_CONTEXT: &str = "ledgerd webhook signing v1";

/// The key every endpoint's secret derives from (itself derived from the master key).
#[derive(Clone)]
pub struct SigningKey([u8; 32]);

impl SigningKey {
    pub fn from_master(master: &[u8; 32]) -> SigningKey {
        SigningKey(blake3::derive_key(SIGNING_CONTEXT, master))
    }

    /// The endpoint's signing secret.
    pub fn secret(&self, endpoint_id: &str) -> String {
        let mac = blake3::keyed_hash(&self.0, endpoint_id.as_bytes());
        format!("{SECRET_PREFIX}{}", mac.to_hex())
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// The hex HMAC-SHA256 of `"<t>.<body>"` under `secret`.
pub fn signature(secret: &str, timestamp_secs: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp_secs.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Ledger-Signature` header's value.
pub fn header(secret: &str, timestamp_secs: u64, body: &[u8]) -> String {
    format!("t={timestamp_secs},v1={}", signature(secret, timestamp_secs, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn header_matches_a_vector_computed_with_openssl() {
        // printf '%s' '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac 'whsec_test'
        let header = header("whsec_test", 1_700_000_000, br#"{"id":"evt_1"}"#);
        assert_eq!(header, format!("t=1700000000,v1={}", OPENSSL_VECTOR));
    }

    const OPENSSL_VECTOR: &str = "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925";

    #[test]
    fn secrets_differ_per_endpoint_and_per_master_key() {
        let a = SigningKey::from_master(&[1; 32]);
        let b = SigningKey::from_master(&[2; 32]);
        let secret = a.secret("we_1");
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(secret.len(), SECRET_PREFIX.len() + 64);
        assert_eq!(secret, a.secret("we_1"), "derived, so stable across restarts");
        assert_ne!(secret, a.secret("we_2"));
        assert_ne!(secret, b.secret("we_1"));
    }
}
