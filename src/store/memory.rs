//! A store in memory: for tests, and as the staging area of a pull.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use super::refs::{self, RefVersion};
use super::{BlobStore, check_key, check_range, chunk_key, manifest_key, oversized, short_object};
use crate::error::{Error, ErrorKind, Result};

/// Objects in memory by name (chunks, manifests, packs, index objects),
/// shared by whoever holds the store.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<BTreeMap<String, Vec<u8>>>,
    refs: Mutex<Refs>,
    /// When each object was last written (see [`BlobStore::list_info`]).
    times: Mutex<HashMap<String, SystemTime>>,
}

/// Refs apart from the objects: each one's bytes and generation (unique
/// across the store), which is its version for compare-and-swap. Other
/// objects written by compare-and-swap ([`BlobStore::put_if`]) live with
/// the rest, versioned by their content's hash.
#[derive(Debug, Default)]
struct Refs {
    map: HashMap<String, (Vec<u8>, u64)>,
    generation: u64,
}

fn content_version(bytes: &[u8]) -> RefVersion {
    RefVersion::new(blake3::hash(bytes).to_hex().to_string())
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, BTreeMap<String, Vec<u8>>>> {
        self.inner
            .lock()
            .map_err(|_| Error::with(ErrorKind::Io, "memory store poisoned"))
    }

    fn lock_refs(&self) -> Result<MutexGuard<'_, Refs>> {
        self.refs
            .lock()
            .map_err(|_| Error::with(ErrorKind::Io, "memory store poisoned"))
    }

    /// Records that `keys` were written now.
    fn touch<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        if let Ok(mut t) = self.times.lock() {
            let now = SystemTime::now();
            for k in keys {
                t.insert(k.to_string(), now);
            }
        }
    }

    /// Sets when an object was last written (for tests of what garbage
    /// collection leaves young objects alone).
    #[doc(hidden)]
    pub fn set_modified(&self, key: &str, when: SystemTime) {
        if let Ok(mut t) = self.times.lock() {
            t.insert(key.to_string(), when);
        }
    }

    /// Number of loose chunk objects held.
    pub fn chunk_count(&self) -> usize {
        self.lock().map_or(0, |i| {
            i.range("chunks/".to_string()..)
                .take_while(|(k, _)| k.starts_with("chunks/"))
                .count()
        })
    }

    /// Replaces a chunk's stored bytes without any check (for tests of
    /// corruption handling).
    #[doc(hidden)]
    pub fn corrupt_chunk(&self, addr: &blake3::Hash, bytes: Vec<u8>) {
        if let Ok(mut i) = self.lock() {
            i.insert(chunk_key(addr), bytes);
        }
    }

    /// Drops a chunk; whether it was there (for tests of missing chunks).
    #[doc(hidden)]
    pub fn remove_chunk(&self, addr: &blake3::Hash) -> bool {
        self.lock()
            .is_ok_and(|mut i| i.remove(&chunk_key(addr)).is_some())
    }

    /// Replaces any object without a check (for tests of corruption).
    #[doc(hidden)]
    pub fn put_raw(&self, key: &str, bytes: Vec<u8>) {
        if let Ok(mut i) = self.lock() {
            i.insert(key.to_string(), bytes);
        }
        self.touch([key]);
    }

    /// Any object, unchecked (for tests).
    #[doc(hidden)]
    pub fn get_raw(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().ok()?.get(key).cloned()
    }
}

impl BlobStore for MemStore {
    fn has_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<bool>> {
        let i = self.lock()?;
        Ok(addrs
            .iter()
            .map(|a| i.contains_key(&chunk_key(a)))
            .collect())
    }

    fn get_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        let i = self.lock()?;
        Ok(addrs
            .iter()
            .map(|a| i.get(&chunk_key(a)).cloned())
            .collect())
    }

    fn put_chunks(&self, chunks: &[(blake3::Hash, &[u8])]) -> Result<()> {
        let mut i = self.lock()?;
        let mut new = Vec::new();
        for (a, b) in chunks {
            let k = chunk_key(a);
            if !i.contains_key(&k) {
                i.insert(k.clone(), b.to_vec());
                new.push(k);
            }
        }
        drop(i);
        self.touch(new.iter().map(String::as_str));
        Ok(())
    }

    fn get_manifest(&self, root: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        Ok(self.lock()?.get(&manifest_key(root)).cloned())
    }

    fn put_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        let k = manifest_key(root);
        self.lock()?.insert(k.clone(), bytes.to_vec());
        self.touch([k.as_str()]);
        Ok(())
    }

    fn location(&self) -> String {
        "memory store".to_string()
    }

    fn get_ref(&self, name: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        refs::check_name(name)?;
        let i = self.lock_refs()?;
        Ok(i.map
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
        let mut i = self.lock_refs()?;
        let held = i.map.get(name).map(|(_, g)| RefVersion::new(g.to_string()));
        if held.as_ref() != expected {
            return Err(refs::conflict(name, "its version is not the one read"));
        }
        i.generation += 1;
        let g = i.generation;
        i.map.insert(name.to_string(), (bytes.to_vec(), g));
        Ok(RefVersion::new(g.to_string()))
    }

    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        check_key(key)?;
        let i = self.lock()?;
        let Some(b) = i.get(key) else {
            return Ok(None);
        };
        if b.len() as u64 > refs::MAX_REF_OBJECT {
            return Err(oversized(
                &format!("memory store/{key}"),
                Some(b.len() as u64),
                refs::MAX_REF_OBJECT,
            ));
        }
        Ok(Some((b.clone(), content_version(b))))
    }

    /// Compare and swap under the objects' mutex, in the objects' own
    /// namespace (a manifest created this way is a manifest).
    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&RefVersion>) -> Result<RefVersion> {
        check_key(key)?;
        let mut i = self.lock()?;
        let held = i.get(key).map(|b| content_version(b));
        if held.as_ref() != expected {
            return Err(refs::conflict(key, "its version is not the one read"));
        }
        i.insert(key.to_string(), bytes.to_vec());
        drop(i);
        self.touch([key]);
        Ok(content_version(bytes))
    }

    fn list_refs(&self) -> Result<Vec<String>> {
        Ok(self.lock_refs()?.map.keys().cloned().collect())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let i = self.lock()?;
        Ok(i.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn list_info(&self, prefix: &str) -> Result<Vec<super::ObjectInfo>> {
        let i = self.lock()?;
        let t = self
            .times
            .lock()
            .map_err(|_| Error::with(ErrorKind::Io, "memory store poisoned"))?;
        Ok(i.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, b)| super::ObjectInfo {
                key: k.clone(),
                size: b.len() as u64,
                // Written around `put_raw`'s lock: as young as can be.
                modified: t.get(k).copied().unwrap_or_else(SystemTime::now),
            })
            .collect())
    }

    fn get_objects(&self, keys: &[&str], max: u64) -> Result<Vec<Option<Vec<u8>>>> {
        let i = self.lock()?;
        keys.iter()
            .map(|k| {
                check_key(k)?;
                match i.get(*k) {
                    Some(b) if b.len() as u64 > max => Err(oversized(
                        &format!("memory store/{k}"),
                        Some(b.len() as u64),
                        max,
                    )),
                    got => Ok(got.cloned()),
                }
            })
            .collect()
    }

    fn get_ranges(&self, reqs: &[(&str, Range<u64>)]) -> Result<Vec<Option<Vec<u8>>>> {
        let i = self.lock()?;
        reqs.iter()
            .map(|(k, r)| {
                check_key(k)?;
                check_range(k, r)?;
                let Some(b) = i.get(*k) else { return Ok(None) };
                let len = b.len() as u64;
                if r.end > len {
                    let got = len.saturating_sub(r.start);
                    return Err(short_object(&format!("memory store/{k}"), r, got));
                }
                Ok(Some(b[r.start as usize..r.end as usize].to_vec()))
            })
            .collect()
    }

    fn put_objects(&self, objs: &[(&str, &[u8])]) -> Result<()> {
        objs.iter().try_for_each(|(k, _)| check_key(k))?;
        let mut i = self.lock()?;
        for (k, b) in objs {
            i.insert(k.to_string(), b.to_vec());
        }
        drop(i);
        self.touch(objs.iter().map(|(k, _)| *k));
        Ok(())
    }

    fn delete_objects(&self, keys: &[&str]) -> Result<()> {
        keys.iter().try_for_each(|k| check_key(k))?;
        let mut i = self.lock()?;
        for k in keys {
            i.remove(*k);
        }
        Ok(())
    }
}
