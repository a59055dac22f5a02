//! The committer's appends past the page cache (`O_DIRECT`).
//!
//! A buffered `write` copies each byte into a page of the page cache, zeroed first,
//! which the committer drops again once synced. On a virtual machine whose free memory
//! goes back to the host (free page reporting), each such fresh page also costs the
//! host a fault: late in a 100M-transfer run the committer's kernel time doubled (from
//! 13% to 25% of a core) and the rate fell by a tenth and more. A direct write takes
//! the bytes from the committer's own memory, reused from group to group.
//!
//! A direct write covers whole blocks ([`DIRECT_ALIGN`] bytes) at block-aligned
//! offsets, so each group rewrites the segment's last partial block (kept here) with
//! the new frames after it and zeros to the block's end. The file then ends with
//! fewer than a block of zero bytes after its last frame, until the committer cuts
//! them when it moves to the next segment or closes. The recovery scan takes them for
//! padding (`format::scan_segment`), not for a torn tail, and the open cuts them.
//! Rewriting the synced bytes of a partial block is what the kernel's writeback of a
//! buffered append does too (it writes whole pages), so what a crash may leave is as
//! before.

use std::io;
use std::sync::Arc;

use super::{io_error, Shared};
use crate::store::disk::{DiskFile, DIRECT_ALIGN};
use crate::store::{format, StoreError};

/// The last segment, opened for direct writes.
pub(super) struct DirectLog {
    file: Arc<dyn DiskFile>,
    /// The segment's bytes from the last block bound at or before its end to its end.
    tail: Vec<u8>,
    /// Memory for each write (the part used starts at a block bound), kept.
    staging: Vec<u8>,
}

/// The block bound at or before `offset`.
fn block_start(offset: u64) -> u64 {
    offset - offset % DIRECT_ALIGN as u64
}

impl DirectLog {
    /// Segment `segment` (`file`, through the page cache, `len` bytes long) opened for
    /// direct writes, if the disk has them; its last partial block is read once.
    pub(super) fn open(
        shared: &Shared,
        segment: u32,
        file: &dyn DiskFile,
        len: u64,
    ) -> Result<Option<DirectLog>, StoreError> {
        let path = shared.dir.join(format::segment_file_name(segment));
        let Some(direct) = shared.disk.open_direct(&path).map_err(|e| io_error("open", &path, e))? else {
            return Ok(None);
        };
        DirectLog::new(direct, file, len).map(Some).map_err(|e| io_error("read", &path, e))
    }

    /// `direct`: the segment opened for direct writes; `file`: the same through the
    /// page cache, to read its last partial block once; `len`: its length.
    fn new(direct: Arc<dyn DiskFile>, file: &dyn DiskFile, len: u64) -> io::Result<DirectLog> {
        let start = block_start(len);
        let mut tail = vec![0; (len - start) as usize];
        file.read_exact_at(&mut tail, start)?;
        Ok(DirectLog { file: direct, tail, staging: Vec::new() })
    }

    /// Writes `bytes` at the end of the segment, `len` bytes long before them.
    pub(super) fn append(&mut self, bytes: &[u8], len: u64) -> io::Result<()> {
        let start = block_start(len);
        assert_eq!(self.tail.len() as u64, len - start, "the direct log's tail is not the segment's");
        let used = self.tail.len() + bytes.len();
        let padded = used.next_multiple_of(DIRECT_ALIGN);
        if self.staging.len() < padded + DIRECT_ALIGN {
            self.staging.resize(padded + DIRECT_ALIGN, 0);
        }
        let at = self.staging.as_ptr().align_offset(DIRECT_ALIGN);
        let out = &mut self.staging[at..at + padded];
        out[..self.tail.len()].copy_from_slice(&self.tail);
        out[self.tail.len()..used].copy_from_slice(bytes);
        out[used..].fill(0);
        self.file.write_all_at(out, start)?;
        let end = len + bytes.len() as u64;
        let next_tail = (block_start(end) - start) as usize;
        self.tail.clear();
        self.tail.extend_from_slice(&out[next_tail..used]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::disk::{Disk, RealDisk};

    /// Appends of every size, on and off block bounds, leave the file's bytes equal
    /// to what was appended, then zeros to a block bound.
    #[test]
    fn appends_read_back_whole_with_zeros_to_the_block_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.seg");
        std::fs::write(&path, b"header").expect("write");
        let file = RealDisk.open_append(&path).expect("open");
        // A file system that refuses direct writes (tmpfs) has nothing to check here.
        let Some(direct) = RealDisk.open_direct(&path).expect("open direct") else { return };
        let mut log = DirectLog::new(direct, &*file, 6).expect("direct log");
        let mut expected = b"header".to_vec();
        for (round, size) in [1, 4_089, 4_096, 10_000, 0, 3, 8_192, 70_001].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + round) as u8 | 1).collect();
            log.append(&bytes, expected.len() as u64).expect("append");
            expected.extend_from_slice(&bytes);
            let found = std::fs::read(&path).expect("read");
            assert_eq!(found.len(), expected.len().next_multiple_of(DIRECT_ALIGN), "round {round}: length");
            assert_eq!(found[..expected.len()], expected[..], "round {round}");
            assert!(found[expected.len()..].iter().all(|byte| *byte == 0), "round {round}: padding");
        }
    }

    /// A log copied while its store is open (what a kill leaves) ends with a direct
    /// write's zeros: the auditor's scan finds no torn tail, and the open cuts them,
    /// reports no torn tail and goes on appending.
    #[test]
    fn padding_is_no_torn_tail_and_the_open_cuts_it() {
        use crate::store::embedded::tests::append;
        use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
        use crate::store::{format, EventStore};
        let (live, copy) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let segment = format::segment_file_name(0);
        let probe = live.path().join("probe");
        std::fs::write(&probe, b"").expect("probe");
        let direct = RealDisk.open_direct(&probe).expect("probe").is_some();
        std::fs::remove_file(&probe).expect("remove probe");
        let (store, _) = EmbeddedStore::open(live.path(), EmbeddedOptions::default()).expect("open");
        append(&store, "one").expect("append");
        append(&store, "two").expect("append");
        let bytes = std::fs::read(live.path().join(&segment)).expect("read");
        std::fs::write(copy.path().join(&segment), &bytes).expect("copy");
        drop(store);
        let closed = std::fs::read(live.path().join(&segment)).expect("read");
        // A file system without direct writes (tmpfs) appends through the page cache.
        if !direct {
            assert_eq!(bytes, closed);
            return;
        }
        assert_eq!(bytes.len() % DIRECT_ALIGN, 0, "padded while open");
        assert!(closed.len() < bytes.len(), "a close cuts the padding");
        assert_eq!(bytes[..closed.len()], closed[..]);
        assert!(bytes[closed.len()..].iter().all(|byte| *byte == 0));
        let scanned = format::scan(copy.path(), |_, _| {}).expect("scan");
        assert_eq!((scanned.records, scanned.torn_tail), (2, None));
        let (store, report) = EmbeddedStore::open(copy.path(), EmbeddedOptions::default()).expect("open the copy");
        assert_eq!((report.records, report.torn_tail), (2, None));
        assert_eq!(std::fs::read(copy.path().join(&segment)).expect("read"), closed, "the open cut the padding");
        append(&store, "three").expect("append after the open");
        let payloads: Vec<_> = store.read_all(0, 10).expect("read").into_iter().map(|e| e.payload).collect();
        assert_eq!(payloads, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    }
}
