//! The three-way merge of one file's content, at chunk granularity with
//! byte-exact conflicts.
//!
//! Each side's change is the set of chunks whose bytes differ from the
//! base (found by the chunk maps' pointer-pruned diff) plus, if it changed
//! the size, every chunk between the old and the new size. Chunks only one
//! side changed are taken from that side whole (shared, never copied).
//! Chunks both sides changed are merged byte by byte: a byte only one side
//! changed takes that side's value, a byte both changed alike is kept, a
//! byte both changed differently is a conflict (the winner's byte is
//! used). Sizes combine when only one side changed the size or both
//! changed it to the same value; otherwise the whole file is a size
//! conflict and takes the winner's content.

use std::ops::Range;

use imbl::ordmap::DiffItem;

use crate::chunk::Chunk;
use crate::chunkmap::ChunkMap;
use crate::content::{CHUNK_SIZE, Content};
use crate::error::{Error, ErrorKind, Result};

const CHUNK: u64 = CHUNK_SIZE as u64;

/// A merged file content and what conflicted in it.
pub(super) struct MergedContent {
    pub content: Content,
    /// Byte ranges both sides changed differently (coalesced).
    pub ranges: Vec<Range<u64>>,
    /// Both changed the size, to different sizes: `ranges` holds the span
    /// between them and `content` is the winner's.
    pub size_conflict: bool,
}

impl MergedContent {
    fn clean(content: &Content) -> MergedContent {
        MergedContent {
            content: content.clone(),
            ranges: Vec::new(),
            size_conflict: false,
        }
    }
}

/// Merges `o` (ours) and `t` (theirs), both changed from `b`; a byte
/// conflict takes theirs' byte if `theirs_wins`, else ours'.
pub(super) fn merge_content(
    b: &Content,
    o: &Content,
    t: &Content,
    theirs_wins: bool,
) -> Result<MergedContent> {
    if o.ptr_eq(b) || o == b {
        return Ok(MergedContent::clean(t));
    }
    if t.ptr_eq(b) || t == b || o.same_bytes(t) {
        return Ok(MergedContent::clean(o));
    }
    let (sb, so, st) = (b.size(), o.size(), t.size());
    if so != sb && st != sb && so != st {
        let winner = if theirs_wins { t } else { o };
        return Ok(MergedContent {
            content: winner.clone(),
            ranges: std::iter::once(so.min(st)..so.max(st)).collect(),
            size_conflict: true,
        });
    }
    let size = if so != sb { so } else { st };
    let diff_o = chunk_diff(b.chunk_map(), o.chunk_map());
    let diff_t = chunk_diff(b.chunk_map(), t.chunk_map());
    let region_o = size_region(sb, so);
    let region_t = size_region(sb, st);
    let by_o = |c: u64| diff_o.binary_search(&c).is_ok() || region_o.contains(&c);
    let by_t = |c: u64| diff_t.binary_search(&c).is_ok() || region_t.contains(&c);
    // Start from the side that changed the size (ours if neither did) and
    // bring in what the other side changed.
    let (mut chunks, other, other_diff) = if st != sb {
        (t.chunk_map().clone(), o, &diff_o)
    } else {
        (o.chunk_map().clone(), t, &diff_t)
    };
    for &c in other_diff {
        if by_o(c) && by_t(c) {
            continue;
        }
        match other.chunk_map().get(&c) {
            Some(ch) => {
                chunks.insert(c, ch.clone());
            }
            None => {
                chunks.remove(&c);
            }
        }
    }
    let mut both: Vec<u64> = diff_o
        .iter()
        .chain(&diff_t)
        .copied()
        .filter(|&c| by_o(c) && by_t(c))
        .collect();
    both.sort_unstable();
    both.dedup();
    let mut ranges = Vec::new();
    let top = sb.max(so).max(st);
    for c in both {
        let merged = merge_chunk(c, size, top, [b, o, t], theirs_wins, &mut ranges)?;
        match merged {
            Some(ch) => {
                chunks.insert(c, ch);
            }
            None => {
                chunks.remove(&c);
            }
        }
    }
    let content = Content::from_parts(size, chunks);
    content.check().map_err(|e| {
        Error::with(
            ErrorKind::Corrupt,
            format!("merged file content is malformed: {e}"),
        )
    })?;
    Ok(MergedContent {
        content,
        ranges,
        size_conflict: false,
    })
}

/// The chunk indices holding bytes between sizes `from` and `to`.
fn size_region(from: u64, to: u64) -> Range<u64> {
    if from == to {
        return 0..0;
    }
    let (lo, hi) = (from.min(to), from.max(to));
    lo / CHUNK..(hi - 1) / CHUNK + 1
}

/// The indices, in order, where two chunk maps read differently (a
/// missing chunk reads as zeros). Shared subtrees are skipped.
pub(super) fn chunk_diff(a: &ChunkMap, b: &ChunkMap) -> Vec<u64> {
    let differ = |x: Option<&Chunk>, y: Option<&Chunk>| match (x, y) {
        (Some(x), Some(y)) => !x.same_bytes(y),
        (Some(c), None) | (None, Some(c)) => !c.reads_zero(),
        (None, None) => false,
    };
    let mut out = Vec::new();
    if let (ChunkMap::Many(x), ChunkMap::Many(y)) = (a, b) {
        for d in x.diff(y) {
            match d {
                DiffItem::Add(&i, c) | DiffItem::Remove(&i, c) => {
                    if !c.reads_zero() {
                        out.push(i);
                    }
                }
                DiffItem::Update {
                    old: (&i, x),
                    new: (_, y),
                } => {
                    if differ(Some(x), Some(y)) {
                        out.push(i);
                    }
                }
            }
        }
        out.sort_unstable();
        return out;
    }
    let mut keys: Vec<u64> = a.iter().chain(b.iter()).map(|(i, _)| *i).collect();
    keys.sort_unstable();
    keys.dedup();
    for i in keys {
        if differ(a.get(&i), b.get(&i)) {
            out.push(i);
        }
    }
    out
}

/// `len` bytes of `side` from `start`, and how many of them lie inside
/// its size (the rest are past its end).
fn span_bytes(side: &Content, start: u64, len: usize) -> Result<(Vec<u8>, usize)> {
    let mut buf = vec![0u8; len];
    let n = side.read_at(&mut buf, start)?;
    Ok((buf, n))
}

/// Merges chunk `c` byte by byte; the merged chunk (`None` for one that
/// reads as zeros), recording conflicting byte ranges.
fn merge_chunk(
    c: u64,
    size: u64,
    top: u64,
    [b, o, t]: [&Content; 3],
    theirs_wins: bool,
    ranges: &mut Vec<Range<u64>>,
) -> Result<Option<Chunk>> {
    let start = c * CHUNK;
    if start >= top {
        return Ok(None);
    }
    let len = (top - start).min(CHUNK) as usize;
    let (vb, nb) = span_bytes(b, start, len)?;
    let (vo, no) = span_bytes(o, start, len)?;
    let (vt, nt) = span_bytes(t, start, len)?;
    let keep = size.saturating_sub(start).min(CHUNK) as usize;
    let mut out = Vec::with_capacity(keep);
    let at = |v: &[u8], n: usize, k: usize| (k < n).then(|| v[k]);
    for k in 0..len {
        let (xb, xo, xt) = (at(&vb, nb, k), at(&vo, no, k), at(&vt, nt, k));
        let v = if xo == xb {
            xt
        } else if xt == xb || xo == xt {
            xo
        } else {
            push_range(ranges, start + k as u64);
            if theirs_wins { xt } else { xo }
        };
        // Past the merged size the cut stands (a change there by the side
        // that did not cut is a conflict, recorded above).
        if k < keep {
            out.push(v.unwrap_or(0));
        }
    }
    let trimmed = crate::chunk::trimmed(&out);
    if trimmed.is_empty() {
        return Ok(None);
    }
    Ok(Some(Chunk::owned(trimmed.to_vec(), 0)))
}

/// The most ranges one conflict lists (see [`push_range`]).
pub(super) const MAX_RANGES: usize = 64;

/// Adds byte `pos` to `ranges`, extending the last range when adjacent.
/// Once `MAX_RANGES` are listed the last one stretches to `pos` instead:
/// sides that differ at every other byte would otherwise make 16 bytes
/// of report per 2 bytes of file. The ranges then still cover every
/// conflicting byte, with some that are not between the last ones.
fn push_range(ranges: &mut Vec<Range<u64>>, pos: u64) {
    let full = ranges.len() >= MAX_RANGES;
    if let Some(last) = ranges.last_mut()
        && (last.end == pos || full)
    {
        last.end = pos + 1;
        return;
    }
    ranges.push(pos..pos + 1);
}

#[cfg(test)]
mod range_tests {
    use super::{MAX_RANGES, push_range};

    #[test]
    fn ranges_coalesce_then_stop_growing() {
        let mut r = Vec::new();
        for pos in [3, 4, 5, 9] {
            push_range(&mut r, pos);
        }
        assert_eq!(r, vec![3..6, 9..10]);
        // Every other byte of a large span: at most MAX_RANGES ranges,
        // covering each byte pushed.
        let mut r = Vec::new();
        let pushed: Vec<u64> = (0..100_000u64).map(|i| 2 * i).collect();
        for &p in &pushed {
            push_range(&mut r, p);
        }
        assert_eq!(r.len(), MAX_RANGES);
        assert!(pushed.iter().all(|p| r.iter().any(|x| x.contains(p))));
        assert_eq!(r.last().map(|x| x.end), Some(199_999));
        assert!(r.windows(2).all(|w| w[0].end < w[1].start));
    }
}
