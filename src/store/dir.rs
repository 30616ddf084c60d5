//! A store in a local directory: `chunks/ab/<hex>` and `manifests/<hex>`
//! under its root, each object written to a temporary file, fsynced and
//! renamed into place, so a reader sees a whole object or none. Serves as
//! a shared store on a network filesystem and as a host's chunk cache.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BlobStore, chunk_key, manifest_key};
use crate::error::{Error, ErrorKind, Result};

/// A store rooted at a directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

static TMP: AtomicU64 = AtomicU64::new(0);

fn path_err(p: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::with(ErrorKind::from_io(&e), format!("{}: {e}", p.display()))
}

impl DirStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<DirStore> {
        let root = root.into();
        for sub in ["chunks", "manifests"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(path_err(&d))?;
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

    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(path_err(path)(e)),
        }
    }

    /// Writes `bytes` to `path` atomically; the directory entry is made
    /// durable by the caller (one directory sync per batch).
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(path_err(dir))?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let res = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(path_err(path)(e));
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(path_err(dir))
}

impl BlobStore for DirStore {
    fn has_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<bool>> {
        addrs
            .iter()
            .map(|a| {
                let p = self.chunk_path(a);
                match fs::metadata(&p) {
                    Ok(m) => Ok(m.is_file()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(path_err(&p)(e)),
                }
            })
            .collect()
    }

    fn get_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        addrs
            .iter()
            .map(|a| self.read(&self.chunk_path(a)))
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
        self.read(&self.root.join(manifest_key(root)))
    }

    fn put_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        let p = self.root.join(manifest_key(root));
        self.write(&p, bytes)?;
        sync_dir(&self.root.join("manifests"))
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}
