//! Conversion between domain events and their durable protobuf encoding
//! (`ledger.events.v1.LedgerEvent`). The bytes produced here are what the hash chain
//! covers; decoding checks every field, because the log is outside input to an auditor.

use ledger_proto::events::v1 as pb;
use prost::Message;

use crate::domain::*;
use crate::money::Currency;

/// Why stored bytes are not a valid ledger event.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a protobuf LedgerEvent: {0}")]
    Protobuf(String),
    #[error("event has no kind")]
    MissingKind,
    #[error("field {0} is missing")]
    MissingField(&'static str),
    #[error("field {0} is out of range")]
    OutOfRange(&'static str),
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
}

fn u128_to_pb(value: u128) -> Option<pb::U128> {
    Some(pb::U128 { hi: (value >> 64) as u64, lo: value as u64 })
}

fn u128_from_pb(value: Option<pb::U128>, field: &'static str) -> Result<u128, DecodeError> {
    let value = value.ok_or(DecodeError::MissingField(field))?;
    Ok((u128::from(value.hi) << 64) | u128::from(value.lo))
}

fn currency_from_pb(code: &str) -> Result<Currency, DecodeError> {
    Currency::parse(code).map_err(|_| DecodeError::UnknownCurrency(code.chars().take(16).collect()))
}

fn code_from_pb(code: u32) -> Result<u16, DecodeError> {
    u16::try_from(code).map_err(|_| DecodeError::OutOfRange("code"))
}

/// Encodes an event, appending its bytes to `out`.
///
/// Posted and pending transfers, the hot path, are written field by field without
/// building the generated message (which would allocate its strings); the bytes are
/// exactly what prost writes for the same message, as a test checks.
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    match &event.kind {
        EventKind::TransferPosted(movement) => encode_movement(event.timestamp_ns, 20, movement, 0, out),
        EventKind::TransferPending { movement, timeout_ns } => {
            encode_movement(event.timestamp_ns, 21, movement, *timeout_ns, out)
        }
        _ => to_pb(event).encode(out).expect("a Vec grows as needed, so encoding cannot fail"),
    }
}

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LENGTH_DELIMITED: u64 = 2;

fn put_key(field: u64, wire: u64, out: &mut Vec<u8>) {
    prost::encoding::encode_varint((field << 3) | wire, out);
}

fn u128_body_len(value: u128) -> usize {
    usize::from((value >> 64) as u64 != 0) * 9 + usize::from(value as u64 != 0) * 9
}

fn put_u128(field: u64, value: u128, out: &mut Vec<u8>) {
    put_key(field, WIRE_LENGTH_DELIMITED, out);
    out.push(u128_body_len(value) as u8);
    let (hi, lo) = ((value >> 64) as u64, value as u64);
    if hi != 0 {
        put_key(1, WIRE_FIXED64, out);
        out.extend_from_slice(&hi.to_le_bytes());
    }
    if lo != 0 {
        put_key(2, WIRE_FIXED64, out);
        out.extend_from_slice(&lo.to_le_bytes());
    }
}

fn put_bytes(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    if !bytes.is_empty() {
        put_key(field, WIRE_LENGTH_DELIMITED, out);
        prost::encoding::encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
}

fn put_varint(field: u64, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        put_key(field, WIRE_VARINT, out);
        prost::encoding::encode_varint(value, out);
    }
}

fn varint_field_len(value: u64) -> usize {
    if value == 0 {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(value)
    }
}

fn bytes_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(len as u64) + len
    }
}

/// TransferPosted (field 20) or TransferPending (field 21) inside a LedgerEvent.
fn encode_movement(timestamp_ns: u64, kind_field: u64, m: &Movement, timeout_ns: u64, out: &mut Vec<u8>) {
    let body_len = [m.id.0, m.debit_account_id.0, m.credit_account_id.0, m.amount]
        .iter()
        .map(|v| 2 + u128_body_len(*v))
        .sum::<usize>()
        + bytes_field_len(m.currency.code().len())
        + varint_field_len(u64::from(m.code))
        + bytes_field_len(m.metadata.len())
        + if m.linked { 2 } else { 0 }
        + varint_field_len(timeout_ns);
    put_varint(1, timestamp_ns, out);
    put_key(kind_field, WIRE_LENGTH_DELIMITED, out);
    prost::encoding::encode_varint(body_len as u64, out);
    put_u128(1, m.id.0, out);
    put_u128(2, m.debit_account_id.0, out);
    put_u128(3, m.credit_account_id.0, out);
    put_u128(4, m.amount, out);
    put_bytes(5, m.currency.code().as_bytes(), out);
    put_varint(6, u64::from(m.code), out);
    put_bytes(7, m.metadata.as_bytes(), out);
    if m.linked {
        put_varint(8, 1, out);
    }
    put_varint(9, timeout_ns, out);
}

pub fn to_pb(event: &Event) -> pb::LedgerEvent {
    use pb::ledger_event::Kind;
    let kind = match &event.kind {
        EventKind::AccountOpened(new) => Kind::AccountOpened(pb::AccountOpened {
            account_id: u128_to_pb(new.id.0),
            currency: new.currency.code().to_string(),
            code: u32::from(new.code),
            flags: new.flags.0,
            owner_id: u128_to_pb(new.owner_id),
        }),
        EventKind::AccountFrozen(id) => Kind::AccountFrozen(pb::AccountFrozen { account_id: u128_to_pb(id.0) }),
        EventKind::AccountUnfrozen(id) => Kind::AccountUnfrozen(pb::AccountUnfrozen { account_id: u128_to_pb(id.0) }),
        EventKind::AccountClosed(id) => Kind::AccountClosed(pb::AccountClosed { account_id: u128_to_pb(id.0) }),
        EventKind::TransferPosted(m) => Kind::TransferPosted(pb::TransferPosted {
            transfer_id: u128_to_pb(m.id.0),
            debit_account_id: u128_to_pb(m.debit_account_id.0),
            credit_account_id: u128_to_pb(m.credit_account_id.0),
            amount: u128_to_pb(m.amount),
            currency: m.currency.code().to_string(),
            code: u32::from(m.code),
            metadata: m.metadata.clone(),
            linked: m.linked,
        }),
        EventKind::TransferPending { movement: m, timeout_ns } => Kind::TransferPending(pb::TransferPending {
            transfer_id: u128_to_pb(m.id.0),
            debit_account_id: u128_to_pb(m.debit_account_id.0),
            credit_account_id: u128_to_pb(m.credit_account_id.0),
            amount: u128_to_pb(m.amount),
            currency: m.currency.code().to_string(),
            code: u32::from(m.code),
            metadata: m.metadata.clone(),
            linked: m.linked,
            timeout_ns: *timeout_ns,
        }),
        EventKind::PendingPosted { movement: m, pending_id, pending_amount } => {
            Kind::PendingPosted(pb::PendingPosted {
                transfer_id: u128_to_pb(m.id.0),
                pending_id: u128_to_pb(pending_id.0),
                debit_account_id: u128_to_pb(m.debit_account_id.0),
                credit_account_id: u128_to_pb(m.credit_account_id.0),
                amount: u128_to_pb(m.amount),
                pending_amount: u128_to_pb(*pending_amount),
                currency: m.currency.code().to_string(),
                code: u32::from(m.code),
                metadata: m.metadata.clone(),
                linked: m.linked,
            })
        }
        EventKind::PendingVoided { movement: m, pending_id } => Kind::PendingVoided(pb::PendingVoided {
            transfer_id: u128_to_pb(m.id.0),
            pending_id: u128_to_pb(pending_id.0),
            debit_account_id: u128_to_pb(m.debit_account_id.0),
            credit_account_id: u128_to_pb(m.credit_account_id.0),
            pending_amount: u128_to_pb(m.amount),
            currency: m.currency.code().to_string(),
            code: u32::from(m.code),
            metadata: m.metadata.clone(),
            linked: m.linked,
        }),
        EventKind::PendingExpired { pending_id, debit_account_id, credit_account_id, pending_amount, currency } => {
            Kind::PendingExpired(pb::PendingExpired {
                pending_id: u128_to_pb(pending_id.0),
                debit_account_id: u128_to_pb(debit_account_id.0),
                credit_account_id: u128_to_pb(credit_account_id.0),
                pending_amount: u128_to_pb(*pending_amount),
                currency: currency.code().to_string(),
            })
        }
    };
    pb::LedgerEvent { timestamp_ns: event.timestamp_ns, kind: Some(kind) }
}

/// Decodes and checks stored event bytes.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    let message = pb::LedgerEvent::decode(bytes).map_err(|error| DecodeError::Protobuf(error.to_string()))?;
    from_pb(message)
}

struct MovementFields {
    id: Option<pb::U128>,
    debit: Option<pb::U128>,
    credit: Option<pb::U128>,
    amount: Option<pb::U128>,
    currency: String,
    code: u32,
    metadata: String,
    linked: bool,
}

fn movement_from_pb(f: MovementFields) -> Result<Movement, DecodeError> {
    if f.metadata.len() > METADATA_BYTES_MAX {
        return Err(DecodeError::OutOfRange("metadata"));
    }
    Ok(Movement {
        id: TransferId(u128_from_pb(f.id, "transfer_id")?),
        debit_account_id: AccountId(u128_from_pb(f.debit, "debit_account_id")?),
        credit_account_id: AccountId(u128_from_pb(f.credit, "credit_account_id")?),
        amount: u128_from_pb(f.amount, "amount")?,
        currency: currency_from_pb(&f.currency)?,
        code: code_from_pb(f.code)?,
        metadata: f.metadata,
        linked: f.linked,
    })
}

pub fn from_pb(message: pb::LedgerEvent) -> Result<Event, DecodeError> {
    use pb::ledger_event::Kind;
    let kind = match message.kind.ok_or(DecodeError::MissingKind)? {
        Kind::AccountOpened(e) => EventKind::AccountOpened(NewAccount {
            id: AccountId(u128_from_pb(e.account_id, "account_id")?),
            currency: currency_from_pb(&e.currency)?,
            code: code_from_pb(e.code)?,
            flags: AccountFlags(e.flags),
            owner_id: u128_from_pb(e.owner_id, "owner_id")?,
        }),
        Kind::AccountFrozen(e) => EventKind::AccountFrozen(AccountId(u128_from_pb(e.account_id, "account_id")?)),
        Kind::AccountUnfrozen(e) => EventKind::AccountUnfrozen(AccountId(u128_from_pb(e.account_id, "account_id")?)),
        Kind::AccountClosed(e) => EventKind::AccountClosed(AccountId(u128_from_pb(e.account_id, "account_id")?)),
        Kind::TransferPosted(e) => EventKind::TransferPosted(movement_from_pb(MovementFields {
            id: e.transfer_id,
            debit: e.debit_account_id,
            credit: e.credit_account_id,
            amount: e.amount,
            currency: e.currency,
            code: e.code,
            metadata: e.metadata,
            linked: e.linked,
        })?),
        Kind::TransferPending(e) => EventKind::TransferPending {
            timeout_ns: e.timeout_ns,
            movement: movement_from_pb(MovementFields {
                id: e.transfer_id,
                debit: e.debit_account_id,
                credit: e.credit_account_id,
                amount: e.amount,
                currency: e.currency,
                code: e.code,
                metadata: e.metadata,
                linked: e.linked,
            })?,
        },
        Kind::PendingPosted(e) => EventKind::PendingPosted {
            pending_id: TransferId(u128_from_pb(e.pending_id, "pending_id")?),
            pending_amount: u128_from_pb(e.pending_amount, "pending_amount")?,
            movement: movement_from_pb(MovementFields {
                id: e.transfer_id,
                debit: e.debit_account_id,
                credit: e.credit_account_id,
                amount: e.amount,
                currency: e.currency,
                code: e.code,
                metadata: e.metadata,
                linked: e.linked,
            })?,
        },
        Kind::PendingVoided(e) => EventKind::PendingVoided {
            pending_id: TransferId(u128_from_pb(e.pending_id, "pending_id")?),
            movement: movement_from_pb(MovementFields {
                id: e.transfer_id,
                debit: e.debit_account_id,
                credit: e.credit_account_id,
                amount: e.pending_amount,
                currency: e.currency,
                code: e.code,
                metadata: e.metadata,
                linked: e.linked,
            })?,
        },
        Kind::PendingExpired(e) => EventKind::PendingExpired {
            pending_id: TransferId(u128_from_pb(e.pending_id, "pending_id")?),
            debit_account_id: AccountId(u128_from_pb(e.debit_account_id, "debit_account_id")?),
            credit_account_id: AccountId(u128_from_pb(e.credit_account_id, "credit_account_id")?),
            pending_amount: u128_from_pb(e.pending_amount, "pending_amount")?,
            currency: currency_from_pb(&e.currency)?,
        },
    };
    Ok(Event { timestamp_ns: message.timestamp_ns, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hand_written_encoding_equals_prost(
            id in any::<u128>(), debit in any::<u128>(), credit in any::<u128>(), amount in any::<u128>(),
            code in any::<u16>(), metadata in ".{0,40}", linked in any::<bool>(), timestamp_ns in any::<u64>(),
            timeout_ns in prop_oneof![Just(0u64), any::<u64>()], pending in any::<bool>(), currency in 0usize..150,
        ) {
            let currency = Currency::all().nth(currency).expect("table has 150 currencies");
            let movement = Movement {
                id: TransferId(id), debit_account_id: AccountId(debit), credit_account_id: AccountId(credit),
                amount, currency, code, metadata, linked,
            };
            let kind = if pending { EventKind::TransferPending { movement, timeout_ns } } else { EventKind::TransferPosted(movement) };
            let event = Event { timestamp_ns, kind };
            let mut ours = Vec::new();
            encode_event(&event, &mut ours);
            prop_assert_eq!(&ours, &to_pb(&event).encode_to_vec());
            prop_assert_eq!(decode_event(&ours), Ok(event));
        }
    }
}
