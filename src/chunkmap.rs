//! The chunk map of one file: chunk index -> [`Chunk`], persistent (clone
//! is O(1), a change copies only what it touches).
//!
//! Most files hold at most one chunk (everything under 64 KiB), so those
//! keep it inline; a B-tree node costs about 280 bytes of its own, which
//! for 100,000 small files was a third of a lazy checkpoint open. A second
//! chunk moves the map into an `OrdMap`, which shares subtrees across forks.

use std::ops::{Bound, RangeBounds};

use imbl::OrdMap;

use crate::chunk::Chunk;

#[derive(Clone, Debug, Default)]
pub(crate) enum ChunkMap {
    #[default]
    Empty,
    One(u64, Chunk),
    Many(OrdMap<u64, Chunk>),
}

/// Entries of a [`ChunkMap`] in index order.
pub(crate) enum Iter<'a> {
    One(Option<(&'a u64, &'a Chunk)>),
    Many(imbl::ordmap::RangedIter<'a, u64, Chunk, imbl::shared_ptr::DefaultSharedPtr>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a u64, &'a Chunk);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::One(one) => one.take(),
            Iter::Many(it) => it.next(),
        }
    }
}

impl ChunkMap {
    pub(crate) fn len(&self) -> usize {
        match self {
            ChunkMap::Empty => 0,
            ChunkMap::One(..) => 1,
            ChunkMap::Many(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn iter(&self) -> Iter<'_> {
        self.range(..)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Chunk> {
        self.iter().map(|(_, c)| c)
    }

    /// The chunks with indices in `r`, in order. A range of one index is a
    /// lookup (most reads and writes touch one chunk), not a tree
    /// iterator.
    pub(crate) fn range(&self, r: impl RangeBounds<u64>) -> Iter<'_> {
        match self {
            ChunkMap::Empty => Iter::One(None),
            ChunkMap::One(i, c) => Iter::One(r.contains(i).then_some((i, c))),
            ChunkMap::Many(m) => match (r.start_bound(), r.end_bound()) {
                (Bound::Included(a), Bound::Included(b)) if a == b => Iter::One(m.get_key_value(a)),
                (start, end) => Iter::Many(m.range::<_, u64>((start, end))),
            },
        }
    }

    pub(crate) fn get(&self, idx: &u64) -> Option<&Chunk> {
        match self {
            ChunkMap::Empty => None,
            ChunkMap::One(i, c) => (i == idx).then_some(c),
            ChunkMap::Many(m) => m.get(idx),
        }
    }

    pub(crate) fn get_mut(&mut self, idx: &u64) -> Option<&mut Chunk> {
        match self {
            ChunkMap::Empty => None,
            ChunkMap::One(i, c) => (i == idx).then_some(c),
            ChunkMap::Many(m) => m.get_mut(idx),
        }
    }

    /// Puts `chunk` at `idx`; the chunk it replaces, if any.
    pub(crate) fn insert(&mut self, idx: u64, chunk: Chunk) -> Option<Chunk> {
        match self {
            ChunkMap::Empty => {
                *self = ChunkMap::One(idx, chunk);
                None
            }
            ChunkMap::One(i, c) if *i == idx => Some(std::mem::replace(c, chunk)),
            ChunkMap::One(..) => {
                if let ChunkMap::One(i, c) = std::mem::take(self) {
                    let mut m = OrdMap::new();
                    m.insert(i, c);
                    m.insert(idx, chunk);
                    *self = ChunkMap::Many(m);
                }
                None
            }
            ChunkMap::Many(m) => m.insert(idx, chunk),
        }
    }

    pub(crate) fn remove(&mut self, idx: &u64) -> Option<Chunk> {
        match self {
            ChunkMap::One(i, _) if i == idx => match std::mem::take(self) {
                ChunkMap::One(_, c) => Some(c),
                _ => None,
            },
            ChunkMap::Empty | ChunkMap::One(..) => None,
            ChunkMap::Many(m) => m.remove(idx),
        }
    }

    /// Whether both are the very same map (shared, not just equal).
    pub(crate) fn ptr_eq(&self, other: &ChunkMap) -> bool {
        match (self, other) {
            (ChunkMap::Empty, ChunkMap::Empty) => true,
            (ChunkMap::One(i, a), ChunkMap::One(j, b)) => i == j && a.ptr_eq(b),
            (ChunkMap::Many(a), ChunkMap::Many(b)) => a.ptr_eq(b),
            _ => false,
        }
    }
}

/// Equal entries, whatever the representation (a map that grew to two
/// chunks and shrank back to one stays in an `OrdMap`).
impl PartialEq for ChunkMap {
    fn eq(&self, other: &ChunkMap) -> bool {
        match (self, other) {
            // OrdMap's equality skips shared subtrees.
            (ChunkMap::Many(a), ChunkMap::Many(b)) => a == b,
            _ => self.len() == other.len() && self.iter().eq(other.iter()),
        }
    }
}
impl Eq for ChunkMap {}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(b: u8) -> Chunk {
        Chunk::new(vec![b; 10])
    }

    fn keys(m: &ChunkMap) -> Vec<u64> {
        m.iter().map(|(i, _)| *i).collect()
    }

    #[test]
    fn one_chunk_inline_then_a_map() {
        let mut m = ChunkMap::default();
        assert!(m.is_empty() && m.get(&0).is_none() && m.remove(&0).is_none());
        assert!(m.insert(3, chunk(1)).is_none());
        assert!(matches!(m, ChunkMap::One(3, _)));
        assert_eq!(keys(&m), [3]);
        assert_eq!(m.range(4..).count(), 0);
        assert_eq!(m.range(..=3).count(), 1);
        assert!(m.insert(3, chunk(2)).is_some());
        assert_eq!(m.get(&3).unwrap().bytes().unwrap()[0], 2);
        let before = m.clone();
        assert!(m.insert(1, chunk(3)).is_none());
        assert!(matches!(m, ChunkMap::Many(_)));
        assert_eq!(keys(&m), [1, 3]);
        assert_eq!(keys(&before), [3], "a clone is unaffected");
        assert_eq!(m.range(2..).map(|(i, _)| *i).collect::<Vec<_>>(), [3]);
        assert!(m.remove(&1).is_some());
        // One entry in an OrdMap equals the same entry inline.
        assert_eq!(m, before);
        assert!(!m.ptr_eq(&before));
        assert!(m.remove(&3).is_some() && m.is_empty());
        assert_eq!(m, ChunkMap::Empty);
        let mut one = ChunkMap::default();
        one.insert(0, chunk(5));
        assert!(one.remove(&0).is_some());
        assert!(matches!(one, ChunkMap::Empty));
    }
}
