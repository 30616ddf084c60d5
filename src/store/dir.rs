//! A store in a local directory: `chunks/ab/<hex>`, `manifests/<hex>` and
//! `refs/<name>` under its root, each object written to a temporary file,
//! fsynced and renamed into place, so a reader sees a whole object or none
//! (a ref's compare-and-swap also holds a lock file: see `put_ref`). Serves as
//! a shared store on a network filesystem and as a host's chunk cache.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::refs::{self, MAX_REF_OBJECT, RefVersion, ref_key};
use super::{
    BlobStore, MAX_CHUNK_OBJECT, MAX_MANIFEST_OBJECT, check_key, check_range, chunk_key,
    manifest_key, oversized, short_object,
};
use crate::atomic::{self, FileOptions, sync_dir};
use crate::error::{Error, ErrorKind, Result};

/// A store rooted at a directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<DirStore> {
        let root = root.into();
        for sub in ["chunks", "manifests"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(|e| Error::io_at(&d, e))?;
        }
        Ok(DirStore { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the chunk `addr` lives (it may not exist).
    pub fn chunk_path(&self, addr: &blake3::Hash) -> PathBuf {
        self.root.join(chunk_key(addr))
    }

    /// Reads one object of at most `bound` bytes. Only a regular file
    /// counts: a symlink is never followed, and a FIFO or device is
    /// refused without blocking on it.
    fn read(&self, path: &Path, bound: u64) -> Result<Option<Vec<u8>>> {
        let Some((f, len)) = self.open_object(path)? else {
            return Ok(None);
        };
        let what = path.display().to_string();
        if len > bound {
            return Err(oversized(&what, Some(len), bound));
        }
        let mut buf = Vec::with_capacity(len as usize);
        (&f).take(bound + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io_at(path, e))?;
        if buf.len() as u64 > bound {
            return Err(oversized(&what, None, bound));
        }
        Ok(Some(buf))
    }

    /// Reads exactly `r` of one object.
    fn read_range(&self, path: &Path, r: &Range<u64>) -> Result<Option<Vec<u8>>> {
        let Some((f, len)) = self.open_object(path)? else {
            return Ok(None);
        };
        let what = path.display().to_string();
        if r.end > len {
            return Err(short_object(&what, r, len.saturating_sub(r.start)));
        }
        let mut buf = vec![0u8; (r.end - r.start) as usize];
        f.read_exact_at(&mut buf, r.start).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                short_object(&what, r, 0)
            } else {
                Error::io_at(path, e)
            }
        })?;
        Ok(Some(buf))
    }

    /// Opens an object file and its size, if it exists (see `read`).
    fn open_object(&self, path: &Path) -> Result<Option<(File, u64)>> {
        use rustix::fs::OFlags;
        let flags = (OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32;
        let f = match File::options().read(true).custom_flags(flags).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(Error::corrupt(format!(
                    "{}: a symlink; a store object must be a regular file",
                    path.display()
                )));
            }
            Err(e) => return Err(Error::io_at(path, e)),
        };
        let m = f.metadata().map_err(|e| Error::io_at(path, e))?;
        if !m.is_file() {
            return Err(Error::corrupt(format!(
                "{}: not a regular file",
                path.display()
            )));
        }
        Ok(Some((f, m.len())))
    }

    /// Where the object `key` lives, once the name is checked.
    fn object_path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Compare and swap of the object `key` (named `what` in errors) under
    /// an exclusive `flock` of `.NAME.lock` beside it (which the kernel
    /// drops when a writer dies, so no lock goes stale): read the object,
    /// compare its content hash with the version expected, write the new
    /// one beside it and rename it into place.
    fn swap(
        &self,
        key: &str,
        what: &str,
        bytes: &[u8],
        expected: Option<&RefVersion>,
    ) -> Result<RefVersion> {
        let path = self.object_path(key)?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Error::with(
                ErrorKind::InvalidInput,
                format!("{key:?} is not a valid store object name"),
            ));
        };
        fs::create_dir_all(dir).map_err(|e| Error::io_at(dir, e))?;
        let lock_path = dir.join(format!(".{}.lock", name.to_string_lossy()));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
            )
            .open(&lock_path)
            .map_err(|e| Error::io_at(&lock_path, e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io_at(&lock_path, e))?;
        let held = match expected {
            // Only whether there is one matters (it may be a big manifest).
            None => self.open_object(&path)?.map(|_| RefVersion::new("")),
            Some(_) => self.read(&path, MAX_REF_OBJECT)?.map(|b| ref_version(&b)),
        };
        if held.as_ref() != expected {
            return Err(refs::conflict(what, "its content is not the one read"));
        }
        self.write(&path, bytes)?;
        sync_dir(dir)?;
        // The lock goes with the file handle, after the rename is durable.
        drop(lock);
        Ok(ref_version(bytes))
    }

    /// Creates the object `key` only if there is none: the content goes
    /// to a temporary file (fsynced), which is then hard-linked to the
    /// object's name, an atomic step that fails if the name is taken. No
    /// lock file is left beside it (so a manifest created this way leaves
    /// nothing else in `manifests/`). On a filesystem without hard links it
    /// falls back to the locked compare and swap.
    fn create(&self, key: &str, bytes: &[u8]) -> Result<RefVersion> {
        let path = self.object_path(key)?;
        let stage = atomic::Staging::anonymous(&path, "tmp");
        fs::create_dir_all(&stage.dir).map_err(|e| Error::io_at(&stage.dir, e))?;
        let written = File::options()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&stage.temp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            })
            .map_err(|e| Error::io_at(&stage.temp, e))
            .map(|()| fs::hard_link(&stage.temp, &path));
        let _ = fs::remove_file(&stage.temp);
        let no_links = [
            rustix::io::Errno::PERM,
            rustix::io::Errno::NOTSUP,
            rustix::io::Errno::MLINK,
        ];
        match written? {
            Ok(()) => {
                sync_dir(&stage.dir)?;
                Ok(ref_version(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(refs::conflict(key, "it was created meanwhile"))
            }
            Err(e)
                if no_links
                    .iter()
                    .any(|n| e.raw_os_error() == Some(n.raw_os_error())) =>
            {
                self.swap(key, key, bytes, None)
            }
            Err(e) => Err(Error::io_at(&path, e)),
        }
    }

    /// Writes `bytes` to `path` atomically; the directory entry is made
    /// durable by the caller (one directory sync per batch).
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        atomic::write_file(path, OBJECT_FILE, |mut f| {
            f.write_all(bytes).map_err(|e| Error::io_at(path, e))
        })
    }
}

/// A store object: its temporary is `.tmp-…` (what a prune looks for), in
/// a directory made on demand and synced by the caller, once per batch.
const OBJECT_FILE: FileOptions = FileOptions {
    named: false,
    mode: 0o666,
    exclusive: false,
    create_dir: true,
    sync_dir: false,
};

/// What [`DirStore::prune_chunks`] found and removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Chunk files found.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunk files removed.
    pub removed: u64,
    /// Their bytes.
    pub removed_bytes: u64,
}

/// Temporary files older than this are left over from a writer that died.
const STALE_TMP: Duration = Duration::from_secs(3600);

impl DirStore {
    /// Removes the least recently used chunks until the rest take at most
    /// `max_bytes`, for a store that serves as a cache (the store behind it
    /// holds every chunk, so any may go). Last use is the later of a
    /// file's access and modification times, so reads count where the
    /// filesystem records access times. Temporary files an interrupted
    /// writer left behind for over an hour go too. Manifests stay. Safe
    /// while others read and write: a chunk removed under a reader is a
    /// cache miss, fetched again.
    pub fn prune_chunks(&self, max_bytes: u64) -> Result<PruneStats> {
        let top = self.root.join("chunks");
        let now = SystemTime::now();
        let mut found: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let mut stats = PruneStats::default();
        for fan in fs::read_dir(&top).map_err(|e| Error::io_at(&top, e))? {
            let fan = fan.map_err(|e| Error::io_at(&top, e))?;
            if !fan.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(entries) = fs::read_dir(fan.path()) else {
                continue;
            };
            for e in entries.flatten() {
                // Another pruner may have removed it meanwhile.
                let Ok(m) = e.metadata() else { continue };
                if !m.is_file() {
                    continue;
                }
                let used = match (m.accessed(), m.modified()) {
                    (Ok(a), Ok(w)) => a.max(w),
                    (Ok(t), _) | (_, Ok(t)) => t,
                    _ => SystemTime::UNIX_EPOCH,
                };
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    if now.duration_since(used).is_ok_and(|age| age > STALE_TMP) {
                        let _ = fs::remove_file(e.path());
                    }
                    continue;
                }
                stats.chunks += 1;
                stats.bytes += m.len();
                found.push((used, m.len(), e.path()));
            }
        }
        let mut held = stats.bytes;
        if held > max_bytes {
            found.sort_unstable_by_key(|(used, ..)| *used);
            for (_, len, path) in found {
                if held <= max_bytes {
                    break;
                }
                match fs::remove_file(&path) {
                    Ok(()) => {
                        stats.removed += 1;
                        stats.removed_bytes += len;
                        held -= len;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => held -= len,
                    Err(e) => return Err(Error::io_at(&path, e)),
                }
            }
        }
        Ok(stats)
    }
}

impl BlobStore for DirStore {
    fn has_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<bool>> {
        addrs
            .iter()
            .map(|a| {
                let p = self.chunk_path(a);
                match fs::symlink_metadata(&p) {
                    Ok(m) => Ok(m.is_file()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(Error::io_at(&p, e)),
                }
            })
            .collect()
    }

    fn get_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        addrs
            .iter()
            .map(|a| self.read(&self.chunk_path(a), MAX_CHUNK_OBJECT))
            .collect()
    }

    fn put_chunks(&self, chunks: &[(blake3::Hash, &[u8])]) -> Result<()> {
        // fsync dominates; a few writers at once overlap it.
        let workers = chunks.len().clamp(1, 4);
        let per = chunks.len().div_ceil(workers).max(1);
        let mut dirs: Vec<PathBuf> = chunks
            .iter()
            .filter_map(|(a, _)| self.chunk_path(a).parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        std::thread::scope(|s| {
            let jobs: Vec<_> = chunks
                .chunks(per)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .try_for_each(|(a, b)| self.write(&self.chunk_path(a), b))
                    })
                })
                .collect();
            jobs.into_iter().try_for_each(|j| {
                j.join()
                    .unwrap_or_else(|_| Err(Error::with(ErrorKind::Io, "writer thread failed")))
            })
        })?;
        dirs.iter().try_for_each(|d| sync_dir(d))
    }

    fn get_manifest(&self, root: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        self.read(&self.root.join(manifest_key(root)), MAX_MANIFEST_OBJECT)
    }

    fn put_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        let p = self.root.join(manifest_key(root));
        self.write(&p, bytes)?;
        sync_dir(&self.root.join("manifests"))
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn list_info(&self, prefix: &str) -> Result<Vec<super::ObjectInfo>> {
        let mut out = Vec::new();
        for key in self.list(prefix)? {
            let p = self.object_path(&key)?;
            match fs::symlink_metadata(&p) {
                Ok(m) => out.push(super::ObjectInfo {
                    key,
                    size: m.len(),
                    modified: m.modified().map_err(|e| Error::io_at(&p, e))?,
                }),
                // Deleted since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io_at(&p, e)),
            }
        }
        Ok(out)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let top = prefix.trim_end_matches('/');
        let mut out = Vec::new();
        let mut stack = vec![(self.object_path(top)?, top.to_string())];
        while let Some((dir, name)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io_at(&dir, e)),
            };
            for e in rd {
                let e = e.map_err(|e| Error::io_at(&dir, e))?;
                let Some(n) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(t) = e.file_type() else { continue };
                if n.starts_with(".tmp-") {
                    continue;
                }
                if t.is_dir() {
                    stack.push((e.path(), format!("{name}/{n}")));
                } else if t.is_file() {
                    out.push(format!("{name}/{n}"));
                }
            }
        }
        Ok(out)
    }

    fn get_objects(&self, keys: &[&str], max: u64) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter()
            .map(|k| self.read(&self.object_path(k)?, max))
            .collect()
    }

    fn get_ranges(&self, reqs: &[(&str, Range<u64>)]) -> Result<Vec<Option<Vec<u8>>>> {
        reqs.iter()
            .map(|(k, r)| {
                check_range(k, r)?;
                self.read_range(&self.object_path(k)?, r)
            })
            .collect()
    }

    fn put_objects(&self, objs: &[(&str, &[u8])]) -> Result<()> {
        let paths: Vec<PathBuf> = objs
            .iter()
            .map(|(k, _)| self.object_path(k))
            .collect::<Result<_>>()?;
        std::thread::scope(|s| {
            let jobs: Vec<_> = paths
                .iter()
                .zip(objs)
                .map(|(p, (_, b))| s.spawn(move || self.write(p, b)))
                .collect();
            jobs.into_iter().try_for_each(|j| {
                j.join()
                    .unwrap_or_else(|_| Err(Error::with(ErrorKind::Io, "writer thread failed")))
            })
        })?;
        let mut dirs: Vec<&Path> = paths.iter().filter_map(|p| p.parent()).collect();
        dirs.sort();
        dirs.dedup();
        dirs.iter().try_for_each(|d| sync_dir(d))
    }

    fn delete_objects(&self, keys: &[&str]) -> Result<()> {
        let mut dirs = Vec::new();
        for k in keys {
            let p = self.object_path(k)?;
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io_at(&p, e)),
            }
            if let Some(d) = p.parent() {
                dirs.push(d.to_path_buf());
            }
        }
        dirs.sort();
        dirs.dedup();
        dirs.iter().try_for_each(|d| sync_dir(d))
    }
    fn get_ref(&self, name: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        refs::check_name(name)?;
        let got = self.read(&self.root.join(ref_key(name)), MAX_REF_OBJECT)?;
        Ok(got.map(|b| {
            let v = ref_version(&b);
            (b, v)
        }))
    }

    /// Compare and swap under an exclusive `flock` of `refs/.NAME.lock`
    /// (see `swap`).
    fn put_ref(
        &self,
        name: &str,
        bytes: &[u8],
        expected: Option<&RefVersion>,
    ) -> Result<RefVersion> {
        refs::check_name(name)?;
        self.swap(&ref_key(name), name, bytes, expected)
    }

    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        let got = self.read(&self.object_path(key)?, MAX_REF_OBJECT)?;
        Ok(got.map(|b| {
            let v = ref_version(&b);
            (b, v)
        }))
    }

    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&RefVersion>) -> Result<RefVersion> {
        self.object_path(key)?;
        match expected {
            None => self.create(key, bytes),
            Some(_) => self.swap(key, key, bytes, expected),
        }
    }

    fn list_refs(&self) -> Result<Vec<String>> {
        let dir = self.root.join("refs");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io_at(&dir, e)),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(|e| Error::io_at(&dir, e))?;
            // Lock files, temporaries and anything not named like a ref
            // are not refs.
            if let Some(n) = e
                .file_name()
                .to_str()
                .filter(|n| refs::check_name(n).is_ok())
            {
                if names.len() >= refs::MAX_REFS {
                    return Err(Error::corrupt(format!(
                        "{}: more than {} refs",
                        dir.display(),
                        refs::MAX_REFS
                    )));
                }
                names.push(n.to_string());
            }
        }
        Ok(names)
    }
}

/// A ref object's version in a directory: the hash of its bytes (two
/// writes never store the same bytes: each adds a history entry with a
/// higher sequence number).
fn ref_version(bytes: &[u8]) -> RefVersion {
    RefVersion::new(blake3::hash(bytes).to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use std::fs::FileTimes;

    use super::*;
    use crate::store::BlobStore;

    fn age(path: &Path, secs_ago: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs_ago);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_times(FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
    }

    #[test]
    fn prune_drops_the_least_recently_used_chunks_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let data: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i + 1; 1000]).collect();
        let addrs: Vec<blake3::Hash> = data.iter().map(|d| blake3::hash(d)).collect();
        let pairs: Vec<(blake3::Hash, &[u8])> =
            addrs.iter().zip(&data).map(|(a, d)| (*a, &d[..])).collect();
        store.put_chunks(&pairs).unwrap();
        let root = blake3::hash(b"root");
        store.put_manifest(&root, b"manifest").unwrap();
        // Chunk i was last used i hours ago; so was a leftover temp file.
        for (i, a) in addrs.iter().enumerate() {
            age(&store.chunk_path(a), 3600 * i as u64 + 60);
        }
        let fan = store.chunk_path(&addrs[0]).parent().unwrap().to_path_buf();
        let (old_tmp, new_tmp) = (fan.join(".tmp-1-1"), fan.join(".tmp-1-2"));
        fs::write(&old_tmp, b"x").unwrap();
        fs::write(&new_tmp, b"x").unwrap();
        age(&old_tmp, 2 * 3600);

        // Under the limit: nothing goes but the stale temp file.
        let s = store.prune_chunks(10_000).unwrap();
        assert_eq!((s.chunks, s.bytes, s.removed), (10, 10_000, 0));
        assert!(!old_tmp.exists() && new_tmp.exists());

        let s = store.prune_chunks(4_500).unwrap();
        assert_eq!((s.removed, s.removed_bytes), (6, 6_000));
        let kept = store.has_chunks(&addrs).unwrap();
        assert_eq!(
            kept,
            [
                true, true, true, true, false, false, false, false, false, false
            ]
        );
        assert_eq!(store.get_manifest(&root).unwrap().unwrap(), b"manifest");

        let s = store.prune_chunks(0).unwrap();
        assert_eq!((s.chunks, s.removed), (4, 4));
        assert!(store.has_chunks(&addrs).unwrap().iter().all(|k| !k));
    }
}
