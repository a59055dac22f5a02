//! The on-disk format of the embedded store. All integers little-endian.
//!
//! ```text
//! segment file  {index:010}.seg
//!   header  16 bytes: magic "LEDGSEG1" | u32 segment index | u32 crc32c(previous 12 bytes)
//!   frame*  one frame per append; a frame is all-or-nothing
//! frame
//!   header  16 bytes: u32 FRAME_MAGIC | u32 body length | u32 record count | u32 crc32c(previous 12 bytes)
//!   record* exactly `record count` records filling exactly `body length` bytes
//! record
//!   u32 body length | u32 crc32c(body)
//!   body: u64 position | u64 revision | [32] chain hash | u8 stream length |
//!         u8 event type length | stream | event type | payload
//! ```

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::disk::{Disk, RealDisk, DIRECT_ALIGN};
use super::{RecordedEvent, StoreError};
use ledger_core::chain::{check_link, Hash};

pub const SEGMENT_MAGIC: &[u8; 8] = b"LEDGSEG1";
pub const SEGMENT_HEADER_BYTES: usize = 16;
pub const FRAME_MAGIC: u32 = 0x4D52_464C; // "LFRM"
pub const FRAME_HEADER_BYTES: usize = 16;
pub const RECORD_HEADER_BYTES: usize = 8;
const RECORD_FIXED_BYTES: usize = 8 + 8 + 32 + 1 + 1;

/// Bytes a record takes on disk.
pub fn record_len(stream_len: usize, type_len: usize, payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + RECORD_FIXED_BYTES + stream_len + type_len + payload_len
}

pub fn segment_file_name(index: u32) -> String {
    format!("{index:010}.seg")
}

pub fn segment_header(index: u32) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&index.to_le_bytes());
    let crc = crc32c::crc32c(&header[..12]);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Starts a frame in `out`; returns where its header is, for [`finish_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    start
}

/// Writes the header of the frame that began at `start`.
pub fn finish_frame(out: &mut [u8], start: usize, record_count: u32) {
    let body_len = (out.len() - start - FRAME_HEADER_BYTES) as u32;
    let header = &mut out[start..start + FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&body_len.to_le_bytes());
    header[8..12].copy_from_slice(&record_count.to_le_bytes());
    let crc = crc32c::crc32c(&header[..12]);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one record to `out`.
pub fn put_record(
    out: &mut Vec<u8>,
    position: u64,
    revision: u64,
    hash: &Hash,
    stream: &str,
    event_type: &str,
    payload: &[u8],
) {
    let body_len = RECORD_FIXED_BYTES + stream.len() + event_type.len() + payload.len();
    out.reserve(RECORD_HEADER_BYTES + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0u8; 4]);
    let body_at = out.len();
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(hash);
    out.push(stream.len() as u8);
    out.push(event_type.len() as u8);
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(event_type.as_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[body_at..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("slice of 4"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("slice of 8"))
}

/// Parses the record at the start of `bytes`; returns it and its length.
pub fn parse_record(bytes: &[u8]) -> Result<(RecordedEvent, usize), &'static str> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err("record header runs past the frame");
    }
    let body_len = u32_at(bytes, 0) as usize;
    let crc = u32_at(bytes, 4);
    let total = RECORD_HEADER_BYTES + body_len;
    if body_len < RECORD_FIXED_BYTES || bytes.len() < total {
        return Err("record length runs past the frame");
    }
    let body = &bytes[RECORD_HEADER_BYTES..total];
    if crc32c::crc32c(body) != crc {
        return Err("record checksum mismatch");
    }
    let stream_len = body[48] as usize;
    let type_len = body[49] as usize;
    if RECORD_FIXED_BYTES + stream_len + type_len > body_len {
        return Err("record name lengths run past the record");
    }
    let names = &body[RECORD_FIXED_BYTES..];
    let stream = std::str::from_utf8(&names[..stream_len]).map_err(|_| "stream name is not UTF-8")?;
    let event_type =
        std::str::from_utf8(&names[stream_len..stream_len + type_len]).map_err(|_| "event type is not UTF-8")?;
    let event = RecordedEvent {
        position: u64_at(body, 0),
        revision: u64_at(body, 8),
        hash: body[16..48].try_into().expect("slice of 32"),
        stream: stream.to_string(),
        event_type: event_type.to_string(),
        payload: names[stream_len + type_len..].to_vec(),
    };
    Ok((event, total))
}

/// A valid frame header: (body length, record count).
fn parse_frame_header(bytes: &[u8]) -> Option<(usize, u32)> {
    if bytes.len() < FRAME_HEADER_BYTES || u32_at(bytes, 0) != FRAME_MAGIC {
        return None;
    }
    if crc32c::crc32c(&bytes[..12]) != u32_at(bytes, 12) {
        return None;
    }
    Some((u32_at(bytes, 4) as usize, u32_at(bytes, 8)))
}

/// Records of a frame with their offsets in it, and the frame's length.
type ParsedFrame = (Vec<(RecordedEvent, usize)>, usize);

/// Parses the frame at the start of `bytes` into its records.
fn parse_frame(bytes: &[u8]) -> Result<ParsedFrame, &'static str> {
    let (body_len, count) = parse_frame_header(bytes).ok_or("bad frame header")?;
    let end = FRAME_HEADER_BYTES + body_len;
    if bytes.len() < end {
        return Err("frame runs past the end of the file");
    }
    let mut records = Vec::with_capacity(count as usize);
    let mut at = FRAME_HEADER_BYTES;
    for _ in 0..count {
        let (record, len) = parse_record(&bytes[at..end])?;
        records.push((record, at));
        at += len;
    }
    if at != end {
        return Err("frame body has bytes after its last record");
    }
    Ok((records, end))
}

/// A torn tail: the last frame of the last segment, cut short or failing its checksum
/// by a crash during its write. It was never acknowledged... unless a bit flipped in
/// the final frame after it was; ARCHITECTURE.md explains why the two cannot be told
/// apart and why recovery cuts it while `ledgerctl audit verify` reports it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TornTail {
    pub file: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

/// Where a record lives: segment index and byte offset of the record in the file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Location {
    pub segment: u32,
    pub offset: u32,
}

/// The last (revision, hash) of each stream, by name: looked up for every record a scan
/// reads, so with foldhash rather than the standard SipHash.
pub type Heads = HashMap<String, (u64, Hash), foldhash::fast::RandomState>;

/// The result of scanning a whole data directory.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub segments: Vec<(u32, PathBuf)>,
    pub records: u64,
    pub heads: Heads,
    pub torn_tail: Option<TornTail>,
    /// Length of the valid part of the last segment.
    pub last_segment_len: u64,
}

/// Lists the segment files of `dir` in order; a gap in their numbering is corruption.
pub fn list_segments(dir: &Path) -> Result<Vec<(u32, PathBuf)>, StoreError> {
    list_segments_on(&RealDisk, dir)
}

/// [`list_segments`] on `disk`.
pub fn list_segments_on(disk: &dyn Disk, dir: &Path) -> Result<Vec<(u32, PathBuf)>, StoreError> {
    let io = |operation, error: std::io::Error| StoreError::Io {
        operation,
        path: dir.to_path_buf(),
        message: error.to_string(),
    };
    let mut segments = Vec::new();
    for name in disk.list_dir(dir).map_err(|e| io("read_dir", e))? {
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if let Ok(index) = stem.parse::<u32>() {
            segments.push((index, dir.join(&name)));
        }
    }
    segments.sort();
    for (expected, (index, path)) in segments.iter().enumerate() {
        if *index != expected as u32 {
            return Err(StoreError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason: format!("segment {expected} is missing"),
            });
        }
    }
    Ok(segments)
}

/// Segments a scan holds in memory at once: the one checked and the one read next.
const SCAN_BUFFERS: usize = 2;

/// Reads every record of `dir` in commit order, checking checksums, positions,
/// revisions and every stream's hash chain, and calls `visit` for each with its
/// location. Stops at the first problem, except a torn tail, which is reported.
pub fn scan(dir: &Path, visit: impl FnMut(RecordedEvent, Location)) -> Result<ScanReport, StoreError> {
    scan_on(&RealDisk, dir, visit)
}

/// [`scan`] on `disk`.
pub fn scan_on(
    disk: &dyn Disk,
    dir: &Path,
    mut visit: impl FnMut(RecordedEvent, Location),
) -> Result<ScanReport, StoreError> {
    let mut report = ScanReport { segments: list_segments_on(disk, dir)?, ..ScanReport::default() };
    let segments = report.segments.clone();
    let segment_count = segments.len();
    std::thread::scope(|scope| {
        // The segments are read a segment ahead on a thread of their own, so that the
        // disk reads the next one while this thread checks the last (reading a segment
        // took about as long as checking a tenth of it). The buffers go round between
        // the two threads: at most `SCAN_BUFFERS` segments in memory, and their memory
        // reused (a fresh buffer is hundreds of MB of new memory to fault in).
        let (full, read) = std::sync::mpsc::sync_channel::<std::io::Result<(Vec<u8>, Range<usize>)>>(1);
        let (free, buffers) = std::sync::mpsc::channel::<Vec<u8>>();
        for _ in 0..SCAN_BUFFERS {
            let _ = free.send(Vec::new());
        }
        let reader = &segments;
        std::thread::Builder::new()
            .name("log-read".into())
            .spawn_scoped(scope, move || {
                for (_, path) in reader {
                    // The scan stopped (it returned the buffers' sender or the reads'
                    // receiver): nothing more to read.
                    let Ok(mut buffer) = buffers.recv() else { return };
                    let result = disk.read_once(path, &mut buffer).map(|range| (buffer, range));
                    let failed = result.is_err();
                    if full.send(result).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| read_error(dir, e))?;
        for (number, (index, path)) in segments.iter().enumerate() {
            let last = number + 1 == segment_count;
            let (buffer, range) = read
                .recv()
                .map_err(|_| read_error(path, std::io::Error::other("the reading thread stopped")))?
                .map_err(|e| read_error(path, e))?;
            let heads = &report.heads;
            let scan = scan_segment(
                *index,
                path,
                &buffer[range],
                last,
                report.records,
                &mut |stream| Ok(heads.get(stream).copied()),
                &mut visit,
            )?;
            let _ = free.send(buffer);
            report.records += scan.records;
            report.heads.extend(scan.heads);
            if last {
                report.last_segment_len = scan.len;
                report.torn_tail = scan.torn_tail;
            }
        }
        Ok(report)
    })
}

/// Reads the records of the segments from number `first` on, in order, checking each
/// frame's and record's checksum but not positions nor hash links: for a second pass
/// over records [`scan`] already checked (the auditor's replay of a snapshot's tail).
/// Stops at the first frame that does not parse (the torn tail the scan reported).
pub fn read_from_segment(dir: &Path, first: u32, mut visit: impl FnMut(&RecordedEvent)) -> Result<(), StoreError> {
    for (index, path) in list_segments_on(&RealDisk, dir)? {
        if index < first {
            continue;
        }
        let bytes = RealDisk.read(&path).map_err(|e| StoreError::Io {
            operation: "read",
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut at = SEGMENT_HEADER_BYTES;
        while at < bytes.len() {
            let Ok((records, len)) = parse_frame(&bytes[at..]) else { break };
            records.iter().for_each(|(record, _)| visit(record));
            at += len;
        }
    }
    Ok(())
}

/// What scanning one segment found.
#[derive(Debug, Default)]
pub struct SegmentScan {
    pub records: u64,
    /// The last (revision, hash) of each stream with records in the segment.
    pub heads: Heads,
    /// Length of the valid part of the segment.
    pub len: u64,
    pub torn_tail: Option<TornTail>,
    /// Zero bytes after the last frame of the last segment, left by a direct write
    /// (fewer than a block; the open cuts them).
    pub padding: u64,
}

/// The head of a stream before the segment being scanned.
pub type PriorHead<'a> = dyn FnMut(&str) -> Result<Option<(u64, Hash)>, StoreError> + 'a;

/// The error of a segment that could not be read.
pub fn read_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io { operation: "read", path: path.to_path_buf(), message: error.to_string() }
}

/// Reads every record of segment `index` (`bytes`, read from `path`), checking
/// checksums, that positions run on from `first_position`, revisions and hash links (a
/// stream's link before the segment comes from `prior`), and calls `visit` for each
/// with its location. A torn tail is reported if `last`; anywhere else a bad frame is
/// corruption.
pub fn scan_segment(
    index: u32,
    path: &Path,
    bytes: &[u8],
    last: bool,
    first_position: u64,
    prior: &mut PriorHead<'_>,
    visit: &mut dyn FnMut(RecordedEvent, Location),
) -> Result<SegmentScan, StoreError> {
    let mut scan = SegmentScan::default();
    let corrupt =
        |offset: usize, reason: String| StoreError::Corrupt { file: path.to_path_buf(), offset: offset as u64, reason };
    if bytes.len() < SEGMENT_HEADER_BYTES || bytes[..SEGMENT_HEADER_BYTES] != segment_header(index) {
        if last && is_empty_segment(bytes) {
            // Created but its header never made it to disk whole (a crash, or a
            // failed or short write of it): nothing was appended to it, since frames
            // go in only after the header is durable, so no frame is lost with it.
            scan.torn_tail = Some(TornTail {
                file: path.to_path_buf(),
                offset: 0,
                bytes: bytes.len() as u64,
                reason: "empty segment".into(),
            });
            return Ok(scan);
        }
        return Err(corrupt(0, "bad segment header".into()));
    }
    let mut at = SEGMENT_HEADER_BYTES;
    while at < bytes.len() {
        match parse_frame(&bytes[at..]) {
            Ok((records, len)) => {
                for (record, offset) in records {
                    check_record(&mut scan, first_position, prior, &record)
                        .map_err(|reason| chain_error(path, (at + offset) as u64, &record, reason))?;
                    visit(record, Location { segment: index, offset: (at + offset) as u32 });
                    scan.records += 1;
                }
                at += len;
            }
            Err(reason) => {
                if last && is_padding(bytes, at) {
                    // What a direct write leaves after the last frame: see
                    // `embedded/direct.rs`. Not a torn tail: nothing was lost.
                    scan.padding = (bytes.len() - at) as u64;
                    break;
                }
                if last && is_tail(bytes, at) {
                    let bytes_cut = (bytes.len() - at) as u64;
                    scan.torn_tail = Some(TornTail {
                        file: path.to_path_buf(),
                        offset: at as u64,
                        bytes: bytes_cut,
                        reason: reason.to_string(),
                    });
                    break;
                }
                return Err(corrupt(at, reason.to_string()));
            }
        }
    }
    scan.len = at as u64;
    Ok(scan)
}

/// Whether the bytes from `at` (where no frame parses) are the padding a direct write
/// leaves: zeros to the end of a file whose length is a whole number of blocks, fewer
/// than a block of them.
fn is_padding(bytes: &[u8], at: usize) -> bool {
    let padding = bytes.len() - at;
    bytes.len().is_multiple_of(DIRECT_ALIGN) && padding < DIRECT_ALIGN && bytes[at..].iter().all(|byte| *byte == 0)
}

/// Whether a segment whose header is not whole was never written to: it is all zeros
/// or no longer than a header.
pub fn is_empty_segment(bytes: &[u8]) -> bool {
    bytes.len() <= SEGMENT_HEADER_BYTES || bytes.iter().all(|byte| *byte == 0)
}

/// Whether the bad frame at `at` is the last thing in the file: either its header is
/// valid and it reaches the end of the file, or its header is unreadable and no valid
/// frame header follows anywhere after it.
fn is_tail(bytes: &[u8], at: usize) -> bool {
    match parse_frame_header(&bytes[at..]) {
        Some((body_len, _)) => at + FRAME_HEADER_BYTES + body_len >= bytes.len(),
        None => (at + 1..bytes.len()).all(|later| parse_frame_header(&bytes[later..]).is_none()),
    }
}

fn check_record(
    scan: &mut SegmentScan,
    first_position: u64,
    prior: &mut PriorHead<'_>,
    record: &RecordedEvent,
) -> Result<(), String> {
    let due = first_position + scan.records;
    if record.position != due {
        return Err(format!("position {} where {due} was expected", record.position));
    }
    // One lookup for a stream seen before in the segment (nearly every record).
    if let Some(head) = scan.heads.get_mut(&record.stream) {
        check_link(Some(*head), record.revision, &record.payload, &record.hash).map_err(|broken| broken.to_string())?;
        *head = (record.revision, record.hash);
        return Ok(());
    }
    let last = prior(&record.stream).map_err(|error| error.to_string())?;
    check_link(last, record.revision, &record.payload, &record.hash).map_err(|broken| broken.to_string())?;
    scan.heads.insert(record.stream.clone(), (record.revision, record.hash));
    Ok(())
}

fn chain_error(path: &Path, offset: u64, record: &RecordedEvent, reason: String) -> StoreError {
    StoreError::ChainBroken {
        stream: record.stream.clone(),
        revision: record.revision,
        file: path.to_path_buf(),
        offset,
        reason,
    }
}
