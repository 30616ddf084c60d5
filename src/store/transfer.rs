//! Moving trees between a host and a store: [`push`] uploads what the
//! store lacks and publishes the manifest last; [`pull`] writes a
//! checkpoint file from a store; [`open_lazy`] starts a tree at once and
//! fetches each chunk on first read. Every manifest and chunk is checked
//! on arrival.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::{BlobStore, MAX_MANIFEST_OBJECT, MemStore, io_err, manifest, oversized};
use crate::checkpoint;
use crate::chunk::ChunkSource;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::vfs::Snapshot;

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
            Error::corrupt("it describes another tree"),
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
        return Err(Error::corrupt(format!(
            "{}: chunk {} is corrupt (its bytes do not match its address)",
            store.location(),
            addr.to_hex()
        )));
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
