//! The registry of webhook endpoints: a fold of the `webhook-endpoints` stream, in
//! memory (bounded by `ENDPOINTS_MAX`). Registrations and removals are appended with the
//! stream's exact expected revision under one lock, then folded in from the log by the
//! same `apply` the delivery follower uses, so both see one order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ledger_engine::store::{
    Direction, EventData, EventStore, EventStoreExt, ExpectedRevision, RecordedEvent, Revision,
};
use ledger_proto::events::v1 as ev;
use ledger_proto::events::v1::webhook_endpoint_event::Kind;
use prost::Message;

use super::{WebhookError, ALL_EVENTS, ENDPOINTS_STREAM, EVENT_TYPES};

/// Endpoints one owner (a user, or the admins together) may have.
pub const ENDPOINTS_PER_OWNER_MAX: usize = 16;
/// Endpoints in all (what the registry may hold in memory).
pub const ENDPOINTS_MAX: usize = 10_000;
/// Longest endpoint URL, in bytes.
pub const URL_BYTES_MAX: usize = 2_048;
/// Events of the stream read at a time when it is folded.
const LOAD_PAGE_EVENTS: usize = 1_024;
/// The event type names in the stream.
const ADDED: &str = "WebhookEndpointAdded";
const REMOVED: &str = "WebhookEndpointRemoved";

/// Who registered an endpoint, and so which events it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// Every payment's events.
    Admin,
    /// The events of the payments the user sends or receives, and the money requests
    /// they are asked to pay.
    User(u128),
}

impl Owner {
    pub fn as_text(self) -> String {
        match self {
            Owner::Admin => "admin".into(),
            Owner::User(id) => format!("user:{id}"),
        }
    }

    pub fn parse(text: &str) -> Option<Owner> {
        match text {
            "admin" => Some(Owner::Admin),
            _ => text.strip_prefix("user:")?.parse().ok().map(Owner::User),
        }
    }
}

/// A registered endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub owner: Owner,
    pub url: String,
    /// Subscribed event types; empty means all (`*`).
    pub event_types: Vec<&'static str>,
    pub created_ns: u64,
    /// The log position of its registration: it receives the events after it.
    pub position: u64,
}

impl Endpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.contains(&event_type)
    }
}

#[derive(Default)]
struct State {
    /// The last revision of the stream folded in.
    head: Option<Revision>,
    live: BTreeMap<String, Endpoint>,
}

pub struct Endpoints {
    store: Arc<dyn EventStore>,
    state: Mutex<State>,
    /// Held across a check and its append, so that limits hold.
    write: tokio::sync::Mutex<()>,
}

/// Checks a URL: http or https, a host, no credentials or fragment, at most
/// `URL_BYTES_MAX` bytes. Answers it normalized.
pub fn check_url(url: &str) -> Result<String, WebhookError> {
    let field = "url";
    if url.is_empty() || url.len() > URL_BYTES_MAX {
        return Err(WebhookError::invalid(field, format!("1 to {URL_BYTES_MAX} bytes")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| WebhookError::invalid(field, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(WebhookError::invalid(field, "the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(WebhookError::invalid(field, "a host is required"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(WebhookError::invalid(field, "credentials in the URL are refused (it is stored in the log)"));
    }
    if parsed.fragment().is_some() {
        return Err(WebhookError::invalid(field, "a fragment is refused"));
    }
    let normalized = parsed.to_string();
    if normalized.len() > URL_BYTES_MAX {
        return Err(WebhookError::invalid(field, format!("1 to {URL_BYTES_MAX} bytes")));
    }
    Ok(normalized)
}

/// Checks event types: each a known name or `*`, no duplicates, at least one. Answers
/// them in `EVENT_TYPES` order (empty: all).
pub fn check_event_types(types: &[String]) -> Result<Vec<&'static str>, WebhookError> {
    let field = "enabled_events";
    if types.is_empty() {
        return Err(WebhookError::invalid(field, "at least one event type (or \"*\")"));
    }
    if types.len() > EVENT_TYPES.len() + 1 {
        return Err(WebhookError::invalid(field, "duplicate event types"));
    }
    let mut known = Vec::new();
    for name in types {
        if name == ALL_EVENTS {
            if types.len() != 1 {
                return Err(WebhookError::invalid(field, "\"*\" stands alone"));
            }
            return Ok(Vec::new());
        }
        let Some(found) = EVENT_TYPES.iter().find(|t| **t == name.as_str()) else {
            return Err(WebhookError::invalid(
                field,
                format!("unknown event type {name:?}; known: {}", EVENT_TYPES.join(", ")),
            ));
        };
        if known.contains(found) {
            return Err(WebhookError::invalid(field, format!("{name:?} twice")));
        }
        known.push(*found);
    }
    known.sort_by_key(|t| EVENT_TYPES.iter().position(|k| k == t));
    Ok(known)
}

fn new_id() -> Result<String, WebhookError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| WebhookError::Random)?;
    Ok(format!("we_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

impl Endpoints {
    /// Folds the whole stream.
    pub fn open(store: Arc<dyn EventStore>) -> Result<Endpoints, WebhookError> {
        let endpoints = Endpoints { store, state: Mutex::new(State::default()), write: tokio::sync::Mutex::new(()) };
        endpoints.catch_up()?;
        let count = endpoints.lock().live.len();
        tracing::info!(endpoints = count, "webhook endpoints rebuilt from the log");
        Ok(endpoints)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Folds in what the stream has beyond what is folded.
    pub fn catch_up(&self) -> Result<(), WebhookError> {
        loop {
            let from = self.lock().head.map_or(0, |h| h + 1);
            let records = self.store.read_stream(ENDPOINTS_STREAM, from, Direction::Forwards, LOAD_PAGE_EVENTS)?;
            if records.is_empty() {
                return Ok(());
            }
            for record in &records {
                self.apply(record)?;
            }
        }
    }

    /// Folds one event of the stream in, if it is the next one (an event already
    /// folded is skipped: the follower and the writer both pass events here).
    pub fn apply(&self, record: &RecordedEvent) -> Result<(), WebhookError> {
        let mut state = self.lock();
        let next = state.head.map_or(0, |h| h + 1);
        if record.revision < next {
            return Ok(());
        }
        if record.revision > next {
            drop(state);
            // Events in between are durable: fold them first.
            let records = self.store.read_stream(
                ENDPOINTS_STREAM,
                next,
                Direction::Forwards,
                usize::try_from(record.revision - next).unwrap_or(usize::MAX),
            )?;
            for earlier in records.iter().filter(|r| r.revision < record.revision) {
                self.apply(earlier)?;
            }
            state = self.lock();
            if state.head.map_or(0, |h| h + 1) != record.revision {
                return Err(WebhookError::Corrupt(format!(
                    "{ENDPOINTS_STREAM}: a gap before revision {}",
                    record.revision
                )));
            }
        }
        let corrupt =
            |what: &str| WebhookError::Corrupt(format!("{ENDPOINTS_STREAM} revision {}: {what}", record.revision));
        let event = ev::WebhookEndpointEvent::decode(record.payload.as_slice()).map_err(|e| corrupt(&e.to_string()))?;
        match event.kind {
            Some(Kind::Added(added)) => {
                let owner = Owner::parse(&added.owner).ok_or_else(|| corrupt("owner"))?;
                let event_types = check_event_types(&added.event_types).map_err(|e| corrupt(&e.to_string()))?;
                let endpoint = Endpoint {
                    id: event.endpoint_id.clone(),
                    owner,
                    url: added.url,
                    event_types,
                    created_ns: event.timestamp_ns,
                    position: record.position,
                };
                state.live.insert(event.endpoint_id, endpoint);
            }
            Some(Kind::Removed(_)) => {
                state.live.remove(&event.endpoint_id);
            }
            None => return Err(corrupt("no kind")),
        }
        state.head = Some(record.revision);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<Endpoint> {
        self.lock().live.get(id).cloned()
    }

    /// The owner's endpoints (an admin's view: every endpoint), in id order.
    pub fn list(&self, viewer: Owner) -> Vec<Endpoint> {
        self.lock().live.values().filter(|e| viewer == Owner::Admin || e.owner == viewer).cloned().collect()
    }

    /// A page of the viewer's endpoints in id order, after the id `after`; and whether
    /// there are more.
    pub fn page(&self, viewer: Owner, after: Option<&str>, limit: usize) -> (Vec<Endpoint>, bool) {
        let state = self.lock();
        let range = match after {
            Some(after) => state.live.range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => state.live.range::<str, _>(..),
        };
        let mut page: Vec<Endpoint> = range
            .map(|(_, e)| e)
            .filter(|e| viewer == Owner::Admin || e.owner == viewer)
            .take(limit.saturating_add(1))
            .cloned()
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// Whether no endpoint is registered (as far as the stream is folded).
    pub fn is_empty(&self) -> bool {
        self.lock().live.is_empty()
    }

    /// The endpoints registered before log position `position`.
    pub fn before(&self, position: u64) -> Vec<Endpoint> {
        self.lock().live.values().filter(|e| e.position < position).cloned().collect()
    }

    /// Registers an endpoint and answers it.
    pub async fn add(
        &self,
        owner: Owner,
        url: &str,
        event_types: &[String],
        now_ns: u64,
    ) -> Result<Endpoint, WebhookError> {
        let url = check_url(url)?;
        let types = check_event_types(event_types)?;
        let _write = self.write.lock().await;
        self.catch_up()?;
        let (head, count, owned) = {
            let state = self.lock();
            (state.head, state.live.len(), state.live.values().filter(|e| e.owner == owner).count())
        };
        if owned >= ENDPOINTS_PER_OWNER_MAX {
            return Err(WebhookError::LimitReached(format!("at most {ENDPOINTS_PER_OWNER_MAX} endpoints per owner")));
        }
        if count >= ENDPOINTS_MAX {
            return Err(WebhookError::LimitReached(format!("at most {ENDPOINTS_MAX} endpoints in all")));
        }
        let id = new_id()?;
        let event = ev::WebhookEndpointEvent {
            endpoint_id: id.clone(),
            timestamp_ns: now_ns,
            kind: Some(Kind::Added(ev::WebhookEndpointAdded {
                owner: owner.as_text(),
                url,
                event_types: if types.is_empty() {
                    vec![ALL_EVENTS.to_string()]
                } else {
                    types.iter().map(|t| t.to_string()).collect()
                },
            })),
        };
        self.append(head, ADDED, event).await?;
        self.get(&id).ok_or_else(|| WebhookError::Corrupt(format!("endpoint {id} not folded after its append")))
    }

    /// Removes an endpoint the viewer may see.
    pub async fn remove(&self, viewer: Owner, id: &str, now_ns: u64) -> Result<(), WebhookError> {
        let _write = self.write.lock().await;
        self.catch_up()?;
        let head = {
            let state = self.lock();
            match state.live.get(id) {
                Some(e) if viewer == Owner::Admin || e.owner == viewer => state.head,
                _ => return Err(WebhookError::EndpointNotFound),
            }
        };
        let by = if viewer == Owner::Admin { "admin" } else { "owner" };
        let event = ev::WebhookEndpointEvent {
            endpoint_id: id.to_string(),
            timestamp_ns: now_ns,
            kind: Some(Kind::Removed(ev::WebhookEndpointRemoved { by: by.into() })),
        };
        self.append(head, REMOVED, event).await
    }

    async fn append(
        &self,
        head: Option<Revision>,
        kind: &'static str,
        event: ev::WebhookEndpointEvent,
    ) -> Result<(), WebhookError> {
        let expected = head.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
        let data = EventData { event_type: kind.into(), payload: event.encode_to_vec() };
        match self.store.append(ENDPOINTS_STREAM, expected, vec![data]).await {
            Ok(_) => {}
            Err(ledger_engine::store::StoreError::WrongExpectedRevision { .. }) => return Err(WebhookError::Conflict),
            Err(e) => return Err(e.into()),
        }
        self.catch_up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(check_url("https://example.com/hook").expect("ok"), "https://example.com/hook");
        assert!(check_url("http://127.0.0.1:9000/x?a=1").is_ok());
        for bad in ["", "ftp://example.com", "https://user:pw@example.com/", "https://example.com/#frag", "not a url"] {
            assert!(matches!(check_url(bad), Err(WebhookError::Invalid { field: "url", .. })), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(URL_BYTES_MAX));
        assert!(check_url(&long).is_err());
    }

    #[test]
    fn event_types_are_checked() {
        assert_eq!(check_event_types(&["*".into()]).expect("all"), Vec::<&str>::new());
        assert_eq!(
            check_event_types(&["payment.failed".into(), "payment.created".into()]).expect("two"),
            vec!["payment.created", "payment.failed"]
        );
        assert!(check_event_types(&[]).is_err());
        assert!(check_event_types(&["payment.nope".into()]).is_err());
        assert!(check_event_types(&["*".into(), "payment.created".into()]).is_err());
        assert!(check_event_types(&["payment.created".into(), "payment.created".into()]).is_err());
    }

    #[test]
    fn owners_round_trip() {
        for owner in [Owner::Admin, Owner::User(42)] {
            assert_eq!(Owner::parse(&owner.as_text()), Some(owner));
        }
        assert_eq!(Owner::parse("user:x"), None);
        assert_eq!(Owner::parse("root"), None);
    }
}
