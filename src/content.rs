//! File content: a logical size plus a persistent, sparse map from chunk
//! index to [`Chunk`].
//!
//! Invariants (checked by `Content::check`):
//! 1. A chunk at index `i` covers `[i * CHUNK, (i + 1) * CHUNK)`; its stored
//!    length is at most `CHUNK` and it never reaches past `size`.
//! 2. Bytes inside `size` that no chunk stores (holes, or the tail of a short
//!    chunk) read as zeros and cost nothing.
//!
//! Cloning is O(1). A write copies only the chunks it touches, and only if a
//! snapshot or another fork still shares them.

use crate::blob::Chunk;
use crate::chunkmap::ChunkMap;
use crate::error::Result;

/// Bytes per chunk. 64 KiB keeps a copy-on-write copy cheap (a few µs) while
/// a 1 GiB file is still only 16,384 map entries.
pub const CHUNK_SIZE: usize = 64 * 1024;
const CHUNK: u64 = CHUNK_SIZE as u64;

#[derive(Clone, Debug, Default)]
pub(crate) struct Content {
    size: u64,
    /// Sum of stored chunk lengths, kept up to date so `stat` is O(1).
    held: u64,
    chunks: ChunkMap,
}

/// The same bytes stored the same way: equal size and the same chunks at
/// the same places with the same lengths. Equal bytes in another layout (a
/// hole here, stored zeros there) are [`Content::same_bytes`], not `==`:
/// what a file holds is part of its state, and a delta must carry it.
impl PartialEq for Content {
    fn eq(&self, other: &Content) -> bool {
        // OrdMap's equality skips shared subtrees, so comparing a forked file
        // with its original costs in proportion to what changed.
        self.size == other.size && self.held == other.held && self.chunks == other.chunks
    }
}
impl Eq for Content {}

impl Content {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Bytes actually stored (what `du` would count, holes free).
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    pub(crate) fn chunks(&self) -> impl Iterator<Item = (u64, &Chunk)> {
        self.chunks.iter().map(|(i, c)| (*i, c))
    }

    /// The chunk map itself (the checkpoint code patches and compares it).
    pub(crate) fn chunk_map(&self) -> &ChunkMap {
        &self.chunks
    }

    pub(crate) fn ptr_eq(&self, other: &Content) -> bool {
        self.size == other.size && self.chunks.ptr_eq(&other.chunks)
    }

    /// Builds content from chunks that were validated by the caller.
    pub(crate) fn from_parts(size: u64, chunks: ChunkMap) -> Content {
        let held = chunks.values().map(|c| c.len() as u64).sum();
        Content { size, held, chunks }
    }

    /// Copies bytes at `offset` into `buf`; returns how many (0 at or past
    /// EOF). Fails only when a lazily loaded chunk cannot be fetched or
    /// verified; `buf` may then hold part of the data.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let n = (self.size - offset).min(buf.len() as u64) as usize;
        let buf = &mut buf[..n];
        let mut done = 0usize;
        let first = offset / CHUNK;
        let end = offset + n as u64;
        let last = (end - 1) / CHUNK;
        // Walk the stored chunks in range once; fill gaps with zeros.
        let mut next = first;
        for (&idx, chunk) in self.chunks.range(first..=last) {
            if idx > next {
                let gap_end = (idx * CHUNK).min(end);
                let gap = (gap_end - (offset + done as u64)) as usize;
                buf[done..done + gap].fill(0);
                done += gap;
            }
            let pos = offset + done as u64;
            let in_chunk = (pos - idx * CHUNK) as usize;
            let want = ((idx + 1) * CHUNK).min(end) - pos;
            let want = want as usize;
            // Stored bytes may stop short of the chunk's length: zeros follow.
            let bytes = chunk.bytes()?;
            // `in_chunk` may lie past the stored bytes (a short chunk read
            // far into its span): then everything here reads as zeros.
            let have = bytes.len().saturating_sub(in_chunk).min(want);
            if have > 0 {
                buf[done..done + have].copy_from_slice(&bytes[in_chunk..in_chunk + have]);
            }
            buf[done + have..done + want].fill(0);
            done += want;
            next = idx + 1;
        }
        buf[done..].fill(0);
        Ok(n)
    }

    /// Loads every chunk that a write of `len` bytes at `offset` would
    /// change only in part, so the write itself cannot fail halfway.
    /// Chunks the write covers whole are not loaded: their old bytes die.
    pub(crate) fn prepare_write(&self, offset: u64, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = offset.saturating_add(len as u64);
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        for (&idx, chunk) in self.chunks.range(first..=last) {
            if chunk.is_owned() || chunk.is_loaded() {
                continue;
            }
            let start = idx * CHUNK;
            let covers = offset <= start && end >= start + chunk.len() as u64;
            if !covers {
                chunk.bytes()?;
            }
        }
        Ok(())
    }

    /// Loads the chunk that `set_len(len)` would cut in part.
    pub(crate) fn prepare_set_len(&self, len: u64) -> Result<()> {
        if len >= self.size {
            return Ok(());
        }
        if let Some(chunk) = self.chunks.get(&(len / CHUNK))
            && (len % CHUNK) as usize > 0
            && chunk.len() > (len % CHUNK) as usize
        {
            chunk.bytes()?;
        }
        Ok(())
    }

    /// How many more bytes would be held after writing `len` bytes at
    /// `offset` (the caller checks limits before calling `write_at`).
    pub(crate) fn held_growth(&self, offset: u64, len: usize) -> u64 {
        if len == 0 {
            return 0;
        }
        let end = offset + len as u64;
        let mut growth = 0;
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        let mut idx = first;
        while idx <= last {
            let want_end = (end - idx * CHUNK).min(CHUNK);
            let have = self.chunks.get(&idx).map_or(0, |c| c.len() as u64);
            growth += want_end.saturating_sub(have);
            idx += 1;
        }
        growth
    }

    /// Writes `data` at `offset`, extending the file if needed. Returns the
    /// number of bytes newly allocated (copies of shared chunks included),
    /// which is what this write cost in memory. Fails, changing nothing,
    /// only if a lazily loaded chunk it must keep part of cannot be loaded.
    pub(crate) fn write_at(&mut self, data: &[u8], offset: u64) -> Result<u64> {
        if data.is_empty() {
            return Ok(0);
        }
        self.prepare_write(offset, data.len())?;
        let end = offset + data.len() as u64;
        let mut allocated = 0u64;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let idx = pos / CHUNK;
            let in_chunk = (pos - idx * CHUNK) as usize;
            let take = (CHUNK_SIZE - in_chunk).min(data.len() - done);
            let piece = &data[done..done + take];
            match self.chunks.get_mut(&idx) {
                // Overwriting a whole borrowed chunk: never load its bytes.
                Some(chunk) if !chunk.is_owned() && in_chunk == 0 && take >= chunk.len() => {
                    let old = chunk.len() as u64;
                    *chunk = Chunk::new(piece.to_vec());
                    allocated += take as u64;
                    self.held += take as u64 - old;
                }
                Some(chunk) => {
                    let shared = chunk.is_shared();
                    let bytes = chunk.bytes_mut()?;
                    if shared {
                        allocated += bytes.len() as u64;
                    }
                    if bytes.len() < in_chunk + take {
                        let grow = (in_chunk + take - bytes.len()) as u64;
                        allocated += grow;
                        self.held += grow;
                        bytes.resize(in_chunk + take, 0);
                    }
                    bytes[in_chunk..in_chunk + take].copy_from_slice(piece);
                }
                None => {
                    let mut bytes = Vec::with_capacity(in_chunk + take);
                    bytes.resize(in_chunk, 0);
                    bytes.extend_from_slice(piece);
                    allocated += bytes.len() as u64;
                    self.held += bytes.len() as u64;
                    self.chunks.insert(idx, Chunk::new(bytes));
                }
            }
            done += take;
        }
        self.size = self.size.max(end);
        Ok(allocated)
    }

    /// How many fewer bytes would be held after `set_len(len)`.
    pub(crate) fn held_shrink(&self, len: u64) -> u64 {
        if len >= self.size {
            return 0;
        }
        let first = len / CHUNK;
        let mut freed = 0;
        for (&idx, chunk) in self.chunks.range(first..) {
            let keep = len.saturating_sub(idx * CHUNK).min(chunk.len() as u64);
            freed += chunk.len() as u64 - keep;
        }
        freed
    }

    /// Sets the logical size. Growing adds a hole; shrinking drops chunks.
    /// Fails, changing nothing, only if the chunk it cuts cannot be loaded.
    pub(crate) fn set_len(&mut self, len: u64) -> Result<()> {
        self.prepare_set_len(len)?;
        if len < self.size {
            let freed = self.held_shrink(len);
            let first = len / CHUNK;
            let doomed: Vec<u64> = self
                .chunks
                .range(first..)
                .map(|(&i, _)| i)
                .filter(|&i| i * CHUNK >= len)
                .collect();
            for i in doomed {
                self.chunks.remove(&i);
            }
            if let Some(chunk) = self.chunks.get_mut(&first) {
                let keep = (len - first * CHUNK) as usize;
                if chunk.len() > keep {
                    chunk.bytes_mut()?.truncate(keep);
                }
            }
            self.held -= freed;
        }
        self.size = len;
        Ok(())
    }

    /// The content hash: size plus the address of every chunk that does not
    /// read as zeros. Independent of chunk layout (see `blob`).
    pub(crate) fn hash_into(&self, h: &mut blake3::Hasher) {
        h.update(&self.size.to_le_bytes());
        for (&idx, chunk) in self.chunks.iter() {
            if let Some(addr) = chunk.addr() {
                h.update(&idx.to_le_bytes());
                h.update(addr.as_bytes());
            }
        }
    }

    /// Invariant check; returns a description of the first violation.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (&idx, chunk) in self.chunks.iter() {
            if chunk.len() > CHUNK_SIZE {
                return Err(format!("chunk {idx} holds {} bytes", chunk.len()));
            }
            let start = idx.checked_mul(CHUNK).ok_or("chunk index overflows")?;
            if start + chunk.len() as u64 > self.size {
                return Err(format!("chunk {idx} reaches past size {}", self.size));
            }
        }
        let held: u64 = self.chunks.values().map(|c| c.len() as u64).sum();
        if held != self.held {
            return Err(format!("held {} but chunks hold {held}", self.held));
        }
        Ok(())
    }

    /// Whether a reader sees the same bytes in both, however they are
    /// stored (as the root hash sees them). Cheap when they share chunks.
    pub(crate) fn same_bytes(&self, other: &Content) -> bool {
        if self.ptr_eq(other) || self == other {
            return true;
        }
        if self.size != other.size {
            return false;
        }
        let visible = |c: &Content| {
            c.chunks
                .iter()
                .filter(|(_, ch)| !ch.reads_zero())
                .map(|(i, ch)| (*i, ch.clone()))
                .collect::<Vec<_>>()
        };
        let (a, b) = (visible(self), visible(other));
        a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|((i, x), (j, y))| i == j && x.same_bytes(y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(c: &Content) -> Vec<u8> {
        let mut v = vec![0xAA; c.size() as usize];
        assert_eq!(c.read_at(&mut v, 0).unwrap(), c.size() as usize);
        v
    }

    #[test]
    fn write_read_holes() {
        let mut c = Content::default();
        c.write_at(b"hello", 0).unwrap();
        assert_eq!(read_all(&c), b"hello");
        c.write_at(b"Z", 200_000).unwrap();
        let all = read_all(&c);
        assert_eq!(all.len(), 200_001);
        assert_eq!(&all[..5], b"hello");
        assert!(all[5..200_000].iter().all(|&b| b == 0));
        assert_eq!(all[200_000], b'Z');
        // Chunk 1 is a hole: only chunks 0 and 3 are stored.
        assert_eq!(c.chunks.len(), 2);
        assert_eq!(c.held(), 5 + (200_001 - 3 * CHUNK) as usize as u64);
        c.check().unwrap();
    }

    #[test]
    fn huge_offset_costs_one_short_chunk() {
        let mut c = Content::default();
        let alloc = c.write_at(b"x", 1 << 40).unwrap();
        assert_eq!(c.size(), (1 << 40) + 1);
        assert_eq!(c.chunks.len(), 1);
        assert_eq!(alloc, 1);
        let mut b = [7u8; 4];
        assert_eq!(c.read_at(&mut b, (1 << 40) - 2).unwrap(), 3);
        assert_eq!(&b[..3], &[0, 0, b'x']);
    }

    #[test]
    fn cow_copies_one_chunk() {
        let mut a = Content::default();
        a.write_at(&vec![1u8; 4 * CHUNK_SIZE], 0).unwrap();
        let base = a.clone();
        let alloc = a.write_at(&[9], 5).unwrap();
        assert_eq!(alloc, CHUNK);
        let alloc = a.write_at(&[9], 6).unwrap();
        assert_eq!(alloc, 0, "second write into the copied chunk is in place");
        assert_eq!(read_all(&base), vec![1u8; 4 * CHUNK_SIZE]);
        let all = read_all(&a);
        assert_eq!(&all[4..8], &[1, 9, 9, 1]);
    }

    #[test]
    fn set_len_shrink_and_grow() {
        let mut c = Content::default();
        c.write_at(&vec![3u8; 3 * CHUNK_SIZE], 0).unwrap();
        assert_eq!(c.held_shrink(10), 3 * CHUNK - 10);
        c.set_len(10).unwrap();
        assert_eq!(c.held(), 10);
        c.set_len(CHUNK * 2).unwrap();
        let all = read_all(&c);
        assert_eq!(&all[..10], &[3u8; 10]);
        assert!(all[10..].iter().all(|&b| b == 0));
        c.check().unwrap();
    }

    #[test]
    fn hash_ignores_layout() {
        let mut a = Content::default();
        a.write_at(b"abc", 0).unwrap();
        a.set_len(CHUNK * 3).unwrap();
        let mut b = Content::default();
        b.write_at(b"abc", 0).unwrap();
        b.write_at(&vec![0; 2 * CHUNK_SIZE], CHUNK).unwrap();
        b.set_len(CHUNK * 3).unwrap();
        let (mut ha, mut hb) = (blake3::Hasher::new(), blake3::Hasher::new());
        a.hash_into(&mut ha);
        b.hash_into(&mut hb);
        assert_eq!(ha.finalize(), hb.finalize());
        assert!(a.same_bytes(&b));
        assert_ne!(a, b, "stored zeros are not a hole");
    }
}
