//! The chunks of a lazily opened tree: fetched from the store on first
//! read (through the host's cache), with pipelined read-ahead for
//! sequential reads.
//!
//! A checkpoint's chunk table lists each file's chunks in order, and a
//! push packs them in that order, so the chunks after a missed one are
//! the same file's next chunks, stored next to it in one pack. A miss
//! fetches a small window of the file's following chunks (never past the
//! file's run in the table) in one coalesced ranged read; once the reader
//! takes a second chunk of that window it is reading sequentially, and
//! background fetches keep a growing look-ahead of the file in flight
//! (`ahead` decides what and bounds it), so a guest reading a big file
//! from start to end waits about one round trip, not one per window.
//!
//! A background fetch runs on its own thread and holds only the shared
//! parts of the source; what it brings is held (counted against the
//! tree's read-ahead cap, with what is in flight) until its first read
//! takes it. A reader that wants a chunk in flight waits for that fetch;
//! if the fetch failed, the reader fetches the chunk itself, so the error
//! it sees is its own chunk's, as an I/O error. When the tree is dropped,
//! fetches in flight finish their one request and their bytes are dropped.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use super::ahead::{Ahead, Job, MAX_HELD};
use super::catalog::Catalog;
use super::fetch::{self, MAX_SPAN};
use super::{BlobStore, io_err};
use crate::chunk::ChunkSource;
use crate::error::{Error, ErrorKind, Result};

/// Chunk bytes from a store (through a local cache) on demand.
pub(crate) struct StoreSource {
    shared: Arc<Shared>,
}

/// What background fetches share with the source.
struct Shared {
    remote: Arc<dyn BlobStore>,
    /// Where the remote's packed chunks are; `None` for a store read one
    /// loose chunk at a time (a pull's local staging store).
    catalog: Option<Arc<CatalogSlot>>,
    cache: Option<Arc<dyn BlobStore>>,
    /// Address and length of chunk `key`.
    table: Vec<(blake3::Hash, u32)>,
    /// One past the last key of the file run each key is in.
    run_end: Vec<u64>,
    ahead: Mutex<Ahead>,
    /// Signalled when a background fetch ends.
    landed: Condvar,
}

/// The remote's catalog, which a lazy open lets a background thread
/// finish reading (the index objects, one round trip) while the tree is
/// built and the caller goes on; the first fetch waits for it.
pub(crate) struct CatalogSlot(OnceLock<std::result::Result<Arc<Catalog>, String>>);

impl CatalogSlot {
    /// A slot filled by a thread that reads the index objects `listed`
    /// into `cat`.
    pub(crate) fn finish_in_background(
        store: Arc<dyn BlobStore>,
        cache: Option<Arc<dyn BlobStore>>,
        cat: Catalog,
        listed: super::catalog::Listed,
    ) -> Arc<CatalogSlot> {
        let slot = Arc::new(CatalogSlot(OnceLock::new()));
        // Fills the slot even if the reading thread unwinds or cannot
        // start, so no reader waits forever.
        struct Fill(Arc<CatalogSlot>);
        impl Drop for Fill {
            fn drop(&mut self) {
                let _ = self.0.0.set(Err("the store's index reader stopped".into()));
            }
        }
        let fill = Fill(slot.clone());
        let spawned = std::thread::Builder::new()
            .name("cowvfs-index".into())
            .spawn(move || {
                let got = cat
                    .finish(&*store, cache.as_deref(), listed)
                    .map(|()| {
                        let cat = Arc::new(cat);
                        share_catalog(&store, &cat);
                        cat
                    })
                    .map_err(|e| {
                        e.context()
                            .unwrap_or("reading the index failed")
                            .to_string()
                    });
                let _ = fill.0.0.set(got);
            });
        if let Err(e) = spawned {
            tracing::warn!("starting the index reader: {e}");
        }
        slot
    }

    /// A slot holding `cat`, a catalog of the same store already read
    /// (for another tree), once a thread has read the index objects
    /// pushed since. If that listing fails, the slot holds `cat` as it
    /// was: a fetch that misses lists again.
    pub(crate) fn refresh_in_background(
        store: Arc<dyn BlobStore>,
        cache: Option<Arc<dyn BlobStore>>,
        cat: Arc<Catalog>,
    ) -> Arc<CatalogSlot> {
        let slot = Arc::new(CatalogSlot(OnceLock::new()));
        let fill = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("cowvfs-index".into())
            .spawn(move || {
                if let Err(e) = cat.refresh(&*store, cache.as_deref()) {
                    tracing::warn!("refreshing the catalog of {}: {e}", store.location());
                }
                let _ = fill.0.set(Ok(cat));
            });
        if let Err(e) = spawned {
            tracing::warn!("starting the index reader: {e}");
            let _ = slot
                .0
                .set(Err("the store's index reader did not start".into()));
        }
        slot
    }

    /// The catalog, once read.
    fn get(&self) -> Result<&Arc<Catalog>> {
        self.0.wait().as_ref().map_err(|e| io_err(e.clone()))
    }
}

/// The catalogs of the stores trees were lazily opened from, one per
/// store object: every tree opened from the same store shares its
/// catalog, which places each of the store's chunks, instead of holding a
/// copy of the whole store's index each. The store is held weakly too,
/// so its address cannot be reused by another store while its entry
/// stands; an entry goes once the last tree reading through it does.
type SharedCatalogs = Vec<(Weak<dyn BlobStore>, Weak<Catalog>)>;

fn shared_catalogs() -> MutexGuard<'static, SharedCatalogs> {
    static CATALOGS: Mutex<SharedCatalogs> = Mutex::new(Vec::new());
    // The list holds only weak pointers: a panic elsewhere cannot leave
    // it inconsistent.
    CATALOGS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The catalog of `store` that a tree still open from it reads through.
pub(crate) fn shared_catalog(store: &Arc<dyn BlobStore>) -> Option<Arc<Catalog>> {
    let list = shared_catalogs();
    list.iter().find_map(|(s, c)| {
        let s = s.upgrade()?;
        Arc::ptr_eq(&s, store).then(|| c.upgrade()).flatten()
    })
}

/// Offers `cat` as `store`'s shared catalog, dropping entries whose trees
/// are all gone.
fn share_catalog(store: &Arc<dyn BlobStore>, cat: &Arc<Catalog>) {
    let mut list = shared_catalogs();
    list.retain(|(s, c)| s.strong_count() > 0 && c.strong_count() > 0);
    list.retain(|(s, _)| !s.upgrade().is_some_and(|s| Arc::ptr_eq(&s, store)));
    list.push((Arc::downgrade(store), Arc::downgrade(cat)));
}

impl fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSource")
            .field("remote", &self.shared.remote.location())
            .field("chunks", &self.shared.table.len())
            .finish()
    }
}

impl Drop for StoreSource {
    fn drop(&mut self) {
        self.shared.lock().close();
    }
}

/// Read-ahead figures, for tests.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct AheadStats {
    pub used: u64,
    pub peak: u64,
    pub jobs: usize,
}

/// A view of a source's read-ahead that outlives the source, for tests.
#[cfg(test)]
pub(crate) struct Probe(Arc<Shared>);

#[cfg(test)]
impl Probe {
    /// The catalog the source reads through, once read.
    pub(crate) fn catalog(&self) -> Option<Arc<Catalog>> {
        let slot = self.0.catalog.as_ref()?;
        slot.get().ok().cloned()
    }

    pub(crate) fn stats(&self) -> AheadStats {
        let a = self.0.lock();
        AheadStats {
            used: a.used(),
            peak: a.peak,
            jobs: a.jobs,
        }
    }
}

impl StoreSource {
    pub(crate) fn new(
        remote: Arc<dyn BlobStore>,
        catalog: Option<Arc<CatalogSlot>>,
        cache: Option<Arc<dyn BlobStore>>,
        table: Vec<(blake3::Hash, u32)>,
        run_end: Vec<u64>,
    ) -> StoreSource {
        StoreSource::with_cap(remote, catalog, cache, table, run_end, MAX_HELD)
    }

    /// [`StoreSource::new`] holding at most `cap` bytes of read-ahead
    /// (held and in flight).
    pub(crate) fn with_cap(
        remote: Arc<dyn BlobStore>,
        catalog: Option<Arc<CatalogSlot>>,
        cache: Option<Arc<dyn BlobStore>>,
        table: Vec<(blake3::Hash, u32)>,
        run_end: Vec<u64>,
        cap: u64,
    ) -> StoreSource {
        StoreSource {
            shared: Arc::new(Shared {
                remote,
                catalog,
                cache,
                table,
                run_end,
                ahead: Mutex::new(Ahead::new(cap)),
                landed: Condvar::new(),
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn probe(&self) -> Probe {
        Probe(self.shared.clone())
    }
}

impl Shared {
    /// The read-ahead state. Nothing panics while holding it, and every
    /// change leaves it whole, so a poisoned lock's state is still good.
    fn lock(&self) -> MutexGuard<'_, Ahead> {
        self.ahead.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run_end(&self, key: u64) -> u64 {
        self.run_end
            .get(key as usize)
            .copied()
            .unwrap_or(key + 1)
            .min(self.table.len() as u64)
    }

    /// Fetches `keys` from the remote; each with its bytes. They are
    /// hashed against their addresses here when there is a cache (which
    /// keeps only checked chunks); without one each blob checks its bytes
    /// on first use, so hashing here too would be twice.
    fn fetch_keys(&self, catalog: &Catalog, keys: &[u64]) -> Result<Vec<(u64, Vec<u8>)>> {
        self.fetch_checked(catalog, keys, self.cache.is_some())
    }

    /// [`Shared::fetch_keys`], hashing every chunk here if `verify`: a
    /// copy with the wrong bytes is then passed over for another.
    fn fetch_checked(
        &self,
        catalog: &Catalog,
        keys: &[u64],
        verify: bool,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let wants: Vec<(blake3::Hash, u32)> =
            keys.iter().map(|&k| self.table[k as usize]).collect();
        let mut got = Vec::with_capacity(keys.len());
        fetch::fetch_chunks(
            &*self.remote,
            catalog,
            &wants,
            4 * MAX_SPAN,
            verify,
            &mut |i, b| {
                got.push((keys[i], b));
                Ok(())
            },
        )?;
        Ok(got)
    }

    fn put_cache(&self, got: &[(u64, Vec<u8>)]) {
        if let Some(cache) = &self.cache {
            let pairs: Vec<(blake3::Hash, &[u8])> = got
                .iter()
                .map(|(k, b)| (self.table[*k as usize].0, b.as_slice()))
                .collect();
            if let Err(e) = cache.put_chunks(&pairs) {
                tracing::warn!("caching {} chunks: {e}", pairs.len());
            }
        }
    }

    /// Starts `jobs` in the background.
    fn start(self: &Arc<Self>, jobs: Vec<Job>) {
        for job in jobs {
            let done = Landing {
                shared: self.clone(),
                keys: job.keys,
                bytes: job.bytes,
                got: Vec::new(),
            };
            let spawned = std::thread::Builder::new()
                .name("cowvfs-read-ahead".into())
                .spawn(move || background(done));
            if let Err(e) = spawned {
                // The job's `Landing` was dropped with the closure: its
                // keys are free again, and readers fetch them themselves.
                tracing::warn!("starting a read-ahead thread: {e}");
            }
        }
    }
}

/// A background fetch's keys; dropping it (after the fetch, or on an
/// unwind) holds what arrived, frees the keys and wakes waiting readers.
struct Landing {
    shared: Arc<Shared>,
    keys: Vec<u64>,
    bytes: u64,
    got: Vec<(u64, Vec<u8>)>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut a = self.shared.lock();
        for (k, b) in self.got.drain(..) {
            a.hold(k, b);
        }
        a.landed(&self.keys, self.bytes);
        drop(a);
        self.shared.landed.notify_all();
    }
}

fn background(mut done: Landing) {
    let shared = done.shared.clone();
    if shared.lock().closed {
        return;
    }
    let Some(Ok(catalog)) = shared.catalog.as_ref().map(|c| c.get()) else {
        return;
    };
    match shared.fetch_keys(catalog, &done.keys) {
        Ok(got) => {
            shared.put_cache(&got);
            done.got = got;
        }
        // The reader of each chunk fetches it itself and sees its error.
        Err(e) => tracing::debug!("read-ahead of {} chunks failed: {e}", done.keys.len()),
    }
}

impl ChunkSource for StoreSource {
    /// The bytes `fetch` gave were wrong (read unchecked, from the first
    /// pack the index places the chunk in): fetched again, every copy
    /// checked here, so a wrong one is passed over for another pack's or
    /// the loose object.
    fn fetch_again(&self, key: u64, addr: &blake3::Hash) -> Result<Vec<u8>> {
        let sh = &self.shared;
        if sh.table.get(key as usize).map(|t| t.0) != Some(*addr) {
            return Err(io_err("chunk key names another chunk"));
        }
        let as_io = |e: Error| Error::with(ErrorKind::Io, e.context().unwrap_or("").to_string());
        let Some(slot) = &sh.catalog else {
            // No catalog: the loose object, which `fetch` checked already.
            return Err(io_err(format!(
                "{}: chunk {} is corrupt",
                sh.remote.location(),
                addr.to_hex()
            )));
        };
        let catalog = slot.get().map_err(as_io)?;
        let got = sh.fetch_checked(catalog, &[key], true).map_err(as_io)?;
        sh.put_cache(&got);
        got.into_iter()
            .next()
            .map(|(_, b)| b)
            .ok_or_else(|| io_err(format!("chunk {} was not fetched", addr.to_hex())))
    }

    fn fetch(&self, key: u64, addr: &blake3::Hash) -> Result<Vec<u8>> {
        let sh = &self.shared;
        let Some(&(want, len)) = sh.table.get(key as usize) else {
            return Err(io_err("chunk key out of range"));
        };
        if want != *addr {
            return Err(io_err("chunk key names another chunk"));
        }
        let run_end = sh.run_end(key);
        let file_start = key == 0 || sh.run_end(key - 1) == key;
        let chunk_len = |k: u64| sh.table[k as usize].1 as u64;
        {
            let mut a = sh.lock();
            // A chunk in flight: wait for its fetch to land.
            while a.is_flying(key) {
                a = sh.landed.wait(a).unwrap_or_else(PoisonError::into_inner);
            }
            if let Some(b) = a.take(key) {
                let jobs = a.plan(key, file_start, run_end, chunk_len);
                drop(a);
                sh.start(jobs);
                return Ok(b);
            }
        }
        if let Some(cache) = &sh.cache
            && let Ok(mut got) = cache.get_chunks(&[want])
            && let Some(Some(bytes)) = got.pop()
            && bytes.len() == len as usize
            && blake3::hash(&bytes) == want
        {
            return Ok(bytes);
        }
        // Whatever went wrong, the reader sees an I/O error, as with a
        // lazily opened checkpoint file.
        let as_io = |e: Error| Error::with(ErrorKind::Io, e.context().unwrap_or("").to_string());
        let Some(slot) = &sh.catalog else {
            let mut got = sh.remote.get_chunks(&[want]).map_err(as_io)?;
            return match got.pop().flatten() {
                Some(b) if b.len() == len as usize && blake3::hash(&b) == want => Ok(b),
                Some(_) => Err(io_err(format!(
                    "{}: chunk {} is corrupt",
                    sh.remote.location(),
                    want.to_hex()
                ))),
                None => Err(io_err(format!(
                    "{}: chunk {} is missing",
                    sh.remote.location(),
                    want.to_hex()
                ))),
            };
        };
        let catalog = slot.get().map_err(as_io)?;
        let keys = sh.lock().miss(key, run_end);
        // A damaged chunk further on must not fail this read: if the
        // window fails, the chunk asked for is fetched alone, and its own
        // error (if any) is what the reader sees.
        let got = match sh.fetch_keys(catalog, &keys) {
            Ok(g) => g,
            Err(_) if keys.len() > 1 => sh.fetch_keys(catalog, &[key]).map_err(as_io)?,
            Err(e) => return Err(as_io(e)),
        };
        sh.put_cache(&got);
        let mut mine = None;
        let mut a = sh.lock();
        for (k, b) in got {
            if k == key {
                mine = Some(b);
            } else {
                a.hold(k, b);
            }
        }
        let jobs = a.plan(key, file_start, run_end, chunk_len);
        drop(a);
        sh.start(jobs);
        mine.ok_or_else(|| io_err(format!("chunk {} was not fetched", want.to_hex())))
    }
}
