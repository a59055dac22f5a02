//! The index of a segment: in memory while the segment takes appends
//! ([`SegmentTable`]), and in a seal file once the store has moved on to the next
//! segment ([`Sealed`]). Opening reads each sealed segment's header, block fences and
//! bloom filter (a few bytes per stream of the segment) instead of every record, and
//! scans only the unsealed last segment; a lookup probes the bloom filters in memory
//! and reads one block of one seal. Only the newest sealed segments keep their filters
//! and fences in memory: the streams' directory (`directory.rs`) finds the streams of
//! the older ones. So neither the time to open nor the memory of the index grows with
//! the number of records.
//!
//! ```text
//! seal file  {segment:010}.idx, all integers little-endian
//!   header    64 bytes: magic "LEDGIDX1" | u32 segment | u32 block count |
//!             u64 first position | u64 record count | u64 segment length |
//!             u32 stream count | u32 bloom bytes | u32 offsets at | u32 blocks at |
//!             u32 locations at | u32 crc32c(previous 60 bytes)
//!   fences    block count × 24 bytes: u64 first key | u32 block at | u32 block length |
//!             u32 crc32c(block) | u32 zero; then u32 crc32c(fences)
//!   bloom     bloom bytes (16 bits a stream, 7 probes); then u32 crc32c(bloom)
//!   offsets   record count × u32: each record's offset in the segment, by position
//!   blocks    the segment's streams sorted by (key, name), BLOCK_STREAMS a block:
//!             u64 key | u64 first revision | u32 count | u32 first location |
//!             [32] last chain hash | u8 name length | name
//!   locations record count × u32: the offsets of each stream's records, one run per
//!             stream in revision order
//! ```
//!
//! A stream's key is the first 8 bytes of blake3(name). What a wrong header, fence,
//! bloom or block would make the store believe is covered by a checksum; offsets and
//! locations are not, because every record read through them is checked to be the one
//! expected (its position, or its stream and revision) besides its own checksum.
//! A seal is written once, whole, to a temporary file that is synced and renamed; a
//! seal that is missing or does not check is ignored, and opening scans its segment
//! and writes it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{replace_file, Disk, DiskFile};
use super::{StoreError, StreamHead};
use ledger_core::chain::Hash;

const MAGIC: &[u8; 8] = b"LEDGIDX1";
const HEADER_BYTES: usize = 64;
const FENCE_BYTES: usize = 24;
/// Streams in one block of a seal: a lookup reads and checks one block.
const BLOCK_STREAMS: usize = 64;
const ENTRY_FIXED_BYTES: usize = 8 + 8 + 4 + 4 + 32 + 1;
/// 16 bits a stream: a false positive (a block read for a stream the segment lacks) in
/// about 1/1,400 lookups of a segment. A new stream is looked up in every sealed
/// segment, so at 10 bits (1/120) a log of 50 segments read a block for about every
/// second new payment. Seals written with fewer bits are still read (the bits are the
/// bloom's length).
const BLOOM_BITS_PER_STREAM: usize = 16;
const BLOOM_PROBES: u64 = 7;

pub fn seal_file_name(segment: u32) -> String {
    format!("{segment:010}.idx")
}

/// The key of a stream name in a seal (stable across builds: it is on disk).
pub fn key(stream: &str) -> u64 {
    let hash = blake3::hash(stream.as_bytes());
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("slice of 4"))
}

pub(super) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("slice of 8"))
}

fn bloom_probes(key: u64, bits: u64) -> impl Iterator<Item = u64> {
    let (low, step) = (key & 0xFFFF_FFFF, (key >> 32) | 1);
    (0..BLOOM_PROBES).map(move |i| low.wrapping_add(i.wrapping_mul(step)) % bits)
}

/// The records of one stream in one segment: consecutive revisions.
#[derive(Debug)]
pub struct Run {
    pub first_revision: u64,
    pub offsets: Vec<u32>,
    pub last_hash: Hash,
}

impl Run {
    fn head(&self) -> StreamHead {
        StreamHead { revision: self.first_revision + self.offsets.len() as u64 - 1, hash: self.last_hash }
    }
}

/// The index of a segment that still takes appends (or was just scanned): every
/// record's offset by position, and each stream's run. Its size is bounded by the
/// segment's (at most `segment_bytes_max`).
#[derive(Debug)]
pub struct SegmentTable {
    pub segment: u32,
    pub first_position: u64,
    offsets: Vec<u32>,
    streams: HashMap<String, Run>,
}

impl SegmentTable {
    pub fn new(segment: u32, first_position: u64) -> SegmentTable {
        SegmentTable { segment, first_position, offsets: Vec::new(), streams: HashMap::new() }
    }

    pub fn next_position(&self) -> u64 {
        self.first_position + self.offsets.len() as u64
    }

    /// Adds one append's records: consecutive revisions of `stream` from
    /// `first_revision`, at consecutive positions from the table's next one.
    pub fn push(&mut self, stream: &str, first_revision: u64, offsets: &[u32], last_hash: Hash) {
        if offsets.is_empty() {
            return;
        }
        self.offsets.extend_from_slice(offsets);
        match self.streams.get_mut(stream) {
            Some(run) => {
                assert_eq!(run.first_revision + run.offsets.len() as u64, first_revision, "revisions of {stream}");
                run.offsets.extend_from_slice(offsets);
                run.last_hash = last_hash;
            }
            None => {
                self.streams.insert(stream.to_string(), Run { first_revision, offsets: offsets.to_vec(), last_hash });
            }
        }
    }

    pub fn run(&self, stream: &str) -> Option<&Run> {
        self.streams.get(stream)
    }

    pub fn head(&self, stream: &str) -> Option<StreamHead> {
        self.streams.get(stream).map(Run::head)
    }

    /// Offsets of up to `take` records from `position`.
    pub fn offsets(&self, position: u64, take: usize) -> &[u32] {
        let start = (position.saturating_sub(self.first_position) as usize).min(self.offsets.len());
        &self.offsets[start..(start + take).min(self.offsets.len())]
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.streams.keys().map(String::as_str)
    }

    /// The seal file of this table, for a segment of `segment_len` bytes.
    pub fn encode(&self, segment_len: u64) -> Vec<u8> {
        let mut streams: Vec<(u64, &str, &Run)> =
            self.streams.iter().map(|(name, run)| (key(name), name.as_str(), run)).collect();
        streams.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let bloom_bits = (streams.len() * BLOOM_BITS_PER_STREAM).max(64);
        let mut bloom = vec![0u8; bloom_bits.div_ceil(8)];
        let bits = (bloom.len() * 8) as u64;
        let mut blocks = Vec::new();
        let mut block_spans = Vec::new();
        let mut locations: Vec<u32> = Vec::with_capacity(self.offsets.len());
        for chunk in streams.chunks(BLOCK_STREAMS) {
            let start = blocks.len();
            for (key, name, run) in chunk {
                for bit in bloom_probes(*key, bits) {
                    bloom[(bit / 8) as usize] |= 1 << (bit % 8);
                }
                blocks.extend_from_slice(&key.to_le_bytes());
                blocks.extend_from_slice(&run.first_revision.to_le_bytes());
                blocks.extend_from_slice(&(run.offsets.len() as u32).to_le_bytes());
                blocks.extend_from_slice(&(locations.len() as u32).to_le_bytes());
                blocks.extend_from_slice(&run.last_hash);
                blocks.push(name.len() as u8);
                blocks.extend_from_slice(name.as_bytes());
                locations.extend_from_slice(&run.offsets);
            }
            block_spans.push((chunk[0].0, start, blocks.len() - start));
        }
        let fences_len = block_spans.len() * FENCE_BYTES + 4;
        let offsets_at = HEADER_BYTES + fences_len + bloom.len() + 4;
        let blocks_at = offsets_at + self.offsets.len() * 4;
        let locations_at = blocks_at + blocks.len();
        let mut out = Vec::with_capacity(locations_at + locations.len() * 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.segment.to_le_bytes());
        out.extend_from_slice(&(block_spans.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.first_position.to_le_bytes());
        out.extend_from_slice(&(self.offsets.len() as u64).to_le_bytes());
        out.extend_from_slice(&segment_len.to_le_bytes());
        for value in [streams.len(), bloom.len(), offsets_at, blocks_at, locations_at] {
            out.extend_from_slice(&(value as u32).to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let fences_start = out.len();
        for (first_key, start, len) in &block_spans {
            out.extend_from_slice(&first_key.to_le_bytes());
            out.extend_from_slice(&((blocks_at + start) as u32).to_le_bytes());
            out.extend_from_slice(&(*len as u32).to_le_bytes());
            out.extend_from_slice(&crc32c::crc32c(&blocks[*start..start + len]).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[fences_start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&bloom);
        out.extend_from_slice(&crc32c::crc32c(&bloom).to_le_bytes());
        for offset in &self.offsets {
            out.extend_from_slice(&offset.to_le_bytes());
        }
        out.extend_from_slice(&blocks);
        for location in &locations {
            out.extend_from_slice(&location.to_le_bytes());
        }
        out
    }
}

/// One stream's run in a sealed segment.
#[derive(Clone, Copy, Debug)]
pub struct SealedRun {
    pub first_revision: u64,
    pub count: u32,
    first_location: u32,
    pub last_hash: Hash,
}

impl SealedRun {
    pub fn head(&self) -> StreamHead {
        StreamHead { revision: self.first_revision + u64::from(self.count) - 1, hash: self.last_hash }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Fence {
    first_key: u64,
    at: u32,
    len: u32,
    crc: u32,
}

/// What a seal keeps in memory while no directory covers it: its block fences and its
/// bloom filter.
#[derive(Debug)]
struct Front {
    fences: Vec<Fence>,
    bloom: Vec<u8>,
}

/// What the header of a seal says.
#[derive(Debug)]
struct Header {
    segment: u32,
    blocks: usize,
    first_position: u64,
    records: u64,
    segment_len: u64,
    streams: u32,
    bloom_bytes: usize,
    offsets_at: u32,
    locations_at: u32,
    crc: u32,
}

fn parse_header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC || crc32c::crc32c(&bytes[..60]) != u32_at(bytes, 60) {
        return None;
    }
    Some(Header {
        segment: u32_at(bytes, 8),
        blocks: u32_at(bytes, 12) as usize,
        first_position: u64_at(bytes, 16),
        records: u64_at(bytes, 24),
        segment_len: u64_at(bytes, 32),
        streams: u32_at(bytes, 40),
        bloom_bytes: u32_at(bytes, 44) as usize,
        offsets_at: u32_at(bytes, 48),
        locations_at: u32_at(bytes, 56),
        crc: u32_at(bytes, 60),
    })
}

/// A sealed segment's index: its header in memory, and its block fences and bloom
/// filter until the streams' directory covers it ([`Sealed::cover`]); the rest read from
/// its seal file when a lookup needs it.
#[derive(Debug)]
pub struct Sealed {
    pub segment: u32,
    pub first_position: u64,
    pub records: u64,
    /// The segment's streams: one block entry each.
    pub streams: u32,
    /// The header's checksum, which a directory records of every seal it covers.
    pub header_crc: u32,
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    blocks: usize,
    bloom_bytes: usize,
    front: Option<Front>,
    offsets_at: u32,
    locations_at: u32,
}

impl Sealed {
    /// The seal of `segment` in `dir` if it exists, checks, and describes that segment
    /// as found: starting at `first_position`, `segment_len` bytes long. `None` means
    /// "scan the segment"; an error is an I/O error reading a file that exists.
    pub fn open(
        disk: &dyn Disk,
        dir: &Path,
        segment: u32,
        first_position: u64,
        segment_len: u64,
    ) -> Result<Option<Sealed>, StoreError> {
        let path = dir.join(seal_file_name(segment));
        let Some((file, file_len)) = open_if_exists(disk, &path)? else { return Ok(None) };
        let mut header = [0u8; HEADER_BYTES];
        if file_len < HEADER_BYTES as u64 {
            return Ok(None);
        }
        file.read_exact_at(&mut header, 0).map_err(|e| io_error("read", &path, e))?;
        let Some(header) = parse_header(&header) else { return Ok(None) };
        let described = header.segment == segment
            && header.first_position == first_position
            && header.segment_len == segment_len
            && file_len == u64::from(header.locations_at) + header.records * 4
            && (HEADER_BYTES + header.blocks * FENCE_BYTES + 4 + header.bloom_bytes + 4) as u64
                == u64::from(header.offsets_at);
        if !described {
            return Ok(None);
        }
        let mut front = vec![0u8; header.offsets_at as usize - HEADER_BYTES];
        file.read_exact_at(&mut front, HEADER_BYTES as u64).map_err(|e| io_error("read", &path, e))?;
        Ok(Sealed::from_front(path, file, &header, &front))
    }

    /// The seal from its header and the bytes after it up to its offsets (fences and
    /// bloom), if their checksums hold.
    fn from_front(path: PathBuf, file: Arc<dyn DiskFile>, header: &Header, front: &[u8]) -> Option<Sealed> {
        let front = parse_front(header.blocks, header.bloom_bytes, front)?;
        Some(Sealed {
            segment: header.segment,
            first_position: header.first_position,
            records: header.records,
            streams: header.streams,
            header_crc: header.crc,
            path,
            file,
            blocks: header.blocks,
            bloom_bytes: header.bloom_bytes,
            front: Some(front),
            offsets_at: header.offsets_at,
            locations_at: header.locations_at,
        })
    }

    /// Drops the fences and the bloom filter from memory: the streams' directory covers
    /// this segment, and finds its streams' blocks ([`Sealed::run_in_block`]).
    pub fn cover(&mut self) {
        self.front = None;
    }

    /// Reads the fences and the bloom filter into memory again (a directory that
    /// covered this segment did not check).
    pub fn uncover(&mut self) -> Result<(), StoreError> {
        if self.front.is_none() {
            let bytes = self.read(HEADER_BYTES as u64, self.offsets_at as usize - HEADER_BYTES)?;
            let front = parse_front(self.blocks, self.bloom_bytes, &bytes)
                .ok_or_else(|| corrupt(&self.path, HEADER_BYTES as u64, "seal fences or bloom checksum mismatch"))?;
            self.front = Some(front);
        }
        Ok(())
    }

    pub fn covered(&self) -> bool {
        self.front.is_none()
    }

    /// This seal without its fences and filter in memory, for a merge into the
    /// streams' directory that reads it while the index goes on.
    pub fn detached(&self) -> Sealed {
        Sealed {
            segment: self.segment,
            first_position: self.first_position,
            records: self.records,
            streams: self.streams,
            header_crc: self.header_crc,
            path: self.path.clone(),
            file: self.file.clone(),
            blocks: self.blocks,
            bloom_bytes: self.bloom_bytes,
            front: None,
            offsets_at: self.offsets_at,
            locations_at: self.locations_at,
        }
    }

    /// The block fences: from memory, or read from the file and checked.
    pub(super) fn fences(&self) -> Result<std::borrow::Cow<'_, [Fence]>, StoreError> {
        if let Some(front) = &self.front {
            return Ok(std::borrow::Cow::Borrowed(&front.fences));
        }
        let bytes = self.read(HEADER_BYTES as u64, self.blocks * FENCE_BYTES + 4)?;
        parse_fences(self.blocks, &bytes)
            .map(std::borrow::Cow::Owned)
            .ok_or_else(|| corrupt(&self.path, HEADER_BYTES as u64, "seal fences checksum mismatch"))
    }

    /// Writes `table`'s seal (its segment is `segment_len` bytes and takes no more
    /// appends), durable and renamed into place, and opens it.
    pub fn write(disk: &dyn Disk, dir: &Path, table: &SegmentTable, segment_len: u64) -> Result<Sealed, StoreError> {
        let bytes = table.encode(segment_len);
        let path = dir.join(seal_file_name(table.segment));
        replace_file(disk, &path, &bytes).map_err(|failed| io_error(failed.operation, &failed.path, failed.error))?;
        let file = disk.open_append(&path).map_err(|e| io_error("open", &path, e))?;
        let header = parse_header(&bytes).expect("a header just encoded");
        Sealed::from_front(path.clone(), file, &header, &bytes[HEADER_BYTES..header.offsets_at as usize])
            .ok_or_else(|| corrupt(&path, 0, "a seal just encoded does not check"))
    }

    pub fn next_position(&self) -> u64 {
        self.first_position + self.records
    }

    /// Reads the bytes of `key`'s first two probes, to be answered from the cache by
    /// [`Sealed::run_keyed`] soon after. A new stream is looked up in every sealed
    /// segment: touching all their filters first lets the memory system fetch the
    /// bytes of many segments at once (the loads do not depend on one another), where
    /// probing segment after segment waits for each miss in turn.
    pub fn touch(&self, key: u64) -> u8 {
        let Some(Front { bloom, .. }) = &self.front else { return 0 };
        let bits = (bloom.len() * 8) as u64;
        bloom_probes(key, bits).take(2).fold(0, |acc, bit| acc ^ bloom[(bit / 8) as usize])
    }

    /// False when the segment surely lacks the stream; true when it may hold it, and
    /// always for a covered seal (whose filter is not in memory).
    fn might_hold(&self, key: u64) -> bool {
        let Some(Front { bloom, .. }) = &self.front else { return true };
        let bits = (bloom.len() * 8) as u64;
        bloom_probes(key, bits).all(|bit| bloom[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
    }

    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let mut bytes = vec![0u8; len];
        self.file.read_exact_at(&mut bytes, at).map_err(|e| io_error("read", &self.path, e))?;
        Ok(bytes)
    }

    fn block(&self, fence: &Fence) -> Result<Vec<u8>, StoreError> {
        let block = self.read(u64::from(fence.at), fence.len as usize)?;
        if crc32c::crc32c(&block) != fence.crc {
            return Err(corrupt(&self.path, u64::from(fence.at), "seal block checksum mismatch"));
        }
        Ok(block)
    }

    /// Calls `each` with every entry of a checked block until it answers `Some`.
    fn entries<T>(
        &self,
        fence: &Fence,
        mut each: impl FnMut(u64, &[u8], SealedRun) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let block = self.block(fence)?;
        let bad = || corrupt(&self.path, u64::from(fence.at), "seal block entries run past the block");
        let mut at = 0;
        while at < block.len() {
            let fixed = block.get(at..at + ENTRY_FIXED_BYTES).ok_or_else(bad)?;
            let name_len = fixed[ENTRY_FIXED_BYTES - 1] as usize;
            let name = block.get(at + ENTRY_FIXED_BYTES..at + ENTRY_FIXED_BYTES + name_len).ok_or_else(bad)?;
            let run = SealedRun {
                first_revision: u64_at(fixed, 8),
                count: u32_at(fixed, 16),
                first_location: u32_at(fixed, 20),
                last_hash: fixed[24..56].try_into().expect("32 bytes"),
            };
            if run.count == 0 || u64::from(run.first_location) + u64::from(run.count) > self.records {
                return Err(bad());
            }
            if let Some(found) = each(u64_at(fixed, 0), name, run) {
                return Ok(Some(found));
            }
            at += ENTRY_FIXED_BYTES + name_len;
        }
        Ok(None)
    }

    /// `stream`'s run in this segment, if it has one.
    pub fn run(&self, stream: &str) -> Result<Option<SealedRun>, StoreError> {
        self.run_keyed(stream, key(stream))
    }

    /// [`Sealed::run`] with the stream's [`key`] computed once for many segments.
    pub fn run_keyed(&self, stream: &str, key: u64) -> Result<Option<SealedRun>, StoreError> {
        if !self.might_hold(key) {
            return Ok(None);
        }
        let fences = self.fences()?;
        let start = fences.partition_point(|fence| fence.first_key < key).saturating_sub(1);
        for fence in fences[start..].iter().take_while(|fence| fence.first_key <= key) {
            if let Some(run) = self.run_in(fence, stream, key)? {
                return Ok(Some(run));
            }
        }
        Ok(None)
    }

    /// `stream`'s run in the block `block` (its fence's index), which the streams'
    /// directory says holds an entry with `key`.
    pub fn run_in_block(&self, stream: &str, key: u64, block: u32) -> Result<Option<SealedRun>, StoreError> {
        let block = block as usize;
        if block >= self.blocks {
            return Err(corrupt(&self.path, 0, "the streams' directory names a block the seal lacks"));
        }
        let fence = match &self.front {
            Some(front) => front.fences[block].clone(),
            None => {
                let at = (HEADER_BYTES + block * FENCE_BYTES) as u64;
                fence_of(&self.read(at, FENCE_BYTES)?)
            }
        };
        self.run_in(&fence, stream, key)
    }

    fn run_in(&self, fence: &Fence, stream: &str, key: u64) -> Result<Option<SealedRun>, StoreError> {
        // The key first: a lookup compares names only where the keys are equal.
        self.entries(fence, |at, name, run| (at == key && name == stream.as_bytes()).then_some(run))
    }

    /// The keys of the streams in the block of `fence`, in order.
    pub(super) fn block_keys(&self, fence: &Fence, out: &mut Vec<u64>) -> Result<(), StoreError> {
        self.entries(fence, |key, _, _| {
            out.push(key);
            None::<()>
        })?;
        Ok(())
    }

    /// Offsets of the records `skip .. skip + take` of `run`.
    pub fn run_offsets(&self, run: &SealedRun, skip: u32, take: u32) -> Result<Vec<u32>, StoreError> {
        let first = u64::from(run.first_location) + u64::from(skip);
        self.u32s(u64::from(self.locations_at) + first * 4, take.min(run.count.saturating_sub(skip)) as usize)
    }

    /// Offsets of up to `take` records from `position`.
    pub fn offsets(&self, position: u64, take: usize) -> Result<Vec<u32>, StoreError> {
        let index = position.saturating_sub(self.first_position).min(self.records);
        let take = take.min((self.records - index) as usize);
        self.u32s(u64::from(self.offsets_at) + index * 4, take)
    }

    fn u32s(&self, at: u64, count: usize) -> Result<Vec<u32>, StoreError> {
        Ok(self.read(at, count * 4)?.chunks_exact(4).map(|bytes| u32_at(bytes, 0)).collect())
    }

    /// Adds the names of this segment's streams that start with `prefix` to `out`.
    pub fn names(&self, prefix: &str, out: &mut Vec<String>) -> Result<(), StoreError> {
        for fence in self.fences()?.iter() {
            let mut bad_name = false;
            self.entries(fence, |_, name, _| {
                match std::str::from_utf8(name) {
                    Ok(name) if name.starts_with(prefix) => out.push(name.to_string()),
                    Ok(_) => {}
                    Err(_) => bad_name = true,
                }
                bad_name.then_some(())
            })?;
            if bad_name {
                return Err(corrupt(&self.path, u64::from(fence.at), "a stream name in a seal block is not UTF-8"));
            }
        }
        Ok(())
    }
}

fn fence_of(bytes: &[u8]) -> Fence {
    Fence { first_key: u64_at(bytes, 0), at: u32_at(bytes, 8), len: u32_at(bytes, 12), crc: u32_at(bytes, 16) }
}

/// `blocks` fences and their checksum, if it holds.
fn parse_fences(blocks: usize, bytes: &[u8]) -> Option<Vec<Fence>> {
    let len = blocks * FENCE_BYTES;
    if bytes.len() < len + 4 || crc32c::crc32c(&bytes[..len]) != u32_at(bytes, len) {
        return None;
    }
    Some(bytes[..len].chunks_exact(FENCE_BYTES).map(fence_of).collect())
}

/// A seal's fences and bloom filter (the bytes between its header and its offsets), if
/// their checksums hold.
fn parse_front(blocks: usize, bloom_bytes: usize, front: &[u8]) -> Option<Front> {
    let fences = parse_fences(blocks, front)?;
    let at = blocks * FENCE_BYTES + 4;
    let bloom = front.get(at..at + bloom_bytes)?;
    if bloom.is_empty()
        || front.len() < at + bloom_bytes + 4
        || crc32c::crc32c(bloom) != u32_at(front, at + bloom_bytes)
    {
        return None;
    }
    Some(Front { fences, bloom: bloom.to_vec() })
}

/// An open file and its length in bytes.
pub(super) type OpenFile = (Arc<dyn DiskFile>, u64);

/// `path` opened, and its length, if it exists.
pub(super) fn open_if_exists(disk: &dyn Disk, path: &Path) -> Result<Option<OpenFile>, StoreError> {
    let file = match disk.open_append(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("open", path, error)),
    };
    let len = file.file_len().map_err(|e| io_error("stat", path, e))?;
    Ok(Some((file, len)))
}

pub(super) fn io_error(operation: &'static str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io { operation, path: path.to_path_buf(), message: error.to_string() }
}

pub(super) fn corrupt(path: &Path, offset: u64, reason: &str) -> StoreError {
    StoreError::Corrupt { file: path.to_path_buf(), offset, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::disk::RealDisk;

    fn table(streams: usize, per_stream: u32) -> SegmentTable {
        let mut table = SegmentTable::new(3, 1_000);
        let mut offset = 16u32;
        for round in 0..per_stream {
            for stream in 0..streams {
                table.push(&format!("s-{stream}"), u64::from(round) + 5, &[offset], [stream as u8; 32]);
                offset += 100;
            }
        }
        table
    }

    #[test]
    fn a_seal_answers_what_its_table_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = table(300, 3);
        let written = Sealed::write(&RealDisk, dir.path(), &table, 90_016).expect("write");
        let sealed = Sealed::open(&RealDisk, dir.path(), 3, 1_000, 90_016).expect("open").expect("a valid seal");
        for seal in [&written, &sealed] {
            assert_eq!((seal.first_position, seal.records, seal.next_position()), (1_000, 900, 1_900));
            assert_eq!(seal.offsets(1_000, 900).expect("offsets"), table.offsets(1_000, 900));
            assert_eq!(seal.offsets(1_899, 10).expect("offsets"), table.offsets(1_899, 10));
            for stream in 0..300 {
                let name = format!("s-{stream}");
                let run = seal.run(&name).expect("lookup").expect("every stream is found");
                let expected = table.run(&name).expect("in the table");
                assert_eq!(run.head(), table.head(&name).expect("head"));
                assert_eq!(run.first_revision, 5);
                assert_eq!(seal.run_offsets(&run, 0, 3).expect("offsets"), expected.offsets);
                assert_eq!(seal.run_offsets(&run, 1, 10).expect("offsets"), expected.offsets[1..]);
            }
            let misses = (0..10_000).filter(|n| seal.run(&format!("other-{n}")).expect("lookup").is_some()).count();
            assert_eq!(misses, 0, "no stream of another name is found");
            let mut names = Vec::new();
            seal.names("s-1", &mut names).expect("names");
            assert_eq!(names.len(), 1 + 10 + 100, "s-1, s-10..s-19, s-100..s-199");
        }
    }

    #[test]
    fn a_seal_that_does_not_describe_the_segment_or_does_not_check_is_not_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = table(100, 2);
        Sealed::write(&RealDisk, dir.path(), &table, 20_016).expect("write");
        let path = dir.path().join(seal_file_name(3));
        assert!(Sealed::open(&RealDisk, dir.path(), 3, 1_000, 20_017).expect("open").is_none(), "other length");
        assert!(Sealed::open(&RealDisk, dir.path(), 3, 999, 20_016).expect("open").is_none(), "other position");
        assert!(Sealed::open(&RealDisk, dir.path(), 4, 1_000, 20_016).expect("open").is_none(), "missing");
        let bytes = std::fs::read(&path).expect("read");
        let offsets_at = u32_at(&bytes, 48) as usize;
        // Any bit of the header, fences or bloom: not used.
        for bit in (0..offsets_at * 8).step_by(5) {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &damaged).expect("write");
            assert!(Sealed::open(&RealDisk, dir.path(), 3, 1_000, 20_016).expect("open").is_none(), "bit {bit}");
        }
        // A bit of a block: the lookup that reads it fails, it never answers wrongly.
        let blocks_at = u32_at(&bytes, 52) as usize;
        let mut damaged = bytes.clone();
        damaged[blocks_at + 3] ^= 0x10;
        std::fs::write(&path, &damaged).expect("write");
        let sealed = Sealed::open(&RealDisk, dir.path(), 3, 1_000, 20_016).expect("open").expect("front checks");
        let results: Vec<_> = (0..100).map(|n| sealed.run(&format!("s-{n}"))).collect();
        assert!(results.iter().any(|r| matches!(r, Err(StoreError::Corrupt { .. }))));
        assert!(results.iter().all(|r| matches!(r, Ok(Some(_)) | Err(StoreError::Corrupt { .. }))));
    }
}
