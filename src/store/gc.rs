//! Garbage collection of a store: keeps every tree a ref reaches (with its
//! history), every tree younger than a grace period and every tree asked
//! for, and removes the rest in two phases (DESIGN.md, "Garbage
//! collection").
//!
//! A run marks the live chunks (those the kept manifests name), then
//! *condemns* what nothing live needs: it takes dead packs out of the
//! index (writing the surviving records to a new index object before it
//! deletes the old one), copies the live chunks of mostly dead packs into
//! new packs first, and records all it condemned (manifests, packs with
//! their records, loose chunks) in a tombstone (`tombstone.rs`). Only a
//! later run, once the tombstone is older than the grace period, deletes
//! what it lists that is still unreachable, and puts back into the index
//! any condemned pack a tree now needs. So a push that learned of a pack
//! from the index just before the pack was condemned, and that finishes
//! within the grace period, has its manifest seen by the run that would
//! delete the pack; a reader that loaded the index before keeps finding
//! the pack for the grace period; and packs and manifests younger than the
//! grace period (a push in progress) are never touched. A grace period of
//! zero condemns and deletes in one run (for a store nobody else uses).
//!
//! Everything read is checked first; a damaged ref, index object,
//! tombstone or kept manifest stops the run before it writes or deletes
//! anything. Index and tombstone records are claims: what a run
//! condemns, copies out and deletes is decided from each pack's own
//! trailer, and a chunk counts as held elsewhere only once read there
//! (`Avail`); a pack whose trailer cannot be read is kept, with a warning.
//! Each batch of deletes waits on a check that the run's lease
//! is still its own and not about to expire (`lease::check`), which is
//! what lets a push that wrote over an object this run may delete find
//! out, by reading the lease, when to look whether it went (DESIGN.md,
//! "Garbage collection").

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::lease;
use super::pack::{self, MAX_INDEX_ENTRIES, PackRecord, parse_name};
use super::packer::{self, Packer};
use super::survey::{BATCH, Listing, fresh_packs, list_store, manifest_chunks};
use super::tombstone::{self, Tomb};
use super::{BlobStore, DEFAULT_PACK_SIZE, MAX_PACK_OBJECT, ObjectInfo, manifest_key, refs};
use crate::error::{Error, ErrorKind, Result};

/// How young an object must be for a collection to leave it alone, unless
/// told otherwise (one hour).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// What a collection keeps and how it works.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Report what would be done; write and delete nothing.
    pub dry_run: bool,
    /// Roots to keep besides those refs reach.
    pub keep: Vec<blake3::Hash>,
    /// Objects younger than this are never condemned, and a tombstone is
    /// acted on only once this old.
    pub grace: Duration,
    /// A pack whose live bytes are below this fraction of its chunk bytes
    /// is repacked (0.5 by default; 0 never repacks).
    pub repack_below: f64,
    /// Target size of the packs a repack writes.
    pub pack_size: u64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            keep: Vec::new(),
            grace: DEFAULT_GRACE,
            repack_below: 0.5,
            pack_size: DEFAULT_PACK_SIZE,
        }
    }
}

/// A count of objects and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Objects.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl KindStats {
    fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }

    fn plus(self, o: KindStats) -> KindStats {
        KindStats {
            objects: self.objects + o.objects,
            bytes: self.bytes + o.bytes,
        }
    }
}

/// What a collection did (or, in a dry run, would do).
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Whether nothing was written or deleted.
    pub dry_run: bool,
    /// Roots kept: reached by refs, young, or asked for.
    pub live_roots: u64,
    /// Distinct chunks those trees name.
    pub live_chunks: u64,
    /// Manifests deleted.
    pub deleted_manifests: KindStats,
    /// Packs deleted.
    pub deleted_packs: KindStats,
    /// Index objects deleted (replaced by ones without condemned packs).
    pub deleted_index: KindStats,
    /// Loose (format 1) chunk objects deleted.
    pub deleted_loose: KindStats,
    /// Tombstones deleted once acted on.
    pub deleted_tombstones: KindStats,
    /// Manifests condemned by this run.
    pub condemned_manifests: KindStats,
    /// Packs condemned by this run (dead, repacked, or in no index).
    pub condemned_packs: KindStats,
    /// Loose chunk objects condemned by this run.
    pub condemned_loose: KindStats,
    /// Mostly dead packs whose live chunks were copied out.
    pub repacked: KindStats,
    /// Packs written by the repack (bytes: chunk bytes copied).
    pub written_packs: KindStats,
    /// Index objects written.
    pub written_index: u64,
    /// Tombstones written.
    pub written_tombstones: u64,
    /// Condemned packs put back into the index because a tree needs them.
    pub restored_packs: u64,
    /// Chunks a kept tree names that the store holds nowhere (damage the
    /// collection did not cause and cannot mend).
    pub missing_live_chunks: u64,
}

impl GcReport {
    /// Everything deleted, all kinds together.
    pub fn freed(&self) -> KindStats {
        self.deleted_manifests
            .plus(self.deleted_packs)
            .plus(self.deleted_index)
            .plus(self.deleted_loose)
            .plus(self.deleted_tombstones)
    }
}

/// Collects garbage in `store` (see the module docs); refuses, deleting
/// nothing, if anything it must read is damaged.
///
/// A collection that may change the store (not a dry run) first takes the
/// store's lease (see `lease`): while another collection holds a live
/// one this refuses with [`ErrorKind::Busy`], naming the holder and when
/// the lease expires, and changes nothing. The lease is given back when
/// the collection ends, whether it succeeded or not.
pub fn gc(store: &dyn BlobStore, opts: &GcOptions) -> Result<GcReport> {
    if !(0.0..=1.0).contains(&opts.repack_below) {
        return Err(Error::with(
            ErrorKind::InvalidInput,
            format!("repack threshold {} is outside 0 to 1", opts.repack_below),
        ));
    }
    packer::check_target(opts.pack_size)?;
    if opts.dry_run {
        return collect(store, opts, None);
    }
    let held = lease::acquire(store)?;
    let done = collect(store, opts, Some(&held));
    let released = lease::release(store, held);
    match (done, released) {
        (Ok(rep), Ok(())) => Ok(rep),
        (Ok(_), Err(e)) => Err(Error::with(
            e.kind(),
            format!(
                "{}: the collection finished but its lease ({}) could not be removed: {}",
                store.location(),
                lease::LEASE_KEY,
                e.context().unwrap_or("failed")
            ),
        )),
        (Err(e), released) => {
            if let Err(r) = released {
                tracing::warn!("removing the gc lease after a failed collection: {r}");
            }
            Err(e)
        }
    }
}

/// The collection itself, under the lease `held` (none in a dry run,
/// which deletes nothing).
fn collect(
    store: &dyn BlobStore,
    opts: &GcOptions,
    held: Option<&lease::Held>,
) -> Result<GcReport> {
    let refuse = |e: Error| {
        Error::with(
            e.kind(),
            format!(
                "{}: garbage collection refused, nothing was deleted: {}",
                store.location(),
                e.context().unwrap_or("failed")
            ),
        )
    };
    let start = SystemTime::now();
    let cutoff = start.checked_sub(opts.grace).unwrap_or(UNIX_EPOCH);
    let young = |i: &ObjectInfo| i.modified > cutoff;
    let mut rep = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };

    // Mark: refs first (a damaged one stops everything), then listings.
    let reached = refs::reachable_roots(store).map_err(refuse)?;
    let ls = list_store(store).map_err(refuse)?;
    let mut live_roots: HashSet<blake3::Hash> = opts.keep.iter().copied().collect();
    live_roots.extend(reached.iter().map(|(_, r)| *r));
    live_roots.extend(
        ls.manifests
            .iter()
            .filter(|(_, i)| young(i))
            .map(|(r, _)| *r),
    );
    let mut live: HashSet<blake3::Hash> = HashSet::new();
    let mut kept_roots = 0;
    for root in &live_roots {
        let Some(chunks) = manifest_chunks(store, root).map_err(refuse)? else {
            if ls.manifests.get(root).is_some_and(young) {
                continue; // deleted since the listing by its writer's peer
            }
            let why = match reached.iter().find(|(_, r)| r == root) {
                Some((name, _)) => format!(
                    "ref {name} names root {} but its manifest is missing",
                    root.to_hex()
                ),
                None => format!("root {} to keep has no manifest", root.to_hex()),
            };
            return Err(refuse(Error::with(ErrorKind::NotFound, why)));
        };
        kept_roots += 1;
        live.extend(chunks);
    }
    rep.live_roots = kept_roots;
    rep.live_chunks = live.len() as u64;

    // Where chunks are now: indexed packs, and what the tombstones hold.
    let mut indexed: HashMap<blake3::Hash, &PackRecord> = HashMap::new();
    for (_, recs) in &ls.index {
        for r in recs {
            indexed.entry(blake3::Hash::from_bytes(r.name)).or_insert(r);
        }
    }
    let mut tombed: HashSet<[u8; 32]> = HashSet::new();
    for (_, t) in &ls.tombs {
        tombed.extend(t.manifests.iter().copied());
        tombed.extend(t.loose.iter().copied());
        tombed.extend(t.packs.iter().map(|p| p.name));
    }

    // Condemn: dead and mostly dead indexed packs (old ones only).
    let mut gone: HashSet<blake3::Hash> = HashSet::new();
    let mut condemned = Tomb {
        written: unix_secs(start),
        ..Tomb::default()
    };
    let mut to_repack: Vec<PackRecord> = Vec::new();
    // An index record is only a claim: one listing fewer chunks than the
    // pack holds would have live chunks deleted with it. What is condemned,
    // copied and written into the tombstone is what the pack's own trailer
    // (named by its hash) says; the records only pick which packs to read.
    let mut candidates: Vec<(blake3::Hash, u64)> = indexed
        .iter()
        .filter_map(|(name, claimed)| {
            let info = ls.packs.get(name)?;
            (!young(info) && doomed(claimed, &live, opts.repack_below))
                .then_some((*name, info.size))
        })
        .collect();
    candidates.sort_by_key(|(n, _)| *n.as_bytes());
    // Packs' own records, as read this run.
    let mut owns: HashMap<blake3::Hash, PackRecord> = HashMap::new();
    let read = super::catalog::read_pack_indexes(store, &candidates).map_err(refuse)?;
    for ((name, _), own) in candidates.iter().zip(read) {
        let own = match own {
            Ok(own) => own,
            Err(e) => {
                // Kept: what it holds cannot be known, so nothing of it is
                // condemned on a record's word.
                tracing::warn!("gc: keeping a pack whose trailer cannot be read: {e}");
                continue;
            }
        };
        owns.insert(*name, own.clone());
        if !doomed(&own, &live, opts.repack_below) {
            continue;
        }
        gone.insert(*name);
        rep.condemned_packs.add(own.size);
        if own
            .entries
            .iter()
            .any(|e| live.contains(&blake3::Hash::from_bytes(e.addr)))
        {
            rep.repacked.add(own.size);
            to_repack.push(own.clone());
        }
        condemned.packs.push(own);
    }
    // What stays findable: chunks of indexed packs that stay, live loose
    // chunks (those are never condemned).
    let mut avail = Avail::new(store);
    for (_, recs) in &ls.index {
        for rec in recs {
            let name = blake3::Hash::from_bytes(rec.name);
            if let Some(info) = ls.packs.get(&name)
                && !gone.contains(&name)
            {
                avail.claimed(rec, info.size);
            }
        }
    }
    for a in ls.loose.keys().filter(|a| live.contains(*a)) {
        avail.claim(*a, Where::Loose);
    }
    // The live chunks the repack copies (each once).
    let mut copy: Vec<(&PackRecord, Vec<pack::PackEntry>)> = Vec::new();
    for rec in &to_repack {
        let mut want = Vec::new();
        for e in &rec.entries {
            let a = blake3::Hash::from_bytes(e.addr);
            if live.contains(&a) && !avail.holds(&a) {
                avail.found(a);
                want.push(*e);
                rep.written_packs.bytes += e.len as u64;
            }
        }
        copy.push((rec, want));
    }

    // Packs in no index: a push in progress (young), or left by a push
    // that died or condemned by a collection that died before its
    // tombstone. Put back what a tree needs; condemn the rest.
    let mut restore: Vec<PackRecord> = Vec::new();
    let mut orphans: Vec<(&blake3::Hash, &ObjectInfo)> = ls
        .packs
        .iter()
        .filter(|(n, i)| !indexed.contains_key(*n) && !tombed.contains(n.as_bytes()) && !young(i))
        .collect();
    orphans.sort_by_key(|(n, _)| *n.as_bytes());
    for (name, info) in orphans {
        let rec = match super::read_pack_index(store, name, info.size) {
            Ok(rec) => rec,
            Err(e) => {
                tracing::warn!("gc: keeping a pack in no index whose trailer cannot be read: {e}");
                continue;
            }
        };
        if needed(&rec, &live, &mut avail) {
            note_restored(&rec, &mut avail, &mut rep);
            restore.push(rec);
        } else {
            rep.condemned_packs.add(info.size);
            condemned.packs.push(rec);
        }
    }
    let mut roots: Vec<_> = ls.manifests.iter().collect();
    roots.sort_by_key(|(r, _)| *r.as_bytes());
    for (root, info) in roots {
        if !live_roots.contains(root) && !young(info) && !tombed.contains(root.as_bytes()) {
            rep.condemned_manifests.add(info.size);
            condemned.manifests.push(*root.as_bytes());
        }
    }
    let mut loose: Vec<_> = ls.loose.iter().collect();
    loose.sort_by_key(|(a, _)| *a.as_bytes());
    for (addr, info) in loose {
        if !live.contains(addr) && !young(info) && !tombed.contains(addr.as_bytes()) {
            rep.condemned_loose.add(info.size);
            condemned.loose.push(*addr.as_bytes());
        }
    }

    // Sweep plan: tombstones older than the grace period (and, with no
    // grace period, what this run condemned).
    let mut ripe: Vec<&Tomb> = ls
        .tombs
        .iter()
        .filter(|(i, _)| !young(i))
        .map(|(_, t)| t)
        .collect();
    if opts.grace.is_zero() {
        ripe.push(&condemned);
    }
    let mut del_packs: Vec<(String, u64)> = Vec::new();
    let mut del_manifests: Vec<(String, u64)> = Vec::new();
    let mut del_loose: Vec<(String, u64)> = Vec::new();
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    // The packs the ripe tombstones list that may go, each once.
    let mut sweep: Vec<(blake3::Hash, u64)> = Vec::new();
    for t in &ripe {
        // A pack an earlier run condemned that is in the index again (a
        // push merged an index object read before that run) may be what a
        // push since then relied on: it is condemned afresh below, if
        // dead, and deleted a grace period later.
        let earlier = !std::ptr::eq(*t, &condemned);
        for p in &t.packs {
            let name = blake3::Hash::from_bytes(p.name);
            let Some(info) = ls.packs.get(&name) else {
                continue;
            };
            if (indexed.contains_key(&name) && (earlier || !gone.contains(&name)))
                || young(info)
                || !seen.insert(p.name)
            {
                continue;
            }
            sweep.push((name, info.size));
        }
    }
    // The tombstone's record, like an index's, is a claim: the pack's own
    // trailer decides (read once for the packs this run condemned).
    let unread: Vec<(blake3::Hash, u64)> = sweep
        .iter()
        .filter(|(n, _)| !owns.contains_key(n))
        .copied()
        .collect();
    let read = super::catalog::read_pack_indexes(store, &unread).map_err(refuse)?;
    for ((name, _), own) in unread.iter().zip(read) {
        match own {
            Ok(own) => {
                owns.insert(*name, own);
            }
            Err(e) => {
                tracing::warn!("gc: keeping a condemned pack whose trailer cannot be read: {e}");
            }
        }
    }
    // The own records of the packs in `del_packs`.
    let mut doomed_recs: Vec<PackRecord> = Vec::new();
    for (name, size) in &sweep {
        let Some(own) = owns.get(name).cloned() else {
            continue;
        };
        if needed(&own, &live, &mut avail) {
            note_restored(&own, &mut avail, &mut rep);
            restore.push(own);
        } else {
            rep.deleted_packs.add(*size);
            del_packs.push((own.key(), *size));
            doomed_recs.push(own);
        }
    }
    for t in &ripe {
        for m in &t.manifests {
            let root = blake3::Hash::from_bytes(*m);
            let Some(info) = ls.manifests.get(&root) else {
                continue;
            };
            if !live_roots.contains(&root) && !young(info) && seen.insert(*m) {
                rep.deleted_manifests.add(info.size);
                del_manifests.push((manifest_key(&root), info.size));
            }
        }
        for c in &t.loose {
            let addr = blake3::Hash::from_bytes(*c);
            let Some(info) = ls.loose.get(&addr) else {
                continue;
            };
            if !live.contains(&addr) && !young(info) && seen.insert(*c) {
                rep.deleted_loose.add(info.size);
                del_loose.push((info.key.clone(), info.size));
            }
        }
    }
    rep.missing_live_chunks = live.iter().filter(|a| !avail.has(a)).count() as u64;
    // Index objects that list a condemned pack are replaced.
    let stale: Vec<&(ObjectInfo, Vec<PackRecord>)> = ls
        .index
        .iter()
        .filter(|(_, recs)| {
            recs.iter()
                .any(|r| gone.contains(&blake3::Hash::from_bytes(r.name)))
        })
        .collect();
    for (i, _) in &stale {
        rep.deleted_index.add(i.size);
    }
    let ripe_tombs: Vec<&ObjectInfo> = ls
        .tombs
        .iter()
        .filter(|(i, _)| !young(i))
        .map(|(i, _)| i)
        .collect();
    for i in &ripe_tombs {
        rep.deleted_tombstones.add(i.size);
    }
    rep.written_packs.objects = if copy.iter().any(|(_, w)| !w.is_empty()) {
        1
    } else {
        0
    };
    if opts.dry_run {
        return Ok(rep);
    }

    // Writes, in the order that keeps every live chunk findable: new packs
    // and their index, then the index without the condemned packs, then
    // the tombstone, then deletions.
    if rep.written_packs.bytes > 0 {
        let mut quiet = |_: u64| {};
        let mut packer = Packer::new(store, opts.pack_size, &mut quiet).map_err(refuse)?;
        for (rec, want) in &copy {
            if want.is_empty() {
                continue;
            }
            let name = blake3::Hash::from_bytes(rec.name);
            let key = rec.key();
            let bytes = store
                .get_objects(&[&key], MAX_PACK_OBJECT)
                .map_err(refuse)?
                .pop()
                .flatten()
                .ok_or_else(|| {
                    refuse(Error::with(
                        ErrorKind::NotFound,
                        format!("{key}: pack to repack is missing"),
                    ))
                })?;
            pack::check_pack(&name, &bytes).map_err(|e| {
                refuse(Error::with(
                    e.kind(),
                    format!("{key}: {}", e.context().unwrap_or("corrupt")),
                ))
            })?;
            for e in want {
                let b = &bytes[e.offset as usize..(e.offset + e.len as u64) as usize];
                packer
                    .add(&blake3::Hash::from_bytes(e.addr), b)
                    .map_err(refuse)?;
            }
        }
        let packed = packer.finish(None).map_err(refuse)?;
        rep.written_packs.objects = packed.packs + packed.reused;
        rep.written_index += packed.indexes;
    }
    let mut keep_recs: Vec<PackRecord> = restore;
    let mut named: HashSet<[u8; 32]> = keep_recs.iter().map(|r| r.name).collect();
    for (_, recs) in &stale {
        for r in recs {
            if !gone.contains(&blake3::Hash::from_bytes(r.name)) && named.insert(r.name) {
                keep_recs.push(r.clone());
            }
        }
    }
    rep.written_index += write_index(store, keep_recs, unix_secs(start)).map_err(refuse)?;
    let stale_keys: Vec<&str> = stale.iter().map(|(i, _)| i.key.as_str()).collect();
    delete(store, held, &stale_keys)?;
    if !opts.grace.is_zero() {
        for t in tombstone::split(condemned.clone()) {
            let (name, bytes) = tombstone::encode(&t)?;
            store.put_objects(&[(&tombstone::key(&name), &bytes)])?;
            rep.written_tombstones += 1;
        }
    }
    // A push that made the same pack again (packs are named by content)
    // and indexed it since the listing keeps it.
    let fresh = fresh_packs(store, &ls)?;
    del_packs.retain(|(k, size)| {
        let keep = fresh.contains(k);
        if keep {
            rep.deleted_packs.objects -= 1;
            rep.deleted_packs.bytes -= size;
        }
        !keep
    });
    let doomed_keys: HashSet<&str> = del_packs.iter().map(|(k, _)| k.as_str()).collect();
    doomed_recs.retain(|r| doomed_keys.contains(r.key().as_str()));
    // A push racing this run: trees written (or written again) or named
    // by a ref since the listing. What they need stays: the condemned or
    // doomed packs holding their chunks go back into the index, and their
    // manifests stay. A push that wrote its manifest after this look
    // finds the index objects this run replaced gone and uploads again
    // what it relied on (`transfer::push`), so between the two every
    // pushed tree stays whole (DESIGN.md, "Garbage collection").
    let late = late_roots(store, &ls, &live_roots)?;
    if !late.is_empty() {
        let mut late_live: HashSet<blake3::Hash> = HashSet::new();
        for root in &late {
            if let Some(chunks) = manifest_chunks(store, root)? {
                late_live.extend(chunks);
            }
        }
        let mut back: Vec<PackRecord> = Vec::new();
        let mut candidates: Vec<&PackRecord> = condemned.packs.iter().collect();
        candidates.extend(&doomed_recs);
        let mut named: HashSet<[u8; 32]> = HashSet::new();
        for rec in candidates {
            if named.insert(rec.name) && needed(rec, &late_live, &mut avail) {
                note_restored(rec, &mut avail, &mut rep);
                back.push(rec.clone());
            }
        }
        del_packs.retain(|(k, size)| {
            let keep = back.iter().any(|r| r.key() == *k);
            if keep {
                rep.deleted_packs.objects -= 1;
                rep.deleted_packs.bytes -= size;
            }
            !keep
        });
        del_manifests.retain(|(k, size)| {
            let keep = late.iter().any(|r| manifest_key(r) == *k);
            if keep {
                rep.deleted_manifests.objects -= 1;
                rep.deleted_manifests.bytes -= size;
            }
            !keep
        });
        rep.written_index += write_index(store, back, unix_secs(start))?;
    }
    for list in [&del_manifests, &del_packs, &del_loose] {
        let keys: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
        delete(store, held, &keys)?;
    }
    let tomb_keys: Vec<&str> = ripe_tombs.iter().map(|i| i.key.as_str()).collect();
    delete(store, held, &tomb_keys)?;
    Ok(rep)
}

/// Roots a push made live since `ls` was taken: manifests new or written
/// again since, and roots refs name now, that `live` does not hold.
fn late_roots(
    store: &dyn BlobStore,
    ls: &Listing,
    live: &HashSet<blake3::Hash>,
) -> Result<HashSet<blake3::Hash>> {
    let mut late = HashSet::new();
    for i in store.list_info("manifests/")? {
        let Some(root) = parse_name(&i.key, "manifests/") else {
            continue;
        };
        let before = ls.manifests.get(&root);
        if !live.contains(&root) && before.is_none_or(|b| i.modified > b.modified) {
            late.insert(root);
        }
    }
    for (_, root) in refs::reachable_roots(store)? {
        if !live.contains(&root) {
            late.insert(root);
        }
    }
    Ok(late)
}

/// Whether `rec` holds nothing live, or so little that its live chunks
/// are copied out and it goes (`repack_below`).
fn doomed(rec: &PackRecord, live: &HashSet<blake3::Hash>, repack_below: f64) -> bool {
    let total: u64 = rec.entries.iter().map(|e| e.len as u64).sum();
    let alive: u64 = rec
        .entries
        .iter()
        .filter(|e| live.contains(&blake3::Hash::from_bytes(e.addr)))
        .map(|e| e.len as u64)
        .sum();
    alive == 0 || (alive as f64) < repack_below * total as f64
}

/// Where a chunk stays findable after this run: checked, or only claimed
/// (by index records, or by a loose object's name).
enum Held {
    Found,
    Claimed(Vec<Where>),
}

/// Where a claim places a chunk.
#[derive(Clone, PartialEq)]
enum Where {
    /// In this pack (name, object size), an index record says.
    Pack(blake3::Hash, u64),
    /// In its loose chunk object (the store lists one by that name).
    Loose,
}

/// The chunks that stay findable. A chunk is taken as held elsewhere only
/// once the object claimed to hold it is read: the pack's trailer must
/// list it and its bytes there (or the loose object's) must hash to its
/// address. Index objects and object names are anyone's claims; one that
/// places a chunk where it is not would otherwise have its real holder
/// deleted, or its copy skipped in a repack. Only chunks some pack being
/// let go also holds are checked so, so a run reads nothing more unless
/// chunks are stored twice.
struct Avail<'s> {
    store: &'s dyn BlobStore,
    at: HashMap<blake3::Hash, Held>,
    /// Where each pack whose trailer was read keeps each chunk.
    read: HashMap<blake3::Hash, HashMap<blake3::Hash, (u64, u32)>>,
}

impl<'s> Avail<'s> {
    fn new(store: &'s dyn BlobStore) -> Avail<'s> {
        Avail {
            store,
            at: HashMap::new(),
            read: HashMap::new(),
        }
    }

    fn claim(&mut self, a: blake3::Hash, place: Where) {
        let held = self
            .at
            .entry(a)
            .or_insert_with(|| Held::Claimed(Vec::new()));
        if let Held::Claimed(places) = held
            && !places.contains(&place)
        {
            places.push(place);
        }
    }

    /// The chunks an index record places in a pack that stays.
    fn claimed(&mut self, rec: &PackRecord, size: u64) {
        let name = blake3::Hash::from_bytes(rec.name);
        for e in &rec.entries {
            self.claim(blake3::Hash::from_bytes(e.addr), Where::Pack(name, size));
        }
    }

    /// A chunk this run copies into a pack of its own (from bytes it
    /// checked).
    fn found(&mut self, a: blake3::Hash) {
        self.at.insert(a, Held::Found);
    }

    /// Whether `a` stays findable, as the claims say (for the report,
    /// which reads nothing).
    fn has(&self, a: &blake3::Hash) -> bool {
        self.at.contains_key(a)
    }

    /// Whether `a` stays findable, each claim checked by reading first.
    /// An object that cannot be read holds nothing here, so the doubt
    /// keeps the chunk's other copy.
    fn holds(&mut self, a: &blake3::Hash) -> bool {
        let places = match self.at.get(a) {
            None => return false,
            Some(Held::Found) => return true,
            Some(Held::Claimed(places)) => places.clone(),
        };
        for place in places {
            if self.check(a, &place) {
                self.at.insert(*a, Held::Found);
                return true;
            }
        }
        self.at.remove(a);
        false
    }

    /// Whether `place` holds the bytes of chunk `a`.
    fn check(&mut self, a: &blake3::Hash, place: &Where) -> bool {
        let store = self.store;
        let got = match place {
            Where::Pack(pack, size) => {
                let chunks =
                    self.read.entry(*pack).or_insert_with(|| {
                        match super::read_pack_index(store, pack, *size) {
                            Ok(rec) => rec
                                .entries
                                .iter()
                                .map(|e| (blake3::Hash::from_bytes(e.addr), (e.offset, e.len)))
                                .collect(),
                            Err(e) => {
                                tracing::warn!("gc: a pack an index names cannot be read: {e}");
                                HashMap::new()
                            }
                        }
                    });
                let Some(&(offset, len)) = chunks.get(a) else {
                    return false;
                };
                store.get_ranges(&[(&pack::pack_key(pack), offset..offset + len as u64)])
            }
            Where::Loose => store.get_chunks(&[*a]),
        };
        match got.map(|mut v| v.pop().flatten()) {
            Ok(Some(bytes)) => blake3::hash(&bytes) == *a,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(
                    "gc: the other copy of chunk {} cannot be read: {e}",
                    a.to_hex()
                );
                false
            }
        }
    }
}

/// Whether a tree needs a chunk of `rec` (a pack's own record) that
/// nothing else holds.
fn needed(rec: &PackRecord, live: &HashSet<blake3::Hash>, avail: &mut Avail<'_>) -> bool {
    rec.entries.iter().any(|e| {
        let a = blake3::Hash::from_bytes(e.addr);
        live.contains(&a) && !avail.holds(&a)
    })
}

/// `rec` (a pack's own record) goes back into the index. Its chunks are
/// claims like an index record's: its trailer was read, its bytes not.
fn note_restored(rec: &PackRecord, avail: &mut Avail<'_>, rep: &mut GcReport) {
    avail.claimed(rec, rec.size);
    rep.restored_packs += 1;
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Deletes `keys` a batch at a time, each batch only once the lease is
/// found still ours and not about to expire (`lease::check`): a push that
/// read the lease as released or expired must see no delete after its
/// read (DESIGN.md, "Garbage collection").
fn delete(store: &dyn BlobStore, held: Option<&lease::Held>, keys: &[&str]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let Some(held) = held else {
        return Err(Error::with(
            ErrorKind::InvalidInput,
            "a collection without the lease deletes nothing",
        ));
    };
    keys.chunks(BATCH).try_for_each(|part| {
        lease::check(store, held)?;
        store.delete_objects(part)
    })
}

/// Writes index objects listing `recs` (none if there are none); how many.
fn write_index(store: &dyn BlobStore, recs: Vec<PackRecord>, now: u64) -> Result<u64> {
    let mut groups: Vec<Vec<PackRecord>> = Vec::new();
    let mut n = 0;
    for r in recs {
        if groups.is_empty() || n + r.entries.len() > MAX_INDEX_ENTRIES {
            groups.push(Vec::new());
            n = 0;
        }
        n += r.entries.len();
        let last = groups.len() - 1;
        groups[last].push(r);
    }
    let mut written = 0;
    for g in groups {
        let (name, bytes) = pack::encode_index(g, now)?;
        store.put_objects(&[(&pack::index_key(&name), &bytes)])?;
        written += 1;
    }
    Ok(written)
}
