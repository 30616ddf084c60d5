//! The fleet blob store: push, pull and lazily open snapshots from a store
//! that many hosts share (an S3-compatible bucket, a directory, memory).
//!
//! A store holds two kinds of objects:
//!
//! ```text
//! chunks/<first 2 hex digits>/<blake3 hex>   a chunk's bytes, trailing zeros removed
//! manifests/<root hash hex>                  a tree: see `manifest`
//! ```
//!
//! Chunks are named by their content address (see `blob`), so a chunk is
//! stored once however many trees and hosts use it, and [`push`] uploads
//! only the chunks the store lacks. The manifest goes up last, after every
//! chunk it names, so a reader that finds a manifest finds its chunks.
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
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::blob::ChunkSource;
use crate::checkpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::vfs::Snapshot;

mod dir;
mod manifest;
mod memory;
#[cfg(feature = "s3")]
mod s3;

pub use dir::{DirStore, PruneStats};
pub use memory::MemStore;
#[cfg(feature = "s3")]
pub use s3::S3Store;

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
    Error::with(
        ErrorKind::Corrupt,
        format!("{what}: {size}, more than the {bound} bytes an object of its kind may hold"),
    )
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

// -------------------------------------------------------------------------
// Counting what crosses the wire

/// Requests and bytes that went through a [`Metered`] store.
#[derive(Debug, Default)]
pub struct Meter {
    /// Chunk and manifest objects read (found or not).
    pub gets: AtomicU64,
    /// Bytes of the objects read.
    pub bytes_in: AtomicU64,
    /// Objects written.
    pub puts: AtomicU64,
    /// Bytes written.
    pub bytes_out: AtomicU64,
    /// Existence checks.
    pub heads: AtomicU64,
}

impl Meter {
    /// (gets, bytes in, puts, bytes out, existence checks) so far.
    pub fn totals(&self) -> (u64, u64, u64, u64, u64) {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            l(&self.gets),
            l(&self.bytes_in),
            l(&self.puts),
            l(&self.bytes_out),
            l(&self.heads),
        )
    }
}

/// A store that counts the requests and bytes going through it: what a
/// push, pull or lazy read really moved.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S: BlobStore> Metered<S> {
    /// Wraps `inner`; read the counts from [`Metered::meter`].
    pub fn new(inner: S) -> Metered<S> {
        Metered {
            inner,
            meter: Arc::new(Meter::default()),
        }
    }

    /// The counters, shared.
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }
}

impl<S: BlobStore> BlobStore for Metered<S> {
    fn has_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<bool>> {
        self.meter
            .heads
            .fetch_add(addrs.len() as u64, Ordering::Relaxed);
        self.inner.has_chunks(addrs)
    }

    fn get_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        let got = self.inner.get_chunks(addrs)?;
        let m = &self.meter;
        m.gets.fetch_add(addrs.len() as u64, Ordering::Relaxed);
        let bytes: usize = got.iter().flatten().map(Vec::len).sum();
        m.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(got)
    }

    fn put_chunks(&self, chunks: &[(blake3::Hash, &[u8])]) -> Result<()> {
        self.inner.put_chunks(chunks)?;
        let m = &self.meter;
        m.puts.fetch_add(chunks.len() as u64, Ordering::Relaxed);
        let bytes: usize = chunks.iter().map(|(_, b)| b.len()).sum();
        m.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(())
    }

    fn get_manifest(&self, root: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        let got = self.inner.get_manifest(root)?;
        self.meter.gets.fetch_add(1, Ordering::Relaxed);
        let n = got.as_ref().map_or(0, Vec::len);
        self.meter.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        Ok(got)
    }

    fn put_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        self.inner.put_manifest(root, bytes)?;
        self.meter.puts.fetch_add(1, Ordering::Relaxed);
        self.meter
            .bytes_out
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn location(&self) -> String {
        self.inner.location()
    }
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
}

// -------------------------------------------------------------------------
// Push and pull

/// How a transfer runs.
pub struct TransferOptions<'a> {
    /// Chunks handed to the store per batch call (a remote store keeps
    /// that many requests in flight at most).
    pub batch: usize,
    /// Called with (bytes done, bytes to do) as chunks move.
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
}

impl Default for TransferOptions<'_> {
    fn default() -> Self {
        TransferOptions {
            batch: 32,
            progress: None,
        }
    }
}

/// What a push or pull did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferStats {
    /// Root hash of the tree.
    pub root: blake3::Hash,
    /// Unique chunks the tree uses.
    pub chunks: u64,
    /// Their bytes (without trailing zeros).
    pub chunk_bytes: u64,
    /// Chunks that actually moved (the rest were there already).
    pub moved_chunks: u64,
    /// Their bytes.
    pub moved_bytes: u64,
    /// Bytes of the manifest.
    pub manifest_bytes: u64,
}

/// How many addresses go into one existence query.
const HAS_BATCH: usize = 1024;

/// Which of `addrs` `store` lacks, asked in batches.
fn missing(store: &dyn BlobStore, addrs: &[blake3::Hash]) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for (b, part) in addrs.chunks(HAS_BATCH).enumerate() {
        let has = store.has_chunks(part)?;
        if has.len() != part.len() {
            return Err(io_err(format!(
                "{}: existence check answered {} of {} chunks",
                store.location(),
                has.len(),
                part.len()
            )));
        }
        out.extend(
            has.iter()
                .enumerate()
                .filter(|(_, h)| !**h)
                .map(|(i, _)| b * HAS_BATCH + i),
        );
    }
    Ok(out)
}

/// Uploads `snap` to `store`: the chunks the store lacks (asked in
/// batches), then the manifest. If anything fails the manifest is not
/// written, so no reader sees a tree with missing chunks; pushing again
/// uploads only what is still missing.
pub fn push(
    snap: &Snapshot,
    store: &dyn BlobStore,
    opts: &TransferOptions<'_>,
) -> Result<TransferStats> {
    let (meta, chunks) = checkpoint::encode_meta(snap)?;
    let root = snap.root_hash();
    let addrs: Vec<blake3::Hash> = chunks
        .iter()
        .map(|c| {
            c.addr()
                .ok_or_else(|| io_err("stored chunk without an address"))
        })
        .collect::<Result<_>>()?;
    let chunk_bytes: u64 = chunks.iter().map(|c| c.trimmed_len() as u64).sum();
    let todo = missing(store, &addrs)?;
    let total: u64 = todo.iter().map(|&i| chunks[i].trimmed_len() as u64).sum();
    let mut done = 0u64;
    if let Some(p) = opts.progress {
        p(0, total);
    }
    for part in todo.chunks(opts.batch.max(1)) {
        let batch: Vec<(blake3::Hash, &[u8])> = part
            .iter()
            .map(|&i| Ok((addrs[i], chunks[i].trimmed()?)))
            .collect::<Result<_>>()?;
        store.put_chunks(&batch).map_err(|e| {
            io_err(format!(
                "pushing to {}: {} (nothing was published; pushing again resumes)",
                store.location(),
                e.context().unwrap_or("failed")
            ))
        })?;
        done += batch.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        if let Some(p) = opts.progress {
            p(done, total);
        }
    }
    let m = manifest::encode(&root, &meta);
    if m.len() as u64 > MAX_MANIFEST_OBJECT {
        return Err(oversized(
            &format!("the manifest of {}", root.to_hex()),
            Some(m.len() as u64),
            MAX_MANIFEST_OBJECT,
        ));
    }
    store.put_manifest(&root, &m).map_err(|e| {
        io_err(format!(
            "publishing manifest {} to {}: {}",
            root.to_hex(),
            store.location(),
            e.context().unwrap_or("failed")
        ))
    })?;
    Ok(TransferStats {
        root,
        chunks: chunks.len() as u64,
        chunk_bytes,
        moved_chunks: todo.len() as u64,
        moved_bytes: total,
        manifest_bytes: m.len() as u64,
    })
}

/// A checked manifest: metadata bytes (the checkpoint encoding), the
/// chunks (address, length) in order, and the manifest object's size.
type Fetched = (Vec<u8>, Vec<(blake3::Hash, u32)>, u64);

/// Fetches and checks the manifest for `root`.
fn fetch_manifest(store: &dyn BlobStore, root: &blake3::Hash) -> Result<Fetched> {
    let Some(bytes) = store.get_manifest(root)? else {
        return Err(Error::with(
            ErrorKind::NotFound,
            format!("{}: no tree with root {}", store.location(), root.to_hex()),
        ));
    };
    let meta = manifest::decode(root, &bytes).map_err(|e| in_manifest(store, root, e))?;
    let (got, chunks) = checkpoint::meta_chunks(meta).map_err(|e| in_manifest(store, root, e))?;
    if got != *root {
        return Err(in_manifest(
            store,
            root,
            Error::with(ErrorKind::Corrupt, "it describes another tree"),
        ));
    }
    Ok((meta.to_vec(), chunks, bytes.len() as u64))
}

fn in_manifest(store: &dyn BlobStore, root: &blake3::Hash, e: Error) -> Error {
    Error::with(
        e.kind(),
        format!(
            "{}: manifest {}: {}",
            store.location(),
            root.to_hex(),
            e.context().unwrap_or("bad")
        ),
    )
}

/// Checks bytes from a store against their address and length.
fn check_chunk(
    store: &dyn BlobStore,
    addr: &blake3::Hash,
    len: u32,
    got: Option<Vec<u8>>,
) -> Result<Vec<u8>> {
    let Some(bytes) = got else {
        return Err(io_err(format!(
            "{}: chunk {} is missing",
            store.location(),
            addr.to_hex()
        )));
    };
    if bytes.len() != len as usize || blake3::hash(&bytes) != *addr {
        return Err(Error::with(
            ErrorKind::Corrupt,
            format!(
                "{}: chunk {} is corrupt (its bytes do not match its address)",
                store.location(),
                addr.to_hex()
            ),
        ));
    }
    Ok(bytes)
}

/// Makes sure `local` holds every chunk of the manifest, fetching the ones
/// it lacks from `remote` in batches, each verified before it is stored.
fn fetch_missing(
    remote: &dyn BlobStore,
    local: &dyn BlobStore,
    chunks: &[(blake3::Hash, u32)],
    opts: &TransferOptions<'_>,
) -> Result<(u64, u64)> {
    let addrs: Vec<blake3::Hash> = chunks.iter().map(|c| c.0).collect();
    let todo = missing(local, &addrs)?;
    let total: u64 = todo.iter().map(|&i| chunks[i].1 as u64).sum();
    let mut done = 0u64;
    if let Some(p) = opts.progress {
        p(0, total);
    }
    for part in todo.chunks(opts.batch.max(1)) {
        let want: Vec<blake3::Hash> = part.iter().map(|&i| chunks[i].0).collect();
        let got = remote.get_chunks(&want)?;
        if got.len() != want.len() {
            return Err(io_err(format!(
                "{}: asked for {} chunks, got {}",
                remote.location(),
                want.len(),
                got.len()
            )));
        }
        let mut checked = Vec::with_capacity(got.len());
        for (&i, g) in part.iter().zip(got) {
            let (addr, len) = chunks[i];
            checked.push((addr, check_chunk(remote, &addr, len, g)?));
        }
        let refs: Vec<(blake3::Hash, &[u8])> =
            checked.iter().map(|(a, b)| (*a, b.as_slice())).collect();
        local.put_chunks(&refs)?;
        done += checked.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        if let Some(p) = opts.progress {
            p(done, total);
        }
    }
    Ok((todo.len() as u64, total))
}

/// Downloads the tree `root` from `store` into a checkpoint file at `out`
/// (saved atomically). Chunks already in `cache` are not fetched; fetched
/// ones are verified and kept there. Without a cache they are held in
/// memory until the file is written.
pub fn pull(
    store: &dyn BlobStore,
    root: &blake3::Hash,
    out: impl AsRef<Path>,
    cache: Option<Arc<dyn BlobStore>>,
    opts: &TransferOptions<'_>,
) -> Result<TransferStats> {
    let (meta, chunks, manifest_bytes) = fetch_manifest(store, root)?;
    // The tree is checked (structure, root hash, the loader's limits)
    // before any chunk moves: a hostile manifest is refused without
    // downloading what it names. Building it reads no chunk.
    let unread = Arc::new(StoreSource {
        remote: Arc::new(MemStore::new()),
        cache: None,
        table: chunks.clone(),
    });
    checkpoint::open_meta(&meta, unread, &Limits::default())?;
    let local: Arc<dyn BlobStore> = cache.unwrap_or_else(|| Arc::new(MemStore::new()));
    let (moved_chunks, moved_bytes) = fetch_missing(store, &*local, &chunks, opts)?;
    // Every chunk is local and verified now; saving reads them from there.
    let source = Arc::new(StoreSource {
        remote: local,
        cache: None,
        table: chunks.clone(),
    });
    let snap = checkpoint::open_meta(&meta, source, &Limits::default())?;
    snap.save(out)?;
    Ok(TransferStats {
        root: *root,
        chunks: chunks.len() as u64,
        chunk_bytes: chunks.iter().map(|c| c.1 as u64).sum(),
        moved_chunks,
        moved_bytes,
        manifest_bytes,
    })
}

/// Lazily opens the tree `root` from `store`: costs one manifest fetch;
/// each chunk is fetched on first read, verified, and kept in `cache` (if
/// given) for the next run. A chunk that is missing or corrupt is an I/O
/// error to whoever reads it; a file nobody reads moves nothing.
pub fn open_lazy(
    store: Arc<dyn BlobStore>,
    root: &blake3::Hash,
    cache: Option<Arc<dyn BlobStore>>,
) -> Result<Snapshot> {
    open_lazy_with_limits(store, root, cache, &Limits::default())
}

/// [`open_lazy`] under `limits`: the tree is checked against them (as a
/// checkpoint file is by [`Snapshot::open_with_limits`]), and the snapshot
/// and its forks have them.
pub fn open_lazy_with_limits(
    store: Arc<dyn BlobStore>,
    root: &blake3::Hash,
    cache: Option<Arc<dyn BlobStore>>,
    limits: &Limits,
) -> Result<Snapshot> {
    let (meta, chunks, _) = fetch_manifest(&*store, root)?;
    let source = Arc::new(StoreSource {
        remote: store,
        cache,
        table: chunks,
    });
    checkpoint::open_meta(&meta, source, limits)
}

/// Chunk bytes from a store (through a local cache) on demand.
struct StoreSource {
    remote: Arc<dyn BlobStore>,
    cache: Option<Arc<dyn BlobStore>>,
    /// Address and length of chunk `key`.
    table: Vec<(blake3::Hash, u32)>,
}

impl fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSource")
            .field("remote", &self.remote.location())
            .field("chunks", &self.table.len())
            .finish()
    }
}

impl ChunkSource for StoreSource {
    fn fetch(&self, key: u64, addr: &blake3::Hash) -> Result<Vec<u8>> {
        let Some(&(want, len)) = self.table.get(key as usize) else {
            return Err(io_err("chunk key out of range"));
        };
        if want != *addr {
            return Err(io_err("chunk key names another chunk"));
        }
        if let Some(cache) = &self.cache
            && let Ok(mut got) = cache.get_chunks(&[want])
            && let Some(Some(bytes)) = got.pop()
            && let Ok(bytes) = check_chunk(&**cache, &want, len, Some(bytes))
        {
            return Ok(bytes);
        }
        // Whatever went wrong, the reader sees an I/O error, as with a
        // lazily opened checkpoint file.
        let as_io = |e: Error| Error::with(ErrorKind::Io, e.context().unwrap_or("").to_string());
        let mut got = self.remote.get_chunks(&[want]).map_err(as_io)?;
        let bytes = check_chunk(&*self.remote, &want, len, got.pop().flatten()).map_err(as_io)?;
        if let Some(cache) = &self.cache
            && let Err(e) = cache.put_chunks(&[(want, &bytes)])
        {
            tracing::warn!("caching chunk {}: {e}", want.to_hex());
        }
        Ok(bytes)
    }
}

// -------------------------------------------------------------------------
// Store URLs

/// Splits `URL/ROOT` (what `cowvfs pull` and `run --from` take) into the
/// store URL and the root hash: the last path component, 64 hex digits.
pub fn split_root(url_with_root: &str) -> Result<(&str, blake3::Hash)> {
    let bad = || {
        Error::with(
            ErrorKind::InvalidInput,
            format!(
                "{url_with_root}: expected STORE/ROOT, ROOT being the 64-digit hex root hash \
                 that `cowvfs checkpoint info` prints"
            ),
        )
    };
    let t = url_with_root.trim_end_matches('/');
    let (url, root) = t.rsplit_once('/').ok_or_else(bad)?;
    if root.len() != 64 {
        return Err(bad());
    }
    let root = blake3::Hash::from_hex(root).map_err(|_| bad())?;
    // "/ROOT" or "s3://ROOT" would lose the store itself.
    if url.is_empty() || url.ends_with(':') || url.ends_with(":/") || url.ends_with("//") {
        return Err(bad());
    }
    Ok((url, root))
}

/// Opens the store at `url`: `s3://bucket/prefix` (needs the `s3`
/// feature; configured from the AWS_* environment variables),
/// `file:///path`, or a plain directory path. `create` makes a missing
/// directory store (for pushing); otherwise it is an error.
pub fn open_store(url: &str, create: bool) -> Result<Arc<dyn BlobStore>> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::with(
                ErrorKind::InvalidInput,
                format!("{url}: no bucket named"),
            ));
        }
        #[cfg(feature = "s3")]
        return Ok(Arc::new(S3Store::from_env(bucket, prefix)?));
        #[cfg(not(feature = "s3"))]
        return Err(Error::with(
            ErrorKind::Unsupported,
            format!("{url}: cowvfs was built without the `s3` feature ({bucket}/{prefix})"),
        ));
    }
    let path = match url.strip_prefix("file://") {
        Some(p) if p.starts_with('/') => PathBuf::from(p),
        Some(_) => {
            return Err(Error::with(
                ErrorKind::InvalidInput,
                format!("{url}: a file URL needs an absolute path (file:///dir)"),
            ));
        }
        None if url.contains("://") => {
            return Err(Error::with(
                ErrorKind::Unsupported,
                format!(
                    "{url}: unknown store (use s3://bucket/prefix, file:///dir or a directory)"
                ),
            ));
        }
        None => PathBuf::from(url),
    };
    if !create && !path.join("manifests").is_dir() {
        return Err(Error::with(
            ErrorKind::NotFound,
            format!("{}: not a cowvfs store", path.display()),
        ));
    }
    Ok(Arc::new(DirStore::open(path)?))
}

/// The host's chunk cache: `$COWVFS_CACHE`, else `$XDG_CACHE_HOME/cowvfs`,
/// else `~/.cache/cowvfs`. `COWVFS_CACHE=none` turns it off.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(c) = std::env::var_os("COWVFS_CACHE") {
        return (!c.is_empty() && c != "none").then(|| PathBuf::from(c));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("cowvfs"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("cowvfs"))
}

/// The most chunk bytes the host's cache keeps: `$COWVFS_CACHE_MAX` (a
/// size such as `2G`, see [`parse_size`](crate::parse_size)), else 10 GiB.
pub fn cache_max() -> Result<u64> {
    match std::env::var("COWVFS_CACHE_MAX") {
        Ok(s) => crate::parse_size(&s)
            .map_err(|e| Error::with(ErrorKind::InvalidInput, format!("COWVFS_CACHE_MAX: {e}"))),
        Err(_) => Ok(DEFAULT_CACHE_MAX),
    }
}

const DEFAULT_CACHE_MAX: u64 = 10 << 30;

/// How often a process that opens the cache checks its size.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Starts a background prune of the cache down to [`cache_max`] if no
/// process has pruned it for [`PRUNE_EVERY`] (a marker file's time says
/// when one did), so the cache stays bounded without slowing a start.
fn prune_now_and_then(cache: &DirStore, max: u64) -> Option<std::thread::JoinHandle<()>> {
    let marker = cache.root().join(".pruned");
    let recent = fs::metadata(&marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < PRUNE_EVERY);
    // Claim the turn first, so processes starting together prune once.
    if recent || fs::write(&marker, b"").is_err() {
        return None;
    }
    let cache = cache.clone();
    Some(std::thread::spawn(move || match cache.prune_chunks(max) {
        Ok(s) if s.removed > 0 => tracing::info!(
            removed = s.removed,
            removed_bytes = s.removed_bytes,
            kept_bytes = s.bytes - s.removed_bytes,
            "pruned the chunk cache"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("pruning the chunk cache: {e}"),
    }))
}

/// The cache to put in front of a store at `url`: none for a local
/// directory (it is a cache already), else the default cache if it can be
/// opened. Opening it may prune it in the background (see [`cache_max`]).
pub fn cache_for(url: &str) -> Option<Arc<dyn BlobStore>> {
    if !url.starts_with("s3://") {
        return None;
    }
    let dir = default_cache_dir()?;
    match DirStore::open(&dir) {
        Ok(d) => {
            match cache_max() {
                Ok(max) => drop(prune_now_and_then(&d, max)),
                Err(e) => tracing::warn!("chunk cache not pruned: {e}"),
            }
            Some(Arc::new(d))
        }
        Err(e) => {
            tracing::warn!("chunk cache off: {e}");
            None
        }
    }
}

/// Opens `URL/ROOT` lazily (see [`open_lazy`]) with the default cache:
/// what `cowvfs run --from URL/ROOT` uses.
pub fn open_url(url_with_root: &str) -> Result<Snapshot> {
    open_url_with_limits(url_with_root, &Limits::default())
}

/// [`open_url`] under `limits` (see [`open_lazy_with_limits`]).
pub fn open_url_with_limits(url_with_root: &str, limits: &Limits) -> Result<Snapshot> {
    let (url, root) = split_root(url_with_root)?;
    let store = open_store(url, false)?;
    open_lazy_with_limits(store, &root, cache_for(url), limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vfs;

    #[test]
    fn opening_the_cache_prunes_it_at_most_every_few_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DirStore::open(dir.path()).unwrap();
        let a = blake3::hash(b"one");
        cache.put_chunks(&[(a, b"one")]).unwrap();
        // No marker yet: a prune runs, in the background.
        let job = prune_now_and_then(&cache, 0).expect("a prune starts");
        job.join().unwrap();
        assert_eq!(cache.has_chunks(&[a]).unwrap(), [false]);
        assert!(dir.path().join(".pruned").is_file());
        // Pruned a moment ago: the next open leaves the cache alone.
        cache.put_chunks(&[(a, b"one")]).unwrap();
        assert!(prune_now_and_then(&cache, 0).is_none());
        assert_eq!(cache.has_chunks(&[a]).unwrap(), [true]);
    }

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
        let cache = Arc::new(MemStore::new());
        let lazy = open_lazy(store.clone(), &pushed.root, Some(cache.clone())).unwrap();
        assert_eq!(meter.totals().0 - before.0, 1, "only the manifest");
        assert_eq!(lazy.read_file("/a/b/small").unwrap(), b"small");
        let (gets, bytes, ..) = meter.totals();
        assert_eq!(gets - before.0, 2);
        assert!(bytes - before.1 < 2_000, "{}", bytes - before.1);
        assert_eq!(cache.chunk_count(), 1);
        // A second lazy open reads through the cache: no chunk fetched.
        let again = open_lazy(store.clone(), &pushed.root, Some(cache)).unwrap();
        assert_eq!(again.read_file("/a/b/small").unwrap(), b"small");
        assert_eq!(meter.totals().0 - gets, 1);
    }

    #[test]
    fn corrupt_and_missing_chunks_are_errors_not_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemStore::new());
        let mut v = Vfs::new();
        v.write_file("/f", b"the real bytes").unwrap();
        v.write_file("/g", b"other").unwrap();
        let snap = v.snapshot();
        let pushed = push(&snap, &*store, &TransferOptions::default()).unwrap();
        let addr = blake3::hash(b"the real bytes");
        store.corrupt_chunk(&addr, b"the fake bytes".to_vec());

        let out = dir.path().join("out.ck");
        let e = pull(
            &*store,
            &pushed.root,
            &out,
            None,
            &TransferOptions::default(),
        )
        .unwrap_err();
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
        let e = pull(
            &*store,
            &pushed.root,
            &out,
            None,
            &TransferOptions::default(),
        )
        .unwrap_err();
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

    #[test]
    fn urls() {
        let root = blake3::hash(b"r");
        let hex = root.to_hex();
        let s = format!("s3://bucket/some/prefix/{hex}");
        assert_eq!(split_root(&s).unwrap(), ("s3://bucket/some/prefix", root));
        let s = format!("/var/store/{hex}/");
        assert_eq!(split_root(&s).unwrap(), ("/var/store", root));
        assert!(split_root("s3://bucket/prefix").is_err());
        assert!(split_root(&format!("s3://{hex}")).is_err());
        assert!(split_root(&hex).is_err());
        assert!(open_store("gs://bucket", true).is_err());
        assert!(open_store("file://relative", true).is_err());
        assert_eq!(
            open_store("/nonexistent/store", false).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}
