//! What a torn write may leave: cut at a 512-byte sector boundary, or each of its 4 KiB
//! pages old, new or zero (see the parent module and ARCHITECTURE.md).

use super::{apply, Change, PAGE_BYTES, SECTOR_BYTES};

pub(super) fn sector_boundaries(start: u64, end: u64) -> impl Iterator<Item = u64> {
    let first = (start / SECTOR_BYTES + 1) * SECTOR_BYTES;
    (first..end).step_by(SECTOR_BYTES as usize)
}

/// The parts of `start..end` in each 4 KiB page of the file.
pub(super) fn page_ranges(start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut at = start;
    while at < end {
        let page_end = ((at / PAGE_BYTES + 1) * PAGE_BYTES).min(end);
        ranges.push((at, page_end));
        at = page_end;
    }
    ranges
}

/// `before` with the write of `bytes` at `start` applied page by page: choice 0 keeps
/// the old bytes (zeros past the old end), 1 the new, 2 zeros. The length is the new one.
pub(super) fn page_mix(before: &[u8], start: u64, bytes: &[u8], pages: &[(u64, u64)], choices: &[u8]) -> Vec<u8> {
    let mut content = before.to_vec();
    let end = (start as usize + bytes.len()).max(content.len());
    content.resize(end, 0);
    for ((page_start, page_end), choice) in pages.iter().zip(choices) {
        let (from, to) = (*page_start as usize, *page_end as usize);
        match choice {
            1 => content[from..to].copy_from_slice(&bytes[from - start as usize..to - start as usize]),
            2 => content[from..to].fill(0),
            _ => {}
        }
    }
    content
}

/// Most pages whose every old/new/zero mix is enumerated; beyond, only the mixes where
/// all pages but one are new.
const PAGE_MIX_PAGES_MAX: usize = 5;

/// Every torn form of the write of `bytes` at `offset` over `before`.
pub(super) fn torn_writes(before: &[u8], offset: u64, bytes: &[u8]) -> Vec<Vec<u8>> {
    let end = offset + bytes.len() as u64;
    let mut torn = Vec::new();
    for cut in sector_boundaries(offset, end) {
        let mut content = before.to_vec();
        apply(&mut content, &Change::Write { offset, bytes: bytes[..(cut - offset) as usize].to_vec() });
        torn.push(content);
    }
    let pages = page_ranges(offset, end);
    if pages.len() <= PAGE_MIX_PAGES_MAX {
        let combinations = 3usize.pow(pages.len() as u32);
        for mut number in 0..combinations {
            let choices: Vec<u8> = pages
                .iter()
                .map(|_| {
                    let choice = (number % 3) as u8;
                    number /= 3;
                    choice
                })
                .collect();
            torn.push(page_mix(before, offset, bytes, &pages, &choices));
        }
    } else {
        for odd in 0..pages.len() {
            for choice in [0u8, 2] {
                let choices: Vec<u8> = (0..pages.len()).map(|page| if page == odd { choice } else { 1 }).collect();
                torn.push(page_mix(before, offset, bytes, &pages, &choices));
            }
        }
    }
    torn
}
