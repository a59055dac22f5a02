//! The tables and their row layouts: fixed-width little-endian fields, varints and
//! text, with their encoders and decoders.
//!
//! Every decoder checks what it reads and returns `ReadModelError::Corrupt` for a row
//! the encoders could not have written (short, long, an unknown enum byte or currency,
//! a varint that does not end or overflows, text that is not UTF-8). A damaged row is
//! never read as some other value.

use ledger_core::money::Currency;
use redb::TableDefinition;

use super::error::{corrupt, ReadModelError};
use super::model::{AccountView, Balances, Movement, MovementKind, Side, Status, Totals};

pub(super) const META_TABLE: &str = "meta";
pub(super) const ACCOUNTS_TABLE: &str = "accounts";
pub(super) const MOVEMENTS_TABLE: &str = "movements";
pub(super) const BUCKETS_TABLE: &str = "buckets";

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new(META_TABLE);
pub(super) const ACCOUNTS: TableDefinition<u128, &[u8]> = TableDefinition::new(ACCOUNTS_TABLE);
/// (account, timestamp of the block's first movement) → a block of up to `BLOCK_ROWS`
/// movements of that account in time order. Timestamps are unique per event and an
/// event moves at most once per account. Blocks fill up in order, so their boundaries
/// depend only on the sequence of movements, never on how events were batched.
pub(super) const MOVEMENTS: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new(MOVEMENTS_TABLE);
/// Movements per block: one B-tree insert carries many movements.
pub(super) const BLOCK_ROWS: usize = 32;
/// Unresolved pending transfer → (debit account, credit account, its timestamp).
pub(super) const PENDINGS: TableDefinition<u128, (u128, u128, u64)> = TableDefinition::new("pendings");
/// (account, quarter hour since the epoch) → posted credits, debits and count.
pub(super) const BUCKETS: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new(BUCKETS_TABLE);
/// (owner, account) → ().
pub(super) const OWNERS: TableDefinition<(u128, u128), ()> = TableDefinition::new("owners");
/// stream → (next revision, hash of the last record).
pub(super) const CHAIN: TableDefinition<&str, (u64, [u8; 32])> = TableDefinition::new("chain");
/// position → what did not verify there (the audit alarm).
pub(super) const ALARMS: TableDefinition<u64, &str> = TableDefinition::new("alarms");

pub(super) const NEXT_POSITION: &str = "next_position";

/// Reads a row's fields in order. A field the row is too short for, or bytes left
/// over at the end, is an error naming the field, so that a damaged row never panics
/// and never reads as a value.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields { bytes, at: 0 }
    }

    fn take(&mut self, length: usize, what: &str) -> Result<&'a [u8], String> {
        let field = self.at.checked_add(length).and_then(|end| self.bytes.get(self.at..end));
        let field = field.ok_or_else(|| format!("{} bytes end before {what}", self.bytes.len()))?;
        self.at += length;
        Ok(field)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16_le(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u64_le(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn u128_le(&mut self, what: &str) -> Result<u128, String> {
        Ok(u128::from_le_bytes(self.array(what)?))
    }

    /// A varint as `put_varint` writes it: 7 bits a byte, low bits first, at most the
    /// 128 bits of a u128.
    fn varint(&mut self, what: &str) -> Result<u128, String> {
        let mut value = 0u128;
        let mut shift = 0u32;
        loop {
            let byte = self.byte(what)?;
            let bits = u128::from(byte & 0x7f);
            if shift >= 128 || (shift > 121 && bits >> (128 - shift) != 0) {
                return Err(format!("{what} overflows 128 bits"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    fn balances_le(&mut self) -> Result<Balances, String> {
        Ok(Balances {
            debits_pending: self.u128_le("debits pending")?,
            debits_posted: self.u128_le("debits posted")?,
            credits_pending: self.u128_le("credits pending")?,
            credits_posted: self.u128_le("credits posted")?,
        })
    }

    fn balances_varint(&mut self) -> Result<Balances, String> {
        Ok(Balances {
            debits_pending: self.varint("debits pending")?,
            debits_posted: self.varint("debits posted")?,
            credits_pending: self.varint("credits pending")?,
            credits_posted: self.varint("credits posted")?,
        })
    }

    fn currency(&mut self) -> Result<Currency, String> {
        let code = self.take(3, "the currency")?;
        std::str::from_utf8(code)
            .ok()
            .and_then(|code| Currency::parse(code).ok())
            .ok_or_else(|| format!("unknown currency {code:?}"))
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at.min(self.bytes.len())..];
        self.at = self.bytes.len();
        rest
    }

    fn end(&self) -> Result<(), String> {
        match self.bytes.len().saturating_sub(self.at) {
            0 => Ok(()),
            extra => Err(format!("{extra} bytes past the row's end")),
        }
    }
}

fn put(out: &mut Vec<u8>, value: u128) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_balances(out: &mut Vec<u8>, b: &Balances) {
    for value in [b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted] {
        put(out, value);
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u128) {
    // `as u8` keeps the low 7 bits wanted here (with the continuation bit or the value
    // below 0x80).
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

// Movement blocks: u16 row count | rows; a row: u64 timestamp | u16 length | movement.

/// What a block key names in an error.
fn block_key(key: (u128, u64)) -> String {
    format!("account {}, block from {} ns", key.0, key.1)
}

/// The number of rows in a block, checked against the block's layout limits.
pub(super) fn block_count(key: (u128, u64), block: &[u8]) -> Result<usize, ReadModelError> {
    let count = Fields::new(block)
        .u16_le("the row count")
        .map_err(|reason| corrupt(MOVEMENTS_TABLE, block_key(key), reason))?;
    let count = usize::from(count);
    if count == 0 || count > BLOCK_ROWS {
        return Err(corrupt(MOVEMENTS_TABLE, block_key(key), format!("{count} rows where 1 to {BLOCK_ROWS} are due")));
    }
    Ok(count)
}

/// A new block holding no rows yet.
pub(super) fn new_block() -> Vec<u8> {
    let mut block = Vec::with_capacity(2 + BLOCK_ROWS * 64);
    block.extend_from_slice(&0u16.to_le_bytes());
    block
}

/// Appends a row to a block that has room for it (`count < BLOCK_ROWS`).
pub(super) fn push_row(block: &mut Vec<u8>, count: usize, timestamp_ns: u64, row: &[u8]) -> Result<(), String> {
    let count = u16::try_from(count + 1).map_err(|_| format!("{} rows do not fit a block", count + 1))?;
    let length =
        u16::try_from(row.len()).map_err(|_| format!("a movement of {} bytes does not fit a block", row.len()))?;
    let header = block.get_mut(..2).ok_or("a block without its row count")?;
    header.copy_from_slice(&count.to_le_bytes());
    block.extend_from_slice(&timestamp_ns.to_le_bytes());
    block.extend_from_slice(&length.to_le_bytes());
    block.extend_from_slice(row);
    Ok(())
}

/// A row of a block: its timestamp, the offset of its movement in the block, and the
/// movement's bytes.
pub(super) type BlockRow<'a> = (u64, usize, &'a [u8]);

/// The rows of a stored block, oldest first. Checks the layout as it goes: the first row is at the
/// block's key, timestamps do not go back, and the last row ends the block.
pub(super) struct BlockRows<'a> {
    key: (u128, u64),
    fields: Fields<'a>,
    left: usize,
    previous_ns: u64,
    failed: bool,
}

pub(super) fn block_rows(key: (u128, u64), block: &[u8]) -> Result<BlockRows<'_>, ReadModelError> {
    let left = block_count(key, block)?;
    let mut fields = Fields::new(block);
    fields.at = 2;
    Ok(BlockRows { key, fields, left, previous_ns: key.1, failed: false })
}

impl<'a> BlockRows<'a> {
    fn step(&mut self) -> Result<Option<BlockRow<'a>>, String> {
        if self.left == 0 {
            self.fields.end()?;
            return Ok(None);
        }
        let first = self.fields.at == 2;
        let timestamp_ns = self.fields.u64_le("a row's timestamp")?;
        let length = usize::from(self.fields.u16_le("a row's length")?);
        let offset = self.fields.at;
        let row = self.fields.take(length, "a row's end")?;
        if (first && timestamp_ns != self.key.1) || timestamp_ns < self.previous_ns {
            return Err(format!("a row at {timestamp_ns} ns is out of order"));
        }
        self.previous_ns = timestamp_ns;
        self.left -= 1;
        Ok(Some((timestamp_ns, offset, row)))
    }
}

impl<'a> Iterator for BlockRows<'a> {
    type Item = Result<BlockRow<'a>, ReadModelError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(row) => row.map(Ok),
            Err(reason) => {
                self.failed = true;
                Some(Err(corrupt(MOVEMENTS_TABLE, block_key(self.key), reason)))
            }
        }
    }
}

/// Sets the status of the movement at `timestamp_ns` in a block; false if the block
/// has no movement at that time.
pub(super) fn set_status(
    key: (u128, u64),
    block: &mut [u8],
    timestamp_ns: u64,
    status: Status,
) -> Result<bool, ReadModelError> {
    let mut found = None;
    for row in block_rows(key, block)? {
        let (row_ns, offset, row) = row?;
        if row_ns == timestamp_ns {
            // Check the whole row: a status written into a damaged row would hide it.
            decode_movement((key.0, row_ns), row)?;
            found = Some(offset + STATUS_OFFSET);
            break;
        }
    }
    let Some(at) = found else { return Ok(false) };
    // In bounds: the row decoded, so it is longer than its status byte.
    if let Some(byte) = block.get_mut(at) {
        *byte = status.byte();
    }
    Ok(true)
}

/// kind 1 | side 1 | status 1 | currency 3 | varints: transfer, counterparty, amount,
/// position, the four balances after | metadata.
pub(super) const STATUS_OFFSET: usize = 2;

pub(super) fn encode_movement(m: &Movement, out: &mut Vec<u8>) {
    out.push(m.kind as u8);
    out.push(matches!(m.side, Side::Credit) as u8);
    out.push(m.status.byte());
    out.extend_from_slice(m.currency.code().as_bytes());
    for value in [m.transfer_id, m.counterparty, m.amount, u128::from(m.position)] {
        put_varint(out, value);
    }
    let b = &m.after;
    for value in [b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted] {
        put_varint(out, value);
    }
    out.extend_from_slice(m.metadata.as_bytes());
}

/// The movement of `account` at `timestamp_ns` (`key`) from its row in a block.
pub(super) fn decode_movement(key: (u128, u64), bytes: &[u8]) -> Result<Movement, ReadModelError> {
    movement_fields(key, bytes)
        .map_err(|reason| corrupt(MOVEMENTS_TABLE, format!("account {}, movement at {} ns", key.0, key.1), reason))
}

fn movement_fields(key: (u128, u64), bytes: &[u8]) -> Result<Movement, String> {
    let mut fields = Fields::new(bytes);
    let kind = fields.byte("the kind")?;
    let kind = MovementKind::from_byte(kind).ok_or_else(|| format!("unknown kind byte {kind}"))?;
    let side = match fields.byte("the side")? {
        0 => Side::Debit,
        1 => Side::Credit,
        other => return Err(format!("unknown side byte {other}")),
    };
    let status = fields.byte("the status")?;
    let status = Status::from_byte(status).ok_or_else(|| format!("unknown status byte {status}"))?;
    let currency = fields.currency()?;
    let transfer_id = fields.varint("the transfer id")?;
    let counterparty = fields.varint("the counterparty")?;
    let amount = fields.varint("the amount")?;
    let position = fields.varint("the log position")?;
    let position = u64::try_from(position).map_err(|_| format!("log position {position} is past u64"))?;
    let after = fields.balances_varint()?;
    let metadata = std::str::from_utf8(fields.rest()).map_err(|error| format!("metadata: {error}"))?;
    Ok(Movement {
        account: key.0,
        timestamp_ns: key.1,
        transfer_id,
        kind,
        side,
        status,
        counterparty,
        amount,
        currency,
        position,
        after,
        metadata: metadata.to_owned(),
    })
}

/// currency 3 | owner 16 | opened 8 | balances 64.
pub(super) fn encode_account(a: &AccountView, out: &mut Vec<u8>) {
    out.extend_from_slice(a.currency.code().as_bytes());
    put(out, a.owner_id);
    out.extend_from_slice(&a.opened_ns.to_le_bytes());
    put_balances(out, &a.balances);
}

pub(super) fn decode_account(id: u128, bytes: &[u8]) -> Result<AccountView, ReadModelError> {
    let read = || {
        let mut fields = Fields::new(bytes);
        let view = AccountView {
            id,
            currency: fields.currency()?,
            owner_id: fields.u128_le("the owner")?,
            opened_ns: fields.u64_le("the opening time")?,
            balances: fields.balances_le()?,
        };
        fields.end()?;
        Ok(view)
    };
    read().map_err(|reason| corrupt(ACCOUNTS_TABLE, format!("account {id}"), reason))
}

/// credits 16 | debits 16 | count 8.
pub(super) fn encode_bucket(t: &Totals, out: &mut Vec<u8>) {
    put(out, t.credits);
    put(out, t.debits);
    out.extend_from_slice(&t.count.to_le_bytes());
}

/// The totals of `key`, (account, quarter hour since the epoch).
pub(super) fn decode_bucket(key: (u128, u64), bytes: &[u8]) -> Result<Totals, ReadModelError> {
    let read = || {
        let mut fields = Fields::new(bytes);
        let totals = Totals {
            credits: fields.u128_le("the credits")?,
            debits: fields.u128_le("the debits")?,
            count: fields.u64_le("the count")?,
        };
        fields.end()?;
        Ok(totals)
    };
    read().map_err(|reason| corrupt(BUCKETS_TABLE, format!("account {}, quarter hour {}", key.0, key.1), reason))
}

/// Every decoder of stored rows over the same bytes, for fuzzing: each answers a row
/// or a typed `Corrupt` error, never a panic. The first byte picks the key's timestamp
/// so a block's first row can match it.
#[doc(hidden)]
pub fn decode_any(bytes: &[u8]) -> usize {
    let key = (7u128, bytes.first().map_or(0, |b| u64::from(*b)));
    let mut decoded = 0;
    decoded += usize::from(decode_movement(key, bytes).is_ok());
    decoded += usize::from(decode_account(key.0, bytes).is_ok());
    decoded += usize::from(decode_bucket(key, bytes).is_ok());
    if let Ok(rows) = block_rows(key, bytes) {
        for row in rows {
            match row {
                Ok((_, _, movement)) => decoded += usize::from(decode_movement(key, movement).is_ok()),
                Err(_) => break,
            }
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn movement() -> Movement {
        Movement {
            account: 1,
            transfer_id: u128::MAX,
            kind: MovementKind::PendingVoided,
            side: Side::Credit,
            counterparty: 2,
            amount: 1 << 100,
            currency: Currency::parse("EUR").expect("EUR"),
            timestamp_ns: 77,
            metadata: "memo ü".into(),
            status: Status::Voided,
            position: u64::MAX,
            after: Balances { debits_pending: 0, debits_posted: 1, credits_pending: u128::MAX, credits_posted: 3 },
        }
    }

    #[test]
    fn rows_round_trip() {
        let mut bytes = Vec::new();
        encode_movement(&movement(), &mut bytes);
        assert_eq!(decode_movement((1, 77), &bytes), Ok(movement()));
        let view = AccountView {
            id: 9,
            currency: Currency::parse("USD").expect("USD"),
            owner_id: 4,
            opened_ns: 5,
            balances: movement().after,
        };
        bytes.clear();
        encode_account(&view, &mut bytes);
        assert_eq!(decode_account(9, &bytes), Ok(view));
        let totals = Totals { credits: u128::MAX, debits: 2, count: 3 };
        bytes.clear();
        encode_bucket(&totals, &mut bytes);
        assert_eq!(decode_bucket((9, 1), &bytes), Ok(totals));
    }

    /// Each damage makes the decoder fail with `Corrupt`: before, a damaged currency
    /// read as the first currency, an unknown status as "expired" and a short row
    /// panicked.
    #[test]
    fn a_damaged_movement_row_is_an_error_not_a_value() {
        let mut good = Vec::new();
        encode_movement(&movement(), &mut good);
        let mut damaged: Vec<(&str, Vec<u8>)> = Vec::new();
        for (at, byte, what) in [(0, 9, "kind"), (1, 2, "side"), (STATUS_OFFSET, 4, "status"), (3, b'X', "currency")] {
            let mut bytes = good.clone();
            bytes[at] = byte;
            damaged.push((what, bytes));
        }
        let mut bytes = good.clone();
        bytes[3..6].copy_from_slice(b"\xff\xfe\xfd");
        damaged.push(("currency", bytes));
        damaged.push(("end", good[..5].to_vec()));
        damaged.push(("transfer id", good[..10].to_vec()));
        let mut bytes = good[..6].to_vec();
        bytes.extend_from_slice(&[0xff; 19]);
        bytes.push(0x01);
        damaged.push(("overflows", bytes));
        let mut bytes = good.clone();
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        damaged.push(("metadata", bytes));
        for (what, bytes) in damaged {
            match decode_movement((1, 77), &bytes) {
                Err(ReadModelError::Corrupt { table: "movements", key, reason }) => {
                    assert_eq!(key, "account 1, movement at 77 ns");
                    assert!(reason.contains(what), "{what}: {reason}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_damaged_account_or_bucket_row_is_an_error_not_a_value() {
        let view = AccountView {
            id: 9,
            currency: Currency::parse("USD").expect("USD"),
            owner_id: 4,
            opened_ns: 5,
            balances: Balances::default(),
        };
        let mut good = Vec::new();
        encode_account(&view, &mut good);
        let mut xxx = good.clone();
        xxx[..3].copy_from_slice(b"XXX");
        let mut long = good.clone();
        long.push(0);
        for bytes in [xxx, good[..good.len() - 1].to_vec(), long, Vec::new()] {
            assert!(
                matches!(decode_account(9, &bytes), Err(ReadModelError::Corrupt { table: "accounts", .. })),
                "{bytes:?}"
            );
        }
        assert!(matches!(decode_bucket((9, 1), &[0; 39]), Err(ReadModelError::Corrupt { table: "buckets", .. })));
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_short_list() {
        let mut row = Vec::new();
        encode_movement(&movement(), &mut row);
        let mut block = new_block();
        push_row(&mut block, 0, 77, &row).expect("push");
        push_row(&mut block, 1, 78, &row).expect("push");
        let rows: Vec<_> = block_rows((1, 77), &block).expect("rows").collect::<Result<_, _>>().expect("rows");
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [77, 78]);
        let truncated = &block[..block.len() - 3];
        assert!(block_rows((1, 77), truncated).expect("count").any(|r| r.is_err()));
        let mut longer = block.clone();
        longer.push(0);
        assert!(block_rows((1, 77), &longer).expect("count").any(|r| r.is_err()));
        assert!(block_rows((1, 76), &block).expect("count").any(|r| r.is_err()), "first row not at the key");
        let mut empty = block.clone();
        empty[..2].copy_from_slice(&0u16.to_le_bytes());
        assert!(block_rows((1, 77), &empty).is_err());
        let mut status = block.clone();
        assert_eq!(set_status((1, 77), &mut status, 78, Status::Posted), Ok(true));
        assert_eq!(set_status((1, 77), &mut status, 79, Status::Posted), Ok(false));
        assert!(set_status((1, 77), &mut block[..40].to_vec(), 78, Status::Posted).is_err());
    }
}
