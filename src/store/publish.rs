//! Publishing a pushed tree's manifest, and making sure a garbage
//! collection running meanwhile deletes nothing the push wrote over
//! (issue #17; DESIGN.md, "Garbage collection"): [`write_manifest`]
//! creates the manifest if there is none, [`confirm`] waits out a running
//! collection and writes again what it deleted; [`pack_chunks`] packs
//! and indexes chunks for the push and for those rewrites.

use std::collections::HashSet;
use std::ops::Range;

use super::catalog::Catalog;
use super::lease;
use super::pack::PackRecord;
use super::packer::{Packed, Packer};
use super::{BlobStore, io_err, manifest_key};
use crate::error::{Error, ErrorKind, Result};

/// Writes the manifest of `root`: created if there is none, otherwise
/// written again over the one there. Whether it wrote over one.
///
/// A created manifest is safe from any collection running: a collection
/// deletes only manifests it listed, so one that would delete this one
/// listed it after it was written, and finds it young. A store without
/// conditional writes holds no collection lease, so no collection runs
/// there.
pub(super) fn write_manifest(store: &dyn BlobStore, root: &blake3::Hash, m: &[u8]) -> Result<bool> {
    let failed = |e: Error| {
        io_err(format!(
            "publishing manifest {} to {}: {}",
            root.to_hex(),
            store.location(),
            e.context().unwrap_or("failed")
        ))
    };
    if store.create_manifest(root, m).map_err(failed)? {
        return Ok(false);
    }
    store.put_manifest(root, m).map_err(failed)?;
    Ok(true)
}

/// A tree being pushed: its root, manifest and chunks.
pub(super) struct Tree<'a> {
    pub(super) root: &'a blake3::Hash,
    pub(super) manifest: &'a [u8],
    pub(super) addrs: &'a [blake3::Hash],
    pub(super) chunks: &'a [crate::chunk::Chunk],
}

/// What a push wrote over, which a collection may be about to delete.
pub(super) struct AtRisk {
    /// The manifest was there already.
    pub(super) manifest: bool,
    /// Packs a collection had condemned, uploaded again.
    pub(super) packs: Vec<PackRecord>,
}

/// Rounds of writing again what a collection deleted before a push gives
/// up.
const CONFIRM_ROUNDS: usize = 8;

/// Makes sure no collection that was running deletes what the push wrote
/// over (issue #17; DESIGN.md, "Garbage collection"). A collection that
/// deletes such an object after the push wrote it listed the store before
/// the write, and holds the lease from before its listing until after its
/// deletes. So once the push has read the lease after its writes, either
/// the collection held it then (the push waits for it to go, see
/// `lease::wait_for_collection`) or it had released it, deletes done.
/// Either way, looking afterwards shows whether the object went: what
/// went is written again (packs first, then the manifest, created), and
/// the round repeats for what that wrote over.
pub(super) fn confirm(
    store: &dyn BlobStore,
    tree: &Tree<'_>,
    mut risk: AtRisk,
    pack_size: u64,
    catalog: &Catalog,
    packed: &mut Packed,
) -> Result<()> {
    let what = format!("manifest {}", tree.root.to_hex());
    let failed = |e: Error| {
        io_err(format!(
            "pushing to {}: {what} was published, but a garbage collection running \
             meanwhile may have deleted what it needs, and checking that failed: {} \
             (pushing again mends it)",
            store.location(),
            e.context().unwrap_or("failed")
        ))
    };
    for _ in 0..CONFIRM_ROUNDS {
        if !risk.manifest && risk.packs.is_empty() {
            return Ok(());
        }
        lease::wait_for_collection(store, &what).map_err(failed)?;
        let mkey = manifest_key(tree.root);
        let pkeys: Vec<String> = risk.packs.iter().map(PackRecord::key).collect();
        let mut reqs: Vec<(&str, Range<u64>)> = pkeys.iter().map(|k| (k.as_str(), 0..1)).collect();
        if risk.manifest {
            reqs.push((&mkey, 0..1));
        }
        let got = store.get_ranges(&reqs).map_err(failed)?;
        if got.len() != reqs.len() {
            return Err(failed(io_err(format!(
                "asked for {} objects, heard of {}",
                reqs.len(),
                got.len()
            ))));
        }
        let manifest_gone = risk.manifest && got.last().is_some_and(Option::is_none);
        let lost_addrs: HashSet<[u8; 32]> = risk
            .packs
            .iter()
            .zip(&got)
            .filter(|(_, g)| g.is_none())
            .flat_map(|(r, _)| r.entries.iter().map(|e| e.addr))
            .collect();
        risk = AtRisk {
            manifest: false,
            packs: Vec::new(),
        };
        if !lost_addrs.is_empty() {
            let lost = first_of_each(tree.addrs, |a| lost_addrs.contains(a.as_bytes()));
            tracing::warn!(
                "{}: a garbage collection deleted {} chunks of {what} as they were pushed; \
                 uploading them again",
                store.location(),
                lost.len()
            );
            let more = pack_chunks(
                store,
                pack_size,
                tree.addrs,
                tree.chunks,
                &lost,
                catalog,
                &mut |_| {},
            )
            .map_err(failed)?;
            packed.count(&more);
            risk.packs = more.rewrote;
        }
        if manifest_gone {
            tracing::warn!(
                "{}: a garbage collection deleted {what} as it was pushed; writing it again",
                store.location()
            );
            // Created, or made meanwhile by another writer: either way
            // not written over a manifest a collection listed.
            store
                .create_manifest(tree.root, tree.manifest)
                .map_err(failed)?;
        }
    }
    Err(failed(Error::with(
        ErrorKind::Busy,
        format!("garbage collections deleted what it wrote again {CONFIRM_ROUNDS} times running"),
    )))
}

/// The index of the first occurrence of each address in `addrs` that
/// `keep` picks, in order: the chunks to upload, each once.
pub(super) fn first_of_each(
    addrs: &[blake3::Hash],
    keep: impl Fn(&blake3::Hash) -> bool,
) -> Vec<usize> {
    let mut seen = HashSet::new();
    (0..addrs.len())
        .filter(|&i| keep(&addrs[i]) && seen.insert(addrs[i]))
        .collect()
}

/// Packs the chunks `which` (indexes into `addrs` and `chunks`) and
/// publishes their index, telling `catalog` what it now holds; `progress`
/// hears the bytes of chunks as their packs become durable.
pub(super) fn pack_chunks(
    store: &dyn BlobStore,
    pack_size: u64,
    addrs: &[blake3::Hash],
    chunks: &[crate::chunk::Chunk],
    which: &[usize],
    catalog: &Catalog,
    progress: &mut dyn FnMut(u64),
) -> Result<Packed> {
    let mut packer = Packer::new(store, pack_size, progress)?;
    for &i in which {
        packer.add(&addrs[i], chunks[i].trimmed()?)?;
    }
    packer.finish(Some(catalog))
}
