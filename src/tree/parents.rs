//! The parent cache: the directories that the last checked parent paths
//! named (a few, one per slot), each kept with its path's bytes and the
//! chain of directories it walks, so the next resolution of a name in the
//! same directory compares bytes instead of walking the directory's links
//! back to the start.
//!
//! An entry says "from `start`, the plain names `dirs` (no `.`, `..` or
//! symlinks) walk these directories" and holds while the tree's directory
//! generation ([`Tree`](super::Tree)'s `dir_gen`) is the one it was
//! recorded at. The generation moves whenever an entry naming a directory
//! goes or is replaced, a directory inode is handed out mutably by
//! `inode_mut`, or the limits change: by invariant 2 a directory has one
//! name, so a path of plain names can only come to name another directory
//! (or none) when an entry on its way goes, and creating an entry cannot
//! change what an existing path walks. A clone of the tree starts empty.
//!
//! A snapshot's tree is read from many threads, so the cache is a seqlock
//! over atomics: a writer makes the sequence odd, stores, makes it even
//! again; a reader keeps what it read only if the sequence was even and
//! unchanged around its reads. A reader that races a writer misses and
//! takes the slower checked path; it never sees half of two entries.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use super::Ino;

/// A tree's parent cache, allocated on first use so that a clone (every
/// snapshot and fork) costs one empty cell; a clone starts empty.
#[derive(Debug, Default)]
pub(super) struct Parents(OnceLock<Box<ParentCache>>);

impl Clone for Parents {
    fn clone(&self) -> Parents {
        Parents::default()
    }
}

impl Parents {
    /// The cache, if anything was ever recorded.
    pub(super) fn get(&self) -> Option<&ParentCache> {
        self.0.get().map(|b| &**b)
    }

    /// The cache, made now if need be.
    pub(super) fn get_or_make(&self) -> &ParentCache {
        self.0.get_or_init(Box::default)
    }
}

/// Path bytes an entry can hold, in 8-byte words.
const WORDS: usize = 8;
/// Directories an entry's chain can hold.
pub(super) const CHAIN: usize = 8;

/// Entries a cache holds, chosen by the path's length and last byte, so
/// that work moving between a few directories (a rename from one to
/// another) keeps each of them cached instead of replacing one entry
/// with the other on every call.
const SLOTS: usize = 4;

/// A tree's cached parent paths (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct ParentCache {
    slots: [Slot; SLOTS],
}

impl ParentCache {
    fn slot(&self, dirs: &[u8]) -> &Slot {
        let last = dirs.last().copied().unwrap_or(0) as usize;
        &self.slots[(last + dirs.len()) % SLOTS]
    }

    /// See [`Slot::lookup`].
    #[inline]
    pub(super) fn lookup(
        &self,
        generation: u64,
        start: Ino,
        dirs: &[u8],
        out: &mut [Ino; CHAIN],
    ) -> Option<usize> {
        self.slot(dirs).lookup(generation, start, dirs, out)
    }

    /// See [`Slot::record`].
    pub(super) fn record(&self, generation: u64, start: Ino, dirs: &[u8], chain: &[Ino]) {
        self.slot(dirs).record(generation, start, dirs, chain)
    }
}

/// One cached parent path.
#[derive(Debug, Default)]
struct Slot {
    /// Even: stable; odd: a writer is storing.
    seq: AtomicU64,
    /// The directory generation the entry holds for.
    generation: AtomicU64,
    start: AtomicU64,
    /// Bytes of the path, plus one (0: no entry).
    len: AtomicU64,
    words: [AtomicU64; WORDS],
    /// Directories in `chain`, outermost first.
    depth: AtomicU64,
    chain: [AtomicU64; CHAIN],
}

/// Word `i` of `bytes`, zero-padded.
fn word(bytes: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    let from = i * 8;
    let piece = &bytes[from..(from + 8).min(bytes.len())];
    w[..piece.len()].copy_from_slice(piece);
    u64::from_le_bytes(w)
}

impl Slot {
    /// The chain of directories that `dirs` walks from `start` in a tree
    /// at directory generation `generation`, if this is the entry for it:
    /// their count, with `out[..count]` filled outermost first.
    #[inline]
    fn lookup(
        &self,
        generation: u64,
        start: Ino,
        dirs: &[u8],
        out: &mut [Ino; CHAIN],
    ) -> Option<usize> {
        if dirs.len() > WORDS * 8 {
            return None;
        }
        let seq = self.seq.load(Ordering::Acquire);
        if seq & 1 == 1
            || self.len.load(Ordering::Relaxed) != dirs.len() as u64 + 1
            || self.generation.load(Ordering::Relaxed) != generation
            || self.start.load(Ordering::Relaxed) != start
        {
            return None;
        }
        // Whole words straight from the path; the tail, if any, byte by
        // byte (no copy of variable length on this path).
        let mut whole = dirs.chunks_exact(8);
        for (stored, w) in self.words.iter().zip(&mut whole) {
            let w: [u8; 8] = w.try_into().ok()?;
            if stored.load(Ordering::Relaxed) != u64::from_le_bytes(w) {
                return None;
            }
        }
        let tail = whole.remainder();
        if !tail.is_empty() {
            let w = tail
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            if self.words[dirs.len() / 8].load(Ordering::Relaxed) != w {
                return None;
            }
        }
        let depth = self.depth.load(Ordering::Relaxed) as usize;
        if depth == 0 || depth > CHAIN {
            return None;
        }
        for (slot, ino) in out.iter_mut().zip(&self.chain).take(depth) {
            *slot = ino.load(Ordering::Relaxed);
        }
        // Everything above was read before the sequence is read again.
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == seq).then_some(depth)
    }

    /// Makes `dirs` from `start`, walking `chain` (outermost first), the
    /// entry for generation `generation`. Does nothing for a path or chain
    /// too long to hold, or while another thread is storing.
    fn record(&self, generation: u64, start: Ino, dirs: &[u8], chain: &[Ino]) {
        if dirs.len() > WORDS * 8 || chain.is_empty() || chain.len() > CHAIN {
            return;
        }
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || self
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // A reader that sees any store below sees the odd sequence first.
        fence(Ordering::Release);
        self.generation.store(generation, Ordering::Relaxed);
        self.start.store(start, Ordering::Relaxed);
        self.len.store(dirs.len() as u64 + 1, Ordering::Relaxed);
        for i in 0..dirs.len().div_ceil(8) {
            self.words[i].store(word(dirs, i), Ordering::Relaxed);
        }
        self.depth.store(chain.len() as u64, Ordering::Relaxed);
        for (slot, &ino) in self.chain.iter().zip(chain) {
            slot.store(ino, Ordering::Relaxed);
        }
        self.seq.store(seq + 2, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_the_same_path_start_and_generation() {
        let c = ParentCache::default();
        let mut out = [0; CHAIN];
        assert_eq!(c.lookup(0, 1, b"/app/d7", &mut out), None);
        c.record(3, 1, b"/app/d7", &[5, 9]);
        assert_eq!(c.lookup(3, 1, b"/app/d7", &mut out), Some(2));
        assert_eq!(out[..2], [5, 9]);
        assert_eq!(c.lookup(4, 1, b"/app/d7", &mut out), None);
        assert_eq!(c.lookup(3, 2, b"/app/d7", &mut out), None);
        assert_eq!(c.lookup(3, 1, b"/app/d8", &mut out), None);
        assert_eq!(c.lookup(3, 1, b"/app/d", &mut out), None);
        assert_eq!(c.lookup(3, 1, b"/app/d7\0", &mut out), None);
        // Words past the first are compared too.
        let long = b"/a-long-directory-name/and-another/and-a-third";
        c.record(3, 1, long, &[2, 3, 4]);
        assert_eq!(c.lookup(3, 1, long, &mut out), Some(3));
        let mut other = *long;
        other[40] = b'X';
        assert_eq!(c.lookup(3, 1, &other, &mut out), None);
        // Too long to hold: not recorded, the old entry stays.
        c.record(3, 1, &[b'a'; WORDS * 8 + 1], &[7]);
        assert_eq!(c.lookup(3, 1, long, &mut out), Some(3));
        c.record(3, 1, b"/x", &[1; CHAIN + 1]);
        assert_eq!(c.lookup(3, 1, b"/x", &mut out), None);
    }

    #[test]
    fn two_directories_stay_cached_side_by_side() {
        let c = ParentCache::default();
        let mut out = [0; CHAIN];
        c.record(1, 1, b"/app/d7", &[2, 7]);
        c.record(1, 1, b"/app/d8", &[2, 8]);
        assert_eq!(c.lookup(1, 1, b"/app/d7", &mut out), Some(2));
        assert_eq!(out[..2], [2, 7]);
        assert_eq!(c.lookup(1, 1, b"/app/d8", &mut out), Some(2));
        assert_eq!(out[..2], [2, 8]);
    }
}
