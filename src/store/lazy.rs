//! The chunks of a lazily opened tree: fetched from the store on first
//! read (through the host's cache), with read-ahead for sequential reads.
//!
//! A checkpoint's chunk table lists each file's chunks in order, and a
//! push packs them in that order, so the chunks after a missed one are
//! the same file's next chunks, stored next to it in one pack. On a miss
//! the source fetches a window of the file's following chunks too (never
//! past the file's run in the table), in one coalesced ranged read; a miss right where the last window ended
//! means the reader is going sequentially, and the window doubles (8
//! chunks, 512 KiB, up to 256, 16 MiB), so a guest reading a big file from
//! start to end waits for a handful of round trips, not one per 64 KiB.
//! Chunks fetched ahead are held (bounded by [`MAX_HELD`] bytes, the
//! oldest dropped first) until their first read takes them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use super::catalog::Catalog;
use super::fetch::{self, MAX_SPAN};
use super::{BlobStore, io_err};
use crate::chunk::ChunkSource;
use crate::error::{Error, ErrorKind, Result};

/// Chunks fetched on a miss that does not follow the last window.
pub(crate) const FIRST_WINDOW: usize = 8;
/// Largest read-ahead window, in chunks.
pub(crate) const MAX_WINDOW: usize = 256;
/// Most bytes of fetched-ahead chunks held, unread, per opened tree.
pub(crate) const MAX_HELD: u64 = 48 << 20;

/// Chunk bytes from a store (through a local cache) on demand.
pub(crate) struct StoreSource {
    remote: Arc<dyn BlobStore>,
    /// Where the remote's packed chunks are; `None` for a store read one
    /// loose chunk at a time (a pull's local staging store).
    catalog: Option<Arc<Catalog>>,
    cache: Option<Arc<dyn BlobStore>>,
    /// Address and length of chunk `key`.
    table: Vec<(blake3::Hash, u32)>,
    /// One past the last key of the file run each key is in.
    run_end: Vec<u64>,
    ahead: Mutex<Ahead>,
}

#[derive(Default)]
struct Ahead {
    held: HashMap<u64, Vec<u8>>,
    order: VecDeque<u64>,
    held_bytes: u64,
    /// The key just past the last window, and that window's size.
    next: u64,
    window: usize,
}

impl Ahead {
    fn hold(&mut self, key: u64, bytes: Vec<u8>) {
        if self.held.contains_key(&key) {
            return;
        }
        self.held_bytes += bytes.len() as u64;
        self.held.insert(key, bytes);
        self.order.push_back(key);
        while self.held_bytes > MAX_HELD {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.held.remove(&old) {
                self.held_bytes -= b.len() as u64;
            }
        }
    }

    fn take(&mut self, key: u64) -> Option<Vec<u8>> {
        let b = self.held.remove(&key)?;
        self.held_bytes -= b.len() as u64;
        self.order.retain(|k| *k != key);
        Some(b)
    }
}

impl fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSource")
            .field("remote", &self.remote.location())
            .field("chunks", &self.table.len())
            .finish()
    }
}

impl StoreSource {
    pub(crate) fn new(
        remote: Arc<dyn BlobStore>,
        catalog: Option<Arc<Catalog>>,
        cache: Option<Arc<dyn BlobStore>>,
        table: Vec<(blake3::Hash, u32)>,
        run_end: Vec<u64>,
    ) -> StoreSource {
        StoreSource {
            remote,
            catalog,
            cache,
            table,
            run_end,
            ahead: Mutex::new(Ahead::default()),
        }
    }

    /// The keys to fetch for a miss at `key`: it, then the read-ahead
    /// window past it.
    fn window(&self, key: u64) -> Result<Vec<u64>> {
        let mut a = self
            .ahead
            .lock()
            .map_err(|_| io_err("read-ahead state poisoned"))?;
        a.window = if key == a.next && a.window > 0 {
            (a.window * 2).min(MAX_WINDOW)
        } else {
            FIRST_WINDOW
        };
        let run_end = self.run_end.get(key as usize).copied().unwrap_or(key + 1);
        let end = (key + a.window as u64)
            .min(run_end)
            .min(self.table.len() as u64);
        a.next = end;
        Ok((key..end)
            .filter(|k| *k == key || !a.held.contains_key(k))
            .collect())
    }

    /// Fetches `keys` from the remote, verified; each with its bytes.
    fn fetch_keys(&self, catalog: &Catalog, keys: &[u64]) -> Result<Vec<(u64, Vec<u8>)>> {
        let wants: Vec<(blake3::Hash, u32)> =
            keys.iter().map(|&k| self.table[k as usize]).collect();
        let mut got = Vec::with_capacity(keys.len());
        // Without a cache nothing unchecked is kept: each blob checks its
        // bytes on first use, so hashing here too would be twice.
        let verify = self.cache.is_some();
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
}

impl ChunkSource for StoreSource {
    fn fetch(&self, key: u64, addr: &blake3::Hash) -> Result<Vec<u8>> {
        let Some(&(want, len)) = self.table.get(key as usize) else {
            return Err(io_err("chunk key out of range"));
        };
        if want != *addr {
            return Err(io_err("chunk key names another chunk"));
        }
        if let Ok(mut a) = self.ahead.lock()
            && let Some(b) = a.take(key)
        {
            return Ok(b);
        }
        if let Some(cache) = &self.cache
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
        let Some(catalog) = &self.catalog else {
            let mut got = self.remote.get_chunks(&[want]).map_err(as_io)?;
            return match got.pop().flatten() {
                Some(b) if b.len() == len as usize && blake3::hash(&b) == want => Ok(b),
                Some(_) => Err(io_err(format!(
                    "{}: chunk {} is corrupt",
                    self.remote.location(),
                    want.to_hex()
                ))),
                None => Err(io_err(format!(
                    "{}: chunk {} is missing",
                    self.remote.location(),
                    want.to_hex()
                ))),
            };
        };
        let keys = self.window(key).map_err(as_io)?;
        // A damaged chunk further on must not fail this read: if the
        // window fails, the chunk asked for is fetched alone, and its own
        // error (if any) is what the reader sees.
        let got = match self.fetch_keys(catalog, &keys) {
            Ok(g) => g,
            Err(_) if keys.len() > 1 => self.fetch_keys(catalog, &[key]).map_err(as_io)?,
            Err(e) => return Err(as_io(e)),
        };
        if let Some(cache) = &self.cache {
            let pairs: Vec<(blake3::Hash, &[u8])> = got
                .iter()
                .map(|(k, b)| (self.table[*k as usize].0, b.as_slice()))
                .collect();
            if let Err(e) = cache.put_chunks(&pairs) {
                tracing::warn!("caching {} chunks: {e}", pairs.len());
            }
        }
        let mut mine = None;
        if let Ok(mut a) = self.ahead.lock() {
            for (k, b) in got {
                if k == key {
                    mine = Some(b);
                } else {
                    a.hold(k, b);
                }
            }
        }
        mine.ok_or_else(|| io_err(format!("chunk {} was not fetched", want.to_hex())))
    }
}
