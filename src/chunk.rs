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
//! - owned by the chunk (everything a sandbox writes);
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

    /// The chunk again, after the bytes [`ChunkSource::fetch`] gave failed
    /// verification. A source that may hold more than one copy (a fleet
    /// store, where two packs can hold the same chunk) tries the others
    /// here, checking each; by default there is no other copy.
    fn fetch_again(&self, _key: u64, addr: &blake3::Hash) -> Result<Vec<u8>> {
        Err(Blob::failed(addr))
    }
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

    /// Whether `bytes` are this blob's: its length, no trailing zero, and
    /// they hash to its address.
    fn holds(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.len as usize
            && bytes.last() != Some(&0)
            && blake3::hash(bytes) == self.addr
    }

    fn failed(addr: &blake3::Hash) -> Error {
        Error::with(
            ErrorKind::Io,
            format!(
                "chunk {} failed verification (corrupt checkpoint or store)",
                addr.to_hex()
            ),
        )
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
        let mut bytes = source.fetch(self.key, &self.addr)?;
        if !self.holds(&bytes) {
            bytes = source.fetch_again(self.key, &self.addr)?;
            if !self.holds(&bytes) {
                return Err(Blob::failed(&self.addr));
            }
        }
        // Another thread may have won the race with the same verified bytes.
        let _ = self.bytes.set(bytes);
        match self.bytes.get() {
            Some(b) => Ok(b),
            None => Err(Error::with(ErrorKind::Io, "chunk vanished after loading")),
        }
    }
}

#[derive(Debug, Clone)]
enum Store {
    Owned(Vec<u8>),
    Shared(Arc<Blob>),
    Zeros,
}

/// The bytes of one chunk and their memoized address.
#[derive(Debug)]
pub(crate) struct ChunkData {
    store: Store,
    /// Logical length for `Shared` and `Zeros` (at least the blob's length;
    /// the rest reads as zeros). `Owned` uses its vector's length.
    len: u32,
    /// `None` inside means the chunk reads as all zeros.
    addr: OnceLock<Option<blake3::Hash>>,
    /// The sandbox that made these bytes (0: none, e.g. a loaded
    /// checkpoint). A sandbox's private bytes are its chunks of its own
    /// origin: whatever its base snapshot holds came from elsewhere.
    origin: u64,
}

impl Clone for ChunkData {
    fn clone(&self) -> Self {
        // A clone is about to be written: its address would be stale.
        ChunkData {
            store: self.store.clone(),
            len: self.len,
            addr: OnceLock::new(),
            origin: self.origin,
        }
    }
}

/// A shared chunk. Writers go through [`Chunk::bytes_mut`], which copies the
/// bytes only if another tree still holds them.
#[derive(Debug, Clone)]
pub(crate) struct Chunk(Arc<ChunkData>);

impl Chunk {
    #[cfg(test)]
    pub(crate) fn new(bytes: Vec<u8>) -> Chunk {
        Chunk::owned(bytes, 0)
    }

    /// A chunk owning `bytes`, made by the sandbox `origin`.
    pub(crate) fn owned(bytes: Vec<u8>, origin: u64) -> Chunk {
        Chunk(Arc::new(ChunkData {
            store: Store::Owned(bytes),
            len: 0,
            addr: OnceLock::new(),
            origin,
        }))
    }

    /// The sandbox that made this chunk's bytes (0 for none).
    pub(crate) fn origin(&self) -> u64 {
        self.0.origin
    }

    /// Bytes the host allocated for an owned chunk's vector (0 otherwise).
    pub(crate) fn capacity(&self) -> usize {
        match &self.0.store {
            Store::Owned(v) => v.capacity(),
            _ => 0,
        }
    }

    /// A chunk of `len` bytes reading as `blob`'s bytes and then zeros.
    /// The caller checks `blob.len() <= len`.
    pub(crate) fn from_blob(blob: Arc<Blob>, len: u32) -> Chunk {
        let addr = OnceLock::new();
        let _ = addr.set((blob.len() > 0).then(|| blob.addr()));
        Chunk(Arc::new(ChunkData {
            store: Store::Shared(blob),
            len,
            addr,
            origin: 0,
        }))
    }

    /// A chunk of `len` zero bytes that stores nothing but its length.
    pub(crate) fn zeros(len: u32) -> Chunk {
        let addr = OnceLock::new();
        let _ = addr.set(None);
        Chunk(Arc::new(ChunkData {
            store: Store::Zeros,
            len,
            addr,
            origin: 0,
        }))
    }

    /// The stored bytes: at most `len()`, the rest reads as zeros. Fails
    /// when a lazily loaded chunk cannot be fetched or verified.
    pub(crate) fn bytes(&self) -> Result<&[u8]> {
        match &self.0.store {
            Store::Owned(v) => Ok(v),
            Store::Shared(b) => b.get(),
            Store::Zeros => Ok(&[]),
        }
    }

    /// Logical length (what `held` counts), known without loading.
    pub(crate) fn len(&self) -> usize {
        match &self.0.store {
            Store::Owned(v) => v.len(),
            _ => self.0.len as usize,
        }
    }

    /// The shared blob behind this chunk, if any (the checkpoint writer
    /// stores each blob once).
    pub(crate) fn blob(&self) -> Option<&Arc<Blob>> {
        match &self.0.store {
            Store::Shared(b) => Some(b),
            _ => None,
        }
    }

    /// Whether the bytes are in memory (a lazy chunk not yet read is not).
    pub(crate) fn is_loaded(&self) -> bool {
        match &self.0.store {
            Store::Shared(b) => b.is_loaded(),
            _ => true,
        }
    }

    /// Whether the chunk owns its bytes (a write can go in place).
    pub(crate) fn is_owned(&self) -> bool {
        matches!(self.0.store, Store::Owned(_))
    }

    /// Mutable bytes, padded to the logical length, copied first if
    /// shared; the chunk is then `origin`'s. Forgets the memoized address.
    /// Fails only if a lazy chunk cannot be loaded, and then changes
    /// nothing. The vector's capacity is its length after a copy.
    pub(crate) fn bytes_mut(&mut self, origin: u64) -> Result<&mut Vec<u8>> {
        if !self.is_owned() {
            let len = self.len();
            let mut v = Vec::with_capacity(len);
            crate::copy::extend(&mut v, self.bytes()?);
            v.resize(len, 0);
            *self = Chunk::owned(v, origin);
        }
        let data = Arc::make_mut(&mut self.0);
        data.addr = OnceLock::new();
        data.origin = origin;
        match &mut data.store {
            Store::Owned(v) => Ok(v),
            _ => Err(Error::with(ErrorKind::Io, "chunk is not writable")),
        }
    }

    /// Whether a write would have to copy (another tree holds these bytes,
    /// or they are not the chunk's own).
    pub(crate) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1 || !self.is_owned()
    }

    /// Whether both handles share one allocation.
    pub(crate) fn ptr_eq(&self, other: &Chunk) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The content address: blake3 of the bytes without trailing zeros, or
    /// `None` when the chunk reads as zeros. Computed once; known without
    /// loading for a chunk made from a blob.
    pub(crate) fn addr(&self) -> Option<blake3::Hash> {
        *self.0.addr.get_or_init(|| match &self.0.store {
            Store::Owned(v) => {
                let t = trimmed(v);
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
        match &self.0.store {
            Store::Owned(v) => trimmed(v).len(),
            Store::Shared(b) => b.len() as usize,
            Store::Zeros => 0,
        }
    }

    /// Whether the chunk reads as all zeros (known without loading).
    pub(crate) fn reads_zero(&self) -> bool {
        match &self.0.store {
            Store::Owned(v) => trimmed(v).is_empty(),
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
        match (&self.0.store, &other.0.store) {
            // Comparing bytes beats hashing them when both are at hand.
            (Store::Owned(a), Store::Owned(b)) => trimmed(a) == trimmed(b),
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

    /// A source whose first answer is wrong and whose second is `again`.
    #[derive(Debug)]
    struct SecondCopy {
        again: Vec<u8>,
        asked_again: std::sync::atomic::AtomicU32,
    }
    impl ChunkSource for SecondCopy {
        fn fetch(&self, _key: u64, _addr: &blake3::Hash) -> Result<Vec<u8>> {
            Ok(b"abd".to_vec())
        }
        fn fetch_again(&self, _key: u64, _addr: &blake3::Hash) -> Result<Vec<u8>> {
            self.asked_again
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(self.again.clone())
        }
    }

    #[test]
    fn a_wrong_first_copy_asks_the_source_for_another_and_checks_it_too() {
        let src = Arc::new(SecondCopy {
            again: b"abc".to_vec(),
            asked_again: Default::default(),
        });
        let blob = Arc::new(Blob::lazy(blake3::hash(b"abc"), 3, 0, src.clone()));
        assert_eq!(Chunk::from_blob(blob.clone(), 3).bytes().unwrap(), b"abc");
        assert_eq!(Chunk::from_blob(blob, 3).bytes().unwrap(), b"abc");
        assert_eq!(
            src.asked_again.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "once verified, the bytes stay"
        );

        // The other copy is wrong as well: an error, nothing kept.
        let src = Arc::new(SecondCopy {
            again: b"abe".to_vec(),
            asked_again: Default::default(),
        });
        let blob = Arc::new(Blob::lazy(blake3::hash(b"abc"), 3, 0, src));
        let e = Chunk::from_blob(blob.clone(), 3).bytes().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().contains("verification"), "{e}");
        assert!(!blob.is_loaded());

        // A source with one copy only (the default): its error.
        let bad = Arc::new(Fixed(b"abd".to_vec(), Default::default()));
        let blob = Arc::new(Blob::lazy(blake3::hash(b"abc"), 3, 0, bad));
        let e = Chunk::from_blob(blob, 3).bytes().unwrap_err();
        assert!(e.to_string().contains("verification"), "{e}");
    }
}
