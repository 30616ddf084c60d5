//! The hot-path workloads, shared by `benches/engine.rs` (group `hot_path`)
//! and `examples/hotpath_profile.rs` (the same loops under `perf` and a
//! counting allocator).
//!
//! Both sides work on the same tree: `/app/d0` .. `/app/d319`, each with
//! 100 files `f0` .. `f99` of 1 KiB, plus the 32 MiB file `/app/big`.
//! cowvfs builds it under raised limits (a tree built from nothing is all
//! private data) and works in a fork of its snapshot with the default
//! limits, as a sandbox would. The baseline is [`Naive`]: a path-keyed
//! `HashMap<String, Vec<u8>>` with a child list per directory, which is
//! what a simple in-memory VFS is. It copies data in and out exactly where
//! the engine does (a write copies the caller's bytes, `read_file` returns
//! a fresh vector, `read_at` fills the caller's buffer).

use std::collections::HashMap;
use std::hint::black_box;

use cowvfs::{Limits, OpenOptions, Snapshot, Vfs};

/// Directories under `/app`.
pub const DIRS: usize = 320;
/// Files per directory.
pub const FILES_PER_DIR: usize = 100;
/// Size of each small file of the tree.
pub const FILE_LEN: usize = 1024;
/// Size of `/app/big`, and of the file the big-file workload writes.
pub const BIG_LEN: usize = 32 << 20;
/// Block size of the big-file workload.
pub const BLOCK: usize = 64 << 10;
/// Small-file cycles per timed iteration.
pub const CYCLES: usize = 5_000;
/// Bytes one small-file cycle writes.
pub const SMALL_LEN: usize = 4 << 10;
/// The file the big-file workload creates and removes.
pub const BIG_NEW: &str = "/app/d7/big_new";

/// Limits of the base tree: the defaults, but all of it may be private.
pub fn base_limits() -> Limits {
    Limits {
        max_private_bytes: u64::MAX,
        ..Limits::default()
    }
}

/// Bytes that are not all one value, so nothing is a hole or a run.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|j| (j % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// Builds the tree on both sides: the engine's snapshot and the baseline.
pub fn build() -> (Snapshot, Naive) {
    let mut v = Vfs::with_limits(base_limits());
    let mut n = Naive::new();
    v.create_dir("/app").unwrap();
    n.create_dir("/app").unwrap();
    for d in 0..DIRS {
        let dir = format!("/app/d{d}");
        v.create_dir(&dir).unwrap();
        n.create_dir(&dir).unwrap();
        for f in 0..FILES_PER_DIR {
            let path = format!("{dir}/f{f}");
            let body = pattern(FILE_LEN, (d * FILES_PER_DIR + f) as u8);
            v.write_file(&path, &body).unwrap();
            n.write_file(&path, &body).unwrap();
        }
    }
    let big = pattern(BIG_LEN, 7);
    v.write_file("/app/big", &big).unwrap();
    n.write_file("/app/big", &big).unwrap();
    (v.snapshot(), n)
}

/// A sandbox of the snapshot, with the default limits.
pub fn fork(snap: &Snapshot) -> Vfs {
    snap.fork_with_limits(Limits::default())
}

/// `/app/d7/n0` .. `/app/d7/n4999`: the small-file cycle's names.
pub fn cycle_names() -> Vec<String> {
    (0..CYCLES).map(|i| format!("/app/d7/n{i}")).collect()
}

// -------------------------------------------------------------------------
// The baseline

/// What a directory entry is, for the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A file.
    File,
    /// A directory.
    Dir,
}

/// What `metadata` returns on the baseline.
#[derive(Clone, Copy, Debug)]
pub struct NaiveStat {
    /// File or directory.
    pub kind: Kind,
    /// Bytes, or entries for a directory.
    pub len: u64,
}

/// The naive in-memory store: file bytes by full path, each directory's
/// children (name and kind) in a vector by full path, and a descriptor
/// table that remembers the path (so every `read_at`/`write_at` looks the
/// path up again, as a path-keyed store does).
#[derive(Clone, Debug)]
pub struct Naive {
    files: HashMap<String, Vec<u8>>,
    dirs: HashMap<String, Vec<(String, Kind)>>,
    fds: Vec<Option<String>>,
    free: Vec<usize>,
    /// Copies data by the rule of cowvfs's `src/copy.rs` (see
    /// [`Naive::with_split_copies`]) instead of one `memcpy` each.
    split: bool,
}

impl Default for Naive {
    fn default() -> Self {
        Naive::new()
    }
}

/// Whether a copy of `len` bytes is made in 1 KiB pieces: the rule of
/// cowvfs's `src/copy.rs` (from 2 KiB up, glibc's `memcpy` may use
/// `rep movsb`, slow to start on some CPUs and far slower at some
/// distances between the buffers).
fn in_pieces(len: usize) -> bool {
    len >= 2048
}

/// `dst.copy_from_slice(src)`, by that rule if `split`.
fn copy(split: bool, dst: &mut [u8], src: &[u8]) {
    if split && in_pieces(src.len()) {
        for (d, s) in dst.chunks_mut(1024).zip(src.chunks(1024)) {
            d.copy_from_slice(s);
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// `out.extend_from_slice(src)`, by that rule if `split`.
fn extend(split: bool, out: &mut Vec<u8>, src: &[u8]) {
    if split && in_pieces(src.len()) {
        out.reserve(src.len());
        for s in src.chunks(1024) {
            out.extend_from_slice(s);
        }
    } else {
        out.extend_from_slice(src);
    }
}

/// `(parent, name)` of an absolute path: `/a/b` gives `("/a", "b")`.
fn split(path: &str) -> Option<(&str, &str)> {
    let (parent, name) = path.rsplit_once('/')?;
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

impl Naive {
    /// Just `/`.
    pub fn new() -> Naive {
        let mut dirs = HashMap::new();
        dirs.insert("/".to_string(), Vec::new());
        Naive {
            files: HashMap::new(),
            dirs,
            fds: Vec::new(),
            free: Vec::new(),
            split: false,
        }
    }

    /// The same store, copying file data as cowvfs does: a copy of 2 KiB
    /// or more, which glibc could hand to `rep movsb`, is made in 1 KiB
    /// pieces.
    /// The baseline with the one advantage cowvfs's copies have over a
    /// plain `memcpy`, so that a comparison shows the rest.
    pub fn with_split_copies(mut self) -> Naive {
        self.split = true;
        self
    }

    /// Creates a directory in an existing parent.
    pub fn create_dir(&mut self, path: &str) -> Option<()> {
        if self.dirs.contains_key(path) || self.files.contains_key(path) {
            return None;
        }
        let (parent, name) = split(path)?;
        self.dirs
            .get_mut(parent)?
            .push((name.to_string(), Kind::Dir));
        self.dirs.insert(path.to_string(), Vec::new());
        Some(())
    }

    /// Creates an empty file (if new) in an existing parent.
    fn create(&mut self, path: &str) -> Option<()> {
        if self.files.contains_key(path) {
            return Some(());
        }
        if self.dirs.contains_key(path) {
            return None;
        }
        let (parent, name) = split(path)?;
        self.dirs
            .get_mut(parent)?
            .push((name.to_string(), Kind::File));
        self.files.insert(path.to_string(), Vec::new());
        Some(())
    }

    /// Creates or truncates a file and writes `data` into it.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Option<()> {
        let split = self.split;
        if let Some(f) = self.files.get_mut(path) {
            f.clear();
            extend(split, f, data);
            return Some(());
        }
        self.create(path)?;
        let f = self.files.get_mut(path)?;
        extend(split, f, data);
        Some(())
    }

    /// The whole file, copied out.
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        let f = self.files.get(path)?;
        let mut out = Vec::with_capacity(f.len());
        extend(self.split, &mut out, f);
        Some(out)
    }

    /// Kind and length.
    pub fn metadata(&self, path: &str) -> Option<NaiveStat> {
        if let Some(f) = self.files.get(path) {
            return Some(NaiveStat {
                kind: Kind::File,
                len: f.len() as u64,
            });
        }
        self.dirs.get(path).map(|d| NaiveStat {
            kind: Kind::Dir,
            len: d.len() as u64,
        })
    }

    /// Drops `name` from the child list of `parent`.
    fn unlist(&mut self, parent: &str, name: &str) {
        if let Some(children) = self.dirs.get_mut(parent)
            && let Some(pos) = children.iter().position(|(n, _)| n == name)
        {
            children.remove(pos);
        }
    }

    /// Removes a file.
    pub fn remove_file(&mut self, path: &str) -> Option<()> {
        self.files.remove(path)?;
        let (parent, name) = split(path)?;
        self.unlist(parent, name);
        Some(())
    }

    /// Opens a file, creating it if asked; the descriptor keeps the path.
    pub fn open(&mut self, path: &str, create: bool) -> Option<usize> {
        if !self.files.contains_key(path) {
            if !create {
                return None;
            }
            self.create(path)?;
        }
        let fd = match self.free.pop() {
            Some(fd) => fd,
            None => {
                self.fds.push(None);
                self.fds.len() - 1
            }
        };
        self.fds[fd] = Some(path.to_string());
        Some(fd)
    }

    /// Closes a descriptor.
    pub fn close(&mut self, fd: usize) -> Option<()> {
        self.fds.get_mut(fd)?.take()?;
        self.free.push(fd);
        Some(())
    }

    /// Writes at `offset`, extending the file with zeros if needed.
    pub fn write_at(&mut self, fd: usize, data: &[u8], offset: u64) -> Option<usize> {
        let path = self.fds.get(fd)?.as_ref()?;
        let f = self.files.get_mut(path)?;
        let start = offset as usize;
        let end = start + data.len();
        if f.len() < end {
            f.resize(end, 0);
        }
        copy(self.split, &mut f[start..end], data);
        Some(data.len())
    }

    /// Reads at `offset` into `buf`; the byte count (0 at EOF).
    pub fn read_at(&self, fd: usize, buf: &mut [u8], offset: u64) -> Option<usize> {
        let path = self.fds.get(fd)?.as_ref()?;
        let f = self.files.get(path)?;
        let start = (offset as usize).min(f.len());
        let n = (f.len() - start).min(buf.len());
        copy(self.split, &mut buf[..n], &f[start..start + n]);
        Some(n)
    }

    /// Renames a file (replacing a file at `to`).
    pub fn rename(&mut self, from: &str, to: &str) -> Option<()> {
        let (to_parent, to_name) = split(to)?;
        if !self.dirs.contains_key(to_parent) || self.dirs.contains_key(to) {
            return None;
        }
        let data = self.files.remove(from)?;
        let (from_parent, from_name) = split(from)?;
        self.unlist(from_parent, from_name);
        if self.files.insert(to.to_string(), data).is_none() {
            self.dirs
                .get_mut(to_parent)?
                .push((to_name.to_string(), Kind::File));
        }
        Some(())
    }

    /// A directory's entries, copied out.
    pub fn read_dir(&self, path: &str) -> Option<Vec<(String, Kind)>> {
        self.dirs.get(path).cloned()
    }
}

// -------------------------------------------------------------------------
// Workloads: the same calls on both sides

/// `CYCLES` small-file cycles: `write_file` 4 KiB to each name, read it
/// back whole, stat it (checking kind and size), remove it.
pub fn small_cycles_cowvfs(v: &mut Vfs, names: &[String], data: &[u8]) {
    for name in names {
        v.write_file(name, data).unwrap();
        black_box(v.read_file(name).unwrap());
        let m = black_box(v.metadata(name).unwrap());
        assert!(m.is_file() && m.len == data.len() as u64);
        v.remove_file(name).unwrap();
    }
}

/// The baseline's [`small_cycles_cowvfs`].
pub fn small_cycles_naive(n: &mut Naive, names: &[String], data: &[u8]) {
    for name in names {
        n.write_file(name, data).unwrap();
        black_box(n.read_file(name).unwrap());
        let m = black_box(n.metadata(name).unwrap());
        assert!(m.kind == Kind::File && m.len == data.len() as u64);
        n.remove_file(name).unwrap();
    }
}

/// What any store must do per small-file cycle when `write_file` takes
/// `&[u8]` and `read_file` returns a `Vec<u8>`: copy the 4 KiB into a
/// buffer of its own, copy that into a new vector for the reader, free
/// both. No lookup, no metadata: the floor under both sides' cycles.
pub fn small_cycles_floor(names: &[String], data: &[u8]) {
    small_cycles_floor_as(false, names, data)
}

/// [`small_cycles_floor`] with the copies made by `src/copy.rs`'s rule
/// (see [`Naive::with_split_copies`]).
pub fn small_cycles_floor_split(names: &[String], data: &[u8]) {
    small_cycles_floor_as(true, names, data)
}

fn small_cycles_floor_as(split: bool, names: &[String], data: &[u8]) {
    for name in names {
        let mut kept = Vec::with_capacity(data.len());
        extend(split, &mut kept, data);
        let kept = black_box(kept);
        let mut read = Vec::with_capacity(kept.len());
        extend(split, &mut read, &kept);
        let read = black_box(read);
        black_box(name);
        drop(read);
        drop(kept);
    }
}

/// 32 MiB written in 64 KiB `write_at` blocks into a new file, read back
/// with `read_at` into `buf` (64 KiB, reused), closed, removed.
pub fn big_file_cowvfs(v: &mut Vfs, block: &[u8], buf: &mut [u8]) {
    let fd = v
        .open(
            BIG_NEW,
            OpenOptions::new().read(true).write(true).create(true),
        )
        .unwrap();
    for i in 0..BIG_LEN / BLOCK {
        v.write_at(fd, block, (i * BLOCK) as u64).unwrap();
    }
    for i in 0..BIG_LEN / BLOCK {
        let n = v.read_at(fd, buf, (i * BLOCK) as u64).unwrap();
        black_box(&buf[..n]);
    }
    v.close(fd).unwrap();
    v.remove_file(BIG_NEW).unwrap();
}

/// The baseline's [`big_file_cowvfs`].
pub fn big_file_naive(n: &mut Naive, block: &[u8], buf: &mut [u8]) {
    let fd = n.open(BIG_NEW, true).unwrap();
    for i in 0..BIG_LEN / BLOCK {
        n.write_at(fd, block, (i * BLOCK) as u64).unwrap();
    }
    for i in 0..BIG_LEN / BLOCK {
        let got = n.read_at(fd, buf, (i * BLOCK) as u64).unwrap();
        black_box(&buf[..got]);
    }
    n.close(fd).unwrap();
    n.remove_file(BIG_NEW).unwrap();
}
