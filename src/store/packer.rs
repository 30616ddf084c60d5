//! Writing chunks into packs: fills packs to a target size in the order
//! chunks come (a file's chunks end up next to each other, so a reader of
//! the file reads one range), uploads a few at once, and at the end
//! publishes one index object listing them (more past
//! `MAX_INDEX_ENTRIES`). Used by push and by migrate.
//!
//! Packs are named by their content and filled deterministically, so a
//! push cut off before its index was written and run again makes the same
//! packs: those already in the store (from the listing of `packs/` taken
//! at the start) are not uploaded twice. A pack a collection condemned is
//! uploaded again, and the packer says which ones it so wrote over (a
//! collection may be about to delete them: see `transfer::push`).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use super::buffers::Spare;
use super::catalog::Catalog;
use super::pack::{
    self, MAX_INDEX_ENTRIES, MAX_PACK_ENTRIES, MAX_PACK_SIZE, PackBuilder, PackRecord,
};
use super::{BlobStore, Pending};
use crate::content::CHUNK_SIZE;
use crate::error::{Error, ErrorKind, Result};

/// Packs uploaded at once (and so held in memory at once).
pub(crate) const PACKS_IN_FLIGHT: usize = 4;

/// What a packer wrote.
#[derive(Debug, Default, Clone)]
pub(crate) struct Packed {
    /// Chunks in packs this packer uploaded.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Packs uploaded.
    pub packs: u64,
    /// Packs that were in the store already (a resumed push).
    pub reused: u64,
    /// Index objects written.
    pub indexes: u64,
    /// Packs uploaded over a pack of the same name that a collection had
    /// condemned.
    pub rewrote: Vec<PackRecord>,
}

impl Packed {
    /// Adds the chunks, bytes and packs `more` uploaded to these counts.
    pub(crate) fn count(&mut self, more: &Packed) {
        self.chunks += more.chunks;
        self.bytes += more.bytes;
        self.packs += more.packs;
    }
}

pub(crate) struct Packer<'a> {
    store: &'a dyn BlobStore,
    target: u64,
    existing: HashSet<String>,
    condemned: HashSet<String>,
    building: Option<PackBuilder>,
    ready: Vec<(PackRecord, Vec<u8>)>,
    /// Buffers of packs uploaded, for the next ones.
    spare: Arc<Spare>,
    /// The batch of packs on its way to the store.
    pending: Option<Upload<'a>>,
    written: Vec<PackRecord>,
    stats: Packed,
    progress: &'a mut dyn FnMut(u64),
}

/// A batch of packs being uploaded: the wait for it, and each pack's key
/// and record (in the order they were made).
struct Upload<'a> {
    wait: Pending<'a>,
    keys: Vec<String>,
    recs: Vec<PackRecord>,
}

/// Checks a pack target size.
pub(crate) fn check_target(target: u64) -> Result<()> {
    if !(CHUNK_SIZE as u64..=MAX_PACK_SIZE).contains(&target) {
        return Err(Error::with(
            ErrorKind::InvalidInput,
            format!(
                "pack size {target} is outside {}..={MAX_PACK_SIZE} bytes",
                CHUNK_SIZE
            ),
        ));
    }
    Ok(())
}

/// The packs a push may take as uploaded already (a push resumed after it
/// was cut off before its index): those listed, less those a garbage
/// collection condemned (which it may be about to delete), so those are
/// written again (DESIGN.md, "Garbage collection"); and those condemned
/// ones.
fn reusable_packs(store: &dyn BlobStore) -> Result<(HashSet<String>, HashSet<String>)> {
    let mut packs: HashSet<String> = store.list("packs/")?.into_iter().collect();
    let mut condemned = HashSet::new();
    if !packs.is_empty() {
        for k in super::tombstone::condemned_packs(store)? {
            if let Some(k) = packs.take(&k) {
                condemned.insert(k);
            }
        }
    }
    Ok((packs, condemned))
}

impl<'a> Packer<'a> {
    /// A packer for `store` aiming at `target` bytes per pack; `progress`
    /// hears the bytes of chunks as their packs become durable.
    pub(crate) fn new(
        store: &'a dyn BlobStore,
        target: u64,
        progress: &'a mut dyn FnMut(u64),
    ) -> Result<Packer<'a>> {
        check_target(target)?;
        let (existing, condemned) = reusable_packs(store)?;
        Ok(Packer {
            store,
            target,
            existing,
            condemned,
            building: None,
            ready: Vec::new(),
            spare: Arc::default(),
            pending: None,
            written: Vec::new(),
            stats: Packed::default(),
            progress,
        })
    }

    /// Adds a chunk (the caller promises `bytes` hash to `addr`).
    pub(crate) fn add(&mut self, addr: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        let full = self.building.as_ref().is_some_and(|b| {
            b.count() > 0
                && (b.len() + bytes.len() as u64 > self.target || b.count() >= MAX_PACK_ENTRIES)
        });
        if full {
            self.seal()?;
        }
        self.building
            .get_or_insert_with(|| {
                PackBuilder::with_buffer(self.spare.one(PackBuilder::room(self.target)))
            })
            .push(addr, bytes);
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        if let Some(b) = self.building.take() {
            self.ready.push(b.finish()?);
            if self.ready.len() >= PACKS_IN_FLIGHT {
                self.upload()?;
            }
        }
        Ok(())
    }

    /// Starts the upload of the packs ready, then waits for the upload
    /// before it: one batch travels while the next is built, and no more
    /// than two are held.
    fn upload(&mut self) -> Result<()> {
        let ready = std::mem::take(&mut self.ready);
        let keys: Vec<String> = ready.iter().map(|(r, _)| r.key()).collect();
        let mut recs = Vec::with_capacity(ready.len());
        let mut objs: Vec<(&str, Bytes)> = Vec::with_capacity(ready.len());
        for (k, (rec, buf)) in keys.iter().zip(ready) {
            if self.existing.contains(k) {
                self.spare.give(buf);
            } else {
                // Handed over, not copied; the buffer comes back for the
                // next pack once the store is done with it.
                objs.push((k.as_str(), self.spare.bytes(buf)));
            }
            recs.push(rec);
        }
        let wait = self.store.put_owned_begin(objs);
        let before = self.pending.replace(Upload { wait, keys, recs });
        match before {
            Some(b) => self.settle(b),
            None => Ok(()),
        }
    }

    /// Waits for an upload and counts what it stored.
    fn settle(&mut self, up: Upload<'a>) -> Result<()> {
        (up.wait)()?;
        let mut done = 0;
        for (k, rec) in up.keys.iter().zip(up.recs) {
            let bytes: u64 = rec.entries.iter().map(|e| e.len as u64).sum();
            done += bytes;
            if self.existing.contains(k) {
                self.stats.reused += 1;
            } else {
                if self.condemned.contains(k) {
                    self.stats.rewrote.push(rec.clone());
                }
                self.stats.packs += 1;
                self.stats.chunks += rec.entries.len() as u64;
                self.stats.bytes += bytes;
            }
            self.written.push(rec);
        }
        (self.progress)(done);
        Ok(())
    }

    /// Uploads what is left, then the index objects (only once every pack
    /// they list is durable), and tells `catalog` what it now holds.
    pub(crate) fn finish(mut self, catalog: Option<&Catalog>) -> Result<Packed> {
        self.seal()?;
        if !self.ready.is_empty() {
            self.upload()?;
        }
        if let Some(up) = self.pending.take() {
            self.settle(up)?;
        }
        let written = std::mem::take(&mut self.written);
        let objects = write_indexes(self.store, written)?;
        self.stats.indexes = objects.len() as u64;
        if let Some(c) = catalog {
            for (k, g) in objects {
                c.learn(&k, g)?;
            }
        }
        Ok(self.stats)
    }
}

/// Writes `recs` as index objects of at most `MAX_INDEX_ENTRIES` entries
/// each (none for no records), durable on return: each object's key,
/// with the records it lists.
fn write_indexes(
    store: &dyn BlobStore,
    recs: Vec<PackRecord>,
) -> Result<Vec<(String, Vec<PackRecord>)>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut groups: Vec<Vec<PackRecord>> = Vec::new();
    let mut entries = 0;
    for r in recs {
        if groups.is_empty() || entries + r.entries.len() > MAX_INDEX_ENTRIES {
            groups.push(Vec::new());
            entries = 0;
        }
        entries += r.entries.len();
        if let Some(g) = groups.last_mut() {
            g.push(r);
        }
    }
    let mut objects = Vec::new();
    for g in groups {
        let (name, bytes) = pack::encode_index(g.clone(), now)?;
        objects.push((pack::index_key(&name), bytes, g));
    }
    let objs: Vec<(&str, &[u8])> = objects
        .iter()
        .map(|(k, b, _)| (k.as_str(), b.as_slice()))
        .collect();
    store.put_objects(&objs)?;
    Ok(objects.into_iter().map(|(k, _, g)| (k, g)).collect())
}

/// Index objects a store may gather before a push merges them into one.
pub(crate) const COMPACT_AT: usize = 8;

/// Merges every index object `catalog` read well into new ones (one, up
/// to `MAX_INDEX_ENTRIES` entries each), once there are more than
/// [`COMPACT_AT`], then deletes the merged ones: a store that takes a push
/// per request keeps a handful of index objects, so a client learns it in
/// a handful of requests. Safe beside readers and other writers: the new
/// object is durable before any old one goes, only objects whose content
/// it holds go, and a reader that listed an object since deleted misses
/// nothing it cannot find again by listing anew (which a read that finds
/// a chunk nowhere does). How many index objects it replaced.
pub(crate) fn compact(store: &dyn BlobStore, catalog: &Catalog) -> Result<usize> {
    if catalog.good_count() <= COMPACT_AT {
        return Ok(0);
    }
    let (recs, old) = catalog.records()?;
    let objects = write_indexes(store, recs)?;
    let new: HashSet<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    let gone: Vec<String> = old
        .into_iter()
        .filter(|k| !new.contains(k.as_str()))
        .collect();
    catalog.forget(&gone)?;
    for (k, g) in objects {
        catalog.learn(&k, g)?;
    }
    let refs: Vec<&str> = gone.iter().map(String::as_str).collect();
    store.delete_objects(&refs)?;
    Ok(gone.len())
}
