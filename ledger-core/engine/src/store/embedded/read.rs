//! The embedded store's read path: records found through the index are read from their
//! segments, several close together with one `pread`, into a buffer each thread keeps,
//! and each is checked to be the record the index names.

use super::*;

/// Records read with one `pread` of their span: at most this far apart...
const READ_GAP_BYTES_MAX: u32 = 64 << 10;
/// ...and this long in all (plus the last record).
const READ_SPAN_BYTES_MAX: u32 = 4 << 20;
/// A thread keeps its span buffer between reads up to this many bytes (a span and a
/// large last record); a larger one, read for a record near `APPEND_BYTES_MAX`, is
/// freed after its read.
const SPAN_BUFFER_KEEP_BYTES: usize = 2 * READ_SPAN_BYTES_MAX as usize;

thread_local! {
    /// The bytes of the spans read on this thread, reused: a fresh buffer of a few MiB
    /// per read cost the projector page faults and zeroing of new memory each time.
    static SPAN_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The first `len` bytes of `buffer`, which grows to hold them (what lies past its
/// earlier reads is stale, and is overwritten by the caller's read).
fn at_least(buffer: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
    &mut buffer[..len]
}

impl EmbeddedStore {
    fn segment_file(&self, segment: u32) -> Result<Arc<dyn DiskFile>, StoreError> {
        let segments = self.shared.segments.read().map_err(|_| StoreError::Closed)?;
        segments.get(segment as usize).cloned().ok_or(StoreError::Closed)
    }

    /// The records at `located`, each of which must be the one the index says is there:
    /// at that position, or of `stream` at that revision. Records close together in one
    /// segment (a page of the log, a run of a stream) are read with one `pread` of
    /// their span rather than two each.
    pub(super) fn read_located(
        &self,
        stream: &str,
        located: Vec<(Location, Expected)>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        SPAN_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let out = self.read_located_with(stream, &located, &mut buffer);
            if buffer.capacity() > SPAN_BUFFER_KEEP_BYTES {
                *buffer = Vec::new();
            }
            out
        })
    }

    fn read_located_with(
        &self,
        stream: &str,
        located: &[(Location, Expected)],
        buffer: &mut Vec<u8>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::with_capacity(located.len());
        let mut first = 0;
        while first < located.len() {
            let start = located[first].0;
            let mut end = first + 1;
            while let Some((next, _)) = located.get(end) {
                let previous = located[end - 1].0;
                let close = next.segment == start.segment
                    && next.offset > previous.offset
                    && next.offset - previous.offset <= READ_GAP_BYTES_MAX
                    && next.offset - start.offset <= READ_SPAN_BYTES_MAX;
                if !close {
                    break;
                }
                end += 1;
            }
            let span = self.read_span(start.segment, start.offset, located[end - 1].0.offset, buffer)?;
            for (location, expected) in &located[first..end] {
                let at = (location.offset - start.offset) as usize;
                out.push(self.checked_record(&span[at..], *location, stream, *expected)?);
            }
            first = end;
        }
        Ok(out)
    }

    /// The bytes of `segment` from `from` to the end of the record at `last`, read into
    /// the front of `buffer` (grown as needed; what lies past them is stale).
    fn read_span<'b>(
        &self,
        segment: u32,
        from: u32,
        last: u32,
        buffer: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], StoreError> {
        let file = self.segment_file(segment)?;
        let path = || self.shared.dir.join(format::segment_file_name(segment));
        let head_len = (last - from) as usize + RECORD_HEADER_BYTES;
        file.read_exact_at(at_least(buffer, head_len), u64::from(from)).map_err(|e| io_error("read", &path(), e))?;
        let last_at = head_len - RECORD_HEADER_BYTES;
        let body_len = u32::from_le_bytes(buffer[last_at..last_at + 4].try_into().expect("4 bytes")) as usize;
        if body_len > APPEND_BYTES_MAX {
            return Err(StoreError::Corrupt {
                file: path(),
                offset: u64::from(last),
                reason: "record length is larger than any append".into(),
            });
        }
        let len = head_len + body_len;
        let body_at = u64::from(last) + RECORD_HEADER_BYTES as u64;
        file.read_exact_at(&mut at_least(buffer, len)[head_len..], body_at)
            .map_err(|e| io_error("read", &path(), e))?;
        Ok(&buffer[..len])
    }

    /// The record at the start of `bytes` (read from `location`), checked to be the one
    /// the index names.
    fn checked_record(
        &self,
        bytes: &[u8],
        location: Location,
        stream: &str,
        expected: Expected,
    ) -> Result<RecordedEvent, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            file: self.shared.dir.join(format::segment_file_name(location.segment)),
            offset: u64::from(location.offset),
            reason: reason.to_string(),
        };
        let (event, _) = format::parse_record(bytes).map_err(corrupt)?;
        let found = match expected {
            Expected::Position(position) => event.position == position,
            Expected::Revision(revision) => event.revision == revision && event.stream == stream,
        };
        if !found {
            return Err(corrupt("the record here is not the one the index names"));
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::tests::append;

    #[test]
    fn reads_after_a_larger_one_on_the_same_thread_see_only_their_own_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
        let big = "x".repeat(200_000);
        append(&store, &big).expect("big");
        append(&store, "small").expect("small");
        // A span of both fills the thread's buffer past what the next reads need.
        let both = store.read_all(0, 10).expect("read both");
        assert_eq!(both.iter().map(|e| e.payload.len()).collect::<Vec<_>>(), [200_000, 5]);
        let small = store.read_all(1, 10).expect("read the small one");
        assert_eq!((small.len(), small[0].payload.as_slice()), (1, b"small".as_slice()));
        let first = store.read_stream("s", 0, Direction::Forwards, 1).expect("read the first");
        assert_eq!(first[0].payload, big.as_bytes());
        let last = store.read_stream("s", 1, Direction::Forwards, 5).expect("read the last");
        assert_eq!((last.len(), last[0].payload.as_slice()), (1, b"small".as_slice()));
    }
}
