//! What a client knows of a store's chunks: the store's format version,
//! and where each packed chunk is, learned from the index objects.
//!
//! Loading costs a read of the version object and a listing of `index/`
//! (the two at once), then one read per index object not seen before, so
//! O(pushes) requests however many chunks the store holds. Index objects
//! are immutable and named by their hash, so a host's cache keeps them
//! (`index/<hex>` in the cache store) and a later load reads only the new
//! ones. A chunk no index places is looked for as a loose `chunks/..`
//! object, which is how a store written before packs holds everything.
//!
//! An index object that is damaged does not stop the load: its chunks
//! are simply not placed, and the damage is named in the error of any
//! read that then finds a chunk nowhere.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::pack::{self, PackRecord, parse_name};
use super::{BlobStore, MAX_INDEX_OBJECT, io_err};
use crate::error::{Error, ErrorKind, Result};

/// The object that says which store format a store is in.
pub const VERSION_KEY: &str = "cowvfs-store";
/// The store format this build writes: 2, packs and index objects (1 was
/// one object per chunk; a store without a version object is format 1
/// and is read as such).
pub const STORE_VERSION: u32 = 2;
const VERSION_PREFIX: &str = "cowvfs store format ";

/// Most index objects read per batch call.
const INDEX_BATCH: usize = 64;

/// Most bytes of index objects one batch may hold at once: a batch of
/// `n` objects reads each with a cap of its largest listed size, and `n`
/// times that stays under this. Real index objects are small, so batches
/// stay full; a store whose index objects are large (or that does not
/// say how large) is read a few at a time, not 64 × 64 MiB at once.
const BATCH_BYTES: u64 = 256 << 20;

/// Index object names as listed, with their sizes where the store says.
pub(crate) type Listed = Vec<(String, Option<u64>)>;

/// Lists the store's index objects, with sizes when it can.
fn list_index(store: &dyn BlobStore) -> Result<Listed> {
    match store.list_info("index/") {
        Ok(infos) => Ok(infos.into_iter().map(|i| (i.key, Some(i.size))).collect()),
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(store
            .list("index/")?
            .into_iter()
            .map(|k| (k, None))
            .collect()),
        Err(e) => Err(e),
    }
}

/// An index object to read: its name, the hash it names, the cap it is
/// read under.
type ToRead = (String, blake3::Hash, u64);

/// Splits `new` into batches under [`INDEX_BATCH`] and [`BATCH_BYTES`];
/// each with the cap its objects are read under.
fn batches(new: &[ToRead]) -> Vec<(&[ToRead], u64)> {
    let mut out = Vec::new();
    let (mut start, mut cap) = (0, 0u64);
    for (i, (_, _, size)) in new.iter().enumerate() {
        let n = (i - start) as u64;
        let grown = cap.max(*size);
        if n > 0 && (n as usize >= INDEX_BATCH || (n + 1).saturating_mul(grown) > BATCH_BYTES) {
            out.push((&new[start..i], cap));
            (start, cap) = (i, *size);
        } else {
            cap = grown;
        }
    }
    if start < new.len() {
        out.push((&new[start..], cap));
    }
    out
}

/// Where one packed chunk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    /// The pack's name.
    pub pack: blake3::Hash,
    /// Offset of the chunk's bytes in the pack object.
    pub offset: u64,
    /// Their length.
    pub len: u32,
}

impl ChunkLoc {
    /// The pack's object name.
    pub fn pack_key(&self) -> String {
        pack::pack_key(&self.pack)
    }
}

/// Further packs remembered per chunk beyond the first that holds it: a
/// reader needs another copy only when one is damaged, and a store that
/// lists one chunk in thousands of packs must not make each record cost
/// a scan of the others.
const MORE_COPIES: usize = 8;

/// A client's view of a store's packs (see the module docs).
#[derive(Debug)]
pub struct Catalog {
    location: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    version: u32,
    /// Index objects read (or found damaged), by name.
    seen: HashSet<String>,
    /// Pack names; a location refers to one by position.
    packs: Vec<blake3::Hash>,
    /// Each pack's object size, as its index object says.
    sizes: Vec<u64>,
    pack_pos: HashMap<blake3::Hash, u32>,
    /// Index objects read whole and well (what a compaction may replace).
    good: HashSet<String>,
    at: HashMap<blake3::Hash, (u32, u64, u32)>,
    /// Further copies of a chunk, in other packs than its place in `at`
    /// (two pushes that raced, a collection's copy): where a reader turns
    /// when the first copy's bytes are wrong. At most `MORE_COPIES` each.
    more: HashMap<blake3::Hash, Vec<(u32, u64, u32)>>,
    /// Index objects that failed their checks, with why.
    damaged: Vec<String>,
}

/// The body of the version object for `version`.
pub(crate) fn version_object(version: u32) -> Vec<u8> {
    format!("{VERSION_PREFIX}{version}\n").into_bytes()
}

/// The store's format version: 1 when it has no version object.
pub(crate) fn read_version(store: &dyn BlobStore) -> Result<u32> {
    let got = store.get_objects(&[VERSION_KEY], 256)?.pop().flatten();
    let Some(bytes) = got else { return Ok(1) };
    let bad = || {
        Error::corrupt(format!(
            "{}/{VERSION_KEY}: not a cowvfs store version object",
            store.location()
        ))
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    let n: u32 = text
        .strip_prefix(VERSION_PREFIX)
        .and_then(|t| t.strip_suffix('\n'))
        .and_then(|t| t.parse().ok())
        .ok_or_else(bad)?;
    if n == 0 || n > STORE_VERSION {
        return Err(Error::with(
            ErrorKind::Unsupported,
            format!(
                "{}: store format {n} is not supported (this build reads formats 1 to {STORE_VERSION})",
                store.location()
            ),
        ));
    }
    Ok(n)
}

/// Marks the store as format [`STORE_VERSION`] (before a push writes its
/// first pack), unless it says so already.
pub(crate) fn ensure_version(store: &dyn BlobStore, have: u32) -> Result<()> {
    if have >= STORE_VERSION {
        return Ok(());
    }
    let v = version_object(STORE_VERSION);
    store.put_objects(&[(VERSION_KEY, &v)])
}

impl Catalog {
    /// Reads the store's version and every index object (those already
    /// in `cache` from there).
    pub fn load(store: &dyn BlobStore, cache: Option<&dyn BlobStore>) -> Result<Catalog> {
        let (cat, listed) = Catalog::begin(store)?;
        cat.take_in(store, cache, listed)?;
        Ok(cat)
    }

    /// The first half of [`Catalog::load`], one round trip: the store's
    /// version and the listing of its index objects, with an empty
    /// catalog that [`Catalog::finish`] fills from that listing.
    pub(crate) fn begin(store: &dyn BlobStore) -> Result<(Catalog, Listed)> {
        let (version, listed) = std::thread::scope(|s| {
            let v = s.spawn(|| read_version(store));
            let listed = list_index(store);
            let v = v
                .join()
                .unwrap_or_else(|_| Err(io_err("version reader thread failed")));
            (v, listed)
        });
        let cat = Catalog {
            location: store.location(),
            state: Mutex::new(State {
                version: version?,
                ..State::default()
            }),
        };
        Ok((cat, listed?))
    }

    /// Reads the index objects `listed` (from [`Catalog::begin`]).
    pub(crate) fn finish(
        &self,
        store: &dyn BlobStore,
        cache: Option<&dyn BlobStore>,
        listed: Listed,
    ) -> Result<()> {
        self.take_in(store, cache, listed).map(|_| ())
    }

    /// Lists `index/` again and reads the index objects not seen yet
    /// (another host's pushes since); how many were new.
    pub fn refresh(&self, store: &dyn BlobStore, cache: Option<&dyn BlobStore>) -> Result<usize> {
        let listed = list_index(store)?;
        self.take_in(store, cache, listed)
    }

    /// Forgets every index object read and reads them all again: for a
    /// reader that found a pack gone, whose live chunks a garbage
    /// collection moved to a new pack (an index object read before may
    /// list them, but the old location would win). How many it read.
    ///
    /// The new view is read aside and swapped in whole, so a reader of the
    /// same catalog meanwhile (trees opened from one store share it) never
    /// finds it empty.
    pub fn reload(&self, store: &dyn BlobStore, cache: Option<&dyn BlobStore>) -> Result<usize> {
        let listed = list_index(store)?;
        let fresh = Catalog {
            location: self.location.clone(),
            state: Mutex::new(State {
                version: self.version(),
                ..State::default()
            }),
        };
        let n = fresh.take_in(store, cache, listed)?;
        let st = fresh
            .state
            .into_inner()
            .map_err(|_| io_err("store catalog poisoned"))?;
        *self.lock()? = st;
        Ok(n)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io_err("store catalog poisoned"))
    }

    fn take_in(
        &self,
        store: &dyn BlobStore,
        cache: Option<&dyn BlobStore>,
        listed: Listed,
    ) -> Result<usize> {
        let new: Vec<ToRead> = {
            let st = self.lock()?;
            listed
                .into_iter()
                .filter(|(k, _)| !st.seen.contains(k))
                .filter_map(|(k, size)| {
                    let h = parse_name(&k, "index/")?;
                    // A size the store does not say, or one over the
                    // bound, is read under the bound (which refuses it).
                    let size = size.map_or(MAX_INDEX_OBJECT, |s| s.min(MAX_INDEX_OBJECT));
                    Some((k, h, size))
                })
                .collect()
        };
        let mut count = 0;
        for (part, cap) in batches(&new) {
            let keys: Vec<&str> = part.iter().map(|(k, _, _)| k.as_str()).collect();
            let mut got: Vec<Option<Result<Vec<PackRecord>>>> = vec![None; 0];
            got.resize_with(part.len(), || None);
            // The cache first: a cached index object is checked like any.
            if let Some(c) = cache
                && let Ok(bytes) = c.get_objects(&keys, cap)
            {
                for ((g, b), (_, h, _)) in got.iter_mut().zip(bytes).zip(part) {
                    if let Some(b) = b
                        && let Ok(recs) = pack::decode_index(h, &b)
                    {
                        *g = Some(Ok(recs));
                    }
                }
            }
            let want: Vec<usize> = (0..part.len()).filter(|&i| got[i].is_none()).collect();
            if !want.is_empty() {
                let wkeys: Vec<&str> = want.iter().map(|&i| keys[i]).collect();
                let fetched = store.get_objects(&wkeys, cap)?;
                let mut to_cache = Vec::new();
                for (&i, b) in want.iter().zip(fetched) {
                    // Gone since the listing (a garbage collection): skip.
                    let Some(b) = b else { continue };
                    let r = pack::decode_index(&part[i].1, &b);
                    if r.is_ok() {
                        to_cache.push((keys[i], b));
                    }
                    got[i] = Some(r);
                }
                if let Some(c) = cache {
                    let objs: Vec<(&str, &[u8])> =
                        to_cache.iter().map(|(k, b)| (*k, b.as_slice())).collect();
                    if let Err(e) = c.put_objects(&objs) {
                        tracing::warn!("caching index objects: {e}");
                    }
                }
            }
            let mut st = self.lock()?;
            for ((key, _, _), g) in part.iter().zip(got) {
                match g {
                    None => continue,
                    Some(Ok(recs)) => {
                        st.add(recs);
                        st.good.insert(key.clone());
                        count += 1;
                    }
                    Some(Err(e)) => {
                        let why = format!(
                            "{}/{key}: {}",
                            self.location,
                            e.context().unwrap_or("corrupt")
                        );
                        tracing::warn!("ignoring a damaged index object: {why}");
                        st.damaged.push(why);
                    }
                }
                st.seen.insert(key.clone());
            }
        }
        Ok(count)
    }

    /// The store's format version (1: loose chunks only so far).
    pub fn version(&self) -> u32 {
        self.lock().map_or(1, |s| s.version)
    }

    /// Where the chunk `addr` is packed, if any index places it.
    pub fn locate(&self, addr: &blake3::Hash) -> Option<ChunkLoc> {
        let st = self.lock().ok()?;
        let &(p, offset, len) = st.at.get(addr)?;
        Some(ChunkLoc {
            pack: st.packs[p as usize],
            offset,
            len,
        })
    }

    /// Every place the chunk `addr` is packed, the one [`Catalog::locate`]
    /// gives first, then copies in other packs as the index objects list
    /// them.
    pub fn locate_all(&self, addr: &blake3::Hash) -> Vec<ChunkLoc> {
        let Ok(st) = self.lock() else {
            return Vec::new();
        };
        let loc = |&(p, offset, len): &(u32, u64, u32)| ChunkLoc {
            pack: st.packs[p as usize],
            offset,
            len,
        };
        st.at
            .get(addr)
            .into_iter()
            .chain(st.more.get(addr).into_iter().flatten())
            .map(loc)
            .collect()
    }

    /// Packed chunks known.
    pub fn chunk_count(&self) -> usize {
        self.lock().map_or(0, |s| s.at.len())
    }

    /// Packs known, by name.
    pub fn packs(&self) -> Vec<blake3::Hash> {
        self.lock().map_or_else(|_| Vec::new(), |s| s.packs.clone())
    }

    /// Index objects read, by object name.
    pub fn index_keys(&self) -> Vec<String> {
        self.lock()
            .map_or_else(|_| Vec::new(), |s| s.seen.iter().cloned().collect())
    }

    /// What is known to be damaged (for the message of a missing chunk).
    pub fn damage(&self) -> Vec<String> {
        self.lock()
            .map_or_else(|_| Vec::new(), |s| s.damaged.clone())
    }

    /// Records packs just written (by this client's own push).
    pub(crate) fn learn(&self, index: &str, recs: Vec<PackRecord>) -> Result<()> {
        let mut st = self.lock()?;
        st.add(recs);
        st.seen.insert(index.to_string());
        st.good.insert(index.to_string());
        Ok(())
    }

    /// Every packed chunk known, as pack records (one location per chunk:
    /// a chunk in two packs is listed in the first one seen), and the index
    /// objects they came from: what a compaction writes and replaces.
    pub(crate) fn records(&self) -> Result<(Vec<PackRecord>, Vec<String>)> {
        let st = self.lock()?;
        let mut recs: Vec<PackRecord> = st
            .packs
            .iter()
            .zip(&st.sizes)
            .map(|(p, &size)| PackRecord {
                name: *p.as_bytes(),
                size,
                entries: Vec::new(),
            })
            .collect();
        for (addr, &(p, offset, len)) in &st.at {
            recs[p as usize].entries.push(super::PackEntry {
                addr: *addr.as_bytes(),
                offset,
                len,
            });
        }
        recs.retain(|r| !r.entries.is_empty());
        for r in &mut recs {
            r.entries.sort_unstable_by_key(|e| e.offset);
        }
        Ok((recs, st.good.iter().cloned().collect()))
    }

    /// Index objects read well so far.
    /// The index objects whose records this catalog holds now (read and
    /// undamaged, or written by this client, less those it merged away).
    pub(crate) fn good_keys(&self) -> Vec<String> {
        self.lock()
            .map_or_else(|_| Vec::new(), |s| s.good.iter().cloned().collect())
    }

    pub(crate) fn good_count(&self) -> usize {
        self.lock().map_or(0, |s| s.good.len())
    }

    /// Forgets index objects a compaction replaced.
    pub(crate) fn forget(&self, keys: &[String]) -> Result<()> {
        let mut st = self.lock()?;
        for k in keys {
            st.good.remove(k);
        }
        Ok(())
    }
}

impl State {
    fn add(&mut self, recs: Vec<PackRecord>) {
        for r in recs {
            let name = blake3::Hash::from_bytes(r.name);
            let next = self.packs.len() as u32;
            let p = *self.pack_pos.entry(name).or_insert(next);
            if p == next {
                self.packs.push(name);
                self.sizes.push(r.size);
            }
            for e in r.entries {
                let addr = blake3::Hash::from_bytes(e.addr);
                let here = (p, e.offset, e.len);
                let first = *self.at.entry(addr).or_insert(here);
                if first.0 != p {
                    let more = self.more.entry(addr).or_default();
                    if more.len() < MORE_COPIES && more.iter().all(|m| m.0 != p) {
                        more.push(here);
                    }
                }
            }
        }
    }
}

/// Reads and checks one index object (for tools that need every pack's
/// full record, such as a garbage collector).
pub fn read_index(store: &dyn BlobStore, key: &str) -> Result<Vec<PackRecord>> {
    let Some(name) = parse_name(key, "index/") else {
        return Err(Error::with(
            ErrorKind::InvalidInput,
            format!("{key}: not an index object name"),
        ));
    };
    let Some(bytes) = store.get_objects(&[key], MAX_INDEX_OBJECT)?.pop().flatten() else {
        return Err(Error::with(
            ErrorKind::NotFound,
            format!("{}/{key}: no such index object", store.location()),
        ));
    };
    pack::decode_index(&name, &bytes).map_err(|e| {
        Error::with(
            e.kind(),
            format!(
                "{}/{key}: {}",
                store.location(),
                e.context().unwrap_or("corrupt")
            ),
        )
    })
}

/// A pack's own index, read from its trailer by two ranged reads (the
/// footer, then the trailer), checked against the pack's name and `size`
/// (what an index object says, or a listing): for rebuilding or checking
/// an index without trusting it.
pub fn read_pack_index(
    store: &dyn BlobStore,
    pack: &blake3::Hash,
    size: u64,
) -> Result<PackRecord> {
    read_pack_indexes(store, &[(*pack, size)])?
        .pop()
        .unwrap_or_else(|| Err(Error::with(ErrorKind::Io, "no answer for a pack")))
}

/// [`read_pack_index`] of many packs, their footers and then their
/// trailers asked for a batch at a time (a remote store keeps a batch's
/// requests in flight together). The outer error is the store's; each
/// pack's own problem (missing, damaged) is its own entry's.
pub(crate) fn read_pack_indexes(
    store: &dyn BlobStore,
    packs: &[(blake3::Hash, u64)],
) -> Result<Vec<Result<PackRecord>>> {
    const BATCH: usize = 64;
    let mut out = Vec::with_capacity(packs.len());
    for part in packs.chunks(BATCH) {
        let keys: Vec<String> = part.iter().map(|(p, _)| pack::pack_key(p)).collect();
        let named = |i: usize, e: Error| {
            Error::with(
                e.kind(),
                format!(
                    "{}/{}: {}",
                    store.location(),
                    keys[i],
                    e.context().unwrap_or("corrupt")
                ),
            )
        };
        let missing = |i: usize| {
            Error::with(
                ErrorKind::NotFound,
                format!("{}/{}: no such pack", store.location(), keys[i]),
            )
        };
        // Each pack's answer once known; `None` while its reads go on.
        let mut answers: Vec<Option<Result<PackRecord>>> = part
            .iter()
            .enumerate()
            .map(|(i, &(_, size))| {
                (!(pack::PACK_HEAD + pack::PACK_FOOT..=super::MAX_PACK_OBJECT).contains(&size))
                    .then(|| {
                        Err(named(
                            i,
                            Error::corrupt(format!("size {size} is out of range for a pack")),
                        ))
                    })
            })
            .collect();
        let want: Vec<usize> = (0..part.len()).filter(|&i| answers[i].is_none()).collect();
        let reqs: Vec<(&str, std::ops::Range<u64>)> = want
            .iter()
            .map(|&i| {
                let size = part[i].1;
                (keys[i].as_str(), size - pack::PACK_FOOT..size)
            })
            .collect();
        let feet = store.get_ranges(&reqs)?;
        let mut trailers: Vec<(usize, [u8; 32], std::ops::Range<u64>)> = Vec::new();
        for (&i, foot) in want.iter().zip(feet) {
            let size = part[i].1;
            let Some(foot) = foot else {
                answers[i] = Some(Err(missing(i)));
                continue;
            };
            match pack::decode_footer(size, &foot) {
                Ok((len, _)) if len > super::MAX_RANGE_REQUEST => {
                    answers[i] = Some(Err(named(i, Error::corrupt("pack trailer is too long"))));
                }
                Ok((len, hash)) => {
                    let end = size - pack::PACK_FOOT;
                    trailers.push((i, hash, end - len..end));
                }
                Err(e) => answers[i] = Some(Err(named(i, e))),
            }
        }
        let reqs: Vec<(&str, std::ops::Range<u64>)> = trailers
            .iter()
            .map(|(i, _, r)| (keys[*i].as_str(), r.clone()))
            .collect();
        let got = store.get_ranges(&reqs)?;
        for ((i, hash, _), trailer) in trailers.iter().zip(got) {
            let (name, size) = part[*i];
            answers[*i] = Some(match trailer {
                None => Err(missing(*i)),
                Some(t) => pack::decode_trailer(&name, size, hash, &t).map_err(|e| named(*i, e)),
            });
        }
        out.extend(
            answers.into_iter().map(|a| {
                a.unwrap_or_else(|| Err(Error::with(ErrorKind::Io, "no answer for a pack")))
            }),
        );
    }
    Ok(out)
}

/// Reads a whole pack and checks it: header, trailer, name, and every
/// chunk against its address. Its record on success.
pub fn verify_pack(store: &dyn BlobStore, pack: &blake3::Hash) -> Result<PackRecord> {
    let key = pack::pack_key(pack);
    let Some(bytes) = store
        .get_objects(&[&key], super::MAX_PACK_OBJECT)?
        .pop()
        .flatten()
    else {
        return Err(Error::with(
            ErrorKind::NotFound,
            format!("{}/{key}: no such pack", store.location()),
        ));
    };
    pack::check_pack(pack, &bytes).map_err(|e| {
        Error::with(
            e.kind(),
            format!(
                "{}/{key}: {}",
                store.location(),
                e.context().unwrap_or("corrupt")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(sizes: &[u64]) -> Vec<ToRead> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let h = blake3::hash(&i.to_le_bytes());
                (format!("index/{}", h.to_hex()), h, s)
            })
            .collect()
    }

    /// Batches keep every object, in order, under both bounds.
    fn check(sizes: &[u64]) -> Vec<usize> {
        let new = listed(sizes);
        let got = batches(&new);
        let mut seen = 0;
        for (part, cap) in &got {
            assert!(!part.is_empty() && part.len() <= INDEX_BATCH);
            assert_eq!(*cap, part.iter().map(|p| p.2).max().unwrap());
            assert!(
                part.len() == 1 || part.len() as u64 * cap <= BATCH_BYTES,
                "{} × {cap}",
                part.len()
            );
            assert_eq!(part[0].0, new[seen].0);
            seen += part.len();
        }
        assert_eq!(seen, new.len());
        got.iter().map(|(p, _)| p.len()).collect()
    }

    #[test]
    fn index_batches_are_bounded_by_count_and_bytes() {
        assert_eq!(check(&[]), Vec::<usize>::new());
        assert_eq!(check(&[1024; 100]), [64, 36]);
        assert_eq!(check(&[MAX_INDEX_OBJECT; 10]), [4, 4, 2]);
        assert_eq!(
            check(&[1024, 1024, 48 << 20, 1024, 1024, 1024, 1024]),
            [5, 2]
        );
        let mut x = 7u64;
        let sizes: Vec<u64> = (0..500)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 20) % MAX_INDEX_OBJECT
            })
            .collect();
        check(&sizes);
    }
}
