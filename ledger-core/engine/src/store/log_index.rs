//! Where the embedded store finds a record: the sealed segments' seals and the tables of
//! the segments still open (normally one: the segment taking appends; two for the
//! moment between moving to a new segment and sealing the last). The older sealed
//! segments are found through the streams' directory (`directory.rs`), the newest
//! through their seals' filters in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::directory::{self, Directory};
use super::format::Location;
use super::seal::{self, Sealed, SealedRun, SegmentTable};
use super::{Direction, Revision, StoreError, StreamHead};

/// What a record found through the index must be: the index is checked against every
/// record read through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    Position(u64),
    Revision(Revision),
}

/// Heads found in the seals kept for the next lookup (a stream's head in the sealed
/// segments changes only when a segment is sealed, which empties it).
const SEALED_HEADS_CACHED: usize = 65_536;

#[derive(Default, Debug)]
pub struct LogIndex {
    /// Every sealed segment in order; those the directory covers (a prefix) without
    /// their filters in memory.
    pub sealed: Vec<Sealed>,
    /// Which of the sealed segments up to its last hold a stream.
    pub directory: Option<Arc<Directory>>,
    /// The segments not sealed yet, in order: the one taking appends last; before it,
    /// any whose seal is being written (shared with the thread writing it).
    pub tables: Vec<Arc<SegmentTable>>,
    /// Heads (or their absence) in the sealed segments, of streams looked up lately.
    sealed_heads: Mutex<HashMap<String, Option<StreamHead>>>,
}

/// What a merge into a new directory takes ([`LogIndex::merge_plan`]).
pub struct MergePlan {
    /// The directory now.
    pub old: Option<Arc<Directory>>,
    /// The seals to add to it, in order, detached.
    pub seals: Vec<Sealed>,
    /// The digest of every seal the new directory covers.
    pub digest: [u8; 32],
}

/// A stream's run in one segment, sealed or not.
enum RunIn<'a> {
    Table(u32, &'a super::seal::Run),
    Sealed(&'a Sealed, SealedRun),
}

impl RunIn<'_> {
    fn first_revision(&self) -> u64 {
        match self {
            RunIn::Table(_, run) => run.first_revision,
            RunIn::Sealed(_, run) => run.first_revision,
        }
    }

    fn count(&self) -> u64 {
        match self {
            RunIn::Table(_, run) => run.offsets.len() as u64,
            RunIn::Sealed(_, run) => u64::from(run.count),
        }
    }

    /// Locations of the run's revisions `first ..= last` (absolute revisions).
    fn locations(&self, first: u64, last: u64) -> Result<Vec<Location>, StoreError> {
        let skip = first - self.first_revision();
        let take = last + 1 - first;
        Ok(match self {
            RunIn::Table(segment, run) => run.offsets[skip as usize..(skip + take) as usize]
                .iter()
                .map(|&offset| Location { segment: *segment, offset })
                .collect(),
            RunIn::Sealed(sealed, run) => sealed
                .run_offsets(run, skip as u32, take as u32)?
                .into_iter()
                .map(|offset| Location { segment: sealed.segment, offset })
                .collect(),
        })
    }
}

impl LogIndex {
    pub fn next_position(&self) -> u64 {
        match (self.tables.last(), self.sealed.last()) {
            (Some(table), _) => table.next_position(),
            (None, Some(sealed)) => sealed.next_position(),
            (None, None) => 0,
        }
    }

    pub fn head(&self, stream: &str) -> Result<Option<StreamHead>, StoreError> {
        for table in self.tables.iter().rev() {
            if let Some(head) = table.head(stream) {
                return Ok(Some(head));
            }
        }
        // ok: a poisoned cache is only a cache; the lookup below is the truth.
        if let Some(head) = self.sealed_heads.lock().ok().and_then(|cache| cache.get(stream).copied()) {
            return Ok(head);
        }
        let (key, mut head) = (seal::key(stream), None);
        let resident = self.resident();
        std::hint::black_box(resident.iter().fold(0, |acc, sealed| acc ^ sealed.touch(key)));
        for sealed in resident.iter().rev() {
            if let Some(run) = sealed.run_keyed(stream, key)? {
                head = Some(run.head());
                break;
            }
        }
        if head.is_none() {
            for (sealed, block) in self.in_directory(key)? {
                if let Some(run) = sealed.run_in_block(stream, key, block)? {
                    head = Some(run.head());
                    break;
                }
            }
        }
        if let Ok(mut cache) = self.sealed_heads.lock() {
            if cache.len() >= SEALED_HEADS_CACHED {
                cache.clear();
            }
            cache.insert(stream.to_string(), head);
        }
        Ok(head)
    }

    /// The sealed segments the directory does not cover, whose seals keep their
    /// filters in memory.
    fn resident(&self) -> &[Sealed] {
        &self.sealed[self.sealed.partition_point(Sealed::covered)..]
    }

    /// The seals and blocks the directory names for `key`, newest segment first.
    fn in_directory(&self, key: u64) -> Result<Vec<(&Sealed, u32)>, StoreError> {
        let Some(directory) = &self.directory else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for (segment, block) in directory.find(key)?.into_iter().rev() {
            let sealed = self.sealed.binary_search_by_key(&segment, |sealed| sealed.segment).map_err(|_| {
                StoreError::Corrupt {
                    file: directory.path().to_path_buf(),
                    offset: 0,
                    reason: format!("the streams' directory names segment {segment}, which is not sealed"),
                }
            })?;
            out.push((&self.sealed[sealed], block));
        }
        Ok(out)
    }

    /// What a merge into a new directory takes, if more than `in_memory_max` sealed
    /// segments keep their filters in memory: the directory now, the seals to add to it
    /// (all but the newest `in_memory_max / 2`, detached), and the digest of every seal
    /// the new one covers.
    pub fn merge_plan(&self, in_memory_max: usize) -> Option<MergePlan> {
        let first = self.sealed.partition_point(Sealed::covered);
        if self.sealed.len() - first <= in_memory_max {
            return None;
        }
        let end = self.sealed.len() - in_memory_max / 2;
        let seals = self.sealed[first..end].iter().map(Sealed::detached).collect();
        Some(MergePlan { old: self.directory.clone(), seals, digest: directory::digest(&self.sealed[..end]) })
    }

    /// Every seal up to `last`, detached: what a directory is made again from.
    pub fn detached_up_to(&self, last: u32) -> Vec<Sealed> {
        self.sealed.iter().take_while(|sealed| sealed.segment <= last).map(Sealed::detached).collect()
    }

    /// Puts `directory` in place: the seals it covers drop their filters.
    pub fn cover(&mut self, directory: Directory) {
        for sealed in &mut self.sealed {
            if sealed.segment <= directory.last {
                sealed.cover();
            }
        }
        self.directory = Some(Arc::new(directory));
    }

    /// Adds a sealed segment (the oldest not sealed yet) in place of its table.
    pub fn seal(&mut self, sealed: Sealed) {
        self.tables.retain(|table| table.segment != sealed.segment);
        self.sealed.push(sealed);
        if let Ok(mut cache) = self.sealed_heads.lock() {
            cache.clear();
        }
    }

    /// The table of `segment`, a segment taking appends (not shared with a sealer).
    pub fn table_mut(&mut self, segment: u32) -> Option<&mut SegmentTable> {
        self.tables.iter_mut().find(|table| table.segment == segment).and_then(Arc::get_mut)
    }

    /// Locations of up to `max_count` records from `from`, in commit order.
    pub fn positions(&self, from: u64, max_count: usize) -> Result<Vec<(Location, Expected)>, StoreError> {
        let end = self.next_position();
        let mut out = Vec::new();
        let mut at = from;
        while out.len() < max_count && at < end {
            let want = max_count - out.len();
            let before = out.len();
            let sealed = self.sealed.partition_point(|sealed| sealed.next_position() <= at);
            if let Some(sealed) = self.sealed.get(sealed) {
                for offset in sealed.offsets(at, want)? {
                    out.push((Location { segment: sealed.segment, offset }, Expected::Position(at)));
                    at += 1;
                }
            } else {
                let table = self.tables.partition_point(|table| table.next_position() <= at);
                let Some(table) = self.tables.get(table) else { break };
                for &offset in table.offsets(at, want) {
                    out.push((Location { segment: table.segment, offset }, Expected::Position(at)));
                    at += 1;
                }
            }
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// `stream`'s runs from the newest segment back, until `enough` says so.
    fn runs<'a>(
        &'a self,
        stream: &str,
        mut enough: impl FnMut(&RunIn<'a>) -> bool,
    ) -> Result<Vec<RunIn<'a>>, StoreError> {
        let mut runs = Vec::new();
        let mut take = |run: RunIn<'a>| {
            let done = enough(&run);
            runs.push(run);
            done
        };
        for table in self.tables.iter().rev() {
            if let Some(run) = table.run(stream) {
                if take(RunIn::Table(table.segment, run)) {
                    return Ok(runs);
                }
            }
        }
        let key = seal::key(stream);
        for sealed in self.resident().iter().rev() {
            if let Some(run) = sealed.run_keyed(stream, key)? {
                if take(RunIn::Sealed(sealed, run)) {
                    return Ok(runs);
                }
            }
        }
        for (sealed, block) in self.in_directory(key)? {
            if let Some(run) = sealed.run_in_block(stream, key, block)? {
                if take(RunIn::Sealed(sealed, run)) {
                    return Ok(runs);
                }
            }
        }
        Ok(runs)
    }

    /// Locations of up to `max_count` events of `stream` from revision `from`.
    pub fn stream(
        &self,
        stream: &str,
        from: Revision,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<(Location, Expected)>, StoreError> {
        let mut out = Vec::new();
        if max_count == 0 {
            return Ok(out);
        }
        let max = max_count as u64;
        match direction {
            Direction::Forwards => {
                let mut runs = self.runs(stream, |run| run.first_revision() <= from)?;
                runs.reverse();
                for run in runs {
                    let end = run.first_revision() + run.count();
                    let first = from.max(run.first_revision());
                    if end <= first {
                        continue;
                    }
                    let last = (end - 1).min(first + (max - out.len() as u64) - 1);
                    let locations = run.locations(first, last)?;
                    out.extend(locations.into_iter().zip(first..).map(|(at, r)| (at, Expected::Revision(r))));
                    if out.len() as u64 >= max {
                        break;
                    }
                }
            }
            Direction::Backwards => {
                let mut taken = 0u64;
                let runs = self.runs(stream, |run| {
                    if run.first_revision() <= from {
                        taken += (from.min(run.first_revision() + run.count() - 1) + 1) - run.first_revision();
                    }
                    taken >= max
                })?;
                for run in runs {
                    if run.first_revision() > from {
                        continue;
                    }
                    let last = from.min(run.first_revision() + run.count() - 1);
                    let first = run.first_revision().max((last + 1).saturating_sub(max - out.len() as u64));
                    let locations = run.locations(first, last)?;
                    let revisions: Vec<u64> = (first..=last).collect();
                    out.extend(locations.into_iter().zip(revisions).rev().map(|(at, r)| (at, Expected::Revision(r))));
                    if out.len() as u64 >= max {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Names of the streams starting with `prefix`, each once.
    pub fn names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for sealed in &self.sealed {
            sealed.names(prefix, &mut names)?;
        }
        for table in &self.tables {
            names.extend(table.names().filter(|name| name.starts_with(prefix)).map(str::to_string));
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }
}
