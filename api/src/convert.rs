//! Conversion between wire types (generated from proto/ledger/v1) and domain types, and
//! the one mapping of domain errors to gRPC status codes. Everything from outside is
//! checked here; a malformed field is INVALID_ARGUMENT naming the item and field.

use ledger_core::codec;
use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_engine::store::{RecordedEvent, StoreError};
use ledger_engine::writer::LedgerError;
use ledger_proto::api::v1 as wire;
use tonic::Status;

use ledger_proto::packed::{TransferRecord, RECORD_BYTES, STATUS_ALREADY_EXISTS, STATUS_CREATED, STATUS_FAILED};

/// Longest decimal string of a u128.
const U128_DIGITS_MAX: usize = 39;

/// A field of item `index` of a request list, named only when an error needs it (a
/// batch of 8,189 transfers would otherwise format 50,000 names it never shows).
#[derive(Clone, Copy)]
struct ItemField {
    list: &'static str,
    index: usize,
    name: &'static str,
}

impl std::fmt::Display for ItemField {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}[{}].{}", self.list, self.index, self.name)
    }
}

pub fn parse_u128(field: impl std::fmt::Display, text: &str) -> Result<u128, Status> {
    if text.is_empty() || text.len() > U128_DIGITS_MAX || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Status::invalid_argument(format!(
            "{field}: expected an unsigned decimal integer, got {:?}",
            truncate(text)
        )));
    }
    decimal_digits_u128(text.as_bytes())
        .ok_or_else(|| Status::invalid_argument(format!("{field}: out of range (at most 2^128-1)")))
}

/// The value of a string of ASCII digits, `None` past `u128::MAX`. Nineteen digits
/// always fit a `u64`: digits are summed in `u64` runs of up to nineteen, and 128-bit
/// arithmetic runs once per run rather than once per digit (this runs several times
/// for every transfer of every request; a 39-digit id is three runs).
fn decimal_digits_u128(digits: &[u8]) -> Option<u128> {
    digits.chunks(19).try_fold(0u128, |value, run| {
        let run_value = run.iter().fold(0u64, |sum, digit| sum * 10 + u64::from(digit - b'0'));
        value.checked_mul(10u128.pow(run.len() as u32))?.checked_add(u128::from(run_value))
    })
}

/// An optional u128: empty means 0.
fn parse_u128_or_zero(field: impl std::fmt::Display, text: &str) -> Result<u128, Status> {
    if text.is_empty() {
        Ok(0)
    } else {
        parse_u128(field, text)
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(48).collect()
}

pub fn parse_currency(field: impl std::fmt::Display, code: &str) -> Result<Currency, Status> {
    Currency::parse(code)
        .map_err(|_| Status::invalid_argument(format!("{field}: unknown currency {:?}", truncate(code))))
}

fn parse_code(field: impl std::fmt::Display, code: u32) -> Result<u16, Status> {
    u16::try_from(code).map_err(|_| Status::invalid_argument(format!("{field}: at most 65535")))
}

pub fn account_command(index: usize, command: wire::AccountCommand) -> Result<AccountCommand, Status> {
    use wire::account_command::Command;
    let field = |name| ItemField { list: "commands", index, name };
    match command.command {
        Some(Command::Open(new)) => Ok(AccountCommand::Open(NewAccount {
            id: AccountId(parse_u128(field("open.id"), &new.id)?),
            currency: parse_currency(field("open.currency"), &new.currency)?,
            code: parse_code(field("open.code"), new.code)?,
            flags: AccountFlags(new.flags),
            owner_id: parse_u128_or_zero(field("open.owner_id"), &new.owner_id)?,
        })),
        Some(Command::Freeze(id)) => Ok(AccountCommand::Freeze(AccountId(parse_u128(field("freeze"), &id)?))),
        Some(Command::Unfreeze(id)) => Ok(AccountCommand::Unfreeze(AccountId(parse_u128(field("unfreeze"), &id)?))),
        Some(Command::Close(id)) => Ok(AccountCommand::Close(AccountId(parse_u128(field("close"), &id)?))),
        None => Err(Status::invalid_argument(format!("commands[{index}]: no command given"))),
    }
}

pub fn new_transfer(index: usize, t: wire::NewTransfer) -> Result<NewTransfer, Status> {
    let field = |name| ItemField { list: "transfers", index, name };
    let pending_id = if t.pending_id.is_empty() { None } else { Some(parse_u128(field("pending_id"), &t.pending_id)?) };
    let currency = if t.currency.is_empty() { None } else { Some(parse_currency(field("currency"), &t.currency)?) };
    checked_transfer(
        index,
        TransferFields {
            id: parse_u128(field("id"), &t.id)?,
            debit_account_id: parse_u128_or_zero(field("debit_account_id"), &t.debit_account_id)?,
            credit_account_id: parse_u128_or_zero(field("credit_account_id"), &t.credit_account_id)?,
            amount: parse_u128_or_zero(field("amount"), &t.amount)?,
            currency,
            code: t.code,
            metadata: t.metadata,
            linked: t.linked,
            kind: t.kind,
            timeout_ns: t.timeout_ns,
            pending_id,
        },
    )
}

/// A transfer's fields once read from either wire form.
struct TransferFields {
    id: u128,
    debit_account_id: u128,
    credit_account_id: u128,
    amount: u128,
    currency: Option<Currency>,
    code: u32,
    metadata: String,
    linked: bool,
    /// A `wire::TransferKind` number.
    kind: i32,
    timeout_ns: u64,
    /// `None` when not given.
    pending_id: Option<u128>,
}

/// The checks both wire forms share.
fn checked_transfer(index: usize, t: TransferFields) -> Result<NewTransfer, Status> {
    let field = |name| ItemField { list: "transfers", index, name };
    let pending = |pending_id: Option<u128>| {
        pending_id.map(TransferId).ok_or_else(|| {
            Status::invalid_argument(format!("{}: post and void name the pending transfer", field("pending_id")))
        })
    };
    let kind = match wire::TransferKind::try_from(t.kind) {
        Ok(wire::TransferKind::Unspecified | wire::TransferKind::Posted) => TransferKind::Posted,
        Ok(wire::TransferKind::Pending) => TransferKind::Pending { timeout_ns: t.timeout_ns },
        Ok(wire::TransferKind::PostPending) => TransferKind::PostPending { pending_id: pending(t.pending_id)? },
        Ok(wire::TransferKind::VoidPending) => TransferKind::VoidPending { pending_id: pending(t.pending_id)? },
        Err(_) => return Err(Status::invalid_argument(format!("{}: unknown kind {}", field("kind"), t.kind))),
    };
    if t.timeout_ns != 0 && !matches!(kind, TransferKind::Pending { .. }) {
        return Err(Status::invalid_argument(format!(
            "{}: only pending transfers have a timeout",
            field("timeout_ns")
        )));
    }
    if t.pending_id.is_some() && !matches!(kind, TransferKind::PostPending { .. } | TransferKind::VoidPending { .. }) {
        return Err(Status::invalid_argument(format!("{}: only post and void name a pending id", field("pending_id"))));
    }
    if t.metadata.len() > METADATA_BYTES_MAX {
        return Err(Status::invalid_argument(format!("{}: at most {METADATA_BYTES_MAX} bytes", field("metadata"))));
    }
    Ok(NewTransfer {
        id: TransferId(t.id),
        debit_account_id: AccountId(t.debit_account_id),
        credit_account_id: AccountId(t.credit_account_id),
        amount: t.amount,
        currency: t.currency,
        code: parse_code(field("code"), t.code)?,
        metadata: t.metadata,
        linked: t.linked,
        kind,
    })
}

/// The transfers of a `PackedTransfers` request, checked as those of the string form.
/// A pending id of 0 means none is given; so does a currency of three zero bytes.
pub fn packed_transfers(request: wire::PackedTransfers) -> Result<Vec<NewTransfer>, Status> {
    let records = request.records.chunks_exact(RECORD_BYTES);
    if !records.remainder().is_empty() {
        return Err(Status::invalid_argument(format!(
            "records: {} bytes is not a whole number of {RECORD_BYTES}-byte records",
            request.records.len()
        )));
    }
    let count = records.len();
    let mut metadata = request.metadata.into_iter();
    if metadata.len() != 0 && metadata.len() != count {
        return Err(Status::invalid_argument(format!(
            "metadata: {} entries for {count} records (give none or one per record)",
            metadata.len()
        )));
    }
    let mut transfers = Vec::with_capacity(count);
    for (index, bytes) in records.enumerate() {
        let field = |name| ItemField { list: "transfers", index, name };
        let record = TransferRecord::read(bytes.try_into().expect("a whole record"))
            .map_err(|error| Status::invalid_argument(format!("transfers[{index}]: {error}")))?;
        let currency = match record.currency {
            [0, 0, 0] => None,
            code => Some(
                std::str::from_utf8(&code)
                    .map_err(|_| Status::invalid_argument(format!("{}: not ASCII", field("currency"))))
                    .and_then(|code| parse_currency(field("currency"), code))?,
            ),
        };
        transfers.push(checked_transfer(
            index,
            TransferFields {
                id: record.id,
                debit_account_id: record.debit_account_id,
                credit_account_id: record.credit_account_id,
                amount: record.amount,
                currency,
                code: u32::from(record.code),
                // ok: not a swallowed error: a request gives no metadata at all or one
                // per record (checked above), and none given is the empty metadata.
                metadata: metadata.next().unwrap_or_default(),
                linked: record.linked,
                kind: i32::from(record.kind),
                timeout_ns: record.timeout_ns,
                pending_id: (record.pending_id != 0).then_some(record.pending_id),
            },
        )?);
    }
    Ok(transfers)
}

/// A status byte and a timestamp per transfer; the failed ones also in `failures`.
pub fn packed_results(results: &[TransferResult]) -> wire::PackedTransferResults {
    let mut answer = wire::PackedTransferResults {
        status: Vec::with_capacity(results.len()),
        timestamps_ns: Vec::with_capacity(results.len()),
        failures: Vec::new(),
    };
    for (index, result) in results.iter().enumerate() {
        let (status, timestamp_ns) = match result {
            Ok(Outcome::Created { timestamp_ns }) => (STATUS_CREATED, *timestamp_ns),
            Ok(Outcome::AlreadyExists { timestamp_ns }) => (STATUS_ALREADY_EXISTS, *timestamp_ns),
            Err(_) => {
                answer.failures.push(item_result(index, result));
                (STATUS_FAILED, 0)
            }
        };
        answer.status.push(status);
        answer.timestamps_ns.push(timestamp_ns);
    }
    answer
}

/// `ExceedsCredits` → `EXCEEDS_CREDITS`.
fn screaming_snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn item_result<E: std::fmt::Debug + std::fmt::Display>(index: usize, result: &Result<Outcome, E>) -> wire::ItemResult {
    match result {
        Ok(Outcome::Created { timestamp_ns }) => wire::ItemResult {
            index: index as u32,
            code: "CREATED".into(),
            ok: true,
            timestamp_ns: *timestamp_ns,
            message: String::new(),
        },
        Ok(Outcome::AlreadyExists { timestamp_ns }) => wire::ItemResult {
            index: index as u32,
            code: "ALREADY_EXISTS".into(),
            ok: true,
            timestamp_ns: *timestamp_ns,
            message: "committed before; nothing changed".into(),
        },
        Err(error) => wire::ItemResult {
            index: index as u32,
            code: screaming_snake(&format!("{error:?}")),
            ok: false,
            timestamp_ns: 0,
            message: error.to_string(),
        },
    }
}

pub fn transfer_results(results: &[TransferResult]) -> Vec<wire::ItemResult> {
    results.iter().enumerate().map(|(index, result)| item_result(index, result)).collect()
}

pub fn account_results(results: &[AccountResult]) -> Vec<wire::ItemResult> {
    results.iter().enumerate().map(|(index, result)| item_result(index, result)).collect()
}

pub fn account(a: &Account) -> wire::Account {
    let state = match a.state {
        AccountState::Open => wire::AccountState::Open,
        AccountState::Frozen => wire::AccountState::Frozen,
        AccountState::Closed => wire::AccountState::Closed,
    };
    wire::Account {
        id: a.id.0.to_string(),
        currency: a.currency.code().into(),
        code: u32::from(a.code),
        flags: a.flags.0,
        owner_id: a.owner_id.to_string(),
        state: state as i32,
        debits_pending: a.debits_pending.to_string(),
        debits_posted: a.debits_posted.to_string(),
        credits_pending: a.credits_pending.to_string(),
        credits_posted: a.credits_posted.to_string(),
        timestamp_ns: a.timestamp_ns,
    }
}

pub fn transfer(t: &Transfer) -> wire::Transfer {
    let m = &t.movement;
    let (kind, timeout_ns, pending_id) = match t.kind {
        TransferKind::Posted => (wire::TransferKind::Posted, 0, String::new()),
        TransferKind::Pending { timeout_ns } => (wire::TransferKind::Pending, timeout_ns, String::new()),
        TransferKind::PostPending { pending_id } => (wire::TransferKind::PostPending, 0, pending_id.0.to_string()),
        TransferKind::VoidPending { pending_id } => (wire::TransferKind::VoidPending, 0, pending_id.0.to_string()),
    };
    let pending_status = match t.pending_status {
        None => wire::PendingStatus::Unspecified,
        Some(PendingStatus::Pending) => wire::PendingStatus::Pending,
        Some(PendingStatus::Posted { .. }) => wire::PendingStatus::Posted,
        Some(PendingStatus::Voided { .. }) => wire::PendingStatus::Voided,
        Some(PendingStatus::Expired) => wire::PendingStatus::Expired,
    };
    wire::Transfer {
        id: m.id.0.to_string(),
        debit_account_id: m.debit_account_id.0.to_string(),
        credit_account_id: m.credit_account_id.0.to_string(),
        amount: m.amount.to_string(),
        currency: m.currency.code().into(),
        code: u32::from(m.code),
        metadata: m.metadata.clone(),
        linked: m.linked,
        kind: kind as i32,
        timeout_ns,
        pending_id,
        timestamp_ns: t.timestamp_ns,
        pending_status: pending_status as i32,
        expires_at_ns: t.expires_at_ns,
        resolved_by_id: t
            .pending_status
            .and_then(PendingStatus::resolved_by)
            .map_or(String::new(), |id| id.0.to_string()),
    }
}

pub fn recorded_event(event: RecordedEvent) -> wire::StreamEventsResponse {
    let decoded = if event.stream.starts_with("ledger-") {
        codec::decode_event(&event.payload).ok().map(|e| codec::to_pb(&e))
    } else {
        None
    };
    wire::StreamEventsResponse {
        stream: event.stream,
        revision: event.revision,
        position: event.position,
        event_type: event.event_type,
        payload: event.payload,
        hash: event.hash.to_vec(),
        event: decoded,
    }
}

/// The one mapping of the ledger's whole-request errors to gRPC status codes.
pub fn status(error: LedgerError) -> Status {
    match &error {
        LedgerError::TooManyItems { .. } | LedgerError::Empty => Status::invalid_argument(error.to_string()),
        LedgerError::Overloaded => Status::resource_exhausted(error.to_string()),
        LedgerError::Closed => Status::unavailable(error.to_string()),
        LedgerError::Failed(_) => Status::unavailable(error.to_string()),
        LedgerError::Replay { .. } | LedgerError::LogShorterThanSnapshot { .. } => Status::data_loss(error.to_string()),
        LedgerError::Store(store) => store_status(store),
    }
}

/// [`store_status`] of an owned error, for `map_err`.
pub fn store_error(error: StoreError) -> Status {
    store_status(&error)
}

pub fn store_status(error: &StoreError) -> Status {
    match error {
        StoreError::WrongExpectedRevision { .. } => Status::aborted(error.to_string()),
        StoreError::Poisoned(_) | StoreError::Io { .. } | StoreError::Closed => Status::unavailable(error.to_string()),
        StoreError::Corrupt { .. } | StoreError::ChainBroken { .. } => Status::data_loss(error.to_string()),
        StoreError::InvalidRequest(_) => Status::invalid_argument(error.to_string()),
        StoreError::Locked(_) => Status::failed_precondition(error.to_string()),
        StoreError::Unavailable(_) => Status::unavailable(error.to_string()),
        StoreError::DeadlineExceeded => Status::deadline_exceeded(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// A packed record and the same transfer in the string form.
    fn both_forms() -> impl proptest::strategy::Strategy<Value = (TransferRecord, wire::NewTransfer)> {
        use proptest::prelude::*;
        let id = prop_oneof![Just(0u128), 1u128..1_000, any::<u128>()];
        let currency = prop_oneof![Just(*b"USD"), Just(*b"JPY"), Just(*b"XYZ"), Just([0; 3])];
        let timeout = prop_oneof![Just(0u64), any::<u64>()];
        let metadata = prop_oneof![Just(String::new()), Just("a".repeat(METADATA_BYTES_MAX + 1)), "[a-z]{1,8}"];
        (
            (id.clone(), id.clone(), id.clone(), id.clone(), id),
            (timeout, any::<u16>(), 0u8..6, any::<bool>(), currency, metadata),
        )
            .prop_map(
                |((id, debit, credit, amount, pending_id), (timeout_ns, code, kind, linked, currency, metadata))| {
                    let record = TransferRecord {
                        id,
                        debit_account_id: debit,
                        credit_account_id: credit,
                        amount,
                        pending_id,
                        timeout_ns,
                        code,
                        kind,
                        linked,
                        currency,
                    };
                    let text = |value: u128| if value == 0 { String::new() } else { value.to_string() };
                    let string_form = wire::NewTransfer {
                        id: id.to_string(),
                        debit_account_id: text(debit),
                        credit_account_id: text(credit),
                        amount: text(amount),
                        currency: String::from_utf8(currency.iter().copied().filter(|&b| b != 0).collect())
                            .unwrap_or_default(),
                        code: u32::from(code),
                        metadata,
                        linked,
                        kind: i32::from(kind),
                        timeout_ns,
                        pending_id: text(pending_id),
                    };
                    (record, string_form)
                },
            )
    }

    proptest::proptest! {
        /// Both wire forms read the same transfer, or both refuse it.
        #[test]
        fn the_packed_form_reads_as_the_string_form((record, string_form) in both_forms()) {
            let mut records = Vec::new();
            record.write(&mut records);
            let metadata = if string_form.metadata.is_empty() { vec![] } else { vec![string_form.metadata.clone()] };
            let packed = packed_transfers(wire::PackedTransfers { records, metadata });
            let strings = new_transfer(0, string_form);
            match (packed, strings) {
                (Ok(packed), Ok(strings)) => proptest::prop_assert_eq!(packed, vec![strings]),
                (Err(packed), Err(strings)) => {
                    proptest::prop_assert_eq!(packed.code(), Code::InvalidArgument);
                    proptest::prop_assert_eq!(strings.code(), Code::InvalidArgument);
                }
                (packed, strings) => proptest::prop_assert!(false, "packed {:?}, strings {:?}", packed, strings),
            }
        }

        #[test]
        fn u128_parsing_agrees_with_std(value: u128, zeros in 0usize..3) {
            let text = format!("{}{value}", "0".repeat(zeros));
            let parsed = parse_u128("id", &text).ok();
            let expected = text.parse::<u128>().ok().filter(|_| text.len() <= U128_DIGITS_MAX);
            proptest::prop_assert_eq!(parsed, expected);
        }
    }

    #[test]
    fn u128_parsing_at_the_edges() {
        let max = u128::MAX.to_string();
        assert_eq!(parse_u128("id", &max).ok(), Some(u128::MAX));
        assert_eq!(parse_u128("id", "0").ok(), Some(0));
        assert_eq!(parse_u128("id", "9999999999999999999").ok(), Some(9_999_999_999_999_999_999));
        assert_eq!(parse_u128("id", "10000000000000000000").ok(), Some(10_000_000_000_000_000_000));
        let over = "340282366920938463463374607431768211456"; // u128::MAX + 1
        assert_eq!(parse_u128("id", over).map_err(|s| s.code()).err(), Some(Code::InvalidArgument));
        assert_eq!(parse_u128("id", &"9".repeat(39)).map_err(|s| s.code()).err(), Some(Code::InvalidArgument));
        for bad in ["", "-1", "+1", "1 ", "1.0", "١"] {
            assert_eq!(parse_u128("id", bad).map_err(|s| s.code()).err(), Some(Code::InvalidArgument), "{bad:?}");
        }
    }

    #[test]
    fn every_ledger_error_has_its_status_code() {
        let cases = [
            (LedgerError::TooManyItems { count: 2, max: 1 }, Code::InvalidArgument),
            (LedgerError::Empty, Code::InvalidArgument),
            (LedgerError::Overloaded, Code::ResourceExhausted),
            (LedgerError::Closed, Code::Unavailable),
            (LedgerError::Failed("disk".into()), Code::Unavailable),
            (LedgerError::Replay { stream: "s".into(), revision: 1, reason: "r".into() }, Code::DataLoss),
            (LedgerError::LogShorterThanSnapshot { stream: "s".into(), reason: "r".into() }, Code::DataLoss),
            (LedgerError::Store(StoreError::Poisoned("x".into())), Code::Unavailable),
            (LedgerError::Store(StoreError::Closed), Code::Unavailable),
            (LedgerError::Store(StoreError::Unavailable("no leader".into())), Code::Unavailable),
            (LedgerError::Store(StoreError::DeadlineExceeded), Code::DeadlineExceeded),
            (
                LedgerError::Store(StoreError::Io { operation: "write", path: "p".into(), message: "m".into() }),
                Code::Unavailable,
            ),
            (
                LedgerError::Store(StoreError::WrongExpectedRevision {
                    stream: "s".into(),
                    expected: ledger_engine::store::ExpectedRevision::NoStream,
                    actual: Some(1),
                }),
                Code::Aborted,
            ),
            (
                LedgerError::Store(StoreError::Corrupt { file: "f".into(), offset: 1, reason: "r".into() }),
                Code::DataLoss,
            ),
            (
                LedgerError::Store(StoreError::ChainBroken {
                    stream: "s".into(),
                    revision: 1,
                    file: "f".into(),
                    offset: 1,
                    reason: "r".into(),
                }),
                Code::DataLoss,
            ),
            (LedgerError::Store(StoreError::InvalidRequest("x".into())), Code::InvalidArgument),
            (LedgerError::Store(StoreError::Locked("d".into())), Code::FailedPrecondition),
        ];
        for (error, code) in cases {
            assert_eq!(status(error.clone()).code(), code, "{error}");
        }
    }

    #[test]
    fn item_codes_are_screaming_snake_names() {
        let results = vec![Err(TransferError::ExceedsCredits), Ok(Outcome::Created { timestamp_ns: 5 })];
        let wire = transfer_results(&results);
        assert_eq!(wire[0].code, "EXCEEDS_CREDITS");
        assert!(!wire[0].ok);
        assert_eq!((wire[1].code.as_str(), wire[1].ok, wire[1].timestamp_ns), ("CREATED", true, 5));
    }

    #[test]
    fn malformed_fields_are_invalid_arguments_naming_the_field() {
        let base = wire::NewTransfer {
            id: "1".into(),
            debit_account_id: "2".into(),
            credit_account_id: "3".into(),
            amount: "100".into(),
            currency: "USD".into(),
            ..Default::default()
        };
        assert!(new_transfer(0, base.clone()).is_ok());
        let cases = [
            (wire::NewTransfer { id: "-1".into(), ..base.clone() }, "transfers[4].id"),
            (wire::NewTransfer { amount: "1.5".into(), ..base.clone() }, "transfers[4].amount"),
            (wire::NewTransfer { amount: "9".repeat(40), ..base.clone() }, "transfers[4].amount"),
            (wire::NewTransfer { currency: "XYZ".into(), ..base.clone() }, "transfers[4].currency"),
            (wire::NewTransfer { code: 70_000, ..base.clone() }, "transfers[4].code"),
            (wire::NewTransfer { kind: 99, ..base.clone() }, "transfers[4].kind"),
            (wire::NewTransfer { timeout_ns: 5, ..base.clone() }, "transfers[4].timeout_ns"),
            (wire::NewTransfer { metadata: "m".repeat(300), ..base.clone() }, "transfers[4].metadata"),
            (
                wire::NewTransfer { kind: wire::TransferKind::PostPending as i32, pending_id: "x".into(), ..base },
                "transfers[4].pending_id",
            ),
        ];
        for (transfer, field) in cases {
            let status = new_transfer(4, transfer).expect_err("malformed");
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().starts_with(field), "{}", status.message());
        }
    }
}
