//! Moving trees between a host and a store: [`push`] packs what the store
//! lacks, publishes the packs' index, then the manifest last; [`pull`]
//! writes a checkpoint file from a store; [`open_lazy`] starts a tree at
//! once and fetches chunks on first read (with read-ahead, see `lazy`).
//! Every manifest and chunk is checked on arrival.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::catalog::{self, Catalog};
use super::fetch::{self, MAX_SPAN};
use super::lazy::{CatalogSlot, StoreSource};
use super::pack::DEFAULT_PACK_SIZE;
use super::publish;
use super::{BlobStore, MAX_MANIFEST_OBJECT, MemStore, io_err, manifest, oversized};
use crate::checkpoint::{self, StoreMeta};
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
    /// Bytes a push aims for per pack object (default
    /// [`DEFAULT_PACK_SIZE`], 16 MiB; at most [`super::MAX_PACK_SIZE`]).
    pub pack_size: u64,
    /// Where a push keeps the store's index objects it reads (the host's
    /// chunk cache), so the next push reads only new ones.
    pub cache: Option<&'a dyn BlobStore>,
}

impl Default for TransferOptions<'_> {
    fn default() -> Self {
        TransferOptions {
            batch: 32,
            progress: None,
            pack_size: DEFAULT_PACK_SIZE,
            cache: None,
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
    /// Pack objects written (push).
    pub packs: u64,
}

/// Bytes of fetched chunks a pull holds before handing them on.
const PULL_BATCH_BYTES: u64 = 4 * MAX_SPAN;

/// The same for a pull without a cache, which writes the file as chunks
/// arrive: smaller batches start the writing (and the file's hash)
/// sooner and leave less of it for after the last byte arrives.
const STREAM_BATCH_BYTES: u64 = 2 * MAX_SPAN;

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

/// Uploads `snap` to `store`: the chunks the store lacks, in packs (see
/// `pack`), then an index object listing those packs, then the manifest.
/// What the store holds is learned from its index objects and a listing
/// of loose chunks (a store written before packs), not one request per
/// chunk. If anything fails the manifest is not written, so no reader
/// sees a tree with missing chunks; pushing again resumes (packs already
/// uploaded are not sent twice). A push that wrote over a manifest or a
/// condemned pack a running garbage collection may be about to delete
/// waits for that collection to end and writes again whatever it deleted
/// (see `publish::confirm`).
pub fn push(
    snap: &Snapshot,
    store: &dyn BlobStore,
    opts: &TransferOptions<'_>,
) -> Result<TransferStats> {
    super::packer::check_target(opts.pack_size)?;
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
    // The manifest is checked before anything moves.
    let m = manifest::encode(&root, &meta);
    if m.len() as u64 > MAX_MANIFEST_OBJECT {
        return Err(oversized(
            &format!("the manifest of {}", root.to_hex()),
            Some(m.len() as u64),
            MAX_MANIFEST_OBJECT,
        ));
    }
    let cut = |e: Error| {
        io_err(format!(
            "pushing to {}: {} (nothing was published; pushing again resumes)",
            store.location(),
            e.context().unwrap_or("failed")
        ))
    };
    let (catalog, loose) = std::thread::scope(|s| {
        let loose = s.spawn(|| loose_chunks(store));
        let catalog = Catalog::load(store, opts.cache);
        let loose = loose
            .join()
            .unwrap_or_else(|_| Err(io_err("listing thread failed")));
        (catalog, loose)
    });
    let catalog = catalog.map_err(cut)?;
    let loose = loose.map_err(cut)?;
    let todo = publish::first_of_each(&addrs, |a| {
        catalog.locate(a).is_none() && !loose.contains(a)
    });
    // Whether this push counts on packs already in the store (see the
    // check after the manifest).
    let relied = addrs.iter().any(|a| catalog.locate(a).is_some());
    let total: u64 = todo.iter().map(|&i| chunks[i].trimmed_len() as u64).sum();
    if let Some(p) = opts.progress {
        p(0, total);
    }
    let mut packed = super::packer::Packed::default();
    if !todo.is_empty() {
        catalog::ensure_version(store, catalog.version()).map_err(cut)?;
        let mut done = 0u64;
        let mut heard = |n: u64| {
            done += n;
            if let Some(p) = opts.progress {
                p(done, total);
            }
        };
        packed = publish::pack_chunks(
            store,
            opts.pack_size,
            &addrs,
            &chunks,
            &todo,
            &catalog,
            &mut heard,
        )
        .map_err(cut)?;
        // Not part of the push's promise: a failure here loses nothing.
        if let Err(e) = super::packer::compact(store, &catalog) {
            tracing::warn!("{}: merging index objects: {e}", store.location());
        }
    }
    let overwrote = publish::write_manifest(store, &root, &m)?;
    // A garbage collection that listed the store before this manifest
    // existed may have taken packs this push relied on out of the index.
    // It replaces every index object naming such a pack, so a push that
    // still finds every index object it read lost nothing; otherwise it
    // uploads again what the index no longer places (DESIGN.md, "Garbage
    // collection").
    // (A push that relied on no pack has nothing to check.)
    let listed = if relied {
        store.list("index/").map_err(cut)?
    } else {
        Vec::new()
    };
    let listed: HashSet<&str> = listed.iter().map(String::as_str).collect();
    if relied
        && catalog
            .good_keys()
            .iter()
            .any(|k| !listed.contains(k.as_str()))
    {
        let again = Catalog::load(store, None).map_err(cut)?;
        let lost =
            publish::first_of_each(&addrs, |a| again.locate(a).is_none() && !loose.contains(a));
        if !lost.is_empty() {
            let more = publish::pack_chunks(
                store,
                opts.pack_size,
                &addrs,
                &chunks,
                &lost,
                &again,
                &mut |_| {},
            )
            .map_err(cut)?;
            packed.count(&more);
            packed.rewrote.extend(more.rewrote);
        }
    }
    // What this push wrote over (its manifest, packs a collection had
    // condemned) may be what a running collection is about to delete.
    let rewrote = std::mem::take(&mut packed.rewrote);
    let at_risk = publish::AtRisk {
        manifest: overwrote,
        packs: rewrote,
    };
    let tree = publish::Tree {
        root: &root,
        manifest: &m,
        addrs: &addrs,
        chunks: &chunks,
    };
    publish::confirm(store, &tree, at_risk, opts.pack_size, &catalog, &mut packed)?;
    Ok(TransferStats {
        root,
        chunks: chunks.len() as u64,
        chunk_bytes,
        moved_chunks: packed.chunks,
        moved_bytes: packed.bytes,
        manifest_bytes: m.len() as u64,
        packs: packed.packs,
    })
}

/// Uploads `snap` the way stores were written before packs (format 1):
/// each chunk the store lacks (one existence check each) as its own
/// `chunks/..` object, then the manifest. For tests and benchmarks of
/// reading and migrating such stores; [`push`] is what to use.
#[doc(hidden)]
pub fn push_loose(
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
    let todo = missing(store, &addrs)?;
    let mut moved = 0u64;
    for part in todo.chunks(opts.batch.max(1)) {
        let batch: Vec<(blake3::Hash, &[u8])> = part
            .iter()
            .map(|&i| Ok((addrs[i], chunks[i].trimmed()?)))
            .collect::<Result<_>>()?;
        store.put_chunks(&batch)?;
        moved += batch.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
    }
    let m = manifest::encode(&root, &meta);
    store.put_manifest(&root, &m)?;
    Ok(TransferStats {
        root,
        chunks: chunks.len() as u64,
        chunk_bytes: chunks.iter().map(|c| c.trimmed_len() as u64).sum(),
        moved_chunks: todo.len() as u64,
        moved_bytes: moved,
        manifest_bytes: m.len() as u64,
        packs: 0,
    })
}

/// The loose chunk objects a store holds (`chunks/ab/<hex>`, written by
/// the format before packs), from a listing.
pub(crate) fn loose_chunks(store: &dyn BlobStore) -> Result<HashSet<blake3::Hash>> {
    Ok(store
        .list("chunks/")?
        .iter()
        .filter_map(|k| {
            let rest = k.strip_prefix("chunks/")?;
            let (fan, hex) = rest.split_once('/')?;
            let h = super::pack::parse_name(hex, "")?;
            (fan.len() == 2 && hex.starts_with(fan)).then_some(h)
        })
        .collect())
}

/// A checked manifest: metadata bytes (the checkpoint encoding), the
/// chunks (address, length) in order, and the manifest object's size.
type Fetched = (Vec<u8>, Vec<(blake3::Hash, u32)>, u64);

/// Fetches and checks the manifest for `root`, its lists decoded within
/// `budget` bytes (the opener's `max_bytes`; none for a pull, which makes
/// a file and loads nothing).
fn fetch_manifest(store: &dyn BlobStore, root: &blake3::Hash, budget: u64) -> Result<Fetched> {
    let bytes = manifest_object(store, root)?;
    let (inner, meta) = checked_meta(store, root, &bytes, budget)?;
    Ok((inner.to_vec(), meta.chunks(), bytes.len() as u64))
}

/// The manifest object of `root`, unchecked; `NotFound` if there is none.
fn manifest_object(store: &dyn BlobStore, root: &blake3::Hash) -> Result<Vec<u8>> {
    store.get_manifest(root)?.ok_or_else(|| {
        Error::with(
            ErrorKind::NotFound,
            format!("{}: no tree with root {}", store.location(), root.to_hex()),
        )
    })
}

/// The metadata inside manifest object `bytes`: its bytes, and decoded
/// once within `budget`, checked to describe the tree `root`.
fn checked_meta<'b>(
    store: &dyn BlobStore,
    root: &blake3::Hash,
    bytes: &'b [u8],
    budget: u64,
) -> Result<(&'b [u8], StoreMeta<'b>)> {
    let in_it = |e| in_manifest(store, root, e);
    let inner = manifest::decode(root, bytes).map_err(in_it)?;
    let meta = StoreMeta::decode(inner, budget).map_err(in_it)?;
    if meta.root() != *root {
        return Err(in_it(Error::corrupt("it describes another tree")));
    }
    Ok((inner, meta))
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

/// Downloads the tree `root` from `store` into a checkpoint file at `out`
/// (saved atomically). Chunks already in `cache` are not fetched; fetched
/// ones are verified and kept there. Without a cache each is written
/// into the file as soon as it is verified. Packed chunks come by ranged reads,
/// adjacent ones of a pack in one request, several requests at once.
pub fn pull(
    store: &dyn BlobStore,
    root: &blake3::Hash,
    out: impl AsRef<Path>,
    cache: Option<Arc<dyn BlobStore>>,
    opts: &TransferOptions<'_>,
) -> Result<TransferStats> {
    let ((meta, chunks, manifest_bytes), catalog) = manifest_and_catalog(store, root, &cache)?;
    let Some(local) = cache else {
        return pull_streamed(store, root, out.as_ref(), opts, &meta, &chunks, &catalog).map(
            |moved| TransferStats {
                root: *root,
                chunks: chunks.len() as u64,
                chunk_bytes: moved,
                moved_chunks: chunks.len() as u64,
                moved_bytes: moved,
                manifest_bytes,
                packs: 0,
            },
        );
    };
    // The tree is checked (structure, root hash, the loader's limits)
    // before any chunk moves: a hostile manifest is refused without
    // downloading what it names. Building it reads no chunk.
    let unread = Arc::new(StoreSource::new(
        Arc::new(MemStore::new()),
        None,
        None,
        chunks.clone(),
        Vec::new(),
    ));
    checkpoint::open_meta(&meta, unread, &Limits::default())?;
    let addrs: Vec<blake3::Hash> = chunks.iter().map(|c| c.0).collect();
    let todo = missing(&*local, &addrs)?;
    let wants: Vec<(blake3::Hash, u32)> = todo.iter().map(|&i| chunks[i]).collect();
    let total: u64 = wants.iter().map(|c| c.1 as u64).sum();
    if let Some(p) = opts.progress {
        p(0, total);
    }
    let mut done = 0u64;
    let mut pending: Vec<(blake3::Hash, Vec<u8>)> = Vec::new();
    let mut pending_bytes = 0u64;
    let flush = |pending: &mut Vec<(blake3::Hash, Vec<u8>)>, done: &mut u64| -> Result<()> {
        let refs: Vec<(blake3::Hash, &[u8])> =
            pending.iter().map(|(a, b)| (*a, b.as_slice())).collect();
        local.put_chunks(&refs)?;
        *done += refs.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        pending.clear();
        if let Some(p) = opts.progress {
            p(*done, total);
        }
        Ok(())
    };
    fetch::fetch_chunks(
        store,
        &catalog,
        &wants,
        PULL_BATCH_BYTES,
        true,
        &mut |i, b| {
            pending_bytes += b.len() as u64;
            pending.push((wants[i].0, b));
            if pending.len() >= opts.batch.max(1) || pending_bytes >= PULL_BATCH_BYTES {
                pending_bytes = 0;
                flush(&mut pending, &mut done)?;
            }
            Ok(())
        },
    )?;
    flush(&mut pending, &mut done)?;
    // Every chunk is local and verified now; saving reads them from there.
    let source = Arc::new(StoreSource::new(
        local,
        None,
        None,
        chunks.clone(),
        Vec::new(),
    ));
    let snap = checkpoint::open_meta(&meta, source, &Limits::default())?;
    snap.save(out)?;
    Ok(TransferStats {
        root: *root,
        chunks: chunks.len() as u64,
        chunk_bytes: chunks.iter().map(|c| c.1 as u64).sum(),
        moved_chunks: wants.len() as u64,
        moved_bytes: total,
        manifest_bytes,
        packs: 0,
    })
}

/// A pull without a cache: every chunk is fetched, checked against its
/// address as it arrives, and written at once at its own offset in the
/// checkpoint file (the chunk table gives every offset up front) by the
/// thread that checked it, while its bytes are still in cache. No chunk is
/// hashed against its address twice or copied on the way (the file's
/// trailing hash covers its header and metadata only). The tree is checked
/// (structure, root hash, the loader's limits) before any chunk moves. The
/// chunk bytes moved.
fn pull_streamed(
    store: &dyn BlobStore,
    root: &blake3::Hash,
    out: &Path,
    opts: &TransferOptions<'_>,
    meta: &[u8],
    chunks: &[(blake3::Hash, u32)],
    catalog: &Catalog,
) -> Result<u64> {
    // Building the tree reads no chunk (the writer takes them from the
    // download): the source it is built over stays empty.
    let unread = Arc::new(StoreSource::new(
        Arc::new(MemStore::new()),
        None,
        None,
        chunks.to_vec(),
        Vec::new(),
    ));
    let snap = checkpoint::open_meta(meta, unread, &Limits::default())?;
    let total: u64 = chunks.iter().map(|c| c.1 as u64).sum();
    if let Some(p) = opts.progress {
        p(0, total);
    }
    // An error of the writer's own passes through the download unchanged;
    // the download's own gets named as the pull's.
    let writing_failed = AtomicBool::new(false);
    checkpoint::save_verified(&snap, out, chunks, &mut |placer| {
        let (mut done, mut reported) = (0u64, 0u64);
        let failed = |e: Error| {
            writing_failed.store(true, Ordering::Relaxed);
            e
        };
        let place = |i: usize, b: &[u8]| placer.put(i, b).map_err(failed);
        let fetched = fetch::fetch_placed(
            store,
            catalog,
            chunks,
            STREAM_BATCH_BYTES,
            true,
            Some(&place),
            &mut |_, b| {
                done += b.len() as u64;
                if let Some(p) = opts.progress
                    && (done - reported >= 4 << 20 || done == total)
                {
                    reported = done;
                    p(done, total);
                }
                Ok(())
            },
        );
        fetched.map_err(|e| {
            if writing_failed.load(Ordering::Relaxed) {
                e
            } else {
                Error::with(
                    e.kind(),
                    format!(
                        "pulling {} from {}: {}",
                        root.to_hex(),
                        store.location(),
                        e.context().unwrap_or("failed")
                    ),
                )
            }
        })
    })?;
    Ok(total)
}

/// The checked manifest of `root` and the store's catalog, read at once
/// (the catalog's index objects through `cache` when there is one).
fn manifest_and_catalog(
    store: &dyn BlobStore,
    root: &blake3::Hash,
    cache: &Option<Arc<dyn BlobStore>>,
) -> Result<(Fetched, Catalog)> {
    std::thread::scope(|s| {
        let cat = s.spawn(|| Catalog::load(store, cache.as_deref()));
        let m = fetch_manifest(store, root, u64::MAX);
        let cat = cat
            .join()
            .unwrap_or_else(|_| Err(io_err("catalog thread failed")));
        Ok((m?, cat?))
    })
}

/// Lazily opens the tree `root` from `store`: costs the manifest and the
/// store's catalog (read at once); chunks are fetched on first read, with
/// read-ahead, verified, and kept in `cache` (if given) for the next run.
/// A chunk that is missing or corrupt is an I/O error to whoever reads
/// it; a file nobody reads moves nothing.
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
    open_lazy_source(store, root, cache, limits, super::ahead::MAX_HELD).map(|(snap, _)| snap)
}

/// [`open_lazy_with_limits`] holding at most `cap` bytes of read-ahead;
/// the tree and its chunk source. One round trip reads the manifest, the
/// store's version and the listing of its index objects at once; the
/// index objects (a second round trip) are read in the background while
/// the tree is built, and the first chunk fetch waits for them.
pub(crate) fn open_lazy_source(
    store: Arc<dyn BlobStore>,
    root: &blake3::Hash,
    cache: Option<Arc<dyn BlobStore>>,
    limits: &Limits,
    cap: u64,
) -> Result<(Snapshot, Arc<StoreSource>)> {
    // The index objects are asked for as soon as the listing is in,
    // while the manifest may still be arriving or being checked. The
    // manifest is decoded once: its chunk list, its read-ahead runs and
    // the tree all come from that one decode.
    let for_catalog = (store.clone(), cache.clone());
    std::thread::scope(|s| {
        let cat = s.spawn(move || {
            let (store, cache) = for_catalog;
            // A tree of this store is open already: its catalog, brought
            // up to date, rather than a second copy of the store's index.
            if let Some(shared) = super::lazy::shared_catalog(&store) {
                return Ok(CatalogSlot::refresh_in_background(store, cache, shared));
            }
            Catalog::begin(&*store).map(|(catalog, listed)| {
                CatalogSlot::finish_in_background(store, cache, catalog, listed)
            })
        });
        let bytes = manifest_object(&*store, root);
        let meta = bytes
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|b| checked_meta(&*store, root, b, limits.max_bytes))
            .map(|(_, meta)| meta);
        let slot = cat
            .join()
            .unwrap_or_else(|_| Err(io_err("catalog thread failed")));
        let meta = meta?;
        let source = Arc::new(StoreSource::with_cap(
            store.clone(),
            Some(slot?),
            cache,
            meta.chunks(),
            meta.file_runs(),
            cap,
        ));
        let snap = meta.open(source.clone(), limits)?;
        Ok((snap, source))
    })
}
