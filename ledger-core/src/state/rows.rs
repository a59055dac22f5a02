//! The state store's rows: an account, or a transfer as stored, in bytes without its
//! id (the row's key holds it).
//!
//! Integers are written as their significant bytes, little-endian, with their byte
//! counts first, a nibble each (0 to 14, or 15 for 16 bytes), two to a byte, low nibble
//! first (an unused last nibble is 0). Then fixed fields, then (transfers) the metadata
//! after its length (2 bytes). Hand-written rather than serde and bincode: the store
//! writes a row for every account and transfer a hand-off changed, and the encoding
//! was a fifth of the store thread's time.
//!
//! An account: integers owner, debits pending, debits posted, credits pending, credits
//! posted, opening time, flags; then currency (2 bytes: its index), code (2), state (1).
//!
//! A transfer: integers debit account, credit account, amount, time, expiry, revision
//! made, revision changed, the kind's argument (a pending transfer's timeout, or the id
//! of the pending transfer posted or voided), the posted amount and the transfer that
//! posted or voided it (a pending transfer's status); then currency (2), code (2), a tag
//! byte (kind in bits 0-1, status in bits 2-4, linked in bit 5), metadata.
//!
//! Decoding checks every byte (counts, each integer's range, tags, UTF-8, no bytes
//! after the end, no field a kind or status does not use): a damaged row is an error,
//! never a default value.

use crate::domain::{
    Account, AccountFlags, AccountId, AccountState, Movement, PendingStatus, Transfer, TransferId, TransferKind,
    METADATA_BYTES_MAX,
};
use crate::money::Currency;
use crate::state::StoredTransfer;

/// Why a row does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a state row that does not decode: {0}")]
pub struct RowError(pub &'static str);

const ACCOUNT_INTS: usize = 7;
const TRANSFER_INTS: usize = 10;

/// Significant bytes of `value` as stored: 0 to 14, or 16 (a nibble's 15).
pub(crate) fn stored_len(value: u128) -> usize {
    match 16 - value.leading_zeros() as usize / 8 {
        15 => 16,
        len => len,
    }
}

/// The byte count a nibble stands for.
pub(crate) fn nibble_len(nibble: u8) -> usize {
    match nibble {
        15 => 16,
        len => len as usize,
    }
}

/// The nibble that stands for `len` bytes (one of `stored_len`'s answers).
pub(crate) fn len_nibble(len: usize) -> u8 {
    if len == 16 {
        15
    } else {
        len as u8
    }
}

fn put_ints<const N: usize>(values: [u128; N], out: &mut Vec<u8>) {
    let lens = values.map(stored_len);
    for pair in lens.chunks(2) {
        out.push(len_nibble(pair[0]) | pair.get(1).map_or(0, |len| len_nibble(*len) << 4));
    }
    for (value, len) in values.iter().zip(lens) {
        out.extend_from_slice(&value.to_le_bytes()[..len]);
    }
}

/// Takes `n` bytes off the front of `bytes`.
fn take<'b>(bytes: &mut &'b [u8], n: usize) -> Result<&'b [u8], RowError> {
    let (front, rest) = bytes.split_at_checked(n).ok_or(RowError("too short"))?;
    *bytes = rest;
    Ok(front)
}

fn take_u16(bytes: &mut &[u8]) -> Result<u16, RowError> {
    let front = take(bytes, 2)?;
    Ok(u16::from_le_bytes([front[0], front[1]]))
}

fn take_ints<const N: usize>(bytes: &mut &[u8]) -> Result<[u128; N], RowError> {
    let header = take(bytes, N.div_ceil(2))?;
    if N % 2 == 1 && header[N / 2] >> 4 != 0 {
        return Err(RowError("an unused length nibble is set"));
    }
    let mut values = [0u128; N];
    for (field, value) in values.iter_mut().enumerate() {
        let len = nibble_len(header[field / 2] >> (4 * (field % 2)) & 0x0f);
        let mut le = [0u8; 16];
        le[..len].copy_from_slice(take(bytes, len)?);
        *value = u128::from_le_bytes(le);
        if stored_len(*value) != len {
            return Err(RowError("an integer with more bytes than it needs"));
        }
    }
    Ok(values)
}

fn currency(index: u16) -> Result<Currency, RowError> {
    Currency::from_index(index).ok_or(RowError("an unknown currency"))
}

fn narrow<T: TryFrom<u128>>(value: u128, what: &'static str) -> Result<T, RowError> {
    T::try_from(value).map_err(|_| RowError(what))
}

pub(crate) fn state_byte(state: AccountState) -> u8 {
    match state {
        AccountState::Open => 0,
        AccountState::Frozen => 1,
        AccountState::Closed => 2,
    }
}

/// The state `state_byte` gave `byte`, if it gave one.
pub(crate) fn state_of(byte: u8) -> Option<AccountState> {
    match byte {
        0 => Some(AccountState::Open),
        1 => Some(AccountState::Frozen),
        2 => Some(AccountState::Closed),
        _ => None,
    }
}

/// An account's integers, in the row's order.
pub(crate) fn account_ints(account: &Account) -> [u128; ACCOUNT_INTS] {
    [
        account.owner_id,
        account.debits_pending,
        account.debits_posted,
        account.credits_pending,
        account.credits_posted,
        u128::from(account.timestamp_ns),
        u128::from(account.flags.0),
    ]
}

/// `account`'s row, appended to `out`.
pub fn encode_account(account: &Account, out: &mut Vec<u8>) {
    put_ints(account_ints(account), out);
    out.extend_from_slice(&account.currency.index().to_le_bytes());
    out.extend_from_slice(&account.code.to_le_bytes());
    out.push(state_byte(account.state));
}

/// The account `id` of a row `encode_account` wrote.
pub fn decode_account(id: AccountId, mut bytes: &[u8]) -> Result<Account, RowError> {
    let bytes = &mut bytes;
    let [owner_id, debits_pending, debits_posted, credits_pending, credits_posted, timestamp_ns, flags] =
        take_ints::<ACCOUNT_INTS>(bytes)?;
    let currency = currency(take_u16(bytes)?)?;
    let code = take_u16(bytes)?;
    let state = state_of(take(bytes, 1)?[0]).ok_or(RowError("an unknown account state"))?;
    if !bytes.is_empty() {
        return Err(RowError("bytes after the end"));
    }
    Ok(Account {
        id,
        currency,
        code,
        flags: AccountFlags(narrow(flags, "flags beyond 32 bits")?),
        owner_id,
        state,
        debits_pending,
        debits_posted,
        credits_pending,
        credits_posted,
        timestamp_ns: narrow(timestamp_ns, "a time beyond 64 bits")?,
    })
}

/// `stored`'s row, appended to `out`; an error (and nothing appended) for metadata
/// longer than `METADATA_BYTES_MAX`, which the decider never lets in.
pub fn encode_transfer(stored: &StoredTransfer, out: &mut Vec<u8>) -> Result<(), RowError> {
    let (transfer, movement) = (&stored.transfer, &stored.transfer.movement);
    if movement.metadata.len() > METADATA_BYTES_MAX {
        return Err(RowError("metadata longer than allowed"));
    }
    let (kind, argument) = match transfer.kind {
        TransferKind::Posted => (0, 0),
        TransferKind::Pending { timeout_ns } => (1, u128::from(timeout_ns)),
        TransferKind::PostPending { pending_id } => (2, pending_id.0),
        TransferKind::VoidPending { pending_id } => (3, pending_id.0),
    };
    let (status, amount, by) = match transfer.pending_status {
        None => (0, 0, 0),
        Some(PendingStatus::Pending) => (1, 0, 0),
        Some(PendingStatus::Posted { amount, by }) => (2, amount, by.0),
        Some(PendingStatus::Voided { by }) => (3, 0, by.0),
        Some(PendingStatus::Expired) => (4, 0, 0),
    };
    put_ints(
        [
            movement.debit_account_id.0,
            movement.credit_account_id.0,
            movement.amount,
            u128::from(transfer.timestamp_ns),
            u128::from(transfer.expires_at_ns),
            u128::from(stored.created),
            u128::from(stored.changed),
            argument,
            amount,
            by,
        ],
        out,
    );
    out.extend_from_slice(&movement.currency.index().to_le_bytes());
    out.extend_from_slice(&movement.code.to_le_bytes());
    out.push(kind | status << 2 | u8::from(movement.linked) << 5);
    // At most METADATA_BYTES_MAX (checked above), so it fits two bytes.
    out.extend_from_slice(&(movement.metadata.len() as u16).to_le_bytes());
    out.extend_from_slice(movement.metadata.as_bytes());
    Ok(())
}

/// The transfer `id` of a row `encode_transfer` wrote.
pub fn decode_transfer(id: TransferId, mut bytes: &[u8]) -> Result<StoredTransfer, RowError> {
    let bytes = &mut bytes;
    let [debit, credit, amount, timestamp_ns, expires_at_ns, created, changed, argument, posted, by] =
        take_ints::<TRANSFER_INTS>(bytes)?;
    let currency = currency(take_u16(bytes)?)?;
    let code = take_u16(bytes)?;
    let tag = take(bytes, 1)?[0];
    let metadata_len = take_u16(bytes)? as usize;
    if metadata_len > METADATA_BYTES_MAX {
        return Err(RowError("metadata longer than allowed"));
    }
    let metadata = std::str::from_utf8(take(bytes, metadata_len)?).map_err(|_| RowError("metadata not UTF-8"))?;
    if !bytes.is_empty() {
        return Err(RowError("bytes after the end"));
    }
    let kind = match (tag & 0b11, argument) {
        (0, 0) => TransferKind::Posted,
        (1, timeout) => TransferKind::Pending { timeout_ns: narrow(timeout, "a timeout beyond 64 bits")? },
        (2, pending) => TransferKind::PostPending { pending_id: TransferId(pending) },
        (3, pending) => TransferKind::VoidPending { pending_id: TransferId(pending) },
        _ => return Err(RowError("an argument the kind does not take")),
    };
    let pending_status = match (tag >> 2 & 0b111, posted, by) {
        (0, 0, 0) => None,
        (1, 0, 0) => Some(PendingStatus::Pending),
        (2, amount, by) => Some(PendingStatus::Posted { amount, by: TransferId(by) }),
        (3, 0, by) => Some(PendingStatus::Voided { by: TransferId(by) }),
        (4, 0, 0) => Some(PendingStatus::Expired),
        _ => return Err(RowError("a pending status that does not decode")),
    };
    if tag >> 6 != 0 {
        return Err(RowError("an unknown tag bit"));
    }
    let movement = Movement {
        id,
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount,
        currency,
        code,
        metadata: metadata.to_string(),
        linked: tag & 0b10_0000 != 0,
    };
    Ok(StoredTransfer {
        transfer: Transfer {
            movement,
            kind,
            timestamp_ns: narrow(timestamp_ns, "a time beyond 64 bits")?,
            expires_at_ns: narrow(expires_at_ns, "an expiry beyond 64 bits")?,
            pending_status,
        },
        created: narrow(created, "a revision beyond 64 bits")?,
        changed: narrow(changed, "a revision beyond 64 bits")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_u128() -> impl Strategy<Value = u128> {
        prop_oneof![Just(0u128), 1u128..300, any::<u64>().prop_map(u128::from), any::<u128>(), Just(u128::MAX)]
    }

    fn any_currency() -> impl Strategy<Value = Currency> {
        prop_oneof![Just("USD"), Just("EUR"), Just("JPY"), Just("BHD")].prop_map(|c| Currency::parse(c).expect("code"))
    }

    prop_compose! {
        fn any_account()(
            id in any_u128(), owner_id in any_u128(), totals in proptest::array::uniform4(any_u128()),
            timestamp_ns in any::<u64>(), flags in any::<u32>(), code in any::<u16>(), state in 0u8..3,
            currency in any_currency(),
        ) -> Account {
            let state = [AccountState::Open, AccountState::Frozen, AccountState::Closed][state as usize];
            Account {
                id: AccountId(id), currency, code, flags: AccountFlags(flags), owner_id, state,
                debits_pending: totals[0], debits_posted: totals[1], credits_pending: totals[2],
                credits_posted: totals[3], timestamp_ns,
            }
        }
    }

    fn any_kind() -> impl Strategy<Value = TransferKind> {
        prop_oneof![
            Just(TransferKind::Posted),
            any::<u64>().prop_map(|timeout_ns| TransferKind::Pending { timeout_ns }),
            any_u128().prop_map(|id| TransferKind::PostPending { pending_id: TransferId(id) }),
            any_u128().prop_map(|id| TransferKind::VoidPending { pending_id: TransferId(id) }),
        ]
    }

    fn any_status() -> impl Strategy<Value = Option<PendingStatus>> {
        prop_oneof![
            Just(None),
            Just(Some(PendingStatus::Pending)),
            (any_u128(), any_u128())
                .prop_map(|(amount, by)| Some(PendingStatus::Posted { amount, by: TransferId(by) })),
            any_u128().prop_map(|by| Some(PendingStatus::Voided { by: TransferId(by) })),
            Just(Some(PendingStatus::Expired)),
        ]
    }

    prop_compose! {
        fn any_transfer()(
            ids in proptest::array::uniform4(any_u128()), currency in any_currency(), code in any::<u16>(),
            metadata in "\\PC{0,40}", linked in any::<bool>(), kind in any_kind(), status in any_status(),
            times in proptest::array::uniform4(any::<u64>()),
        ) -> StoredTransfer {
            let movement = Movement {
                id: TransferId(ids[0]), debit_account_id: AccountId(ids[1]), credit_account_id: AccountId(ids[2]),
                amount: ids[3], currency, code, metadata, linked,
            };
            let transfer = Transfer {
                movement, kind, timestamp_ns: times[0], expires_at_ns: times[1], pending_status: status,
            };
            StoredTransfer { transfer, created: times[2], changed: times[3] }
        }
    }

    proptest! {
        #[test]
        fn an_account_decodes_to_itself(account in any_account()) {
            let mut row = Vec::new();
            encode_account(&account, &mut row);
            prop_assert_eq!(decode_account(account.id, &row), Ok(account));
        }

        #[test]
        fn a_transfer_decodes_to_itself(stored in any_transfer()) {
            let mut row = Vec::new();
            encode_transfer(&stored, &mut row).expect("encode");
            prop_assert_eq!(decode_transfer(stored.transfer.movement.id, &row), Ok(stored));
        }

        /// A changed byte, a byte more or a byte less: an error or another valid row,
        /// which encodes to exactly those bytes; never a panic, never two encodings of
        /// one value.
        #[test]
        fn damaged_rows_are_errors_or_other_rows(
            account in any_account(), stored in any_transfer(), at in any::<usize>(), byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let (mut a, mut t) = (Vec::new(), Vec::new());
            encode_account(&account, &mut a);
            encode_transfer(&stored, &mut t).expect("encode");
            for row in [&mut a, &mut t] {
                let at = at % row.len();
                if cut { row.truncate(at) } else { row[at] ^= byte.max(1) }
            }
            if let Ok(decoded) = decode_account(account.id, &a) {
                let mut again = Vec::new();
                encode_account(&decoded, &mut again);
                prop_assert_eq!(again, a);
            }
            if let Ok(decoded) = decode_transfer(stored.transfer.movement.id, &t) {
                let mut again = Vec::new();
                encode_transfer(&decoded, &mut again).expect("encode");
                prop_assert_eq!(again, t);
            }
        }
    }

    #[test]
    fn rows_are_small_and_a_byte_more_is_refused() {
        let account = Account {
            id: AccountId(7),
            currency: Currency::parse("USD").expect("usd"),
            code: 1,
            flags: AccountFlags(0),
            owner_id: 0,
            state: AccountState::Open,
            debits_pending: 0,
            debits_posted: 1_000_000,
            credits_pending: 0,
            credits_posted: 2_500,
            timestamp_ns: 1_764_547_200_000_000_000,
        };
        let mut row = Vec::new();
        encode_account(&account, &mut row);
        assert_eq!(row.len(), 4 + 3 + 2 + 8 + 5, "header, totals, time, fixed fields");
        row.push(0);
        assert_eq!(decode_account(account.id, &row), Err(RowError("bytes after the end")));
    }

    proptest! {
        #[test]
        fn metadata_too_long_is_an_error_and_writes_nothing(mut stored in any_transfer()) {
            stored.transfer.movement.metadata = "m".repeat(METADATA_BYTES_MAX + 1);
            let mut row = vec![7];
            prop_assert_eq!(encode_transfer(&stored, &mut row), Err(RowError("metadata longer than allowed")));
            prop_assert_eq!(row, vec![7]);
        }
    }
}
