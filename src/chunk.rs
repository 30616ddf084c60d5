//! Chunks: immutable shared bytes with a lazily computed content address.
//!
//! A chunk's address is the blake3 hash of its bytes with trailing zeros
//! removed. Trailing zeros are implied by the chunk's span in its file, so
//! two chunks that read the same (a short chunk and the same chunk padded
//! with zeros, or an all-zero chunk and a hole) have the same address. This
//! makes the address, and everything hashed from it, a function of what a
//! reader sees, not of how the bytes happen to be stored.
//!
//! A chunk's bytes live in one of three places:
//! - owned by the chunk (everything a sandbox writes): in the chunk's own
//!   allocation right after its header when made from bytes in hand, or in
//!   a vector of their own once a write has grown the chunk;
//! - in a shared [`Blob`]: trimmed bytes known by address, which many chunks
//!   (in many files, of different logical lengths) can use. A blob is either
//!   loaded already (a fully read checkpoint) or fetched from a
//!   [`ChunkSource`] on first use and verified against its address then
//!   (a lazily opened checkpoint today, a blob store later);
//! - nowhere: a chunk of zeros that only has a length.
//!
//! So reading a chunk can fail (a source's I/O error, or bytes that do not
//! match their address); the failure goes to whoever reads, and the chunk
//! stays unloaded so a later read tries again. Wrong bytes are never
//! returned.

use std::fmt;
use std::sync::{Arc, OnceLock};

use triomphe::HeaderSlice;

use crate::content::alloc_len;
use crate::error::{Error, ErrorKind, Result};

/// Where lazily loaded chunk bytes come from: a checkpoint file, later a
/// blob store. A source returns the stored bytes (trailing zeros removed);
/// [`Blob`] checks them against the address, so a source need not be
/// trusted and should not verify twice.
pub(crate) trait ChunkSource: Send + Sync + fmt::Debug {
    /// The trimmed bytes of the chunk with address `addr`; `key` is the
    /// source's own locator that it handed out when the blob was made
    /// (an index into a checkpoint's chunk table, say).
    fn fetch(&self, key: u64, addr: &blake3::Hash) -> Result<Vec<u8>>;
}

/// Trimmed bytes with a known address, possibly not loaded yet.
pub(crate) struct Blob {
    addr: blake3::Hash,
    /// Length of the trimmed bytes (what the source promised).
    len: u32,
    key: u64,
    source: Option<Arc<dyn ChunkSource>>,
    bytes: OnceLock<Vec<u8>>,
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blob")
            .field("addr", &self.addr.to_hex())
            .field("len", &self.len)
            .field("loaded", &self.bytes.get().is_some())
            .finish()
    }
}

impl Blob {
    /// A blob whose bytes are in hand and already verified by the caller
    /// (`addr` must be the hash of `bytes`, which have no trailing zeros).
    pub(crate) fn loaded(bytes: Vec<u8>, addr: blake3::Hash) -> Blob {
        let cell = OnceLock::new();
        let len = bytes.len() as u32;
        let _ = cell.set(bytes);
        Blob {
            addr,
            len,
            key: 0,
            source: None,
            bytes: cell,
        }
    }

    /// A blob fetched from `source` on first use.
    pub(crate) fn lazy(
        addr: blake3::Hash,
        len: u32,
        key: u64,
        source: Arc<dyn ChunkSource>,
    ) -> Blob {
        Blob {
            addr,
            len,
            key,
            source: Some(source),
            bytes: OnceLock::new(),
        }
    }

    pub(crate) fn addr(&self) -> blake3::Hash {
        self.addr
    }

    /// Length of the trimmed bytes, known without loading them.
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    pub(crate) fn is_loaded(&self) -> bool {
        self.bytes.get().is_some()
    }

    /// The bytes, fetched and verified on first use.
    pub(crate) fn get(&self) -> Result<&[u8]> {
        if let Some(b) = self.bytes.get() {
            return Ok(b);
        }
        let Some(source) = &self.source else {
            return Err(Error::with(
                ErrorKind::Io,
                "chunk has no bytes and no source",
            ));
        };
        let bytes = source.fetch(self.key, &self.addr)?;
        if bytes.len() != self.len as usize
            || bytes.last() == Some(&0)
            || blake3::hash(&bytes) != self.addr
        {
            return Err(Error::with(
                ErrorKind::Io,
                format!(
                    "chunk {} failed verification (corrupt checkpoint or store)",
                    self.addr.to_hex()
                ),
            ));
        }
        // Another thread may have won the race with the same verified bytes.
        let _ = self.bytes.set(bytes);
        match self.bytes.get() {
            Some(b) => Ok(b),
            None => Err(Error::with(ErrorKind::Io, "chunk vanished after loading")),
        }
    }
}

/// Where a chunk's bytes are. `Fixed` bytes sit in the chunk's own
/// allocation, after its header (see [`Chunk`]); the other forms leave
/// that slice empty.
#[derive(Debug)]
enum Store {
    /// Owned, in the chunk's allocation: length fixed at creation.
    Fixed,
    /// Owned, in a vector of their own that a write may grow.
    Owned(Vec<u8>),
    Shared(Arc<Blob>),
    Zeros,
}

/// The header of one chunk: where its bytes are and their memoized address.
#[derive(Debug)]
struct ChunkData {
    store: Store,
    /// Logical length for `Shared` and `Zeros` (at least the blob's length;
    /// the rest reads as zeros). `Fixed` and `Owned` use their bytes' length.
    len: u32,
    /// `None` inside means the chunk reads as all zeros.
    addr: OnceLock<Option<blake3::Hash>>,
    /// The sandbox that made these bytes (0: none, e.g. a loaded
    /// checkpoint). A sandbox's private bytes are its chunks of its own
    /// origin: whatever its base snapshot holds came from elsewhere.
    origin: u64,
}

impl ChunkData {
    fn new(store: Store, len: u32, origin: u64) -> ChunkData {
        ChunkData {
            store,
            len,
            addr: OnceLock::new(),
            origin,
        }
    }
}

/// One allocation: the header, then (for `Fixed`) the bytes. `triomphe`'s
/// `Arc` has no weak count, so proving a chunk unshared is a load.
type Body = triomphe::Arc<HeaderSlice<ChunkData, [u8]>>;

/// A shared chunk. Writers go through [`Chunk::bytes_mut`] and
/// [`Chunk::grow`], which copy the bytes only if another tree still holds
/// them. A chunk made from bytes in hand ([`Chunk::fixed`]) is a single
/// allocation holding header and bytes; a chunk that a write extends moves
/// its bytes into a vector of their own, so a file filled by small appends
/// grows in amortized steps rather than by a copy per write.
#[derive(Debug, Clone)]
pub(crate) struct Chunk(Body);

impl Chunk {
    #[cfg(test)]
    pub(crate) fn new(bytes: Vec<u8>) -> Chunk {
        Chunk::owned(bytes, 0)
    }

    fn make(data: ChunkData, bytes: &[u8]) -> Chunk {
        Chunk(triomphe::Arc::from_header_and_slice(data, bytes))
    }

    /// A chunk owning `bytes`, made by the sandbox `origin` (the vector is
    /// kept as it is: a later write may grow it in place).
    pub(crate) fn owned(bytes: Vec<u8>, origin: u64) -> Chunk {
        Chunk::make(ChunkData::new(Store::Owned(bytes), 0, origin), &[])
    }

    /// A chunk holding a copy of `bytes` (at most a chunk long), made by
    /// the sandbox `origin`: one allocation for header and bytes, no
    /// zero-fill before the copy.
    pub(crate) fn fixed(bytes: &[u8], origin: u64) -> Chunk {
        Chunk::make(ChunkData::new(Store::Fixed, 0, origin), bytes)
    }

    /// A private copy of `stored` (a chunk's stored bytes) as a chunk of
    /// `len` bytes, the rest zeros, made by `origin`. Capacity is `len`.
    fn copy_of(stored: &[u8], len: usize, origin: u64) -> Chunk {
        if stored.len() >= len {
            return Chunk::fixed(&stored[..len], origin);
        }
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(stored);
        v.resize(len, 0);
        Chunk::owned(v, origin)
    }

    fn data(&self) -> &ChunkData {
        &self.0.header
    }

    /// The sandbox that made this chunk's bytes (0 for none).
    pub(crate) fn origin(&self) -> u64 {
        self.data().origin
    }

    /// Bytes the host allocated for an owned chunk's bytes (0 otherwise).
    pub(crate) fn capacity(&self) -> usize {
        match &self.data().store {
            Store::Fixed => self.0.slice.len(),
            Store::Owned(v) => v.capacity(),
            _ => 0,
        }
    }

    /// A chunk of `len` bytes reading as `blob`'s bytes and then zeros.
    /// The caller checks `blob.len() <= len`.
    pub(crate) fn from_blob(blob: Arc<Blob>, len: u32) -> Chunk {
        let addr = OnceLock::new();
        let _ = addr.set((blob.len() > 0).then(|| blob.addr()));
        let data = ChunkData {
            store: Store::Shared(blob),
            len,
            addr,
            origin: 0,
        };
        Chunk::make(data, &[])
    }

    /// A chunk of `len` zero bytes that stores nothing but its length.
    pub(crate) fn zeros(len: u32) -> Chunk {
        let addr = OnceLock::new();
        let _ = addr.set(None);
        let data = ChunkData {
            store: Store::Zeros,
            len,
            addr,
            origin: 0,
        };
        Chunk::make(data, &[])
    }

    /// The stored bytes: at most `len()`, the rest reads as zeros. Fails
    /// when a lazily loaded chunk cannot be fetched or verified.
    pub(crate) fn bytes(&self) -> Result<&[u8]> {
        match &self.data().store {
            Store::Fixed => Ok(&self.0.slice),
            Store::Owned(v) => Ok(v),
            Store::Shared(b) => b.get(),
            Store::Zeros => Ok(&[]),
        }
    }

    /// Logical length (what `held` counts), known without loading.
    pub(crate) fn len(&self) -> usize {
        match &self.data().store {
            Store::Fixed => self.0.slice.len(),
            Store::Owned(v) => v.len(),
            _ => self.data().len as usize,
        }
    }

    /// The shared blob behind this chunk, if any (the checkpoint writer
    /// stores each blob once).
    pub(crate) fn blob(&self) -> Option<&Arc<Blob>> {
        match &self.data().store {
            Store::Shared(b) => Some(b),
            _ => None,
        }
    }

    /// Whether the bytes are in memory (a lazy chunk not yet read is not).
    pub(crate) fn is_loaded(&self) -> bool {
        match &self.data().store {
            Store::Shared(b) => b.is_loaded(),
            _ => true,
        }
    }

    /// Whether the chunk owns its bytes (a write can go in place).
    pub(crate) fn is_owned(&self) -> bool {
        matches!(self.data().store, Store::Fixed | Store::Owned(_))
    }

    /// Makes the chunk writable in place: owned, unshared, `origin`'s,
    /// without a memoized address. Copies first (padded to the logical
    /// length) if it is shared or not its own; fails only if a lazy chunk
    /// cannot be loaded, and then changes nothing.
    fn make_writable(&mut self, origin: u64) -> Result<&mut HeaderSlice<ChunkData, [u8]>> {
        if !self.is_owned() || !self.0.is_unique() {
            let copy = Chunk::copy_of(self.bytes()?, self.len(), origin);
            *self = copy;
        }
        match triomphe::Arc::get_mut(&mut self.0) {
            Some(body) => {
                body.header.addr = OnceLock::new();
                body.header.origin = origin;
                Ok(body)
            }
            None => Err(Error::with(ErrorKind::Io, "chunk is not writable")),
        }
    }

    /// Mutable bytes, padded to the logical length, copied first if
    /// shared; the chunk is then `origin`'s. Forgets the memoized address.
    /// Fails only if a lazy chunk cannot be loaded, and then changes
    /// nothing. A copy's capacity is its length.
    pub(crate) fn bytes_mut(&mut self, origin: u64) -> Result<&mut [u8]> {
        let body = self.make_writable(origin)?;
        match &mut body.header.store {
            Store::Fixed => Ok(&mut body.slice),
            Store::Owned(v) => Ok(v),
            _ => Err(Error::with(ErrorKind::Io, "chunk is not writable")),
        }
    }

    /// Extends the chunk to `need` bytes (the new ones zeros), as
    /// `origin`'s; when it must reallocate, the new capacity is exactly
    /// `alloc_len(need)` (what is charged for it, never a doubling). A
    /// shared chunk is copied once, straight into its grown form. Fails
    /// only if a lazy chunk cannot be loaded, and then changes nothing.
    pub(crate) fn grow(&mut self, need: usize, origin: u64) -> Result<()> {
        let len = self.len();
        if need <= len {
            return Ok(());
        }
        if !matches!(self.data().store, Store::Owned(_)) || !self.0.is_unique() {
            let stored = self.bytes()?;
            let mut v = Vec::with_capacity(alloc_len(need));
            v.extend_from_slice(&stored[..stored.len().min(len)]);
            v.resize(need, 0);
            *self = Chunk::owned(v, origin);
            return Ok(());
        }
        let body = self.make_writable(origin)?;
        if let Store::Owned(v) = &mut body.header.store {
            if v.capacity() < need {
                v.reserve_exact(alloc_len(need) - v.len());
            }
            v.resize(need, 0);
        }
        Ok(())
    }

    /// Cuts the chunk to its first `keep` bytes (no more than it has), as
    /// `origin`'s, giving back what it no longer needs beyond
    /// `alloc_len(keep)`. Fails only if a lazy chunk cannot be loaded, and
    /// then changes nothing.
    pub(crate) fn cut(&mut self, keep: usize, origin: u64) -> Result<()> {
        if keep >= self.len() {
            return Ok(());
        }
        if matches!(self.data().store, Store::Owned(_)) && self.0.is_unique() {
            let body = self.make_writable(origin)?;
            if let Store::Owned(v) = &mut body.header.store {
                v.truncate(keep);
                v.shrink_to(alloc_len(keep));
            }
            return Ok(());
        }
        // A fixed allocation cannot shrink in place: one copy, as a
        // vector's `shrink_to` would make.
        let copy = Chunk::copy_of(self.bytes()?, keep, origin);
        *self = copy;
        Ok(())
    }

    /// Whether a write would have to copy (another tree holds these bytes,
    /// or they are not the chunk's own).
    pub(crate) fn is_shared(&self) -> bool {
        !self.0.is_unique() || !self.is_owned()
    }

    /// Whether both handles share one allocation.
    pub(crate) fn ptr_eq(&self, other: &Chunk) -> bool {
        triomphe::Arc::ptr_eq(&self.0, &other.0)
    }

    /// The bytes the chunk owns (`Fixed` or `Owned`), `None` otherwise.
    fn owned_bytes(&self) -> Option<&[u8]> {
        match &self.data().store {
            Store::Fixed => Some(&self.0.slice),
            Store::Owned(v) => Some(v),
            _ => None,
        }
    }

    /// The content address: blake3 of the bytes without trailing zeros, or
    /// `None` when the chunk reads as zeros. Computed once; known without
    /// loading for a chunk made from a blob.
    pub(crate) fn addr(&self) -> Option<blake3::Hash> {
        *self.data().addr.get_or_init(|| match &self.data().store {
            Store::Fixed | Store::Owned(_) => {
                let t = trimmed(self.owned_bytes().unwrap_or_default());
                if t.is_empty() {
                    None
                } else {
                    Some(blake3::hash(t))
                }
            }
            Store::Shared(b) => (b.len() > 0).then(|| b.addr()),
            Store::Zeros => None,
        })
    }

    /// Length of the bytes without trailing zeros, known without loading.
    pub(crate) fn trimmed_len(&self) -> usize {
        match &self.data().store {
            Store::Fixed | Store::Owned(_) => trimmed(self.owned_bytes().unwrap_or_default()).len(),
            Store::Shared(b) => b.len() as usize,
            Store::Zeros => 0,
        }
    }

    /// Whether the chunk reads as all zeros (known without loading).
    pub(crate) fn reads_zero(&self) -> bool {
        match &self.data().store {
            Store::Fixed | Store::Owned(_) => {
                trimmed(self.owned_bytes().unwrap_or_default()).is_empty()
            }
            Store::Shared(b) => b.len() == 0,
            Store::Zeros => true,
        }
    }

    /// The bytes without trailing zeros: what a checkpoint stores.
    pub(crate) fn trimmed(&self) -> Result<&[u8]> {
        Ok(trimmed(self.bytes()?))
    }
}

/// Same length and same bytes. Two chunks that differ only in how many
/// trailing zeros they store read alike inside a file; [`Chunk::same_bytes`]
/// says so, `==` does not, since what a file holds is part of its state.
impl PartialEq for Chunk {
    fn eq(&self, other: &Chunk) -> bool {
        self.ptr_eq(other) || (self.len() == other.len() && self.same_bytes(other))
    }
}
impl Eq for Chunk {}

impl Chunk {
    /// The same bytes once trailing zeros are dropped (what the address
    /// covers), whatever the stored lengths.
    pub(crate) fn same_bytes(&self, other: &Chunk) -> bool {
        if self.ptr_eq(other) {
            return true;
        }
        match (self.owned_bytes(), other.owned_bytes()) {
            // Comparing bytes beats hashing them when both are at hand.
            (Some(a), Some(b)) => trimmed(a) == trimmed(b),
            _ => self.addr() == other.addr(),
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
        a.bytes_mut(0).unwrap()[0] = 9;
        assert_eq!(b.bytes().unwrap(), &[1, 2, 3]);
        assert_eq!(a.bytes().unwrap(), &[9, 2, 3]);
        assert_eq!(a.addr(), Some(blake3::hash(&[9, 2, 3])));
        assert_eq!(b.addr(), Some(blake3::hash(&[1, 2, 3])));
    }

    #[derive(Debug)]
    struct Fixed(Vec<u8>, std::sync::atomic::AtomicU32);
    impl ChunkSource for Fixed {
        fn fetch(&self, _key: u64, _addr: &blake3::Hash) -> Result<Vec<u8>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(self.0.clone())
        }
    }

    #[test]
    fn lazy_blob_loads_once_and_verifies() {
        let good = Arc::new(Fixed(b"abc".to_vec(), Default::default()));
        let blob = Arc::new(Blob::lazy(blake3::hash(b"abc"), 3, 0, good.clone()));
        let c = Chunk::from_blob(blob.clone(), 10);
        assert_eq!(c.len(), 10);
        assert_eq!(c.addr(), Some(blake3::hash(b"abc")));
        assert!(!c.is_loaded());
        assert_eq!(c, Chunk::new(b"abc\0\0\0\0\0\0\0".to_vec()));
        let shorter = Chunk::new(b"abc\0\0".to_vec());
        assert!(c.same_bytes(&shorter));
        assert_ne!(c, shorter, "another stored length is another chunk");
        assert!(!c.is_loaded(), "equality by address needs no load");
        assert_eq!(c.bytes().unwrap(), b"abc");
        assert_eq!(c.bytes().unwrap(), b"abc");
        assert_eq!(good.1.load(std::sync::atomic::Ordering::Relaxed), 1);

        // Writing materializes the padded bytes and leaves the blob alone.
        let mut w = c.clone();
        w.bytes_mut(0).unwrap()[9] = 1;
        assert_eq!(w.bytes().unwrap(), b"abc\0\0\0\0\0\0\x01");
        assert_eq!(c.bytes().unwrap(), b"abc");

        let bad = Arc::new(Fixed(b"abd".to_vec(), Default::default()));
        let blob = Arc::new(Blob::lazy(blake3::hash(b"abc"), 3, 0, bad.clone()));
        let mut c = Chunk::from_blob(blob, 3);
        let e = c.bytes().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().contains("verification"), "{e}");
        // Failures are not cached: the next read asks the source again.
        assert!(c.bytes().is_err());
        assert_eq!(bad.1.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(c.bytes_mut(0).is_err());
        assert_eq!(c.len(), 3);
    }
}
