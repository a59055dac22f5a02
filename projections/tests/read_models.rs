//! After random workloads, every read model equals a from-scratch recomputation from the
//! log: balances and history against the core's own replay, reports against sums of the
//! movements, and incremental application against a one-shot rebuild.

use std::collections::BTreeMap;

use ledger_core::chain::{chain_hash, GENESIS_HASH};
use ledger_core::codec;
use ledger_core::domain::*;
use ledger_core::money::Currency;
use ledger_core::state::LedgerState;
use ledger_engine::store::RecordedEvent;
use projections::read_models::*;
use proptest::prelude::*;

const HOUR_NS: u64 = 3_600_000_000_000;
const START_NS: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

fn currency(code: &str) -> Currency {
    Currency::parse(code).expect("known currency")
}

#[derive(Clone, Debug)]
enum Op {
    Posted { debit: u128, credit: u128, amount: u128 },
    Pending { debit: u128, credit: u128, amount: u128, timeout_hours: u64 },
    Post { back: usize, amount: u128 },
    Void { back: usize },
    Wait { minutes: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let account = 1u128..=6;
    prop_oneof![
        4 => (account.clone(), account.clone(), 1u128..500).prop_map(|(debit, credit, amount)| Op::Posted { debit, credit, amount }),
        2 => (account.clone(), account, 1u128..500, 0u64..30)
            .prop_map(|(debit, credit, amount, timeout_hours)| Op::Pending { debit, credit, amount, timeout_hours }),
        1 => (0usize..8, 0u128..300).prop_map(|(back, amount)| Op::Post { back, amount }),
        1 => (0usize..8).prop_map(|back| Op::Void { back }),
        2 => (0u64..1_500).prop_map(|minutes| Op::Wait { minutes }),
    ]
}

/// Runs the workload through the core and returns the log it would write.
fn log_of(ops: &[Op]) -> (Vec<RecordedEvent>, Vec<Event>) {
    let mut state = LedgerState::new();
    let mut events = Vec::new();
    let mut now = START_NS;
    let opens: Vec<_> = (1..=6u128)
        .map(|id| {
            AccountCommand::Open(NewAccount {
                id: AccountId(id),
                currency: currency(if id <= 4 { "USD" } else { "EUR" }),
                code: 1,
                flags: AccountFlags(0),
                owner_id: 100 + id % 3,
            })
        })
        .collect();
    state.execute_accounts(&opens, now, &mut events);
    let mut pendings = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        now += 1_000;
        let id = TransferId(n as u128 + 1);
        let plain = |debit: u128, credit: u128, amount, kind| NewTransfer {
            id,
            debit_account_id: AccountId(debit),
            credit_account_id: AccountId(credit),
            amount,
            currency: Some(currency(if debit <= 4 { "USD" } else { "EUR" })),
            code: 1,
            metadata: format!("op {n}"),
            linked: false,
            kind,
        };
        let resolve = |kind, amount| NewTransfer {
            id,
            debit_account_id: AccountId(0),
            credit_account_id: AccountId(0),
            amount,
            currency: None,
            code: 1,
            metadata: String::new(),
            linked: false,
            kind,
        };
        let transfer = match *op {
            Op::Wait { minutes } => {
                now += minutes * 60_000_000_000;
                state.expire_due(now, &mut events);
                continue;
            }
            Op::Posted { debit, credit, amount } => plain(debit, credit, amount, TransferKind::Posted),
            Op::Pending { debit, credit, amount, timeout_hours } => {
                pendings.push(id);
                plain(debit, credit, amount, TransferKind::Pending { timeout_ns: timeout_hours * HOUR_NS })
            }
            Op::Post { back, amount } => match pendings.iter().rev().nth(back) {
                Some(&pending_id) => resolve(TransferKind::PostPending { pending_id }, amount),
                None => continue,
            },
            Op::Void { back } => match pendings.iter().rev().nth(back) {
                Some(&pending_id) => resolve(TransferKind::VoidPending { pending_id }, 0),
                None => continue,
            },
        };
        state.expire_due(now, &mut events);
        state.execute_transfers(&[transfer], now, &mut events);
    }
    let mut previous = GENESIS_HASH;
    let records = events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let mut payload = Vec::new();
            codec::encode_event(event, &mut payload);
            let hash = chain_hash(&previous, i as u64, &payload);
            previous = hash;
            RecordedEvent {
                stream: "ledger-0".into(),
                revision: i as u64,
                position: i as u64,
                event_type: event.kind.type_name().into(),
                payload,
                hash,
            }
        })
        .collect();
    (records, events)
}

fn balances(account: &Account) -> Balances {
    Balances {
        debits_pending: account.debits_pending,
        debits_posted: account.debits_posted,
        credits_pending: account.credits_pending,
        credits_posted: account.credits_posted,
    }
}

/// The oracle: per account, (timestamp, transfer id, side, amount, posted amount,
/// status, balances after) from a plain replay through the core.
type Expected = BTreeMap<u128, Vec<(u64, u128, Side, u128, u128, Status, Balances)>>;

fn oracle(events: &[Event]) -> Expected {
    let mut replay = LedgerState::new();
    let mut expected: Expected = BTreeMap::new();
    let mut status: BTreeMap<u128, Status> = BTreeMap::new();
    for event in events {
        replay.evolve(event);
        let (transfer, debit, credit, amount, posted, own_status, resolves) = match &event.kind {
            EventKind::TransferPosted(m) => {
                (m.id, m.debit_account_id, m.credit_account_id, m.amount, m.amount, Status::Posted, None)
            }
            EventKind::TransferPending { movement: m, .. } => {
                (m.id, m.debit_account_id, m.credit_account_id, m.amount, 0, Status::Pending, None)
            }
            EventKind::PendingPosted { movement: m, pending_id, .. } => (
                m.id,
                m.debit_account_id,
                m.credit_account_id,
                m.amount,
                m.amount,
                Status::Posted,
                Some((*pending_id, Status::Posted)),
            ),
            EventKind::PendingVoided { movement: m, pending_id } => (
                m.id,
                m.debit_account_id,
                m.credit_account_id,
                m.amount,
                0,
                Status::Voided,
                Some((*pending_id, Status::Voided)),
            ),
            EventKind::PendingExpired { pending_id, debit_account_id, credit_account_id, pending_amount, .. } => (
                *pending_id,
                *debit_account_id,
                *credit_account_id,
                *pending_amount,
                0,
                Status::Expired,
                Some((*pending_id, Status::Expired)),
            ),
            _ => continue,
        };
        if let Some((pending, resolved)) = resolves {
            status.insert(pending.0, resolved);
        }
        for (account, side) in [(debit, Side::Debit), (credit, Side::Credit)] {
            let after = balances(&replay.account(account).expect("open account"));
            expected.entry(account.0).or_default().push((
                event.timestamp_ns,
                transfer.0,
                side,
                amount,
                posted,
                own_status,
                after,
            ));
        }
    }
    // A hold's own movements show how it ended.
    for rows in expected.values_mut() {
        for row in rows.iter_mut() {
            if row.5 == Status::Pending {
                if let Some(resolved) = status.get(&row.1) {
                    row.5 = *resolved;
                }
            }
        }
    }
    expected
}

fn apply_in_chunks(models: &ReadModels, records: &[RecordedEvent], chunks: &[usize]) {
    let mut at = 0;
    let mut sizes = chunks.iter().cycle();
    while at < records.len() {
        let size = (*sizes.next().unwrap_or(&1)).max(1);
        let end = (at + size).min(records.len());
        // Overlap with what was applied: already applied events must be skipped.
        let start = at.saturating_sub(size / 2);
        assert_eq!(models.apply(&records[start..end], false).expect("apply"), end as u64);
        at = end;
    }
    models.sync().expect("sync");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn read_models_equal_a_recomputation_from_the_log(
        ops in proptest::collection::vec(op(), 1..400),
        chunks in proptest::collection::vec(1usize..40, 1..6),
        page in 1usize..9,
        offset_quarters in -48i32..=56,
        range in (0u64..6, 1u64..8),
    ) {
        let (records, events) = log_of(&ops);
        let dir = tempfile::tempdir().expect("tempdir");
        let models = ReadModels::open(&dir.path().join("a.redb")).expect("open");
        apply_in_chunks(&models, &records, &chunks);
        prop_assert_eq!(models.next_position().expect("position"), records.len() as u64);
        prop_assert_eq!(models.alarm().expect("alarm"), None);

        // Rebuilt in one go: the same data.
        let rebuilt = ReadModels::open(&dir.path().join("b.redb")).expect("open");
        rebuilt.apply(&records, true).expect("apply");
        prop_assert_eq!(models.digest().expect("digest"), rebuilt.digest().expect("digest"));

        let expected = oracle(&events);
        let mut replay = LedgerState::new();
        let mut at_times = Vec::new();
        for event in &events {
            replay.evolve(event);
            at_times.push((event.timestamp_ns, (1..=6u128).map(|id| replay.account(AccountId(id)).map(|a| balances(&a))).collect::<Vec<_>>()));
        }
        for id in 1..=6u128 {
            let rows = expected.get(&id).cloned().unwrap_or_default();
            // History, newest first, paged.
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let got = models.history(&[id], &HistoryFilter::default(), cursor, page).expect("history");
                prop_assert!(got.movements.len() <= page);
                seen.extend(got.movements);
                match got.next { Some(next) => cursor = Some(next), None => break }
            }
            prop_assert_eq!(seen.len(), rows.len());
            for (movement, row) in seen.iter().zip(rows.iter().rev()) {
                prop_assert_eq!((movement.timestamp_ns, movement.transfer_id, movement.side, movement.amount, movement.status, movement.after),
                    (row.0, row.1, row.2, row.3, row.5, row.6));
            }
            // Oldest first with a time range equals the same rows in order.
            let (from, to) = (START_NS + range.0 * 6 * HOUR_NS, START_NS + (range.0 + range.1) * 6 * HOUR_NS);
            let filter = HistoryFilter { from_ns: from, to_ns: to, ..HistoryFilter::default() };
            let oldest = models.movements_oldest_first(id, &filter, None, usize::MAX).expect("list");
            let in_range: Vec<_> = rows.iter().filter(|r| r.0 >= from && r.0 < to).map(|r| r.0).collect();
            prop_assert_eq!(oldest.movements.iter().map(|m| m.timestamp_ns).collect::<Vec<_>>(), in_range);
            // Filters.
            let credits = HistoryFilter { side: Some(Side::Credit), ..HistoryFilter::default() };
            let got = models.history(&[id], &credits, None, usize::MAX).expect("history");
            prop_assert_eq!(got.movements.len(), rows.iter().filter(|r| r.2 == Side::Credit).count());

            // As-of balances equal the replay up to that time.
            for (time, accounts) in &at_times {
                let want = accounts[(id - 1) as usize];
                prop_assert_eq!(models.balances_as_of(id, Some(*time)).expect("as of"), want);
            }
            // Reports: days add up, and opening/closing are the as-of balances.
            let report = models.report(id, from, to, offset_quarters * 15).expect("report").expect("account");
            let mut sum = Totals::default();
            let mut running = report.opening;
            for day in &report.days {
                prop_assert_eq!(day.opening, running);
                sum.credits += day.totals.credits;
                sum.debits += day.totals.debits;
                sum.count += day.totals.count;
                running = day.closing;
            }
            prop_assert_eq!(sum, report.totals);
            prop_assert_eq!(running, report.closing);
            let net_at = |t: u64| models.balances_as_of(id, Some(t)).expect("as of").map_or(0, |b| net(&b).expect("net"));
            prop_assert_eq!(report.opening, net_at(from - 1));
            prop_assert_eq!(report.closing, net_at(to - 1));
            let posted: Vec<_> = rows.iter().filter(|r| r.0 >= from && r.0 < to && r.4 > 0).collect();
            let credits_in: u128 = posted.iter().filter(|r| r.2 == Side::Credit).map(|r| r.4).sum();
            let debits_out: u128 = posted.iter().filter(|r| r.2 == Side::Debit).map(|r| r.4).sum();
            prop_assert_eq!(report.totals, Totals { credits: credits_in, debits: debits_out, count: posted.len() as u64 });
            // A report over a range equals the sum of reports over its days.
            let mut by_days = Totals::default();
            for (i, day) in report.days.iter().enumerate() {
                let end = report.days.get(i + 1).map_or(to, |next| next.start_ns);
                let one = models.report(id, day.start_ns, end, offset_quarters * 15).expect("day").expect("account");
                prop_assert_eq!(one.days.len(), 1);
                by_days.add(one.totals).expect("totals");
            }
            prop_assert_eq!(by_days, report.totals);
        }
        // Per owner: the owner's accounts merged, newest first.
        for owner in 100..103u128 {
            let accounts = models.owner_accounts(owner).expect("owner");
            let mut want: Vec<(u64, u128)> = accounts
                .iter()
                .flat_map(|a| expected.get(a).into_iter().flatten().map(move |r| (r.0, *a)))
                .collect();
            want.sort_by(|x, y| y.cmp(x));
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let got = models.history(&accounts, &HistoryFilter::default(), cursor, page).expect("history");
                seen.extend(got.movements.iter().map(|m| (m.timestamp_ns, m.account)));
                match got.next { Some(next) => cursor = Some(next), None => break }
            }
            prop_assert_eq!(seen, want);
        }
    }
}

#[test]
fn a_broken_chain_raises_the_alarm_and_gaps_are_refused() {
    let (mut records, _) =
        log_of(&[Op::Posted { debit: 1, credit: 2, amount: 5 }, Op::Posted { debit: 2, credit: 3, amount: 4 }]);
    let dir = tempfile::tempdir().expect("tempdir");
    let models = ReadModels::open(&dir.path().join("m.redb")).expect("open");
    let gap = models.apply(&records[1..], true);
    assert!(matches!(gap, Err(ProjectionError::Gap { expected: 0, found: 1 })), "{gap:?}");
    assert_eq!(models.next_position().expect("position"), 0, "nothing applied");
    let last = records.len() - 1;
    records[last].payload.push(0);
    models.apply(&records, true).expect("apply");
    let alarm = models.alarm().expect("alarm").expect("an alarm");
    assert_eq!(alarm.position, last as u64);
    assert!(alarm.reason.contains("hash does not chain"), "{}", alarm.reason);
}

/// A platform event (verified by the chain, not projected) at `position`.
fn platform_record(stream: &str, revision: u64, position: u64, previous: &[u8; 32]) -> RecordedEvent {
    let payload = format!("{stream} {revision}").into_bytes();
    RecordedEvent {
        stream: stream.into(),
        revision,
        position,
        event_type: "PaymentCreated".into(),
        hash: chain_hash(previous, revision, &payload),
        payload,
    }
}

#[test]
fn a_stream_that_begins_again_raises_the_alarm_in_a_later_batch_too() {
    let (mut records, _) = log_of(&[Op::Posted { debit: 1, credit: 2, amount: 5 }]);
    let at = records.len() as u64;
    let first = platform_record("payment-7", 0, at, &GENESIS_HASH);
    let second = platform_record("payment-7", 1, at + 1, &first.hash);
    records.extend([first, second, platform_record("payment-8", 0, at + 2, &GENESIS_HASH)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let models = ReadModels::open(&dir.path().join("m.redb")).expect("open");
    models.apply(&records, true).expect("apply");
    assert_eq!(models.alarm().expect("alarm"), None, "new streams, each begun once");

    // A later batch: a new stream, then one whose revision 0 the table already holds.
    let later = [
        platform_record("payment-9", 0, at + 3, &GENESIS_HASH),
        platform_record("payment-7", 0, at + 4, &GENESIS_HASH),
    ];
    models.apply(&later, true).expect("apply");
    let alarm = models.alarm().expect("alarm").expect("an alarm");
    assert_eq!(alarm.position, at + 4);
    assert_eq!(alarm.reason, "payment-7 revision 0: revision 0 where 2 was due");
    assert_eq!(models.next_position().expect("position"), at + 5);
}
