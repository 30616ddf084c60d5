//! A store in memory: for tests, and as the staging area of a pull.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::BlobStore;
use super::refs::{self, RefVersion};
use crate::error::{Error, ErrorKind, Result};

/// Chunks and manifests in memory, shared by whoever holds the store.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    chunks: HashMap<blake3::Hash, Vec<u8>>,
    manifests: HashMap<blake3::Hash, Vec<u8>>,
    /// Each ref's bytes and generation (unique across the store).
    refs: HashMap<String, (Vec<u8>, u64)>,
    ref_generation: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| Error::with(ErrorKind::Io, "memory store poisoned"))
    }

    /// Number of chunks held.
    pub fn chunk_count(&self) -> usize {
        self.lock().map_or(0, |i| i.chunks.len())
    }

    /// Replaces a chunk's stored bytes without any check (for tests of
    /// corruption handling).
    #[doc(hidden)]
    pub fn corrupt_chunk(&self, addr: &blake3::Hash, bytes: Vec<u8>) {
        if let Ok(mut i) = self.lock() {
            i.chunks.insert(*addr, bytes);
        }
    }

    /// Drops a chunk; whether it was there (for tests of missing chunks).
    #[doc(hidden)]
    pub fn remove_chunk(&self, addr: &blake3::Hash) -> bool {
        self.lock()
            .is_ok_and(|mut i| i.chunks.remove(addr).is_some())
    }
}

impl BlobStore for MemStore {
    fn has_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<bool>> {
        let i = self.lock()?;
        Ok(addrs.iter().map(|a| i.chunks.contains_key(a)).collect())
    }

    fn get_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        let i = self.lock()?;
        Ok(addrs.iter().map(|a| i.chunks.get(a).cloned()).collect())
    }

    fn put_chunks(&self, chunks: &[(blake3::Hash, &[u8])]) -> Result<()> {
        let mut i = self.lock()?;
        for (a, b) in chunks {
            i.chunks.entry(*a).or_insert_with(|| b.to_vec());
        }
        Ok(())
    }

    fn get_manifest(&self, root: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        Ok(self.lock()?.manifests.get(root).cloned())
    }

    fn put_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        self.lock()?.manifests.insert(*root, bytes.to_vec());
        Ok(())
    }

    fn location(&self) -> String {
        "memory store".to_string()
    }

    fn get_ref(&self, name: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        refs::check_name(name)?;
        let i = self.lock()?;
        Ok(i.refs
            .get(name)
            .map(|(b, g)| (b.clone(), RefVersion::new(g.to_string()))))
    }

    /// Compare and swap under the store's mutex.
    fn put_ref(
        &self,
        name: &str,
        bytes: &[u8],
        expected: Option<&RefVersion>,
    ) -> Result<RefVersion> {
        refs::check_name(name)?;
        let mut i = self.lock()?;
        let held = i
            .refs
            .get(name)
            .map(|(_, g)| RefVersion::new(g.to_string()));
        if held.as_ref() != expected {
            return Err(refs::conflict(name, "its version is not the one read"));
        }
        i.ref_generation += 1;
        let g = i.ref_generation;
        i.refs.insert(name.to_string(), (bytes.to_vec(), g));
        Ok(RefVersion::new(g.to_string()))
    }

    fn list_refs(&self) -> Result<Vec<String>> {
        Ok(self.lock()?.refs.keys().cloned().collect())
    }
}
