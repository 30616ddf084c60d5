//! The fleet blob store: push, pull and lazily open snapshots from a store
//! that many hosts share (an S3-compatible bucket, a directory, memory).
//!
//! A store holds these objects (docs/DESIGN.md, "Fleet store"):
//!
//! ```text
//! cowvfs-store                               the store format version (see `catalog`)
//! manifests/<root hash hex>                  a tree: see `manifest`
//! packs/<name hex>                           chunks and their own index: see `pack`
//! index/<hex>                                which packs hold which chunks
//! chunks/<first 2 hex digits>/<blake3 hex>   format 1: a chunk per object
//! refs/<name>                                a named ref and its history: see `refs`
//! gc-lease                                   a running garbage collection: see `lease`
//! ```
//!
//! Chunks are named by their content address (see `chunk`), so a chunk is
//! stored once however many trees and hosts use it, and [`push`] uploads
//! only the chunks the store lacks, in packs. The manifest goes up last,
//! after every pack it needs and their index, so a reader that finds a
//! manifest finds its chunks.
//!
//! Nothing read from a store is trusted: a manifest is checked like a
//! checkpoint's metadata and must rebuild a tree whose root hash is the one
//! it was asked for, and every chunk is checked against its address when it
//! arrives. A missing or corrupt object is an error naming it, never wrong
//! bytes.
//!
//! A host keeps the chunks it fetched from S3 in a local [`DirStore`]
//! ([`default_cache_dir`], [`cache_for`]), bounded by [`cache_max`]: opening
//! it drops the least recently used chunks in the background now and then
//! ([`DirStore::prune_chunks`]).
//!
//! ```
//! use std::sync::Arc;
//! use cowvfs::Vfs;
//! use cowvfs::store::{self, BlobStore, MemStore};
//!
//! let mut v = Vfs::new();
//! v.write_file("/big", &vec![7u8; 300_000])?;
//! v.write_file("/small", b"hello")?;
//! let snap = v.snapshot();
//!
//! let fleet: Arc<dyn BlobStore> = Arc::new(MemStore::new());
//! let pushed = store::push(&snap, &*fleet, &store::TransferOptions::default())?;
//! assert_eq!(pushed.root, snap.root_hash());
//!
//! // Another host: the tree starts at once; chunks come on first read.
//! let lazy = store::open_lazy(fleet.clone(), &pushed.root, None)?;
//! assert_eq!(lazy.read_file("/small")?, b"hello");
//! assert_eq!(lazy.root_hash(), snap.root_hash());
//! # Ok::<(), cowvfs::Error>(())
//! ```

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};

mod ahead;
mod buffers;
mod catalog;
mod dir;
mod fetch;
mod gc;
mod lazy;
#[cfg(test)]
mod lazy_tests;
mod lease;
mod manifest;
mod memory;
mod metered;
mod migrate;
mod pack;
#[cfg(test)]
mod pack_tests;
mod packer;
mod publish;
pub mod refs;
#[cfg(feature = "s3")]
mod s3;
mod survey;
mod tombstone;
mod transfer;
mod url;

pub use catalog::{
    Catalog, ChunkLoc, STORE_VERSION, VERSION_KEY, read_index, read_pack_index, verify_pack,
};
pub use dir::{DirStore, PruneStats};
pub use gc::{DEFAULT_GRACE, GcOptions, GcReport, KindStats, gc};
pub use lease::{LEASE_KEY, LEASE_TTL};
pub use memory::MemStore;
pub use metered::{Meter, Metered};
pub use migrate::{MigrateStats, migrate};
pub use pack::{
    DEFAULT_PACK_SIZE, MAX_INDEX_OBJECT, MAX_PACK_ENTRIES, MAX_PACK_OBJECT, MAX_PACK_SIZE,
    MAX_RANGE_REQUEST, PackEntry, PackRecord,
};
pub use refs::RefVersion;
#[cfg(feature = "s3")]
pub use s3::S3Store;
pub use transfer::{
    TransferOptions, TransferStats, open_lazy, open_lazy_with_limits, pull, push, push_loose,
};
pub use url::{
    TreeName, cache_for, cache_max, default_cache_dir, open_store, open_url, open_url_with_limits,
    resolve, split_root, split_tree,
};

/// A write under way ([`BlobStore::put_owned_begin`]): call it to wait for
/// the outcome.
pub type Pending<'s> = Box<dyn FnOnce() -> Result<()> + Send + 's>;

/// A content-addressed store of chunks and tree manifests.
///
/// Implementations need not verify anything: the functions of this module
/// check every byte they read against its address. The batch methods let a
/// remote store keep many requests in flight; results come back in the
/// order asked.
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// For each address, whether the store holds that chunk.
    fn has_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<bool>>;

    /// Each chunk's stored bytes, or `None` where the store lacks it. An
    /// object over [`MAX_CHUNK_OBJECT`] is an error, found without reading
    /// (or holding) much more than that.
    fn get_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Stores chunks. The caller promises each `bytes` hashes to its
    /// address; storing a chunk again is harmless.
    fn put_chunks(&self, chunks: &[(blake3::Hash, &[u8])]) -> Result<()>;

    /// The manifest stored for `root`, if any; over
    /// [`MAX_MANIFEST_OBJECT`] it is an error, as for chunks.
    fn get_manifest(&self, root: &blake3::Hash) -> Result<Option<Vec<u8>>>;

    /// Stores the manifest for `root`, atomically (a reader sees all of it
    /// or none).
    fn put_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<()>;

    /// Where the store is, for messages.
    fn location(&self) -> String;

    /// Names of the objects under `prefix` (a folder such as `"index/"`),
    /// relative to the store's root, in no set order.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Each whole object, or `None` where it is missing; one over `max`
    /// bytes is an error, found without holding much more than `max`.
    fn get_objects(&self, keys: &[&str], max: u64) -> Result<Vec<Option<Vec<u8>>>>;

    /// For each `(key, range)`, exactly those bytes of the object, or
    /// `None` where the object is missing. An object that ends before the
    /// range does is an error naming it. A remote store keeps several
    /// requests in flight.
    fn get_ranges(&self, reqs: &[(&str, Range<u64>)]) -> Result<Vec<Option<Vec<u8>>>>;

    /// [`get_ranges`](BlobStore::get_ranges), reading into buffers taken
    /// from `spare` where the store can. A caller reading many large
    /// ranges hands in the buffers it is done with, so their memory is
    /// not given back to the system and faulted in afresh (and zeroed)
    /// for every request. A store may take any of them, or none.
    fn get_ranges_into(
        &self,
        reqs: &[(&str, Range<u64>)],
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let _ = spare;
        self.get_ranges(reqs)
    }

    /// Stores objects, each atomically (a reader sees all of one or none),
    /// several at once where the store can; all are durable on return.
    fn put_objects(&self, objs: &[(&str, &[u8])]) -> Result<()>;

    /// [`put_objects`](BlobStore::put_objects) of bytes the caller gives
    /// up, started: the objects are durable once the returned [`Pending`]
    /// is waited for and says so. A remote store keeps the bytes without
    /// copying them (its requests outlive the call's borrows) and sends
    /// them while the caller goes on (a push builds its next packs);
    /// others store them before returning.
    fn put_owned_begin<'s>(&'s self, objs: Vec<(&str, Bytes)>) -> Pending<'s> {
        let refs: Vec<(&str, &[u8])> = objs.iter().map(|(k, b)| (*k, &b[..])).collect();
        let done = self.put_objects(&refs);
        Box::new(move || done)
    }

    /// Removes objects; one already gone is fine.
    fn delete_objects(&self, keys: &[&str]) -> Result<()>;

    /// Like [`list`](BlobStore::list), with each object's size and when it
    /// was last written: what garbage collection needs to leave young
    /// objects (a push in progress) alone. A store that cannot tell says
    /// so ([`ErrorKind::Unsupported`]), and nothing is collected there.
    fn list_info(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let _ = prefix;
        Err(Error::with(
            ErrorKind::Unsupported,
            format!(
                "{}: this kind of store cannot list modification times",
                self.location()
            ),
        ))
    }

    /// The ref object `name` (see [`refs`]; the name is checked) and the
    /// store's version of it, if it exists; over
    /// [`refs::MAX_REF_OBJECT`] it is an error, as for chunks.
    fn get_ref(&self, name: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        let _ = name;
        Err(refs_unsupported(&self.location()))
    }

    /// Writes the ref object `name` atomically, only if the store holds
    /// the version `expected` of it (`None`: only if there is none);
    /// otherwise an error of kind [`ErrorKind::Busy`] and nothing written.
    /// Returns the version written.
    fn put_ref(
        &self,
        name: &str,
        bytes: &[u8],
        expected: Option<&RefVersion>,
    ) -> Result<RefVersion> {
        let _ = (name, bytes, expected);
        Err(refs_unsupported(&self.location()))
    }

    /// The names of the refs the store holds, in no particular order.
    fn list_refs(&self) -> Result<Vec<String>> {
        Err(refs_unsupported(&self.location()))
    }

    /// For this crate (the garbage collector's lease): the object `key`
    /// (outside `refs/`) with the store's version of it, if it exists;
    /// over [`refs::MAX_REF_OBJECT`] bytes it is an error.
    #[doc(hidden)]
    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        let _ = key;
        Err(refs_unsupported(&self.location()))
    }

    /// For this crate: writes the object `key` (outside `refs/`)
    /// atomically, only if the store holds the version `expected` of it
    /// (`None`: only if there is none), as [`put_ref`](BlobStore::put_ref)
    /// does for refs; a lost race is an [`ErrorKind::Busy`] error and
    /// nothing written.
    #[doc(hidden)]
    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&RefVersion>) -> Result<RefVersion> {
        let _ = (key, bytes, expected);
        Err(refs_unsupported(&self.location()))
    }

    /// For this crate (a push publishing its tree): writes the manifest
    /// of `root` only if the store has none; whether it was created
    /// (`false`: one was there and nothing was written). A store without
    /// conditional writes writes it plainly and says created.
    ///
    /// Unlike [`put_if`](BlobStore::put_if) this need not first make sure
    /// the server enforces the condition (on S3 that check costs four
    /// requests per process, and a CLI push is one process): where a
    /// server ignores it, every write reads as a creation, and that is
    /// safe because a collection needs the lease, which such a server
    /// cannot give (its `put_if` refuses), so no collection runs there to
    /// race the write (DESIGN.md, "Garbage collection").
    #[doc(hidden)]
    fn create_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<bool> {
        match self.put_if(&manifest_key(root), bytes, None) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::Busy => Ok(false),
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                self.put_manifest(root, bytes)?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

/// One object as a listing describes it ([`BlobStore::list_info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its name, relative to the store's root.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, by the store's clock.
    pub modified: std::time::SystemTime,
}

fn refs_unsupported(location: &str) -> Error {
    Error::with(
        ErrorKind::Unsupported,
        format!("{location}: this kind of store does not keep refs"),
    )
}

/// Most bytes a chunk object may hold: one chunk. A store read refuses a
/// bigger object before holding more than this (plus one byte).
pub const MAX_CHUNK_OBJECT: u64 = crate::content::CHUNK_SIZE as u64;

/// Most bytes a manifest object may hold (1 GiB): a store read refuses a
/// bigger one, and a push never writes one.
pub const MAX_MANIFEST_OBJECT: u64 = 1 << 30;

/// The error for a store object over its bound.
pub(crate) fn oversized(what: &str, len: Option<u64>, bound: u64) -> Error {
    let size = match len {
        Some(n) => format!("{n} bytes"),
        None => "too big".to_string(),
    };
    Error::corrupt(format!(
        "{what}: {size}, more than the {bound} bytes an object of its kind may hold"
    ))
}

/// The object name of a chunk under a store's root.
pub(crate) fn chunk_key(addr: &blake3::Hash) -> String {
    let hex = addr.to_hex();
    format!("chunks/{}/{}", &hex[..2], hex)
}

/// The object name of a manifest under a store's root.
pub(crate) fn manifest_key(root: &blake3::Hash) -> String {
    format!("manifests/{}", root.to_hex())
}

fn io_err(msg: impl Into<String>) -> Error {
    Error::with(ErrorKind::Io, msg.into())
}

/// Checks an object name before a store uses it as a path: relative,
/// plain ASCII segments, no `.` or `..` segment, no empty segment.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::with(
            ErrorKind::InvalidInput,
            format!("{key:?} is not a valid store object name"),
        ))
    }
}

/// Checks a requested range: not backwards and at most
/// [`MAX_RANGE_REQUEST`] long.
pub(crate) fn check_range(key: &str, r: &Range<u64>) -> Result<()> {
    if r.start > r.end || r.end - r.start > MAX_RANGE_REQUEST {
        return Err(Error::with(
            ErrorKind::InvalidInput,
            format!(
                "{key}: range {}..{} is backwards or longer than {MAX_RANGE_REQUEST} bytes",
                r.start, r.end
            ),
        ));
    }
    Ok(())
}

/// The error for an object that ends before a range read of it.
pub(crate) fn short_object(what: &str, r: &Range<u64>, got: u64) -> Error {
    Error::corrupt(format!(
        "{what}: truncated: bytes {}..{} asked, the object ends {} bytes in",
        r.start,
        r.end,
        r.start + got
    ))
}

impl<S: BlobStore + ?Sized> BlobStore for Arc<S> {
    fn has_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<bool>> {
        (**self).has_chunks(addrs)
    }
    fn get_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        (**self).get_chunks(addrs)
    }
    fn put_chunks(&self, chunks: &[(blake3::Hash, &[u8])]) -> Result<()> {
        (**self).put_chunks(chunks)
    }
    fn get_manifest(&self, root: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        (**self).get_manifest(root)
    }
    fn put_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        (**self).put_manifest(root, bytes)
    }
    fn location(&self) -> String {
        (**self).location()
    }
    fn get_ref(&self, name: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        (**self).get_ref(name)
    }
    fn put_ref(
        &self,
        name: &str,
        bytes: &[u8],
        expected: Option<&RefVersion>,
    ) -> Result<RefVersion> {
        (**self).put_ref(name, bytes, expected)
    }
    fn list_refs(&self) -> Result<Vec<String>> {
        (**self).list_refs()
    }
    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        (**self).get_versioned(key)
    }
    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&RefVersion>) -> Result<RefVersion> {
        (**self).put_if(key, bytes, expected)
    }
    fn create_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<bool> {
        (**self).create_manifest(root, bytes)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        (**self).list(prefix)
    }
    fn get_objects(&self, keys: &[&str], max: u64) -> Result<Vec<Option<Vec<u8>>>> {
        (**self).get_objects(keys, max)
    }
    fn get_ranges(&self, reqs: &[(&str, Range<u64>)]) -> Result<Vec<Option<Vec<u8>>>> {
        (**self).get_ranges(reqs)
    }
    fn get_ranges_into(
        &self,
        reqs: &[(&str, Range<u64>)],
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        (**self).get_ranges_into(reqs, spare)
    }
    fn put_objects(&self, objs: &[(&str, &[u8])]) -> Result<()> {
        (**self).put_objects(objs)
    }
    fn put_owned_begin<'s>(&'s self, objs: Vec<(&str, Bytes)>) -> Pending<'s> {
        (**self).put_owned_begin(objs)
    }
    fn delete_objects(&self, keys: &[&str]) -> Result<()> {
        (**self).delete_objects(keys)
    }
    fn list_info(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        (**self).list_info(prefix)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::{Snapshot, Vfs};

    fn tree() -> Snapshot {
        let mut v = Vfs::new();
        v.create_dir_all("/a/b").unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        v.write_file("/a/big", &big).unwrap();
        v.write_file("/a/b/small", b"small").unwrap();
        v.write_file("/a/b/copy", &big).unwrap();
        v.write_file("/zeros", &[0; 70_000]).unwrap();
        v.snapshot()
    }

    fn round_trip(store: Arc<dyn BlobStore>, dir: &Path) {
        let snap = tree();
        let opts = TransferOptions::default();
        let first = push(&snap, &*store, &opts).unwrap();
        assert_eq!(first.root, snap.root_hash());
        // 200,000 bytes: 4 unique chunks shared by two files, plus "small".
        assert_eq!(first.chunks, 5);
        assert_eq!(first.moved_chunks, 5);
        let again = push(&snap, &*store, &opts).unwrap();
        assert_eq!(again.moved_chunks, 0);

        let out = dir.join("pulled.ck");
        let pulled = pull(&*store, &first.root, &out, None, &opts).unwrap();
        assert_eq!(pulled.moved_chunks, 5);
        let back = Snapshot::load(&out).unwrap();
        assert_eq!(back.root_hash(), snap.root_hash());
        assert!(snap.diff(&back).is_empty());
        // Byte for byte the file a local save of the tree makes.
        snap.save(dir.join("local.ck")).unwrap();
        let local = std::fs::read(dir.join("local.ck")).unwrap();
        assert!(std::fs::read(&out).unwrap() == local);

        // Through a cache: the second pull moves nothing.
        let cache: Arc<dyn BlobStore> = Arc::new(DirStore::open(dir.join("cache")).unwrap());
        let p1 = pull(&*store, &first.root, &out, Some(cache.clone()), &opts).unwrap();
        let p2 = pull(&*store, &first.root, &out, Some(cache), &opts).unwrap();
        assert_eq!((p1.moved_chunks, p2.moved_chunks), (5, 0));

        let lazy = open_lazy(store.clone(), &first.root, None).unwrap();
        assert_eq!(lazy.read_file("/a/b/small").unwrap(), b"small");
        assert_eq!(
            lazy.read_file("/a/big").unwrap(),
            snap.read_file("/a/big").unwrap()
        );

        let missing = blake3::hash(b"no such tree");
        let e = open_lazy(store, &missing, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn memory_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        round_trip(Arc::new(MemStore::new()), dir.path());
    }

    #[test]
    fn dir_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path().join("fleet").to_str().unwrap(), true).unwrap();
        round_trip(store, dir.path());
        // No temporary files left behind.
        let mut stack = vec![dir.path().join("fleet")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                assert!(!e.file_name().to_string_lossy().starts_with(".tmp"));
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }

    #[test]
    fn lazy_reads_fetch_only_what_is_read() {
        let store = Arc::new(Metered::new(MemStore::new()));
        let snap = tree();
        let pushed = push(&snap, &*store, &TransferOptions::default()).unwrap();
        let meter = store.meter();
        let before = meter.totals();
        let lists = || meter.lists.load(std::sync::atomic::Ordering::Relaxed);
        let lists0 = lists();
        let cache = Arc::new(MemStore::new());
        let lazy = open_lazy(store.clone(), &pushed.root, Some(cache.clone())).unwrap();
        // The manifest, the store's version object and one listing; its
        // one index object is read in the background (perhaps not yet).
        assert!(meter.totals().0 - before.0 <= 3);
        assert_eq!(lists() - lists0, 1);
        assert_eq!(lazy.read_file("/a/b/small").unwrap(), b"small");
        // Then the index object and one ranged read.
        let (gets, bytes, ..) = meter.totals();
        assert_eq!(gets - before.0, 4);
        assert!(bytes - before.1 < 2_000, "{}", bytes - before.1);
        assert_eq!(cache.chunk_count(), 1);
        // A second lazy open while the first is open shares its catalog
        // (brought up to date by a listing in the background): the
        // manifest is all it reads, and its chunk comes from the cache.
        let again = open_lazy(store.clone(), &pushed.root, Some(cache)).unwrap();
        assert_eq!(again.read_file("/a/b/small").unwrap(), b"small");
        assert_eq!(meter.totals().0 - gets, 1);
        drop(lazy);
    }

    #[test]
    fn corrupt_and_missing_chunks_are_errors_not_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemStore::new());
        let mut v = Vfs::new();
        v.write_file("/f", b"the real bytes").unwrap();
        v.write_file("/g", b"other").unwrap();
        let snap = v.snapshot();
        // A store in the format before packs (packed chunks: store::pack_tests).
        let pushed = push_loose(&snap, &*store, &TransferOptions::default()).unwrap();
        let addr = blake3::hash(b"the real bytes");
        store.corrupt_chunk(&addr, b"the fake bytes".to_vec());

        let out = dir.path().join("out.ck");
        let pull_fails = || {
            pull(
                &*store,
                &pushed.root,
                &out,
                None,
                &TransferOptions::default(),
            )
            .unwrap_err()
        };
        let e = pull_fails();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains(&addr.to_hex().to_string()), "{e}");
        assert!(!out.exists(), "no output from a failed pull");

        let lazy = open_lazy(store.clone(), &pushed.root, None).unwrap();
        assert_eq!(lazy.read_file("/g").unwrap(), b"other");
        let e = lazy.read_file("/f").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().contains("corrupt"), "{e}");

        // A chunk missing from the store: an error naming it, never bytes.
        store.corrupt_chunk(&addr, b"the real bytes".to_vec());
        let gone = blake3::hash(b"other");
        assert!(store.remove_chunk(&gone), "/g's chunk was in the store");
        let e = pull_fails();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Io | ErrorKind::Corrupt | ErrorKind::NotFound
            ),
            "{e}"
        );
        assert!(e.to_string().contains(&gone.to_hex().to_string()), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(!out.exists(), "no output from a failed pull");
        let lazy = open_lazy(store.clone(), &pushed.root, None).unwrap();
        assert_eq!(lazy.read_file("/f").unwrap(), b"the real bytes");
        let e = lazy.read_file("/g").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");

        // A damaged manifest is refused before anything is built.
        let m = store.get_manifest(&pushed.root).unwrap().unwrap();
        let mut bad = m.clone();
        let n = bad.len();
        bad[n / 2] ^= 0x40;
        store.put_manifest(&pushed.root, &bad).unwrap();
        let e = open_lazy(store.clone(), &pushed.root, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        // A manifest stored under another tree's name is refused too.
        let other = blake3::hash(b"x");
        store.put_manifest(&other, &m).unwrap();
        assert!(open_lazy(store, &other, None).is_err());
    }
}
