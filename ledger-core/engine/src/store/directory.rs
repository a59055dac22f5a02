//! The streams' directory: which of the older sealed segments hold a stream, in a file.
//!
//! A seal's bloom filter and block fences, probed in memory, cost a few bytes a stream
//! of its segment; kept for every seal they would grow with the log for ever, and a new
//! stream's lookup would probe one filter more with every segment sealed. So only the
//! newest sealed segments keep them (at most `seals_in_memory`, an option of the
//! embedded store): the directory lists, for every stream of all the older segments,
//! the segments and the blocks of their seals that hold it, bucketed by the stream's
//! key. A lookup first asks the directory's filter, in memory (a blocked bloom filter
//! over every key, 16 bits a key up to [`FILTER_BYTES_MAX`]): a stream it does not hold,
//! such as every new payment's, costs no read at all. Otherwise it reads one bucket (its
//! two slots and its entries: two reads, from the page cache when warm, which is not the
//! process's memory). When more segments are sealed, the
//! oldest of those in memory are merged with the directory into a new file, written
//! beside it, synced and renamed into place; the seals it covers then drop their
//! filters and fences, and the older file is removed.
//!
//! ```text
//! streams-{last segment covered:010}.dir, all integers little-endian
//!   header   64 bytes: magic "LEDGDIR1" | u32 last segment | u32 bucket bits |
//!            u64 entry count | [32] seals digest | u32 crc32c(all entries) |
//!            u32 crc32c(previous 60 bytes)
//!   slots    (2^bits + 1) × 16 bytes, one a bucket and one past the last:
//!            u64 the bucket's first entry | u32 crc32c(the bucket's entries) |
//!            u32 crc32c(previous 12 bytes)
//!   entries  entry count × 16 bytes, sorted by (key, segment):
//!            u64 stream key | u32 segment | u32 block (its fence's index in the seal)
//!   filter   blocks × 64 bytes: the blocked bloom filter of every entry's key
//!   trailer  16 bytes: u32 filter blocks | u32 probes | u32 crc32c(filter) |
//!            u32 crc32c(previous 12 bytes)
//! ```
//!
//! A bucket holds the entries whose key's top `bits` bits are its number, 16 on average.
//! The seals digest is blake3 over each covered seal's segment number and header
//! checksum: a directory is used only with the seals it was made from (a seal written
//! again from its segment is the same bytes). Everything a lookup reads is checked (both
//! slots, the bucket, every key in it), and the block an entry names is read and checked
//! in the seal, whose names are compared: damage is an error, never a stream missed. The
//! filter is read whole at open and checked (a filter that does not check leaves the
//! directory unused, as a damaged header does). A merge reads the whole directory and
//! checks its entries' checksum; a directory that does not check is made again from the
//! seals. A directory of the earlier format (magic `LEDGDIR1`, no filter) does not
//! check either: the first merge after an upgrade makes the new one from the seals.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{Disk, DiskFile};
use super::seal::{corrupt, io_error, open_if_exists, u32_at, u64_at, Fence, Sealed};
use super::StoreError;

const MAGIC: &[u8; 8] = b"LEDGDIR2";
const HEADER_BYTES: u64 = 64;
const SLOT_BYTES: u64 = 16;
const ENTRY_BYTES: u64 = 16;
/// Entries a bucket holds on average: what one lookup reads.
const BUCKET_ENTRIES: u64 = 16;
/// Entries of one bucket a lookup reads at most: more is taken for damage (one stream
/// in 65,536 segments would be a log of 16 TiB).
const BUCKET_ENTRIES_MAX: u64 = 1 << 16;
/// Bits of the filter an entry gets, while the filter is within its budget.
const FILTER_BITS_PER_ENTRY: u64 = 16;
/// The most memory a directory's filter takes, in bytes. Up to about 16.8M entries
/// (streams of the covered segments) each gets 16 bits, one false positive in some
/// 1,000 lookups; past that the filter keeps this size and lets more through, each a
/// bucket read as without it.
pub const FILTER_BYTES_MAX: u64 = 32 << 20;
/// A filter block: one cache line, which holds all of a key's bits.
const FILTER_BLOCK_BYTES: u64 = 64;
const TRAILER_BYTES: u64 = 16;
/// Bytes a merge reads or writes at a time.
const CHUNK_BYTES: usize = 1 << 20;
/// The file a merge writes before renaming it into place.
pub const TEMPORARY: &str = "streams.dir.tmp";

pub fn file_name(last: u32) -> String {
    format!("streams-{last:010}.dir")
}

/// The last segment the directory file `name` covers, if it is one.
pub fn covered_by(name: &str) -> Option<u32> {
    name.strip_prefix("streams-")?.strip_suffix(".dir")?.parse().ok()
}

/// What a directory records of the seals it covers (segments 0 to its last, in order).
pub fn digest<'a>(seals: impl IntoIterator<Item = &'a Sealed>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for sealed in seals {
        hasher.update(&sealed.segment.to_le_bytes());
        hasher.update(&sealed.header_crc.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

fn bucket_of(key: u64, bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        key >> (64 - bits)
    }
}

/// Bucket bits for `entries` entries: about [`BUCKET_ENTRIES`] a bucket.
fn bits_for(entries: u64) -> u32 {
    entries.div_ceil(BUCKET_ENTRIES).max(1).next_power_of_two().trailing_zeros()
}

fn entries_at(bits: u32) -> u64 {
    HEADER_BYTES + ((1u64 << bits) + 1) * SLOT_BYTES
}

/// A blocked bloom filter over a directory's keys: a key's bits all lie in one 64-byte
/// block, so a lookup costs one cache miss.
#[derive(Debug)]
struct Filter {
    words: Vec<u64>,
    probes: u32,
}

impl Filter {
    /// An empty filter for `entries` keys, within [`FILTER_BYTES_MAX`].
    fn for_entries(entries: u64) -> Filter {
        let blocks = (entries.saturating_mul(FILTER_BITS_PER_ENTRY))
            .div_ceil(FILTER_BLOCK_BYTES * 8)
            .clamp(1, FILTER_BYTES_MAX / FILTER_BLOCK_BYTES);
        // About ln 2 × the bits a key gets, the fewest false positives.
        let bits_per_entry = blocks * FILTER_BLOCK_BYTES * 8 / entries.max(1);
        let probes = (bits_per_entry * 69 / 100).clamp(1, 7) as u32;
        Filter { words: vec![0; (blocks * FILTER_BLOCK_BYTES / 8) as usize], probes }
    }

    /// The first word of `key`'s block, and its bits in the block (probes × 9 bits of
    /// the key, mixed).
    fn place(&self, key: u64) -> (usize, impl Iterator<Item = u64>) {
        let blocks = (self.words.len() / 8) as u128;
        let block = ((u128::from(key) * blocks) >> 64) as usize;
        let mixed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (key >> 29);
        (block * 8, (0..self.probes).map(move |i| (mixed >> (9 * i)) & 511))
    }

    fn insert(&mut self, key: u64) {
        let (first, bits) = self.place(key);
        for bit in bits {
            self.words[first + (bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    fn may_hold(&self, key: u64) -> bool {
        let (first, mut bits) = self.place(key);
        bits.all(|bit| self.words[first + (bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// The filter and trailer as written after the entries.
    fn encode(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.words.iter().flat_map(|word| word.to_le_bytes()).collect();
        let crc = crc32c::crc32c(&out);
        let start = out.len();
        for value in [(self.words.len() / 8) as u32, self.probes, crc] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        let check = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&check.to_le_bytes());
        out
    }

    /// The trailer's (blocks, probes, filter checksum), if it checks.
    fn parse_trailer(bytes: &[u8]) -> Option<(u64, u32, u32)> {
        let (blocks, probes) = (u64::from(u32_at(bytes, 0)), u32_at(bytes, 4));
        let fits = crc32c::crc32c(&bytes[..12]) == u32_at(bytes, 12)
            && (1..=FILTER_BYTES_MAX / FILTER_BLOCK_BYTES).contains(&blocks)
            && (1..=7).contains(&probes);
        fits.then_some((blocks, probes, u32_at(bytes, 8)))
    }
}

struct Header {
    last: u32,
    bits: u32,
    entries: u64,
    digest: [u8; 32],
    entries_crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut out = [0u8; HEADER_BYTES as usize];
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&self.last.to_le_bytes());
        out[12..16].copy_from_slice(&self.bits.to_le_bytes());
        out[16..24].copy_from_slice(&self.entries.to_le_bytes());
        out[24..56].copy_from_slice(&self.digest);
        out[56..60].copy_from_slice(&self.entries_crc.to_le_bytes());
        let crc = crc32c::crc32c(&out[..60]);
        out[60..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn parse(bytes: &[u8]) -> Option<Header> {
        if &bytes[..8] != MAGIC || crc32c::crc32c(&bytes[..60]) != u32_at(bytes, 60) {
            return None;
        }
        let bits = u32_at(bytes, 12);
        (bits <= 40).then(|| Header {
            last: u32_at(bytes, 8),
            bits,
            entries: u64_at(bytes, 16),
            digest: bytes[24..56].try_into().expect("32 bytes"),
            entries_crc: u32_at(bytes, 56),
        })
    }
}

/// An open directory file.
#[derive(Debug)]
pub struct Directory {
    /// The last segment it covers; it covers every segment from the first.
    pub last: u32,
    bits: u32,
    entries: u64,
    entries_crc: u32,
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    filter: Filter,
}

impl Directory {
    /// The directory of `dir` covering segments up to `last`, if its file exists,
    /// checks, and was made from `seals` (the sealed segments `0..=last`, in order).
    /// `None` means "do without it"; an error is an I/O error reading a file that exists.
    pub fn open(disk: &dyn Disk, dir: &Path, last: u32, seals: &[Sealed]) -> Result<Option<Directory>, StoreError> {
        let path = dir.join(file_name(last));
        let Some((file, len)) = open_if_exists(disk, &path)? else { return Ok(None) };
        if len < HEADER_BYTES + TRAILER_BYTES {
            return Ok(None);
        }
        let read = |bytes: &mut [u8], at: u64| file.read_exact_at(bytes, at).map_err(|e| io_error("read", &path, e));
        let mut bytes = [0u8; HEADER_BYTES as usize];
        read(&mut bytes, 0)?;
        let Some(header) = Header::parse(&bytes) else { return Ok(None) };
        let mut trailer = [0u8; TRAILER_BYTES as usize];
        read(&mut trailer, len - TRAILER_BYTES)?;
        let Some((blocks, probes, filter_crc)) = Filter::parse_trailer(&trailer) else { return Ok(None) };
        let filter_at = header.entries.checked_mul(ENTRY_BYTES).map(|bytes| bytes + entries_at(header.bits));
        let described = header.last == last
            && seals.len() as u64 == u64::from(last) + 1
            && header.digest == digest(seals)
            && filter_at.map(|at| at + blocks * FILTER_BLOCK_BYTES + TRAILER_BYTES) == Some(len);
        let Some(filter_at) = filter_at.filter(|_| described) else { return Ok(None) };
        let mut bytes = vec![0u8; (blocks * FILTER_BLOCK_BYTES) as usize];
        read(&mut bytes, filter_at)?;
        if crc32c::crc32c(&bytes) != filter_crc {
            return Ok(None);
        }
        let words = bytes.chunks_exact(8).map(|word| u64_at(word, 0)).collect();
        Ok(Some(Directory {
            last,
            bits: header.bits,
            entries: header.entries,
            entries_crc: header.entries_crc,
            path,
            file,
            filter: Filter { words, probes },
        }))
    }

    /// The (segment, block) of every entry with `key`, segments ascending.
    pub fn find(&self, key: u64) -> Result<Vec<(u32, u32)>, StoreError> {
        if !self.filter.may_hold(key) {
            return Ok(Vec::new());
        }
        let bucket = bucket_of(key, self.bits);
        let mut slots = [0u8; 2 * SLOT_BYTES as usize];
        let slots_at = HEADER_BYTES + bucket * SLOT_BYTES;
        self.file.read_exact_at(&mut slots, slots_at).map_err(|e| io_error("read", &self.path, e))?;
        let (start, crc) = self.slot(&slots[..16], slots_at)?;
        let (end, _) = self.slot(&slots[16..], slots_at + SLOT_BYTES)?;
        if start > end || end > self.entries || end - start > BUCKET_ENTRIES_MAX {
            return Err(corrupt(&self.path, slots_at, "directory slots out of range"));
        }
        let at = entries_at(self.bits) + start * ENTRY_BYTES;
        let mut bytes = vec![0u8; ((end - start) * ENTRY_BYTES) as usize];
        self.file.read_exact_at(&mut bytes, at).map_err(|e| io_error("read", &self.path, e))?;
        if crc32c::crc32c(&bytes) != crc {
            return Err(corrupt(&self.path, at, "directory bucket checksum mismatch"));
        }
        let mut found = Vec::new();
        for entry in bytes.chunks_exact(ENTRY_BYTES as usize) {
            let (entry_key, segment) = (u64_at(entry, 0), u32_at(entry, 8));
            if bucket_of(entry_key, self.bits) != bucket || segment > self.last {
                return Err(corrupt(&self.path, at, "directory entry outside its bucket or directory"));
            }
            if entry_key == key {
                found.push((segment, u32_at(entry, 12)));
            }
        }
        Ok(found)
    }

    fn slot(&self, bytes: &[u8], at: u64) -> Result<(u64, u32), StoreError> {
        if crc32c::crc32c(&bytes[..12]) != u32_at(bytes, 12) {
            return Err(corrupt(&self.path, at, "directory slot checksum mismatch"));
        }
        Ok((u64_at(bytes, 0), u32_at(bytes, 8)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries: one for each stream of each segment it covers.
    pub fn entries(&self) -> u64 {
        self.entries
    }
}

/// One sorted source of a merge: the entries of the old directory, or of one seal.
trait Source {
    /// The next entry, (key, segment, block), in (key, segment) order.
    fn next(&mut self) -> Result<Option<(u64, u32, u32)>, StoreError>;
}

/// The old directory's entries, read a chunk at a time and checked whole at the end.
struct DirectoryEntries<'a> {
    directory: &'a Directory,
    next: u64,
    chunk: Vec<u8>,
    at: usize,
    crc: u32,
}

impl Source for DirectoryEntries<'_> {
    fn next(&mut self) -> Result<Option<(u64, u32, u32)>, StoreError> {
        let directory = self.directory;
        if self.at == self.chunk.len() {
            let left = directory.entries - self.next;
            if left == 0 {
                if self.crc != directory.entries_crc {
                    return Err(corrupt(&directory.path, HEADER_BYTES, "directory entries checksum mismatch"));
                }
                return Ok(None);
            }
            let take = left.min((CHUNK_BYTES as u64) / ENTRY_BYTES);
            self.chunk.resize((take * ENTRY_BYTES) as usize, 0);
            let at = entries_at(directory.bits) + self.next * ENTRY_BYTES;
            directory.file.read_exact_at(&mut self.chunk, at).map_err(|e| io_error("read", &directory.path, e))?;
            self.crc = crc32c::crc32c_append(self.crc, &self.chunk);
            self.next += take;
            self.at = 0;
        }
        let entry = &self.chunk[self.at..self.at + ENTRY_BYTES as usize];
        self.at += ENTRY_BYTES as usize;
        Ok(Some((u64_at(entry, 0), u32_at(entry, 8), u32_at(entry, 12))))
    }
}

/// A seal's streams' keys, a block at a time (each block checked as it is read).
struct SealEntries<'a> {
    sealed: &'a Sealed,
    fences: Vec<Fence>,
    block: usize,
    keys: Vec<u64>,
    at: usize,
}

impl Source for SealEntries<'_> {
    fn next(&mut self) -> Result<Option<(u64, u32, u32)>, StoreError> {
        while self.at == self.keys.len() {
            let Some(fence) = self.fences.get(self.block) else { return Ok(None) };
            self.keys.clear();
            self.sealed.block_keys(fence, &mut self.keys)?;
            self.block += 1;
            self.at = 0;
        }
        self.at += 1;
        Ok(Some((self.keys[self.at - 1], self.sealed.segment, (self.block - 1) as u32)))
    }
}

/// Writes a directory's slots and entries as they come, in (key, segment) order.
struct Writer<'a> {
    file: &'a dyn DiskFile,
    path: &'a Path,
    bits: u32,
    slots: Vec<u8>,
    slots_written: u64,
    entries: Vec<u8>,
    entries_written: u64,
    bucket: u64,
    bucket_start: u64,
    bucket_crc: u32,
    count: u64,
    all_crc: u32,
    last_entry: Option<(u64, u32, u32)>,
    duplicates: u64,
    filter: Filter,
}

/// What a merge wrote: entries, entries taken as duplicates, the entries' checksum, and
/// the filter.
struct Written {
    count: u64,
    duplicates: u64,
    entries_crc: u32,
    filter: Filter,
}

impl Writer<'_> {
    fn push(&mut self, key: u64, segment: u32, block: u32) -> Result<(), StoreError> {
        // Two streams of one segment with the same key in one block: one entry, the
        // lookup compares the names in the block.
        if self.last_entry == Some((key, segment, block)) {
            self.duplicates += 1;
            return Ok(());
        }
        if self.last_entry.is_some_and(|last| last > (key, segment, block)) {
            return Err(corrupt(self.path, 0, "a merge's entries out of order (a seal's blocks unsorted)"));
        }
        self.last_entry = Some((key, segment, block));
        self.filter.insert(key);
        let bucket = bucket_of(key, self.bits);
        while self.bucket < bucket {
            self.end_bucket()?;
        }
        let mut entry = [0u8; ENTRY_BYTES as usize];
        entry[..8].copy_from_slice(&key.to_le_bytes());
        entry[8..12].copy_from_slice(&segment.to_le_bytes());
        entry[12..].copy_from_slice(&block.to_le_bytes());
        self.bucket_crc = crc32c::crc32c_append(self.bucket_crc, &entry);
        self.all_crc = crc32c::crc32c_append(self.all_crc, &entry);
        self.entries.extend_from_slice(&entry);
        self.count += 1;
        if self.entries.len() >= CHUNK_BYTES {
            self.flush_entries()?;
        }
        Ok(())
    }

    fn slot(&mut self, first: u64, crc: u32) -> Result<(), StoreError> {
        let start = self.slots.len();
        self.slots.extend_from_slice(&first.to_le_bytes());
        self.slots.extend_from_slice(&crc.to_le_bytes());
        let check = crc32c::crc32c(&self.slots[start..]);
        self.slots.extend_from_slice(&check.to_le_bytes());
        if self.slots.len() >= CHUNK_BYTES {
            self.write(HEADER_BYTES + self.slots_written, true)?;
        }
        Ok(())
    }

    fn end_bucket(&mut self) -> Result<(), StoreError> {
        self.slot(self.bucket_start, self.bucket_crc)?;
        self.bucket += 1;
        self.bucket_start = self.count;
        self.bucket_crc = 0;
        Ok(())
    }

    fn flush_entries(&mut self) -> Result<(), StoreError> {
        self.write(entries_at(self.bits) + self.entries_written, false)
    }

    fn write(&mut self, at: u64, slots: bool) -> Result<(), StoreError> {
        let buffer = if slots { &mut self.slots } else { &mut self.entries };
        self.file.write_all_at(buffer, at).map_err(|e| io_error("write", self.path, e))?;
        let written = buffer.len() as u64;
        buffer.clear();
        if slots {
            self.slots_written += written;
        } else {
            self.entries_written += written;
        }
        Ok(())
    }

    /// Ends the last buckets and writes what is buffered, then the filter and trailer.
    fn finish(mut self) -> Result<Written, StoreError> {
        while self.bucket < 1u64 << self.bits {
            self.end_bucket()?;
        }
        self.slot(self.count, 0)?;
        self.write(HEADER_BYTES + self.slots_written, true)?;
        self.flush_entries()?;
        let at = entries_at(self.bits) + self.count * ENTRY_BYTES;
        self.file.write_all_at(&self.filter.encode(), at).map_err(|e| io_error("write", self.path, e))?;
        Ok(Written { count: self.count, duplicates: self.duplicates, entries_crc: self.all_crc, filter: self.filter })
    }
}

/// Writes the directory that covers `old`'s segments (none if `None`) and `seals` (the
/// sealed segments after them, in order, up to the last one to cover), made from the
/// seals `digest` describes; durable and renamed into place, and opens it.
pub fn write(
    disk: &dyn Disk,
    dir: &Path,
    old: Option<&Directory>,
    seals: &[Sealed],
    digest: [u8; 32],
) -> Result<Directory, StoreError> {
    let last = seals.last().map(|sealed| sealed.segment).or(old.map(|old| old.last)).ok_or(StoreError::Closed)?;
    let total = old.map_or(0, |old| old.entries) + seals.iter().map(|sealed| u64::from(sealed.streams)).sum::<u64>();
    // A few entries fewer (duplicates) leave the bits as they are: an estimate is enough.
    let bits = bits_for(total);
    let temporary = dir.join(TEMPORARY);
    match disk.remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_error("remove", &temporary, error))
        }
        _ => {}
    }
    let file = disk.open_read_write(&temporary).map_err(|e| io_error("create", &temporary, e))?;
    let mut sources: Vec<Box<dyn Source + '_>> = Vec::new();
    if let Some(old) = old {
        sources.push(Box::new(DirectoryEntries { directory: old, next: 0, chunk: Vec::new(), at: 0, crc: 0 }));
    }
    for sealed in seals {
        let fences = sealed.fences()?.into_owned();
        sources.push(Box::new(SealEntries { sealed, fences, block: 0, keys: Vec::new(), at: 0 }));
    }
    let mut writer = Writer {
        file: &*file,
        path: &temporary,
        bits,
        slots: Vec::new(),
        slots_written: 0,
        entries: Vec::new(),
        entries_written: 0,
        bucket: 0,
        bucket_start: 0,
        bucket_crc: 0,
        count: 0,
        all_crc: 0,
        last_entry: None,
        duplicates: 0,
        filter: Filter::for_entries(total),
    };
    let mut heap = BinaryHeap::new();
    for (n, source) in sources.iter_mut().enumerate() {
        if let Some(entry) = source.next()? {
            heap.push(Reverse((entry, n)));
        }
    }
    while let Some(Reverse(((key, segment, block), n))) = heap.pop() {
        writer.push(key, segment, block)?;
        if let Some(entry) = sources[n].next()? {
            heap.push(Reverse((entry, n)));
        }
    }
    let Written { count, duplicates, entries_crc, filter } = writer.finish()?;
    if count + duplicates != total {
        return Err(corrupt(&temporary, 0, "a seal's stream count differs from its blocks' entries"));
    }
    let header = Header { last, bits, entries: count, digest, entries_crc };
    file.write_all_at(&header.encode(), 0).map_err(|e| io_error("write", &temporary, e))?;
    file.sync_all().map_err(|e| io_error("fsync", &temporary, e))?;
    drop(file);
    let path = dir.join(file_name(last));
    disk.rename(&temporary, &path).map_err(|e| io_error("rename", &temporary, e))?;
    disk.sync_dir(dir).map_err(|e| io_error("fsync directory", dir, e))?;
    let file = disk.open_append(&path).map_err(|e| io_error("open", &path, e))?;
    Ok(Directory { last, bits, entries: count, entries_crc, path, file, filter })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::disk::RealDisk;
    use crate::store::seal::{key, SegmentTable};

    /// Segments 0..count, each with 300 streams: 100 of its own, 100 of the segment
    /// before's, and 100 that every segment holds.
    fn seals(dir: &Path, count: u32) -> Vec<Sealed> {
        (0..count)
            .map(|segment| {
                let mut table = SegmentTable::new(segment, u64::from(segment) * 300);
                for n in 0..100 {
                    let offset = 16 + 3 * n * 100;
                    table.push(&format!("own-{segment}-{n}"), 0, &[offset], [1; 32]);
                    table.push(&format!("own-{}-{n}", segment.saturating_sub(1)), 1, &[offset + 100], [2; 32]);
                    table.push(&format!("all-{n}"), u64::from(segment), &[offset + 200], [3; 32]);
                }
                Sealed::write(&RealDisk, dir, &table, 90_016).expect("seal")
            })
            .collect()
    }

    /// Where the directory finds `stream`: the segments, newest first, whose block it
    /// names holds the stream.
    fn segments_of(directory: &Directory, seals: &[Sealed], stream: &str) -> Result<Vec<u32>, StoreError> {
        let mut out = Vec::new();
        for (segment, block) in directory.find(key(stream))?.into_iter().rev() {
            if seals[segment as usize].run_in_block(stream, key(stream), block)?.is_some() {
                out.push(segment);
            }
        }
        Ok(out)
    }

    #[test]
    fn a_directory_merged_step_by_step_finds_what_the_seals_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seals = seals(dir.path(), 9);
        let detached: Vec<Sealed> = seals.iter().map(Sealed::detached).collect();
        let first = write(&RealDisk, dir.path(), None, &detached[..4], digest(&seals[..4])).expect("write");
        let merged = write(&RealDisk, dir.path(), Some(&first), &detached[4..9], digest(&seals)).expect("merge");
        let whole = write(&RealDisk, dir.path(), None, &detached, digest(&seals)).expect("write");
        let opened = Directory::open(&RealDisk, dir.path(), 8, &seals).expect("open").expect("checks");
        assert_eq!(merged.entries, 9 * 300 - 100, "own-0-n twice in segment 0: one entry each");
        for directory in [&merged, &whole, &opened] {
            assert_eq!(segments_of(directory, &seals, "all-7").expect("find"), (0..9).rev().collect::<Vec<_>>());
            assert_eq!(segments_of(directory, &seals, "own-3-50").expect("find"), [4, 3]);
            assert_eq!(segments_of(directory, &seals, "own-8-99").expect("find"), [8]);
            assert_eq!(segments_of(&first, &seals, "own-3-50").expect("find"), [3], "the first covers 0 to 3");
            for n in 0..2_000 {
                assert!(directory.find(key(&format!("other-{n}"))).expect("find").is_empty());
            }
        }
        assert!(Directory::open(&RealDisk, dir.path(), 8, &seals[..8]).expect("open").is_none(), "other seals");
        assert!(Directory::open(&RealDisk, dir.path(), 7, &seals[..8]).expect("open").is_none(), "missing");
    }

    #[test]
    fn the_filter_holds_every_key_lets_few_others_through_and_keeps_to_its_budget() {
        let mut random = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random
        };
        let keys: Vec<u64> = (0..100_000).map(|_| next()).collect();
        let mut filter = Filter::for_entries(keys.len() as u64);
        keys.iter().for_each(|key| filter.insert(*key));
        assert!(keys.iter().all(|key| filter.may_hold(*key)), "no key is ever missed");
        let passed = (0..100_000).filter(|_| filter.may_hold(next())).count();
        assert!(passed < 500, "{passed} of 100,000 other keys passed at 16 bits a key");
        assert_eq!(filter.words.len() * 8, 200_000, "16 bits a key");
        let huge = Filter::for_entries(1 << 40);
        assert_eq!((huge.words.len() * 8) as u64, FILTER_BYTES_MAX, "past the budget the filter stays at it");
        assert_eq!(huge.probes, 1);
        let decoded = Filter::parse_trailer(&filter.encode()[filter.words.len() * 8..]).expect("trailer");
        assert_eq!((decoded.0 as usize, decoded.1), (filter.words.len() / 8, filter.probes));
    }

    #[test]
    fn a_damaged_directory_is_an_error_never_a_stream_missed_and_a_merge_tells() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seals = seals(dir.path(), 4);
        let detached: Vec<Sealed> = seals.iter().map(Sealed::detached).collect();
        let written = write(&RealDisk, dir.path(), None, &detached, digest(&seals)).expect("write");
        let path = written.path().to_path_buf();
        let bytes = std::fs::read(&path).expect("read");
        let streams: Vec<String> = (0..100).map(|n| format!("own-2-{n}")).collect();
        // Bits of the header: the directory is not used. Of the slots and entries: every
        // lookup finds the stream where it is, or fails.
        for bit in (0..bytes.len() * 8).step_by(97) {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &damaged).expect("write");
            let filter_at = entries_at(written.bits) + written.entries * ENTRY_BYTES;
            let Some(directory) = Directory::open(&RealDisk, dir.path(), 3, &seals).expect("open") else {
                let checked_at_open = bit < HEADER_BYTES as usize * 8 || bit >= filter_at as usize * 8;
                assert!(checked_at_open, "bit {bit}: only its header, filter and trailer keep a directory unused");
                continue;
            };
            assert!(bit < filter_at as usize * 8, "bit {bit}: a damaged filter or trailer is found at open");
            for stream in &streams {
                match segments_of(&directory, &seals, stream) {
                    Ok(found) => assert_eq!(found, [3, 2], "bit {bit}, {stream}"),
                    Err(error) => assert!(matches!(error, StoreError::Corrupt { .. }), "bit {bit}: {error}"),
                }
            }
            if bit >= entries_at(directory.bits) as usize * 8 {
                let merged = write(&RealDisk, dir.path(), Some(&directory), &[], digest(&seals));
                assert!(matches!(merged, Err(StoreError::Corrupt { .. })), "bit {bit}: a merge reads every entry");
            }
        }
    }
}
