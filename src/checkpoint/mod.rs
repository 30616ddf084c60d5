//! Checkpoint files: versioned, verified, deduplicated snapshots on disk.
//!
//! This module is the surface: [`Snapshot`]'s save, load and open
//! methods, chains of deltas ([`load_chain`], [`open_chain`]), [`verify`]
//! and [`inspect`]. The work is done in stages, a file each: `format` (the
//! wire format: header, records, version; the only place that knows the
//! bytes), `encode` (a snapshot to records and bytes), `load` (bytes to
//! checked records, streamed whole or opened lazily) and `rebuild`
//! (records to a tree, with every engine invariant checked).
//!
//! Chunks are stored once per address (blake3 of the chunk without trailing
//! zeros, see `chunk`), with those trailing zeros dropped; a file refers to
//! them by index and records each chunk's own length, so `held` survives a
//! round trip. A delta stores only the inodes that differ from its parent
//! (files and directories as patches against the parent's version) and only
//! the chunks the parent lacks; it names the parent's chunks it reuses by
//! address.
//!
//! Loading never trusts the file: every record is checked, the rebuilt tree
//! must satisfy the engine invariants (links, nlink, reachability, counters,
//! next inode number) and hash to the root hash in the header. Bad input is
//! an [`ErrorKind::Corrupt`] error (an unknown version or feature is
//! [`ErrorKind::Unsupported`], a delta offered the wrong parent is
//! [`ErrorKind::InvalidInput`]); nothing is returned half-built.
//!
//! A checkpoint never sets its own limits. The file still records the
//! limits it was saved under (the format keeps the field), but loading
//! ignores them: a loaded or opened snapshot, and every fork of it, has
//! the loader's limits ([`Limits::default`] unless given, as with
//! [`Snapshot::load_with_limits`]), and the tree is checked against them
//! as if a sandbox had made it: file sizes, name and symlink-target
//! lengths, link counts, inodes and bytes charged. The metadata section
//! is read incrementally and may not exceed the loader's `max_bytes`.
//!
//! ```
//! # use cowvfs::Vfs;
//! # use cowvfs::Snapshot;
//! let dir = tempfile::tempdir()?;
//! let mut v = Vfs::new();
//! v.write_file("/hello", b"world")?;
//! let base = v.snapshot();
//! base.save(dir.path().join("base.ck"))?;
//!
//! v.write_file("/second", b"file")?;
//! let next = v.snapshot();
//! next.save_delta(&base, dir.path().join("next.ck"))?;
//!
//! let base2 = Snapshot::load(dir.path().join("base.ck"))?;
//! let next2 = Snapshot::load_delta(dir.path().join("next.ck"), &base2)?;
//! assert_eq!(next2.root_hash(), next.root_hash());
//! assert_eq!(next2.read_file("/second")?, b"file");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::atomic::{self, FileOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::vfs::Snapshot;

mod encode;
mod format;
mod load;
mod rebuild;
mod verified;

pub(crate) use encode::encode_meta;
use encode::{encode, write_with};
pub use format::{FORMAT_VERSION, Header, seal_for_fuzzing, split_for_fuzzing};
use format::{NodeRec, hex};
pub(crate) use load::{StoreMeta, meta_chunks, open_meta};
use load::{decode_tree_record, load_path, load_stream, open_path, read_meta};
pub(crate) use verified::save_verified;

/// Reads the header of the checkpoint at `path`: version, root hash,
/// parent hash. Cheap: reads at most 125 bytes.
pub fn read_header(path: impl AsRef<Path>) -> Result<Header> {
    let path = path.as_ref();
    let mut f = File::open(path).map_err(|e| Error::io_at(path, e))?;
    Header::decode(&mut f).map_err(in_file(path))
}

/// Names the file `p` at the front of an error's context, once.
fn in_file(p: &Path) -> impl FnOnce(Error) -> Error + '_ {
    move |e| {
        let what = e.context().map(str::to_string).unwrap_or_default();
        if what.starts_with(&p.display().to_string()) {
            e
        } else if what.is_empty() {
            Error::with(e.kind(), format!("{}", p.display()))
        } else {
            Error::with(e.kind(), format!("{}: {what}", p.display()))
        }
    }
}

// -------------------------------------------------------------------------
// Saving

/// How to save a checkpoint.
#[derive(Default)]
pub struct SaveOptions<'a> {
    /// Save a delta against this snapshot (which loading will need).
    pub parent: Option<&'a Snapshot>,
    /// zstd-compress chunks (needs the `zstd` feature); a chunk that does
    /// not shrink is stored raw.
    pub compress: bool,
    /// Called with (bytes written, total bytes) as the data goes out.
    pub progress: Option<&'a mut dyn FnMut(u64, u64)>,
    /// Fail with an I/O error after this many bytes: for fault-injection
    /// tests of atomic saving.
    #[doc(hidden)]
    pub fail_after: Option<u64>,
}

/// What a save wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaveStats {
    /// Bytes in the checkpoint.
    pub file_len: u64,
    /// Inode records written (all inodes, or the changed ones in a delta).
    pub inodes: u64,
    /// Unique chunks stored.
    pub chunks: u64,
    /// Their bytes without trailing zeros, before compression.
    pub chunk_bytes: u64,
    /// Their bytes as stored.
    pub stored_bytes: u64,
}

/// A checkpoint file: a fresh temporary named after it, synced with its
/// directory before the save returns.
const CHECKPOINT_FILE: FileOptions = FileOptions {
    named: true,
    mode: 0o644,
    exclusive: true,
    create_dir: false,
    sync_dir: true,
};
impl Snapshot {
    /// Saves the whole tree to `path`, atomically (see the module docs).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<SaveStats> {
        self.save_with(path, SaveOptions::default())
    }

    /// Saves a delta against `parent` to `path`: only the inodes and chunks
    /// `parent` lacks. Loading it needs `parent` ([`Snapshot::load_delta`]).
    pub fn save_delta(&self, parent: &Snapshot, path: impl AsRef<Path>) -> Result<SaveStats> {
        self.save_with(
            path,
            SaveOptions {
                parent: Some(parent),
                ..SaveOptions::default()
            },
        )
    }

    /// Saves to `path` with options (delta, compression, progress).
    pub fn save_with(
        &self,
        path: impl AsRef<Path>,
        mut opts: SaveOptions<'_>,
    ) -> Result<SaveStats> {
        let path = path.as_ref();
        let _span = tracing::info_span!("checkpoint_save", path = %path.display(), delta = opts.parent.is_some())
            .entered();
        tracing::info!(compress = opts.compress, "saving");
        let enc = encode(self, opts.parent, opts.compress)?;
        atomic::write_file(path, CHECKPOINT_FILE, |file| {
            let mut w = BufWriter::with_capacity(1 << 20, file);
            write_with(&enc, &mut w, &mut opts)?;
            w.flush()?;
            Ok(enc.stats)
        })
    }

    /// Writes the whole tree as a checkpoint to `w` (not atomic: the
    /// caller owns the destination).
    pub fn save_to(&self, w: impl Write) -> Result<SaveStats> {
        self.save_to_with(w, SaveOptions::default())
    }

    /// Writes a delta against `parent` to `w`.
    pub fn save_delta_to(&self, parent: &Snapshot, w: impl Write) -> Result<SaveStats> {
        self.save_to_with(
            w,
            SaveOptions {
                parent: Some(parent),
                ..SaveOptions::default()
            },
        )
    }

    /// Writes a checkpoint to `w` with options.
    pub fn save_to_with(&self, mut w: impl Write, mut opts: SaveOptions<'_>) -> Result<SaveStats> {
        let enc = encode(self, opts.parent, opts.compress)?;
        write_with(&enc, &mut w, &mut opts)?;
        w.flush()?;
        Ok(enc.stats)
    }

    /// Loads and fully verifies a full checkpoint (a delta is refused with a
    /// message saying which parent it needs), under [`Limits::default`]
    /// (see [`Snapshot::load_with_limits`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Snapshot> {
        load_path(path.as_ref(), None, &Limits::default())
    }

    /// Loads and fully verifies a delta checkpoint on top of `parent`,
    /// which must be the snapshot it was saved against, under
    /// [`Limits::default`].
    pub fn load_delta(path: impl AsRef<Path>, parent: &Snapshot) -> Result<Snapshot> {
        load_path(path.as_ref(), Some(parent), &Limits::default())
    }

    /// Loads a checkpoint (a delta if `parent` is given) under `limits`,
    /// which the snapshot and its forks then have. A checkpoint never sets
    /// its own limits: one whose tree goes over `limits` (a file over
    /// `max_file_size`, a name over `max_name_len`, a symlink target over
    /// `max_path_len`, more than `max_inodes` inodes, more than
    /// `max_bytes` charged, metadata over `max_bytes`) is refused with
    /// the error a sandbox would get for it.
    pub fn load_with_limits(
        path: impl AsRef<Path>,
        parent: Option<&Snapshot>,
        limits: &Limits,
    ) -> Result<Snapshot> {
        load_path(path.as_ref(), parent, limits)
    }

    /// Reads a full checkpoint from `r`, verifying everything, under
    /// [`Limits::default`].
    pub fn load_from(r: impl Read) -> Result<Snapshot> {
        let mut r = r;
        load_stream(&mut r, None, None, &Limits::default())
    }

    /// Reads a delta checkpoint from `r` on top of `parent`, under
    /// [`Limits::default`].
    pub fn load_delta_from(r: impl Read, parent: &Snapshot) -> Result<Snapshot> {
        let mut r = r;
        load_stream(&mut r, None, Some(parent), &Limits::default())
    }

    /// Reads a checkpoint from `r` (a delta if `parent` is given) under
    /// `limits`, as [`Snapshot::load_with_limits`] does.
    pub fn load_from_with_limits(
        r: impl Read,
        parent: Option<&Snapshot>,
        limits: &Limits,
    ) -> Result<Snapshot> {
        let mut r = r;
        load_stream(&mut r, None, parent, limits)
    }

    /// Opens a full checkpoint lazily: reads and verifies only the header
    /// and metadata (the cost follows the number of inodes, not the data)
    /// and reads each chunk from the file when first needed, verifying it
    /// against its address then. A chunk that fails is an I/O error to
    /// whoever reads it. The file must not change while the snapshot or
    /// any fork of it lives.
    ///
    /// Unlike [`Snapshot::load`], this does not recompute the root hash
    /// to compare with the header's (that costs as much as the rest of the
    /// open). The tree is still exactly what the hashed metadata says, and
    /// the snapshot's [`root_hash`](Snapshot::root_hash) is computed from
    /// the tree itself when asked, never copied from the header; use
    /// [`verify`](crate::checkpoint::verify) to check a file end to end.
    ///
    /// The snapshot gets [`Limits::default`]; see
    /// [`Snapshot::open_with_limits`].
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot> {
        open_path(path.as_ref(), None, &Limits::default())
    }

    /// Opens a delta lazily on top of `parent`, under [`Limits::default`].
    pub fn open_delta(path: impl AsRef<Path>, parent: &Snapshot) -> Result<Snapshot> {
        open_path(path.as_ref(), Some(parent), &Limits::default())
    }

    /// Opens a checkpoint lazily (a delta if `parent` is given) under
    /// `limits`, with the checks [`Snapshot::load_with_limits`] makes.
    pub fn open_with_limits(
        path: impl AsRef<Path>,
        parent: Option<&Snapshot>,
        limits: &Limits,
    ) -> Result<Snapshot> {
        open_path(path.as_ref(), parent, limits)
    }
}

// -------------------------------------------------------------------------
// Chains and inspection (for the CLI and embedders)

/// Loads the checkpoint at `path`, fully verified. If it is a delta, its
/// parent (and theirs, for a chain) is picked from `parents` by root hash,
/// so their order does not matter; a missing parent is a clear error.
/// The snapshot gets [`Limits::default`].
pub fn load_chain(path: impl AsRef<Path>, parents: &[PathBuf]) -> Result<Snapshot> {
    chain(path.as_ref(), parents, false, &Limits::default())
}

/// Like [`load_chain`], but opens every file lazily ([`Snapshot::open`]).
pub fn open_chain(path: impl AsRef<Path>, parents: &[PathBuf]) -> Result<Snapshot> {
    chain(path.as_ref(), parents, true, &Limits::default())
}

/// [`load_chain`] (or [`open_chain`] if `lazy`) under `limits`: every file
/// of the chain is checked against them, and the snapshot has them.
pub fn chain_with_limits(
    path: impl AsRef<Path>,
    parents: &[PathBuf],
    lazy: bool,
    limits: &Limits,
) -> Result<Snapshot> {
    chain(path.as_ref(), parents, lazy, limits)
}

fn chain(path: &Path, parents: &[PathBuf], lazy: bool, limits: &Limits) -> Result<Snapshot> {
    // From `path` down to its full ancestor; each step consumes one
    // parent, so a cycle of files cannot loop forever.
    let mut order = vec![path.to_path_buf()];
    let mut rest: Vec<PathBuf> = parents.to_vec();
    loop {
        let cur = order.last().cloned().unwrap_or_default();
        let Some(want) = read_header(&cur)?.parent_hash else {
            break;
        };
        let mut found = None;
        for (i, p) in rest.iter().enumerate() {
            if read_header(p)?.root_hash == want {
                found = Some(i);
                break;
            }
        }
        let Some(i) = found else {
            return Err(Error::with(
                ErrorKind::InvalidInput,
                format!(
                    "{} is a delta against root {}; none of the parents given has that root (pass it with --parent)",
                    cur.display(),
                    hex(&want)
                ),
            ));
        };
        order.push(rest.remove(i));
    }
    let mut snap: Option<Snapshot> = None;
    for p in order.iter().rev() {
        snap = Some(match lazy {
            true => open_path(p, snap.as_ref(), limits)?,
            false => load_path(p, snap.as_ref(), limits)?,
        });
    }
    snap.ok_or_else(|| Error::with(ErrorKind::InvalidInput, "empty checkpoint chain"))
}

/// Loads a checkpoint (and its parents) with every check, plus the engine
/// invariants; returns its header.
pub fn verify(path: impl AsRef<Path>, parents: &[PathBuf]) -> Result<Header> {
    let path = path.as_ref();
    let snap = load_chain(path, parents)?;
    snap.check_invariants()
        .map_err(|e| Error::corrupt(format!("{}: {e}", path.display())))?;
    read_header(path)
}

/// What a checkpoint file holds, from its metadata alone (for a delta: the
/// records in this file, not the whole tree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The header.
    pub header: Header,
    /// Bytes in the file.
    pub file_len: u64,
    /// Regular files recorded (whole or patched).
    pub files: u64,
    /// Directories recorded.
    pub dirs: u64,
    /// Symlinks recorded.
    pub symlinks: u64,
    /// Inodes a delta removes from its parent.
    pub removed: u64,
    /// Sum of the sizes of the files recorded.
    pub logical_bytes: u64,
    /// Chunks stored in this file.
    pub chunks: u64,
    /// Their bytes without trailing zeros, before compression.
    pub unique_bytes: u64,
    /// Their bytes as stored.
    pub stored_bytes: u64,
}

/// Reads a checkpoint's header and metadata (verified against the
/// metadata hash) and counts what it holds. Does not read the data.
pub fn inspect(path: impl AsRef<Path>) -> Result<Info> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io_at(path, e))?;
    let len = file.metadata().map_err(|e| Error::io_at(path, e))?.len();
    let res = (|| {
        let h = Header::decode(&mut &file)?;
        h.check_file_len(len)?;
        let limits = Limits::default();
        let meta = read_meta(&mut &file, &h, &limits)?;
        let m = decode_tree_record(&h, &meta, limits.max_bytes)?;
        let mut info = Info {
            header: h.clone(),
            file_len: len,
            files: 0,
            dirs: 0,
            symlinks: 0,
            removed: m.removed.len() as u64,
            logical_bytes: 0,
            chunks: m.blobs.len() as u64,
            // At most 2^32 records of at most 2^16 bytes: no overflow.
            unique_bytes: m.blobs.iter().map(|b| b.raw_len as u64).sum(),
            stored_bytes: h.data_len,
        };
        for r in &m.inodes {
            match &r.node {
                NodeRec::File { size, .. } | NodeRec::FilePatch { size, .. } => {
                    info.files += 1;
                    info.logical_bytes = info
                        .logical_bytes
                        .checked_add(*size)
                        .ok_or_else(|| Error::corrupt("the sum of file sizes overflows"))?;
                }
                NodeRec::Dir { .. } | NodeRec::DirPatch { .. } => info.dirs += 1,
                NodeRec::Symlink { .. } => info.symlinks += 1,
            }
        }
        Ok(info)
    })();
    res.map_err(in_file(path))
}
