//! Chunks: immutable shared bytes with a lazily computed content address.
//!
//! A chunk's address is the blake3 hash of its bytes with trailing zeros
//! removed. Trailing zeros are implied by the chunk's span in its file, so
//! two chunks that read the same (a short chunk and the same chunk padded
//! with zeros, or an all-zero chunk and a hole) have the same address. This
//! makes the address, and everything hashed from it, a function of what a
//! reader sees, not of how the bytes happen to be stored.

use std::sync::{Arc, OnceLock};

/// The bytes of one chunk and their memoized address.
#[derive(Debug)]
pub(crate) struct ChunkData {
    bytes: Vec<u8>,
    /// `None` inside means the chunk reads as all zeros.
    addr: OnceLock<Option<blake3::Hash>>,
}

impl Clone for ChunkData {
    fn clone(&self) -> Self {
        // A clone is about to be written: its address would be stale.
        ChunkData::new(self.bytes.clone())
    }
}

/// A shared chunk. Writers go through [`Chunk::bytes_mut`], which copies the
/// bytes only if another tree still holds them.
#[derive(Debug, Clone)]
pub(crate) struct Chunk(Arc<ChunkData>);

impl Chunk {
    pub(crate) fn new(bytes: Vec<u8>) -> Chunk {
        Chunk(Arc::new(ChunkData::new(bytes)))
    }

    /// A chunk whose address is already known (the caller verified it).
    pub(crate) fn with_addr(bytes: Vec<u8>, addr: Option<blake3::Hash>) -> Chunk {
        let data = ChunkData::new(bytes);
        let _ = data.addr.set(addr);
        Chunk(Arc::new(data))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.0.bytes.len()
    }

    /// Mutable bytes, copied first if shared. Forgets the memoized address.
    pub(crate) fn bytes_mut(&mut self) -> &mut Vec<u8> {
        let data = Arc::make_mut(&mut self.0);
        data.addr = OnceLock::new();
        &mut data.bytes
    }

    /// Whether another tree still holds these bytes (a write would copy).
    pub(crate) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    /// Whether both handles share one allocation.
    pub(crate) fn ptr_eq(&self, other: &Chunk) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The content address: blake3 of the bytes without trailing zeros, or
    /// `None` when the chunk reads as zeros. Computed once.
    pub(crate) fn addr(&self) -> Option<blake3::Hash> {
        *self.0.addr.get_or_init(|| {
            let t = trimmed(&self.0.bytes);
            if t.is_empty() {
                None
            } else {
                Some(blake3::hash(t))
            }
        })
    }

    /// The bytes without trailing zeros: what a checkpoint stores.
    pub(crate) fn trimmed(&self) -> &[u8] {
        trimmed(&self.0.bytes)
    }
}

impl PartialEq for Chunk {
    fn eq(&self, other: &Chunk) -> bool {
        self.ptr_eq(other) || self.trimmed() == other.trimmed()
    }
}
impl Eq for Chunk {}

impl ChunkData {
    fn new(bytes: Vec<u8>) -> ChunkData {
        ChunkData {
            bytes,
            addr: OnceLock::new(),
        }
    }
}

/// `bytes` without its trailing zero bytes.
pub(crate) fn trimmed(bytes: &[u8]) -> &[u8] {
    // Compare eight bytes at a time: this runs over every chunk that is hashed.
    let mut end = bytes.len();
    while end >= 8 {
        let word: [u8; 8] = match bytes[end - 8..end].try_into() {
            Ok(w) => w,
            Err(_) => break,
        };
        if u64::from_ne_bytes(word) != 0 {
            break;
        }
        end -= 8;
    }
    while end > 0 && bytes[end - 1] == 0 {
        end -= 1;
    }
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_ignores_trailing_zeros() {
        let a = Chunk::new(b"abc".to_vec());
        let b = Chunk::new(b"abc\0\0\0\0\0\0\0\0\0\0".to_vec());
        assert_eq!(a.addr(), b.addr());
        assert_eq!(a.addr(), Some(blake3::hash(b"abc")));
        assert_eq!(Chunk::new(vec![0; 100]).addr(), None);
        assert_eq!(Chunk::new(vec![]).addr(), None);
        assert_eq!(trimmed(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), &[1]);
        assert_eq!(trimmed(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).len(), 10);
    }

    #[test]
    fn write_copies_only_when_shared() {
        let mut a = Chunk::new(vec![1, 2, 3]);
        let _ = a.addr();
        let b = a.clone();
        a.bytes_mut()[0] = 9;
        assert_eq!(b.bytes(), &[1, 2, 3]);
        assert_eq!(a.bytes(), &[9, 2, 3]);
        assert_eq!(a.addr(), Some(blake3::hash(&[9, 2, 3])));
        assert_eq!(b.addr(), Some(blake3::hash(&[1, 2, 3])));
    }
}
