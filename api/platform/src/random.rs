//! The platform's one source of randomness: the operating system's CSPRNG through
//! `getrandom`. Every id, token, key and nonce comes from here; a failure is an error
//! for the caller, never a weaker fallback.

/// The operating system could not give random bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no randomness available")]
pub struct RandomError;

/// `N` bytes from the operating system's CSPRNG.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|error| {
        tracing::error!(%error, "the operating system gave no random bytes");
        RandomError
    })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_differ_between_calls() {
        let (a, b) = (super::bytes::<16>().expect("random"), super::bytes::<16>().expect("random"));
        assert_ne!(a, b, "two draws of 128 bits are equal with probability 2^-128");
    }
}
