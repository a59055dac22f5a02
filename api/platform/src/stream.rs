//! The aggregate helper every platform stream uses: load a stream in pages, and append
//! with the exact expected revision. State changes only after an append is durable,
//! by the same `evolve` replay uses, so callers evolve after [`append`] returns.

use crate::engine::StoreError;
use crate::engine::{Direction, EventData, EventStore, EventStoreExt, ExpectedRevision, RecordedEvent, Revision};

/// Passes every event of `stream` to `apply` in order, reading `page` events at a time;
/// answers the stream's last revision (`None`: no stream).
pub(crate) fn load<E: From<StoreError>>(
    store: &dyn EventStore,
    stream: &str,
    page: usize,
    mut apply: impl FnMut(&RecordedEvent) -> Result<(), E>,
) -> Result<Option<Revision>, E> {
    let mut from = 0;
    let mut head = None;
    loop {
        let records = store.read_stream(stream, from, Direction::Forwards, page)?;
        let Some(last) = records.last() else { return Ok(head) };
        from = last.revision + 1;
        head = Some(last.revision);
        for record in &records {
            apply(record)?;
        }
    }
}

/// Appends `events` to `stream` if its head is still `head` (`None`: the stream must
/// not exist yet), and moves `head` to the new last revision.
pub(crate) async fn append(
    store: &dyn EventStore,
    stream: &str,
    head: &mut Option<Revision>,
    events: Vec<EventData>,
) -> Result<(), StoreError> {
    let expected = head.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
    let outcome = store.append(stream, expected, events).await?;
    *head = outcome.last_revision;
    Ok(())
}
