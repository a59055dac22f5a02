//! Follows the event log from the delivery database's checkpoint and turns payment
//! events into deliveries.
//!
//! For each event of a `payment-{id}` stream the payment is folded by the platform's
//! own code (`PaymentFold`) just before and just after it; what its parties are told
//! follows from the two: `payment.created` (and `request.received` for a money request)
//! at the first event, then a new public status (`requires_review`, `completed`,
//! `failed`, `cancelled`, `refunded`, `partially_refunded`) or a refund booked. Each
//! goes to every endpoint registered before the event whose owner may see the payment
//! and who subscribed to its type. A batch's deliveries and the checkpoint after it
//! commit in one transaction.
//!
//! While no endpoint is registered, no event is for anyone: every `IDLE_SKIP_EVERY` the
//! follower folds in the registrations durable below the log's head and, finding none,
//! moves to the head without reading the events in between.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ledger_core::calendar::civil_from_days;
use ledger_core::money::format_amount;
use ledger_engine::store::{EventStore, RecordedEvent, Subscription};
use ledger_platform::payments::{PaymentFold, PaymentView};
use serde_json::json;

use super::db::{now_ms, NewDelivery};
use super::{Owner, WebhookError, Webhooks, ENDPOINTS_STREAM, EVENT_TYPES};

/// Events read from the log per batch (one transaction of the delivery database).
pub const FOLLOW_BATCH_EVENTS: usize = 256;
/// A batch that makes no delivery moves the durable checkpoint only once this many
/// events passed since the last commit: following them again after a crash makes no
/// delivery either, and a log with no endpoints costs no sync per batch.
pub const CHECKPOINT_EVERY_EVENTS: u64 = 4_096;
/// How often a follower with no endpoint registered skips to the log's head.
pub const IDLE_SKIP_EVERY: Duration = Duration::from_millis(50);
/// Wait before following again after an error.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let millis = (ns / 1_000_000) % 1_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let (year, month, day) = civil_from_days(days);
    let rest = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rest / 3_600, (rest / 60) % 60, rest % 60)
}

/// What a payment event tells its parties: the event types, in order.
pub fn event_types(revision: u64, before: &PaymentFold, after: &PaymentFold) -> Vec<&'static str> {
    if revision == 0 {
        let mut types = vec!["payment.created"];
        if after.view().kind == "request" {
            types.push("request.received");
        }
        return types;
    }
    let (was, is) = (before.status(), after.status());
    if was == is && after.refunds() <= before.refunds() {
        return Vec::new();
    }
    match is {
        "requires_review" | "completed" | "failed" | "cancelled" | "refunded" | "partially_refunded" => {
            EVENT_TYPES.iter().copied().filter(|t| t.strip_prefix("payment.") == Some(is)).collect()
        }
        _ => Vec::new(),
    }
}

/// Whether `owner` receives `event_type` of this payment.
fn receives(owner: Owner, event_type: &str, payment: &PaymentView) -> bool {
    match owner {
        Owner::Admin => true,
        // A request is received by its payer (the sender), not its requester.
        Owner::User(user) if event_type == "request.received" => payment.sender_id == user,
        Owner::User(user) => payment.sender_id == user || payment.receiver_id == user,
    }
}

/// The payment as a webhook shows it: ids and amounts, no names, emails or note.
fn payment_json(payment: &PaymentView) -> serde_json::Value {
    let amount = |minor: u64| payment.currency.map(|c| format_amount(u128::from(minor), c));
    json!({
        "id": payment.id.to_string(),
        "kind": payment.kind,
        "status": payment.status,
        "reason": payment.reason,
        "funding": payment.funding,
        "sender_id": payment.sender_id.to_string(),
        "receiver_id": payment.receiver_id.to_string(),
        "currency": payment.currency.map(|c| c.code().to_string()),
        "amount": amount(payment.amount),
        "fee": amount(payment.fee),
        "refunded": amount(payment.refunded),
        "receive": payment.receive.map(|(c, a)| json!({ "currency": c.code(), "amount": format_amount(u128::from(a), c) })),
        "created": rfc3339(payment.created_at_ns),
        "updated": rfc3339(payment.updated_at_ns),
    })
}

/// The deliveries one log event makes.
pub fn deliveries_of(
    webhooks: &Webhooks,
    store: &dyn EventStore,
    record: &RecordedEvent,
) -> Result<Vec<NewDelivery>, WebhookError> {
    if record.stream == ENDPOINTS_STREAM {
        webhooks.endpoints.apply(record)?;
        return Ok(Vec::new());
    }
    let Some(payment_id) = record.stream.strip_prefix("payment-") else { return Ok(Vec::new()) };
    let endpoints = webhooks.endpoints.before(record.position);
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let (before, after) = PaymentFold::at(store, &record.stream, record.revision)
        .map_err(|e| WebhookError::Corrupt(format!("{}: {e}", record.stream)))?;
    let types = event_types(record.revision, &before, &after);
    if types.is_empty() {
        return Ok(Vec::new());
    }
    let view = after.view();
    let payment = payment_json(&view);
    let mut out = Vec::new();
    for event_type in types {
        let index =
            EVENT_TYPES.iter().position(|t| *t == event_type).expect("event_types answers names from EVENT_TYPES only");
        let event_id = format!("evt_{}_{index}", record.position);
        let body = json!({
            "id": event_id,
            "type": event_type,
            "created": rfc3339(view.updated_at_ns),
            "data": { "payment": payment },
        })
        .to_string();
        for endpoint in endpoints.iter().filter(|e| e.wants(event_type) && receives(e.owner, event_type, &view)) {
            out.push(NewDelivery {
                endpoint_id: endpoint.id.clone(),
                payment_id: payment_id.to_string(),
                event_id: event_id.clone(),
                event_type: event_type.to_string(),
                body: body.clone(),
            });
        }
    }
    Ok(out)
}

/// Where a new delivery database starts: at the oldest endpoint's registration (no
/// event before it is for anyone), or at the log's end when there is none.
fn start_position(webhooks: &Webhooks, store: &dyn EventStore) -> Result<u64, WebhookError> {
    if let Some(position) = webhooks.db.checkpoint()? {
        return Ok(position);
    }
    let oldest = webhooks.endpoints.list(Owner::Admin).iter().map(|e| e.position).min();
    Ok(oldest.unwrap_or(*store.watch_head().borrow()))
}

/// The log's head when no endpoint is registered below it, so that the events from
/// `next` up to it are for nobody; `None` when an endpoint is registered.
fn idle_head(webhooks: &Webhooks, store: &dyn EventStore, next: u64) -> Result<Option<u64>, WebhookError> {
    if !webhooks.endpoints.is_empty() {
        return Ok(None);
    }
    // The head first: a registration below it is durable, so the fold sees it.
    let head = *store.watch_head().borrow();
    webhooks.endpoints.catch_up()?;
    Ok((webhooks.endpoints.is_empty() && head >= next).then_some(head))
}

/// Follows the log until `stop` turns true.
pub async fn run(webhooks: Arc<Webhooks>, store: Arc<dyn EventStore>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        match follow(&webhooks, &store, &mut stop).await {
            Ok(()) => return,
            Err(error) => {
                tracing::error!(%error, code = error.code(), "webhook follower failed; following again from its checkpoint");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_AFTER_ERROR) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

async fn follow(
    webhooks: &Arc<Webhooks>,
    store: &Arc<dyn EventStore>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), WebhookError> {
    let from = {
        let (webhooks, store) = (webhooks.clone(), store.clone());
        tokio::task::spawn_blocking(move || start_position(&webhooks, store.as_ref()))
            .await
            .map_err(|e| WebhookError::Database(e.to_string()))??
    };
    tracing::info!(from, "webhook follower started");
    let mut subscription = Subscription::new(store.clone(), from);
    let mut committed = from;
    webhooks.stats.position.store(from, Ordering::Relaxed);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        if let Some(head) = idle_head(webhooks, store.as_ref(), subscription.position())? {
            subscription = Subscription::new(store.clone(), head);
            if head - committed >= CHECKPOINT_EVERY_EVENTS {
                let webhooks_ = webhooks.clone();
                tokio::task::spawn_blocking(move || webhooks_.db.enqueue(Vec::new(), head, now_ms()))
                    .await
                    .map_err(|e| WebhookError::Database(e.to_string()))??;
                committed = head;
            }
            webhooks.stats.position.store(head, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(IDLE_SKIP_EVERY) => continue,
                _ = stop.changed() => return Ok(()),
            }
        }
        let batch = tokio::select! {
            batch = subscription.next_batch(FOLLOW_BATCH_EVENTS) => batch?,
            _ = stop.changed() => return Ok(()),
        };
        let Some(last) = batch.last() else { continue };
        let checkpoint = last.position + 1;
        let (webhooks_, store_) = (webhooks.clone(), store.clone());
        let quiet_since = committed;
        let enqueued = tokio::task::spawn_blocking(move || {
            let mut deliveries = Vec::new();
            for record in &batch {
                deliveries.extend(deliveries_of(&webhooks_, store_.as_ref(), record)?);
            }
            if deliveries.is_empty() && checkpoint - quiet_since < CHECKPOINT_EVERY_EVENTS {
                return Ok(None);
            }
            webhooks_.db.enqueue(deliveries, checkpoint, now_ms()).map(Some)
        })
        .await
        .map_err(|e| WebhookError::Database(e.to_string()))??;
        if let Some(enqueued) = enqueued {
            committed = checkpoint;
            if enqueued > 0 {
                webhooks.stats.enqueued.fetch_add(enqueued as u64, Ordering::Relaxed);
                webhooks.wake.notify_one();
            }
        }
        webhooks.stats.position.store(checkpoint, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_proto::events::v1 as ev;
    use ledger_proto::events::v1::payment_event::Kind;
    use prost::Message;

    fn record(revision: u64, kind: Kind) -> RecordedEvent {
        let event = ev::PaymentEvent { payment_id: "7".into(), timestamp_ns: revision + 1, kind: Some(kind) };
        RecordedEvent {
            stream: "payment-7".into(),
            revision,
            position: 100 + revision,
            event_type: "PaymentEvent".into(),
            payload: event.encode_to_vec(),
            hash: [0; 32],
        }
    }

    /// The event types each event of a payment makes, folded one by one.
    fn types_of(kinds: Vec<Kind>) -> Vec<Vec<&'static str>> {
        let mut after = PaymentFold::default();
        let mut out = Vec::new();
        for (revision, kind) in kinds.into_iter().enumerate() {
            let before = after.clone();
            after.apply(&record(revision as u64, kind)).expect("apply");
            out.push(event_types(revision as u64, &before, &after));
        }
        out
    }

    /// User 2 asks user 1 for 10.00 USD.
    fn request_created() -> Kind {
        Kind::Created(ev::PaymentCreated {
            kind: "request".into(),
            sender_id: "1".into(),
            receiver_id: "2".into(),
            created_by: "2".into(),
            currency: "USD".into(),
            amount: 1_000,
            ..Default::default()
        })
    }

    #[test]
    fn a_request_reviewed_completed_and_refunded_tells_each_change_once() {
        let created = request_created();
        let answered = Kind::RequestAnswered(ev::RequestAnswered {
            approved: true,
            funding: "wallet".into(),
            ..Default::default()
        });
        let risk = Kind::RiskAssessed(ev::RiskAssessed { decision: "review".into(), ..Default::default() });
        let reviewed = Kind::ReviewDecided(ev::ReviewDecided { approved: true, by: "admin".into() });
        let finished = Kind::Finished(ev::PaymentFinished { status: "completed".into(), reason: String::new() });
        let refund = |amount| Kind::RefundBooked(ev::RefundBooked { amount, ..Default::default() });
        let types = types_of(vec![created, answered, risk, reviewed, finished, refund(300), refund(300), refund(400)]);
        assert_eq!(
            types,
            vec![
                vec!["payment.created", "request.received"],
                vec![],
                vec!["payment.requires_review"],
                vec![],
                vec!["payment.completed"],
                vec!["payment.partially_refunded"],
                vec!["payment.partially_refunded"],
                vec!["payment.refunded"],
            ]
        );
    }

    #[test]
    fn a_request_is_received_by_its_payer_only() {
        let mut fold = PaymentFold::default();
        let created = request_created();
        fold.apply(&record(0, created)).expect("apply");
        let view = fold.view();
        assert!(receives(Owner::User(1), "request.received", &view));
        assert!(!receives(Owner::User(2), "request.received", &view));
        assert!(receives(Owner::User(2), "payment.created", &view));
        assert!(!receives(Owner::User(3), "payment.created", &view));
        assert!(receives(Owner::Admin, "request.received", &view));
        let body = payment_json(&view);
        assert_eq!((body["amount"].as_str(), body["currency"].as_str()), (Some("10.00"), Some("USD")));
        assert!(body.get("note").is_none() && body.get("to_email").is_none(), "no personal data: {body}");
    }

    #[test]
    fn times_are_rfc_3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123Z");
    }
}
