//! What a garbage collection reads of a store (`gc.rs`): the listing it
//! starts from (manifests, packs, loose chunks, with their sizes and ages,
//! and every index object and tombstone, decoded and checked), the chunks
//! a kept manifest names, and the packs of index objects that appeared
//! since the listing. A damaged object is an error naming it, so the
//! collection stops before it writes or deletes anything.

use std::collections::{HashMap, HashSet};

use super::pack::{self, PackRecord, parse_name};
use super::tombstone::{self, Tomb};
use super::{BlobStore, MAX_INDEX_OBJECT, MAX_MANIFEST_OBJECT, ObjectInfo, manifest};
use crate::checkpoint;
use crate::error::{Error, ErrorKind, Result};

/// Objects read or deleted in one batch of requests.
pub(super) const BATCH: usize = 256;

/// What the store holds, as listed at the start of a run.
pub(super) struct Listing {
    pub(super) manifests: HashMap<blake3::Hash, ObjectInfo>,
    pub(super) packs: HashMap<blake3::Hash, ObjectInfo>,
    pub(super) index: Vec<(ObjectInfo, Vec<PackRecord>)>,
    pub(super) loose: HashMap<blake3::Hash, ObjectInfo>,
    pub(super) tombs: Vec<(ObjectInfo, Tomb)>,
}

/// Packs listed by index objects that appeared since `ls` was taken.
pub(super) fn fresh_packs(store: &dyn BlobStore, ls: &Listing) -> Result<HashSet<String>> {
    let known: HashSet<&str> = ls.index.iter().map(|(i, _)| i.key.as_str()).collect();
    let new: Vec<String> = store
        .list("index/")?
        .into_iter()
        .filter(|k| !known.contains(k.as_str()) && parse_name(k, "index/").is_some())
        .collect();
    let mut out = HashSet::new();
    for k in new {
        // Ours (just written) or a push's: either way its packs stay. A
        // damaged one is read as listing every pack: nothing is deleted.
        match super::read_index(store, &k) {
            Ok(recs) => out.extend(recs.iter().map(PackRecord::key)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The chunks the manifest of `root` names, checked; `None` if the store
/// has no manifest for it.
pub(super) fn manifest_chunks(
    store: &dyn BlobStore,
    root: &blake3::Hash,
) -> Result<Option<Vec<blake3::Hash>>> {
    let Some(bytes) = store.get_manifest(root)? else {
        return Ok(None);
    };
    let bad = |e: Error| {
        Error::with(
            e.kind(),
            format!(
                "manifest {}: {}",
                root.to_hex(),
                e.context().unwrap_or("corrupt")
            ),
        )
    };
    if bytes.len() as u64 > MAX_MANIFEST_OBJECT {
        return Err(bad(Error::corrupt("too big")));
    }
    let meta = manifest::decode(root, &bytes).map_err(bad)?;
    // The store's own manifests, bounded by `MAX_MANIFEST_OBJECT` only:
    // no loader's limits apply here (see README, "Known limits").
    let (got, chunks) = checkpoint::meta_chunks(meta, u64::MAX).map_err(bad)?;
    if got != *root {
        return Err(bad(Error::corrupt("it describes another tree")));
    }
    Ok(Some(chunks.into_iter().map(|(a, _)| a).collect()))
}

/// Lists the store and reads every index object and tombstone.
pub(super) fn list_store(store: &dyn BlobStore) -> Result<Listing> {
    let named = |prefix: &str| -> Result<HashMap<blake3::Hash, ObjectInfo>> {
        Ok(store
            .list_info(prefix)?
            .into_iter()
            .filter_map(|i| parse_name(&i.key, prefix).map(|h| (h, i)))
            .collect())
    };
    let manifests = named("manifests/")?;
    let packs = named("packs/")?;
    let loose = store
        .list_info("chunks/")?
        .into_iter()
        .filter_map(|i| {
            let rest = i.key.strip_prefix("chunks/")?;
            let (fan, hex) = rest.split_once('/')?;
            let h = parse_name(hex, "")?;
            (fan.len() == 2 && hex.starts_with(fan)).then_some((h, i))
        })
        .collect();
    let index = read_all(
        store,
        named("index/")?,
        MAX_INDEX_OBJECT,
        pack::decode_index,
    )?;
    let tombs = read_all(
        store,
        named(tombstone::PREFIX)?,
        tombstone::MAX_TOMBSTONE,
        tombstone::decode,
    )?;
    Ok(Listing {
        manifests,
        packs,
        index,
        loose,
        tombs,
    })
}

/// Reads and decodes the objects `objs`, a batch at a time; one damaged
/// is an error naming it (one gone since the listing is skipped).
fn read_all<T>(
    store: &dyn BlobStore,
    objs: HashMap<blake3::Hash, ObjectInfo>,
    max: u64,
    decode: impl Fn(&blake3::Hash, &[u8]) -> Result<T>,
) -> Result<Vec<(ObjectInfo, T)>> {
    let mut objs: Vec<(blake3::Hash, ObjectInfo)> = objs.into_iter().collect();
    objs.sort_by(|a, b| a.1.key.cmp(&b.1.key));
    let mut out = Vec::with_capacity(objs.len());
    for part in objs.chunks(BATCH) {
        let keys: Vec<&str> = part.iter().map(|(_, i)| i.key.as_str()).collect();
        let got = store.get_objects(&keys, max)?;
        for ((name, info), b) in part.iter().zip(got) {
            let Some(b) = b else { continue };
            let t = decode(name, &b).map_err(|e| {
                Error::with(
                    e.kind(),
                    format!("{}: {}", info.key, e.context().unwrap_or("corrupt")),
                )
            })?;
            out.push((info.clone(), t));
        }
    }
    Ok(out)
}
