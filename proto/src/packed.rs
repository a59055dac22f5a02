//! The compact form of CreateTransfers (`ledger.v1.PackedTransfers`): every transfer is
//! a fixed 128-byte little-endian record, so neither side formats or parses decimal
//! strings, and a batch of 8,189 transfers is one byte string instead of 8,189 messages.
//! The layout is documented in `proto/ledger/v1/ledger.proto`; clients write records
//! with [`TransferRecord::write`], the server reads them with [`TransferRecord::read`]
//! and checks the fields as it does those of the string form (`convert.rs`).

/// Bytes of one record.
pub const RECORD_BYTES: usize = 128;

/// `PackedTransferResults.status` values.
pub const STATUS_CREATED: u8 = 0;
pub const STATUS_ALREADY_EXISTS: u8 = 1;
pub const STATUS_FAILED: u8 = 2;

/// Bit 0 of the flags byte.
const FLAG_LINKED: u8 = 1;
const RESERVED: std::ops::Range<usize> = 95..RECORD_BYTES;

/// One transfer of a `PackedTransfers` request, before the server's checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferRecord {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: u128,
    pub pending_id: u128,
    pub timeout_ns: u64,
    pub code: u16,
    /// A `ledger.v1.TransferKind` number (0 means posted).
    pub kind: u8,
    pub linked: bool,
    /// ASCII ISO 4217 code; zeros for "as in the pending transfer".
    pub currency: [u8; 3],
}

/// Why a record could not be read (its field checks come after, in `convert.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Flag bits other than `linked` are set.
    UnknownFlags(u8),
    /// A reserved byte is not zero.
    Reserved,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Self::UnknownFlags(flags) => {
                write!(f, "flags: unknown bits {:#04x} (only bit 0, linked, is defined)", flags)
            }
            Self::Reserved => write!(f, "bytes 95..128 are reserved and must be zero"),
        }
    }
}

impl TransferRecord {
    /// Appends the record's 128 bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.debit_account_id.to_le_bytes());
        out.extend_from_slice(&self.credit_account_id.to_le_bytes());
        out.extend_from_slice(&self.amount.to_le_bytes());
        out.extend_from_slice(&self.pending_id.to_le_bytes());
        out.extend_from_slice(&self.timeout_ns.to_le_bytes());
        out.extend_from_slice(&self.code.to_le_bytes());
        out.push(self.kind);
        out.push(if self.linked { FLAG_LINKED } else { 0 });
        out.extend_from_slice(&self.currency);
        out.extend_from_slice(&[0; RESERVED.end - RESERVED.start]);
    }

    pub fn read(bytes: &[u8; RECORD_BYTES]) -> Result<Self, RecordError> {
        let u128_at = |at: usize| u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"));
        let flags = bytes[91];
        if flags & !FLAG_LINKED != 0 {
            return Err(RecordError::UnknownFlags(flags));
        }
        if bytes[RESERVED].iter().any(|&b| b != 0) {
            return Err(RecordError::Reserved);
        }
        Ok(Self {
            id: u128_at(0),
            debit_account_id: u128_at(16),
            credit_account_id: u128_at(32),
            amount: u128_at(48),
            pending_id: u128_at(64),
            timeout_ns: u64::from_le_bytes(bytes[80..88].try_into().expect("8 bytes")),
            code: u16::from_le_bytes([bytes[88], bytes[89]]),
            kind: bytes[90],
            linked: flags & FLAG_LINKED != 0,
            currency: [bytes[92], bytes[93], bytes[94]],
        })
    }

    /// The currency field of a code such as "USD" (zeros for an empty code).
    pub fn currency_bytes(code: &str) -> Result<[u8; 3], String> {
        match code.as_bytes() {
            [] => Ok([0; 3]),
            &[a, b, c] => Ok([a, b, c]),
            _ => Err(format!("currency {code:?}: expected a three-letter code")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(bytes: &[u8]) -> &[u8; RECORD_BYTES] {
        bytes.try_into().expect("one record")
    }

    fn record() -> impl Strategy<Value = TransferRecord> {
        (any::<[u128; 5]>(), any::<u64>(), any::<u16>(), any::<u8>(), any::<bool>(), any::<[u8; 3]>()).prop_map(
            |(
                [id, debit_account_id, credit_account_id, amount, pending_id],
                timeout_ns,
                code,
                kind,
                linked,
                currency,
            )| {
                TransferRecord {
                    id,
                    debit_account_id,
                    credit_account_id,
                    amount,
                    pending_id,
                    timeout_ns,
                    code,
                    kind,
                    linked,
                    currency,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn a_record_reads_back_as_written(record in record()) {
            let mut bytes = Vec::new();
            record.write(&mut bytes);
            prop_assert_eq!(bytes.len(), RECORD_BYTES);
            prop_assert_eq!(TransferRecord::read(whole(&bytes)), Ok(record));
        }

        #[test]
        fn unknown_flags_and_reserved_bytes_are_refused(record in record(), flag_bit in 1u32..8, at in RESERVED) {
            let mut bytes = Vec::new();
            record.write(&mut bytes);
            let mut flagged = bytes.clone();
            flagged[91] |= 1 << flag_bit;
            prop_assert!(matches!(
                TransferRecord::read(whole(&flagged)),
                Err(RecordError::UnknownFlags(_))
            ));
            bytes[at] = 1;
            prop_assert_eq!(TransferRecord::read(whole(&bytes)), Err(RecordError::Reserved));
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let record = TransferRecord {
            id: 1,
            debit_account_id: 2,
            credit_account_id: 3,
            amount: 4,
            pending_id: 5,
            timeout_ns: 6,
            code: 0x0708,
            kind: 2,
            linked: true,
            currency: *b"USD",
        };
        let mut bytes = Vec::new();
        record.write(&mut bytes);
        for (offset, value) in [(0, 1), (16, 2), (32, 3), (48, 4), (64, 5), (80, 6)] {
            assert_eq!(bytes[offset], value, "offset {offset}");
        }
        assert_eq!(&bytes[88..95], &[0x08, 0x07, 2, 1, b'U', b'S', b'D']);
        assert!(bytes[95..].iter().all(|&b| b == 0));
    }
}
