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

use crate::chunk::Chunk;
use crate::chunkmap::ChunkMap;
use crate::copy;
use crate::error::{ErrorKind, Result};

/// Bytes per chunk. 64 KiB keeps a copy-on-write copy cheap (a few µs) while
/// a 1 GiB file is still only 16,384 map entries.
pub const CHUNK_SIZE: usize = 64 * 1024;
const CHUNK: u64 = CHUNK_SIZE as u64;

/// Bytes the host sets aside for each stored chunk beyond its data: the
/// shared header (`Arc`, length, memoized address, origin), its slot in
/// the file's chunk map and the allocator's own header. Measured at about
/// 150 bytes; rounded up.
pub(crate) const CHUNK_OVERHEAD: u64 = 192;

/// The capacity an owned chunk of `len` bytes may have: `len` rounded up
/// to an eighth of its power of two (at least 16 bytes), at most a chunk.
/// Growing a chunk in place reserves exactly this much, so filling a chunk
/// a byte at a time reallocates a few dozen times, and what the host
/// allocates never exceeds what is charged for it.
pub(crate) fn alloc_len(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let granule = (len.next_power_of_two() / 8).max(16);
    len.div_ceil(granule)
        .saturating_mul(granule)
        .min(CHUNK_SIZE)
}

/// What one stored chunk of `len` bytes costs toward the byte quotas.
pub(crate) fn chunk_charge(len: usize) -> u64 {
    alloc_len(len) as u64 + CHUNK_OVERHEAD
}

/// The start of chunk `idx` and the end of its span (saturating: the last
/// chunk of the offset space ends at `u64::MAX`, which no file passes).
fn span(idx: u64) -> (u64, u64) {
    let start = idx.saturating_mul(CHUNK);
    (start, start.saturating_add(CHUNK))
}

/// What a change to a file costs or frees: bytes held (as `du` counts),
/// bytes charged toward `max_bytes` (allocation plus per-chunk overhead),
/// and the part of the charge in chunks of a given origin (a sandbox's
/// private bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cost {
    pub held: u64,
    pub charge: u64,
    pub private: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Content {
    size: u64,
    /// Sum of stored chunk lengths, kept up to date so `stat` is O(1).
    held: u64,
    /// Sum of `chunk_charge` over stored chunks.
    charge: u64,
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

    /// What the stored chunks cost toward `max_bytes` (see `chunk_charge`).
    pub(crate) fn charge(&self) -> u64 {
        self.charge
    }

    /// The part of `charge` in chunks made by sandbox `origin`.
    pub(crate) fn private_charge(&self, origin: u64) -> u64 {
        // Most files hold one chunk: no iterator for them (every remove
        // asks this).
        if let ChunkMap::One(_, c) = &self.chunks {
            return if c.origin() == origin {
                chunk_charge(c.len())
            } else {
                0
            };
        }
        self.chunks
            .values()
            .filter(|c| c.origin() == origin)
            .map(|c| chunk_charge(c.len()))
            .sum()
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

    /// Builds content from chunks that were validated by the caller (each
    /// at most a chunk long, so the sums cannot overflow: a map holds
    /// fewer than 2^48 chunks).
    pub(crate) fn from_parts(size: u64, chunks: ChunkMap) -> Content {
        let held = chunks.values().map(|c| c.len() as u64).sum();
        let charge = chunks.values().map(|c| chunk_charge(c.len())).sum();
        Content {
            size,
            held,
            charge,
            chunks,
        }
    }

    /// Copies bytes at `offset` into `buf`; returns how many (0 at or past
    /// EOF). Fails only when a lazily loaded chunk cannot be fetched or
    /// verified; `buf` may then hold part of the data.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        // `n` fits in `buf`, and `offset + n <= size`: no sum below overflows.
        let n = usize::try_from(self.size - offset).map_or(buf.len(), |left| left.min(buf.len()));
        let buf = &mut buf[..n];
        let mut done = 0usize;
        let first = offset / CHUNK;
        let end = offset + n as u64;
        let last = (end - 1) / CHUNK;
        // Walk the stored chunks in range once; fill gaps with zeros.
        for (&idx, chunk) in self.chunks.range(first..=last) {
            let (start, stop) = span(idx);
            let pos = offset + done as u64;
            if start > pos {
                let gap = (start - pos) as usize;
                buf[done..done + gap].fill(0);
                done += gap;
            }
            let pos = offset + done as u64;
            // Both below CHUNK: `pos` lies in this chunk's span.
            let in_chunk = (pos - start) as usize;
            let want = (stop.min(end) - pos) as usize;
            // Stored bytes may stop short of the chunk's length: zeros follow.
            let bytes = chunk.bytes()?;
            // `in_chunk` may lie past the stored bytes (a short chunk read
            // far into its span): then everything here reads as zeros.
            let have = bytes.len().saturating_sub(in_chunk).min(want);
            if have > 0 {
                copy::copy(
                    &mut buf[done..done + have],
                    &bytes[in_chunk..in_chunk + have],
                );
            }
            buf[done + have..done + want].fill(0);
            done += want;
        }
        buf[done..].fill(0);
        Ok(n)
    }

    /// Appends the whole content to `out` (which the caller has sized for
    /// it): what [`Content::read_at`] of every byte reads, without zeroing
    /// what is copied over anyway. Fails as `read_at` does.
    pub(crate) fn read_into(&self, out: &mut Vec<u8>) -> Result<()> {
        if self.size == 0 {
            return Ok(());
        }
        let base = out.len();
        // Fits: the caller holds `size` bytes of capacity.
        let size = self.size as usize;
        for (&idx, chunk) in self.chunks.iter() {
            let (start, _) = span(idx);
            if start >= self.size {
                break;
            }
            let start = start as usize;
            if out.len() - base < start {
                out.resize(base + start, 0);
            }
            let bytes = chunk.bytes()?;
            let have = bytes.len().min(size - start);
            copy::extend(out, &bytes[..have]);
        }
        out.resize(base + size, 0);
        Ok(())
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
            let (start, _) = span(idx);
            let covers = offset <= start && end >= start.saturating_add(chunk.len() as u64);
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

    /// What writing `len` bytes at `offset` would add, for sandbox
    /// `origin` (a write takes every chunk it touches as `origin`'s). The
    /// caller checks limits, and that `offset + len` does not overflow,
    /// before calling `write_at`. A write never frees anything.
    pub(crate) fn write_cost(&self, offset: u64, len: usize, origin: u64) -> Cost {
        let mut cost = Cost::default();
        if len == 0 {
            return cost;
        }
        let end = offset.saturating_add(len as u64);
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        for idx in first..=last {
            let (start, _) = span(idx);
            let want_end = (end - start).min(CHUNK) as usize;
            let old = self.chunks.get(&idx);
            let old_len = old.map_or(0, Chunk::len);
            let new_len = old_len.max(want_end);
            cost.held += (new_len - old_len) as u64;
            let old_charge = old.map_or(0, |c| chunk_charge(c.len()));
            cost.charge += chunk_charge(new_len) - old_charge;
            cost.private += match old {
                Some(c) if c.origin() == origin => chunk_charge(new_len) - old_charge,
                _ => chunk_charge(new_len),
            };
        }
        cost
    }

    /// Writes `data` at `offset` as sandbox `origin`, extending the file if
    /// needed. Returns the number of bytes newly allocated (copies of
    /// shared chunks included). Fails, changing nothing, if `offset + len`
    /// overflows or a lazily loaded chunk it must keep part of cannot be
    /// loaded.
    #[cfg(test)] // the tree prepares first (`Tree::write`), then writes prepared
    pub(crate) fn write_at(&mut self, data: &[u8], offset: u64, origin: u64) -> Result<u64> {
        if data.is_empty() {
            return Ok(0);
        }
        if offset.checked_add(data.len() as u64).is_none() {
            return Err(ErrorKind::FileTooLarge.into());
        }
        self.prepare_write(offset, data.len())?;
        self.write_at_prepared(data, offset, origin)
    }

    /// [`Content::write_at`] once [`Content::prepare_write`] has succeeded
    /// for the same span (nothing it needs is left to load).
    pub(crate) fn write_at_prepared(
        &mut self,
        data: &[u8],
        offset: u64,
        origin: u64,
    ) -> Result<u64> {
        if data.is_empty() {
            return Ok(0);
        }
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return Err(ErrorKind::FileTooLarge.into());
        };
        let mut allocated = 0u64;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let idx = pos / CHUNK;
            let in_chunk = (pos % CHUNK) as usize;
            let take = (CHUNK_SIZE - in_chunk).min(data.len() - done);
            let piece = &data[done..done + take];
            let need = in_chunk + take;
            match self.chunks.get_mut(&idx) {
                // Overwriting a whole borrowed chunk: never load its bytes.
                Some(chunk) if !chunk.is_owned() && in_chunk == 0 && take >= chunk.len() => {
                    let old = chunk.len();
                    *chunk = Chunk::owned(copy::to_vec(piece), origin);
                    allocated += take as u64;
                    self.held += (take - old) as u64;
                    self.charge += chunk_charge(take) - chunk_charge(old);
                }
                Some(chunk) => {
                    let shared = chunk.is_shared();
                    let old = chunk.len();
                    let bytes = chunk.bytes_mut(origin)?;
                    if shared {
                        allocated += bytes.len() as u64;
                    }
                    if bytes.len() < need {
                        let grow = need - bytes.len();
                        if bytes.capacity() < need {
                            // Exactly the charged size, never Vec's doubling.
                            bytes.reserve_exact(alloc_len(need) - bytes.len());
                        }
                        allocated += grow as u64;
                        self.held += grow as u64;
                        self.charge += chunk_charge(need) - chunk_charge(old);
                        bytes.resize(need, 0);
                    }
                    copy::copy(&mut bytes[in_chunk..need], piece);
                }
                None => {
                    let mut bytes = Vec::with_capacity(need);
                    bytes.resize(in_chunk, 0);
                    copy::extend(&mut bytes, piece);
                    allocated += need as u64;
                    self.held += need as u64;
                    self.charge += chunk_charge(need);
                    self.chunks.insert(idx, Chunk::owned(bytes, origin));
                }
            }
            done += take;
        }
        self.size = self.size.max(end);
        Ok(allocated)
    }

    /// What `set_len(len)` by sandbox `origin` would free (`held`,
    /// `charge`, and `private`: `origin`'s chunks dropped or cut) and add
    /// (`private` only: cutting a chunk `origin` does not own copies it).
    pub(crate) fn shrink_cost(&self, len: u64, origin: u64) -> (Cost, u64) {
        let mut freed = Cost::default();
        let mut added = 0;
        if len >= self.size {
            return (freed, added);
        }
        let first = len / CHUNK;
        for (&idx, chunk) in self.chunks.range(first..) {
            let (start, _) = span(idx);
            let keep = len.saturating_sub(start).min(chunk.len() as u64) as usize;
            freed.held += (chunk.len() - keep) as u64;
            let old_charge = chunk_charge(chunk.len());
            let new_charge = if keep == 0 { 0 } else { chunk_charge(keep) };
            freed.charge += old_charge - new_charge;
            if chunk.origin() == origin {
                freed.private += old_charge - new_charge;
            } else if keep > 0 && keep < chunk.len() {
                added += new_charge;
            }
        }
        (freed, added)
    }

    /// How many fewer bytes would be held after `set_len(len)`.
    #[cfg(test)]
    pub(crate) fn held_shrink(&self, len: u64) -> u64 {
        self.shrink_cost(len, 0).0.held
    }

    /// Sets the logical size as sandbox `origin`. Growing adds a hole;
    /// shrinking drops chunks. Fails, changing nothing, only if the chunk
    /// it cuts cannot be loaded.
    pub(crate) fn set_len(&mut self, len: u64, origin: u64) -> Result<()> {
        self.prepare_set_len(len)?;
        if len < self.size {
            let (freed, _) = self.shrink_cost(len, origin);
            let first = len / CHUNK;
            let doomed: Vec<u64> = self
                .chunks
                .range(first..)
                .map(|(&i, _)| i)
                .filter(|&i| span(i).0 >= len)
                .collect();
            for i in doomed {
                self.chunks.remove(&i);
            }
            if let Some(chunk) = self.chunks.get_mut(&first) {
                let keep = (len - span(first).0) as usize;
                if chunk.len() > keep {
                    let bytes = chunk.bytes_mut(origin)?;
                    bytes.truncate(keep);
                    bytes.shrink_to(alloc_len(keep));
                }
            }
            self.held -= freed.held;
            self.charge -= freed.charge;
        }
        self.size = len;
        Ok(())
    }

    /// The content hash: size plus the address of every chunk that does not
    /// read as zeros. Independent of chunk layout (see `chunk`).
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
            if start
                .checked_add(chunk.len() as u64)
                .is_none_or(|e| e > self.size)
            {
                return Err(format!("chunk {idx} reaches past size {}", self.size));
            }
        }
        let held: u64 = self.chunks.values().map(|c| c.len() as u64).sum();
        if held != self.held {
            return Err(format!("held {} but chunks hold {held}", self.held));
        }
        let charge: u64 = self.chunks.values().map(|c| chunk_charge(c.len())).sum();
        if charge != self.charge {
            return Err(format!("charge {} but chunks cost {charge}", self.charge));
        }
        for (&idx, chunk) in self.chunks.iter() {
            // What the host allocated must not exceed what is charged.
            if chunk.capacity() > alloc_len(chunk.len()) {
                return Err(format!(
                    "chunk {idx} allocates {} bytes for {}",
                    chunk.capacity(),
                    chunk.len()
                ));
            }
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
        c.write_at(b"hello", 0, 1).unwrap();
        assert_eq!(read_all(&c), b"hello");
        c.write_at(b"Z", 200_000, 1).unwrap();
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
        let alloc = c.write_at(b"x", 1 << 40, 1).unwrap();
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
        a.write_at(&vec![1u8; 4 * CHUNK_SIZE], 0, 1).unwrap();
        let base = a.clone();
        let alloc = a.write_at(&[9], 5, 1).unwrap();
        assert_eq!(alloc, CHUNK);
        let alloc = a.write_at(&[9], 6, 1).unwrap();
        assert_eq!(alloc, 0, "second write into the copied chunk is in place");
        assert_eq!(read_all(&base), vec![1u8; 4 * CHUNK_SIZE]);
        let all = read_all(&a);
        assert_eq!(&all[4..8], &[1, 9, 9, 1]);
    }

    #[test]
    fn set_len_shrink_and_grow() {
        let mut c = Content::default();
        c.write_at(&vec![3u8; 3 * CHUNK_SIZE], 0, 1).unwrap();
        assert_eq!(c.held_shrink(10), 3 * CHUNK - 10);
        c.set_len(10, 1).unwrap();
        assert_eq!(c.held(), 10);
        c.set_len(CHUNK * 2, 1).unwrap();
        let all = read_all(&c);
        assert_eq!(&all[..10], &[3u8; 10]);
        assert!(all[10..].iter().all(|&b| b == 0));
        c.check().unwrap();
    }

    #[test]
    fn hash_ignores_layout() {
        let mut a = Content::default();
        a.write_at(b"abc", 0, 1).unwrap();
        a.set_len(CHUNK * 3, 1).unwrap();
        let mut b = Content::default();
        b.write_at(b"abc", 0, 1).unwrap();
        b.write_at(&vec![0; 2 * CHUNK_SIZE], CHUNK, 1).unwrap();
        b.set_len(CHUNK * 3, 1).unwrap();
        let (mut ha, mut hb) = (blake3::Hasher::new(), blake3::Hasher::new());
        a.hash_into(&mut ha);
        b.hash_into(&mut hb);
        assert_eq!(ha.finalize(), hb.finalize());
        assert!(a.same_bytes(&b));
        assert_ne!(a, b, "stored zeros are not a hole");
    }
}
