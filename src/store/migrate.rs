//! Migrating a store written one object per chunk (format 1) to packs:
//! every loose chunk is read, checked against its address, written into
//! packs, and removed only once an index object listing its pack is
//! durable. Chunks go into packs in the order the store's trees list them
//! (each tree's files in order), so a reader of a file still finds its
//! chunks side by side; loose chunks no tree names follow.
//!
//! Safe to interrupt and to run again: a chunk is deleted only after it is
//! packed and indexed, and a chunk already packed is not packed twice.
//! Safe beside readers: a reader finds each chunk loose, or packed, or
//! (between the two) both.

use std::collections::HashSet;

use super::catalog::{self, Catalog};
use super::fetch;
use super::manifest;
use super::pack::parse_name;
use super::packer::Packer;
use super::transfer::loose_chunks;
use super::{BlobStore, MAX_MANIFEST_OBJECT, TransferOptions, chunk_key, io_err};
use crate::checkpoint;
use crate::error::{Error, Result};

/// Loose chunks read per batch call.
const BATCH: usize = 64;

/// What [`migrate`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrateStats {
    /// Loose chunk objects found.
    pub loose: u64,
    /// Of them, chunks written into new packs.
    pub packed_chunks: u64,
    /// Their bytes.
    pub packed_bytes: u64,
    /// Packs written.
    pub packs: u64,
    /// Loose chunk objects removed (all of them, on success).
    pub removed: u64,
}

/// Packs the loose chunks of `store` (see the module docs); the packs aim
/// at `opts.pack_size` bytes and `opts.progress` hears the bytes packed.
pub fn migrate(store: &dyn BlobStore, opts: &TransferOptions<'_>) -> Result<MigrateStats> {
    super::packer::check_target(opts.pack_size)?;
    let catalog = Catalog::load(store, None)?;
    let loose = loose_chunks(store)?;
    let mut stats = MigrateStats {
        loose: loose.len() as u64,
        ..MigrateStats::default()
    };
    // Tree order first, then the rest by address.
    let mut order: Vec<blake3::Hash> = Vec::with_capacity(loose.len());
    let mut placed = HashSet::new();
    for key in store.list("manifests/")? {
        let Some(root) = parse_name(&key, "manifests/") else {
            continue;
        };
        let Some(bytes) = store.get_manifest(&root)? else {
            continue;
        };
        if bytes.len() as u64 > MAX_MANIFEST_OBJECT {
            continue;
        }
        // A damaged manifest only loses the ordering hint.
        let Ok(meta) = manifest::decode(&root, &bytes) else {
            tracing::warn!(
                "{}/{key}: damaged; its chunks are packed by address",
                store.location()
            );
            continue;
        };
        let Ok((_, table)) = checkpoint::meta_chunks(meta, u64::MAX) else {
            continue;
        };
        for (addr, _) in table {
            if loose.contains(&addr) && placed.insert(addr) {
                order.push(addr);
            }
        }
    }
    let mut rest: Vec<blake3::Hash> = loose
        .iter()
        .filter(|a| !placed.contains(*a))
        .copied()
        .collect();
    rest.sort_unstable_by_key(|a| *a.as_bytes());
    order.extend(rest);
    let (todo, already): (Vec<blake3::Hash>, Vec<blake3::Hash>) =
        order.iter().partition(|a| catalog.locate(a).is_none());
    // Loose chunks this run packed, and so may remove.
    let mut removable: Vec<blake3::Hash> = Vec::with_capacity(order.len());

    if !todo.is_empty() {
        catalog::ensure_version(store, catalog.version())?;
        let mut done = 0u64;
        let mut heard = |n: u64| {
            done += n;
            if let Some(p) = opts.progress {
                p(done, 0);
            }
        };
        let mut packer = Packer::new(store, opts.pack_size, &mut heard)?;
        for part in todo.chunks(BATCH) {
            let got = store.get_chunks(part)?;
            if got.len() != part.len() {
                return Err(io_err(format!(
                    "{}: asked for {} chunks, got {}",
                    store.location(),
                    part.len(),
                    got.len()
                )));
            }
            for (addr, g) in part.iter().zip(got) {
                let Some(bytes) = g else {
                    // Removed since the listing (another migrate).
                    continue;
                };
                if blake3::hash(&bytes) != *addr {
                    return Err(Error::corrupt(format!(
                        "{}/{}: loose chunk is corrupt (its bytes do not match its address); \
                         nothing was removed",
                        store.location(),
                        chunk_key(addr)
                    )));
                }
                packer.add(addr, &bytes)?;
                removable.push(*addr);
            }
        }
        let p = packer.finish(Some(&catalog))?;
        stats.packed_chunks = p.chunks;
        stats.packed_bytes = p.bytes;
        stats.packs = p.packs;
    } else if !loose.is_empty() {
        catalog::ensure_version(store, catalog.version())?;
    }
    // Loose copies of chunks packed before go only once their packed copy
    // reads back whole; if it does not, they stay.
    if !already.is_empty() {
        let wants: Vec<(blake3::Hash, u32)> = already
            .iter()
            .filter_map(|a| catalog.locate(a).map(|l| (*a, l.len)))
            .collect();
        match fetch::fetch_chunks(
            store,
            &catalog,
            &wants,
            4 * fetch::MAX_SPAN,
            true,
            &mut |_, _| Ok(()),
        ) {
            Ok(()) => removable.extend(wants.iter().map(|w| w.0)),
            Err(e) => tracing::warn!("keeping loose chunks whose packed copy fails: {e}"),
        }
    }
    let keys: Vec<String> = removable.iter().map(chunk_key).collect();
    for part in keys.chunks(1000) {
        let refs: Vec<&str> = part.iter().map(String::as_str).collect();
        store.delete_objects(&refs)?;
        stats.removed += refs.len() as u64;
    }
    Ok(stats)
}
